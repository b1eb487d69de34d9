use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use xyn_core::{ArtifactId, XynError, codes};
use xyn_store::ArtifactQuery;

use crate::AppState;
use crate::dto::{ArtifactDto, ListDto, decode_cursor, encode_cursor, parse_id, parse_limit};
use crate::error::ApiResult;
use crate::extract::Params;

/// `GET /api/v1/artifacts?run_id&step_id&kind&limit&cursor`.
pub async fn list(State(s): State<AppState>, p: Params) -> ApiResult<Json<ListDto<ArtifactDto>>> {
    p.allow(&["limit", "cursor", "run_id", "step_id", "kind"])?;
    let q = ArtifactQuery {
        run_id: p.get("run_id").map(|r| parse_id("run_id", r)).transpose()?,
        step_id: p
            .get("step_id")
            .map(|r| parse_id("step_id", r))
            .transpose()?,
        kind: p.get("kind").map(str::to_string),
        before: decode_cursor(p.get("cursor"))?,
        limit: parse_limit(p.get("limit"))?,
    };
    let page = s.node.store().list_artifacts(q).await?;
    Ok(Json(ListDto {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

async fn load(s: &AppState, id: &str) -> ApiResult<xyn_core::records::Artifact> {
    let id: ArtifactId = parse_id("artifact_id", id)?;
    Ok(s.node.store().get_artifact(id).await?.ok_or_else(|| {
        XynError::not_found(codes::ARTIFACT_NOT_FOUND, format!("no artifact {id}"))
    })?)
}

/// `GET /api/v1/artifacts/{artifact_id}`.
pub async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ArtifactDto>> {
    Ok(Json(load(&s, &id).await?.into()))
}

/// `GET /api/v1/artifacts/{artifact_id}/download`: the bytes, with their content type.
pub async fn download(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let a = load(&s, &id).await?;
    let blobs = s.node.blobs().clone();
    let sha = a.sha256.clone();
    let bytes = tokio::task::spawn_blocking(move || blobs.get(&sha))
        .await
        .map_err(|e| XynError::internal(e.to_string()))??
        .ok_or_else(|| {
            XynError::not_found(
                codes::ARTIFACT_NOT_FOUND,
                format!("the bytes of artifact {} are missing", a.artifact_id),
            )
        })?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        a.name.replace(['"', '\\', '\r', '\n'], "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, a.content_type.clone()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        bytes,
    ))
}
