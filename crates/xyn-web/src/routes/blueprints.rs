use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use xyn_core::{XynError, codes};

use crate::AppState;
use crate::dto::{
    BlueprintApplied, BlueprintApplyRequest, BlueprintDto, BlueprintList, ErrorResponse, ListDto,
    PageParams, ValidationDto, VersionParams, parse_limit,
};
use crate::error::{ApiJson, ApiResult};
use crate::extract::{Actor, ApiQuery, nz};

/// Cursor of name-keyed pages: `n` + hex of the last name.
pub fn encode_name_cursor(name: Option<&str>) -> Option<String> {
    name.map(|n| crate::dto::sign_cursor(&format!("n{}", hex::encode(n))))
}

pub fn decode_name_cursor(c: Option<&str>) -> Result<Option<String>, XynError> {
    c.map(|s| {
        crate::dto::verified_cursor(s)
            .and_then(|p| p.strip_prefix('n'))
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                XynError::bad_request(
                    codes::REQUEST_INVALID_CURSOR,
                    format!("cursor {s:?} is not one this API gave out"),
                )
            })
    })
    .transpose()
}

/// The latest version of each blueprint, by id.
#[utoipa::path(get, path = "/api/v1/blueprints", tag = "blueprints", params(PageParams),
    responses((status = 200, description = "A page of blueprints (latest versions)", body = BlueprintList)))]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<PageParams>,
) -> ApiResult<Json<ListDto<BlueprintDto>>> {
    let after = decode_name_cursor(nz(&p.cursor))?;
    let limit = parse_limit(nz(&p.limit))?;
    let heads = s.node.store().blueprint_heads().await?;
    let mut page: Vec<_> = heads
        .into_iter()
        .filter(|b| {
            after
                .as_ref()
                .is_none_or(|a| b.blueprint_id.as_str() > a.as_str())
        })
        .take(limit + 1)
        .collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        encode_name_cursor(page.last().map(|b| b.blueprint_id.as_str()))
    } else {
        None
    };
    Ok(Json(ListDto {
        items: page.into_iter().map(Into::into).collect(),
        next_cursor: next,
    }))
}

/// Applies a blueprint (YAML or JSON text in `definition`): 201 with the new version, or 200
/// with the latest when the definition did not change.
#[utoipa::path(post, path = "/api/v1/blueprints", tag = "blueprints", request_body = BlueprintApplyRequest,
    responses((status = 201, description = "A new version", body = BlueprintApplied),
        (status = 200, description = "Unchanged: the latest version", body = BlueprintApplied),
        (status = 422, description = "The blueprint does not validate (details.issues)", body = ErrorResponse)))]
pub async fn apply(
    State(s): State<AppState>,
    Actor(actor): Actor,
    ApiJson(req): ApiJson<BlueprintApplyRequest>,
) -> ApiResult<(StatusCode, Json<BlueprintApplied>)> {
    let out = s
        .node
        .apply_blueprint(&req.definition, "api", &actor)
        .await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(BlueprintApplied {
            created: out.created,
            version: out.version.into(),
        }),
    ))
}

/// Validates a blueprint without applying it: the full report, 200 either way.
#[utoipa::path(post, path = "/api/v1/blueprints/validate", tag = "blueprints", request_body = BlueprintApplyRequest,
    responses((status = 200, description = "The validation report", body = ValidationDto)))]
pub async fn validate(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<BlueprintApplyRequest>,
) -> Json<ValidationDto> {
    let r = s.node.validate_blueprint(&req.definition);
    Json(ValidationDto {
        valid: r.valid,
        blueprint_id: r.blueprint_id,
        issues: crate::source_lines::located(
            r.issues.iter().map(Into::into).collect(),
            &req.definition,
        ),
    })
}

/// One version of a blueprint (the latest by default).
#[utoipa::path(get, path = "/api/v1/blueprints/{blueprint_id}", tag = "blueprints",
    params(("blueprint_id" = String, Path), VersionParams),
    responses((status = 200, description = "The version", body = BlueprintDto),
        (status = 404, description = "No such blueprint or version", body = ErrorResponse)))]
pub async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<VersionParams>,
) -> ApiResult<Json<BlueprintDto>> {
    let version = nz(&p.version)
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

/// Every version of a blueprint, newest first.
#[utoipa::path(get, path = "/api/v1/blueprints/{blueprint_id}/versions", tag = "blueprints",
    params(("blueprint_id" = String, Path), PageParams),
    responses((status = 200, description = "A page of versions", body = BlueprintList),
        (status = 404, description = "No such blueprint", body = ErrorResponse)))]
pub async fn versions(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<PageParams>,
) -> ApiResult<Json<ListDto<BlueprintDto>>> {
    let before = crate::dto::decode_cursor(nz(&p.cursor))?;
    let limit = parse_limit(nz(&p.limit))?;
    let all = s.node.store().list_blueprint_versions(&id).await?;
    if all.is_empty() {
        return Err(XynError::not_found(
            codes::BLUEPRINT_NOT_FOUND,
            format!("no blueprint {id:?}"),
        )
        .into());
    }
    let mut page: Vec<_> = all
        .into_iter()
        .filter(|b| before.is_none_or(|v| b.version < v))
        .take(limit + 1)
        .collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        crate::dto::encode_cursor(page.last().map(|b| b.version))
    } else {
        None
    };
    Ok(Json(ListDto {
        items: page.into_iter().map(Into::into).collect(),
        next_cursor: next,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_cursors_round_trip_and_refuse_others() {
        let c = encode_name_cursor(Some("bp.a/ü")).unwrap();
        assert_eq!(
            decode_name_cursor(Some(&c)).unwrap().as_deref(),
            Some("bp.a/ü")
        );
        assert_eq!(decode_name_cursor(None).unwrap(), None);
        let forged = format!("n{}", hex::encode("bp.a"));
        for bad in ["c12", "nzz", "n", forged.as_str(), &format!("{forged}.00")] {
            let e = decode_name_cursor(Some(bad)).unwrap_err();
            assert_eq!(e.code, codes::REQUEST_INVALID_CURSOR);
        }
    }
}
