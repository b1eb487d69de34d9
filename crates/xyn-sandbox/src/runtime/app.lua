local __app_fns, __app_table = {}, {}
local function __app_reg(kind, method, pattern, fn)
  if type(pattern) ~= "string" or type(fn) ~= "function" then
    error("app routes take (pattern, function)", 3)
  end
  local id = #__app_fns + 1
  __app_fns[id] = fn
  __app_table[#__app_table + 1] = { kind = kind, method = method, pattern = pattern, id = id }
end
app = {}
function app.get(p, f) __app_reg("route", "GET", p, f) end
function app.post(p, f) __app_reg("route", "POST", p, f) end
function app.put(p, f) __app_reg("route", "PUT", p, f) end
function app.delete(p, f) __app_reg("route", "DELETE", p, f) end
function app.patch(p, f) __app_reg("route", "PATCH", p, f) end
function app.all(p, f) __app_reg("route", "*", p, f) end
function app.use(m, p, f) __app_reg("use", string.upper(tostring(m)), p, f) end
local __Res = {}
__Res.__index = __Res
function __Res:status(n) self._status = math.tointeger(n) or 500 return self end
function __Res:header(k, v) self._headers[#self._headers + 1] = { tostring(k), tostring(v) } return self end
function __Res:_type(t)
  for _, h in ipairs(self._headers) do if string.lower(h[1]) == "content-type" then return end end
  self:header("content-type", t)
end
function __Res:json(v, s) if s then self:status(s) end self:_type("application/json") self._body = json.encode(v) return self end
function __Res:text(s) self:_type("text/plain; charset=utf-8") self._body = tostring(s) return self end
function __Res:html(s) self:_type("text/html; charset=utf-8") self._body = tostring(s) return self end
function __Res:redirect(url, s) self:status(s or 302) self:header("location", url) self._body = "" return self end
function __Res:cookie(name, value, o)
  o = o or {}
  local c = tostring(name) .. "=" .. tostring(value) .. "; Path=" .. (o.path or "/")
  if o.max_age then c = c .. "; Max-Age=" .. tostring(math.tointeger(o.max_age) or 0) end
  if o.domain then c = c .. "; Domain=" .. o.domain end
  if o.httponly ~= false then c = c .. "; HttpOnly" end
  if o.secure then c = c .. "; Secure" end
  c = c .. "; SameSite=" .. (o.samesite or "Lax")
  return self:header("set-cookie", c)
end
local __Req = { __index = { json = function(self) return json.decode(self.body) end } }
local function __app_out(res)
  return { status = res._status, headers = res._headers, body = res._body }
end
function handle(input)
  if input.op == "routes" then return { routes = __app_table } end
  local req = input.req or {}
  req.params = input.params or {}
  req.query = req.query or {}
  req.headers = req.headers or {}
  req.cookies = req.cookies or {}
  req.body = req.body or ""
  req.ctx = {}
  setmetatable(req, __Req)
  local res = setmetatable({ _status = 200, _headers = {}, _body = "" }, __Res)
  local unhandled = false
  local ok, err = pcall(function()
    for _, id in ipairs(input.chain or {}) do
      local r = __app_fns[id](req, res)
      if r == 1 or r == true then return end
    end
    local h = __app_fns[input.handler]
    if h then h(req, res) else unhandled = true end
  end)
  if not ok then
    return { status = 500, headers = { { "content-type", "application/json" } },
      body = json.encode({ error = { code = "app.handler_failed", message = tostring(err) } }) }
  end
  local out = __app_out(res)
  out.unhandled = unhandled
  return out
end
