//! A [`Store`] wrapper that tells subscribers about committed events, so live views (the
//! API's Server-Sent Events, the UI's event console) are pushed new events instead of
//! polling the database.
//!
//! The feed is in-process and best-effort: a subscriber that falls behind (the channel is
//! bounded) or sees a gap in `seq` (concurrent commits may announce out of order) catches up
//! by reading [`Store::events_after`] from the last `seq` it delivered. The store stays the
//! source of truth; the feed only says "there is more".
//!
//! On a shared store other processes commit too (workers, other API nodes). Their events are
//! announced as well: the store's [`Signal::Outbox`] wake-ups (LISTEN/NOTIFY on PostgreSQL)
//! make the wrapper read what was appended after the last announced `seq`, but only while
//! someone is subscribed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::broadcast;
use xyn_core::event::{ChainReport, StoredEvent};
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft};
use xyn_core::run::{Run, Step};
use xyn_core::{ArtifactId, DraftId, EventId, RunId, Timestamp};

use crate::{
    ArtifactQuery, BlueprintRunCount, BlueprintTrigger, Checkpoint, CheckpointSigner, Claimed,
    EventQuery, FootprintDay, FootprintQuery, FootprintRollupQuery, LoadedRun, OutboxLag,
    OutboxRange, Page, PruneReport, QueueStats, RunQuery, Signal, SingletonGuard, Store,
    StoreResult, StoreStats, WriteBatch,
};

/// Events of one commit, in `seq` order.
pub type Committed = Arc<[StoredEvent]>;

/// Subscribes to committed events.
#[derive(Clone)]
pub struct EventFeed {
    tx: broadcast::Sender<Committed>,
    writes: Arc<WriteHealth>,
}

/// Whether the store accepts writes, as the last commit found (no query of its own: an idle
/// node stays idle). A commit that fails with [`crate::StoreError::Unavailable`] (disk full,
/// connection lost) marks it failing; the next successful commit clears it.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: AtomicBool,
    failures: AtomicU64,
}

impl WriteHealth {
    /// The last commit failed because the store could not write.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
    /// Commits that failed so since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
    fn note<T>(&self, r: &StoreResult<T>) {
        match r {
            Ok(_) => {
                if self.failing.load(Ordering::Relaxed) {
                    self.failing.store(false, Ordering::Relaxed);
                }
            }
            Err(crate::StoreError::Unavailable(_)) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.failing.store(true, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}

impl EventFeed {
    /// A receiver of every commit from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.tx.subscribe()
    }

    /// Number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Whether the store accepts writes, as the last commit found.
    pub fn writes(&self) -> &WriteHealth {
        &self.writes
    }
}

/// Wraps a store; every successful commit with events is announced on the feed.
pub struct NotifyingStore {
    inner: Arc<dyn Store>,
    tx: broadcast::Sender<Committed>,
    /// The highest `seq` announced so far.
    announced: Arc<AtomicI64>,
    writes: Arc<WriteHealth>,
    observer: Option<Arc<dyn CommitObserver>>,
}

/// Told about every commit made through this process's store (metrics). Called on the
/// committing task: it must be quick and must not block.
pub trait CommitObserver: Send + Sync {
    /// A commit succeeded: the batch's agent footprints (LLM usage), the events as stored,
    /// and how long the commit took.
    fn committed(
        &self,
        footprints: &[Footprint],
        events: &[StoredEvent],
        elapsed: std::time::Duration,
    );
    /// A commit failed (conflicts and refusals included).
    fn failed(&self, elapsed: std::time::Duration);
}

impl NotifyingStore {
    /// `capacity` commits are buffered per subscriber before it must catch up from the store.
    /// Needs a Tokio runtime: a task relays other processes' commits.
    pub fn new(inner: Arc<dyn Store>, capacity: usize) -> (Self, EventFeed) {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let announced = Arc::new(AtomicI64::new(-1));
        tokio::spawn(relay(inner.clone(), tx.clone(), announced.clone()));
        let writes = Arc::new(WriteHealth::default());
        (
            Self {
                inner,
                announced,
                tx: tx.clone(),
                writes: writes.clone(),
                observer: None,
            },
            EventFeed { tx, writes },
        )
    }

    fn announce(&self, result: StoreResult<Vec<StoredEvent>>) -> StoreResult<Vec<StoredEvent>> {
        self.writes.note(&result);
        let events = result?;
        // Whoever raises `announced` first (this commit or the relay) announces; a subscriber
        // that then sees a gap reads it from the store.
        if let Some(last) = events.last()
            && self.announced.fetch_max(last.seq, Ordering::SeqCst) < last.seq
            && self.tx.receiver_count() > 0
        {
            let _ = self.tx.send(events.clone().into());
        }
        Ok(events)
    }

    /// Tells `observer` about every commit made through this wrapper.
    pub fn with_observer(mut self, observer: Arc<dyn CommitObserver>) -> Self {
        self.observer = Some(observer);
        self
    }
}

#[async_trait]
impl Store for NotifyingStore {
    async fn commit(&self, batch: WriteBatch) -> StoreResult<Vec<StoredEvent>> {
        let Some(observer) = &self.observer else {
            return self.announce(self.inner.commit(batch).await);
        };
        // The agents' footprints (LLM usage) are handed over after the commit; the batch
        // itself moves into the store. Most commits have none: no allocation then.
        let started = std::time::Instant::now();
        let footprints: Vec<Footprint> = batch
            .footprints
            .iter()
            .filter(|f| f.source_kind == "agent")
            .cloned()
            .collect();
        let result = self.inner.commit(batch).await;
        match &result {
            Ok(events) => observer.committed(&footprints, events, started.elapsed()),
            Err(_) => observer.failed(started.elapsed()),
        }
        self.announce(result)
    }
    async fn get_event(&self, id: EventId) -> StoreResult<Option<StoredEvent>> {
        self.inner.get_event(id).await
    }
    async fn list_events(&self, q: EventQuery) -> StoreResult<Page<StoredEvent>> {
        self.inner.list_events(q).await
    }
    async fn events_after(&self, after: i64, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        self.inner.events_after(after, limit).await
    }
    async fn chain_head(&self) -> StoreResult<Option<(i64, String)>> {
        self.inner.chain_head().await
    }
    async fn verify_chain(&self) -> StoreResult<ChainReport> {
        self.inner.verify_chain().await
    }
    async fn get_run(&self, id: RunId) -> StoreResult<Option<Run>> {
        self.inner.get_run(id).await
    }
    async fn list_runs(&self, q: RunQuery) -> StoreResult<Page<Run>> {
        self.inner.list_runs(q).await
    }
    async fn get_steps(&self, run: RunId) -> StoreResult<Vec<Step>> {
        self.inner.get_steps(run).await
    }
    async fn unfinished_runs(&self) -> StoreResult<Vec<RunId>> {
        self.inner.unfinished_runs().await
    }
    async fn get_artifact(&self, id: ArtifactId) -> StoreResult<Option<Artifact>> {
        self.inner.get_artifact(id).await
    }
    async fn list_artifacts(&self, q: ArtifactQuery) -> StoreResult<Page<Artifact>> {
        self.inner.list_artifacts(q).await
    }
    async fn blueprint_heads(&self) -> StoreResult<Vec<BlueprintVersion>> {
        self.inner.blueprint_heads().await
    }
    async fn get_blueprint(
        &self,
        id: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<BlueprintVersion>> {
        self.inner.get_blueprint(id, version).await
    }
    async fn list_blueprint_versions(&self, id: &str) -> StoreResult<Vec<BlueprintVersion>> {
        self.inner.list_blueprint_versions(id).await
    }
    async fn blueprint_run_counts(&self) -> StoreResult<Vec<BlueprintRunCount>> {
        self.inner.blueprint_run_counts().await
    }
    async fn blueprint_triggers(&self) -> StoreResult<Vec<BlueprintTrigger>> {
        self.inner.blueprint_triggers().await
    }
    async fn get_draft(&self, id: DraftId) -> StoreResult<Option<Draft>> {
        self.inner.get_draft(id).await
    }
    async fn list_drafts(&self, before: Option<i64>, limit: usize) -> StoreResult<Page<Draft>> {
        self.inner.list_drafts(before, limit).await
    }
    async fn list_footprints(&self, q: FootprintQuery) -> StoreResult<Page<Footprint>> {
        self.inner.list_footprints(q).await
    }
    async fn footprint_rollup(&self, q: FootprintRollupQuery) -> StoreResult<Vec<FootprintDay>> {
        self.inner.footprint_rollup(q).await
    }
    async fn last_cron_slot(&self, blueprint_id: &str) -> StoreResult<Option<Timestamp>> {
        self.inner.last_cron_slot(blueprint_id).await
    }
    async fn load_runs(&self, ids: &[RunId]) -> StoreResult<Vec<LoadedRun>> {
        self.inner.load_runs(ids).await
    }
    async fn claim(&self, owner: &str, limit: usize, lease_ms: u64) -> StoreResult<Claimed> {
        self.inner.claim(owner, limit, lease_ms).await
    }
    async fn renew_leases(&self, owner: &str, lease_ms: u64) -> StoreResult<Vec<RunId>> {
        self.inner.renew_leases(owner, lease_ms).await
    }
    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.inner.queue_stats().await
    }
    async fn outbox_pending(&self, limit: usize) -> StoreResult<Vec<OutboxRange>> {
        self.inner.outbox_pending(limit).await
    }
    async fn mark_published(&self, ids: &[i64], at: Timestamp) -> StoreResult<()> {
        self.inner.mark_published(ids, at).await
    }
    async fn outbox_lag(&self) -> StoreResult<OutboxLag> {
        self.inner.outbox_lag().await
    }
    fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.inner.subscribe()
    }
    async fn lock_singleton(&self, name: &str) -> StoreResult<SingletonGuard> {
        self.inner.lock_singleton(name).await
    }
    async fn prune(
        &self,
        cutoff: Timestamp,
        keep_unpublished: bool,
        signer: &dyn CheckpointSigner,
        now: Timestamp,
    ) -> StoreResult<PruneReport> {
        self.inner
            .prune(cutoff, keep_unpublished, signer, now)
            .await
    }
    async fn checkpoint(&self) -> StoreResult<Option<Checkpoint>> {
        self.inner.checkpoint().await
    }
    async fn schema_version(&self) -> StoreResult<(i64, i64)> {
        self.inner.schema_version().await
    }
    async fn secret_put(&self, row: crate::secrets::SecretVersionRow) -> StoreResult<()> {
        self.inner.secret_put(row).await
    }
    async fn secret_get(
        &self,
        path: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<crate::secrets::SecretVersionRow>> {
        self.inner.secret_get(path, version).await
    }
    async fn secret_list(&self, prefix: &str) -> StoreResult<Vec<crate::secrets::SecretMetaRow>> {
        self.inner.secret_list(prefix).await
    }
    async fn secret_versions(
        &self,
        path: &str,
    ) -> StoreResult<Vec<crate::secrets::SecretVersionInfo>> {
        self.inner.secret_versions(path).await
    }
    async fn secret_delete(&self, path: &str) -> StoreResult<u64> {
        self.inner.secret_delete(path).await
    }
    async fn secret_wrapped_keys(&self) -> StoreResult<Vec<crate::secrets::WrappedKeyRow>> {
        self.inner.secret_wrapped_keys().await
    }
    async fn secret_master(&self) -> StoreResult<Option<crate::secrets::MasterKeyRow>> {
        self.inner.secret_master().await
    }
    async fn secret_master_init(&self, row: crate::secrets::MasterKeyRow) -> StoreResult<()> {
        self.inner.secret_master_init(row).await
    }
    async fn secret_rotate(
        &self,
        old_key_id: &str,
        new: crate::secrets::MasterKeyRow,
        rewrapped: Vec<crate::secrets::WrappedKeyRow>,
    ) -> StoreResult<()> {
        self.inner.secret_rotate(old_key_id, new, rewrapped).await
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Announces events other processes appended: on each outbox signal, while someone listens,
/// reads what follows the last announced `seq`.
async fn relay(inner: Arc<dyn Store>, tx: broadcast::Sender<Committed>, announced: Arc<AtomicI64>) {
    let mut signals = inner.subscribe();
    loop {
        match signals.recv().await {
            Ok(Signal::Outbox | Signal::Reconnected)
            | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
        if tx.receiver_count() == 0 {
            continue;
        }
        let mut from = announced.load(Ordering::SeqCst);
        if from < 0 {
            // Nothing announced yet: history is not news; start at the current head.
            if let Ok(Some((seq, _))) = inner.chain_head().await {
                announced.fetch_max(seq, Ordering::SeqCst);
            }
            continue;
        }
        loop {
            let got = match inner.events_after(from, 500).await {
                Ok(e) => e,
                Err(_) => break,
            };
            let Some(last) = got.last().map(|e| e.seq) else {
                break;
            };
            let more = got.len() == 500;
            if announced.fetch_max(last, Ordering::SeqCst) < last {
                let _ = tx.send(got.into());
            }
            from = last;
            if !more {
                break;
            }
        }
    }
}
