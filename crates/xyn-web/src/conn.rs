//! Slow-request protection per connection, without a timer per request.
//!
//! hyper's own `header_read_timeout` re-arms a timer for every request, which on this edge
//! cost more than a third of a health probe's CPU. Instead, each connection's socket is wrapped
//! in [`Watched`], which flags an unanswered request when bytes arrive and counts answers when
//! a response is written; one watchdog task per connection closes it when the same request has
//! stayed unanswered past the limit (the request timeout plus the header allowance). Requests
//! that reach a handler are answered by then (with a 408 at worst), so only clients that
//! dribble their headers or body are cut off.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Whether a connection has an unanswered request, and how many answers it has written.
/// Two relaxed atomics per request; no clock in the hot path.
#[derive(Default)]
pub struct Pending {
    waiting: AtomicBool,
    answers: AtomicU64,
}

impl Pending {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn arrived(&self) {
        if !self.waiting.load(Ordering::Relaxed) {
            self.waiting.store(true, Ordering::Relaxed);
        }
    }

    fn answered(&self) {
        if self.waiting.load(Ordering::Relaxed) {
            self.waiting.store(false, Ordering::Relaxed);
        }
        self.answers.fetch_add(1, Ordering::Relaxed);
    }

    /// `(waiting, answers so far)`.
    fn snapshot(&self) -> (bool, u64) {
        (
            self.waiting.load(Ordering::Relaxed),
            self.answers.load(Ordering::Relaxed),
        )
    }
}

/// A socket that reports request arrival and answers to [`Pending`].
pub struct Watched<T> {
    inner: T,
    pending: Arc<Pending>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, pending: Arc<Pending>) -> Self {
        Self { inner, pending }
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

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves when one request of the connection has stayed unanswered for about `limit`
/// (between `limit` and `limit * 5 / 4`): it looks every `limit / 4` and counts the looks in a
/// row that found the same request waiting.
pub async fn watchdog(pending: Arc<Pending>, limit: Duration) {
    let period = (limit / 4).max(Duration::from_millis(100));
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut strikes = 0u32;
    let mut last = (false, u64::MAX);
    loop {
        every.tick().await;
        let now = pending.snapshot();
        strikes = if now.0 && now == last { strikes + 1 } else { 0 };
        last = now;
        if strikes >= 4 {
            return;
        }
    }
}
