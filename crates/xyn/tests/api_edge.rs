#![allow(clippy::unwrap_used)]
//! The edge of the API against the real binary, each written as the attack: tokens, roles,
//! sessions and CSRF; limits (413, 431, 408) with the error shape; graceful shutdown; security
//! headers; and a public listener without auth refused.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::api::{GATE_BP, OP, OWNER, call, err, get, head_seq, nofollow, post, set_cookie};
use support::fixture::Fixture;
use support::{Node, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_tokens_roles_sessions_and_csrf() {
    let node = Node::builder()
        .blueprint("gate.yaml", GATE_BP)
        .env("XYN_API_TOKEN", OP)
        .env("XYN_OWNER_TOKEN", OWNER)
        .start();
    let bearer = |t: &str| format!("Bearer {t}");
    let op = bearer(OP);
    let owner = bearer(OWNER);

    // No token, a wrong token: 401 on every /api route, redirect to login on /ui.
    for path in [
        "/api/v1/health",
        "/api/v1/events",
        "/api/v1/openapi.json",
        "/api/internal/stats",
    ] {
        let r = get(&node, path).await;
        err(&r, 401, "auth.required");
        assert!(r.headers.contains_key("www-authenticate"));
    }
    err(
        &call(
            &node,
            Method::GET,
            "/api/v1/events",
            None,
            &[("authorization", "Bearer nope-nope-nope-nope")],
        )
        .await,
        401,
        "auth.invalid_token",
    );
    let before = head_seq(
        &call(
            &node,
            Method::GET,
            "/api/v1/events?limit=1",
            None,
            &[("authorization", &op)],
        )
        .await,
    );
    err(
        &post(&node, "/api/v1/events", json!({"event_name": "a.b"})).await,
        401,
        "auth.required",
    );
    let nofollow = nofollow();
    let ui = nofollow
        .get(format!("{}/ui/runs?status=failed", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 303);
    assert_eq!(
        ui.headers()["location"],
        "/ui/login?next=%2Fui%2Fruns%3Fstatus%3Dfailed"
    );
    assert_eq!(
        nofollow
            .get(format!("{}/ui/static/app.css", node.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let probe = call(
        &node,
        Method::GET,
        "/api/v1/health",
        None,
        &[("authorization", &owner)],
    )
    .await;
    assert_eq!(
        (probe.status, probe.body["status"].as_str()),
        (200, Some("ok"))
    );
    assert!(probe.headers.contains_key("x-correlation-id"));
    // The probe's quick answer takes the same decisions as the full edge.
    err(
        &call(
            &node,
            Method::GET,
            "/api/v1/health",
            None,
            &[("authorization", "Bearer nope-nope-nope-nope")],
        )
        .await,
        401,
        "auth.invalid_token",
    );

    // Roles: owners cannot reach /api/internal; the actor is the token's principal.
    err(
        &call(
            &node,
            Method::GET,
            "/api/internal/stats",
            None,
            &[("authorization", &owner)],
        )
        .await,
        403,
        "auth.forbidden",
    );
    assert_eq!(
        call(
            &node,
            Method::GET,
            "/api/internal/stats",
            None,
            &[("authorization", &op)]
        )
        .await
        .status,
        200
    );
    let e = call(
        &node,
        Method::POST,
        "/api/v1/events",
        Some(json!({"event_name": "demo.owner"})),
        &[("authorization", &owner), ("x-actor", "mallory")],
    )
    .await;
    assert_eq!(
        (e.status, e.body["actor"].as_str()),
        (201, Some("owner")),
        "{}",
        e.text
    );
    let r = call(
        &node,
        Method::POST,
        "/api/v1/runs",
        Some(json!({"blueprint_ref": "bp.t.gate"})),
        &[("authorization", &owner)],
    )
    .await;
    let run_id = r.body["run_id"].as_str().unwrap().to_string();
    assert_eq!(r.body["actor"], "owner");
    let head_after = head_seq(
        &call(
            &node,
            Method::GET,
            "/api/v1/events?limit=1",
            None,
            &[("authorization", &op)],
        )
        .await,
    );
    assert!(head_after > before);

    // The CLI sends XYN_API_TOKEN.
    let (code, out, errs) = node.cli(&["event", "list", "--limit", "1"]);
    assert_eq!(code, 0, "{out}{errs}");
    let (code, _, errs) = node.cli(&["event", "list", "--token", "wrong-wrong-wrong-wrong"]);
    assert_ne!(code, 0);
    assert!(errs.contains("auth.invalid_token"), "{errs}");

    // Login: the form needs the CSRF cookie's value; failures are audited; success sets a session.
    let login = nofollow
        .get(format!("{}/ui/login", node.url))
        .send()
        .await
        .unwrap();
    let csrf = set_cookie(login.headers(), "xyn_csrf").unwrap();
    let form = |token: &str, csrf_field: &str| {
        format!("token={token}&next=%2Fui%2Fruns&csrf={csrf_field}")
    };
    let cookie = format!("xyn_csrf={csrf}");
    let no_csrf = nofollow
        .post(format!("{}/ui/login", node.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(OP, "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    let wrong = nofollow
        .post(format!("{}/ui/login", node.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form("not-the-token-at-all", &csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("login-error"));
    let ok = nofollow
        .post(format!("{}/ui/login", node.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(OP, &csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/ui/runs");
    let cookies: Vec<String> = ok
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies
            .iter()
            .all(|c| c.contains("HttpOnly") && c.contains("SameSite=Strict"))
    );
    let session = set_cookie(ok.headers(), "xyn_session").unwrap();
    let csrf2 = set_cookie(ok.headers(), "xyn_csrf").unwrap();
    let jar = format!("xyn_session={session}; xyn_csrf={csrf2}");
    let page = nofollow
        .get(format!("{}/ui/runs", node.url))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("data-testid=\"nav-operator\""),
        "operators see the operator view"
    );

    // Session-authenticated API writes need the CSRF header; reads do not.
    assert_eq!(
        nofollow
            .get(format!("{}/api/v1/runs", node.url))
            .header("cookie", &jar)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let no_header = nofollow
        .post(format!("{}/api/v1/events", node.url))
        .header("cookie", &jar)
        .json(&json!({"event_name": "demo.s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), 403);
    let with_header = nofollow
        .post(format!("{}/api/v1/events", node.url))
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf2)
        .json(&json!({"event_name": "demo.s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(with_header.status(), 201);
    assert_eq!(
        with_header.json::<Value>().await.unwrap()["actor"],
        "operator"
    );

    // UI form posts: CSRF field required; a cross-site Origin is refused; the decision is the operator's.
    for _ in 0..200 {
        let st = call(
            &node,
            Method::GET,
            &format!("/api/v1/runs/{run_id}/steps/approve"),
            None,
            &[("authorization", &op)],
        )
        .await;
        if st.body["status"] == "waiting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let step = node_step(&node, &op, &run_id, "approve").await;
    let decide = format!("{}/ui/runs/{run_id}/steps/{step}/decide", node.url);
    let forged = nofollow
        .post(&decide)
        .header("cookie", &jar)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("decision=approve")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let cross = nofollow
        .post(&decide)
        .header("cookie", &jar)
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("decision=approve&csrf={csrf2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let fine = nofollow
        .post(&decide)
        .header("cookie", &jar)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("decision=approve&comment=ok&csrf={csrf2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 303);
    let gate = call(
        &node,
        Method::GET,
        &format!("/api/v1/runs/{run_id}/steps/approve"),
        None,
        &[("authorization", &op)],
    )
    .await;
    assert_eq!(gate.body["decided_by"], "operator");

    // Owner sessions see no operator view.
    let owner_login = nofollow
        .post(format!("{}/ui/login", node.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(OWNER, &csrf))
        .send()
        .await
        .unwrap();
    let osession = owner_login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("xyn_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let ojar = format!("xyn_session={osession}");
    let oview = nofollow
        .get(format!("{}/ui/events", node.url))
        .header("cookie", &ojar)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!oview.contains("nav-operator") && oview.contains("owner view"));
    // An owner opening the operator page gets a page saying why, with their navigation.
    let refused = nofollow
        .get(format!("{}/ui/operator", node.url))
        .header("cookie", &ojar)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = refused.text().await.unwrap();
    assert!(
        page.contains("data-testid=\"error-page\"")
            && page.contains("auth.forbidden")
            && page.contains("nav-runs")
            && !page.contains("nav-operator")
            && page.contains("owner view"),
        "{page}"
    );

    // Logins and failures are audit events with the actor.
    let audit = call(
        &node,
        Method::GET,
        "/api/v1/events?event_name=xyn.auth.**&limit=50",
        None,
        &[("authorization", &op)],
    )
    .await;
    let names: Vec<(String, String)> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_name"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        names.contains(&("xyn.auth.session.started".into(), "operator".into())),
        "{names:?}"
    );
    assert!(
        names.contains(&("xyn.auth.session.started".into(), "owner".into())),
        "{names:?}"
    );
    assert!(
        names.contains(&("xyn.auth.login.failed".into(), "anonymous".into())),
        "{names:?}"
    );
}

async fn node_step(node: &Node, auth: &str, run: &str, name: &str) -> String {
    call(
        node,
        Method::GET,
        &format!("/api/v1/runs/{run}/steps/{name}"),
        None,
        &[("authorization", auth)],
    )
    .await
    .body["step_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_413_431_and_408_with_the_error_shape() {
    let node = Node::builder()
        .env("XYN_MAX_EVENT_BYTES", "4096")
        .env("XYN_REQUEST_TIMEOUT", "1s")
        .env("XYN_HEADER_READ_TIMEOUT", "1s")
        .start();
    let before = head_seq(&get(&node, "/api/v1/events?limit=1").await);
    // 413: declared too large, and chunked past the limit.
    let big = json!({"event_name": "a.b", "data": {"x": "y".repeat(200_000)}});
    err(
        &post(&node, "/api/v1/events", big.clone()).await,
        413,
        "request.too_large",
    );
    let addr = node.url.trim_start_matches("http://").to_string();
    let chunked = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let chunk = format!("2000\r\n{}\r\n", " ".repeat(0x2000));
        for _ in 0..40 {
            if s.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = vec![0u8; 4096];
        let n = s.read(&mut out).unwrap_or(0);
        String::from_utf8_lossy(&out[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert!(chunked.contains("request.too_large"), "{chunked}");
    // 431: headers over 16 KiB in total.
    let r = call(
        &node,
        Method::GET,
        "/api/v1/health",
        None,
        &[("x-big", &"h".repeat(20_000))],
    )
    .await;
    err(&r, 431, "request.headers_too_large");
    // 408: a body that never finishes.
    let addr = node.url.trim_start_matches("http://").to_string();
    let slow = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"event_").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = vec![0u8; 4096];
        let n = s.read(&mut out).unwrap();
        String::from_utf8_lossy(&out[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    assert!(slow.contains("request.timeout"), "{slow}");
    // A client that never finishes its request head is disconnected (request timeout 1 s plus
    // the header allowance 1 s).
    let addr = node.url.trim_start_matches("http://").to_string();
    let dribble = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        let started = std::time::Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut out = vec![0u8; 64];
        let n = s.read(&mut out).unwrap_or(usize::MAX);
        (n, started.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(dribble.0, 0, "the server closed the connection");
    assert!(
        dribble.1 >= Duration::from_secs(2) && dribble.1 < Duration::from_secs(6),
        "{:?}",
        dribble.1
    );
    assert_eq!(
        head_seq(&get(&node, "/api/v1/events?limit=1").await),
        before,
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests() {
    let fixture = Fixture::start().await;
    let mut node = Node::builder().allow_http(&fixture.url).start();
    let url = format!("{}/slow/1500", fixture.url);
    let base = node.url.clone();
    let inflight = tokio::spawn(async move {
        client()
            .post(format!("{base}/api/internal/actions/execute"))
            .json(&json!({"action": "http.call", "input": {"method": "GET", "url": url}}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = std::time::Instant::now();
    node.stop();
    let status = inflight.await.unwrap().unwrap();
    assert_eq!(status, 200, "the in-flight request finished");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "shutdown waited for it"
    );
    assert!(
        client()
            .get(format!("{}/api/v1/health", node.url))
            .send()
            .await
            .is_err(),
        "no new connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_ui_responses() {
    let node = Node::builder().start();
    let r = client()
        .get(format!("{}/ui/events", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert!(h["server-timing"].to_str().unwrap().starts_with("app;dur="));
    let root = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&node.url)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            root.status().as_u16(),
            root.headers()["location"].to_str().unwrap()
        ),
        (303, "/ui/events")
    );
}

#[test]
fn a_public_address_without_auth_is_refused() {
    let out = std::process::Command::new(support::BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .env_remove("XYN_API_TOKEN")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without auth"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
