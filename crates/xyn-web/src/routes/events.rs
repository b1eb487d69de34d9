use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use xyn_core::event::Resource;
use xyn_core::{EventId, XynError, codes};
use xyn_engine::EmitEvent;
use xyn_store::EventQuery;

use crate::AppState;
use crate::dto::{
    EmitEventRequest, EventDto, ListDto, decode_cursor, encode_cursor, parse_id, parse_limit,
};
use crate::error::{ApiJson, ApiResult};
use crate::extract::{Actor, Cid, Params};

/// `POST /api/v1/events`: 201 once the event (and the runs it triggers) is durable.
pub async fn emit(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Cid(cid): Cid,
    ApiJson(req): ApiJson<EmitEventRequest>,
) -> ApiResult<(StatusCode, Json<EventDto>)> {
    let with_cid = |e: XynError| crate::error::ApiError {
        error: e,
        correlation_id: Some(cid.clone()),
    };
    let run_id = req
        .run_id
        .as_deref()
        .map(|r| parse_id("run_id", r))
        .transpose()
        .map_err(with_cid)?;
    let step_id = req
        .step_id
        .as_deref()
        .map(|r| parse_id("step_id", r))
        .transpose()
        .map_err(with_cid)?;
    let stored = s
        .node
        .emit_event(EmitEvent {
            event_name: req.event_name,
            data: req.data,
            resource: req.resource.map(|r| Resource {
                kind: r.kind,
                id: r.id,
            }),
            run_id,
            step_id,
            actor,
            correlation_id: Some(cid.clone()),
        })
        .await
        .map_err(with_cid)?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// `GET /api/v1/events?limit&cursor&event_name&run_id`: newest first.
pub async fn list(State(s): State<AppState>, p: Params) -> ApiResult<Json<ListDto<EventDto>>> {
    p.allow(&["limit", "cursor", "event_name", "run_id"])?;
    let q = EventQuery {
        event_name: p.get("event_name").map(str::to_string),
        run_id: p.get("run_id").map(|r| parse_id("run_id", r)).transpose()?,
        before: decode_cursor(p.get("cursor"))?,
        limit: parse_limit(p.get("limit"))?,
    };
    let page = s.node.store().list_events(q).await?;
    Ok(Json(ListDto {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// `GET /api/v1/events/{event_id}`.
pub async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<EventDto>> {
    let id: EventId = parse_id("event_id", &id)?;
    let e = s
        .node
        .store()
        .get_event(id)
        .await?
        .ok_or_else(|| XynError::not_found(codes::EVENT_NOT_FOUND, format!("no event {id}")))?;
    Ok(Json(e.into()))
}
