//! Runs (steps, gates, cancel), blueprints (apply, validate, versions, pages) and drafts
//! (create, revise, validate, promote).

use super::*;

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
    // Each issue carries the line of the text where its node starts.
    let bad_url = FLOW_BP.replacen("plan:", "inputs:\n  - name: n\n    type: integr\nplan:", 1);
    let v = post(
        &node,
        "/api/v1/blueprints/validate",
        json!({"definition": bad_url}),
    )
    .await;
    assert_eq!(v.body["valid"].as_bool(), Some(false), "{}", v.text);
    let issue = &v.body["issues"][0];
    let want = bad_url
        .lines()
        .position(|l| l.contains("type: integr"))
        .unwrap()
        + 1;
    assert_eq!(issue["line"].as_u64(), Some(want as u64), "{}", v.text);
    let v = post(
        &node,
        "/api/v1/blueprints/validate",
        json!({"definition": "id: x\nplan: [\n"}),
    )
    .await;
    assert_eq!(v.body["issues"][0]["code"], "syntax", "{}", v.text);
    assert!(v.body["issues"][0]["line"].as_u64().is_some(), "{}", v.text);
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
async fn a_blueprint_trigger_switches_off_and_on() {
    let node = Node::builder().blueprint("flow.yaml", FLOW_BP).start();
    let b = get(&node, "/api/v1/blueprints/bp.t.flow").await;
    assert_eq!(b.body["enabled"], true, "{}", b.text);
    err(
        &post(&node, "/api/v1/blueprints/bp.t.nope/disable", json!({})).await,
        404,
        "blueprint.not_found",
    );

    let off = post(&node, "/api/v1/blueprints/bp.t.flow/disable", json!({})).await;
    assert_eq!(
        (off.status, &off.body["enabled"]),
        (200, &json!(false)),
        "{}",
        off.text
    );
    assert_eq!(off.body["version"], 1);
    // Idempotent: switching it off again writes nothing more.
    let again = post(&node, "/api/v1/blueprints/bp.t.flow/disable", json!({})).await;
    assert_eq!(again.body["enabled"], false);
    let listed = get(&node, "/api/v1/blueprints").await;
    assert_eq!(listed.body["items"][0]["enabled"], false, "{}", listed.text);
    assert_eq!(
        get(&node, "/api/v1/blueprints/bp.t.flow/versions")
            .await
            .body["items"][0]["enabled"],
        false
    );
    // A new version keeps the switch.
    let v2 = post(
        &node,
        "/api/v1/blueprints",
        json!({"definition": FLOW_BP.replace("expr: '5'", "expr: '6'")}),
    )
    .await;
    assert_eq!(
        (v2.status, &v2.body["enabled"]),
        (201, &json!(false)),
        "{}",
        v2.text
    );

    // Off: the event is recorded, no run starts; a run asked for by hand still starts.
    let ignored = node.emit("demo.flow", json!({"n": 1})).await;
    let by_hand = post(
        &node,
        "/api/v1/runs",
        json!({"blueprint_ref": "bp.t.flow", "inputs": {}}),
    )
    .await;
    assert_eq!(by_hand.status, 201, "{}", by_hand.text);

    // On again: the next event starts a run (events are matched in order, so once it has
    // started the ignored one had its turn).
    let on = post(&node, "/api/v1/blueprints/bp.t.flow/enable", json!({})).await;
    assert_eq!(
        (on.status, &on.body["enabled"]),
        (200, &json!(true)),
        "{}",
        on.text
    );
    let counted = node.emit("demo.flow", json!({"n": 2})).await;
    let runs = node
        .until(10, "the run of the second event", || async {
            let runs = node.runs_of("bp.t.flow").await;
            runs.iter()
                .any(|r| r["trigger_event_id"] == counted["event_id"])
                .then_some(json!(runs))
        })
        .await;
    let triggers: Vec<&Value> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["trigger_event_id"])
        .collect();
    assert_eq!(triggers.len(), 2, "{runs}");
    assert!(
        !triggers.contains(&&ignored["event_id"]),
        "the event sent while the trigger was off started a run: {runs}"
    );

    // Each switch is in the audit trail, with who did it.
    let audit = get(&node, "/api/v1/events?event_name=xyn.blueprint.trigger.*").await;
    let names: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "xyn.blueprint.trigger.enabled",
            "xyn.blueprint.trigger.disabled"
        ],
        "{}",
        audit.text
    );

    // The CLI: disable, the ENABLED column, enable.
    let (code, out, e) = node.cli(&["blueprint", "disable", "bp.t.flow"]);
    assert_eq!(code, 0, "{out}{e}");
    assert!(out.contains("trigger disabled"), "{out}");
    let (_, table, _) = node.cli(&["blueprint", "list"]);
    let row = table.lines().find(|l| l.contains("bp.t.flow")).unwrap();
    assert!(table.contains("ENABLED") && row.contains(" no "), "{table}");
    let (code, out, _) = node.cli(&["blueprint", "enable", "bp.t.flow"]);
    assert_eq!(
        (code, out.trim()),
        (0, "blueprint bp.t.flow: trigger enabled")
    );
    let (code, _, e) = node.cli(&["blueprint", "enable", "bp.t.nope"]);
    assert_ne!(code, 0);
    assert!(e.contains("blueprint.not_found"), "{e}");
}
