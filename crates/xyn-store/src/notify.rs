//! A [`Store`] wrapper that tells subscribers about committed events, so live views (the
//! API's Server-Sent Events, the UI's event console) are pushed new events instead of
//! polling the database.
//!
//! The feed is in-process and best-effort: a subscriber that falls behind (the channel is
//! bounded) or sees a gap in `seq` (concurrent commits may announce out of order) catches up
//! by reading [`Store::events_after`] from the last `seq` it delivered. The store stays the
//! source of truth; the feed only says "there is more".

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;
use xyn_core::event::{ChainReport, StoredEvent};
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft};
use xyn_core::run::{Run, Step};
use xyn_core::{ArtifactId, DraftId, EventId, RunId, Timestamp};

use crate::{
    ArtifactQuery, EventQuery, FootprintDay, FootprintQuery, FootprintRollupQuery, Page, RunQuery,
    Store, StoreResult, StoreStats, WriteBatch,
};

/// Events of one commit, in `seq` order.
pub type Committed = Arc<[StoredEvent]>;

/// Subscribes to committed events.
#[derive(Clone)]
pub struct EventFeed {
    tx: broadcast::Sender<Committed>,
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
}

/// Wraps a store; every successful commit with events is announced on the feed.
pub struct NotifyingStore {
    inner: Arc<dyn Store>,
    tx: broadcast::Sender<Committed>,
}

impl NotifyingStore {
    /// `capacity` commits are buffered per subscriber before it must catch up from the store.
    pub fn new(inner: Arc<dyn Store>, capacity: usize) -> (Self, EventFeed) {
        let (tx, _) = broadcast::channel(capacity.max(1));
        (
            Self {
                inner,
                tx: tx.clone(),
            },
            EventFeed { tx },
        )
    }
}

#[async_trait]
impl Store for NotifyingStore {
    async fn commit(&self, batch: WriteBatch) -> StoreResult<Vec<StoredEvent>> {
        let events = self.inner.commit(batch).await?;
        if !events.is_empty() && self.tx.receiver_count() > 0 {
            let _ = self.tx.send(events.clone().into());
        }
        Ok(events)
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
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}
