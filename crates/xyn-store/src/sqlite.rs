//! The embedded SQLite adapter (WAL mode, `synchronous=FULL`).
//!
//! One writer thread owns the only write connection and commits in groups: it takes every
//! batch that is waiting, applies each inside its own SAVEPOINT (so one failed precondition
//! does not undo the others), assigns `seq` and chain hashes in order, commits once (one fsync
//! for the whole group) and then answers every caller. Under load many batches share a
//! commit; when idle a batch commits alone at once. Readers use a small pool of connections
//! on the blocking thread pool; WAL lets them read while the writer writes.
//!
//! Nothing here polls: the writer sleeps on its channel, readers run only when asked.

mod query;
pub(crate) mod rows;
mod schema;
mod secrets;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};
use tokio::sync::oneshot;
use xyn_core::event::{ChainReport, ChainVerifier, GENESIS_HASH, StoredEvent};
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft};
use xyn_core::run::{Run, Step};
use xyn_core::{ArtifactId, DraftId, EventId, IdPattern, RunId, Timestamp};

use crate::{
    ArtifactQuery, BlueprintRunCount, BlueprintTrigger, Checkpoint, CheckpointSigner, Claim,
    Claimed, DAY_MICROS, DraftWrite, EventQuery, FootprintDay, FootprintQuery,
    FootprintRollupQuery, LoadedRun, OutboxLag, OutboxRange, Page, PruneReport, QueueStats,
    QueueWrite, RunQuery, RunWrite, Signal, SingletonGuard, StepWrite, Store, StoreError,
    StoreResult, StoreStats, WriteBatch,
};
use query::*;
use rows::*;
pub(crate) use writer::hash_bytes;
use writer::*;

const INSERT_EVENT: &str = "INSERT INTO events (seq, event_id, event_name, occurred_at, env_id, actor, correlation_id, \
     run_id, step_id, resource_type, resource_id, data, hash) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)";

/// Commits between two background checkpoints.
const CHECKPOINT_EVERY: u64 = 32;

/// Most batches folded into one transaction.
const MAX_GROUP: usize = 1024;

/// Tuning of the SQLite adapter.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// `FULL` (default) syncs the WAL on every commit: an acknowledged write survives power
    /// loss. `NORMAL` survives process crashes only.
    pub synchronous_full: bool,
    /// Read connections kept open.
    pub readers: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            synchronous_full: true,
            readers: 4,
        }
    }
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    commits: AtomicU64,
    batches: AtomicU64,
    events: AtomicU64,
}

type Reply = oneshot::Sender<StoreResult<Vec<StoredEvent>>>;

enum Cmd {
    Commit(Box<WriteBatch>, Reply),
    /// Any other write, run on the writer's connection (it answers through its own channel).
    Exec(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// The store's clock (leases, `published_at`): the system clock in microseconds.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    readers: Arc<ReaderPool>,
    counters: Arc<Counters>,
    signals: tokio::sync::broadcast::Sender<Signal>,
    singletons: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
}

impl ReaderPool {
    fn take(&self) -> StoreResult<Connection> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        open_reader(&self.path)
    }

    fn give(&self, c: Connection) {
        if let Ok(mut v) = self.idle.lock()
            && v.len() < self.keep
        {
            v.push(c);
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unavailable)?;
    c.execute_batch(
        "PRAGMA busy_timeout = 5000; PRAGMA query_only = 1; PRAGMA cache_size = -2000;",
    )
    .map_err(unavailable)?;
    Ok(c)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations and starts the
    /// writer thread.
    pub fn open(path: impl AsRef<Path>, config: SqliteConfig) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let sync = if config.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        // Checkpoints run on their own thread (below), so the writer never stalls on copying
        // WAL frames into the database; the writer's own autocheckpoint is only a backstop.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF; \
             PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -8000; \
             PRAGMA wal_autocheckpoint = 20000; PRAGMA journal_size_limit = 67108864;"
        ))
        .map_err(unavailable)?;
        migrate(&conn)?;
        let head = load_head(&conn)?;
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (ck_tx, ck_rx) = mpsc::sync_channel::<()>(1);
        let ck_conn = open_reader(&path)?;
        ck_conn
            .execute_batch("PRAGMA query_only = 0;")
            .map_err(unavailable)?;
        let checkpointer = thread::Builder::new()
            .name("xyn-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(ck_conn, ck_rx))
            .map_err(unavailable)?;
        let wc = counters.clone();
        let (signals, _) = tokio::sync::broadcast::channel(1024);
        let ws = signals.clone();
        let writer = thread::Builder::new()
            .name("xyn-sqlite-writer".into())
            .spawn(move || {
                writer_loop(conn, rx, head, wc, ck_tx, ws);
                let _ = checkpointer.join();
            })
            .map_err(unavailable)?;
        Ok(Self {
            readers: Arc::new(ReaderPool {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
                keep: config.readers.max(1),
            }),
            path,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            counters,
            signals,
            singletons: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Opens an existing database for reading only (CLI commands that only read): nothing is
    /// created (a missing database is an error, never a new empty one), no migration is
    /// applied and no writer runs; every write is refused.
    pub fn open_read_only(path: impl AsRef<Path>, config: SqliteConfig) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(StoreError::Unavailable(format!(
                "no Xyn database at {}",
                path.display()
            )));
        }
        // Opening a reader checks that the file is a database SQLite can read.
        let first = open_reader(&path)?;
        let (signals, _) = tokio::sync::broadcast::channel(16);
        Ok(Self {
            readers: Arc::new(ReaderPool {
                path: path.clone(),
                idle: Mutex::new(vec![first]),
                keep: config.readers.max(1),
            }),
            path,
            tx: Mutex::new(None),
            writer: Mutex::new(None),
            counters: Arc::new(Counters::default()),
            signals,
            singletons: Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer after it has committed what it was given.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
    }

    /// Runs `f` on the writer's connection, between commit groups.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self
                .tx
                .lock()
                .map_err(|_| StoreError::Unavailable("writer lock poisoned".into()))?;
            let tx = guard
                .as_ref()
                .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
            tx.send(Cmd::Exec(Box::new(move |c| {
                let _ = reply.send(f(c));
            })))
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let pool = self.readers.clone();
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let out = f(&conn);
            pool.give(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, batch: WriteBatch) -> StoreResult<Vec<StoredEvent>> {
        if batch.is_empty() {
            return Ok(vec![]);
        }
        let (reply, rx) = oneshot::channel();
        {
            let guard = self
                .tx
                .lock()
                .map_err(|_| StoreError::Unavailable("writer lock poisoned".into()))?;
            let tx = guard
                .as_ref()
                .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
            tx.send(Cmd::Commit(Box::new(batch), reply))
                .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    async fn get_event(&self, id: EventId) -> StoreResult<Option<StoredEvent>> {
        self.read(move |c| {
            let sql = format!("SELECT {EVENT_COLS} FROM events WHERE event_id = ?1");
            Ok(collect(c, &sql, vec![id.to_string().into()], event_from_row)?.pop())
        })
        .await
    }

    async fn list_events(&self, q: EventQuery) -> StoreResult<Page<StoredEvent>> {
        self.read(move |c| {
            let mut args = Vec::new();
            let mut conds = Vec::new();
            if let Some(n) = &q.event_name {
                conds.push(name_filter(n, &mut args));
            }
            if let Some(r) = q.run_id {
                args.push(r.to_string().into());
                conds.push(format!("run_id = ?{}", args.len()));
            }
            if let Some(p) = &q.id {
                conds.push(id_filter("event_id", p, &mut args));
            }
            if let Some(b) = q.before {
                args.push(b.into());
                conds.push(format!("seq < ?{}", args.len()));
            }
            let lim = limit(q.limit);
            let wh = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            let sql = format!(
                "SELECT {EVENT_COLS} FROM events {wh} ORDER BY seq DESC LIMIT {}",
                lim + 1
            );
            let rows = collect(c, &sql, args, |r| event_from_row(r).map(|e| (e.seq, e)))?;
            Ok(paginate(rows, lim))
        })
        .await
    }

    async fn events_after(&self, after: i64, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        self.read(move |c| {
            let sql =
                format!("SELECT {EVENT_COLS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2");
            collect(
                c,
                &sql,
                vec![after.into(), (limit.clamp(1, 10_000) as i64).into()],
                event_from_row,
            )
        })
        .await
    }

    async fn chain_head(&self) -> StoreResult<Option<(i64, String)>> {
        self.read(|c| {
            c.query_row("SELECT seq, hash FROM chain_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn verify_chain(&self) -> StoreResult<ChainReport> {
        self.read(|c| {
            let head: Option<(i64, String)> = c
                .query_row("SELECT seq, hash FROM chain_head WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(unavailable)?;
            let cp: Option<(i64, String)> = c
                .query_row(
                    "SELECT seq, hash FROM chain_checkpoints ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(unavailable)?;
            let (mut v, from) = match cp {
                Some((seq, h)) => (ChainVerifier::from_checkpoint(seq, hash_bytes(&h)?), seq),
                None => (ChainVerifier::new(), 0),
            };
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {EVENT_COLS} FROM events WHERE seq > ?1 ORDER BY seq"
                ))
                .map_err(unavailable)?;
            let mut rows = stmt.query([from]).map_err(unavailable)?;
            while let Some(r) = rows.next().map_err(unavailable)? {
                match event_from_row(r) {
                    Ok(e) => {
                        if !v.push(&e) {
                            break;
                        }
                    }
                    Err(e) => {
                        let seq: i64 = r.get(0).unwrap_or(-1);
                        v.unreadable(seq, e);
                        break;
                    }
                }
            }
            Ok(v.finish(head))
        })
        .await
    }

    async fn get_run(&self, id: RunId) -> StoreResult<Option<Run>> {
        self.read(move |c| {
            let sql = format!("SELECT id, {RUN_COLS} FROM runs WHERE run_id = ?1");
            Ok(collect(c, &sql, vec![id.to_string().into()], run_from_row)?
                .pop()
                .map(|(_, r)| r))
        })
        .await
    }

    async fn list_runs(&self, q: RunQuery) -> StoreResult<Page<Run>> {
        self.read(move |c| {
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut conds = Vec::new();
            if let Some(st) = &q.status
                && !st.is_empty()
            {
                let mut ph = Vec::new();
                for s in st {
                    args.push(s.as_str().to_string().into());
                    ph.push(format!("?{}", args.len()));
                }
                conds.push(format!("status IN ({})", ph.join(",")));
            }
            if let Some(b) = &q.blueprint_id {
                args.push(b.clone().into());
                conds.push(format!("blueprint_id = ?{}", args.len()));
            }
            if let Some(cid) = &q.correlation_id {
                args.push(cid.clone().into());
                conds.push(format!("correlation_id = ?{}", args.len()));
            }
            if let Some(p) = &q.id {
                conds.push(id_filter("run_id", p, &mut args));
            }
            // A search by input value walks that value's index entries newest first (one per
            // run) and stops after a page, however many runs share the value.
            let (from, pk) = match &q.input_value {
                Some(v) => {
                    args.push(crate::input_value_key(v).into());
                    conds.push(format!("v.value = ?{} AND runs.id = v.run_pk", args.len()));
                    ("run_input_values AS v CROSS JOIN runs", "v.run_pk")
                }
                None => ("runs", "id"),
            };
            if let Some(t) = q.created_since {
                args.push(t.as_micros().into());
                conds.push(format!("created_at >= ?{}", args.len()));
            }
            if let Some(t) = q.created_until {
                args.push(t.as_micros().into());
                conds.push(format!("created_at < ?{}", args.len()));
            }
            if let Some(b) = q.before {
                args.push(b.into());
                conds.push(format!("{pk} < ?{}", args.len()));
            }
            let lim = limit(q.limit);
            let wh = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            let sql = format!(
                "SELECT {pk}, {RUN_COLS} FROM {from} {wh} ORDER BY {pk} DESC LIMIT {}",
                lim + 1
            );
            Ok(paginate(collect(c, &sql, args, run_from_row)?, lim))
        })
        .await
    }

    async fn get_steps(&self, run: RunId) -> StoreResult<Vec<Step>> {
        self.read(move |c| {
            let sql = format!("SELECT {STEP_COLS} FROM steps WHERE run_id = ?1 ORDER BY idx");
            collect(c, &sql, vec![run.to_string().into()], step_from_row)
        })
        .await
    }

    async fn unfinished_runs(&self) -> StoreResult<Vec<RunId>> {
        self.read(|c| {
            collect(
                c,
                "SELECT run_id FROM runs WHERE status IN ('created', 'running', 'waiting') ORDER BY id",
                vec![],
                |r| {
                    let s: String = r.get(0).map_err(unavailable)?;
                    s.parse()
                        .map_err(|_| StoreError::Corrupt(format!("bad run id {s:?}")))
                },
            )
        })
        .await
    }

    async fn load_runs(&self, ids: &[RunId]) -> StoreResult<Vec<LoadedRun>> {
        let ids = ids.to_vec();
        self.read(move |c| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let sql = format!("SELECT id, {RUN_COLS} FROM runs WHERE run_id = ?1");
                let Some((_, run)) =
                    collect(c, &sql, vec![id.to_string().into()], run_from_row)?.pop()
                else {
                    continue;
                };
                let sql = format!("SELECT {STEP_COLS} FROM steps WHERE run_id = ?1 ORDER BY idx");
                let steps = collect(c, &sql, vec![id.to_string().into()], step_from_row)?;
                let trigger = match run.trigger_event_id {
                    Some(e) => {
                        let sql = format!("SELECT {EVENT_COLS} FROM events WHERE event_id = ?1");
                        collect(c, &sql, vec![e.to_string().into()], event_from_row)?.pop()
                    }
                    None => None,
                };
                out.push(LoadedRun {
                    run,
                    steps,
                    trigger,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn get_artifact(&self, id: ArtifactId) -> StoreResult<Option<Artifact>> {
        self.read(move |c| {
            let sql = format!("SELECT id, {ARTIFACT_COLS} FROM artifacts WHERE artifact_id = ?1");
            Ok(
                collect(c, &sql, vec![id.to_string().into()], artifact_from_row)?
                    .pop()
                    .map(|(_, a)| a),
            )
        })
        .await
    }

    async fn list_artifacts(&self, q: ArtifactQuery) -> StoreResult<Page<Artifact>> {
        self.read(move |c| {
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut conds = Vec::new();
            if let Some(r) = q.run_id {
                args.push(r.to_string().into());
                conds.push(format!("run_id = ?{}", args.len()));
            }
            if let Some(s) = q.step_id {
                args.push(s.to_string().into());
                conds.push(format!("step_id = ?{}", args.len()));
            }
            if let Some(k) = &q.kind {
                args.push(k.clone().into());
                conds.push(format!("kind = ?{}", args.len()));
            }
            if let Some(b) = q.before {
                args.push(b.into());
                conds.push(format!("id < ?{}", args.len()));
            }
            let lim = limit(q.limit);
            let wh = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            let sql = format!(
                "SELECT id, {ARTIFACT_COLS} FROM artifacts {wh} ORDER BY id DESC LIMIT {}",
                lim + 1
            );
            Ok(paginate(collect(c, &sql, args, artifact_from_row)?, lim))
        })
        .await
    }

    async fn blueprint_heads(&self) -> StoreResult<Vec<BlueprintVersion>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {BLUEPRINT_COLS} FROM blueprint_versions b WHERE version = \
                 (SELECT MAX(version) FROM blueprint_versions WHERE blueprint_id = b.blueprint_id) \
                 ORDER BY blueprint_id"
            );
            collect(c, &sql, vec![], blueprint_from_row)
        })
        .await
    }

    async fn get_blueprint(
        &self,
        id: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<BlueprintVersion>> {
        let id = id.to_string();
        self.read(move |c| {
            let (sql, args): (String, Vec<rusqlite::types::Value>) = match version {
                Some(v) => (
                    format!("SELECT {BLUEPRINT_COLS} FROM blueprint_versions WHERE blueprint_id = ?1 AND version = ?2"),
                    vec![id.into(), v.into()],
                ),
                None => (
                    format!("SELECT {BLUEPRINT_COLS} FROM blueprint_versions WHERE blueprint_id = ?1 ORDER BY version DESC LIMIT 1"),
                    vec![id.into()],
                ),
            };
            Ok(collect(c, &sql, args, blueprint_from_row)?.pop())
        })
        .await
    }

    async fn list_blueprint_versions(&self, id: &str) -> StoreResult<Vec<BlueprintVersion>> {
        let id = id.to_string();
        self.read(move |c| {
            let sql = format!("SELECT {BLUEPRINT_COLS} FROM blueprint_versions WHERE blueprint_id = ?1 ORDER BY version DESC");
            collect(c, &sql, vec![id.into()], blueprint_from_row)
        })
        .await
    }

    async fn blueprint_run_counts(&self) -> StoreResult<Vec<BlueprintRunCount>> {
        self.read(query::blueprint_run_counts).await
    }

    async fn blueprint_triggers(&self) -> StoreResult<Vec<BlueprintTrigger>> {
        self.read(query::blueprint_triggers).await
    }

    async fn get_draft(&self, id: DraftId) -> StoreResult<Option<Draft>> {
        self.read(move |c| {
            let sql = format!("SELECT id, {DRAFT_COLS} FROM drafts WHERE draft_id = ?1");
            Ok(
                collect(c, &sql, vec![id.to_string().into()], draft_from_row)?
                    .pop()
                    .map(|(_, d)| d),
            )
        })
        .await
    }

    async fn list_drafts(&self, before: Option<i64>, limit_n: usize) -> StoreResult<Page<Draft>> {
        self.read(move |c| {
            let lim = limit(limit_n);
            let (wh, args): (&str, Vec<rusqlite::types::Value>) = match before {
                Some(b) => ("WHERE id < ?1", vec![b.into()]),
                None => ("", vec![]),
            };
            let sql = format!(
                "SELECT id, {DRAFT_COLS} FROM drafts {wh} ORDER BY id DESC LIMIT {}",
                lim + 1
            );
            Ok(paginate(collect(c, &sql, args, draft_from_row)?, lim))
        })
        .await
    }

    async fn list_footprints(&self, q: FootprintQuery) -> StoreResult<Page<Footprint>> {
        self.read(move |c| {
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut conds = Vec::new();
            if let Some(r) = q.run_id {
                args.push(r.to_string().into());
                conds.push(format!("run_id = ?{}", args.len()));
            }
            if let Some(m) = &q.metric {
                args.push(m.clone().into());
                conds.push(format!("metric = ?{}", args.len()));
            }
            if let Some(s) = q.since {
                args.push(s.as_micros().into());
                conds.push(format!("occurred_at >= ?{}", args.len()));
            }
            if let Some(u) = q.until {
                args.push(u.as_micros().into());
                conds.push(format!("occurred_at < ?{}", args.len()));
            }
            if let Some(b) = q.before {
                args.push(b.into());
                conds.push(format!("id < ?{}", args.len()));
            }
            let lim = limit(q.limit);
            let wh = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            let sql = format!(
                "SELECT id, {FOOTPRINT_COLS} FROM footprints {wh} ORDER BY id DESC LIMIT {}",
                lim + 1
            );
            Ok(paginate(collect(c, &sql, args, footprint_from_row)?, lim))
        })
        .await
    }

    async fn footprint_rollup(&self, q: FootprintRollupQuery) -> StoreResult<Vec<FootprintDay>> {
        self.read(move |c| {
            // Whole days of every run come from the daily totals the triggers keep; anything
            // narrower sums the measurements.
            let whole = q.whole_days();
            let (time, day) = if whole {
                ("day", "day".to_string())
            } else {
                // Floor division also for instants before 1970.
                (
                    "occurred_at",
                    format!(
                        "(occurred_at - ((occurred_at % {DAY_MICROS}) + {DAY_MICROS}) % {DAY_MICROS})"
                    ),
                )
            };
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut conds = Vec::new();
            if let Some(r) = q.run_id {
                args.push(r.to_string().into());
                conds.push(format!("run_id = ?{}", args.len()));
            }
            if !q.metrics.is_empty() {
                let mut ph = Vec::new();
                for m in &q.metrics {
                    args.push(m.clone().into());
                    ph.push(format!("?{}", args.len()));
                }
                conds.push(format!("metric IN ({})", ph.join(",")));
            }
            if let Some(s) = q.since {
                args.push(s.as_micros().into());
                conds.push(format!("{time} >= ?{}", args.len()));
            }
            if let Some(u) = q.until {
                args.push(u.as_micros().into());
                conds.push(format!("{time} < ?{}", args.len()));
            }
            let wh = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            let sql = if whole {
                format!(
                    "SELECT day, metric, unit, total, samples FROM footprint_days {wh} \
                     ORDER BY day, metric"
                )
            } else {
                format!(
                    "SELECT {day} AS d, metric, MIN(unit), SUM(quantity), COUNT(*) FROM footprints {wh} \
                     GROUP BY d, metric ORDER BY d, metric"
                )
            };
            collect(c, &sql, args, |r| {
                Ok(FootprintDay {
                    day: Timestamp::from_micros(r.get(0).map_err(unavailable)?),
                    metric: r.get(1).map_err(unavailable)?,
                    unit: r.get(2).map_err(unavailable)?,
                    total: r.get(3).map_err(unavailable)?,
                    count: r.get::<_, i64>(4).map_err(unavailable)?.max(0) as u64,
                })
            })
        })
        .await
    }

    async fn last_cron_slot(&self, blueprint_id: &str) -> StoreResult<Option<Timestamp>> {
        let id = blueprint_id.to_string();
        self.read(move |c| {
            let v: Option<i64> = c
                .query_row(
                    "SELECT MAX(slot) FROM cron_fires WHERE blueprint_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            Ok(v.map(Timestamp::from_micros))
        })
        .await
    }

    async fn claim(&self, owner: &str, limit: usize, lease_ms: u64) -> StoreResult<Claimed> {
        let owner = owner.to_string();
        self.write(move |c| {
            let now = now_us();
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let picked: Vec<(String, bool)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT run_id, owner IS NOT NULL FROM run_queue WHERE owner IS NULL AND due_at <= ?1 \
                         UNION ALL SELECT run_id, 1 FROM run_queue WHERE owner IS NOT NULL AND lease_until < ?1 \
                         LIMIT ?2",
                    )
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![now, limit.max(1) as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .map_err(unavailable)?;
                rows.collect::<Result<_, _>>().map_err(unavailable)?
            };
            let mut runs = Vec::with_capacity(picked.len());
            for (id, expired) in picked {
                let claims: i64 = tx
                    .query_row(
                        "UPDATE run_queue SET owner = ?2, lease_until = ?3, claims = claims + 1 \
                         WHERE run_id = ?1 RETURNING claims",
                        params![id, owner, lease_until(now, lease_ms)],
                        |r| r.get(0),
                    )
                    .map_err(unavailable)?;
                runs.push(Claim {
                    run_id: id
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("bad run id {id:?}")))?,
                    claims,
                    expired,
                });
            }
            let next_due: Option<i64> = tx
                .query_row(
                    "SELECT MIN(t) FROM (SELECT MIN(due_at) AS t FROM run_queue WHERE owner IS NULL \
                     UNION ALL SELECT MIN(lease_until) FROM run_queue WHERE owner IS NOT NULL)",
                    [],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(Claimed {
                runs,
                next_due: next_due.map(Timestamp::from_micros),
            })
        })
        .await
    }

    async fn renew_leases(&self, owner: &str, lease_ms: u64) -> StoreResult<Vec<RunId>> {
        let owner = owner.to_string();
        self.write(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "UPDATE run_queue SET lease_until = ?2 WHERE owner = ?1 RETURNING run_id",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![owner, lease_until(now_us(), lease_ms)], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for r in rows {
                let s = r.map_err(unavailable)?;
                out.push(
                    s.parse()
                        .map_err(|_| StoreError::Corrupt(format!("bad run id {s:?}")))?,
                );
            }
            Ok(out)
        })
        .await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.read(|c| {
            let now = now_us();
            c.query_row(
                "SELECT COUNT(*), \
                 COALESCE(SUM(owner IS NULL AND due_at <= ?1), 0), \
                 COALESCE(SUM(owner IS NOT NULL AND lease_until >= ?1), 0), \
                 COALESCE(SUM(owner IS NOT NULL AND lease_until < ?1), 0), \
                 COUNT(DISTINCT owner) FROM run_queue",
                [now],
                |r| {
                    Ok(QueueStats {
                        queued: r.get(0)?,
                        due: r.get(1)?,
                        held: r.get(2)?,
                        expired: r.get(3)?,
                        owners: r.get(4)?,
                    })
                },
            )
            .map_err(unavailable)
        })
        .await
    }

    async fn outbox_pending(&self, limit_n: usize) -> StoreResult<Vec<OutboxRange>> {
        self.read(move |c| {
            collect(
                c,
                "SELECT id, first_seq, last_seq, created_at FROM outbox WHERE published_at IS NULL \
                 ORDER BY id LIMIT ?1",
                vec![(limit_n.clamp(1, 10_000) as i64).into()],
                |r| {
                    Ok(OutboxRange {
                        id: r.get(0).map_err(unavailable)?,
                        first_seq: r.get(1).map_err(unavailable)?,
                        last_seq: r.get(2).map_err(unavailable)?,
                        created_at: Timestamp::from_micros(r.get(3).map_err(unavailable)?),
                    })
                },
            )
        })
        .await
    }

    async fn mark_published(&self, ids: &[i64], at: Timestamp) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        self.write(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            for id in ids {
                tx.prepare_cached("UPDATE outbox SET published_at = ?2 WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![id, at.as_micros()]))
                    .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn outbox_lag(&self) -> StoreResult<OutboxLag> {
        self.read(|c| {
            let (rows, events, oldest): (i64, Option<i64>, Option<i64>) = c
                .query_row(
                    "SELECT COUNT(*), SUM(last_seq - first_seq + 1), MIN(created_at) FROM outbox \
                     WHERE published_at IS NULL",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(unavailable)?;
            let published: Option<i64> = c
                .query_row(
                    "SELECT MAX(last_seq) FROM outbox WHERE published_at IS NOT NULL",
                    [],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            Ok(OutboxLag {
                pending_rows: rows,
                pending_events: events.unwrap_or(0),
                oldest_pending_at: oldest.map(Timestamp::from_micros),
                published_seq: published,
            })
        })
        .await
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Signal> {
        self.signals.subscribe()
    }

    async fn lock_singleton(&self, name: &str) -> StoreResult<SingletonGuard> {
        // One process owns an embedded database: an in-process lock is enough.
        let m = {
            let mut map = self
                .singletons
                .lock()
                .map_err(|_| StoreError::Unavailable("lock poisoned".into()))?;
            map.entry(name.to_string()).or_default().clone()
        };
        Ok(SingletonGuard::new(
            Box::new(m.lock_owned().await),
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        ))
    }

    async fn prune(
        &self,
        cutoff: Timestamp,
        keep_unpublished: bool,
        signer: &dyn CheckpointSigner,
        now: Timestamp,
    ) -> StoreResult<PruneReport> {
        let c = cutoff.as_micros();
        let target = self
            .read(move |conn| prune_target(conn, c, keep_unpublished))
            .await?;
        let cp = target.map(|(seq, hash)| Checkpoint {
            signature: signer.sign(&Checkpoint::signed_bytes(seq, &hash, now)),
            public_key: signer.public_key(),
            seq,
            hash,
            created_at: now,
        });
        self.write(move |conn| prune_apply(conn, c, cp)).await
    }

    async fn checkpoint(&self) -> StoreResult<Option<Checkpoint>> {
        self.read(|c| {
            c.query_row(
                "SELECT seq, hash, created_at, public_key, signature FROM chain_checkpoints \
                 ORDER BY seq DESC LIMIT 1",
                [],
                |r| {
                    Ok(Checkpoint {
                        seq: r.get(0)?,
                        hash: r.get(1)?,
                        created_at: Timestamp::from_micros(r.get(2)?),
                        public_key: r.get(3)?,
                        signature: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn schema_version(&self) -> StoreResult<(i64, i64)> {
        self.read(|c| {
            let v: i64 = c
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(unavailable)?;
            Ok((v, schema::MIGRATIONS.len() as i64))
        })
        .await
    }

    async fn secret_put(&self, row: crate::secrets::SecretVersionRow) -> StoreResult<()> {
        self.write(move |c| secrets::put(c, row)).await
    }

    async fn secret_get(
        &self,
        path: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<crate::secrets::SecretVersionRow>> {
        let path = path.to_string();
        self.read(move |c| secrets::get(c, &path, version)).await
    }

    async fn secret_list(&self, prefix: &str) -> StoreResult<Vec<crate::secrets::SecretMetaRow>> {
        let prefix = prefix.to_string();
        self.read(move |c| secrets::list(c, &prefix)).await
    }

    async fn secret_versions(
        &self,
        path: &str,
    ) -> StoreResult<Vec<crate::secrets::SecretVersionInfo>> {
        let path = path.to_string();
        self.read(move |c| secrets::versions(c, &path)).await
    }

    async fn secret_delete(&self, path: &str) -> StoreResult<u64> {
        let path = path.to_string();
        self.write(move |c| secrets::delete(c, &path)).await
    }

    async fn secret_wrapped_keys(&self) -> StoreResult<Vec<crate::secrets::WrappedKeyRow>> {
        self.read(secrets::wrapped_keys).await
    }

    async fn secret_master(&self) -> StoreResult<Option<crate::secrets::MasterKeyRow>> {
        self.read(secrets::master).await
    }

    async fn secret_master_init(&self, row: crate::secrets::MasterKeyRow) -> StoreResult<()> {
        self.write(move |c| secrets::master_init(c, row)).await
    }

    async fn secret_rotate(
        &self,
        old_key_id: &str,
        new: crate::secrets::MasterKeyRow,
        rewrapped: Vec<crate::secrets::WrappedKeyRow>,
    ) -> StoreResult<()> {
        let old = old_key_id.to_string();
        self.write(move |c| secrets::rotate(c, &old, new, rewrapped))
            .await
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            reads: self.counters.reads.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
            events: self.counters.events.load(Ordering::Relaxed),
        }
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}
