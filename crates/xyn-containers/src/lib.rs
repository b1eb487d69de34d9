//! Containers for Xyn: `container.exec` runs a command in a fresh container through the Docker
//! Engine API (bollard) and removes the container whatever happens — success, failure, timeout
//! or the step being cancelled. Containers carry this node's label, so the ones a killed node
//! left behind are removed at its next start ([`Containers::reap`]).
//!
//! With `workcell: "<name>"` a step runs its command by `exec` in the run's long-lived
//! container of that name instead ([`Containers`] creates it for the first step that names it,
//! later steps of the run reuse it); the node removes a run's workcells when the run ends
//! ([`Containers::remove_run_workcells`]), at start ([`Containers::reap`]) and in a sweep of the
//! ones whose run has ended elsewhere ([`Containers::sweep`]).
//!
//! Safe by default: no image is allowed until the node lists it (`[containers] images`), no
//! network (`none`) unless the node allows another, no mounts, every capability dropped,
//! `no-new-privileges`, a read-only root with a small `/tmp`, an unprivileged user, and memory,
//! pids and CPU limits capped by the node's maximums.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use xyn_actions::{Action, ActionContext, ActionError, ActionOutput};

/// Stable error codes of `container.exec`.
pub mod codes {
    pub const UNAVAILABLE: &str = "container.unavailable";
    pub const IMAGE_DENIED: &str = "container.image_denied";
    pub const NETWORK_DENIED: &str = "container.network_denied";
    pub const IMAGE_NOT_FOUND: &str = "container.image_not_found";
    pub const TIMED_OUT: &str = "container.timed_out";
    pub const EXIT_NONZERO: &str = "container.exit_nonzero";
    pub const FAILED: &str = "container.failed";
    /// `workcell` names a workcell the step cannot use: no run, a bad name, or a workcell of
    /// the run that runs another image or has stopped.
    pub const WORKCELL_INVALID: &str = "container.workcell_invalid";
}

/// The label every container of this node carries (value: the node's label).
pub const NODE_LABEL: &str = "dev.xyn.node";
/// Labels naming the run and step a container belongs to.
pub const RUN_LABEL: &str = "dev.xyn.run";
pub const STEP_LABEL: &str = "dev.xyn.step";
/// The label naming a workcell (value: its name); the container also has the run label.
pub const WORKCELL_LABEL: &str = "dev.xyn.workcell";

/// Whether `name` is a workcell name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn valid_workcell_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// The container name of a run's workcell: deterministic, so the engine refuses a second
/// container for the same workcell.
pub fn workcell_container_name(run_id: &str, name: &str) -> String {
    format!("xyn-wc-{run_id}-{name}")
}

/// The workcell's writable work directory (a tmpfs), the default working directory of its
/// commands.
pub const WORK_DIR: &str = "/work";
/// The main process of a workcell: it only waits (the image must have `sleep` on its `PATH`).
const WORKCELL_MAIN: [&str; 2] = ["sleep", "2147483647"];

/// A live workcell of this node.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkcellInfo {
    pub run_id: String,
    pub name: String,
    pub container_id: String,
    pub container_name: String,
    pub image: String,
    /// Unix seconds.
    pub created: i64,
    /// The engine's state: `running`, `exited`, …
    pub state: String,
}

/// `[containers]` of `xyn.toml`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `unix:///path/to/docker.sock`; default `DOCKER_HOST`, else `/var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// Images `container.exec` may run: exact names or patterns ending in `*`
    /// (`registry.local/build/*`). Empty: none.
    pub images: Vec<String>,
    /// Networks a step may ask for besides `none`.
    pub networks: Vec<String>,
    pub max_memory_mb: u64,
    pub max_pids: i64,
    pub max_cpus: f64,
    pub max_timeout: Duration,
    /// Bytes of stdout and of stderr kept in the step's output (the rest is in the logs
    /// artifact, up to `max_log_bytes`).
    pub output_bytes: usize,
    pub max_log_bytes: usize,
    /// This node's label value: containers with it that are found at start are leftovers.
    pub node_label: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            docker_host: None,
            images: Vec::new(),
            networks: Vec::new(),
            max_memory_mb: 2048,
            max_pids: 1024,
            max_cpus: 2.0,
            max_timeout: Duration::from_secs(3600),
            output_bytes: 64 << 10,
            max_log_bytes: 16 << 20,
            node_label: "xyn".into(),
        }
    }
}

impl Settings {
    fn image_allowed(&self, image: &str) -> bool {
        self.images.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix),
            None => p == image,
        })
    }
}

/// The node's connection to the container engine, made on first use.
pub struct Containers {
    settings: Settings,
    docker: tokio::sync::Mutex<Option<Docker>>,
    /// One lock per workcell container name: two steps of a run never create it twice.
    workcell_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The runs this process made a workcell for (the ones a run's end must clean up).
    workcell_runs: Mutex<HashSet<String>>,
}

fn unavailable(e: impl std::fmt::Display) -> ActionError {
    ActionError::new(
        codes::UNAVAILABLE,
        format!("the container engine cannot be reached: {e}"),
        true,
    )
}

impl Containers {
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            docker: tokio::sync::Mutex::new(None),
            workcell_locks: Mutex::new(HashMap::new()),
            workcell_runs: Mutex::new(HashSet::new()),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn docker(&self) -> Result<Docker, ActionError> {
        let mut d = self.docker.lock().await;
        if let Some(d) = d.as_ref() {
            return Ok(d.clone());
        }
        let host = self
            .settings
            .docker_host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let Some(path) = host.strip_prefix("unix://") else {
            return Err(unavailable(format!(
                "{host:?}: only unix:// sockets are supported"
            )));
        };
        let docker = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(unavailable)?
            .negotiate_version()
            .await
            .map_err(unavailable)?;
        *d = Some(docker.clone());
        Ok(docker)
    }

    /// Removes every container of this node, workcells included: the leftovers of a node that
    /// was killed while a step ran or a run held a workcell. Called at start, before any step
    /// runs. Answers how many were removed.
    pub async fn reap(&self) -> Result<usize, ActionError> {
        let docker = self.docker().await?;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{NODE_LABEL}={}", self.settings.node_label)],
        )]);
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(unavailable)?;
        let mut n = 0;
        for c in list {
            if let Some(id) = c.id
                && remove(&docker, &id).await.is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Containers {
    fn workcell_lock(&self, container_name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self
            .workcell_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.entry(container_name.to_string()).or_default().clone()
    }

    /// The live workcells of this node, oldest first.
    pub async fn workcells(&self) -> Result<Vec<WorkcellInfo>, ActionError> {
        let docker = self.docker().await?;
        self.list_workcells(&docker, None).await
    }

    async fn list_workcells(
        &self,
        docker: &Docker,
        run_id: Option<&str>,
    ) -> Result<Vec<WorkcellInfo>, ActionError> {
        let mut labels = vec![
            format!("{NODE_LABEL}={}", self.settings.node_label),
            WORKCELL_LABEL.to_string(),
        ];
        if let Some(r) = run_id {
            labels.push(format!("{RUN_LABEL}={r}"));
        }
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_string(), labels)])),
                ..Default::default()
            }))
            .await
            .map_err(unavailable)?;
        let mut out: Vec<WorkcellInfo> = list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                Some(WorkcellInfo {
                    run_id: labels.get(RUN_LABEL).cloned().unwrap_or_default(),
                    name: labels.get(WORKCELL_LABEL).cloned()?,
                    container_id: c.id?,
                    container_name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                    created: c.created.unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                })
            })
            .collect();
        out.sort_by(|a, b| (a.created, &a.container_id).cmp(&(b.created, &b.container_id)));
        Ok(out)
    }

    /// Removes the workcells of a run that has ended; answers how many were removed. Cheap
    /// when this process made none for the run (no call to the engine): the ones an earlier
    /// process made are reaped at start, the ones of a run that ended on another node by
    /// [`Containers::sweep`].
    pub async fn remove_run_workcells(&self, run_id: &str) -> Result<usize, ActionError> {
        let had = self
            .workcell_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(run_id);
        if !had {
            return Ok(0);
        }
        let docker = self.docker().await?;
        let mut n = 0;
        let mut failed = None;
        for w in self.list_workcells(&docker, Some(run_id)).await? {
            let lock = self.workcell_lock(&w.container_name);
            let _g = lock.lock().await;
            match remove(&docker, &w.container_id).await {
                Ok(()) => n += 1,
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            return Err(ActionError::new(
                codes::FAILED,
                format!("a workcell of run {run_id} was not removed: {e}"),
                true,
            ));
        }
        self.forget_run(run_id);
        Ok(n)
    }

    fn forget_run(&self, run_id: &str) {
        self.workcell_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        let prefix = workcell_container_name(run_id, "");
        self.workcell_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, l| !k.starts_with(&prefix) || Arc::strong_count(l) > 1);
    }

    /// Removes one workcell of this node; answers what it was, `None` when there is none.
    pub async fn remove_workcell(
        &self,
        run_id: &str,
        name: &str,
    ) -> Result<Option<WorkcellInfo>, ActionError> {
        let docker = self.docker().await?;
        let cname = workcell_container_name(run_id, name);
        let lock = self.workcell_lock(&cname);
        let _g = lock.lock().await;
        let Some(w) = self
            .list_workcells(&docker, Some(run_id))
            .await?
            .into_iter()
            .find(|w| w.name == name)
        else {
            return Ok(None);
        };
        remove(&docker, &w.container_id).await.map_err(|e| {
            ActionError::new(
                codes::FAILED,
                format!("the workcell was not removed: {e}"),
                true,
            )
        })?;
        Ok(Some(w))
    }

    /// Removes the workcells whose run has ended or is unknown: `run_is_live(run_id)` says
    /// whether a run is still going (its errors keep the workcell). Covers a node stopped
    /// between a run's end and its teardown, and runs that ended on another node. Answers how
    /// many were removed.
    pub async fn sweep<F, Fut>(&self, run_is_live: F) -> Result<usize, ActionError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<bool, String>>,
    {
        let docker = self.docker().await?;
        let mut n = 0;
        for w in self.list_workcells(&docker, None).await? {
            match run_is_live(w.run_id.clone()).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(run_id = %w.run_id, error = %e, "cannot tell whether a workcell's run is live; keeping it");
                    continue;
                }
            }
            let lock = self.workcell_lock(&w.container_name);
            let guard = lock.lock().await;
            if remove(&docker, &w.container_id).await.is_ok() {
                tracing::info!(run_id = %w.run_id, workcell = %w.name, "removed the workcell of a run that has ended");
                n += 1;
            }
            drop(guard);
            self.forget_run(&w.run_id);
        }
        Ok(n)
    }

    /// The container of the run's workcell `name`: the existing one, or a new one made from
    /// `spec` and started. Serialised per workcell in this process; the container name makes
    /// the engine refuse a duplicate made by anyone else.
    async fn workcell_container(
        &self,
        docker: &Docker,
        run_id: &str,
        name: &str,
        spec: &Spec,
    ) -> Result<String, ActionError> {
        let cname = workcell_container_name(run_id, name);
        let lock = self.workcell_lock(&cname);
        let _g = lock.lock().await;
        self.workcell_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.to_string());
        for _ in 0..2 {
            match docker
                .inspect_container(&cname, None::<InspectContainerOptions>)
                .await
            {
                Ok(c) => {
                    let config = c.config.unwrap_or_default();
                    let labels = config.labels.unwrap_or_default();
                    let mine = labels.get(NODE_LABEL) == Some(&self.settings.node_label)
                        && labels.get(RUN_LABEL).map(String::as_str) == Some(run_id)
                        && labels.get(WORKCELL_LABEL).map(String::as_str) == Some(name);
                    if !mine {
                        return Err(ActionError::new(
                            codes::WORKCELL_INVALID,
                            format!(
                                "the container {cname} exists but is not this node's workcell {name:?} of this run"
                            ),
                            false,
                        ));
                    }
                    if config.image.as_deref() != Some(spec.image.as_str()) {
                        return Err(ActionError::new(
                            codes::WORKCELL_INVALID,
                            format!(
                                "the workcell {name:?} of this run runs the image {:?}, not {:?}",
                                config.image.unwrap_or_default(),
                                spec.image
                            ),
                            false,
                        ));
                    }
                    let running = c.state.and_then(|s| s.running).unwrap_or(false);
                    let id = c.id.unwrap_or_else(|| cname.clone());
                    if !running {
                        return Err(ActionError::new(
                            codes::WORKCELL_INVALID,
                            format!(
                                "the workcell {name:?} of this run has stopped (its container {id} is not running)"
                            ),
                            false,
                        ));
                    }
                    return Ok(id);
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(unavailable(e)),
            }
            let labels = HashMap::from([
                (NODE_LABEL.to_string(), self.settings.node_label.clone()),
                (RUN_LABEL.to_string(), run_id.to_string()),
                (WORKCELL_LABEL.to_string(), name.to_string()),
            ]);
            let mut body = spec.body(
                WORKCELL_MAIN.iter().map(|s| s.to_string()).collect(),
                Vec::new(),
                None,
                labels,
            );
            if let Some(h) = body.host_config.as_mut()
                && let Some(t) = h.tmpfs.as_mut()
            {
                t.insert(
                    WORK_DIR.to_string(),
                    "rw,nosuid,nodev,size=256m,mode=1777".to_string(),
                );
            }
            body.attach_stdout = Some(false);
            body.attach_stderr = Some(false);
            let created = match docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(cname.clone()),
                        ..Default::default()
                    }),
                    body,
                )
                .await
            {
                Ok(c) => c,
                // Made meanwhile by someone else: use it.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => continue,
                Err(e) => return Err(spec.create_error(e)),
            };
            if let Err(e) = docker.start_container(&created.id, None).await {
                let _ = remove(docker, &created.id).await;
                return Err(ActionError::new(
                    codes::FAILED,
                    format!("cannot start the workcell {name:?}: {e}"),
                    false,
                ));
            }
            tracing::info!(run_id, workcell = name, container = %created.id, "workcell created");
            return Ok(created.id);
        }
        Err(ActionError::new(
            codes::FAILED,
            format!("the workcell {name:?} kept changing while it was made; try again"),
            true,
        ))
    }
}

async fn remove(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
}

/// Removes the container when dropped: also when the step's future is dropped (the run was
/// cancelled or the node is stopping).
struct Cleanup {
    docker: Docker,
    id: String,
    done: bool,
}

impl Cleanup {
    async fn now(mut self) {
        self.done = true;
        if let Err(e) = remove(&self.docker, &self.id).await {
            tracing::warn!(container = %self.id, error = %e, "container not removed; it is reaped at the next start");
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (docker, id) = (self.docker.clone(), std::mem::take(&mut self.id));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = remove(&docker, &id).await;
            });
        }
    }
}

/// The `container.exec` action.
pub struct ContainerExec {
    pub containers: Arc<Containers>,
}

/// Keeps the last `max` bytes of `b` (a log's end is what explains a failure), on a character
/// boundary.
fn tail(b: &[u8], max: usize) -> (String, bool) {
    if b.len() <= max {
        return (String::from_utf8_lossy(b).into_owned(), false);
    }
    let s = String::from_utf8_lossy(&b[b.len() - max..]).into_owned();
    (s, true)
}

#[async_trait]
impl Action for ContainerExec {
    fn name(&self) -> &str {
        "container.exec"
    }
    fn description(&self) -> &str {
        "Runs a command in a fresh container (no network, no capabilities, read-only root, limits) and removes it, or with `workcell` in the run's long-lived container of that name; exit code, stdout and stderr in the output, the full logs as an artifact."
    }
    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["image", "cmd"],
            "properties": {
                "image": {"type": "string", "minLength": 1, "maxLength": 512},
                "cmd": {"type": "array", "minItems": 1, "maxItems": 1024, "items": {"type": "string", "maxLength": 65536}},
                "env": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 65536}},
                "workdir": {"type": "string", "maxLength": 4096},
                "user": {"type": "string", "minLength": 1, "maxLength": 64},
                "network": {"type": "string", "minLength": 1, "maxLength": 128},
                "memory_mb": {"type": "integer", "minimum": 4},
                "pids": {"type": "integer", "minimum": 1},
                "cpus": {"type": "number", "exclusiveMinimum": 0},
                "timeout": {"type": "integer", "minimum": 1, "description": "seconds"},
                "fail_on_exit": {"type": "boolean", "default": true},
                "workcell": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$", "description": "run the command in this run's long-lived container of that name (made by the first step that names it, removed when the run ends)"}
            }
        })
    }
    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["exit_code", "stdout", "stderr"],
            "properties": {
                "exit_code": {"type": "integer"},
                "stdout": {"type": "string"},
                "stderr": {"type": "string"},
                "stdout_truncated": {"type": "boolean"},
                "stderr_truncated": {"type": "boolean"},
                "oom_killed": {"type": "boolean"},
                "duration_ms": {"type": "integer"},
                "logs_artifact_id": {"type": ["string", "null"]},
                "workcell": {"type": "string"}
            }
        })
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: Value,
    ) -> Result<ActionOutput, ActionError> {
        let s = &self.containers.settings;
        let image = input["image"].as_str().unwrap_or_default().to_string();
        if !s.image_allowed(&image) {
            return Err(ActionError::new(
                codes::IMAGE_DENIED,
                format!("the image {image:?} is not one this node runs ([containers] images)"),
                false,
            ));
        }
        let network = input["network"].as_str().unwrap_or("none").to_string();
        if network != "none" && !s.networks.contains(&network) {
            return Err(ActionError::new(
                codes::NETWORK_DENIED,
                format!("the network {network:?} is not allowed ([containers] networks)"),
                false,
            ));
        }
        let workcell = match input.get("workcell") {
            None | Some(Value::Null) => None,
            Some(w) => {
                let name = w.as_str().unwrap_or_default();
                if !valid_workcell_name(name) {
                    return Err(ActionError::new(
                        codes::WORKCELL_INVALID,
                        format!("{name:?} is not a workcell name ([a-z0-9][a-z0-9-]{{0,62}})"),
                        false,
                    ));
                }
                let Some(run_id) = ctx.run_id else {
                    return Err(ActionError::new(
                        codes::WORKCELL_INVALID,
                        "a workcell belongs to a run: `workcell` works only in a step of a run",
                        false,
                    ));
                };
                Some((run_id.to_string(), name.to_string()))
            }
        };
        let cmd: Vec<String> = input["cmd"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let env: Vec<String> = input["env"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                    .collect()
            })
            .unwrap_or_default();
        let spec = Spec {
            image: image.clone(),
            user: input["user"].as_str().unwrap_or("65534:65534").to_string(),
            memory_mb: input["memory_mb"]
                .as_u64()
                .unwrap_or(256)
                .min(s.max_memory_mb),
            pids: input["pids"].as_i64().unwrap_or(128).min(s.max_pids),
            cpus: input["cpus"].as_f64().unwrap_or(1.0).min(s.max_cpus),
            network,
        };
        let workdir = input["workdir"].as_str().map(str::to_string);
        let timeout = input["timeout"]
            .as_u64()
            .map(Duration::from_secs)
            .or(ctx.timeout)
            .unwrap_or(Duration::from_secs(60))
            .min(s.max_timeout);
        let fail_on_exit = input["fail_on_exit"].as_bool().unwrap_or(true);

        let docker = self.containers.docker().await?;
        let ran = match &workcell {
            Some((run_id, name)) => {
                let id = self
                    .containers
                    .workcell_container(&docker, run_id, name, &spec)
                    .await?;
                let workdir = workdir.unwrap_or_else(|| WORK_DIR.to_string());
                self.exec_in(&docker, &id, cmd, env, workdir, &spec, timeout)
                    .await?
            }
            None => {
                let mut labels = HashMap::from([(NODE_LABEL.to_string(), s.node_label.clone())]);
                if let Some(r) = ctx.run_id {
                    labels.insert(RUN_LABEL.into(), r.to_string());
                }
                if let Some(st) = ctx.step_id {
                    labels.insert(STEP_LABEL.into(), st.to_string());
                }
                let body = spec.body(cmd, env, workdir, labels);
                self.run_fresh(&docker, body, &spec, timeout).await?
            }
        };
        let Ran {
            exit_code,
            oom_killed,
            duration_ms,
            out,
            err,
            log,
            log_truncated,
        } = ran;
        let (stdout, stdout_truncated) = tail(&out, s.output_bytes);
        let (stderr, stderr_truncated) = tail(&err, s.output_bytes);
        let logs_artifact_id = if stdout_truncated || stderr_truncated || log_truncated {
            let art = ctx
                .artifacts
                .put(
                    "container.log",
                    "log",
                    "text/plain; charset=utf-8",
                    log,
                    json!({"image": image, "exit_code": exit_code, "truncated": log_truncated}),
                )
                .await
                .map_err(ActionError::from)?;
            Some(art.artifact_id.to_string())
        } else {
            None
        };
        let mut output = json!({
            "exit_code": exit_code,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_truncated": stdout_truncated,
            "stderr_truncated": stderr_truncated,
            "oom_killed": oom_killed,
            "duration_ms": duration_ms,
            "logs_artifact_id": logs_artifact_id,
        });
        if let Some((_, name)) = &workcell {
            output["workcell"] = json!(name);
        }
        if exit_code != 0 && fail_on_exit {
            let why = if oom_killed {
                " (killed: out of memory)"
            } else {
                ""
            };
            return Err(ActionError::new(
                codes::EXIT_NONZERO,
                format!("the command exited with {exit_code}{why}"),
                false,
            )
            .with_details(output));
        }
        Ok(ActionOutput {
            output,
            bytes_in: 0,
            bytes_out: 0,
            records: Vec::new(),
        })
    }
}

/// What a container is made with (for a step, or for a workcell by its first step).
struct Spec {
    image: String,
    user: String,
    network: String,
    memory_mb: u64,
    pids: i64,
    cpus: f64,
}

impl Spec {
    fn body(
        &self,
        cmd: Vec<String>,
        env: Vec<String>,
        workdir: Option<String>,
        labels: HashMap<String, String>,
    ) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(cmd),
            env: Some(env),
            working_dir: workdir,
            user: Some(self.user.clone()),
            labels: Some(labels),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            network_disabled: Some(self.network == "none"),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                memory: Some((self.memory_mb as i64) << 20),
                // No swap beyond the memory limit.
                memory_swap: Some((self.memory_mb as i64) << 20),
                pids_limit: Some(self.pids),
                nano_cpus: Some((self.cpus * 1e9) as i64),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_string(),
                    "rw,noexec,nosuid,size=64m".to_string(),
                )])),
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn create_error(&self, e: bollard::errors::Error) -> ActionError {
        match &e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => ActionError::new(
                codes::IMAGE_NOT_FOUND,
                format!(
                    "the image {:?} is not on the container engine (images are never pulled by a step)",
                    self.image
                ),
                false,
            ),
            _ => ActionError::new(
                codes::FAILED,
                format!("cannot create the container: {e}"),
                true,
            ),
        }
    }
}

/// What a command left: its exit, and its output (capped at `max_log_bytes` in all).
struct Ran {
    exit_code: i64,
    oom_killed: bool,
    duration_ms: u64,
    out: Vec<u8>,
    err: Vec<u8>,
    log: Vec<u8>,
    log_truncated: bool,
}

/// Collects a command's output: stdout and stderr apart and together, up to `max` bytes in
/// all; `true` when more was written (the rest is drained and dropped).
#[derive(Default)]
struct Collected {
    out: Vec<u8>,
    err: Vec<u8>,
    log: Vec<u8>,
    truncated: bool,
}

impl Collected {
    fn push(&mut self, chunk: bollard::container::LogOutput, max: usize) {
        let (buf, bytes) = match chunk {
            bollard::container::LogOutput::StdOut { message } => (&mut self.out, message),
            bollard::container::LogOutput::StdErr { message } => (&mut self.err, message),
            _ => return,
        };
        if self.truncated || self.log.len() + bytes.len() > max {
            self.truncated = true;
            return;
        }
        self.log.extend_from_slice(&bytes);
        buf.extend_from_slice(&bytes);
    }
}

impl ContainerExec {
    /// Runs the command in a fresh container made from `body`, and removes the container.
    async fn run_fresh(
        &self,
        docker: &Docker,
        body: ContainerCreateBody,
        spec: &Spec,
        timeout: Duration,
    ) -> Result<Ran, ActionError> {
        let s = &self.containers.settings;
        let created = docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| spec.create_error(e))?;
        let cleanup = Cleanup {
            docker: docker.clone(),
            id: created.id.clone(),
            done: false,
        };
        let started = Instant::now();
        if let Err(e) = docker.start_container(&created.id, None).await {
            cleanup.now().await;
            return Err(ActionError::new(
                codes::FAILED,
                format!("cannot start the container: {e}"),
                false,
            ));
        }
        let waited = tokio::time::timeout(timeout, async {
            let mut w = docker.wait_container(&created.id, None);
            // A non-zero exit arrives as an error carrying the code.
            match w.next().await {
                Some(Ok(r)) => Ok(r.status_code),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Ok(code)
                }
                Some(Err(e)) => Err(e.to_string()),
                None => Err("the engine ended the wait without a status".into()),
            }
        })
        .await;
        let exit_code = match waited {
            Err(_) => {
                cleanup.now().await;
                return Err(ActionError::new(
                    codes::TIMED_OUT,
                    format!(
                        "the command did not finish within {} s; the container was removed",
                        timeout.as_secs()
                    ),
                    false,
                ));
            }
            Ok(Err(e)) => {
                cleanup.now().await;
                return Err(ActionError::new(codes::FAILED, e, true));
            }
            Ok(Ok(code)) => code,
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let oom_killed = docker
            .inspect_container(&created.id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|st| st.oom_killed)
            .unwrap_or(false);
        // The logs, capped: the node never holds more than `max_log_bytes` of them.
        let mut c = Collected::default();
        let mut logs = docker.logs(
            &created.id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        while let Some(chunk) = logs.next().await {
            let Ok(chunk) = chunk else { break };
            c.push(chunk, s.max_log_bytes);
            if c.truncated {
                break;
            }
        }
        drop(logs);
        cleanup.now().await;
        Ok(Ran {
            exit_code,
            oom_killed,
            duration_ms,
            out: c.out,
            err: c.err,
            log: c.log,
            log_truncated: c.truncated,
        })
    }

    /// Runs the command by `exec` in the workcell container `id`. A command that outlives
    /// its timeout cannot be stopped through the engine: the workcell is removed then.
    #[allow(clippy::too_many_arguments)]
    async fn exec_in(
        &self,
        docker: &Docker,
        id: &str,
        cmd: Vec<String>,
        env: Vec<String>,
        workdir: String,
        spec: &Spec,
        timeout: Duration,
    ) -> Result<Ran, ActionError> {
        let s = &self.containers.settings;
        let exec = docker
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    env: Some(env),
                    cmd: Some(cmd),
                    user: Some(spec.user.clone()),
                    working_dir: Some(workdir),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                ActionError::new(
                    codes::FAILED,
                    format!("cannot run the command in the workcell: {e}"),
                    false,
                )
            })?;
        let started = Instant::now();
        let ran = tokio::time::timeout(timeout, async {
            let mut c = Collected::default();
            match docker.start_exec(&exec.id, None).await {
                Ok(StartExecResults::Attached { mut output, .. }) => {
                    while let Some(chunk) = output.next().await {
                        match chunk {
                            Ok(chunk) => c.push(chunk, s.max_log_bytes),
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                }
                Ok(StartExecResults::Detached) => {
                    return Err("the engine started the command detached".to_string());
                }
                Err(e) => return Err(e.to_string()),
            }
            // The output ends when the command does; its exit code follows shortly.
            for _ in 0..50 {
                let i = docker
                    .inspect_exec(&exec.id)
                    .await
                    .map_err(|e| e.to_string())?;
                if i.running != Some(true)
                    && let Some(code) = i.exit_code
                {
                    return Ok((code, c));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err("the engine did not report the command's exit code".to_string())
        })
        .await;
        let (exit_code, c) = match ran {
            Err(_) => {
                if let Err(e) = remove(docker, id).await {
                    tracing::warn!(container = %id, error = %e, "workcell not removed after a timeout; it is removed when its run ends");
                }
                return Err(ActionError::new(
                    codes::TIMED_OUT,
                    format!(
                        "the command did not finish within {} s; its workcell was removed (a command in a workcell cannot be stopped otherwise)",
                        timeout.as_secs()
                    ),
                    false,
                ));
            }
            Ok(Err(e)) => {
                return Err(ActionError::new(
                    codes::FAILED,
                    format!("the command in the workcell failed to run: {e}"),
                    true,
                ));
            }
            Ok(Ok(r)) => r,
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let oom_killed = docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|st| st.oom_killed)
            .unwrap_or(false);
        Ok(Ran {
            exit_code,
            oom_killed,
            duration_ms,
            out: c.out,
            err: c.err,
            log: c.log,
            log_truncated: c.truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_images_run() {
        let s = Settings {
            images: vec!["xyn-test/busybox:1".into(), "registry.local/build/*".into()],
            ..Default::default()
        };
        assert!(s.image_allowed("xyn-test/busybox:1"));
        assert!(s.image_allowed("registry.local/build/rust:1.95"));
        assert!(!s.image_allowed("xyn-test/busybox:2"));
        assert!(!s.image_allowed("registry.local/other"));
        assert!(!Settings::default().image_allowed("alpine"));
    }

    #[test]
    fn workcell_names() {
        for ok in ["a", "0", "build", "db-1", "a-", &"a".repeat(63)] {
            assert!(valid_workcell_name(ok), "{ok:?}");
        }
        for bad in [
            "",
            "-a",
            "A",
            "build_1",
            "b.c",
            "a b",
            "a/b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!valid_workcell_name(bad), "{bad:?}");
        }
        assert_eq!(workcell_container_name("r1", "build"), "xyn-wc-r1-build");
    }

    #[test]
    fn output_keeps_the_end_of_a_long_log() {
        let (s, cut) = tail(b"0123456789", 4);
        assert_eq!((s.as_str(), cut), ("6789", true));
        let (s, cut) = tail(b"abc", 4);
        assert_eq!((s.as_str(), cut), ("abc", false));
    }
}
