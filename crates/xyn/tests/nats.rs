#![allow(clippy::unwrap_used)]
//! Events published to NATS JetStream from the outbox: each exactly once from a consumer's
//! point of view (also when the dispatcher is killed mid-way), in seq order; NATS down does
//! not stop intake; a NATS subject as a blueprint trigger.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::Node;
use support::services::PrivateNats;

const STREAM: &str = "XYN_TEST";
const PREFIX: &str = "xyn.test";

fn node_with(nats: &PrivateNats) -> Node {
    Node::builder()
        .args(&[
            "--nats-url",
            &nats.url,
            "--nats-stream",
            STREAM,
            "--nats-subject-prefix",
            PREFIX,
        ])
        .start()
}

fn db(node: &Node) -> rusqlite::Connection {
    let c = rusqlite::Connection::open_with_flags(
        node.data_dir().join("xyn.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

fn count(node: &Node, sql: &str) -> i64 {
    db(node).query_row(sql, [], |r| r.get(0)).unwrap()
}

fn pending(node: &Node) -> i64 {
    count(
        node,
        "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL",
    )
}

async fn until_published(node: &Node, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while pending(node) > 0 {
        assert!(
            Instant::now() < deadline,
            "the outbox did not drain\n{}",
            support::tail(&node.stdout_log(), 20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything in the stream, through a consumer, in stream order.
async fn consume_all(url: &str) -> Vec<(String, Value)> {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let total = stream.info().await.unwrap().state.messages as usize;
    let c: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < total {
        let mut batch = c
            .fetch()
            .max_messages(500)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            out.push((
                m.subject.to_string(),
                serde_json::from_slice(&m.payload).unwrap(),
            ));
        }
        assert!(
            out.len() > before,
            "the consumer stopped at {} of {total}",
            out.len()
        );
    }
    out
}

/// Each event id exactly once, in seq order, every stored event present.
fn check_exactly_once(node: &Node, got: &[(String, Value)]) {
    let ids: Vec<String> = {
        let c = db(node);
        let mut st = c
            .prepare("SELECT event_id FROM events ORDER BY seq")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let seen: Vec<String> = got
        .iter()
        .map(|(_, v)| v["event_id"].as_str().unwrap().to_string())
        .collect();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a duplicate reached the consumer");
    assert_eq!(seen, ids, "every event once, in seq order");
    let seqs: Vec<i64> = got
        .iter()
        .map(|(_, v)| v["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    for (subject, v) in got {
        assert_eq!(
            subject,
            &format!("{PREFIX}.{}", v["event_name"].as_str().unwrap())
        );
    }
}

async fn emit_many(url: String, from: usize, to: usize, clients: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(from));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, ok, url) = (next.clone(), ok.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let c = support::client();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= to {
                    return;
                }
                let r = c
                    .post(format!("{url}/api/v1/events"))
                    .json(&json!({"event_name": "outbox.test", "data": {"n": n}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    // The node was killed under us: this one was not acknowledged.
                    _ => return,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    ok.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_jetstream_once_even_when_the_dispatcher_is_killed() {
    let nats = PrivateNats::start();
    let mut node = node_with(&nats);
    // Emit from 8 clients and SIGKILL the node while the dispatcher is behind (outbox rows
    // unpublished at the moment of the kill); try again if it happened to be caught up.
    let mut acked_before = 0;
    let mut killed_with_pending = 0;
    for round in 0..10 {
        let url = node.url.clone();
        let load = tokio::spawn(emit_many(url, round * 100_000, (round + 1) * 100_000, 8));
        let target = count(&node, "SELECT COUNT(*) FROM events") + 800;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if count(&node, "SELECT COUNT(*) FROM events") >= target && pending(&node) > 0 {
                node.kill9();
                killed_with_pending = pending(&node);
                break;
            }
            assert!(Instant::now() < deadline, "events were not accepted");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        acked_before += load.await.unwrap();
        if killed_with_pending > 0 {
            break;
        }
        node.relaunch_after_kill();
    }
    assert!(
        killed_with_pending > 0,
        "never caught the dispatcher behind"
    );
    node.relaunch_after_kill();
    let acked_after = emit_many(node.url.clone(), 0, 300, 4).await;
    assert_eq!(acked_after, 300);
    until_published(&node, 60).await;
    let got = consume_all(&nats.url).await;
    check_exactly_once(&node, &got);
    assert!(got.len() >= acked_before + acked_after);
    eprintln!(
        "killed with {killed_with_pending} outbox rows unpublished; {} events in the stream",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_keeps_intake_and_the_outbox_catches_up() {
    let mut nats = PrivateNats::start();
    let node = node_with(&nats);
    for n in 0..50 {
        node.emit("outbox.test", json!({"n": n})).await;
    }
    until_published(&node, 20).await;
    nats.down();
    let t = Instant::now();
    for n in 50..250 {
        node.emit("outbox.test", json!({"n": n})).await;
    }
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "intake slowed down without NATS"
    );
    assert!(
        pending(&node) > 0,
        "nothing is published while NATS is down"
    );
    let (code, out, _) = node.cli(&["doctor", "--nats-url", &nats.url, "--nats-stream", STREAM]);
    assert_eq!(code, 1, "doctor reports NATS down: {out}");
    assert!(out.contains("events") && out.contains("pending"), "{out}");
    nats.up();
    until_published(&node, 60).await;
    let got = consume_all(&nats.url).await;
    assert_eq!(got.len(), 250);
    check_exactly_once(&node, &got);
    let (code, out, err) = node.cli(&["doctor", "--nats-url", &nats.url, "--nats-stream", STREAM]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("holds 250 messages"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_subject_triggers_runs_once_per_message() {
    let nats = PrivateNats::start();
    let bp = r#"
id: bp.orders
trigger: {nats_subject: "orders.*"}
inputs: [{name: order, type: string}]
plan:
  - {kind: transform, id: t, expr: '{order: .inputs.order, subject: .event.resource.id}'}
outputs: [{name: order}, {name: subject}]
"#;
    let node = Node::builder()
        .blueprint("orders.yaml", bp)
        .args(&[
            "--nats-url",
            &nats.url,
            "--nats-stream",
            STREAM,
            "--nats-subject-prefix",
            PREFIX,
        ])
        .start();
    let js = jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    // The node creates a stream for the subject and a durable consumer on it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while js.stream_by_subject("orders.created").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "no stream for the trigger's subject"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..5 {
        js.publish(
            format!("orders.{}", if i % 2 == 0 { "created" } else { "paid" }),
            json!({"order": format!("o-{i}")}).to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let runs = node
        .until(20, "five runs", || async {
            let r = node.runs_of("bp.orders").await;
            (r.len() == 5 && r.iter().all(|r| r["status"] == "completed")).then(|| json!(r))
        })
        .await;
    let mut orders: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outputs"]["order"].as_str().unwrap().to_string())
        .collect();
    orders.sort();
    assert_eq!(orders, vec!["o-0", "o-1", "o-2", "o-3", "o-4"]);
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["outputs"]["subject"] == "orders.paid")
    );
    let (_, events) = node
        .get("/api/v1/events?event_name=orders.*&limit=50")
        .await;
    assert_eq!(
        events["items"].as_array().unwrap().len(),
        5,
        "one event per message"
    );
}

/// On PostgreSQL every process may carry `--nats-url`: one dispatcher publishes at a time, and
/// each event still reaches the stream once, in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_publishes_each_event_once() {
    let nats = PrivateNats::start();
    let db = support::services::TestDb::create().await;
    let nats_args = [
        "--nats-url",
        nats.url.as_str(),
        "--nats-stream",
        STREAM,
        "--nats-subject-prefix",
        PREFIX,
    ];
    let mut api_args = vec!["--database-url", db.url.as_str(), "--role", "api"];
    api_args.extend_from_slice(&nats_args);
    let api = Node::builder().args(&api_args).start();
    let mut worker_args = vec!["--database-url", db.url.as_str(), "--role", "worker"];
    worker_args.extend_from_slice(&nats_args);
    let _worker = Node::builder().args(&worker_args).start();
    assert_eq!(emit_many(api.url.clone(), 0, 400, 8).await, 400);
    let deadline = Instant::now() + Duration::from_secs(30);
    while db
        .count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .await
        > 0
    {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = consume_all(&nats.url).await;
    let ids: Vec<String> = db
        .query("SELECT event_id FROM events ORDER BY seq")
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    let seen: Vec<String> = got
        .iter()
        .map(|(_, v)| v["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ids, "every event once, in seq order");
}
