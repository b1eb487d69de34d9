#![allow(clippy::unwrap_used)]
//! API contract tests: every route of `/api/v1`, `/api/internal` and `/hooks` against the real
//! binary — success, every error path, pagination across pages, the SSE stream and webhooks.
//! Auth, roles, CSRF, limits and shutdown are in `api_edge.rs`.

mod records_and_streams;
mod runs_and_blueprints;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::api::{GATE_BP, all_pages, call, err, get, head_seq, post};
use support::{Node, client};

const FLOW_BP: &str = r#"
id: bp.t.flow
trigger:
  event_type: demo.flow
plan:
  - {kind: transform, id: s1, expr: '1'}
  - {kind: transform, id: s2, expr: '2'}
  - {kind: transform, id: s3, expr: '3'}
  - {kind: transform, id: s4, expr: '4'}
  - {kind: transform, id: s5, expr: '5'}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_the_openapi_document_cover_every_route() {
    let node = Node::builder().start();
    let h = get(&node, "/api/v1/health").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "ok");
    assert!(h.body["uptime_seconds"].is_u64());
    assert!(h.body["now"].as_str().unwrap().ends_with('Z'));
    assert!(h.headers.contains_key("x-correlation-id"));
    assert_eq!(h.headers["x-content-type-options"], "nosniff");
    assert_eq!(h.headers["content-type"], "application/json");
    let echoed = call(
        &node,
        Method::GET,
        "/api/v1/health",
        None,
        &[("x-correlation-id", "probe-1")],
    )
    .await;
    assert_eq!(echoed.headers["x-correlation-id"], "probe-1");
    let full = get(&node, "/api/v1/health?verbose=1").await;
    err(&full, 422, "request.unknown_field");
    let bad = call(
        &node,
        Method::GET,
        "/api/v1/health",
        None,
        &[("x-correlation-id", "has space")],
    )
    .await;
    err(&bad, 400, "request.invalid");
    assert_eq!(bad.headers["x-content-type-options"], "nosniff");
    assert_eq!(
        call(&node, Method::HEAD, "/api/v1/health", None, &[])
            .await
            .status,
        200
    );

    let doc = get(&node, "/api/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    // Descriptions say what they mean; readers do not have the design document.
    assert!(
        !doc.body.to_string().contains('§'),
        "a section number in the OpenAPI document"
    );
    let mut ops: Vec<String> = vec![];
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push(format!("{} {path}", method.to_uppercase()));
            for code in [
                "400", "401", "403", "408", "413", "422", "431", "500", "503",
            ] {
                assert!(
                    op["responses"].get(code).is_some(),
                    "{method} {path} documents {code}"
                );
            }
        }
    }
    ops.sort();
    let mut want = vec![
        "GET /api/v1/health",
        "GET /api/v1/health/ready",
        "GET /api/v1/events",
        "POST /api/v1/events",
        "GET /api/v1/events/stream",
        "GET /api/v1/events/{event_id}",
        "GET /api/v1/runs",
        "POST /api/v1/runs",
        "GET /api/v1/runs/{run_id}",
        "POST /api/v1/runs/{run_id}/cancel",
        "GET /api/v1/runs/{run_id}/steps",
        "GET /api/v1/runs/{run_id}/steps/{step_id}",
        "POST /api/v1/runs/{run_id}/steps/{step_id}/approve",
        "POST /api/v1/runs/{run_id}/steps/{step_id}/reject",
        "GET /api/v1/search",
        "POST /api/v1/runs/{run_id}/retry",
        "POST /api/v1/runs/{run_id}/rerun",
        "GET /api/v1/approvals",
        "GET /api/v1/blueprints",
        "POST /api/v1/blueprints",
        "POST /api/v1/blueprints/validate",
        "GET /api/v1/blueprints/{blueprint_id}",
        "GET /api/v1/blueprints/{blueprint_id}/versions",
        "POST /api/v1/blueprints/{blueprint_id}/disable",
        "POST /api/v1/blueprints/{blueprint_id}/enable",
        "GET /api/v1/drafts",
        "POST /api/v1/drafts",
        "GET /api/v1/drafts/{draft_id}",
        "PUT /api/v1/drafts/{draft_id}",
        "POST /api/v1/drafts/{draft_id}/validate",
        "POST /api/v1/drafts/{draft_id}/promote",
        "GET /api/v1/artifacts",
        "POST /api/v1/artifacts",
        "GET /api/v1/artifacts/{artifact_id}",
        "GET /api/v1/artifacts/{artifact_id}/download",
        "GET /api/v1/footprints",
        "GET /api/v1/footprints/rollup",
        "GET /api/v1/audit/verify",
        "GET /api/v1/packs",
        "POST /api/v1/packs",
        "GET /api/v1/packs/{id}",
        "DELETE /api/v1/packs/{id}",
        "GET /api/v1/secrets",
        "PUT /api/v1/secrets/{path}",
        "DELETE /api/v1/secrets/{path}",
        "GET /api/internal/stats",
        "POST /api/internal/actions/execute",
        "GET /api/internal/workcells",
        "POST /api/internal/workcells/create",
        "POST /api/internal/workcells/{id}/destroy",
        "POST /hooks/{source}",
    ];
    want.sort();
    assert_eq!(ops, want);

    // Unknown routes and methods use the error shape too.
    err(&get(&node, "/api/v1/nope").await, 404, "route.not_found");
    err(
        &call(&node, Method::DELETE, "/api/v1/events", None, &[]).await,
        405,
        "route.method_not_allowed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_list_filter_paginate_and_get() {
    let node = Node::builder().start();
    for i in 0..7 {
        node.emit("demo.page", json!({"i": i})).await;
    }
    node.emit("other.thing", json!({})).await;
    let (items, pages) = all_pages(&node, "/api/v1/events?event_name=demo.page", 3).await;
    assert_eq!(pages, 3);
    let is: Vec<i64> = items
        .iter()
        .map(|e| e["data"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(
        is,
        vec![6, 5, 4, 3, 2, 1, 0],
        "newest first, no gap, no repeat"
    );

    // Stable under concurrent inserts: a page taken after new events continues where it was.
    let first = get(&node, "/api/v1/events?event_name=demo.page&limit=3").await;
    node.emit("demo.page", json!({"i": 99})).await;
    let c = first.body["next_cursor"].as_str().unwrap();
    let second = get(
        &node,
        &format!("/api/v1/events?event_name=demo.page&limit=3&cursor={c}"),
    )
    .await;
    let is: Vec<i64> = second.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(is, vec![3, 2, 1]);

    let pattern = get(&node, "/api/v1/events?event_name=demo.*&limit=500").await;
    assert_eq!(pattern.body["items"].as_array().unwrap().len(), 8);
    let one = &pattern.body["items"][0];
    let got = get(
        &node,
        &format!("/api/v1/events/{}", one["event_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, *one);
    for key in [
        "event_id",
        "event_name",
        "occurred_at",
        "env_id",
        "actor",
        "correlation_id",
        "run_id",
        "step_id",
        "resource",
        "data",
        "seq",
        "hash",
    ] {
        assert!(got.body.get(key).is_some(), "{key}");
    }

    err(
        &get(&node, "/api/v1/events/not-a-uuid").await,
        400,
        "request.invalid_id",
    );
    err(
        &get(&node, "/api/v1/events/01a200a6-c4d2-7531-95be-1c4b120fba82").await,
        404,
        "event.not_found",
    );
    err(
        &get(&node, "/api/v1/events?cursor=zzz").await,
        400,
        "request.invalid_cursor",
    );
    err(
        &get(&node, "/api/v1/events?cursor=c-5").await,
        400,
        "request.invalid_cursor",
    );
    err(
        &get(&node, "/api/v1/events?limit=0").await,
        400,
        "request.invalid",
    );
    err(
        &get(&node, "/api/v1/events?limit=abc").await,
        400,
        "request.invalid",
    );
    err(
        &get(&node, "/api/v1/events?run_id=nope").await,
        400,
        "request.invalid_id",
    );
    let r = get(&node, "/api/v1/events?colour=red").await;
    err(&r, 422, "request.unknown_field");
    assert!(
        r.text.contains("colour"),
        "the parameter is named: {}",
        r.text
    );

    // Emitting: every refusal is a clear error and writes nothing.
    let before = head_seq(&get(&node, "/api/v1/events?limit=1").await);
    let bad = [
        (
            call(
                &node,
                Method::POST,
                "/api/v1/events",
                None,
                &[("content-type", "application/json")],
            )
            .await,
            400,
            "request.invalid_json",
        ),
        (
            post(&node, "/api/v1/events", json!({"event_name": 5})).await,
            422,
            "request.invalid",
        ),
        (
            post(
                &node,
                "/api/v1/events",
                json!({"event_name": "a.b", "colour": 1}),
            )
            .await,
            422,
            "request.unknown_field",
        ),
        (
            post(&node, "/api/v1/events", json!({"event_name": "Bad!"})).await,
            422,
            "event.invalid_name",
        ),
        (
            post(&node, "/api/v1/events", json!({"event_name": "xyn.x.y"})).await,
            422,
            "event.reserved_name",
        ),
        (
            post(
                &node,
                "/api/v1/events",
                json!({"event_name": "a.b", "data": 3}),
            )
            .await,
            422,
            "event.invalid_data",
        ),
        (
            post(
                &node,
                "/api/v1/events",
                json!({"event_name": "a.b", "run_id": "x"}),
            )
            .await,
            400,
            "request.invalid_id",
        ),
        (
            post(
                &node,
                "/api/v1/events",
                json!({"event_name": "a.b", "resource": {"type": "", "id": ""}}),
            )
            .await,
            422,
            "request.invalid",
        ),
    ];
    for (r, s, c) in &bad {
        err(r, *s, c);
    }
    let r = client()
        .post(format!("{}/api/v1/events", node.url))
        .body("{\"event_name\":\"a.b\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "no JSON content type");
    assert_eq!(
        head_seq(&get(&node, "/api/v1/events?limit=1").await),
        before
    );
}
