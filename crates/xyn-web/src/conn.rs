//! Slow-request protection per connection, without a timer per request.
//!
//! hyper's own `header_read_timeout` re-arms a timer for every request, which on this edge
//! cost more than a third of a health probe's CPU. Instead, each connection's socket is wrapped
//! in [`Watched`], which notes (one clock read per request) when the first byte of an
//! unanswered request arrived and clears it when a response is written; one watchdog per
//! connection closes it when a request has stayed unanswered past the limit (the request
//! timeout plus the header allowance). Requests that reach a handler are answered by then
//! (with a 408 at worst), so only clients that dribble their headers or body are cut off.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When the oldest unanswered bytes of a connection arrived.
pub struct Pending {
    /// Microseconds since `epoch` + 1, or 0 when nothing is pending.
    since: AtomicU64,
    epoch: Instant,
}

impl Pending {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            since: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// How long the current request has been waiting for its answer, if one is.
    pub fn age(&self) -> Option<Duration> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            t => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_micros(t - 1)),
            ),
        }
    }

    fn arrived(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            let t = self.epoch.elapsed().as_micros() as u64 + 1;
            self.since.store(t, Ordering::Relaxed);
        }
    }

    fn answered(&self) {
        self.since.store(0, Ordering::Relaxed);
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

/// Resolves when the connection's pending request is older than `limit` (checked every
/// `limit / 4`).
pub async fn watchdog(pending: Arc<Pending>, limit: Duration) {
    let mut every = tokio::time::interval((limit / 4).max(Duration::from_millis(100)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if pending.age().is_some_and(|a| a > limit) {
            return;
        }
    }
}
