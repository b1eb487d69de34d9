//! Containers for Xyn: `container.exec` runs a command in a fresh container through the Docker
//! Engine API (bollard) and removes the container whatever happens — success, failure, timeout
//! or the step being cancelled. Containers carry this node's label, so the ones a killed node
//! left behind are removed at its next start ([`Containers::reap`]).
//!
//! Safe by default: no image is allowed until the node lists it (`[containers] images`), no
//! network (`none`) unless the node allows another, no mounts, every capability dropped,
//! `no-new-privileges`, a read-only root with a small `/tmp`, an unprivileged user, and memory,
//! pids and CPU limits capped by the node's maximums.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
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
}

/// The label every container of this node carries (value: the node's label).
pub const NODE_LABEL: &str = "dev.xyn.node";
/// Labels naming the run and step a container belongs to.
pub const RUN_LABEL: &str = "dev.xyn.run";
pub const STEP_LABEL: &str = "dev.xyn.step";

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

    /// Removes every container of this node: the leftovers of a node that was killed while
    /// a step ran. Called at start, before any step runs. Answers how many were removed.
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
        "Runs a command in a fresh container (no network, no capabilities, read-only root, limits) and removes it; exit code, stdout and stderr in the output, the full logs as an artifact."
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
                "fail_on_exit": {"type": "boolean", "default": true}
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
                "logs_artifact_id": {"type": ["string", "null"]}
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
        let memory_mb = input["memory_mb"]
            .as_u64()
            .unwrap_or(256)
            .min(s.max_memory_mb);
        let pids = input["pids"].as_i64().unwrap_or(128).min(s.max_pids);
        let cpus = input["cpus"].as_f64().unwrap_or(1.0).min(s.max_cpus);
        let timeout = input["timeout"]
            .as_u64()
            .map(Duration::from_secs)
            .or(ctx.timeout)
            .unwrap_or(Duration::from_secs(60))
            .min(s.max_timeout);
        let fail_on_exit = input["fail_on_exit"].as_bool().unwrap_or(true);

        let docker = self.containers.docker().await?;
        let mut labels = HashMap::from([(NODE_LABEL.to_string(), s.node_label.clone())]);
        if let Some(r) = ctx.run_id {
            labels.insert(RUN_LABEL.into(), r.to_string());
        }
        if let Some(st) = ctx.step_id {
            labels.insert(STEP_LABEL.into(), st.to_string());
        }
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(cmd),
            env: Some(env),
            working_dir: input["workdir"].as_str().map(str::to_string),
            user: Some(input["user"].as_str().unwrap_or("65534:65534").to_string()),
            labels: Some(labels),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            network_disabled: Some(network == "none"),
            host_config: Some(HostConfig {
                network_mode: Some(network),
                memory: Some((memory_mb as i64) << 20),
                // No swap beyond the memory limit.
                memory_swap: Some((memory_mb as i64) << 20),
                pids_limit: Some(pids),
                nano_cpus: Some((cpus * 1e9) as i64),
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
        };
        let created = docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| match &e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => ActionError::new(
                    codes::IMAGE_NOT_FOUND,
                    format!("the image {image:?} is not on the container engine (images are never pulled by a step)"),
                    false,
                ),
                _ => ActionError::new(codes::FAILED, format!("cannot create the container: {e}"), true),
            })?;
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
        let (mut out, mut err, mut log) = (Vec::new(), Vec::new(), Vec::new());
        let mut logs = docker.logs(
            &created.id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let mut log_truncated = false;
        while let Some(chunk) = logs.next().await {
            let Ok(chunk) = chunk else { break };
            let (buf, bytes) = match chunk {
                bollard::container::LogOutput::StdOut { message } => (&mut out, message),
                bollard::container::LogOutput::StdErr { message } => (&mut err, message),
                _ => continue,
            };
            if log.len() + bytes.len() > s.max_log_bytes {
                log_truncated = true;
                break;
            }
            log.extend_from_slice(&bytes);
            buf.extend_from_slice(&bytes);
        }
        drop(logs);
        cleanup.now().await;
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
        let output = json!({
            "exit_code": exit_code,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_truncated": stdout_truncated,
            "stderr_truncated": stderr_truncated,
            "oom_killed": oom_killed,
            "duration_ms": duration_ms,
            "logs_artifact_id": logs_artifact_id,
        });
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
    fn output_keeps_the_end_of_a_long_log() {
        let (s, cut) = tail(b"0123456789", 4);
        assert_eq!((s.as_str(), cut), ("6789", true));
        let (s, cut) = tail(b"abc", 4);
        assert_eq!((s.as_str(), cut), ("abc", false));
    }
}
