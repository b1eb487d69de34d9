//! Artifacts, footprints and the audit check, the event stream, webhooks and the internal
//! routes of sealed workers.

use super::*;

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
