//! The fast path of the accept loop: a plain `GET /api/v1/health` (the liveness probe load
//! balancers and monitors hit all day) is answered without entering the router, by the same
//! code and with the same checks and headers as the full stack: header limits, auth (a valid
//! bearer token or session when auth is on), the correlation id (echoed or made), the
//! security headers. Anything unusual — a query string, a body, a missing or bad token, a
//! malformed correlation id, oversized headers — returns `None` and goes through the full
//! stack, which answers it (401, 400, 431, …) exactly as for any route. `api.rs` and the
//! schemathesis run exercise both paths against the same contract.

use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::Full;

use crate::AppState;
use crate::auth::{SESSION_COOKIE, cookie};
use crate::correlation;

/// The answer to a plain health probe, or `None` to take the full path.
pub fn answer<B>(s: &AppState, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if req.method() != Method::GET
        || req.uri().path() != "/api/v1/health"
        || req.uri().query().is_some()
    {
        return None;
    }
    let h = req.headers();
    if h.contains_key(header::CONTENT_LENGTH) || h.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    if h.len() > s.config.max_headers
        || h.iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            > s.config.max_header_bytes
    {
        return None;
    }
    if s.config.auth.enabled() {
        let by_token = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| s.config.auth.lookup(t).is_some());
        let by_session = !h.contains_key(header::AUTHORIZATION)
            && cookie(h, SESSION_COOKIE).is_some_and(|id| s.sessions.get(id).is_some());
        if !(by_token || by_session) {
            return None;
        }
    }
    let id = match h.get(&correlation::HEADER) {
        None => correlation::new_id_header(),
        Some(v) => {
            let ok = v.to_str().is_ok_and(|v| {
                !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic())
            });
            if !ok {
                return None;
            }
            v.clone()
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(crate::routes::health::health_json(
        s,
    ))));
    *r.status_mut() = StatusCode::OK;
    *r.headers_mut() = HeaderMap::with_capacity(8);
    let rh = r.headers_mut();
    rh.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rh.insert(correlation::HEADER.clone(), id);
    crate::hardening::security_headers_into(false, rh);
    Some(r)
}
