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

/// Future returned by [`WorkcellService`] methods.
pub type WorkcellFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, XynError>> + Send>>;

/// The node's workcells (the binary provides it over its container engine).
pub trait WorkcellService: Send + Sync {
    /// The live workcells of this node, oldest first.
    fn list(&self) -> WorkcellFuture<Vec<WorkcellDto>>;
    /// Removes a run's workcell; `workcell.not_found` when there is none.
    fn destroy(&self, run_id: String, name: String) -> WorkcellFuture<WorkcellDto>;
}

fn service(s: &AppState) -> Result<std::sync::Arc<dyn WorkcellService>, XynError> {
    s.workcells.clone().ok_or_else(|| {
        XynError::conflict(
            codes::WORKCELL_UNSUPPORTED,
            "this node runs no containers ([containers] images is empty), so it has no workcells",
        )
    })
}

/// The live workcells of this node: the containers that `container.exec` steps naming a
/// `workcell` share within a run. Empty on a node that runs no containers.
#[utoipa::path(get, path = "/api/internal/workcells", tag = "internal",
    responses((status = 200, description = "The live workcells, oldest first", body = WorkcellList),
        (status = 503, description = "The container engine cannot be reached", body = ErrorResponse)))]
pub async fn workcells(
    State(s): State<AppState>,
    ApiQuery(_): ApiQuery<NoParams>,
) -> ApiResult<Json<ListDto<WorkcellDto>>> {
    let items = match &s.workcells {
        Some(w) => w.list().await?,
        None => vec![],
    };
    Ok(Json(ListDto {
        items,
        next_cursor: None,
    }))
}

/// Creating a workcell on its own is refused: a workcell belongs to a run and is made by the
/// first `container.exec` step that names it (`workcell.run_scoped`; `workcell.unsupported` on a
/// node that runs no containers).
#[utoipa::path(post, path = "/api/internal/workcells/create", tag = "internal",
    responses((status = 409, description = "Workcells are made by runs", body = ErrorResponse)))]
pub async fn create_workcell(State(s): State<AppState>) -> ApiResult<Json<WorkcellDto>> {
    service(&s)?;
    Err(XynError::conflict(
        codes::WORKCELL_RUN_SCOPED,
        "a workcell is made by the first container.exec step of a run that names it (input `workcell`), never on its own",
    )
    .into())
}

/// Removes a workcell now (`id`: its `workcell_id`, `<run_id>.<name>`); a later step of its run
/// that names it makes a new, empty one. The run itself is not changed.
#[utoipa::path(post, path = "/api/internal/workcells/{id}/destroy", tag = "internal",
    params(("id" = String, Path, description = "`<run_id>.<name>`")),
    responses((status = 200, description = "The removed workcell", body = WorkcellDto),
        (status = 404, description = "No such workcell", body = ErrorResponse),
        (status = 409, description = "This node runs no containers", body = ErrorResponse),
        (status = 503, description = "The container engine cannot be reached", body = ErrorResponse)))]
pub async fn destroy_workcell(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkcellDto>> {
    let w = service(&s)?;
    let not_found =
        || XynError::not_found(codes::WORKCELL_NOT_FOUND, format!("no workcell {id:?}"));
    let Some((run_id, name)) = id.split_once('.') else {
        return Err(not_found().into());
    };
    if run_id.parse::<xyn_core::RunId>().is_err() {
        return Err(not_found().into());
    }
    Ok(Json(w.destroy(run_id.to_string(), name.to_string()).await?))
}
