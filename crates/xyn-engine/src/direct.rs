//! Operations the API offers besides events and runs: uploading an artifact, recording an
//! audit event for a privileged action (a login, an operator action), and executing an
//! action directly (operator-only `POST /api/internal/actions/execute`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use xyn_actions::{ActionContext, ArtifactSink};
use xyn_core::event::{Event, Resource, StoredEvent};
use xyn_core::footprint::{self, Footprint};
use xyn_core::records::Artifact;
use xyn_core::{ArtifactId, ErrorKind, EventId, RunId, StepId, XynError, codes};
use xyn_store::WriteBatch;

use crate::Node;

/// Audit event of a direct action execution.
pub const ACTION_EXECUTED: &str = "xyn.action.executed";
/// Audit event of an uploaded artifact.
pub const ARTIFACT_UPLOADED: &str = "xyn.artifact.uploaded";

/// An artifact uploaded through the API.
#[derive(Clone, Debug, Default)]
pub struct NewArtifact {
    pub name: String,
    pub kind: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    pub run_id: Option<RunId>,
    pub step_id: Option<StepId>,
    pub metadata: Value,
    pub actor: String,
    pub correlation_id: Option<String>,
}

/// What a direct action execution returned.
#[derive(Clone, Debug)]
pub struct DirectOutcome {
    pub ok: bool,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub artifacts: Vec<Artifact>,
    pub event: StoredEvent,
}

impl Node {
    fn platform_event(
        &self,
        name: &str,
        actor: &str,
        correlation_id: Option<String>,
        resource: Option<Resource>,
        data: Value,
    ) -> Event {
        let inner = self.inner();
        Event {
            event_id: EventId(inner.ids.new_uuid()),
            event_name: name.into(),
            occurred_at: inner.clock.now(),
            env_id: inner.config.env_id.clone(),
            actor: actor.into(),
            correlation_id: correlation_id
                .filter(|c| crate::valid_correlation_id(c))
                .unwrap_or_else(|| inner.ids.new_uuid().to_string()),
            run_id: None,
            step_id: None,
            resource,
            data,
        }
    }

    /// Appends a platform (`xyn.*`) audit event recording a privileged action and who did it.
    pub async fn record_audit(
        &self,
        name: &str,
        actor: &str,
        correlation_id: Option<String>,
        resource: Option<Resource>,
        data: Value,
    ) -> Result<StoredEvent, XynError> {
        if !name.starts_with("xyn.") {
            return Err(XynError::internal(format!(
                "audit event names start with xyn. ({name:?})"
            )));
        }
        let e = self.platform_event(name, actor, correlation_id, resource, data);
        self.inner()
            .store
            .commit(WriteBatch {
                events: vec![e],
                ..Default::default()
            })
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| XynError::internal("the store returned no event"))
    }

    /// Stores an uploaded artifact (bytes content-addressed, metadata in the store), attached
    /// to a run and step when given, with an `xyn.artifact.uploaded` event naming the actor.
    pub async fn create_artifact(&self, a: NewArtifact) -> Result<Artifact, XynError> {
        let inner = self.inner();
        if a.name.trim().is_empty() || a.kind.trim().is_empty() || a.content_type.trim().is_empty()
        {
            return Err(XynError::invalid(
                codes::REQUEST_INVALID,
                "an artifact needs a non-empty name, kind and content_type",
            ));
        }
        if !a.metadata.is_object() {
            return Err(XynError::invalid(
                codes::REQUEST_INVALID,
                "metadata must be a JSON object",
            ));
        }
        if a.step_id.is_some() && a.run_id.is_none() {
            return Err(XynError::invalid(
                codes::REQUEST_INVALID,
                "step_id needs the run_id of its run",
            ));
        }
        if let Some(run_id) = a.run_id {
            inner.store.get_run(run_id).await?.ok_or_else(|| {
                XynError::not_found(codes::RUN_NOT_FOUND, format!("no run {run_id}"))
            })?;
            if let Some(step_id) = a.step_id {
                let steps = inner.store.get_steps(run_id).await?;
                if !steps.iter().any(|s| s.step_id == step_id) {
                    return Err(XynError::not_found(
                        codes::STEP_NOT_FOUND,
                        format!("run {run_id} has no step {step_id}"),
                    ));
                }
            }
        }
        let len = a.bytes.len() as i64;
        let blobs = inner.blobs.clone();
        let bytes = a.bytes;
        let sha = tokio::task::spawn_blocking(move || blobs.put(&bytes))
            .await
            .map_err(|e| XynError::internal(format!("artifact writer failed: {e}")))??;
        let now = inner.clock.now();
        let artifact = Artifact {
            artifact_id: ArtifactId(inner.ids.new_uuid()),
            name: a.name,
            kind: a.kind,
            content_type: a.content_type,
            byte_length: len,
            sha256: sha,
            created_at: now,
            created_by: a.actor.clone(),
            run_id: a.run_id,
            step_id: a.step_id,
            metadata: a.metadata,
        };
        let mut event = self.platform_event(
            ARTIFACT_UPLOADED,
            &a.actor,
            a.correlation_id,
            Some(Resource {
                kind: "artifact".into(),
                id: artifact.artifact_id.to_string(),
            }),
            json!({
                "artifact_id": artifact.artifact_id.to_string(),
                "name": artifact.name,
                "kind": artifact.kind,
                "content_type": artifact.content_type,
                "byte_length": artifact.byte_length,
                "sha256": artifact.sha256,
            }),
        );
        event.run_id = a.run_id;
        event.step_id = a.step_id;
        let fp = Footprint::new(
            now,
            a.run_id,
            a.step_id,
            "artifact",
            &artifact.name,
            footprint::ARTIFACT_BYTES_WRITTEN,
            len as f64,
            "bytes",
            json!({"source": "api"}),
        );
        inner
            .store
            .commit(WriteBatch {
                events: vec![event],
                artifacts: vec![artifact.clone()],
                footprints: vec![fp],
                ..Default::default()
            })
            .await?;
        Ok(artifact)
    }

    /// Executes an installed action outside any run (operator-only), recording an
    /// `xyn.action.executed` event with the actor, the redacted input and the outcome.
    pub async fn execute_action(
        &self,
        action: &str,
        input: Value,
        actor: &str,
        correlation_id: Option<String>,
        timeout: Duration,
    ) -> Result<DirectOutcome, XynError> {
        let inner = self.inner();
        if !inner.actions().contains(action) {
            return Err(XynError::not_found(
                codes::ACTION_UNKNOWN,
                format!(
                    "no action named {action:?} (installed: {})",
                    inner.actions().names().join(", ")
                ),
            ));
        }
        inner
            .actions()
            .check_input(action, &input)
            .map_err(|e| XynError::invalid(codes::ACTION_INPUT_INVALID, e.message))?;
        let cid = correlation_id
            .filter(|c| crate::valid_correlation_id(c))
            .unwrap_or_else(|| inner.ids.new_uuid().to_string());
        let exec_id = inner.ids.new_uuid();
        let sink = Arc::new(DirectArtifacts {
            node: self.clone(),
            created_by: actor.to_string(),
            made: Mutex::new(Vec::new()),
        });
        let ctx = ActionContext {
            run_id: None,
            step_id: None,
            attempt: 1,
            idempotency_key: format!("direct:{exec_id}"),
            correlation_id: cid.clone(),
            actor: actor.to_string(),
            timeout: Some(timeout),
            platform: Arc::new(self.clone()),
            artifacts: sink.clone(),
            http: inner.http.clone(),
            egress: inner.egress.clone(),
            destinations: inner.config.http_call.clone(),
        };
        let started = inner.clock.now();
        let res = tokio::time::timeout(
            timeout,
            inner.actions().execute(action, &ctx, input.clone()),
        )
        .await;
        let (ok, output, error) = match res {
            Ok(Ok(out)) => (true, Some(out.output), None),
            Ok(Err(e)) => (false, None, Some(e.to_value())),
            Err(_) => (
                false,
                None,
                Some(
                    json!({"code": "action.timeout", "message": format!("the action did not finish within {} ms", timeout.as_millis()), "retryable": true}),
                ),
            ),
        };
        let mut recorded_input = input;
        inner.actions().redact(action, &mut recorded_input);
        let mut recorded_output = output.clone();
        if let Some(o) = recorded_output.as_mut() {
            inner.actions().redact(action, o);
        }
        let artifacts = sink.take();
        let event = self.platform_event(
            ACTION_EXECUTED,
            actor,
            Some(cid),
            Some(Resource {
                kind: "action".into(),
                id: action.into(),
            }),
            json!({
                "action": action,
                "execution_id": exec_id.to_string(),
                "ok": ok,
                "input": recorded_input,
                "error": error,
                "wall_ms": inner.clock.now().ms_since(started),
                "artifact_ids": artifacts.iter().map(|a| a.artifact_id.to_string()).collect::<Vec<_>>(),
            }),
        );
        let stored = inner
            .store
            .commit(WriteBatch {
                events: vec![event],
                artifacts: artifacts.clone(),
                ..Default::default()
            })
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| XynError::internal("the store returned no event"))?;
        Ok(DirectOutcome {
            ok,
            output: recorded_output,
            error,
            artifacts,
            event: stored,
        })
    }
}

/// Artifacts made by a directly executed action: stored, then committed with its event.
struct DirectArtifacts {
    node: Node,
    created_by: String,
    made: Mutex<Vec<Artifact>>,
}

impl DirectArtifacts {
    fn take(&self) -> Vec<Artifact> {
        self.made
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

#[async_trait]
impl ArtifactSink for DirectArtifacts {
    async fn put(
        &self,
        name: &str,
        kind: &str,
        content_type: &str,
        bytes: Vec<u8>,
        metadata: Value,
    ) -> Result<Artifact, XynError> {
        let inner = self.node.inner();
        let len = bytes.len() as i64;
        let blobs = inner.blobs.clone();
        let sha = tokio::task::spawn_blocking(move || blobs.put(&bytes))
            .await
            .map_err(|e| XynError::new(ErrorKind::Internal, codes::INTERNAL, e.to_string()))??;
        let a = Artifact {
            artifact_id: ArtifactId(inner.ids.new_uuid()),
            name: name.into(),
            kind: kind.into(),
            content_type: content_type.into(),
            byte_length: len,
            sha256: sha,
            created_at: inner.clock.now(),
            created_by: self.created_by.clone(),
            run_id: None,
            step_id: None,
            metadata,
        };
        if let Ok(mut v) = self.made.lock() {
            v.push(a.clone());
        }
        Ok(a)
    }
}
