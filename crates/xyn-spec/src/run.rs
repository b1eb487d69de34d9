//! Running a spec's examples and generated cases against a jq implementation.

use serde_json::{Value, json};
use xyn_core::jq::JqProgram;

use crate::generate::{Rng, generate, minimize};
use crate::model::{Compiled, Example, Expect, Spec};

/// A failing example or property.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `line N` for an example, `property <op>` for a generated case.
    pub case: String,
    pub input: Value,
    pub message: String,
    /// For property failures: the seed that reproduces it.
    pub seed: Option<u64>,
}

/// The result of testing one spec.
#[derive(Debug, Default)]
pub struct Report {
    pub examples_passed: usize,
    pub properties_checked: usize,
    pub failures: Vec<Failure>,
}

/// A readable line diff between the expected and actual value.
pub fn diff(expected: &Value, actual: &Value) -> String {
    let e = serde_json::to_string_pretty(expected).unwrap_or_default();
    let a = serde_json::to_string_pretty(actual).unwrap_or_default();
    let el: Vec<&str> = e.lines().collect();
    let al: Vec<&str> = a.lines().collect();
    let mut out = String::new();
    for i in 0..el.len().max(al.len()) {
        match (el.get(i), al.get(i)) {
            (Some(x), Some(y)) if x == y => out.push_str(&format!("   {x}\n")),
            (x, y) => {
                if let Some(x) = x {
                    out.push_str(&format!(" - {x}\n"));
                }
                if let Some(y) = y {
                    out.push_str(&format!(" + {y}\n"));
                }
            }
        }
    }
    out
}

/// Run every example and `cases` generated inputs per operation with `seed`.
pub fn run(spec: &Spec, examples: &[Example], seed: u64, cases: usize) -> Result<Report, String> {
    let mut r = Report::default();
    let compiled = spec
        .operations
        .iter()
        .map(|o| Compiled::new(o, spec.subject_transform()).map(|c| (o, c)))
        .collect::<Result<Vec<_>, _>>()?;
    for e in examples {
        let Some((_, c)) = compiled
            .iter()
            .find(|(o, _)| e.operation.as_deref().is_none_or(|n| n == o.name))
        else {
            r.failures.push(Failure {
                case: format!("line {}", e.line),
                input: e.input.clone(),
                message: "no such operation".into(),
                seed: None,
            });
            continue;
        };
        let Some(t) = &c.transform else {
            return Err(format!(
                "subject {} has no jq transform; this build runs examples for jq subjects only",
                spec.subject
            ));
        };
        if let Some(msg) = check_example(c, t, e) {
            r.failures.push(Failure {
                case: format!("line {}", e.line),
                input: e.input.clone(),
                message: msg,
                seed: None,
            });
        } else {
            r.examples_passed += 1;
        }
    }
    for (op, c) in &compiled {
        let Some(t) = &c.transform else { continue };
        let Ok(params) = jsonschema::validator_for(&op.params) else {
            continue;
        };
        let mut rng = Rng::new(seed);
        let fails = |i: &Value| match t.run_one(i) {
            Ok(o) => c.failed_ensures(i, &o).is_some(),
            Err(_) => true,
        };
        let valid = |i: &Value| params.is_valid(i) && c.failed_requires(i).is_none();
        for _ in 0..cases {
            let input = generate(&op.params, &mut rng, 0);
            if !valid(&input) {
                continue;
            }
            r.properties_checked += 1;
            if fails(&input) {
                let min = minimize(input, valid, fails);
                let message = match t.run_one(&min) {
                    Ok(o) => format!(
                        "{} fails with output {}",
                        c.failed_ensures(&min, &o).unwrap_or_default(),
                        o
                    ),
                    Err(e) => format!("transform failed: {e:?}"),
                };
                r.failures.push(Failure {
                    case: format!("property {}", op.name),
                    input: min,
                    message,
                    seed: Some(seed),
                });
                break;
            }
        }
    }
    Ok(r)
}

fn check_example(c: &Compiled, t: &JqProgram, e: &Example) -> Option<String> {
    if let Some(req) = c.failed_requires(&e.input) {
        return Some(format!("input fails {req}"));
    }
    let got = t.run_one(&e.input);
    match (&e.expect, got) {
        (Expect::Error(code), Ok(o)) => Some(format!("expected error {code}, got output {o}")),
        (Expect::Error(_), Err(_)) => None,
        (_, Err(err)) => Some(format!("failed: {err:?}")),
        (Expect::Output(want), Ok(o)) => {
            if &o != want {
                Some(format!(
                    "output differs (- expected, + actual):\n{}",
                    diff(want, &o)
                ))
            } else {
                c.failed_ensures(&e.input, &o)
                    .map(|f| format!("violates {f}"))
            }
        }
        (Expect::Matches(m), Ok(o)) => {
            let ok = JqProgram::compile(m)
                .ok()
                .and_then(|p| p.run_one(&json!({"input": e.input, "output": o})).ok());
            if ok != Some(Value::Bool(true)) {
                Some(format!("output {o} does not satisfy `{m}`"))
            } else {
                c.failed_ensures(&e.input, &o)
                    .map(|f| format!("violates {f}"))
            }
        }
    }
}
