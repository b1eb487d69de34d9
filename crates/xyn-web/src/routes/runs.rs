use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use xyn_core::run::RunStatus;
use xyn_core::{RunId, XynError, codes};
use xyn_engine::StartRun;
use xyn_store::RunQuery;

use crate::AppState;
use crate::dto::{
    CancelRequest, DecisionRequest, ErrorResponse, ListDto, PageParams, RunCreateRequest, RunDto,
    RunList, RunListParams, StepDto, StepList, decode_cursor, encode_cursor, parse_limit,
};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::extract::{Actor, ApiQuery, Cid, Who, nz};
use crate::routes::search::resolve_run;

/// Parses a comma-separated run status filter.
pub fn parse_statuses(list: Option<&str>) -> Result<Option<Vec<RunStatus>>, XynError> {
    let Some(list) = list else { return Ok(None) };
    let v = list
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            RunStatus::parse(x.trim()).ok_or_else(|| {
                XynError::bad_request(
                    codes::REQUEST_INVALID,
                    format!("unknown status {x:?} ({})", RunStatus::names()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(v))
}

/// Lists runs, newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunListParams),
    responses((status = 200, description = "A page of runs", body = RunList)))]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<RunListParams>,
) -> ApiResult<Json<ListDto<RunDto>>> {
    let q = RunQuery {
        status: parse_statuses(nz(&p.status))?,
        blueprint_id: nz(&p.blueprint_id).map(str::to_string),
        correlation_id: nz(&p.correlation_id).map(str::to_string),
        before: decode_cursor(nz(&p.cursor))?,
        limit: parse_limit(nz(&p.limit))?,
        ..Default::default()
    };
    let page = s.node.store().list_runs(q).await?;
    Ok(Json(ListDto {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// Starts a run of `blueprint_ref` (`id` or `id@version`) by hand. Inputs are checked first:
/// bad inputs change nothing.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", request_body = RunCreateRequest,
    responses((status = 201, description = "The run, started", body = RunDto),
        (status = 404, description = "No such blueprint or version", body = ErrorResponse),
        (status = 422, description = "Inputs do not bind", body = ErrorResponse)))]
pub async fn create(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Cid(cid): Cid,
    ApiJson(req): ApiJson<RunCreateRequest>,
) -> ApiResult<(StatusCode, Json<RunDto>)> {
    let r = req
        .blueprint_ref
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| {
            XynError::invalid(
                codes::REQUEST_INVALID,
                "blueprint_ref is required: the blueprint id, optionally @version",
            )
        })?;
    let (id, version) = match r.split_once('@') {
        Some((id, v)) => (
            id.to_string(),
            Some(v.parse::<i64>().map_err(|_| {
                XynError::invalid(
                    codes::REQUEST_INVALID,
                    format!("blueprint_ref version {v:?} is not a number"),
                )
            })?),
        ),
        None => (r, None),
    };
    let run = s
        .node
        .start_run(StartRun {
            blueprint_id: id,
            version,
            inputs: req.inputs.unwrap_or_default(),
            name: req.name,
            priority: req.priority,
            actor,
            correlation_id: Some(cid),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(run.into())))
}

async fn load_run(s: &AppState, id: &str) -> ApiResult<xyn_core::run::Run> {
    let id: RunId = resolve_run(s.node.store().as_ref(), id).await?;
    Ok(s.node
        .store()
        .get_run(id)
        .await?
        .ok_or_else(|| XynError::not_found(codes::RUN_NOT_FOUND, format!("no run {id}")))?)
}

/// One run.
#[utoipa::path(get, path = "/api/v1/runs/{run_id}", tag = "runs",
    params(("run_id" = String, Path, description = "The run id, or a unique start of its short id")),
    responses((status = 200, description = "The run", body = RunDto),
        (status = 404, description = "No such run", body = ErrorResponse)))]
pub async fn get_one(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunDto>> {
    Ok(Json(load_run(&s, &id).await?.into()))
}

/// The steps of a run, in plan order (the cursor continues after the last step returned).
#[utoipa::path(get, path = "/api/v1/runs/{run_id}/steps", tag = "runs",
    params(("run_id" = String, Path, description = "The run id, or a unique start of its short id"), PageParams),
    responses((status = 200, description = "A page of steps", body = StepList),
        (status = 404, description = "No such run", body = ErrorResponse)))]
pub async fn steps(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<PageParams>,
) -> ApiResult<Json<ListDto<StepDto>>> {
    let from = decode_cursor(nz(&p.cursor))?.unwrap_or(0);
    let limit = parse_limit(nz(&p.limit))?;
    let run = load_run(&s, &id).await?;
    let steps = s.node.store().get_steps(run.run_id).await?;
    let mut page: Vec<_> = steps
        .into_iter()
        .filter(|st| i64::from(st.idx) >= from)
        .take(limit + 1)
        .collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|st| i64::from(st.idx) + 1)
    } else {
        None
    };
    Ok(Json(ListDto {
        items: page.into_iter().map(Into::into).collect(),
        next_cursor: encode_cursor(next),
    }))
}

/// One step, by its id or by its name in the blueprint.
#[utoipa::path(get, path = "/api/v1/runs/{run_id}/steps/{step_id}", tag = "runs",
    params(("run_id" = String, Path, description = "The run id, or a unique start of its short id"), ("step_id" = String, Path, description = "Step id or step name")),
    responses((status = 200, description = "The step", body = StepDto),
        (status = 404, description = "No such run or step", body = ErrorResponse)))]
pub async fn step(
    State(s): State<AppState>,
    Path((id, step)): Path<(String, String)>,
) -> ApiResult<Json<StepDto>> {
    let run = load_run(&s, &id).await?;
    let steps = s.node.store().get_steps(run.run_id).await?;
    let st = steps
        .into_iter()
        .find(|x| x.name == step || x.step_id.to_string() == step)
        .ok_or_else(|| {
            XynError::not_found(
                codes::STEP_NOT_FOUND,
                format!("run {} has no step {step:?}", run.run_id),
            )
        })?;
    Ok(Json(st.into()))
}

/// An optional JSON body: empty is the default, anything else must parse.
pub(crate) fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
) -> Result<T, XynError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            XynError::bad_request(
                codes::REQUEST_INVALID_JSON,
                format!("the body is not valid JSON: {e}"),
            )
        } else if e.to_string().contains("unknown field") {
            XynError::invalid(codes::REQUEST_UNKNOWN_FIELD, e.to_string())
        } else {
            XynError::invalid(codes::REQUEST_INVALID, e.to_string())
        }
    })
}

async fn decide(
    s: AppState,
    (actor, who): (String, crate::auth::Principal),
    id: String,
    step: String,
    body: Bytes,
    approve: bool,
) -> ApiResult<Json<StepDto>> {
    let req: DecisionRequest = optional_body(&body)?;
    let run_id: RunId = resolve_run(s.node.store().as_ref(), &id).await?;
    crate::routes::approvals::check_decider(&s, &who, run_id, &step).await?;
    let st = s
        .node
        .decide_gate(run_id, &step, approve, &actor, req.comment)
        .await?;
    Ok(Json(st.into()))
}

/// Approves a waiting gate (optional body `{"comment"}`); the decision records the actor.
#[utoipa::path(post, path = "/api/v1/runs/{run_id}/steps/{step_id}/approve", tag = "runs",
    params(("run_id" = String, Path, description = "The run id, or a unique start of its short id"), ("step_id" = String, Path, description = "Step id or step name")),
    request_body(content = Option<DecisionRequest>, description = "Optional comment"),
    responses((status = 200, description = "The decided gate", body = StepDto),
        (status = 404, description = "No such run or step", body = ErrorResponse),
        (status = 403, description = "The gate names its approvers and the caller is not one (`gate.not_an_approver`)", body = ErrorResponse),
        (status = 409, description = "Not a gate, or not waiting", body = ErrorResponse)))]
pub async fn approve(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Who(who): Who,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<StepDto>> {
    decide(s, (actor, who), id, step, body, true).await
}

/// Rejects a waiting gate (optional body `{"comment"}`).
#[utoipa::path(post, path = "/api/v1/runs/{run_id}/steps/{step_id}/reject", tag = "runs",
    params(("run_id" = String, Path, description = "The run id, or a unique start of its short id"), ("step_id" = String, Path, description = "Step id or step name")),
    request_body(content = Option<DecisionRequest>, description = "Optional comment"),
    responses((status = 200, description = "The decided gate", body = StepDto),
        (status = 404, description = "No such run or step", body = ErrorResponse),
        (status = 409, description = "Not a gate, or not waiting", body = ErrorResponse)))]
pub async fn reject(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Who(who): Who,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<StepDto>> {
    decide(s, (actor, who), id, step, body, false).await
}

/// Cancels a run (optional body `{"reason"}`).
#[utoipa::path(post, path = "/api/v1/runs/{run_id}/cancel", tag = "runs",
    params(("run_id" = String, Path, description = "The run id, or a unique start of its short id")),
    request_body(content = Option<CancelRequest>, description = "Optional reason"),
    responses((status = 200, description = "The cancelled run", body = RunDto),
        (status = 404, description = "No such run", body = ErrorResponse),
        (status = 409, description = "Already finished", body = ErrorResponse)))]
pub async fn cancel(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RunDto>> {
    let req: CancelRequest = optional_body(&body).map_err(ApiError::from)?;
    let run_id: RunId = resolve_run(s.node.store().as_ref(), &id).await?;
    let run = s.node.cancel_run(run_id, &actor, req.reason).await?;
    Ok(Json(run.into()))
}
