//! A fixture HTTP/1.1 server on 127.0.0.1:0 for the provider clients.
//!
//! It records every request (method, target, headers, body) and answers from a queue of
//! recorded responses (status, headers, body). A response can be delayed, written in several
//! TCP writes that split the head and the JSON mid-token, sent with chunked transfer coding,
//! or stall after its head, so the clients' buffering and timeouts meet what real servers do.
//! When the queue is empty the server answers 599 with a body saying so, which no test expects.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One recorded response to serve.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long (after reading the request) before writing anything.
    pub delay: Duration,
    /// Write the response in this many TCP writes, a few milliseconds apart.
    pub pieces: usize,
    /// `Transfer-Encoding: chunked` instead of `Content-Length`.
    pub chunked: bool,
    /// Write the head, then wait this long before the body.
    pub stall_after_head: Option<Duration>,
    /// Write the head and this many body bytes, then close the connection.
    pub cut_after: Option<usize>,
}

impl Reply {
    /// A JSON response (`Content-Type: application/json`) with `body` verbatim.
    pub fn json(status: u16, body: &str) -> Self {
        Self::raw(status, "application/json", body)
    }

    /// A response with any content type (an HTML error page, …).
    pub fn raw(status: u16, content_type: &str, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
            pieces: 1,
            chunked: false,
            stall_after_head: None,
            cut_after: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn in_pieces(mut self, n: usize) -> Self {
        self.pieces = n.max(1);
        self
    }

    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    pub fn stall_after_head(mut self, d: Duration) -> Self {
        self.stall_after_head = Some(d);
        self
    }

    pub fn cut_after(mut self, body_bytes: usize) -> Self {
        self.cut_after = Some(body_bytes);
        self
    }

    fn head(&self) -> Vec<u8> {
        let mut h = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.chunked {
            h.push_str("transfer-encoding: chunked\r\n");
        } else {
            h.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    fn encoded_body(&self) -> Vec<u8> {
        if !self.chunked {
            return self.body.clone();
        }
        let mut out = Vec::new();
        let size = self.body.len().div_ceil(3).max(1);
        for c in self.body.chunks(size) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The request target (`/v1/chat/completions`).
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// The value of the only header `name`; panics if it is repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "header {name} sent {} times", all.len());
        all.first().copied()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

#[derive(Default)]
struct State {
    replies: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
}

/// A running fixture server; it stops with the test's runtime.
pub struct Fixture {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Fixture {
    /// Starts a server answering `replies` in order.
    pub async fn start(replies: impl IntoIterator<Item = Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        state.replies.lock().unwrap().extend(replies);
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        Self { addr, state }
    }

    /// `http://127.0.0.1:PORT` followed by `path` (`""`, `"/v1"`, `"/v1/"`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The only request received; panics unless there was exactly one.
    pub fn one(&self) -> Received {
        let r = self.received();
        assert_eq!(r.len(), 1, "expected one request, got {r:#?}");
        r.into_iter().next().unwrap()
    }

    /// Replies not served yet.
    pub fn unserved(&self) -> usize {
        self.state.replies.lock().unwrap().len()
    }
}

/// Serves one connection: requests are read (keep-alive) until the client closes it.
async fn serve(mut sock: TcpStream, state: Arc<State>) {
    let _ = sock.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut sock, &mut buf).await else {
            return;
        };
        state.received.lock().unwrap().push(req);
        let reply = state.replies.lock().unwrap().pop_front();
        let reply = reply.unwrap_or_else(|| {
            Reply::raw(
                599,
                "text/plain",
                "fixture: no reply queued for this request",
            )
        });
        if write_reply(&mut sock, &reply).await.is_err() || reply.cut_after.is_some() {
            return;
        }
    }
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Received> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "the fixture expects request bodies with a Content-Length"
    );
    while buf.len() < len {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..len).collect();
    Some(Received {
        method,
        path,
        headers,
        body,
    })
}

async fn write_reply(sock: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let head = reply.head();
    let mut body = reply.encoded_body();
    if let Some(n) = reply.cut_after {
        body.truncate(n);
    }
    if let Some(stall) = reply.stall_after_head {
        sock.write_all(&head).await?;
        sock.flush().await?;
        tokio::time::sleep(stall).await;
        sock.write_all(&body).await?;
        return sock.flush().await;
    }
    let all: Vec<u8> = [head, body].concat();
    let size = all.len().div_ceil(reply.pieces).max(1);
    for (i, piece) in all.chunks(size).enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        sock.write_all(piece).await?;
        sock.flush().await?;
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A base URL where nothing listens (a port bound, then released).
pub async fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

/// The HTTP client the tests use: rustls with `ring` (as the binary installs it), no proxy
/// from the environment, so nothing leaves 127.0.0.1.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// Millisecond delays instead of the SDKs' 0.5 s · 2ⁿ; server hints up to 60 s still apply.
pub fn fast_backoff() -> xyn_agents::Backoff {
    xyn_agents::Backoff {
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..xyn_agents::Backoff::default()
    }
}
