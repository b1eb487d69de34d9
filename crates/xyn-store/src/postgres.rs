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

mod columns;
mod listen;
mod pool;
mod query;
mod queue;
mod retention;
mod rows;
mod schema;
mod secrets;
mod writer;

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
    ArtifactQuery, BlueprintRunCount, BlueprintTrigger, Checkpoint, CheckpointSigner, Claim,
    Claimed, DAY_MICROS, DraftWrite, EventQuery, FootprintDay, FootprintQuery,
    FootprintRollupQuery, LoadedRun, OutboxLag, OutboxRange, Page, PruneReport, QueueStats,
    QueueWrite, RunQuery, RunWrite, Signal, SingletonGuard, StepWrite, Store, StoreError,
    StoreResult, StoreStats, WriteBatch,
};
use columns::*;
use listen::*;
use pool::*;
use query::*;
use schema::migrate;
use writer::*;

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
        // A search by input value walks that value's index entries newest first (one per run)
        // and stops after a page, however many runs share the value.
        let (from, pk) = match &q.input_value {
            Some(v) => {
                args.push(Box::new(crate::input_value_key(v)));
                conds.push(format!("v.value = ${}", args.len()));
                (
                    "run_input_values AS v JOIN runs ON runs.id = v.run_pk",
                    "v.run_pk",
                )
            }
            None => ("runs", "id"),
        };
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
            conds.push(format!("{pk} < ${}", args.len()));
        }
        let lim = limit(q.limit);
        let sql = format!(
            "SELECT {pk}, {RUN_COLS} FROM {from} {} ORDER BY {pk} DESC LIMIT {}",
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

    async fn blueprint_run_counts(&self) -> StoreResult<Vec<BlueprintRunCount>> {
        let rows = self.query(query::BLUEPRINT_RUN_COUNTS, &[]).await?;
        map_rows(&rows, query::blueprint_run_count)
    }

    async fn blueprint_triggers(&self) -> StoreResult<Vec<BlueprintTrigger>> {
        let rows = self.query(query::BLUEPRINT_TRIGGERS, &[]).await?;
        map_rows(&rows, query::blueprint_trigger)
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

    async fn footprint_rollup(&self, q: FootprintRollupQuery) -> StoreResult<Vec<FootprintDay>> {
        // Whole days of every run come from the daily totals the triggers keep; anything
        // narrower sums the measurements.
        let whole = q.whole_days();
        let time = if whole { "day" } else { "occurred_at" };
        let mut args: Params = Vec::new();
        let mut conds = Vec::new();
        if let Some(r) = q.run_id {
            args.push(Box::new(r.to_string()));
            conds.push(format!("run_id = ${}", args.len()));
        }
        if !q.metrics.is_empty() {
            args.push(Box::new(q.metrics.clone()));
            conds.push(format!("metric = ANY(${})", args.len()));
        }
        if let Some(s) = q.since {
            args.push(Box::new(s.as_micros()));
            conds.push(format!("{time} >= ${}", args.len()));
        }
        if let Some(u) = q.until {
            args.push(Box::new(u.as_micros()));
            conds.push(format!("{time} < ${}", args.len()));
        }
        let wh = where_clause(&conds);
        let sql = if whole {
            format!(
                "SELECT day, metric, unit, total, samples FROM footprint_days {wh} ORDER BY day, metric"
            )
        } else {
            // Floor division also for instants before 1970.
            format!(
                "SELECT occurred_at - ((occurred_at % {DAY_MICROS}) + {DAY_MICROS}) % {DAY_MICROS} AS d, \
                        metric, MIN(unit), SUM(quantity), COUNT(*)::BIGINT FROM footprints {wh} \
                 GROUP BY 1, 2 ORDER BY 1, 2"
            )
        };
        let rows = self.query_p(&sql, args).await?;
        rows.iter()
            .map(|r| {
                let bad = |e: tokio_postgres::Error| {
                    StoreError::Unavailable(format!("cannot read a footprint total: {e}"))
                };
                Ok(FootprintDay {
                    day: Timestamp::from_micros(r.try_get(0).map_err(bad)?),
                    metric: r.try_get(1).map_err(bad)?,
                    unit: r.try_get(2).map_err(bad)?,
                    total: r.try_get(3).map_err(bad)?,
                    count: r.try_get::<_, i64>(4).map_err(bad)?.max(0) as u64,
                })
            })
            .collect()
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
        self.claim_due(owner, limit_n, lease_ms).await
    }

    async fn renew_leases(&self, owner: &str, lease_ms: u64) -> StoreResult<Vec<RunId>> {
        self.renew_held(owner, lease_ms).await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.count_queue().await
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
        self.prune_log(cutoff, keep_unpublished, signer, now).await
    }

    async fn checkpoint(&self) -> StoreResult<Option<Checkpoint>> {
        self.latest_checkpoint().await
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
