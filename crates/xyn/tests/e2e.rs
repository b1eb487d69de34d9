#![allow(clippy::unwrap_used)]
//! End-to-end tests: the real `xyn` binary on a temporary data directory.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fixture::Fixture;
use support::{Node, repo_root, walk};

fn shipped_example() -> String {
    std::fs::read_to_string(repo_root().join("blueprints/checkmk-auto-remediate.yaml")).unwrap()
}

const BP: &str = "bp.checkmk.auto_remediate";
/// The skeleton example's id: its own, not the main example's.
const SKELETON: &str = "bp.example.skeleton";

/// The kernel scenario: emit → agent → gate waits → approve → events.emit → transform → done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_event_to_completed_run_with_approval() {
    let node = Node::builder()
        .blueprint("checkmk.yaml", &shipped_example())
        .start();
    let data = json!({"host": "web-1", "service": "disk", "state": "CRIT"});

    // 2. The CLI emits; the answer carries the event id and correlation id.
    let ev = node.cli_json(&[
        "event",
        "emit",
        "checkmk.alert",
        "--data",
        &data.to_string(),
    ]);
    assert_eq!(ev["event_name"], "checkmk.alert");
    let corr = ev["correlation_id"].as_str().unwrap().to_string();
    assert!(ev["event_id"].as_str().unwrap().len() == 36);

    // 3–4. The run waits at the gate; `run list` and `run show` say so.
    let run_id = node.the_run_of(BP).await;
    node.until_step_status(&run_id, "approve", "waiting", 10)
        .await;
    let run = node.run(&run_id).await;
    assert_eq!(run["status"], "waiting");
    assert_eq!(run["correlation_id"], corr.as_str());
    assert_eq!(run["trigger_event_id"], ev["event_id"]);
    let (code, list, _) = node.cli(&["run", "list"]);
    assert_eq!(code, 0);
    assert!(list.contains(&run_id) && list.contains("waiting"), "{list}");
    let (code, waiting, err) = node.cli(&["run", "list", "--status", "waiting"]);
    assert_eq!(code, 0, "{err}");
    assert!(waiting.contains(&run_id), "{waiting}");
    let (code, show, _) = node.cli(&["run", "show", &run_id]);
    assert_eq!(code, 0);
    assert!(show.contains("waiting for approval"), "{show}");
    // The short id (the random tail of the id) is shown, and its start names the run.
    let short = &run_id[run_id.len() - 8..];
    assert!(list.contains(short), "{list}");
    let (code, by_short, err) = node.cli(&["run", "show", &short[..5]]);
    assert_eq!(code, 0, "{err}");
    assert!(
        by_short.contains(&run_id) && by_short.contains("prompt.json"),
        "{by_short}"
    );
    assert!(
        show.contains("prompt.json") && show.contains("response.json"),
        "artifacts listed: {show}"
    );

    let analyze = node.step(&run_id, "analyze").await;
    assert_eq!(analyze["status"], "completed");
    assert!(
        analyze["outputs"]["text"]
            .as_str()
            .unwrap()
            .contains("df -h")
    );
    assert_eq!(analyze["outputs"]["provider"], "replay");
    assert!(
        analyze["outputs"]["routing"]
            .as_str()
            .unwrap()
            .contains("OPENAI_API_KEY")
    );
    assert!(
        analyze["inputs"]["prompt"]
            .as_str()
            .unwrap()
            .contains("\"disk\" on host \"web-1\"")
    );

    // Approve through the CLI; the decision records who and why.
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
    let done = node.until_run_status(&run_id, "completed", 15).await;
    let summary = done["outputs"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("disk on web-1 (CRIT): remediation requested (event "),
        "{summary}"
    );
    let gate = node.step(&run_id, "approve").await;
    assert_eq!(gate["decision_comment"], "ok");
    assert!(gate["decided_by"].as_str().unwrap().starts_with("cli:"));
    let fix = node.step(&run_id, "run_fix").await;
    let emitted = fix["outputs"]["event_id"].as_str().unwrap().to_string();
    assert_eq!(fix["attempt"], 1);

    // The remediation request reached the node as an event, with the run's correlation id.
    let (_, evs) = node
        .get("/api/v1/events?event_name=checkmk.remediation.requested")
        .await;
    let remediation_event = &evs["items"][0];
    assert_eq!(remediation_event["data"]["host"], "web-1");
    assert_eq!(remediation_event["correlation_id"], corr.as_str());
    assert_eq!(remediation_event["event_id"], emitted.as_str());

    // Every transition emitted its xyn.* event, in order, with the correlation id.
    let names: Vec<String> = node
        .events_of(&run_id)
        .await
        .iter()
        .map(|e| e["event_name"].as_str().unwrap().to_string())
        .collect();
    let expected = [
        "xyn.run.started",
        "xyn.step.started",
        "xyn.artifact.attached",
        "xyn.artifact.attached",
        "xyn.step.completed",
        "xyn.gate.waiting",
        "xyn.gate.approved",
        "xyn.step.started",
        "xyn.step.completed",
        "xyn.step.started",
        "xyn.step.completed",
        "xyn.run.completed",
    ];
    assert_eq!(names, expected);
    for e in node.events_of(&run_id).await {
        assert_eq!(e["correlation_id"], corr.as_str());
    }

    // Footprints: run.count, step.count and wall_ms per step, tokens per agent call.
    let db = rusqlite::Connection::open(node.data_dir().join("xyn.db")).unwrap();
    let count = |metric: &str| -> f64 {
        db.query_row(
            "SELECT COALESCE(SUM(quantity), 0) FROM footprints WHERE run_id = ?1 AND metric = ?2",
            [&run_id, metric],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(count("run.count"), 1.0);
    assert_eq!(count("step.count"), 4.0);
    assert_eq!(count("tokens_in"), 58.0);
    assert_eq!(count("tokens_out"), 74.0);
    assert_eq!(count("request_count"), 1.0);
    // The remediation is an event now (events.emit), not an HTTP call: no bytes leave the
    // node (http.call's bytes footprints are checked in tests/egress.rs).
    assert_eq!(count("bytes_out"), 0.0);
    assert!(count("artifact_bytes_written") > 0.0);
    let dims: String = db
        .query_row(
            "SELECT dims FROM footprints WHERE run_id = ?1 AND metric = 'tokens_in'",
            [&run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        dims.contains("\"model\":\"gpt-5\"") && dims.contains("\"provider\":\"replay\""),
        "{dims}"
    );

    // 5. The log verifies.
    let (code, out, _) = node.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("audit: OK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejecting_the_gate_fails_the_run() {
    let node = Node::builder()
        .blueprint("checkmk.yaml", &shipped_example())
        .start();
    node.emit("checkmk.alert", json!({"host": "db-2", "service": "cpu"}))
        .await;
    let run_id = node.the_run_of(BP).await;
    node.until_step_status(&run_id, "approve", "waiting", 10)
        .await;
    let (code, out, err) = node.cli(&[
        "run",
        "reject",
        &run_id,
        "--step",
        "approve",
        "--comment",
        "not now",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let run = node.until_run_status(&run_id, "failed", 10).await;
    assert_eq!(run["error"]["code"], "gate.rejected");
    assert_eq!(run["error"]["comment"], "not now");
    assert_eq!(node.step(&run_id, "run_fix").await["status"], "skipped");
    let names: Vec<String> = node
        .events_of(&run_id)
        .await
        .iter()
        .map(|e| e["event_name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.ends_with(&[
            "xyn.gate.rejected".into(),
            "xyn.step.skipped".into(),
            "xyn.step.skipped".into(),
            "xyn.run.failed".into()
        ]),
        "{names:?}"
    );

    // Deciding again is refused, and changes nothing.
    let (code, _, err) = node.cli(&["run", "approve", &run_id, "--step", "approve"]);
    assert_eq!(code, 1);
    assert!(err.contains("step.not_waiting (409)"), "{err}");
    let (code, _, err) = node.cli(&["run", "approve", &run_id, "--step", "analyze"]);
    assert_eq!(code, 1);
    assert!(err.contains("step.not_a_gate (409)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_waiting_run_and_a_finished_one() {
    let node = Node::builder()
        .blueprint("checkmk.yaml", &shipped_example())
        .start();
    node.emit("checkmk.alert", json!({"host": "h", "service": "s"}))
        .await;
    let run_id = node.the_run_of(BP).await;
    node.until_step_status(&run_id, "approve", "waiting", 10)
        .await;
    let (code, out, err) = node.cli(&["run", "cancel", &run_id, "--reason", "maintenance"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cancelled"), "{out}");
    let run = node.run(&run_id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["error"]["reason"], "maintenance");
    for s in ["approve", "run_fix", "summarize"] {
        assert_eq!(node.step(&run_id, s).await["status"], "skipped", "{s}");
    }
    let before = node.get("/api/v1/events?limit=1").await.1["items"][0]["seq"].clone();
    let (code, _, err) = node.cli(&["run", "cancel", &run_id]);
    assert_eq!(code, 1);
    assert!(err.contains("run.already_finished (409)"), "{err}");
    let after = node.get("/api/v1/events?limit=1").await.1["items"][0]["seq"].clone();
    assert_eq!(before, after, "a refused cancel writes nothing");
}

/// A blueprint whose only step is an http.call to `url`.
fn http_blueprint(id: &str, url: &str, extra: &str) -> String {
    format!(
        "id: {id}\ntrigger: {{event_type: test.{id}}}\nplan:\n  - kind: action_task\n    id: call\n    action: http.call\n    with: {{url: \"{url}\", method: POST, json: {{n: 1}}}}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_succeeds_on_the_second_attempt() {
    let fx = Fixture::start().await;
    fx.fail_first("r1", 1);
    let bp = http_blueprint(
        "retry",
        &format!("{}/flaky/r1", fx.url),
        "    retry: {max_attempts: 3, backoff: fixed, delay: 200ms}\n",
    );
    let node = Node::builder()
        .blueprint("r.yaml", &bp)
        .allow_http(&fx.url)
        .start();
    node.emit("test.retry", json!({})).await;
    let run_id = node.the_run_of("retry").await;
    node.until_run_status(&run_id, "completed", 10).await;
    let step = node.step(&run_id, "call").await;
    assert_eq!(step["attempt"], 2);
    assert_eq!(step["outputs"]["status"], 200);
    let seen = fx.seen("/flaky/r1");
    assert_eq!(seen.len(), 2);
    // One key for every attempt of the step; the attempt number in its own header.
    let key = |i: usize| seen[i].headers["idempotency-key"].clone();
    let attempt = |i: usize| seen[i].headers["idempotency-attempt"].clone();
    let stable = format!("{run_id}:{}", step["step_id"].as_str().unwrap());
    assert_eq!(key(0), stable);
    assert_eq!(key(1), stable);
    assert_eq!((attempt(0).as_str(), attempt(1).as_str()), ("1", "2"));
    let failed: Vec<Value> = node
        .events_of(&run_id)
        .await
        .into_iter()
        .filter(|e| e["event_name"] == "xyn.step.failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["data"]["will_retry"], true);
    assert_eq!(failed[0]["data"]["error"]["code"], "http.status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timeout_fails_the_step_in_time() {
    let fx = Fixture::start().await;
    let bp = http_blueprint(
        "slow",
        &format!("{}/slow/5000", fx.url),
        "    timeout: 300ms\n",
    );
    let node = Node::builder()
        .blueprint("s.yaml", &bp)
        .allow_http(&fx.url)
        .start();
    let started = Instant::now();
    node.emit("test.slow", json!({})).await;
    let run_id = node.the_run_of("slow").await;
    let run = node.until_run_status(&run_id, "failed", 10).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let step = node.step(&run_id, "call").await;
    assert_eq!(step["status"], "failed");
    assert!(
        step["error"]["code"] == "step.timed_out" || step["error"]["code"] == "http.timeout",
        "{step}"
    );
    assert_eq!(run["error"]["code"], "step.failed");
    assert!(step["duration_ms"].as_u64().unwrap() < 1500, "{step}");
}

/// `kill -9` while an action is in flight; after a restart the run resumes, the interrupted
/// attempt is retried with the next attempt number, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_completes() {
    let fx = Fixture::start().await;
    let bp = format!(
        "id: crash\ntrigger: {{event_type: test.crash}}\nplan:\n  - {{kind: transform, id: prep, expr: '{{n: 1}}'}}\n  - kind: action_task\n    id: call\n    action: http.call\n    with: {{url: \"{}/block\"}}\n  - {{kind: transform, id: after, expr: '{{done: .steps.call.outputs.json.released}}'}}\n",
        fx.url
    );
    let mut node = Node::builder()
        .blueprint("c.yaml", &bp)
        .allow_http(&fx.url)
        .start();
    let acked = node.emit("test.crash", json!({"x": 1})).await;
    let run_id = node.the_run_of("crash").await;
    node.until(10, "the call to be in flight", || async {
        (!fx.seen("/block").is_empty()).then_some(Value::Null)
    })
    .await;
    assert_eq!(node.step(&run_id, "call").await["status"], "running");
    node.kill9();

    fx.release();
    node.relaunch_after_kill();
    let run = node.until_run_status(&run_id, "completed", 15).await;
    assert_eq!(run["outputs"]["done"], true);
    let step = node.step(&run_id, "call").await;
    assert_eq!(
        step["attempt"], 2,
        "the interrupted attempt is retried as attempt 2"
    );
    let seen = fx.seen("/block");
    assert_eq!(seen.len(), 2);
    // The receiver can deduplicate the repeated call: the key is the same after the crash.
    assert_eq!(
        seen[0].headers["idempotency-key"],
        seen[1].headers["idempotency-key"]
    );
    assert_eq!(seen[0].headers["idempotency-attempt"], "1");
    assert_eq!(seen[1].headers["idempotency-attempt"], "2");
    let failed: Vec<Value> = node
        .events_of(&run_id)
        .await
        .into_iter()
        .filter(|e| e["event_name"] == "xyn.step.failed")
        .collect();
    assert_eq!(failed[0]["data"]["error"]["code"], "step.interrupted");
    let (s, e) = node
        .get(&format!(
            "/api/v1/events/{}",
            acked["event_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, 200, "the acknowledged event survived: {e}");
    let (code, out, _) = node.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

/// Events acknowledged before a `kill -9` are all there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let mut node = Node::builder().start();
    let url = node.url.clone();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (url, acked) = (url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let c = support::client();
            for i in 0.. {
                let r = c
                    .post(format!("{url}/api/v1/events"))
                    .json(&json!({"event_name": "load.tick", "data": {"w": w, "i": i}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        let v: Value = r.json().await.unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push(v["event_id"].as_str().unwrap().to_string());
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    node.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "only {} events acknowledged", acked.len());
    node.relaunch_after_kill();
    let db = rusqlite::Connection::open(node.data_dir().join("xyn.db")).unwrap();
    for id in &acked {
        let n: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM events WHERE event_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "acknowledged event {id} was lost");
    }
    let (code, out, _) = node.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_trigger_fires_once_per_slot() {
    let bp = "id: every_minute\ntrigger: {cron: '* * * * *'}\ninputs: [{name: who, default: cron}]\nplan:\n  - {kind: transform, id: t, expr: '{who: .inputs.who, slot: .event.data.slot}'}\n";
    let node = Node::builder().blueprint("cron.yaml", bp).start();
    let run = node
        .until(75, "a cron run", || async {
            node.runs_of("every_minute")
                .await
                .into_iter()
                .find(|r| r["status"] == "completed")
        })
        .await;
    assert_eq!(run["actor"], "system:cron");
    assert_eq!(run["outputs"]["who"], "cron");
    let slot = run["outputs"]["slot"].as_str().unwrap().to_string();
    assert!(slot.ends_with(":00.000000Z"), "{slot}");
    let db = rusqlite::Connection::open(node.data_dir().join("xyn.db")).unwrap();
    let fires: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM cron_fires WHERE blueprint_id = 'every_minute'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(fires as usize, node.runs_of("every_minute").await.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_event_row_is_named_by_audit_verify() {
    let mut node = Node::builder()
        .blueprint("checkmk.yaml", &shipped_example())
        .start();
    for i in 0..5 {
        node.emit(
            "checkmk.alert",
            json!({"host": format!("h{i}"), "service": "disk"}),
        )
        .await;
    }
    let (code, _, _) = node.cli(&["audit", "verify"]);
    assert_eq!(code, 0);
    node.stop();
    let db = rusqlite::Connection::open(node.data_dir().join("xyn.db")).unwrap();
    let seq: i64 = db.query_row("SELECT seq FROM events WHERE event_name = 'checkmk.alert' ORDER BY seq LIMIT 1 OFFSET 2", [], |r| r.get(0)).unwrap();
    db.execute(
        "UPDATE events SET data = json_set(data, '$.host', 'evil') WHERE seq = ?1",
        [seq],
    )
    .unwrap();
    let (code, out, _) = node.cli(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("BROKEN at seq {seq}")), "{out}");
    let report = node.cli(&["audit", "verify", "--json"]);
    let v: Value = serde_json::from_str(&report.1).unwrap();
    assert_eq!(v["broken_seq"], seq);
    db.execute("DELETE FROM events WHERE seq = ?1 + 1", [seq])
        .unwrap();
    db.execute(
        "UPDATE events SET data = json_set(data, '$.host', ?2) WHERE seq = ?1",
        rusqlite::params![seq, format!("h{}", 2)],
    )
    .unwrap();
    let (code, out, _) = node.cli(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("BROKEN at seq {}", seq + 1)),
        "a deleted row is named: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let node = Node::builder()
        .blueprint("checkmk.yaml", &shipped_example())
        .env("XYN_MAX_EVENT_BYTES", "2048")
        .start();
    let head = || async { node.get("/api/v1/events?limit=1").await.1["items"][0]["seq"].clone() };
    let before = head().await;

    let (s, v) = node
        .post_raw("/api/v1/events", "{\"event_name\": ", "application/json")
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("request.invalid_json")),
        "{v}"
    );
    assert!(
        v["correlation_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{v}"
    );
    let (s, v) = node
        .post(
            "/api/v1/events",
            json!({"event_name": "Bad Name!", "data": {}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("event.invalid_name")),
        "{v}"
    );
    let (s, v) = node
        .post(
            "/api/v1/events",
            json!({"event_name": "xyn.run.completed", "data": {}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("event.reserved_name")),
        "{v}"
    );
    let (s, v) = node
        .post("/api/v1/events", json!({"event_name": "a.b", "data": [1]}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("event.invalid_data")),
        "{v}"
    );
    let (s, v) = node
        .post(
            "/api/v1/events",
            json!({"event_name": "a.b", "data": {}, "colour": "red"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("request.unknown_field")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("colour"),
        "the field is named: {v}"
    );
    let (s, v) = node
        .post("/api/v1/events", json!({"event_name": 5, "data": {}}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("request.invalid")),
        "{v}"
    );
    let (s, v) = node
        .post(
            "/api/v1/events",
            json!({"event_name": "a.b", "data": {"blob": "x".repeat(4000)}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("request.too_large")),
        "{v}"
    );
    let (s, v) = node
        .post(
            "/api/v1/events",
            json!({"event_name": "a.b", "data": {"blob": "x".repeat(100_000)}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("request.too_large")),
        "{v}"
    );
    let (s, v) = node.get("/api/v1/runs/not-a-uuid").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("request.invalid_id")),
        "{v}"
    );
    let (s, v) = node
        .get("/api/v1/runs/01a200a6-c4d2-7531-95be-1c4b120fba82")
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("run.not_found")),
        "{v}"
    );
    let (s, v) = node.get("/api/v1/events?cursor=zzz").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("request.invalid_cursor")),
        "{v}"
    );
    let (s, v) = node.get("/api/v1/events?limt=5").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("request.unknown_field")),
        "{v}"
    );
    let (s, v) = node.get("/api/v1/nothing-here").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("route.not_found")),
        "{v}"
    );
    let (s, v) = node
        .post(
            "/api/v1/runs",
            json!({"blueprint_ref": BP, "inputs": {"host": 5}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("run.inputs_invalid")),
        "{v}"
    );
    let (s, v) = node
        .post("/api/v1/runs", json!({"blueprint_ref": "bp.nope"}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("blueprint.not_found")),
        "{v}"
    );
    let (s, v) = node
        .post(
            "/api/v1/blueprints",
            json!({"definition": "id: x\nplan: []"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("blueprint.invalid")),
        "{v}"
    );
    assert!(
        !v["error"]["details"]["issues"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(head().await, before, "no refused request wrote anything");
    assert!(node.runs_of(BP).await.is_empty());

    // The correlation id is echoed, and carried into what the request creates.
    let r = support::client()
        .post(format!("{}/api/v1/events", node.url))
        .header("X-Correlation-Id", "trace-abc-123")
        .json(&json!({"event_name": "checkmk.alert", "data": {"host": "a", "service": "b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-correlation-id"], "trace-abc-123");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["correlation_id"], "trace-abc-123");
    let run_id = node.the_run_of(BP).await;
    assert_eq!(node.run(&run_id).await["correlation_id"], "trace-abc-123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_missing_required_inputs_records_a_failed_run() {
    let node = Node::builder()
        .blueprint("checkmk.yaml", &shipped_example())
        .start();
    node.emit("checkmk.alert", json!({"host": "only-host"}))
        .await;
    let run_id = node.the_run_of(BP).await;
    let run = node.until_run_status(&run_id, "failed", 10).await;
    assert_eq!(run["error"]["code"], "run.inputs_invalid");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("service"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_issues_no_queries() {
    let node = Node::builder()
        .blueprint("checkmk.yaml", &shipped_example())
        .start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = node.get("/api/internal/stats").await.1;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = node.get("/api/internal/stats").await.1;
    assert_eq!(
        a["store"], b["store"],
        "an idle node read or wrote the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_used_but_never_stored() {
    let fx = Fixture::start().await;
    let bp = format!(
        "id: secretive\ntrigger: {{event_type: test.secret}}\nplan:\n  - kind: action_task\n    id: call\n    action: http.call\n    with:\n      url: \"{}/echo\"\n      method: POST\n      headers: {{Authorization: \"Bearer {{{{secrets.api_token}}}}\", X-Custom: \"k={{{{secrets.api_token}}}}\"}}\n      json: {{note: \"token is {{{{secrets.api_token}}}}\"}}\n",
        fx.url
    );
    let secret = "s3cr3t-VALUE-98431";
    let mut node = Node::builder()
        .blueprint("s.yaml", &bp)
        .env("XYN_SECRET_API_TOKEN", secret)
        .allow_http(&fx.url)
        .start();
    node.emit("test.secret", json!({})).await;
    let run_id = node.the_run_of("secretive").await;
    node.until_run_status(&run_id, "completed", 10).await;
    // The request really carried it…
    let seen = fx.seen("/echo");
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {secret}"));
    assert!(seen[0].body.contains(secret));
    // …but the step record, the outputs, the events, the database and the artifacts do not.
    let step = node.step(&run_id, "call").await;
    assert!(!step.to_string().contains(secret), "{step}");
    assert_eq!(step["inputs"]["headers"]["Authorization"], "[REDACTED]");
    assert!(
        step["inputs"]["json"]["note"]
            .as_str()
            .unwrap()
            .contains("[secret:api_token]")
    );
    node.stop();
    let mut hits = Vec::new();
    for entry in walk(&node.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
            hits.push(entry.display().to_string());
        }
    }
    assert!(hits.is_empty(), "the secret reached {hits:?}");
    assert!(
        !node.stdout_log().contains(secret),
        "the secret reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_plan_skeleton_runs_as_written() {
    let text =
        std::fs::read_to_string(repo_root().join("examples/blueprints/skeleton.yaml")).unwrap();
    let node = Node::builder().blueprint("skeleton.yaml", &text).start();
    let (code, out, _) = node.cli(&["blueprint", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains(SKELETON), "{out}");
    node.emit("checkmk.alert", json!({"host": "web-1", "service": "disk"}))
        .await;
    let run_id = node.the_run_of(SKELETON).await;
    node.until_step_status(&run_id, "approve", "waiting", 10)
        .await;
    assert_eq!(node.step(&run_id, "analyze").await["status"], "completed");
    node.cli(&["run", "approve", &run_id, "--step", "approve"]);
    let run = node.until_run_status(&run_id, "failed", 30).await;
    let fix = node.step(&run_id, "run_fix").await;
    assert_eq!(fix["inputs"]["host"], "web-1");
    assert_eq!(fix["error"]["code"], "ssh.connect", "{fix}");
    assert_eq!(run["error"]["step"], "run_fix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_runs_and_blueprint_versions_through_the_cli() {
    let node = Node::builder().start();
    let file = node.dir.path().join("t.yaml");
    std::fs::write(&file, "id: bp.manual\ntrigger: {event_type: m.x}\ninputs: [{name: n, type: integer}]\nplan:\n  - {kind: transform, id: d, expr: '{double: (.inputs.n * 2)}'}\n").unwrap();
    let v = node.cli_json(&["blueprint", "apply", file.to_str().unwrap()]);
    assert_eq!(
        (v["version"].as_i64(), v["created"].as_bool()),
        (Some(1), Some(true))
    );
    let v = node.cli_json(&["blueprint", "apply", file.to_str().unwrap()]);
    assert_eq!(
        (v["version"].as_i64(), v["created"].as_bool()),
        (Some(1), Some(false)),
        "unchanged: same version"
    );
    let run = node.cli_json(&["run", "start", "bp.manual", "--inputs", "{\"n\": 21}"]);
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let done = node.until_run_status(&run_id, "completed", 10).await;
    assert_eq!(done["outputs"]["double"], 42);
    assert_eq!(done["blueprint_version"], 1);

    // A new version; the finished run keeps the version it started with.
    std::fs::write(&file, "id: bp.manual\ntrigger: {event_type: m.x}\ninputs: [{name: n, type: integer}]\nplan:\n  - {kind: transform, id: d, expr: '{triple: (.inputs.n * 3)}'}\n").unwrap();
    assert_eq!(
        node.cli_json(&["blueprint", "apply", file.to_str().unwrap()])["version"],
        2
    );
    let run2 = node.cli_json(&["run", "start", "bp.manual", "--inputs", "{\"n\": 2}"]);
    let done2 = node
        .until_run_status(run2["run_id"].as_str().unwrap(), "completed", 10)
        .await;
    assert_eq!(done2["outputs"]["triple"], 6);
    assert_eq!(node.run(&run_id).await["blueprint_version"], 1);
    let run3 = node.cli_json(&["run", "start", "bp.manual@1", "--inputs", "{\"n\": 1}"]);
    assert_eq!(
        node.until_run_status(run3["run_id"].as_str().unwrap(), "completed", 10)
            .await["outputs"]["double"],
        2
    );

    let (code, _, err) = node.cli(&["run", "start", "bp.manual", "--inputs", "{\"n\": \"x\"}"]);
    assert_eq!(code, 1);
    assert!(err.contains("run.inputs_invalid (422)"), "{err}");
    let (code, out, _) = node.cli(&["blueprint", "validate", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    std::fs::write(
        &file,
        "id: bp.manual\ntrigger: {event_type: m.x}\nplan:\n  - {kind: gate, id: g}\n",
    )
    .unwrap();
    let (code, out, _) = node.cli(&["blueprint", "validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains("$.plan[0].mode") && out.contains("gate.mode_missing"),
        "{out}"
    );
}

#[test]
fn help_is_there_for_every_command() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["event", "emit", "--help"],
        vec!["blueprint", "validate", "--help"],
        vec!["run", "approve", "--help"],
        vec!["audit", "verify", "--help"],
    ] {
        let out = std::process::Command::new(support::BIN)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
    let out = std::process::Command::new(support::BIN)
        .args(["run", "show"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing arguments are a usage error"
    );
}
