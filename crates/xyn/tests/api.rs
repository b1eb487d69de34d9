#![allow(clippy::unwrap_used)]
//! API contract tests: every route of `/api/v1`, `/api/internal` and `/hooks` against the real
//! binary — success, every error path, pagination across pages, the SSE stream and webhooks.
//! Auth, roles, CSRF, limits and shutdown are in `api_edge.rs`.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_steps_gates_and_cancel() {
    let node = Node::builder()
        .blueprint("gate.yaml", GATE_BP)
        .blueprint("flow.yaml", FLOW_BP)
        .start();
    // Create by hand; the actor and correlation id are recorded.
    let r = call(
        &node,
        Method::POST,
        "/api/v1/runs",
        Some(json!({"blueprint_ref": "bp.t.gate", "inputs": {"who": "ann"}, "name": "first"})),
        &[("x-correlation-id", "corr-runs-1"), ("x-actor", "cli:ann")],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let run_id = r.body["run_id"].as_str().unwrap().to_string();
    assert_eq!(r.body["name"], "first");
    assert_eq!(r.body["actor"], "cli:ann");
    assert_eq!(r.body["correlation_id"], "corr-runs-1");
    node.until_step_status(&run_id, "approve", "waiting", 10)
        .await;

    // Steps: by id and by name; paginated.
    let (steps, pages) = all_pages(&node, &format!("/api/v1/runs/{run_id}/steps"), 2).await;
    assert_eq!(pages, 2);
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["greet", "approve", "done"]);
    let greet_id = steps[0]["step_id"].as_str().unwrap();
    let by_id = get(&node, &format!("/api/v1/runs/{run_id}/steps/{greet_id}")).await;
    assert_eq!(by_id.body["outputs"]["message"], "hello ann");
    err(
        &get(&node, &format!("/api/v1/runs/{run_id}/steps/nope")).await,
        404,
        "step.not_found",
    );
    err(
        &get(&node, &format!("/api/v1/runs/{run_id}/steps?cursor=q")).await,
        400,
        "request.invalid_cursor",
    );

    // Gate decisions: wrong step kinds and states are conflicts; a decision records the actor.
    err(
        &post(
            &node,
            &format!("/api/v1/runs/{run_id}/steps/greet/approve"),
            json!({}),
        )
        .await,
        409,
        "step.not_a_gate",
    );
    err(
        &post(
            &node,
            &format!("/api/v1/runs/{run_id}/steps/approve/approve"),
            json!({"comment": 1}),
        )
        .await,
        422,
        "request.invalid",
    );
    err(
        &post(
            &node,
            &format!("/api/v1/runs/{run_id}/steps/approve/approve"),
            json!({"why": "x"}),
        )
        .await,
        422,
        "request.unknown_field",
    );
    let ok = call(
        &node,
        Method::POST,
        &format!("/api/v1/runs/{run_id}/steps/approve/approve"),
        Some(json!({"comment": "fine"})),
        &[("x-actor", "cli:bob")],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["decided_by"], "cli:bob");
    let done = node.until_run_status(&run_id, "completed", 10).await;
    assert_eq!(done["outputs"]["message"], "hello ann");
    err(
        &post(
            &node,
            &format!("/api/v1/runs/{run_id}/steps/approve/reject"),
            json!({}),
        )
        .await,
        409,
        "step.not_waiting",
    );
    err(
        &post(&node, &format!("/api/v1/runs/{run_id}/cancel"), json!({})).await,
        409,
        "run.already_finished",
    );

    // Reject and cancel.
    let r2 = post(
        &node,
        "/api/v1/runs",
        json!({"blueprint_ref": "bp.t.gate@1"}),
    )
    .await;
    let r2 = r2.body["run_id"].as_str().unwrap().to_string();
    node.until_step_status(&r2, "approve", "waiting", 10).await;
    // The body is optional: an empty one is no comment.
    let rej = call(
        &node,
        Method::POST,
        &format!("/api/v1/runs/{r2}/steps/approve/reject"),
        None,
        &[],
    )
    .await;
    assert_eq!(rej.status, 200, "{}", rej.text);
    node.until_run_status(&r2, "failed", 10).await;
    let r3 = post(&node, "/api/v1/runs", json!({"blueprint_ref": "bp.t.gate"})).await;
    let r3 = r3.body["run_id"].as_str().unwrap().to_string();
    node.until_step_status(&r3, "approve", "waiting", 10).await;
    let c = post(
        &node,
        &format!("/api/v1/runs/{r3}/cancel"),
        json!({"reason": "test"}),
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.body["status"], "cancelled");

    // Refusals.
    err(
        &post(&node, "/api/v1/runs", json!({})).await,
        422,
        "request.invalid",
    );
    err(
        &post(
            &node,
            "/api/v1/runs",
            json!({"blueprint_ref": "bp.t.gate@x"}),
        )
        .await,
        422,
        "request.invalid",
    );
    err(
        &post(
            &node,
            "/api/v1/runs",
            json!({"blueprint_ref": "bp.t.gate@9"}),
        )
        .await,
        404,
        "blueprint.not_found",
    );
    err(
        &post(&node, "/api/v1/runs", json!({"blueprint_ref": "bp.none"})).await,
        404,
        "blueprint.not_found",
    );
    err(
        &post(
            &node,
            "/api/v1/runs",
            json!({"blueprint_ref": "bp.t.gate", "inputs": {"who": 5}}),
        )
        .await,
        422,
        "run.inputs_invalid",
    );
    err(
        &post(
            &node,
            "/api/v1/runs",
            json!({"blueprint_ref": "bp.t.gate", "inputs": []}),
        )
        .await,
        422,
        "request.invalid",
    );
    err(
        &post(
            &node,
            "/api/v1/runs",
            json!({"blueprint_ref": "bp.t.gate", "priority": "high"}),
        )
        .await,
        422,
        "request.invalid",
    );
    err(
        &get(&node, "/api/v1/runs/xyz").await,
        400,
        "request.invalid_id",
    );
    err(
        &get(&node, "/api/v1/runs/01a200a6-c4d2-7531-95be-1c4b120fba82").await,
        404,
        "run.not_found",
    );
    err(
        &post(
            &node,
            "/api/v1/runs/01a200a6-c4d2-7531-95be-1c4b120fba82/cancel",
            json!({}),
        )
        .await,
        404,
        "run.not_found",
    );
    err(
        &get(&node, "/api/v1/runs?status=sleeping").await,
        400,
        "request.invalid",
    );

    // Lists with filters, across pages, under concurrent inserts.
    for _ in 0..5 {
        node.emit("demo.flow", json!({})).await;
    }
    let (flow, pages) = all_pages(&node, "/api/v1/runs?blueprint_id=bp.t.flow", 2).await;
    assert_eq!((flow.len(), pages), (5, 3));
    let mut ids: Vec<&str> = flow.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    let cancelled = get(&node, "/api/v1/runs?status=cancelled").await;
    assert_eq!(cancelled.body["items"].as_array().unwrap().len(), 1);
    let two = get(
        &node,
        "/api/v1/runs?status=completed,failed&blueprint_id=bp.t.gate",
    )
    .await;
    assert_eq!(two.body["items"].as_array().unwrap().len(), 2);
    let by_corr = get(&node, "/api/v1/runs?correlation_id=corr-runs-1").await;
    assert_eq!(by_corr.body["items"][0]["run_id"], run_id.as_str());
    // The correlation id went into the run's events.
    let evs = node.events_of(&run_id).await;
    assert!(evs.iter().all(|e| e["correlation_id"] == "corr-runs-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blueprints_apply_validate_versions_and_pages() {
    let node = Node::builder().start();
    for id in ["bp.a", "bp.b", "bp.c"] {
        let def = FLOW_BP.replace("bp.t.flow", id);
        let r = post(&node, "/api/v1/blueprints", json!({"definition": def})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["created"], true);
        assert_eq!(r.body["version"], 1);
    }
    let again = post(
        &node,
        "/api/v1/blueprints",
        json!({"definition": FLOW_BP.replace("bp.t.flow", "bp.a")}),
    )
    .await;
    assert_eq!(
        (again.status, again.body["created"].as_bool()),
        (200, Some(false))
    );
    let v2 = post(
        &node,
        "/api/v1/blueprints",
        json!({"definition": FLOW_BP.replace("bp.t.flow", "bp.a").replace("'5'", "'6'")}),
    )
    .await;
    assert_eq!((v2.status, v2.body["version"].as_i64()), (201, Some(2)));

    let (bps, pages) = all_pages(&node, "/api/v1/blueprints", 2).await;
    assert_eq!(pages, 2);
    let ids: Vec<&str> = bps
        .iter()
        .map(|b| b["blueprint_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bp.a", "bp.b", "bp.c"]);
    assert_eq!(bps[0]["version"], 2);
    let (versions, _) = all_pages(&node, "/api/v1/blueprints/bp.a/versions", 1).await;
    assert_eq!(
        versions
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(
        get(&node, "/api/v1/blueprints/bp.a?version=1").await.body["version"],
        1
    );
    assert_eq!(
        get(&node, "/api/v1/blueprints/bp.a").await.body["version"],
        2
    );
    err(
        &get(&node, "/api/v1/blueprints/bp.a?version=x").await,
        400,
        "request.invalid",
    );
    err(
        &get(&node, "/api/v1/blueprints/bp.a?version=7").await,
        404,
        "blueprint.not_found",
    );
    err(
        &get(&node, "/api/v1/blueprints/bp.none").await,
        404,
        "blueprint.not_found",
    );
    err(
        &get(&node, "/api/v1/blueprints/bp.none/versions").await,
        404,
        "blueprint.not_found",
    );
    err(
        &get(&node, "/api/v1/blueprints?cursor=c1").await,
        400,
        "request.invalid_cursor",
    );

    let bad = post(
        &node,
        "/api/v1/blueprints",
        json!({"definition": "id: x\nplan: []"}),
    )
    .await;
    err(&bad, 422, "blueprint.invalid");
    assert!(
        !bad.body["error"]["details"]["issues"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    err(
        &post(&node, "/api/v1/blueprints", json!({"definition": 3})).await,
        422,
        "request.invalid",
    );
    let v = post(
        &node,
        "/api/v1/blueprints/validate",
        json!({"definition": "id: x\nplan: []"}),
    )
    .await;
    assert_eq!((v.status, v.body["valid"].as_bool()), (200, Some(false)));
    assert!(
        v.body["issues"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with('$')
    );
    let ok = post(
        &node,
        "/api/v1/blueprints/validate",
        json!({"definition": FLOW_BP}),
    )
    .await;
    assert_eq!(
        (ok.body["valid"].as_bool(), ok.body["blueprint_id"].as_str()),
        (Some(true), Some("bp.t.flow"))
    );
    assert_eq!(
        get(&node, "/api/v1/blueprints/bp.t.flow").await.status,
        404,
        "validate applies nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_create_revise_validate_promote() {
    let node = Node::builder().start();
    let d = post(
        &node,
        "/api/v1/drafts",
        json!({"name": "mine", "definition": "id: bp.d\nplan: []\n"}),
    )
    .await;
    assert_eq!(d.status, 201, "{}", d.text);
    let id = d.body["draft_id"].as_str().unwrap().to_string();
    assert_eq!(
        (d.body["status"].as_str(), d.body["revision"].as_i64()),
        (Some("draft"), Some(1))
    );
    assert_eq!(d.body["content"]["id"], "bp.d");

    let v = post(&node, &format!("/api/v1/drafts/{id}/validate"), json!(null)).await;
    assert_eq!(
        (v.status, v.body["is_valid"].as_bool()),
        (200, Some(false)),
        "{}",
        v.text
    );
    assert!(
        v.body["issues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["code"] == "plan.empty"),
        "{}",
        v.text
    );
    err(
        &post(&node, &format!("/api/v1/drafts/{id}/promote"), json!(null)).await,
        409,
        "validation_failed",
    );

    let fixed = call(
        &node,
        Method::PUT,
        &format!("/api/v1/drafts/{id}"),
        Some(json!({"definition": FLOW_BP.replace("bp.t.flow", "bp.d")})),
        &[],
    )
    .await;
    assert_eq!(
        (fixed.status, fixed.body["revision"].as_i64()),
        (200, Some(2)),
        "{}",
        fixed.text
    );
    let v = post(&node, &format!("/api/v1/drafts/{id}/validate"), json!(null)).await;
    assert_eq!(v.body["is_valid"], true, "{}", v.text);
    assert_eq!(v.body["draft"]["status"], "validated");
    let p = post(&node, &format!("/api/v1/drafts/{id}/promote"), json!(null)).await;
    assert_eq!(
        (
            p.status,
            p.body["blueprint_id"].as_str(),
            p.body["version"].as_i64()
        ),
        (200, Some("bp.d"), Some(1)),
        "{}",
        p.text
    );
    assert_eq!(get(&node, "/api/v1/blueprints/bp.d").await.status, 200);
    err(
        &post(&node, &format!("/api/v1/drafts/{id}/promote"), json!(null)).await,
        409,
        "conflict",
    );
    assert_eq!(
        get(&node, &format!("/api/v1/drafts/{id}")).await.body["status"],
        "promoted"
    );

    err(
        &post(
            &node,
            "/api/v1/drafts",
            json!({"name": "", "definition": "a: 1"}),
        )
        .await,
        422,
        "invalid_definition",
    );
    err(
        &post(
            &node,
            "/api/v1/drafts",
            json!({"name": "x", "definition": "a: [unclosed"}),
        )
        .await,
        422,
        "invalid_definition",
    );
    err(
        &post(
            &node,
            "/api/v1/drafts",
            json!({"name": "x", "definition": 5}),
        )
        .await,
        422,
        "request.invalid",
    );
    err(
        &post(
            &node,
            "/api/v1/drafts",
            json!({"name": "x", "definition": "a: 1", "kind": "song"}),
        )
        .await,
        422,
        "invalid_definition",
    );
    err(
        &post(&node, "/api/v1/drafts", json!({"definition": "a: 1"})).await,
        422,
        "request.invalid",
    );
    err(
        &get(&node, "/api/v1/drafts/nope").await,
        400,
        "request.invalid_id",
    );
    let missing = "01a200a6-c4d2-7531-95be-1c4b120fba82";
    err(
        &get(&node, &format!("/api/v1/drafts/{missing}")).await,
        404,
        "draft_not_found",
    );
    err(
        &post(
            &node,
            &format!("/api/v1/drafts/{missing}/validate"),
            json!(null),
        )
        .await,
        404,
        "draft_not_found",
    );
    err(
        &post(
            &node,
            &format!("/api/v1/drafts/{missing}/promote"),
            json!(null),
        )
        .await,
        404,
        "draft_not_found",
    );
    err(
        &call(
            &node,
            Method::PUT,
            &format!("/api/v1/drafts/{missing}"),
            Some(json!({"definition": "a: 1"})),
            &[],
        )
        .await,
        404,
        "draft_not_found",
    );

    for i in 0..4 {
        post(
            &node,
            "/api/v1/drafts",
            json!({"name": format!("d{i}"), "definition": {"id": format!("bp.o{i}")}}),
        )
        .await;
    }
    let (drafts, pages) = all_pages(&node, "/api/v1/drafts", 2).await;
    assert_eq!((drafts.len(), pages), (5, 3));
    assert_eq!(drafts[0]["name"], "d3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_upload_list_download() {
    let node = Node::builder().blueprint("gate.yaml", GATE_BP).start();
    let run = post(&node, "/api/v1/runs", json!({"blueprint_ref": "bp.t.gate"})).await;
    let run_id = run.body["run_id"].as_str().unwrap().to_string();
    node.until_step_status(&run_id, "approve", "waiting", 10)
        .await;
    let step_id = node.step(&run_id, "greet").await["step_id"]
        .as_str()
        .unwrap()
        .to_string();

    let up = call(
        &node,
        Method::POST,
        "/api/v1/artifacts",
        Some(json!({"name": "notes.txt", "kind": "file", "content_type": "text/plain", "byte_length": 11,
            "run_id": run_id, "step_id": step_id, "metadata": {"k": "v"}, "content_base64": "aGVsbG8gd29ybGQ="})),
        &[("x-actor", "cli:up")],
    )
    .await;
    assert_eq!(up.status, 201, "{}", up.text);
    let aid = up.body["artifact_id"].as_str().unwrap().to_string();
    assert_eq!(up.body["byte_length"], 11);
    assert_eq!(up.body["created_by"], "cli:up");
    assert_eq!(
        up.body["sha256"],
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    let dl = client()
        .get(format!("{}/api/v1/artifacts/{aid}/download", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(dl.status(), 200);
    assert_eq!(dl.headers()["content-type"], "text/plain");
    assert!(
        dl.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("notes.txt")
    );
    assert_eq!(dl.text().await.unwrap(), "hello world");
    let meta = get(&node, &format!("/api/v1/artifacts/{aid}")).await;
    assert_eq!(meta.body["metadata"]["k"], "v");
    let evs = node.events_of(&run_id).await;
    assert!(
        evs.iter()
            .any(|e| e["event_name"] == "xyn.artifact.uploaded" && e["actor"] == "cli:up")
    );

    for i in 0..4 {
        let r = post(&node, "/api/v1/artifacts", json!({"name": format!("a{i}"), "kind": "report", "content_type": "application/json", "content_base64": "e30="})).await;
        assert_eq!(r.status, 201);
    }
    let (reports, pages) = all_pages(&node, "/api/v1/artifacts?kind=report", 3).await;
    assert_eq!((reports.len(), pages), (4, 2));
    assert_eq!(
        get(
            &node,
            &format!("/api/v1/artifacts?run_id={run_id}&step_id={step_id}")
        )
        .await
        .body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let missing = "01a200a6-c4d2-7531-95be-1c4b120fba82";
    let base = json!({"name": "x", "kind": "file", "content_type": "text/plain", "content_base64": "eA=="});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    err(
        &post(
            &node,
            "/api/v1/artifacts",
            with("content_base64", json!("***")),
        )
        .await,
        422,
        "request.invalid",
    );
    err(
        &post(&node, "/api/v1/artifacts", with("byte_length", json!(5))).await,
        422,
        "request.invalid",
    );
    err(
        &post(&node, "/api/v1/artifacts", with("run_id", json!(missing))).await,
        404,
        "run.not_found",
    );
    err(
        &post(&node, "/api/v1/artifacts", with("run_id", json!("bad"))).await,
        400,
        "request.invalid_id",
    );
    err(
        &post(&node, "/api/v1/artifacts", with("step_id", json!(missing))).await,
        422,
        "request.invalid",
    );
    err(
        &post(&node, "/api/v1/artifacts", with("name", json!(""))).await,
        422,
        "request.invalid",
    );
    err(
        &post(&node, "/api/v1/artifacts", with("metadata", json!([1]))).await,
        422,
        "request.invalid",
    );
    err(
        &post(&node, "/api/v1/artifacts", with("extra", json!(1))).await,
        422,
        "request.unknown_field",
    );
    let mut wrong_step = with("run_id", json!(run_id));
    wrong_step["step_id"] = json!(missing);
    err(
        &post(&node, "/api/v1/artifacts", wrong_step).await,
        404,
        "step.not_found",
    );
    err(
        &get(&node, &format!("/api/v1/artifacts/{missing}")).await,
        404,
        "artifact.not_found",
    );
    err(
        &get(&node, &format!("/api/v1/artifacts/{missing}/download")).await,
        404,
        "artifact.not_found",
    );
    err(
        &get(&node, "/api/v1/artifacts/zzz").await,
        400,
        "request.invalid_id",
    );
    err(
        &get(&node, "/api/v1/artifacts?step_id=zzz").await,
        400,
        "request.invalid_id",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn footprints_rollup_and_audit_verify() {
    let node = Node::builder().blueprint("flow.yaml", FLOW_BP).start();
    for _ in 0..3 {
        node.emit("demo.flow", json!({})).await;
    }
    node.until(10, "three completed runs", || async {
        let r = get(&node, "/api/v1/runs?status=completed").await;
        (r.body["items"].as_array().unwrap().len() == 3).then_some(Value::Null)
    })
    .await;
    let (walls, _) = all_pages(&node, "/api/v1/footprints?metric=wall_ms", 4).await;
    assert!(walls.len() >= 3, "{walls:?}");
    assert!(
        walls
            .iter()
            .all(|f| f["metric"] == "wall_ms" && f["unit"] == "ms")
    );
    let run_id = walls[0]["run_id"].as_str().unwrap();
    let of_run = get(
        &node,
        &format!("/api/v1/footprints?run_id={run_id}&limit=500"),
    )
    .await;
    assert!(
        of_run.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["run_id"] == run_id)
    );
    let none = get(&node, "/api/v1/footprints?since=2099-01-01T00:00:00Z").await;
    assert!(none.body["items"].as_array().unwrap().is_empty());

    let roll = get(
        &node,
        "/api/v1/footprints/rollup?metric=run.count,step.count",
    )
    .await;
    assert_eq!(roll.status, 200, "{}", roll.text);
    let items = roll.body["items"].as_array().unwrap();
    let total = |m: &str| -> f64 {
        items
            .iter()
            .filter(|d| d["metric"] == m)
            .map(|d| d["total"].as_f64().unwrap())
            .sum()
    };
    assert_eq!(total("run.count"), 3.0);
    assert_eq!(total("step.count"), 15.0);
    assert!(items[0]["day"].as_str().unwrap().len() == 10);
    assert!(roll.body["next_cursor"].is_null());
    err(
        &get(&node, "/api/v1/footprints?since=yesterday").await,
        400,
        "request.invalid",
    );
    err(
        &get(&node, "/api/v1/footprints/rollup?until=soon").await,
        400,
        "request.invalid",
    );
    err(
        &get(&node, "/api/v1/footprints?cursor=x").await,
        400,
        "request.invalid_cursor",
    );
    err(
        &get(&node, "/api/v1/footprints/rollup?limit=3").await,
        422,
        "request.unknown_field",
    );

    let a = get(&node, "/api/v1/audit/verify").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["ok"], true, "{}", a.text);
    assert!(a.body["events_checked"].as_u64().unwrap() > 10);
    assert_eq!(
        a.body["last_seq"],
        head_seq(&get(&node, "/api/v1/events?limit=1").await)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_pushes_and_resumes_with_last_event_id() {
    let node = Node::builder().start();
    node.emit("demo.before", json!({"n": 0})).await;
    let resp = client()
        .get(format!(
            "{}/api/v1/events/stream?event_name=demo.*",
            node.url
        ))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp;
    // Idle while streaming: no database query.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s1 = get(&node, "/api/internal/stats").await.body["store"].clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s2 = get(&node, "/api/internal/stats").await.body["store"].clone();
    assert_eq!(
        s1["reads"].as_u64().unwrap(),
        s2["reads"].as_u64().unwrap(),
        "an open stream does not poll"
    );

    for n in 1..=3 {
        node.emit("demo.live", json!({"n": n})).await;
        node.emit("other.skip", json!({})).await;
    }
    let mut buf = String::new();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let chunk = stream.chunk().await.unwrap().unwrap();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            if buf.matches("data:").count() >= 3 {
                break;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "three events arrive: {buf}");
    let events: Vec<(i64, Value)> = buf
        .split("\n\n")
        .filter(|b| b.contains("data:"))
        .map(|b| {
            let id = b
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let data = b
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .unwrap()
                .trim();
            (id, serde_json::from_str(data).unwrap())
        })
        .collect();
    assert_eq!(
        events
            .iter()
            .map(|(_, e)| e["data"]["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3],
        "only new, matching events, in order: {buf}"
    );
    assert!(events.iter().all(|(id, e)| e["seq"] == *id));
    drop(stream);

    // Resume after the first: the rest arrive from the log, then live ones follow.
    let first = events[0].0;
    let mut resumed = client()
        .get(format!(
            "{}/api/v1/events/stream?event_name=demo.live",
            node.url
        ))
        .header("Last-Event-ID", first.to_string())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    node.emit("demo.live", json!({"n": 4})).await;
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while buf.matches("data:").count() < 3 {
            let chunk = resumed.chunk().await.unwrap().unwrap();
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap();
    let ns: Vec<i64> = buf
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| {
            serde_json::from_str::<Value>(d.trim()).unwrap()["data"]["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [2, 3, 4]);

    err(
        &call(
            &node,
            Method::GET,
            "/api/v1/events/stream",
            None,
            &[("last-event-id", "abc")],
        )
        .await,
        400,
        "request.invalid_cursor",
    );
    err(
        &get(&node, "/api/v1/events/stream?run_id=x").await,
        400,
        "request.invalid_id",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_map_bodies_to_events() {
    let node = Node::builder()
        .env("XYN_HOOK_GH_SECRET", "gh-secret-value")
        .toml("[hooks.checkmk]\nevent_name = \"checkmk.alert\"\n\n[hooks.gh]\nname_from_header = \"X-GitHub-Event\"\nevents = [\"push\", \"pull_request\"]\nprefix = \"github.\"\nsecret_env = \"XYN_HOOK_GH_SECRET\"\n\n[hooks.typed]\nname_from = \"/type\"\nprefix = \"ext.\"\n")
        .start();
    let r = call(
        &node,
        Method::POST,
        "/hooks/checkmk",
        Some(json!({"host": "web-1"})),
        &[("x-correlation-id", "hook-1")],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (r.body["event_name"].as_str(), r.body["actor"].as_str()),
        (Some("checkmk.alert"), Some("hook:checkmk"))
    );
    assert_eq!(r.body["data"]["host"], "web-1");
    assert_eq!(r.body["correlation_id"], "hook-1");

    let typed = post(&node, "/hooks/typed", json!({"type": "Build.Done"})).await;
    assert_eq!(typed.body["event_name"], "ext.build.done", "{}", typed.text);
    err(
        &post(&node, "/hooks/typed", json!({"kind": "x"})).await,
        422,
        "hook.no_event_name",
    );
    err(
        &post(&node, "/hooks/typed", json!({"type": "Bad Name!"})).await,
        422,
        "event.invalid_name",
    );
    err(
        &post(&node, "/hooks/checkmk", json!([1, 2])).await,
        422,
        "event.invalid_data",
    );
    let empty = call(&node, Method::POST, "/hooks/checkmk", None, &[]).await;
    assert_eq!(
        (empty.status, empty.body["data"].clone()),
        (201, json!({})),
        "{}",
        empty.text
    );
    let raw = client()
        .post(format!("{}/hooks/checkmk", node.url))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    // An unknown source answers like a wrong signature (sources cannot be probed).
    err(
        &post(&node, "/hooks/unknown", json!({})).await,
        401,
        "hook.bad_signature",
    );

    // A source with a secret: Bearer or an HMAC signature of the body.
    let body = br#"{"ref":"main"}"#.to_vec();
    err(
        &call(
            &node,
            Method::POST,
            "/hooks/gh",
            Some(json!({"ref": "main"})),
            &[("x-github-event", "push")],
        )
        .await,
        401,
        "hook.bad_signature",
    );
    err(
        &call(
            &node,
            Method::POST,
            "/hooks/gh",
            Some(json!({})),
            &[
                ("x-github-event", "push"),
                ("authorization", "Bearer wrong"),
            ],
        )
        .await,
        401,
        "hook.bad_signature",
    );
    let ok = call(
        &node,
        Method::POST,
        "/hooks/gh",
        Some(json!({"ref": "main"})),
        &[
            ("x-github-event", "push"),
            ("authorization", "Bearer gh-secret-value"),
        ],
    )
    .await;
    assert_eq!(
        (ok.status, ok.body["event_name"].as_str()),
        (201, Some("github.push")),
        "{}",
        ok.text
    );
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"gh-secret-value").unwrap();
    mac.update(&body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let signed = client()
        .post(format!("{}/hooks/gh", node.url))
        .header("content-type", "application/json")
        .header("x-github-event", "pull_request")
        .header("x-hub-signature-256", &sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 201);
    let tampered = client()
        .post(format!("{}/hooks/gh", node.url))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", &sig)
        .body(br#"{"ref":"evil"}"#.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401);
    let names = get(&node, "/api/v1/events?event_name=github.**").await;
    assert_eq!(names.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_routes_execute_actions_and_workcells() {
    let node = Node::builder().start();
    let stats = get(&node, "/api/internal/stats").await;
    assert!(stats.body["store"]["commits"].is_u64());
    let r = call(
        &node,
        Method::POST,
        "/api/internal/actions/execute",
        Some(json!({"action": "drafts.save", "input": {"name": "via action", "draft_type": "blueprint", "definition": "id: bp.z\n"}})),
        &[("x-actor", "cli:op")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ok"], true);
    assert!(r.body["output"]["draft_id"].is_string());
    assert_eq!(r.body["event"]["event_name"], "xyn.action.executed");
    assert_eq!(r.body["event"]["actor"], "cli:op");
    err(
        &post(
            &node,
            "/api/internal/actions/execute",
            json!({"action": "no.such"}),
        )
        .await,
        404,
        "action.unknown",
    );
    err(
        &post(
            &node,
            "/api/internal/actions/execute",
            json!({"action": "http.call", "input": {"url": 5}}),
        )
        .await,
        422,
        "action.input_invalid",
    );
    err(
        &post(&node, "/api/internal/actions/execute", json!({"input": {}})).await,
        422,
        "request.invalid",
    );
    let w = get(&node, "/api/internal/workcells").await;
    assert_eq!(
        (w.status, w.body["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    err(
        &post(&node, "/api/internal/workcells/create", json!({})).await,
        409,
        "workcell.unsupported",
    );
    err(
        &post(&node, "/api/internal/workcells/abc/destroy", json!({})).await,
        409,
        "workcell.unsupported",
    );
}
