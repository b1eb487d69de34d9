//! The checker: walks a blueprint document once and reports every problem with its JSON path,
//! compiling what is valid into a plan (triggers, inputs, steps, retries, references).

use super::*;

/// A sort key for JSON paths in which `[10]` comes after `[9]`.
pub(super) fn path_key(p: &str) -> Vec<PathPart> {
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
pub(super) enum PathPart {
    Text(String),
    Index(usize),
}

pub(super) const ID_HELP: &str = "must start with a lowercase letter or digit and contain only lowercase letters, digits, '_', '-' and '.'";

pub(super) fn valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && s.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.')
        })
}

pub(super) fn valid_step_id(s: &str) -> bool {
    // Step ids appear in template paths (`steps.<id>.outputs`), so no dots.
    valid_id(s) && !s.contains('.')
}

pub(super) fn type_name(v: &Value) -> &'static str {
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

pub(super) const INPUT_TYPES: &[&str] =
    &["string", "number", "integer", "boolean", "object", "array"];

pub(super) struct Checker<'e, 'a> {
    pub(super) issues: Vec<Issue>,
    pub(super) env: &'e ValidationEnv<'a>,
}

impl Checker<'_, '_> {
    pub(super) fn issue(
        &mut self,
        path: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.issues.push(Issue {
            path: path.into(),
            code,
            message: message.into(),
        });
    }

    pub(super) fn unknown_fields(&mut self, path: &str, m: &Map<String, Value>, allowed: &[&str]) {
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

    pub(super) fn opt_str(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
        key: &str,
    ) -> Option<String> {
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
    pub(super) fn aliased_str(
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

    pub(super) fn duration(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
        key: &str,
    ) -> Option<u64> {
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

    pub(super) fn jq(&mut self, path: String, src: &str) -> Option<JqProgram> {
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

    pub(super) fn blueprint(&mut self, v: &Value) -> Option<Plan> {
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

    pub(super) fn trigger(&mut self, v: Option<&Value>) -> Option<Trigger> {
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

    pub(super) fn inputs(&mut self, v: Option<&Value>) -> Vec<InputSpec> {
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

    pub(super) fn input(
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

    pub(super) fn plan(&mut self, v: Option<&Value>, inputs: &HashSet<String>) -> Vec<StepPlan> {
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

    pub(super) fn step(
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
                "api_key_ref",
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

    pub(super) fn retry(&mut self, path: &str, v: Option<&Value>) -> RetryPolicy {
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

    pub(super) fn template(
        &mut self,
        path: String,
        src: &str,
        scope: &RefScope<'_>,
    ) -> Option<Template> {
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

    pub(super) fn template_value(
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

    pub(super) fn check_ref(&mut self, path: &str, e: &Expr, scope: &RefScope<'_>) {
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
}

pub(super) struct RefScope<'a> {
    pub(super) inputs: &'a HashSet<String>,
    pub(super) positions: &'a HashMap<String, usize>,
    pub(super) index: usize,
}
