use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine;
use xyn_core::{ArtifactId, XynError, codes};
use xyn_engine::NewArtifact;
use xyn_store::ArtifactQuery;

use crate::AppState;
use crate::dto::{
    ArtifactCreateRequest, ArtifactDto, ArtifactList, ArtifactListParams, ErrorResponse, ListDto,
    decode_cursor, encode_cursor, parse_id, parse_limit,
};
use crate::error::{ApiJson, ApiResult};
use crate::extract::{Actor, ApiQuery, Cid, nz};

/// Lists artifacts, newest first.
#[utoipa::path(get, path = "/api/v1/artifacts", tag = "artifacts", params(ArtifactListParams),
    responses((status = 200, description = "A page of artifacts", body = ArtifactList)))]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<ArtifactListParams>,
) -> ApiResult<Json<ListDto<ArtifactDto>>> {
    let q = ArtifactQuery {
        run_id: nz(&p.run_id).map(|r| parse_id("run_id", r)).transpose()?,
        step_id: nz(&p.step_id).map(|r| parse_id("step_id", r)).transpose()?,
        kind: nz(&p.kind).map(str::to_string),
        before: decode_cursor(nz(&p.cursor))?,
        limit: parse_limit(nz(&p.limit))?,
    };
    let page = s.node.store().list_artifacts(q).await?;
    Ok(Json(ListDto {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// Uploads an artifact directly (bytes as base64 in JSON), optionally attached to a run and
/// step; recorded with an `xyn.artifact.uploaded` event.
#[utoipa::path(post, path = "/api/v1/artifacts", tag = "artifacts", request_body = ArtifactCreateRequest,
    responses((status = 201, description = "The stored artifact", body = ArtifactDto),
        (status = 404, description = "No such run or step", body = ErrorResponse),
        (status = 422, description = "Bad content or metadata", body = ErrorResponse)))]
pub async fn create(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Cid(cid): Cid,
    ApiJson(req): ApiJson<ArtifactCreateRequest>,
) -> ApiResult<(StatusCode, Json<ArtifactDto>)> {
    let ct_ok = req.content_type.len() <= 200
        && req.content_type.split(';').next().is_some_and(|m| {
            let mut parts = m.trim().split('/');
            let token = |t: Option<&str>| {
                t.is_some_and(|t| {
                    !t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
                })
            };
            token(parts.next()) && token(parts.next()) && parts.next().is_none()
        })
        && axum::http::HeaderValue::from_str(&req.content_type).is_ok();
    if !ct_ok {
        return Err(XynError::invalid(
            codes::REQUEST_INVALID,
            format!(
                "content_type {:?} is not a media type like text/plain or application/json",
                req.content_type
            ),
        )
        .into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req.content_base64.trim())
        .map_err(|e| {
            XynError::invalid(
                codes::REQUEST_INVALID,
                format!("content_base64 is not base64: {e}"),
            )
        })?;
    if let Some(n) = req.byte_length
        && n != bytes.len() as i64
    {
        return Err(XynError::invalid(
            codes::REQUEST_INVALID,
            format!(
                "byte_length is {n} but content_base64 holds {} bytes",
                bytes.len()
            ),
        )
        .into());
    }
    let a = s
        .node
        .create_artifact(NewArtifact {
            name: req.name,
            kind: req.kind,
            content_type: req.content_type,
            bytes,
            run_id: req
                .run_id
                .as_deref()
                .map(|r| parse_id("run_id", r))
                .transpose()?,
            step_id: req
                .step_id
                .as_deref()
                .map(|r| parse_id("step_id", r))
                .transpose()?,
            metadata: req.metadata,
            actor,
            correlation_id: Some(cid),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(a.into())))
}

pub(crate) async fn load(s: &AppState, id: &str) -> ApiResult<xyn_core::records::Artifact> {
    let id: ArtifactId = parse_id("artifact_id", id)?;
    Ok(s.node.store().get_artifact(id).await?.ok_or_else(|| {
        XynError::not_found(codes::ARTIFACT_NOT_FOUND, format!("no artifact {id}"))
    })?)
}

/// Artifact metadata.
#[utoipa::path(get, path = "/api/v1/artifacts/{artifact_id}", tag = "artifacts",
    params(("artifact_id" = String, Path, format = Uuid)),
    responses((status = 200, description = "The artifact", body = ArtifactDto),
        (status = 404, description = "No such artifact", body = ErrorResponse)))]
pub async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ArtifactDto>> {
    Ok(Json(load(&s, &id).await?.into()))
}

/// The bytes of an artifact.
pub(crate) async fn bytes_of(s: &AppState, a: &xyn_core::records::Artifact) -> ApiResult<Vec<u8>> {
    let blobs = s.node.blobs().clone();
    let sha = a.sha256.clone();
    Ok(tokio::task::spawn_blocking(move || blobs.get(&sha))
        .await
        .map_err(|e| XynError::internal(e.to_string()))??
        .ok_or_else(|| {
            XynError::not_found(
                codes::ARTIFACT_NOT_FOUND,
                format!("the bytes of artifact {} are missing", a.artifact_id),
            )
        })?)
}

/// The bytes, with their content type, as an attachment.
#[utoipa::path(get, path = "/api/v1/artifacts/{artifact_id}/download", tag = "artifacts",
    params(("artifact_id" = String, Path, format = Uuid)),
    responses((status = 200, description = "The bytes, with the artifact's own content type (any media type; the schema is set in openapi.rs)"),
        (status = 404, description = "No such artifact", body = ErrorResponse)))]
pub async fn download(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let a = load(&s, &id).await?;
    let bytes = bytes_of(&s, &a).await?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        a.name
            .chars()
            .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            })
            .collect::<String>()
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                if axum::http::HeaderValue::from_str(&a.content_type).is_ok() {
                    a.content_type.clone()
                } else {
                    "application/octet-stream".to_string()
                },
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox".to_string(),
            ),
        ],
        bytes,
    ))
}
