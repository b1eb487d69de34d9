#![allow(clippy::unwrap_used)]
//! The HTTP edge under hostile input, as raw sockets: malformed framing gets the JSON error
//! shape, idle and silent connections are closed, the connection limit refuses clearly and
//! keeps the node answering under a lowered open-file limit; webhook replays, unsigned event
//! selectors and source probing are refused; failed logins are rate limited and aggregated;
//! readiness follows the store's writability.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Node, client};

/// Sends `raw` on a new connection and reads the answer until the server closes or 10 s pass.
fn raw(node: &Node, raw: &[u8]) -> String {
    let addr = node.url.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        // One answer is enough: stop once the declared body is in.
        if let Some((head, body)) = split(&out)
            && let Some(len) = content_length(head)
            && body.len() >= len
        {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split(b: &[u8]) -> Option<(&str, &[u8])> {
    let at = b.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((std::str::from_utf8(&b[..at]).ok()?, &b[at + 4..]))
}

fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(str::to_string)
        })
        .and_then(|v| v.trim().parse().ok())
}

/// Asserts a raw answer is `status` with the standard error body and `code`.
fn assert_refusal(answer: &str, status: u16, code: &str) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {answer:?}"));
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "expected {status}: {answer}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(v["error"]["code"], code, "{answer}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{answer}"
    );
    assert!(
        v["correlation_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_framing_gets_the_json_error_shape() {
    let node = Node::builder().start();
    let n = &node;
    // A garbage request line.
    assert_refusal(&raw(n, b"GARBAGE\r\n\r\n"), 400, "request.malformed");
    assert_refusal(
        &raw(n, b"GET / HTTP/9.9 nonsense\r\n\r\n"),
        400,
        "request.malformed",
    );
    // A NUL and a control byte in a header value.
    assert_refusal(
        &raw(
            n,
            b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        ),
        400,
        "request.malformed",
    );
    assert_refusal(
        &raw(
            n,
            b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
        ),
        400,
        "request.malformed",
    );
    // A bad and a duplicate, disagreeing Content-Length.
    assert_refusal(
        &raw(
            n,
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        ),
        400,
        "request.malformed",
    );
    assert_refusal(
        &raw(
            n,
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        ),
        400,
        "request.malformed",
    );
    // Over 100 headers.
    let mut many = String::from("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_refusal(&raw(n, many.as_bytes()), 431, "request.headers_too_large");
    let mut some = String::from("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        some.push_str(&format!("X-H{i}: v\r\n"));
    }
    some.push_str("\r\n");
    assert_refusal(&raw(n, some.as_bytes()), 431, "request.headers_too_large");
    // A path that is not valid percent-encoded UTF-8.
    assert_refusal(
        &raw(n, b"GET /api/v1/runs/%ff HTTP/1.1\r\nHost: x\r\n\r\n"),
        400,
        "request.invalid",
    );
    // A chunked body past the limit, to a route that reads raw bytes (webhooks).
    let hooked = Node::builder()
        .env("XYN_MAX_EVENT_BYTES", "4096")
        .toml("[hooks.x]\nevent_name = \"x.y\"\n")
        .start();
    let addr = hooked.url.trim_start_matches("http://").to_string();
    let chunked = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /hooks/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let chunk = format!("2000\r\n{}\r\n", " ".repeat(0x2000));
        for _ in 0..40 {
            if s.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = vec![0u8; 8192];
        let n = s.read(&mut out).unwrap_or(0);
        String::from_utf8_lossy(&out[..n]).into_owned()
    })
    .await
    .unwrap();
    assert_refusal(&chunked, 413, "request.too_large");
    // The node is still fine.
    let ok = client()
        .get(format!("{}/api/v1/health", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// Counts the sockets in `socks` the server has closed (a read returns 0 or an error).
fn closed_count(socks: &mut [TcpStream]) -> usize {
    let mut n = 0;
    for s in socks.iter_mut() {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1024];
        loop {
            match s.read(&mut b) {
                Ok(0) => {
                    n += 1;
                    break;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    n += 1;
                    break;
                }
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_closed_and_the_limit_keeps_the_node_answering() {
    let node = Node::builder()
        .toml("[web]\nfirst_byte_timeout = \"2s\"\nidle_timeout = \"3s\"\nmax_connections = 150\n")
        .start();
    // The attack of the report: a low open-file limit and more idle sockets than it.
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &node.pid().to_string(), "--nofile=256:256"])
        .status()
        .unwrap();
    assert!(st.success());
    let addr = node.url.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let mut socks: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(socks.len() >= 300, "{}", socks.len());
    // Health answers throughout: a prompt 503 `server.busy` while the node is at its limit,
    // 200 once the silent sockets are closed; never a hang.
    let mut ok = false;
    let mut busy = 0;
    while started.elapsed() < Duration::from_secs(30) {
        let r = raw(
            &node,
            b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if r.starts_with("HTTP/1.1 200") {
            ok = true;
            break;
        }
        assert_refusal(&r, 503, "server.busy");
        busy += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "health never answered 200 ({busy} busy answers)");
    // Every silent socket is closed by the first-byte timeout (or refused at the limit).
    let deadline = Instant::now() + Duration::from_secs(30);
    let total = socks.len();
    loop {
        let closed = closed_count(&mut socks);
        if closed == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{closed} of {total} idle sockets closed after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A kept-alive connection that goes quiet after a request is closed by the idle timeout.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = [0u8; 4096];
    let n = s.read(&mut b).unwrap();
    assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 200"));
    let quiet = Instant::now();
    let mut closed = false;
    while quiet.elapsed() < Duration::from_secs(20) {
        match s.read(&mut b) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(
        closed && quiet.elapsed() >= Duration::from_secs(2),
        "{:?}",
        quiet.elapsed()
    );
    // No accept-error flood in the log.
    let log = node.stdout_log();
    let floods = log.matches("accept failed").count();
    assert!(floods <= 5, "{floods} accept-failure lines");
    let r = client()
        .get(format!("{}/api/v1/health", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = json!(null);
}
