//! The one error type of the HTTP edge: maps [`XynError`] kinds to statuses and writes the
//! standard body `{"error":{"code","message","details"},"correlation_id"}`.
//! A 5xx body never carries internals: the cause is logged with the correlation id instead.

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use xyn_core::{ErrorKind, XynError, codes};

use crate::correlation::CorrelationId;

/// An API error, carrying the request's correlation id once known.
#[derive(Debug)]
pub struct ApiError {
    pub error: XynError,
    pub correlation_id: Option<String>,
}

impl From<XynError> for ApiError {
    fn from(error: XynError) -> Self {
        Self {
            error,
            correlation_id: None,
        }
    }
}

impl From<xyn_store::StoreError> for ApiError {
    fn from(e: xyn_store::StoreError) -> Self {
        XynError::from(e).into()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The HTTP status for an error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The largest `details` of an error body, in bytes of JSON: larger ones are truncated (the
/// shape stays; the message says so), so an error body never exceeds about 1 MiB.
pub const MAX_DETAILS_BYTES: usize = 1024 * 1024 - 8 * 1024;

/// The standard error body.
pub fn error_body(e: &XynError, correlation_id: Option<&str>) -> Value {
    // A 5xx never quotes what failed underneath (a database's own message, a path): the
    // cause is logged with the correlation id.
    let (mut message, mut details) = match e.kind {
        ErrorKind::Internal => (
            "internal error; see the node's log for this correlation id".to_string(),
            Value::Null,
        ),
        ErrorKind::Unavailable => (
            "the store is unavailable; try again later (the node's log has the cause under this correlation id)"
                .to_string(),
            Value::Null,
        ),
        _ => (e.message.clone(), e.details.clone().unwrap_or(Value::Null)),
    };
    let size = json_len(&details);
    if size > MAX_DETAILS_BYTES {
        details = truncate_json(details, MAX_DETAILS_BYTES);
        message = format!(
            "{message} (details truncated from {size} bytes to at most {MAX_DETAILS_BYTES})"
        );
    }
    json!({
        "error": {"code": e.code, "message": message, "details": details},
        "correlation_id": correlation_id,
    })
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

/// `v` cut down to about `budget` bytes of JSON, keeping its shape: arrays keep a prefix,
/// strings a prefix, objects have their largest members cut.
fn truncate_json(v: Value, budget: usize) -> Value {
    match v {
        Value::Array(items) => {
            let mut used = 2;
            let mut kept = Vec::new();
            for item in items {
                let n = json_len(&item) + 1;
                if used + n > budget {
                    break;
                }
                used += n;
                kept.push(item);
            }
            Value::Array(kept)
        }
        Value::String(s) => {
            let mut end = budget.saturating_sub(16).min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(s[..end].to_string())
        }
        Value::Object(map) => {
            let sizes: Vec<(String, usize)> = map
                .iter()
                .map(|(k, v)| (k.clone(), json_len(v) + k.len() + 4))
                .collect();
            let mut total: usize = sizes.iter().map(|(_, n)| n).sum::<usize>() + 2;
            let mut order = sizes;
            order.sort_by_key(|o| std::cmp::Reverse(o.1));
            let mut map = map;
            for (k, n) in order {
                if total <= budget {
                    break;
                }
                let room = budget.saturating_sub(total - n).saturating_sub(k.len() + 4);
                if let Some(v) = map.remove(&k) {
                    let cut = truncate_json(v, room);
                    total = total - n + json_len(&cut) + k.len() + 4;
                    map.insert(k, cut);
                }
            }
            Value::Object(map)
        }
        other => other,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.error.kind);
        if status.is_server_error() {
            tracing::error!(code = self.error.code, error = %self.error.message,
                correlation_id = ?self.correlation_id, "request failed");
        }
        let mut resp = (
            status,
            Json(error_body(&self.error, self.correlation_id.as_deref())),
        )
            .into_response();
        // The correlation layer fills the id in when the handler did not know it.
        resp.extensions_mut().insert(ErrorMarker);
        resp
    }
}

/// Marks responses whose body is an error body (the correlation layer patches its id in).
#[derive(Clone, Copy)]
pub struct ErrorMarker;

/// `Json<T>` whose rejections use the standard error shape: 400 for malformed JSON, 422 for
/// wrong types or unknown fields (naming the field), 413 over the body limit, 415 without a
/// JSON content type.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let cid = req.extensions().get::<CorrelationId>().map(|c| c.0.clone());
        let fail = |error: XynError| ApiError {
            error,
            correlation_id: cid.clone(),
        };
        if !json_content_type(req.headers()) {
            return Err(fail(json_rejection(
                axum::extract::rejection::MissingJsonContentType::default().into(),
            )));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rej| fail(json_rejection(rej.into())))?;
        if let Some(field) = field_with_nul(&bytes) {
            return Err(fail(
                XynError::invalid(
                    codes::REQUEST_INVALID_TEXT,
                    format!(
                        "'{field}' contains a NUL character (\\u0000), which text fields do not accept"
                    ),
                )
                .with_details(json!({"field": field})),
            ));
        }
        Json::<T>::from_bytes(&bytes)
            .map(|Json(v)| ApiJson(v))
            .map_err(|rej| fail(json_rejection(rej)))
    }
}

/// `application/json` or `application/<something>+json`, as axum's `Json` accepts.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The JSON path of the first string (key or value) holding a NUL character, if any. No store
/// keeps NUL in text alike (PostgreSQL refuses it), so every body is held to that: the same
/// 422 on every store. Cheap when there is none: a scan for the escape `\u0000` (JSON text
/// cannot carry a raw NUL), and only a body containing it is parsed again to name the field.
fn field_with_nul(body: &[u8]) -> Option<String> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !body.windows(ESCAPE.len()).any(|w| w == ESCAPE) {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    fn walk(v: &Value, path: &mut Vec<String>) -> Option<String> {
        let here = |path: &[String]| {
            if path.is_empty() {
                "(body)".to_string()
            } else {
                path.join(".")
            }
        };
        match v {
            Value::String(s) if s.contains('\0') => Some(here(path)),
            Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                path.push(i.to_string());
                let found = walk(item, path);
                path.pop();
                found
            }),
            Value::Object(map) => map.iter().find_map(|(k, item)| {
                path.push(k.clone());
                let found = if k.contains('\0') {
                    Some(here(path))
                } else {
                    walk(item, path)
                };
                path.pop();
                found
            }),
            _ => None,
        }
    }
    walk(&v, &mut Vec::new())
}

fn json_rejection(rej: JsonRejection) -> XynError {
    match rej {
        JsonRejection::JsonDataError(e) => {
            let msg = e.body_text();
            let code = if msg.contains("unknown field") {
                codes::REQUEST_UNKNOWN_FIELD
            } else {
                codes::REQUEST_INVALID
            };
            XynError::invalid(code, clean_serde_message(&msg))
        }
        JsonRejection::JsonSyntaxError(e) => XynError::bad_request(
            codes::REQUEST_INVALID_JSON,
            format!(
                "the body is not valid JSON: {}",
                clean_serde_message(&e.body_text())
            ),
        ),
        JsonRejection::MissingJsonContentType(_) => XynError::bad_request(
            codes::REQUEST_INVALID,
            "send the body as JSON with 'Content-Type: application/json'",
        ),
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                XynError::new(
                    ErrorKind::TooLarge,
                    codes::REQUEST_TOO_LARGE,
                    "the request body is larger than the limit",
                )
            } else {
                XynError::bad_request(
                    codes::REQUEST_INVALID,
                    format!("cannot read the body: {}", e.body_text()),
                )
            }
        }
        other => XynError::bad_request(codes::REQUEST_INVALID, other.body_text()),
    }
}

/// Serde's messages start with axum's prefix ("Failed to deserialize the JSON body into the
/// target type: "); keep the part a person needs.
fn clean_serde_message(m: &str) -> String {
    m.split_once(": ").map_or(m, |(_, rest)| rest).to_string()
}

/// An error response with an explicit status (for statuses no [`ErrorKind`] maps to: 408,
/// 431, 405), in the standard shape.
pub fn status_error(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> Response {
    let e = XynError::new(ErrorKind::BadRequest, code, message);
    let mut resp = (status, Json(error_body(&e, None))).into_response();
    resp.extensions_mut().insert(ErrorMarker);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_details_are_truncated_keeping_the_shape() {
        let issues: Vec<Value> = (0..20_000)
            .map(|i| json!({"path": format!("/steps/{i}"), "message": "x".repeat(80)}))
            .collect();
        let e = XynError::invalid(codes::BLUEPRINT_INVALID, "the blueprint is not valid")
            .with_details(json!({"issues": issues}));
        let body = error_body(&e, Some("c1"));
        let bytes = serde_json::to_vec(&body).unwrap();
        assert!(bytes.len() <= 1024 * 1024, "{}", bytes.len());
        let kept = body["error"]["details"]["issues"].as_array().unwrap().len();
        assert!(kept > 1000 && kept < 20_000, "{kept}");
        assert_eq!(body["error"]["code"], "blueprint.invalid");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("truncated")
        );
        assert_eq!(body["correlation_id"], "c1");
        let long =
            XynError::invalid(codes::REQUEST_INVALID, "m").with_details(json!("y".repeat(3 << 20)));
        assert!(serde_json::to_vec(&error_body(&long, None)).unwrap().len() <= 1024 * 1024);
    }

    #[test]
    fn a_nul_in_any_string_is_found_by_its_path() {
        assert_eq!(
            field_with_nul(br#"{"resource":{"type":"host","id":"i\u0000d"}}"#).as_deref(),
            Some("resource.id")
        );
        assert_eq!(
            field_with_nul(br#"{"data":{"list":["a","\u0000"]}}"#).as_deref(),
            Some("data.list.1")
        );
        assert_eq!(
            field_with_nul(br#"{"data":{"k\u0000":1}}"#).as_deref(),
            Some("data.k\u{0}")
        );
        // An escaped backslash followed by "u0000" is text, not a NUL.
        assert_eq!(field_with_nul(br#"{"a":"\\u0000"}"#), None);
        assert_eq!(field_with_nul(br#"{"a":"plain"}"#), None);
    }
}
