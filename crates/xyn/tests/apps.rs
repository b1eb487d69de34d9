#![allow(clippy::unwrap_used)]
//! Apps: `xyn app dev` serving the echo example through the edge, each framing rule as a
//! raw-socket test (smuggling attempts checked through the echo app's `/__requests`), a
//! runaway Lua and JS handler isolated to its request, `Set-Cookie` never folded, hot
//! reload, and `xyn app new` + `xyn app test`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, repo_root};

/// A running `xyn app dev`.
struct Dev {
    child: Child,
    addr: String,
    data: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dev(dir: &Path) -> Dev {
    let data = tempfile::tempdir().unwrap();
    // Port 0: the dev server picks a free port and says which (a port probed beforehand could
    // be taken by another test's server in between).
    let mut child = Command::new(BIN)
        .args(["app", "dev"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--workers", "3", "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split(" at http://").nth(1)
                && line.starts_with("serving ")
                && let Some(t) = tx.take()
            {
                let _ = t.send(rest.split('/').next().unwrap_or_default().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("xyn app dev did not start");
    Dev { child, addr, data }
}

fn echo() -> Dev {
    dev(&repo_root().join("examples/apps/echo"))
}

/// Sends `raw` on a new connection and reads until the server closes (or `secs` pass).
fn send(addr: &str, raw: &[u8], secs: u64) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status codes of every response in `out`, in order.
fn statuses(out: &str) -> Vec<u16> {
    out.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| out.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

fn requests(addr: &str) -> String {
    let out = send(
        addr,
        b"GET /__requests HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        5,
    );
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[test]
fn echo_reports_target_and_body_length_after_chunked_framing() {
    let d = echo();
    let out = send(
        &d.addr,
        b"POST /a/%2e%2E/b?q=1&r HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
        5,
    );
    assert_eq!(statuses(&out), vec![200], "{out}");
    assert!(out.contains("x-path: /a/%2e%2E/b?q=1&r\r\n"), "{out}");
    assert!(out.contains("x-body-len: 5\r\n"), "{out}");
    // Pipelined requests on one connection, each answered in order.
    let out = send(
        &d.addr,
        b"PUT /p1 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhiOPTIONS /p2 HTTP/1.1\r\nHost: t\r\n\r\nDELETE /p3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        5,
    );
    assert_eq!(statuses(&out), vec![200, 200, 200], "{out}");
    let seen = requests(&d.addr);
    for t in ["/a/%2e%2E/b?q=1&r\n", "/p1\n", "/p2\n", "/p3\n"] {
        assert!(seen.contains(t), "{t} missing from {seen}");
    }
}

/// Each framing rule: the status, the connection closed, and the smuggled request (always
/// `/smuggled…`) never executed.
#[test]
fn framing_rules_and_smuggling_attempts() {
    let d = echo();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "CL.TE",
            b"POST /cl-te HTTP/1.1\r\nHost: t\r\nContent-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled-clte HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "TE.CL",
            b"POST /te-cl HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n1e\r\nGET /smuggled-tecl HTTP/1.1\r\n\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "TE.TE (second TE not chunked)",
            b"POST /te-te HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\nGET /smuggled-tete HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "TE.TE (xchunked)",
            b"POST /te-te2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\nGET /smuggled-tete2 HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "TE.TE (space before colon)",
            b"POST /te-te3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /smuggled-tete3 HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "TE not ending in chunked",
            b"POST /gzip HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Content-Length list with different values",
            b"POST /cl-list HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            400,
        ),
        (
            "Content-Length list in one field",
            b"POST /cl-list2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 4\r\n\r\nabcd".to_vec(),
            400,
        ),
        (
            "obs-fold",
            b"GET /fold HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bare CR in a field",
            b"GET /cr HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bare CR ending the request line",
            b"GET /cr2 HTTP/1.1\rHost: t\r\n\r\n".to_vec(),
            400,
        ),
        (
            "chunk size overflow",
            b"POST /overflow HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bad chunk extension",
            b"POST /ext HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;a\x01b\r\nabc\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "chunk size not hex",
            b"POST /nothex HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (name, raw, want) in &cases {
        let out = send(&d.addr, raw, 5);
        let got = statuses(&out);
        assert_eq!(got.first(), Some(want), "{name}: {out}");
        assert!(
            !got.contains(&200),
            "{name}: a request on this connection executed: {out}"
        );
    }
    // A good request before a refused one on the same connection is answered first.
    let out = send(
        &d.addr,
        b"GET /before HTTP/1.1\r\nHost: t\r\n\r\nPOST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\nGET /smuggled-after HTTP/1.1\r\n\r\n",
        5,
    );
    assert_eq!(statuses(&out), vec![200, 400], "{out}");
    assert!(out.contains("\"request.malformed\""), "{out}");
    let seen = requests(&d.addr);
    assert!(
        !seen.contains("smuggled"),
        "a smuggled request executed: {seen}"
    );
    for name in [
        "/cl-te",
        "/te-cl",
        "/te-te",
        "/fold",
        "/cr",
        "/overflow",
        "/ext",
    ] {
        assert!(
            !seen.lines().any(|l| l == name),
            "refused request {name} executed: {seen}"
        );
    }
    assert!(seen.contains("/before\n"), "{seen}");
}

#[test]
fn limits_414_431_and_lingering_413() {
    let d = echo();
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    assert_eq!(statuses(&send(&d.addr, long.as_bytes(), 5)), vec![414]);
    let many = format!(
        "GET /h HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X-A: b\r\n".repeat(200)
    );
    assert_eq!(statuses(&send(&d.addr, many.as_bytes(), 5)), vec![431]);
    let big = format!(
        "GET /h HTTP/1.1\r\nHost: t\r\nX-A: {}\r\n\r\n",
        "b".repeat(70_000)
    );
    assert_eq!(statuses(&send(&d.addr, big.as_bytes(), 5)), vec![431]);

    // Early 413: the client keeps sending its (too large) body after the answer; it still
    // reads the 413 rather than a connection reset.
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n\r\n")
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..16 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let err = loop {
        match s.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e),
        }
    };
    let out = String::from_utf8_lossy(&out);
    assert_eq!(statuses(&out), vec![413], "{out} ({err:?})");
    assert!(out.contains("request.too_large"), "{out}");
}

fn write_app(dir: &Path, runtime: &str, entry: &str, code: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("xyn-app.toml"),
        format!("name = \"t\"\nruntime = \"{runtime}\"\nentry = \"{entry}\"\n\n[limits]\ntimeout_ms = 400\n"),
    )
    .unwrap();
    std::fs::write(dir.join(entry), code).unwrap();
}

fn get(addr: &str, path: &str) -> String {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        10,
    )
}

fn runaway_is_isolated(runtime: &str, entry: &str, code: &str) {
    let tmp = tempfile::tempdir().unwrap();
    write_app(tmp.path(), runtime, entry, code);
    let d = dev(tmp.path());
    assert!(get(&d.addr, "/ok").contains("fine"));
    let addr = d.addr.clone();
    let spinning = std::thread::spawn(move || get(&addr, "/spin"));
    // The app keeps answering while one handler spins.
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let ok = get(&d.addr, "/ok");
    assert!(ok.contains("fine"), "{ok}");
    assert!(
        t.elapsed() < Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    let spun = spinning.join().unwrap();
    assert_eq!(statuses(&spun), vec![503], "{spun}");
    assert!(spun.contains("\"app.handler_stopped\""), "{spun}");
    // The worker that ran it serves again; the incident was recorded.
    for _ in 0..4 {
        assert!(get(&d.addr, "/ok").contains("fine"));
    }
    let incidents: Vec<_> = std::fs::read_dir(d.data.path().join("incidents"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(incidents.len(), 1);
    let text = std::fs::read_to_string(incidents[0].path()).unwrap();
    assert!(text.contains("\"/spin\""), "{text}");
}

#[test]
fn runaway_lua_handler_is_isolated_to_its_request() {
    runaway_is_isolated(
        "lua",
        "app.lua",
        "app.get('/ok', function(req, res) res:text('fine') end)\napp.get('/spin', function(req, res) while true do end end)\n",
    );
}

#[test]
fn runaway_js_handler_is_isolated_to_its_request() {
    runaway_is_isolated(
        "js",
        "app.js",
        "app.get('/ok', (req, res) => res.text('fine'));\napp.get('/spin', (req, res) => { for (;;) {} });\n",
    );
}

#[test]
fn api_routes_params_405_and_cookies_not_folded() {
    let tmp = tempfile::tempdir().unwrap();
    write_app(
        tmp.path(),
        "js",
        "app.js",
        r#"
app.get("/users/:id", (req, res) => res.json({ id: req.params.id, q: req.query.q || null }));
app.get("/users/me", (req, res) => res.text("me"));
app.post("/users", (req, res) => res.status(201).json({ got: req.json() }));
app.get("/login", (req, res) => {
  res.cookie("a", "1").cookie("b", "2", { secure: true, max_age: 60 });
  res.redirect("/home");
});
app.use("*", "/admin/*", (req, res) => { res.status(401).json({ error: "no" }); return 1; });
app.get("/admin/x", (req, res) => res.text("secret"));
"#,
    );
    let d = dev(tmp.path());
    assert!(get(&d.addr, "/users/me").ends_with("me"));
    assert!(get(&d.addr, "/users/7?q=z").contains(r#"{"id":"7","q":"z"}"#));
    let out = send(
        &d.addr,
        b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{\"n\":1}",
        5,
    );
    assert!(
        out.starts_with("HTTP/1.1 201") && out.contains(r#"{"got":{"n":1}}"#),
        "{out}"
    );
    let out = send(
        &d.addr,
        b"DELETE /users HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        5,
    );
    assert!(
        out.starts_with("HTTP/1.1 405") && out.contains("allow: POST\r\n"),
        "{out}"
    );
    assert!(get(&d.addr, "/nothing").starts_with("HTTP/1.1 404"));
    let out = get(&d.addr, "/login");
    assert!(
        out.starts_with("HTTP/1.1 302") && out.contains("location: /home\r\n"),
        "{out}"
    );
    assert!(
        out.contains("set-cookie: a=1; Path=/; HttpOnly; SameSite=Lax\r\n"),
        "{out}"
    );
    assert!(
        out.contains("set-cookie: b=2; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Lax\r\n"),
        "{out}"
    );
    let out = get(&d.addr, "/admin/x");
    assert!(
        out.starts_with("HTTP/1.1 401") && !out.contains("secret"),
        "{out}"
    );
    assert!(
        !out.contains("strict-transport-security"),
        "no HSTS over HTTP: {out}"
    );
}

#[test]
fn hot_reload_and_new_and_test_commands() {
    let tmp = tempfile::tempdir().unwrap();
    for runtime in ["lua", "js"] {
        let name = format!("hello-{runtime}");
        let st = Command::new(BIN)
            .args(["app", "new", &name, "--runtime", runtime, "--dir"])
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        let dir = tmp.path().join(&name);
        let st = Command::new(BIN)
            .args(["app", "test"])
            .arg(&dir)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&st.stdout);
        assert!(st.status.success(), "{out}");
        assert!(out.contains("5 passed, 0 failed"), "{out}");
        // Break a route: the test command fails.
        let entry = dir.join(if runtime == "lua" {
            "app.lua"
        } else {
            "app.js"
        });
        let code = std::fs::read_to_string(&entry).unwrap();
        std::fs::write(&entry, code.replace("Hello from", "Bye from")).unwrap();
        let st = Command::new(BIN)
            .args(["app", "test"])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(st.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&st.stdout).contains("FAIL home page"));
    }
    // Hot reload: a changed entry is served within a moment.
    let dir = tmp.path().join("hello-lua");
    let d = dev(&dir);
    assert!(get(&d.addr, "/").contains("Bye from"));
    let entry = dir.join("app.lua");
    let code = std::fs::read_to_string(&entry).unwrap();
    std::fs::write(&entry, code.replace("Bye from", "Reloaded")).unwrap();
    let t = Instant::now();
    loop {
        if get(&d.addr, "/").contains("Reloaded") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "not reloaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("reloaded after {:?}", t.elapsed());
}

/// The node's own API listener has the same framing checks: TE with CL is refused and the
/// connection closed (hyper alone would run the request as chunked).
#[test]
fn node_listener_refuses_te_with_cl() {
    let node = support::Node::builder().start();
    let addr = node.url.trim_start_matches("http://").to_string();
    let out = send(
        &addr,
        b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\nPOST /api/v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n",
        10,
    );
    assert_eq!(statuses(&out), vec![200, 400], "{out}");
    assert!(out.contains("\"request.malformed\""), "{out}");
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    assert_eq!(statuses(&send(&addr, long.as_bytes(), 10)), vec![414]);
}
