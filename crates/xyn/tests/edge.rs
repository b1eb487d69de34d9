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

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn hook(node: &Node, source: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
    let mut r = client()
        .post(format!("{}/hooks/{source}", node.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

const API_TOKEN: &str = "api-token-0123456789abcdef";

fn hooked_node() -> Node {
    Node::builder()
        .env("XYN_API_TOKEN", API_TOKEN)
        .env("XYN_HOOK_GH", "gh-secret-0123")
        .env("XYN_HOOK_SW", "sw-secret-0123")
        .env("XYN_HOOK_ST", "st-secret-0123")
        .env("XYN_HOOK_PLAIN", "plain-secret-0123")
        .toml(
            "[hooks.gh]\nscheme = \"github\"\nname_from_header = \"X-GitHub-Event\"\nevents = [\"push\"]\nprefix = \"github.\"\nsecret_env = \"XYN_HOOK_GH\"\n\n\
             [hooks.sw]\nscheme = \"standard\"\nname_from = \"/type\"\nprefix = \"sw.\"\nsecret_env = \"XYN_HOOK_SW\"\nmax_skew = \"5m\"\n\n\
             [hooks.st]\nscheme = \"stripe\"\nevent_name = \"stripe.evt\"\nsecret_env = \"XYN_HOOK_ST\"\n\n\
             [hooks.plain]\nevent_name = \"plain.evt\"\nsecret_env = \"XYN_HOOK_PLAIN\"\n",
        )
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_reselected_webhooks_are_refused() {
    let node = hooked_node();
    // GitHub: a captured signed delivery is accepted once.
    let body = br#"{"ref":"main"}"#;
    let sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256(b"gh-secret-0123", body))
    );
    let push = [
        ("x-github-event", "push"),
        ("x-hub-signature-256", sig.as_str()),
        ("x-github-delivery", "d-1"),
    ];
    let (st, ev) = hook(&node, "gh", body, &push).await;
    assert_eq!(
        (st, ev["event_name"].as_str()),
        (201, Some("github.push")),
        "{ev}"
    );
    // Replayed as is, with a new delivery id, and with another (unsigned) event name.
    let (st, e) = hook(&node, "gh", body, &push).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("hook.replayed")),
        "{e}"
    );
    let again = [
        ("x-github-event", "push"),
        ("x-hub-signature-256", sig.as_str()),
        ("x-github-delivery", "d-2"),
    ];
    let (st, e) = hook(&node, "gh", body, &again).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("hook.replayed")),
        "{e}"
    );
    let deploy = [
        ("x-github-event", "deploy"),
        ("x-hub-signature-256", sig.as_str()),
        ("x-github-delivery", "d-3"),
    ];
    let (st, e) = hook(&node, "gh", body, &deploy).await;
    assert!(st == 409 || st == 422, "{st} {e}");
    // Even a fresh signed body cannot select an event the mapping does not pin.
    let body2 = br#"{"ref":"other"}"#;
    let sig2 = format!(
        "sha256={}",
        hex::encode(hmac_sha256(b"gh-secret-0123", body2))
    );
    let (st, e) = hook(
        &node,
        "gh",
        body2,
        &[("x-github-event", "deploy"), ("x-hub-signature-256", &sig2)],
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (422, Some("hook.event_not_allowed")),
        "{e}"
    );

    // Standard Webhooks: signed id and timestamp; replays and stale timestamps are refused.
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let sw_body = br#"{"type":"invoice.paid"}"#;
    let sw = |id: &str, ts: i64| {
        let msg = [
            id.as_bytes(),
            b".",
            ts.to_string().as_bytes(),
            b".",
            sw_body,
        ]
        .concat();
        format!("v1,{}", b64(&hmac_sha256(b"sw-secret-0123", &msg)))
    };
    let now = unix_now();
    let ts = now.to_string();
    let sig = sw("msg-1", now);
    let h = [
        ("webhook-id", "msg-1"),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let (st, ev) = hook(&node, "sw", sw_body, &h).await;
    assert_eq!(
        (st, ev["event_name"].as_str()),
        (201, Some("sw.invoice.paid")),
        "{ev}"
    );
    let (st, e) = hook(&node, "sw", sw_body, &h).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("hook.replayed")),
        "{e}"
    );
    let old = now - 3600;
    let (ots, osig) = (old.to_string(), sw("msg-2", old));
    let (st, e) = hook(
        &node,
        "sw",
        sw_body,
        &[
            ("webhook-id", "msg-2"),
            ("webhook-timestamp", &ots),
            ("webhook-signature", &osig),
        ],
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (401, Some("hook.bad_signature")),
        "{e}"
    );
    // A forged id under the signature of another is refused.
    let (st, _) = hook(
        &node,
        "sw",
        sw_body,
        &[
            ("webhook-id", "msg-3"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sig),
        ],
    )
    .await;
    assert_eq!(st, 401);

    // Stripe-style `t=…,v1=…`.
    let st_body = br#"{"id":"evt_1"}"#;
    let stripe = |t: i64| {
        let msg = [t.to_string().as_bytes(), b".", st_body].concat();
        format!(
            "t={t},v1={}",
            hex::encode(hmac_sha256(b"st-secret-0123", &msg))
        )
    };
    let s1 = stripe(now);
    let (st, ev) = hook(&node, "st", st_body, &[("stripe-signature", &s1)]).await;
    assert_eq!(
        (st, ev["event_name"].as_str()),
        (201, Some("stripe.evt")),
        "{ev}"
    );
    let (st, e) = hook(&node, "st", st_body, &[("stripe-signature", &s1)]).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("hook.replayed")),
        "{e}"
    );
    let s_old = stripe(now - 3600);
    let (st, _) = hook(&node, "st", st_body, &[("stripe-signature", &s_old)]).await;
    assert_eq!(st, 401);

    // Exactly one event per accepted delivery.
    let r = client()
        .get(format!("{}/api/v1/events?limit=100", node.url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let hooks = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"].as_str().is_some_and(|a| a.starts_with("hook:")))
        .count();
    assert_eq!(hooks, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_authenticate_by_their_own_scheme_and_cannot_be_enumerated() {
    let node = hooked_node();
    // The hook secret as a bearer works on a node with API tokens…
    let (st, ev) = hook(
        &node,
        "plain",
        b"{}",
        &[("authorization", "Bearer plain-secret-0123")],
    )
    .await;
    assert_eq!(
        (st, ev["event_name"].as_str()),
        (201, Some("plain.evt")),
        "{ev}"
    );
    // …and an API token is not a hook credential.
    let bearer = format!("Bearer {API_TOKEN}");
    let (st, e) = hook(&node, "plain", b"{}", &[("authorization", bearer.as_str())]).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (401, Some("hook.bad_signature")),
        "{e}"
    );
    // Without credentials a configured source and a missing one answer the same.
    let (a, ea) = hook(&node, "gh", b"{}", &[]).await;
    let (b, eb) = hook(&node, "nosuch", b"{}", &[]).await;
    assert_eq!(
        (a, &ea["error"]["code"], &ea["error"]["message"]),
        (b, &eb["error"]["code"], &eb["error"]["message"])
    );
    assert_eq!(a, 401);
    let (c, ec) = hook(
        &node,
        "nosuch",
        b"{}",
        &[("authorization", "Bearer plain-secret-0123")],
    )
    .await;
    assert_eq!((c, &ec["error"]["message"]), (a, &ea["error"]["message"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_rate_limited_and_aggregated_into_few_events() {
    let node = Node::builder().env("XYN_API_TOKEN", API_TOKEN).start();
    // The attacker comes from 127.0.0.2; the operator reads from 127.0.0.1.
    let _ = client(); // installs the TLS crypto provider reqwest needs
    let attacker = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut limited = None;
    for i in 0..200 {
        let r = attacker
            .get(format!("{}/api/v1/events", node.url))
            .bearer_auth(format!("wrong-token-{i:08}-xxxxxxxx"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some((i, r));
            break;
        }
        assert_eq!(r.status(), 401);
    }
    let (i, r) = limited.expect("never rate limited");
    assert!(i <= 25, "limited only after {i} failures");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "auth.rate_limited");
    // While limited even the right token is not looked at, and the login page refuses too.
    let r = attacker
        .get(format!("{}/api/v1/events", node.url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = attacker
        .post(format!("{}/ui/login", node.url))
        .header("cookie", "xyn_csrf=c0ffee")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong&csrf=c0ffee")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Another client is not limited; the flood left one event so far (its burst's summary
    // comes when the burst ends), not one per failure.
    let r = client()
        .get(format!(
            "{}/api/v1/events?event_name=xyn.auth.**&limit=100",
            node.url
        ))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let failed = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_name"] == "xyn.auth.login.failed")
        .count();
    assert_eq!(failed, 1, "{v}");
}

/// Makes files immutable (writes fail even for root) until dropped.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(files: Vec<std::path::PathBuf>) -> Self {
        for f in &files {
            let st = std::process::Command::new("chattr")
                .arg("+i")
                .arg(f)
                .status()
                .unwrap();
            assert!(st.success(), "chattr +i {}", f.display());
        }
        Immutable(files)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(f)
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_writes_fail_and_recovers() {
    let node = Node::builder().start();
    let get = |path: &'static str| {
        let url = format!("{}{path}", node.url);
        async move {
            let r = client().get(url).send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, h) = get("/api/v1/health/ready").await;
    assert_eq!(
        (st, h["store"]["writable"].as_bool()),
        (200, Some(true)),
        "{h}"
    );
    // The store's files stop accepting writes (as on a full disk).
    let data = node.data_dir();
    let files: Vec<_> = ["xyn.db", "xyn.db-wal"]
        .iter()
        .map(|f| data.join(f))
        .filter(|p| p.exists())
        .collect();
    let guard = Immutable::set(files);
    let r = client()
        .post(format!("{}/api/v1/events", node.url))
        .json(&json!({"event_name": "disk.test", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    // Liveness stays up and says so; readiness refuses with the standard body.
    let (st, h) = get("/api/v1/health").await;
    assert_eq!(
        (st, h["status"].as_str(), h["store"]["writable"].as_bool()),
        (200, Some("degraded"), Some(false)),
        "{h}"
    );
    let (st, e) = get("/api/v1/health/ready").await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (503, Some("node.not_ready")),
        "{e}"
    );
    // Writes work again: readiness comes back by itself (its probe write succeeds).
    drop(guard);
    let started = Instant::now();
    loop {
        let (st, h) = get("/api/v1/health/ready").await;
        if st == 200 {
            assert_eq!(h["status"], "ok");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still not ready: {h}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cursors_are_refused() {
    let node = Node::builder().start();
    for i in 0..3 {
        let r = client()
            .post(format!("{}/api/v1/events", node.url))
            .json(&json!({"event_name": "page.test", "data": {"i": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let page: Value = client()
        .get(format!("{}/api/v1/events?limit=1", node.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = page["next_cursor"].as_str().unwrap().to_string();
    let ok = client()
        .get(format!("{}/api/v1/events?limit=1&cursor={next}", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // A position the API did not give out: the bare form, and a tampered one.
    let seq = next
        .trim_start_matches('c')
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let tampered = format!("c5.{}", next.rsplit_once('.').unwrap().1);
    for forged in ["c5".to_string(), format!("c{seq}"), tampered] {
        let r = client()
            .get(format!("{}/api/v1/events?cursor={forged}", node.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{forged}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "request.invalid_cursor", "{forged}");
    }
}
