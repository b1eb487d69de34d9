use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::dto::{HealthDto, NoParams};
use crate::extract::ApiQuery;

/// Liveness and version; answers from memory, never touches the store.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, description = "The node is up", body = HealthDto)))]
pub async fn health(State(s): State<AppState>, ApiQuery(_): ApiQuery<NoParams>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        health_json(&s),
    )
        .into_response()
}

/// The health answer ([`HealthDto`] on the wire), serialised without intermediate strings
/// (probes hit it all day).
pub fn health_json(s: &AppState) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct View {
        status: &'static str,
        version: &'static str,
        uptime_seconds: u64,
        /// Serialised through `Display` straight into the output.
        now: xyn_core::Timestamp,
    }
    let mut out = Vec::with_capacity(160);
    let view = View {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.node.uptime().as_secs(),
        now: s.node.now(),
    };
    if serde_json::to_writer(&mut out, &view).is_err() {
        out = br#"{"status":"ok"}"#.to_vec();
    }
    out
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document.
pub async fn openapi(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.as_str().to_string(),
    )
}
