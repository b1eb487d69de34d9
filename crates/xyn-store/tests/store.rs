#![allow(clippy::unwrap_used)]
//! Store tests: the conformance suite on every adapter available here, and what only the
//! SQLite adapter can show (tampering with its file, reopening it).

#[path = "conformance/mod.rs"]
mod conformance;

use std::sync::Arc;

use rusqlite::Connection;
use xyn_store::Store;
use xyn_store::postgres::{PgConfig, PgStore};
use xyn_store::sqlite::{SqliteConfig, SqliteStore};

/// A store on a fresh temporary database; the directory lives as long as the process.
async fn sqlite() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().unwrap().keep();
    Arc::new(SqliteStore::open(dir.join("xyn.db"), SqliteConfig::default()).unwrap())
}

conformance_suite!(sqlite_conformance, || sqlite());

/// The notifying wrapper must behave exactly like the store it wraps.
async fn notifying() -> Arc<dyn Store> {
    let (s, _feed) = xyn_store::notify::NotifyingStore::new(sqlite().await, 16);
    Arc::new(s)
}

conformance_suite!(notifying_conformance, || notifying());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_announces_each_commit_in_seq_order() {
    let (s, feed) = xyn_store::notify::NotifyingStore::new(sqlite().await, 16);
    let mut rx = feed.subscribe();
    let mut b = xyn_store::WriteBatch::default();
    b.events.push(conformance::event("f.one", None));
    b.events.push(conformance::event("f.two", None));
    let stored = s.commit(b).await.unwrap();
    let got = rx.recv().await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        stored.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    // A batch without events is not announced.
    s.commit(xyn_store::WriteBatch {
        footprints: vec![],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(rx.try_recv().is_err());
    assert_eq!(feed.subscribers(), 1);
}

/// The PostgreSQL the tests use (`XYN_TEST_DATABASE_URL`, default the local `test` database).
fn pg_url() -> String {
    std::env::var("XYN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A store on a fresh schema of the test database. Schemas left by earlier runs (older than
/// ten minutes) are dropped first.
async fn postgres() -> Arc<dyn Store> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (see .ci/run)");
    tokio::spawn(conn);
    let stale = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'xt\\_%'",
            &[],
        )
        .await
        .unwrap();
    for r in stale {
        let name: String = r.get(0);
        let born: u64 = name
            .split('_')
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if born + 600 < now {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .await;
        }
    }
    let schema = format!("xt_{now}_{}", uuid::Uuid::new_v4().simple());
    let mut cfg = PgConfig::new(pg_url());
    cfg.schema = Some(schema);
    cfg.pool_size = 4;
    Arc::new(PgStore::open(cfg).await.unwrap())
}

conformance_suite!(postgres_conformance, || postgres());

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir.join("xyn.db"), SqliteConfig::default()).unwrap()
}

async fn log_of(n: usize) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut b = xyn_store::WriteBatch::default();
    for _ in 0..n {
        b.events.push(conformance::event("t.x", None));
    }
    s.commit(b).await.unwrap();
    (dir, s)
}

fn sql(dir: &std::path::Path, q: &str) {
    Connection::open(dir.join("xyn.db"))
        .unwrap()
        .execute_batch(q)
        .unwrap();
}

#[tokio::test]
async fn an_edited_event_row_is_named() {
    let (dir, s) = log_of(6).await;
    sql(
        dir.path(),
        "UPDATE events SET data = '{\"n\":2}' WHERE seq = 4",
    );
    let r = s.verify_chain().await.unwrap();
    assert!(!r.ok);
    assert_eq!(r.broken_seq, Some(4));
    assert_eq!(r.events_checked, 3);
}

#[tokio::test]
async fn an_edited_actor_or_time_is_named() {
    let (dir, s) = log_of(3).await;
    sql(
        dir.path(),
        "UPDATE events SET occurred_at = occurred_at + 1 WHERE seq = 2",
    );
    assert_eq!(s.verify_chain().await.unwrap().broken_seq, Some(2));
    let (dir, s) = log_of(3).await;
    sql(
        dir.path(),
        "UPDATE events SET actor = 'someone-else' WHERE seq = 1",
    );
    assert_eq!(s.verify_chain().await.unwrap().broken_seq, Some(1));
}

#[tokio::test]
async fn a_deleted_event_row_is_named() {
    let (dir, s) = log_of(6).await;
    sql(dir.path(), "DELETE FROM events WHERE seq = 3");
    let r = s.verify_chain().await.unwrap();
    assert_eq!(r.broken_seq, Some(3), "{r:?}");
}

#[tokio::test]
async fn a_removed_tail_is_named() {
    let (dir, s) = log_of(6).await;
    sql(dir.path(), "DELETE FROM events WHERE seq >= 5");
    let r = s.verify_chain().await.unwrap();
    assert_eq!(r.broken_seq, Some(5), "{r:?}");
}

#[tokio::test]
async fn a_rewritten_hash_breaks_the_next_link() {
    let (dir, s) = log_of(6).await;
    sql(
        dir.path(),
        "UPDATE events SET hash = 'ab' || substr(hash, 3) WHERE seq = 2",
    );
    assert_eq!(s.verify_chain().await.unwrap().broken_seq, Some(2));
}

#[tokio::test]
async fn unreadable_rows_are_reported_not_panicked_on() {
    let (dir, s) = log_of(3).await;
    sql(
        dir.path(),
        "UPDATE events SET data = 'not json' WHERE seq = 2",
    );
    let r = s.verify_chain().await.unwrap();
    assert_eq!(r.broken_seq, Some(2));
    assert!(r.reason.unwrap().contains("cannot be read"));
}

#[tokio::test]
async fn the_chain_continues_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.commit(xyn_store::WriteBatch {
            events: vec![conformance::event("a.b", None)],
            ..Default::default()
        })
        .await
        .unwrap();
        s.close();
    }
    let s = open(dir.path());
    let e = s
        .commit(xyn_store::WriteBatch {
            events: vec![conformance::event("a.b", None)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(e[0].seq, 2);
    assert!(s.verify_chain().await.unwrap().ok);
}

#[tokio::test]
async fn wal_mode_and_full_sync_are_on() {
    let dir = tempfile::tempdir().unwrap();
    let _s = open(dir.path());
    let c = Connection::open(dir.path().join("xyn.db")).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// A database written before runs had a `waiting` status: the migration moves the runs held at
/// a gate from `running` to `waiting`, and only those.
#[tokio::test]
async fn the_migration_marks_runs_held_at_a_gate_waiting() {
    use xyn_core::run::{RunStatus, StepStatus};
    use xyn_store::{RunWrite, StepWrite, WriteBatch};
    let dir = tempfile::tempdir().unwrap();
    let held = conformance::run("bp.m", RunStatus::Running);
    let working = conformance::run("bp.m", RunStatus::Running);
    let mut gate = conformance::step(&held, 0, "approve");
    gate.status = StepStatus::Waiting;
    {
        let s = open(dir.path());
        s.commit(WriteBatch {
            runs: vec![
                RunWrite::Insert(held.clone()),
                RunWrite::Insert(working.clone()),
            ],
            steps: vec![StepWrite::Insert(gate)],
            footprints: vec![xyn_core::footprint::Footprint {
                occurred_at: conformance::ts(90_000),
                run_id: Some(held.run_id),
                step_id: None,
                source_kind: "step".into(),
                source_ref: "approve".into(),
                metric: "gate_wait_ms".into(),
                quantity: 4.0,
                unit: "ms".into(),
                class: "internal".into(),
                dims: serde_json::json!({}),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
        s.close();
    }
    // Back to how a database at version 4 looked (before the run counts of version 7, the
    // daily footprint totals of version 8 and the trigger switches of version 9).
    sql(
        dir.path(),
        "DROP TRIGGER runs_count_insert; DROP TRIGGER runs_count_update; \
         DROP TRIGGER runs_count_delete; DROP TABLE blueprint_run_counts; \
         DROP TRIGGER footprints_days_insert; DROP TRIGGER footprints_days_delete; \
         DROP TABLE footprint_days; DROP TABLE blueprint_triggers; PRAGMA user_version = 4",
    );
    // Version 8 adds up the footprints already there.
    let days = s_days(dir.path()).await;
    let day = conformance::ts(90_000)
        .as_micros()
        .div_euclid(xyn_store::DAY_MICROS)
        * xyn_store::DAY_MICROS;
    assert_eq!(days, [(day, "gate_wait_ms".to_string(), 4.0, 1)]);
    let s = open(dir.path());
    // Version 7 counts the runs already there, in the status version 5 gave them.
    let counts: Vec<(String, u64)> = s
        .blueprint_run_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.status, c.runs))
        .collect();
    assert_eq!(counts, [("running".into(), 1), ("waiting".into(), 1)]);
    let status = |r: Option<xyn_core::run::Run>| r.map(|r| r.status);
    assert_eq!(
        status(s.get_run(held.run_id).await.unwrap()),
        Some(RunStatus::Waiting)
    );
    assert_eq!(
        status(s.get_run(working.run_id).await.unwrap()),
        Some(RunStatus::Running)
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.close();
    }
    sql(dir.path(), "PRAGMA user_version = 999");
    let err = SqliteStore::open(dir.path().join("xyn.db"), SqliteConfig::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_ranges_cover_every_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = xyn_store::WriteBatch::default();
            for _ in 0..(1 + i % 3) {
                b.events.push(conformance::event("o.x", None));
            }
            s.commit(b).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let c = Connection::open(dir.path().join("xyn.db")).unwrap();
    let mut stmt = c
        .prepare("SELECT first_seq, last_seq FROM outbox ORDER BY id")
        .unwrap();
    let ranges: Vec<(i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut next = 1;
    for (a, b) in &ranges {
        assert_eq!(*a, next, "ranges are contiguous: {ranges:?}");
        assert!(b >= a);
        next = b + 1;
    }
    let max: i64 = c
        .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(next - 1, max);
    assert!(ranges.len() <= 40, "one row per transaction, not per event");
}

/// The daily footprint totals of a reopened store.
async fn s_days(dir: &std::path::Path) -> Vec<(i64, String, f64, u64)> {
    let s = open(dir);
    let days = s
        .footprint_rollup(xyn_store::FootprintRollupQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.day.as_micros(), d.metric, d.total, d.count))
        .collect();
    s.close();
    days
}
