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

/// A sort key for JSON paths in which `[10]` comes after `[9]`.
fn path_key(p: &str) -> Vec<PathPart> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '[' {
            let mut num = String::new();
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                num.push(d);
                chars.next();
            }
            if chars.peek() == Some(&']') && !num.is_empty() {
                chars.next();
                out.push(PathPart::Text(std::mem::take(&mut text)));
                out.push(PathPart::Index(num.parse().unwrap_or(usize::MAX)));
                continue;
            }
            text.push('[');
            text.push_str(&num);
            continue;
        }
        text.push(c);
    }
    out.push(PathPart::Text(text));
    out
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum PathPart {
    Text(String),
    Index(usize),
}

const ID_HELP: &str = "must start with a lowercase letter or digit and contain only lowercase letters, digits, '_', '-' and '.'";

fn valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && s.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.')
        })
}

fn valid_step_id(s: &str) -> bool {
    // Step ids appear in template paths (`steps.<id>.outputs`), so no dots.
    valid_id(s) && !s.contains('.')
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// True when `v` has the declared input type.
pub fn value_has_type(v: &Value, ty: &str) -> bool {
    match ty {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => true,
    }
}

const INPUT_TYPES: &[&str] = &["string", "number", "integer", "boolean", "object", "array"];

struct Checker<'e, 'a> {
    issues: Vec<Issue>,
    env: &'e ValidationEnv<'a>,
}

impl Checker<'_, '_> {
    fn issue(&mut self, path: impl Into<String>, code: &'static str, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.into(),
            code,
            message: message.into(),
        });
    }

    fn unknown_fields(&mut self, path: &str, m: &Map<String, Value>, allowed: &[&str]) {
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                self.issue(
                    format!("{path}.{k}"),
                    codes::FIELD_UNKNOWN,
                    format!("unknown field '{k}' (allowed here: {})", allowed.join(", ")),
                );
            }
        }
    }

    fn opt_str(&mut self, path: &str, m: &Map<String, Value>, key: &str) -> Option<String> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.issue(
                    format!("{path}.{key}"),
                    codes::FIELD_TYPE,
                    format!("'{key}' must be a string, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A string field that may be spelled two ways (`provider`/`agent`).
    fn aliased_str(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
        key: &str,
        alias: &str,
    ) -> Option<String> {
        let a = self.opt_str(path, m, key);
        let b = self.opt_str(path, m, alias);
        match (a, b) {
            (Some(_), Some(_)) => {
                self.issue(
                    format!("{path}.{alias}"),
                    codes::FIELD_CONFLICT,
                    format!("give either '{key}' or '{alias}', not both"),
                );
                None
            }
            (a, b) => a.or(b),
        }
    }

    fn duration(&mut self, path: &str, m: &Map<String, Value>, key: &str) -> Option<u64> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match parse_duration_ms(s) {
                Some(ms) if ms > 0 => Some(ms),
                _ => {
                    self.issue(
                        format!("{path}.{key}"),
                        codes::DURATION_INVALID,
                        format!(
                            "'{key}' must be a positive duration like 500ms, 30s, 5m or 1h (got {s:?})"
                        ),
                    );
                    None
                }
            },
            Some(Value::Number(n)) => {
                self.issue(
                    format!("{path}.{key}"),
                    codes::DURATION_INVALID,
                    format!("'{key}' needs a unit: write \"{n}s\" or \"{n}ms\""),
                );
                None
            }
            Some(other) => {
                self.issue(
                    format!("{path}.{key}"),
                    codes::FIELD_TYPE,
                    format!(
                        "'{key}' must be a duration string, not {}",
                        type_name(other)
                    ),
                );
                None
            }
        }
    }

    fn jq(&mut self, path: String, src: &str) -> Option<JqProgram> {
        match JqProgram::compile(src) {
            Ok(p) => Some(p),
            Err(e) => {
                let code = if e.code == crate::jq::codes::TOO_COMPLEX {
                    codes::JQ_TOO_COMPLEX
                } else {
                    codes::JQ_INVALID
                };
                self.issue(
                    path,
                    code,
                    format!("not a valid jq expression: {}", e.message),
                );
                None
            }
        }
    }

    fn blueprint(&mut self, v: &Value) -> Option<Plan> {
        let Some(m) = v.as_object() else {
            self.issue(
                "$",
                codes::NOT_AN_OBJECT,
                format!("a blueprint must be a mapping, not {}", type_name(v)),
            );
            return None;
        };
        self.unknown_fields(
            "$",
            m,
            &[
                "id",
                "name",
                "description",
                "timeout",
                "trigger",
                "inputs",
                "plan",
                "outputs",
            ],
        );
        let id = match self.opt_str("$", m, "id") {
            None => {
                if !m.contains_key("id") {
                    self.issue("$.id", codes::ID_MISSING, "the blueprint needs an 'id'");
                }
                None
            }
            Some(id) if !valid_id(&id) => {
                self.issue("$.id", codes::ID_INVALID, format!("id {id:?} {ID_HELP}"));
                None
            }
            Some(id) => Some(id),
        };
        let name = self.opt_str("$", m, "name");
        let description = self.opt_str("$", m, "description");
        let timeout_ms = self.duration("$", m, "timeout");
        let trigger = self.trigger(m.get("trigger"));
        let inputs = self.inputs(m.get("inputs"));
        let input_names: HashSet<String> = inputs.iter().map(|i| i.name.clone()).collect();
        let steps = self.plan(m.get("plan"), &input_names);
        let step_ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
        let outputs = self.outputs(m.get("outputs"), &input_names, &step_ids);

        let (id, trigger) = (id?, trigger?);
        if !self.issues.is_empty() {
            return None;
        }
        Some(Plan {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            description,
            timeout_ms,
            trigger,
            inputs,
            steps,
            outputs,
            definition: v.clone(),
            digest: digest(v),
        })
    }

    fn trigger(&mut self, v: Option<&Value>) -> Option<Trigger> {
        let path = "$.trigger";
        let m = match v {
            None | Some(Value::Null) => {
                self.issue(
                    path,
                    codes::TRIGGER_MISSING,
                    "the blueprint needs a 'trigger' with an 'event_type' (or a 'cron')",
                );
                return None;
            }
            Some(Value::Object(m)) => m,
            Some(other) => {
                self.issue(
                    path,
                    codes::FIELD_TYPE,
                    format!("'trigger' must be a mapping, not {}", type_name(other)),
                );
                return None;
            }
        };
        self.unknown_fields(path, m, &["event_type", "cron", "filter", "nats_subject"]);
        let event_type = self.opt_str(path, m, "event_type");
        if let Some(et) = &event_type
            && let Err(why) = glob::validate_pattern(et)
        {
            self.issue(
                format!("{path}.event_type"),
                codes::TRIGGER_EVENT_TYPE_INVALID,
                format!("event_type {why}"),
            );
        }
        let cron = self
            .opt_str(path, m, "cron")
            .and_then(|c| match CronSchedule::parse(&c) {
                Ok(s) => Some(s),
                Err(why) => {
                    self.issue(
                        format!("{path}.cron"),
                        codes::CRON_INVALID,
                        format!("not a valid cron expression {c:?}: {why}"),
                    );
                    None
                }
            });
        let nats_subject = self.opt_str(path, m, "nats_subject");
        if let Some(ns) = &nats_subject
            && let Err(why) = validate_nats_subject(ns)
        {
            self.issue(
                format!("{path}.nats_subject"),
                codes::TRIGGER_NATS_SUBJECT_INVALID,
                format!("nats_subject {why}"),
            );
        }
        if event_type.is_none() && !m.contains_key("cron") && !m.contains_key("nats_subject") {
            self.issue(
                format!("{path}.event_type"),
                codes::TRIGGER_EVENT_TYPE_MISSING,
                "the trigger needs an 'event_type' (or a 'cron' schedule)",
            );
        }
        let filter = self
            .opt_str(path, m, "filter")
            .and_then(|f| self.jq(format!("{path}.filter"), &f));
        Some(Trigger {
            event_type,
            cron,
            filter,
            nats_subject,
        })
    }

    fn inputs(&mut self, v: Option<&Value>) -> Vec<InputSpec> {
        let items = match v {
            None | Some(Value::Null) => return vec![],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.issue(
                    "$.inputs",
                    codes::FIELD_TYPE,
                    format!("'inputs' must be a list, not {}", type_name(other)),
                );
                return vec![];
            }
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("$.inputs[{i}]");
            let m = match item {
                Value::Object(m) => m,
                Value::String(s) => {
                    // `- host` is shorthand for `- name: host`.
                    let mut m = Map::new();
                    m.insert("name".into(), Value::String(s.clone()));
                    if let Some(spec) = self.input(&path, &m, &mut seen) {
                        out.push(spec);
                    }
                    continue;
                }
                other => {
                    self.issue(
                        path,
                        codes::FIELD_TYPE,
                        format!("an input must be a mapping, not {}", type_name(other)),
                    );
                    continue;
                }
            };
            if let Some(spec) = self.input(&path, m, &mut seen) {
                out.push(spec);
            }
        }
        out
    }

    fn input(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
        seen: &mut HashSet<String>,
    ) -> Option<InputSpec> {
        self.unknown_fields(
            path,
            m,
            &["name", "from", "default", "required", "type", "description"],
        );
        let name = self.opt_str(path, m, "name");
        let Some(name) = name else {
            self.issue(
                format!("{path}.name"),
                codes::INPUT_NAME_MISSING,
                "every input needs a 'name'",
            );
            return None;
        };
        if !valid_step_id(&name.replace('-', "_")) {
            self.issue(
                format!("{path}.name"),
                codes::ID_INVALID,
                format!("input name {name:?} {ID_HELP} (and no dots)"),
            );
        }
        if !seen.insert(name.clone()) {
            self.issue(
                format!("{path}.name"),
                codes::INPUT_NAME_DUPLICATE,
                format!("input '{name}' is declared twice"),
            );
        }
        let from = self
            .opt_str(path, m, "from")
            .unwrap_or_else(|| format!("/data/{name}"));
        if !(from.is_empty() || from.starts_with('/')) {
            self.issue(
                format!("{path}.from"),
                codes::INPUT_FROM_INVALID,
                format!(
                    "'from' must be a JSON pointer into the event, like /data/{name} (got {from:?})"
                ),
            );
        }
        let ty = self.opt_str(path, m, "type");
        if let Some(t) = &ty
            && !INPUT_TYPES.contains(&t.as_str())
        {
            self.issue(
                format!("{path}.type"),
                codes::INPUT_TYPE_UNKNOWN,
                format!("unknown type {t:?} (use one of {})", INPUT_TYPES.join(", ")),
            );
        }
        let default = m.get("default").cloned();
        if let (Some(d), Some(t)) = (&default, &ty)
            && !d.is_null()
            && !value_has_type(d, t)
        {
            self.issue(
                format!("{path}.default"),
                codes::INPUT_DEFAULT_TYPE,
                format!(
                    "the default is {} but the input is of type {t}",
                    type_name(d)
                ),
            );
        }
        let required = match m.get("required") {
            None | Some(Value::Null) => default.is_none(),
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.issue(
                    format!("{path}.required"),
                    codes::FIELD_TYPE,
                    format!("'required' must be true or false, not {}", type_name(other)),
                );
                true
            }
        };
        Some(InputSpec {
            name,
            from,
            default,
            required,
            ty,
        })
    }

    fn plan(&mut self, v: Option<&Value>, inputs: &HashSet<String>) -> Vec<StepPlan> {
        let items = match v {
            None | Some(Value::Null) => {
                self.issue(
                    "$.plan",
                    codes::PLAN_MISSING,
                    "the blueprint needs a 'plan' (a list of steps)",
                );
                return vec![];
            }
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.issue(
                    "$.plan",
                    codes::FIELD_TYPE,
                    format!("'plan' must be a list of steps, not {}", type_name(other)),
                );
                return vec![];
            }
        };
        if items.is_empty() {
            self.issue("$.plan", codes::PLAN_EMPTY, "the plan has no steps");
        }
        if items.len() > MAX_STEPS {
            self.issue(
                "$.plan",
                codes::PLAN_TOO_MANY_STEPS,
                format!(
                    "the plan has {} steps; at most {MAX_STEPS} are allowed",
                    items.len()
                ),
            );
            // Nothing more is checked: validating thousands of steps costs seconds.
            return vec![];
        }
        // First pass: every step id and its position, so references can be classified
        // (earlier, itself, later, unknown) whatever order problems appear in.
        let mut positions: HashMap<String, usize> = HashMap::new();
        let mut ids: Vec<Option<String>> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("$.plan[{i}]");
            let id = match item.get("id") {
                None | Some(Value::Null) => {
                    self.issue(
                        format!("{path}.id"),
                        codes::ID_MISSING,
                        format!("step {} needs an 'id'", i + 1),
                    );
                    None
                }
                Some(Value::String(s)) if !valid_step_id(s) => {
                    self.issue(
                        format!("{path}.id"),
                        codes::ID_INVALID,
                        format!("step id {s:?} {ID_HELP} (and no dots)"),
                    );
                    None
                }
                Some(Value::String(s)) => {
                    if let Some(first) = positions.get(s) {
                        self.issue(
                            format!("{path}.id"),
                            codes::ID_DUPLICATE,
                            format!("step id '{s}' is already used by step {}", first + 1),
                        );
                    } else {
                        positions.insert(s.clone(), i);
                    }
                    Some(s.clone())
                }
                Some(other) => {
                    self.issue(
                        format!("{path}.id"),
                        codes::FIELD_TYPE,
                        format!("'id' must be a string, not {}", type_name(other)),
                    );
                    None
                }
            };
            ids.push(id);
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let scope = RefScope {
                inputs,
                positions: &positions,
                index: i,
            };
            if let Some(step) = self.step(i, item, ids[i].clone(), &scope) {
                out.push(step);
            }
        }
        out
    }

    fn step(
        &mut self,
        i: usize,
        v: &Value,
        id: Option<String>,
        scope: &RefScope<'_>,
    ) -> Option<StepPlan> {
        let path = format!("$.plan[{i}]");
        let Some(m) = v.as_object() else {
            self.issue(
                path,
                codes::FIELD_TYPE,
                format!("a step must be a mapping, not {}", type_name(v)),
            );
            return None;
        };
        let kind = match self.opt_str(&path, m, "kind") {
            None => {
                if !m.contains_key("kind") {
                    self.issue(
                        format!("{path}.kind"),
                        codes::KIND_MISSING,
                        "every step needs a 'kind' (agent_task, action_task, gate or transform)",
                    );
                }
                None
            }
            Some(k) => {
                match StepKind::parse(&k) {
                    Some(k) => Some(k),
                    None => {
                        self.issue(
                        format!("{path}.kind"),
                        codes::KIND_UNKNOWN,
                        format!("unknown kind {k:?} (use agent_task, action_task, gate or transform)"),
                    );
                        None
                    }
                }
            }
        };
        const COMMON: &[&str] = &[
            "kind",
            "id",
            "name",
            "description",
            "if",
            "retry",
            "timeout",
        ];
        let specific: &[&str] = match kind {
            Some(StepKind::AgentTask) => &[
                "provider",
                "agent",
                "model",
                "prompt",
                "prompt_template",
                "system",
                "temperature",
                "max_tokens",
                "response_format",
                "options",
            ],
            Some(StepKind::ActionTask) => &["action", "with"],
            Some(StepKind::Gate) => &["mode", "message", "on_reject", "approvers"],
            Some(StepKind::Transform) => &["expr", "template"],
            None => &[],
        };
        if kind.is_some() {
            let allowed: Vec<&str> = COMMON.iter().chain(specific.iter()).copied().collect();
            self.unknown_fields(&path, m, &allowed);
        }
        let condition = self
            .opt_str(&path, m, "if")
            .and_then(|src| self.jq(format!("{path}.if"), &src));
        let retry = self.retry(&path, m.get("retry"));
        let timeout_ms = self.duration(&path, m, "timeout");
        let body = match kind? {
            StepKind::AgentTask => self.agent_body(&path, m, scope),
            StepKind::ActionTask => self.action_body(&path, m, scope),
            StepKind::Gate => self.gate_body(&path, m, scope),
            StepKind::Transform => self.transform_body(&path, m, scope),
        };
        Some(StepPlan {
            id: id?,
            kind: kind?,
            condition,
            retry,
            timeout_ms,
            body: body?,
        })
    }

    fn retry(&mut self, path: &str, v: Option<&Value>) -> RetryPolicy {
        let mut p = RetryPolicy::default();
        let path = format!("{path}.retry");
        let m = match v {
            None | Some(Value::Null) => return p,
            Some(Value::Object(m)) => m,
            Some(other) => {
                self.issue(
                    path,
                    codes::FIELD_TYPE,
                    format!("'retry' must be a mapping, not {}", type_name(other)),
                );
                return p;
            }
        };
        self.unknown_fields(&path, m, &["max_attempts", "backoff", "delay", "max_delay"]);
        match m.get("max_attempts") {
            None => {}
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=100).contains(&n)) => {
                p.max_attempts = n.as_u64().unwrap_or(1) as u32;
            }
            Some(other) => self.issue(
                format!("{path}.max_attempts"),
                codes::RETRY_INVALID,
                format!("'max_attempts' must be a whole number from 1 to 100 (got {other})"),
            ),
        }
        match self.opt_str(&path, m, "backoff").as_deref() {
            None => {}
            Some("fixed") => p.backoff = Backoff::Fixed,
            Some("exponential") => p.backoff = Backoff::Exponential,
            Some(other) => {
                // A bare duration means a fixed delay: `backoff: 2s`.
                if let Some(ms) = parse_duration_ms(other) {
                    p.backoff = Backoff::Fixed;
                    p.delay_ms = ms;
                } else {
                    self.issue(
                        format!("{path}.backoff"),
                        codes::RETRY_INVALID,
                        format!(
                            "'backoff' must be fixed, exponential or a duration (got {other:?})"
                        ),
                    );
                }
            }
        }
        if let Some(d) = self.duration(&path, m, "delay") {
            p.delay_ms = d;
        }
        if let Some(d) = self.duration(&path, m, "max_delay") {
            p.max_delay_ms = d;
        }
        p
    }

    fn template(&mut self, path: String, src: &str, scope: &RefScope<'_>) -> Option<Template> {
        match Template::parse(src) {
            Ok(t) => {
                for e in t.exprs() {
                    self.check_ref(&path, e, scope);
                }
                Some(t)
            }
            Err(e) => {
                self.issue(path, codes::TEMPLATE_SYNTAX, format!("bad template: {e}"));
                None
            }
        }
    }

    fn template_value(
        &mut self,
        path: &str,
        v: &Value,
        scope: &RefScope<'_>,
    ) -> Option<TemplateValue> {
        match TemplateValue::parse(v) {
            Ok(t) => {
                for (rel, e) in t.exprs() {
                    self.check_ref(&format!("{path}{rel}"), e, scope);
                }
                Some(t)
            }
            Err(errs) => {
                for (rel, e) in errs {
                    self.issue(
                        format!("{path}{rel}"),
                        codes::TEMPLATE_SYNTAX,
                        format!("bad template: {e}"),
                    );
                }
                None
            }
        }
    }

    fn check_ref(&mut self, path: &str, e: &Expr, scope: &RefScope<'_>) {
        let shown = format!("{{{{{}}}}}", e.text);
        match e.root {
            Root::Inputs => match e.first_key() {
                None => {}
                Some(name) if scope.inputs.contains(name) => {}
                Some(name) => self.issue(
                    path,
                    codes::TEMPLATE_UNKNOWN_INPUT,
                    format!("{shown} refers to input '{name}', which is not declared in 'inputs'"),
                ),
            },
            Root::Steps => {
                let Some(step) = e.first_key() else {
                    self.issue(
                        path,
                        codes::TEMPLATE_BAD_PATH,
                        format!("{shown} must name a step: steps.<id>.outputs…"),
                    );
                    return;
                };
                match scope.positions.get(step) {
                    None => self.issue(
                        path,
                        codes::TEMPLATE_UNKNOWN_STEP,
                        format!("{shown} refers to step '{step}', which does not exist"),
                    ),
                    Some(&j) if j == scope.index => self.issue(
                        path,
                        codes::TEMPLATE_SELF_REFERENCE,
                        format!("{shown} refers to this step itself; a step can only use earlier steps' outputs"),
                    ),
                    Some(&j) if j > scope.index => self.issue(
                        path,
                        codes::TEMPLATE_FORWARD_STEP,
                        format!("{shown} refers to step '{step}', which runs later (step {}); only earlier steps can be used", j + 1),
                    ),
                    Some(_) => {
                        if !matches!(e.second_key(), None | Some("outputs" | "status" | "error")) {
                            self.issue(
                                path,
                                codes::TEMPLATE_BAD_PATH,
                                format!("{shown}: after the step id use .outputs, .status or .error"),
                            );
                        }
                    }
                }
            }
            Root::Secrets => {
                if e.path.len() != 1 {
                    self.issue(
                        path,
                        codes::TEMPLATE_BAD_PATH,
                        format!("{shown} must be secrets.<name>"),
                    );
                }
            }
            Root::Run => {
                const RUN_FIELDS: &[&str] = &[
                    "id",
                    "correlation_id",
                    "blueprint_id",
                    "blueprint_version",
                    "started_at",
                    "actor",
                ];
                if !e.first_key().is_some_and(|k| RUN_FIELDS.contains(&k)) {
                    self.issue(
                        path,
                        codes::TEMPLATE_BAD_PATH,
                        format!("{shown}: run fields are {}", RUN_FIELDS.join(", ")),
                    );
                }
            }
            Root::Event => {}
        }
    }

    fn agent_body(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
        scope: &RefScope<'_>,
    ) -> Option<StepBody> {
        let provider = self.aliased_str(path, m, "provider", "agent");
        let both = |a: &str, b: &str| m.contains_key(a) && m.contains_key(b);
        match &provider {
            None if both("provider", "agent") => {}
            None => self.issue(
                format!("{path}.provider"),
                codes::AGENT_PROVIDER_MISSING,
                format!(
                    "an agent_task needs a 'provider' (or 'agent'): one of {}",
                    self.env.known_providers.join(", ")
                ),
            ),
            Some(p) if !self.env.known_providers.contains(&p.as_str()) => self.issue(
                format!(
                    "{path}.{}",
                    if m.contains_key("agent") {
                        "agent"
                    } else {
                        "provider"
                    }
                ),
                codes::AGENT_PROVIDER_UNKNOWN,
                format!(
                    "unknown provider {p:?} (use one of {})",
                    self.env.known_providers.join(", ")
                ),
            ),
            Some(_) => {}
        }
        let model = self.opt_str(path, m, "model");
        if model.as_deref().is_none_or(str::is_empty) {
            self.issue(
                format!("{path}.model"),
                codes::AGENT_MODEL_MISSING,
                "an agent_task needs a 'model'",
            );
        }
        let prompt_src = self.aliased_str(path, m, "prompt_template", "prompt");
        let prompt_key = if m.contains_key("prompt") {
            "prompt"
        } else {
            "prompt_template"
        };
        let prompt = match prompt_src {
            None if both("prompt", "prompt_template") => None,
            None => {
                self.issue(
                    format!("{path}.prompt_template"),
                    codes::AGENT_PROMPT_MISSING,
                    "an agent_task needs a 'prompt_template' (or 'prompt')",
                );
                None
            }
            Some(s) if s.trim().is_empty() => {
                self.issue(
                    format!("{path}.{prompt_key}"),
                    codes::AGENT_PROMPT_MISSING,
                    "the prompt is empty",
                );
                None
            }
            Some(s) => self.template(format!("{path}.{prompt_key}"), &s, scope),
        };
        let system = self
            .opt_str(path, m, "system")
            .and_then(|s| self.template(format!("{path}.system"), &s, scope));
        let temperature = match m.get("temperature") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) => {
                n.as_f64()
            }
            Some(other) => {
                self.issue(
                    format!("{path}.temperature"),
                    codes::FIELD_TYPE,
                    format!("'temperature' must be a number from 0 to 2 (got {other})"),
                );
                None
            }
        };
        let max_tokens = match m.get("max_tokens") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => n.as_u64(),
            Some(other) => {
                self.issue(
                    format!("{path}.max_tokens"),
                    codes::FIELD_TYPE,
                    format!("'max_tokens' must be a positive whole number (got {other})"),
                );
                None
            }
        };
        let json_output = match self.opt_str(path, m, "response_format").as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                self.issue(
                    format!("{path}.response_format"),
                    codes::FIELD_TYPE,
                    format!("'response_format' must be text or json (got {other:?})"),
                );
                false
            }
        };
        let options = match m.get("options") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => self.template_value(&format!("{path}.options"), v, scope),
            Some(other) => {
                self.issue(
                    format!("{path}.options"),
                    codes::FIELD_TYPE,
                    format!("'options' must be a mapping, not {}", type_name(other)),
                );
                None
            }
        };
        Some(StepBody::Agent {
            provider: provider?,
            model: model.filter(|m| !m.is_empty())?,
            prompt: prompt?,
            system,
            temperature,
            max_tokens,
            json_output,
            options,
        })
    }

    fn action_body(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
        scope: &RefScope<'_>,
    ) -> Option<StepBody> {
        let action = self.opt_str(path, m, "action");
        match &action {
            None => self.issue(
                format!("{path}.action"),
                codes::ACTION_MISSING,
                "an action_task needs an 'action' (e.g. http.call)",
            ),
            Some(a) if !(self.env.is_known_action)(a) => self.issue(
                format!("{path}.action"),
                codes::ACTION_UNKNOWN,
                format!("unknown action {a:?}: no installed action has that name"),
            ),
            Some(_) => {}
        }
        let with = match m.get("with") {
            None | Some(Value::Null) => {
                self.issue(
                    format!("{path}.with"),
                    codes::ACTION_WITH_MISSING,
                    "an action_task needs 'with' (the action's input)",
                );
                None
            }
            Some(v @ Value::Object(_)) => self.template_value(&format!("{path}.with"), v, scope),
            Some(other) => {
                self.issue(
                    format!("{path}.with"),
                    codes::FIELD_TYPE,
                    format!("'with' must be a mapping, not {}", type_name(other)),
                );
                None
            }
        };
        Some(StepBody::Action {
            action: action?,
            with: with?,
        })
    }

    fn gate_body(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
        scope: &RefScope<'_>,
    ) -> Option<StepBody> {
        let mode = self.opt_str(path, m, "mode");
        match mode.as_deref() {
            // Present but not a string: `field.type` was reported.
            None if m.get("mode").is_some_and(|v| !v.is_null()) => {}
            None => self.issue(
                format!("{path}.mode"),
                codes::GATE_MODE_MISSING,
                "a gate needs a 'mode' (v0: manual)",
            ),
            Some("manual") => {}
            Some(other) => self.issue(
                format!("{path}.mode"),
                codes::GATE_MODE_UNKNOWN,
                format!("unknown gate mode {other:?} (v0 supports: manual)"),
            ),
        }
        let message = self
            .opt_str(path, m, "message")
            .and_then(|s| self.template(format!("{path}.message"), &s, scope));
        let on_reject = match self.opt_str(path, m, "on_reject").as_deref() {
            None | Some("fail") => OnReject::Fail,
            Some("cancel") => OnReject::Cancel,
            Some(other) => {
                self.issue(
                    format!("{path}.on_reject"),
                    codes::FIELD_TYPE,
                    format!("'on_reject' must be fail or cancel (got {other:?})"),
                );
                OnReject::Fail
            }
        };
        let approvers = self.gate_approvers(path, m);
        (mode.as_deref() == Some("manual")).then_some(StepBody::Gate {
            message,
            on_reject,
            approvers,
        })
    }

    /// `approvers:`: a list of principal names and `role:owner` / `role:operator`.
    fn gate_approvers(&mut self, path: &str, m: &Map<String, Value>) -> Vec<String> {
        let list = match m.get("approvers") {
            None | Some(Value::Null) => return vec![],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.issue(
                    format!("{path}.approvers"),
                    codes::FIELD_TYPE,
                    format!(
                        "'approvers' must be a list of names and role:owner / role:operator, not {}",
                        type_name(other)
                    ),
                );
                return vec![];
            }
        };
        let mut out = Vec::new();
        for (i, v) in list.iter().enumerate() {
            let ok = v.as_str().map(str::trim).filter(|a| {
                !a.is_empty()
                    && a.len() <= 100
                    && a.bytes().all(|b| b.is_ascii_graphic())
                    && a.strip_prefix("role:")
                        .is_none_or(|r| r == "owner" || r == "operator")
            });
            match ok {
                Some(a) => out.push(a.to_string()),
                None => self.issue(
                    format!("{path}.approvers[{i}]"),
                    codes::GATE_APPROVER_INVALID,
                    format!(
                        "an approver is a principal name (as in the tokens file) or role:owner / role:operator, not {v}"
                    ),
                ),
            }
        }
        out
    }

    fn transform_body(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
        scope: &RefScope<'_>,
    ) -> Option<StepBody> {
        let expr = self.opt_str(path, m, "expr");
        let template = m.get("template").filter(|v| !v.is_null());
        match (expr, template) {
            (Some(_), Some(_)) => {
                self.issue(
                    format!("{path}.template"),
                    codes::FIELD_CONFLICT,
                    "give either 'expr' (jq) or 'template', not both",
                );
                None
            }
            (None, None) => {
                self.issue(format!("{path}.expr"), codes::TRANSFORM_MISSING, "a transform needs 'expr' (a jq expression) or 'template' (a mapping of templates)");
                None
            }
            (Some(src), None) => self
                .jq(format!("{path}.expr"), &src)
                .map(|p| StepBody::Transform(TransformBody::Jq(p))),
            (None, Some(t)) => self
                .template_value(&format!("{path}.template"), t, scope)
                .map(|t| StepBody::Transform(TransformBody::Template(t))),
        }
    }

    fn outputs(
        &mut self,
        v: Option<&Value>,
        inputs: &HashSet<String>,
        step_ids: &[String],
    ) -> Vec<OutputSpec> {
        let items = match v {
            None | Some(Value::Null) => return vec![],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.issue(
                    "$.outputs",
                    codes::FIELD_TYPE,
                    format!("'outputs' must be a list, not {}", type_name(other)),
                );
                return vec![];
            }
        };
        let positions: HashMap<String, usize> = step_ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();
        let scope = RefScope {
            inputs,
            positions: &positions,
            index: usize::MAX,
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("$.outputs[{i}]");
            let m = match item {
                Value::Object(m) => m.clone(),
                Value::String(s) => {
                    let mut m = Map::new();
                    m.insert("name".into(), Value::String(s.clone()));
                    m
                }
                other => {
                    self.issue(
                        path,
                        codes::FIELD_TYPE,
                        format!("an output must be a mapping, not {}", type_name(other)),
                    );
                    continue;
                }
            };
            self.unknown_fields(&path, &m, &["name", "value", "description"]);
            let Some(name) = self.opt_str(&path, &m, "name") else {
                self.issue(
                    format!("{path}.name"),
                    codes::OUTPUT_NAME_MISSING,
                    "every output needs a 'name'",
                );
                continue;
            };
            if !seen.insert(name.clone()) {
                self.issue(
                    format!("{path}.name"),
                    codes::OUTPUT_NAME_DUPLICATE,
                    format!("output '{name}' is declared twice"),
                );
            }
            let value = match m.get("value") {
                None | Some(Value::Null) => None,
                Some(v) => self.template_value(&format!("{path}.value"), v, &scope),
            };
            out.push(OutputSpec { name, value });
        }
        out
    }
}

struct RefScope<'a> {
    inputs: &'a HashSet<String>,
    positions: &'a HashMap<String, usize>,
    index: usize,
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
