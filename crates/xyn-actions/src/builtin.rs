//! The built-in actions: `http.call`, `events.emit`, `ssh.run` and the internal platform actions for drafts
//! (`drafts.save`, `blueprints.validate`, `blueprints.promote`).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::http::HttpCall;
use crate::ssh::SshRun;
use crate::{Action, ActionContext, ActionError, ActionOutput};

/// Every built-in action.
pub fn all() -> Vec<Arc<dyn Action>> {
    vec![
        Arc::new(HttpCall),
        Arc::new(EventsEmit),
        Arc::new(SshRun::default()),
        Arc::new(DraftsSave),
        Arc::new(BlueprintsValidate),
        Arc::new(BlueprintsPromote),
    ]
}

fn ok(v: Value) -> Result<ActionOutput, ActionError> {
    Ok(ActionOutput {
        output: v,
        bytes_in: 0,
        bytes_out: 0,
        records: Vec::new(),
    })
}

/// `events.emit`: emits an event into this node's log; the runs it triggers start as for
/// any event. No HTTP, so no port, token or destination policy is involved.
pub struct EventsEmit;

#[async_trait]
impl Action for EventsEmit {
    fn name(&self) -> &str {
        "events.emit"
    }
    fn description(&self) -> &str {
        "Emits an event into this node's log (the runs it triggers start as for any event)."
    }
    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["event_name"],
            "properties": {
                "event_name": {"type": "string", "minLength": 1, "maxLength": 200},
                "data": {"type": "object"}
            }
        })
    }
    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["event_id", "seq"],
            "properties": {"event_id": {"type": "string"}, "seq": {"type": "integer"}}
        })
    }
    async fn execute(
        &self,
        ctx: &ActionContext,
        input: Value,
    ) -> Result<ActionOutput, ActionError> {
        let name = input
            .get("event_name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let data = input.get("data").cloned().unwrap_or_else(|| json!({}));
        let out = ctx
            .platform
            .emit_event(name, data, &ctx.actor, &ctx.correlation_id)
            .await
            .map_err(ActionError::from)?;
        ok(out)
    }
}

/// `drafts.save`.
pub struct DraftsSave;

#[async_trait]
impl Action for DraftsSave {
    fn name(&self) -> &str {
        "drafts.save"
    }
    fn description(&self) -> &str {
        "Creates or updates a draft blueprint or pack; a changed definition gets a new revision."
    }
    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["draft_type", "name", "definition"],
            "properties": {
                "draft_id": {"type": "string", "format": "uuid"},
                "draft_type": {"type": "string", "enum": ["blueprint", "pack"]},
                "name": {"type": "string", "minLength": 1},
                "trigger_event_type": {"type": "string"},
                "definition": {"type": ["string", "object"]},
                "notes": {"type": "string"},
                "source_run_id": {"type": "string", "format": "uuid"}
            }
        })
    }
    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["draft_id", "revision", "status"],
            "properties": {
                "draft_id": {"type": "string"},
                "revision": {"type": "integer"},
                "status": {"type": "string", "enum": ["draft"]}
            }
        })
    }
    async fn execute(
        &self,
        ctx: &ActionContext,
        input: Value,
    ) -> Result<ActionOutput, ActionError> {
        let mut input = input;
        if input.get("source_run_id").is_none()
            && let Some(r) = ctx.run_id
        {
            input["source_run_id"] = Value::String(r.to_string());
        }
        ok(ctx.platform.save_draft(input, &ctx.actor).await?)
    }
}

/// `blueprints.validate`.
pub struct BlueprintsValidate;

#[async_trait]
impl Action for BlueprintsValidate {
    fn name(&self) -> &str {
        "blueprints.validate"
    }
    fn description(&self) -> &str {
        "Validates a draft blueprint against the Blueprint v0 rules and stores the report."
    }
    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["draft_id"],
            "properties": {"draft_id": {"type": "string"}}
        })
    }
    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["is_valid", "issues"],
            "properties": {
                "is_valid": {"type": "boolean"},
                "issues": {"type": "array"},
                "report_artifact_id": {"type": "string"}
            }
        })
    }
    async fn execute(
        &self,
        ctx: &ActionContext,
        input: Value,
    ) -> Result<ActionOutput, ActionError> {
        ok(ctx.platform.validate_draft(input, &ctx.actor).await?)
    }
}

/// `blueprints.promote`.
pub struct BlueprintsPromote;

#[async_trait]
impl Action for BlueprintsPromote {
    fn name(&self) -> &str {
        "blueprints.promote"
    }
    fn description(&self) -> &str {
        "Promotes a validated draft to an active blueprint version, freezing that revision."
    }
    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["draft_id"],
            "properties": {"draft_id": {"type": "string"}}
        })
    }
    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["blueprint_id", "version", "status"],
            "properties": {
                "blueprint_id": {"type": "string"},
                "version": {"type": "string"},
                "status": {"type": "string", "enum": ["active"]}
            }
        })
    }
    async fn execute(
        &self,
        ctx: &ActionContext,
        input: Value,
    ) -> Result<ActionOutput, ActionError> {
        ok(ctx.platform.promote_draft(input, &ctx.actor).await?)
    }
}
