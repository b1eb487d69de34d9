//! The plain-HTTP listener beside an HTTPS one: every request gets a `308` to the same path
//! on `https://`, except ACME HTTP-01 challenges (`/.well-known/acme-challenge/TOKEN`), which
//! it answers while they are pending.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use xyn_tls::acme::Http01Tokens;

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Serves redirects to `https://HOST[:https_port]` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    https_port: u16,
    tokens: Arc<Http01Tokens>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let tokens = tokens.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let resp = answer(&req, https_port, &tokens);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                tokio::spawn(async move {
                    let mut b = hyper::server::conn::http1::Builder::new();
                    b.max_buf_size(16 * 1024).keep_alive(false);
                    let c = b.serve_connection(TokioIo::new(stream), svc);
                    // A redirect needs one short exchange; nothing holds the place longer.
                    let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
                });
            }
            () = &mut shutdown => break,
        }
    }
}

/// The answer to one request.
pub fn answer<B>(req: &Request<B>, https_port: u16, tokens: &Http01Tokens) -> Response<Body> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        return match tokens.get(token) {
            Some(ka) => plain(StatusCode::OK, ka),
            None => plain(StatusCode::NOT_FOUND, "no such challenge".into()),
        };
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .and_then(host_name);
    let Some(host) = host else {
        return plain(
            StatusCode::BAD_REQUEST,
            "a Host header naming the server is required".into(),
        );
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = if target.starts_with('/') { target } else { "/" };
    let location = if https_port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{https_port}{target}")
    };
    let Ok(location) = HeaderValue::from_str(&location) else {
        return plain(StatusCode::BAD_REQUEST, "bad request target".into());
    };
    let mut resp = plain(StatusCode::PERMANENT_REDIRECT, "moved to https\n".into());
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

/// The host part of a `Host` header when it is a plain DNS name, IPv4 address or bracketed
/// IPv6 address (anything else could smuggle a different authority into the redirect).
fn host_name(h: &str) -> Option<String> {
    let h = h.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        let end = rest.find(']')?;
        let ip: std::net::Ipv6Addr = rest[..end].parse().ok()?;
        return Some(format!("[{ip}]"));
    } else {
        match h.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            Some(_) => return None,
            None => h,
        }
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then(|| name.to_ascii_lowercase())
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(host: &str, target: &str) -> Response<Body> {
        let req = Request::builder()
            .uri(target)
            .header(header::HOST, host)
            .body(())
            .expect("req");
        answer(&req, 8443, &Http01Tokens::default())
    }

    #[test]
    fn redirects_keep_path_and_query_and_refuse_odd_hosts() {
        let r = get("Example.test:8080", "/a/b?c=d");
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://example.test:8443/a/b?c=d"
        );
        assert_eq!(
            get("[::1]:80", "/").headers()[header::LOCATION],
            "https://[::1]:8443/"
        );
        for bad in ["evil.test/x", "a@b", "x:y", "", "[zz]"] {
            assert_eq!(get(bad, "/").status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
