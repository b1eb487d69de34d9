//! The spec model, read from JSON after lint has accepted it.

use serde_json::Value;
use xyn_core::jq::JqProgram;

/// One operation of a spec.
#[derive(Debug, Clone)]
pub struct Operation {
    pub name: String,
    pub params: Value,
    pub result: Value,
    pub requires: Vec<String>,
    pub ensures: Vec<String>,
    pub errors: Vec<String>,
    /// A jq program that implements the operation (for `jq:` subjects and blueprint transforms).
    pub transform: Option<String>,
}

/// A whole spec file.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: String,
    pub subject: String,
    pub operations: Vec<Operation>,
}

/// What an example expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Output(Value),
    Matches(String),
    Error(String),
}

/// One example line.
#[derive(Debug, Clone)]
pub struct Example {
    pub line: usize,
    pub operation: Option<String>,
    pub input: Value,
    pub expect: Expect,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Spec {
    /// Build the model from a linted document (missing pieces become empty).
    pub fn from_value(v: &Value) -> Spec {
        let ops = v
            .get("operations")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Operation::from_value).collect())
            .unwrap_or_default();
        Spec {
            id: v
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            subject: v
                .get("subject")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            operations: ops,
        }
    }

    /// The operation an example names, or the first one.
    pub fn operation(&self, name: Option<&str>) -> Option<&Operation> {
        match name {
            Some(n) => self.operations.iter().find(|o| o.name == n),
            None => self.operations.first(),
        }
    }

    /// The jq transform of a `jq:<program>` subject.
    pub fn subject_transform(&self) -> Option<&str> {
        self.subject.strip_prefix("jq:")
    }
}

impl Operation {
    fn from_value(v: &Value) -> Operation {
        Operation {
            name: v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            params: v.get("params").cloned().unwrap_or(Value::Bool(true)),
            result: v.get("result").cloned().unwrap_or(Value::Bool(true)),
            requires: strings(v.get("requires")),
            ensures: strings(v.get("ensures")),
            errors: strings(v.get("errors")),
            transform: v
                .get("transform")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

/// Compiled predicates of an operation.
pub struct Compiled {
    pub requires: Vec<(String, JqProgram)>,
    pub ensures: Vec<(String, JqProgram)>,
    pub transform: Option<JqProgram>,
    pub result: Option<jsonschema::Validator>,
}

impl Compiled {
    /// Compile an operation (the lint pass reports errors; here they are an `Err` message).
    pub fn new(op: &Operation, subject_transform: Option<&str>) -> Result<Compiled, String> {
        let comp = |(i, s): (usize, &String), kind: &str| {
            JqProgram::compile(s)
                .map(|p| (format!("{kind}[{i}]"), p))
                .map_err(|e| format!("{kind}[{i}]: {e}"))
        };
        let requires = op
            .requires
            .iter()
            .enumerate()
            .map(|x| comp(x, "requires"))
            .collect::<Result<_, _>>()?;
        let ensures = op
            .ensures
            .iter()
            .enumerate()
            .map(|x| comp(x, "ensures"))
            .collect::<Result<_, _>>()?;
        let transform = match op.transform.as_deref().or(subject_transform) {
            Some(t) => Some(JqProgram::compile(t).map_err(|e| format!("transform: {e}"))?),
            None => None,
        };
        let result = jsonschema::validator_for(&op.result).ok();
        Ok(Compiled {
            requires,
            ensures,
            transform,
            result,
        })
    }

    /// The first `requires` clause the input fails, if any.
    pub fn failed_requires(&self, input: &Value) -> Option<String> {
        let ctx = serde_json::json!({"input": input, "output": null});
        self.requires
            .iter()
            .find(|(_, p)| !matches!(p.run_one(&ctx), Ok(Value::Bool(true))))
            .map(|(id, p)| format!("{id} `{}`", p.source()))
    }

    /// The first `ensures` clause (or the result schema) that `{input, output}` fails.
    pub fn failed_ensures(&self, input: &Value, output: &Value) -> Option<String> {
        if let Some(v) = &self.result
            && let Some(e) = v.iter_errors(output).next()
        {
            return Some(format!("result schema at {}: {e}", e.instance_path()));
        }
        let ctx = serde_json::json!({"input": input, "output": output});
        self.ensures
            .iter()
            .find(|(_, p)| !matches!(p.run_one(&ctx), Ok(Value::Bool(true))))
            .map(|(id, p)| format!("{id} `{}`", p.source()))
    }
}
