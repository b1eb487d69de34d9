//! Xyn's Prometheus metrics.
//!
//! What is recorded on the run path (commits, run and step ends, HTTP requests) is a few
//! relaxed atomic adds on cells found in lock-free maps ([`papaya`]); nothing takes a lock or
//! allocates once a label value has been seen. The `prometheus-client` crate renders the
//! cells at scrape time, in the Prometheus text format (0.0.4) or in OpenMetrics.
//!
//! Label values are bounded: blueprint ids (never run, step or event ids), step kinds, route
//! templates (never paths), status codes, `provider/model` pairs. Each open-ended label has a
//! cap past which new values are counted under `other`.

pub mod histogram;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use xyn_core::blueprint::StepKind;
use xyn_core::event::StoredEvent;
use xyn_core::footprint::{self, Footprint};
use xyn_core::names;
use xyn_store::notify::CommitObserver;

pub use histogram::AtomicHistogram;
use histogram::{DURATION_BUCKETS, SIZE_BUCKETS};

/// `Content-Type` of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// `Content-Type` of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Most distinct blueprint label values; later ones count as `other`.
pub const MAX_BLUEPRINTS: usize = 10_000;
/// Most distinct route templates (the route table is finite; this guards mistakes).
pub const MAX_ROUTES: usize = 512;
/// Most distinct `provider/model` pairs.
pub const MAX_MODELS: usize = 256;
/// The label value that stands for every value past a cap.
pub const OTHER: &str = "other";

const STEP_KINDS: [StepKind; 4] = [
    StepKind::Transform,
    StepKind::ActionTask,
    StepKind::AgentTask,
    StepKind::Gate,
];

fn kind_index(k: StepKind) -> usize {
    match k {
        StepKind::Transform => 0,
        StepKind::ActionTask => 1,
        StepKind::AgentTask => 2,
        StepKind::Gate => 3,
    }
}

/// Counters of one blueprint.
#[derive(Debug, Default)]
struct BlueprintCells {
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
}

#[derive(Debug)]
struct StepCells {
    duration: AtomicHistogram,
    completed: AtomicU64,
    failed: AtomicU64,
}

/// HTTP methods with a label of their own; others count as `other`.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
];

fn method_index(m: &str) -> usize {
    METHODS
        .iter()
        .position(|x| *x == m)
        .unwrap_or(METHODS.len() - 1)
}

#[derive(Debug)]
struct RouteCells {
    duration: AtomicHistogram,
    /// `(method index, status)` → requests.
    requests: papaya::HashMap<(u8, u16), AtomicU64>,
}

#[derive(Debug, Default)]
struct ModelCells {
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
    requests: AtomicU64,
}

/// Values read at scrape time from the node (gauges).
#[derive(Debug, Default)]
pub struct Gauges {
    pub queue_depth: AtomicI64,
    pub leases_held: AtomicI64,
    pub outbox_lag_events: AtomicI64,
    pub outbox_lag_seconds: AtomicI64,
    pub uptime_seconds: AtomicI64,
}

#[derive(Debug)]
struct Cells {
    events_external: AtomicU64,
    events_system: AtomicU64,
    blueprints: papaya::HashMap<String, BlueprintCells>,
    run_duration: AtomicHistogram,
    steps: [StepCells; 4],
    commit_duration: AtomicHistogram,
    commit_events: AtomicHistogram,
    commit_failures: AtomicU64,
    routes: papaya::HashMap<String, RouteCells>,
    models: papaya::HashMap<String, ModelCells>,
    gauges: Gauges,
}

/// The node's metrics. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    cells: Arc<Cells>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Finds the cell of `key`, creating it unless the map is at `cap` (then `other`'s).
fn cell<'g, V>(
    map: &'g papaya::HashMapRef<'_, String, V, std::hash::RandomState, papaya::LocalGuard<'_>>,
    key: &str,
    cap: usize,
    make: impl Fn() -> V,
) -> &'g V {
    if let Some(v) = map.get(key) {
        return v;
    }
    let key = if map.len() >= cap { OTHER } else { key };
    map.get_or_insert_with(key.to_string(), make)
}

impl Metrics {
    pub fn new() -> Self {
        let cells = Arc::new(Cells {
            events_external: AtomicU64::new(0),
            events_system: AtomicU64::new(0),
            blueprints: papaya::HashMap::new(),
            run_duration: AtomicHistogram::new(DURATION_BUCKETS),
            steps: std::array::from_fn(|_| StepCells {
                duration: AtomicHistogram::new(DURATION_BUCKETS),
                completed: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
            commit_duration: AtomicHistogram::new(DURATION_BUCKETS),
            commit_events: AtomicHistogram::new(SIZE_BUCKETS),
            commit_failures: AtomicU64::new(0),
            routes: papaya::HashMap::new(),
            models: papaya::HashMap::new(),
            gauges: Gauges::default(),
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Render(cells.clone())));
        Self {
            cells,
            registry: Arc::new(registry),
        }
    }

    /// Gauges the web edge sets from the node just before rendering.
    pub fn gauges(&self) -> &Gauges {
        &self.cells.gauges
    }

    /// Renders every metric: OpenMetrics when `openmetrics`, else the Prometheus text format.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let r = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // Writing to a String cannot fail; an encoder refusal would be a bug in a name.
        debug_assert!(r.is_ok(), "metrics encoding failed");
        out
    }

    /// One HTTP request: `route` is the route template (`/api/v1/runs/{run_id}`), or
    /// `unmatched` for requests no route answered.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let routes = self.cells.routes.pin();
        let cells = cell(&routes, route, MAX_ROUTES, || RouteCells {
            duration: AtomicHistogram::new(DURATION_BUCKETS),
            requests: papaya::HashMap::new(),
        });
        cells.duration.observe(elapsed.as_secs_f64());
        let key = (method_index(method) as u8, status);
        let requests = cells.requests.pin();
        match requests.get(&key) {
            Some(c) => c.fetch_add(1, Ordering::Relaxed),
            None => requests
                .get_or_insert_with(key, || AtomicU64::new(0))
                .fetch_add(1, Ordering::Relaxed),
        };
    }

    /// What a commit wrote (see [`CommitObserver`]).
    pub fn record_commit(
        &self,
        footprints: &[Footprint],
        events: &[StoredEvent],
        elapsed: Duration,
    ) {
        let c = &self.cells;
        c.commit_duration.observe(elapsed.as_secs_f64());
        c.commit_events.observe(events.len() as f64);
        for f in footprints {
            if f.source_kind == "agent" {
                let models = c.models.pin();
                let m = cell(&models, &f.source_ref, MAX_MODELS, ModelCells::default);
                let q = if f.quantity.is_finite() && f.quantity > 0.0 {
                    f.quantity as u64
                } else {
                    0
                };
                match f.metric.as_str() {
                    footprint::TOKENS_IN => m.tokens_in.fetch_add(q, Ordering::Relaxed),
                    footprint::TOKENS_OUT => m.tokens_out.fetch_add(q, Ordering::Relaxed),
                    footprint::REQUEST_COUNT => m.requests.fetch_add(q, Ordering::Relaxed),
                    _ => 0,
                };
            }
        }
        for e in events {
            let e = &e.event;
            let name = e.event_name.as_str();
            let Some(rest) = name.strip_prefix("xyn.") else {
                c.events_external.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            c.events_system.fetch_add(1, Ordering::Relaxed);
            if rest.starts_with("run.") {
                self.run_event(name, &e.data);
            } else if rest.starts_with("step.") {
                self.step_event(name, &e.data);
            }
        }
    }

    fn run_event(&self, name: &str, data: &serde_json::Value) {
        let Some(bp) = data.get("blueprint_id").and_then(|v| v.as_str()) else {
            return;
        };
        let blueprints = self.cells.blueprints.pin();
        let b = cell(&blueprints, bp, MAX_BLUEPRINTS, BlueprintCells::default);
        let counter = match name {
            names::RUN_STARTED => &b.started,
            names::RUN_COMPLETED => &b.completed,
            names::RUN_FAILED => &b.failed,
            names::RUN_CANCELLED => &b.cancelled,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if name != names::RUN_STARTED
            && let Some(ms) = data.get("wall_ms").and_then(|v| v.as_u64())
        {
            self.cells.run_duration.observe(ms as f64 / 1000.0);
        }
    }

    fn step_event(&self, name: &str, data: &serde_json::Value) {
        let done = match name {
            names::STEP_COMPLETED => true,
            names::STEP_FAILED => false,
            _ => return,
        };
        let Some(kind) = data
            .get("kind")
            .and_then(|v| v.as_str())
            .and_then(StepKind::parse)
        else {
            return;
        };
        let s = &self.cells.steps[kind_index(kind)];
        if done {
            s.completed.fetch_add(1, Ordering::Relaxed);
        } else {
            s.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(ms) = data.get("wall_ms").and_then(|v| v.as_u64()) {
            s.duration.observe(ms as f64 / 1000.0);
        }
    }
}

impl CommitObserver for Metrics {
    fn committed(&self, footprints: &[Footprint], events: &[StoredEvent], elapsed: Duration) {
        self.record_commit(footprints, events, elapsed);
    }
    fn failed(&self, _elapsed: Duration) {
        self.cells.commit_failures.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Render(Arc<Cells>);

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, u64, f64>(&v, None)
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: &AtomicI64,
) -> Result<(), std::fmt::Error> {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v.load(Ordering::Relaxed))
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Collector for Render {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        {
            let mut m = enc.encode_descriptor(
                "xyn_events",
                "Events appended to the log, by origin (external: ingested; system: xyn.*).",
                None,
                MetricType::Counter,
            )?;
            for (origin, v) in [
                ("external", &c.events_external),
                ("system", &c.events_system),
            ] {
                m.encode_family(&[("origin", origin)])?
                    .encode_counter::<NoLabelSet, u64, f64>(&load(v), None)?;
            }
        }
        let blueprints = c.blueprints.pin();
        {
            let mut m = enc.encode_descriptor(
                "xyn_runs_started",
                "Runs started, by blueprint.",
                None,
                MetricType::Counter,
            )?;
            for (bp, b) in blueprints.iter() {
                m.encode_family(&[("blueprint", bp.as_str())])?
                    .encode_counter::<NoLabelSet, u64, f64>(&load(&b.started), None)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "xyn_runs",
                "Runs that ended, by blueprint and status (completed, failed, cancelled).",
                None,
                MetricType::Counter,
            )?;
            for (bp, b) in blueprints.iter() {
                for (status, v) in [
                    ("completed", &b.completed),
                    ("failed", &b.failed),
                    ("cancelled", &b.cancelled),
                ] {
                    m.encode_family(&[("blueprint", bp.as_str()), ("status", status)])?
                        .encode_counter::<NoLabelSet, u64, f64>(&load(v), None)?;
                }
            }
        }
        c.run_duration.encode(enc.encode_descriptor(
            "xyn_run_duration_seconds",
            "Wall time of runs that ended, from start to end.",
            None,
            MetricType::Histogram,
        )?)?;
        {
            let mut m = enc.encode_descriptor(
                "xyn_step_duration_seconds",
                "Wall time of step attempts that ended, by step kind.",
                None,
                MetricType::Histogram,
            )?;
            for k in STEP_KINDS {
                c.steps[kind_index(k)]
                    .duration
                    .encode_labelled(&mut m, &[("kind", k.as_str())])?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "xyn_steps",
                "Step attempts that ended, by kind and status (completed, failed).",
                None,
                MetricType::Counter,
            )?;
            for k in STEP_KINDS {
                let s = &c.steps[kind_index(k)];
                for (status, v) in [("completed", &s.completed), ("failed", &s.failed)] {
                    m.encode_family(&[("kind", k.as_str()), ("status", status)])?
                        .encode_counter::<NoLabelSet, u64, f64>(&load(v), None)?;
                }
            }
        }
        c.commit_duration.encode(enc.encode_descriptor(
            "xyn_store_commit_duration_seconds",
            "Time a store commit took (group commit included), as the committer saw it.",
            None,
            MetricType::Histogram,
        )?)?;
        c.commit_events.encode(enc.encode_descriptor(
            "xyn_store_commit_events",
            "Events per committed batch.",
            None,
            MetricType::Histogram,
        )?)?;
        counter(
            &mut enc,
            "xyn_store_commit_failures",
            "Store commits that failed (conflicts and refusals included).",
            load(&c.commit_failures),
        )?;
        let routes = c.routes.pin();
        {
            let mut m = enc.encode_descriptor(
                "xyn_http_requests",
                "HTTP requests answered, by route template, method and status.",
                None,
                MetricType::Counter,
            )?;
            for (route, r) in routes.iter() {
                for ((method, status), v) in r.requests.pin().iter() {
                    let status = status.to_string();
                    let method = METHODS[usize::from(*method).min(METHODS.len() - 1)];
                    m.encode_family(&[
                        ("route", route.as_str()),
                        ("method", method),
                        ("status", status.as_str()),
                    ])?
                    .encode_counter::<NoLabelSet, u64, f64>(&load(v), None)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "xyn_http_request_duration_seconds",
                "Time to answer HTTP requests, by route template.",
                None,
                MetricType::Histogram,
            )?;
            for (route, r) in routes.iter() {
                r.duration
                    .encode_labelled(&mut m, &[("route", route.as_str())])?;
            }
        }
        let models = c.models.pin();
        {
            let mut m = enc.encode_descriptor(
                "xyn_llm_tokens",
                "LLM tokens used by agent steps, by provider/model and direction (in, out).",
                None,
                MetricType::Counter,
            )?;
            for (pm, v) in models.iter() {
                for (dir, n) in [("in", &v.tokens_in), ("out", &v.tokens_out)] {
                    m.encode_family(&[("model", pm.as_str()), ("direction", dir)])?
                        .encode_counter::<NoLabelSet, u64, f64>(&load(n), None)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "xyn_llm_requests",
                "LLM requests made by agent steps, by provider/model.",
                None,
                MetricType::Counter,
            )?;
            for (pm, v) in models.iter() {
                m.encode_family(&[("model", pm.as_str())])?
                    .encode_counter::<NoLabelSet, u64, f64>(&load(&v.requests), None)?;
            }
        }
        let g = &c.gauges;
        gauge(
            &mut enc,
            "xyn_queue_depth",
            "Runs queued or being driven by this process.",
            &g.queue_depth,
        )?;
        gauge(
            &mut enc,
            "xyn_leases_held",
            "Runs this process holds leases on (shared store).",
            &g.leases_held,
        )?;
        gauge(
            &mut enc,
            "xyn_outbox_lag_events",
            "Events committed but not yet published to NATS (-1: no dispatcher).",
            &g.outbox_lag_events,
        )?;
        gauge(
            &mut enc,
            "xyn_outbox_lag_seconds",
            "Age of the oldest unpublished outbox range, in seconds (-1: no dispatcher).",
            &g.outbox_lag_seconds,
        )?;
        gauge(
            &mut enc,
            "xyn_uptime_seconds",
            "Seconds since the node started.",
            &g.uptime_seconds,
        )?;
        Ok(())
    }
}
