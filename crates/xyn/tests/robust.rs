#![allow(clippy::unwrap_used)]
//! The engine under hostile conditions, each test written as the attack: a step that crashes
//! the node, kill -9 during retries, clients that hang up mid-request, outputs that are too
//! large, NUL characters in text, and a second process on the same data directory.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fixture::Fixture;
use support::services::TestDb;
use support::{BIN, Node, client};

/// `xyn serve` in `dir`, laid out like the support builder's node directory.
fn serve_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"])
        .args(["--blueprints", "blueprints"])
        .env("XYN_LOG", "info");
    cmd
}

/// Starts `xyn serve` in `dir` (laid out like the support builder's) with `env`; returns the
/// child and its URL, or `None` when the process exits before it listens.
fn launch_raw(dir: &std::path::Path, env: &[(&str, &str)]) -> (Child, Option<String>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))
        .unwrap();
    let mut cmd = serve_command(dir);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("xyn listening on ")
                && let Some(t) = tx.take()
            {
                let _ = t.send(Some(
                    rest.split_whitespace().next().unwrap_or("").to_string(),
                ));
            }
        }
        if let Some(t) = tx.take() {
            let _ = t.send(None);
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(60)).ok().flatten();
    (child, url)
}

/// A step that aborts the process (test-only failure injection, standing in for any step
/// that could crash the node) puts the node in a crash loop unless crashed attempts count:
/// each restart durably starts the step again, the attempt limit is reached, the run fails
/// and the node stays up, answering health, with the failure injection still armed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_crashes_the_node_cannot_crash_loop_it() {
    let bp = "id: crashy\ntrigger: {event_type: test.crashy}\nplan:\n  - {kind: transform, id: prep, expr: '{n: 1}'}\n  - {kind: transform, id: boom, expr: '{m: .steps.prep.outputs.n}'}\n";
    let env = [("XYN_TEST_ABORT_AT_STEP", "boom")];
    let mut node = Node::builder()
        .blueprint("c.yaml", bp)
        .env(env[0].0, env[0].1)
        .start();
    // The node aborts while (or right after) it answers: the answer does not matter.
    let _ = client()
        .post(format!("{}/api/v1/events", node.url))
        .json(&json!({"event_name": "test.crashy", "data": {}}))
        .send()
        .await;
    assert!(
        node.wait_exit(60).is_none_or(|c| c != 0),
        "the failure injection did not abort the node"
    );
    let dir = node.dir.path().to_path_buf();
    let mut crashes = 1;
    let (mut child, url) = loop {
        let (mut child, url) = launch_raw(&dir, &env);
        let Some(url) = url else {
            let _ = child.wait();
            crashes += 1;
            assert!(crashes <= 8, "the node crash-loops ({crashes} crashes)");
            continue;
        };
        // It listens; if the run is still being retried it may crash right after.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ended = None;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let runs: Value = match client()
                .get(format!("{url}/api/v1/runs?blueprint_id=crashy"))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            if let Some(r) = runs["items"].as_array().and_then(|a| a.first())
                && r["status"] == "failed"
            {
                ended = Some(r.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match ended {
            Some(_) => break (child, url),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                crashes += 1;
                assert!(crashes <= 8, "the node crash-loops ({crashes} crashes)");
            }
        }
    };
    eprintln!("crashes: {crashes}");
    // 1 + max_interruptions (3) attempts at most, each of which crashed once.
    assert!(crashes <= 5, "{crashes} crashes before the node came back");
    let c = client();
    let runs: Value = c
        .get(format!("{url}/api/v1/runs?blueprint_id=crashy"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = &runs["items"][0];
    assert_eq!(run["status"], "failed", "{run}");
    let run_id = run["run_id"].as_str().unwrap();
    let steps: Value = c
        .get(format!("{url}/api/v1/runs/{run_id}/steps"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let boom = steps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "boom")
        .unwrap()
        .clone();
    assert_eq!(boom["status"], "failed", "{boom}");
    assert_eq!(boom["error"]["code"], "step.interrupted", "{boom}");
    assert_eq!(boom["attempt"], 4, "{boom}");
    // The node stays up with the injection still armed, and answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().unwrap().is_none(), "the node died again");
    let health = c.get(format!("{url}/api/v1/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}

/// kill -9 four times while a step with `max_attempts: 6` is in flight: every interrupted
/// attempt counts against the step's retry policy (not against a separate, smaller crash
/// limit), so the fifth attempt still runs and the run completes. Every attempt carries the
/// same `Idempotency-Key` and its own `Idempotency-Attempt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_retries_follow_max_attempts_and_keep_one_idempotency_key() {
    let fx = Fixture::start().await;
    let bp = format!(
        "id: sturdy\ntrigger: {{event_type: test.sturdy}}\nplan:\n  - kind: action_task\n    id: call\n    action: http.call\n    with: {{url: \"{}/block\"}}\n    retry: {{max_attempts: 6, backoff: fixed, delay: 100ms}}\n",
        fx.url
    );
    let mut node = Node::builder()
        .blueprint("s.yaml", &bp)
        .allow_http(&fx.url)
        .start();
    node.emit("test.sturdy", json!({})).await;
    let run_id = node.the_run_of("sturdy").await;
    for kill in 1..=4 {
        node.until(30, &format!("attempt {kill} to be in flight"), || async {
            (fx.seen("/block").len() >= kill).then_some(Value::Null)
        })
        .await;
        node.kill9();
        node.relaunch_after_kill();
    }
    node.until(30, "attempt 5 to be in flight", || async {
        (fx.seen("/block").len() >= 5).then_some(Value::Null)
    })
    .await;
    fx.release();
    let run = node.until_run_status(&run_id, "completed", 30).await;
    assert_eq!(run["status"], "completed");
    let step = node.step(&run_id, "call").await;
    assert_eq!(step["attempt"], 5, "{step}");
    let seen = fx.seen("/block");
    assert_eq!(seen.len(), 5);
    let stable = format!("{run_id}:{}", step["step_id"].as_str().unwrap());
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.headers["idempotency-key"], stable, "call {i}");
        assert_eq!(s.headers["idempotency-attempt"], (i + 1).to_string());
    }
    let interrupted = node
        .events_of(&run_id)
        .await
        .into_iter()
        .filter(|e| {
            e["event_name"] == "xyn.step.failed" && e["data"]["error"]["code"] == "step.interrupted"
        })
        .count();
    assert_eq!(interrupted, 4);
}

/// 32 raw TCP clients each send `POST /api/v1/events` and reset the connection at once, in
/// several rounds. Whatever intake committed is driven to the end without a restart: no run
/// stays `running` with its steps `created`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_during_intake_strand_no_run() {
    use tokio::io::AsyncWriteExt;
    let bp = "id: quick\ntrigger: {event_type: test.quick}\nplan:\n  - {kind: transform, id: a, expr: '{n: 1}'}\n";
    let node = Node::builder().blueprint("q.yaml", bp).start();
    let addr = node.url.trim_start_matches("http://").to_string();
    let body = json!({"event_name": "test.quick", "data": {"x": 1}}).to_string();
    let request = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for round in 0..6 {
        let mut tasks = Vec::new();
        for i in 0..32 {
            let (addr, request) = (addr.clone(), request.clone());
            tasks.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                s.write_all(request.as_bytes()).await.unwrap();
                // Give some requests time to reach the commit before the reset.
                if (i + round) % 4 != 0 {
                    tokio::time::sleep(Duration::from_micros(200 * (i as u64 % 8))).await;
                }
                s.set_zero_linger().unwrap();
                drop(s);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    // Let the commits in flight land, then every committed run must end.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let runs = node
        .until(60, "every committed run to end", || async {
            let runs = node.runs_of("quick").await;
            runs.iter()
                .all(|r| r["status"] == "completed")
                .then(|| json!(runs))
        })
        .await;
    let n = runs.as_array().unwrap().len();
    eprintln!("committed runs: {n}");
    assert!(
        n > 0,
        "no request reached the commit; the attack did not happen"
    );
    let (_, stats) = node.get("/api/internal/stats").await;
    assert_eq!(stats["busy_runs"], 0, "{stats}");
}

/// A transform whose output is larger than `max_output_bytes` fails with
/// `step.output_too_large`, and the output is written nowhere (not in the step row, not in
/// any event); one under the limit completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_limit_fails_the_step_and_is_not_written() {
    let bp = "id: big\ntrigger: {event_type: test.big}\nplan:\n  - {kind: transform, id: make, expr: '{s: (\"x\" * .event.data.n)}'}\n";
    let node = Node::builder()
        .blueprint("b.yaml", bp)
        .engine("max_output_bytes = 65536")
        .start();
    node.emit("test.big", json!({"n": 1000})).await;
    let small = node.the_run_of("big").await;
    node.until_run_status(&small, "completed", 20).await;
    node.emit("test.big", json!({"n": 3_000_000})).await;
    let big = node
        .until(20, "the second run", || async {
            node.runs_of("big")
                .await
                .into_iter()
                .find(|r| r["run_id"] != small.as_str())
                .map(|r| r["run_id"].clone())
        })
        .await;
    let big = big.as_str().unwrap();
    let run = node.until_run_status(big, "failed", 20).await;
    let step = node.step(big, "make").await;
    assert_eq!(step["error"]["code"], "step.output_too_large", "{step}");
    assert_eq!(step["error"]["limit_bytes"], 65536);
    assert!(step["outputs"].is_null(), "the output was stored");
    assert!(run.to_string().len() < 10_000, "the run carries the output");
    for e in node.events_of(big).await {
        assert!(e.to_string().len() < 10_000, "an event carries the output");
    }
    let db = std::fs::metadata(node.data_dir().join("xyn.db"))
        .unwrap()
        .len()
        + std::fs::metadata(node.data_dir().join("xyn.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    assert!(
        db < 3_000_000,
        "the database grew by the output: {db} bytes"
    );
}

/// A NUL character in a text field: the same 422 naming the field on SQLite and on
/// PostgreSQL (which cannot store it), and no answer quotes the database.
async fn nul_in_text_is_refused(node: &Node) {
    let c = client();
    for (body, field) in [
        (
            r#"{"event_name":"x.nul","data":{},"resource":{"type":"host","id":"i\u0000d"}}"#,
            "resource.id",
        ),
        (
            r#"{"event_name":"x.nul","data":{"k":"a\u0000b"}}"#,
            "data.k",
        ),
        (r#"{"event_name":"x.n\u0000l","data":{}}"#, "event_name"),
    ] {
        let r = c
            .post(format!("{}/api/v1/events", node.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 422, "{body}: {v}");
        assert_eq!(v["error"]["code"], "request.invalid_text", "{v}");
        assert_eq!(v["error"]["details"]["field"], field, "{v}");
    }
    // A path segment with a NUL reaches the store on lookups: never a 5xx quoting it.
    let (s, v) = node.get("/api/v1/blueprints/a%00b").await;
    assert!(s < 500, "{s}: {v}");
    assert!(!v.to_string().contains("PostgreSQL"), "{v}");
    let (s, _) = node.get("/api/v1/health").await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_text_fields_is_a_422_naming_the_field_on_sqlite() {
    let node = Node::builder().start();
    nul_in_text_is_refused(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_text_fields_is_a_422_naming_the_field_on_postgres() {
    let db = TestDb::create().await;
    let node = Node::builder().args(&["--database-url", &db.url]).start();
    nul_in_text_is_refused(&node).await;
}

/// A second `xyn serve` on a data directory in use stops before it reads anything (it
/// resumes no run), naming the holder's pid; after a kill -9 the lock is stale and the node
/// starts again. Read-only commands and doctor create nothing where there is no node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_the_same_data_dir_is_refused() {
    let fx = Fixture::start().await;
    let bp = format!(
        "id: held\ntrigger: {{event_type: test.held}}\nplan:\n  - kind: action_task\n    id: call\n    action: http.call\n    with: {{url: \"{}/block\"}}\n",
        fx.url
    );
    let mut node = Node::builder()
        .blueprint("h.yaml", &bp)
        .allow_http(&fx.url)
        .start();
    node.emit("test.held", json!({})).await;
    node.until(20, "the call to be in flight", || async {
        (!fx.seen("/block").is_empty()).then_some(Value::Null)
    })
    .await;
    let out = serve_command(node.dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the second node started");
    assert!(
        stderr.contains(&format!("pid {}", node.pid())),
        "the error does not name the holder: {stderr}"
    );
    assert!(
        !stdout.contains("resuming"),
        "the second node read the runs: {stdout}"
    );
    assert_eq!(fx.seen("/block").len(), 1, "the step ran twice");
    // Stale after a crash.
    node.kill9();
    node.relaunch_after_kill();
    let (s, _) = node.get("/api/v1/health").await;
    assert_eq!(s, 200);

    let empty = tempfile::tempdir().unwrap();
    let nowhere = empty.path().join("no-node");
    for (args, succeeds) in [
        (
            vec!["doctor", "--data-dir", nowhere.to_str().unwrap()],
            true,
        ),
        (
            vec!["audit", "verify", "--data-dir", nowhere.to_str().unwrap()],
            false,
        ),
    ] {
        let out = Command::new(BIN)
            .current_dir(empty.path())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            succeeds,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!nowhere.exists(), "{args:?} created {}", nowhere.display());
    }
    // Read-only commands on a live node's directory neither block nor write.
    let (code, out, err) = node.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// SIGTERM while a transform runs away (the largest jq budget the node accepts, a long step
/// timeout): the program is stopped and the node exits well within its shutdown grace; the
/// run is not lost and is picked up again at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_a_runaway_transform() {
    let mut node = Node::builder()
        .engine("jq_fuel = 1000000000")
        .blueprint(
            "spin.yaml",
            "id: bp.spin\ntrigger: {event_type: t.spin}\nplan:\n  - {kind: transform, id: a, timeout: 10m, expr: 'last(range(1e11))'}\n",
        )
        .start();
    node.emit("t.spin", json!({})).await;
    let run = node.the_run_of("bp.spin").await;
    // Let the program get going.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    node.stop(); // panics when the node is still up 15 s after SIGTERM
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    node.relaunch_after_kill();
    let r = node.run(&run).await;
    assert_eq!(r["status"], "running", "{r}");
    let started = Instant::now();
    node.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Cursors are signed with a key kept in the data directory (0600): a cursor a client holds
/// stays valid across a restart, a tampered one is refused with its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_cursors_survive_a_restart_and_forged_ones_are_refused() {
    let mut node = Node::builder().start();
    for i in 0..3 {
        node.emit("t.page", json!({"i": i})).await;
    }
    let (s, first) = node.get("/api/v1/events?event_name=t.page&limit=1").await;
    assert_eq!(s, 200, "{first}");
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let key = node.data_dir().join("cursor.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "cursor.key mode {mode:o}");
    }
    node.restart();
    let (s, second) = node
        .get(&format!(
            "/api/v1/events?event_name=t.page&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["items"][0]["data"]["i"], 1, "{second}");
    // The same position with another MAC, and a bare position, are refused.
    let (plain, _) = cursor.rsplit_once('.').unwrap();
    for forged in [
        format!("{plain}.000000000000000000000000"),
        plain.to_string(),
        "c5".into(),
    ] {
        let (s, v) = node
            .get(&format!(
                "/api/v1/events?event_name=t.page&limit=1&cursor={forged}"
            ))
            .await;
        assert_eq!(s, 400, "{forged}: {v}");
        assert_eq!(v["error"]["code"], "request.invalid_cursor", "{v}");
    }
}
