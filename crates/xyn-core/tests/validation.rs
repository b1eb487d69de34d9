#![allow(clippy::unwrap_used)]
//! Blueprint validation: every rule, each with its exact path and stable code, and a full
//! report snapshot for a blueprint with many problems at once.

use expect_test::expect;
use xyn_core::blueprint::{self, ValidationEnv, compile_text, validate_text};

const ACTIONS: &[&str] = &[
    "http.call",
    "events.emit",
    "ssh.run",
    "drafts.save",
    "blueprints.validate",
    "blueprints.promote",
];

fn env() -> ValidationEnv<'static> {
    ValidationEnv {
        is_known_action: &|a| ACTIONS.contains(&a),
        known_providers: blueprint::PROVIDERS,
    }
}

/// The (path, code) pairs of every issue, in report order.
fn issues(text: &str) -> Vec<(String, String)> {
    validate_text(text, &env())
        .issues
        .into_iter()
        .map(|i| (i.path, i.code.to_string()))
        .collect()
}

fn one(path: &str, code: &str) -> Vec<(String, String)> {
    vec![(path.to_string(), code.to_string())]
}

/// A valid blueprint with `{plan}` replaced by the given steps.
fn with_plan(steps: &str) -> String {
    format!(
        "id: bp.test\ntrigger: {{event_type: test.event}}\ninputs: [{{name: host}}]\nplan:\n{steps}"
    )
}

#[test]
fn the_seed_plan_skeleton_validates_as_written() {
    let text = include_str!("../../../examples/blueprints/skeleton.yaml");
    let r = validate_text(text, &env());
    assert!(r.valid, "{:?}", r.issues);
    let main = include_str!("../../../blueprints/checkmk-auto-remediate.yaml");
    let id = |t: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix("id: "))
            .map(str::to_string)
    };
    assert_ne!(
        id(text),
        id(main),
        "the skeleton must not reuse the main example's id"
    );
    let plan = compile_text(text, &env()).unwrap();
    assert_eq!(plan.steps.len(), 3);
}

#[test]
fn the_shipped_example_validates() {
    let text = include_str!("../../../blueprints/checkmk-auto-remediate.yaml");
    let r = validate_text(text, &env());
    assert!(r.valid, "{:?}", r.issues);
}

#[test]
fn yaml_and_json_are_one_schema() {
    let yaml = with_plan("  - {kind: transform, id: a, expr: '{x: 1}'}\n");
    let json = r#"{"id": "bp.test", "trigger": {"event_type": "test.event"}, "inputs": [{"name": "host"}],
        "plan": [{"kind": "transform", "id": "a", "expr": "{x: 1}"}]}"#;
    let a = compile_text(&yaml, &env()).unwrap();
    let b = compile_text(json, &env()).unwrap();
    assert_eq!(
        a.digest, b.digest,
        "the same blueprint in YAML and JSON has one digest"
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let r = validate_text("id: [unclosed\n", &env());
    assert_eq!(r.issues[0].code, "syntax");
    assert!(
        r.issues[0].message.contains("line"),
        "{}",
        r.issues[0].message
    );
    let r = validate_text("{\"id\": }", &env());
    assert_eq!(r.issues[0].code, "syntax");
    assert_eq!(
        issues("- just\n- a list\n"),
        one("$", "blueprint.not_an_object")
    );
}

#[test]
fn ids() {
    assert_eq!(
        issues("trigger: {event_type: a.b}\nplan: [{kind: gate, id: g, mode: manual}]"),
        one("$.id", "id.missing")
    );
    assert_eq!(
        issues("id: Bad Id\ntrigger: {event_type: a.b}\nplan: [{kind: gate, id: g, mode: manual}]"),
        one("$.id", "id.invalid")
    );
    assert_eq!(
        issues(&with_plan("  - {kind: gate, mode: manual}\n")),
        one("$.plan[0].id", "id.missing")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: gate, id: g, mode: manual}\n  - {kind: gate, id: g, mode: manual}\n"
        )),
        one("$.plan[1].id", "id.duplicate")
    );
    assert_eq!(
        issues(&with_plan("  - {kind: gate, id: a.b, mode: manual}\n")),
        one("$.plan[0].id", "id.invalid")
    );
}

#[test]
fn kinds() {
    assert_eq!(
        issues(&with_plan("  - {kind: shell, id: s}\n")),
        one("$.plan[0].kind", "kind.unknown")
    );
    assert_eq!(
        issues(&with_plan("  - {id: s}\n")),
        one("$.plan[0].kind", "kind.missing")
    );
}

#[test]
fn gates_need_a_mode() {
    assert_eq!(
        issues(&with_plan("  - {kind: gate, id: g}\n")),
        one("$.plan[0].mode", "gate.mode_missing")
    );
    assert_eq!(
        issues(&with_plan("  - {kind: gate, id: g, mode: vote}\n")),
        one("$.plan[0].mode", "gate.mode_unknown")
    );
}

#[test]
fn agent_tasks_need_provider_model_and_prompt() {
    assert_eq!(
        issues(&with_plan(
            "  - {kind: agent_task, id: a, model: m, prompt: p}\n"
        )),
        one("$.plan[0].provider", "agent.provider_missing")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: agent_task, id: a, provider: openai, prompt: p}\n"
        )),
        one("$.plan[0].model", "agent.model_missing")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: agent_task, id: a, provider: openai, model: m}\n"
        )),
        one("$.plan[0].prompt_template", "agent.prompt_missing")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: agent_task, id: a, agent: gpt, model: m, prompt: p}\n"
        )),
        one("$.plan[0].agent", "agent.provider_unknown")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: agent_task, id: a, agent: openai, provider: openai, model: m, prompt: p}\n"
        )),
        one("$.plan[0].agent", "field.conflict")
    );
    // Both spellings are accepted.
    assert!(
        issues(&with_plan(
            "  - {kind: agent_task, id: a, provider: anthropic, model: m, prompt_template: p}\n"
        ))
        .is_empty()
    );
    assert!(
        issues(&with_plan(
            "  - {kind: agent_task, id: a, agent: anthropic, model: m, prompt: p}\n"
        ))
        .is_empty()
    );
}

#[test]
fn action_tasks_need_a_known_action_and_with() {
    assert_eq!(
        issues(&with_plan("  - {kind: action_task, id: a, with: {}}\n")),
        one("$.plan[0].action", "action.action_missing")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: action_task, id: a, action: http.call}\n"
        )),
        one("$.plan[0].with", "action.with_missing")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: action_task, id: a, action: rm.rf, with: {}}\n"
        )),
        one("$.plan[0].action", "action.unknown")
    );
}

#[test]
fn templates_reference_inputs_and_earlier_steps_only() {
    assert_eq!(
        issues(&with_plan(
            "  - {kind: action_task, id: a, action: http.call, with: {url: '{{inputs.nope}}'}}\n"
        )),
        one("$.plan[0].with.url", "template.unknown_input")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: action_task, id: a, action: http.call, with: {url: '{{steps.b.outputs.x}}'}}\n  - {kind: transform, id: b, expr: '.'}\n"
        )),
        one("$.plan[0].with.url", "template.forward_step")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: action_task, id: a, action: http.call, with: {url: '{{steps.a.outputs.x}}'}}\n"
        )),
        one("$.plan[0].with.url", "template.self_reference")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: action_task, id: a, action: http.call, with: {h: {x: ['{{steps.zz.outputs}}']}}}\n"
        )),
        one("$.plan[0].with.h.x[0]", "template.unknown_step")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: agent_task, id: a, provider: openai, model: m, prompt: 'hi {{inputs.host'}\n"
        )),
        one("$.plan[0].prompt", "template.syntax")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: transform, id: a, template: {x: '{{nope.y}}'}}\n"
        )),
        one("$.plan[0].template.x", "template.syntax")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: transform, id: a, expr: '.'}\n  - {kind: transform, id: b, template: {x: '{{steps.a.result}}'}}\n"
        )),
        one("$.plan[1].template.x", "template.bad_path")
    );
    // Earlier steps, events, secrets and run fields are fine.
    assert!(issues(&with_plan(
        "  - {kind: transform, id: a, expr: '.'}\n  - {kind: action_task, id: b, action: http.call, with: {url: 'http://x/{{steps.a.outputs.y}}/{{event.data.z}}', headers: {a: '{{secrets.tok}}', r: '{{run.id}}'}}}\n"
    ))
    .is_empty());
}

#[test]
fn outputs_can_only_reference_steps_and_inputs() {
    let t = "id: bp.t\ntrigger: {event_type: a.b}\nplan: [{kind: transform, id: a, expr: '.'}]\noutputs: [{name: s, value: '{{steps.q.outputs}}'}, {name: s}]";
    assert_eq!(
        issues(t),
        vec![
            (
                "$.outputs[0].value".to_string(),
                "template.unknown_step".to_string()
            ),
            (
                "$.outputs[1].name".to_string(),
                "output.name_duplicate".to_string()
            ),
        ]
    );
}

#[test]
fn nats_subject_triggers() {
    let bp = |subject: &str| {
        format!(
            "id: bp.t\ntrigger: {{nats_subject: '{subject}'}}\nplan: [{{kind: gate, id: g, mode: manual}}]"
        )
    };
    for ok in ["orders.created", "orders.*", "orders.>", "*.eu.>", ">"] {
        assert!(issues(&bp(ok)).is_empty(), "{ok}");
    }
    for bad in [
        "orders..created",
        "orders.cre*",
        "orders.>.x",
        "a b",
        ".orders",
        "orders.",
    ] {
        assert_eq!(
            issues(&bp(bad)),
            one("$.trigger.nats_subject", "trigger.nats_subject_invalid"),
            "{bad}"
        );
    }
    assert_eq!(
        issues("id: bp.t\ntrigger: {nats_subject: 7}\nplan: [{kind: gate, id: g, mode: manual}]"),
        one("$.trigger.nats_subject", "field.type")
    );
    let plan = compile_text(&bp("orders.*.eu"), &env()).unwrap();
    assert!(plan.matches_nats_subject("orders.created.eu"));
    assert!(!plan.matches_nats_subject("orders.created.us"));
    assert!(!plan.matches_nats_subject("orders.created"));
    assert!(
        !plan.matches_event_name("orders.created.eu"),
        "not an event_type trigger"
    );
    let tail = compile_text(&bp("orders.>"), &env()).unwrap();
    assert!(tail.matches_nats_subject("orders.a.b.c"));
    assert!(!tail.matches_nats_subject("orders"));
}

#[test]
fn triggers() {
    assert_eq!(
        issues("id: bp.t\nplan: [{kind: gate, id: g, mode: manual}]"),
        one("$.trigger", "trigger.missing")
    );
    assert_eq!(
        issues("id: bp.t\ntrigger: {}\nplan: [{kind: gate, id: g, mode: manual}]"),
        one("$.trigger.event_type", "trigger.event_type_missing")
    );
    assert_eq!(
        issues("id: bp.t\ntrigger: {event_type: 'A B'}\nplan: [{kind: gate, id: g, mode: manual}]"),
        one("$.trigger.event_type", "trigger.event_type_invalid")
    );
    assert_eq!(
        issues(
            "id: bp.t\ntrigger: {cron: '61 * * * *'}\nplan: [{kind: gate, id: g, mode: manual}]"
        ),
        one("$.trigger.cron", "cron.invalid")
    );
    assert_eq!(
        issues("id: bp.t\ntrigger: {cron: '* * * *'}\nplan: [{kind: gate, id: g, mode: manual}]"),
        one("$.trigger.cron", "cron.invalid")
    );
    assert_eq!(
        issues(
            "id: bp.t\ntrigger: {event_type: a.b, filter: '.data.x =='}\nplan: [{kind: gate, id: g, mode: manual}]"
        ),
        one("$.trigger.filter", "jq.invalid")
    );
    assert!(
        issues(
            "id: bp.t\ntrigger: {cron: '*/5 * * * *'}\nplan: [{kind: gate, id: g, mode: manual}]"
        )
        .is_empty()
    );
    assert!(issues("id: bp.t\ntrigger: {event_type: 'checkmk.*', filter: '.data.state == \"CRIT\"'}\nplan: [{kind: gate, id: g, mode: manual}]").is_empty());
}

#[test]
fn jq_is_checked_everywhere() {
    assert_eq!(
        issues(&with_plan("  - {kind: transform, id: a, expr: '{a: }'}\n")),
        one("$.plan[0].expr", "jq.invalid")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: transform, id: a, expr: 'nosuch(1)'}\n"
        )),
        one("$.plan[0].expr", "jq.invalid")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: transform, id: a, expr: '.', if: '(('}\n"
        )),
        one("$.plan[0].if", "jq.invalid")
    );
    assert_eq!(
        issues(&with_plan("  - {kind: transform, id: a, expr: 'env'}\n")),
        one("$.plan[0].expr", "jq.invalid")
    );
    assert_eq!(
        issues(&with_plan("  - {kind: transform, id: a}\n")),
        one("$.plan[0].expr", "transform.expr_missing")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: transform, id: a, expr: '.', template: {a: 1}}\n"
        )),
        one("$.plan[0].template", "field.conflict")
    );
}

#[test]
fn plans() {
    assert_eq!(
        issues("id: bp.t\ntrigger: {event_type: a.b}"),
        one("$.plan", "plan.missing")
    );
    assert_eq!(
        issues("id: bp.t\ntrigger: {event_type: a.b}\nplan: []"),
        one("$.plan", "plan.empty")
    );
    let many: String = (0..201)
        .map(|i| format!("  - {{kind: gate, id: g{i}, mode: manual}}\n"))
        .collect();
    assert_eq!(
        issues(&with_plan(&many)),
        one("$.plan", "plan.too_many_steps")
    );
}

#[test]
fn fields_types_durations_and_retries() {
    assert_eq!(
        issues(&with_plan(
            "  - {kind: gate, id: g, mode: manual, colour: red}\n"
        )),
        one("$.plan[0].colour", "field.unknown")
    );
    assert_eq!(
        issues(
            "id: bp.t\nowner: me\ntrigger: {event_type: a.b}\nplan: [{kind: gate, id: g, mode: manual}]"
        ),
        one("$.owner", "field.unknown")
    );
    assert_eq!(
        issues(&with_plan("  - {kind: gate, id: g, mode: [manual]}\n")),
        one("$.plan[0].mode", "field.type")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: gate, id: g, mode: manual, timeout: 10}\n"
        )),
        one("$.plan[0].timeout", "duration.invalid")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: gate, id: g, mode: manual, timeout: soon}\n"
        )),
        one("$.plan[0].timeout", "duration.invalid")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: transform, id: a, expr: '.', retry: {max_attempts: 0}}\n"
        )),
        one("$.plan[0].retry.max_attempts", "retry.invalid")
    );
    assert_eq!(
        issues(&with_plan(
            "  - {kind: transform, id: a, expr: '.', retry: {backoff: random}}\n"
        )),
        one("$.plan[0].retry.backoff", "retry.invalid")
    );
    assert!(issues(&with_plan("  - {kind: transform, id: a, expr: '.', retry: {max_attempts: 3, backoff: 2s}, timeout: 1m30s}\n")).is_empty());
}

#[test]
fn inputs() {
    let t = |inputs: &str| {
        format!(
            "id: bp.t\ntrigger: {{event_type: a.b}}\ninputs: {inputs}\nplan: [{{kind: gate, id: g, mode: manual}}]"
        )
    };
    assert_eq!(
        issues(&t("[{from: /data/x}]")),
        one("$.inputs[0].name", "input.name_missing")
    );
    assert_eq!(
        issues(&t("[{name: a}, {name: a}]")),
        one("$.inputs[1].name", "input.name_duplicate")
    );
    assert_eq!(
        issues(&t("[{name: a, from: data.a}]")),
        one("$.inputs[0].from", "input.from_invalid")
    );
    assert_eq!(
        issues(&t("[{name: a, type: str}]")),
        one("$.inputs[0].type", "input.type_unknown")
    );
    assert_eq!(
        issues(&t("[{name: a, type: number, default: x}]")),
        one("$.inputs[0].default", "input.default_type")
    );
    assert!(
        issues(&t(
            "[host, {name: n, type: integer, default: 3, from: /data/count}]"
        ))
        .is_empty()
    );
}

#[test]
fn blank_inputs_given_by_hand_count_as_not_given() {
    let plan = compile_text(
        "id: bp.t\ntrigger: {event_type: a.b}\ninputs: [{name: host, type: string}, {name: url, type: string, default: 'https://x'}]\nplan: [{kind: gate, id: g, mode: manual}]",
        &env(),
    )
    .unwrap();
    let bind = |v: serde_json::Value| {
        blueprint::bind_inputs(&plan, None, v.as_object()).map_err(|issues| {
            issues
                .into_iter()
                .map(|i| (i.path, i.code))
                .collect::<Vec<_>>()
        })
    };
    // A required input left blank is refused; an optional one left blank takes its default.
    assert_eq!(
        bind(serde_json::json!({"host": "  ", "url": ""})),
        Err(vec![("inputs.host".to_string(), "input.required")])
    );
    let ok = bind(serde_json::json!({"host": "web-1", "url": ""})).unwrap();
    assert_eq!(ok["url"], "https://x");
    // From an event, an empty text is a value like any other.
    let from_event = blueprint::bind_inputs(
        &plan,
        Some(&serde_json::json!({"data": {"host": ""}})),
        None,
    );
    assert!(from_event.is_ok_and(|m| m["host"] == ""));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
id: Bad Id
trigger:
  event_type: "checkmk.alert"
  cron: "every minute"
inputs:
  - name: host
plan:
  - kind: agent_task
    id: analyze
    model: gpt-5
    prompt: "Analyse {{inputs.hots}} using {{steps.fix.outputs.x}}"
  - kind: gate
    id: analyze
  - kind: action_task
    id: fix
    action: shell.exec
  - kind: transform
    id: sum
    expr: "{a: "
  - kind: wait
    id: w
"#;
    let r = validate_text(text, &env());
    assert!(!r.valid);
    let rendered: String = r
        .issues
        .iter()
        .map(|i| format!("{} {} {}\n", i.path, i.code, i.message))
        .collect();
    expect![[r#"
        $.id id.invalid id "Bad Id" must start with a lowercase letter or digit and contain only lowercase letters, digits, '_', '-' and '.'
        $.plan[0].prompt template.forward_step {{steps.fix.outputs.x}} refers to step 'fix', which runs later (step 3); only earlier steps can be used
        $.plan[0].prompt template.unknown_input {{inputs.hots}} refers to input 'hots', which is not declared in 'inputs'
        $.plan[0].provider agent.provider_missing an agent_task needs a 'provider' (or 'agent'): one of openai, anthropic, openai_compatible, replay
        $.plan[1].id id.duplicate step id 'analyze' is already used by step 1
        $.plan[1].mode gate.mode_missing a gate needs a 'mode' (v0: manual)
        $.plan[2].action action.unknown unknown action "shell.exec": no installed action has that name
        $.plan[2].with action.with_missing an action_task needs 'with' (the action's input)
        $.plan[3].expr jq.invalid not a valid jq expression: expected a closing brace at offset 4
        $.plan[4].kind kind.unknown unknown kind "wait" (use agent_task, action_task, gate or transform)
        $.trigger.cron cron.invalid not a valid cron expression "every minute": needs 5 fields (minute hour day-of-month month day-of-week), got 2
    "#]]
    .assert_eq(&rendered);
}
