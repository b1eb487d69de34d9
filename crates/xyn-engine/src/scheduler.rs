//! Work scheduling without polling: a queue of runs to drive, a fixed set of worker tasks
//! that sleep until work is pushed, and a timer heap for retries, gate deadlines and run
//! deadlines. Memory stays bounded under a burst: past a threshold, queued runs keep only
//! their id and are reloaded from the store when their turn comes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;
use xyn_core::run::RunMachine;
use xyn_core::{RunId, Timestamp};

use crate::Node;

/// Queued runs above this keep only their id.
const MAX_QUEUED_STATES: usize = 4096;

pub(crate) enum Work {
    /// A run whose state is in memory (just created, or just decided).
    Fresh(Box<RunMachine>),
    /// A run to load from the store and drive (a timer fired).
    Resume(RunId),
    /// A run found unfinished at start-up: interrupted attempts are retried.
    Recover(RunId),
    /// A run claimed from the shared queue: a step left running by its previous holder was
    /// interrupted and is retried with the next attempt number.
    Claimed(RunId),
    /// A run taken over from a worker whose lease expired (it may have crashed on this run),
    /// loaded, its interrupted attempts recorded: driven in recovery mode.
    TakenOver(Box<RunMachine>),
}

impl Work {
    pub(crate) fn run_id(&self) -> RunId {
        match self {
            Work::Fresh(m) | Work::TakenOver(m) => m.run.run_id,
            Work::Resume(id) | Work::Recover(id) | Work::Claimed(id) => *id,
        }
    }

    /// Whether the run is driven in recovery mode: the process that drove it before may have
    /// crashed on one of its steps, so pure steps are started durably too (see
    /// `Node::run_transform`) and count against the step's attempts.
    pub(crate) fn recovering(&self) -> bool {
        matches!(
            self,
            Work::Recover(_) | Work::Claimed(_) | Work::TakenOver(_)
        )
    }
}

#[derive(Default)]
pub(crate) struct Scheduler {
    queue: Mutex<VecDeque<Work>>,
    notify: Notify,
    busy: AtomicUsize,
    timers: Mutex<BinaryHeap<Reverse<(Timestamp, RunId)>>>,
    timer_notify: Notify,
    pub(crate) cron_notify: Notify,
    /// A driver finished: there is room for more work (the claim loop waits on it when full).
    pub(crate) capacity: Notify,
}

impl Scheduler {
    pub(crate) fn push(&self, work: Work) {
        self.busy.fetch_add(1, Ordering::SeqCst);
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let work = match work {
                Work::Fresh(m) if q.len() >= MAX_QUEUED_STATES => Work::Resume(m.run.run_id),
                w => w,
            };
            q.push_back(work);
        }
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Work> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Wakes `run_id` at `at`.
    pub(crate) fn wake_at(&self, at: Timestamp, run_id: RunId) {
        let earliest_changed = {
            let mut t = self.timers.lock().unwrap_or_else(|e| e.into_inner());
            let before = t.peek().map(|Reverse((ts, _))| *ts);
            t.push(Reverse((at, run_id)));
            before.is_none_or(|b| at < b)
        };
        if earliest_changed {
            self.timer_notify.notify_one();
        }
    }

    pub(crate) fn cron_changed(&self) {
        self.cron_notify.notify_one();
    }

    pub(crate) fn wake_all(&self) {
        self.notify.notify_waiters();
        self.timer_notify.notify_waiters();
        self.cron_notify.notify_waiters();
    }

    pub(crate) fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }
}

pub(crate) fn spawn_workers(node: &Node) {
    for _ in 0..node.inner().config.workers.max(1) {
        let n = node.clone();
        tokio::spawn(async move { worker(n).await });
    }
    let n = node.clone();
    tokio::spawn(async move { timer_loop(n).await });
}

async fn worker(node: Node) {
    let inner = node.inner();
    loop {
        let work = loop {
            if inner.shutdown.is_cancelled() {
                return;
            }
            if let Some(w) = inner.scheduler.pop() {
                break w;
            }
            tokio::select! {
                _ = inner.scheduler.notify.notified() => {}
                _ = inner.shutdown.cancelled() => return,
            }
        };
        let run_id = work.run_id();
        let res = AssertUnwindSafe(node.run_work(work)).catch_unwind().await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) if inner.config.cluster.is_some() => {
                // The run stays in the shared queue under this process's lease, which is no
                // longer renewed: once it expires a worker (maybe this one) takes it over.
                inner.held.remove(run_id);
                if e.code == "run.lease_lost" {
                    tracing::warn!(%run_id, error = %e, "another worker took the run over");
                } else {
                    tracing::error!(%run_id, error = %e, "driving the run failed; it is retried after its lease expires");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(%run_id, error = %e, "driving the run failed; retrying in 1s");
                let at = inner.clock.now().plus_ms(1000);
                inner.scheduler.wake_at(at, run_id);
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(%run_id, panic = %msg, "a run driver panicked; failing the run");
                if let Err(e) = node.fail_after_panic(run_id, &msg).await {
                    tracing::error!(%run_id, error = %e, "could not record the failure");
                }
            }
        }
        inner.scheduler.busy.fetch_sub(1, Ordering::SeqCst);
        inner.scheduler.capacity.notify_one();
    }
}

async fn timer_loop(node: Node) {
    let inner = node.inner();
    loop {
        let next = {
            let t = inner
                .scheduler
                .timers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            t.peek().map(|Reverse((ts, _))| *ts)
        };
        match next {
            None => {
                tokio::select! {
                    _ = inner.scheduler.timer_notify.notified() => {}
                    _ = inner.shutdown.cancelled() => return,
                }
            }
            Some(at) => {
                let now = inner.clock.now();
                if at > now {
                    let wait = Duration::from_micros(at.micros_since(now));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = inner.scheduler.timer_notify.notified() => continue,
                        _ = inner.shutdown.cancelled() => return,
                    }
                }
                let now = inner.clock.now();
                let due: Vec<RunId> = {
                    let mut t = inner
                        .scheduler
                        .timers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let mut due = Vec::new();
                    while let Some(Reverse((ts, id))) = t.peek().copied() {
                        if ts > now {
                            break;
                        }
                        t.pop();
                        due.push(id);
                    }
                    due
                };
                for id in due {
                    inner.scheduler.push(Work::Resume(id));
                }
            }
        }
    }
}
