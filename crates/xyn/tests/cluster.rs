#![allow(clippy::unwrap_used)]
//! A cluster on one PostgreSQL: an `api` process and `worker` processes sharing runs through
//! the store's queue with leases; a worker killed with SIGKILL; PostgreSQL down at start and
//! restarted under a running node.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::Node;
use support::fixture::Fixture;
use support::services::{PrivatePg, TestDb};

const RUNS: usize = 1000;

fn blueprint(fixture: &str) -> String {
    format!(
        r#"
id: bp.cluster
trigger: {{event_type: cluster.job}}
inputs: [{{name: n, type: integer}}]
plan:
  - {{kind: transform, id: prepare, expr: '{{n: .inputs.n}}'}}
  - kind: action_task
    id: call
    action: http.call
    with: {{url: "{fixture}/slow/25", method: POST, json: {{n: "{{{{steps.prepare.outputs.n}}}}"}}}}
  - {{kind: transform, id: finish, expr: '{{done: .steps.prepare.outputs.n}}'}}
outputs: [{{name: done}}]
"#
    )
}

fn worker(db: &TestDb, fixture: Option<&str>) -> Node {
    let b = Node::builder();
    let b = match fixture {
        Some(url) => b.allow_http(url),
        None => b,
    };
    b.args(&[
        "--database-url",
        &db.url,
        "--role",
        "worker",
        "--lease",
        "2s",
    ])
    .start()
}

/// One api, three workers, 1000 runs of a three-step blueprint; one worker is SIGKILLed while
/// it holds runs. Every run completes, every step attempt executes once, the killed worker's
/// steps are taken over after its leases expire, and the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_the_runs_and_survive_a_sigkill() {
    let db = TestDb::create().await;
    let fx = Fixture::start().await;
    let api = Node::builder()
        .blueprint("cluster.yaml", &blueprint(&fx.url))
        .allow_http(&fx.url)
        .args(&["--database-url", &db.url, "--role", "api"])
        .start();
    let mut workers: Vec<Node> = (0..3).map(|_| worker(&db, Some(&fx.url))).collect();

    // 1000 events from 16 clients.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (next, url) = (next.clone(), api.url.clone());
        tasks.push(tokio::spawn(async move {
            let c = support::client();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= RUNS {
                    return;
                }
                let r = c
                    .post(format!("{url}/api/v1/events"))
                    .json(&json!({"event_name": "cluster.job", "data": {"n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201);
            }
        }));
    }

    // Kill worker 0 once it holds runs and a good part of the work is done. It is frozen
    // (SIGSTOP) while the runs it holds are read, so none can finish between that reading and
    // the kill; when it holds none at that instant it is thawed and the wait goes on.
    let victim = workers[0].pid();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &victim.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {victim}");
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let orphaned: Vec<String> = loop {
        // Runs it holds whose action step is running (started durably, not finished).
        let in_flight = format!(
            "SELECT COUNT(*) FROM run_queue q JOIN steps s ON s.run_id = q.run_id \
             WHERE q.owner LIKE '%:{victim}:%' AND s.status = 'running'"
        );
        let held = db.count(&in_flight).await;
        let done = db
            .count("SELECT COUNT(*) FROM runs WHERE status = 'completed'")
            .await;
        if held > 0 && done >= 100 {
            signal("-STOP");
            // Frozen: read again, since the step seen running may have ended before the stop.
            let in_flight_now = db.count(&in_flight).await;
            let held: Vec<String> = db
                .query(&format!(
                    "SELECT run_id FROM run_queue WHERE owner LIKE '%:{victim}:%'"
                ))
                .await
                .iter()
                .map(|r| r.get(0))
                .collect();
            if in_flight_now > 0 && !held.is_empty() {
                break held;
            }
            signal("-CONT");
        }
        assert!(
            Instant::now() < deadline,
            "worker 0 never held runs ({done} done)\n{}\n{}",
            support::tail(&workers[0].stdout_log(), 20),
            support::tail(&api.stdout_log(), 20)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    workers[0].kill9();
    for t in tasks {
        t.await.unwrap();
    }

    // Everything completes.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = db
            .count("SELECT COUNT(*) FROM runs WHERE status = 'completed'")
            .await;
        if done as usize == RUNS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {RUNS} runs completed\n{}",
            support::tail(&workers[1].stdout_log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM runs").await as usize, RUNS);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM run_queue").await,
        0,
        "the queue is empty"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM steps WHERE status <> 'completed'")
            .await,
        0
    );
    for r in &orphaned {
        let status: String = db
            .query(&format!("SELECT status FROM runs WHERE run_id = '{r}'"))
            .await[0]
            .get(0);
        assert_eq!(
            status, "completed",
            "the killed worker's run {r} was finished by others"
        );
    }

    // Each step attempt started once and ended once: from the event log...
    let started = db
        .query(
            "SELECT step_id, (data::jsonb->>'attempt')::bigint, COUNT(*) FROM events \
             WHERE event_name = 'xyn.step.started' GROUP BY 1, 2",
        )
        .await;
    assert!(
        started.iter().all(|r| r.get::<_, i64>(2) == 1),
        "a step attempt started twice"
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT step_id) FROM events WHERE event_name = 'xyn.step.started'")
            .await as usize,
        3 * RUNS
    );
    let completed = db
        .query(
            "SELECT step_id, COUNT(*) FROM events WHERE event_name = 'xyn.step.completed' GROUP BY 1",
        )
        .await;
    assert_eq!(completed.len(), 3 * RUNS);
    assert!(
        completed.iter().all(|r| r.get::<_, i64>(1) == 1),
        "a step completed twice"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM events WHERE event_name = 'xyn.run.completed'")
            .await as usize,
        RUNS
    );
    // ...and from the footprints: one step.count per step attempt that ended.
    let fps = db
        .query(
            "SELECT step_id, (dims::jsonb->>'attempt')::bigint, COUNT(*) FROM footprints \
             WHERE metric = 'step.count' GROUP BY 1, 2",
        )
        .await;
    assert!(
        fps.iter().all(|r| r.get::<_, i64>(2) == 1),
        "a step attempt counted twice"
    );
    let ended: HashSet<(String, i64)> = fps.iter().map(|r| (r.get(0), r.get(1))).collect();
    for r in &started {
        let key: (String, i64) = (r.get(0), r.get(1));
        let interrupted = db
            .count(&format!(
                "SELECT COUNT(*) FROM events WHERE event_name = 'xyn.step.failed' AND step_id = '{}' \
                 AND (data::jsonb->>'attempt')::bigint = {} AND data::jsonb->'error'->>'code' = 'step.interrupted'",
                key.0, key.1
            ))
            .await;
        assert!(
            ended.contains(&key) || interrupted == 1,
            "step attempt {key:?} neither ended nor was interrupted"
        );
    }

    // The killed worker's in-flight steps were retried with the next attempt number.
    let retried = db
        .count(
            "SELECT COUNT(*) FROM events WHERE event_name = 'xyn.step.started' \
             AND (data::jsonb->>'attempt')::bigint = 2",
        )
        .await;
    let interrupted = db
        .count(
            "SELECT COUNT(*) FROM events WHERE event_name = 'xyn.step.failed' \
             AND data::jsonb->'error'->>'code' = 'step.interrupted'",
        )
        .await;
    assert!(
        retried >= 1 && retried == interrupted,
        "retried {retried}, interrupted {interrupted}"
    );

    // The action saw each attempt at most once, and every run's call at least once.
    let calls = fx.seen("/slow/");
    let mut keys: HashMap<String, usize> = HashMap::new();
    for c in &calls {
        let header = |h: &str| c.headers.get(h).cloned().unwrap_or_default();
        *keys
            .entry(format!(
                "{}#{}",
                header("idempotency-key"),
                header("idempotency-attempt")
            ))
            .or_default() += 1;
    }
    assert!(
        keys.values().all(|n| *n == 1),
        "an attempt called the action twice"
    );
    let runs_called: HashSet<&str> = keys.keys().filter_map(|k| k.split(':').next()).collect();
    assert_eq!(runs_called.len(), RUNS);

    // The log is one verifiable chain, and doctor sees an empty queue.
    let (code, out, err) = api.cli(&["audit", "verify", "--database-url", &db.url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit: OK"), "{out}");
    let (code, out, err) = api.cli(&["doctor", "--database-url", &db.url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 runs queued"), "{out}");
    for w in &mut workers[1..] {
        w.stop();
    }
}

/// A cron slot fires once however many processes run the cron loop, and a gate opened on one
/// worker is decided through the api and finished by a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_and_cron_work_across_processes() {
    let db = TestDb::create().await;
    let bp = r#"
id: bp.gated
trigger: {event_type: gated.job}
plan:
  - {kind: gate, id: approve, mode: manual}
  - {kind: transform, id: after, expr: '{ok: true}'}
"#;
    let cron = r#"
id: bp.every_second
trigger: {cron: "* * * * *"}
plan:
  - {kind: transform, id: tick, expr: '{tick: true}'}
"#;
    let api = Node::builder()
        .blueprint("gated.yaml", bp)
        .blueprint("cron.yaml", cron)
        .args(&["--database-url", &db.url, "--role", "api"])
        .start();
    let _w1 = worker(&db, None);
    let _w2 = worker(&db, None);
    let ev = api.emit("gated.job", json!({})).await;
    assert_eq!(ev["event_name"], "gated.job");
    let run = api.the_run_of("bp.gated").await;
    api.until_step_status(&run, "approve", "waiting", 20).await;
    let (s, v) = api
        .post(
            &format!("/api/v1/runs/{run}/steps/approve/approve"),
            json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    api.until_run_status(&run, "completed", 20).await;
    // Every process runs the cron loop; the next minute's slot fires once.
    let deadline = Instant::now() + Duration::from_secs(75);
    while db.count("SELECT COUNT(*) FROM cron_fires").await == 0 {
        assert!(Instant::now() < deadline, "the cron slot never fired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dup = db
        .count("SELECT COUNT(*) FROM (SELECT slot FROM cron_fires GROUP BY slot HAVING COUNT(*) > 1) d")
        .await;
    assert_eq!(dup, 0);
    let fired = db
        .count("SELECT COUNT(*) FROM events WHERE event_name = 'xyn.trigger.cron.fired'")
        .await;
    let slots = db.count("SELECT COUNT(*) FROM cron_fires").await;
    assert!(
        slots >= 1 && fired == slots,
        "{fired} cron events for {slots} slots"
    );
}

/// PostgreSQL down at start: a clear error naming the URL (not its password) and the cause.
#[test]
fn postgres_down_at_start_is_a_clear_error() {
    let port = support::services::free_port();
    let out = std::process::Command::new(support::BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            std::env::temp_dir().join("xyn-pg-down").to_str().unwrap(),
            "--database-url",
            &format!("postgres://xyn:s3cret@127.0.0.1:{port}/xyn"),
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("postgres://xyn@127.0.0.1:{port}/xyn")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert!(!err.contains("s3cret"), "the password leaked: {err}");
}

/// PostgreSQL restarted under a running node: requests fail with a clear 503 during the
/// outage, the node reconnects by itself, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_gives_503s_then_recovers_without_loss() {
    let pg = PrivatePg::start();
    let bp = r#"
id: bp.flow
trigger: {event_type: flow.job}
inputs: [{name: n, type: integer}]
plan:
  - {kind: transform, id: a, expr: '{n: .inputs.n}'}
  - {kind: transform, id: b, expr: '{m: (.steps.a.outputs.n + 1)}'}
"#;
    let node = Node::builder()
        .blueprint("flow.yaml", bp)
        .args(&["--database-url", &pg.url, "--lease", "1s"])
        .start();
    let mut acked = Vec::new();
    for n in 0..20 {
        let v = node.emit("flow.job", json!({"n": n})).await;
        acked.push(v["event_id"].as_str().unwrap().to_string());
    }

    pg.down();
    let mut unavailable = 0;
    for n in 0..5 {
        let (s, v) = node
            .post(
                "/api/v1/events",
                json!({"event_name": "flow.job", "data": {"n": 100 + n}}),
            )
            .await;
        assert_eq!(s, 503, "{v}");
        assert_eq!(v["error"]["code"], "store.unavailable", "{v}");
        unavailable += 1;
    }
    let (s, v) = node.get("/api/v1/runs").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("store.unavailable"))
    );
    assert_eq!(unavailable, 5);

    pg.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = node
            .post(
                "/api/v1/events",
                json!({"event_name": "flow.job", "data": {"n": 1000}}),
            )
            .await;
        if s == 201 {
            acked.push(v["event_id"].as_str().unwrap().to_string());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not reconnect: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in 0..10 {
        let v = node.emit("flow.job", json!({"n": 2000 + n})).await;
        acked.push(v["event_id"].as_str().unwrap().to_string());
    }
    for id in &acked {
        let (s, v) = node.get(&format!("/api/v1/events/{id}")).await;
        assert_eq!(s, 200, "acknowledged event {id} lost: {v}");
    }
    // Every acknowledged event's run completes (runs interrupted by the outage included).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = node.runs_of("bp.flow").await;
        let done = runs.iter().filter(|r| r["status"] == "completed").count();
        if done == acked.len() {
            assert_eq!(runs.len(), acked.len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} runs completed\n{}",
            acked.len(),
            support::tail(&node.stdout_log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, err) = node.cli(&["audit", "verify", "--database-url", &pg.url]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Retention on PostgreSQL: the pruned log verifies from its signed checkpoint, and a changed
/// or removed checkpoint is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_log_verifiable() {
    let db = TestDb::create().await;
    let node = Node::builder().args(&["--database-url", &db.url]).start();
    for n in 0..10 {
        node.emit("keep.me", json!({"n": n})).await;
    }
    let data = node.data_dir();
    let data = data.to_str().unwrap();
    let (code, out, err) = node.cli(&[
        "retention",
        "run",
        "--older-than",
        "0s",
        "--include-unpublished",
        "--database-url",
        &db.url,
        "--data-dir",
        data,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("10 events removed"), "{out}");
    assert_eq!(db.count("SELECT COUNT(*) FROM events").await, 0);
    for n in 0..3 {
        node.emit("after.prune", json!({"n": n})).await;
    }
    let verify = || {
        node.cli(&[
            "audit",
            "verify",
            "--database-url",
            &db.url,
            "--data-dir",
            data,
        ])
    };
    let (code, out, err) = verify();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 events") && out.contains("signed checkpoint at seq 10"),
        "{out}"
    );
    // A forged checkpoint (moved to hide more of the log) fails its signature.
    let c = support::services::connect(&db.url).await;
    c.batch_execute("UPDATE chain_checkpoints SET seq = 11; DELETE FROM events WHERE seq = 11")
        .await
        .unwrap();
    let (code, out, _) = verify();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature does not verify"), "{out}");
    // Without the checkpoint the log no longer starts at seq 1.
    c.batch_execute("DELETE FROM chain_checkpoints")
        .await
        .unwrap();
    let (code, out, _) = verify();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN at seq 1"), "{out}");
}

/// A trigger switched off through one node holds on another node of the same store (its
/// catalog hears of it through the store's notifications), and switching it back on there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_switched_on_one_node_holds_on_another() {
    let db = TestDb::create().await;
    let bp = "id: bp.switched\ntrigger: {event_type: switched.job}\nplan:\n  - {kind: transform, id: t, expr: '1'}\n";
    let a = Node::builder()
        .blueprint("s.yaml", bp)
        .args(&["--database-url", &db.url, "--role", "api"])
        .start();
    let b = Node::builder()
        .args(&["--database-url", &db.url, "--role", "api"])
        .start();
    // Whether an event emitted on B started a run (intake commits the runs with the event).
    let started = |ev: serde_json::Value| {
        let b = &b;
        async move {
            b.runs_of("bp.switched")
                .await
                .iter()
                .any(|r| r["trigger_event_id"] == ev["event_id"])
        }
    };
    assert!(
        started(b.emit("switched.job", json!({})).await).await,
        "on at first"
    );
    let (s, v) = a
        .post("/api/v1/blueprints/bp.switched/disable", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if !started(b.emit("switched.job", json!({})).await).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B never heard the trigger was switched off"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once off on B, it stays off.
    for _ in 0..3 {
        assert!(!started(b.emit("switched.job", json!({})).await).await);
    }
    let (s, v) = a
        .post("/api/v1/blueprints/bp.switched/enable", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !started(b.emit("switched.job", json!({})).await).await {
        assert!(
            Instant::now() < deadline,
            "node B never heard the trigger was switched on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
