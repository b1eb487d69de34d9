//! Health, the operator view, and login/logout.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use xyn_core::Resource;

use super::{Ui, UiResult, templates};
use crate::AppState;
use crate::auth::{CSRF_COOKIE, SESSION_COOKIE, cookie, random_token, set_cookie};
use crate::dto::{AuditReportDto, HealthDto};

/// `GET /ui/health`.
pub async fn health(State(s): State<AppState>, ui: Ui) -> UiResult<Html<String>> {
    let writes = s.feed.writes();
    let h = HealthDto {
        status: if writes.failing() { "degraded" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.node.uptime().as_secs(),
        now: s.node.now().to_string(),
        store: crate::dto::StoreHealthDto {
            writable: !writes.failing(),
            write_failures: writes.failures(),
        },
        outbox: None,
    };
    ui.page(
        "health.html",
        "health",
        json!({"h": h, "busy": s.node.busy(), "env_id": s.node.config().env_id,
            "store": s.store_description}),
    )
}

/// `GET /ui/operator` (operator-only; the auth layer refuses owners).
pub async fn operator(State(s): State<AppState>, ui: Ui) -> UiResult<Html<String>> {
    let hooks: Vec<&String> = s.config.hooks.keys().collect();
    ui.page(
        "operator.html",
        "operator",
        json!({
            "stats": s.node.store().stats(),
            "subscribers": s.feed.subscribers(),
            "auth_on": s.config.auth.enabled(),
            "store": s.node.store().describe(),
            "hooks": hooks,
            "actions": s.node.action_names(),
            "audit": null,
        }),
    )
}

/// `POST /ui/operator/audit`: verifies the log, shows the result.
pub async fn audit(State(s): State<AppState>, ui: Ui) -> UiResult<Response> {
    let report = AuditReportDto::from(s.node.store().verify_chain().await?);
    if ui.htmx {
        Ok(ui
            .partial("_audit.html", json!({"audit": report}))?
            .into_response())
    } else {
        Ok(ui.redirect("/ui/operator"))
    }
}

#[derive(Deserialize, Default)]
pub struct NextQ {
    next: Option<String>,
}

fn safe_next(n: Option<&str>) -> String {
    match n {
        Some(p) if p.starts_with("/ui") && !p.starts_with("//") && !p.contains("\\") => p.into(),
        _ => "/ui/events".into(),
    }
}

fn login_html(ui: &Ui, s: &AppState, next: &str, error: Option<&str>) -> UiResult<Html<String>> {
    templates()
        .render(
            "login.html",
            json!({"open": !s.config.auth.enabled(), "csrf": ui.csrf, "next": next, "error": error}),
        )
        .map(Html)
}

/// `GET /ui/login`.
pub async fn login_page(
    State(s): State<AppState>,
    ui: Ui,
    Query(n): Query<NextQ>,
) -> UiResult<Html<String>> {
    login_html(&ui, &s, &safe_next(n.next.as_deref()), None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /ui/login`: a session for a valid token; every attempt is audited.
pub async fn login(
    State(s): State<AppState>,
    ui: Ui,
    client: Option<axum::Extension<crate::ratelimit::ClientAddr>>,
    Form(f): Form<LoginForm>,
) -> UiResult<Response> {
    let next = safe_next(f.next.as_deref());
    if !s.config.auth.enabled() {
        return Ok(Redirect::to(&next).into_response());
    }
    let client = client.map(|c| c.0.0);
    if let Err(wait) = s.limiter.check(client) {
        return Ok(crate::auth::rate_limited(wait));
    }
    match s.config.auth.lookup(&f.token) {
        Some(p) => {
            let session = s.sessions.create(p.clone());
            s.node
                .record_audit(
                    "xyn.auth.session.started",
                    &p.name,
                    None,
                    Some(Resource {
                        kind: "principal".into(),
                        id: p.name.clone(),
                    }),
                    json!({"role": p.role.as_str(), "method": "token"}),
                )
                .await?;
            let mut r = Redirect::to(&next).into_response();
            let h = r.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &session, Some(12 * 3600)),
            );
            // A new CSRF token for the new session.
            h.append(
                header::SET_COOKIE,
                set_cookie(CSRF_COOKIE, &random_token(), None),
            );
            Ok(r)
        }
        None => {
            crate::ratelimit::note_failure(&s, client, "token").await;
            let html = login_html(
                &ui,
                &s,
                &next,
                Some("That token is not valid on this node."),
            )?;
            Ok((StatusCode::UNAUTHORIZED, html).into_response())
        }
    }
}

/// `POST /ui/logout`.
pub async fn logout(
    State(s): State<AppState>,
    ui: Ui,
    headers: axum::http::HeaderMap,
) -> UiResult<Response> {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        s.sessions.remove(id);
        s.node
            .record_audit(
                "xyn.auth.session.ended",
                &ui.who.name,
                None,
                None,
                json!({}),
            )
            .await?;
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0)));
    Ok(r)
}
