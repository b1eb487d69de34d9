//! Blueprints (YAML view, versions) and drafts (edit, validate with issues inline, promote),
//! through the engine's draft functions.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use xyn_core::records::Draft;
use xyn_core::{DraftId, XynError, codes};

use super::{Ui, UiError, UiResult, q, run_stats, url_with, versions};
use crate::AppState;
use crate::dto::{BlueprintDto, DraftDto, decode_cursor, encode_cursor, parse_id};
use crate::routes::blueprints::{disabled, with_switch};
use crate::routes::drafts::issues_of;
use crate::source_lines::{syntax_line, with_lines};

/// `GET /ui/blueprints`.
pub async fn page(State(s): State<AppState>, ui: Ui) -> UiResult<Html<String>> {
    let off = disabled(&s).await?;
    let heads: Vec<BlueprintDto> = s
        .node
        .store()
        .blueprint_heads()
        .await?
        .into_iter()
        .map(|b| with_switch(b.into(), &off))
        .collect();
    let stats = run_stats::by_blueprint(&s.node.store().blueprint_run_counts().await?);
    ui.page(
        "blueprints.html",
        "blueprints",
        json!({"blueprints": heads, "stats": stats}),
    )
}

#[derive(Deserialize, Default)]
pub struct VersionQ {
    version: Option<String>,
}

/// `GET /ui/blueprints/{blueprint_id}?version=`.
pub async fn detail(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    Query(v): Query<VersionQ>,
) -> UiResult<Html<String>> {
    let version = q(&v.version).and_then(|v| v.parse::<i64>().ok());
    let b = s
        .node
        .store()
        .get_blueprint(&id, version)
        .await?
        .ok_or_else(|| UiError::not_found("No such blueprint or version."))?;
    let all = s.node.store().list_blueprint_versions(&id).await?;
    let compare = versions::compare_choices(&all.iter().map(|v| v.version).collect::<Vec<_>>());
    let versions: Vec<BlueprintDto> = all.into_iter().map(Into::into).collect();
    let diagram = versions::diagram_of(&b);
    let stats = run_stats::by_blueprint(&s.node.store().blueprint_run_counts().await?)
        .remove(&id)
        .unwrap_or_default();
    let dto = with_switch(b.into(), &disabled(&s).await?);
    ui.page(
        "blueprint.html",
        "blueprints",
        json!({"b": dto, "versions": versions,
            "diagram": diagram, "compare": compare, "stats": stats}),
    )
}

#[derive(Deserialize)]
pub struct TriggerForm {
    /// `enable` or `disable`.
    op: String,
}

/// `POST /ui/blueprints/{blueprint_id}/trigger`: switches the trigger on or off, then shows
/// the blueprint again.
pub async fn switch_trigger(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    Form(f): Form<TriggerForm>,
) -> UiResult<Response> {
    let on = match f.op.as_str() {
        "enable" => true,
        "disable" => false,
        _ => {
            return Err(XynError::bad_request(
                codes::REQUEST_INVALID,
                "op must be enable or disable",
            )
            .into());
        }
    };
    s.node.set_trigger_enabled(&id, on, &ui.actor()).await?;
    Ok(ui.redirect(&format!("/ui/blueprints/{}", crate::path_segment(&id))))
}

#[derive(Deserialize, Default)]
pub struct CursorQ {
    cursor: Option<String>,
}

/// `GET /ui/drafts`.
pub async fn drafts(
    State(s): State<AppState>,
    ui: Ui,
    Query(c): Query<CursorQ>,
) -> UiResult<Html<String>> {
    let page = s
        .node
        .store()
        .list_drafts(decode_cursor(q(&c.cursor))?, 50)
        .await?;
    let next = encode_cursor(page.next);
    let drafts: Vec<DraftDto> = page.items.into_iter().map(Into::into).collect();
    ui.page(
        "drafts.html",
        "drafts",
        json!({"drafts": drafts, "next_cursor": next,
            "more_url": url_with("/ui/drafts", &[("cursor", next.as_deref())])}),
    )
}

const STARTER: &str = "id: bp.example.hello\nname: Hello\ntrigger:\n  event_type: demo.hello\ninputs:\n  - name: who\n    type: string\n    default: world\nplan:\n  - kind: transform\n    id: greet\n    template:\n      message: \"hello {{inputs.who}}\"\n  - kind: gate\n    id: approve\n    mode: manual\n    message: \"Send the greeting?\"\noutputs:\n  - name: message\n    value: \"{{steps.greet.outputs.message}}\"\n";

/// `GET /ui/drafts/new`.
pub async fn new_draft(ui: Ui) -> UiResult<Html<String>> {
    ui.page(
        "draft.html",
        "drafts",
        json!({"d": null, "form": {"name": "", "definition": STARTER}}),
    )
}

#[derive(Deserialize, Default)]
pub struct DraftForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    definition: String,
    #[serde(default)]
    op: Option<String>,
}

/// A refusal as the editor shows it: the message, the issues (each with its line in `text`, the
/// definition that was refused) and, for text that does not parse, the line of the error.
fn refusal(e: &XynError, text: &str) -> Value {
    let issues = e
        .details
        .as_ref()
        .map(|d| json!(with_lines(&issues_of(d), text)))
        .unwrap_or(Value::Null);
    let line = (e.code == codes::DRAFT_INVALID_DEFINITION)
        .then(|| syntax_line(text, &e.message))
        .flatten();
    json!({"error": e.message, "error_issues": issues, "error_line": line})
}

/// Re-renders the editor with a message (status 422 for refused input).
fn editor(
    ui: &Ui,
    d: Option<&Draft>,
    form: &DraftForm,
    extra: Value,
    status: StatusCode,
) -> UiResult<Response> {
    let promoted_id = d
        .and_then(|d| xyn_core::blueprint::parse_text(&d.definition).ok())
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string));
    let mut data = json!({
        "d": d.cloned().map(DraftDto::from),
        "form": {"name": form.name, "definition": form.definition},
        "promoted_id": promoted_id,
    });
    if let (Value::Object(m), Value::Object(x)) = (&mut data, extra) {
        m.extend(x);
    }
    let html = if ui.htmx {
        ui.partial("_draft_editor.html", data)?
    } else {
        ui.page("draft.html", "drafts", data)?
    };
    Ok((status, html).into_response())
}

/// `POST /ui/drafts`: creates a draft, then shows it.
pub async fn create_draft(
    State(s): State<AppState>,
    ui: Ui,
    Form(f): Form<DraftForm>,
) -> UiResult<Response> {
    let input = json!({"name": f.name, "draft_type": "blueprint", "definition": f.definition});
    match s.node.save_draft(input, &ui.actor()).await {
        Ok(d) => Ok(ui.redirect(&format!("/ui/drafts/{}", d.draft_id))),
        Err(e) if e.kind != xyn_core::ErrorKind::Internal => editor(
            &ui,
            None,
            &f,
            refusal(&e, &f.definition),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(e) => Err(e.into()),
    }
}

async fn load(s: &AppState, id: &str) -> UiResult<Draft> {
    let id: DraftId = parse_id("draft id", id)?;
    s.node.store().get_draft(id).await?.ok_or_else(|| {
        UiError::from(XynError::not_found(
            codes::DRAFT_NOT_FOUND,
            format!("No draft {id}."),
        ))
    })
}

/// The validation report of the draft's current revision, if it has one. Its issues get lines
/// when the editor shows that revision's text (`shown`); after a refused save it shows other text.
fn report_of(d: &Draft, shown: &str) -> Value {
    match &d.validation {
        Some(v) if v.get("revision").and_then(Value::as_i64) == Some(d.revision) => {
            let issues = issues_of(v);
            let issues = if shown == d.definition {
                json!(with_lines(&issues, shown))
            } else {
                json!(issues)
            };
            json!({
                "is_valid": v.get("is_valid").and_then(Value::as_bool).unwrap_or(false),
                "issues": issues,
                "revision": d.revision,
            })
        }
        _ => Value::Null,
    }
}

/// `GET /ui/drafts/{draft_id}`.
pub async fn draft(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let d = load(&s, &id).await?;
    let form = DraftForm {
        name: d.name.clone(),
        definition: d.definition.clone(),
        op: None,
    };
    let report = report_of(&d, &d.definition);
    editor(
        &ui,
        Some(&d),
        &form,
        json!({"report": report}),
        StatusCode::OK,
    )
}

/// `POST /ui/drafts/{draft_id}` with `op=save|validate|promote`. Save and validate first save
/// what is in the editor (a new revision when it changed).
pub async fn draft_op(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    Form(f): Form<DraftForm>,
) -> UiResult<Response> {
    let current = load(&s, &id).await?;
    let op = f.op.clone().unwrap_or_else(|| "save".into());
    let actor = ui.actor();
    let refused = |d: &Draft, e: XynError| {
        let mut shown = refusal(&e, &f.definition);
        shown["report"] = report_of(d, &f.definition);
        editor(&ui, Some(d), &f, shown, StatusCode::UNPROCESSABLE_ENTITY)
    };
    // Save what is in the editor unless promoting (which promotes the validated revision).
    let d = if op == "promote" {
        current
    } else {
        let name = if f.name.trim().is_empty() {
            current.name.clone()
        } else {
            f.name.clone()
        };
        let input = json!({"draft_id": current.draft_id.to_string(), "name": name,
            "draft_type": current.kind, "definition": f.definition, "notes": current.notes});
        match s.node.save_draft(input, &actor).await {
            Ok(d) => d,
            Err(e) if e.kind != xyn_core::ErrorKind::Internal => return refused(&current, e),
            Err(e) => return Err(e.into()),
        }
    };
    let form = DraftForm {
        name: d.name.clone(),
        definition: d.definition.clone(),
        op: None,
    };
    match op.as_str() {
        "validate" => match s.node.validate_draft(d.draft_id, &actor).await {
            // The report is the answer, valid or not (as in the API).
            Ok((d, _)) => {
                let report = report_of(&d, &d.definition);
                editor(
                    &ui,
                    Some(&d),
                    &form,
                    json!({"report": report}),
                    StatusCode::OK,
                )
            }
            Err(e) if e.kind != xyn_core::ErrorKind::Internal => refused(&d, e),
            Err(e) => Err(e.into()),
        },
        "promote" => match s.node.promote_draft(d.draft_id, &actor).await {
            // One banner: the editor's own "Promoted to …" note, which stays on reload.
            Ok((d, _)) => editor(&ui, Some(&d), &form, json!({}), StatusCode::OK),
            Err(e) if e.kind != xyn_core::ErrorKind::Internal => refused(&d, e),
            Err(e) => Err(e.into()),
        },
        _ => {
            let report = report_of(&d, &d.definition);
            editor(
                &ui,
                Some(&d),
                &form,
                json!({"flash": format!("Saved revision {}.", d.revision), "report": report}),
                StatusCode::OK,
            )
        }
    }
}

#[derive(Deserialize)]
pub struct FromBlueprint {
    blueprint_id: String,
    #[serde(default)]
    version: Option<i64>,
}

/// `POST /ui/drafts/from-blueprint`: a new draft holding a blueprint version's source.
pub async fn draft_from_blueprint(
    State(s): State<AppState>,
    ui: Ui,
    Form(f): Form<FromBlueprint>,
) -> UiResult<Response> {
    let b = s
        .node
        .store()
        .get_blueprint(&f.blueprint_id, f.version)
        .await?
        .ok_or_else(|| UiError::not_found("No such blueprint or version."))?;
    let input = json!({"name": format!("{} (from v{})", b.blueprint_id, b.version),
        "draft_type": "blueprint", "definition": b.source});
    let d = s.node.save_draft(input, &ui.actor()).await?;
    Ok(ui.redirect(&format!("/ui/drafts/{}", d.draft_id)))
}
