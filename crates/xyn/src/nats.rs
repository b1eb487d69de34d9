//! NATS JetStream: the outbox dispatcher, and NATS subjects as event sources.
//!
//! **Dispatcher.** Events are committed with an outbox row naming their seq range. One
//! dispatcher per cluster (a store singleton: a PostgreSQL advisory lock) reads unpublished
//! rows in seq order, publishes each event to `<prefix>.<event_name>` with the event id as
//! the `Nats-Msg-Id` (JetStream drops a duplicate within the stream's duplicate window),
//! waits for the acks in order and marks the rows published. It is at least once: a
//! dispatcher that dies between publishing and marking publishes again after its restart, and
//! the server drops the copies. It wakes on the store's outbox signal, never on a timer; while
//! NATS is down it retries with a backoff and events keep being accepted.
//!
//! **Sources.** A blueprint whose trigger names `nats_subject` gets a durable pull consumer
//! on the stream that holds that subject (created when no stream does). Each message becomes
//! an event (`nats.message` data, named after the subject); it is acked only after the event
//! and the runs it starts are committed. The event id is derived from the stream and the
//! message's stream sequence, so a message redelivered after a crash is recognised and acked
//! without a second event.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use xyn_core::event::StoredEvent;
use xyn_core::{EventId, Timestamp};
use xyn_engine::{EmitEvent, Node};
use xyn_store::{Signal, Store};

use crate::cli::NatsArgs;

/// The running NATS tasks; dropping it stops them.
pub struct Nats {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Nats {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Clone)]
struct Cfg {
    stream: String,
    prefix: String,
}

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// Connects (retrying in the background while NATS is down) and starts the dispatcher and
/// the subject sources.
pub async fn start(node: &Node, url: &str, args: &NatsArgs) -> Result<Nats> {
    anyhow::ensure!(
        valid_token(&args.nats_subject_prefix),
        "--nats-subject-prefix {:?} must be dot-separated tokens of letters, digits, _ and -",
        args.nats_subject_prefix
    );
    anyhow::ensure!(
        !args.nats_stream.is_empty()
            && args
                .nats_stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "--nats-stream {:?} must be letters, digits, _ and -",
        args.nats_stream
    );
    let client = async_nats::ConnectOptions::new()
        .name("xyn")
        .retry_on_initial_connect()
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client);
    let cfg = Cfg {
        stream: args.nats_stream.clone(),
        prefix: args.nats_subject_prefix.clone(),
    };
    let mut tasks = Vec::new();
    let (store, j, c) = (node.store().clone(), js.clone(), cfg.clone());
    tasks.push(tokio::spawn(
        async move { dispatch_loop(store, j, c).await },
    ));
    let (n, j) = (node.clone(), js.clone());
    tasks.push(tokio::spawn(async move { sources_loop(n, j, cfg).await }));
    Ok(Nats { tasks })
}

/// The JSON published for an event.
pub fn event_message(e: &StoredEvent) -> Value {
    let ev = &e.event;
    json!({
        "seq": e.seq,
        "hash": e.hash,
        "event_id": ev.event_id.to_string(),
        "event_name": ev.event_name,
        "occurred_at": ev.occurred_at.to_string(),
        "env_id": ev.env_id,
        "actor": ev.actor,
        "correlation_id": ev.correlation_id,
        "run_id": ev.run_id.map(|r| r.to_string()),
        "step_id": ev.step_id.map(|s| s.to_string()),
        "resource": ev.resource.as_ref().map(|r| json!({"type": r.kind, "id": r.id})),
        "data": ev.data,
    })
}

async fn ensure_stream(js: &jetstream::Context, cfg: &Cfg) -> Result<()> {
    js.get_or_create_stream(stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![format!("{}.>", cfg.prefix)],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot create or read the stream {}: {e}", cfg.stream))?;
    Ok(())
}

fn now() -> Timestamp {
    Timestamp::from_micros(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64),
    )
}

async fn dispatch_loop(store: Arc<dyn Store>, js: jetstream::Context, cfg: Cfg) {
    let mut rx = store.subscribe();
    loop {
        // One dispatcher per cluster keeps the seq order; the others wait here (in the
        // database, not polling).
        let guard = loop {
            match store.lock_singleton("xyn-outbox-dispatcher").await {
                Ok(g) => break g,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the dispatcher lock; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        tracing::info!(stream = %cfg.stream, prefix = %cfg.prefix, "outbox dispatcher active");
        dispatch(store.as_ref(), &js, &cfg, &mut rx, &guard).await;
        if rx.is_closed() {
            return;
        }
        tracing::warn!(
            "the dispatcher lock was lost (the store connection broke); taking it again"
        );
    }
}

/// Publishes while `guard` holds the dispatcher lock; returns when it is lost.
async fn dispatch(
    store: &dyn Store,
    js: &jetstream::Context,
    cfg: &Cfg,
    rx: &mut tokio::sync::broadcast::Receiver<Signal>,
    guard: &xyn_store::SingletonGuard,
) {
    let mut backoff = Duration::from_millis(100);
    let mut stream_ready = false;
    loop {
        if guard.is_lost() {
            return;
        }
        if !stream_ready {
            match ensure_stream(js, cfg).await {
                Ok(()) => stream_ready = true,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "NATS is not reachable; events wait in the outbox");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        match publish_pending(store, js, cfg).await {
            Ok(0) => {
                backoff = Duration::from_millis(100);
                loop {
                    match rx.recv().await {
                        Ok(Signal::Outbox)
                        | Ok(Signal::Reconnected)
                        | Err(RecvError::Lagged(_)) => {
                            break;
                        }
                        Ok(_) => {}
                        Err(RecvError::Closed) => return,
                    }
                }
            }
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "publishing to NATS failed; retrying");
                stream_ready = false;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Publishes the events of the oldest unpublished outbox rows; returns how many rows were
/// marked published.
async fn publish_pending(store: &dyn Store, js: &jetstream::Context, cfg: &Cfg) -> Result<usize> {
    let ranges = store
        .outbox_pending(500)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        return Ok(0);
    };
    let (first, last) = (first.first_seq, last.last_seq);
    let mut events = Vec::new();
    let mut after = first - 1;
    while after < last {
        let chunk = store
            .events_after(after, (last - after).clamp(1, 5000) as usize)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(end) = chunk.last().map(|e| e.seq) else {
            break;
        };
        after = end;
        events.extend(chunk.into_iter().filter(|e| e.seq <= last));
    }
    let mut acks = Vec::with_capacity(events.len());
    for e in &events {
        let payload = serde_json::to_vec(&event_message(e))?;
        let subject = format!("{}.{}", cfg.prefix, e.event.event_name);
        let ack = js
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(payload.into())
                    .message_id(e.event.event_id.to_string()),
            )
            .await
            .map_err(|err| anyhow::anyhow!("publish of seq {}: {err}", e.seq))?;
        acks.push((e.seq, ack));
    }
    let mut acked = first - 1;
    let mut failure = None;
    for (seq, ack) in acks {
        match ack.await {
            Ok(_) => acked = seq,
            Err(err) => {
                failure = Some(anyhow::anyhow!("no ack for seq {seq}: {err}"));
                break;
            }
        }
    }
    let done: Vec<i64> = ranges
        .iter()
        .filter(|r| r.last_seq <= acked)
        .map(|r| r.id)
        .collect();
    store
        .mark_published(&done, now())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match failure {
        Some(e) => Err(e),
        None => Ok(done.len()),
    }
}

/// A message's event id: derived from the stream and the message's stream sequence, so a
/// redelivered message maps to the same event.
fn source_event_id(stream: &str, seq: u64) -> EventId {
    let d = Sha256::digest(format!("xyn-nats:{stream}:{seq}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    // A version-8 (custom) UUID.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    EventId(uuid::Uuid::from_bytes(b))
}

/// Keeps one consumer task per distinct trigger subject of the current blueprints.
async fn sources_loop(node: Node, js: jetstream::Context, cfg: Cfg) {
    let mut rx = node.store().subscribe();
    let mut running: std::collections::HashMap<String, JoinHandle<()>> =
        std::collections::HashMap::new();
    loop {
        let wanted: HashSet<String> = node.nats_subjects().into_iter().collect();
        running.retain(|subject, task| {
            let keep = wanted.contains(subject);
            if !keep {
                task.abort();
            }
            keep
        });
        for subject in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(subject) {
                let (n, j, c, s) = (node.clone(), js.clone(), cfg.clone(), slot.key().clone());
                slot.insert(tokio::spawn(async move { consume_loop(n, j, c, s).await }));
            }
        }
        loop {
            match rx.recv().await {
                Ok(Signal::Catalog) | Ok(Signal::Reconnected) | Err(RecvError::Lagged(_)) => break,
                Ok(_) => {}
                Err(RecvError::Closed) => return,
            }
        }
        // The node reloads its catalog on the same signal; give it a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn durable_name(subject: &str) -> String {
    let d = Sha256::digest(subject.as_bytes());
    format!("xyn_{}", &hex::encode(d)[..16])
}

async fn consume_loop(node: Node, js: jetstream::Context, cfg: Cfg, subject: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match consume(&node, &js, &cfg, &subject).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(%subject, error = %e, retry_in_ms = backoff.as_millis() as u64, "NATS source failed; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn consume(node: &Node, js: &jetstream::Context, cfg: &Cfg, subject: &str) -> Result<()> {
    let mut st = match js.stream_by_subject(subject).await {
        Ok(name) => js
            .get_stream(&name)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        Err(_) => {
            // No stream holds the subject: one of ours does, named after it.
            let name = format!("XYN_SRC_{}", &durable_name(subject)[4..]);
            js.get_or_create_stream(stream::Config {
                name,
                subjects: vec![subject.to_string()],
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot create a stream for {subject}: {e}"))?
        }
    };
    let stream_name = st
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .config
        .name
        .clone();
    anyhow::ensure!(
        stream_name != cfg.stream || !subject.starts_with(&cfg.prefix),
        "the subject {subject} is where this node publishes its own events"
    );
    let consumer: consumer::PullConsumer = st
        .get_or_create_consumer(
            &durable_name(subject),
            consumer::pull::Config {
                durable_name: Some(durable_name(subject)),
                filter_subject: subject.to_string(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the consumer for {subject}: {e}"))?;
    tracing::info!(%subject, stream = %stream_name, "consuming a NATS subject");
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let event_id = source_event_id(&stream_name, info.stream_sequence);
        let data: Value = match serde_json::from_slice::<Value>(&m.payload) {
            Ok(v @ Value::Object(_)) => v,
            Ok(other) => json!({"value": other}),
            Err(_) => json!({"text": String::from_utf8_lossy(&m.payload)}),
        };
        let name = if xyn_core::event::validate_external_event_name(&m.subject).is_ok() {
            m.subject.to_string()
        } else {
            "nats.message".to_string()
        };
        let res = node
            .emit_event_with_id(
                event_id,
                EmitEvent {
                    event_name: name,
                    data,
                    resource: Some(xyn_core::Resource {
                        kind: "nats_subject".into(),
                        id: m.subject.to_string(),
                    }),
                    actor: format!("nats:{subject}"),
                    ..Default::default()
                },
            )
            .await;
        match res {
            Ok(_) => {}
            Err(e) if e.code == "store.conflict" => {
                tracing::info!(%event_id, "a redelivered NATS message was already an event");
            }
            Err(e) if e.kind == xyn_core::ErrorKind::Unavailable => {
                // Not acked: redelivered after ack_wait, when the store is back.
                return Err(anyhow::anyhow!("{e}"));
            }
            Err(e) => {
                tracing::warn!(subject = %m.subject, error = %e, "a NATS message was refused as an event; dropped");
            }
        }
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}
