use super::*;
use xyn_core::blueprint::{ValidationEnv, compile_text};

const BP: &str = r#"
id: bp.test.diagram
name: Diagram
trigger:
  event_type: demo.diagram
inputs:
  - name: n
    type: number
    default: 1
plan:
  - kind: transform
    id: prepare
    expr: '{n: .inputs.n}'
  - kind: action_task
    id: call
    action: http.request
    with: {url: "https://example.com"}
    if: '.inputs.n > 0 and .inputs.n < 10'
    retry: {max_attempts: 3, backoff: exponential, delay: 1s}
  - kind: gate
    id: approve
    mode: manual
    on_reject: cancel
  - kind: transform
    id: finish
    expr: '{ok: true}'
outputs:
  - name: ok
    value: "{{steps.finish.outputs.ok}}"
"#;

fn plan() -> Plan {
    match compile_text(BP, &ValidationEnv::permissive()) {
        Ok(p) => (*p).clone(),
        Err(issues) => panic!("the test blueprint does not compile: {issues:?}"),
    }
}

fn node<'a>(d: &'a Diagram, key: &str) -> &'a Node {
    d.nodes
        .iter()
        .find(|n| n.key == key)
        .unwrap_or_else(|| panic!("no node {key}"))
}

#[test]
fn one_node_per_step_in_order_between_trigger_and_end() {
    let d = layout(&plan());
    let keys: Vec<&str> = d.nodes.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "trigger",
            "prepare",
            "call",
            "approve",
            "approve:rejected",
            "finish",
            "end"
        ]
    );
    // Steps go down the main column, each below the last, none overlapping.
    let main: Vec<&Node> = d
        .nodes
        .iter()
        .filter(|n| !matches!(n.role, Role::Rejected(_)))
        .collect();
    for w in main.windows(2) {
        assert!(
            w[1].y >= w[0].bottom() + GAP,
            "{} overlaps {}",
            w[1].key,
            w[0].key
        );
        assert_eq!(w[0].cx(), w[1].cx(), "the main column is straight");
    }
    assert_eq!(node(&d, "trigger").y, TOP);
    // A step with a condition leaves room for its label above it.
    assert_eq!(
        node(&d, "call").y,
        node(&d, "prepare").bottom() + GAP + COND_H
    );
    assert_eq!(d.height, node(&d, "end").bottom() + TOP);
    // Everything fits the width (no horizontal overflow once scaled).
    for n in &d.nodes {
        assert!(n.x >= 0 && n.x + n.w <= d.width, "{} is outside", n.key);
    }
}

#[test]
fn edges_follow_execution_order_with_a_bypass_and_a_rejection() {
    let d = layout(&plan());
    // trigger→prepare→call→approve→finish→end, call's bypass, approve's rejection.
    assert_eq!(d.edges.len(), 5 + 1 + 1);
    let next: Vec<(&str, &str)> = d
        .edges
        .iter()
        .filter(|e| e.kind == EdgeKind::Next)
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    assert_eq!(
        next,
        [
            ("trigger", "prepare"),
            ("prepare", "call"),
            ("call", "approve"),
            ("approve", "finish"),
            ("finish", "end")
        ]
    );
    let skip = d.edges.iter().find(|e| e.kind == EdgeKind::Skip);
    let skip = skip.map(|e| (e.to.as_str(), e.points.len()));
    assert_eq!(skip, Some(("call", 4)));
    let call = node(&d, "call");
    let skip = &d.edges[d
        .edges
        .iter()
        .position(|e| e.kind == EdgeKind::Skip)
        .unwrap_or_default()];
    assert!(skip.points[0].1 < call.y && skip.points[3].1 > call.bottom());
    let reject = d.edges.iter().find(|e| e.kind == EdgeKind::Reject);
    assert_eq!(
        reject.map(|e| (e.from.as_str(), e.to.as_str())),
        Some(("approve", "approve:rejected"))
    );
    assert_eq!(
        node(&d, "approve:rejected").role,
        Role::Rejected(OnReject::Cancel)
    );
}

#[test]
fn badges_conditions_and_kinds() {
    let d = layout(&plan());
    assert_eq!(node(&d, "call").badge.as_deref(), Some("↻ 3× exponential"));
    assert_eq!(node(&d, "prepare").badge, None);
    assert_eq!(
        node(&d, "call").condition.as_deref(),
        Some(".inputs.n > 0 and .inputs.n < 10")
    );
    assert_eq!(node(&d, "approve").role, Role::Step(StepKind::Gate));
    assert_eq!(node(&d, "call").sub, "action · http.request");
    assert_eq!(node(&d, "trigger").sub, "event demo.diagram");
    let svg = render_svg(&d);
    assert_eq!(svg.matches(r#"data-testid="plan-node""#).count(), 4);
    assert_eq!(svg.matches(r#"data-kind="gate""#).count(), 1);
    assert!(svg.contains("<polygon"), "the gate is a hexagon");
    assert_eq!(svg.matches("<path class=\"pd-edge").count(), 7);
    assert!(svg.contains("↻ 3× exponential"));
    assert!(svg.contains("<title>if: .inputs.n &gt; 0 and .inputs.n &lt; 10</title>"));
    assert!(svg.contains(r#"viewBox="0 0 360 "#));
}

#[test]
fn every_piece_of_text_is_escaped() {
    let mut p = plan();
    p.id = "bp.<b>&".into();
    p.steps[0].id = "<script>alert(1)</script>&\"'".into();
    let svg = plan_svg(&p);
    assert!(!svg.contains("<script"), "{svg}");
    assert!(!svg.contains("<b>"));
    assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39;"));
    assert!(svg.contains("Plan of bp.&lt;b&gt;&amp;: 4 steps"));
    // Every `&` in the output starts an entity.
    for (i, _) in svg.match_indices('&') {
        let rest = &svg[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                .iter()
                .any(|e| rest.starts_with(e)),
            "a bare & at {i}: {}",
            &rest[..rest.len().min(20)]
        );
    }
    assert_eq!(escape("a\u{1}b"), "a\u{FFFD}b");
}

#[test]
fn long_text_is_truncated_with_the_full_text_in_the_tooltip() {
    let mut p = plan();
    let long = "a_really_long_step_name_that_goes_on_and_on";
    p.steps[0].id = long.into();
    let svg = plan_svg(&p);
    assert!(svg.contains(&format!("<title>{long} (transform)</title>")));
    assert!(svg.contains(&format!(">{}</text>", truncate(long, NAME_CHARS))));
    assert_eq!(truncate(long, 5), "a_re…");
    assert_eq!(truncate("abc", 5), "abc");
}

#[test]
fn a_plan_without_steps_still_draws_trigger_and_end() {
    let mut p = plan();
    p.steps.clear();
    let d = layout(&p);
    assert_eq!(d.nodes.len(), 2);
    assert_eq!(d.edges.len(), 1);
    assert!(render_svg(&d).contains("0 steps"));
}
