//! API DTOs, converted from domain records on purpose: a serialisable
//! type is a compatibility promise, so the wire shape lives here and nowhere else.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use xyn_core::event::{ChainReport, StoredEvent};
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft};
use xyn_core::run::{Run, Step};
use xyn_core::{ErrorKind, XynError, codes};

#[derive(Serialize, ToSchema)]
pub struct HealthDto {
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    #[schema(value_type = String)]
    pub version: &'static str,
    pub uptime_seconds: u64,
    #[schema(format = DateTime)]
    pub now: String,
    pub store: StoreHealthDto,
    /// How far the outbox dispatcher (NATS) is behind; only on nodes that dispatch it.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<serde_json::Value>,
}

/// Whether the store accepts writes, as the node's last commit found.
#[derive(Serialize, ToSchema)]
pub struct StoreHealthDto {
    pub writable: bool,
    /// Commits refused by the store (disk full, connection lost) since the start.
    pub write_failures: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ResourceDto {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Serialize, ToSchema)]
pub struct EventDto {
    pub event_id: String,
    /// The last eight digits of `event_id`, as people read and type it.
    pub short_id: String,
    pub event_name: String,
    #[schema(format = DateTime)]
    pub occurred_at: String,
    pub env_id: String,
    pub actor: String,
    pub correlation_id: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub resource: Option<ResourceDto>,
    #[schema(value_type = Object)]
    pub data: Value,
    /// Position in the log (1, 2, 3, … without gaps).
    pub seq: i64,
    /// Link in the hash chain: sha256 over the previous hash and this event.
    pub hash: String,
}

impl From<StoredEvent> for EventDto {
    fn from(s: StoredEvent) -> Self {
        let e = s.event;
        let event_id = e.event_id.to_string();
        Self {
            short_id: xyn_core::short_id(&event_id).to_string(),
            event_id,
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitEventRequest {
    /// Dot-separated lowercase segments, e.g. `checkmk.alert`; `xyn.*` is reserved.
    pub event_name: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub data: Value,
    #[serde(default)]
    pub resource: Option<ResourceIn>,
    #[serde(default)]
    #[schema(format = Uuid)]
    pub run_id: Option<String>,
    #[serde(default)]
    #[schema(format = Uuid)]
    pub step_id: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[derive(Serialize, ToSchema)]
pub struct RunDto {
    pub run_id: String,
    /// The last eight digits of `run_id`: what people read and type (any unique start of it
    /// names the run wherever a run id is asked for).
    pub short_id: String,
    pub name: String,
    /// `created`, `running`, `waiting` (a gate waits for a decision: see `GET /api/v1/approvals`),
    /// `completed`, `failed` or `cancelled`.
    #[schema(value_type = String, example = "running")]
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    pub actor: String,
    pub correlation_id: String,
    #[schema(value_type = Object)]
    pub inputs: Value,
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub blueprint_id: String,
    pub blueprint_version: i64,
    pub trigger_event_id: Option<String>,
    pub priority: i64,
}

impl From<Run> for RunDto {
    fn from(r: Run) -> Self {
        let run_id = r.run_id.to_string();
        Self {
            short_id: xyn_core::short_id(&run_id).to_string(),
            run_id,
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

#[derive(Serialize, ToSchema)]
pub struct StepDto {
    pub step_id: String,
    pub run_id: String,
    pub name: String,
    #[schema(value_type = String, example = "waiting")]
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    pub logs_artifact_id: Option<String>,
    /// The step's recorded input (any JSON).
    pub inputs: Option<Value>,
    /// The step's output (any JSON).
    pub outputs: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    #[schema(value_type = String, example = "gate")]
    pub kind: &'static str,
    pub index: u32,
    pub attempt: u32,
    #[schema(format = DateTime)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCreateRequest {
    #[serde(default)]
    pub name: Option<String>,
    /// `<blueprint_id>` or `<blueprint_id>@<version>`.
    pub blueprint_ref: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Map<String, Value>>,
    #[serde(default)]
    pub priority: i64,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ArtifactDto {
    pub artifact_id: String,
    pub name: String,
    pub kind: String,
    pub content_type: String,
    pub byte_length: Option<i64>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub created_by: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub sha256: Option<String>,
    #[schema(value_type = Object)]
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

#[derive(Serialize, ToSchema)]
pub struct BlueprintDto {
    pub blueprint_id: String,
    pub version: i64,
    pub name: String,
    pub digest: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub created_by: String,
    pub origin: String,
    #[schema(value_type = Object)]
    pub definition: Value,
    pub source: String,
    /// Whether the blueprint's trigger starts runs (`POST /api/v1/blueprints/{id}/disable`
    /// switches it off; runs asked for by hand start either way).
    pub enabled: bool,
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
            enabled: true,
        }
    }
}

#[derive(Deserialize, ToSchema)]
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

/// Pages of each kind, named for the OpenAPI document.
macro_rules! list_schema {
    ($name:ident, $item:ty) => {
        #[derive(ToSchema)]
        #[allow(dead_code)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` for the next (older) page; `null` on the last page.
            pub next_cursor: Option<String>,
        }
    };
}
list_schema!(EventList, EventDto);
list_schema!(RunList, RunDto);
list_schema!(StepList, StepDto);
list_schema!(ArtifactList, ArtifactDto);
list_schema!(BlueprintList, BlueprintDto);
list_schema!(DraftList, DraftDto);
list_schema!(FootprintList, FootprintDto);
list_schema!(FootprintDayList, FootprintDayDto);
list_schema!(WorkcellList, WorkcellDto);

/// The standard error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
    pub correlation_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code, e.g. `run.not_found`, `request.unknown_field`.
    pub code: String,
    pub message: String,
    /// Structured details (e.g. validation issues), or `null`.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// `POST /api/v1/blueprints` answer: the version and whether it was new.
#[derive(Serialize, ToSchema)]
pub struct BlueprintApplied {
    #[serde(flatten)]
    pub version: BlueprintDto,
    /// False when the definition equals the latest version (nothing changed).
    pub created: bool,
}

/// One validation problem: JSON path, stable code, sentence, and the line of the definition
/// text where the node starts (absent when the definition was not text or the node has no line).
#[derive(Serialize, ToSchema, Clone)]
pub struct IssueDto {
    pub path: String,
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl From<&xyn_core::blueprint::Issue> for IssueDto {
    fn from(i: &xyn_core::blueprint::Issue) -> Self {
        Self {
            path: i.path.clone(),
            code: i.code.to_string(),
            message: i.message.clone(),
            line: None,
        }
    }
}

/// A blueprint validation report.
#[derive(Serialize, ToSchema)]
pub struct ValidationDto {
    pub valid: bool,
    pub blueprint_id: Option<String>,
    pub issues: Vec<IssueDto>,
}

/// A draft blueprint or pack.
#[derive(Serialize, ToSchema)]
pub struct DraftDto {
    #[schema(format = Uuid)]
    pub draft_id: String,
    pub name: String,
    /// `blueprint | pack`.
    pub kind: String,
    /// `draft | validated | promoted`.
    #[schema(value_type = String, example = "draft")]
    pub status: &'static str,
    pub revision: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// The definition parsed as JSON (`null` if it does not parse).
    pub content: Option<Value>,
    /// The definition text as saved (YAML or JSON).
    pub definition: String,
    pub notes: Option<String>,
    pub trigger_event_type: Option<String>,
    /// The report of the last validation of this revision.
    #[schema(value_type = Option<Object>)]
    pub validation: Option<Value>,
    pub promoted_version: Option<i64>,
    pub source_run_id: Option<String>,
}

impl From<Draft> for DraftDto {
    fn from(d: Draft) -> Self {
        Self {
            draft_id: d.draft_id.to_string(),
            content: xyn_core::blueprint::parse_text(&d.definition).ok(),
            name: d.name,
            kind: d.kind,
            status: d.status.as_str(),
            revision: d.revision,
            created_at: d.created_at.to_string(),
            updated_at: d.updated_at.to_string(),
            definition: d.definition,
            notes: d.notes,
            trigger_event_type: d.trigger_event_type,
            validation: d.validation,
            promoted_version: d.promoted_version,
            source_run_id: d.source_run_id.map(|r| r.to_string()),
        }
    }
}

/// `POST /api/v1/drafts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftCreateRequest {
    pub name: String,
    /// `blueprint` (default) or `pack`.
    #[serde(default)]
    pub kind: Option<String>,
    /// The definition: YAML or JSON text, or a JSON object.
    #[schema(value_type = String)]
    pub definition: Value,
    #[serde(default)]
    pub notes: Option<String>,
}

/// `PUT /api/v1/drafts/{draft_id}`: a new revision (when the definition changed).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftUpdateRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[schema(value_type = String)]
    pub definition: Value,
    #[serde(default)]
    pub notes: Option<String>,
}

/// `POST /api/v1/drafts/{draft_id}/validate` answer.
#[derive(Serialize, ToSchema)]
pub struct DraftValidationDto {
    pub draft: DraftDto,
    pub is_valid: bool,
    pub issues: Vec<IssueDto>,
    pub report_artifact_id: Option<String>,
}

/// `POST /api/v1/drafts/{draft_id}/promote` answer.
#[derive(Serialize, ToSchema)]
pub struct DraftPromotionDto {
    pub draft: DraftDto,
    pub blueprint_id: String,
    pub version: i64,
}

/// One footprint measurement.
#[derive(Serialize, ToSchema)]
pub struct FootprintDto {
    #[schema(format = DateTime)]
    pub occurred_at: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub source_kind: String,
    pub source_ref: String,
    pub metric: String,
    pub quantity: f64,
    pub unit: String,
    pub class: String,
    #[schema(value_type = Object)]
    pub dims: Value,
}

impl From<Footprint> for FootprintDto {
    fn from(f: Footprint) -> Self {
        Self {
            occurred_at: f.occurred_at.to_string(),
            run_id: f.run_id.map(|r| r.to_string()),
            step_id: f.step_id.map(|r| r.to_string()),
            source_kind: f.source_kind,
            source_ref: f.source_ref,
            metric: f.metric,
            quantity: f.quantity,
            unit: f.unit,
            class: f.class,
            dims: f.dims,
        }
    }
}

/// The total of one metric on one UTC day.
#[derive(Serialize, ToSchema, Clone)]
pub struct FootprintDayDto {
    /// `YYYY-MM-DD` (UTC).
    #[schema(format = Date)]
    pub day: String,
    pub metric: String,
    pub unit: String,
    pub total: f64,
    pub count: u64,
}

impl From<xyn_store::FootprintDay> for FootprintDayDto {
    fn from(d: xyn_store::FootprintDay) -> Self {
        Self {
            day: d.day.to_datetime().format("%Y-%m-%d").to_string(),
            metric: d.metric,
            unit: d.unit,
            total: d.total,
            count: d.count,
        }
    }
}

/// `GET /api/v1/audit/verify`: the hash chain walked from the first event.
#[derive(Serialize, ToSchema)]
pub struct AuditReportDto {
    pub ok: bool,
    pub events_checked: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub head_hash: Option<String>,
    /// The first seq at which the chain is broken.
    pub broken_seq: Option<i64>,
    pub reason: Option<String>,
}

impl From<ChainReport> for AuditReportDto {
    fn from(r: ChainReport) -> Self {
        Self {
            ok: r.ok,
            events_checked: r.events_checked,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            head_hash: r.head_hash,
            broken_seq: r.broken_seq,
            reason: r.reason,
        }
    }
}

/// `POST /api/v1/artifacts` (direct upload).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactCreateRequest {
    pub name: String,
    /// `log | report | bundle | file | …`
    pub kind: String,
    pub content_type: String,
    /// If given, must equal the decoded length.
    #[serde(default)]
    pub byte_length: Option<i64>,
    #[serde(default)]
    #[schema(format = Uuid)]
    pub run_id: Option<String>,
    #[serde(default)]
    #[schema(format = Uuid)]
    pub step_id: Option<String>,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The bytes, base64 (standard alphabet, padded).
    pub content_base64: String,
}

/// `POST /api/internal/actions/execute`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionExecuteRequest {
    pub action: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
    /// Milliseconds (default 30000, at most 600000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The outcome of a direct action execution.
#[derive(Serialize, ToSchema)]
pub struct ActionExecuteResponse {
    pub ok: bool,
    /// The action's output (redacted), when it succeeded.
    pub output: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub artifacts: Vec<ArtifactDto>,
    /// The `xyn.action.executed` audit event.
    pub event: EventDto,
}

/// A workcell: a run's long-lived container that `container.exec` steps naming it share.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct WorkcellDto {
    /// `<run_id>.<name>`: what `POST /api/internal/workcells/{id}/destroy` takes.
    pub workcell_id: String,
    #[schema(format = Uuid)]
    pub run_id: String,
    pub name: String,
    pub container_id: String,
    pub container_name: String,
    pub image: String,
    /// RFC 3339.
    pub created_at: String,
    /// The engine's state (`running`, `exited`, …); `removed` in a destroy's answer.
    pub status: String,
}

/// `GET /api/v1/events` and `GET /api/v1/events/stream` filters.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventListParams {
    /// 1..=500, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Exact name, or a pattern ending in `.*` (one segment) or `.**` (any).
    pub event_name: Option<String>,
    #[param(format = Uuid)]
    pub run_id: Option<String>,
}

/// `GET /api/v1/events/stream` filters.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    pub event_name: Option<String>,
    #[param(format = Uuid)]
    pub run_id: Option<String>,
    /// Resume after this seq (as `Last-Event-ID` does; the header wins).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Option<String>,
}

/// `GET /api/v1/runs` filters.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunListParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    pub cursor: Option<String>,
    /// Comma-separated: created, running, waiting (held at a gate until someone decides),
    /// completed, failed, cancelled.
    pub status: Option<String>,
    pub blueprint_id: Option<String>,
    pub correlation_id: Option<String>,
}

/// No query parameters (any is refused, naming it).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Plain pagination.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// `GET /api/v1/artifacts` filters.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ArtifactListParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    pub cursor: Option<String>,
    #[param(format = Uuid)]
    pub run_id: Option<String>,
    #[param(format = Uuid)]
    pub step_id: Option<String>,
    pub kind: Option<String>,
}

/// `GET /api/v1/blueprints/{blueprint_id}`.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionParams {
    /// A version number (default: the latest).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub version: Option<String>,
}

/// `GET /api/v1/footprints` filters.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FootprintParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    pub cursor: Option<String>,
    #[param(format = Uuid)]
    pub run_id: Option<String>,
    pub metric: Option<String>,
    /// RFC 3339; inclusive.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339; exclusive.
    #[param(format = DateTime)]
    pub until: Option<String>,
}

/// `GET /api/v1/footprints/rollup` filters.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RollupParams {
    #[param(format = Uuid)]
    pub run_id: Option<String>,
    /// Comma-separated metric names (default: all).
    pub metric: Option<String>,
    #[param(format = DateTime)]
    pub since: Option<String>,
    #[param(format = DateTime)]
    pub until: Option<String>,
}

/// Opaque cursors: `c<key>`, signed with the node's cursor key (`WebConfig::cursor_key`,
/// installed by [`crate::AppState::new`]). The binary keeps the key in the data directory
/// (or takes `XYN_CURSOR_KEY`, the same on API nodes behind one load balancer), so cursors
/// outlive a restart. A process that installs none signs with a random key of its own.
static CURSOR_KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Installs the key cursors are signed with. The first key installed in a process holds
/// (one node per process); returns whether this one was installed.
pub fn install_cursor_key(key: &[u8]) -> bool {
    !key.is_empty() && CURSOR_KEY.set(key.to_vec()).is_ok()
}

fn cursor_key() -> &'static [u8] {
    CURSOR_KEY.get_or_init(|| crate::auth::random_token().into_bytes())
}

fn cursor_mac(plain: &str) -> String {
    use hmac::Mac;
    let Ok(mut m) = hmac::Hmac::<sha2::Sha256>::new_from_slice(cursor_key()) else {
        return String::new();
    };
    m.update(plain.as_bytes());
    hex::encode(&m.finalize().into_bytes()[..12])
}

/// A cursor: its position and a MAC, so a cursor the API did not give out is refused.
pub fn sign_cursor(plain: &str) -> String {
    format!("{plain}.{}", cursor_mac(plain))
}

/// The position of a cursor this API gave out, or `None`.
pub fn verified_cursor(c: &str) -> Option<&str> {
    let (plain, mac) = c.rsplit_once('.')?;
    let want = cursor_mac(plain);
    // Constant-time comparison.
    (mac.len() == want.len()
        && mac
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0)
        .then_some(plain)
}

pub fn encode_cursor(key: Option<i64>) -> Option<String> {
    key.map(|k| sign_cursor(&format!("c{k}")))
}

pub fn decode_cursor(c: Option<&str>) -> Result<Option<i64>, XynError> {
    match c {
        None | Some("") => Ok(None),
        Some(s) => verified_cursor(s)
            .and_then(|p| p.strip_prefix('c'))
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
