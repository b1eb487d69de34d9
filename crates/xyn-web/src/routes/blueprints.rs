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
    let off = disabled(&s).await?;
    Ok(Json(ListDto {
        items: page
            .into_iter()
            .map(|b| with_switch(b.into(), &off))
            .collect(),
        next_cursor: next,
    }))
}

/// The ids of the blueprints whose trigger is switched off.
pub async fn disabled(s: &AppState) -> Result<std::collections::HashSet<String>, XynError> {
    Ok(s.node
        .store()
        .blueprint_triggers()
        .await?
        .into_iter()
        .filter(|t| !t.enabled)
        .map(|t| t.blueprint_id)
        .collect())
}

/// The DTO with `enabled` from the set of switched-off blueprints.
pub fn with_switch(mut b: BlueprintDto, off: &std::collections::HashSet<String>) -> BlueprintDto {
    b.enabled = !off.contains(&b.blueprint_id);
    b
}

/// Switches a blueprint's trigger off: the events, NATS messages and cron slots that would start
/// its runs start none (they are still recorded; a run asked for with `POST /api/v1/runs`
/// still starts). Idempotent; audited as `xyn.blueprint.trigger.disabled`.
#[utoipa::path(post, path = "/api/v1/blueprints/{blueprint_id}/disable", tag = "blueprints",
    params(("blueprint_id" = String, Path)),
    responses((status = 200, description = "The latest version, `enabled: false`", body = BlueprintDto),
        (status = 404, description = "No such blueprint", body = ErrorResponse)))]
pub async fn disable(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<BlueprintDto>> {
    switch(&s, &id, false, &actor).await
}

/// Switches a blueprint's trigger back on: only what arrives from now on starts runs (cron
/// slots missed while it was off never fire). Idempotent; audited as
/// `xyn.blueprint.trigger.enabled`.
#[utoipa::path(post, path = "/api/v1/blueprints/{blueprint_id}/enable", tag = "blueprints",
    params(("blueprint_id" = String, Path)),
    responses((status = 200, description = "The latest version, `enabled: true`", body = BlueprintDto),
        (status = 404, description = "No such blueprint", body = ErrorResponse)))]
pub async fn enable(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<BlueprintDto>> {
    switch(&s, &id, true, &actor).await
}

async fn switch(s: &AppState, id: &str, on: bool, actor: &str) -> ApiResult<Json<BlueprintDto>> {
    let (head, t) = s.node.set_trigger_enabled(id, on, actor).await?;
    let mut dto: BlueprintDto = head.into();
    dto.enabled = t.enabled;
    Ok(Json(dto))
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
            version: with_switch(out.version.into(), &disabled(&s).await?),
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
    Ok(Json(with_switch(b.into(), &disabled(&s).await?)))
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
    let off = disabled(&s).await?;
    Ok(Json(ListDto {
        items: page
            .into_iter()
            .map(|b| with_switch(b.into(), &off))
            .collect(),
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
