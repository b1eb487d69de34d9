use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;
use crate::dto::{HealthDto, NoParams};
use crate::extract::ApiQuery;

/// Liveness and version; answers from memory, never touches the store. (Plain requests are
/// answered by the same code on the fast path of [`crate::fast`].)
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, description = "The node is up", body = HealthDto)))]
pub async fn health(State(s): State<AppState>, ApiQuery(_): ApiQuery<NoParams>) -> Json<HealthDto> {
    Json(health_of(&s))
}

/// The health answer.
pub fn health_of(s: &AppState) -> HealthDto {
    HealthDto {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.node.uptime().as_secs(),
        now: s.node.now().to_string(),
        store: s.store_description.clone(),
    }
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document.
pub async fn openapi(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.as_str().to_string(),
    )
}
