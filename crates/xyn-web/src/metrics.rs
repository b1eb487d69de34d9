//! `GET /metrics` (Prometheus text, or OpenMetrics when the scraper asks for it) and the
//! per-request HTTP metrics, labelled by route template (axum's `MatchedPath`), never by path.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use xyn_core::XynError;

use crate::AppState;
use crate::error::ApiError;

/// The route template a request was routed to, carried on the response to the edge layer.
#[derive(Clone)]
pub struct RouteLabel(pub MatchedPath);

/// The label of requests no route answered (404s, refusals before routing).
pub const UNMATCHED: &str = "unmatched";

/// A `route_layer`: runs after routing, so the matched template is known.
pub async fn label_route(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut resp = next.run(req).await;
    if let Some(m) = matched {
        resp.extensions_mut().insert(RouteLabel(m));
    }
    resp
}

/// Records one answered request (called by the edge layer on the way out).
pub fn record(s: &AppState, method: &axum::http::Method, resp: &Response, started: Instant) {
    if let Some(m) = &s.config.metrics {
        let route = resp
            .extensions()
            .get::<RouteLabel>()
            .map_or(UNMATCHED, |r| r.0.as_str());
        m.http_request(
            route,
            method.as_str(),
            resp.status().as_u16(),
            started.elapsed(),
        );
    }
}

/// Whether the scraper prefers OpenMetrics (Prometheus sends
/// `Accept: application/openmetrics-text;version=1.0.0,…`).
pub fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// `GET /metrics`: the node's metrics. Operator role when tokens are configured.
pub async fn render(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let Some(m) = &s.config.metrics else {
        return ApiError::from(XynError::not_found(
            "metrics.disabled",
            "metrics are turned off on this node ([telemetry] metrics = false)",
        ))
        .into_response();
    };
    let g = m.gauges();
    use std::sync::atomic::Ordering::Relaxed;
    g.queue_depth.store(s.node.busy() as i64, Relaxed);
    g.leases_held.store(s.node.leases_held() as i64, Relaxed);
    g.uptime_seconds
        .store(s.node.uptime().as_secs() as i64, Relaxed);
    let lag = if s.config.outbox_dispatched {
        crate::routes::health::outbox_lag(&s)
    } else {
        None
    };
    match lag {
        Some(l) => {
            g.outbox_lag_events.store(l.pending_events, Relaxed);
            let age = l
                .oldest_pending_at
                .map_or(0, |t| (s.node.now().ms_since(t) / 1000) as i64);
            g.outbox_lag_seconds.store(age, Relaxed);
        }
        None => {
            g.outbox_lag_events.store(-1, Relaxed);
            g.outbox_lag_seconds.store(-1, Relaxed);
        }
    }
    let om = wants_openmetrics(&headers);
    let body = m.render(om);
    let ct = if om {
        xyn_metrics::OPENMETRICS_CONTENT_TYPE
    } else {
        xyn_metrics::TEXT_CONTENT_TYPE
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}
