//! The HTTP edge of Xyn: `/api/v1` (DTOs, OpenAPI 3.1 generated from the
//! handlers), `/api/internal` (operator-only), webhook intake (`/hooks/{source}`), Server-Sent
//! Events, and the server-rendered Xyn Core UI (`/ui`, HTMX partials).
//!
//! One edge layer ([`edge`]) runs, in order: correlation ids → header limits (431) → body
//! limits (413) → auth (401/403, CSRF on UI form posts) → request timeout (408) → routes, and
//! adds security headers on the way out.
//! `serve` runs hyper directly so that header-size, header-read-timeout and graceful shutdown
//! are configured in one place.
//!
//! *Architecture Invariant:* handlers only translate between HTTP and the engine's service
//! layer ([`xyn_engine::Node`]); no business rule lives here. The UI calls the same `Node`
//! methods as the API.

pub mod apps;
pub mod auth;
pub mod conn;
pub mod correlation;
pub mod dto;
pub mod edge;
pub mod error;
pub mod extract;
pub mod framing;
pub mod hardening;
pub mod hooks;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod redirect;
pub mod routes;
pub mod source_lines;
pub mod sse;
pub mod tls;
pub mod ui;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use xyn_engine::Node;
use xyn_store::notify::EventFeed;

pub use auth::{AuthConfig, Principal, Role};
pub use hooks::{HookConfig, HookScheme};

/// Settings of the HTTP edge.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Largest request body, in bytes (JSON requests).
    pub max_body_bytes: usize,
    /// Largest body of `POST /api/v1/artifacts` (base64 in JSON), in bytes.
    pub max_upload_bytes: usize,
    /// Largest total size of the request headers, in bytes (431 above it).
    pub max_header_bytes: usize,
    /// Most request headers (431 above it).
    pub max_headers: usize,
    /// Time to produce a response (408 after it). Streams (SSE) only need to start in time.
    pub request_timeout: Duration,
    /// Allowance for sending the request head, on top of `request_timeout`: a connection whose
    /// request has not been answered within both is closed (slow-client protection).
    pub header_read_timeout: Duration,
    /// A new connection that sends nothing for this long is closed.
    pub first_byte_timeout: Duration,
    /// A kept-alive connection with no traffic in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Most open connections; past it a new connection gets a 503 `server.busy` and is
    /// closed. `None`: three quarters of the open-file limit, leaving at least 128 files.
    pub max_connections: Option<usize>,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    pub auth: AuthConfig,
    /// Webhook sources: `POST /hooks/{source}`.
    pub hooks: BTreeMap<String, HookConfig>,
    /// An outbox dispatcher (NATS) runs: health reports its lag.
    pub outbox_dispatched: bool,
    /// The key list cursors are signed with (see [`dto::install_cursor_key`]); `None`: a
    /// random key for this process.
    pub cursor_key: Option<Vec<u8>>,
    /// The node's metrics (`GET /metrics`, HTTP request metrics); `None`: turned off.
    pub metrics: Option<xyn_metrics::Metrics>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024 + 64 * 1024,
            max_upload_bytes: 16 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            shutdown_grace: Duration::from_secs(10),
            auth: AuthConfig::default(),
            hooks: BTreeMap::new(),
            outbox_dispatched: false,
            cursor_key: None,
            metrics: None,
        }
    }
}

/// What every handler can reach: one `Arc`, so the per-request clones are one atomic add.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub node: Node,
    pub config: WebConfig,
    /// Committed events, pushed (for SSE and the live UI).
    pub feed: EventFeed,
    pub sessions: auth::Sessions,
    /// Webhook deliveries seen within their source's replay window.
    pub replays: hooks::Replays,
    /// Failed logins and bearer tokens.
    pub limiter: ratelimit::Limiter,
    /// The outbox lag as last read, and when.
    pub outbox: std::sync::Mutex<(Option<std::time::Instant>, Option<xyn_store::OutboxLag>)>,
    pub outbox_refreshing: std::sync::atomic::AtomicBool,
    /// When readiness last tried a write while the store was failing.
    pub write_probe: std::sync::Mutex<Option<std::time::Instant>>,
    /// Cancelled on shutdown: ends open event streams so shutdown does not wait for them.
    pub shutdown: CancellationToken,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
    /// `Store::describe()`, computed once.
    pub store_description: String,
    /// Pack installation on this node (`/api/v1/packs`); `None`: the routes answer 503.
    pub packs: Option<Arc<dyn routes::packs::PackService>>,
    /// The node's workcells (`/api/internal/workcells`); `None`: the node runs no containers.
    pub workcells: Option<Arc<dyn routes::internal::WorkcellService>>,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(node: Node, feed: EventFeed, config: WebConfig) -> Self {
        Self::with_packs(node, feed, config, None)
    }

    /// A state whose `/api/v1/packs` routes install through `packs` (the binary provides it:
    /// installing needs the data dir and the sandbox, which live above this crate).
    pub fn with_packs(
        node: Node,
        feed: EventFeed,
        config: WebConfig,
        packs: Option<Arc<dyn routes::packs::PackService>>,
    ) -> Self {
        Self::with_services(node, feed, config, packs, None)
    }

    /// A state with the services the binary provides: pack installation and workcells.
    pub fn with_services(
        node: Node,
        feed: EventFeed,
        config: WebConfig,
        packs: Option<Arc<dyn routes::packs::PackService>>,
        workcells: Option<Arc<dyn routes::internal::WorkcellService>>,
    ) -> Self {
        if let Some(k) = &config.cursor_key
            && !dto::install_cursor_key(k)
        {
            tracing::warn!("a cursor key was already installed in this process; keeping it");
        }
        Self(Arc::new(AppInner {
            config,
            feed,
            sessions: auth::Sessions::default(),
            replays: hooks::Replays::default(),
            limiter: ratelimit::Limiter::default(),
            outbox: Default::default(),
            outbox_refreshing: Default::default(),
            write_probe: Default::default(),
            shutdown: CancellationToken::new(),
            openapi: openapi::document_json(),
            store_description: node.store().describe(),
            packs,
            workcells,
            node,
        }))
    }
}

/// The whole application router.
pub fn app(state: AppState) -> Router {
    let limit = state
        .config
        .max_body_bytes
        .max(state.config.max_upload_bytes);
    routes::router()
        .merge(ui::router())
        .route("/metrics", axum::routing::get(metrics::render))
        .route_layer(axum::middleware::from_fn(metrics::label_route))
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state, edge::layer))
}

/// Serves until `shutdown` resolves, then stops accepting, ends event streams and lets
/// in-flight requests finish (at most `config.shutdown_grace`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, None, shutdown).await
}

/// [`serve`] over TLS when `tls` is given (see [`tls`]).
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    tls: Option<tls::TlsListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.shutdown_grace;
    let limits = conn::Limits {
        slow: state.config.request_timeout + state.config.header_read_timeout,
        first_byte: state.config.first_byte_timeout,
        idle: state.config.idle_timeout,
    };
    let max_connections = state
        .config
        .max_connections
        .unwrap_or_else(|| conn::default_max_connections(conn::open_files_limit()));
    tracing::info!(
        max_connections,
        first_byte_ms = limits.first_byte.as_millis() as u64,
        idle_ms = limits.idle.as_millis() as u64,
        "connection limits"
    );
    let gate = conn::Gate::new(max_connections);
    let mut backoff = conn::AcceptBackoff::default();
    let mut refused_at: Option<std::time::Instant> = None;
    let stop_streams = state.shutdown.clone();
    let router = app(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tls.as_ref().map(tls::TlsListener::acceptor);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(c) => {
                        backoff.succeeded();
                        c
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tokio::time::sleep(backoff.failed(&e)).await;
                        continue;
                    }
                };
                let Some(admitted) = gate.admit() else {
                    // At the limit: a clear refusal instead of a stalled connection. The
                    // answer fits the socket buffer, so it is written without waiting (over
                    // TLS the connection is simply closed: there is no session to answer in).
                    if acceptor.is_none() {
                        let _ = stream.try_write(&conn::refusal_bytes(503));
                    }
                    if refused_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(max_connections, "connection refused: at the connection limit (logged at most every 10 s)");
                        refused_at = Some(std::time::Instant::now());
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = Service { router: router.clone(), state: state.clone(), peer: peer.ip(), https: acceptor.is_some() };
                let watcher = graceful.watcher();
                match &acceptor {
                    None => {
                        connection(stream, false, svc, watcher, limits, admitted);
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            // The handshake happens off the accept loop, bounded like a
                            // first request byte; the connection's place is held meanwhile.
                            let Some((stream, h2)) = tls::handshake(&acceptor, stream, limits.first_byte).await else {
                                return;
                            };
                            connection(stream, h2, svc, watcher, limits, admitted);
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    stop_streams.cancel();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
    }
    Ok(())
}

/// What answers the requests of one connection.
#[derive(Clone)]
struct Service {
    router: Router,
    state: AppState,
    peer: std::net::IpAddr,
    https: bool,
}

impl Service {
    async fn call(
        self,
        req: hyper::Request<Incoming>,
    ) -> Result<axum::response::Response, std::convert::Infallible> {
        let https = self.https;
        let started = std::time::Instant::now();
        let mut resp = match edge::health_fast(&self.state, &req) {
            Some(resp) => {
                if let Some(m) = &self.state.config.metrics {
                    m.http_request(edge::HEALTH_ROUTE, "GET", 200, started.elapsed());
                }
                resp
            }
            None => {
                let mut req = req;
                req.extensions_mut()
                    .insert(ratelimit::ClientAddr(self.peer));
                if https {
                    req.extensions_mut().insert(tls::Https);
                }
                self.router.oneshot(req.map(Body::new)).await?
            }
        };
        if https {
            tls::hsts(&mut resp);
        }
        Ok(resp)
    }
}

/// Serves one connection (HTTP/1.1, or HTTP/2 when ALPN chose it) beside its watchdog; the
/// connection's place is freed when both are done.
fn connection<T>(
    stream: T,
    h2: bool,
    svc: Service,
    watcher: hyper_util::server::graceful::Watcher,
    limits: conn::Limits,
    admitted: conn::Admitted,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc =
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| svc.clone().call(req));
    let pending = conn::Pending::new();
    let conn_task = if h2 {
        let io = TokioIo::new(conn::Watched::new(stream, pending.clone()));
        let mut b = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        b.max_header_list_size(64 * 1024);
        let c = watcher.watch(b.serve_connection(io, svc));
        tokio::spawn(async move {
            if let Err(e) = c.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        })
    } else {
        // Framing checks hyper does not make (TE with CL, request-line length), and a
        // lingering close (see `framing`).
        // The watchdog sees the bytes as they arrive, before the framing checks hold a head
        // back until it is complete.
        let io = TokioIo::new(framing::Framed::new(conn::Watched::new(
            stream,
            pending.clone(),
        )));
        let mut b = hyper::server::conn::http1::Builder::new();
        b.max_buf_size(framing::MAX_HEAD + 8 * 1024)
            .keep_alive(true)
            .half_close(true);
        let c = watcher.watch(b.serve_connection(io, svc));
        tokio::spawn(async move {
            if let Err(e) = c.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        })
    };
    // The watchdog runs beside the connection (not polled with it on every wake-up) and ends
    // with it.
    let abort = conn_task.abort_handle();
    tokio::spawn(async move {
        let _admitted = admitted;
        tokio::select! {
            _ = conn_task => {}
            why = conn::watchdog(pending, limits) => {
                abort.abort();
                match why {
                    conn::Closed::Slow => tracing::info!("closed a connection whose request was not complete in time"),
                    conn::Closed::Silent | conn::Closed::Idle => tracing::debug!(reason = ?why, "closed an idle connection"),
                }
            }
        }
    });
}

/// Percent-encodes one URL path segment or query value: everything but ASCII letters, digits
/// and `-_.~` (RFC 3986's unreserved characters), so a name can never add a `/`, `?` or `#`.
pub fn path_segment(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}
