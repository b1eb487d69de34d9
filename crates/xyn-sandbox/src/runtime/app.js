const __appFns = []; const __appTable = [];
function __appReg(kind, method, pattern, fn) {
  if (typeof pattern !== "string" || typeof fn !== "function") { throw new Error("app routes take (pattern, function)"); }
  __appFns.push(fn);
  __appTable.push({ kind: kind, method: method, pattern: pattern, id: __appFns.length });
}
globalThis.app = {
  get: (p, f) => __appReg("route", "GET", p, f),
  post: (p, f) => __appReg("route", "POST", p, f),
  put: (p, f) => __appReg("route", "PUT", p, f),
  delete: (p, f) => __appReg("route", "DELETE", p, f),
  patch: (p, f) => __appReg("route", "PATCH", p, f),
  all: (p, f) => __appReg("route", "*", p, f),
  use: (m, p, f) => __appReg("use", String(m).toUpperCase(), p, f),
};
class __AppRes {
  constructor() { this._status = 200; this._headers = []; this._body = ""; }
  status(n) { this._status = Number.isInteger(n) ? n : 500; return this; }
  header(k, v) { this._headers.push([String(k), String(v)]); return this; }
  _type(t) { if (!this._headers.some((h) => h[0].toLowerCase() === "content-type")) { this.header("content-type", t); } }
  json(v, s) { if (s) { this.status(s); } this._type("application/json"); this._body = JSON.stringify(v); return this; }
  text(s) { this._type("text/plain; charset=utf-8"); this._body = String(s); return this; }
  html(s) { this._type("text/html; charset=utf-8"); this._body = String(s); return this; }
  redirect(url, s) { this.status(s || 302); this.header("location", url); this._body = ""; return this; }
  cookie(name, value, o) {
    o = o || {};
    let c = String(name) + "=" + String(value) + "; Path=" + (o.path || "/");
    if (o.max_age !== undefined) { c += "; Max-Age=" + Math.trunc(o.max_age); }
    if (o.domain) { c += "; Domain=" + o.domain; }
    if (o.httponly !== false) { c += "; HttpOnly"; }
    if (o.secure) { c += "; Secure"; }
    c += "; SameSite=" + (o.samesite || "Lax");
    return this.header("set-cookie", c);
  }
}
globalThis.handle = async function (input) {
  if (input.op === "routes") { return { routes: __appTable }; }
  const req = input.req || {};
  req.params = input.params || {}; req.query = req.query || {}; req.headers = req.headers || {};
  req.cookies = req.cookies || {}; req.body = req.body || ""; req.ctx = {};
  req.json = function () { return JSON.parse(this.body); };
  const res = new __AppRes();
  let unhandled = false;
  try {
    let stopped = false;
    for (const id of input.chain || []) {
      const r = await __appFns[id - 1](req, res);
      if (r === 1 || r === true) { stopped = true; break; }
    }
    const h = __appFns[(input.handler || 0) - 1];
    if (!stopped && h) { await h(req, res); } else if (!stopped) { unhandled = true; }
  } catch (e) {
    return { status: 500, headers: [["content-type", "application/json"]], body: JSON.stringify({ error: { code: "app.handler_failed", message: String(e && e.message || e) } }) };
  }
  return { status: res._status, headers: res._headers, body: res._body, unhandled: unhandled };
};
