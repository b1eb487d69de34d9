//! The route table. One file per area under `routes/`.

mod artifacts;
mod blueprints;
mod events;
mod health;
mod runs;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use xyn_core::{XynError, codes};

use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/events", get(events::list).post(events::emit))
        .route("/api/v1/events/{event_id}", get(events::get_one))
        .route("/api/v1/runs", get(runs::list).post(runs::create))
        .route("/api/v1/runs/{run_id}", get(runs::get_one))
        .route("/api/v1/runs/{run_id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{run_id}/steps", get(runs::steps))
        .route("/api/v1/runs/{run_id}/steps/{step_id}", get(runs::step))
        .route(
            "/api/v1/runs/{run_id}/steps/{step_id}/approve",
            post(runs::approve),
        )
        .route(
            "/api/v1/runs/{run_id}/steps/{step_id}/reject",
            post(runs::reject),
        )
        .route(
            "/api/v1/blueprints",
            get(blueprints::list).post(blueprints::apply),
        )
        .route("/api/v1/blueprints/validate", post(blueprints::validate))
        .route(
            "/api/v1/blueprints/{blueprint_id}",
            get(blueprints::get_one),
        )
        .route("/api/v1/artifacts", get(artifacts::list))
        .route("/api/v1/artifacts/{artifact_id}", get(artifacts::get_one))
        .route(
            "/api/v1/artifacts/{artifact_id}/download",
            get(artifacts::download),
        )
        .route("/api/internal/stats", get(health::stats))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::from(XynError::not_found(
        codes::ROUTE_NOT_FOUND,
        format!("no route for {}", uri.path()),
    ))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> impl IntoResponse {
    let mut resp = ApiError::from(XynError::new(
        xyn_core::ErrorKind::BadRequest,
        codes::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    ))
    .into_response();
    *resp.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    resp
}
