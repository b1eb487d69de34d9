//! Blueprint v0: parse (YAML or JSON, one schema), validate (every problem, with its JSON path,
//! a stable code and a sentence) and compile into a [`Plan`] the engine runs.
//!
//! The schema:
//!
//! ```yaml
//! id: bp.checkmk.auto_remediate        # required, stable, [a-z0-9][a-z0-9_.-]*
//! name: "Checkmk Alert Auto-Remediation"
//! description: "…"
//! timeout: 30m                          # run wall-clock limit (capped by the node's limit)
//! trigger:
//!   event_type: "checkmk.alert"         # exact name or pattern (`checkmk.*`, `checkmk.**`)
//!   cron: "*/5 * * * *"                 # optional, 5 fields, UTC
//!   filter: '.data.state == "CRIT"'     # optional jq on the event, run only when truthy
//!   nats_subject: "orders.*"            # optional: messages on this NATS subject start runs
//! inputs:
//!   - name: host                        # bound from the event at `from` (default /data/<name>)
//!     from: /data/host
//!     default: "localhost"
//!     required: true                    # default: true unless a default is given
//!     type: string                      # string | number | integer | boolean | object | array
//! plan:
//!   - kind: agent_task                  # agent_task | action_task | gate | transform
//!     id: analyze
//!     provider: openai                  # alias: agent
//!     model: gpt-5
//!     prompt: "…{{inputs.host}}…"       # alias: prompt_template
//!   - kind: gate
//!     id: approve
//!     mode: manual
//!   - kind: action_task
//!     id: run_fix
//!     action: http.call
//!     with: {url: "{{inputs.base}}/fix/{{inputs.host}}"}
//!     if: '.steps.analyze.outputs.text != ""'   # jq on {inputs, event, steps, run}
//!     retry: {max_attempts: 3, backoff: exponential, delay: 1s, max_delay: 30s}
//!     timeout: 10s
//!   - kind: transform
//!     id: summarize
//!     expr: '{summary: "\(.inputs.host): done"}'   # jq, or `template: {…}`
//! outputs:
//!   - name: summary                     # `value: "{{…}}"`, or the latest step output of that name
//! ```

mod check;
mod check_steps;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::canonical::to_canonical;
use crate::cron::CronSchedule;
use crate::duration::parse_duration_ms;
use crate::glob;
use crate::jq::JqProgram;
use crate::template::{Expr, Root, Template, TemplateValue};
use check::*;

/// The most steps a plan may have.
pub const MAX_STEPS: usize = 200;

/// Stable validation codes.
pub mod codes {
    pub const SYNTAX: &str = "syntax";
    pub const NOT_AN_OBJECT: &str = "blueprint.not_an_object";
    pub const FIELD_UNKNOWN: &str = "field.unknown";
    pub const FIELD_TYPE: &str = "field.type";
    pub const FIELD_CONFLICT: &str = "field.conflict";
    pub const ID_MISSING: &str = "id.missing";
    pub const ID_INVALID: &str = "id.invalid";
    pub const ID_DUPLICATE: &str = "id.duplicate";
    pub const TRIGGER_MISSING: &str = "trigger.missing";
    pub const TRIGGER_EVENT_TYPE_MISSING: &str = "trigger.event_type_missing";
    pub const TRIGGER_EVENT_TYPE_INVALID: &str = "trigger.event_type_invalid";
    pub const TRIGGER_NATS_SUBJECT_INVALID: &str = "trigger.nats_subject_invalid";
    pub const CRON_INVALID: &str = "cron.invalid";
    pub const JQ_INVALID: &str = "jq.invalid";
    /// A jq program too long or nested too deeply to be parsed safely.
    pub const JQ_TOO_COMPLEX: &str = "jq.too_complex";
    pub const INPUT_NAME_MISSING: &str = "input.name_missing";
    pub const INPUT_NAME_DUPLICATE: &str = "input.name_duplicate";
    pub const INPUT_FROM_INVALID: &str = "input.from_invalid";
    pub const INPUT_TYPE_UNKNOWN: &str = "input.type_unknown";
    pub const INPUT_DEFAULT_TYPE: &str = "input.default_type";
    pub const PLAN_MISSING: &str = "plan.missing";
    pub const PLAN_EMPTY: &str = "plan.empty";
    pub const PLAN_TOO_MANY_STEPS: &str = "plan.too_many_steps";
    pub const KIND_MISSING: &str = "kind.missing";
    pub const KIND_UNKNOWN: &str = "kind.unknown";
    pub const GATE_MODE_MISSING: &str = "gate.mode_missing";
    pub const GATE_MODE_UNKNOWN: &str = "gate.mode_unknown";
    /// A gate's `approvers` entry is not a name or `role:owner` / `role:operator`.
    pub const GATE_APPROVER_INVALID: &str = "gate.approver_invalid";
    pub const AGENT_PROVIDER_MISSING: &str = "agent.provider_missing";
    pub const AGENT_PROVIDER_UNKNOWN: &str = "agent.provider_unknown";
    pub const AGENT_MODEL_MISSING: &str = "agent.model_missing";
    pub const AGENT_PROMPT_MISSING: &str = "agent.prompt_missing";
    pub const ACTION_MISSING: &str = "action.action_missing";
    pub const ACTION_WITH_MISSING: &str = "action.with_missing";
    pub const ACTION_UNKNOWN: &str = "action.unknown";
    pub const TRANSFORM_MISSING: &str = "transform.expr_missing";
    pub const TEMPLATE_SYNTAX: &str = "template.syntax";
    pub const TEMPLATE_UNKNOWN_INPUT: &str = "template.unknown_input";
    pub const TEMPLATE_UNKNOWN_STEP: &str = "template.unknown_step";
    pub const TEMPLATE_FORWARD_STEP: &str = "template.forward_step";
    pub const TEMPLATE_SELF_REFERENCE: &str = "template.self_reference";
    pub const TEMPLATE_BAD_PATH: &str = "template.bad_path";
    pub const DURATION_INVALID: &str = "duration.invalid";
    pub const RETRY_INVALID: &str = "retry.invalid";
    pub const OUTPUT_NAME_MISSING: &str = "output.name_missing";
    pub const OUTPUT_NAME_DUPLICATE: &str = "output.name_duplicate";
}

/// One problem found in a blueprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// JSON path of the offending field, e.g. `$.plan[2].with.url`.
    pub path: String,
    pub code: &'static str,
    pub message: String,
}

/// What validation needs to know about the node: which actions and providers exist.
pub struct ValidationEnv<'a> {
    pub is_known_action: &'a dyn Fn(&str) -> bool,
    pub known_providers: &'a [&'a str],
}

/// The providers the kernel ships.
pub const PROVIDERS: &[&str] = &["openai", "anthropic", "openai_compatible", "replay"];

impl ValidationEnv<'static> {
    /// An environment that accepts every action name (for syntax-only checks).
    pub fn permissive() -> Self {
        ValidationEnv {
            is_known_action: &|_| true,
            known_providers: PROVIDERS,
        }
    }
}

/// The kinds of step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    AgentTask,
    ActionTask,
    Gate,
    Transform,
}

impl StepKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "agent_task" => StepKind::AgentTask,
            "action_task" => StepKind::ActionTask,
            "gate" => StepKind::Gate,
            "transform" => StepKind::Transform,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::AgentTask => "agent_task",
            StepKind::ActionTask => "action_task",
            StepKind::Gate => "gate",
            StepKind::Transform => "transform",
        }
    }
    /// Steps with effects outside the node must be durable before they start.
    pub fn has_effects(self) -> bool {
        matches!(self, StepKind::AgentTask | StepKind::ActionTask)
    }
}

/// How retries are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    Fixed,
    Exponential,
}

/// A step's retry policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff: Backoff::Exponential,
            delay_ms: 1_000,
            max_delay_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next_attempt` (2 = the first retry).
    pub fn delay_before(&self, next_attempt: u32) -> u64 {
        let n = next_attempt.saturating_sub(2);
        let d = match self.backoff {
            Backoff::Fixed => self.delay_ms,
            Backoff::Exponential => self.delay_ms.saturating_mul(1u64 << n.min(30)),
        };
        d.min(self.max_delay_ms)
    }
}

/// What to do with the run when a gate is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnReject {
    Fail,
    Cancel,
}

/// The kind-specific part of a step.
#[derive(Clone, Debug)]
pub enum StepBody {
    Agent {
        provider: String,
        model: String,
        prompt: Template,
        system: Option<Template>,
        temperature: Option<f64>,
        max_tokens: Option<u64>,
        json_output: bool,
        /// Extra provider options (`base_url`, `cassette`), templated.
        options: Option<TemplateValue>,
        /// `api_key_ref: PATH`: the provider's API key read from the secret store when the step
        /// runs (a `{{secret "PATH"}}` template), instead of the node's configured key.
        api_key: Option<Template>,
    },
    Action {
        action: String,
        with: TemplateValue,
    },
    Gate {
        message: Option<Template>,
        on_reject: OnReject,
        /// Who may decide: principal names, and roles as `role:owner` / `role:operator`.
        /// Empty: anyone who may write (owners and operators).
        approvers: Vec<String>,
    },
    Transform(TransformBody),
}

/// A transform is either a jq program or a template object.
#[derive(Clone, Debug)]
pub enum TransformBody {
    Jq(JqProgram),
    Template(TemplateValue),
}

/// One compiled step.
#[derive(Clone, Debug)]
pub struct StepPlan {
    pub id: String,
    pub kind: StepKind,
    pub condition: Option<JqProgram>,
    pub retry: RetryPolicy,
    pub timeout_ms: Option<u64>,
    pub body: StepBody,
}

/// A declared input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputSpec {
    pub name: String,
    /// JSON pointer into the triggering event.
    pub from: String,
    pub default: Option<Value>,
    pub required: bool,
    pub ty: Option<String>,
}

/// A declared output.
#[derive(Clone, Debug)]
pub struct OutputSpec {
    pub name: String,
    pub value: Option<TemplateValue>,
}

/// A blueprint's trigger.
#[derive(Clone, Debug)]
pub struct Trigger {
    pub event_type: Option<String>,
    pub cron: Option<CronSchedule>,
    pub filter: Option<JqProgram>,
    /// A NATS subject (wildcards `*` and a final `>` allowed) whose messages become events
    /// that fire this blueprint.
    pub nats_subject: Option<String>,
}

/// Checks a NATS subject: dot-separated non-empty tokens without whitespace; `*` only as a
/// whole token, `>` only as the whole last token.
pub fn validate_nats_subject(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > 255 {
        return Err("is longer than 255 characters".into());
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!("has an empty token in {s:?}"));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{s:?} contains whitespace"));
        }
        if *t == ">" && i + 1 != tokens.len() {
            return Err(format!("{s:?} has '>' before its last token"));
        }
        if t.len() > 1 && (t.contains('*') || t.contains('>')) {
            return Err(format!("{s:?} has a wildcard inside a token ({t:?})"));
        }
    }
    Ok(())
}

/// True when a NATS `subject` matches the `pattern` (`*` one token, `>` the rest).
pub fn nats_subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A validated, compiled blueprint: what the engine runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub timeout_ms: Option<u64>,
    pub trigger: Trigger,
    pub inputs: Vec<InputSpec>,
    pub steps: Vec<StepPlan>,
    pub outputs: Vec<OutputSpec>,
    /// The definition as a JSON value (normalised from YAML or JSON).
    pub definition: Value,
    /// sha256 of the canonical JSON of `definition`.
    pub digest: String,
}

impl Plan {
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    /// True when a message on NATS `subject` fires this blueprint.
    pub fn matches_nats_subject(&self, subject: &str) -> bool {
        self.trigger
            .nats_subject
            .as_deref()
            .is_some_and(|p| nats_subject_matches(p, subject))
    }

    /// True when `event_name` fires this blueprint's event trigger.
    pub fn matches_event_name(&self, event_name: &str) -> bool {
        match &self.trigger.event_type {
            Some(p) => glob::matches(p, event_name),
            None => false,
        }
    }
}

/// The result of validating a blueprint text.
#[derive(Clone, Debug, Serialize)]
pub struct ValidationReport {
    pub valid: bool,
    pub blueprint_id: Option<String>,
    pub issues: Vec<Issue>,
}

/// The deepest nesting a blueprint text may have (serde_json's and serde_yaml_ng's own limit).
pub const MAX_TEXT_DEPTH: usize = 128;

/// The deepest nesting of YAML flow collections (`[…]`, `{…}`) outside quotes and comments.
/// Conservative: brackets inside plain or block scalars count too (balanced ones do no harm).
fn yaml_flow_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut prev = '\n';
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some('"') => match c {
                '\\' => {
                    chars.next();
                }
                '"' => quote = None,
                _ => {}
            },
            Some(_) => {
                if c == '\'' {
                    quote = None;
                }
            }
            None => match c {
                '#' if prev.is_whitespace() => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '"' | '\'' if !prev.is_alphanumeric() => quote = Some(c),
                '[' | '{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    max
}

/// Parses YAML or JSON text into a JSON value. JSON is detected by a leading `{`.
pub fn parse_text(text: &str) -> Result<Value, Issue> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        serde_json::from_str(trimmed).map_err(|e| Issue {
            path: "$".into(),
            code: codes::SYNTAX,
            message: format!(
                "not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
    } else {
        // libyaml takes time quadratic in the nesting of flow collections (100,000 `[` took a
        // minute), and serde_yaml_ng refuses more than 128 levels only after that: refuse
        // deep documents first, with one linear scan.
        if yaml_flow_depth(trimmed) > MAX_TEXT_DEPTH {
            return Err(Issue {
                path: "$".into(),
                code: codes::SYNTAX,
                message: format!("not valid YAML: nested deeper than {MAX_TEXT_DEPTH} levels"),
            });
        }
        serde_yaml_ng::from_str::<Value>(trimmed).map_err(|e| Issue {
            path: "$".into(),
            code: codes::SYNTAX,
            message: match e.location() {
                Some(l) => format!(
                    "not valid YAML: {e} (line {}, column {})",
                    l.line(),
                    l.column()
                ),
                None => format!("not valid YAML: {e}"),
            },
        })
    }
}

/// Validates and compiles a blueprint text. On failure, returns every issue found.
pub fn compile_text(text: &str, env: &ValidationEnv<'_>) -> Result<Arc<Plan>, Vec<Issue>> {
    let v = parse_text(text).map_err(|i| vec![i])?;
    compile(&v, env)
}

/// Validates a text and reports, without keeping the plan.
pub fn validate_text(text: &str, env: &ValidationEnv<'_>) -> ValidationReport {
    match parse_text(text) {
        Err(i) => ValidationReport {
            valid: false,
            blueprint_id: None,
            issues: vec![i],
        },
        Ok(v) => {
            let id = v.get("id").and_then(Value::as_str).map(str::to_string);
            match compile(&v, env) {
                Ok(_) => ValidationReport {
                    valid: true,
                    blueprint_id: id,
                    issues: vec![],
                },
                Err(issues) => ValidationReport {
                    valid: false,
                    blueprint_id: id,
                    issues,
                },
            }
        }
    }
}

/// The content digest of a definition.
pub fn digest(definition: &Value) -> String {
    hex::encode(Sha256::digest(to_canonical(definition)))
}

/// Validates and compiles a blueprint given as a JSON value.
pub fn compile(v: &Value, env: &ValidationEnv<'_>) -> Result<Arc<Plan>, Vec<Issue>> {
    let mut c = Checker {
        issues: Vec::new(),
        env,
    };
    let plan = c.blueprint(v);
    if c.issues.is_empty()
        && let Some(p) = plan
    {
        return Ok(Arc::new(p));
    }
    let mut issues = c.issues;
    // Stable order: by path as written, then code; keeps reports and snapshots deterministic.
    issues.sort_by(|a, b| {
        path_key(&a.path)
            .cmp(&path_key(&b.path))
            .then(a.code.cmp(b.code))
    });
    issues.dedup();
    Err(issues)
}

/// Binds a run's inputs from its triggering event (`from` pointers) or from explicit inputs
/// (manual runs). Returns every problem at once.
pub fn bind_inputs(
    plan: &Plan,
    event: Option<&Value>,
    explicit: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>, Vec<Issue>> {
    let mut out = Map::new();
    let mut issues = Vec::new();
    for spec in &plan.inputs {
        // Given by hand, a blank text counts as not given: a form's empty field must neither
        // satisfy a required input nor override a default.
        let found = match explicit {
            Some(m) => m
                .get(&spec.name)
                .filter(|v| v.as_str().is_none_or(|s| !s.trim().is_empty()))
                .cloned(),
            None => event.and_then(|e| e.pointer(&spec.from)).cloned(),
        }
        .filter(|v| !v.is_null());
        let v = match found.or_else(|| spec.default.clone()) {
            Some(v) => v,
            None if spec.required => {
                issues.push(Issue {
                    path: format!("inputs.{}", spec.name),
                    code: "input.required",
                    message: match explicit {
                        Some(_) => format!("input '{}' is required", spec.name),
                        None => format!(
                            "input '{}' is required but the event has nothing at {}",
                            spec.name, spec.from
                        ),
                    },
                });
                continue;
            }
            None => Value::Null,
        };
        if let Some(t) = &spec.ty
            && !v.is_null()
            && !value_has_type(&v, t)
        {
            issues.push(Issue {
                path: format!("inputs.{}", spec.name),
                code: "input.type",
                message: format!(
                    "input '{}' must be of type {t}, got {}",
                    spec.name,
                    type_name(&v)
                ),
            });
            continue;
        }
        out.insert(spec.name.clone(), v);
    }
    if let Some(m) = explicit {
        for k in m.keys() {
            if !plan.inputs.iter().any(|i| &i.name == k) {
                issues.push(Issue {
                    path: format!("inputs.{k}"),
                    code: "input.unknown",
                    message: format!(
                        "the blueprint declares no input '{k}' (declared: {})",
                        plan.inputs
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// A summary of the steps of a plan, for listings.
pub fn step_summary(plan: &Plan) -> BTreeMap<String, &'static str> {
    plan.steps
        .iter()
        .map(|s| (s.id.clone(), s.kind.as_str()))
        .collect()
}
