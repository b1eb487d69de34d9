//! The HTTP edge of Xyn: `/api/v1` with the DTOs of xyn-seed-plan §45, one error shape,
//! correlation ids, body limits, graceful shutdown.
//!
//! *Architecture Invariant:* handlers only translate between HTTP and the engine's service
//! layer ([`xyn_engine::Node`]); no business rule lives here.

pub mod correlation;
pub mod dto;
pub mod error;
pub mod extract;
pub mod routes;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;
use xyn_engine::Node;

/// Settings of the HTTP edge.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024 + 64 * 1024,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub node: Node,
    pub config: WebConfig,
}

/// The whole application router.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    routes::router()
        .with_state(state)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(correlation::layer))
}

/// Serves until `shutdown` resolves, then stops accepting and finishes in-flight requests
/// (at most `grace`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    tokio::select! {
        r = server => r,
        _ = async {
            let _ = rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}
