//! The storage port of Xyn and its adapters.
//!
//! [`Store`] is the one way the rest of Xyn reads and writes durable state. Writes are whole
//! [`WriteBatch`]es: everything in a batch commits together or not at all, events get their
//! `seq` and chain `hash` inside the same transaction, and the transaction writes an outbox
//! row naming the range of seqs it appended. Adapters: [`sqlite::SqliteStore`] (embedded, the default). Artifact bytes live in a
//! [`blob::BlobStore`], content-addressed by sha256; the database holds their metadata only.
//!
//! *Architecture Invariant:* an acknowledged commit is durable (fsync'd) before `commit`
//! returns, and a batch whose precondition fails changes nothing.

pub mod blob;
pub mod notify;
pub mod sqlite;

use async_trait::async_trait;
use serde_json::Value;
use xyn_core::event::{ChainReport, Event, StoredEvent};
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft};
use xyn_core::run::{Run, RunStatus, Step, StepStatus};
use xyn_core::{ArtifactId, DraftId, EventId, RunId, Timestamp, XynError};

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
}

impl From<StoreError> for XynError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => XynError::conflict("store.conflict", m),
            StoreError::Unavailable(m) => XynError::unavailable(m),
            StoreError::Corrupt(m) => XynError::internal(format!("corrupt data: {m}")),
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
    pub before: Option<i64>,
    pub limit: usize,
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
    /// Walks the whole log and checks the hash chain.
    async fn verify_chain(&self) -> StoreResult<ChainReport>;

    async fn get_run(&self, id: RunId) -> StoreResult<Option<Run>>;
    async fn list_runs(&self, q: RunQuery) -> StoreResult<Page<Run>>;
    async fn get_steps(&self, run: RunId) -> StoreResult<Vec<Step>>;
    /// Runs that are not finished (to resume after a restart).
    async fn unfinished_runs(&self) -> StoreResult<Vec<RunId>>;

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

    async fn get_draft(&self, id: DraftId) -> StoreResult<Option<Draft>>;
    async fn list_drafts(&self, before: Option<i64>, limit: usize) -> StoreResult<Page<Draft>>;

    async fn list_footprints(&self, q: FootprintQuery) -> StoreResult<Page<Footprint>>;

    /// Footprint totals per UTC day and metric, ordered by day then metric. The default pages
    /// through [`Store::list_footprints`]; adapters may aggregate in the database instead.
    async fn footprint_rollup(&self, q: FootprintRollupQuery) -> StoreResult<Vec<FootprintDay>> {
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .list_footprints(FootprintQuery {
                    run_id: q.run_id,
                    metric: None,
                    since: q.since,
                    until: q.until,
                    before,
                    limit: 1000,
                })
                .await?;
            all.extend(
                page.items
                    .into_iter()
                    .filter(|f| q.metrics.is_empty() || q.metrics.contains(&f.metric)),
            );
            match page.next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        Ok(rollup_footprints(&all))
    }

    /// The latest cron slot claimed for a blueprint.
    async fn last_cron_slot(&self, blueprint_id: &str) -> StoreResult<Option<Timestamp>>;

    /// Counters of what the store did since it was opened.
    fn stats(&self) -> StoreStats;

    /// A short description for logs and `doctor` (`sqlite:/path/xyn.db`).
    fn describe(&self) -> String;
}

/// Parses JSON stored as text; a bad row is reported, not panicked on.
pub(crate) fn parse_json(s: &str, what: &str) -> StoreResult<Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
