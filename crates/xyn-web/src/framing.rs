//! Request framing checks in front of hyper (RFC 9112), for the node's API/UI listener and
//! for apps alike: [`Framed`] wraps any `AsyncRead + AsyncWrite` (a TCP stream, a TLS
//! stream) and follows the framing of every request on the connection.
//!
//! Written by hand because hyper does not refuse these, and they are what request
//! smuggling needs:
//! - a request with both `Transfer-Encoding` and `Content-Length`: hyper drops the
//!   `Content-Length` and reads the body as chunked (closing the connection afterwards),
//!   so the request still *executes*. Here it is refused with 400 and the connection
//!   closed, before hyper sees a byte of it (pipelined requests before it are answered).
//! - a request line over [`MAX_REQUEST_LINE`]: hyper only knows its 64 KiB buffer; here 414.
//!   A head over [`MAX_HEAD`] is a 431.
//! - lingering close: when the server closes (after an early 413, after a refusal) the
//!   write side is shut first and what the client still sends is read and dropped, bounded
//!   in bytes ([`LINGER_BYTES`]) and time ([`LINGER_TIME`]), so that a client still sending
//!   its body reads the answer instead of a connection reset.
//!
//! hyper (httparse) already refuses, and these are not repeated: `Content-Length` lists
//! with differing values (400), obs-fold and bare CR in the head (400), `Transfer-Encoding`
//! on HTTP/1.0 and one whose final coding is not `chunked` (400), chunk sizes that overflow
//! and chunk extensions with bad bytes (the connection is closed). hyper writes header
//! names in canonical lower case and never folds repeated fields (`Set-Cookie`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest request line (method, target, version).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Longest request head (request line and header fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most bytes read and dropped after the server closed.
pub const LINGER_BYTES: usize = 1 << 20;
/// Longest time spent reading and dropping after the server closed.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
const MAX_HEADERS: usize = 128;

#[derive(Debug)]
enum State {
    /// Waiting for a complete head (held back from hyper until checked).
    Head,
    /// Inside a body of known length.
    Body(u64),
    /// Chunked body: reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Chunked body: chunk data and its CRLF.
    ChunkData(u64),
    /// Chunked body: trailer section, the current line so far.
    Trailers(Vec<u8>),
    /// No longer following (an upgrade, or hyper refuses what comes next anyway).
    Off,
}

/// How a request broke a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// In its head: refused with this status before hyper sees any of it.
    Head(u16),
    /// In its chunked body (a bad chunk extension): hyper's copy of the body ends there, so
    /// the body cannot be read and the request is answered 400 by whoever reads it.
    Body,
}

/// The framing follower: which bytes may go to hyper, and the refusal when a head breaks a rule.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    held: Vec<u8>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            state: State::Head,
            held: Vec::new(),
        }
    }
}

fn header_is(h: &httparse::Header<'_>, name: &str) -> bool {
    h.name.eq_ignore_ascii_case(name)
}

impl Scanner {
    /// Feeds bytes read from the client; appends to `out` what hyper may read. `Some` when a
    /// request breaks a rule: nothing after the offending part goes to hyper.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Option<Violation> {
        let mut data = data;
        let mut owned: Vec<u8>;
        while !data.is_empty() {
            match &mut self.state {
                State::Off => {
                    out.extend_from_slice(data);
                    return None;
                }
                State::Body(n) => {
                    let k = (*n).min(data.len() as u64) as usize;
                    out.extend_from_slice(&data[..k]);
                    *n -= k as u64;
                    if *n == 0 {
                        self.state = State::Head;
                    }
                    data = &data[k..];
                }
                State::ChunkData(n) => {
                    let k = (*n).min(data.len() as u64) as usize;
                    out.extend_from_slice(&data[..k]);
                    *n -= k as u64;
                    if *n == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                    data = &data[k..];
                }
                State::ChunkSize(_) | State::Trailers(_) => {
                    let is_size = matches!(self.state, State::ChunkSize(_));
                    let (State::ChunkSize(line) | State::Trailers(line)) = &mut self.state else {
                        return None;
                    };
                    let nl = data.iter().position(|&b| b == b'\n');
                    let k = nl.map_or(data.len(), |p| p + 1);
                    line.extend_from_slice(&data[..k]);
                    if is_size && nl.is_some() && !chunk_line_ok(&line[..line.len() - 1]) {
                        return Some(Violation::Body);
                    }
                    out.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    if line.len() > 4096 {
                        // hyper refuses such a line; stop following.
                        self.state = State::Off;
                        continue;
                    }
                    if nl.is_none() {
                        continue;
                    }
                    let text = std::mem::take(line);
                    let trimmed = text.strip_suffix(b"\n").unwrap_or(&text);
                    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
                    self.state = match self.state {
                        State::Trailers(_) if trimmed.is_empty() => State::Head,
                        State::Trailers(_) => State::Trailers(Vec::new()),
                        _ => match chunk_size(trimmed) {
                            Some(0) => State::Trailers(Vec::new()),
                            Some(n) => State::ChunkData(n.saturating_add(2)),
                            None => State::Off,
                        },
                    };
                }
                State::Head => {
                    self.held.extend_from_slice(data);
                    data = &[];
                    match self.head(out) {
                        Err(status) => return Some(Violation::Head(status)),
                        Ok(Some(rest)) => {
                            owned = rest;
                            data = &owned;
                        }
                        Ok(None) => {}
                    }
                }
            }
        }
        None
    }

    /// Checks the held head once complete. `Ok(Some(rest))`: the head went to `out`, `rest`
    /// follows it; `Ok(None)`: incomplete (or handed over unparsed for hyper to refuse).
    fn head(&mut self, out: &mut Vec<u8>) -> Result<Option<Vec<u8>>, u16> {
        // Empty lines before the request line are allowed (and skipped by hyper).
        let start = self
            .held
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(self.held.len());
        let line_end = self.held[start..].iter().position(|&b| b == b'\n');
        if line_end.map_or(self.held.len() - start, |p| p) > MAX_REQUEST_LINE {
            return Err(414);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let n = match req.parse(&self.held) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if self.held.len() > MAX_HEAD {
                    return Err(431);
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(431),
            Err(_) => {
                // Malformed: hyper answers it (400) and closes.
                out.append(&mut self.held);
                self.state = State::Off;
                return Ok(None);
            }
        };
        if n > MAX_HEAD {
            return Err(431);
        }
        let te: Vec<&[u8]> = req
            .headers
            .iter()
            .filter(|h| header_is(h, "transfer-encoding"))
            .map(|h| h.value)
            .collect();
        let cl: Vec<&[u8]> = req
            .headers
            .iter()
            .filter(|h| header_is(h, "content-length"))
            .map(|h| h.value)
            .collect();
        if !te.is_empty() && !cl.is_empty() {
            return Err(400);
        }
        let upgrade =
            req.method == Some("CONNECT") || req.headers.iter().any(|h| header_is(h, "upgrade"));
        let next = if upgrade {
            State::Off
        } else if let Some(last) = te.last() {
            let last = String::from_utf8_lossy(last);
            let final_coding = last.rsplit(',').next().unwrap_or("").trim();
            if final_coding.eq_ignore_ascii_case("chunked") {
                State::ChunkSize(Vec::new())
            } else {
                State::Off
            }
        } else if let Some(v) = cl.first() {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                Some(0) => State::Head,
                Some(len) => State::Body(len),
                None => State::Off,
            }
        } else {
            State::Head
        };
        let rest = self.held.split_off(n);
        out.append(&mut self.held);
        self.state = next;
        Ok(Some(rest))
    }
}

/// Whether a chunk-size line (without its LF) is `hex [BWS ; ext …] [CR]` with visible
/// ASCII, spaces and tabs only after the size — hyper lets control bytes through in
/// extensions, and a bare CR there is a framing ambiguity.
fn chunk_line_ok(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[hex_end..];
    if !rest
        .iter()
        .all(|&b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
    {
        return false;
    }
    let trimmed: Vec<u8> = rest
        .iter()
        .copied()
        .skip_while(|&b| b == b' ' || b == b'\t')
        .collect();
    trimmed.is_empty() || trimmed[0] == b';'
}

/// The size of a chunk-size line (`1a;ext=1`), `None` when it is not one hyper accepts.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if hex_end == 0 || hex_end > 16 {
        return None;
    }
    let digits = std::str::from_utf8(&line[..hex_end]).ok()?;
    u64::from_str_radix(digits, 16).ok()
}

#[derive(Debug)]
enum Closing {
    Open,
    Refusing { written: usize },
    Shutting,
    Lingering { dropped: usize },
    Done,
}

/// A connection whose requests are checked by [`Scanner`] before hyper reads them, and whose
/// close is lingering.
pub struct Framed<T> {
    inner: T,
    scan: Scanner,
    ready: Vec<u8>,
    ready_at: usize,
    /// The refusal to write before closing; hyper reads end-of-stream meanwhile.
    refusal: Option<Vec<u8>>,
    /// A rule was broken: hyper reads end-of-stream from here on.
    cut: bool,
    closing: Closing,
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Framed<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            scan: Scanner::default(),
            ready: Vec::new(),
            ready_at: 0,
            refusal: None,
            cut: false,
            closing: Closing::Open,
            linger: None,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Framed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready_at < this.ready.len() {
                let n = (this.ready.len() - this.ready_at).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.cut {
                // The refused request and what follows never reach hyper: it sees the end of
                // the stream, finishes what it has, and closes (writing the refusal first).
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if got.is_empty() {
                return Poll::Ready(Ok(()));
            }
            match this.scan.feed(got, &mut this.ready) {
                Some(Violation::Head(status)) => {
                    this.refusal = Some(crate::conn::refusal_bytes(status));
                    this.cut = true;
                }
                Some(Violation::Body) => this.cut = true,
                None => {}
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Framed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.closing {
                Closing::Open => {
                    this.closing = if this.refusal.is_some() {
                        Closing::Refusing { written: 0 }
                    } else {
                        Closing::Shutting
                    };
                }
                Closing::Refusing { written } => {
                    let bytes = this.refusal.as_deref().unwrap_or_default();
                    if *written < bytes.len() {
                        let n =
                            ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        *written += n;
                        continue;
                    }
                    ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
                    this.closing = Closing::Shutting;
                }
                Closing::Shutting => {
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    this.linger = Some(Box::pin(tokio::time::sleep(LINGER_TIME)));
                    this.closing = Closing::Lingering { dropped: 0 };
                }
                Closing::Lingering { dropped } => {
                    if let Some(t) = this.linger.as_mut()
                        && t.as_mut().poll(cx).is_ready()
                    {
                        this.closing = Closing::Done;
                        continue;
                    }
                    let mut tmp = [0u8; 16 * 1024];
                    let mut rb = ReadBuf::new(&mut tmp);
                    match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb)) {
                        Ok(()) if !rb.filled().is_empty() => {
                            *dropped += rb.filled().len();
                            if *dropped >= LINGER_BYTES {
                                this.closing = Closing::Done;
                            }
                        }
                        _ => this.closing = Closing::Done,
                    }
                }
                Closing::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(input: &[u8]) -> (Vec<u8>, Option<Violation>) {
        let mut s = Scanner::default();
        let mut out = Vec::new();
        // Byte by byte: the result must not depend on how reads split the stream.
        for b in input {
            if let Some(st) = s.feed(std::slice::from_ref(b), &mut out) {
                return (out, Some(st));
            }
        }
        (out, None)
    }

    #[test]
    fn pipelined_requests_pass_whole() {
        let req = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /d HTTP/1.1\r\n\r\n";
        let (out, st) = run(req);
        assert_eq!(st, None);
        assert_eq!(out, req.to_vec());
    }

    #[test]
    fn te_and_cl_is_refused_before_hyper_sees_it() {
        let ok = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let mut req = ok.clone();
        req.extend_from_slice(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        let (out, st) = run(&req);
        assert_eq!(st, Some(Violation::Head(400)));
        assert_eq!(out, ok);
        // The smuggled request hidden in a body of a request with a known length is body.
        let body = b"GET /smuggled HTTP/1.1\r\n\r\n";
        let mut req =
            format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        req.extend_from_slice(body);
        assert_eq!(run(&req).1, None);
    }

    #[test]
    fn long_request_line_and_head() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(run(long.as_bytes()).1, Some(Violation::Head(414)));
        let big = format!("GET / HTTP/1.1\r\n{}", "X-A: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(
            run(format!("{big}\r\n").as_bytes()).1,
            Some(Violation::Head(431))
        );
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(run(huge.as_bytes()).1, Some(Violation::Head(431)));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a;ext"), Some(26));
        assert_eq!(chunk_size(b"ffffffffffffffffff"), None);
        assert_eq!(chunk_size(b";x"), None);
        assert!(chunk_line_ok(b"3;a=b\r"));
        assert!(chunk_line_ok(b"3 ; a=\"b c\""));
        assert!(!chunk_line_ok(b"3;a\x01b\r"));
        assert!(!chunk_line_ok(b"3;a\rb\r"));
        assert!(!chunk_line_ok(b"3x\r"));
        let (_, st) =
            run(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;\x01\r\nabc\r\n0\r\n\r\n");
        assert_eq!(st, Some(Violation::Body));
    }
}
