//! The Xyn engine and service layer.
//!
//! [`Node`] turns events into runs and runs them: intake (durable before acknowledged),
//! trigger matching, run creation, step execution (transform, action, agent, gate), retries
//! with backoff, timeouts, cancellation, cron, and recovery after a crash. The HTTP edge and
//! the CLI call its methods; nothing else writes state.
//!
//! *Architecture Invariant:* no effect (an action or an agent call) starts before the run's
//! state up to that point is durable, and every state change is written together with the
//! `xyn.*` event that records it. Pure steps (transforms, skips) are committed together with
//! the next durable point; after a crash they are recomputed, which gives the same result.
//!
//! *Architecture Invariant:* an idle node issues no database queries: work is pushed to the
//! scheduler by intake, decisions and timers, never discovered by polling.

mod catalog;
mod cluster;
mod cron;
mod direct;
mod drafts;
mod driver;
mod intake;
mod scheduler;
mod secret_admin;
mod secret_refs;
mod steps;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use xyn_actions::Registry;
use xyn_agents::Router;
use xyn_core::blueprint::ValidationEnv;
use xyn_core::ids::IdSource;
use xyn_core::run::RunLimits;
use xyn_core::{RunId, Timestamp, XynError};
use xyn_store::Store;
use xyn_store::blob::BlobStore;

pub use catalog::ApplyOutcome;
pub use cluster::ClusterConfig;
pub use direct::{ACTION_EXECUTED, ARTIFACT_UPLOADED, DirectOutcome, NewArtifact};
pub use intake::{EmitEvent, StartRun, valid_correlation_id};

/// The teardown port: what a run held outside the store (the workcell containers of
/// `container.exec`) is released once the run has ended. Called after the run's terminal status
/// (completed, failed, cancelled) is committed, off the driver's path; its errors are logged and
/// never change the run. May be called more than once for a run.
#[async_trait::async_trait]
pub trait RunTeardown: Send + Sync {
    async fn run_ended(&self, run_id: RunId) -> Result<(), String>;
}

/// The clock port.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        Timestamp::from_micros(micros)
    }
}

/// Time-ordered UUIDs (v7) for events, runs, steps and artifacts.
pub struct UuidV7Ids;

impl IdSource for UuidV7Ids {
    fn new_uuid(&self) -> uuid::Uuid {
        uuid::Uuid::now_v7()
    }
}

/// The secrets port: `{{secrets.<name>}}` is resolved through it at execution time only.
pub trait Secrets: Send + Sync {
    fn get(&self, name: &str) -> Option<String>;
}

/// Secrets from environment variables: `{{secrets.checkmk_token}}` reads
/// `XYN_SECRET_CHECKMK_TOKEN`. Only that prefix is readable, so a blueprint cannot read the
/// node's other variables (its provider keys, for one).
pub struct EnvSecrets;

impl Secrets for EnvSecrets {
    fn get(&self, name: &str) -> Option<String> {
        let var = secret_env_var(name);
        // The secret store's own passphrase shares the prefix: it is never a readable secret.
        if xyn_secrets::env::RESERVED_VARS.contains(&var.as_str()) {
            return None;
        }
        std::env::var(var).ok()
    }
}

pub use xyn_core::redact::secret_env_var;

/// Node settings.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub env_id: String,
    pub limits: RunLimits,
    /// Concurrent run drivers.
    pub workers: usize,
    /// Timeout of an action or agent step that sets none.
    pub default_step_timeout_ms: u64,
    /// A missed cron slot this recent still fires once after a restart.
    pub cron_catchup_ms: u64,
    /// Largest accepted event `data` (serialized), in bytes.
    pub max_event_bytes: usize,
    /// Largest output a step (or a run) may have, as serialized JSON; a larger one fails the
    /// step with `step.output_too_large` before anything is written.
    pub max_output_bytes: usize,
    /// Set on a shared store: runs are claimed from the store's queue under leases instead
    /// of being driven from memory (see `cluster.rs`).
    pub cluster: Option<ClusterConfig>,
    /// Where the built-in `http.call` may connect (`[actions.http]` in `xyn.toml`).
    pub http_call: xyn_actions::net::Destinations,
}

/// `http.call` without an allowlist: any public destination, never the node itself.
pub fn default_http_call_destinations() -> xyn_actions::net::Destinations {
    xyn_actions::net::Destinations {
        rules: Vec::new(),
        any_public: true,
        allow_node: false,
        list_name: "[actions.http] allow",
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            env_id: "local".into(),
            limits: RunLimits::default(),
            workers: 256,
            default_step_timeout_ms: 10 * 60 * 1000,
            cron_catchup_ms: 60_000,
            max_event_bytes: 1024 * 1024,
            max_output_bytes: 1024 * 1024,
            cluster: None,
            http_call: default_http_call_destinations(),
        }
    }
}

/// What a node is built from.
pub struct NodeParts {
    pub store: Arc<dyn Store>,
    pub blobs: BlobStore,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    pub secrets: Arc<dyn Secrets>,
    /// The secret store that `{{secret "<path>"}}` references read (local, then environment).
    pub secret_store: Option<xyn_secrets::Secrets>,
    pub actions: Registry,
    pub agents: Router,
    pub http: reqwest::Client,
    /// The node's egress: the destination policy of `http.call` (and of sandboxed guests,
    /// which share it through the worker pool).
    pub egress: Arc<xyn_actions::net::Egress>,
    pub config: NodeConfig,
    /// Called when a run has ended (`None`: nothing to release).
    pub teardown: Option<Arc<dyn RunTeardown>>,
}

/// A running node: the service layer over the engine.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Inner {
    /// The node's actions as they are now.
    pub fn actions(&self) -> Arc<Registry> {
        match self.actions.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub blobs: BlobStore,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    pub secrets: Arc<dyn Secrets>,
    pub secret_store: Option<xyn_secrets::Secrets>,
    /// Swapped whole when packs add or replace actions on a running node.
    pub actions: std::sync::RwLock<Arc<Registry>>,
    pub agents: Arc<Router>,
    pub http: reqwest::Client,
    pub egress: Arc<xyn_actions::net::Egress>,
    pub config: NodeConfig,
    pub teardown: Option<Arc<dyn RunTeardown>>,
    pub catalog: catalog::Catalog,
    pub scheduler: scheduler::Scheduler,
    pub run_locks: RunLocks,
    pub cancels: Mutex<HashMap<RunId, CancellationToken>>,
    pub shutdown: CancellationToken,
    pub started_at: std::time::Instant,
    pub held: cluster::Held,
}

impl Node {
    /// Builds the node, loads the blueprint catalog, resumes unfinished runs and starts the
    /// workers, the timers and the cron loop. Needs a Tokio runtime.
    pub async fn start(parts: NodeParts) -> Result<Node, XynError> {
        let inner = Arc::new(Inner {
            store: parts.store,
            blobs: parts.blobs,
            clock: parts.clock,
            ids: parts.ids,
            secrets: parts.secrets,
            secret_store: parts.secret_store,
            actions: std::sync::RwLock::new(Arc::new(parts.actions)),
            agents: Arc::new(parts.agents),
            http: parts.http,
            egress: parts.egress,
            config: parts.config,
            teardown: parts.teardown,
            catalog: catalog::Catalog::default(),
            scheduler: scheduler::Scheduler::default(),
            run_locks: RunLocks::default(),
            cancels: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            started_at: std::time::Instant::now(),
            held: cluster::Held::default(),
        });
        let node = Node { inner };
        node.load_catalog().await?;
        match &node.inner.config.cluster {
            // Unfinished runs are in the shared queue: expired leases are claimed.
            Some(c) => {
                if c.execute {
                    scheduler::spawn_workers(&node);
                }
                cluster::spawn(&node);
            }
            None => {
                node.recover().await?;
                scheduler::spawn_workers(&node);
            }
        }
        cron::spawn(&node);
        Ok(node)
    }

    /// Changes the node's actions (a pack installed or removed some): `f` edits a copy, which
    /// then replaces the registry. Steps already running keep the actions they started with.
    pub fn update_actions<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut guard = match self.inner.actions.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut copy = Registry::clone(&guard);
        let out = f(&mut copy);
        *guard = Arc::new(copy);
        out
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The store, for reads (listing runs, events, artifacts…).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The artifact blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started_at.elapsed()
    }

    /// The installed action names.
    pub fn action_names(&self) -> Vec<String> {
        self.inner.actions().names()
    }

    /// Runs `f` with validation against this node's actions and providers.
    pub fn with_validation_env<T>(&self, f: impl FnOnce(&ValidationEnv<'_>) -> T) -> T {
        let actions = self.inner.actions();
        let known = |a: &str| actions.contains(a);
        f(&ValidationEnv {
            is_known_action: &known,
            known_providers: xyn_core::blueprint::PROVIDERS,
        })
    }

    /// Stops background work. In-flight drivers finish their current durable step.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.scheduler.wake_all();
    }

    /// Number of runs queued or being driven (for tests and health).
    pub fn busy(&self) -> usize {
        self.inner.scheduler.busy()
    }

    /// Runs this process holds leases on (shared store only).
    pub fn leases_held(&self) -> usize {
        self.inner.held.len()
    }

    /// The cluster settings, on a shared store.
    pub fn cluster(&self) -> Option<&ClusterConfig> {
        self.inner.config.cluster.as_ref()
    }

    async fn recover(&self) -> Result<(), XynError> {
        let ids = self.inner.store.unfinished_runs().await?;
        if !ids.is_empty() {
            tracing::info!(runs = ids.len(), "resuming unfinished runs");
        }
        for id in ids {
            self.inner.scheduler.push(scheduler::Work::Recover(id));
        }
        Ok(())
    }
}

/// Per-run exclusive locks, created on demand and dropped when unused.
#[derive(Default)]
pub(crate) struct RunLocks {
    map: Mutex<HashMap<RunId, Arc<tokio::sync::Mutex<()>>>>,
}

pub(crate) struct RunGuard<'a> {
    locks: &'a RunLocks,
    run_id: RunId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl RunLocks {
    pub(crate) async fn lock(&self, run_id: RunId) -> RunGuard<'_> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(run_id).or_default().clone()
        };
        let guard = m.lock_owned().await;
        RunGuard {
            locks: self,
            run_id,
            guard: Some(guard),
        }
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = map.get(&self.run_id)
            && Arc::strong_count(m) == 1
        {
            map.remove(&self.run_id);
        }
    }
}
