use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use xyn_core::event::Resource;
use xyn_core::{EventId, XynError, codes};
use xyn_engine::EmitEvent;
use xyn_store::EventQuery;

use crate::AppState;
use crate::dto::{
    EmitEventRequest, ErrorResponse, EventDto, EventList, EventListParams, ListDto, StreamParams,
    decode_cursor, encode_cursor, parse_id, parse_limit,
};
use crate::error::{ApiJson, ApiResult};
use crate::extract::{Actor, ApiQuery, Cid, nz};
use crate::sse::{self, Filter};

/// Emits an event: 201 once it (and the runs it triggers) is durable.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = EmitEventRequest,
    responses((status = 201, description = "The stored event", body = EventDto),
        (status = 422, description = "Invalid name or data", body = ErrorResponse)))]
pub async fn emit(
    State(s): State<AppState>,
    Actor(actor): Actor,
    Cid(cid): Cid,
    ApiJson(req): ApiJson<EmitEventRequest>,
) -> ApiResult<(StatusCode, Json<EventDto>)> {
    let run_id = req
        .run_id
        .as_deref()
        .map(|r| parse_id("run_id", r))
        .transpose()?;
    let step_id = req
        .step_id
        .as_deref()
        .map(|r| parse_id("step_id", r))
        .transpose()?;
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
            correlation_id: Some(cid),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// Lists events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventListParams),
    responses((status = 200, description = "A page of events", body = EventList)))]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<EventListParams>,
) -> ApiResult<Json<ListDto<EventDto>>> {
    let q = EventQuery {
        event_name: nz(&p.event_name).map(str::to_string),
        run_id: nz(&p.run_id).map(|r| parse_id("run_id", r)).transpose()?,
        before: decode_cursor(nz(&p.cursor))?,
        limit: parse_limit(nz(&p.limit))?,
        ..Default::default()
    };
    let page = s.node.store().list_events(q).await?;
    Ok(Json(ListDto {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// One event.
#[utoipa::path(get, path = "/api/v1/events/{event_id}", tag = "events",
    params(("event_id" = String, Path, format = Uuid)),
    responses((status = 200, description = "The event", body = EventDto),
        (status = 404, description = "No such event", body = ErrorResponse)))]
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

/// Live events as Server-Sent Events (`id:` = seq, `data:` = the event as JSON). Resumable:
/// send `Last-Event-ID` (or `?after=`) to get every event after that seq first. Without it,
/// the stream starts at the current end of the log.
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "events", params(StreamParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq")),
    responses((status = 200, description = "An endless text/event-stream", content_type = "text/event-stream", body = String)))]
pub async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<StreamParams>,
) -> ApiResult<impl IntoResponse> {
    let filter = Filter {
        event_name: nz(&p.event_name).map(str::to_string),
        run_id: nz(&p.run_id).map(|r| parse_id("run_id", r)).transpose()?,
    };
    let after = sse::resume_point(&headers, nz(&p.after))?;
    sse::json_stream(s, filter, after).await
}
