//! The edge middleware: one layer running, in order, correlation ids, header limits (431),
//! body limits (413), auth, roles and CSRF (401/403), the request timeout (408), and on the
//! way out the security headers, `Server-Timing` and a log line for refusals. One layer
//! rather than one per concern keeps the per-request cost of the edge small.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;

use xyn_core::codes;

use crate::AppState;
use crate::error::{ErrorMarker, status_error};
use crate::{auth, correlation, hardening};

pub async fn layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    process(&s, req, |req| next.run(req)).await
}

/// The route label of health probes answered by [`health_fast`].
pub const HEALTH_ROUTE: &str = "/api/v1/health";

/// The answer to a plain `GET /api/v1/health` (no query, no body, a well-formed or absent
/// correlation id, and on a node with tokens a valid bearer token), or `None` when the request
/// needs anything else: then the full edge and the router answer it, refusals included.
/// Load balancers call it all day, so it does what the edge does for such a request (header
/// limit, auth, correlation id, security headers) without the router, the request's body and
/// extensions, or any allocation beyond the answer.
pub fn health_fast<B>(s: &AppState, req: &axum::http::Request<B>) -> Option<Response> {
    if req.method() != Method::GET
        || req.uri().path() != "/api/v1/health"
        || req.uri().query().is_some()
    {
        return None;
    }
    let h = req.headers();
    if h.contains_key(header::CONTENT_LENGTH)
        || h.contains_key(header::TRANSFER_ENCODING)
        || h.contains_key(xyn_actions::net::MARKER_HEADER)
        || hardening::header_limit(s, req).is_err()
        || !auth::allows_probe(s, h)
    {
        return None;
    }
    let id = match h.get(&correlation::HEADER) {
        None => correlation::new_header_value(),
        Some(v) if correlation::valid(v.as_bytes()) => v.clone(),
        Some(_) => return None,
    };
    let mut resp = Response::new(axum::body::Body::from(crate::routes::health::health_json(
        s,
    )));
    let out = resp.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    out.insert(correlation::HEADER.clone(), id);
    hardening::security_headers(false, &mut resp);
    Some(resp)
}

/// The edge around a handler: the checks on the way in, the headers and logs on the way out.
async fn process<F, Fut>(s: &AppState, mut req: Request, handler: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
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
    let resp = match run(s, req, handler).await {
        Ok(r) => r,
        Err(r) => *r,
    };
    let resp = if ui { resp } else { standard_shape(resp).await };
    let mut resp = correlation::finish(resp, &id).await;
    hardening::security_headers(ui, &mut resp);
    if ui {
        hardening::server_timing(started, &mut resp);
    }
    crate::metrics::record(s, &method, &resp, started);
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

/// An API refusal made by an extractor of axum (a path that is not valid percent-encoded
/// UTF-8, a body past its limit, a form that does not parse) comes as plain text: it gets the
/// standard error body with the code of its status. Only refusals pay for the look.
async fn standard_shape(resp: Response) -> Response {
    let status = resp.status();
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/plain"));
    if !status.is_client_error() || !plain || resp.extensions().get::<ErrorMarker>().is_some() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let code = match status.as_u16() {
        404 => codes::ROUTE_NOT_FOUND,
        405 => codes::METHOD_NOT_ALLOWED,
        413 => codes::REQUEST_TOO_LARGE,
        _ => codes::REQUEST_INVALID,
    };
    let mut out = status_error(status, code, message);
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// A request the node itself makes on behalf of a guest or of event data (it carries the
/// egress marker, whatever its value) is never served by the API or the UI: it would act
/// as the local operator. Defence in depth behind the egress policy, which refuses the
/// node's own listeners in the first place.
fn not_made_for_others(req: &Request) -> Result<(), Box<Response>> {
    if req.headers().contains_key(xyn_actions::net::MARKER_HEADER) {
        tracing::warn!(path = %req.uri().path(), "refused a request the node made on behalf of a guest or event data");
        return Err(Box::new(crate::error::status_error(
            axum::http::StatusCode::FORBIDDEN,
            "request.from_guest",
            "requests made by the node on behalf of guests or event data cannot use the API or the UI",
        )));
    }
    Ok(())
}

async fn run<F, Fut>(s: &AppState, req: Request, handler: F) -> Result<Response, Box<Response>>
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    not_made_for_others(&req)?;
    hardening::header_limit(s, &req)?;
    let req = hardening::body_limit(s, req)?;
    let (req, new_csrf) = auth::check(s, req).await?;
    // The health answer comes from memory and cannot outlast any deadline; sparing it the
    // timer registration keeps load-balancer probes cheap. Everything else gets its 408.
    let from_memory = req.method() == Method::GET && req.uri().path() == "/api/v1/health";
    let mut resp = if from_memory {
        handler(req).await
    } else {
        match tokio::time::timeout(s.config.request_timeout, handler(req)).await {
            Ok(r) => r,
            Err(_) => hardening::timed_out(s),
        }
    };
    if let Some(c) = new_csrf {
        resp.headers_mut().append(
            header::SET_COOKIE,
            auth::set_cookie(auth::CSRF_COOKIE, &c, None),
        );
    }
    Ok(resp)
}
