//! `/api/internal`: not stable, operator-only.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use xyn_core::{XynError, codes};

use crate::AppState;
use crate::dto::{
    ActionExecuteRequest, ActionExecuteResponse, ErrorResponse, ListDto, NoParams, WorkcellDto,
    WorkcellList,
};
use crate::error::{ApiJson, ApiResult};
use crate::extract::{Actor, ApiQuery, Cid};

/// What the store has done (reads, commits) and the engine's load.
#[utoipa::path(get, path = "/api/internal/stats", tag = "internal",
    responses((status = 200, description = "Counters", body = serde_json::Value)))]
pub async fn stats(State(s): State<AppState>, ApiQuery(_): ApiQuery<NoParams>) -> Json<Value> {
    Json(json!({
        "store": s.node.store().stats(),
        "store_description": s.store_description,
        "busy_runs": s.node.busy(),
        "event_stream_subscribers": s.feed.subscribers(),
    }))
}

/// Executes an installed action outside any run; recorded as an `xyn.action.executed` event
/// with the operator as actor. A failing action is a 200 with `ok: false`.
#[utoipa::path(post, path = "/api/internal/actions/execute", tag = "internal", request_body = ActionExecuteRequest,
    responses((status = 200, description = "The outcome", body = ActionExecuteResponse),
        (status = 404, description = "No such action", body = ErrorResponse),
        (status = 422, description = "Input does not match the action's schema", body = ErrorResponse)))]
pub async fn execute(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Cid(cid): Cid,
    ApiJson(req): ApiJson<ActionExecuteRequest>,
) -> ApiResult<Json<ActionExecuteResponse>> {
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(30_000).clamp(1, 600_000));
    // Leave the request timeout room to record the outcome.
    let timeout = timeout.min(
        s.config
            .request_timeout
            .saturating_sub(Duration::from_secs(1)),
    );
    let out = s
        .node
        .execute_action(&req.action, req.input, &actor, Some(cid), timeout)
        .await?;
    Ok(Json(ActionExecuteResponse {
        ok: out.ok,
        output: out.output,
        error: out.error,
        artifacts: out.artifacts.into_iter().map(Into::into).collect(),
        event: out.event.into(),
    }))
}

/// Workcells (v1). This node has no workcell runtime: the list is empty.
#[utoipa::path(get, path = "/api/internal/workcells", tag = "internal",
    responses((status = 200, description = "No workcells", body = WorkcellList)))]
pub async fn workcells(ApiQuery(_): ApiQuery<NoParams>) -> Json<ListDto<WorkcellDto>> {
    Json(ListDto {
        items: vec![],
        next_cursor: None,
    })
}

fn unsupported() -> XynError {
    XynError::conflict(
        codes::WORKCELL_UNSUPPORTED,
        "this node has no workcell runtime (workcells arrive in v1)",
    )
}

/// Creates a workcell (v1): refused on this node.
#[utoipa::path(post, path = "/api/internal/workcells/create", tag = "internal",
    responses((status = 409, description = "No workcell runtime", body = ErrorResponse)))]
pub async fn create_workcell() -> ApiResult<Json<WorkcellDto>> {
    Err(unsupported().into())
}

/// Destroys a workcell (v1): refused on this node.
#[utoipa::path(post, path = "/api/internal/workcells/{id}/destroy", tag = "internal",
    params(("id" = String, Path)),
    responses((status = 409, description = "No workcell runtime", body = ErrorResponse)))]
pub async fn destroy_workcell(Path(_id): Path<String>) -> ApiResult<Json<WorkcellDto>> {
    Err(unsupported().into())
}
