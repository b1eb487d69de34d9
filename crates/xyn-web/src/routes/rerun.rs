//! Retry and re-run: `POST /api/v1/runs/{run_id}/retry` gives the failed step of a failed run a
//! new attempt in the same run; `POST /api/v1/runs/{run_id}/rerun` starts a new run of the same
//! blueprint version with the same or edited inputs, linked to the old one. Both are recorded
//! in the event log with the actor (`xyn.run.retried`, `xyn.run.rerun`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use xyn_core::RunId;

use crate::AppState;
use crate::dto::{ErrorResponse, RunDto};
use crate::error::ApiResult;
use crate::extract::{Actor, Cid};
use crate::routes::runs::optional_body;
use crate::routes::search::resolve_run;

/// `POST /api/v1/runs/{run_id}/retry` body (optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// The step to retry from, by id or blueprint name; it must be this run's failed step.
    /// Default: the step that failed.
    #[serde(default)]
    pub step: Option<String>,
}

/// `POST /api/v1/runs/{run_id}/rerun` body (optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    /// The new run's inputs (all of them). Default: the old run's inputs.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Map<String, Value>>,
    /// A name for the new run. Default: the old run's name.
    #[serde(default)]
    pub name: Option<String>,
}

/// Retries a failed run from its failed step: a new attempt of that step in the same run
/// (the attempt number goes on; earlier attempts stay in the event log and on the step), then
/// the steps after it. Recorded as `xyn.run.retried`.
#[utoipa::path(post, path = "/api/v1/runs/{run_id}/retry", tag = "runs",
    params(("run_id" = String, Path, description = "The run id, or a unique start of its short id")),
    request_body(content = Option<RetryRequest>, description = "Optional: the failed step, by id or name"),
    responses((status = 200, description = "The run, running again", body = RunDto),
        (status = 404, description = "No such run, or no such step in this run (`step.not_found`)", body = ErrorResponse),
        (status = 409, description = "The run did not fail (`run.not_failed`), or the step is not the one that failed (`step.not_failed`)", body = ErrorResponse)))]
pub async fn retry(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RunDto>> {
    let req: RetryRequest = optional_body(&body)?;
    let run_id: RunId = resolve_run(s.node.store().as_ref(), &id).await?;
    let step = req.step.as_deref().map(str::trim).filter(|x| !x.is_empty());
    let run = s.node.retry_run(run_id, step, &actor).await?;
    Ok(Json(run.into()))
}

/// Starts the run again as a new run of the same blueprint version, with the old run's inputs
/// or the edited `inputs` given (checked first: bad inputs start nothing, 422). The new run's
/// request names the old run (`rerun_of`), and `xyn.run.rerun` on the old run names the new.
#[utoipa::path(post, path = "/api/v1/runs/{run_id}/rerun", tag = "runs",
    params(("run_id" = String, Path, description = "The run id, or a unique start of its short id")),
    request_body(content = Option<RerunRequest>, description = "Optional: edited inputs, a name"),
    responses((status = 201, description = "The new run", body = RunDto),
        (status = 404, description = "No such run", body = ErrorResponse),
        (status = 422, description = "The inputs do not bind (`run.inputs_invalid`)", body = ErrorResponse)))]
pub async fn rerun(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Cid(cid): Cid,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<RunDto>)> {
    let req: RerunRequest = optional_body(&body)?;
    let run_id: RunId = resolve_run(s.node.store().as_ref(), &id).await?;
    let run = s
        .node
        .rerun(run_id, req.inputs, req.name, actor, Some(cid))
        .await?;
    Ok((StatusCode::CREATED, Json(run.into())))
}
