//! One app on the node: its manifest, its router, and its requests dispatched to sealed
//! sandbox workers (the same pool, worker process, seal, budgets and capability layer as
//! actions). The node never runs app code: it resolves the route, then hands the request
//! to a worker, which runs the middleware chain and the handler under the app's per-request
//! limits.
//!
//! A handler that spends its budget (CPU, memory, time) ends *that* request with a 503 and
//! the stable code `app.handler_stopped`; the worker survives (the runtime stopped the guest)
//! or, when the watchdog had to kill it, the pool starts another one. Other requests are
//! served by the other workers of the app's pool meanwhile. Each such stop leaves an
//! incident (the sandbox's incident bundle plus the request line) in memory and, when the
//! host has a data directory, as a JSON file under `incidents/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use xyn_sandbox::install::Layout;
use xyn_sandbox::manifest::AppManifest;
use xyn_sandbox::pool::{PoolConfig, PoolError, WorkerPool};
use xyn_sandbox::worker::InvokeMsg;
use xyn_sandbox::{DeploymentLimits, SandboxError};

use crate::codes;
use crate::router::{Registration, Resolved, Router};

/// How an app host is set up.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The app directory (with `xyn-app.toml`).
    pub dir: PathBuf,
    /// Where the app's state lives (its `[capabilities]` data dir and database, incidents).
    pub data_dir: PathBuf,
    /// The `xyn` binary that runs `sandbox-worker`.
    pub program: PathBuf,
    /// Arguments before the worker's (`["sandbox-worker"]`).
    pub prefix: Vec<String>,
    /// Run even when the kernel cannot seal the worker.
    pub allow_weak: bool,
    pub limits: DeploymentLimits,
    /// Workers serving this app at once.
    pub workers: usize,
}

/// A request as the app sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AppRequest {
    pub method: String,
    /// The path inside the app (the mount prefix removed), without the query.
    pub path: String,
    /// The request-target exactly as received.
    pub target: String,
    pub query: BTreeMap<String, String>,
    /// Lower-case names; repeated fields joined with `, ` (cookies with `; `).
    pub headers: BTreeMap<String, String>,
    pub cookies: BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced); `body_len` is its length in bytes as received.
    pub body: String,
    pub body_len: usize,
}

/// What the app answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppResponse {
    pub status: u16,
    /// In order; repeated names (`set-cookie`) stay separate fields.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl AppResponse {
    /// The standard error shape.
    pub fn error(status: u16, code: &str, message: &str, details: Value) -> AppResponse {
        let body = json!({
            "error": {"code": code, "message": message, "details": details},
            "correlation_id": Value::Null,
        });
        AppResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// One app served from sealed workers.
pub struct AppHost {
    manifest: AppManifest,
    dir: PathBuf,
    data_dir: PathBuf,
    layout: Layout,
    pool: WorkerPool,
    roots: xyn_sandbox::pool::WorkerRoots,
    deadline: Duration,
    router: OnceCell<Router>,
    incidents: Mutex<Vec<Value>>,
}

/// Most incidents kept in memory.
const MAX_INCIDENTS: usize = 100;

impl AppHost {
    pub fn new(cfg: HostConfig) -> Result<AppHost, SandboxError> {
        let manifest = AppManifest::load(&cfg.dir)?;
        let action = manifest.as_action();
        let limits = cfg.limits.resolve(action.runtime, &action.limits)?;
        let dir = std::fs::canonicalize(&cfg.dir).map_err(|e| {
            SandboxError::manifest(format!("cannot open {}: {e}", cfg.dir.display()))
        })?;
        let layout = Layout::new(&cfg.data_dir);
        layout.ensure()?;
        layout.prepare_action(&action.name)?;
        let mut roots = layout.roots(&action.name, &dir);
        roots.memory_bytes = Some(limits.memory_bytes);
        roots.http_policy = Some(xyn_sandbox::caps::http::HttpPolicy::of(
            &action.name,
            &action.capabilities,
        ));
        let pool = WorkerPool::new(PoolConfig {
            program: cfg.program.clone(),
            prefix: cfg.prefix.clone(),
            worker: layout.worker_args(cfg.allow_weak, cfg.limits.clone()),
            size: cfg.workers.max(1),
            max_idle: cfg.workers.max(1),
        });
        Ok(AppHost {
            manifest,
            dir,
            data_dir: cfg.data_dir,
            layout,
            pool,
            roots,
            // The runtime stops the guest at its time budget; the watchdog only ends a
            // worker stuck where the runtime cannot reach it (a long C call).
            deadline: Duration::from_millis(limits.timeout_ms) + Duration::from_secs(2),
            router: OnceCell::new(),
            incidents: Mutex::new(Vec::new()),
        })
    }

    pub fn manifest(&self) -> &AppManifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The incidents recorded so far (newest last).
    pub fn incidents(&self) -> Vec<Value> {
        self.incidents.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn message(&self, input: Value) -> InvokeMsg {
        let name = self.manifest.as_action().name;
        let caps = &self.manifest.capabilities;
        let env = caps
            .env
            .iter()
            .filter_map(|n| std::env::var(n).ok().map(|v| (n.clone(), v)))
            .collect();
        InvokeMsg {
            id: 0,
            package: self.dir.clone(),
            data_dir: Some(self.layout.data(&name)),
            db_path: caps.db.then(|| self.layout.db(&name)),
            env,
            secrets: BTreeMap::new(),
            input,
        }
    }

    /// Runs `input` in a worker: the guest's output, or the error and whether a budget or
    /// the watchdog stopped it.
    async fn invoke(&self, input: Value) -> Result<Value, (SandboxError, Option<Value>)> {
        let mut partial = xyn_sandbox::pool::Partial::default();
        let msg = self.message(input.clone());
        match self
            .pool
            .invoke_tracked(&self.roots, msg, self.deadline, &mut partial)
            .await
        {
            Ok(report) => match report.result {
                Ok(v) => Ok(v),
                Err(e) => Err((e, report.incident)),
            },
            Err(e) => {
                let err = e.to_error();
                let incident = match e {
                    PoolError::Timeout(_) | PoolError::OutOfMemory(_) | PoolError::Crashed(_) => {
                        Some(json!({
                            "kind": "xyn.sandbox.incident",
                            "input": input,
                            "report": {"action": self.manifest.as_action().name,
                                "code": err.code, "message": err.message,
                                "denials": partial.denials,
                                "peak_rss_bytes": partial.peak_rss_bytes},
                            "module": {"sha256": partial.digest},
                        }))
                    }
                    PoolError::Unavailable(_) => None,
                };
                Err((err, incident))
            }
        }
    }

    /// The app's router, from the routes its code registers (loaded once).
    pub async fn router(&self) -> Result<&Router, SandboxError> {
        self.router
            .get_or_try_init(|| async {
                let out = self
                    .invoke(json!({"op": "routes"}))
                    .await
                    .map_err(|(e, _)| e)?;
                let regs: Vec<Registration> = match out.get("routes") {
                    Some(Value::Array(a)) => serde_json::from_value(Value::Array(a.clone()))
                        .map_err(|e| SandboxError::failed(format!("bad route table: {e}")))?,
                    // An empty Lua table encodes as an object.
                    _ => Vec::new(),
                };
                Router::new(&regs).map_err(SandboxError::manifest)
            })
            .await
    }

    fn record(&self, req: &AppRequest, err: &SandboxError, incident: Option<Value>) {
        let mut inc = incident.unwrap_or_else(|| json!({"kind": "xyn.sandbox.incident"}));
        if let Some(o) = inc.as_object_mut() {
            o.insert("app".into(), json!(self.manifest.name));
            o.insert(
                "request".into(),
                json!({"method": req.method, "target": req.target}),
            );
            // The request body can be large and personal: its size only.
            o.insert("input".into(), json!({"body_len": req.body_len}));
            o.insert("code".into(), json!(err.code));
        }
        tracing::warn!(app = %self.manifest.name, code = %err.code, "app handler stopped: {}", err.message);
        let dir = self.data_dir.join("incidents");
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        if std::fs::create_dir_all(&dir).is_ok() {
            let file = dir.join(format!("{}-{at}.json", self.manifest.name));
            let _ = std::fs::write(file, inc.to_string());
        }
        if let Ok(mut v) = self.incidents.lock() {
            if v.len() >= MAX_INCIDENTS {
                v.remove(0);
            }
            v.push(inc);
        }
    }

    /// Answers one request.
    pub async fn handle(&self, req: AppRequest) -> AppResponse {
        let router = match self.router().await {
            Ok(r) => r,
            Err(e) => {
                return AppResponse::error(
                    500,
                    codes::APP_FAILED,
                    &format!("the app did not load: {}", e.message),
                    json!({"cause": e.code}),
                );
            }
        };
        let resolved = router.resolve(&req.method, &req.path);
        let chain = router.chain(&req.method, &req.path);
        let (handler, params) = match &resolved {
            Resolved::Handler { handler, params } => (*handler, params.clone()),
            _ if chain.is_empty() => return unrouted(&resolved),
            _ => (0, BTreeMap::new()),
        };
        let input = json!({
            "op": "handle", "handler": handler, "chain": chain, "params": params, "req": req,
        });
        match self.invoke(input).await {
            Ok(out) => match from_guest(&out) {
                Some(mut r) => {
                    if handler == 0 && out.get("unhandled").and_then(Value::as_bool) == Some(true) {
                        let mut u = unrouted(&resolved);
                        r.headers
                            .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
                        u.headers.extend(r.headers);
                        return u;
                    }
                    r
                }
                None => AppResponse::error(
                    500,
                    codes::APP_FAILED,
                    "the app answered something that is not a response",
                    Value::Null,
                ),
            },
            Err((e, incident)) => {
                let stopped = e.is_budget()
                    || e.code == xyn_sandbox::codes::TIMEOUT
                    || e.details
                        .as_ref()
                        .is_some_and(|d| d.get("reason").is_some());
                if stopped {
                    self.record(&req, &e, incident);
                    AppResponse::error(
                        503,
                        codes::HANDLER_STOPPED,
                        "the app's handler was stopped: it ran out of its per-request budget",
                        json!({"budget": e.code}),
                    )
                } else {
                    AppResponse::error(500, codes::APP_FAILED, &e.message, json!({"cause": e.code}))
                }
            }
        }
    }
}

fn unrouted(r: &Resolved) -> AppResponse {
    match r {
        Resolved::MethodNotAllowed { allow } => {
            let mut resp = AppResponse::error(
                405,
                codes::METHOD_NOT_ALLOWED,
                "this path does not take this method",
                json!({"allow": allow}),
            );
            resp.headers.push(("allow".into(), allow.join(", ")));
            resp
        }
        _ => AppResponse::error(
            404,
            codes::NOT_FOUND,
            "no route matches this path",
            Value::Null,
        ),
    }
}

fn from_guest(out: &Value) -> Option<AppResponse> {
    let status = out.get("status")?.as_u64()?;
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (100..=999).contains(s))?;
    let mut headers = Vec::new();
    if let Some(Value::Array(hs)) = out.get("headers") {
        for h in hs {
            let (Some(k), Some(v)) = (
                h.get(0).and_then(Value::as_str),
                h.get(1).and_then(Value::as_str),
            ) else {
                continue;
            };
            headers.push((k.to_ascii_lowercase(), v.to_string()));
        }
    }
    let body = out
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    Some(AppResponse {
        status,
        headers,
        body,
    })
}
