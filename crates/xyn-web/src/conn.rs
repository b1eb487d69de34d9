//! Per-connection protection, without a timer per request.
//!
//! hyper's own `header_read_timeout` re-arms a timer for every request, which on this edge
//! cost more than a third of a health probe's CPU. Instead, each connection's socket is wrapped
//! in [`Watched`], which flags an unanswered request when bytes arrive, counts answers when a
//! response is written and notes any traffic; one watchdog task per connection closes it when
//! - the same request has stayed unanswered past the slow limit (the request timeout plus the
//!   header allowance): requests that reach a handler are answered by then (with a 408 at
//!   worst), so only clients that dribble their headers or body are cut off;
//! - a new connection has sent nothing for the first-byte timeout;
//! - a kept-alive connection has had no traffic in either direction for the idle timeout
//!   (an SSE stream writes a comment every 15 s, so it is never idle).
//!
//! [`Watched`] also gives hyper's own refusals the standard error body: hyper answers a request
//! head it cannot parse (a garbage request line, a control byte in a header, a bad or duplicate
//! `Content-Length`, too many headers) itself, with an empty body and no hook to change it.
//! Such a response is recognised on its way out (a 4xx head with `content-length: 0` and
//! without the `nosniff` header every response of the edge carries) and replaced by the same
//! status with the JSON error body; the connection is closed after it, as hyper would.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use xyn_core::codes;

/// Whether a connection has an unanswered request, how many answers it has written, and
/// whether it saw any traffic since the watchdog last looked. Relaxed atomics; no clock in the
/// hot path.
#[derive(Default)]
pub struct Pending {
    waiting: AtomicBool,
    answers: AtomicU64,
    traffic: AtomicBool,
}

impl Pending {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn arrived(&self) {
        if !self.waiting.load(Ordering::Relaxed) {
            self.waiting.store(true, Ordering::Relaxed);
        }
        self.moved();
    }

    fn answered(&self) {
        if self.waiting.load(Ordering::Relaxed) {
            self.waiting.store(false, Ordering::Relaxed);
        }
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.moved();
    }

    fn moved(&self) {
        if !self.traffic.load(Ordering::Relaxed) {
            self.traffic.store(true, Ordering::Relaxed);
        }
    }

    /// A request has arrived and nothing has been written since (hyper's own refusal can only
    /// come then; a response body that happens to look like one is written after its head).
    fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// `(waiting, answers so far)`.
    fn snapshot(&self) -> (bool, u64) {
        (
            self.waiting.load(Ordering::Relaxed),
            self.answers.load(Ordering::Relaxed),
        )
    }

    /// Whether there was traffic since the last call.
    fn take_traffic(&self) -> bool {
        self.traffic.swap(false, Ordering::Relaxed)
    }
}

/// A replacement being written in place of hyper's own empty refusal.
struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
    /// What hyper handed over (reported as written once the replacement is out).
    consumed: usize,
}

/// A socket that reports request arrival, answers and traffic to [`Pending`], and gives
/// hyper's own refusals the standard error body.
pub struct Watched<T> {
    inner: T,
    pending: Arc<Pending>,
    rewrite: Option<Rewrite>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, pending: Arc<Pending>) -> Self {
        Self {
            inner,
            pending,
            rewrite: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.pending.arrived();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    /// Starts replacing `head` when it is hyper's own refusal of the waiting request.
    fn catch_refusal(&mut self, head: &[u8]) {
        if self.rewrite.is_none()
            && self.pending.is_waiting()
            && let Some(bytes) = replacement_for(head)
        {
            self.rewrite = Some(Rewrite {
                bytes,
                written: 0,
                consumed: head.len(),
            });
        }
    }

    /// Writes the pending replacement; `Ready(Ok(n))` with what hyper handed over once done.
    fn drain_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            let Some(rw) = self.rewrite.as_mut() else {
                return Poll::Ready(Ok(0));
            };
            if rw.written >= rw.bytes.len() {
                let n = rw.consumed;
                self.rewrite = None;
                self.pending.answered();
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &rw.bytes[rw.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => rw.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.catch_refusal(buf);
        if self.rewrite.is_some() {
            return self.drain_rewrite(cx);
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.pending.answered();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's own refusal is a head alone, in one slice.
        if let [only] = bufs {
            self.catch_refusal(only);
        }
        if self.rewrite.is_some() {
            return self.drain_rewrite(cx);
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.pending.answered();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.rewrite.is_some() {
            match self.drain_rewrite(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The status of a response head that hyper wrote by itself (a 4xx with an empty body and
/// none of the headers the edge sets on every response), or `None`.
fn hyper_refusal(head: &[u8]) -> Option<u16> {
    if !head.starts_with(b"HTTP/1.1 4") || !head.ends_with(b"\r\n\r\n") || head.len() > 512 {
        return None;
    }
    let status = std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()?;
    let lower = head.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    (has(b"\r\ncontent-length: 0\r\n") && !has(b"x-content-type-options")).then_some(status)
}

/// The standard-shape answer that replaces hyper's own refusal `head`, if it is one.
fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    let status = hyper_refusal(head)?;
    Some(refusal_bytes(status))
}

/// A complete `Connection: close` response with the standard error body, for refusals made
/// below the router (malformed requests, the connection limit).
pub fn refusal_bytes(status: u16) -> Vec<u8> {
    let (reason, code, message) = match status {
        431 => (
            "Request Header Fields Too Large",
            codes::REQUEST_HEADERS_TOO_LARGE,
            "the request headers are too many or too large",
        ),
        414 => (
            "URI Too Long",
            codes::REQUEST_INVALID,
            "the request target is too long",
        ),
        503 => (
            "Service Unavailable",
            codes::SERVER_BUSY,
            "the node has too many open connections; retry shortly",
        ),
        _ => (
            "Bad Request",
            codes::REQUEST_MALFORMED,
            "the request is not valid HTTP/1.1 (request line, header syntax or a control byte in a header, or a bad or duplicate Content-Length)",
        ),
    };
    let status = if status == 503 || status == 431 || status == 414 {
        status
    } else {
        400
    };
    let id = crate::correlation::new_id();
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "details": null},
        "correlation_id": id,
    })
    .to_string();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-content-type-options: nosniff\r\nx-correlation-id: {id}\r\nconnection: close\r\n",
        body.len()
    );
    if status == 503 {
        out.push_str("retry-after: 1\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// How long a connection may stay without progress.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A request unanswered this long (slow headers or body) closes the connection.
    pub slow: Duration,
    /// A new connection that has sent nothing this long is closed.
    pub first_byte: Duration,
    /// A connection with no traffic in either direction this long is closed.
    pub idle: Duration,
}

/// Why the watchdog closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    Slow,
    Silent,
    Idle,
}

/// Resolves when the connection should be closed. It looks every quarter of the shortest limit
/// and counts the looks in a row that found the same request waiting (slow), or no traffic at
/// all (first byte, idle), so a limit holds within a quarter of itself.
pub async fn watchdog(pending: Arc<Pending>, limits: Limits) -> Closed {
    let shortest = limits.slow.min(limits.first_byte).min(limits.idle);
    let period = (shortest / 4).max(Duration::from_millis(100));
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    let looks = |limit: Duration| (limit.as_millis() / period.as_millis().max(1)).max(1) as u32;
    let (slow_looks, silent_looks, idle_looks) = (
        looks(limits.slow),
        looks(limits.first_byte),
        looks(limits.idle),
    );
    let mut strikes = 0u32;
    let mut quiet = 0u32;
    let mut last = (false, u64::MAX);
    loop {
        every.tick().await;
        let now = pending.snapshot();
        strikes = if now.0 && now == last { strikes + 1 } else { 0 };
        last = now;
        if strikes >= slow_looks {
            return Closed::Slow;
        }
        quiet = if pending.take_traffic() || now.0 {
            0
        } else {
            quiet + 1
        };
        if now.1 == 0 && !now.0 && quiet >= silent_looks {
            return Closed::Silent;
        }
        if quiet >= idle_looks {
            return Closed::Idle;
        }
    }
}

/// Open connections, against a limit.
#[derive(Debug)]
pub struct Gate {
    open: AtomicUsize,
    max: usize,
}

/// One admitted connection; leaving frees its place.
pub struct Admitted(Arc<Gate>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max: max.max(1),
        })
    }

    /// A place for one more connection, or `None` at the limit.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let prev = self.open.fetch_add(1, Ordering::Relaxed);
        if prev >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Admitted(self.clone()))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// The process's soft limit of open files (`RLIMIT_NOFILE`), read from `/proc/self/limits`
/// (a safe read; the libc call would need `unsafe`, which the workspace forbids).
pub fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// The default connection limit: three quarters of the open-file limit, and at least 128 files
/// left for the store, the sandbox workers and the rest of the node.
pub fn default_max_connections(open_files: Option<usize>) -> usize {
    match open_files {
        Some(n) => (n * 3 / 4).min(n.saturating_sub(128)).max(8),
        None => 1024,
    }
}

/// Accept errors (out of file descriptors, say) back off exponentially, up to one second, and
/// are logged once per ten seconds with the count since, so they neither spin nor flood the log.
#[derive(Default)]
pub struct AcceptBackoff {
    failures_in_row: u32,
    unlogged: u64,
    logged_at: Option<std::time::Instant>,
}

impl AcceptBackoff {
    /// The pause after a failed accept.
    pub fn failed(&mut self, e: &io::Error) -> Duration {
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        self.unlogged += 1;
        let due = self
            .logged_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            tracing::warn!(error = %e, failures = self.unlogged,
                "accept failed; backing off (logged at most every 10 s)");
            self.unlogged = 0;
            self.logged_at = Some(std::time::Instant::now());
        }
        let exp = self.failures_in_row.min(7);
        Duration::from_millis(10 << exp).min(Duration::from_secs(1))
    }

    pub fn succeeded(&mut self) {
        self.failures_in_row = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_refusals_are_recognised_and_ours_are_not() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 15:00:00 GMT\r\n\r\n";
        assert_eq!(hyper_refusal(hyper), Some(400));
        let big =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hyper_refusal(big), Some(431));
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nx-content-type-options: nosniff\r\n\r\n";
        assert_eq!(hyper_refusal(ours), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_refusal(ok), None);
        let out = String::from_utf8(replacement_for(hyper).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "request.malformed");
        assert_eq!(
            v["correlation_id"].as_str().map(str::len),
            Some(36),
            "{body}"
        );
    }

    #[test]
    fn the_connection_gate_refuses_past_its_limit_and_frees_places() {
        let g = Gate::new(2);
        let a = g.admit().unwrap();
        let _b = g.admit().unwrap();
        assert!(g.admit().is_none());
        drop(a);
        assert_eq!(g.open(), 1);
        assert!(g.admit().is_some());
    }

    #[test]
    fn the_default_connection_limit_leaves_room_below_the_fd_limit() {
        assert_eq!(default_max_connections(Some(300)), 172);
        assert_eq!(default_max_connections(Some(1024)), 768);
        assert_eq!(default_max_connections(Some(100)), 8);
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn accept_backoff_grows_to_a_second() {
        let mut b = AcceptBackoff::default();
        let e = io::Error::other("EMFILE");
        let first = b.failed(&e);
        for _ in 0..20 {
            b.failed(&e);
        }
        assert!(first < b.failed(&e));
        assert_eq!(b.failed(&e), Duration::from_secs(1));
        b.succeeded();
        assert_eq!(b.failed(&e), first);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_and_idle_connections_are_closed() {
        let limits = Limits {
            slow: Duration::from_secs(40),
            first_byte: Duration::from_secs(2),
            idle: Duration::from_secs(8),
        };
        let p = Pending::new();
        assert_eq!(watchdog(p, limits).await, Closed::Silent);
        let p = Pending::new();
        p.arrived();
        p.answered();
        let started = tokio::time::Instant::now();
        assert_eq!(watchdog(p, limits).await, Closed::Idle);
        assert!(started.elapsed() >= Duration::from_secs(8));
        let p = Pending::new();
        p.arrived();
        assert_eq!(watchdog(p, limits).await, Closed::Slow);
    }
}
