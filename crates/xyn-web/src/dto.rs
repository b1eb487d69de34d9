//! API DTOs (xyn-seed-plan §45), converted from domain records on purpose: a serialisable
//! type is a compatibility promise, so the wire shape lives here and nowhere else.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use xyn_core::event::StoredEvent;
use xyn_core::records::{Artifact, BlueprintVersion};
use xyn_core::run::{Run, Step};
use xyn_core::{ErrorKind, XynError, codes};

#[derive(Serialize)]
pub struct HealthDto {
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub now: String,
    pub store: String,
}

#[derive(Serialize)]
pub struct ResourceDto {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Serialize)]
pub struct EventDto {
    pub event_id: String,
    pub event_name: String,
    pub occurred_at: String,
    pub env_id: String,
    pub actor: String,
    pub correlation_id: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub resource: Option<ResourceDto>,
    pub data: Value,
    /// Position in the log (an addition to §45.3).
    pub seq: i64,
    /// Link in the hash chain (an addition to §45.3).
    pub hash: String,
}

impl From<StoredEvent> for EventDto {
    fn from(s: StoredEvent) -> Self {
        let e = s.event;
        Self {
            event_id: e.event_id.to_string(),
            event_name: e.event_name,
            occurred_at: e.occurred_at.to_string(),
            env_id: e.env_id,
            actor: e.actor,
            correlation_id: e.correlation_id,
            run_id: e.run_id.map(|r| r.to_string()),
            step_id: e.step_id.map(|r| r.to_string()),
            resource: e.resource.map(|r| ResourceDto {
                kind: r.kind,
                id: r.id,
            }),
            data: e.data,
            seq: s.seq,
            hash: s.hash,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitEventRequest {
    pub event_name: String,
    #[serde(default = "empty_object")]
    pub data: Value,
    #[serde(default)]
    pub resource: Option<ResourceIn>,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub step_id: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[derive(Serialize)]
pub struct RunDto {
    pub run_id: String,
    pub name: String,
    pub status: &'static str,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub actor: String,
    pub correlation_id: String,
    pub inputs: Value,
    pub outputs: Option<Value>,
    pub error: Option<Value>,
    pub blueprint_id: String,
    pub blueprint_version: i64,
    pub trigger_event_id: Option<String>,
    pub priority: i64,
}

impl From<Run> for RunDto {
    fn from(r: Run) -> Self {
        Self {
            run_id: r.run_id.to_string(),
            name: r.name,
            status: r.status.as_str(),
            created_at: r.created_at.to_string(),
            started_at: r.started_at.map(|t| t.to_string()),
            completed_at: r.completed_at.map(|t| t.to_string()),
            actor: r.actor,
            correlation_id: r.correlation_id,
            inputs: r.inputs,
            outputs: r.outputs,
            error: r.error,
            blueprint_id: r.blueprint_id,
            blueprint_version: r.blueprint_version,
            trigger_event_id: r.trigger_event_id.map(|e| e.to_string()),
            priority: r.priority,
        }
    }
}

#[derive(Serialize)]
pub struct StepDto {
    pub step_id: String,
    pub run_id: String,
    pub name: String,
    pub status: &'static str,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub logs_artifact_id: Option<String>,
    pub inputs: Option<Value>,
    pub outputs: Option<Value>,
    pub error: Option<Value>,
    pub kind: &'static str,
    pub index: u32,
    pub attempt: u32,
    pub next_attempt_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub decided_by: Option<String>,
    pub decision_comment: Option<String>,
}

impl From<Step> for StepDto {
    fn from(s: Step) -> Self {
        let duration_ms = match (s.started_at, s.completed_at) {
            (Some(a), Some(b)) => Some(b.ms_since(a)),
            _ => None,
        };
        Self {
            step_id: s.step_id.to_string(),
            run_id: s.run_id.to_string(),
            name: s.name,
            status: s.status.as_str(),
            started_at: s.started_at.map(|t| t.to_string()),
            completed_at: s.completed_at.map(|t| t.to_string()),
            logs_artifact_id: s.logs_artifact_id.map(|a| a.to_string()),
            inputs: s.inputs,
            outputs: s.outputs,
            error: s.error,
            kind: s.kind.as_str(),
            index: s.idx,
            attempt: s.attempt,
            next_attempt_at: s.next_attempt_at.map(|t| t.to_string()),
            duration_ms,
            decided_by: s.decided_by,
            decision_comment: s.decision_comment,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCreateRequest {
    #[serde(default)]
    pub name: Option<String>,
    /// `<blueprint_id>` or `<blueprint_id>@<version>`.
    pub blueprint_ref: Option<String>,
    #[serde(default)]
    pub inputs: Option<Map<String, Value>>,
    #[serde(default)]
    pub priority: i64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Serialize)]
pub struct ArtifactDto {
    pub artifact_id: String,
    pub name: String,
    pub kind: String,
    pub content_type: String,
    pub byte_length: Option<i64>,
    pub created_at: String,
    pub created_by: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub sha256: Option<String>,
    pub metadata: Value,
}

impl From<Artifact> for ArtifactDto {
    fn from(a: Artifact) -> Self {
        Self {
            artifact_id: a.artifact_id.to_string(),
            name: a.name,
            kind: a.kind,
            content_type: a.content_type,
            byte_length: Some(a.byte_length),
            created_at: a.created_at.to_string(),
            created_by: a.created_by,
            run_id: a.run_id.map(|r| r.to_string()),
            step_id: a.step_id.map(|r| r.to_string()),
            sha256: Some(a.sha256),
            metadata: a.metadata,
        }
    }
}

#[derive(Serialize)]
pub struct BlueprintDto {
    pub blueprint_id: String,
    pub version: i64,
    pub name: String,
    pub digest: String,
    pub created_at: String,
    pub created_by: String,
    pub origin: String,
    pub definition: Value,
    pub source: String,
}

impl From<BlueprintVersion> for BlueprintDto {
    fn from(b: BlueprintVersion) -> Self {
        Self {
            blueprint_id: b.blueprint_id,
            version: b.version,
            name: b.name,
            digest: b.digest,
            created_at: b.created_at.to_string(),
            created_by: b.created_by,
            origin: b.origin,
            definition: b.definition,
            source: b.source,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlueprintApplyRequest {
    /// The blueprint as YAML or JSON text.
    pub definition: String,
}

#[derive(Serialize)]
pub struct ListDto<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Opaque cursors: `c<key>`.
pub fn encode_cursor(key: Option<i64>) -> Option<String> {
    key.map(|k| format!("c{k}"))
}

pub fn decode_cursor(c: Option<&str>) -> Result<Option<i64>, XynError> {
    match c {
        None | Some("") => Ok(None),
        Some(s) => s
            .strip_prefix('c')
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| {
                XynError::new(
                    ErrorKind::BadRequest,
                    codes::REQUEST_INVALID_CURSOR,
                    format!("cursor {s:?} is not one this API gave out"),
                )
            }),
    }
}

/// Parses a UUID path or query parameter.
pub fn parse_id<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, XynError> {
    s.parse().map_err(|_| {
        XynError::bad_request(
            codes::REQUEST_INVALID_ID,
            format!("{what} {s:?} is not a valid UUID"),
        )
    })
}

/// `limit` query parameter: 1..=500, default 50.
pub fn parse_limit(l: Option<&str>) -> Result<usize, XynError> {
    match l {
        None | Some("") => Ok(50),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| {
                XynError::bad_request(
                    codes::REQUEST_INVALID,
                    format!("limit must be a whole number from 1 to 500 (got {s:?})"),
                )
            }),
    }
}
