//! End-to-end tests of blueprint features: conditions, gate and run deadlines, the step
//! limit, agent providers, and the draft → validate → promote loop through actions.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_skip_steps_and_templates_carry_values() {
    let bp = r#"
id: cond
trigger: {event_type: t.cond, filter: '.data.level >= 2'}
inputs:
  - {name: level, type: integer}
  - {name: who, default: "nobody"}
plan:
  - {kind: transform, id: classify, expr: '{severity: (if .inputs.level >= 3 then "high" else "low" end)}'}
  - {kind: transform, id: page, if: '.steps.classify.outputs.severity == "high"', template: {msg: "paging {{inputs.who}}"}}
  - {kind: transform, id: log, if: '.steps.classify.outputs.severity == "low"', template: {msg: "logged at {{inputs.level}}", n: "{{inputs.level}}"}}
outputs:
  - {name: severity, value: "{{steps.classify.outputs.severity}}"}
  - {name: msg}
"#;
    let node = Node::builder().blueprint("c.yaml", bp).start();
    node.emit("t.cond", json!({"level": 1})).await; // filtered out: no run
    node.emit("t.cond", json!({"level": 2, "who": "ops"})).await;
    node.emit("t.cond", json!({"level": 3, "who": "ops"})).await;
    let runs = node
        .until(10, "two completed runs", || async {
            let r = node.runs_of("cond").await;
            (r.len() == 2 && r.iter().all(|x| x["status"] == "completed"))
                .then_some(serde_json::Value::Array(r))
        })
        .await;
    let runs = runs.as_array().unwrap();
    let (high, low) = (&runs[0], &runs[1]);
    assert_eq!(
        high["outputs"],
        json!({"severity": "high", "msg": "paging ops"})
    );
    assert_eq!(
        low["outputs"],
        json!({"severity": "low", "msg": "logged at 2"})
    );
    let low_id = low["run_id"].as_str().unwrap();
    assert_eq!(node.step(low_id, "page").await["status"], "skipped");
    assert_eq!(
        node.step(low_id, "log").await["outputs"]["n"],
        2,
        "a whole-template value keeps its type"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_without_a_decision_times_out() {
    let bp = "id: gt\ntrigger: {event_type: t.gate}\nplan:\n  - {kind: gate, id: ok, mode: manual, timeout: 1s}\n  - {kind: transform, id: after, expr: '{}'}\n";
    let node = Node::builder().blueprint("g.yaml", bp).start();
    node.emit("t.gate", json!({})).await;
    let run_id = node.the_run_of("gt").await;
    node.until_step_status(&run_id, "ok", "waiting", 5).await;
    let run = node.until_run_status(&run_id, "failed", 10).await;
    assert_eq!(
        node.step(&run_id, "ok").await["error"]["code"],
        "gate.timed_out"
    );
    assert_eq!(run["error"]["step"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_wall_clock_limit_holds() {
    let bp = "id: slow_gate\ntrigger: {event_type: t.wall}\nplan:\n  - {kind: gate, id: wait, mode: manual}\n";
    let node = Node::builder()
        .blueprint("w.yaml", bp)
        .engine("run_timeout = \"2s\"")
        .start();
    node.emit("t.wall", json!({})).await;
    let run_id = node.the_run_of("slow_gate").await;
    let run = node.until_run_status(&run_id, "failed", 10).await;
    assert_eq!(run["error"]["code"], "run.timed_out");
    assert_eq!(node.step(&run_id, "wait").await["status"], "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_execution_limit_holds() {
    let bp = "id: many\ntrigger: {event_type: t.many}\nplan:\n  - {kind: transform, id: a, expr: '1'}\n  - {kind: transform, id: b, expr: '2'}\n  - {kind: transform, id: c, expr: '3'}\n";
    let node = Node::builder()
        .blueprint("m.yaml", bp)
        .engine("max_step_executions = 2")
        .start();
    node.emit("t.many", json!({})).await;
    let run_id = node.the_run_of("many").await;
    let run = node.until_run_status(&run_id, "failed", 10).await;
    assert_eq!(run["error"]["code"], "run.step_limit_exceeded");
    assert_eq!(node.step(&run_id, "b").await["status"], "completed");
    assert_eq!(node.step(&run_id, "c").await["status"], "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_of_each_provider_answer_from_recorded_exchanges() {
    let bp = r#"
id: agents
trigger: {event_type: t.agents}
plan:
  - {kind: agent_task, id: oa, provider: openai, model: gpt-5, prompt: "A Checkmk alert fired on {{event.data.host}}"}
  - {kind: agent_task, id: an, agent: anthropic, model: claude-sonnet-4-5, prompt: "A Checkmk alert fired: {{steps.oa.outputs.text}}", system: "Be brief."}
  - {kind: agent_task, id: missing, provider: openai, model: gpt-5, prompt: "nothing recorded matches this"}
"#;
    let node = Node::builder().blueprint("a.yaml", bp).start();
    node.emit("t.agents", json!({"host": "web-9"})).await;
    let run_id = node.the_run_of("agents").await;
    node.until_run_status(&run_id, "failed", 10).await;
    let oa = node.step(&run_id, "oa").await;
    assert_eq!(
        oa["outputs"]["usage"],
        json!({"tokens_in": 58, "tokens_out": 74})
    );
    let an = node.step(&run_id, "an").await;
    assert_eq!(an["outputs"]["model"], "claude-sonnet-4-5");
    assert_eq!(an["outputs"]["finish_reason"], "stop");
    assert_eq!(
        an["outputs"]["usage"],
        json!({"tokens_in": 61, "tokens_out": 52})
    );
    assert!(
        an["outputs"]["text"]
            .as_str()
            .unwrap()
            .contains("Inspect disk usage")
    );
    let miss = node.step(&run_id, "missing").await;
    assert_eq!(miss["error"]["code"], "agent.no_recording");
    // The prompt artifact holds the request as the provider's wire format would carry it.
    let (_, arts) = node
        .get(&format!("/api/v1/artifacts?run_id={run_id}&kind=prompt"))
        .await;
    let an_prompt = arts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["step_id"] == an["step_id"])
        .unwrap()
        .clone();
    let body = support::client()
        .get(format!(
            "{}/api/v1/artifacts/{}/download",
            node.url,
            an_prompt["artifact_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["request"]["system"], "Be brief.");
    assert_eq!(doc["request"]["max_tokens"], 1024);
    assert_eq!(doc["request"]["messages"][0]["role"], "user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_are_saved_validated_and_promoted_by_actions() {
    let meta = r#"
id: meta.author
trigger: {event_type: t.author}
inputs:
  - {name: definition, type: string}
plan:
  - kind: action_task
    id: save
    action: drafts.save
    with: {draft_type: blueprint, name: "authored", definition: "{{inputs.definition}}", notes: "by a blueprint"}
  - kind: action_task
    id: check
    action: blueprints.validate
    with: {draft_id: "{{steps.save.outputs.draft_id}}"}
  - kind: action_task
    id: promote
    if: '.steps.check.outputs.is_valid'
    action: blueprints.promote
    with: {draft_id: "{{steps.save.outputs.draft_id}}"}
"#;
    let node = Node::builder().blueprint("meta.yaml", meta).start();
    let good = "id: bp.authored\ntrigger: {event_type: t.authored}\nplan:\n  - {kind: transform, id: hi, expr: '{hello: \"world\"}'}\n";
    node.emit("t.author", json!({"definition": good})).await;
    let run_id = node.the_run_of("meta.author").await;
    node.until_run_status(&run_id, "completed", 10).await;
    let promote = node.step(&run_id, "promote").await;
    assert_eq!(
        promote["outputs"],
        json!({"blueprint_id": "bp.authored", "version": "1", "status": "active"})
    );
    let save = node.step(&run_id, "save").await;
    assert_eq!(save["outputs"]["revision"], 1);
    let (s, bp) = node.get("/api/v1/blueprints/bp.authored").await;
    assert_eq!(s, 200);
    assert!(bp["origin"].as_str().unwrap().starts_with("draft:"));
    // The promoted blueprint is live: its trigger starts runs.
    node.emit("t.authored", json!({})).await;
    let r = node.the_run_of("bp.authored").await;
    assert_eq!(
        node.until_run_status(&r, "completed", 10).await["outputs"]["hello"],
        "world"
    );

    // An invalid definition is reported, not promoted.
    node.emit("t.author", json!({"definition": "id: bp.broken\ntrigger: {event_type: x.y}\nplan:\n  - {kind: gate, id: g}\n"})).await;
    let second = node
        .until(10, "a second meta run", || async {
            node.runs_of("meta.author")
                .await
                .into_iter()
                .find(|r| r["run_id"] != run_id.as_str() && r["status"] == "completed")
        })
        .await;
    let rid = second["run_id"].as_str().unwrap();
    let check = node.step(rid, "check").await;
    assert_eq!(check["outputs"]["is_valid"], false);
    assert_eq!(check["outputs"]["issues"][0]["code"], "gate.mode_missing");
    assert_eq!(node.step(rid, "promote").await["status"], "skipped");
    let (s, _) = node.get("/api/v1/blueprints/bp.broken").await;
    assert_eq!(s, 404);
}
