use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;
use crate::dto::HealthDto;

/// Liveness and version; answers from memory, never touches the store.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, description = "The node is up", body = HealthDto)))]
pub async fn health(State(s): State<AppState>) -> Json<HealthDto> {
    Json(HealthDto {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.node.uptime().as_secs(),
        now: s.node.now().to_string(),
        store: s.node.store().describe(),
    })
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document.
pub async fn openapi(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.as_str().to_string(),
    )
}
