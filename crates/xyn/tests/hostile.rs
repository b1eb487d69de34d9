//! Hostile blueprints and jq programs, sent as an attacker would: deep nesting in every parser
//! the API feeds, and programs that recurse, loop or allocate without end in a transform, an
//! `if:` and a trigger filter. Each must fail the request, the step or the trigger with a
//! stable code while the node keeps serving.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::Node;

async fn healthy(node: &Node) {
    let (s, _) = node.get("/api/v1/health").await;
    assert_eq!(s, 200, "the node must still answer health");
}

/// The codes of a validation report's issues.
fn issue_codes(v: &Value) -> Vec<String> {
    v["issues"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn jq_blueprint(expr: &str) -> String {
    format!(
        "id: bp.hostile\ntrigger: {{event_type: t.h}}\nplan:\n  - kind: transform\n    id: a\n    expr: {}\n",
        serde_json::to_string(expr).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_jq_templates_yaml_and_json_are_refused_with_a_code() {
    let node = Node::builder().start();
    for n in [1_000, 100_000] {
        // jq: parentheses, brackets and string interpolations.
        for (open, close, times) in [("(", ")", n), ("[", "]", n), ("\"\\(", ")\"", n / 4)] {
            // (Interpolations are cut to a quarter to stay under the request body limit.)
            let expr = format!("{}1{}", open.repeat(times), close.repeat(times));
            let def = jq_blueprint(&expr);
            let (s, v) = node
                .post("/api/v1/blueprints/validate", json!({"definition": def}))
                .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["valid"], false);
            assert!(
                issue_codes(&v).contains(&"jq.too_complex".to_string()),
                "{n} x {open}: {}",
                v["issues"]
            );
            let (s, v) = node
                .post("/api/v1/blueprints", json!({"definition": def}))
                .await;
            assert_eq!(s, 422, "{v}");
            assert!(v["error"]["code"].is_string(), "{v}");
            healthy(&node).await;
        }
        // A template whose default is deeply nested JSON.
        let def = format!(
            "id: bp.hostile\ntrigger: {{event_type: t.h}}\nplan:\n  - kind: transform\n    id: a\n    template: {{x: {}}}\n",
            serde_json::to_string(&format!(
                "{{{{ event.data.x | default({}1{}) }}}}",
                "[".repeat(n),
                "]".repeat(n)
            ))
            .unwrap()
        );
        let (s, v) = node
            .post("/api/v1/blueprints/validate", json!({"definition": def}))
            .await;
        assert_eq!((s, &v["valid"]), (200, &json!(false)), "{v}");
        assert!(!issue_codes(&v).is_empty(), "{v}");
        healthy(&node).await;
        // YAML nesting (flow and block style) and JSON nesting of the definition itself.
        for def in [
            format!("id: bp.hostile\nx: {}1{}\n", "[".repeat(n), "]".repeat(n)),
            format!("id: bp.hostile\nx:\n{}", {
                let mut s = String::new();
                for i in 0..n.min(1_000) {
                    s.push_str(&" ".repeat(i + 1));
                    s.push_str("- \n");
                }
                s
            }),
            format!(
                "{{\"id\": \"bp.hostile\", \"x\": {}1{}}}",
                "[".repeat(n),
                "]".repeat(n)
            ),
        ] {
            let (s, v) = node
                .post("/api/v1/blueprints/validate", json!({"definition": def}))
                .await;
            assert_eq!((s, &v["valid"]), (200, &json!(false)), "{v}");
            assert!(!issue_codes(&v).is_empty(), "{v}");
            healthy(&node).await;
        }
        // A request body nested deeply is refused by the edge.
        let body = format!("{{\"definition\": {}1{}}}", "[".repeat(n), "]".repeat(n));
        let (s, v) = node
            .post_raw("/api/v1/blueprints/validate", &body, "application/json")
            .await;
        assert!((400..500).contains(&s), "{s} {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
        healthy(&node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_of_twenty_thousand_steps_is_refused() {
    let node = Node::builder().start();
    let mut def = String::from("id: bp.huge\ntrigger: {event_type: t.h}\nplan:\n");
    for i in 0..20_000 {
        def.push_str(&format!(
            "  - {{kind: transform, id: s{i}, expr: '.n + {i}'}}\n"
        ));
    }
    let (s, v) = node
        .post("/api/v1/blueprints/validate", json!({"definition": def}))
        .await;
    assert_eq!((s, &v["valid"]), (200, &json!(false)), "{v}");
    assert!(
        issue_codes(&v).contains(&"plan.too_many_steps".to_string()),
        "{}",
        v["issues"]
    );
    healthy(&node).await;
}

/// The hostile programs, each with the codes it may fail with.
const PROGRAMS: &[(&str, &[&str])] = &[
    ("def f: 1 + f; f", &["jq.budget_exceeded"]),
    (
        "reduce range(200000) as $i (null; [.])",
        &["jq.budget_exceeded", "jq.memory_exceeded"],
    ),
    (
        r#"("[" * 200000) + ("]" * 200000) | fromjson"#,
        &["jq.failed", "step.condition_failed"],
    ),
    (
        "[range(1e9)]",
        &["jq.budget_exceeded", "jq.memory_exceeded"],
    ),
    (r#""x" * 1000000000"#, &["jq.memory_exceeded"]),
    ("last(range(1e11)) | true", &["jq.budget_exceeded"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_programs_fail_their_step_condition_or_trigger_and_the_node_keeps_serving() {
    let mut b = Node::builder().blueprint(
        "ok.yaml",
        "id: bp.ok\ntrigger: {event_type: t.ok}\nplan:\n  - {kind: transform, id: a, expr: '{n: 1}'}\n",
    );
    for (i, (prog, _)) in PROGRAMS.iter().enumerate() {
        let p = serde_json::to_string(prog).unwrap();
        b = b
            .blueprint(
                &format!("t{i}.yaml"),
                &format!(
                    "id: bp.t{i}\ntrigger: {{event_type: t.t{i}}}\nplan:\n  - {{kind: transform, id: a, expr: {p}}}\n"
                ),
            )
            .blueprint(
                &format!("c{i}.yaml"),
                &format!(
                    "id: bp.c{i}\ntrigger: {{event_type: t.c{i}}}\nplan:\n  - {{kind: transform, id: a, if: {p}, expr: '{{n: 1}}'}}\n"
                ),
            )
            .blueprint(
                &format!("f{i}.yaml"),
                &format!(
                    "id: bp.f{i}\ntrigger: {{event_type: t.f{i}, filter: {p}}}\nplan:\n  - {{kind: transform, id: a, expr: '{{n: 1}}'}}\n"
                ),
            );
    }
    let node = b.start();
    for (i, (prog, codes)) in PROGRAMS.iter().enumerate() {
        // As a transform: the step fails with the budget's code.
        node.emit(&format!("t.t{i}"), json!({})).await;
        let run = node.the_run_of(&format!("bp.t{i}")).await;
        let r = node.until_run_status(&run, "failed", 120).await;
        let step = node.step(&run, "a").await;
        let code = step["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            codes.contains(&code.as_str()),
            "transform {prog}: {step} {r}"
        );
        healthy(&node).await;

        // As an `if:`: the run fails with the code.
        node.emit(&format!("t.c{i}"), json!({})).await;
        let run = node.the_run_of(&format!("bp.c{i}")).await;
        let r = node.until_run_status(&run, "failed", 120).await;
        let code = r["error"]["code"].as_str().unwrap_or_default().to_string();
        assert!(codes.contains(&code.as_str()), "if {prog}: {r}");
        healthy(&node).await;

        // As a trigger filter: intake answers, no run starts, the failure is recorded with its
        // code for the blueprint.
        let ev = node.emit(&format!("t.f{i}"), json!({})).await;
        let failed = node
            .until(60, "the trigger failure", || async {
                let (_, v) = node
                    .get("/api/v1/events?event_name=xyn.trigger.filter_failed&limit=100")
                    .await;
                v["items"].as_array().and_then(|a| {
                    a.iter()
                        .find(|e| e["data"]["event_id"] == ev["event_id"])
                        .cloned()
                })
            })
            .await;
        assert_eq!(failed["resource"]["id"], format!("bp.f{i}"), "{failed}");
        let code = failed["data"]["code"].as_str().unwrap_or_default();
        let codes_f: Vec<&str> = codes
            .iter()
            .map(|c| {
                if *c == "step.condition_failed" {
                    "jq.failed"
                } else {
                    c
                }
            })
            .collect();
        assert!(codes_f.contains(&code), "filter {prog}: {failed}");
        assert!(node.runs_of(&format!("bp.f{i}")).await.is_empty());
        healthy(&node).await;
    }
    // A normal run still completes.
    node.emit("t.ok", json!({})).await;
    let run = node.the_run_of("bp.ok").await;
    node.until_run_status(&run, "completed", 60).await;
}

/// CPU time (user + system) of a process in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which is in parentheses) are space-separated;
    // utime and stime are the 12th and 13th of them.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_transform_stops_consuming_cpu_after_it_fails() {
    let node = Node::builder()
        .blueprint(
            "loop.yaml",
            "id: bp.loop\ntrigger: {event_type: t.loop}\nplan:\n  - {kind: transform, id: a, timeout: 1s, expr: 'def f: f; f'}\n",
        )
        .start();
    for _ in 0..3 {
        node.emit("t.loop", json!({})).await;
    }
    node.until(120, "three failed runs", || async {
        let r = node.runs_of("bp.loop").await;
        (r.len() == 3 && r.iter().all(|x| x["status"] == "failed")).then_some(Value::Null)
    })
    .await;
    // Give a transform that outlived its timeout time to hit its budget, then measure: three
    // spinning threads would burn three seconds of CPU per second.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let before = cpu_ticks(node.pid());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let used = cpu_ticks(node.pid()) - before;
    // 100 ticks per second: an idle node uses next to nothing; allow one busy second.
    assert!(
        used < 100,
        "the node used {used} ticks of CPU in 3 s after the runs failed"
    );
    healthy(&node).await;
}

/// The jq budget is the node's setting (`[engine] jq_fuel`, `jq_memory_mb`, `jq_stack_kb`):
/// the same program completes under the default budget and fails with the budget's code on a
/// node configured tighter, in a transform, an `if:` and a trigger filter alike. Settings
/// outside their safe range are refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jq_budget_is_configured_per_node() {
    // About 60,000 evaluation steps: well inside the default, over a budget of 5,000.
    let prog = "[range(20000)] | length > 0";
    let p = serde_json::to_string(prog).unwrap();
    let blueprints = |b: support::NodeBuilder| {
        b.blueprint(
            "t.yaml",
            &format!("id: bp.t\ntrigger: {{event_type: t.t}}\nplan:\n  - {{kind: transform, id: a, expr: {p}}}\n"),
        )
        .blueprint(
            "c.yaml",
            &format!("id: bp.c\ntrigger: {{event_type: t.c}}\nplan:\n  - {{kind: transform, id: a, if: {p}, expr: '{{n: 1}}'}}\n"),
        )
        .blueprint(
            "f.yaml",
            &format!("id: bp.f\ntrigger: {{event_type: t.f, filter: {p}}}\nplan:\n  - {{kind: transform, id: a, expr: '{{n: 1}}'}}\n"),
        )
    };
    // Default budget: all three complete.
    let node = blueprints(Node::builder()).start();
    for t in ["t", "c", "f"] {
        node.emit(&format!("t.{t}"), json!({})).await;
        let run = node.the_run_of(&format!("bp.{t}")).await;
        node.until_run_status(&run, "completed", 60).await;
    }
    drop(node);

    // A tight budget: the transform and the `if:` fail with the budget's code, the filter
    // does not trigger, and the node keeps serving.
    let node = blueprints(Node::builder().engine("jq_fuel = 5000")).start();
    node.emit("t.t", json!({})).await;
    let run = node.the_run_of("bp.t").await;
    node.until_run_status(&run, "failed", 60).await;
    assert_eq!(
        node.step(&run, "a").await["error"]["code"],
        "jq.budget_exceeded"
    );
    node.emit("t.c", json!({})).await;
    let run = node.the_run_of("bp.c").await;
    let r = node.until_run_status(&run, "failed", 60).await;
    assert_eq!(r["error"]["code"], "jq.budget_exceeded", "{r}");
    let ev = node.emit("t.f", json!({})).await;
    let failed = node
        .until(60, "the trigger failure", || async {
            let (_, v) = node
                .get("/api/v1/events?event_name=xyn.trigger.filter_failed&limit=100")
                .await;
            v["items"].as_array().and_then(|a| {
                a.iter()
                    .find(|e| e["data"]["event_id"] == ev["event_id"])
                    .cloned()
            })
        })
        .await;
    assert_eq!(failed["data"]["code"], "jq.budget_exceeded", "{failed}");
    healthy(&node).await;
    drop(node);

    // A stack allowance the evaluating threads could not give is refused at start.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("xyn.toml"),
        "[engine]\njq_stack_kb = 4096\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xyn"))
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("jq_stack_kb"), "{err}");
}
