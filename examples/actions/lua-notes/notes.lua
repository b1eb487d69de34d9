-- demo.lua_notes: uses fs, db and http through the xyn capability modules.
function handle(input)
  local note = xyn.fs.read("inbox/note.txt")
  xyn.fs.write("outbox/seen.txt", "seen by lua")
  xyn.db.exec("CREATE TABLE IF NOT EXISTS visits(n INTEGER)", {})
  xyn.db.exec("INSERT INTO visits(n) VALUES (?1)", {1})
  local rows = xyn.db.query("SELECT count(*) AS visits FROM visits", {})
  local resp = xyn.http.request{method = "GET", url = input.url}
  xyn.log.info("visit " .. rows[1].visits)
  return {runtime = "lua", note = note, visits = rows[1].visits, http_status = resp.status}
end
