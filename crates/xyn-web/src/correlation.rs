//! Correlation ids: accepted from `X-Correlation-Id`, generated when
//! absent, put in the request's extensions for handlers and logs, echoed on every response
//! and written into error bodies.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use xyn_core::{XynError, codes};

use crate::error::{ApiError, ErrorMarker};

pub static HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// The correlation id of the current request.
#[derive(Clone, Debug)]
pub struct CorrelationId(pub String);

/// Takes the request's correlation id (or makes one) and puts it into its extensions; a
/// malformed one is refused.
pub fn begin(req: &mut Request) -> Result<String, Box<Response>> {
    let id = match req.headers().get(&HEADER) {
        None => new_id(),
        Some(v) => match v.to_str() {
            Ok(s) if valid(s.as_bytes()) => s.to_string(),
            _ => {
                let id = new_id();
                let mut resp = ApiError {
                    error: XynError::bad_request(
                        codes::REQUEST_INVALID,
                        "X-Correlation-Id must be 1 to 200 visible ASCII characters",
                    ),
                    correlation_id: Some(id.clone()),
                }
                .into_response();
                set_header(&mut resp, &id);
                return Err(Box::new(resp));
            }
        },
    };
    req.extensions_mut().insert(CorrelationId(id.clone()));
    Ok(id)
}

/// Echoes the id on the response and writes it into an error body that lacks it.
pub async fn finish(mut resp: Response, id: &str) -> Response {
    if resp.extensions().get::<ErrorMarker>().is_some() {
        resp = patch_error_body(resp, id).await;
    }
    set_header(&mut resp, id);
    resp
}

/// A time-ordered id (UUID v7). No shared context: ids need to be unique, not strictly
/// monotonic, and a per-request global lock would serialise the edge.
pub fn new_id() -> String {
    new_uuid().to_string()
}

fn new_uuid() -> uuid::Uuid {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, now.as_secs(), now.subsec_nanos());
    uuid::Uuid::new_v7(ts)
}

/// Whether a client's correlation id is acceptable: 1 to 200 visible ASCII characters.
pub fn valid(s: &[u8]) -> bool {
    !s.is_empty() && s.len() <= 200 && s.iter().all(|b| b.is_ascii_graphic())
}

/// A new id as a header value, formatted without an intermediate `String`.
pub fn new_header_value() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let s = new_uuid().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn set_header(resp: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(HEADER.clone(), v);
    }
}

/// Fills in `correlation_id` of an error body produced without it.
async fn patch_error_body(resp: Response, id: &str) -> Response {
    let (parts, body) = resp.into_parts();
    // Error bodies are at most about 1 MiB (details are truncated past that).
    let bytes = match axum::body::to_bytes(body, 2 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            let mut parts = parts;
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            let e = XynError::internal("the error body could not be read");
            let v = crate::error::error_body(&e, Some(id));
            return Response::from_parts(parts, Body::from(v.to_string()));
        }
    };
    let mut v: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    if v.get("correlation_id").is_none_or(|c| c.is_null()) {
        v["correlation_id"] = serde_json::Value::String(id.to_string());
    }
    let body = serde_json::to_vec(&v).unwrap_or_default();
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
