//! An installed package as an ordinary [`Action`]: blueprints call it as `action_task`,
//! the CLI as `xyn action run`. It runs in a sealed worker through the [`WorkerPool`];
//! its capability counts become footprints, its refusals `xyn.cap.denied` events, and an
//! exceeded budget an incident bundle artifact.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use xyn_core::redact::secret_env_var;

use async_trait::async_trait;
use serde_json::{Value, json};
use xyn_actions::{Action, ActionContext, ActionError, ActionOutput, Record, Registry};

use crate::error::{SandboxError, codes};
use crate::install::{Layout, read_schema};
use crate::limits::DeploymentLimits;
use crate::manifest::Manifest;
use crate::pool::{Partial, PoolError, WorkerPool, WorkerRoots};
use crate::sandbox::{InvokeReport, incident};
use crate::worker::InvokeMsg;

/// Extra time the watchdog gives a worker beyond the action's own timeout.
const WATCHDOG_GRACE: Duration = Duration::from_millis(1500);

/// What every sandboxed action of a node shares.
pub struct SandboxHost {
    pub pool: WorkerPool,
    pub layout: Layout,
    pub limits: DeploymentLimits,
}

/// One installed action package.
pub struct SandboxedAction {
    host: Arc<SandboxHost>,
    manifest: Manifest,
    dir: PathBuf,
    /// Resolved against the deployment's defaults and maximum.
    limits: crate::limits::Limits,
    roots: WorkerRoots,
    description: String,
    input_schema: Value,
    output_schema: Value,
    output_validator: Option<jsonschema::Validator>,
}

impl SandboxedAction {
    pub fn new(
        host: Arc<SandboxHost>,
        manifest: Manifest,
        dir: PathBuf,
    ) -> Result<Self, SandboxError> {
        let limits = host.limits.resolve(manifest.runtime, &manifest.limits)?;
        host.layout.prepare_action(&manifest.name)?;
        let mut roots = host.layout.roots(&manifest.name, &dir);
        roots.memory_bytes = Some(limits.memory_bytes);
        roots.http_policy = Some(crate::caps::http::HttpPolicy::of(
            &manifest.name,
            &manifest.capabilities,
        ));
        let schema = |rel: &Option<String>| -> Result<Value, SandboxError> {
            match rel {
                Some(r) => read_schema(&dir, r),
                None => Ok(json!({})),
            }
        };
        let input_schema = schema(&manifest.input_schema)?;
        let output_schema = schema(&manifest.output_schema)?;
        let output_validator = match &manifest.output_schema {
            Some(_) => Some(jsonschema::validator_for(&output_schema).map_err(|e| {
                SandboxError::manifest(format!("output schema of {}: {e}", manifest.name))
            })?),
            None => None,
        };
        let description = manifest.description.clone().unwrap_or_else(|| {
            format!(
                "sandboxed {} action ({})",
                manifest.runtime.as_str(),
                manifest.entry
            )
        });
        Ok(Self {
            host,
            manifest,
            dir,
            limits,
            roots,
            description,
            input_schema,
            output_schema,
            output_validator,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn message(&self, input: Value) -> InvokeMsg {
        let caps = &self.manifest.capabilities;
        // Only the allowed variables leave the node; the worker's own environment is empty.
        let env: BTreeMap<String, String> = caps
            .env
            .iter()
            .filter_map(|n| std::env::var(n).ok().map(|v| (n.clone(), v)))
            .collect();
        let secrets: BTreeMap<String, String> = caps
            .secrets
            .keys()
            .filter_map(|n| {
                std::env::var(secret_env_var(n))
                    .ok()
                    .map(|v| (n.clone(), v))
            })
            .collect();
        let layout = &self.host.layout;
        InvokeMsg {
            id: 0,
            package: self.dir.clone(),
            data_dir: Some(layout.data(&self.manifest.name)),
            db_path: caps.db.then(|| layout.db(&self.manifest.name)),
            env,
            secrets,
            input,
        }
    }

    /// The values of the secrets this action may refer to (set ones only).
    fn secret_values(&self) -> Vec<String> {
        self.manifest
            .capabilities
            .secrets
            .keys()
            .filter_map(|n| std::env::var(secret_env_var(n)).ok())
            .collect()
    }

    /// Runs through the worker pool; the report, or the stable error when there is none.
    pub async fn invoke(&self, input: Value) -> Result<InvokeReport, SandboxError> {
        let limits = self.limits.clone();
        let watchdog = Duration::from_millis(limits.timeout_ms) + WATCHDOG_GRACE;
        let started = std::time::Instant::now();
        let mut partial = Partial::default();
        let res = self
            .host
            .pool
            .invoke_tracked(
                &self.roots,
                self.message(input.clone()),
                watchdog,
                &mut partial,
            )
            .await;
        let e = match res {
            Ok(r) => return Ok(r),
            // The worker was stuck where budgets cannot reach (a C function), or it was
            // stopped by its memory limit: the node's report stands in for the worker's,
            // with what the worker sent while it ran.
            Err(e @ (PoolError::Timeout(_) | PoolError::OutOfMemory(_))) => e.to_error(),
            Err(other) => return Err(other.to_error()),
        };
        let mut counts = std::collections::BTreeMap::new();
        for d in &partial.denials {
            *counts.entry(d.capability.clone()).or_insert(0) += 1;
        }
        let mut report = InvokeReport {
            action: self.manifest.name.clone(),
            runtime: self.manifest.runtime,
            result: Err(e.clone()),
            counts,
            denials: partial.denials,
            logs: Vec::new(),
            usage: crate::limits::Usage {
                wall_us: started.elapsed().as_micros() as u64,
                memory_bytes: partial.peak_rss_bytes.unwrap_or(0),
                ..Default::default()
            },
            limits,
            digest: partial.digest,
            incident: None,
        };
        report.incident = Some(incident(&report, &input, &e));
        Ok(report)
    }
}

/// Replaces every secret value in what a report carries out of the sandbox (output, error,
/// denials, logs, incident), so no step output, event or artifact ever holds one.
pub fn scrub_report(report: &mut InvokeReport, values: &[String]) {
    use xyn_core::redact::{redact_str, redact_value};
    if values.is_empty() {
        return;
    }
    let s = |x: &mut String| {
        if let Some(r) = redact_str(x, values) {
            *x = r;
        }
    };
    match &mut report.result {
        Ok(v) => redact_value(v, values),
        Err(e) => {
            s(&mut e.message);
            if let Some(d) = e.details.as_mut() {
                redact_value(d, values);
            }
        }
    }
    for d in &mut report.denials {
        s(&mut d.target);
        s(&mut d.reason);
    }
    for l in &mut report.logs {
        s(&mut l.msg);
    }
    if let Some(i) = report.incident.as_mut() {
        redact_value(i, values);
    }
}

/// The footprints and audit events of a report.
pub fn records(report: &InvokeReport) -> Vec<Record> {
    let mut out = Vec::new();
    for (cap, n) in &report.counts {
        out.push(Record::Footprint {
            metric: xyn_core::footprint::CAP_CALLS.into(),
            quantity: *n as f64,
            unit: "count".into(),
            dims: json!({"action": report.action, "capability": cap}),
        });
    }
    out.push(Record::Footprint {
        metric: "sandbox_fuel".into(),
        quantity: report.usage.fuel as f64,
        unit: "fuel".into(),
        dims: json!({"action": report.action, "runtime": report.runtime.as_str()}),
    });
    for d in &report.denials {
        out.push(Record::Event {
            name: xyn_core::names::CAP_DENIED.into(),
            data: json!({
                "action": report.action,
                "capability": d.capability,
                "target": d.target,
                "reason": d.reason,
            }),
        });
    }
    out
}

#[async_trait]
impl Action for SandboxedAction {
    fn name(&self) -> &str {
        &self.manifest.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn input_schema(&self) -> Value {
        self.input_schema.clone()
    }
    fn output_schema(&self) -> Value {
        self.output_schema.clone()
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: Value,
    ) -> Result<ActionOutput, ActionError> {
        let mut report = self
            .invoke(input)
            .await
            .map_err(|e| ActionError::new(e.code.clone(), e.message.clone(), false))?;
        scrub_report(&mut report, &self.secret_values());
        for l in &report.logs {
            tracing::info!(action = %report.action, level = %l.level, msg = %l.msg, "action log");
        }
        let records = records(&report);
        if let Some(inc) = &report.incident {
            let code = report
                .result
                .as_ref()
                .err()
                .map_or("budget", |e| e.code.as_str());
            let bytes = serde_json::to_vec_pretty(inc).unwrap_or_default();
            if let Err(e) = ctx
                .artifacts
                .put(
                    &format!("incident-{code}.json"),
                    "incident",
                    "application/json",
                    bytes,
                    json!({"action": report.action, "code": code, "module_sha256": report.digest}),
                )
                .await
            {
                tracing::error!(action = %report.action, error = %e, "could not store an incident bundle");
            }
        }
        match report.result {
            Ok(output) => {
                if let Some(v) = &self.output_validator
                    && let Some(err) = v.iter_errors(&output).next()
                {
                    return Err(ActionError::new(
                        codes::ACTION_FAILED,
                        format!("the output does not match the output schema: {err}"),
                        false,
                    )
                    .with_records(records));
                }
                Ok(ActionOutput {
                    output,
                    bytes_in: 0,
                    bytes_out: 0,
                    records,
                })
            }
            Err(e) => {
                let mut err = ActionError::new(e.code, e.message, false).with_records(records);
                if let Some(d) = e.details {
                    err = err.with_details(d);
                }
                Err(err)
            }
        }
    }
}

/// Registers every installed package of `host.layout` in `registry`. A package whose name
/// is already taken (a built-in) or whose manifest is broken is skipped and reported.
pub fn register_installed(
    host: &Arc<SandboxHost>,
    registry: &mut Registry,
) -> Vec<(String, SandboxError)> {
    let mut problems = Vec::new();
    for item in host.layout.installed() {
        match item {
            Ok((m, dir)) => {
                if registry.contains(&m.name) {
                    problems.push((
                        m.name.clone(),
                        SandboxError::manifest(format!(
                            "{} is already an action of this node",
                            m.name
                        )),
                    ));
                    continue;
                }
                let name = m.name.clone();
                match SandboxedAction::new(host.clone(), m, dir) {
                    Ok(a) => {
                        if let Err(e) = registry.register(Arc::new(a)) {
                            problems.push((name, SandboxError::manifest(e.message)));
                        }
                    }
                    Err(e) => problems.push((name, e)),
                }
            }
            Err((dir, e)) => problems.push((dir.display().to_string(), e)),
        }
    }
    problems
}
