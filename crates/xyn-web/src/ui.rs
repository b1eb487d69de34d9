//! The Xyn Core UI: server-rendered pages (minijinja templates
//! embedded in the binary) with HTMX partials and SSE for live views. No build step: htmx, its
//! SSE extension and the draft editor (CodeMirror 5) come from their npm packages at build time
//! (`build.rs`).
//!
//! Every page goes through the same service layer as the API ([`xyn_engine::Node`]); every
//! interactive element has a stable `data-testid`. Operators see the operator view;
//! owners do not.

mod approvals;
mod artifacts;
mod blueprints;
mod diagram;
mod diff;
mod events;
mod footprints;
mod health;
pub(crate) mod render;
mod rerun;
mod run_stats;
mod runs;
mod search;
mod secrets;
mod versions;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, Value as JValue};
use serde::Serialize;
use serde_json::{Value, json};
use xyn_core::XynError;

use crate::AppState;
use crate::auth::{CsrfToken, Principal};
use crate::error::{ApiError, status_of};

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("events.html", include_str!("../templates/events.html")),
    (
        "_event_row.html",
        include_str!("../templates/_event_row.html"),
    ),
    (
        "_event_rows.html",
        include_str!("../templates/_event_rows.html"),
    ),
    ("event.html", include_str!("../templates/event.html")),
    ("runs.html", include_str!("../templates/runs.html")),
    (
        "_run_rows.html",
        include_str!("../templates/_run_rows.html"),
    ),
    ("run.html", include_str!("../templates/run.html")),
    (
        "approvals.html",
        include_str!("../templates/approvals.html"),
    ),
    ("rerun.html", include_str!("../templates/rerun.html")),
    (
        "_approval_cards.html",
        include_str!("../templates/_approval_cards.html"),
    ),
    (
        "_run_status.html",
        include_str!("../templates/_run_status.html"),
    ),
    ("step.html", include_str!("../templates/step.html")),
    ("launch.html", include_str!("../templates/launch.html")),
    (
        "_launch_form.html",
        include_str!("../templates/_launch_form.html"),
    ),
    (
        "_launch_check.html",
        include_str!("../templates/_launch_check.html"),
    ),
    (
        "artifacts.html",
        include_str!("../templates/artifacts.html"),
    ),
    (
        "_artifact_rows.html",
        include_str!("../templates/_artifact_rows.html"),
    ),
    ("artifact.html", include_str!("../templates/artifact.html")),
    (
        "blueprints.html",
        include_str!("../templates/blueprints.html"),
    ),
    (
        "blueprint.html",
        include_str!("../templates/blueprint.html"),
    ),
    (
        "_plan_diagram.html",
        include_str!("../templates/_plan_diagram.html"),
    ),
    (
        "_version_compare.html",
        include_str!("../templates/_version_compare.html"),
    ),
    (
        "_run_stats.html",
        include_str!("../templates/_run_stats.html"),
    ),
    (
        "_blueprint_diff.html",
        include_str!("../templates/_blueprint_diff.html"),
    ),
    (
        "blueprint_diff.html",
        include_str!("../templates/blueprint_diff.html"),
    ),
    ("drafts.html", include_str!("../templates/drafts.html")),
    ("draft.html", include_str!("../templates/draft.html")),
    (
        "_draft_editor.html",
        include_str!("../templates/_draft_editor.html"),
    ),
    (
        "footprints.html",
        include_str!("../templates/footprints.html"),
    ),
    ("health.html", include_str!("../templates/health.html")),
    ("secrets.html", include_str!("../templates/secrets.html")),
    ("search.html", include_str!("../templates/search.html")),
    ("operator.html", include_str!("../templates/operator.html")),
    ("_audit.html", include_str!("../templates/_audit.html")),
];

const STATIC: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../static/app.css"),
    ),
    (
        "codemirror.css",
        "text/css; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/codemirror.css")),
    ),
    (
        "codemirror.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/codemirror.js")),
    ),
    (
        "codemirror-yaml.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/codemirror-yaml.js")),
    ),
    (
        "draft-editor.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/draft-editor.js"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/htmx.min.js")),
    ),
    (
        "live-count.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/live-count.js"),
    ),
    (
        "live-count-worker.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/live-count-worker.js"),
    ),
    (
        "sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(env!("OUT_DIR"), "/sse.min.js")),
    ),
];

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            if let Err(e) = env.add_template(name, src) {
                tracing::error!(template = name, error = %e, "a UI template does not compile");
            }
        }
        env.add_filter("when", filter_when);
        env.add_filter("short", |s: String| xyn_core::short_id(&s).to_string());
        env.add_filter("pretty", |v: JValue| {
            serde_json::to_value(&v)
                .ok()
                .and_then(|j| serde_json::to_string_pretty(&j).ok())
                .unwrap_or_default()
        });
        env.add_filter("json_html", |v: JValue| {
            let j = serde_json::to_value(&v).unwrap_or(Value::Null);
            JValue::from_safe_string(render::json_html(&j))
        });
        env.add_filter("markdown", |s: String| {
            JValue::from_safe_string(render::markdown(&s))
        });
        env.add_filter("error_details", |v: JValue| {
            let j = serde_json::to_value(&v).unwrap_or(Value::Null);
            JValue::from_serialize(render::error_details(&j))
        });
        env.add_filter("dur", filter_dur);
        env.add_filter("bytes", filter_bytes);
        env.add_filter("truncate", |s: String, n: Option<usize>| {
            let n = n.unwrap_or(80);
            if s.chars().count() <= n {
                s
            } else {
                let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
                t.push('…');
                t
            }
        });
        env.add_filter("kind", |name: String| {
            if name.ends_with(".failed") || name.ends_with(".rejected") || name.ends_with("_failed")
            {
                "fail"
            } else {
                "ok"
            }
        });
        Templates { env }
    }

    /// Renders a template.
    pub fn render<S: Serialize>(&self, name: &str, ctx: S) -> Result<String, UiError> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| {
                tracing::error!(template = name, error = %e, "UI template failed to render");
                UiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "This page could not be shown; the node's log has the details.",
                )
            })
    }
}

fn filter_when(s: String) -> String {
    xyn_core::Timestamp::parse(&s)
        .map(|t| t.to_datetime().format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or(s)
}

fn filter_dur(v: JValue) -> String {
    let Some(ms) = i64::try_from(v.clone())
        .ok()
        .or_else(|| f64::try_from(v).ok().map(|f| f as i64))
    else {
        return "—".into();
    };
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

fn filter_bytes(v: JValue) -> String {
    let n = i64::try_from(v).unwrap_or(0).max(0) as f64;
    if n < 1024.0 {
        format!("{n} B")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    }
}

/// The templates, shared by every request (and by error pages, which have no state).
pub fn templates() -> &'static Templates {
    static T: OnceLock<Templates> = OnceLock::new();
    T.get_or_init(Templates::new)
}

/// A UI failure, shown as a page.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    title: String,
    message: String,
    code: Option<&'static str>,
}

impl UiError {
    pub fn new(status: StatusCode, title: &str, message: &str) -> Self {
        Self {
            status,
            title: title.into(),
            message: message.into(),
            code: None,
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", what)
    }
}

impl From<XynError> for UiError {
    fn from(e: XynError) -> Self {
        let status = status_of(e.kind);
        let message = if status.is_server_error() {
            tracing::error!(code = e.code, error = %e.message, "UI request failed");
            "This page could not be shown; the node's log has the details.".to_string()
        } else {
            e.message
        };
        Self {
            status,
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            message,
            code: Some(e.code),
        }
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        e.error.into()
    }
}

impl From<xyn_store::StoreError> for UiError {
    fn from(e: xyn_store::StoreError) -> Self {
        XynError::from(e).into()
    }
}

impl UiError {
    /// The error as a page, with the navigation `who` may use.
    pub fn page(self, who: Option<&Principal>) -> Response {
        let who_json = match who {
            Some(p) => json!({"name": p.name, "role": p.role.as_str(), "open": p.open}),
            None => json!({"role": "", "open": true, "name": ""}),
        };
        let ctx = json!({
            "title": self.title, "message": self.message, "code": self.code,
            "nav": nav(who.is_some_and(Principal::is_operator)), "active": "", "who": who_json,
            "csrf": "", "version": env!("CARGO_PKG_VERSION"),
        });
        let html = templates()
            .render("error.html", ctx)
            .unwrap_or_else(|_| "<h1>Error</h1>".into());
        (self.status, Html(html)).into_response()
    }

    /// A page for a request the node refused before any page ran (a role it lacks).
    pub fn refused(status: StatusCode, code: &'static str, message: &str) -> Self {
        Self {
            status,
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            message: message.to_string(),
            code: Some(code),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        self.page(None)
    }
}

pub type UiResult<T> = Result<T, UiError>;

/// What every page knows about the request: who is looking, their CSRF token, and whether
/// htmx asked (for a partial).
pub struct Ui {
    pub who: Principal,
    pub csrf: String,
    pub htmx: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Ui {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Ui {
            who: parts
                .extensions
                .get::<Principal>()
                .cloned()
                .unwrap_or_else(Principal::local),
            csrf: parts
                .extensions
                .get::<CsrfToken>()
                .map(|c| c.0.clone())
                .unwrap_or_default(),
            htmx: parts.headers.contains_key("hx-request"),
        })
    }
}

impl Ui {
    /// The actor recorded for what this person does.
    pub fn actor(&self) -> String {
        if self.who.open {
            "ui:local".into()
        } else {
            self.who.name.clone()
        }
    }

    /// Renders a full page: `data` plus the layout's context.
    pub fn page(&self, tpl: &str, active: &str, data: Value) -> UiResult<Html<String>> {
        let mut ctx = match data {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        ctx.insert("nav".into(), nav(self.who.is_operator()));
        ctx.insert("active".into(), json!(active));
        ctx.insert(
            "who".into(),
            json!({"name": self.who.name, "role": self.who.role.as_str(), "open": self.who.open}),
        );
        ctx.insert("csrf".into(), json!(self.csrf));
        ctx.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        templates().render(tpl, Value::Object(ctx)).map(Html)
    }

    /// Renders a partial (no layout), with the CSRF token for its forms.
    pub fn partial(&self, tpl: &str, data: Value) -> UiResult<Html<String>> {
        let mut ctx = match data {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        ctx.insert("csrf".into(), json!(self.csrf));
        templates().render(tpl, Value::Object(ctx)).map(Html)
    }

    /// After a form post: htmx follows `HX-Redirect`, a plain browser a 303.
    pub fn redirect(&self, to: &str) -> Response {
        if self.htmx {
            let mut r = StatusCode::OK.into_response();
            if let Ok(v) = HeaderValue::from_str(to) {
                r.headers_mut().insert("hx-redirect", v);
            }
            r
        } else {
            Redirect::to(to).into_response()
        }
    }
}

fn nav(operator: bool) -> Value {
    let mut items = vec![
        json!({"id": "events", "href": "/ui/events", "label": "Events"}),
        json!({"id": "runs", "href": "/ui/runs", "label": "Runs"}),
        // The live count of gates waiting for a decision is pushed into this item.
        json!({"id": "approvals", "href": "/ui/approvals", "label": "Needs approval", "live": "/ui/approvals/feed"}),
        json!({"id": "launch", "href": "/ui/runs/new", "label": "Launch"}),
        json!({"id": "blueprints", "href": "/ui/blueprints", "label": "Blueprints"}),
        json!({"id": "drafts", "href": "/ui/drafts", "label": "Drafts"}),
        json!({"id": "artifacts", "href": "/ui/artifacts", "label": "Artifacts"}),
        json!({"id": "footprints", "href": "/ui/footprints", "label": "Footprints"}),
        json!({"id": "secrets", "href": "/ui/secrets", "label": "Secrets"}),
        json!({"id": "health", "href": "/ui/health", "label": "Health"}),
    ];
    if operator {
        items.push(json!({"id": "operator", "href": "/ui/operator", "label": "Operator"}));
    }
    Value::Array(items)
}

/// A query value: `None` when absent or blank.
pub(crate) fn q(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Builds `path?k=v&…` from the non-empty pairs.
pub(crate) fn url_with(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (*k, v)))
        .collect();
    if kept.is_empty() {
        return path.to_string();
    }
    format!(
        "{path}?{}",
        serde_urlencoded::to_string(kept).unwrap_or_default()
    )
}

async fn static_file(Path(name): Path<String>) -> Response {
    match STATIC.iter().find(|(n, _, _)| *n == name) {
        Some((_, ctype, bytes)) => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            (h, *bytes).into_response()
        }
        None => UiError::not_found("No such file.").into_response(),
    }
}

async fn root() -> Redirect {
    Redirect::to("/ui/events")
}

async fn ui_not_found(ui: Ui) -> Response {
    UiError::not_found("There is no page at this address.").page(Some(&ui.who))
}

/// Whether a request came from a browser navigating (it asks for HTML first).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("text/html"))
}

/// The UI routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/ui", get(root))
        .route("/ui/", get(root))
        .route("/ui/static/{name}", get(static_file))
        .route("/ui/login", get(health::login_page).post(health::login))
        .route("/ui/logout", post(health::logout))
        .route("/ui/events", get(events::page))
        .route("/ui/events/_list", get(events::list_partial))
        .route("/ui/events/stream", get(events::list_partial))
        .route("/ui/events/feed", get(events::feed))
        .route("/ui/events/{event_id}", get(events::detail))
        .route("/ui/runs", get(runs::page).post(runs::launch))
        .route("/ui/runs/_list", get(runs::list_partial))
        .route("/ui/runs/feed", get(runs::list_feed))
        .route("/ui/runs/new", get(runs::launcher))
        .route("/ui/runs/new/check", post(runs::check))
        .route("/ui/runs/{run_id}", get(runs::detail))
        .route("/ui/runs/{run_id}/_status", get(runs::status_partial))
        .route("/ui/runs/{run_id}/feed", get(runs::feed))
        .route("/ui/runs/{run_id}/artifacts", get(runs::artifacts_partial))
        .route("/ui/runs/{run_id}/cancel", post(runs::cancel))
        .route("/ui/runs/{run_id}/retry", post(rerun::retry))
        .route(
            "/ui/runs/{run_id}/rerun",
            get(rerun::rerun_form).post(rerun::rerun),
        )
        .route("/ui/runs/{run_id}/steps/{step_id}", get(runs::step_detail))
        .route(
            "/ui/runs/{run_id}/steps/{step_id}/decide",
            post(runs::decide),
        )
        .route("/ui/approvals", get(approvals::page))
        .route("/ui/approvals/_list", get(approvals::list_partial))
        .route("/ui/approvals/feed", get(approvals::feed))
        .route(
            "/ui/approvals/{run_id}/{step_id}/decide",
            post(approvals::decide),
        )
        .route("/ui/artifacts", get(artifacts::page))
        .route("/ui/artifacts/_list", get(artifacts::list_partial))
        .route("/ui/artifacts/{artifact_id}", get(artifacts::detail))
        .route("/ui/blueprints", get(blueprints::page))
        .route("/ui/blueprints/{blueprint_id}", get(blueprints::detail))
        .route("/ui/blueprints/{blueprint_id}/diff", get(versions::diff))
        .route(
            "/ui/blueprints/{blueprint_id}/trigger",
            post(blueprints::switch_trigger),
        )
        .route(
            "/ui/drafts",
            get(blueprints::drafts).post(blueprints::create_draft),
        )
        .route("/ui/drafts/new", get(blueprints::new_draft))
        .route(
            "/ui/drafts/from-blueprint",
            post(blueprints::draft_from_blueprint),
        )
        .route(
            "/ui/drafts/{draft_id}",
            get(blueprints::draft).post(blueprints::draft_op),
        )
        .route("/ui/search", get(search::page))
        .route("/ui/secrets", get(secrets::page).post(secrets::change))
        .route("/ui/footprints", get(footprints::page))
        .route("/ui/health", get(health::health))
        .route("/ui/operator", get(health::operator))
        .route("/ui/operator/audit", post(health::audit))
        .route("/ui/{*rest}", get(ui_not_found))
}
