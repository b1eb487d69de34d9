use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use xyn_core::{ErrorKind, XynError, codes};

use crate::AppState;
use crate::dto::{ErrorResponse, HealthDto, NoParams};
use crate::error::ApiError;
use crate::extract::ApiQuery;

/// Liveness, version, whether the store accepts writes (as the last commit found) and the
/// outbox lag; answers from memory (the outbox lag is refreshed in the background at most
/// every 5 s while probed). `status` is `degraded` while writes fail.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, description = "The node is up", body = HealthDto)))]
pub async fn health(State(s): State<AppState>, ApiQuery(_): ApiQuery<NoParams>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        health_json(&s),
    )
        .into_response()
}

/// The health answer ([`HealthDto`] on the wire), serialised without intermediate strings
/// (probes hit it all day).
pub fn health_json(s: &AppState) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Store {
        writable: bool,
        write_failures: u64,
    }
    #[derive(serde::Serialize)]
    struct View {
        status: &'static str,
        version: &'static str,
        uptime_seconds: u64,
        /// Serialised through `Display` straight into the output.
        now: xyn_core::Timestamp,
        store: Store,
        #[serde(skip_serializing_if = "Option::is_none")]
        outbox: Option<xyn_store::OutboxLag>,
    }
    let writes = s.feed.writes();
    let writable = !writes.failing();
    let mut out = Vec::with_capacity(224);
    let view = View {
        status: if writable { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.node.uptime().as_secs(),
        now: s.node.now(),
        store: Store {
            writable,
            write_failures: writes.failures(),
        },
        outbox: if s.config.outbox_dispatched {
            outbox_lag(s)
        } else {
            None
        },
    };
    if serde_json::to_writer(&mut out, &view).is_err() {
        out = br#"{"status":"ok"}"#.to_vec();
    }
    out
}

/// The outbox lag as last read; a read is started in the background when it is older than
/// 5 s (so probes never wait for the store, and an unprobed node reads nothing).
pub(crate) fn outbox_lag(s: &AppState) -> Option<xyn_store::OutboxLag> {
    let (at, lag) = {
        let c = s.outbox.lock().unwrap_or_else(|e| e.into_inner());
        (c.0, c.1.clone())
    };
    let stale = at.is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
    if stale && !s.outbox_refreshing.swap(true, Ordering::Relaxed) {
        let s = s.clone();
        tokio::spawn(async move {
            let lag = s.node.store().outbox_lag().await.ok();
            let mut c = s.outbox.lock().unwrap_or_else(|e| e.into_inner());
            *c = (Some(Instant::now()), lag);
            s.outbox_refreshing.store(false, Ordering::Relaxed);
        });
    }
    lag
}

/// The readiness probe: 200 while the store accepts writes, else 503 `node.not_ready` (take
/// the node out of rotation; it stays alive). While failing, a probe at most every 2 s tries
/// one small write (an `xyn.health.store_writable` event) so that readiness comes back when
/// the store does, even if no other write is attempted.
#[utoipa::path(get, path = "/api/v1/health/ready", tag = "health",
    responses((status = 200, description = "The node accepts writes", body = HealthDto),
        (status = 503, description = "Writes fail", body = ErrorResponse)))]
pub async fn ready(
    State(s): State<AppState>,
    ApiQuery(_): ApiQuery<NoParams>,
) -> Result<Response, ApiError> {
    if s.feed.writes().failing() {
        let due = {
            let mut last = s.write_probe.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let _ = s
                .node
                .record_audit(
                    "xyn.health.store_writable",
                    "system:health",
                    None,
                    None,
                    json!({"write_failures": s.feed.writes().failures()}),
                )
                .await;
        }
    }
    if s.feed.writes().failing() {
        return Err(XynError::new(
            ErrorKind::Unavailable,
            codes::NODE_NOT_READY,
            "the store does not accept writes",
        )
        .into());
    }
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        health_json(&s),
    )
        .into_response())
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document.
pub async fn openapi(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.as_str().to_string(),
    )
}
