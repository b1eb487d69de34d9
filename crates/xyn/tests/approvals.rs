#![allow(clippy::unwrap_used)]
//! Runs held at a gate (`waiting`), the approvals inbox and its live count, retry from the
//! failed step and re-run with edited inputs: over the API, the CLI and the UI's routes, on
//! SQLite and on PostgreSQL, with the attacks on them refused.

mod support;

use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};
use support::api::{GATE_BP, OP, call, err, get, nofollow, post, set_cookie};
use support::fixture::Fixture;
use support::services::TestDb;
use support::{Node, client};

const HELLO_BP: &str = r#"
id: bp.t.hello
name: Hello
trigger:
  event_type: demo.hello
inputs:
  - name: who
    type: string
plan:
  - kind: transform
    id: greet
    template:
      message: "hello {{inputs.who}}"
outputs:
  - name: message
    value: "{{steps.greet.outputs.message}}"
"#;

/// A blueprint whose first step calls `url` without retries, then transforms.
fn flaky_bp(url: &str) -> String {
    format!(
        "id: bp.t.flaky\ntrigger: {{event_type: demo.flaky}}\nplan:\n  - kind: action_task\n    id: call\n    action: http.call\n    with: {{url: \"{url}\", method: POST, json: {{n: 1}}}}\n  - {{kind: transform, id: after, expr: '{{status: .steps.call.outputs.status}}'}}\n"
    )
}

async fn start_gate_run(node: &Node, who: &str) -> String {
    let r = post(
        node,
        "/api/v1/runs",
        json!({"blueprint_ref": "bp.t.gate", "inputs": {"who": who}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["run_id"].as_str().unwrap().to_string()
}

/// The waiting status and the inbox, end to end on one node.
async fn waiting_and_the_inbox(node: &Node) {
    let run_id = start_gate_run(node, "ann").await;
    let run = node.until_run_status(&run_id, "waiting", 20).await;
    assert_eq!(run["completed_at"], Value::Null);

    // The API filters on it; `running` no longer includes it.
    let waiting = get(node, "/api/v1/runs?status=waiting").await;
    assert_eq!(waiting.status, 200, "{}", waiting.text);
    let ids: Vec<&str> = waiting.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert_eq!(ids, vec![run_id.as_str()]);
    let running = get(node, "/api/v1/runs?status=running").await;
    assert!(
        running.body["items"].as_array().unwrap().is_empty(),
        "{}",
        running.text
    );
    let bad = get(node, "/api/v1/runs?status=paused").await;
    err(&bad, 400, "request.invalid");
    assert!(
        bad.text.contains("waiting"),
        "the message names the statuses: {}",
        bad.text
    );

    // The CLI: `run list --status waiting` (a 400 before there was such a status).
    let list = node.cli_json(&["run", "list", "--status", "waiting"]);
    assert_eq!(list["items"][0]["run_id"], run_id.as_str(), "{list}");
    let (code, out, e) = node.cli(&["run", "list", "--status", "waiting"]);
    assert_eq!(code, 0, "{e}");
    assert!(out.contains(&run_id) && out.contains("waiting"), "{out}");

    // The inbox: the gate, its message, who may decide, how to decide.
    let inbox = get(node, "/api/v1/approvals").await;
    assert_eq!(inbox.status, 200, "{}", inbox.text);
    let items = inbox.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", inbox.text);
    let g = &items[0];
    assert_eq!(g["run_id"], run_id.as_str());
    assert_eq!(g["blueprint_id"], "bp.t.gate");
    assert_eq!(g["step"], "approve");
    assert_eq!(g["message"], "Approve ann?");
    assert_eq!(g["inputs"]["who"], "ann");
    assert_eq!(g["approvers"], json!(["role:owner", "role:operator"]));
    assert_eq!(g["may_decide"], true);
    assert!(g["effects"].is_array());
    assert!(g["waited_ms"].as_u64().is_some());
    let other = get(node, "/api/v1/approvals?blueprint_id=bp.other").await;
    assert!(other.body["items"].as_array().unwrap().is_empty());
    let unknown = get(node, "/api/v1/approvals?who=me").await;
    err(&unknown, 422, "request.unknown_field");

    // Deciding from the inbox's URL: the run goes on and leaves the inbox.
    let url = g["approve_url"].as_str().unwrap();
    let r = post(node, url, json!({"comment": "fine"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let done = node.until_run_status(&run_id, "completed", 20).await;
    let inbox = get(node, "/api/v1/approvals").await;
    assert!(
        inbox.body["items"].as_array().unwrap().is_empty(),
        "{}",
        inbox.text
    );

    // The time at the gate is reported apart from working time.
    let events = node.events_of(&run_id).await;
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_name"].as_str())
        .collect();
    assert!(names.contains(&"xyn.gate.waiting") && names.contains(&"xyn.gate.approved"));
    let completed = events
        .iter()
        .find(|e| e["event_name"] == "xyn.run.completed")
        .unwrap();
    let gate_wait = completed["data"]["gate_wait_ms"].as_u64().unwrap();
    assert!(gate_wait <= completed["data"]["wall_ms"].as_u64().unwrap());
    let fps = get(
        node,
        &format!("/api/v1/footprints?run_id={run_id}&metric=gate_wait_ms"),
    )
    .await;
    let fps = fps.body["items"].as_array().unwrap();
    assert_eq!(fps.len(), 1, "{fps:?}");
    assert_eq!(fps[0]["source_ref"], "approve");
    let walls = get(
        node,
        &format!("/api/v1/footprints?run_id={run_id}&metric=wall_ms"),
    )
    .await;
    assert!(
        walls.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["source_ref"] != "approve"),
        "a gate's waiting is not working wall time"
    );
    assert_eq!(done["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_at_a_gate_is_waiting_and_in_the_inbox_on_sqlite() {
    let node = Node::builder().blueprint("g.yaml", GATE_BP).start();
    waiting_and_the_inbox(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_at_a_gate_is_waiting_and_in_the_inbox_on_postgres() {
    let db = TestDb::create().await;
    let node = Node::builder()
        .blueprint("g.yaml", GATE_BP)
        .args(&["--database-url", &db.url])
        .start();
    waiting_and_the_inbox(&node).await;
}

/// Reads SSE frames until one satisfies `want`; returns it and when it arrived.
async fn next_frame(
    resp: &mut reqwest::Response,
    buf: &mut String,
    want: impl Fn(&str) -> bool,
) -> (String, SystemTime) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if want(&frame) {
                return (frame, SystemTime::now());
            }
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no matching frame; have {buf:?}"))
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

fn count_of(frame: &str) -> Option<u64> {
    let i = frame.find("data-count=\"")? + "data-count=\"".len();
    frame[i..].split('"').next()?.parse().ok()
}

/// The navigation's count is pushed when a gate starts waiting and when it is decided; the
/// push arrives within 200 ms of the gate's `xyn.gate.waiting` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_count_is_pushed_within_200ms_of_a_gate_waiting() {
    let node = Node::builder().blueprint("g.yaml", GATE_BP).start();
    let mut feed = client()
        .get(format!("{}/ui/approvals/feed", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let mut buf = String::new();
    let (first, _) = next_frame(&mut feed, &mut buf, |f| f.contains("event: approvals")).await;
    assert_eq!(count_of(&first), Some(0), "{first}");

    let mut lags = Vec::new();
    let mut runs = Vec::new();
    for n in 1..=5u64 {
        let run_id = start_gate_run(&node, &format!("w{n}")).await;
        let (frame, at) = next_frame(&mut feed, &mut buf, |f| count_of(f) == Some(n)).await;
        assert!(frame.contains("event: approvals"), "{frame}");
        let waiting = node
            .events_of(&run_id)
            .await
            .into_iter()
            .find(|e| e["event_name"] == "xyn.gate.waiting")
            .unwrap();
        let occurred =
            chrono::DateTime::parse_from_rfc3339(waiting["occurred_at"].as_str().unwrap()).unwrap();
        let occurred = SystemTime::UNIX_EPOCH
            + Duration::from_micros(occurred.timestamp_micros().try_into().unwrap());
        let lag = at.duration_since(occurred).unwrap_or_default();
        lags.push(lag);
        runs.push(run_id);
    }
    let worst = lags.iter().max().unwrap();
    eprintln!("approvals count pushed after the gate waited: {lags:?} (worst {worst:?})");
    assert!(
        *worst <= Duration::from_millis(200),
        "the count arrived {worst:?} after the gate started waiting"
    );
    // Deciding takes the count down.
    let r = post(
        &node,
        &format!("/api/v1/runs/{}/steps/approve/reject", runs[0]),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (frame, _) = next_frame(&mut feed, &mut buf, |f| count_of(f) == Some(4)).await;
    assert!(frame.contains("data-count=\"4\""));
}

/// The CSRF cookie of a fresh browser session on an open node.
async fn csrf_cookie(node: &Node) -> String {
    let r = client()
        .get(format!("{}/ui/runs", node.url))
        .send()
        .await
        .unwrap();
    set_cookie(r.headers(), "xyn_csrf").unwrap()
}

async fn form_post(node: &Node, path: &str, csrf: Option<&str>, body: &str) -> reqwest::Response {
    let mut r = nofollow()
        .post(format!("{}{path}", node.url))
        .header("content-type", "application/x-www-form-urlencoded");
    let mut body = body.to_string();
    if let Some(c) = csrf {
        r = r.header("cookie", format!("xyn_csrf={c}"));
        body = format!("{body}&csrf={c}");
    }
    r.body(body).send().await.unwrap()
}

/// The inbox page lists the gate with its message; its card decides it (with the CSRF token;
/// without it the post is refused and nothing is decided).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_page_decides_from_its_card_and_needs_csrf() {
    let node = Node::builder().blueprint("g.yaml", GATE_BP).start();
    let run_id = start_gate_run(&node, "cara").await;
    node.until_run_status(&run_id, "waiting", 20).await;
    let page = client()
        .get(format!("{}/ui/approvals", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("data-testid=\"approval\"") && html.contains("Approve cara?"),
        "{html}"
    );
    assert!(
        html.contains("/ui/approvals/feed"),
        "the navigation's count is live"
    );
    let step = node.step(&run_id, "approve").await["step_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/ui/approvals/{run_id}/{step}/decide");
    let forged = form_post(&node, &path, None, "decision=approve").await;
    assert_eq!(forged.status(), 403);
    let r = form_post(
        &node,
        "/ui/runs/{x}/retry".replace("{x}", &run_id).as_str(),
        None,
        "",
    )
    .await;
    assert_eq!(r.status(), 403, "retry from the UI needs the CSRF token");
    let r = form_post(
        &node,
        &format!("/ui/runs/{run_id}/rerun"),
        None,
        "inputs=%7B%7D",
    )
    .await;
    assert_eq!(r.status(), 403, "re-run from the UI needs the CSRF token");
    assert_eq!(
        node.run(&run_id).await["status"],
        "waiting",
        "nothing was decided"
    );
    let csrf = csrf_cookie(&node).await;
    let ok = form_post(
        &node,
        &path,
        Some(&csrf),
        "decision=approve&comment=from+the+inbox",
    )
    .await;
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/ui/approvals");
    node.until_run_status(&run_id, "completed", 20).await;
    let gate = node.step(&run_id, "approve").await;
    assert_eq!(gate["decided_by"], "ui:local");
    assert_eq!(gate["decision_comment"], "from the inbox");
    // Deciding twice: the card says why, nothing changes.
    let again = client()
        .post(format!("{}{path}", node.url))
        .header("cookie", format!("xyn_csrf={csrf}"))
        .header("hx-request", "true")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("decision=reject&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let html = again.text().await.unwrap();
    assert!(
        html.contains("action-error") && html.contains("not waiting"),
        "{html}"
    );
    assert_eq!(node.run(&run_id).await["status"], "completed");
}

/// Retry from the failed step: a new attempt in the same run, the earlier one kept; refused
/// for runs that did not fail, for steps that did not fail and for another run's step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_retried_from_its_failed_step() {
    let fx = Fixture::start().await;
    fx.fail_first("rt", 1);
    let node = Node::builder()
        .blueprint("f.yaml", &flaky_bp(&format!("{}/flaky/rt", fx.url)))
        .blueprint("h.yaml", HELLO_BP)
        .allow_http(&fx.url)
        .start();
    node.emit("demo.flaky", json!({})).await;
    let run_id = node.the_run_of("bp.t.flaky").await;
    let failed = node.until_run_status(&run_id, "failed", 20).await;
    assert_eq!(failed["error"]["code"], "step.failed");
    assert_eq!(node.step(&run_id, "after").await["status"], "skipped");

    // A step that is not the failed one, and another run's step: refused.
    let r = post(
        &node,
        &format!("/api/v1/runs/{run_id}/retry"),
        json!({"step": "after"}),
    )
    .await;
    err(&r, 409, "step.not_failed");
    let other = post(
        &node,
        "/api/v1/runs",
        json!({"blueprint_ref": "bp.t.hello", "inputs": {"who": "x"}}),
    )
    .await;
    let other_id = other.body["run_id"].as_str().unwrap().to_string();
    node.until_run_status(&other_id, "completed", 20).await;
    let foreign = node.step(&other_id, "greet").await["step_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(
        &node,
        &format!("/api/v1/runs/{run_id}/retry"),
        json!({"step": foreign}),
    )
    .await;
    err(&r, 404, "step.not_found");
    // A run that did not fail.
    let r = post(&node, &format!("/api/v1/runs/{other_id}/retry"), json!({})).await;
    err(&r, 409, "run.not_failed");
    let r = post(&node, "/api/v1/runs/not-a-uuid/retry", json!({})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = post(
        &node,
        &format!("/api/v1/runs/{run_id}/retry"),
        json!({"stepp": 1}),
    )
    .await;
    assert_eq!(r.status, 422, "unknown fields are refused: {}", r.text);
    assert_eq!(
        node.run(&run_id).await["status"],
        "failed",
        "refusals change nothing"
    );

    // The CLI retries; the step's second attempt succeeds and the run completes.
    let (code, out, e) = node.cli(&["run", "retry", &run_id]);
    assert_eq!(code, 0, "{out}{e}");
    node.until_run_status(&run_id, "completed", 20).await;
    let call_step = node.step(&run_id, "call").await;
    assert_eq!(call_step["attempt"], 2);
    assert_eq!(call_step["status"], "completed");
    assert_eq!(node.step(&run_id, "after").await["outputs"]["status"], 200);
    assert_eq!(fx.seen("/flaky/rt").len(), 2);
    let events = node.events_of(&run_id).await;
    let seq: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_name"].as_str())
        .filter(|n| {
            matches!(
                *n,
                "xyn.step.failed" | "xyn.run.failed" | "xyn.run.retried" | "xyn.run.completed"
            )
        })
        .collect();
    assert_eq!(
        seq,
        [
            "xyn.step.failed",
            "xyn.run.failed",
            "xyn.run.retried",
            "xyn.run.completed"
        ]
    );
    let retried = events
        .iter()
        .find(|e| e["event_name"] == "xyn.run.retried")
        .unwrap();
    assert!(
        retried["actor"].as_str().unwrap().starts_with("cli:"),
        "{retried}"
    );
    assert_eq!(retried["data"]["step"], "call");
    assert_eq!(retried["data"]["attempt"], 2);
    assert_eq!(retried["data"]["previous_error"]["code"], "step.failed");
    // Retrying a completed run is a conflict with its code.
    let r = post(&node, &format!("/api/v1/runs/{run_id}/retry"), json!({})).await;
    err(&r, 409, "run.not_failed");
    // The run page shows the earlier attempt and the retry.
    let html = node.get_text(&format!("/ui/runs/{run_id}")).await;
    assert!(html.contains("data-testid=\"step-attempt\""), "{html}");
    assert!(html.contains("data-testid=\"run-retries\""), "{html}");
    assert!(node.get("/api/v1/audit/verify").await.1["ok"] == true);
}

/// Re-run: a new run of the same blueprint version with edited inputs, linked both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_with_edited_inputs_is_a_new_linked_run() {
    let node = Node::builder().blueprint("h.yaml", HELLO_BP).start();
    let r = post(
        &node,
        "/api/v1/runs",
        json!({"blueprint_ref": "bp.t.hello", "inputs": {"who": "ann"}}),
    )
    .await;
    let old = r.body["run_id"].as_str().unwrap().to_string();
    node.until_run_status(&old, "completed", 20).await;

    // Bad inputs start nothing.
    let bad = post(
        &node,
        &format!("/api/v1/runs/{old}/rerun"),
        json!({"inputs": {"who": 42}}),
    )
    .await;
    err(&bad, 422, "run.inputs_invalid");
    assert_eq!(node.runs_of("bp.t.hello").await.len(), 1);

    // The CLI with an edited input.
    let new = node.cli_json(&["run", "rerun", &old, "--input", r#"{"who": "bob"}"#]);
    let new_id = new["run_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old);
    let done = node.until_run_status(&new_id, "completed", 20).await;
    assert_eq!(done["outputs"]["message"], "hello bob");
    assert_eq!(done["blueprint_version"], 1);
    // Linked both ways, in the log.
    let on_old = node
        .events_of(&old)
        .await
        .into_iter()
        .find(|e| e["event_name"] == "xyn.run.rerun")
        .unwrap();
    assert_eq!(on_old["data"]["rerun_run_id"], new_id.as_str());
    assert_eq!(on_old["data"]["inputs_changed"], true);
    let trigger = done["trigger_event_id"].as_str().unwrap();
    let requested = node.get(&format!("/api/v1/events/{trigger}")).await.1;
    assert_eq!(requested["event_name"], "xyn.run.requested");
    assert_eq!(requested["data"]["rerun_of"], old.as_str());
    // The same inputs by default (the API, no body).
    let same = call(
        &node,
        Method::POST,
        &format!("/api/v1/runs/{old}/rerun"),
        None,
        &[],
    )
    .await;
    assert_eq!(same.status, 201, "{}", same.text);
    let same_id = same.body["run_id"].as_str().unwrap().to_string();
    let same_run = node.until_run_status(&same_id, "completed", 20).await;
    assert_eq!(same_run["outputs"]["message"], "hello ann");
    // Both pages show the link.
    let base = node.url.clone();
    let page = |id: String| {
        let base = base.clone();
        async move {
            client()
                .get(format!("{base}/ui/runs/{id}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let old_html = page(old.clone()).await;
    assert!(
        old_html.contains(&format!("/ui/runs/{new_id}")),
        "{old_html}"
    );
    assert!(
        old_html.contains("data-testid=\"run-rerun\""),
        "a finished run offers a re-run"
    );
    let new_html = page(new_id.clone()).await;
    assert!(new_html.contains("data-testid=\"run-rerun-of\"") && new_html.contains(&old));
    // The UI's re-run form is prefilled with the old inputs.
    let form = client()
        .get(format!("{}/ui/runs/{old}/rerun", node.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        form.contains("&quot;who&quot;: &quot;ann&quot;") || form.contains("\"who\": \"ann\""),
        "{form}"
    );
    let missing = post(
        &node,
        &format!("/api/v1/runs/{}/rerun", uuid_like()),
        json!({}),
    )
    .await;
    err(&missing, 404, "run.not_found");
}

fn uuid_like() -> &'static str {
    "01890000-0000-7000-8000-000000000000"
}

const NAMED_GATE_BP: &str = r#"
id: bp.t.named
trigger:
  event_type: demo.named
plan:
  - kind: gate
    id: approve
    mode: manual
    message: "Only alice decides"
    approvers: [alice, "role:operator"]
"#;

/// A viewer reads runs and the inbox but cannot decide, retry, re-run or start anything; a gate
/// that names its approvers is decided by them only, and `mine=true` shows each caller theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_approve_retry_or_rerun() {
    let viewer = "viewer-token-0123456789abcdef";
    let alice = "alice-token-0123456789abcdef";
    let bob = "bob-token-0123456789abcdef00";
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        tokens.path(),
        format!("viewer vic {viewer}\nowner alice {alice}\nowner bob {bob}\n"),
    )
    .unwrap();
    let node = Node::builder()
        .blueprint("g.yaml", GATE_BP)
        .blueprint("n.yaml", NAMED_GATE_BP)
        .env("XYN_API_TOKEN", OP)
        .env("XYN_TOKENS_FILE", tokens.path().to_str().unwrap())
        .start();
    let op = format!("Bearer {OP}");
    let vw = format!("Bearer {viewer}");
    let r = call(
        &node,
        Method::POST,
        "/api/v1/runs",
        Some(json!({"blueprint_ref": "bp.t.gate", "inputs": {"who": "v"}})),
        &[("authorization", &op)],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let run_id = r.body["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(
            &node,
            Method::GET,
            &format!("/api/v1/runs/{run_id}"),
            None,
            &[("authorization", &vw)],
        )
        .await;
        assert_eq!(r.status, 200, "a viewer reads runs: {}", r.text);
        if r.body["status"] == "waiting" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never waited: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let inbox = call(
        &node,
        Method::GET,
        "/api/v1/approvals",
        None,
        &[("authorization", &vw)],
    )
    .await;
    assert_eq!(
        inbox.status, 200,
        "a viewer reads the inbox: {}",
        inbox.text
    );
    assert_eq!(inbox.body["items"].as_array().unwrap().len(), 1);
    for (path, body) in [
        (
            format!("/api/v1/runs/{run_id}/steps/approve/approve"),
            json!({}),
        ),
        (
            format!("/api/v1/runs/{run_id}/steps/approve/reject"),
            json!({}),
        ),
        (format!("/api/v1/runs/{run_id}/retry"), json!({})),
        (format!("/api/v1/runs/{run_id}/rerun"), json!({})),
        (format!("/api/v1/runs/{run_id}/cancel"), json!({})),
        (
            "/api/v1/runs".to_string(),
            json!({"blueprint_ref": "bp.t.gate"}),
        ),
        (
            "/api/v1/blueprints/bp.t.gate/disable".to_string(),
            json!({}),
        ),
    ] {
        let r = call(
            &node,
            Method::POST,
            &path,
            Some(body),
            &[("authorization", &vw)],
        )
        .await;
        err(&r, 403, "auth.forbidden");
    }
    let r = call(
        &node,
        Method::GET,
        &format!("/api/v1/runs/{run_id}"),
        None,
        &[("authorization", &op)],
    )
    .await;
    assert_eq!(r.body["status"], "waiting", "nothing changed: {}", r.text);
    let bp = call(
        &node,
        Method::GET,
        "/api/v1/blueprints/bp.t.gate",
        None,
        &[("authorization", &vw)],
    )
    .await;
    assert_eq!(bp.body["enabled"], true, "the viewer switched nothing off");
    // Nor may a viewer write a secret, even a team one.
    let r = call(
        &node,
        Method::PUT,
        "/api/v1/secrets/team/t/x",
        Some(json!({"value": "from-a-viewer"})),
        &[("authorization", &vw)],
    )
    .await;
    err(&r, 403, "auth.forbidden");
    // An owner may not write a system secret through the Secrets page either (the API's rule),
    // and gets the refusal on the page; nothing is stored.
    let al = format!("Bearer {alice}");
    let page = client()
        .get(format!("{}/ui/secrets", node.url))
        .header("authorization", &al)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = set_cookie(page.headers(), "xyn_csrf").unwrap();
    let refused = nofollow()
        .post(format!("{}/ui/secrets", node.url))
        .header("authorization", &al)
        .header("cookie", format!("xyn_csrf={csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "op=set&path=sys%2Flocal%2Fproviders%2Fx&value=owner-wrote-this&csrf={csrf}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let html = refused.text().await.unwrap();
    assert!(
        html.contains("secret-error") && !html.contains("owner-wrote-this"),
        "{html}"
    );
    let listed = call(
        &node,
        Method::GET,
        "/api/v1/secrets",
        None,
        &[("authorization", &op)],
    )
    .await;
    assert!(
        !listed.text.contains("sys/local/providers/x"),
        "{}",
        listed.text
    );
    let runs = call(
        &node,
        Method::GET,
        "/api/v1/runs?blueprint_id=bp.t.gate",
        None,
        &[("authorization", &op)],
    )
    .await;
    assert_eq!(
        runs.body["items"].as_array().map_or(0, Vec::len),
        1,
        "the viewer started nothing"
    );

    // A gate that names alice (and operators): bob, an owner, may not decide it.
    let (al, bo) = (format!("Bearer {alice}"), format!("Bearer {bob}"));
    let r = call(
        &node,
        Method::POST,
        "/api/v1/runs",
        Some(json!({"blueprint_ref": "bp.t.named"})),
        &[("authorization", &bo)],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let named = r.body["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while call(
        &node,
        Method::GET,
        &format!("/api/v1/runs/{named}"),
        None,
        &[("authorization", &bo)],
    )
    .await
    .body["status"]
        != "waiting"
    {
        assert!(Instant::now() < deadline, "the named gate never waited");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mine = |auth: String| {
        let node = &node;
        async move {
            call(
                node,
                Method::GET,
                "/api/v1/approvals?mine=true&blueprint_id=bp.t.named",
                None,
                &[("authorization", &auth)],
            )
            .await
            .body["items"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(mine(bo.clone()).await, 0, "not bob's to decide");
    assert_eq!(mine(al.clone()).await, 1, "alice's");
    assert_eq!(mine(vw.clone()).await, 0, "never a viewer's");
    let all = call(
        &node,
        Method::GET,
        "/api/v1/approvals?blueprint_id=bp.t.named",
        None,
        &[("authorization", &bo)],
    )
    .await;
    assert_eq!(
        all.body["items"][0]["approvers"],
        json!(["alice", "role:operator"])
    );
    assert_eq!(all.body["items"][0]["may_decide"], false);
    let path = format!("/api/v1/runs/{named}/steps/approve/approve");
    let r = call(
        &node,
        Method::POST,
        &path,
        Some(json!({})),
        &[("authorization", &bo)],
    )
    .await;
    err(&r, 403, "gate.not_an_approver");
    let r = call(
        &node,
        Method::POST,
        &format!("/api/v1/runs/{named}/steps/approve/reject"),
        Some(json!({})),
        &[("authorization", &bo)],
    )
    .await;
    err(&r, 403, "gate.not_an_approver");
    let r = call(
        &node,
        Method::POST,
        &path,
        Some(json!({"comment": "mine"})),
        &[("authorization", &al)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["decided_by"], "alice");
}

/// `xyn run watch` follows a run to its end; `xyn event show` prints one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_run_and_event_show_prints_one() {
    let node = Node::builder().blueprint("g.yaml", GATE_BP).start();
    let run_id = start_gate_run(&node, "wat").await;
    node.until_run_status(&run_id, "waiting", 20).await;
    let url = node.url.clone();
    let watcher = {
        let run_id = run_id.clone();
        let dir = node.dir.path().to_path_buf();
        std::thread::spawn(move || {
            std::process::Command::new(support::BIN)
                .args(["run", "watch", &run_id])
                .env("XYN_URL", url)
                .current_dir(dir)
                .output()
                .unwrap()
        })
    };
    // Let the watcher see the waiting gate, then decide it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let decided = std::time::Instant::now();
    let r = post(
        &node,
        &format!("/api/v1/runs/{run_id}/steps/approve/approve"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let out = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();
    // The run's events wake the watcher: it does not wait out its 15 s quiet timeout.
    let took = decided.elapsed();
    assert!(took < Duration::from_secs(8), "watch took {took:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("greet") && stdout.contains("done"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("run {run_id}  completed")),
        "{stdout}"
    );
    // A run that ended badly: exit 1.
    let rejected = start_gate_run(&node, "x").await;
    node.until_run_status(&rejected, "waiting", 20).await;
    let r = post(
        &node,
        &format!("/api/v1/runs/{rejected}/steps/approve/reject"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (code, out, _) = node.cli(&["run", "watch", &rejected]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("failed") && out.contains("gate.rejected"),
        "{out}"
    );

    let ev = node
        .events_of(&run_id)
        .await
        .into_iter()
        .find(|e| e["event_name"] == "xyn.gate.approved")
        .unwrap();
    let id = ev["event_id"].as_str().unwrap();
    let (code, out, e) = node.cli(&["event", "show", id]);
    assert_eq!(code, 0, "{e}");
    assert!(
        out.contains("xyn.gate.approved")
            && out.contains(&run_id)
            && out.contains("\"step\": \"approve\""),
        "{out}"
    );
    let (code, _, e) = node.cli(&["event", "show", uuid_like()]);
    assert_ne!(code, 0);
    assert!(e.contains("event.not_found"), "{e}");

    // `xyn search`: by input value (any case), by the short id, narrowed by status.
    let (code, out, e) = node.cli(&["search", "WAT"]);
    assert_eq!(code, 0, "{e}");
    assert!(
        out.contains("input value") && out.contains(&run_id),
        "{out}"
    );
    assert!(!out.contains(&rejected), "{out}");
    let short = &run_id[run_id.len() - 8..];
    let v = node.cli_json(&["search", &short[..5]]);
    assert!(
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["run_id"] == run_id.as_str()),
        "{v}"
    );
    assert!(
        v["read_as"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "short_id"),
        "{v}"
    );
    let v = node.cli_json(&["search", "--status", "failed", "--blueprint", "bp.t.gate"]);
    let ids: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert_eq!(ids, vec![rejected.as_str()], "{v}");
    let (code, out, _) = node.cli(&["search", "no-such-value-anywhere"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing found"), "{out}");
    let (code, _, e) = node.cli(&["search", "--status", "sleeping"]);
    assert_ne!(code, 0);
    assert!(e.contains("request"), "{e}");
}
