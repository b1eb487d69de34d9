//! The "Needs approval" inbox: every gate waiting for a decision, with its message, the
//! effects approving lets happen and how long it has waited, decided from its card; and the
//! live count in the navigation, pushed over SSE when a gate opens or closes.

use std::convert::Infallible;
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use xyn_core::event::StoredEvent;
use xyn_core::{RunId, names};

use super::{Ui, UiResult, q, url_with};
use crate::AppState;
use crate::routes::approvals::{APPROVERS, waiting_count, waiting_gates};
use crate::sse::{Filter, subscribe};

/// The badge counts up to this many waiting gates, then shows `500+`.
const COUNT_CAP: usize = 500;
/// Gates listed on the page.
const PAGE: usize = 200;

#[derive(Deserialize, Default)]
pub struct InboxFilter {
    blueprint_id: Option<String>,
    /// `true`: only the gates the viewer of the page may decide.
    mine: Option<String>,
}

async fn inbox_data(s: &AppState, ui: &Ui, f: &InboxFilter) -> UiResult<Value> {
    let mine = q(&f.mine) == Some("true");
    let bp = q(&f.blueprint_id).map(str::to_string);
    let (gates, more) = waiting_gates(s, &ui.who, mine, bp, None, PAGE).await?;
    // Blueprints with a waiting gate, for the filter (from the unfiltered inbox).
    let all = if q(&f.blueprint_id).is_some() || mine {
        waiting_gates(s, &ui.who, false, None, None, PAGE).await?.0
    } else {
        gates.clone()
    };
    let mut blueprints: Vec<String> = all.iter().map(|g| g.blueprint_id.clone()).collect();
    blueprints.sort();
    blueprints.dedup();
    let chips: Vec<Value> = std::iter::once(None)
        .chain(blueprints.iter().map(Some))
        .map(|b| {
            json!({
                "label": b.map_or("All", |b| b.as_str()),
                "on": b.map(String::as_str) == q(&f.blueprint_id),
                "href": url_with("/ui/approvals", &[("blueprint_id", b.map(String::as_str)), ("mine", mine.then_some("true"))]),
            })
        })
        .collect();
    let mine_href = url_with(
        "/ui/approvals",
        &[
            ("blueprint_id", q(&f.blueprint_id)),
            ("mine", (!mine).then_some("true")),
        ],
    );
    Ok(json!({
        "gates": gates,
        "more": more.is_some(),
        "chips": chips,
        "blueprint_id": q(&f.blueprint_id),
        "mine": mine,
        "mine_href": mine_href,
        "list_url": url_with("/ui/approvals/_list", &[("blueprint_id", q(&f.blueprint_id)), ("mine", mine.then_some("true"))]),
        "approvers": APPROVERS.iter().map(|a| a.trim_start_matches("role:")).collect::<Vec<_>>(),
    }))
}

/// `GET /ui/approvals`.
pub async fn page(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<InboxFilter>,
) -> UiResult<Html<String>> {
    let data = inbox_data(&s, &ui, &f).await?;
    ui.page("approvals.html", "approvals", data)
}

/// `GET /ui/approvals/_list`: the cards (refreshed live on the page).
pub async fn list_partial(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<InboxFilter>,
) -> UiResult<Html<String>> {
    ui.partial("_approval_cards.html", inbox_data(&s, &ui, &f).await?)
}

#[derive(Deserialize)]
pub struct DecideForm {
    decision: String,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    blueprint_id: Option<String>,
    #[serde(default)]
    mine: Option<String>,
}

/// `POST /ui/approvals/{run_id}/{step_id}/decide` with `decision=approve|reject`: the same
/// decision as on the run page (same roles, same CSRF check); answers with the cards.
pub async fn decide(
    State(s): State<AppState>,
    ui: Ui,
    Path((id, step)): Path<(String, String)>,
    Form(f): Form<DecideForm>,
) -> UiResult<Response> {
    let run_id: RunId = crate::routes::search::resolve_run(s.node.store().as_ref(), &id).await?;
    let (approve, decided) =
        super::runs::decide_gate_from_form(&s, &ui, run_id, &step, &f.decision, f.comment).await?;
    let filter = InboxFilter {
        blueprint_id: f.blueprint_id,
        mine: f.mine,
    };
    let (flash, error) = match decided {
        Ok(st) => {
            let verb = if approve { "Approved" } else { "Rejected" };
            (Some(format!("{verb} {} of run {}.", st.name, id)), None)
        }
        Err(e) if e.kind != xyn_core::ErrorKind::Internal => (None, Some(e.message)),
        Err(e) => return Err(e.into()),
    };
    if !ui.htmx {
        return Ok(ui.redirect(&url_with(
            "/ui/approvals",
            &[
                ("blueprint_id", q(&filter.blueprint_id)),
                ("mine", q(&filter.mine)),
            ],
        )));
    }
    let mut data = inbox_data(&s, &ui, &filter).await?;
    data["flash"] = json!(flash);
    data["action_error"] = json!(error);
    Ok(ui.partial("_approval_cards.html", data)?.into_response())
}

/// Whether an event can change the set of waiting gates.
fn moves_the_inbox(e: &StoredEvent) -> bool {
    let n = e.event.event_name.as_str();
    n.starts_with("xyn.gate.")
        || n == names::RUN_COMPLETED
        || n == names::RUN_FAILED
        || n == names::RUN_CANCELLED
}

/// The badge's HTML for `n` waiting gates.
fn badge(n: usize) -> String {
    let label = if n >= COUNT_CAP {
        format!("{COUNT_CAP}+")
    } else {
        n.to_string()
    };
    if n == 0 {
        r#"<span class="nav-count" data-testid="approvals-count" data-count="0" hidden>0</span>"#
            .into()
    } else {
        format!(
            r#"<span class="nav-count" data-testid="approvals-count" data-count="{n}" title="{label} waiting for a decision">{label}</span>"#
        )
    }
}

/// `GET /ui/approvals/feed`: `event: approvals` with the badge (the count of waiting gates) at
/// once, then again whenever a gate opens or closes or a run ends. Events that arrive together
/// are answered with one count.
pub async fn feed(State(s): State<AppState>) -> UiResult<impl IntoResponse> {
    let rx = subscribe(&s, Filter::default(), None).await?;
    let first = waiting_count(&s, COUNT_CAP).await?;
    let stream = count_stream(s, rx, first);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn count_stream(
    s: AppState,
    rx: mpsc::Receiver<StoredEvent>,
    first: usize,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let state = (s, rx, Some(first));
    futures_util::stream::unfold(state, |(s, mut rx, first)| async move {
        if let Some(n) = first {
            let ev = SseEvent::default().event("approvals").data(badge(n));
            return Some((Ok(ev), (s, rx, None)));
        }
        loop {
            let e = rx.recv().await?;
            if !moves_the_inbox(&e) {
                continue;
            }
            // Whatever else is already queued is answered by the same count.
            while rx.try_recv().is_ok() {}
            match waiting_count(&s, COUNT_CAP).await {
                Ok(n) => {
                    let ev = SseEvent::default().event("approvals").data(badge(n));
                    return Some((Ok(ev), (s, rx, None)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the approvals count cannot be read; closing its stream");
                    return None;
                }
            }
        }
    })
}
