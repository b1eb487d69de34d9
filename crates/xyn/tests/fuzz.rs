#![allow(clippy::unwrap_used)]
//! Property-based fuzzing of the API from its own OpenAPI document: schemathesis (PyPI,
//! installed by `.ci/run`) generates requests for every operation — including stateful
//! sequences that follow the ids one response returns — against the real binary with auth on,
//! and checks that no response is a 5xx and that every status, content type, header and body
//! matches the document.
//!
//! Not fuzzed: the endless SSE stream (`/api/v1/events/stream`, covered by `api.rs`) and
//! `/api/internal/actions/execute` (it would let generated input make outgoing requests).

mod support;

use std::process::Command;

use support::Node;

const TOKEN: &str = "fuzz-operator-token-0123456789";

const BP: &str = r#"
id: bp.fuzz.gate
trigger:
  event_type: fuzz.gate
plan:
  - {kind: transform, id: prep, expr: '.inputs'}
  - {kind: gate, id: approve, mode: manual}
"#;

fn schemathesis() -> String {
    let found = Command::new("schemathesis").arg("--version").output();
    match found {
        Ok(o) if o.status.success() => "schemathesis".into(),
        _ => panic!(
            "schemathesis is not installed: `pip install schemathesis` (.ci/run installs it). \
             This test does not skip."
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx_and_no_response_off_the_document() {
    let st = schemathesis();
    let node = Node::builder()
        .blueprint("gate.yaml", BP)
        .env("XYN_API_TOKEN", TOKEN)
        .env("XYN_HOOK_DEMO_SECRET", "fuzz-hook-secret-0123456789")
        .toml("[hooks.demo]\nevent_name = \"fuzz.hook\"\nsecret_env = \"XYN_HOOK_DEMO_SECRET\"\n")
        .start();
    // Some data to find, so stateful sequences reach real runs, steps and artifacts.
    let c = support::client();
    for _ in 0..2 {
        let r = c
            .post(format!("{}/api/v1/runs", node.url))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"blueprint_ref": "bp.fuzz.gate"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let url = node.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .args([
                "run",
                &format!("{url}/api/v1/openapi.json"),
                "--header",
                &format!("Authorization: Bearer {TOKEN}"),
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
                "--exclude-path",
                "/api/v1/events/stream",
                "--exclude-path",
                "/api/internal/actions/execute",
                "--max-examples",
                "40",
                "--seed",
                "20261122",
                // One worker: hypothesis' lambda introspection is not thread-safe on CPython 3.11.
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "--no-color",
            ])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}\n--- node log\n{}",
        support::tail(&node.stdout_log(), 30)
    );
    assert!(
        stdout.contains("generated"),
        "schemathesis ran no test cases:\n{stdout}\n{stderr}"
    );
    // The node logged no internal error while being fuzzed.
    assert!(
        !node.stdout_log().contains("\"level\":\"ERROR\""),
        "{}",
        support::tail(&node.stdout_log(), 40)
    );
}
