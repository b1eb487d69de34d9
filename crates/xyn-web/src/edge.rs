//! The edge middleware: one layer running, in order, correlation ids, header limits (431),
//! body limits (413), auth, roles and CSRF (401/403), the request timeout (408), and on the
//! way out the security headers, `Server-Timing` and a log line for refusals. One layer
//! rather than one per concern keeps the per-request cost of the edge small.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;
use crate::{auth, correlation, hardening};

pub async fn layer(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = req.uri().path();
    let ui = path == "/" || path.starts_with("/ui");
    let method = req.method().clone();
    let id = match correlation::begin(&mut req) {
        Ok(id) => id,
        Err(r) => {
            let mut r = *r;
            hardening::security_headers(ui, &mut r);
            return r;
        }
    };
    let resp = match run(&s, req, next).await {
        Ok(r) => r,
        Err(r) => *r,
    };
    let mut resp = correlation::finish(resp, &id).await;
    hardening::security_headers(ui, &mut resp);
    if ui {
        hardening::server_timing(started, &mut resp);
    }
    let status = resp.status().as_u16();
    if (400..500).contains(&status) {
        tracing::info!(%method, status, correlation_id = %id,
            ms = started.elapsed().as_secs_f64() * 1000.0, "request refused");
    } else if method != Method::GET {
        tracing::debug!(%method, status, correlation_id = %id,
            ms = started.elapsed().as_secs_f64() * 1000.0, "request");
    }
    resp
}

async fn run(s: &AppState, req: Request, next: Next) -> Result<Response, Box<Response>> {
    hardening::header_limit(s, &req)?;
    let req = hardening::body_limit(s, req)?;
    let (req, new_csrf) = auth::check(s, req).await?;
    let mut resp = match tokio::time::timeout(s.config.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => hardening::timed_out(s),
    };
    if let Some(c) = new_csrf {
        resp.headers_mut().append(
            header::SET_COOKIE,
            auth::set_cookie(auth::CSRF_COOKIE, &c, None),
        );
    }
    Ok(resp)
}
