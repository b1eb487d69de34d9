// The Xyn capability modules for JavaScript. `__xyn_call(name, argsJson)` is the one
// native function; it is removed from the globals before the action's code runs.
(function () {
  "use strict";
  const native = globalThis.__xyn_call;
  delete globalThis.__xyn_call;
  function call(name, args) {
    const r = JSON.parse(native(name, JSON.stringify(args === undefined ? {} : args)));
    if (r.error) {
      const e = new Error(r.error.message);
      e.code = r.error.code;
      throw e;
    }
    return r.ok;
  }
  const c = (name) => (args) => call(name, args);
  const log = (level) => (...m) => call("log." + level, { msg: m.map(String).join(" ") });
  globalThis.xyn = Object.freeze({
    fs: Object.freeze({
      read: (path) => call("fs.read", { path }),
      write: (path, data) => call("fs.write", { path, data }),
    }),
    http: Object.freeze({ request: (req) => call("http.request", req) }),
    env: Object.freeze({
      get: (name) => {
        const v = call("env.get", { name });
        return v === null ? undefined : v;
      },
    }),
    db: Object.freeze({
      query: (sql, params) => call("db.query", { sql, params: params === undefined ? [] : params }),
      exec: (sql, params) => call("db.exec", { sql, params: params === undefined ? [] : params }),
    }),
    time: Object.freeze({
      now_ms: () => call("time.now_ms", {}),
      monotonic_ms: () => call("time.monotonic_ms", {}),
    }),
    crypto: Object.freeze({
      sha256: (data) => call("crypto.sha256", { data }),
      sha512: (data) => call("crypto.sha512", { data }),
      hmac_sha256: c("crypto.hmac_sha256"),
      random_bytes: (len) => call("crypto.random_bytes", { len }),
      ed25519_sign: c("crypto.ed25519_sign"),
      ed25519_verify: c("crypto.ed25519_verify"),
      password_hash: (password) => call("crypto.password_hash", { password }),
      password_verify: (password, hash) => call("crypto.password_verify", { password, hash }),
    }),
    log: Object.freeze({ info: log("info"), warn: log("warn"), error: log("error") }),
  });
  globalThis.json = Object.freeze({ encode: (v) => JSON.stringify(v), decode: (s) => JSON.parse(s) });
  globalThis.console = Object.freeze({ log: log("info"), info: log("info"), warn: log("warn"), error: log("error") });
  // Array.prototype.join (and toString, toLocaleString, which use it) and the typed
  // arrays' join are C loops over `length` that never poll the interrupt handler: a
  // `new Array(1e9).join("")` would run past every budget. They join at most CHUNK
  // elements per native call; the loop between calls is bytecode, which polls.
  const CHUNK = 4096;
  const chunked = (nativeJoin) => function join(sep) {
    const o = Object(this);
    const len = Math.min(Math.max(Math.trunc(Number(o.length)) || 0, 0), Number.MAX_SAFE_INTEGER);
    if (len <= CHUNK) return nativeJoin.call(o, sep);
    const s = sep === undefined ? "," : String(sep);
    const parts = [];
    for (let i = 0; i < len; i += CHUNK) {
      const end = Math.min(len, i + CHUNK);
      const slice = new Array(end - i);
      for (let j = i; j < end; j++) slice[j - i] = o[j];
      parts.push(Array.prototype.join.call(slice, s));
    }
    return Array.prototype.join.call(parts, s);
  };
  const arrayJoin = Array.prototype.join;
  Object.defineProperty(Array.prototype, "join", { value: chunked(arrayJoin), writable: true, configurable: true });
  const typedProto = Object.getPrototypeOf(Uint8Array.prototype);
  Object.defineProperty(typedProto, "join", { value: chunked(typedProto.join), writable: true, configurable: true });
  // No eval, no Function constructors: code comes only from the entry.
  delete globalThis.eval;
  const refuse = function () { throw new EvalError("code generation from strings is disabled"); };
  for (const f of [function () {}, async function () {}, function* () {}, async function* () {}]) {
    const proto = Object.getPrototypeOf(f);
    Object.defineProperty(proto, "constructor", { value: refuse, writable: false, configurable: false });
  }
  Object.defineProperty(globalThis, "Function", { value: refuse, writable: false, configurable: false });
})();
