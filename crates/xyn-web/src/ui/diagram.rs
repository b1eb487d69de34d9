//! The plan diagram on the blueprint page: a server-rendered inline SVG of a compiled plan
//! (no script, no library). [`layout`] places the nodes and routes the edges; [`render_svg`]
//! writes the SVG, every piece of text XML-escaped. Colours come from CSS classes whose
//! rules use the UI's colour variables, so the diagram follows the light and dark themes.
//!
//! The plan is a sequence: steps run in order, a step with an `if:` condition is skipped when
//! it is false (drawn as a dashed bypass), a gate that is rejected ends the run (drawn as a
//! side branch to its outcome).

use std::fmt::Write as _;

use xyn_core::blueprint::{Backoff, OnReject, Plan, StepBody, StepKind, StepPlan};

/// The diagram's width in SVG units; it scales down to the page (`max-width: 100%`).
pub const WIDTH: i32 = 360;
/// The main column: every step's box.
const BOX_X: i32 = 28;
const BOX_W: i32 = 232;
const BOX_H: i32 = 52;
/// The side column: a gate's outcome when rejected.
const SIDE_X: i32 = 272;
const SIDE_W: i32 = 84;
const SIDE_H: i32 = 40;
/// The lane of the dashed bypass for skipped steps.
const SKIP_X: i32 = 12;
const GAP: i32 = 30;
const COND_H: i32 = 18;
const TOP: i32 = 8;
const NAME_CHARS: usize = 28;
const COND_CHARS: usize = 28;
const SUB_CHARS: usize = 30;

/// What a node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Trigger,
    Step(StepKind),
    /// Where a gate's rejection leads.
    Rejected(OnReject),
    End,
}

impl Role {
    fn class(self) -> &'static str {
        match self {
            Role::Trigger => "pd-trigger",
            Role::Step(StepKind::Gate) => "pd-gate",
            Role::Step(StepKind::AgentTask) => "pd-agent",
            Role::Step(StepKind::ActionTask) => "pd-action",
            Role::Step(StepKind::Transform) => "pd-transform",
            Role::Rejected(_) => "pd-rejected",
            Role::End => "pd-end",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Role::Trigger => "trigger",
            Role::Step(k) => k.as_str(),
            Role::Rejected(_) => "rejected",
            Role::End => "end",
        }
    }
}

/// A placed node. Text is kept raw here and escaped when written.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The step id (`trigger`, `end` and `<gate>:rejected` for the others).
    pub key: String,
    pub role: Role,
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
    pub label: String,
    pub sub: String,
    /// The retry policy in a few characters, when the step may be retried.
    pub badge: Option<String>,
    /// The `if:` condition, in full.
    pub condition: Option<String>,
    /// Everything about the node, for the tooltip.
    pub tooltip: String,
}

impl Node {
    fn cx(&self) -> i32 {
        self.x + self.w / 2
    }
    fn bottom(&self) -> i32 {
        self.y + self.h
    }
}

/// The kinds of edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// The next step in execution order.
    Next,
    /// Around a step whose condition is false.
    Skip,
    /// From a gate to its outcome when rejected.
    Reject,
}

/// A routed edge: a polyline from `points[0]` to the last point (where the arrow is).
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub kind: EdgeKind,
    pub from: String,
    pub to: String,
    pub points: Vec<(i32, i32)>,
}

/// A laid-out plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagram {
    pub title: String,
    pub width: i32,
    pub height: i32,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// At most `n` characters, with an ellipsis when cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline are not allowed in XML.
            c if c.is_control() && c != '\t' && c != '\n' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn ms_text(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms >= 60_000 {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

/// The retry badge, e.g. `↻ 3× exponential`; none for a single attempt.
pub fn retry_badge(step: &StepPlan) -> Option<String> {
    let r = &step.retry;
    (r.max_attempts > 1).then(|| {
        let how = match r.backoff {
            Backoff::Fixed => "fixed",
            Backoff::Exponential => "exponential",
        };
        format!("↻ {}× {how}", r.max_attempts)
    })
}

fn kind_label(k: StepKind) -> &'static str {
    match k {
        StepKind::AgentTask => "agent task",
        StepKind::ActionTask => "action",
        StepKind::Gate => "gate",
        StepKind::Transform => "transform",
    }
}

fn step_sub(step: &StepPlan) -> String {
    match &step.body {
        StepBody::Action { action, .. } => format!("action · {action}"),
        StepBody::Agent {
            provider, model, ..
        } => format!("agent · {provider}/{model}"),
        StepBody::Gate { approvers, .. } if !approvers.is_empty() => {
            format!("gate · {}", approvers.join(", "))
        }
        _ => kind_label(step.kind).to_string(),
    }
}

fn step_tooltip(step: &StepPlan) -> String {
    let mut t = format!("{} ({})", step.id, step_sub(step));
    if let Some(c) = &step.condition {
        let _ = write!(t, "\nruns only if: {}", c.source());
    }
    if step.retry.max_attempts > 1 {
        let r = &step.retry;
        let _ = write!(
            t,
            "\nup to {} attempts, {} backoff from {} (at most {})",
            r.max_attempts,
            match r.backoff {
                Backoff::Fixed => "fixed",
                Backoff::Exponential => "exponential",
            },
            ms_text(r.delay_ms),
            ms_text(r.max_delay_ms)
        );
    }
    if let Some(ms) = step.timeout_ms {
        let _ = write!(t, "\ntimeout {}", ms_text(ms));
    }
    if let StepBody::Gate { on_reject, .. } = &step.body {
        let _ = write!(t, "\nwhen rejected: {}", reject_text(*on_reject));
    }
    t
}

fn reject_text(r: OnReject) -> &'static str {
    match r {
        OnReject::Fail => "run fails",
        OnReject::Cancel => "run cancelled",
    }
}

fn trigger_text(plan: &Plan) -> (String, String) {
    let t = &plan.trigger;
    let mut parts = Vec::new();
    if let Some(e) = &t.event_type {
        parts.push(format!("event {e}"));
    }
    if let Some(c) = &t.cron {
        parts.push(format!("cron {}", c.source()));
    }
    if let Some(s) = &t.nats_subject {
        parts.push(format!("NATS {s}"));
    }
    if parts.is_empty() {
        parts.push("manual".into());
    }
    let mut tooltip = format!("Trigger: {}", parts.join("; "));
    if let Some(f) = &t.filter {
        let _ = write!(tooltip, "\nfilter: {}", f.source());
    }
    (parts.join(" · "), tooltip)
}

/// Places the trigger, every step in execution order, each gate's rejection outcome and the end,
/// and routes the edges between them.
pub fn layout(plan: &Plan) -> Diagram {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let (trigger, trigger_tip) = trigger_text(plan);
    let head = Node {
        key: "trigger".into(),
        role: Role::Trigger,
        x: BOX_X,
        y: TOP,
        w: BOX_W,
        h: 44,
        label: "Trigger".into(),
        sub: trigger,
        badge: None,
        condition: None,
        tooltip: trigger_tip,
    };
    let mut y = head.bottom();
    let mut prev = (head.key.clone(), head.cx(), head.bottom());
    nodes.push(head);
    for step in &plan.steps {
        let cond_h = if step.condition.is_some() { COND_H } else { 0 };
        let top = y + GAP + cond_h;
        let node = Node {
            key: step.id.clone(),
            role: Role::Step(step.kind),
            x: BOX_X,
            y: top,
            w: BOX_W,
            h: BOX_H,
            label: step.id.clone(),
            sub: step_sub(step),
            badge: retry_badge(step),
            condition: step.condition.as_ref().map(|c| c.source().to_string()),
            tooltip: step_tooltip(step),
        };
        edges.push(Edge {
            kind: EdgeKind::Next,
            from: prev.0.clone(),
            to: node.key.clone(),
            points: vec![(prev.1, prev.2), (node.cx(), node.y)],
        });
        if step.condition.is_some() {
            // Leaves the incoming edge above the condition label, passes the box on the left
            // and rejoins the line below it.
            let from_y = y + GAP / 2;
            let to_y = node.bottom() + GAP / 2;
            edges.push(Edge {
                kind: EdgeKind::Skip,
                from: prev.0.clone(),
                to: node.key.clone(),
                points: vec![
                    (node.cx(), from_y),
                    (SKIP_X, from_y),
                    (SKIP_X, to_y),
                    (node.cx() - 4, to_y),
                ],
            });
        }
        if let StepBody::Gate { on_reject, .. } = &step.body {
            let cy = node.y + node.h / 2;
            let side = Node {
                key: format!("{}:rejected", step.id),
                role: Role::Rejected(*on_reject),
                x: SIDE_X,
                y: cy - SIDE_H / 2,
                w: SIDE_W,
                h: SIDE_H,
                label: "rejected".into(),
                sub: reject_text(*on_reject).into(),
                badge: None,
                condition: None,
                tooltip: format!("When {} is rejected: {}", step.id, reject_text(*on_reject)),
            };
            edges.push(Edge {
                kind: EdgeKind::Reject,
                from: node.key.clone(),
                to: side.key.clone(),
                points: vec![(node.x + node.w, cy), (side.x, cy)],
            });
            nodes.push(node.clone());
            nodes.push(side);
        } else {
            nodes.push(node.clone());
        }
        y = node.bottom();
        prev = (node.key.clone(), node.cx(), node.bottom());
    }
    let outputs = plan.outputs.len();
    let end = Node {
        key: "end".into(),
        role: Role::End,
        x: BOX_X + BOX_W / 2 - 60,
        y: y + GAP,
        w: 120,
        h: 32,
        label: "Completed".into(),
        sub: String::new(),
        badge: None,
        condition: None,
        tooltip: match outputs {
            0 => "The run completes.".into(),
            1 => "The run completes with 1 output.".into(),
            n => format!("The run completes with {n} outputs."),
        },
    };
    edges.push(Edge {
        kind: EdgeKind::Next,
        from: prev.0,
        to: end.key.clone(),
        points: vec![(prev.1, prev.2), (end.cx(), end.y)],
    });
    let height = end.bottom() + TOP;
    nodes.push(end);
    let steps = plan.steps.len();
    Diagram {
        title: format!(
            "Plan of {}: {steps} step{}",
            plan.id,
            if steps == 1 { "" } else { "s" }
        ),
        width: WIDTH,
        height,
        nodes,
        edges,
    }
}

fn path_d(points: &[(i32, i32)]) -> String {
    let mut d = String::new();
    for (i, (x, y)) in points.iter().enumerate() {
        let _ = write!(d, "{}{x} {y}", if i == 0 { "M" } else { " L" });
    }
    d
}

fn shape(out: &mut String, n: &Node) {
    let (x, y, w, h) = (n.x, n.y, n.w, n.h);
    match n.role {
        // A gate is a hexagon: pointed sides set it apart from every other step.
        Role::Step(StepKind::Gate) => {
            let p = 14;
            let _ = write!(
                out,
                r#"<polygon class="pd-shape" points="{},{y} {},{y} {},{} {},{} {},{} {x},{}"/>"#,
                x + p,
                x + w - p,
                x + w,
                y + h / 2,
                x + w - p,
                y + h,
                x + p,
                y + h,
                y + h / 2
            );
        }
        Role::End | Role::Trigger => {
            let _ = write!(
                out,
                r#"<rect class="pd-shape" x="{x}" y="{y}" width="{w}" height="{h}" rx="{}"/>"#,
                h / 2
            );
        }
        _ => {
            let _ = write!(
                out,
                r#"<rect class="pd-shape" x="{x}" y="{y}" width="{w}" height="{h}" rx="6"/>"#
            );
        }
    }
}

/// The diagram as an inline SVG element.
pub fn render_svg(d: &Diagram) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        r#"<svg class="plan-diagram" data-testid="plan-diagram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-labelledby="plan-diagram-title"><title id="plan-diagram-title">{t}</title>"#,
        w = d.width,
        h = d.height,
        t = escape(&d.title)
    );
    out.push_str(
        r#"<defs><marker id="pd-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path class="pd-arrowhead" d="M0 0 L10 5 L0 10 z"/></marker></defs>"#,
    );
    for e in &d.edges {
        let class = match e.kind {
            EdgeKind::Next => "pd-edge pd-next",
            EdgeKind::Skip => "pd-edge pd-skip",
            EdgeKind::Reject => "pd-edge pd-reject",
        };
        let tip = match e.kind {
            EdgeKind::Next => format!("{} → {}", e.from, e.to),
            EdgeKind::Skip => format!("{} is skipped when its condition is false", e.to),
            EdgeKind::Reject => format!("{} rejected", e.from),
        };
        let _ = write!(
            out,
            r#"<path class="{class}" data-testid="plan-edge" data-edge="{kind}" d="{d}" marker-end="url(#pd-arrow)"><title>{tip}</title></path>"#,
            kind = match e.kind {
                EdgeKind::Next => "next",
                EdgeKind::Skip => "skip",
                EdgeKind::Reject => "reject",
            },
            d = path_d(&e.points),
            tip = escape(&tip)
        );
    }
    for n in &d.nodes {
        let testid = match n.role {
            Role::Step(_) => "plan-node",
            Role::Trigger => "plan-trigger",
            Role::Rejected(_) => "plan-rejected",
            Role::End => "plan-end",
        };
        if let Some(c) = &n.condition {
            let _ = write!(
                out,
                r#"<g class="pd-cond" data-testid="plan-condition"><title>if: {full}</title><text x="{x}" y="{y}">if: {short}</text></g>"#,
                full = escape(c),
                x = n.x + n.w / 2 + 8,
                y = n.y - 6,
                short = escape(&truncate(c, COND_CHARS))
            );
        }
        let _ = write!(
            out,
            r#"<g class="pd-node {class}" data-testid="{testid}" data-step="{key}" data-kind="{kind}"><title>{tip}</title>"#,
            class = n.role.class(),
            key = escape(&n.key),
            kind = n.role.kind(),
            tip = escape(&n.tooltip)
        );
        shape(&mut out, n);
        match n.role {
            Role::Step(_) => {
                let _ = write!(
                    out,
                    r#"<text class="pd-label" x="{}" y="{}">{}</text><text class="pd-sub" x="{}" y="{}">{}</text>"#,
                    n.x + 18,
                    n.y + 22,
                    escape(&truncate(&n.label, NAME_CHARS)),
                    n.x + 18,
                    n.y + 40,
                    escape(&truncate(
                        &n.sub,
                        if n.badge.is_some() { 16 } else { SUB_CHARS }
                    ))
                );
                if let Some(b) = &n.badge {
                    let _ = write!(
                        out,
                        r#"<text class="pd-badge" data-testid="plan-retry" x="{}" y="{}" text-anchor="end">{}</text>"#,
                        n.x + n.w - 16,
                        n.y + 40,
                        escape(b)
                    );
                }
            }
            Role::Trigger => {
                let _ = write!(
                    out,
                    r#"<text class="pd-label" x="{}" y="{}">{}</text><text class="pd-sub" x="{}" y="{}">{}</text>"#,
                    n.x + 16,
                    n.y + 18,
                    escape(&n.label),
                    n.x + 16,
                    n.y + 35,
                    escape(&truncate(&n.sub, 34))
                );
            }
            Role::Rejected(_) => {
                let _ = write!(
                    out,
                    r#"<text class="pd-sub" x="{cx}" y="{}" text-anchor="middle">{}</text><text class="pd-outcome" x="{cx}" y="{}" text-anchor="middle">{}</text>"#,
                    n.y + 16,
                    escape(&n.label),
                    n.y + 31,
                    escape(&n.sub),
                    cx = n.cx()
                );
            }
            Role::End => {
                let _ = write!(
                    out,
                    r#"<text class="pd-label" x="{}" y="{}" text-anchor="middle">{}</text>"#,
                    n.cx(),
                    n.y + 21,
                    escape(&n.label)
                );
            }
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

/// The diagram of a plan, as an inline SVG element.
pub fn plan_svg(plan: &Plan) -> String {
    render_svg(&layout(plan))
}

#[cfg(test)]
mod tests;
