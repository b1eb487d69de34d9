//! Where guests can send requests, written as the attacks: a guest driving the node's own
//! API, reading back a secret through an echoing server, sending a secret to a host it is
//! not bound to or through a redirect, and setting framing headers. Each runs in wasm, Lua
//! and JavaScript through the same capability layer and the node's executor.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

mod support;

use support::{ALL, Rt, wat_forward};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use xyn_actions::net::Egress;
use xyn_sandbox::caps::http::{DirectHttp, HttpExecutor};
use xyn_sandbox::{InvokeReport, InvokeRequest, Sandbox, SandboxConfig};

const SECRET: &str = "tok-9f1c2e7a5b3d";

/// A guest that passes its input to `http.request` and returns `{"ok": response}` or
/// `{"error": {"message": …}}`.
fn http_probe(rt: Rt) -> String {
    match rt {
        Rt::Wasm => wat_forward("http.request"),
        Rt::Lua => "function handle(input)\n  local ok, v = pcall(function() return xyn.http.request(input) end)\n  if ok then return {ok = v} else return {error = {message = tostring(v)}} end\nend\n".into(),
        Rt::Js => "export function handle(input) {\n  try { return {ok: xyn.http.request(input)}; } catch (e) { return {error: {message: String(e.message)}}; }\n}\n".into(),
    }
}

struct Env {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
    http: Arc<DirectHttp>,
}

impl Env {
    /// A sandbox whose HTTP goes through an egress that knows `listeners` as the node's.
    fn new(listeners: Vec<std::net::SocketAddr>, allow_node: bool) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        let sandbox = Sandbox::new(SandboxConfig {
            limits: Default::default(),
            cache_dir: Some(dir.path().join("cache")),
        });
        let egress = Arc::new(Egress::new());
        egress.set_listeners(listeners);
        let http = DirectHttp::with_executor(HttpExecutor::new(egress, allow_node)).unwrap();
        Env {
            dir,
            sandbox,
            http: Arc::new(http),
        }
    }

    fn package(&self, rt: Rt, tag: &str, caps: &str) -> PathBuf {
        let name = format!("t.{}_{tag}", rt.name());
        let dir = self.dir.path().join("pkgs").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(rt.entry()), http_probe(rt)).unwrap();
        std::fs::write(
            dir.join("xyn-action.toml"),
            format!(
                "name = \"{name}\"\nruntime = \"{}\"\nentry = \"{}\"\n{caps}\n",
                rt.name(),
                rt.entry()
            ),
        )
        .unwrap();
        dir
    }

    fn invoke(&self, pkg: &Path, input: Value) -> InvokeReport {
        let p = self.sandbox.package(pkg).unwrap();
        self.sandbox.invoke(
            &p,
            InvokeRequest {
                input,
                data_dir: None,
                db_path: None,
                env: BTreeMap::new(),
                secrets: BTreeMap::from([("TOKEN".to_string(), SECRET.to_string())]),
                http: self.http.clone(),
                limits: None,
            },
        )
    }
}

fn ok(r: &InvokeReport) -> Value {
    match &r.result {
        Ok(v) => v.clone(),
        Err(e) => panic!("{} failed: {e}", r.action),
    }
}

fn denied(out: &Value) -> bool {
    out["error"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("capability denied:"))
}

/// A server on 127.0.0.1 that records every request head and answers: `/echo` with the
/// request head as body and its `X-Correlation-Id` echoed (as the node does, also on a
/// 401), `/to/<port>` with a 307 to `/echo` on that port.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(500) {
                let Ok(mut s) = stream else { continue };
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&h);
                }
                let mut body = vec![0; len.min(1 << 20)];
                let _ = reader.read_exact(&mut body);
                log.lock().unwrap().push(head.clone());
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let corr = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("x-correlation-id")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let resp = if let Some(to) = path.strip_prefix("/to/") {
                    format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{to}/echo\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                } else {
                    let body = serde_json::to_string(&head).unwrap();
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nx-correlation-id: {corr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = s.write_all(resp.as_bytes());
            }
        });
        Server { port, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn a_guest_cannot_drive_the_nodes_own_api_even_when_its_allowlist_names_the_node() {
    let node = Server::start();
    let other = Server::start();
    let listen: std::net::SocketAddr = format!("0.0.0.0:{}", node.port).parse().unwrap();
    let env = Env::new(vec![listen], false);
    let caps = format!(
        "[capabilities]\nhttp_hosts = [\"127.0.0.1:{}\", \"localhost:{}\", \"127.0.0.1:{}\"]\n",
        node.port, node.port, other.port
    );
    for rt in ALL {
        let pkg = env.package(rt, "node", &caps);
        let exec = json!({"action": "http.call", "input": {"url": format!("http://127.0.0.1:{}/", other.port)}});
        for url in [
            format!(
                "http://127.0.0.1:{}/api/internal/actions/execute",
                node.port
            ),
            format!("http://localhost:{}/api/v1/events", node.port),
            format!("http://[::ffff:127.0.0.1]:{}/api/v1/events", node.port),
            format!("http://0.0.0.0:{}/api/v1/events", node.port),
        ] {
            let r = env.invoke(
                &pkg,
                json!({"method": "POST", "url": url, "body": exec.to_string(),
                       "headers": {"content-type": "application/json"}}),
            );
            let out = ok(&r);
            assert!(denied(&out), "{rt:?}: {url} gave {out}");
            assert_eq!(r.denials.len(), 1, "{rt:?} {url}: one xyn.cap.denied each");
            assert_eq!(r.denials[0].capability, "http.request");
        }
        // The control: the other allowed server is reachable.
        let r = env.invoke(
            &pkg,
            json!({"url": format!("http://127.0.0.1:{}/echo", other.port)}),
        );
        assert_eq!(ok(&r)["ok"]["status"], 401, "{rt:?}");
    }
    assert!(
        node.requests().is_empty(),
        "the node received {:?}",
        node.requests()
    );
    assert!(
        other.requests().iter().all(|h| h.starts_with("GET /echo")),
        "the other server received only the control requests: {:?}",
        other.requests()
    );

    // The operator allows it and the manifest names it: reachable, and marked as coming
    // from a guest (the edge refuses that marker on API and UI routes).
    let env = Env::new(vec![listen], true);
    let pkg = env.package(Rt::Lua, "node_allowed", &caps);
    let r = env.invoke(
        &pkg,
        json!({"url": format!("http://127.0.0.1:{}/echo", node.port)}),
    );
    assert_eq!(ok(&r)["ok"]["status"], 401);
    let seen = node.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].to_ascii_lowercase().contains("x-xyn-egress:"),
        "{seen:?}"
    );
}

#[test]
fn a_secret_echoed_back_never_reaches_the_guest_or_its_report() {
    let echo = Server::start();
    let env = Env::new(vec![], false);
    let caps = format!(
        "[capabilities]\nhttp_hosts = [\"127.0.0.1:{p}\"]\n[capabilities.secrets.TOKEN]\nhosts = [\"127.0.0.1:{p}\"]\n",
        p = echo.port
    );
    for rt in ALL {
        let pkg = env.package(rt, "echo", &caps);
        let r = env.invoke(
            &pkg,
            json!({"url": format!("http://127.0.0.1:{}/echo", echo.port),
                   "headers": {"X-Correlation-Id": "{{secrets.TOKEN}}"}}),
        );
        let out = ok(&r);
        assert_eq!(out["ok"]["status"], 401, "{rt:?}: {out}");
        let text = serde_json::to_string(&out).unwrap();
        assert!(
            !text.contains(SECRET),
            "{rt:?}: the guest saw the secret: {text}"
        );
        assert!(text.contains("[REDACTED]"), "{rt:?}: {text}");
        assert!(
            echo.requests().last().unwrap().contains(SECRET),
            "the bound host does receive the secret"
        );
    }
}

#[test]
fn a_secret_is_never_sent_to_a_host_it_is_not_bound_to() {
    let bound = Server::start();
    let unbound = Server::start();
    let env = Env::new(vec![], false);
    let caps = format!(
        "[capabilities]\nhttp_hosts = [\"127.0.0.1:{b}\", \"127.0.0.1:{u}\"]\n[capabilities.secrets.TOKEN]\nhosts = [\"127.0.0.1:{b}\"]\n",
        b = bound.port,
        u = unbound.port
    );
    for rt in ALL {
        let pkg = env.package(rt, "unbound", &caps);
        let r = env.invoke(
            &pkg,
            json!({"url": format!("http://127.0.0.1:{}/echo", unbound.port),
                   "headers": {"Authorization": "{{secrets.TOKEN}}"}}),
        );
        let out = ok(&r);
        assert!(denied(&out), "{rt:?}: {out}");
        assert!(r.denials[0].reason.contains("not bound"), "{:?}", r.denials);

        // A redirect from the bound host to another origin: the request goes on without
        // the secret-bearing and credential headers.
        let r = env.invoke(
            &pkg,
            json!({"url": format!("http://127.0.0.1:{}/to/{}", bound.port, unbound.port),
                   "headers": {"X-Api-Key": "{{secrets.TOKEN}}", "Authorization": "Basic YTpi",
                               "Cookie": "sid=1", "X-Plain": "kept"}}),
        );
        assert_eq!(ok(&r)["ok"]["status"], 401, "{rt:?}: {:?}", r.result);
        let last = unbound.requests().last().unwrap().to_ascii_lowercase();
        assert!(last.contains("x-plain: kept"), "{last}");
        for h in ["x-api-key", "authorization", "cookie", SECRET] {
            assert!(!last.contains(h), "{rt:?}: {h} crossed origins: {last}");
        }
    }
    assert!(unbound.requests().iter().all(|h| !h.contains(SECRET)));
}

#[test]
fn guests_cannot_set_framing_or_routing_headers() {
    let echo = Server::start();
    let env = Env::new(vec![], false);
    let caps = format!(
        "[capabilities]\nhttp_hosts = [\"127.0.0.1:{}\"]\n",
        echo.port
    );
    for rt in ALL {
        let pkg = env.package(rt, "headers", &caps);
        let r = env.invoke(
            &pkg,
            json!({"method": "POST", "url": format!("http://127.0.0.1:{}/echo", echo.port),
                   "body": "abc",
                   "headers": {"Host": "internal.example", "Transfer-Encoding": "chunked",
                               "Content-Length": "999", "Connection": "upgrade", "Upgrade": "h2c",
                               "Proxy-Authorization": "Basic eA==", "TE": "trailers",
                               "X-Xyn-Egress": "forged"}}),
        );
        assert_eq!(ok(&r)["ok"]["status"], 401, "{rt:?}: {:?}", r.result);
        let head = echo.requests().last().unwrap().to_ascii_lowercase();
        assert!(
            head.contains(&format!("host: 127.0.0.1:{}", echo.port)),
            "{head}"
        );
        for bad in [
            "internal.example",
            "transfer-encoding",
            "content-length: 999",
            "upgrade",
            "proxy-authorization",
            "te: trailers",
            "forged",
        ] {
            assert!(!head.contains(bad), "{rt:?}: {bad} was sent: {head}");
        }
    }
}
