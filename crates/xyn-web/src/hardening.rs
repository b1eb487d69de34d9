//! HTTP hardening: header limits (431), body limits (413), request timeouts (408) and the
//! security headers of UI responses. Each failure uses the standard error body. The steps are
//! plain functions, run in order by [`crate::edge`].

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use http_body_util::Limited;
use xyn_core::codes;

use crate::AppState;
use crate::error::status_error;

/// 431 when the request headers are too many or too large in total.
pub fn header_limit<B>(s: &AppState, req: &axum::http::Request<B>) -> Result<(), Box<Response>> {
    let h = req.headers();
    let total: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if h.len() > s.config.max_headers || total > s.config.max_header_bytes {
        return Err(Box::new(status_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            codes::REQUEST_HEADERS_TOO_LARGE,
            format!(
                "the request headers are too large ({} headers, {total} bytes; the limits are {} headers and {} bytes)",
                h.len(),
                s.config.max_headers,
                s.config.max_header_bytes
            ),
        )));
    }
    Ok(())
}

/// The body limit of a route: uploads may be larger than other requests.
fn limit_for(s: &AppState, path: &str) -> usize {
    if path == "/api/v1/artifacts" {
        s.config.max_upload_bytes
    } else {
        s.config.max_body_bytes
    }
}

/// 413 before reading when `Content-Length` is over the route's limit; otherwise the body is
/// wrapped so that reading past the limit fails (and extractors answer 413).
pub fn body_limit(s: &AppState, req: Request) -> Result<Request, Box<Response>> {
    let limit = limit_for(s, req.uri().path());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Box::new(status_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::REQUEST_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )));
    }
    Ok(req.map(|b| axum::body::Body::new(Limited::new(b, limit))))
}

/// 408 when the handler has not produced a response in time. A streaming response (SSE)
/// only has to start in time.
pub fn timed_out(s: &AppState) -> Response {
    status_error(
        StatusCode::REQUEST_TIMEOUT,
        codes::REQUEST_TIMEOUT,
        format!(
            "the request took longer than {} ms",
            s.config.request_timeout.as_millis()
        ),
    )
}

/// The Content-Security-Policy of the UI: everything from this origin only.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Security headers: on every response `nosniff`; on UI pages also frame denial, the CSP, the
/// referrer policy and `no-store`. (API responses are JSON or downloads, never framed pages;
/// downloads carry their own sandboxing CSP.)
pub fn security_headers(ui: bool, resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if ui {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        if !h.contains_key(header::CACHE_CONTROL) {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
}

/// `Server-Timing: app;dur=<ms>` on UI responses: the time the server spent producing the page
/// (what the UI benchmark reports, and what a browser's devtools show).
pub fn server_timing(started: std::time::Instant, resp: &mut Response) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        resp.headers_mut().insert("server-timing", v);
    }
}
