-- The echo app: the convention framing tests rely on.
-- Any method and path: 200 with x-path (the request-target exactly as received) and
-- x-body-len (body bytes after chunked framing was removed; the whole body is read first).
-- GET /__requests: every request-target seen, one a line (kept in the app's database, so
-- every worker of the app sees the same list).
xyn.db.exec("CREATE TABLE IF NOT EXISTS seen (id INTEGER PRIMARY KEY, target TEXT NOT NULL)")

app.get("/__requests", function(req, res)
  local rows = xyn.db.query("SELECT target FROM seen ORDER BY id")
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.target .. "\n" end
  res:text(table.concat(out))
end)

app.all("/*", function(req, res)
  xyn.db.exec("INSERT INTO seen (target) VALUES (?)", { req.target })
  res:header("x-path", req.target)
  res:header("x-body-len", tostring(req.body_len))
  res:text("ok\n")
end)
