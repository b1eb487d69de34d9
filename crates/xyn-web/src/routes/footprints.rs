use axum::Json;
use axum::extract::State;
use xyn_core::{Timestamp, XynError, codes};
use xyn_store::{FootprintQuery, FootprintRollupQuery};

use crate::AppState;
use crate::dto::{
    FootprintDayDto, FootprintDayList, FootprintDto, FootprintList, FootprintParams, ListDto,
    RollupParams, decode_cursor, encode_cursor, parse_id, parse_limit,
};
use crate::error::ApiResult;
use crate::extract::{ApiQuery, nz};

/// Parses an RFC 3339 query value.
pub fn parse_time(what: &str, s: Option<&str>) -> Result<Option<Timestamp>, XynError> {
    s.map(|v| {
        Timestamp::parse(v).ok_or_else(|| {
            XynError::bad_request(
                codes::REQUEST_INVALID,
                format!(
                    "{what} must be an RFC 3339 timestamp like 2026-11-22T00:00:00Z (got {v:?})"
                ),
            )
        })
    })
    .transpose()
}

/// Footprint measurements (time, tokens, bytes, requests), newest first.
#[utoipa::path(get, path = "/api/v1/footprints", tag = "footprints", params(FootprintParams),
    responses((status = 200, description = "A page of measurements", body = FootprintList)))]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<FootprintParams>,
) -> ApiResult<Json<ListDto<FootprintDto>>> {
    let q = FootprintQuery {
        run_id: nz(&p.run_id).map(|r| parse_id("run_id", r)).transpose()?,
        metric: nz(&p.metric).map(str::to_string),
        since: parse_time("since", nz(&p.since))?,
        until: parse_time("until", nz(&p.until))?,
        before: decode_cursor(nz(&p.cursor))?,
        limit: parse_limit(nz(&p.limit))?,
    };
    let page = s.node.store().list_footprints(q).await?;
    Ok(Json(ListDto {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// Footprint totals per UTC day and metric (oldest day first). Not paginated: one row per
/// day and metric.
#[utoipa::path(get, path = "/api/v1/footprints/rollup", tag = "footprints", params(RollupParams),
    responses((status = 200, description = "Totals per day and metric; next_cursor is always null", body = FootprintDayList)))]
pub async fn rollup(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<RollupParams>,
) -> ApiResult<Json<ListDto<FootprintDayDto>>> {
    let days = s
        .node
        .store()
        .footprint_rollup(FootprintRollupQuery {
            run_id: nz(&p.run_id).map(|r| parse_id("run_id", r)).transpose()?,
            metrics: nz(&p.metric)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            since: parse_time("since", nz(&p.since))?,
            until: parse_time("until", nz(&p.until))?,
        })
        .await?;
    Ok(Json(ListDto {
        items: days.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}
