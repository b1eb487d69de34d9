-- The Xyn capability modules for Lua. `__xyn_call(name, args)` -> (ok, value_or_message)
-- is the one native function;
-- it is removed from the globals before the action's code runs.
local native = __xyn_call
__xyn_call = nil
-- A spent budget raises an error where a yield cannot happen (inside a callback that a C
-- function such as string.gsub or table.sort makes); these re-raise it when caught, so it
-- always unwinds to a frame that can yield.
local spent = __xyn_spent
__xyn_spent = nil
do
  local pcall_, xpcall_, resume_ = pcall, xpcall, coroutine.resume
  local pack, unpack = table.pack, table.unpack
  local function check(r)
    if not r[1] and spent() then error(r[2], 0) end
    return unpack(r, 1, r.n)
  end
  pcall = function(...) return check(pack(pcall_(...))) end
  xpcall = function(...) return check(pack(xpcall_(...))) end
  coroutine.resume = function(...) return check(pack(resume_(...))) end
end
local error = error
-- A refused or failed call raises an error whose message is exactly the layer's message
-- ("capability denied: …"), without a position prefix.
local function call(name, args)
  local ok, v = native(name, args)
  if not ok then error(v, 0) end
  return v
end
local function c(name) return function(args) return call(name, args or {}) end end
xyn = {
  fs = {
    read = function(path) return call("fs.read", {path = path}) end,
    write = function(path, data) return call("fs.write", {path = path, data = data}) end,
  },
  http = { request = function(req) return call("http.request", req) end },
  env = { get = function(name) return call("env.get", {name = name}) end },
  db = {
    query = function(sql, params) return call("db.query", {sql = sql, params = params}) end,
    exec = function(sql, params) return call("db.exec", {sql = sql, params = params}) end,
  },
  time = {
    now_ms = function() return call("time.now_ms", {}) end,
    monotonic_ms = function() return call("time.monotonic_ms", {}) end,
  },
  crypto = {
    sha256 = function(data) return call("crypto.sha256", {data = data}) end,
    sha512 = function(data) return call("crypto.sha512", {data = data}) end,
    hmac_sha256 = c("crypto.hmac_sha256"),
    random_bytes = function(len) return call("crypto.random_bytes", {len = len}) end,
    ed25519_sign = c("crypto.ed25519_sign"),
    ed25519_verify = c("crypto.ed25519_verify"),
    password_hash = function(pw) return call("crypto.password_hash", {password = pw}) end,
    password_verify = function(pw, hash) return call("crypto.password_verify", {password = pw, hash = hash}) end,
  },
  -- JSON null inside arrays (where nil would leave a hole); json.encode writes it as null.
  null = json.null,
  log = {
    info = function(msg) return call("log.info", {msg = tostring(msg)}) end,
    warn = function(msg) return call("log.warn", {msg = tostring(msg)}) end,
    error = function(msg) return call("log.error", {msg = tostring(msg)}) end,
  },
}
print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
  return call("log.info", {msg = table.concat(parts, " ")})
end
-- No finalizers: Lua runs __gc metamethods with the debug hooks off, outside every CPU and
-- time budget, so a metatable with __gc is refused (setmetatable is the only way a guest
-- can mark a table for finalization).
local setmetatable, rawget, type = setmetatable, rawget, type
_G.setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed (finalizers run outside the budgets)", 2)
  end
  return setmetatable(t, mt)
end
