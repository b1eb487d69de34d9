//! Lint: the spec's shape, its JSON Schemas, its jq clauses, and its examples, each error
//! with the JSON path (or examples line) where it is.

use serde_json::Value;
use xyn_core::jq::JqProgram;

use crate::model::{Example, Expect, Spec};

/// One lint finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// A JSON path into the spec (`$.operations[0].ensures[1]`) or `examples:LINE`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn diag(out: &mut Vec<Diagnostic>, path: impl Into<String>, message: impl Into<String>) {
    out.push(Diagnostic {
        path: path.into(),
        message: message.into(),
    });
}

const SUBJECT_KINDS: [&str; 4] = ["action:", "app:", "blueprint:", "jq:"];

/// Lint a spec document.
pub fn lint_spec(doc: &Value) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some(obj) = doc.as_object() else {
        diag(&mut out, "$", "a spec is a JSON object");
        return out;
    };
    for k in obj.keys() {
        if !["id", "subject", "operations", "description"].contains(&k.as_str()) {
            diag(&mut out, format!("$.{k}"), "unknown field");
        }
    }
    match obj.get("id").and_then(Value::as_str) {
        Some(id)
            if !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) => {}
        _ => diag(
            &mut out,
            "$.id",
            "id must be a non-empty string of [A-Za-z0-9._-]",
        ),
    }
    match obj.get("subject").and_then(Value::as_str) {
        Some(s)
            if SUBJECT_KINDS
                .iter()
                .any(|k| s.len() > k.len() && s.starts_with(k)) =>
        {
            if let Some(t) = s.strip_prefix("jq:")
                && let Err(e) = JqProgram::compile(t)
            {
                diag(&mut out, "$.subject", format!("jq does not compile: {e}"));
            }
        }
        _ => diag(
            &mut out,
            "$.subject",
            "subject must be action:<name>, app:<name> <METHOD> <route>, blueprint:<id> or jq:<program>",
        ),
    }
    let Some(ops) = obj.get("operations").and_then(Value::as_array) else {
        diag(&mut out, "$.operations", "operations must be an array");
        return out;
    };
    if ops.is_empty() {
        diag(
            &mut out,
            "$.operations",
            "at least one operation is required",
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, op) in ops.iter().enumerate() {
        lint_operation(op, &format!("$.operations[{i}]"), &mut names, &mut out);
    }
    out
}

fn lint_operation(
    op: &Value,
    at: &str,
    names: &mut std::collections::BTreeSet<String>,
    out: &mut Vec<Diagnostic>,
) {
    let Some(o) = op.as_object() else {
        diag(out, at, "an operation is a JSON object");
        return;
    };
    const KNOWN: [&str; 9] = [
        "name",
        "params",
        "result",
        "requires",
        "ensures",
        "ensures_props",
        "errors",
        "transform",
        "description",
    ];
    for k in o.keys() {
        if !KNOWN.contains(&k.as_str()) {
            diag(out, format!("{at}.{k}"), "unknown field");
        }
    }
    match o.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => {
            if !names.insert(n.to_owned()) {
                diag(
                    out,
                    format!("{at}.name"),
                    format!("duplicate operation name {n:?}"),
                );
            }
        }
        _ => diag(out, format!("{at}.name"), "name must be a non-empty string"),
    }
    for key in ["params", "result"] {
        match o.get(key) {
            None => diag(out, format!("{at}.{key}"), "missing JSON Schema"),
            Some(s) => {
                if let Err(e) = jsonschema::validator_for(s) {
                    diag(
                        out,
                        format!(
                            "{at}.{key}{}",
                            json_pointer_to_path(e.instance_path().as_str())
                        ),
                        format!("not a valid JSON Schema: {e}"),
                    );
                }
            }
        }
    }
    for key in ["requires", "ensures"] {
        match o.get(key) {
            None => {}
            Some(Value::Array(a)) => {
                for (j, c) in a.iter().enumerate() {
                    let p = format!("{at}.{key}[{j}]");
                    match c.as_str() {
                        Some(src) => {
                            if let Err(e) = JqProgram::compile(src) {
                                diag(out, p, format!("jq does not compile: {e}"));
                            }
                        }
                        None => diag(out, p, "a clause is a jq string"),
                    }
                }
            }
            Some(_) => diag(out, format!("{at}.{key}"), "must be an array of jq strings"),
        }
    }
    if let Some(t) = o.get("transform") {
        match t.as_str() {
            Some(src) => {
                if let Err(e) = JqProgram::compile(src) {
                    diag(
                        out,
                        format!("{at}.transform"),
                        format!("jq does not compile: {e}"),
                    );
                }
            }
            None => diag(out, format!("{at}.transform"), "transform is a jq string"),
        }
    }
    match o.get("errors") {
        None => {}
        Some(Value::Array(a)) => {
            for (j, c) in a.iter().enumerate() {
                if c.as_str().is_none_or(|s| s.is_empty()) {
                    diag(
                        out,
                        format!("{at}.errors[{j}]"),
                        "an error code is a non-empty string",
                    );
                }
            }
        }
        Some(_) => diag(
            out,
            format!("{at}.errors"),
            "must be an array of error codes",
        ),
    }
    if let Some(p) = o.get("ensures_props")
        && !p.is_array()
    {
        diag(out, format!("{at}.ensures_props"), "must be an array");
    }
}

fn json_pointer_to_path(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<usize>() {
            Ok(i) => format!("[{i}]"),
            Err(_) => format!(".{s}"),
        })
        .collect()
}

/// Parse the examples file; lines that are blank are skipped.
pub fn parse_examples(text: &str) -> (Vec<Example>, Vec<Diagnostic>) {
    let mut ex = Vec::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let at = format!("examples:{n}");
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                diag(&mut out, at, format!("not JSON: {e}"));
                continue;
            }
        };
        let Some(input) = v.get("input").cloned() else {
            diag(&mut out, format!("{at} $.input"), "missing input");
            continue;
        };
        let expect = match (v.get("output"), v.get("output_matches"), v.get("error")) {
            (Some(o), None, None) => Expect::Output(o.clone()),
            (None, Some(Value::String(m)), None) => match JqProgram::compile(m) {
                Ok(_) => Expect::Matches(m.clone()),
                Err(e) => {
                    diag(
                        &mut out,
                        format!("{at} $.output_matches"),
                        format!("jq does not compile: {e}"),
                    );
                    continue;
                }
            },
            (None, None, Some(Value::String(c))) => Expect::Error(c.clone()),
            _ => {
                diag(
                    &mut out,
                    at,
                    "exactly one of output, output_matches (jq string) or error (code) is required",
                );
                continue;
            }
        };
        let operation = v
            .get("operation")
            .and_then(Value::as_str)
            .map(str::to_owned);
        ex.push(Example {
            line: n,
            operation,
            input,
            expect,
        });
    }
    (ex, out)
}

/// Check examples against the spec: the operation exists, the input satisfies `params`, an
/// expected output satisfies `result`, an expected error is declared.
pub fn lint_examples(spec: &Spec, examples: &[Example]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for e in examples {
        let at = format!("examples:{}", e.line);
        let Some(op) = spec.operation(e.operation.as_deref()) else {
            diag(&mut out, format!("{at} $.operation"), "no such operation");
            continue;
        };
        if let Ok(v) = jsonschema::validator_for(&op.params) {
            for err in v.iter_errors(&e.input) {
                diag(
                    &mut out,
                    format!(
                        "{at} $.input{}",
                        json_pointer_to_path(err.instance_path().as_str())
                    ),
                    format!("does not match params: {err}"),
                );
            }
        }
        match &e.expect {
            Expect::Output(o) => {
                if let Ok(v) = jsonschema::validator_for(&op.result) {
                    for err in v.iter_errors(o) {
                        diag(
                            &mut out,
                            format!(
                                "{at} $.output{}",
                                json_pointer_to_path(err.instance_path().as_str())
                            ),
                            format!("does not match result: {err}"),
                        );
                    }
                }
            }
            Expect::Error(c) if !op.errors.contains(c) => diag(
                &mut out,
                format!("{at} $.error"),
                format!("error code {c:?} is not declared in the operation's errors"),
            ),
            _ => {}
        }
    }
    out
}
