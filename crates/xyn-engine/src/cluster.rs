//! Many processes on one shared store: the run queue, leases and wake-ups.
//!
//! On a shared store (PostgreSQL) a run that has work is a row in the store's run queue.
//! Workers *claim* due rows (`FOR UPDATE SKIP LOCKED`), drive the run — its next runnable
//! step and the ones after it — and *park* it (a retry's time, a gate's deadline) or
//! *finish* it, in the same transaction as the run's own rows. While a worker drives a run it
//! holds the row's lease: every write it makes checks and renews it, and a heartbeat renews
//! all its leases every third of the lease. A worker that dies stops renewing; once the lease
//! expires another worker claims the run, and the step that was running is retried with the
//! next attempt number (`RunMachine::interrupt_running`). A worker whose lease was taken over
//! is refused on its next write and stops.
//!
//! Nothing polls. Claims happen when the store signals work (`LISTEN/NOTIFY` on PostgreSQL),
//! when a run falls due (a timer set to the earliest due time the last claim reported) and
//! when a driver frees capacity. An idle cluster sends no query but the heartbeats of leases
//! that are held.
//!
//! *Architecture Invariant:* a run is driven by at most one process at a time while its lease
//! lives; API processes change runs only through revision-checked writes and wake the queue.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use xyn_core::run::RunMachine;
use xyn_core::{RunId, Timestamp};
use xyn_store::Signal;

use crate::Node;
use crate::scheduler::Work;

/// What a process does in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This process's name in lease rows (unique per process).
    pub owner: String,
    /// How long a lease lives without renewal.
    pub lease_ms: u64,
    /// True when this process executes runs (`--role all` or `worker`); false for `api`.
    pub execute: bool,
}

/// The runs this process holds leases on.
#[derive(Default)]
pub(crate) struct Held {
    runs: Mutex<HashSet<RunId>>,
    pub(crate) changed: Notify,
}

impl Held {
    pub(crate) fn insert(&self, r: RunId) {
        let first = {
            let mut h = self.runs.lock().unwrap_or_else(|e| e.into_inner());
            h.insert(r);
            h.len() == 1
        };
        if first {
            self.changed.notify_one();
        }
    }

    pub(crate) fn remove(&self, r: RunId) {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&r);
    }

    pub(crate) fn contains(&self, r: RunId) -> bool {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&r)
    }

    fn snapshot(&self) -> Vec<RunId> {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Most runs asked for in one claim.
const CLAIM_BATCH: usize = 64;

/// How long a worker lets work signals gather before it claims.
const CLAIM_GATHER: Duration = Duration::from_millis(2);

pub(crate) fn spawn(node: &Node) {
    let Some(cfg) = node.inner().config.cluster.clone() else {
        return;
    };
    let n = node.clone();
    tokio::spawn(async move { signal_loop(n).await });
    if cfg.execute {
        let n = node.clone();
        tokio::spawn(async move { claim_loop(n).await });
        let n = node.clone();
        tokio::spawn(async move { heartbeat_loop(n).await });
    }
}

impl Node {
    /// Loads a claimed batch in one go and queues the runs for the drivers; a step left
    /// running by the previous holder is interrupted (retried with the next attempt number).
    async fn dispatch_claimed(&self, ids: Vec<RunId>, expired: HashSet<RunId>) {
        if ids.is_empty() {
            return;
        }
        let inner = self.inner();
        let loaded = match inner.store.load_runs(&ids).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load claimed runs; loading them one by one");
                for id in ids {
                    inner.scheduler.push(Work::Claimed(id));
                }
                return;
            }
        };
        let mut found = HashSet::new();
        for l in loaded {
            let run_id = l.run.run_id;
            found.insert(run_id);
            match self
                .plan_for(&l.run.blueprint_id, l.run.blueprint_version)
                .await
            {
                Ok(plan) => {
                    let mut m = RunMachine::resume(
                        plan,
                        l.run,
                        l.steps,
                        l.trigger.as_ref().map(|e| &e.event),
                        inner.config.limits,
                    );
                    let interrupted = m.interrupt_running(inner.ids.as_ref(), inner.clock.now());
                    if !interrupted.is_empty() {
                        tracing::warn!(%run_id, steps = ?interrupted,
                            "retrying steps whose attempt was interrupted (their worker's lease expired)");
                    }
                    if expired.contains(&run_id) {
                        inner.scheduler.push(Work::TakenOver(Box::new(m)));
                    } else {
                        inner.scheduler.push(Work::Fresh(Box::new(m)));
                    }
                }
                // The driver's own load reports the problem.
                Err(_) => inner.scheduler.push(Work::Claimed(run_id)),
            }
        }
        for id in ids {
            if !found.contains(&id) {
                inner.scheduler.push(Work::Claimed(id));
            }
        }
    }
}

/// Store signals other than work: blueprint changes and cancellations.
async fn signal_loop(node: Node) {
    let inner = node.inner();
    let mut rx = inner.store.subscribe();
    loop {
        let sig = tokio::select! {
            s = rx.recv() => s,
            _ = inner.shutdown.cancelled() => return,
        };
        match sig {
            Ok(Signal::Catalog) | Ok(Signal::Reconnected) | Err(RecvError::Lagged(_)) => {
                if let Err(e) = node.load_catalog().await {
                    tracing::warn!(error = %e, "cannot reload the blueprint catalog");
                }
                inner.scheduler.cron_changed();
            }
            Ok(Signal::Cancel(run_id)) => {
                let token = inner
                    .cancels
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&run_id).cloned());
                if let Some(t) = token {
                    tracing::info!(%run_id, "run cancelled elsewhere; stopping its step");
                    t.cancel();
                }
            }
            Ok(_) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

async fn claim_loop(node: Node) {
    let inner = node.inner();
    let Some(cfg) = inner.config.cluster.clone() else {
        return;
    };
    let mut rx = inner.store.subscribe();
    let capacity = inner.config.workers.max(1);
    // Claim in batches: when busy, wait until a batch's worth of drivers is free rather than
    // claiming one run per finished driver.
    let batch = CLAIM_BATCH.min(capacity.div_ceil(4)).max(1);
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        let busy = inner.scheduler.busy();
        let free = capacity.saturating_sub(busy);
        let mut next_due: Option<Timestamp> = None;
        let free = if free >= batch || busy == 0 { free } else { 0 };
        if free > 0 {
            let ask = free.min(CLAIM_BATCH);
            match inner.store.claim(&cfg.owner, ask, cfg.lease_ms).await {
                Ok(c) => {
                    let got = c.runs.len();
                    let mut ids = Vec::with_capacity(got);
                    let mut expired = HashSet::new();
                    for claim in c.runs {
                        if claim.expired {
                            tracing::warn!(run_id = %claim.run_id, claims = claim.claims,
                                "took over a run whose lease expired");
                            expired.insert(claim.run_id);
                        }
                        inner.held.insert(claim.run_id);
                        ids.push(claim.run_id);
                    }
                    node.dispatch_claimed(ids, expired).await;
                    if got == ask {
                        continue;
                    }
                    next_due = c.next_due;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim work; retrying in 1s");
                    next_due = Some(inner.clock.now().plus_ms(1000));
                }
            }
        }
        let sleep = next_due.map(|at| Duration::from_micros(at.micros_since(inner.clock.now())));
        tokio::select! {
            _ = async {
                match sleep {
                    Some(d) => tokio::time::sleep(d + Duration::from_millis(1)).await,
                    None => std::future::pending::<()>().await,
                }
            } => {}
            s = rx.recv() => match s {
                Ok(Signal::Work) | Ok(Signal::Reconnected) | Err(RecvError::Lagged(_)) => {
                    // Under load the api's commits signal work every few milliseconds: when
                    // already busy, gather a moment's worth so that one claim takes a batch.
                    if inner.scheduler.busy() > 0 {
                        tokio::time::sleep(CLAIM_GATHER).await;
                        while rx.try_recv().is_ok() {}
                    }
                }
                Ok(_) => continue_waiting(&mut rx, inner, sleep, free == 0).await,
                Err(RecvError::Closed) => return,
            },
            _ = inner.scheduler.capacity.notified(), if free == 0 => {}
            _ = inner.shutdown.cancelled() => return,
        }
    }
}

/// Keeps waiting after a signal that is not about work (without losing the timer).
async fn continue_waiting(
    rx: &mut tokio::sync::broadcast::Receiver<Signal>,
    inner: &crate::Inner,
    sleep: Option<Duration>,
    full: bool,
) {
    let deadline = sleep.map(|d| tokio::time::Instant::now() + d);
    loop {
        tokio::select! {
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending::<()>().await,
                }
            } => return,
            s = rx.recv() => match s {
                Ok(Signal::Work) | Ok(Signal::Reconnected) | Err(_) => return,
                Ok(_) => {}
            },
            _ = inner.scheduler.capacity.notified(), if full => return,
            _ = inner.shutdown.cancelled() => return,
        }
    }
}

async fn heartbeat_loop(node: Node) {
    let inner = node.inner();
    let Some(cfg) = inner.config.cluster.clone() else {
        return;
    };
    let every = Duration::from_millis((cfg.lease_ms / 3).max(10));
    loop {
        if inner.held.len() == 0 {
            tokio::select! {
                _ = inner.held.changed.notified() => {}
                _ = inner.shutdown.cancelled() => return,
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = inner.shutdown.cancelled() => return,
        }
        let before = inner.held.snapshot();
        if before.is_empty() {
            continue;
        }
        match inner.store.renew_leases(&cfg.owner, cfg.lease_ms).await {
            Ok(still) => {
                let still: HashSet<RunId> = still.into_iter().collect();
                for r in before {
                    if !still.contains(&r) && inner.held.contains(r) {
                        tracing::warn!(run_id = %r, "lost the lease of a run; stopping it");
                        inner.held.remove(r);
                        let token = inner.cancels.lock().ok().and_then(|m| m.get(&r).cloned());
                        if let Some(t) = token {
                            t.cancel();
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew leases"),
        }
    }
}
