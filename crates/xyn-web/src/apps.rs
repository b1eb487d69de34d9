//! Apps behind the edge: a request to an app is framed by [`crate::framing`] (the same
//! checks as the node's API), its body read within a limit (413 as soon as a declared length
//! is over it), turned into an [`AppRequest`] and answered by the app's [`AppHost`].
//! [`serve_connection`] serves one connection over any `AsyncRead + AsyncWrite` (TCP or TLS).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use xyn_apps::{AppHost, AppRequest, AppResponse};

/// Most bytes of a request body an app receives.
pub const MAX_APP_BODY: usize = 8 << 20;

/// The app currently served (replaced on reload).
pub type AppSlot = Arc<RwLock<Arc<AppHost>>>;

/// The app request for `req`, its path taken relative to `prefix` (`/` for an app served
/// at the root). `Err` is the answer when the body is over the limit or unreadable.
pub async fn to_app_request(
    req: Request<Incoming>,
    prefix: &str,
    max_body: usize,
) -> Result<AppRequest, AppResponse> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(too_large(max_body));
    }
    let bytes = match Limited::new(body, max_body).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large(max_body)),
        Err(e) => {
            return Err(AppResponse::error(
                400,
                xyn_core::codes::REQUEST_MALFORMED,
                &format!("the request body could not be read: {e}"),
                serde_json::Value::Null,
            ));
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |p| p.as_str().to_string());
    let full_path = parts.uri.path();
    let path = match full_path.strip_prefix(prefix.trim_end_matches('/')) {
        Some("") => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        _ => full_path.to_string(),
    };
    let query: BTreeMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            let mut m = BTreeMap::new();
            for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default()
            {
                m.entry(k).or_insert(v);
            }
            m
        })
        .unwrap_or_default();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let sep = if name == http::header::COOKIE {
            "; "
        } else {
            ", "
        };
        headers
            .entry(name.as_str().to_string())
            .and_modify(|e| {
                e.push_str(sep);
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let mut cookies = BTreeMap::new();
    if let Some(c) = headers.get("cookie") {
        for pair in c.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                cookies
                    .entry(k.trim().to_string())
                    .or_insert_with(|| v.trim().to_string());
            }
        }
    }
    Ok(AppRequest {
        method: parts.method.as_str().to_string(),
        path,
        target,
        query,
        headers,
        cookies,
        body_len: bytes.len(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

fn too_large(max: usize) -> AppResponse {
    let mut r = AppResponse::error(
        413,
        xyn_core::codes::REQUEST_TOO_LARGE,
        &format!("the request body is over {max} bytes"),
        serde_json::Value::Null,
    );
    r.headers.push(("connection".into(), "close".into()));
    r
}

/// The HTTP response for an app's answer: its fields in order (repeated ones such as
/// `set-cookie` stay separate), and the default security headers where the app set none.
pub fn to_response(a: AppResponse, https: bool) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(a.body)));
    *resp.status_mut() =
        StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    for (k, v) in a.headers {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) else {
            continue;
        };
        // Framing is the edge's, never the app's.
        if k == http::header::CONTENT_LENGTH || k == http::header::TRANSFER_ENCODING {
            continue;
        }
        h.append(k, v);
    }
    let defaults: [(&str, &str); 3] = [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("content-security-policy", "frame-ancestors 'self'"),
    ];
    for (k, v) in defaults {
        if !h.contains_key(k) {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
    }
    if https && !h.contains_key("strict-transport-security") {
        h.insert(
            HeaderName::from_static("strict-transport-security"),
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}

/// Answers one request for the app in `slot`, mounted at `prefix`.
pub async fn answer(
    slot: &AppSlot,
    prefix: &str,
    req: Request<Incoming>,
    https: bool,
) -> Response<Full<Bytes>> {
    let host = match slot.read() {
        Ok(h) => h.clone(),
        Err(e) => e.into_inner().clone(),
    };
    let a = match to_app_request(req, prefix, MAX_APP_BODY).await {
        Ok(r) => host.handle(r).await,
        Err(resp) => resp,
    };
    to_response(a, https)
}

/// Serves one connection (TCP, TLS, anything) to the app in `slot`, at the root.
pub async fn serve_connection<IO>(io: IO, slot: AppSlot, https: bool) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let slot = slot.clone();
        async move { Ok::<_, Infallible>(answer(&slot, "/", req, https).await) }
    });
    // hyper's own refusals get the standard error body (`Watched`), as on the node's API.
    let pending = crate::conn::Pending::new();
    // The watchdog sees bytes as they arrive (before `Framed` holds a head back).
    let io = TokioIo::new(crate::framing::Framed::new(crate::conn::Watched::new(
        io, pending,
    )));
    let mut b = hyper::server::conn::http1::Builder::new();
    // half_close: the end of the stream `Framed` gives hyper after a refused request must
    // not cut the answers to the requests before it.
    b.max_buf_size(crate::framing::MAX_HEAD + 8 * 1024)
        .keep_alive(true)
        .half_close(true);
    b.serve_connection(io, svc).await
}

/// Serves the app in `slot` at the root on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    slot: AppSlot,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let slot = slot.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, slot, false).await {
                        tracing::debug!(error = %e, "app connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => return Ok(()),
        }
    }
}
