use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use xyn_core::{XynError, codes};

use crate::AppState;
use crate::dto::{BlueprintApplyRequest, BlueprintDto, ListDto};
use crate::error::{ApiJson, ApiResult};
use crate::extract::{Actor, Params};

/// `GET /api/v1/blueprints`: the latest version of each blueprint.
pub async fn list(State(s): State<AppState>) -> ApiResult<Json<ListDto<BlueprintDto>>> {
    let heads = s.node.store().blueprint_heads().await?;
    Ok(Json(ListDto {
        items: heads.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}

/// `POST /api/v1/blueprints` with `{"definition": "<yaml or json>"}`: 201 with the new
/// version, or 200 with the latest when the definition did not change.
pub async fn apply(
    State(s): State<AppState>,
    Actor(actor): Actor,
    ApiJson(req): ApiJson<BlueprintApplyRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let out = s
        .node
        .apply_blueprint(&req.definition, "api", &actor)
        .await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut v = serde_json::to_value(BlueprintDto::from(out.version)).unwrap_or_default();
    v["created"] = json!(out.created);
    Ok((status, Json(v)))
}

/// `POST /api/v1/blueprints/validate` with `{"definition"}`: the full report, 200 either way.
pub async fn validate(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<BlueprintApplyRequest>,
) -> Json<Value> {
    let r = s.node.validate_blueprint(&req.definition);
    Json(json!({"valid": r.valid, "blueprint_id": r.blueprint_id, "issues": r.issues}))
}

/// `GET /api/v1/blueprints/{id}?version=N`: one version (the latest by default).
pub async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult<Json<BlueprintDto>> {
    p.allow(&["version"])?;
    let version = p
        .get("version")
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                XynError::bad_request(codes::REQUEST_INVALID, "version must be a number")
            })
        })
        .transpose()?;
    let b = s
        .node
        .store()
        .get_blueprint(&id, version)
        .await?
        .ok_or_else(|| {
            XynError::not_found(codes::BLUEPRINT_NOT_FOUND, format!("no blueprint {id:?}"))
        })?;
    Ok(Json(b.into()))
}
