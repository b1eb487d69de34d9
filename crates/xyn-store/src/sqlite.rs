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

pub(crate) mod rows;
mod schema;
mod secrets;

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
    ArtifactQuery, Checkpoint, CheckpointSigner, Claim, Claimed, DAY_MICROS, DraftWrite,
    EventQuery, FootprintDay, FootprintQuery, FootprintRollupQuery, LoadedRun, OutboxLag,
    OutboxRange, Page, PruneReport, QueueStats, QueueWrite, RunQuery, RunWrite, Signal,
    SingletonGuard, StepWrite, Store, StoreError, StoreResult, StoreStats, WriteBatch,
};
use rows::*;

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

fn migrate(conn: &Connection) -> StoreResult<()> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    let target = schema::MIGRATIONS.len() as i64;
    if current > target {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {current}, newer than this xyn ({target}); upgrade xyn"
        )));
    }
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
        let v = i as i64 + 1;
        conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {v}; COMMIT;"))
            .map_err(|e| StoreError::Unavailable(format!("migration {v} failed: {e}")))?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Head {
    seq: i64,
    hash: [u8; 32],
}

pub(crate) fn hash_bytes(h: &str) -> StoreResult<[u8; 32]> {
    hex::decode(h)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("bad chain hash {h:?}")))
}

fn load_head(conn: &Connection) -> StoreResult<Head> {
    let row: Option<(i64, String)> = conn
        .query_row("SELECT seq, hash FROM chain_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(unavailable)?;
    match row {
        None => Ok(Head {
            seq: 0,
            hash: GENESIS_HASH,
        }),
        Some((seq, hex_hash)) => {
            let bytes = hex::decode(&hex_hash)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| StoreError::Corrupt("chain head hash".into()))?;
            Ok(Head { seq, hash: bytes })
        }
    }
}

/// Copies WAL frames into the database when the writer asks (every few commits), without
/// blocking the writer (PASSIVE mode). Sleeps otherwise.
fn checkpoint_loop(conn: Connection, rx: mpsc::Receiver<()>) {
    while rx.recv().is_ok() {
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
            tracing::warn!(error = %e, "background checkpoint failed");
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Cmd>,
    mut head: Head,
    c: Arc<Counters>,
    checkpoint: mpsc::SyncSender<()>,
    signals: tokio::sync::broadcast::Sender<Signal>,
) {
    let mut since_checkpoint = 0u64;
    while let Ok(first) = rx.recv() {
        let mut group = Vec::new();
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Exec(f) => {
                    // Runs alone, between groups; it reloads nothing the writer caches but
                    // the chain head (retention leaves the head as it is).
                    f(&mut conn);
                }
                commit => group.push(commit),
            }
            if group.len() >= MAX_GROUP {
                break;
            }
            next = rx.try_recv().ok();
        }
        if group.is_empty() {
            continue;
        }
        let committed_head = head;
        let mut flags = SignalFlags::default();
        let results = commit_group(&mut conn, &mut group, &mut head, &mut flags);
        let results = match results {
            Ok(r) => {
                c.commits.fetch_add(1, Ordering::Relaxed);
                since_checkpoint += 1;
                if since_checkpoint >= CHECKPOINT_EVERY {
                    since_checkpoint = 0;
                    // Coalesces: a checkpoint already asked for covers this one.
                    let _ = checkpoint.try_send(());
                }
                c.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
                let n: usize = r.iter().map(|x| x.as_ref().map_or(0, Vec::len)).sum();
                c.events.fetch_add(n as u64, Ordering::Relaxed);
                flags.send(&signals);
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "sqlite commit failed; the group is refused");
                head = load_head(&conn).unwrap_or(committed_head);
                group.iter().map(|_| Err(unavailable(&e))).collect()
            }
        };
        for (cmd, res) in group.into_iter().zip(results) {
            if let Cmd::Commit(_, reply) = cmd {
                let _ = reply.send(res);
            }
        }
    }
}

/// What a committed group should wake up.
#[derive(Default)]
struct SignalFlags {
    outbox: bool,
    work: bool,
    catalog: bool,
    cancel: Vec<RunId>,
}

impl SignalFlags {
    fn note(&mut self, b: &WriteBatch) {
        self.catalog |= !b.blueprint_versions.is_empty();
        for q in &b.queue {
            match q {
                QueueWrite::Enqueue { owner: None, .. }
                | QueueWrite::Park { .. }
                | QueueWrite::Wake { .. } => self.work = true,
                QueueWrite::Cancel { run_id } => self.cancel.push(*run_id),
                _ => {}
            }
        }
    }

    fn send(self, tx: &tokio::sync::broadcast::Sender<Signal>) {
        // No receiver is fine: nobody listens on an embedded node without a dispatcher.
        if self.outbox {
            let _ = tx.send(Signal::Outbox);
        }
        if self.work {
            let _ = tx.send(Signal::Work);
        }
        if self.catalog {
            let _ = tx.send(Signal::Catalog);
        }
        for r in self.cancel {
            let _ = tx.send(Signal::Cancel(r));
        }
    }
}

fn commit_group(
    conn: &mut Connection,
    group: &mut [Cmd],
    head: &mut Head,
    flags: &mut SignalFlags,
) -> Result<Vec<StoreResult<Vec<StoredEvent>>>, rusqlite::Error> {
    let start_head = *head;
    let now = now_us();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for cmd in group.iter_mut() {
        let Cmd::Commit(batch, _) = cmd else {
            results.push(Ok(vec![]));
            continue;
        };
        let before = *head;
        tx.execute_batch("SAVEPOINT b")?;
        match apply(&tx, batch, head, now) {
            Ok(events) => {
                tx.execute_batch("RELEASE b")?;
                flags.note(batch);
                results.push(Ok(events));
            }
            Err(e) => {
                tx.execute_batch("ROLLBACK TO b; RELEASE b")?;
                *head = before;
                results.push(Err(e));
            }
        }
    }
    if head.seq != start_head.seq {
        flags.outbox = true;
        tx.prepare_cached(
            "INSERT INTO outbox (first_seq, last_seq, created_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![start_head.seq + 1, head.seq, now])?;
        tx.prepare_cached(
            "INSERT INTO chain_head (id, seq, hash) VALUES (1, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )?
        .execute(params![head.seq, hex::encode(head.hash)])?;
    }
    match tx.commit() {
        Ok(()) => Ok(results),
        Err(e) => {
            *head = start_head;
            Err(e)
        }
    }
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        return StoreError::Conflict(e.to_string());
    }
    StoreError::Unavailable(e.to_string())
}

/// A precondition: the row's stored status is one of `allowed`.
fn expect_status(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    id: &str,
    what: &str,
    allowed: &[&str],
) -> StoreResult<()> {
    let cur: Option<String> = tx
        .prepare_cached(select)
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(sql_err)?;
    match cur {
        None => Err(StoreError::Conflict(format!("{what} does not exist"))),
        Some(s) if !allowed.contains(&s.as_str()) => Err(StoreError::Conflict(format!(
            "{what} is {s}, not {}",
            allowed.join(" or ")
        ))),
        Some(_) => Ok(()),
    }
}

fn apply(
    tx: &rusqlite::Transaction<'_>,
    b: &WriteBatch,
    head: &mut Head,
    now: i64,
) -> StoreResult<Vec<StoredEvent>> {
    apply_queue(tx, &b.queue, now)?;
    for f in &b.cron_fires {
        tx.prepare_cached(
            "INSERT INTO cron_fires (blueprint_id, slot, fired_at) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| {
            s.execute(params![
                f.blueprint_id,
                f.slot.as_micros(),
                f.fired_at.as_micros()
            ])
        })
        .map_err(|e| match sql_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "cron slot {} of {} already fired",
                f.slot, f.blueprint_id
            )),
            other => other,
        })?;
    }
    for w in &b.runs {
        match w {
            RunWrite::Insert(r) => {
                tx.prepare_cached(&format!(
                    "INSERT INTO runs ({RUN_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)"
                ))
                .and_then(|mut s| s.execute(params_from_iter(run_params(r))))
                .map_err(sql_err)?;
            }
            RunWrite::Update { run, expect } => {
                if let Some(allowed) = expect {
                    let allowed: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
                    expect_status(
                        tx,
                        "SELECT status FROM runs WHERE run_id = ?1",
                        &run.run_id.to_string(),
                        &format!("run {}", run.run_id),
                        &allowed,
                    )?;
                }
                let n = tx
                    .prepare_cached(
                        "UPDATE runs SET name=?2, blueprint_id=?3, blueprint_version=?4, status=?5, created_at=?6, \
                         started_at=?7, completed_at=?8, actor=?9, correlation_id=?10, env_id=?11, trigger_event_id=?12, \
                         inputs=?13, outputs=?14, error=?15, deadline_at=?16, priority=?17, step_executions=?18, \
                         revision=?19 WHERE run_id=?1 AND revision=?19 - 1",
                    )
                    .and_then(|mut s| s.execute(params_from_iter(run_params(run))))
                    .map_err(sql_err)?;
                if n != 1 {
                    return Err(StoreError::Conflict(format!(
                        "run {} changed meanwhile (expected revision {})",
                        run.run_id,
                        run.revision - 1
                    )));
                }
            }
        }
    }
    for w in &b.steps {
        match w {
            StepWrite::Insert(s) => {
                tx.prepare_cached(&format!(
                    "INSERT INTO steps ({STEP_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"
                ))
                .and_then(|mut st| st.execute(params_from_iter(step_params(s))))
                .map_err(sql_err)?;
            }
            StepWrite::Update { step, expect } => {
                if let Some(allowed) = expect {
                    let allowed: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
                    expect_status(
                        tx,
                        "SELECT status FROM steps WHERE step_id = ?1",
                        &step.step_id.to_string(),
                        &format!("step '{}'", step.name),
                        &allowed,
                    )?;
                }
                let n = tx
                    .prepare_cached(
                        "UPDATE steps SET run_id=?2, name=?3, idx=?4, kind=?5, status=?6, attempt=?7, started_at=?8, \
                         completed_at=?9, inputs=?10, outputs=?11, error=?12, next_attempt_at=?13, decided_by=?14, \
                         decision_comment=?15, logs_artifact_id=?16 WHERE step_id=?1",
                    )
                    .and_then(|mut s| s.execute(params_from_iter(step_params(step))))
                    .map_err(sql_err)?;
                if n != 1 {
                    return Err(StoreError::Conflict(format!(
                        "step {} does not exist",
                        step.step_id
                    )));
                }
            }
        }
    }
    for a in &b.artifacts {
        tx.prepare_cached(&format!(
            "INSERT INTO artifacts ({ARTIFACT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
        ))
        .and_then(|mut s| s.execute(params_from_iter(artifact_params(a))))
        .map_err(sql_err)?;
    }
    for f in &b.footprints {
        tx.prepare_cached(&format!(
            "INSERT INTO footprints ({FOOTPRINT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"
        ))
        .and_then(|mut s| s.execute(params_from_iter(footprint_params(f))))
        .map_err(sql_err)?;
    }
    for v in &b.blueprint_versions {
        tx.prepare_cached(&format!(
            "INSERT INTO blueprint_versions ({BLUEPRINT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)"
        ))
        .and_then(|mut s| s.execute(params_from_iter(blueprint_params(v))))
        .map_err(|e| match sql_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "blueprint {} version {} already exists",
                v.blueprint_id, v.version
            )),
            other => other,
        })?;
    }
    for w in &b.drafts {
        match w {
            DraftWrite::Insert(d) => {
                tx.prepare_cached(&format!(
                    "INSERT INTO drafts ({DRAFT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)"
                ))
                .and_then(|mut s| s.execute(params_from_iter(draft_params(d))))
                .map_err(sql_err)?;
            }
            DraftWrite::Update {
                draft,
                expect_revision,
            } => {
                if let Some(rev) = expect_revision {
                    let cur: Option<i64> = tx
                        .prepare_cached("SELECT revision FROM drafts WHERE draft_id = ?1")
                        .and_then(|mut s| {
                            s.query_row([draft.draft_id.to_string()], |r| r.get(0))
                                .optional()
                        })
                        .map_err(sql_err)?;
                    if cur != Some(*rev) {
                        return Err(StoreError::Conflict(format!(
                            "draft {} changed meanwhile (revision {:?}, expected {rev})",
                            draft.draft_id, cur
                        )));
                    }
                }
                let n = tx
                    .prepare_cached(
                        "UPDATE drafts SET name=?2, kind=?3, status=?4, revision=?5, trigger_event_type=?6, definition=?7, \
                         definition_artifact_id=?8, notes=?9, source_run_id=?10, validation=?11, promoted_version=?12, \
                         created_at=?13, updated_at=?14 WHERE draft_id=?1",
                    )
                    .and_then(|mut s| s.execute(params_from_iter(draft_params(draft))))
                    .map_err(sql_err)?;
                if n != 1 {
                    return Err(StoreError::Conflict(format!(
                        "draft {} does not exist",
                        draft.draft_id
                    )));
                }
            }
        }
    }
    let mut stored = Vec::with_capacity(b.events.len());
    for e in &b.events {
        let seq = head.seq + 1;
        let (hash, data_text) = e.chain_hash_and_data(&head.hash, seq);
        let hex_hash = hex::encode(hash);
        tx.prepare_cached(INSERT_EVENT)
            .and_then(|mut s| {
                s.execute(params_from_iter(event_params(seq, e, data_text, &hex_hash)))
            })
            .map_err(sql_err)?;
        head.seq = seq;
        head.hash = hash;
        stored.push(StoredEvent {
            seq,
            hash: hex_hash,
            event: e.clone(),
        });
    }
    Ok(stored)
}

fn lease_lost(run_id: RunId, owner: &str) -> StoreError {
    StoreError::LeaseLost(format!("{owner} no longer holds run {run_id}"))
}

fn lease_until(now: i64, lease_ms: u64) -> i64 {
    now.saturating_add((lease_ms as i64).saturating_mul(1000))
}

fn apply_queue(tx: &rusqlite::Transaction<'_>, writes: &[QueueWrite], now: i64) -> StoreResult<()> {
    for w in writes {
        match w {
            QueueWrite::Enqueue {
                run_id,
                due_at,
                owner,
                lease_ms,
            } => {
                let until = owner.as_ref().map(|_| lease_until(now, *lease_ms));
                tx.prepare_cached(
                    "INSERT INTO run_queue (run_id, due_at, owner, lease_until, claims, enqueued_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        run_id.to_string(),
                        due_at.map(Timestamp::as_micros),
                        owner,
                        until,
                        i64::from(owner.is_some()),
                        now
                    ])
                })
                .map_err(sql_err)?;
            }
            QueueWrite::Hold {
                run_id,
                owner,
                lease_ms,
            } => {
                let n = tx
                    .prepare_cached(
                        "UPDATE run_queue SET lease_until = ?3 WHERE run_id = ?1 AND owner = ?2",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            run_id.to_string(),
                            owner,
                            lease_until(now, *lease_ms)
                        ])
                    })
                    .map_err(sql_err)?;
                if n != 1 {
                    return Err(lease_lost(*run_id, owner));
                }
            }
            QueueWrite::Park {
                run_id,
                owner,
                due_at,
            } => {
                let n = tx
                    .prepare_cached(
                        "UPDATE run_queue SET owner = NULL, lease_until = NULL, due_at = ?3 \
                         WHERE run_id = ?1 AND owner = ?2",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            run_id.to_string(),
                            owner,
                            due_at.map(Timestamp::as_micros)
                        ])
                    })
                    .map_err(sql_err)?;
                if n != 1 {
                    return Err(lease_lost(*run_id, owner));
                }
            }
            QueueWrite::Finish { run_id } => {
                tx.prepare_cached("DELETE FROM run_queue WHERE run_id = ?1")
                    .and_then(|mut s| s.execute([run_id.to_string()]))
                    .map_err(sql_err)?;
            }
            QueueWrite::Wake { run_id, at } => {
                tx.prepare_cached(
                    "UPDATE run_queue SET due_at = CASE WHEN due_at IS NULL OR due_at > ?2 \
                     THEN ?2 ELSE due_at END WHERE run_id = ?1 AND owner IS NULL",
                )
                .and_then(|mut s| s.execute(params![run_id.to_string(), at.as_micros()]))
                .map_err(sql_err)?;
            }
            QueueWrite::Cancel { .. } => {}
        }
    }
    Ok(())
}

/// Which prefix of the log a retention pass removes: the last event to remove and its hash.
fn prune_target(
    c: &Connection,
    cutoff: i64,
    keep_unpublished: bool,
) -> StoreResult<Option<(i64, String)>> {
    let first_keep: Option<i64> = c
        .query_row(
            "SELECT seq FROM events WHERE occurred_at >= ?1 ORDER BY seq LIMIT 1",
            [cutoff],
            |r| r.get(0),
        )
        .optional()
        .map_err(unavailable)?;
    let max_seq: Option<i64> = c
        .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
        .map_err(unavailable)?;
    let mut last = match (first_keep, max_seq) {
        (Some(k), _) => k - 1,
        (None, Some(m)) => m,
        (None, None) => return Ok(None),
    };
    if keep_unpublished {
        let unpublished: Option<i64> = c
            .query_row(
                "SELECT MIN(first_seq) FROM outbox WHERE published_at IS NULL",
                [],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        if let Some(u) = unpublished {
            last = last.min(u - 1);
        }
    }
    c.query_row("SELECT hash FROM events WHERE seq = ?1", [last], |r| {
        r.get(0)
    })
    .optional()
    .map_err(unavailable)
    .map(|h| h.map(|h| (last, h)))
}

/// Removes the log up to the checkpoint's seq (if its hash still matches), writes the
/// checkpoint, and rolls up footprints older than `cutoff`.
fn prune_apply(
    conn: &mut Connection,
    cutoff: i64,
    cp: Option<Checkpoint>,
) -> StoreResult<PruneReport> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let mut report = PruneReport::default();
    if let Some(cp) = cp {
        let hash: Option<String> = tx
            .query_row("SELECT hash FROM events WHERE seq = ?1", [cp.seq], |r| {
                r.get(0)
            })
            .optional()
            .map_err(unavailable)?;
        if hash.as_deref() != Some(cp.hash.as_str()) {
            return Err(StoreError::Conflict(format!(
                "event seq {} changed while pruning",
                cp.seq
            )));
        }
        report.events_removed = tx
            .execute("DELETE FROM events WHERE seq <= ?1", [cp.seq])
            .map_err(unavailable)? as i64;
        report.outbox_rows_removed = tx
            .execute("DELETE FROM outbox WHERE last_seq <= ?1", [cp.seq])
            .map_err(unavailable)? as i64;
        tx.execute(
            "INSERT INTO chain_checkpoints (seq, hash, created_at, public_key, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![cp.seq, cp.hash, cp.created_at.as_micros(), cp.public_key, cp.signature],
        )
        .map_err(unavailable)?;
        report.checkpoint = Some(cp);
    }
    report.rollup_rows_written = tx
        .execute(
            "INSERT INTO footprint_rollups (day, metric, source_kind, source_ref, unit, class, quantity, samples) \
             SELECT (occurred_at / 86400000000) * 86400000000 AS day, metric, source_kind, source_ref, unit, class, \
                    SUM(quantity), COUNT(*) FROM footprints WHERE occurred_at < ?1 \
             GROUP BY day, metric, source_kind, source_ref, unit, class \
             ON CONFLICT (day, metric, source_kind, source_ref, unit, class) DO UPDATE SET \
                quantity = quantity + excluded.quantity, samples = samples + excluded.samples",
            [cutoff],
        )
        .map_err(unavailable)? as i64;
    report.footprints_rolled_up = tx
        .execute("DELETE FROM footprints WHERE occurred_at < ?1", [cutoff])
        .map_err(unavailable)? as i64;
    tx.commit().map_err(unavailable)?;
    Ok(report)
}

fn limit(n: usize) -> i64 {
    n.clamp(1, 1000) as i64
}

/// Splits a page fetched with one extra row into items and the next key.
fn paginate<T>(mut rows: Vec<(i64, T)>, lim: i64) -> Page<T> {
    let next = if rows.len() as i64 > lim {
        rows.truncate(lim as usize);
        rows.last().map(|(k, _)| *k)
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(|(_, t)| t).collect(),
        next,
    }
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    args: Vec<rusqlite::types::Value>,
    f: impl Fn(&rusqlite::Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(unavailable)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(unavailable)? {
        out.push(f(r)?);
    }
    Ok(out)
}

/// SQL for an id filter on `col`: the whole id, or a range of the short-id index
/// (`substr(col, 29)`, the last eight digits).
fn id_filter(col: &str, p: &IdPattern, args: &mut Vec<rusqlite::types::Value>) -> String {
    match p {
        IdPattern::Exact(u) => {
            args.push(u.hyphenated().to_string().into());
            format!("{col} = ?{}", args.len())
        }
        IdPattern::Tail(t) => {
            let (from, to) = IdPattern::range(t);
            args.push(from.into());
            args.push(to.into());
            let n = args.len();
            format!(
                "substr({col}, 29) >= ?{} AND substr({col}, 29) < ?{n}",
                n - 1
            )
        }
    }
}

/// SQL for an event-name filter: exact, `prefix.*` (one more segment) or `prefix.**`.
fn name_filter(name: &str, args: &mut Vec<rusqlite::types::Value>) -> String {
    use rusqlite::types::Value as V;
    if let Some(prefix) = name.strip_suffix(".**") {
        args.push(V::Text(format!("{prefix}.")));
        args.push(V::Text(format!("{prefix}/")));
        let n = args.len();
        format!("event_name >= ?{} AND event_name < ?{n}", n - 1)
    } else if let Some(prefix) = name.strip_suffix(".*") {
        args.push(V::Text(format!("{prefix}.")));
        args.push(V::Text(format!("{prefix}/")));
        let n = args.len();
        format!(
            "event_name >= ?{} AND event_name < ?{n} AND instr(substr(event_name, {}), '.') = 0",
            n - 1,
            prefix.len() + 2
        )
    } else {
        args.push(V::Text(name.to_string()));
        format!("event_name = ?{}", args.len())
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
            if let Some(v) = &q.input_value {
                args.push(crate::input_value_key(v).into());
                conds.push(format!(
                    "id IN (SELECT run_pk FROM run_input_values WHERE value = ?{})",
                    args.len()
                ));
            }
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
                conds.push(format!("id < ?{}", args.len()));
            }
            let lim = limit(q.limit);
            let wh = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            let sql = format!(
                "SELECT id, {RUN_COLS} FROM runs {wh} ORDER BY id DESC LIMIT {}",
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
                conds.push(format!("occurred_at >= ?{}", args.len()));
            }
            if let Some(u) = q.until {
                args.push(u.as_micros().into());
                conds.push(format!("occurred_at < ?{}", args.len()));
            }
            let wh = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            // Floor division also for instants before 1970.
            let day = format!(
                "((occurred_at - ((occurred_at % {DAY_MICROS}) + {DAY_MICROS}) % {DAY_MICROS}))"
            );
            let sql = format!(
                "SELECT {day} AS d, metric, MIN(unit), SUM(quantity), COUNT(*) FROM footprints {wh} \
                 GROUP BY d, metric ORDER BY d, metric"
            );
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
