//! The storage port of Xyn and its adapters.
//!
//! [`Store`] is the one way the rest of Xyn reads and writes durable state. Writes are whole
//! [`WriteBatch`]es: everything in a batch commits together or not at all, events get their
//! `seq` and chain `hash` inside the same transaction, and the transaction writes an outbox
//! row naming the range of seqs it appended. Adapters: [`sqlite::SqliteStore`] (embedded, the
//! default) and [`postgres::PgStore`] (shared by many processes). Artifact bytes live in a
//! [`blob::BlobStore`], content-addressed by sha256; the database holds their metadata only.
//!
//! Besides the tables, the port offers what many processes need to share work: a run queue
//! with leases ([`Store::claim`], [`QueueWrite`]), the outbox ([`Store::outbox_pending`]),
//! wake-up signals ([`Store::subscribe`]), named singletons ([`Store::lock_singleton`]) and
//! retention with signed checkpoints ([`Store::prune`]).
//!
//! *Architecture Invariant:* an acknowledged commit is durable (fsync'd) before `commit`
//! returns, and a batch whose precondition fails changes nothing.

pub mod blob;
pub mod notify;
pub mod postgres;
pub mod secrets;
pub mod sqlite;

use async_trait::async_trait;
use serde_json::Value;
use xyn_core::event::{ChainReport, Event, StoredEvent};
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft};
use xyn_core::run::{Run, RunStatus, Step, StepStatus};
use xyn_core::{ArtifactId, DraftId, EventId, IdPattern, RunId, Timestamp, XynError};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition of the batch did not hold (the row changed meanwhile, a unique key exists).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or written (disk full, connection lost).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (a row was edited by hand, a bug).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The writer no longer holds the lease of the run it writes (it expired and another
    /// worker took the run over): the batch is refused and the writer must stop driving it.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// The database cannot keep a value it was given (PostgreSQL refuses NUL in text): the
    /// caller's input is at fault, nothing was written.
    #[error("value refused: {0}")]
    Refused(String),
}

impl From<StoreError> for XynError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => XynError::conflict("store.conflict", m),
            StoreError::Unavailable(m) => XynError::unavailable(m),
            StoreError::Corrupt(m) => XynError::internal(format!("corrupt data: {m}")),
            StoreError::LeaseLost(m) => XynError::conflict("run.lease_lost", m),
            StoreError::Refused(m) => XynError::invalid(xyn_core::codes::REQUEST_INVALID_TEXT, m),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A row write with an optional precondition on the row's current status.
#[derive(Clone, Debug)]
pub enum RunWrite {
    Insert(Run),
    /// Replace the row, only if the stored `revision` is `run.revision - 1` (the writer saw
    /// the latest state); when `expect` is set, also only if the stored status is one of them.
    Update {
        run: Run,
        expect: Option<Vec<RunStatus>>,
    },
}

/// A step row write with an optional precondition.
#[derive(Clone, Debug)]
pub enum StepWrite {
    Insert(Step),
    Update {
        step: Step,
        expect: Option<Vec<StepStatus>>,
    },
}

/// A draft row write; updates may require the stored revision.
#[derive(Clone, Debug)]
pub enum DraftWrite {
    Insert(Draft),
    Update {
        draft: Draft,
        expect_revision: Option<i64>,
    },
}

/// A cron slot claimed for a blueprint: unique, so a slot fires at most once.
#[derive(Clone, Debug)]
pub struct CronFire {
    pub blueprint_id: String,
    pub slot: Timestamp,
    pub fired_at: Timestamp,
}

/// Whether a blueprint's trigger (event, NATS subject or cron) starts runs. A blueprint with no
/// row is enabled; writing a row replaces the previous one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlueprintTrigger {
    pub blueprint_id: String,
    pub enabled: bool,
    pub changed_at: Timestamp,
    pub changed_by: String,
}

/// A change to the run queue, committed with the run's own rows.
///
/// The queue holds one row per unfinished run that workers share: the run is *due* at
/// `due_at` (by the store's clock), or *held* by one worker (`owner`) until its lease expires.
/// Steps of a run execute one after another, so the row stands for the run's next runnable
/// step; whoever holds it executes that step (and the ones after it) and nobody else does.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueWrite {
    /// A new run's row. With `owner`, the creating worker holds it at once for `lease_ms`.
    Enqueue {
        run_id: RunId,
        due_at: Option<Timestamp>,
        owner: Option<String>,
        lease_ms: u64,
    },
    /// `owner` still holds the run (the batch is refused with [`StoreError::LeaseLost`]
    /// otherwise) and renews its lease for `lease_ms`.
    Hold {
        run_id: RunId,
        owner: String,
        lease_ms: u64,
    },
    /// `owner` releases the run; it is due again at `due_at` (`None`: it waits for a decision
    /// from outside). Refused with [`StoreError::LeaseLost`] when `owner` does not hold it.
    Park {
        run_id: RunId,
        owner: String,
        due_at: Option<Timestamp>,
    },
    /// The run ended: its row goes (whoever held it).
    Finish { run_id: RunId },
    /// Something outside the run (a gate decision) makes it due at `at`. A held row is left
    /// alone: its holder sees the change when it writes (the run's revision moved).
    Wake { run_id: RunId, at: Timestamp },
    /// Signals workers that hold this run to stop (a cancellation); no row changes.
    Cancel { run_id: RunId },
}

/// Everything that commits together.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub events: Vec<Event>,
    pub runs: Vec<RunWrite>,
    pub steps: Vec<StepWrite>,
    pub footprints: Vec<Footprint>,
    pub artifacts: Vec<Artifact>,
    pub blueprint_versions: Vec<BlueprintVersion>,
    pub drafts: Vec<DraftWrite>,
    pub cron_fires: Vec<CronFire>,
    pub queue: Vec<QueueWrite>,
    pub blueprint_triggers: Vec<BlueprintTrigger>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.runs.is_empty()
            && self.steps.is_empty()
            && self.footprints.is_empty()
            && self.artifacts.is_empty()
            && self.blueprint_versions.is_empty()
            && self.drafts.is_empty()
            && self.cron_fires.is_empty()
            && self.queue.is_empty()
            && self.blueprint_triggers.is_empty()
    }

    /// Appends another batch to this one.
    pub fn extend(&mut self, other: WriteBatch) {
        self.events.extend(other.events);
        self.runs.extend(other.runs);
        self.steps.extend(other.steps);
        self.footprints.extend(other.footprints);
        self.artifacts.extend(other.artifacts);
        self.blueprint_versions.extend(other.blueprint_versions);
        self.drafts.extend(other.drafts);
        self.cron_fires.extend(other.cron_fires);
        self.queue.extend(other.queue);
        self.blueprint_triggers.extend(other.blueprint_triggers);
    }
}

/// A page of results, newest first, with the key to continue from.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `before` to get the next (older) page.
    pub next: Option<i64>,
}

/// Filters for listing events.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Exact name, or a prefix pattern ending in `.*` / `.**` (`checkmk.*`).
    pub event_name: Option<String>,
    pub run_id: Option<RunId>,
    /// Only events whose id matches (a short id typed by someone, say).
    pub id: Option<IdPattern>,
    /// Only events with `seq` below this (keyset pagination).
    pub before: Option<i64>,
    pub limit: usize,
}

/// Filters for listing runs.
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub status: Option<Vec<RunStatus>>,
    pub blueprint_id: Option<String>,
    pub correlation_id: Option<String>,
    /// Only runs whose id matches (a short id typed by someone, say).
    pub id: Option<IdPattern>,
    /// Only runs with a top-level input whose value (a string, number or boolean, as text)
    /// equals this, ignoring case. Values are indexed up to [`INPUT_VALUE_MAX`] characters.
    pub input_value: Option<String>,
    /// Only runs created at or after this time.
    pub created_since: Option<Timestamp>,
    /// Only runs created before this time.
    pub created_until: Option<Timestamp>,
    pub before: Option<i64>,
    pub limit: usize,
}

/// How many characters of an input value the search index keeps (longer values are found by
/// their first characters).
pub const INPUT_VALUE_MAX: usize = 200;

/// The form of an input value as the search index keeps it: ASCII letters in lower case (as
/// both databases' `lower()` under the C collation), at most [`INPUT_VALUE_MAX`] characters.
pub fn input_value_key(v: &str) -> String {
    v.trim_matches(' ')
        .chars()
        .take(INPUT_VALUE_MAX)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Filters for listing artifacts.
#[derive(Clone, Debug, Default)]
pub struct ArtifactQuery {
    pub run_id: Option<RunId>,
    pub step_id: Option<xyn_core::StepId>,
    pub kind: Option<String>,
    pub before: Option<i64>,
    pub limit: usize,
}

/// Filters for listing footprints.
#[derive(Clone, Debug, Default)]
pub struct FootprintQuery {
    pub run_id: Option<RunId>,
    pub metric: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub before: Option<i64>,
    pub limit: usize,
}

/// Filters of a footprint rollup (totals per UTC day and metric).
#[derive(Clone, Debug, Default)]
pub struct FootprintRollupQuery {
    pub run_id: Option<RunId>,
    /// Only these metrics (all when empty).
    pub metrics: Vec<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl FootprintRollupQuery {
    /// Whether the query covers whole UTC days of every run, so that the daily totals the
    /// stores keep as footprints are written answer it without summing the measurements.
    pub fn whole_days(&self) -> bool {
        let aligned = |t: Option<Timestamp>| t.is_none_or(|t| t.as_micros() % DAY_MICROS == 0);
        self.run_id.is_none() && aligned(self.since) && aligned(self.until)
    }
}

/// The total of one metric on one UTC day.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FootprintDay {
    /// Midnight UTC of the day.
    pub day: Timestamp,
    pub metric: String,
    pub unit: String,
    pub total: f64,
    /// Measurements added up.
    pub count: u64,
}

/// Microseconds in a day.
pub const DAY_MICROS: i64 = 86_400_000_000;

/// Adds footprints up by (day, metric), ordered by day then metric. Adapters may compute the
/// same in their database; this is the reference.
pub fn rollup_footprints<'a>(items: impl IntoIterator<Item = &'a Footprint>) -> Vec<FootprintDay> {
    let mut m: std::collections::BTreeMap<(i64, String), FootprintDay> = Default::default();
    for f in items {
        let day = f.occurred_at.as_micros().div_euclid(DAY_MICROS) * DAY_MICROS;
        let e = m
            .entry((day, f.metric.clone()))
            .or_insert_with(|| FootprintDay {
                day: Timestamp::from_micros(day),
                metric: f.metric.clone(),
                unit: f.unit.clone(),
                total: 0.0,
                count: 0,
            });
        e.total += f.quantity;
        e.count += 1;
    }
    m.into_values().collect()
}

/// Counters that show what the store did (for tests and `doctor`).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StoreStats {
    /// Read queries executed.
    pub reads: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Batches committed (several batches share a transaction under load).
    pub batches: u64,
    /// Events appended.
    pub events: u64,
}

/// A run claimed from the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub run_id: RunId,
    /// How many times the run has been claimed (1 the first time).
    pub claims: i64,
    /// The previous holder's lease had expired (it died or stalled): its running step, if
    /// any, was interrupted and is retried with the next attempt number.
    pub expired: bool,
}

/// A run with its steps and the event that triggered it (see [`Store::load_runs`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedRun {
    pub run: Run,
    pub steps: Vec<Step>,
    pub trigger: Option<StoredEvent>,
}

/// What [`Store::claim`] got, and when the next claim could get more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    pub runs: Vec<Claim>,
    /// The earliest time (store clock) at which a queued run falls due or a held lease
    /// expires; `None` when the queue holds nothing that will ever fall due by itself.
    pub next_due: Option<Timestamp>,
}

/// The queue at a glance (for `doctor`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Unfinished runs in the queue.
    pub queued: i64,
    /// Of them, due now and not held.
    pub due: i64,
    /// Held by a worker under a live lease.
    pub held: i64,
    /// Held under a lease that has expired (their worker died or stalled).
    pub expired: i64,
    /// Distinct workers holding leases.
    pub owners: i64,
}

/// One outbox row: the events `first_seq..=last_seq`, appended by one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRange {
    pub id: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub created_at: Timestamp,
}

/// How far the outbox dispatcher is behind.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxLag {
    /// Unpublished outbox rows and the events they cover.
    pub pending_rows: i64,
    pub pending_events: i64,
    /// When the oldest unpublished row was written.
    pub oldest_pending_at: Option<Timestamp>,
    /// The last seq published.
    pub published_seq: Option<i64>,
}

/// A wake-up from the store: something another task or process committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Runs became due in the queue.
    Work,
    /// Events were appended (the outbox has rows).
    Outbox,
    /// Blueprint versions were written.
    Catalog,
    /// A run was cancelled; whoever executes it should stop.
    Cancel(RunId),
    /// The store reconnected: signals may have been missed, look again.
    Reconnected,
}

/// The verified point a pruned log starts from: the last pruned event's `seq` and `hash`,
/// signed (Ed25519) so that a log whose prefix was removed by retention can still be verified.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub created_at: Timestamp,
    /// Hex Ed25519 public key and signature over [`Checkpoint::signed_bytes`].
    pub public_key: String,
    pub signature: String,
}

impl Checkpoint {
    /// The bytes that are signed: `xyn-checkpoint:v1:<seq>:<hash>:<created_at micros>`.
    pub fn signed_bytes(seq: i64, hash: &str, created_at: Timestamp) -> Vec<u8> {
        format!("xyn-checkpoint:v1:{seq}:{hash}:{}", created_at.as_micros()).into_bytes()
    }
}

/// Signs checkpoints (the key lives outside the database).
pub trait CheckpointSigner: Send + Sync {
    /// Hex public key.
    fn public_key(&self) -> String;
    /// Hex signature of `bytes`.
    fn sign(&self, bytes: &[u8]) -> String;
}

/// What a retention pass removed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PruneReport {
    pub events_removed: i64,
    pub outbox_rows_removed: i64,
    pub footprints_rolled_up: i64,
    pub rollup_rows_written: i64,
    /// The checkpoint written (the last pruned event), when events were removed.
    pub checkpoint: Option<Checkpoint>,
}

/// A named lock held across processes until the guard is dropped.
pub struct SingletonGuard {
    _hold: Box<dyn std::any::Any + Send + Sync>,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SingletonGuard {
    /// `lost` turns true when the lock went away without the guard being dropped (the
    /// database connection that held it broke).
    pub fn new(
        hold: Box<dyn std::any::Any + Send + Sync>,
        lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self { _hold: hold, lost }
    }

    /// True when the lock is no longer held: take it again before acting as its holder.
    pub fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The runs of one blueprint in one status (see [`Store::blueprint_run_counts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlueprintRunCount {
    pub blueprint_id: String,
    pub status: String,
    pub runs: u64,
    /// When the newest run counted here was created.
    pub last_created_at: Option<Timestamp>,
}

/// The storage port.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commits a batch atomically and durably; returns its events with `seq` and `hash`.
    async fn commit(&self, batch: WriteBatch) -> StoreResult<Vec<StoredEvent>>;

    async fn get_event(&self, id: EventId) -> StoreResult<Option<StoredEvent>>;
    /// Newest first.
    async fn list_events(&self, q: EventQuery) -> StoreResult<Page<StoredEvent>>;
    /// Oldest first, `seq > after`, at most `limit`.
    async fn events_after(&self, after: i64, limit: usize) -> StoreResult<Vec<StoredEvent>>;
    /// The last `(seq, hash)` of the chain as recorded beside the log.
    async fn chain_head(&self) -> StoreResult<Option<(i64, String)>>;
    /// Walks the whole log and checks the hash chain; after retention, from the latest
    /// checkpoint (whose signature the caller checks, see [`Store::checkpoint`]).
    async fn verify_chain(&self) -> StoreResult<ChainReport>;

    async fn get_run(&self, id: RunId) -> StoreResult<Option<Run>>;
    async fn list_runs(&self, q: RunQuery) -> StoreResult<Page<Run>>;
    async fn get_steps(&self, run: RunId) -> StoreResult<Vec<Step>>;
    /// Runs that are not finished (to resume after a restart).
    async fn unfinished_runs(&self) -> StoreResult<Vec<RunId>>;
    /// Several runs at once with their steps and triggering events (a claimed batch); ids
    /// without a run are left out.
    async fn load_runs(&self, ids: &[RunId]) -> StoreResult<Vec<LoadedRun>>;

    async fn get_artifact(&self, id: ArtifactId) -> StoreResult<Option<Artifact>>;
    async fn list_artifacts(&self, q: ArtifactQuery) -> StoreResult<Page<Artifact>>;

    /// The latest version of every blueprint.
    async fn blueprint_heads(&self) -> StoreResult<Vec<BlueprintVersion>>;
    /// One version, or the latest when `version` is `None`.
    async fn get_blueprint(
        &self,
        id: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<BlueprintVersion>>;
    async fn list_blueprint_versions(&self, id: &str) -> StoreResult<Vec<BlueprintVersion>>;
    /// How many runs each blueprint has in each status, and when its newest run in that status
    /// was created. Read from an aggregate the store keeps up to date as runs are written, so
    /// the cost grows with the number of blueprints, not of runs.
    async fn blueprint_run_counts(&self) -> StoreResult<Vec<BlueprintRunCount>>;
    /// The trigger switch of every blueprint that has one, ordered by blueprint id (a
    /// blueprint with none is enabled).
    async fn blueprint_triggers(&self) -> StoreResult<Vec<BlueprintTrigger>>;

    async fn get_draft(&self, id: DraftId) -> StoreResult<Option<Draft>>;
    async fn list_drafts(&self, before: Option<i64>, limit: usize) -> StoreResult<Page<Draft>>;

    async fn list_footprints(&self, q: FootprintQuery) -> StoreResult<Page<Footprint>>;

    /// Footprint totals per UTC day and metric, ordered by day then metric: the same as
    /// [`rollup_footprints`] over the matching footprints. Adapters answer a
    /// [whole-day](FootprintRollupQuery::whole_days) query from the daily totals they keep.
    async fn footprint_rollup(&self, q: FootprintRollupQuery) -> StoreResult<Vec<FootprintDay>>;

    /// The latest cron slot claimed for a blueprint.
    async fn last_cron_slot(&self, blueprint_id: &str) -> StoreResult<Option<Timestamp>>;

    /// Claims up to `limit` runs that are due, or whose lease expired, for `owner`, holding
    /// each for `lease_ms` (store clock). Two callers never get the same run while its lease
    /// lives (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
    async fn claim(&self, owner: &str, limit: usize, lease_ms: u64) -> StoreResult<Claimed>;
    /// Renews every lease `owner` holds (the heartbeat); returns the runs it still holds.
    async fn renew_leases(&self, owner: &str, lease_ms: u64) -> StoreResult<Vec<RunId>>;
    async fn queue_stats(&self) -> StoreResult<QueueStats>;

    /// Unpublished outbox rows in seq order, at most `limit`.
    async fn outbox_pending(&self, limit: usize) -> StoreResult<Vec<OutboxRange>>;
    /// Marks outbox rows published.
    async fn mark_published(&self, ids: &[i64], at: Timestamp) -> StoreResult<()>;
    async fn outbox_lag(&self) -> StoreResult<OutboxLag>;

    /// Wake-ups for what this and (on a shared store) other processes commit.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Signal>;
    /// Waits until this caller is the only holder of `name` across every process using the
    /// store (an outbox dispatcher, say); held until the guard is dropped. Blocks in the
    /// database, never polls.
    async fn lock_singleton(&self, name: &str) -> StoreResult<SingletonGuard>;

    /// Removes events that occurred before `cutoff` (a prefix of the log, never past the last
    /// published outbox row when `keep_unpublished`), writing a signed checkpoint of the last
    /// removed event, and rolls footprints older than `cutoff` up into daily sums.
    async fn prune(
        &self,
        cutoff: Timestamp,
        keep_unpublished: bool,
        signer: &dyn CheckpointSigner,
        now: Timestamp,
    ) -> StoreResult<PruneReport>;
    /// The latest retention checkpoint, if the log was ever pruned.
    async fn checkpoint(&self) -> StoreResult<Option<Checkpoint>>;
    /// Schema version applied and the newest this build knows.
    async fn schema_version(&self) -> StoreResult<(i64, i64)>;

    // The encrypted secret store's rows (`secrets.rs`): bytes in, bytes out.

    /// Adds a version; refused with a conflict unless `row.version` is the path's latest + 1.
    async fn secret_put(&self, row: secrets::SecretVersionRow) -> StoreResult<()>;
    /// The given version of a secret, or its latest.
    async fn secret_get(
        &self,
        path: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<secrets::SecretVersionRow>>;
    /// Every secret whose path starts with `prefix`, by path.
    async fn secret_list(&self, prefix: &str) -> StoreResult<Vec<secrets::SecretMetaRow>>;
    /// A secret's versions, oldest first.
    async fn secret_versions(&self, path: &str) -> StoreResult<Vec<secrets::SecretVersionInfo>>;
    /// Removes every version of a secret; the number of versions removed.
    async fn secret_delete(&self, path: &str) -> StoreResult<u64>;
    /// Every wrapped data key (what master-key rotation rewraps).
    async fn secret_wrapped_keys(&self) -> StoreResult<Vec<secrets::WrappedKeyRow>>;
    /// The master key's description, once one was set.
    async fn secret_master(&self) -> StoreResult<Option<secrets::MasterKeyRow>>;
    /// Sets the master key's description; a conflict when one is set already.
    async fn secret_master_init(&self, row: secrets::MasterKeyRow) -> StoreResult<()>;
    /// In one transaction: replaces the master key `old_key_id` by `new` and every wrapped
    /// data key by its rewrapped form. A conflict, changing nothing, when the master key is
    /// not `old_key_id` any more or a version wrapped by it is not in `rewrapped`.
    async fn secret_rotate(
        &self,
        old_key_id: &str,
        new: secrets::MasterKeyRow,
        rewrapped: Vec<secrets::WrappedKeyRow>,
    ) -> StoreResult<()>;

    /// Counters of what the store did since it was opened.
    fn stats(&self) -> StoreStats;

    /// A short description for logs and `doctor` (`sqlite:/path/xyn.db`).
    fn describe(&self) -> String;
}

/// Parses JSON stored as text; a bad row is reported, not panicked on.
pub(crate) fn parse_json(s: &str, what: &str) -> StoreResult<Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
