// demo.js_notes: uses fs, db and http through the xyn capability modules.
export async function handle(input) {
  const note = xyn.fs.read("inbox/note.txt");
  xyn.fs.write("outbox/seen.txt", "seen by js");
  xyn.db.exec("CREATE TABLE IF NOT EXISTS visits(n INTEGER)", []);
  xyn.db.exec("INSERT INTO visits(n) VALUES (?1)", [1]);
  const rows = xyn.db.query("SELECT count(*) AS visits FROM visits", []);
  const resp = xyn.http.request({ method: "GET", url: input.url });
  xyn.log.info(`visit ${rows[0].visits}`);
  return { runtime: "js", note, visits: rows[0].visits, http_status: resp.status };
}
