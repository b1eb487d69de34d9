//! Search (`GET /ui/search?q=`): the box in the navigation. A short id that names exactly one
//! run goes straight to it; anything else lists what matched, with the filters of the API's
//! search (status, blueprint, a time window).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use xyn_core::IdPattern;

use super::{Ui, UiResult, runs::run_json};
use crate::AppState;
use crate::dto::EventDto;
use crate::routes::search::{SearchParams, search};

/// `GET /ui/search`.
pub async fn page(
    State(s): State<AppState>,
    ui: Ui,
    Query(p): Query<SearchParams>,
) -> UiResult<Response> {
    let typed = p.q.as_deref().map(str::trim).unwrap_or("");
    let has_query = !typed.is_empty()
        || [&p.status, &p.blueprint_id, &p.since, &p.until]
            .iter()
            .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty()));
    let (runs, events, read_as, error) = if has_query {
        match search(s.node.store().as_ref(), &p).await {
            Ok(h) => (h.runs, h.events, h.read_as, None),
            Err(e) if e.kind != xyn_core::ErrorKind::Internal => {
                (vec![], vec![], vec![], Some(e.message))
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        (vec![], vec![], vec![], None)
    };
    // A short id that names one run and nothing else: open it.
    if IdPattern::parse(typed).is_some()
        && events.is_empty()
        && let [r] = runs.as_slice()
    {
        return Ok(ui.redirect(&format!("/ui/runs/{}", r.run_id)));
    }
    let now = s.node.now();
    let runs: Vec<Value> = runs.into_iter().map(|r| run_json(r, now)).collect();
    let events: Vec<EventDto> = events.into_iter().map(Into::into).collect();
    let data = json!({
        "q": typed,
        "f": {
            "status": p.status, "blueprint_id": p.blueprint_id,
            "since": p.since, "until": p.until,
        },
        "searched": has_query,
        "runs": runs,
        "events": events,
        "read_as": read_as,
        "search_error": error,
    });
    Ok(ui.page("search.html", "search", data)?.into_response())
}
