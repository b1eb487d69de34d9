//! Executing one step: transforms (pure, on the blocking pool under a deadline), actions and
//! agent tasks (effects: their start is durable before they run, they get an idempotency key,
//! a timeout and a cancellation signal, and what they leave behind is redacted).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use xyn_actions::{ActionContext, ArtifactSink};
use xyn_agents::ChatRequest;
use xyn_core::blueprint::{StepBody, TransformBody};
use xyn_core::footprint::{self, Footprint};
use xyn_core::records::Artifact;
use xyn_core::redact::{redact_labelled, redact_str, redact_value};
use xyn_core::run::{RunMachine, error_value};
use xyn_core::template::{RenderError, SecretAccess, TemplateValue};
use xyn_core::{ArtifactId, IdSource, RunId, StepId, XynError, codes};
use xyn_store::blob::BlobStore;

use crate::driver::Progress;
use crate::{Clock, Node};

/// Longest a transform may run when its step sets no timeout.
const TRANSFORM_TIMEOUT_MS: u64 = 10_000;

fn render_error(e: &RenderError) -> Value {
    match e {
        RenderError::MissingSecret(name) => json!({
            "code": "secret.missing",
            "message": format!("secret '{name}' is not set (set {})", crate::secret_env_var(name)),
        }),
        other => error_value("template.render", other.to_string()),
    }
}

impl Node {
    pub(crate) async fn execute_step(
        &self,
        m: &mut RunMachine,
        i: usize,
        recovering: bool,
    ) -> Result<Progress, XynError> {
        match &m.plan.steps[i].body {
            StepBody::Transform(_) => {
                self.run_transform(m, i, recovering).await?;
                Ok(Progress::Continue)
            }
            StepBody::Action { .. } => self.run_action(m, i).await,
            StepBody::Agent { .. } => self.run_agent(m, i).await,
            // Gates are opened by the driver, never executed.
            StepBody::Gate { .. } => Ok(Progress::Continue),
        }
    }

    /// Runs a transform. Normally its start is not written (pure steps are committed with the
    /// next durable point and recomputed after a crash); when `recovering`, the start is made
    /// durable first, so that a transform that crashes the process is found `running` at the
    /// next start and its attempt counts (a crash loop ends with `step.interrupted`).
    async fn run_transform(
        &self,
        m: &mut RunMachine,
        i: usize,
        recovering: bool,
    ) -> Result<(), XynError> {
        let inner = self.inner();
        let ids = inner.ids.as_ref();
        let (body, timeout_ms) = match &m.plan.steps[i].body {
            StepBody::Transform(b) => (
                b.clone(),
                m.plan.steps[i].timeout_ms.unwrap_or(TRANSFORM_TIMEOUT_MS),
            ),
            _ => return Ok(()),
        };
        let ctx = m.context();
        let jq_limits = m.limits.jq;
        let recorded = match &body {
            TransformBody::Jq(p) => json!({"expr": p.source()}),
            TransformBody::Template(_) => json!({"template": true}),
        };
        if recovering {
            if !self.start_effect(m, i, recorded).await? {
                return Ok(());
            }
        } else {
            m.start_step(ids, inner.clock.now(), i, recorded);
        }
        abort_if_injected(&m.steps[i].name);
        // Set when the deadline passes, so a looping program stops instead of spinning on.
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = cancel.clone();
        let task = tokio::task::spawn_blocking(move || match &body {
            TransformBody::Jq(p) => p
                .run_one_cancellable(&ctx, &jq_limits, Some(stop))
                .map_err(|e| error_value(e.code, e.message)),
            TransformBody::Template(t) => t
                .render(&ctx, &mut SecretAccess::Mask)
                .map_err(|e| render_error(&e)),
        });
        let outcome = tokio::select! {
            r = tokio::time::timeout(Duration::from_millis(timeout_ms), task) => r,
            _ = inner.shutdown.cancelled() => {
                // The node is stopping: the program is told to stop (the runtime waits for
                // its thread on exit), and the step is left started; the next start runs it
                // again as an interrupted attempt.
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
        };
        let result = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(error_value(
                "transform.crashed",
                format!("the transform crashed: {join}"),
            )),
            Err(_) => {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                Err(error_value(
                    "step.timed_out",
                    format!(
                        "the transform did not finish within {}",
                        xyn_core::duration::format_duration_ms(timeout_ms)
                    ),
                ))
            }
        };
        let now = inner.clock.now();
        match result.map(|v| self.bounded_output(v)) {
            Ok(Ok(v)) => m.complete_step(ids, now, i, v),
            Ok(Err(too_large)) => {
                m.fail_step(ids, now, i, too_large, false);
            }
            Err(e) => {
                m.fail_step(ids, now, i, e, true);
            }
        }
        Ok(())
    }

    /// A step refused before its work began (an input that does not render, a secret that
    /// cannot be read, no route to its provider): started with what it would have recorded,
    /// then failed with `error`, not retried.
    fn fail_unstarted(
        &self,
        m: &mut RunMachine,
        i: usize,
        recorded: Value,
        error: Value,
    ) -> Progress {
        let inner = self.inner();
        let ids = inner.ids.as_ref();
        m.start_step(ids, inner.clock.now(), i, recorded);
        m.fail_step(ids, inner.clock.now(), i, error, false);
        Progress::Continue
    }

    /// Starts an effectful step durably; returns false when the run changed meanwhile.
    async fn start_effect(
        &self,
        m: &mut RunMachine,
        i: usize,
        recorded: Value,
    ) -> Result<bool, XynError> {
        let inner = self.inner();
        m.start_step(inner.ids.as_ref(), inner.clock.now(), i, recorded);
        self.sync(m).await
    }

    /// The time an effect may take: its step timeout (or the node default), but never past
    /// the run's deadline.
    fn effect_timeout(&self, m: &RunMachine, i: usize) -> Duration {
        let inner = self.inner();
        let step = m.plan.steps[i]
            .timeout_ms
            .unwrap_or(inner.config.default_step_timeout_ms);
        let run_left = m
            .run
            .deadline_at
            .map_or(u64::MAX, |d| d.ms_since(inner.clock.now()));
        Duration::from_millis(step.min(run_left).max(1))
    }

    fn register_cancel(&self, run_id: RunId) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut m) = self.inner().cancels.lock() {
            m.insert(run_id, token.clone());
        }
        token
    }

    fn unregister_cancel(&self, run_id: RunId) {
        if let Ok(mut m) = self.inner().cancels.lock() {
            m.remove(&run_id);
        }
    }

    fn sink(&self, m: &RunMachine, i: usize, secrets: Vec<String>) -> Arc<StepArtifacts> {
        let inner = self.inner();
        Arc::new(StepArtifacts {
            blobs: inner.blobs.clone(),
            clock: inner.clock.clone(),
            ids: inner.ids.clone(),
            run_id: m.run.run_id,
            step_id: m.steps[i].step_id,
            created_by: format!("step:{}", m.steps[i].name),
            secrets,
            made: Mutex::new(Vec::new()),
        })
    }

    async fn run_action(&self, m: &mut RunMachine, i: usize) -> Result<Progress, XynError> {
        let inner = self.inner();
        let ids = inner.ids.as_ref();
        let (action, with) = match &m.plan.steps[i].body {
            StepBody::Action { action, with } => (action.clone(), with.clone()),
            _ => return Ok(Progress::Continue),
        };
        let ctx = m.context();
        let mut recorded = with
            .render(&ctx, &mut SecretAccess::Mask)
            .unwrap_or(Value::Null);
        inner.actions().redact(&action, &mut recorded);
        let refs = match self
            .resolve_secret_refs(m, i, with.exprs().into_iter().map(|(_, e)| e))
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(self.fail_unstarted(m, i, recorded, e)),
        };
        let lookup = |n: &str| refs.get(n).or_else(|| inner.secrets.get(n));
        let mut access = SecretAccess::resolve(&lookup);
        let input = match with.render(&ctx, &mut access) {
            Ok(v) => v,
            Err(e) => return Ok(self.fail_unstarted(m, i, recorded, render_error(&e))),
        };
        let secrets = access.used().to_vec();
        if !self.start_effect(m, i, recorded).await? {
            return Ok(Progress::Continue);
        }
        abort_if_injected(&m.steps[i].name);
        let step = &m.steps[i];
        let sink = self.sink(m, i, secrets.clone());
        let actx = ActionContext {
            run_id: Some(m.run.run_id),
            step_id: Some(step.step_id),
            attempt: step.attempt,
            idempotency_key: format!("{}:{}", m.run.run_id, step.step_id),
            correlation_id: m.run.correlation_id.clone(),
            actor: m.run.actor.clone(),
            timeout: Some(self.effect_timeout(m, i)),
            platform: Arc::new(self.clone()),
            artifacts: sink.clone(),
            http: inner.http.clone(),
            egress: inner.egress.clone(),
            destinations: inner.config.http_call.clone(),
        };
        let timeout = self.effect_timeout(m, i);
        let token = self.register_cancel(m.run.run_id);
        let actions = inner.actions();
        let exec = actions.execute(&action, &actx, input);
        let res = tokio::select! {
            r = tokio::time::timeout(timeout, exec) => Some(r),
            _ = token.cancelled() => None,
        };
        self.unregister_cancel(m.run.run_id);
        let Some(res) = res else {
            return Ok(Progress::Cancelled);
        };
        let now = inner.clock.now();
        for a in sink.take() {
            m.attach_artifact(ids, now, i, a);
        }
        let dims = json!({"action": action});
        let records = match &res {
            Ok(Ok(out)) => out.records.as_slice(),
            Ok(Err(err)) => err.records.as_slice(),
            Err(_) => &[],
        };
        record_action_records(m, ids, now, i, &action, records, &secrets);
        match res {
            Err(_) => {
                let e = error_value(
                    "step.timed_out",
                    format!(
                        "{action} did not finish within {}",
                        xyn_core::duration::format_duration_ms(timeout.as_millis() as u64)
                    ),
                );
                m.fail_step(ids, now, i, e, true);
            }
            Ok(Ok(out)) => {
                let mut output = out.output;
                redact_labelled(&mut output, &refs.labelled);
                redact_value(&mut output, &secrets);
                inner.actions().redact(&action, &mut output);
                let (run_id, step_id) = (m.run.run_id, m.steps[i].step_id);
                for (metric, q) in [
                    (footprint::BYTES_IN, out.bytes_in),
                    (footprint::BYTES_OUT, out.bytes_out),
                ] {
                    m.record_footprint(Footprint::new(
                        now,
                        Some(run_id),
                        Some(step_id),
                        "action",
                        &action,
                        metric,
                        q as f64,
                        "bytes",
                        dims.clone(),
                    ));
                }
                match self.bounded_output(output) {
                    Ok(output) => m.complete_step(ids, now, i, output),
                    Err(too_large) => {
                        m.fail_step(ids, now, i, too_large, false);
                    }
                }
            }
            Ok(Err(err)) => {
                let mut v = err.to_value();
                redact_labelled(&mut v, &refs.labelled);
                redact_value(&mut v, &secrets);
                inner.actions().redact(&action, &mut v);
                m.fail_step(ids, now, i, v, err.retryable);
            }
        }
        Ok(Progress::Continue)
    }

    /// What a gate at `gate` approves: each action step after it (up to the next gate) with
    /// the fields that say where it acts — for `http.call` the method and URL, for
    /// `events.emit` the event name — resolved as the run knows them now, secrets masked.
    /// A field that depends on what happens after the gate is `null`, with `unresolved`.
    pub(crate) fn gate_effects(&self, m: &RunMachine, gate: usize) -> Value {
        let inner = self.inner();
        let ctx = m.context();
        let mut out = Vec::new();
        for step in m.plan.steps.iter().skip(gate + 1) {
            let (action, with) = match &step.body {
                StepBody::Gate { .. } => break,
                StepBody::Action { action, with } => (action, with),
                _ => continue,
            };
            let mut e = json!({"step": step.id, "action": action});
            let fields: &[&str] = match action.as_str() {
                "http.call" => &["method", "url"],
                "events.emit" => &["event_name"],
                _ => &[],
            };
            for f in fields {
                let tv = match with {
                    TemplateValue::Obj(kv) => kv.iter().find(|(k, _)| k == f).map(|(_, v)| v),
                    _ => None,
                };
                let v = match tv {
                    None if *f == "method" => json!("GET"),
                    None => Value::Null,
                    Some(tv) => match tv.render(&ctx, &mut SecretAccess::Mask) {
                        Ok(Value::String(s)) if *f == "method" => json!(s.to_ascii_uppercase()),
                        Ok(v) => v,
                        Err(_) => {
                            e["unresolved"] = json!(true);
                            Value::Null
                        }
                    },
                };
                e[*f] = v;
            }
            inner.actions().redact(action, &mut e);
            out.push(e);
        }
        Value::Array(out)
    }

    async fn run_agent(&self, m: &mut RunMachine, i: usize) -> Result<Progress, XynError> {
        let inner = self.inner();
        let ids = inner.ids.as_ref();
        let StepBody::Agent {
            provider,
            model,
            prompt,
            system,
            temperature,
            max_tokens,
            json_output,
            options,
            api_key,
        } = m.plan.steps[i].body.clone()
        else {
            return Ok(Progress::Continue);
        };
        let ctx = m.context();
        let render = |t: &xyn_core::template::Template,
                      acc: &mut SecretAccess<'_>|
         -> Result<String, RenderError> {
            let v = t.render(&ctx, acc)?;
            Ok(v.as_str().map_or_else(|| v.to_string(), str::to_string))
        };
        let recorded_prompt = render(&prompt, &mut SecretAccess::Mask).unwrap_or_default();
        let recorded = json!({"provider": provider, "model": model, "prompt": recorded_prompt});
        let mut exprs: Vec<&xyn_core::template::Expr> = prompt.exprs().collect();
        exprs.extend(system.iter().flat_map(|t| t.exprs()));
        let option_exprs = options.as_ref().map(|o| o.exprs()).unwrap_or_default();
        exprs.extend(option_exprs.into_iter().map(|(_, e)| e));
        exprs.extend(api_key.iter().flat_map(|t| t.exprs()));
        let refs = match self.resolve_secret_refs(m, i, exprs).await {
            Ok(r) => r,
            Err(e) => return Ok(self.fail_unstarted(m, i, recorded, e)),
        };
        let lookup = |n: &str| refs.get(n).or_else(|| inner.secrets.get(n));
        let mut access = SecretAccess::resolve(&lookup);
        let key = match api_key.as_ref().map(|t| render(t, &mut access)).transpose() {
            Ok(k) => k,
            Err(e) => return Ok(self.fail_unstarted(m, i, recorded, render_error(&e))),
        };
        let rendered = (|| -> Result<(String, Option<String>, Value), RenderError> {
            let p = render(&prompt, &mut access)?;
            let s = system
                .as_ref()
                .map(|t| render(t, &mut access))
                .transpose()?;
            let o = options
                .as_ref()
                .map(|o| o.render(&ctx, &mut access))
                .transpose()?
                .unwrap_or(Value::Null);
            Ok((p, s, o))
        })();
        let (prompt_text, system_text, options_v) = match rendered {
            Ok(x) => x,
            Err(e) => return Ok(self.fail_unstarted(m, i, recorded, render_error(&e))),
        };
        let secrets = access.used().to_vec();
        let route = match inner.agents.route_with_key(&provider, key.is_some()) {
            Ok(r) => r,
            Err(e) => {
                let error = json!({"code": e.code, "message": e.message});
                return Ok(self.fail_unstarted(m, i, recorded, error));
            }
        };
        if !self.start_effect(m, i, recorded).await? {
            return Ok(Progress::Continue);
        }
        let req = ChatRequest {
            provider: provider.clone(),
            model: model.clone(),
            system: system_text,
            prompt: prompt_text,
            temperature,
            max_tokens,
            json_output,
            options: options_v,
            api_key: key,
        };
        let timeout = self.effect_timeout(m, i);
        let token = self.register_cancel(m.run.run_id);
        let call = route.provider.complete(&req, timeout);
        let res = tokio::select! {
            r = tokio::time::timeout(timeout + Duration::from_millis(50), call) => Some(r),
            _ = token.cancelled() => None,
        };
        self.unregister_cancel(m.run.run_id);
        let Some(res) = res else {
            return Ok(Progress::Cancelled);
        };
        let sink = self.sink(m, i, secrets.clone());
        let now = inner.clock.now();
        let dims = json!({"provider": route.provider.name(), "requested_provider": provider, "model": model});
        let (run_id, step_id) = (m.run.run_id, m.steps[i].step_id);
        match res {
            Err(_) => {
                let e = error_value(
                    "step.timed_out",
                    format!("{provider} did not answer within {}ms", timeout.as_millis()),
                );
                m.fail_step(ids, now, i, e, true);
            }
            Ok(Err(e)) => {
                let mut v = json!({"code": e.code, "message": e.message, "retryable": e.retryable,
                    "status": e.status, "provider_code": e.provider_code});
                redact_labelled(&mut v, &refs.labelled);
                redact_value(&mut v, &secrets);
                m.fail_step(ids, now, i, v, e.retryable);
            }
            Ok(Ok(resp)) => {
                let mut prompt_doc = json!({"provider": resp.provider, "requested_provider": provider, "model": model,
                    "request": resp.wire_request});
                let mut response_doc = json!({"provider": resp.provider, "model": resp.model,
                    "request_id": resp.request_id, "response": resp.wire_response});
                redact_labelled(&mut prompt_doc, &refs.labelled);
                redact_labelled(&mut response_doc, &refs.labelled);
                redact_value(&mut prompt_doc, &secrets);
                redact_value(&mut response_doc, &secrets);
                let mut artifact_ids = Vec::new();
                for (name, kind, doc) in [
                    ("prompt.json", "prompt", &prompt_doc),
                    ("response.json", "response", &response_doc),
                ] {
                    let bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
                    match sink
                        .put(
                            name,
                            kind,
                            "application/json",
                            bytes,
                            json!({"provider": resp.provider, "model": resp.model}),
                        )
                        .await
                    {
                        Ok(a) => artifact_ids.push(a.artifact_id.to_string()),
                        Err(e) => {
                            tracing::error!(%run_id, error = %e, "could not store an agent artifact")
                        }
                    }
                }
                for a in sink.take() {
                    m.attach_artifact(ids, now, i, a);
                }
                let usage = resp.usage.unwrap_or_default();
                for (metric, q, unit) in [
                    (footprint::TOKENS_IN, usage.tokens_in as f64, "tokens"),
                    (footprint::TOKENS_OUT, usage.tokens_out as f64, "tokens"),
                    (
                        footprint::REQUEST_COUNT,
                        resp.requests.max(1) as f64,
                        "count",
                    ),
                ] {
                    m.record_footprint(Footprint::new(
                        now,
                        Some(run_id),
                        Some(step_id),
                        "agent",
                        &format!("{}/{}", route.provider.name(), resp.model),
                        metric,
                        q,
                        unit,
                        dims.clone(),
                    ));
                }
                let mut text = resp.text.clone();
                if let Some(r) = xyn_core::redact::redact_labelled_str(&text, &refs.labelled) {
                    text = r;
                }
                if let Some(r) = redact_str(&text, &secrets) {
                    text = r;
                }
                let mut out = json!({
                    "text": text,
                    "provider": resp.provider,
                    "model": resp.model,
                    "finish_reason": resp.finish.as_str(),
                    "usage": {"tokens_in": usage.tokens_in, "tokens_out": usage.tokens_out},
                    "request_id": resp.request_id,
                    "artifacts": artifact_ids,
                });
                if let Some(note) = &route.note {
                    out["routing"] = Value::String(note.clone());
                }
                if json_output {
                    match parse_json_answer(&text) {
                        Some(j) => out["json"] = j,
                        None => {
                            let e = json!({"code": "agent.bad_json", "message": "the answer is not a JSON object", "text": text});
                            m.fail_step(ids, now, i, e, true);
                            return Ok(Progress::Continue);
                        }
                    }
                }
                match self.bounded_output(out) {
                    Ok(out) => m.complete_step(ids, now, i, out),
                    Err(too_large) => {
                        m.fail_step(ids, now, i, too_large, false);
                    }
                }
            }
        }
        Ok(Progress::Continue)
    }

    /// The output limit: `Err` holds the step error (`step.output_too_large`) when the output,
    /// serialized, is larger than `max_output_bytes`. Checked before the output is recorded
    /// anywhere (the step row, events).
    pub(crate) fn bounded_output(&self, v: Value) -> Result<Value, Value> {
        let max = self.inner().config.max_output_bytes;
        if json_fits(&v, max) {
            return Ok(v);
        }
        Err(json!({
            "code": codes::STEP_OUTPUT_TOO_LARGE,
            "message": format!(
                "the output is larger than the limit of {max} bytes (engine.max_output_bytes); \
                 write large results as artifacts"
            ),
            "limit_bytes": max,
        }))
    }
}

/// Whether `v` serializes to at most `max` bytes. Stops serializing as soon as the limit is
/// passed, so a huge output costs no more than the limit to measure.
pub(crate) fn json_fits(v: &Value, max: usize) -> bool {
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self
                .0
                .checked_sub(buf.len())
                .ok_or_else(|| std::io::Error::other("over the limit"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Budget(max), v).is_ok()
}

/// Test-only failure injection, compiled into debug builds only: with
/// `XYN_TEST_ABORT_AT_STEP=<step id>` the process aborts when a step of that id starts, which
/// stands in for a step that crashes the node (the end-to-end crash-loop test uses it).
#[cfg(debug_assertions)]
fn abort_if_injected(step: &str) {
    static TARGET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("XYN_TEST_ABORT_AT_STEP").ok());
    if target.as_deref() == Some(step) {
        tracing::error!(step, "XYN_TEST_ABORT_AT_STEP: aborting the process");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
fn abort_if_injected(_step: &str) {}

/// Writes what an action asked to be recorded (footprints, audit events such as
/// `xyn.cap.denied`) into the step's batch.
fn record_action_records(
    m: &mut RunMachine,
    ids: &dyn IdSource,
    now: xyn_core::Timestamp,
    i: usize,
    action: &str,
    records: &[xyn_actions::Record],
    secrets: &[String],
) {
    let (run_id, step_id) = (m.run.run_id, m.steps[i].step_id);
    for r in records {
        match r {
            xyn_actions::Record::Footprint {
                metric,
                quantity,
                unit,
                dims,
            } => m.record_footprint(Footprint::new(
                now,
                Some(run_id),
                Some(step_id),
                "action",
                action,
                metric,
                *quantity,
                unit,
                dims.clone(),
            )),
            xyn_actions::Record::Event { name, data } => {
                // Events an action asks for never hold a secret value the step used.
                let mut data = data.clone();
                redact_value(&mut data, secrets);
                m.record_step_event(ids, now, i, name, data)
            }
        }
    }
}

/// Parses a model's JSON answer, tolerating a Markdown code fence around it.
fn parse_json_answer(text: &str) -> Option<Value> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.strip_suffix("```"))
        .unwrap_or(t)
        .trim();
    serde_json::from_str::<Value>(t)
        .ok()
        .filter(Value::is_object)
}

/// Collects the artifacts a step writes; the driver attaches them when it records the result.
pub(crate) struct StepArtifacts {
    blobs: BlobStore,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    run_id: RunId,
    step_id: StepId,
    created_by: String,
    secrets: Vec<String>,
    made: Mutex<Vec<Artifact>>,
}

impl StepArtifacts {
    pub(crate) fn take(&self) -> Vec<Artifact> {
        self.made
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

#[async_trait]
impl ArtifactSink for StepArtifacts {
    async fn put(
        &self,
        name: &str,
        kind: &str,
        content_type: &str,
        bytes: Vec<u8>,
        metadata: Value,
    ) -> Result<Artifact, XynError> {
        // Names and kinds are stored as text: a NUL (which PostgreSQL refuses) or another
        // control character is refused here, alike on every store.
        for (what, text) in [
            ("name", name),
            ("kind", kind),
            ("content type", content_type),
        ] {
            if text.chars().any(char::is_control) {
                return Err(XynError::invalid(
                    codes::REQUEST_INVALID_TEXT,
                    format!("the artifact {what} contains a control character"),
                ));
            }
        }
        // Secrets never reach artifacts: text is redacted before it is stored.
        let bytes = match std::str::from_utf8(&bytes) {
            Ok(t) => match redact_str(t, &self.secrets) {
                Some(r) => r.into_bytes(),
                None => bytes,
            },
            Err(_) => bytes,
        };
        let len = bytes.len() as i64;
        let blobs = self.blobs.clone();
        let sha = tokio::task::spawn_blocking(move || blobs.put(&bytes))
            .await
            .map_err(|e| XynError::internal(format!("artifact writer failed: {e}")))??;
        let a = Artifact {
            artifact_id: ArtifactId(self.ids.new_uuid()),
            name: name.to_string(),
            kind: kind.to_string(),
            content_type: content_type.to_string(),
            byte_length: len,
            sha256: sha,
            created_at: self.clock.now(),
            created_by: self.created_by.clone(),
            run_id: Some(self.run_id),
            step_id: Some(self.step_id),
            metadata,
        };
        if let Ok(mut v) = self.made.lock() {
            v.push(a.clone());
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_with_or_without_fences() {
        assert_eq!(parse_json_answer("{\"a\":1}"), Some(json!({"a": 1})));
        assert_eq!(
            parse_json_answer("```json\n{\"a\":1}\n```"),
            Some(json!({"a": 1}))
        );
        assert_eq!(parse_json_answer("[1]"), None);
        assert_eq!(parse_json_answer("hello"), None);
    }

    #[test]
    fn json_fits_stops_at_the_limit() {
        let v = json!({"s": "x".repeat(100)});
        let len = serde_json::to_vec(&v).unwrap().len();
        assert!(json_fits(&v, len));
        assert!(!json_fits(&v, len - 1));
        assert!(!json_fits(&json!("x".repeat(10_000_000)), 1024 * 1024));
    }
}
