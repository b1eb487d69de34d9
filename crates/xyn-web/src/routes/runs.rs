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
    CancelRequest, DecisionRequest, ListDto, RunCreateRequest, RunDto, StepDto, decode_cursor,
    encode_cursor, parse_id, parse_limit,
};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::extract::{Actor, Cid, Params};

/// `GET /api/v1/runs?status&blueprint_id&correlation_id&limit&cursor`: newest first.
pub async fn list(State(s): State<AppState>, p: Params) -> ApiResult<Json<ListDto<RunDto>>> {
    p.allow(&[
        "limit",
        "cursor",
        "status",
        "blueprint_id",
        "correlation_id",
    ])?;
    let status = match p.get("status") {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(|x| {
                    RunStatus::parse(x.trim()).ok_or_else(|| {
                        XynError::bad_request(
                            codes::REQUEST_INVALID,
                            format!("unknown status {x:?} (created, running, completed, failed, cancelled)"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let q = RunQuery {
        status,
        blueprint_id: p.get("blueprint_id").map(str::to_string),
        correlation_id: p.get("correlation_id").map(str::to_string),
        before: decode_cursor(p.get("cursor"))?,
        limit: parse_limit(p.get("limit"))?,
    };
    let page = s.node.store().list_runs(q).await?;
    Ok(Json(ListDto {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// `POST /api/v1/runs`: starts a run of `blueprint_ref` (`id` or `id@version`).
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
    let id: RunId = parse_id("run_id", id)?;
    Ok(s.node
        .store()
        .get_run(id)
        .await?
        .ok_or_else(|| XynError::not_found(codes::RUN_NOT_FOUND, format!("no run {id}")))?)
}

/// `GET /api/v1/runs/{run_id}`.
pub async fn get_one(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunDto>> {
    Ok(Json(load_run(&s, &id).await?.into()))
}

/// `GET /api/v1/runs/{run_id}/steps`: in plan order.
pub async fn steps(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ListDto<StepDto>>> {
    let run = load_run(&s, &id).await?;
    let steps = s.node.store().get_steps(run.run_id).await?;
    Ok(Json(ListDto {
        items: steps.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}

/// `GET /api/v1/runs/{run_id}/steps/{step_id}`: by step id or by its blueprint name.
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
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, XynError> {
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
    actor: String,
    id: String,
    step: String,
    body: Bytes,
    approve: bool,
) -> ApiResult<Json<StepDto>> {
    let req: DecisionRequest = optional_body(&body)?;
    let run_id: RunId = parse_id("run_id", &id)?;
    let st = s
        .node
        .decide_gate(run_id, &step, approve, &actor, req.comment)
        .await?;
    Ok(Json(st.into()))
}

/// `POST /api/v1/runs/{run_id}/steps/{step_id}/approve` with `{"comment"}`.
pub async fn approve(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<StepDto>> {
    decide(s, actor, id, step, body, true).await
}

/// `POST /api/v1/runs/{run_id}/steps/{step_id}/reject` with `{"comment"}`.
pub async fn reject(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<StepDto>> {
    decide(s, actor, id, step, body, false).await
}

/// `POST /api/v1/runs/{run_id}/cancel` with optional `{"reason"}`.
pub async fn cancel(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RunDto>> {
    let req: CancelRequest = optional_body(&body).map_err(ApiError::from)?;
    let run_id: RunId = parse_id("run_id", &id)?;
    let run = s.node.cancel_run(run_id, &actor, req.reason).await?;
    Ok(Json(run.into()))
}
