//! The PostgreSQL adapter: one database shared by many `xyn` processes.
//!
//! **Writes.** Each process has one writer task that commits in groups, like the SQLite
//! adapter: it takes every waiting batch and writes them all in one transaction with a few
//! set-based statements (`INSERT … SELECT FROM unnest(…)`, `UPDATE … FROM unnest(…) RETURNING`),
//! pipelined on one connection. Preconditions (run revisions, step statuses, lease owners,
//! cron slots, blueprint versions) are checked from what the statements return; a batch whose
//! precondition fails is answered with a conflict and the group is written again without it.
//! Only then does the transaction lock the chain head row (`SELECT … FOR UPDATE`), number and
//! hash the group's events, insert them with the outbox row and the `pg_notify` wake-ups, and
//! commit: two round trips per group, and the chain lock is held for the second one only.
//! Because every process appends under that row lock, the log stays one linear chain.
//!
//! **Reads** use a small pool of connections, each with its prepared statements.
//!
//! **Wake-ups.** One connection per process `LISTEN`s on `xyn_signals`; commits notify it of
//! appended events (`outbox`), runs that fell due (`work`), blueprint changes (`catalog`)
//! and cancellations. Nothing polls: an idle process sends no query at all.
//!
//! **Faults.** A lost connection fails the batches in flight with
//! [`StoreError::Unavailable`] (nothing is acknowledged that was not committed) and the next
//! use reconnects; the listener reconnects with a backoff and signals
//! [`Signal::Reconnected`] so that waiters look again.

mod rows;
mod schema;
mod secrets;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Row, Statement};
use xyn_core::event::{ChainReport, ChainVerifier, StoredEvent};
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft};
use xyn_core::run::{Run, Step};
use xyn_core::{ArtifactId, DraftId, EventId, IdPattern, RunId, Timestamp};

use crate::sqlite::rows::{
    ARTIFACT_COLS, BLUEPRINT_COLS, DRAFT_COLS, EVENT_COLS, FOOTPRINT_COLS, RUN_COLS, STEP_COLS,
    json_text, opt_json_text, ts,
};
use crate::{
    ArtifactQuery, Checkpoint, CheckpointSigner, Claim, Claimed, DraftWrite, EventQuery,
    FootprintQuery, LoadedRun, OutboxLag, OutboxRange, Page, PruneReport, QueueStats, QueueWrite,
    RunQuery, RunWrite, Signal, SingletonGuard, StepWrite, Store, StoreError, StoreResult,
    StoreStats, WriteBatch,
};

/// Most batches folded into one transaction.
const MAX_GROUP: usize = 512;
/// The notification channel.
const CHANNEL: &str = "xyn_signals";

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/dbname` (or the key=value form).
    pub url: String,
    /// A schema to use instead of the user's default (tests give each store its own).
    pub schema: Option<String>,
    /// Pooled connections for reads, claims and outbox updates.
    pub pool_size: usize,
    pub connect_timeout: Duration,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
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

/// The PostgreSQL store.
pub struct PgStore {
    target: String,
    schema: Option<String>,
    pool: Arc<Pool>,
    writer: mpsc::UnboundedSender<(Box<WriteBatch>, Reply)>,
    counters: Arc<Counters>,
    signals: broadcast::Sender<Signal>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `postgres://user@host:port/db`: the URL without its password, for messages.
pub fn describe_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => describe_config(&c),
        Err(_) => {
            // Not parseable: still never echo a password.
            match url.split_once('@') {
                Some((scheme_user, rest)) => {
                    let user = scheme_user.rsplit_once(':').map_or(scheme_user, |(u, _)| u);
                    let user = if user.ends_with('/') {
                        scheme_user
                    } else {
                        user
                    };
                    format!("{user}@{rest}")
                }
                None => url.to_string(),
            }
        }
    }
}

fn describe_config(c: &tokio_postgres::Config) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let user = c.get_user().unwrap_or("");
    let db = c.get_dbname().unwrap_or(user);
    if user.is_empty() {
        format!("postgres://{host}:{port}/{db}")
    } else {
        format!("postgres://{user}@{host}:{port}/{db}")
    }
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        use tokio_postgres::error::SqlState;
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            return StoreError::Conflict(db.message().to_string());
        }
        if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *code == SqlState::UNTRANSLATABLE_CHARACTER
        {
            // A NUL in a text value: the input is at fault (SQLite would keep it; both
            // stores answer alike because the edge refuses NUL in text first).
            return StoreError::Refused("a text value contains a NUL character".into());
        }
        return StoreError::Unavailable(format!("PostgreSQL refused a statement: {db}"));
    }
    if e.is_closed() {
        return StoreError::Unavailable(format!(
            "the connection to PostgreSQL was lost: {}",
            with_causes(&e)
        ));
    }
    StoreError::Unavailable(format!("PostgreSQL: {}", with_causes(&e)))
}

fn is_db_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some()
}

fn is_retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// An error with its causes (`error connecting to server: Connection refused …`).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let more = c.to_string();
        if !s.contains(&more) {
            s.push_str(": ");
            s.push_str(&more);
        }
        cur = c.source();
    }
    s
}

async fn connect(
    pc: &tokio_postgres::Config,
    target: &str,
) -> StoreResult<(Client, JoinHandle<()>)> {
    let (client, conn) = pc.connect(NoTls).await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL at {target}: {}",
            with_causes(&e)
        ))
    })?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok((client, task))
}

// ---------------------------------------------------------------------------------------------
// The connection pool.

struct PConn {
    client: Client,
    cache: HashMap<String, Statement>,
    task: JoinHandle<()>,
}

impl Drop for PConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Pool {
    pc: tokio_postgres::Config,
    target: String,
    idle: Mutex<Vec<PConn>>,
    sem: Semaphore,
}

struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<PConn>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Pool {
    async fn get(&self) -> StoreResult<Pooled<'_>> {
        let permit = self
            .sem
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let idle = loop {
            let c = self.idle.lock().ok().and_then(|mut v| v.pop());
            match c {
                Some(c) if c.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match idle {
            Some(c) => c,
            None => {
                let (client, task) = connect(&self.pc, &self.target).await?;
                PConn {
                    client,
                    cache: HashMap::new(),
                    task,
                }
            }
        };
        Ok(Pooled {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

impl Pooled<'_> {
    fn conn(&mut self) -> StoreResult<&mut PConn> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("connection already released".into()))
    }

    async fn stmt(&mut self, sql: &str) -> StoreResult<(Statement, &Client)> {
        let c = self.conn()?;
        if !c.cache.contains_key(sql) {
            let st = c.client.prepare(sql).await.map_err(pg_err)?;
            c.cache.insert(sql.to_string(), st);
        }
        let st = c
            .cache
            .get(sql)
            .cloned()
            .ok_or_else(|| StoreError::Unavailable("statement cache lost an entry".into()))?;
        Ok((st, &c.client))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && !c.client.is_closed()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(c);
        }
    }
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(p: &Params) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Opening and migrations.

impl PgStore {
    /// Connects, applies migrations (one process at a time, under an advisory lock) and starts
    /// the writer and the listener. Fails with a message naming the URL (without password).
    pub async fn open(config: PgConfig) -> StoreResult<Self> {
        let mut pc: tokio_postgres::Config = config.url.parse().map_err(|e| {
            StoreError::Unavailable(format!(
                "bad database URL {}: {e}",
                describe_url(&config.url)
            ))
        })?;
        pc.connect_timeout(config.connect_timeout);
        pc.application_name("xyn");
        let mut target = describe_config(&pc);
        let mut options = Vec::new();
        if let Some(s) = &config.schema {
            if !s
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(StoreError::Unavailable(format!(
                    "bad schema name {s:?} (lowercase letters, digits, _)"
                )));
            }
            let (c, task) = connect(&pc, &target).await?;
            c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .await
                .map_err(pg_err)?;
            task.abort();
            options.push(format!("-c search_path={s}"));
            target = format!("{target} (schema {s})");
        }
        pc.options(options.join(" "));
        // The pool's writes are soft state that the writer's durable, lease-checked commits
        // fence (claims, lease renewals, outbox marks): they need not wait for a WAL flush.
        let mut pool_pc = pc.clone();
        options.push("-c synchronous_commit=off".into());
        pool_pc.options(options.join(" "));
        {
            let (c, task) = connect(&pc, &target).await?;
            let res = migrate(&c).await;
            task.abort();
            res?;
        }
        let counters = Arc::new(Counters::default());
        let (signals, _) = broadcast::channel(1024);
        let (wtx, wrx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(writer_loop(
            pc.clone(),
            target.clone(),
            wrx,
            counters.clone(),
        ));
        let ready = Arc::new(tokio::sync::Notify::new());
        let listener = tokio::spawn(listener_loop(
            pc.clone(),
            target.clone(),
            signals.clone(),
            ready.clone(),
        ));
        // Listen before the first commit, so no wake-up is missed from the start.
        let _ = tokio::time::timeout(config.connect_timeout, ready.notified()).await;
        Ok(Self {
            pool: Arc::new(Pool {
                pc: pool_pc,
                target: target.clone(),
                idle: Mutex::new(Vec::new()),
                sem: Semaphore::new(config.pool_size.max(1)),
            }),
            target,
            schema: config.schema,
            writer: wtx,
            counters,
            signals,
            tasks: vec![writer, listener],
        })
    }

    /// The schema in use, when one was given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Runs one read statement (prepared once per connection). A connection found broken is
    /// replaced and the statement tried once more.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let mut tries = 0;
        loop {
            tries += 1;
            let mut c = self.pool.get().await?;
            let res = match c.stmt(sql).await {
                Ok((st, client)) => client.query(&st, params).await.map_err(pg_err),
                Err(e) => Err(e),
            };
            match res {
                Ok(rows) => return Ok(rows),
                Err(e) if tries < 2 && c.conn()?.client.is_closed() => {
                    tracing::debug!(error = %e, "stale PostgreSQL connection; reconnecting");
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn query_p(&self, sql: &str, p: Params) -> StoreResult<Vec<Row>> {
        self.query(sql, &refs(&p)).await
    }
}

async fn migrate(c: &Client) -> StoreResult<()> {
    let err = |e: tokio_postgres::Error| {
        StoreError::Unavailable(format!("cannot apply the database migrations: {e}"))
    };
    c.batch_execute(
        "SET client_min_messages = warning;
         SELECT pg_advisory_lock(hashtext('xyn_migrations:' || current_schema()));
         CREATE TABLE IF NOT EXISTS xyn_migrations (
             version BIGINT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(err)?;
    let res = async {
        let row = c
            .query_one("SELECT COALESCE(MAX(version), 0) FROM xyn_migrations", &[])
            .await
            .map_err(err)?;
        let current: i64 = row.try_get(0).map_err(err)?;
        let target = schema::MIGRATIONS.len() as i64;
        if current > target {
            return Err(StoreError::Unavailable(format!(
                "the database has schema version {current}, newer than this xyn ({target}); upgrade xyn"
            )));
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
            let v = i as i64 + 1;
            c.batch_execute(&format!(
                "BEGIN; {sql}; INSERT INTO xyn_migrations (version) VALUES ({v}); COMMIT;"
            ))
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration {v} failed: {e}")))?;
            tracing::info!(version = v, "database migration applied");
        }
        Ok(())
    }
    .await;
    let _ = c
        .batch_execute("SELECT pg_advisory_unlock(hashtext('xyn_migrations:' || current_schema()))")
        .await;
    res
}

// ---------------------------------------------------------------------------------------------
// The listener.

async fn listener_loop(
    pc: tokio_postgres::Config,
    target: String,
    signals: broadcast::Sender<Signal>,
    ready: Arc<tokio::sync::Notify>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        match pc.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (ntx, mut nrx) = mpsc::unbounded_channel();
                let pump = tokio::spawn(async move {
                    let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(m) = stream.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => {
                                if ntx.send(n.payload().to_string()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::debug!(error = %e, "listener connection ended");
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    tracing::warn!(error = %e, "cannot LISTEN; retrying");
                    pump.abort();
                } else {
                    backoff = Duration::from_millis(100);
                    if first {
                        first = false;
                        ready.notify_one();
                    } else {
                        tracing::info!(store = %target, "reconnected to PostgreSQL");
                        let _ = signals.send(Signal::Reconnected);
                    }
                    while let Some(p) = nrx.recv().await {
                        let s = match p.as_str() {
                            "outbox" => Signal::Outbox,
                            "work" => Signal::Work,
                            "catalog" => Signal::Catalog,
                            other => {
                                match other.strip_prefix("cancel:").and_then(|r| r.parse().ok()) {
                                    Some(id) => Signal::Cancel(id),
                                    None => continue,
                                }
                            }
                        };
                        let _ = signals.send(s);
                    }
                    pump.abort();
                    drop(client);
                    tracing::warn!(store = %target, "lost the PostgreSQL listener connection; reconnecting");
                }
            }
            Err(e) => {
                if first {
                    first = false;
                    ready.notify_one();
                }
                tracing::warn!(store = %target, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "cannot reach PostgreSQL");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------------
// The writer.

struct WConn {
    client: Client,
    st: WStmts,
    task: JoinHandle<()>,
}

impl Drop for WConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct WStmts {
    lock_head: Statement,
    events: Statement,
    head: Statement,
    outbox: Statement,
    notify: Statement,
    cron: Statement,
    blueprints: Statement,
    drafts_insert: Statement,
    draft_update: Statement,
    runs_insert: Statement,
    runs_update: Statement,
    steps_insert: Statement,
    steps_update: Statement,
    artifacts: Statement,
    footprints: Statement,
    q_enqueue: Statement,
    q_hold: Statement,
    q_park: Statement,
    q_finish: Statement,
    q_wake: Statement,
}

fn unnest(cols: &str, types: &[&str]) -> String {
    let args: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", i + 1))
        .collect();
    format!("unnest({}) AS u({cols})", args.join(", "))
}

const RUN_TYPES: [&str; 19] = [
    "text", "text", "text", "bigint", "text", "bigint", "bigint", "bigint", "text", "text", "text",
    "text", "text", "text", "text", "bigint", "bigint", "bigint", "bigint",
];
const STEP_TYPES: [&str; 16] = [
    "text", "text", "text", "bigint", "text", "text", "bigint", "bigint", "bigint", "text", "text",
    "text", "bigint", "text", "text", "text",
];

fn set_list(cols: &str, skip: usize) -> String {
    cols.split(',')
        .map(str::trim)
        .skip(skip)
        .map(|c| format!("{c} = u.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl WConn {
    async fn connect(pc: &tokio_postgres::Config, target: &str) -> StoreResult<Self> {
        let (client, task) = connect(pc, target).await?;
        let run_u = format!("{RUN_COLS}, expect");
        let mut run_ut = RUN_TYPES.to_vec();
        run_ut.push("text");
        let step_u = format!("{STEP_COLS}, expect");
        let mut step_ut = STEP_TYPES.to_vec();
        step_ut.push("text");
        let sqls: Vec<String> = vec![
            "SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE".into(),
            format!(
                "INSERT INTO events ({EVENT_COLS}) SELECT * FROM {}",
                unnest(
                    EVENT_COLS,
                    &[
                        "bigint", "text", "text", "bigint", "text", "text", "text", "text", "text",
                        "text", "text", "text", "text"
                    ]
                )
            ),
            "UPDATE chain_head SET seq = $1, hash = $2 WHERE id = 1".into(),
            "INSERT INTO outbox (first_seq, last_seq, created_at) VALUES ($1, $2, xyn_now_us())"
                .into(),
            format!("SELECT pg_notify('{CHANNEL}', p) FROM unnest($1::text[]) AS p"),
            format!(
                "INSERT INTO cron_fires (blueprint_id, slot, fired_at) SELECT * FROM {} \
                 ON CONFLICT DO NOTHING RETURNING blueprint_id, slot",
                unnest("blueprint_id, slot, fired_at", &["text", "bigint", "bigint"])
            ),
            format!(
                "INSERT INTO blueprint_versions ({BLUEPRINT_COLS}) SELECT * FROM {} \
                 ON CONFLICT DO NOTHING RETURNING blueprint_id, version",
                unnest(
                    BLUEPRINT_COLS,
                    &["text", "bigint", "text", "text", "text", "text", "bigint", "text", "text"]
                )
            ),
            format!(
                "INSERT INTO drafts ({DRAFT_COLS}) SELECT * FROM {}",
                unnest(
                    DRAFT_COLS,
                    &[
                        "text", "text", "text", "text", "bigint", "text", "text", "text", "text",
                        "text", "text", "bigint", "bigint", "bigint"
                    ]
                )
            ),
            "UPDATE drafts SET name=$2, kind=$3, status=$4, revision=$5, trigger_event_type=$6, definition=$7, \
             definition_artifact_id=$8, notes=$9, source_run_id=$10, validation=$11, promoted_version=$12, \
             created_at=$13, updated_at=$14 WHERE draft_id=$1 AND ($15::bigint IS NULL OR revision = $15)"
                .into(),
            format!(
                "INSERT INTO runs ({RUN_COLS}) SELECT * FROM {}",
                unnest(RUN_COLS, &RUN_TYPES)
            ),
            format!(
                "UPDATE runs r SET {} FROM {} WHERE r.run_id = u.run_id AND r.revision = u.revision - 1 \
                 AND (u.expect IS NULL OR r.status = ANY(string_to_array(u.expect, ','))) RETURNING r.run_id",
                set_list(RUN_COLS, 1),
                unnest(&run_u, &run_ut)
            ),
            format!(
                "INSERT INTO steps ({STEP_COLS}) SELECT * FROM {}",
                unnest(STEP_COLS, &STEP_TYPES)
            ),
            format!(
                "UPDATE steps s SET {} FROM {} WHERE s.step_id = u.step_id \
                 AND (u.expect IS NULL OR s.status = ANY(string_to_array(u.expect, ','))) RETURNING s.step_id",
                set_list(STEP_COLS, 1),
                unnest(&step_u, &step_ut)
            ),
            format!(
                "INSERT INTO artifacts ({ARTIFACT_COLS}) SELECT * FROM {}",
                unnest(
                    ARTIFACT_COLS,
                    &[
                        "text", "text", "text", "text", "bigint", "text", "bigint", "text", "text",
                        "text", "text"
                    ]
                )
            ),
            format!(
                "INSERT INTO footprints ({FOOTPRINT_COLS}) SELECT * FROM {}",
                unnest(
                    FOOTPRINT_COLS,
                    &[
                        "bigint", "text", "text", "text", "text", "text", "float8", "text", "text",
                        "text"
                    ]
                )
            ),
            format!(
                "INSERT INTO run_queue (run_id, due_at, owner, lease_until, claims, enqueued_at) \
                 SELECT u.run_id, u.due_at, u.owner, \
                   CASE WHEN u.owner IS NULL THEN NULL ELSE xyn_now_us() + u.lease_ms * 1000 END, \
                   CASE WHEN u.owner IS NULL THEN 0 ELSE 1 END, xyn_now_us() FROM {}",
                unnest(
                    "run_id, due_at, owner, lease_ms",
                    &["text", "bigint", "text", "bigint"]
                )
            ),
            format!(
                "UPDATE run_queue q SET lease_until = xyn_now_us() + u.lease_ms * 1000 FROM {} \
                 WHERE q.run_id = u.run_id AND q.owner = u.owner RETURNING q.run_id",
                unnest("run_id, owner, lease_ms", &["text", "text", "bigint"])
            ),
            format!(
                "UPDATE run_queue q SET owner = NULL, lease_until = NULL, due_at = u.due_at FROM {} \
                 WHERE q.run_id = u.run_id AND q.owner = u.owner RETURNING q.run_id",
                unnest("run_id, owner, due_at", &["text", "text", "bigint"])
            ),
            "DELETE FROM run_queue WHERE run_id = ANY($1::text[])".into(),
            format!(
                "UPDATE run_queue q SET due_at = LEAST(COALESCE(q.due_at, u.at), u.at) FROM {} \
                 WHERE q.run_id = u.run_id AND q.owner IS NULL",
                unnest("run_id, at", &["text", "bigint"])
            ),
        ];
        let prepared = futures_util::future::try_join_all(sqls.iter().map(|s| client.prepare(s)))
            .await
            .map_err(pg_err)?;
        let mut it = prepared.into_iter();
        let mut next = || {
            it.next()
                .ok_or_else(|| StoreError::Unavailable("statement missing".into()))
        };
        let st = WStmts {
            lock_head: next()?,
            events: next()?,
            head: next()?,
            outbox: next()?,
            notify: next()?,
            cron: next()?,
            blueprints: next()?,
            drafts_insert: next()?,
            draft_update: next()?,
            runs_insert: next()?,
            runs_update: next()?,
            steps_insert: next()?,
            steps_update: next()?,
            artifacts: next()?,
            footprints: next()?,
            q_enqueue: next()?,
            q_hold: next()?,
            q_park: next()?,
            q_finish: next()?,
            q_wake: next()?,
        };
        Ok(Self { client, st, task })
    }
}

async fn writer_loop(
    pc: tokio_postgres::Config,
    target: String,
    mut rx: mpsc::UnboundedReceiver<(Box<WriteBatch>, Reply)>,
    c: Arc<Counters>,
) {
    let mut conn: Option<WConn> = None;
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => group.push(cmd),
                Err(_) => break,
            }
        }
        if conn.as_ref().is_none_or(|w| w.client.is_closed()) {
            conn = None;
            match WConn::connect(&pc, &target).await {
                Ok(w) => conn = Some(w),
                Err(e) => {
                    tracing::error!(error = %e, "the store writer cannot connect; refusing the group");
                    for (_, reply) in group {
                        let _ = reply.send(Err(e.clone_unavailable()));
                    }
                    continue;
                }
            }
        }
        let Some(w) = conn.as_mut() else { continue };
        let batches: Vec<&WriteBatch> = group.iter().map(|(b, _)| b.as_ref()).collect();
        match commit_group(w, &batches).await {
            Ok((results, commits)) => {
                c.commits.fetch_add(commits, Ordering::Relaxed);
                c.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
                let n: usize = results.iter().map(|x| x.as_ref().map_or(0, Vec::len)).sum();
                c.events.fetch_add(n as u64, Ordering::Relaxed);
                for ((_, reply), res) in group.into_iter().zip(results) {
                    let _ = reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "PostgreSQL commit failed; the group is refused");
                if w.client.is_closed() {
                    conn = None;
                }
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Unavailable(format!(
                        "the store could not commit: {e}"
                    ))));
                }
            }
        }
    }
}

impl StoreError {
    fn clone_unavailable(&self) -> StoreError {
        StoreError::Unavailable(self.to_string())
    }
}

type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>>;

enum Outcome {
    Committed(Vec<Vec<StoredEvent>>),
    /// Rolled back: these batches (positions in the attempt) failed a precondition.
    Refused(Vec<(usize, StoreError)>),
    /// Rolled back by an error.
    Failed(tokio_postgres::Error),
}

/// Commits a group; returns each batch's result and the number of transactions committed.
async fn commit_group(
    w: &mut WConn,
    group: &[&WriteBatch],
) -> Result<(Vec<StoreResult<Vec<StoredEvent>>>, u64), tokio_postgres::Error> {
    let mut results: Vec<Option<StoreResult<Vec<StoredEvent>>>> =
        group.iter().map(|_| None).collect();
    let mut commits = 0;
    let mut alive: Vec<usize> = (0..group.len()).collect();
    let mut retries = 0;
    // Duplicate keys inside one statement would defeat the per-batch checks: such groups are
    // written one batch at a time.
    let mut one_by_one = has_duplicates(group);
    while !alive.is_empty() {
        if one_by_one && alive.len() > 1 {
            for &i in &alive {
                let res = match attempt(w, &[group[i]]).await {
                    Outcome::Committed(mut ev) => {
                        commits += 1;
                        Ok(ev.pop().unwrap_or_default())
                    }
                    Outcome::Refused(mut f) => Err(f
                        .pop()
                        .map_or_else(|| StoreError::Conflict("refused".into()), |(_, e)| e)),
                    Outcome::Failed(e) if is_db_error(&e) => Err(pg_err(e)),
                    Outcome::Failed(e) => return Err(e),
                };
                results[i] = Some(res);
            }
            break;
        }
        let batches: Vec<&WriteBatch> = alive.iter().map(|&i| group[i]).collect();
        match attempt(w, &batches).await {
            Outcome::Committed(events) => {
                commits += 1;
                for (&i, ev) in alive.iter().zip(events) {
                    results[i] = Some(Ok(ev));
                }
                break;
            }
            Outcome::Refused(failed) => {
                let mut drop_pos: HashSet<usize> = HashSet::new();
                for (pos, e) in failed {
                    results[alive[pos]] = Some(Err(e));
                    drop_pos.insert(pos);
                }
                alive = alive
                    .iter()
                    .enumerate()
                    .filter(|(p, _)| !drop_pos.contains(p))
                    .map(|(_, &i)| i)
                    .collect();
            }
            Outcome::Failed(e) if is_retryable(&e) && retries < 3 => {
                retries += 1;
                tracing::debug!(error = %e, "group commit retried");
            }
            Outcome::Failed(e) if is_db_error(&e) => {
                if alive.len() == 1 {
                    results[alive[0]] = Some(Err(pg_err(e)));
                    break;
                }
                one_by_one = true;
            }
            Outcome::Failed(e) => return Err(e),
        }
    }
    Ok((
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Unavailable("not attempted".into()))))
            .collect(),
        commits,
    ))
}

fn has_duplicates(group: &[&WriteBatch]) -> bool {
    let mut runs = HashSet::new();
    let mut steps = HashSet::new();
    let mut queue = HashSet::new();
    let mut keys = HashSet::new();
    for b in group {
        for r in &b.runs {
            let id = match r {
                RunWrite::Insert(r) => r.run_id,
                RunWrite::Update { run, .. } => run.run_id,
            };
            if !runs.insert(id) {
                return true;
            }
        }
        for s in &b.steps {
            let id = match s {
                StepWrite::Insert(s) => s.step_id,
                StepWrite::Update { step, .. } => step.step_id,
            };
            if !steps.insert(id) {
                return true;
            }
        }
        for q in &b.queue {
            let id = match q {
                QueueWrite::Enqueue { run_id, .. }
                | QueueWrite::Hold { run_id, .. }
                | QueueWrite::Park { run_id, .. }
                | QueueWrite::Finish { run_id }
                | QueueWrite::Wake { run_id, .. } => *run_id,
                QueueWrite::Cancel { .. } => continue,
            };
            if !queue.insert(id) {
                return true;
            }
        }
        for f in &b.cron_fires {
            if !keys.insert(format!("cron:{}:{}", f.blueprint_id, f.slot.as_micros())) {
                return true;
            }
        }
        for v in &b.blueprint_versions {
            if !keys.insert(format!("bp:{}:{}", v.blueprint_id, v.version)) {
                return true;
            }
        }
        for d in &b.drafts {
            let id = match d {
                DraftWrite::Insert(d) => d.draft_id,
                DraftWrite::Update { draft, .. } => draft.draft_id,
            };
            if !keys.insert(format!("draft:{id}")) {
                return true;
            }
        }
    }
    false
}

/// Column arrays for one table, and which batch each row came from.
#[derive(Default)]
struct RunCols {
    pos: Vec<usize>,
    run_id: Vec<String>,
    name: Vec<String>,
    blueprint_id: Vec<String>,
    blueprint_version: Vec<i64>,
    status: Vec<String>,
    created_at: Vec<i64>,
    started_at: Vec<Option<i64>>,
    completed_at: Vec<Option<i64>>,
    actor: Vec<String>,
    correlation_id: Vec<String>,
    env_id: Vec<String>,
    trigger_event_id: Vec<Option<String>>,
    inputs: Vec<String>,
    outputs: Vec<Option<String>>,
    error: Vec<Option<String>>,
    deadline_at: Vec<Option<i64>>,
    priority: Vec<i64>,
    step_executions: Vec<i64>,
    revision: Vec<i64>,
    expect: Vec<Option<String>>,
}

impl RunCols {
    fn push(&mut self, pos: usize, r: &Run, expect: Option<String>) {
        self.pos.push(pos);
        self.run_id.push(r.run_id.to_string());
        self.name.push(r.name.clone());
        self.blueprint_id.push(r.blueprint_id.clone());
        self.blueprint_version.push(r.blueprint_version);
        self.status.push(r.status.as_str().into());
        self.created_at.push(r.created_at.as_micros());
        self.started_at.push(ts(r.started_at));
        self.completed_at.push(ts(r.completed_at));
        self.actor.push(r.actor.clone());
        self.correlation_id.push(r.correlation_id.clone());
        self.env_id.push(r.env_id.clone());
        self.trigger_event_id
            .push(r.trigger_event_id.map(|e| e.to_string()));
        self.inputs.push(json_text(&r.inputs));
        self.outputs.push(opt_json_text(&r.outputs));
        self.error.push(opt_json_text(&r.error));
        self.deadline_at.push(ts(r.deadline_at));
        self.priority.push(r.priority);
        self.step_executions.push(r.step_executions as i64);
        self.revision.push(r.revision);
        self.expect.push(expect);
    }

    fn params(&self, with_expect: bool) -> Vec<&(dyn ToSql + Sync)> {
        let mut v: Vec<&(dyn ToSql + Sync)> = vec![
            &self.run_id,
            &self.name,
            &self.blueprint_id,
            &self.blueprint_version,
            &self.status,
            &self.created_at,
            &self.started_at,
            &self.completed_at,
            &self.actor,
            &self.correlation_id,
            &self.env_id,
            &self.trigger_event_id,
            &self.inputs,
            &self.outputs,
            &self.error,
            &self.deadline_at,
            &self.priority,
            &self.step_executions,
            &self.revision,
        ];
        if with_expect {
            v.push(&self.expect);
        }
        v
    }
}

#[derive(Default)]
struct StepCols {
    pos: Vec<usize>,
    names: Vec<String>,
    step_id: Vec<String>,
    run_id: Vec<String>,
    name: Vec<String>,
    idx: Vec<i64>,
    kind: Vec<String>,
    status: Vec<String>,
    attempt: Vec<i64>,
    started_at: Vec<Option<i64>>,
    completed_at: Vec<Option<i64>>,
    inputs: Vec<Option<String>>,
    outputs: Vec<Option<String>>,
    error: Vec<Option<String>>,
    next_attempt_at: Vec<Option<i64>>,
    decided_by: Vec<Option<String>>,
    decision_comment: Vec<Option<String>>,
    logs_artifact_id: Vec<Option<String>>,
    expect: Vec<Option<String>>,
}

impl StepCols {
    fn push(&mut self, pos: usize, s: &Step, expect: Option<String>) {
        self.pos.push(pos);
        self.names.push(s.name.clone());
        self.step_id.push(s.step_id.to_string());
        self.run_id.push(s.run_id.to_string());
        self.name.push(s.name.clone());
        self.idx.push(s.idx as i64);
        self.kind.push(s.kind.as_str().into());
        self.status.push(s.status.as_str().into());
        self.attempt.push(s.attempt as i64);
        self.started_at.push(ts(s.started_at));
        self.completed_at.push(ts(s.completed_at));
        self.inputs.push(opt_json_text(&s.inputs));
        self.outputs.push(opt_json_text(&s.outputs));
        self.error.push(opt_json_text(&s.error));
        self.next_attempt_at.push(ts(s.next_attempt_at));
        self.decided_by.push(s.decided_by.clone());
        self.decision_comment.push(s.decision_comment.clone());
        self.logs_artifact_id
            .push(s.logs_artifact_id.map(|a| a.to_string()));
        self.expect.push(expect);
    }

    fn params(&self, with_expect: bool) -> Vec<&(dyn ToSql + Sync)> {
        let mut v: Vec<&(dyn ToSql + Sync)> = vec![
            &self.step_id,
            &self.run_id,
            &self.name,
            &self.idx,
            &self.kind,
            &self.status,
            &self.attempt,
            &self.started_at,
            &self.completed_at,
            &self.inputs,
            &self.outputs,
            &self.error,
            &self.next_attempt_at,
            &self.decided_by,
            &self.decision_comment,
            &self.logs_artifact_id,
        ];
        if with_expect {
            v.push(&self.expect);
        }
        v
    }
}

/// `run_id, due_at, owner, lease_ms` columns of queue inserts.
type EnqueueCols = (Vec<String>, Vec<Option<i64>>, Vec<Option<String>>, Vec<i64>);

#[derive(Default)]
struct Tables {
    cron: (Vec<usize>, Vec<String>, Vec<i64>, Vec<i64>),
    bps: Vec<(usize, BlueprintVersion)>,
    drafts_ins: Vec<Draft>,
    draft_upd: Vec<(usize, Draft, Option<i64>)>,
    runs_ins: RunCols,
    runs_upd: RunCols,
    steps_ins: StepCols,
    steps_upd: StepCols,
    artifacts: Vec<Artifact>,
    footprints: Vec<Footprint>,
    enqueue: EnqueueCols,
    hold: (Vec<usize>, Vec<String>, Vec<String>, Vec<i64>),
    park: (Vec<usize>, Vec<String>, Vec<String>, Vec<Option<i64>>),
    finish: Vec<String>,
    wake: (Vec<String>, Vec<i64>),
    notify: Vec<String>,
}

fn expect_list<T: Copy>(e: &Option<Vec<T>>, f: impl Fn(T) -> &'static str) -> Option<String> {
    e.as_ref()
        .map(|v| v.iter().map(|s| f(*s)).collect::<Vec<_>>().join(","))
}

impl Tables {
    fn build(batches: &[&WriteBatch]) -> Self {
        let mut t = Tables::default();
        let (mut work, mut catalog) = (false, false);
        // Rows are written in key order, so two processes lock rows in the same order.
        let mut run_upd: Vec<(usize, &Run, Option<String>)> = Vec::new();
        let mut step_upd: Vec<(usize, &Step, Option<String>)> = Vec::new();
        for (pos, b) in batches.iter().enumerate() {
            for f in &b.cron_fires {
                t.cron.0.push(pos);
                t.cron.1.push(f.blueprint_id.clone());
                t.cron.2.push(f.slot.as_micros());
                t.cron.3.push(f.fired_at.as_micros());
            }
            for v in &b.blueprint_versions {
                t.bps.push((pos, v.clone()));
                catalog = true;
            }
            for d in &b.drafts {
                match d {
                    DraftWrite::Insert(d) => t.drafts_ins.push(d.clone()),
                    DraftWrite::Update {
                        draft,
                        expect_revision,
                    } => t.draft_upd.push((pos, draft.clone(), *expect_revision)),
                }
            }
            for r in &b.runs {
                match r {
                    RunWrite::Insert(r) => t.runs_ins.push(pos, r, None),
                    RunWrite::Update { run, expect } => {
                        run_upd.push((pos, run, expect_list(expect, |s| s.as_str())))
                    }
                }
            }
            for s in &b.steps {
                match s {
                    StepWrite::Insert(s) => t.steps_ins.push(pos, s, None),
                    StepWrite::Update { step, expect } => {
                        step_upd.push((pos, step, expect_list(expect, |s| s.as_str())))
                    }
                }
            }
            t.artifacts.extend(b.artifacts.iter().cloned());
            t.footprints.extend(b.footprints.iter().cloned());
            for q in &b.queue {
                match q {
                    QueueWrite::Enqueue {
                        run_id,
                        due_at,
                        owner,
                        lease_ms,
                    } => {
                        work |= owner.is_none();
                        t.enqueue.0.push(run_id.to_string());
                        t.enqueue.1.push(due_at.map(Timestamp::as_micros));
                        t.enqueue.2.push(owner.clone());
                        t.enqueue.3.push(*lease_ms as i64);
                    }
                    QueueWrite::Hold {
                        run_id,
                        owner,
                        lease_ms,
                    } => {
                        t.hold.0.push(pos);
                        t.hold.1.push(run_id.to_string());
                        t.hold.2.push(owner.clone());
                        t.hold.3.push(*lease_ms as i64);
                    }
                    QueueWrite::Park {
                        run_id,
                        owner,
                        due_at,
                    } => {
                        work = true;
                        t.park.0.push(pos);
                        t.park.1.push(run_id.to_string());
                        t.park.2.push(owner.clone());
                        t.park.3.push(due_at.map(Timestamp::as_micros));
                    }
                    QueueWrite::Finish { run_id } => t.finish.push(run_id.to_string()),
                    QueueWrite::Wake { run_id, at } => {
                        work = true;
                        t.wake.0.push(run_id.to_string());
                        t.wake.1.push(at.as_micros());
                    }
                    QueueWrite::Cancel { run_id } => t.notify.push(format!("cancel:{run_id}")),
                }
            }
        }
        run_upd.sort_by_key(|(_, r, _)| r.run_id.0);
        for (pos, r, e) in run_upd {
            t.runs_upd.push(pos, r, e);
        }
        step_upd.sort_by_key(|(_, s, _)| s.step_id.0);
        for (pos, s, e) in step_upd {
            t.steps_upd.push(pos, s, e);
        }
        t.finish.sort();
        if work {
            t.notify.push("work".into());
        }
        if catalog {
            t.notify.push("catalog".into());
        }
        t
    }
}

fn returned(rows: &[Row]) -> HashSet<String> {
    rows.iter()
        .filter_map(|r| r.try_get::<_, String>(0).ok())
        .collect()
}

async fn attempt(w: &WConn, batches: &[&WriteBatch]) -> Outcome {
    match attempt_inner(w, batches).await {
        Ok(o) => o,
        Err(e) => {
            let _ = w.client.batch_execute("ROLLBACK").await;
            Outcome::Failed(e)
        }
    }
}

async fn attempt_inner(
    w: &WConn,
    batches: &[&WriteBatch],
) -> Result<Outcome, tokio_postgres::Error> {
    let t = Tables::build(batches);
    let c = &w.client;
    let st = &w.st;
    let has_events = batches.iter().any(|b| !b.events.is_empty());

    // Phase 1: every write but the events, then the chain head lock, in one round trip.
    let bp_cols = (
        t.bps
            .iter()
            .map(|(_, v)| v.blueprint_id.clone())
            .collect::<Vec<_>>(),
        t.bps.iter().map(|(_, v)| v.version).collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.name.clone())
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| json_text(&v.definition))
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.source.clone())
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.digest.clone())
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.created_at.as_micros())
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.created_by.clone())
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.origin.clone())
            .collect::<Vec<_>>(),
    );
    let d = &t.drafts_ins;
    let draft_cols = (
        d.iter().map(|x| x.draft_id.to_string()).collect::<Vec<_>>(),
        d.iter().map(|x| x.name.clone()).collect::<Vec<_>>(),
        d.iter().map(|x| x.kind.clone()).collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.status.as_str().to_string())
            .collect::<Vec<_>>(),
        d.iter().map(|x| x.revision).collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.trigger_event_type.clone())
            .collect::<Vec<_>>(),
        d.iter().map(|x| x.definition.clone()).collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.definition_artifact_id.map(|a| a.to_string()))
            .collect::<Vec<_>>(),
        d.iter().map(|x| x.notes.clone()).collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.source_run_id.map(|r| r.to_string()))
            .collect::<Vec<_>>(),
        d.iter()
            .map(|x| opt_json_text(&x.validation))
            .collect::<Vec<_>>(),
        d.iter().map(|x| x.promoted_version).collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.created_at.as_micros())
            .collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.updated_at.as_micros())
            .collect::<Vec<_>>(),
    );
    let a = &t.artifacts;
    let art_cols = (
        a.iter()
            .map(|x| x.artifact_id.to_string())
            .collect::<Vec<_>>(),
        a.iter().map(|x| x.name.clone()).collect::<Vec<_>>(),
        a.iter().map(|x| x.kind.clone()).collect::<Vec<_>>(),
        a.iter().map(|x| x.content_type.clone()).collect::<Vec<_>>(),
        a.iter().map(|x| x.byte_length).collect::<Vec<_>>(),
        a.iter().map(|x| x.sha256.clone()).collect::<Vec<_>>(),
        a.iter()
            .map(|x| x.created_at.as_micros())
            .collect::<Vec<_>>(),
        a.iter().map(|x| x.created_by.clone()).collect::<Vec<_>>(),
        a.iter()
            .map(|x| x.run_id.map(|r| r.to_string()))
            .collect::<Vec<_>>(),
        a.iter()
            .map(|x| x.step_id.map(|s| s.to_string()))
            .collect::<Vec<_>>(),
        a.iter().map(|x| json_text(&x.metadata)).collect::<Vec<_>>(),
    );
    let f = &t.footprints;
    let fp_cols = (
        f.iter()
            .map(|x| x.occurred_at.as_micros())
            .collect::<Vec<_>>(),
        f.iter()
            .map(|x| x.run_id.map(|r| r.to_string()))
            .collect::<Vec<_>>(),
        f.iter()
            .map(|x| x.step_id.map(|s| s.to_string()))
            .collect::<Vec<_>>(),
        f.iter().map(|x| x.source_kind.clone()).collect::<Vec<_>>(),
        f.iter().map(|x| x.source_ref.clone()).collect::<Vec<_>>(),
        f.iter().map(|x| x.metric.clone()).collect::<Vec<_>>(),
        f.iter().map(|x| x.quantity).collect::<Vec<_>>(),
        f.iter().map(|x| x.unit.clone()).collect::<Vec<_>>(),
        f.iter().map(|x| x.class.clone()).collect::<Vec<_>>(),
        f.iter().map(|x| json_text(&x.dims)).collect::<Vec<_>>(),
    );
    let draft_params: Vec<Params> = t
        .draft_upd
        .iter()
        .map(|(_, x, rev)| -> Params {
            vec![
                Box::new(x.draft_id.to_string()),
                Box::new(x.name.clone()),
                Box::new(x.kind.clone()),
                Box::new(x.status.as_str().to_string()),
                Box::new(x.revision),
                Box::new(x.trigger_event_type.clone()),
                Box::new(x.definition.clone()),
                Box::new(x.definition_artifact_id.map(|a| a.to_string())),
                Box::new(x.notes.clone()),
                Box::new(x.source_run_id.map(|r| r.to_string())),
                Box::new(opt_json_text(&x.validation)),
                Box::new(x.promoted_version),
                Box::new(x.created_at.as_micros()),
                Box::new(x.updated_at.as_micros()),
                Box::new(*rev),
            ]
        })
        .collect();
    let draft_refs: Vec<Vec<&(dyn ToSql + Sync)>> = draft_params.iter().map(refs).collect();

    #[derive(Clone, Copy, PartialEq)]
    enum K {
        Begin,
        Cron,
        Bps,
        Draft(usize),
        Rows,
        RunsUpd,
        StepsUpd,
        Hold,
        Park,
        Head,
    }
    enum Out {
        Rows(Vec<Row>),
        Count(u64),
    }
    let mut futs: Vec<(K, Fut<'_, Out>)> = Vec::new();
    futs.push((
        K::Begin,
        Box::pin(async move {
            // A transaction that appends events holds the chain lock until it commits, so it
            // commits without waiting for the WAL flush and waits for it afterwards, outside
            // the lock (see `flush_wal`).
            let begin = if has_events {
                "BEGIN; SET LOCAL synchronous_commit TO off"
            } else {
                "BEGIN"
            };
            c.batch_execute(begin).await.map(|_| Out::Count(0))
        }),
    ));
    if !t.cron.0.is_empty() {
        let p: Vec<&(dyn ToSql + Sync)> = vec![&t.cron.1, &t.cron.2, &t.cron.3];
        futs.push((
            K::Cron,
            Box::pin(async move { c.query(&st.cron, &p).await.map(Out::Rows) }),
        ));
    }
    if !t.bps.is_empty() {
        let b = &bp_cols;
        let p: Vec<&(dyn ToSql + Sync)> =
            vec![&b.0, &b.1, &b.2, &b.3, &b.4, &b.5, &b.6, &b.7, &b.8];
        futs.push((
            K::Bps,
            Box::pin(async move { c.query(&st.blueprints, &p).await.map(Out::Rows) }),
        ));
    }
    if !d.is_empty() {
        let x = &draft_cols;
        let p: Vec<&(dyn ToSql + Sync)> = vec![
            &x.0, &x.1, &x.2, &x.3, &x.4, &x.5, &x.6, &x.7, &x.8, &x.9, &x.10, &x.11, &x.12, &x.13,
        ];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.drafts_insert, &p).await.map(Out::Count) }),
        ));
    }
    for (i, p) in draft_refs.iter().enumerate() {
        futs.push((
            K::Draft(i),
            Box::pin(async move { c.execute(&st.draft_update, p).await.map(Out::Count) }),
        ));
    }
    if !t.runs_ins.pos.is_empty() {
        let p = t.runs_ins.params(false);
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.runs_insert, &p).await.map(Out::Count) }),
        ));
    }
    if !t.runs_upd.pos.is_empty() {
        let p = t.runs_upd.params(true);
        futs.push((
            K::RunsUpd,
            Box::pin(async move { c.query(&st.runs_update, &p).await.map(Out::Rows) }),
        ));
    }
    if !t.steps_ins.pos.is_empty() {
        let p = t.steps_ins.params(false);
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.steps_insert, &p).await.map(Out::Count) }),
        ));
    }
    if !t.steps_upd.pos.is_empty() {
        let p = t.steps_upd.params(true);
        futs.push((
            K::StepsUpd,
            Box::pin(async move { c.query(&st.steps_update, &p).await.map(Out::Rows) }),
        ));
    }
    if !a.is_empty() {
        let x = &art_cols;
        let p: Vec<&(dyn ToSql + Sync)> = vec![
            &x.0, &x.1, &x.2, &x.3, &x.4, &x.5, &x.6, &x.7, &x.8, &x.9, &x.10,
        ];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.artifacts, &p).await.map(Out::Count) }),
        ));
    }
    if !f.is_empty() {
        let x = &fp_cols;
        let p: Vec<&(dyn ToSql + Sync)> =
            vec![&x.0, &x.1, &x.2, &x.3, &x.4, &x.5, &x.6, &x.7, &x.8, &x.9];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.footprints, &p).await.map(Out::Count) }),
        ));
    }
    if !t.enqueue.0.is_empty() {
        let x = &t.enqueue;
        let p: Vec<&(dyn ToSql + Sync)> = vec![&x.0, &x.1, &x.2, &x.3];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.q_enqueue, &p).await.map(Out::Count) }),
        ));
    }
    if !t.hold.0.is_empty() {
        let x = &t.hold;
        let p: Vec<&(dyn ToSql + Sync)> = vec![&x.1, &x.2, &x.3];
        futs.push((
            K::Hold,
            Box::pin(async move { c.query(&st.q_hold, &p).await.map(Out::Rows) }),
        ));
    }
    if !t.park.0.is_empty() {
        let x = &t.park;
        let p: Vec<&(dyn ToSql + Sync)> = vec![&x.1, &x.2, &x.3];
        futs.push((
            K::Park,
            Box::pin(async move { c.query(&st.q_park, &p).await.map(Out::Rows) }),
        ));
    }
    if !t.wake.0.is_empty() {
        let x = &t.wake;
        let p: Vec<&(dyn ToSql + Sync)> = vec![&x.0, &x.1];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.q_wake, &p).await.map(Out::Count) }),
        ));
    }
    if !t.finish.is_empty() {
        let p: Vec<&(dyn ToSql + Sync)> = vec![&t.finish];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.q_finish, &p).await.map(Out::Count) }),
        ));
    }
    if has_events {
        futs.push((
            K::Head,
            Box::pin(async move { c.query(&st.lock_head, &[]).await.map(Out::Rows) }),
        ));
    }
    let kinds: Vec<K> = futs.iter().map(|(k, _)| *k).collect();
    let outs = futures_util::future::join_all(futs.into_iter().map(|(_, f)| f)).await;

    let mut refused: HashMap<usize, StoreError> = HashMap::new();
    let mut head: Option<(i64, [u8; 32])> = None;
    let mut first_err = None;
    for (k, out) in kinds.into_iter().zip(outs) {
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                first_err.get_or_insert(e);
                continue;
            }
        };
        match (k, out) {
            (K::Cron, Out::Rows(rows)) => {
                let got: HashSet<(String, i64)> = rows
                    .iter()
                    .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                    .collect();
                for i in 0..t.cron.0.len() {
                    if !got.contains(&(t.cron.1[i].clone(), t.cron.2[i])) {
                        refused.entry(t.cron.0[i]).or_insert_with(|| {
                            StoreError::Conflict(format!(
                                "cron slot {} of {} already fired",
                                Timestamp::from_micros(t.cron.2[i]),
                                t.cron.1[i]
                            ))
                        });
                    }
                }
            }
            (K::Bps, Out::Rows(rows)) => {
                let got: HashSet<(String, i64)> = rows
                    .iter()
                    .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                    .collect();
                for (pos, v) in &t.bps {
                    if !got.contains(&(v.blueprint_id.clone(), v.version)) {
                        refused.entry(*pos).or_insert_with(|| {
                            StoreError::Conflict(format!(
                                "blueprint {} version {} already exists",
                                v.blueprint_id, v.version
                            ))
                        });
                    }
                }
            }
            (K::Draft(i), Out::Count(n)) if n != 1 => {
                let (pos, d, rev) = &t.draft_upd[i];
                refused.entry(*pos).or_insert_with(|| match rev {
                    Some(r) => StoreError::Conflict(format!(
                        "draft {} changed meanwhile (expected revision {r})",
                        d.draft_id
                    )),
                    None => StoreError::Conflict(format!("draft {} does not exist", d.draft_id)),
                });
            }
            (K::RunsUpd, Out::Rows(rows)) => {
                let got = returned(&rows);
                let u = &t.runs_upd;
                for i in 0..u.pos.len() {
                    if !got.contains(&u.run_id[i]) {
                        refused.entry(u.pos[i]).or_insert_with(|| {
                            StoreError::Conflict(match &u.expect[i] {
                                Some(e) => format!(
                                    "run {} changed meanwhile (expected revision {}) or is not {}",
                                    u.run_id[i],
                                    u.revision[i] - 1,
                                    e.replace(',', " or ")
                                ),
                                None => format!(
                                    "run {} changed meanwhile (expected revision {})",
                                    u.run_id[i],
                                    u.revision[i] - 1
                                ),
                            })
                        });
                    }
                }
            }
            (K::StepsUpd, Out::Rows(rows)) => {
                let got = returned(&rows);
                let u = &t.steps_upd;
                for i in 0..u.pos.len() {
                    if !got.contains(&u.step_id[i]) {
                        refused.entry(u.pos[i]).or_insert_with(|| {
                            StoreError::Conflict(match &u.expect[i] {
                                Some(e) => format!(
                                    "step '{}' does not exist or is not {}",
                                    u.names[i],
                                    e.replace(',', " or ")
                                ),
                                None => format!("step {} does not exist", u.step_id[i]),
                            })
                        });
                    }
                }
            }
            (K::Hold, Out::Rows(rows)) => {
                let got = returned(&rows);
                for i in 0..t.hold.0.len() {
                    if !got.contains(&t.hold.1[i]) {
                        refused.entry(t.hold.0[i]).or_insert_with(|| {
                            StoreError::LeaseLost(format!(
                                "{} no longer holds run {}",
                                t.hold.2[i], t.hold.1[i]
                            ))
                        });
                    }
                }
            }
            (K::Park, Out::Rows(rows)) => {
                let got = returned(&rows);
                for i in 0..t.park.0.len() {
                    if !got.contains(&t.park.1[i]) {
                        refused.entry(t.park.0[i]).or_insert_with(|| {
                            StoreError::LeaseLost(format!(
                                "{} no longer holds run {}",
                                t.park.2[i], t.park.1[i]
                            ))
                        });
                    }
                }
            }
            (K::Head, Out::Rows(rows)) => {
                if let Some(r) = rows.first() {
                    let seq: i64 = r.try_get(0)?;
                    let h: String = r.try_get(1)?;
                    head = crate::sqlite::hash_bytes(&h).ok().map(|b| (seq, b));
                }
            }
            _ => {}
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if !refused.is_empty() {
        c.batch_execute("ROLLBACK").await?;
        return Ok(Outcome::Refused(refused.into_iter().collect()));
    }

    // Phase 2: number and hash the events under the chain lock, insert them, commit.
    let mut stored: Vec<Vec<StoredEvent>> = batches.iter().map(|_| Vec::new()).collect();
    let mut notify = t.notify.clone();
    let mut ev = EventCols::default();
    let mut range = None;
    if has_events {
        let Some((mut seq, mut prev)) = head else {
            c.batch_execute("ROLLBACK").await?;
            return Ok(Outcome::Refused(
                (0..batches.len())
                    .map(|i| {
                        (
                            i,
                            StoreError::Corrupt("the chain head row is missing".into()),
                        )
                    })
                    .collect(),
            ));
        };
        let first = seq + 1;
        for (pos, b) in batches.iter().enumerate() {
            for e in &b.events {
                seq += 1;
                let parts = e.chain_parts();
                let h = parts.hash(&prev, seq);
                let hex_hash = hex::encode(h);
                ev.push(seq, e, parts.data_text, &hex_hash);
                stored[pos].push(StoredEvent {
                    seq,
                    hash: hex_hash,
                    event: e.clone(),
                });
                prev = h;
            }
        }
        range = Some((first, seq, hex::encode(prev)));
        notify.push("outbox".into());
    }
    let mut futs: Vec<Fut<'_, u64>> = Vec::new();
    if let Some((first, last, hash)) = &range {
        let p = ev.params();
        futs.push(Box::pin(async move { c.execute(&st.events, &p).await }));
        futs.push(Box::pin(
            async move { c.execute(&st.head, &[last, hash]).await },
        ));
        futs.push(Box::pin(async move {
            c.execute(&st.outbox, &[first, last]).await
        }));
    }
    if !notify.is_empty() {
        let n = &notify;
        futs.push(Box::pin(async move { c.execute(&st.notify, &[n]).await }));
    }
    futs.push(Box::pin(async move {
        c.batch_execute("COMMIT").await.map(|_| 0)
    }));
    for r in futures_util::future::join_all(futs).await {
        // An error before COMMIT aborted the transaction (COMMIT then rolls back).
        r?;
    }
    if has_events {
        flush_wal(c).await?;
    }
    Ok(Outcome::Committed(stored))
}

/// Waits until everything committed so far is flushed to disk: a transaction with an id
/// commits with `synchronous_commit` on, and the WAL is flushed in order, so when its commit
/// returns, every earlier commit is durable too. Nothing is acknowledged before this returns,
/// and any later transaction that saw the earlier commit's rows commits after it in the WAL.
async fn flush_wal(c: &Client) -> Result<(), tokio_postgres::Error> {
    c.batch_execute("BEGIN; SELECT txid_current(); COMMIT")
        .await
}

#[derive(Default)]
struct EventCols {
    seq: Vec<i64>,
    event_id: Vec<String>,
    event_name: Vec<String>,
    occurred_at: Vec<i64>,
    env_id: Vec<String>,
    actor: Vec<String>,
    correlation_id: Vec<String>,
    run_id: Vec<Option<String>>,
    step_id: Vec<Option<String>>,
    resource_type: Vec<Option<String>>,
    resource_id: Vec<Option<String>>,
    data: Vec<String>,
    hash: Vec<String>,
}

impl EventCols {
    fn push(&mut self, seq: i64, e: &xyn_core::event::Event, data: String, hash: &str) {
        self.seq.push(seq);
        self.event_id.push(e.event_id.to_string());
        self.event_name.push(e.event_name.clone());
        self.occurred_at.push(e.occurred_at.as_micros());
        self.env_id.push(e.env_id.clone());
        self.actor.push(e.actor.clone());
        self.correlation_id.push(e.correlation_id.clone());
        self.run_id.push(e.run_id.map(|r| r.to_string()));
        self.step_id.push(e.step_id.map(|s| s.to_string()));
        self.resource_type
            .push(e.resource.as_ref().map(|r| r.kind.clone()));
        self.resource_id
            .push(e.resource.as_ref().map(|r| r.id.clone()));
        self.data.push(data);
        self.hash.push(hash.to_string());
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.seq,
            &self.event_id,
            &self.event_name,
            &self.occurred_at,
            &self.env_id,
            &self.actor,
            &self.correlation_id,
            &self.run_id,
            &self.step_id,
            &self.resource_type,
            &self.resource_id,
            &self.data,
            &self.hash,
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Reads.

fn limit(n: usize) -> i64 {
    n.clamp(1, 1000) as i64
}

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

fn map_rows<T>(rows: &[Row], f: impl Fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(f).collect()
}

/// SQL for an event-name filter: exact, `prefix.*` (one more segment) or `prefix.**`.
/// SQL for an id filter on `col`: the whole id, or a range of the short-id index
/// (`substr(col, 29)` in the C collation, the last eight digits).
fn id_filter(col: &str, p: &IdPattern, args: &mut Params) -> String {
    match p {
        IdPattern::Exact(u) => {
            args.push(Box::new(u.hyphenated().to_string()));
            format!("{col} = ${}", args.len())
        }
        IdPattern::Tail(t) => {
            let (from, to) = IdPattern::range(t);
            args.push(Box::new(from));
            args.push(Box::new(to));
            let n = args.len();
            format!(
                "substr({col}, 29) COLLATE \"C\" >= ${} AND substr({col}, 29) COLLATE \"C\" < ${n}",
                n - 1
            )
        }
    }
}

fn name_filter(name: &str, args: &mut Params) -> String {
    if let Some(prefix) = name.strip_suffix(".**") {
        args.push(Box::new(format!("{prefix}.")));
        args.push(Box::new(format!("{prefix}/")));
        let n = args.len();
        format!("event_name >= ${} AND event_name < ${n}", n - 1)
    } else if let Some(prefix) = name.strip_suffix(".*") {
        args.push(Box::new(format!("{prefix}.")));
        args.push(Box::new(format!("{prefix}/")));
        let n = args.len();
        format!(
            "event_name >= ${} AND event_name < ${n} AND strpos(substr(event_name, {}), '.') = 0",
            n - 1,
            prefix.len() + 2
        )
    } else {
        args.push(Box::new(name.to_string()));
        format!("event_name = ${}", args.len())
    }
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    }
}

/// A held advisory lock: a dedicated connection; the lock goes with it.
struct Singleton {
    _client: Client,
    task: JoinHandle<()>,
}

impl Drop for Singleton {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl Store for PgStore {
    async fn commit(&self, batch: WriteBatch) -> StoreResult<Vec<StoredEvent>> {
        if batch.is_empty() {
            return Ok(vec![]);
        }
        let (reply, rx) = oneshot::channel();
        self.writer
            .send((Box::new(batch), reply))
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    async fn get_event(&self, id: EventId) -> StoreResult<Option<StoredEvent>> {
        let rows = self
            .query(
                &format!("SELECT {EVENT_COLS} FROM events WHERE event_id = $1"),
                &[&id.to_string()],
            )
            .await?;
        Ok(map_rows(&rows, rows::event)?.pop())
    }

    async fn list_events(&self, q: EventQuery) -> StoreResult<Page<StoredEvent>> {
        let mut args: Params = Vec::new();
        let mut conds = Vec::new();
        if let Some(n) = &q.event_name {
            conds.push(name_filter(n, &mut args));
        }
        if let Some(r) = q.run_id {
            args.push(Box::new(r.to_string()));
            conds.push(format!("run_id = ${}", args.len()));
        }
        if let Some(p) = &q.id {
            conds.push(id_filter("event_id", p, &mut args));
        }
        if let Some(b) = q.before {
            args.push(Box::new(b));
            conds.push(format!("seq < ${}", args.len()));
        }
        let lim = limit(q.limit);
        let sql = format!(
            "SELECT {EVENT_COLS} FROM events {} ORDER BY seq DESC LIMIT {}",
            where_clause(&conds),
            lim + 1
        );
        let rows = self.query_p(&sql, args).await?;
        let items = map_rows(&rows, |r| rows::event(r).map(|e| (e.seq, e)))?;
        Ok(paginate(items, lim))
    }

    async fn events_after(&self, after: i64, limit_n: usize) -> StoreResult<Vec<StoredEvent>> {
        let rows = self
            .query(
                &format!("SELECT {EVENT_COLS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&after, &(limit_n.clamp(1, 10_000) as i64)],
            )
            .await?;
        map_rows(&rows, rows::event)
    }

    async fn chain_head(&self) -> StoreResult<Option<(i64, String)>> {
        let rows = self
            .query(
                "SELECT seq, hash FROM chain_head WHERE id = 1 AND seq > 0",
                &[],
            )
            .await?;
        match rows.first() {
            None => Ok(None),
            Some(r) => Ok(Some((rows::get(r, 0, "head")?, rows::get(r, 1, "head")?))),
        }
    }

    async fn verify_chain(&self) -> StoreResult<ChainReport> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let mut pc = self.pool.get().await?;
        let conn = pc.conn()?;
        let client = &conn.client;
        let head = client
            .query_opt(
                "SELECT seq, hash FROM chain_head WHERE id = 1 AND seq > 0",
                &[],
            )
            .await
            .map_err(pg_err)?
            .map(|r| -> StoreResult<(i64, String)> {
                Ok((rows::get(&r, 0, "head")?, rows::get(&r, 1, "head")?))
            })
            .transpose()?;
        let cp = client
            .query_opt(
                "SELECT seq, hash FROM chain_checkpoints ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(pg_err)?;
        let (mut v, from) = match cp {
            Some(r) => {
                let seq: i64 = rows::get(&r, 0, "checkpoint")?;
                let h: String = rows::get(&r, 1, "checkpoint")?;
                (
                    ChainVerifier::from_checkpoint(seq, crate::sqlite::hash_bytes(&h)?),
                    seq,
                )
            }
            None => (ChainVerifier::new(), 0),
        };
        let st = client
            .prepare(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE seq > $1 ORDER BY seq"
            ))
            .await
            .map_err(pg_err)?;
        let stream = client
            .query_raw(&st, [&from as &(dyn ToSql + Sync)])
            .await
            .map_err(pg_err)?;
        futures_util::pin_mut!(stream);
        while let Some(r) = stream.try_next().await.map_err(pg_err)? {
            match rows::event(&r) {
                Ok(e) => {
                    if !v.push(&e) {
                        break;
                    }
                }
                Err(e) => {
                    let seq: i64 = r.try_get(0).unwrap_or(-1);
                    v.unreadable(seq, e);
                    break;
                }
            }
        }
        Ok(v.finish(head))
    }

    async fn get_run(&self, id: RunId) -> StoreResult<Option<Run>> {
        let rows = self
            .query(
                &format!("SELECT id, {RUN_COLS} FROM runs WHERE run_id = $1"),
                &[&id.to_string()],
            )
            .await?;
        Ok(map_rows(&rows, rows::run)?.pop().map(|(_, r)| r))
    }

    async fn list_runs(&self, q: RunQuery) -> StoreResult<Page<Run>> {
        let mut args: Params = Vec::new();
        let mut conds = Vec::new();
        if let Some(st) = &q.status
            && !st.is_empty()
        {
            let v: Vec<String> = st.iter().map(|s| s.as_str().to_string()).collect();
            args.push(Box::new(v));
            conds.push(format!("status = ANY(${})", args.len()));
        }
        if let Some(b) = &q.blueprint_id {
            args.push(Box::new(b.clone()));
            conds.push(format!("blueprint_id = ${}", args.len()));
        }
        if let Some(cid) = &q.correlation_id {
            args.push(Box::new(cid.clone()));
            conds.push(format!("correlation_id = ${}", args.len()));
        }
        if let Some(p) = &q.id {
            conds.push(id_filter("run_id", p, &mut args));
        }
        if let Some(v) = &q.input_value {
            args.push(Box::new(crate::input_value_key(v)));
            conds.push(format!(
                "id IN (SELECT run_pk FROM run_input_values WHERE value = ${})",
                args.len()
            ));
        }
        if let Some(t) = q.created_since {
            args.push(Box::new(t.as_micros()));
            conds.push(format!("created_at >= ${}", args.len()));
        }
        if let Some(t) = q.created_until {
            args.push(Box::new(t.as_micros()));
            conds.push(format!("created_at < ${}", args.len()));
        }
        if let Some(b) = q.before {
            args.push(Box::new(b));
            conds.push(format!("id < ${}", args.len()));
        }
        let lim = limit(q.limit);
        let sql = format!(
            "SELECT id, {RUN_COLS} FROM runs {} ORDER BY id DESC LIMIT {}",
            where_clause(&conds),
            lim + 1
        );
        let rows = self.query_p(&sql, args).await?;
        Ok(paginate(map_rows(&rows, rows::run)?, lim))
    }

    async fn get_steps(&self, run: RunId) -> StoreResult<Vec<Step>> {
        let rows = self
            .query(
                &format!("SELECT {STEP_COLS} FROM steps WHERE run_id = $1 ORDER BY idx"),
                &[&run.to_string()],
            )
            .await?;
        map_rows(&rows, rows::step)
    }

    async fn unfinished_runs(&self) -> StoreResult<Vec<RunId>> {
        let rows = self
            .query(
                "SELECT run_id FROM runs WHERE status IN ('created', 'running', 'waiting') ORDER BY id",
                &[],
            )
            .await?;
        map_rows(&rows, |r| {
            let s: String = rows::get(r, 0, "run")?;
            s.parse()
                .map_err(|_| StoreError::Corrupt(format!("bad run id {s:?}")))
        })
    }

    async fn load_runs(&self, ids: &[RunId]) -> StoreResult<Vec<LoadedRun>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let runs_sql = format!("SELECT id, {RUN_COLS} FROM runs WHERE run_id = ANY($1)");
        let steps_sql =
            format!("SELECT {STEP_COLS} FROM steps WHERE run_id = ANY($1) ORDER BY run_id, idx");
        let events_sql = format!(
            "SELECT {} FROM events e JOIN runs r ON e.event_id = r.trigger_event_id WHERE r.run_id = ANY($1)",
            EVENT_COLS
                .split(", ")
                .map(|c| format!("e.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let mut pc = self.pool.get().await?;
        let (rs, _) = pc.stmt(&runs_sql).await?;
        let (ss, _) = pc.stmt(&steps_sql).await?;
        let (es, client) = pc.stmt(&events_sql).await?;
        // Three statements, one round trip.
        let (runs, steps, events) = futures_util::future::join3(
            client.query(&rs, &[&ids]),
            client.query(&ss, &[&ids]),
            client.query(&es, &[&ids]),
        )
        .await;
        let runs = map_rows(&runs.map_err(pg_err)?, rows::run)?;
        let mut steps_by: HashMap<RunId, Vec<Step>> = HashMap::new();
        for s in map_rows(&steps.map_err(pg_err)?, rows::step)? {
            steps_by.entry(s.run_id).or_default().push(s);
        }
        let mut events_by: HashMap<EventId, StoredEvent> =
            map_rows(&events.map_err(pg_err)?, rows::event)?
                .into_iter()
                .map(|e| (e.event.event_id, e))
                .collect();
        Ok(runs
            .into_iter()
            .map(|(_, run)| LoadedRun {
                steps: steps_by.remove(&run.run_id).unwrap_or_default(),
                trigger: run.trigger_event_id.and_then(|e| events_by.remove(&e)),
                run,
            })
            .collect())
    }

    async fn get_artifact(&self, id: ArtifactId) -> StoreResult<Option<Artifact>> {
        let rows = self
            .query(
                &format!("SELECT id, {ARTIFACT_COLS} FROM artifacts WHERE artifact_id = $1"),
                &[&id.to_string()],
            )
            .await?;
        Ok(map_rows(&rows, rows::artifact)?.pop().map(|(_, a)| a))
    }

    async fn list_artifacts(&self, q: ArtifactQuery) -> StoreResult<Page<Artifact>> {
        let mut args: Params = Vec::new();
        let mut conds = Vec::new();
        if let Some(r) = q.run_id {
            args.push(Box::new(r.to_string()));
            conds.push(format!("run_id = ${}", args.len()));
        }
        if let Some(s) = q.step_id {
            args.push(Box::new(s.to_string()));
            conds.push(format!("step_id = ${}", args.len()));
        }
        if let Some(k) = &q.kind {
            args.push(Box::new(k.clone()));
            conds.push(format!("kind = ${}", args.len()));
        }
        if let Some(b) = q.before {
            args.push(Box::new(b));
            conds.push(format!("id < ${}", args.len()));
        }
        let lim = limit(q.limit);
        let sql = format!(
            "SELECT id, {ARTIFACT_COLS} FROM artifacts {} ORDER BY id DESC LIMIT {}",
            where_clause(&conds),
            lim + 1
        );
        let rows = self.query_p(&sql, args).await?;
        Ok(paginate(map_rows(&rows, rows::artifact)?, lim))
    }

    async fn blueprint_heads(&self) -> StoreResult<Vec<BlueprintVersion>> {
        let rows = self
            .query(
                &format!(
                    "SELECT DISTINCT ON (blueprint_id) {BLUEPRINT_COLS} FROM blueprint_versions \
                     ORDER BY blueprint_id, version DESC"
                ),
                &[],
            )
            .await?;
        map_rows(&rows, rows::blueprint)
    }

    async fn get_blueprint(
        &self,
        id: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<BlueprintVersion>> {
        let rows = match version {
            Some(v) => {
                self.query(
                    &format!("SELECT {BLUEPRINT_COLS} FROM blueprint_versions WHERE blueprint_id = $1 AND version = $2"),
                    &[&id, &v],
                )
                .await?
            }
            None => {
                self.query(
                    &format!("SELECT {BLUEPRINT_COLS} FROM blueprint_versions WHERE blueprint_id = $1 ORDER BY version DESC LIMIT 1"),
                    &[&id],
                )
                .await?
            }
        };
        Ok(map_rows(&rows, rows::blueprint)?.pop())
    }

    async fn list_blueprint_versions(&self, id: &str) -> StoreResult<Vec<BlueprintVersion>> {
        let rows = self
            .query(
                &format!("SELECT {BLUEPRINT_COLS} FROM blueprint_versions WHERE blueprint_id = $1 ORDER BY version DESC"),
                &[&id],
            )
            .await?;
        map_rows(&rows, rows::blueprint)
    }

    async fn get_draft(&self, id: DraftId) -> StoreResult<Option<Draft>> {
        let rows = self
            .query(
                &format!("SELECT id, {DRAFT_COLS} FROM drafts WHERE draft_id = $1"),
                &[&id.to_string()],
            )
            .await?;
        Ok(map_rows(&rows, rows::draft)?.pop().map(|(_, d)| d))
    }

    async fn list_drafts(&self, before: Option<i64>, limit_n: usize) -> StoreResult<Page<Draft>> {
        let lim = limit(limit_n);
        let rows = match before {
            Some(b) => {
                self.query(
                    &format!("SELECT id, {DRAFT_COLS} FROM drafts WHERE id < $1 ORDER BY id DESC LIMIT {}", lim + 1),
                    &[&b],
                )
                .await?
            }
            None => {
                self.query(
                    &format!("SELECT id, {DRAFT_COLS} FROM drafts ORDER BY id DESC LIMIT {}", lim + 1),
                    &[],
                )
                .await?
            }
        };
        Ok(paginate(map_rows(&rows, rows::draft)?, lim))
    }

    async fn list_footprints(&self, q: FootprintQuery) -> StoreResult<Page<Footprint>> {
        let mut args: Params = Vec::new();
        let mut conds = Vec::new();
        if let Some(r) = q.run_id {
            args.push(Box::new(r.to_string()));
            conds.push(format!("run_id = ${}", args.len()));
        }
        if let Some(m) = &q.metric {
            args.push(Box::new(m.clone()));
            conds.push(format!("metric = ${}", args.len()));
        }
        if let Some(s) = q.since {
            args.push(Box::new(s.as_micros()));
            conds.push(format!("occurred_at >= ${}", args.len()));
        }
        if let Some(u) = q.until {
            args.push(Box::new(u.as_micros()));
            conds.push(format!("occurred_at < ${}", args.len()));
        }
        if let Some(b) = q.before {
            args.push(Box::new(b));
            conds.push(format!("id < ${}", args.len()));
        }
        let lim = limit(q.limit);
        let sql = format!(
            "SELECT id, {FOOTPRINT_COLS} FROM footprints {} ORDER BY id DESC LIMIT {}",
            where_clause(&conds),
            lim + 1
        );
        let rows = self.query_p(&sql, args).await?;
        Ok(paginate(map_rows(&rows, rows::footprint)?, lim))
    }

    async fn last_cron_slot(&self, blueprint_id: &str) -> StoreResult<Option<Timestamp>> {
        let rows = self
            .query(
                "SELECT MAX(slot) FROM cron_fires WHERE blueprint_id = $1",
                &[&blueprint_id],
            )
            .await?;
        match rows.first() {
            Some(r) => Ok(rows::get::<Option<i64>>(r, 0, "cron")?.map(Timestamp::from_micros)),
            None => Ok(None),
        }
    }

    async fn claim(&self, owner: &str, limit_n: usize, lease_ms: u64) -> StoreResult<Claimed> {
        // The rows are locked by the CTEs and updated by their ctid (a TID scan: no second
        // walk down the primary key), so the cost does not grow with what is queued behind.
        // The limit is written into the statement (an integer we clamp, one prepared statement
        // per limit): with `LIMIT $n` PostgreSQL keeps choosing a custom plan once the queue is
        // large, and planning each claim (which probes the index ends through the dead entries
        // of claimed rows) cost more than executing it — 0.12–0.21 ms against 0.004 ms.
        fn claim_sql(lim: i64) -> String {
            format!(
                "WITH now AS (SELECT xyn_now_us() AS t), \
                 ready AS (SELECT ctid AS tid FROM run_queue \
                    WHERE owner IS NULL AND due_at <= (SELECT t FROM now) ORDER BY due_at LIMIT {lim} FOR UPDATE SKIP LOCKED), \
                 stale AS (SELECT ctid AS tid FROM run_queue \
                    WHERE owner IS NOT NULL AND lease_until < (SELECT t FROM now) ORDER BY lease_until LIMIT {lim} FOR UPDATE SKIP LOCKED), \
                 picked AS (SELECT tid, false AS expired FROM ready UNION ALL SELECT tid, true FROM stale LIMIT {lim}) \
                 UPDATE run_queue q SET owner = $1, lease_until = (SELECT t FROM now) + $2::bigint * 1000, claims = q.claims + 1 \
                 FROM picked WHERE q.ctid = picked.tid RETURNING q.run_id, q.claims, picked.expired"
            )
        }
        const NEXT: &str = "SELECT LEAST((SELECT MIN(due_at) FROM run_queue WHERE owner IS NULL), \
             (SELECT MIN(lease_until) FROM run_queue WHERE owner IS NOT NULL))";
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let lim = limit_n.clamp(1, 1000) as i64;
        let lease = lease_ms as i64;
        let mut pc = self.pool.get().await?;
        let (claim_st, _) = pc.stmt(&claim_sql(lim)).await?;
        let (next_st, client) = pc.stmt(NEXT).await?;
        // Both in one round trip.
        let (claimed, next) = futures_util::future::join(
            client.query(&claim_st, &[&owner, &lease]),
            client.query_opt(&next_st, &[]),
        )
        .await;
        let claimed = claimed.map_err(pg_err)?;
        let next = next.map_err(pg_err)?;
        let mut runs = Vec::with_capacity(claimed.len());
        for r in &claimed {
            let id: String = rows::get(r, 0, "claim")?;
            runs.push(Claim {
                run_id: id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("bad run id {id:?}")))?,
                claims: rows::get(r, 1, "claim")?,
                expired: rows::get(r, 2, "claim")?,
            });
        }
        let next_due = match next {
            Some(r) => rows::get::<Option<i64>>(&r, 0, "next due")?.map(Timestamp::from_micros),
            None => None,
        };
        Ok(Claimed { runs, next_due })
    }

    async fn renew_leases(&self, owner: &str, lease_ms: u64) -> StoreResult<Vec<RunId>> {
        let rows = self
            .query(
                "WITH renewed AS (UPDATE run_queue SET lease_until = xyn_now_us() + $2::bigint * 1000 \
                   WHERE run_id IN (SELECT run_id FROM run_queue WHERE owner = $1::text FOR UPDATE SKIP LOCKED) \
                   RETURNING run_id) \
                 SELECT run_id FROM run_queue WHERE owner = $1",
                &[&owner, &(lease_ms as i64)],
            )
            .await?;
        map_rows(&rows, |r| {
            let s: String = rows::get(r, 0, "lease")?;
            s.parse()
                .map_err(|_| StoreError::Corrupt(format!("bad run id {s:?}")))
        })
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        let rows = self
            .query(
                "SELECT COUNT(*), \
                   COUNT(*) FILTER (WHERE owner IS NULL AND due_at <= xyn_now_us()), \
                   COUNT(*) FILTER (WHERE owner IS NOT NULL AND lease_until >= xyn_now_us()), \
                   COUNT(*) FILTER (WHERE owner IS NOT NULL AND lease_until < xyn_now_us()), \
                   COUNT(DISTINCT owner) FROM run_queue",
                &[],
            )
            .await?;
        let r = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("no queue stats".into()))?;
        Ok(QueueStats {
            queued: rows::get(r, 0, "queue")?,
            due: rows::get(r, 1, "queue")?,
            held: rows::get(r, 2, "queue")?,
            expired: rows::get(r, 3, "queue")?,
            owners: rows::get(r, 4, "queue")?,
        })
    }

    async fn outbox_pending(&self, limit_n: usize) -> StoreResult<Vec<OutboxRange>> {
        let rows = self
            .query(
                "SELECT id, first_seq, last_seq, created_at FROM outbox WHERE published_at IS NULL \
                 ORDER BY id LIMIT $1",
                &[&(limit_n.clamp(1, 10_000) as i64)],
            )
            .await?;
        map_rows(&rows, |r| {
            Ok(OutboxRange {
                id: rows::get(r, 0, "outbox")?,
                first_seq: rows::get(r, 1, "outbox")?,
                last_seq: rows::get(r, 2, "outbox")?,
                created_at: Timestamp::from_micros(rows::get(r, 3, "outbox")?),
            })
        })
    }

    async fn mark_published(&self, ids: &[i64], at: Timestamp) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        self.query(
            "UPDATE outbox SET published_at = $2 WHERE id = ANY($1)",
            &[&ids, &at.as_micros()],
        )
        .await?;
        Ok(())
    }

    async fn outbox_lag(&self) -> StoreResult<OutboxLag> {
        let rows = self
            .query(
                "SELECT COUNT(*), SUM(last_seq - first_seq + 1)::BIGINT, MIN(created_at), \
                   (SELECT MAX(last_seq) FROM outbox WHERE published_at IS NOT NULL) \
                 FROM outbox WHERE published_at IS NULL",
                &[],
            )
            .await?;
        let r = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("no outbox stats".into()))?;
        Ok(OutboxLag {
            pending_rows: rows::get(r, 0, "outbox")?,
            pending_events: rows::get::<Option<i64>>(r, 1, "outbox")?.unwrap_or(0),
            oldest_pending_at: rows::get::<Option<i64>>(r, 2, "outbox")?
                .map(Timestamp::from_micros),
            published_seq: rows::get(r, 3, "outbox")?,
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.signals.subscribe()
    }

    async fn lock_singleton(&self, name: &str) -> StoreResult<SingletonGuard> {
        let (client, conn) = self.pool.pc.connect(NoTls).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {}",
                self.target,
                with_causes(&e)
            ))
        })?;
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = lost.clone();
        // The lock lives as long as this connection: when it ends, the lock is gone.
        let task = tokio::spawn(async move {
            let _ = conn.await;
            flag.store(true, Ordering::SeqCst);
        });
        client
            .query_one("SELECT pg_advisory_lock(hashtext($1))", &[&name])
            .await
            .map_err(pg_err)?;
        Ok(SingletonGuard::new(
            Box::new(Singleton {
                _client: client,
                task,
            }),
            lost,
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
        let rows = self
            .query(
                "WITH k AS (SELECT seq FROM events WHERE occurred_at >= $1 ORDER BY seq LIMIT 1), \
                      m AS (SELECT MAX(seq) AS seq FROM events), \
                      u AS (SELECT MIN(first_seq) AS seq FROM outbox WHERE published_at IS NULL) \
                 SELECT COALESCE((SELECT seq FROM k) - 1, (SELECT seq FROM m)), (SELECT seq FROM u)",
                &[&c],
            )
            .await?;
        let mut target: Option<(i64, String)> = None;
        if let Some(r) = rows.first() {
            let last: Option<i64> = rows::get(r, 0, "prune")?;
            let unpublished: Option<i64> = rows::get(r, 1, "prune")?;
            if let Some(mut last) = last {
                if keep_unpublished && let Some(u) = unpublished {
                    last = last.min(u - 1);
                }
                let h = self
                    .query("SELECT hash FROM events WHERE seq = $1", &[&last])
                    .await?;
                if let Some(hr) = h.first() {
                    target = Some((last, rows::get(hr, 0, "prune")?));
                }
            }
        }
        let cp = target.map(|(seq, hash)| Checkpoint {
            signature: signer.sign(&Checkpoint::signed_bytes(seq, &hash, now)),
            public_key: signer.public_key(),
            seq,
            hash,
            created_at: now,
        });
        let mut pc = self.pool.get().await?;
        let conn = pc.conn()?;
        let tx = conn.client.transaction().await.map_err(pg_err)?;
        let mut report = PruneReport::default();
        if let Some(cp) = cp {
            let h = tx
                .query_opt("SELECT hash FROM events WHERE seq = $1", &[&cp.seq])
                .await
                .map_err(pg_err)?;
            let h: Option<String> = h.map(|r| rows::get(&r, 0, "prune")).transpose()?;
            if h.as_deref() != Some(cp.hash.as_str()) {
                return Err(StoreError::Conflict(format!(
                    "event seq {} changed while pruning",
                    cp.seq
                )));
            }
            report.events_removed = tx
                .execute("DELETE FROM events WHERE seq <= $1", &[&cp.seq])
                .await
                .map_err(pg_err)? as i64;
            report.outbox_rows_removed = tx
                .execute("DELETE FROM outbox WHERE last_seq <= $1", &[&cp.seq])
                .await
                .map_err(pg_err)? as i64;
            tx.execute(
                "INSERT INTO chain_checkpoints (seq, hash, created_at, public_key, signature) VALUES ($1, $2, $3, $4, $5)",
                &[&cp.seq, &cp.hash, &cp.created_at.as_micros(), &cp.public_key, &cp.signature],
            )
            .await
            .map_err(pg_err)?;
            report.checkpoint = Some(cp);
        }
        report.rollup_rows_written = tx
            .execute(
                "INSERT INTO footprint_rollups (day, metric, source_kind, source_ref, unit, class, quantity, samples) \
                 SELECT (occurred_at / 86400000000) * 86400000000 AS day, metric, source_kind, source_ref, unit, class, \
                        SUM(quantity), COUNT(*) FROM footprints WHERE occurred_at < $1 \
                 GROUP BY 1, metric, source_kind, source_ref, unit, class \
                 ON CONFLICT (day, metric, source_kind, source_ref, unit, class) DO UPDATE SET \
                    quantity = footprint_rollups.quantity + excluded.quantity, \
                    samples = footprint_rollups.samples + excluded.samples",
                &[&c],
            )
            .await
            .map_err(pg_err)? as i64;
        report.footprints_rolled_up = tx
            .execute("DELETE FROM footprints WHERE occurred_at < $1", &[&c])
            .await
            .map_err(pg_err)? as i64;
        tx.commit().await.map_err(pg_err)?;
        Ok(report)
    }

    async fn checkpoint(&self) -> StoreResult<Option<Checkpoint>> {
        let rows = self
            .query(
                "SELECT seq, hash, created_at, public_key, signature FROM chain_checkpoints \
                 ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await?;
        match rows.first() {
            None => Ok(None),
            Some(r) => Ok(Some(Checkpoint {
                seq: rows::get(r, 0, "checkpoint")?,
                hash: rows::get(r, 1, "checkpoint")?,
                created_at: Timestamp::from_micros(rows::get(r, 2, "checkpoint")?),
                public_key: rows::get(r, 3, "checkpoint")?,
                signature: rows::get(r, 4, "checkpoint")?,
            })),
        }
    }

    async fn schema_version(&self) -> StoreResult<(i64, i64)> {
        let rows = self
            .query("SELECT COALESCE(MAX(version), 0) FROM xyn_migrations", &[])
            .await?;
        let v = match rows.first() {
            Some(r) => rows::get(r, 0, "migrations")?,
            None => 0,
        };
        Ok((v, schema::MIGRATIONS.len() as i64))
    }

    async fn secret_put(&self, row: crate::secrets::SecretVersionRow) -> StoreResult<()> {
        let mut pc = self.pool.get().await?;
        secrets::put(&mut pc.conn()?.client, row).await
    }

    async fn secret_get(
        &self,
        path: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<crate::secrets::SecretVersionRow>> {
        let path = path.to_string();
        let rows = match version {
            Some(v) => self.query(secrets::GET_VERSION, &[&path, &v]).await?,
            None => self.query(secrets::GET_LATEST, &[&path]).await?,
        };
        rows.first().map(secrets::version_row).transpose()
    }

    async fn secret_list(&self, prefix: &str) -> StoreResult<Vec<crate::secrets::SecretMetaRow>> {
        let prefix = prefix.to_string();
        let rows = self.query(secrets::LIST, &[&prefix]).await?;
        map_rows(&rows, secrets::meta_row)
    }

    async fn secret_versions(
        &self,
        path: &str,
    ) -> StoreResult<Vec<crate::secrets::SecretVersionInfo>> {
        let path = path.to_string();
        let rows = self.query(secrets::VERSIONS, &[&path]).await?;
        map_rows(&rows, secrets::version_info)
    }

    async fn secret_delete(&self, path: &str) -> StoreResult<u64> {
        let mut pc = self.pool.get().await?;
        pc.conn()?
            .client
            .execute("DELETE FROM secrets WHERE path = $1", &[&path])
            .await
            .map_err(pg_err)
    }

    async fn secret_wrapped_keys(&self) -> StoreResult<Vec<crate::secrets::WrappedKeyRow>> {
        let rows = self.query(secrets::WRAPPED, &[]).await?;
        map_rows(&rows, secrets::wrapped_row)
    }

    async fn secret_master(&self) -> StoreResult<Option<crate::secrets::MasterKeyRow>> {
        let rows = self.query(secrets::MASTER, &[]).await?;
        rows.first().map(secrets::master_row).transpose()
    }

    async fn secret_master_init(&self, row: crate::secrets::MasterKeyRow) -> StoreResult<()> {
        let mut pc = self.pool.get().await?;
        secrets::master_init(&mut pc.conn()?.client, row).await
    }

    async fn secret_rotate(
        &self,
        old_key_id: &str,
        new: crate::secrets::MasterKeyRow,
        rewrapped: Vec<crate::secrets::WrappedKeyRow>,
    ) -> StoreResult<()> {
        let mut pc = self.pool.get().await?;
        secrets::rotate(&mut pc.conn()?.client, old_key_id, new, rewrapped).await
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
        self.target.clone()
    }
}
