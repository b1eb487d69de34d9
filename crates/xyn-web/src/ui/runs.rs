//! Runs: list with status filters, run detail (live step timeline, gate decisions, cancel),
//! step detail, and the run launcher with inline validation.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use xyn_core::run::{Run, RunStatus};
use xyn_core::{RunId, XynError, codes};
use xyn_engine::StartRun;
use xyn_store::{ArtifactQuery, EventQuery, RunQuery};

use super::{Ui, UiError, UiResult, q, url_with};
use crate::AppState;
use crate::dto::{ArtifactDto, EventDto, RunDto, StepDto, decode_cursor, encode_cursor, parse_id};
use crate::routes::runs::parse_statuses;
use crate::routes::search::resolve_run;
use crate::sse::{Filter, html_stream};

#[derive(Deserialize, Default)]
pub struct RunFilter {
    status: Option<String>,
    blueprint_id: Option<String>,
    correlation_id: Option<String>,
    cursor: Option<String>,
}

/// A run as the lists show it: finished runs with their duration, unfinished ones with the time
/// elapsed so far, and a summary of its key inputs.
pub(crate) fn run_json(r: Run, now: xyn_core::Timestamp) -> Value {
    let (duration, elapsed) = match (r.started_at, r.completed_at) {
        (Some(a), Some(b)) => (Some(b.ms_since(a)), None),
        (Some(a), None) => (None, Some(now.ms_since(a))),
        _ => (None, None),
    };
    let summary = inputs_summary(&r.inputs);
    let mut v = serde_json::to_value(RunDto::from(r)).unwrap_or_default();
    v["duration_ms"] = json!(duration);
    v["inputs_summary"] = json!(summary);
    v["elapsed_ms"] = json!(elapsed);
    v
}

/// The first few scalar inputs as `name=value`, each cut short: enough to tell runs apart.
pub(crate) fn inputs_summary(inputs: &Value) -> String {
    const KEYS: usize = 3;
    const WIDTH: usize = 28;
    let Some(m) = inputs.as_object() else {
        return String::new();
    };
    let mut parts = Vec::new();
    for (k, v) in m {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        let mut item = format!("{k}={text}");
        if item.chars().count() > WIDTH {
            item = item.chars().take(WIDTH - 1).collect::<String>() + "…";
        }
        parts.push(item);
        if parts.len() == KEYS {
            break;
        }
    }
    parts.join(" · ")
}

async fn rows(s: &AppState, f: &RunFilter) -> Result<Value, XynError> {
    let page = s
        .node
        .store()
        .list_runs(RunQuery {
            status: parse_statuses(q(&f.status))?,
            blueprint_id: q(&f.blueprint_id).map(str::to_string),
            correlation_id: q(&f.correlation_id).map(str::to_string),
            before: decode_cursor(q(&f.cursor))?,
            limit: 50,
            ..Default::default()
        })
        .await?;
    let next = encode_cursor(page.next);
    let more_url = url_with(
        "/ui/runs/_list",
        &[
            ("status", q(&f.status)),
            ("blueprint_id", q(&f.blueprint_id)),
            ("correlation_id", q(&f.correlation_id)),
            ("cursor", next.as_deref()),
        ],
    );
    let now = s.node.now();
    let runs: Vec<Value> = page.items.into_iter().map(|r| run_json(r, now)).collect();
    Ok(json!({"runs": runs, "next_cursor": next, "more_url": more_url}))
}

/// `GET /ui/runs`.
pub async fn page(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<RunFilter>,
) -> UiResult<Html<String>> {
    // The live refresh starts at the log position read before the rows, so no change is missed.
    let head = s.node.store().chain_head().await?.map_or(0, |(seq, _)| seq);
    let mut data = rows(&s, &f).await?;
    data["feed_after"] = json!(head);
    data["live_url"] = json!(url_with(
        "/ui/runs/_list",
        &[
            ("status", q(&f.status)),
            ("blueprint_id", q(&f.blueprint_id)),
            ("correlation_id", q(&f.correlation_id)),
        ],
    ));
    let current = q(&f.status).unwrap_or("");
    let chips: Vec<Value> = [
        ("", "All"),
        ("running", "Running"),
        ("waiting", "Waiting"),
        ("completed", "Completed"),
        ("failed", "Failed"),
        ("cancelled", "Cancelled"),
        ("created", "Created"),
    ]
    .iter()
    .map(|(name, label)| {
        json!({
            "name": if name.is_empty() { "all" } else { name },
            "label": label,
            "on": *name == current,
            "href": url_with("/ui/runs", &[("status", Some(name)), ("blueprint_id", q(&f.blueprint_id)), ("correlation_id", q(&f.correlation_id))]),
        })
    })
    .collect();
    data["statuses"] = json!(chips);
    data["correlation_id"] = json!(q(&f.correlation_id));
    data["filtered"] = json!(!current.is_empty() || q(&f.correlation_id).is_some());
    ui.page("runs.html", "runs", data)
}

/// `GET /ui/runs/feed?after=`: `event: change` whenever a platform event commits (a run
/// starts, a step moves, a gate waits, a run ends); the runs page refreshes its rows on it
/// (htmx queues the triggers that arrive while a refresh is in flight into one more).
pub async fn list_feed(
    State(s): State<AppState>,
    Query(fq): Query<FeedQ>,
) -> UiResult<impl IntoResponse> {
    let after = q(&fq.after).and_then(|a| a.parse::<i64>().ok());
    let filter = Filter {
        event_name: Some("xyn.**".into()),
        run_id: None,
    };
    Ok(html_stream(s, filter, after, |e| {
        e.event
            .run_id
            .is_some()
            .then(|| ("change".to_string(), e.seq.to_string()))
    })
    .await?)
}

/// `GET /ui/runs/_list`.
pub async fn list_partial(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<RunFilter>,
) -> UiResult<Html<String>> {
    ui.partial("_run_rows.html", rows(&s, &f).await?)
}

async fn load_run(s: &AppState, id: &str) -> UiResult<Run> {
    let id: RunId = resolve_run(s.node.store().as_ref(), id).await?;
    s.node.store().get_run(id).await?.ok_or_else(|| {
        UiError::from(XynError::not_found(
            codes::RUN_NOT_FOUND,
            format!("No run {id}."),
        ))
    })
}

/// Everything the run status partial shows.
/// What the run changed in the node's Git repositories: its `git.commit` steps that made a
/// commit and its `git.diff` steps, in step order (the step's action comes from the blueprint
/// version the run pinned).
async fn repo_changes(
    s: &AppState,
    run: &Run,
    steps: &[xyn_core::run::Step],
) -> UiResult<Vec<Value>> {
    if !steps
        .iter()
        .any(|x| x.kind == xyn_core::blueprint::StepKind::ActionTask && x.outputs.is_some())
    {
        return Ok(vec![]);
    }
    let Some(bp) = s
        .node
        .store()
        .get_blueprint(&run.blueprint_id, Some(run.blueprint_version))
        .await?
    else {
        return Ok(vec![]);
    };
    let plan = bp.definition["plan"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for st in steps {
        let (Some(o), Some(def)) = (&st.outputs, plan.get(st.idx as usize)) else {
            continue;
        };
        let repo = match &o["repo"] {
            Value::Null => st
                .inputs
                .as_ref()
                .map_or(Value::Null, |i| i["repo"].clone()),
            r => r.clone(),
        };
        match def["action"].as_str() {
            Some("git.commit") if o["changed"] == true => out.push(json!({
                "kind": "commit", "step": st.name, "repo": repo, "commit": o["commit"],
                "branch": o["branch"],
                "message": st.inputs.as_ref().map_or(Value::Null, |i| i["message"].clone()),
                "files": o["files"],
            })),
            Some("git.diff") => out.push(json!({
                "kind": "diff", "step": st.name, "repo": repo, "from": o["from"], "to": o["to"],
                "changes": o["changes"], "artifact_id": o["artifact_id"],
            })),
            _ => {}
        }
    }
    Ok(out)
}

async fn status_data(s: &AppState, run: Run) -> UiResult<Value> {
    let steps = s.node.store().get_steps(run.run_id).await?;
    let artifacts = s
        .node
        .store()
        .list_artifacts(ArtifactQuery {
            run_id: Some(run.run_id),
            limit: 200,
            ..Default::default()
        })
        .await?;
    let finished = matches!(
        run.status,
        RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
    );
    let run_duration = match (run.started_at.or(Some(run.created_at)), run.completed_at) {
        (Some(a), Some(b)) => Some(b.ms_since(a)),
        (Some(a), None) => Some(s.node.now().ms_since(a)),
        _ => None,
    };
    // Time spent waiting for people at gates, reported apart from the working time.
    let now = s.node.now();
    let gate_wait_ms: u64 = steps
        .iter()
        .filter(|x| x.kind == xyn_core::blueprint::StepKind::Gate)
        .filter_map(|x| {
            x.started_at
                .map(|a| x.completed_at.unwrap_or(now).ms_since(a))
        })
        .sum();
    let repo_changes = repo_changes(s, &run, &steps).await?;
    let steps: Vec<StepDto> = steps.into_iter().map(Into::into).collect();
    let longest = steps
        .iter()
        .filter_map(|x| x.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let waiting = steps
        .iter()
        .any(|x| x.status == "waiting" && x.kind == "gate");
    let steps: Vec<Value> = steps
        .into_iter()
        .map(|st| {
            let bar = st
                .duration_ms
                .map(|d| ((d * 20 / longest) * 5).clamp(5, 100))
                .unwrap_or(0);
            let mut v = serde_json::to_value(st).unwrap_or_default();
            v["bar"] = json!(bar);
            v
        })
        .collect();
    let artifacts: Vec<ArtifactDto> = artifacts.items.into_iter().map(Into::into).collect();
    let history = super::rerun::history(s, &run).await?;
    let retryable =
        run.status == RunStatus::Failed && steps.iter().any(|x| x["status"] == "failed");
    Ok(json!({
        "history": history,
        "retryable": retryable,
        "repo_changes": repo_changes,
        "run": RunDto::from(run),
        "steps": steps,
        "artifacts": artifacts,
        "finished": finished,
        "waiting": waiting,
        "run_duration_ms": run_duration,
        "gate_wait_ms": gate_wait_ms,
        "working_ms": run_duration.map(|d| d.saturating_sub(gate_wait_ms)),
    }))
}

/// `GET /ui/runs/{run_id}`.
pub async fn detail(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
) -> UiResult<Html<String>> {
    // The live feed starts at the log position read before the run, so no change is missed.
    let head = s.node.store().chain_head().await?.map_or(0, |(seq, _)| seq);
    let run = load_run(&s, &id).await?;
    let mut data = status_data(&s, run).await?;
    data["feed_after"] = json!(head);
    ui.page("run.html", "runs", data)
}

/// `GET /ui/runs/{run_id}/_status`: the live part of the run page.
pub async fn status_partial(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
) -> UiResult<Html<String>> {
    let run = load_run(&s, &id).await?;
    ui.partial("_run_status.html", status_data(&s, run).await?)
}

#[derive(Deserialize, Default)]
pub struct FeedQ {
    after: Option<String>,
}

/// `GET /ui/runs/{run_id}/feed?after=`: `event: change` whenever an event of this run commits
/// (also for those committed since the page was rendered at `after`).
pub async fn feed(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(fq): Query<FeedQ>,
) -> UiResult<impl IntoResponse> {
    let run_id: RunId = parse_id("run id", &id)?;
    let after = q(&fq.after).and_then(|a| a.parse::<i64>().ok());
    let filter = Filter {
        event_name: None,
        run_id: Some(run_id),
    };
    Ok(html_stream(s, filter, after, |e| {
        Some(("change".to_string(), e.seq.to_string()))
    })
    .await?)
}

/// `GET /ui/runs/{run_id}/artifacts`: the run's artifacts as table rows.
pub async fn artifacts_partial(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
) -> UiResult<Html<String>> {
    let run = load_run(&s, &id).await?;
    let page = s
        .node
        .store()
        .list_artifacts(ArtifactQuery {
            run_id: Some(run.run_id),
            limit: 200,
            ..Default::default()
        })
        .await?;
    let artifacts: Vec<ArtifactDto> = page.items.into_iter().map(Into::into).collect();
    ui.partial("_artifact_rows.html", json!({"artifacts": artifacts}))
}

/// After a decision or a cancel: the status partial (htmx) or the run page (plain form).
pub(super) async fn after_action(
    s: &AppState,
    ui: &Ui,
    id: &str,
    flash: Option<String>,
    error: Option<String>,
) -> UiResult<Response> {
    if !ui.htmx {
        return Ok(ui.redirect(&format!("/ui/runs/{id}")));
    }
    let run = load_run(s, id).await?;
    let mut data = status_data(s, run).await?;
    data["flash"] = json!(flash);
    data["action_error"] = json!(error);
    Ok(ui.partial("_run_status.html", data)?.into_response())
}

#[derive(Deserialize)]
pub struct DecideForm {
    decision: String,
    #[serde(default)]
    comment: Option<String>,
}

/// `POST /ui/runs/{run_id}/steps/{step_id}/decide` with `decision=approve|reject`.
pub async fn decide(
    State(s): State<AppState>,
    ui: Ui,
    Path((id, step)): Path<(String, String)>,
    Form(f): Form<DecideForm>,
) -> UiResult<Response> {
    let run_id: RunId = resolve_run(s.node.store().as_ref(), &id).await?;
    let (approve, decided) =
        decide_gate_from_form(&s, &ui, run_id, &step, &f.decision, f.comment).await?;
    match decided {
        Ok(st) => {
            let verb = if approve { "Approved" } else { "Rejected" };
            after_action(&s, &ui, &id, Some(format!("{verb} {}.", st.name)), None).await
        }
        Err(e) if e.kind != xyn_core::ErrorKind::Internal => {
            after_action(&s, &ui, &id, None, Some(e.message)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /ui/runs/{run_id}/cancel`.
pub async fn cancel(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let run_id: RunId = resolve_run(s.node.store().as_ref(), &id).await?;
    match s
        .node
        .cancel_run(run_id, &ui.actor(), Some("cancelled from the UI".into()))
        .await
    {
        Ok(_) => after_action(&s, &ui, &id, Some("Run cancelled.".into()), None).await,
        Err(e) if e.kind != xyn_core::ErrorKind::Internal => {
            after_action(&s, &ui, &id, None, Some(e.message)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /ui/runs/{run_id}/steps/{step_id}`.
pub async fn step_detail(
    State(s): State<AppState>,
    ui: Ui,
    Path((id, step)): Path<(String, String)>,
) -> UiResult<Html<String>> {
    let run = load_run(&s, &id).await?;
    let steps = s.node.store().get_steps(run.run_id).await?;
    let st = steps
        .into_iter()
        .find(|x| x.name == step || x.step_id.to_string() == step)
        .ok_or_else(|| UiError::not_found("This run has no such step."))?;
    let events = s
        .node
        .store()
        .list_events(EventQuery {
            run_id: Some(run.run_id),
            limit: 500,
            ..Default::default()
        })
        .await?;
    let mut log: Vec<EventDto> = events
        .items
        .into_iter()
        .filter(|e| e.event.step_id == Some(st.step_id))
        .map(Into::into)
        .collect();
    log.reverse();
    let artifacts = s
        .node
        .store()
        .list_artifacts(ArtifactQuery {
            run_id: Some(run.run_id),
            step_id: Some(st.step_id),
            limit: 100,
            ..Default::default()
        })
        .await?;
    let artifacts: Vec<ArtifactDto> = artifacts.items.into_iter().map(Into::into).collect();
    ui.page(
        "step.html",
        "runs",
        json!({"run": RunDto::from(run), "st": StepDto::from(st), "log": log, "artifacts": artifacts}),
    )
}

#[derive(Deserialize, Default)]
pub struct LaunchForm {
    #[serde(default)]
    blueprint: Option<String>,
    /// `form` (the default: one field per declared input) or `json` (one JSON object).
    #[serde(default)]
    view: Option<String>,
    /// The JSON view's text.
    #[serde(default)]
    inputs: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// The form view's fields, `in.<input name>`, and whatever else the form carries.
    #[serde(flatten)]
    fields: std::collections::BTreeMap<String, String>,
}

impl LaunchForm {
    fn json_view(&self) -> bool {
        q(&self.view) == Some("json")
    }
    fn field(&self, input: &str) -> Option<&str> {
        self.fields.get(&format!("in.{input}")).map(String::as_str)
    }
}

/// One declared input as the form shows it.
fn input_field(i: &Value) -> Value {
    let ty = i.get("type").and_then(Value::as_str).unwrap_or("");
    let default = i.get("default").filter(|d| !d.is_null());
    let required = i
        .get("required")
        .and_then(Value::as_bool)
        .unwrap_or(default.is_none());
    let placeholder = default.map(|d| match d {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let control = match ty {
        "boolean" => "boolean",
        "number" | "integer" => "number",
        "object" | "array" => "json",
        _ => "text",
    };
    json!({
        "name": i.get("name"), "type": if ty.is_empty() { Value::Null } else { json!(ty) },
        "required": required, "default": placeholder, "control": control,
        "step": if ty == "integer" { "1" } else { "any" },
        "description": i.get("description"),
    })
}

/// The launcher's form data: blueprints, the chosen one's declared inputs, the form's values.
async fn launcher_data(s: &AppState, f: &LaunchForm) -> UiResult<Value> {
    let heads = s.node.store().blueprint_heads().await?;
    let chosen = q(&f.blueprint)
        .map(str::to_string)
        .or_else(|| heads.first().map(|b| b.blueprint_id.clone()));
    let specs = declared_inputs(&heads, chosen.as_deref());
    let fields: Vec<Value> = specs
        .iter()
        .map(|i| {
            let mut v = input_field(i);
            let name = v["name"].as_str().unwrap_or_default().to_string();
            v["value"] = json!(f.field(&name).unwrap_or(""));
            v
        })
        .collect();
    // The JSON view starts with the required inputs only: an optional one left out takes its
    // default, one written as "" would not.
    let template = {
        let m: Map<String, Value> = fields
            .iter()
            .filter(|i| i["required"] == json!(true))
            .filter_map(|i| i["name"].as_str().map(|n| (n.to_string(), json!(""))))
            .collect();
        serde_json::to_string_pretty(&m).unwrap_or_else(|_| "{}".into())
    };
    let heads: Vec<Value> = heads
        .into_iter()
        .map(|b| json!({"blueprint_id": b.blueprint_id, "version": b.version, "name": b.name}))
        .collect();
    Ok(json!({
        "blueprints": heads,
        "chosen_inputs": fields,
        "form": {
            "blueprint": chosen,
            "view": if f.json_view() { "json" } else { "form" },
            "inputs": q(&f.inputs).map(str::to_string).unwrap_or(template),
            "name": q(&f.name),
        },
    }))
}

/// The `inputs` declared by the latest version of `blueprint`, as in its definition.
fn declared_inputs(
    heads: &[xyn_core::records::BlueprintVersion],
    blueprint: Option<&str>,
) -> Vec<Value> {
    blueprint
        .and_then(|c| heads.iter().find(|b| b.blueprint_id == c))
        .and_then(|b| {
            b.definition
                .get("inputs")
                .and_then(Value::as_array)
                .cloned()
        })
        .unwrap_or_default()
}

/// `GET /ui/runs/new?blueprint=&view=`.
pub async fn launcher(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<LaunchForm>,
) -> UiResult<Html<String>> {
    let data = launcher_data(&s, &f).await?;
    if ui.htmx {
        return ui.partial("_launch_form.html", data);
    }
    ui.page("launch.html", "launch", data)
}

fn issue(path: &str, code: &str, message: impl Into<String>) -> Value {
    json!({"path": path, "code": code, "message": message.into()})
}

/// The problems of a refused start as issues for a form: the error's own `issues` when it has
/// them, else the error itself.
pub(crate) fn refusal_issues(e: &XynError) -> Vec<Value> {
    e.details
        .as_ref()
        .and_then(|d| d.get("issues"))
        .and_then(Value::as_array)
        .cloned()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| vec![issue("", e.code, e.message.clone())])
}

/// A gate decision posted from a UI form (the run page or the inbox): `decision` must be
/// `approve` or `reject` (else a 400); the decider's right is checked as the API checks it.
/// Returns whether it approves and the decision's outcome.
pub(crate) async fn decide_gate_from_form(
    s: &AppState,
    ui: &Ui,
    run_id: RunId,
    step: &str,
    decision: &str,
    comment: Option<String>,
) -> UiResult<(bool, Result<xyn_core::run::Step, XynError>)> {
    let approve = match decision {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(UiError::from(XynError::bad_request(
                codes::REQUEST_INVALID,
                format!("decision must be approve or reject, not {other:?}"),
            )));
        }
    };
    let comment = comment.filter(|c| !c.trim().is_empty());
    let decided = match crate::routes::approvals::check_decider(s, &ui.who, run_id, step).await {
        Ok(()) => {
            s.node
                .decide_gate(run_id, step, approve, &ui.actor(), comment)
                .await
        }
        Err(e) => Err(e),
    };
    Ok((approve, decided))
}

/// Parses the JSON view's text; problems as issues.
fn parse_inputs(text: Option<&str>) -> Result<Map<String, Value>, Vec<Value>> {
    let text = text.unwrap_or("{}");
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(vec![issue(
            "$",
            "inputs.not_an_object",
            "Inputs must be a JSON object, like {\"host\": \"web-1\"}.",
        )]),
        Err(e) => Err(vec![issue(
            &format!("line {}, column {}", e.line(), e.column()),
            "syntax",
            format!("Not valid JSON: {e}"),
        )]),
    }
}

/// Reads the form view's fields by the declared types: a blank field is left out (so its
/// default applies), anything else must read as its type.
fn form_inputs(f: &LaunchForm, specs: &[Value]) -> Result<Map<String, Value>, Vec<Value>> {
    let mut out = Map::new();
    let mut issues = Vec::new();
    for spec in specs {
        let Some(name) = spec.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Some(text) = f.field(name).map(str::trim).filter(|t| !t.is_empty()) else {
            continue;
        };
        let path = format!("inputs.{name}");
        let v = match spec.get("type").and_then(Value::as_str).unwrap_or("") {
            "integer" => text
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| "a whole number"),
            "number" => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or("a number"),
            "boolean" => match text {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err("true or false"),
            },
            "object" | "array" => serde_json::from_str(text).map_err(|_| "JSON"),
            _ => Ok(Value::String(text.to_string())),
        };
        match v {
            Ok(v) => {
                out.insert(name.to_string(), v);
            }
            Err(want) => issues.push(issue(
                &path,
                "input.type",
                format!("{name} must be {want}, not {text:?}"),
            )),
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// The inputs the form carries, from whichever view was used.
async fn submitted_inputs(s: &AppState, f: &LaunchForm) -> Result<Map<String, Value>, Vec<Value>> {
    if f.json_view() {
        return parse_inputs(q(&f.inputs));
    }
    let heads = s
        .node
        .store()
        .blueprint_heads()
        .await
        .map_err(|e| vec![issue("blueprint", "store", e.to_string())])?;
    form_inputs(f, &declared_inputs(&heads, q(&f.blueprint)))
}

/// Checks inputs against the blueprint's declared inputs, without starting anything.
async fn check_inputs(s: &AppState, f: &LaunchForm) -> Vec<Value> {
    let inputs = match submitted_inputs(s, f).await {
        Ok(m) => m,
        Err(issues) => return issues,
    };
    let Some(id) = q(&f.blueprint) else {
        return vec![issue(
            "blueprint",
            "blueprint.missing",
            "Choose a blueprint.",
        )];
    };
    let head = match s.node.store().get_blueprint(id, None).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return vec![issue(
                "blueprint",
                codes::BLUEPRINT_NOT_FOUND,
                format!("No blueprint {id:?}."),
            )];
        }
        Err(e) => return vec![issue("blueprint", "store", e.to_string())],
    };
    let plan = s
        .node
        .with_validation_env(|env| xyn_core::blueprint::compile_text(&head.source, env));
    match plan {
        Ok(plan) => match xyn_core::blueprint::bind_inputs(&plan, None, Some(&inputs)) {
            Ok(_) => vec![],
            Err(issues) => issues
                .iter()
                .map(|i| issue(&i.path, i.code, i.message.clone()))
                .collect(),
        },
        Err(_) => vec![],
    }
}

/// `POST /ui/runs/new/check`: inline validation while typing.
pub async fn check(
    State(s): State<AppState>,
    ui: Ui,
    Form(f): Form<LaunchForm>,
) -> UiResult<Html<String>> {
    let errors = check_inputs(&s, &f).await;
    ui.partial(
        "_launch_check.html",
        json!({"errors": errors, "checked": true}),
    )
}

/// `POST /ui/runs`: starts a run; on bad input the form comes back with the errors inline.
pub async fn launch(
    State(s): State<AppState>,
    ui: Ui,
    Form(f): Form<LaunchForm>,
) -> UiResult<Response> {
    let refuse = |data: Value, errors: Vec<Value>| -> UiResult<Response> {
        let mut data = data;
        data["errors"] = json!(errors);
        data["error_title"] = json!("Cannot start this run");
        let html = if ui.htmx {
            ui.partial("_launch_form.html", data)?
        } else {
            ui.page("launch.html", "launch", data)?
        };
        Ok((StatusCode::UNPROCESSABLE_ENTITY, html).into_response())
    };
    let data = launcher_data(&s, &f).await?;
    let inputs = match submitted_inputs(&s, &f).await {
        Ok(m) => m,
        Err(issues) => return refuse(data, issues),
    };
    let Some(bp) = q(&f.blueprint) else {
        return refuse(
            data,
            vec![issue(
                "blueprint",
                "blueprint.missing",
                "Choose a blueprint.",
            )],
        );
    };
    match s
        .node
        .start_run(StartRun {
            blueprint_id: bp.to_string(),
            version: None,
            inputs,
            name: q(&f.name).map(str::to_string),
            priority: 0,
            actor: ui.actor(),
            correlation_id: None,
        })
        .await
    {
        Ok(run) => Ok(ui.redirect(&format!("/ui/runs/{}", run.run_id))),
        Err(e) if e.kind != xyn_core::ErrorKind::Internal => refuse(data, refusal_issues(&e)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inputs_summary_shows_the_first_scalars_cut_short() {
        let v = json!({"host": "web-1", "n": 3, "deep": {"a": 1}, "ok": true, "more": "x"});
        // In key order (the stored object keeps its keys sorted); nested values are left out.
        assert_eq!(inputs_summary(&v), "host=web-1 · more=x · n=3");
        let long = json!({"url": "https://example.com/a/very/long/path"});
        let s = inputs_summary(&long);
        assert_eq!(s.chars().count(), 28);
        assert!(s.ends_with('…'));
        assert_eq!(inputs_summary(&json!([1])), "");
    }
}
