//! The event console: newest first, filters by name and run, live over SSE.

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse};
use serde::Deserialize;
use serde_json::json;
use xyn_core::{EventId, RunId, XynError, codes};
use xyn_store::EventQuery;

use super::{Ui, UiError, UiResult, q, templates, url_with};
use crate::AppState;
use crate::dto::{EventDto, decode_cursor, encode_cursor, parse_id};
use crate::sse::{Filter, html_stream};

#[derive(Deserialize, Default)]
pub struct EventFilter {
    event_name: Option<String>,
    run_id: Option<String>,
    cursor: Option<String>,
    /// The feed starts after this seq (the page's newest).
    after: Option<String>,
}

impl EventFilter {
    fn run(&self) -> Result<Option<RunId>, XynError> {
        q(&self.run_id).map(|r| parse_id("run id", r)).transpose()
    }
}

async fn rows(s: &AppState, f: &EventFilter) -> Result<serde_json::Value, XynError> {
    let page = s
        .node
        .store()
        .list_events(EventQuery {
            event_name: q(&f.event_name).map(str::to_string),
            run_id: f.run()?,
            before: decode_cursor(q(&f.cursor))?,
            limit: 50,
            ..Default::default()
        })
        .await?;
    let next = encode_cursor(page.next);
    let more_url = url_with(
        "/ui/events/_list",
        &[
            ("event_name", q(&f.event_name)),
            ("run_id", q(&f.run_id)),
            ("cursor", next.as_deref()),
        ],
    );
    let events: Vec<EventDto> = page.items.into_iter().map(Into::into).collect();
    Ok(json!({"events": events, "next_cursor": next, "more_url": more_url}))
}

/// `GET /ui/events`.
pub async fn page(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<EventFilter>,
) -> UiResult<Html<String>> {
    // Read the head first: the live feed starts after whatever this page shows or missed.
    let head = s.node.store().chain_head().await?.map_or(0, |(seq, _)| seq);
    let (mut data, error) = match rows(&s, &f).await {
        Ok(d) => (d, None),
        Err(e) if e.kind != xyn_core::ErrorKind::Internal => {
            (json!({"events": []}), Some(e.message))
        }
        Err(e) => return Err(e.into()),
    };
    data["filter"] = json!({"event_name": q(&f.event_name), "run_id": q(&f.run_id)});
    data["filter_error"] = json!(error);
    let newest = data["events"][0]["seq"].as_i64().unwrap_or(0).max(head);
    let after = newest.to_string();
    data["feed_url"] = json!(url_with(
        "/ui/events/feed",
        &[
            ("event_name", q(&f.event_name)),
            ("run_id", q(&f.run_id)),
            ("after", Some(&after))
        ]
    ));
    ui.page("events.html", "events", data)
}

/// `GET /ui/events/_list` (also `/ui/events/stream`): rows, for "older events".
pub async fn list_partial(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<EventFilter>,
) -> UiResult<Html<String>> {
    ui.partial("_event_rows.html", rows(&s, &f).await?)
}

/// `GET /ui/events/feed`: new rows as SSE (`event: row`), pushed as events commit.
pub async fn feed(
    State(s): State<AppState>,
    Query(f): Query<EventFilter>,
) -> UiResult<impl IntoResponse> {
    let filter = Filter {
        event_name: q(&f.event_name).map(str::to_string),
        run_id: f.run()?,
    };
    let after = q(&f.after).and_then(|a| a.parse::<i64>().ok());
    Ok(html_stream(s, filter, after, |e| {
        let dto = EventDto::from(e);
        templates()
            .render("_event_row.html", json!({"e": dto}))
            .ok()
            .map(|html| ("row".to_string(), html))
    })
    .await?)
}

/// `GET /ui/events/{event_id}`.
pub async fn detail(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
) -> UiResult<Html<String>> {
    let id: EventId = parse_id("event id", &id)?;
    let e = s.node.store().get_event(id).await?.ok_or_else(|| {
        UiError::from(XynError::not_found(
            codes::EVENT_NOT_FOUND,
            format!("No event {id}."),
        ))
    })?;
    // The step by its name (with a link), as everywhere else in the UI.
    let step = match (e.event.run_id, e.event.step_id) {
        (Some(run), Some(step)) => s
            .node
            .store()
            .get_steps(run)
            .await?
            .into_iter()
            .find(|x| x.step_id == step)
            .map(|x| json!({"name": x.name, "href": format!("/ui/runs/{run}/steps/{}", crate::path_segment(&x.name))})),
        _ => None,
    };
    ui.page(
        "event.html",
        "events",
        json!({"e": EventDto::from(e), "step": step}),
    )
}
