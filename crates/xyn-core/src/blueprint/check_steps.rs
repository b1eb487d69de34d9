//! The checker, continued: the bodies of each step kind (agent, action, gate, transform) and
//! the blueprint's declared outputs.

use super::*;

impl Checker<'_, '_> {
    pub(super) fn agent_body(
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
        // A path, never a template: the key is named, not computed from run data.
        let api_key = self.opt_str(path, m, "api_key_ref").and_then(|p| {
            let src = format!(
                "{{{{secret {}}}}}",
                serde_json::to_string(&p).unwrap_or_default()
            );
            self.template(format!("{path}.api_key_ref"), &src, scope)
        });
        Some(StepBody::Agent {
            provider: provider?,
            model: model.filter(|m| !m.is_empty())?,
            prompt: prompt?,
            system,
            temperature,
            max_tokens,
            json_output,
            options,
            api_key,
        })
    }

    pub(super) fn action_body(
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

    pub(super) fn gate_body(
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
    pub(super) fn gate_approvers(&mut self, path: &str, m: &Map<String, Value>) -> Vec<String> {
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

    pub(super) fn transform_body(
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

    pub(super) fn outputs(
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
