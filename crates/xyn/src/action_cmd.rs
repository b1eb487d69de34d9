//! `xyn action install | list | run`: action packages in a data directory. `run` goes
//! through the same sealed worker and the same `SandboxedAction` a node uses.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use serde_json::{Value, json};
use xyn_actions::{Action, ActionContext, ArtifactSink, Platform};
use xyn_core::XynError;
use xyn_core::records::Artifact;
use xyn_sandbox::action::{SandboxHost, SandboxedAction};
use xyn_sandbox::install::{Layout, install};
use xyn_sandbox::pool::{PoolConfig, WorkerPool};
use xyn_sandbox::{DeploymentLimits, codes};

use crate::cli::ActionCmd;

/// The sandbox of a node: its layout, and a pool of workers started from this binary
/// (each sealed to the one action it serves), with the deployment's limits from
/// `[sandbox]` in xyn.toml.
pub fn host(
    data_dir: &Path,
    allow_weak: bool,
    limits: DeploymentLimits,
    workers: usize,
    http: xyn_sandbox::caps::http::HttpExecutor,
) -> Result<Arc<SandboxHost>> {
    let layout = Layout::new(data_dir);
    layout.ensure().map_err(|e| anyhow::anyhow!("{e}"))?;
    let program = std::env::current_exe().context("cannot find the xyn binary")?;
    let pool = WorkerPool::new(PoolConfig {
        program,
        prefix: vec!["sandbox-worker".into()],
        worker: layout.worker_args(allow_weak, limits.clone()),
        size: workers,
        max_idle: 0,
    })
    .with_http(http);
    Ok(Arc::new(SandboxHost {
        pool,
        layout,
        limits,
    }))
}

pub fn run(cmd: ActionCmd) -> Result<ExitCode> {
    match cmd {
        ActionCmd::Install { dir, data_dir } => {
            let layout = Layout::new(&data_dir);
            match install(&dir, &layout) {
                Ok(m) => {
                    println!(
                        "installed {} ({}, {}) into {}",
                        m.name,
                        m.runtime.as_str(),
                        m.entry,
                        layout.package(&m.name).display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {}", e.message);
                    println!("{}", e.code);
                    Ok(ExitCode::from(1))
                }
            }
        }
        ActionCmd::List { data_dir, json } => {
            let layout = Layout::new(&data_dir);
            let mut rows = Vec::new();
            for item in layout.installed() {
                match item {
                    Ok((m, dir)) => rows.push(json!({
                        "name": m.name, "runtime": m.runtime.as_str(), "entry": m.entry,
                        "dir": dir.display().to_string(), "capabilities": m.capabilities,
                    })),
                    Err((dir, e)) => {
                        rows.push(json!({"dir": dir.display().to_string(), "error": e.to_value()}))
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no actions installed in {}", layout.packages().display());
            } else {
                for r in &rows {
                    match r.get("name") {
                        Some(n) => println!(
                            "{:<28} {:<5} {}",
                            n.as_str().unwrap_or_default(),
                            r["runtime"].as_str().unwrap_or_default(),
                            r["entry"].as_str().unwrap_or_default()
                        ),
                        None => println!(
                            "{:<28} broken: {}",
                            r["dir"].as_str().unwrap_or_default(),
                            r["error"]["message"]
                        ),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ActionCmd::Run {
            name,
            input,
            data_dir,
            allow_weak_sandbox,
            config,
        } => {
            let input: Value = serde_json::from_str(&input).context("--input is not valid JSON")?;
            let (limits, _) = crate::config::load_sandbox(config.as_deref())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(run_one(&name, input, &data_dir, allow_weak_sandbox, limits))
        }
    }
}

async fn run_one(
    name: &str,
    input: Value,
    data_dir: &Path,
    allow_weak: bool,
    limits: DeploymentLimits,
) -> Result<ExitCode> {
    let egress = Arc::new(xyn_actions::net::Egress::new());
    let host = host(
        data_dir,
        allow_weak,
        limits,
        1,
        xyn_sandbox::caps::http::HttpExecutor::new(egress.clone(), false),
    )?;
    let dir = host.layout.package(name);
    let fail = |code: &str, msg: &str| {
        eprintln!("error: {msg}");
        println!("{code}");
        Ok(ExitCode::from(1))
    };
    if !dir.is_dir() {
        return fail(
            xyn_core::codes::ACTION_UNKNOWN,
            &format!(
                "no action {name:?} is installed in {}",
                host.layout.packages().display()
            ),
        );
    }
    let manifest = match xyn_sandbox::Manifest::load(&dir) {
        Ok(m) => m,
        Err(e) => return fail(&e.code, &e.message),
    };
    let action = match SandboxedAction::new(host.clone(), manifest, dir) {
        Ok(a) => a,
        Err(e) => return fail(&e.code, &e.message),
    };
    let mut registry = xyn_actions::Registry::default();
    let action: Arc<dyn Action> = Arc::new(action);
    registry
        .register(action)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = ActionContext {
        run_id: None,
        step_id: None,
        attempt: 1,
        idempotency_key: format!("cli:{}", uuid::Uuid::now_v7()),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        actor: "cli".into(),
        timeout: None,
        platform: Arc::new(NoPlatform),
        artifacts: Arc::new(IncidentDir(host.layout.root.join("incidents"))),
        http: xyn_actions::http_client(),
        egress,
        destinations: xyn_engine::default_http_call_destinations(),
    };
    match registry.execute(name, &ctx, input).await {
        Ok(out) => {
            println!("{}", serde_json::to_string(&out.output)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let code = if e.code.is_empty() {
                codes::ACTION_FAILED
            } else {
                e.code.as_str()
            };
            fail(code, &e.message)
        }
    }
}

/// `xyn action run` has no node: platform operations are refused.
struct NoPlatform;

#[async_trait]
impl Platform for NoPlatform {
    async fn save_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid(
            "action.no_node",
            "not available outside a node",
        ))
    }
    async fn validate_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid(
            "action.no_node",
            "not available outside a node",
        ))
    }
    async fn promote_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid(
            "action.no_node",
            "not available outside a node",
        ))
    }
    async fn emit_event(&self, _: &str, _: Value, _: &str, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid(
            "action.no_node",
            "not available outside a node",
        ))
    }
}

/// Incident bundles of `xyn action run` go to `<data-dir>/incidents/`.
struct IncidentDir(PathBuf);

#[async_trait]
impl ArtifactSink for IncidentDir {
    async fn put(
        &self,
        name: &str,
        kind: &str,
        content_type: &str,
        bytes: Vec<u8>,
        metadata: Value,
    ) -> Result<Artifact, XynError> {
        let stamp = uuid::Uuid::now_v7();
        let path = self.0.join(format!("{stamp}-{name}"));
        std::fs::create_dir_all(&self.0).map_err(|e| XynError::internal(e.to_string()))?;
        std::fs::write(&path, &bytes).map_err(|e| XynError::internal(e.to_string()))?;
        eprintln!("incident bundle: {}", path.display());
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        Ok(Artifact {
            artifact_id: xyn_core::ArtifactId(stamp),
            name: name.to_string(),
            kind: kind.to_string(),
            content_type: content_type.to_string(),
            byte_length: bytes.len() as i64,
            sha256: sha,
            created_at: xyn_core::Timestamp::from_micros(0),
            created_by: "cli".into(),
            run_id: None,
            step_id: None,
            metadata,
        })
    }
}
