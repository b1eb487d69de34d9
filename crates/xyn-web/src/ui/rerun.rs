//! Retry and re-run from the run page: retry gives the failed step a new attempt in the same
//! run; re-run opens the old run's inputs for editing and starts a new, linked run. Also what
//! the run page shows of a run's history: earlier attempts of each step, the retries, and the
//! runs it was re-run as or from.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use xyn_core::run::Run;
use xyn_core::{RunId, XynError, names};
use xyn_store::EventQuery;

use super::runs::after_action;
use super::{Ui, UiError, UiResult, q};
use crate::AppState;
use crate::dto::RunDto;

/// Events of a run read for its history.
const HISTORY_EVENTS: usize = 500;

/// The run's history for its page: `attempts` (per step name, the failed attempts before the
/// current one), `retries`, `reruns` (newer runs started from this one) and `rerun_of`.
pub(super) async fn history(s: &AppState, run: &Run) -> UiResult<Value> {
    let store = s.node.store();
    let events = store
        .list_events(EventQuery {
            run_id: Some(run.run_id),
            limit: HISTORY_EVENTS,
            ..Default::default()
        })
        .await?;
    let mut attempts: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut retries = Vec::new();
    let mut reruns = Vec::new();
    // Oldest first.
    for e in events.items.iter().rev() {
        let ev = &e.event;
        let d = &ev.data;
        match ev.event_name.as_str() {
            names::STEP_FAILED => {
                if let Some(step) = d.get("step").and_then(Value::as_str) {
                    let list = attempts
                        .entry(step.to_string())
                        .or_insert_with(|| Value::Array(vec![]));
                    if let Value::Array(a) = list {
                        a.push(json!({
                            "attempt": d.get("attempt"),
                            "code": d.pointer("/error/code"),
                            "message": d.pointer("/error/message"),
                            "at": ev.occurred_at.to_string(),
                            "event_id": ev.event_id.to_string(),
                        }));
                    }
                }
            }
            names::RUN_RETRIED => retries.push(json!({
                "step": d.get("step"),
                "attempt": d.get("attempt"),
                "actor": ev.actor,
                "at": ev.occurred_at.to_string(),
            })),
            names::RUN_RERUN => reruns.push(json!({
                "run_id": d.get("rerun_run_id"),
                "inputs_changed": d.get("inputs_changed"),
                "actor": ev.actor,
                "at": ev.occurred_at.to_string(),
            })),
            _ => {}
        }
    }
    let rerun_of = match run.trigger_event_id {
        Some(t) => store
            .get_event(t)
            .await?
            .filter(|e| e.event.event_name == names::RUN_REQUESTED)
            .and_then(|e| e.event.data.get("rerun_of").cloned()),
        None => None,
    };
    Ok(json!({
        "attempts": attempts,
        "retries": retries,
        "reruns": reruns,
        "rerun_of": rerun_of,
    }))
}

/// `POST /ui/runs/{run_id}/retry`: retries the failed run from its failed step.
pub async fn retry(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let run_id: RunId = crate::routes::search::resolve_run(s.node.store().as_ref(), &id).await?;
    match s.node.retry_run(run_id, None, &ui.actor()).await {
        Ok(_) => {
            after_action(
                &s,
                &ui,
                &id,
                Some("Retrying from the failed step.".into()),
                None,
            )
            .await
        }
        Err(e) if e.kind != xyn_core::ErrorKind::Internal => {
            after_action(&s, &ui, &id, None, Some(e.message)).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn load(s: &AppState, id: &str) -> UiResult<Run> {
    let run_id: RunId = crate::routes::search::resolve_run(s.node.store().as_ref(), id).await?;
    s.node.store().get_run(run_id).await?.ok_or_else(|| {
        UiError::from(XynError::not_found(
            xyn_core::codes::RUN_NOT_FOUND,
            format!("No run {run_id}."),
        ))
    })
}

fn form_data(run: &Run, inputs: &str, name: Option<&str>) -> Value {
    json!({
        "run": RunDto::from(run.clone()),
        "form": {"inputs": inputs, "name": name.unwrap_or(&run.name)},
    })
}

/// `GET /ui/runs/{run_id}/rerun`: the old run's inputs, prefilled for editing.
pub async fn rerun_form(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
) -> UiResult<Html<String>> {
    let run = load(&s, &id).await?;
    let inputs = serde_json::to_string_pretty(&run.inputs).unwrap_or_else(|_| "{}".into());
    ui.page("rerun.html", "runs", form_data(&run, &inputs, None))
}

#[derive(Deserialize, Default)]
pub struct RerunForm {
    #[serde(default)]
    inputs: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /ui/runs/{run_id}/rerun`: starts the new run; bad inputs come back inline.
pub async fn rerun(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    Form(f): Form<RerunForm>,
) -> UiResult<Response> {
    let run = load(&s, &id).await?;
    let text = q(&f.inputs).unwrap_or("{}");
    let refuse = |errors: Vec<Value>| -> UiResult<Response> {
        let mut data = form_data(&run, text, q(&f.name));
        data["errors"] = json!(errors);
        // The form again, with the problems: a page the browser shows (200), like any other.
        Ok(ui.page("rerun.html", "runs", data)?.into_response())
    };
    let inputs = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return refuse(vec![json!({"path": "$", "code": "inputs.not_an_object",
                "message": "Inputs must be a JSON object, like {\"host\": \"web-1\"}."})]);
        }
        Err(e) => {
            return refuse(vec![
                json!({"path": format!("line {}, column {}", e.line(), e.column()),
                "code": "syntax", "message": format!("Not valid JSON: {e}")}),
            ]);
        }
    };
    match s
        .node
        .rerun(
            run.run_id,
            Some(inputs),
            q(&f.name).map(str::to_string),
            ui.actor(),
            None,
        )
        .await
    {
        Ok(new) => Ok(ui.redirect(&format!("/ui/runs/{}", new.run_id))),
        Err(e) if e.kind != xyn_core::ErrorKind::Internal => {
            refuse(super::runs::refusal_issues(&e))
        }
        Err(e) => Err(e.into()),
    }
}
