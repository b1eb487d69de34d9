//! The one error type that crosses layers: a stable code, a sentence, optional details.
//!
//! Codes are part of the API contract (they appear in `{"error":{"code",…}}` bodies and CLI
//! output) and never change meaning. The `ErrorKind` tells the edge which status to use;
//! the core itself knows nothing of HTTP.

use serde::Serialize;
use serde_json::Value;

/// The class of an error, which decides the HTTP status and CLI exit code at the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed (bad JSON, bad id, bad cursor). HTTP 400.
    BadRequest,
    /// The request is well-formed but its content is refused. HTTP 422.
    Invalid,
    /// Nothing with that id. HTTP 404.
    NotFound,
    /// The target is not in a state that allows this. HTTP 409.
    Conflict,
    /// The payload is over a configured cap. HTTP 413.
    TooLarge,
    /// Authentication is missing or wrong. HTTP 401.
    Unauthorized,
    /// Authenticated but not allowed. HTTP 403.
    Forbidden,
    /// A dependency (the store) is unavailable; try again. HTTP 503.
    Unavailable,
    /// A bug or an unexpected failure. HTTP 500; details are logged, not returned.
    Internal,
}

/// An error with a stable code.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct XynError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl XynError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, codes::INTERNAL, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, codes::STORE_UNAVAILABLE, message)
    }
}

/// The stable error codes.
pub mod codes {
    pub const REQUEST_INVALID_JSON: &str = "request.invalid_json";
    pub const REQUEST_INVALID: &str = "request.invalid";
    pub const REQUEST_UNKNOWN_FIELD: &str = "request.unknown_field";
    pub const REQUEST_TOO_LARGE: &str = "request.too_large";
    pub const REQUEST_INVALID_CURSOR: &str = "request.invalid_cursor";
    pub const REQUEST_INVALID_ID: &str = "request.invalid_id";
    pub const REQUEST_TIMEOUT: &str = "request.timeout";
    pub const REQUEST_HEADERS_TOO_LARGE: &str = "request.headers_too_large";
    /// Not valid HTTP/1.1 (request line, header syntax, Content-Length).
    pub const REQUEST_MALFORMED: &str = "request.malformed";
    /// The node is at its connection limit.
    pub const SERVER_BUSY: &str = "server.busy";
    /// The readiness probe: the store does not accept writes.
    pub const NODE_NOT_READY: &str = "node.not_ready";
    pub const ROUTE_NOT_FOUND: &str = "route.not_found";
    pub const METHOD_NOT_ALLOWED: &str = "route.method_not_allowed";

    pub const EVENT_INVALID_NAME: &str = "event.invalid_name";
    pub const EVENT_RESERVED_NAME: &str = "event.reserved_name";
    pub const EVENT_INVALID_DATA: &str = "event.invalid_data";
    pub const EVENT_NOT_FOUND: &str = "event.not_found";

    pub const BLUEPRINT_INVALID: &str = "blueprint.invalid";
    pub const BLUEPRINT_NOT_FOUND: &str = "blueprint.not_found";

    pub const RUN_NOT_FOUND: &str = "run.not_found";
    /// A short id typed for a run names more than one.
    pub const RUN_ID_AMBIGUOUS: &str = "run.id_ambiguous";
    pub const RUN_ALREADY_FINISHED: &str = "run.already_finished";
    pub const RUN_INPUTS_INVALID: &str = "run.inputs_invalid";
    /// Retry asked of a run that did not fail (it is still going, completed or was cancelled).
    pub const RUN_NOT_FAILED: &str = "run.not_failed";

    pub const STEP_NOT_FOUND: &str = "step.not_found";
    pub const STEP_NOT_WAITING: &str = "step.not_waiting";
    pub const STEP_NOT_A_GATE: &str = "step.not_a_gate";
    /// The gate names its approvers and the caller is not one of them.
    pub const GATE_NOT_AN_APPROVER: &str = "gate.not_an_approver";
    /// Retry asked of a step that did not fail.
    pub const STEP_NOT_FAILED: &str = "step.not_failed";
    /// A step's output is larger than the node's output limit.
    pub const STEP_OUTPUT_TOO_LARGE: &str = "step.output_too_large";
    /// A run's outputs are larger than the node's output limit.
    pub const RUN_OUTPUT_TOO_LARGE: &str = "run.output_too_large";
    /// A text field holds a NUL character, which no store keeps.
    pub const REQUEST_INVALID_TEXT: &str = "request.invalid_text";

    pub const ARTIFACT_NOT_FOUND: &str = "artifact.not_found";

    pub const DRAFT_NOT_FOUND: &str = "draft_not_found";
    pub const DRAFT_INVALID_DEFINITION: &str = "invalid_definition";
    pub const DRAFT_INVALID_SCHEMA: &str = "invalid_schema";
    pub const DRAFT_VALIDATION_FAILED: &str = "validation_failed";
    pub const DRAFT_CONFLICT: &str = "conflict";

    pub const ACTION_UNKNOWN: &str = "action.unknown";
    pub const ACTION_INPUT_INVALID: &str = "action.input_invalid";
    pub const ACTION_FAILED: &str = "action.failed";

    pub const AUTH_REQUIRED: &str = "auth.required";
    pub const AUTH_FORBIDDEN: &str = "auth.forbidden";
    pub const AUTH_INVALID_TOKEN: &str = "auth.invalid_token";
    pub const AUTH_CSRF: &str = "auth.csrf";
    /// Too many failed logins or bearer tokens (429 with `Retry-After`).
    pub const AUTH_RATE_LIMITED: &str = "auth.rate_limited";

    pub const HOOK_UNKNOWN_SOURCE: &str = "hook.unknown_source";
    pub const HOOK_BAD_SIGNATURE: &str = "hook.bad_signature";
    pub const HOOK_NO_EVENT_NAME: &str = "hook.no_event_name";
    /// A delivery (its id or its signature) was already accepted within the replay window.
    pub const HOOK_REPLAYED: &str = "hook.replayed";
    /// The event name a delivery selects is not among the source's `events`.
    pub const HOOK_EVENT_NOT_ALLOWED: &str = "hook.event_not_allowed";

    /// The node runs no containers (`[containers] images` is empty).
    pub const WORKCELL_UNSUPPORTED: &str = "workcell.unsupported";
    /// A workcell is made by the first `container.exec` step of a run that names it, never
    /// on its own.
    pub const WORKCELL_RUN_SCOPED: &str = "workcell.run_scoped";
    pub const WORKCELL_NOT_FOUND: &str = "workcell.not_found";
    /// The container engine failed or cannot be reached.
    pub const WORKCELL_ENGINE: &str = "workcell.engine_unavailable";

    pub const STORE_UNAVAILABLE: &str = "store.unavailable";
    pub const STORAGE_ERROR: &str = "storage_error";
    pub const INTERNAL: &str = "internal";
}
