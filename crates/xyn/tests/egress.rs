#![allow(clippy::unwrap_used)]
//! Where the node connects on behalf of others, attacked end to end with the real binary: a
//! guest driving the node's own API, a guest reading back a secret through an echoing
//! server, event data choosing where `http.call` connects, a forged egress marker, a gate
//! that shows what it approves, and the README's quick start on a random port with auth on.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::{Node, client, repo_root};

/// A port that was free a moment ago (for a node that must know its port before it starts).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A raw HTTP server on 127.0.0.1 that records each request head and answers: `/hop/<port>`
/// with a 302 to `http://127.0.0.1:<port>/landed`, anything else with a 401 that echoes
/// `X-Correlation-Id` as the node does and the request head as its body.
struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(200) {
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
                let resp = if let Some(to) = path.strip_prefix("/hop/") {
                    format!(
                        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{to}/landed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
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
        Recorder { port, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Installs a Lua package into the node's data dir (the node registers it at its next start).
fn install_lua(node: &Node, name: &str, code: &str, caps: &str) {
    let pkg = node.dir.path().join("pkgs").join(name);
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("main.lua"), code).unwrap();
    std::fs::write(
        pkg.join("xyn-action.toml"),
        format!("name = \"{name}\"\nruntime = \"lua\"\nentry = \"main.lua\"\n{caps}\n"),
    )
    .unwrap();
    let (code, out, err) = node.cli(&[
        "action",
        "install",
        pkg.to_str().unwrap(),
        "--data-dir",
        node.data_dir().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "install {name}: {out}{err}");
}

/// A Lua guest that sends `input.req` to `xyn.http.request` and returns what came back (or the
/// error message).
const LUA_PROBE: &str = "function handle(input)\n  local ok, v = pcall(function() return xyn.http.request(input.req) end)\n  if ok then return {ok = v} else return {error = tostring(v)} end\nend\n";

fn one_step(id: &str, action: &str) -> String {
    format!(
        "id: {id}\ntrigger: {{event_type: test.{id}}}\ninputs: [{{name: req, type: object}}]\nplan:\n  - kind: action_task\n    id: only\n    action: {action}\n    with: {{req: \"{{{{inputs.req}}}}\"}}\n"
    )
}

/// A blueprint for the node's next start (one that calls an action installed meanwhile).
fn write_blueprint(node: &Node, file: &str, text: &str) {
    std::fs::write(node.dir.path().join("blueprints").join(file), text).unwrap();
}

/// Files of the node's SQLite database (the database, its WAL and shared memory).
fn database_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(data).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().to_string();
        if n.contains(".sqlite") || n.contains(".db") {
            all.extend(std::fs::read(&p).unwrap_or_default());
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_drive_the_nodes_own_api_even_when_its_allowlist_names_the_node() {
    let port = free_port();
    let other = Recorder::start();
    let mut node = Node::builder()
        .args(&["--listen", &format!("127.0.0.1:{port}")])
        .start();
    node.stop();
    install_lua(
        &node,
        "t.guest",
        LUA_PROBE,
        &format!(
            "[capabilities]\nhttp_hosts = [\"127.0.0.1:{port}\", \"localhost:{port}\", \"127.0.0.1:{}\"]\n",
            other.port
        ),
    );
    write_blueprint(&node, "g.yaml", &one_step("guest", "t.guest"));
    node.restart();
    let exec = json!({"action": "http.call", "input": {"url": format!("http://127.0.0.1:{}/unlisted", other.port)}});
    let event = json!({"event_name": "x.y", "data": {}});
    for (url, body) in [
        (
            format!("http://127.0.0.1:{port}/api/internal/actions/execute"),
            exec.to_string(),
        ),
        (
            format!("http://localhost:{port}/api/v1/events"),
            event.to_string(),
        ),
    ] {
        let req = json!({"method": "POST", "url": url, "body": body,
                         "headers": {"content-type": "application/json"}});
        node.emit("test.guest", json!({"req": req})).await;
    }
    let runs = node
        .until(20, "both runs to finish", || async {
            let runs = node.runs_of("guest").await;
            (runs.len() == 2 && runs.iter().all(|r| r["status"] == "completed"))
                .then_some(json!(runs))
        })
        .await;
    for r in runs.as_array().unwrap() {
        let id = r["run_id"].as_str().unwrap();
        let out = node.step(id, "only").await["outputs"].clone();
        let err = out["error"].as_str().unwrap_or_default();
        assert!(err.contains("capability denied"), "{out}");
        assert!(err.contains("own address"), "{out}");
        let denied: Vec<Value> = node
            .events_of(id)
            .await
            .into_iter()
            .filter(|e| e["event_name"] == "xyn.cap.denied")
            .collect();
        assert_eq!(denied.len(), 1, "one xyn.cap.denied per refusal");
        assert_eq!(denied[0]["data"]["capability"], "http.request");
    }
    assert!(
        other.requests().is_empty(),
        "the unlisted server was reached: {:?}",
        other.requests()
    );
    let (_, evs) = node.get("/api/v1/events?event_name=x.y").await;
    assert_eq!(
        evs["items"].as_array().unwrap().len(),
        0,
        "no event was emitted by the guest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_refuses_requests_the_node_made_for_others() {
    let node = Node::builder().start();
    for path in ["/api/v1/health", "/api/v1/events", "/ui", "/api/v1/runs"] {
        let r = client()
            .get(format!("{}{path}", node.url))
            .header("x-xyn-egress", "any value at all")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "request.from_guest",
            "{path}: {body}"
        );
    }
    let (status, _) = node.get("/api/v1/health").await;
    assert_eq!(status, 200, "the same request without the marker is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_never_reads_back_a_secret_and_no_record_holds_it() {
    let echo = Recorder::start();
    let unbound = Recorder::start();
    let secret = "sek-RET-4b1d9e77f0";
    let mut node = Node::builder().env("XYN_SECRET_TOKEN", secret).start();
    node.stop();
    let code = "function handle(input)\n  local r = xyn.http.request(input.req)\n  xyn.log.info(r.body)\n  return {status = r.status, headers = r.headers, body = r.body}\nend\n";
    install_lua(
        &node,
        "t.echo",
        code,
        &format!(
            "[capabilities]\nhttp_hosts = [\"127.0.0.1:{e}\", \"127.0.0.1:{u}\"]\n[capabilities.secrets.TOKEN]\nhosts = [\"127.0.0.1:{e}\"]\n",
            e = echo.port,
            u = unbound.port
        ),
    );
    write_blueprint(&node, "e.yaml", &one_step("echo", "t.echo"));
    node.restart();
    // Echoed back in a header and the body: the guest gets it scrubbed.
    let req = json!({"url": format!("http://127.0.0.1:{}/echo", echo.port),
                     "headers": {"X-Correlation-Id": "{{secrets.TOKEN}}"}});
    node.emit("test.echo", json!({"req": req})).await;
    let id = node.the_run_of("echo").await;
    let run = node.until_run_status(&id, "completed", 20).await;
    let out = node.step(&id, "only").await["outputs"].clone();
    assert_eq!(out["status"], 401, "{out}");
    assert!(
        out["headers"]["x-correlation-id"]
            .as_str()
            .unwrap()
            .contains("[REDACTED]"),
        "{out}"
    );
    assert!(
        echo.requests()[0].contains(secret),
        "the bound host receives it"
    );
    // To a host it is not bound to (directly, or by a redirect from the bound one): refused,
    // or sent without it.
    let req = json!({"url": format!("http://127.0.0.1:{}/x", unbound.port),
                     "headers": {"Authorization": "{{secrets.TOKEN}}"}});
    node.emit("test.echo", json!({"req": req})).await;
    let req = json!({"url": format!("http://127.0.0.1:{}/hop/{}", echo.port, unbound.port),
                     "headers": {"X-Api-Key": "{{secrets.TOKEN}}", "Authorization": "Bearer {{secrets.TOKEN}}"}});
    node.emit("test.echo", json!({"req": req})).await;
    node.until(20, "three runs", || async {
        let runs = node.runs_of("echo").await;
        (runs.len() == 3 && runs.iter().all(|r| r["status"] != "running")).then_some(json!(runs))
    })
    .await;
    assert!(
        unbound.requests().iter().all(|h| !h.contains(secret)),
        "{:?}",
        unbound.requests()
    );
    assert!(!serde_json::to_string(&run).unwrap().contains(secret));
    for e in node.events_of(&id).await {
        assert!(!e.to_string().contains(secret), "{e}");
    }
    // While the node runs (the WAL holds the recent writes) and after it stopped.
    let mut db = database_bytes(&node.data_dir());
    node.stop();
    db.extend(database_bytes(&node.data_dir()));
    assert!(!db.is_empty(), "the database files were found");
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is in the database or its WAL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_cannot_point_http_call_at_loopback_or_through_a_redirect() {
    let target = Recorder::start();
    let hop = Recorder::start();
    let bp = "id: fetch\ntrigger: {event_type: test.fetch}\ninputs:\n  - {name: url, type: string}\nplan:\n  - kind: action_task\n    id: call\n    action: http.call\n    with: {url: \"{{inputs.url}}\", method: POST}\n";
    // No allowlist: public addresses only.
    let node = Node::builder().blueprint("f.yaml", bp).start();
    let node_port = node.url.rsplit(':').next().unwrap().to_string();
    let p = target.port;
    let urls = [
        format!("http://127.0.0.1:{p}/a"),
        format!("http://0x7f000001:{p}/b"),
        format!("http://2130706433:{p}/c"),
        format!("http://[::ffff:127.0.0.1]:{p}/d"),
        format!("http://[::127.0.0.1]:{p}/e"),
        format!("http://localhost:{p}/f"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://127.0.0.1:{node_port}/api/v1/events"),
    ];
    for u in &urls {
        node.emit("test.fetch", json!({"url": u})).await;
    }
    let runs = node
        .until(20, "every run to fail", || async {
            let runs = node.runs_of("fetch").await;
            (runs.len() == urls.len() && runs.iter().all(|r| r["status"] == "failed"))
                .then_some(json!(runs))
        })
        .await;
    for r in runs.as_array().unwrap() {
        let s = node.step(r["run_id"].as_str().unwrap(), "call").await;
        assert_eq!(s["error"]["code"], "http.denied", "{s}");
        assert_eq!(s["attempt"], 1, "a refusal is not retried");
    }
    assert!(target.requests().is_empty(), "{:?}", target.requests());
    drop(node);

    // An allowlist that names one local server: a 302 from it to another port is refused.
    let node = Node::builder()
        .blueprint("f.yaml", bp)
        .allow_http(&format!("http://127.0.0.1:{}", hop.port))
        .start();
    node.emit(
        "test.fetch",
        json!({"url": format!("http://127.0.0.1:{}/hop/{p}", hop.port)}),
    )
    .await;
    let id = node.the_run_of("fetch").await;
    node.until_run_status(&id, "failed", 20).await;
    let s = node.step(&id, "call").await;
    assert_eq!(s["error"]["code"], "http.denied", "{s}");
    assert_eq!(s["error"]["details"]["redirect"], true, "{s}");
    assert_eq!(hop.requests().len(), 1);
    assert!(target.requests().is_empty(), "{:?}", target.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_shows_the_method_and_url_it_approves() {
    let target = Recorder::start();
    let url = format!("http://127.0.0.1:{}/remediate", target.port);
    let bp = "id: gated\ntrigger: {event_type: test.gated}\ninputs:\n  - {name: url, type: string}\nplan:\n  - {kind: gate, id: approve, mode: manual, message: \"Go?\"}\n  - kind: action_task\n    id: fix\n    action: http.call\n    with: {url: \"{{inputs.url}}\", method: post, fail_on_status: false}\n  - kind: action_task\n    id: tell\n    action: events.emit\n    with: {event_name: fixed, data: {by: \"{{steps.approve.outputs.decided_by}}\"}}\n";
    let node = Node::builder()
        .blueprint("g.yaml", bp)
        .allow_http(&format!("http://127.0.0.1:{}", target.port))
        .start();
    node.emit("test.gated", json!({"url": url})).await;
    let id = node.the_run_of("gated").await;
    let gate = node.until_step_status(&id, "approve", "waiting", 20).await;
    let effects = &gate["inputs"]["effects"];
    assert_eq!(effects[0]["step"], "fix", "{gate}");
    assert_eq!(effects[0]["action"], "http.call");
    assert_eq!(effects[0]["method"], "POST");
    assert_eq!(effects[0]["url"], url.as_str());
    assert_eq!(effects[1]["action"], "events.emit");
    assert_eq!(effects[1]["event_name"], "fixed");
    let html = node.get_text(&format!("/ui/runs/{id}")).await;
    assert!(html.contains("data-testid=\"gate-effects\""), "{html}");
    // (HTML-escaped: minijinja writes `/` as `&#x2f;`.)
    let shown = html.replace("&#x2f;", "/");
    assert!(
        shown.contains(&url),
        "the run page shows the URL the gate approves"
    );
    assert!(shown.contains("<strong>POST</strong>"), "and the method");
    assert!(
        target.requests().is_empty(),
        "nothing runs before the approval"
    );

    // Approved: exactly that request is made, and its bytes are counted.
    let (status, body) = node
        .post(
            &format!("/api/v1/runs/{id}/steps/approve/approve"),
            json!({}),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    node.until(20, "the call", || async {
        (!target.requests().is_empty()).then_some(Value::Null)
    })
    .await;
    let seen = target.requests();
    assert!(seen[0].starts_with("POST /remediate "), "{seen:?}");
    node.until(20, "the bytes footprint", || async {
        let db = rusqlite::Connection::open(node.data_dir().join("xyn.db")).ok()?;
        let q: f64 = db
            .query_row(
                "SELECT COALESCE(SUM(quantity), 0) FROM footprints WHERE run_id = ?1 AND metric = 'bytes_in'",
                [&id],
                |r| r.get(0),
            )
            .ok()?;
        (q > 0.0).then_some(Value::Null)
    })
    .await;
}

/// The README's quick start, literally, on a random port with auth on: the demo's
/// `run_fix` step emits its event with `events.emit`, not over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_runs_on_a_random_port_with_auth_on() {
    let example =
        std::fs::read_to_string(repo_root().join("blueprints/checkmk-auto-remediate.yaml"))
            .unwrap();
    let token = "a-long-operator-token-0123456789";
    let node = Node::builder()
        .blueprint("checkmk.yaml", &example)
        .env("XYN_API_TOKEN", token)
        .start();
    assert!(!node.url.ends_with(":8080"));
    let (code, out, err) = node.cli(&[
        "event",
        "emit",
        "checkmk.alert",
        "--data",
        r#"{"host":"web-1","service":"disk","state":"CRIT"}"#,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth(token);
    let run_id = node
        .until(20, "the run to start", || async {
            // Whatever its status by now (`running`, or `waiting` once the gate opens).
            let r: Value = auth(client().get(format!(
                "{}/api/v1/runs?blueprint_id=bp.checkmk.auto_remediate",
                node.url
            )))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
            r["items"][0]["run_id"].as_str().map(|s| json!(s))
        })
        .await;
    let run_id = run_id.as_str().unwrap().to_string();
    node.until(20, "the gate to wait", || async {
        let (c, out, _) = node.cli(&["run", "show", &run_id]);
        (c == 0 && out.contains("waiting for approval")).then_some(Value::Null)
    })
    .await;
    let (code, out, err) = node.cli(&[
        "run",
        "approve",
        &run_id,
        "--step",
        "approve",
        "--comment",
        "ok",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let done = node
        .until(30, "the run to complete", || async {
            let r: Value = auth(client().get(format!("{}/api/v1/runs/{run_id}", node.url)))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (r["status"] == "completed").then_some(r)
        })
        .await;
    let summary = done["outputs"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("remediation requested (event "),
        "{summary}"
    );
    let (code, out, err) = node.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}
