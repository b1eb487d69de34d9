use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use xyn_core::{DraftId, XynError, codes};

use crate::AppState;
use crate::dto::{
    DraftCreateRequest, DraftDto, DraftList, DraftPromotionDto, DraftUpdateRequest,
    DraftValidationDto, ErrorResponse, IssueDto, ListDto, PageParams, decode_cursor, encode_cursor,
    parse_limit,
};
use crate::error::{ApiJson, ApiResult};
use crate::extract::{Actor, ApiQuery, nz};

fn draft_id(s: &str) -> Result<DraftId, XynError> {
    crate::dto::parse_id("draft_id", s)
}

fn definition_of(v: Value) -> Result<Value, XynError> {
    match v {
        Value::String(_) | Value::Object(_) => Ok(v),
        _ => Err(XynError::invalid(
            codes::REQUEST_INVALID,
            "definition must be YAML/JSON text or a JSON object",
        )),
    }
}

/// Issues recorded in a validation report (`{"issues": [...]}`).
pub fn issues_of(v: &Value) -> Vec<IssueDto> {
    v.get("issues")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|i| IssueDto {
                    path: i.get("path").and_then(Value::as_str).unwrap_or("").into(),
                    code: i.get("code").and_then(Value::as_str).unwrap_or("").into(),
                    message: i
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    line: None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Creates a draft: revision 1, status `draft`.
#[utoipa::path(post, path = "/api/v1/drafts", tag = "drafts", request_body = DraftCreateRequest,
    responses((status = 201, description = "The new draft", body = DraftDto),
        (status = 422, description = "No name, or a definition that does not parse", body = ErrorResponse)))]
pub async fn create(
    State(s): State<AppState>,
    Actor(actor): Actor,
    ApiJson(req): ApiJson<DraftCreateRequest>,
) -> ApiResult<(StatusCode, Json<DraftDto>)> {
    let input = json!({
        "name": req.name,
        "draft_type": req.kind.unwrap_or_else(|| "blueprint".into()),
        "definition": definition_of(req.definition)?,
        "notes": req.notes,
    });
    let d = s.node.save_draft(input, &actor).await?;
    Ok((StatusCode::CREATED, Json(d.into())))
}

/// Lists drafts, newest first.
#[utoipa::path(get, path = "/api/v1/drafts", tag = "drafts", params(PageParams),
    responses((status = 200, description = "A page of drafts", body = DraftList)))]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<PageParams>,
) -> ApiResult<Json<ListDto<DraftDto>>> {
    let page = s
        .node
        .store()
        .list_drafts(decode_cursor(nz(&p.cursor))?, parse_limit(nz(&p.limit))?)
        .await?;
    Ok(Json(ListDto {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

pub(crate) async fn load(s: &AppState, id: &str) -> ApiResult<xyn_core::records::Draft> {
    let id = draft_id(id)?;
    Ok(s.node
        .store()
        .get_draft(id)
        .await?
        .ok_or_else(|| XynError::not_found(codes::DRAFT_NOT_FOUND, format!("no draft {id}")))?)
}

/// One draft: its current revision.
#[utoipa::path(get, path = "/api/v1/drafts/{draft_id}", tag = "drafts",
    params(("draft_id" = String, Path, format = Uuid)),
    responses((status = 200, description = "The draft", body = DraftDto),
        (status = 404, description = "No such draft", body = ErrorResponse)))]
pub async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DraftDto>> {
    Ok(Json(load(&s, &id).await?.into()))
}

/// Saves a new revision of a draft (when the definition changed; it must be validated again).
#[utoipa::path(put, path = "/api/v1/drafts/{draft_id}", tag = "drafts",
    params(("draft_id" = String, Path, format = Uuid)), request_body = DraftUpdateRequest,
    responses((status = 200, description = "The draft", body = DraftDto),
        (status = 404, description = "No such draft", body = ErrorResponse),
        (status = 409, description = "Changed meanwhile", body = ErrorResponse),
        (status = 422, description = "A definition that does not parse", body = ErrorResponse)))]
pub async fn update(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DraftUpdateRequest>,
) -> ApiResult<Json<DraftDto>> {
    let current = load(&s, &id).await?;
    let input = json!({
        "draft_id": current.draft_id.to_string(),
        "name": req.name.unwrap_or(current.name),
        "draft_type": current.kind,
        "definition": definition_of(req.definition)?,
        "notes": req.notes.or(current.notes),
    });
    let d = s.node.save_draft(input, &actor).await?;
    Ok(Json(d.into()))
}

/// Validates the draft's current revision and records the report: 200 with
/// `is_valid` and every issue (path, code, message).
#[utoipa::path(post, path = "/api/v1/drafts/{draft_id}/validate", tag = "drafts",
    params(("draft_id" = String, Path, format = Uuid)),
    responses((status = 200, description = "The report", body = DraftValidationDto),
        (status = 404, description = "No such draft", body = ErrorResponse)))]
pub async fn validate(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<DraftValidationDto>> {
    let id = draft_id(&id)?;
    let (d, out) = s.node.validate_draft(id, &actor).await?;
    Ok(Json(DraftValidationDto {
        is_valid: out
            .get("is_valid")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        issues: crate::source_lines::located(issues_of(&out), &d.definition),
        report_artifact_id: out
            .get("report_artifact_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        draft: d.into(),
    }))
}

/// Promotes a validated draft to a new blueprint version.
#[utoipa::path(post, path = "/api/v1/drafts/{draft_id}/promote", tag = "drafts",
    params(("draft_id" = String, Path, format = Uuid)),
    responses((status = 200, description = "The promoted draft and its blueprint version", body = DraftPromotionDto),
        (status = 404, description = "No such draft", body = ErrorResponse),
        (status = 409, description = "Not validated, or already promoted", body = ErrorResponse)))]
pub async fn promote(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<DraftPromotionDto>> {
    let id = draft_id(&id)?;
    let (d, out) = s.node.promote_draft(id, &actor).await?;
    Ok(Json(DraftPromotionDto {
        blueprint_id: out
            .get("blueprint_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        version: d.promoted_version.unwrap_or_default(),
        draft: d.into(),
    }))
}
