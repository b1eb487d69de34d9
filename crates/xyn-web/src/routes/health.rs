use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::dto::HealthDto;

/// `GET /api/v1/health`: answers from memory, never touches the store.
pub async fn health(State(s): State<AppState>) -> Json<HealthDto> {
    Json(HealthDto {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.node.uptime().as_secs(),
        now: s.node.now().to_string(),
        store: s.node.store().describe(),
    })
}

/// `GET /api/internal/stats`: what the store has done (reads, commits) and the engine's load.
pub async fn stats(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "store": s.node.store().stats(),
        "busy_runs": s.node.busy(),
    }))
}
