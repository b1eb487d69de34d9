//! HTTPS on the node's listener: the TLS handshake (rustls, configured by `xyn-tls`), the
//! protocol ALPN chose, and the `Strict-Transport-Security` header, which only HTTPS
//! responses carry.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::Response;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A listener's TLS settings.
#[derive(Clone)]
pub struct TlsListener {
    pub config: Arc<tokio_rustls::rustls::ServerConfig>,
}

impl TlsListener {
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// Marks a request that came over HTTPS (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct Https;

/// The HSTS value: a year, no subdomains (the node cannot speak for its parent's other hosts).
pub const HSTS: &str = "max-age=31536000";

pub fn hsts(resp: &mut Response) {
    resp.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
}

/// Completes the handshake within `limit`. Returns the stream and whether HTTP/2 was chosen,
/// or `None` when the handshake failed, timed out, or was an ACME TLS-ALPN-01 validation
/// (which ends with the handshake).
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    limit: Duration,
) -> Option<(TlsStream<TcpStream>, bool)> {
    let tls = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return None;
        }
    };
    let alpn = tls.get_ref().1.alpn_protocol();
    if alpn == Some(xyn_tls::ALPN_ACME) {
        tracing::info!("answered an ACME TLS-ALPN-01 validation handshake");
        return None;
    }
    let h2 = alpn == Some(xyn_tls::ALPN_H2);
    Some((tls, h2))
}
