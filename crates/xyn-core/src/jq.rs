//! jq expressions (via the `jaq` crates) for `transform` steps, step conditions and trigger filters.
//!
//! Programs are compiled once per blueprint version and run on `serde_json::Value`s. The jaq
//! functions that reach outside the value (`env`, `$ENV`, `now`, `input`, `halt`, `debug`, …)
//! are not offered: a blueprint's jq must be a pure function of its input, and must not be able
//! to read the node's environment (where secrets live).

use std::fmt;
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Native, Vars, data::JustLut};
use jaq_json::Val;
use serde_json::Value;

type Filter = jaq_core::compile::Filter<Native<JustLut<Val>>>;

/// Names of jaq functions that are impure or reach outside their input.
const DENIED: &[&str] = &[
    "env",
    "now",
    "input",
    "inputs",
    "debug",
    "stderr",
    "input_filename",
    "$__loc__",
    "get_search_list",
    "input_line_number",
    "significand",
    "getpath_unsafe",
];

/// A compiled jq program.
#[derive(Clone)]
pub struct JqProgram {
    source: Arc<str>,
    filter: Arc<Filter>,
}

impl fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JqProgram").field(&self.source).finish()
    }
}

/// A jq program that does not compile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JqCompileError {
    pub message: String,
}

/// A jq program that failed while running.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JqRunError {
    pub message: String,
}

/// The most outputs one run of a program may produce, so that a runaway `range(1e12)` ends.
pub const MAX_OUTPUTS: usize = 10_000;

impl JqProgram {
    /// Parses and compiles `source`.
    pub fn compile(source: &str) -> Result<Self, JqCompileError> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs::<JustLut<Val>>()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, _, _)| !DENIED.contains(name));
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(
                &arena,
                File {
                    code: source,
                    path: (),
                },
            )
            .map_err(|errs| JqCompileError {
                message: describe_load_errors(source, errs),
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| JqCompileError {
                message: errs
                    .into_iter()
                    .flat_map(|(_, es)| es)
                    .map(|(name, undef)| format!("undefined {} `{name}`", undef.as_str()))
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
        Ok(Self {
            source: source.into(),
            filter: Arc::new(filter),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Runs the program on `input` and returns every output.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, JqRunError> {
        let val: Val = serde::Deserialize::deserialize(input).map_err(|e| JqRunError {
            message: format!("input is not representable: {e}"),
        })?;
        let ctx = Ctx::<JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for r in self.filter.id.run((ctx, val)) {
            // Not `jaq_core::unwrap_valr`: it calls `process::exit` when a program uses `halt`.
            let r = r.map_err(|exn| match exn.get_err() {
                Ok(err) => err.to_string(),
                Err(exn) => match exn.get_halt() {
                    Ok(code) => format!("the program halted (exit code {code})"),
                    Err(_) => "the program used break outside of a label".to_string(),
                },
            });
            match r {
                Ok(v) => {
                    if out.len() >= MAX_OUTPUTS {
                        return Err(JqRunError {
                            message: format!("more than {MAX_OUTPUTS} outputs"),
                        });
                    }
                    out.push(val_to_json(&v)?);
                }
                Err(message) => return Err(JqRunError { message }),
            }
        }
        Ok(out)
    }

    /// Runs the program and folds its outputs into one value: nothing gives `null`, one output
    /// gives itself, several give an array of them.
    pub fn run_one(&self, input: &Value) -> Result<Value, JqRunError> {
        let mut outs = self.run(input)?;
        Ok(match outs.len() {
            0 => Value::Null,
            1 => outs.pop().unwrap_or(Value::Null),
            _ => Value::Array(outs),
        })
    }

    /// Runs the program as a condition: true when its first output is neither `false` nor `null`.
    pub fn truthy(&self, input: &Value) -> Result<bool, JqRunError> {
        let outs = self.run(input)?;
        Ok(matches!(outs.first(), Some(v) if !matches!(v, Value::Null | Value::Bool(false))))
    }
}

fn val_to_json(v: &Val) -> Result<Value, JqRunError> {
    // jaq renders its values as JSON; parse that back. Byte strings and non-string keys
    // (jaq extensions) come out as their JSON rendering too.
    let s = v.to_string();
    serde_json::from_str(&s).map_err(|e| JqRunError {
        message: format!("output is not JSON ({e}): {s}"),
    })
}

fn offset_in(source: &str, at: &str) -> usize {
    let base = source.as_ptr() as usize;
    let p = at.as_ptr() as usize;
    p.saturating_sub(base).min(source.len())
}

fn describe_load_errors(
    source: &str,
    errs: Vec<(File<&str, ()>, jaq_core::load::Error<&str>)>,
) -> String {
    use jaq_core::load::Error;
    use jaq_core::load::lex::Expect as LexExpect;
    let mut parts = Vec::new();
    for (_, e) in errs {
        match e {
            Error::Io(items) => {
                for (path, msg) in items {
                    parts.push(format!("cannot load module {path}: {msg}"));
                }
            }
            Error::Lex(items) => {
                for (expect, at) in items {
                    let what = match expect {
                        LexExpect::Digit => "a digit",
                        LexExpect::Ident => "an identifier",
                        LexExpect::Delim("(") => "a closing parenthesis",
                        LexExpect::Delim("[") => "a closing bracket",
                        LexExpect::Delim("{") => "a closing brace",
                        LexExpect::Delim(_) => "a closing quote",
                        LexExpect::Escape => "a string escape sequence",
                        LexExpect::Unicode => "a 4-digit hexadecimal code point",
                        LexExpect::Token => "a token",
                        _ => "something else",
                    };
                    parts.push(format!(
                        "expected {what} at offset {}",
                        offset_in(source, at)
                    ));
                }
            }
            Error::Parse(items) => {
                for (expect, at) in items {
                    parts.push(format!(
                        "expected {} at offset {}",
                        expect.as_str(),
                        offset_in(source, at)
                    ));
                }
            }
        }
    }
    if parts.is_empty() {
        "invalid jq program".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runs_a_transform() {
        let p = JqProgram::compile(r#"{summary: "\(.inputs.host): \(.steps.a.outputs.n * 2)"}"#)
            .unwrap();
        let out = p
            .run_one(&json!({"inputs": {"host": "web-1"}, "steps": {"a": {"outputs": {"n": 21}}}}))
            .unwrap();
        assert_eq!(out, json!({"summary": "web-1: 42"}));
    }

    #[test]
    fn std_library_is_there() {
        let p = JqProgram::compile("map(select(. > 1)) | length").unwrap();
        assert_eq!(p.run_one(&json!([1, 2, 3])).unwrap(), json!(2));
    }

    #[test]
    fn bad_programs_are_described() {
        let e = JqProgram::compile(".a | ").unwrap_err();
        assert!(e.message.contains("expected"), "{e}");
        let e = JqProgram::compile("nosuchfn(1)").unwrap_err();
        assert!(e.message.contains("nosuchfn"), "{e}");
    }

    #[test]
    fn environment_is_not_reachable() {
        assert!(JqProgram::compile("env").is_err());
        assert!(JqProgram::compile("$ENV").is_err());
        assert!(JqProgram::compile("now").is_err());
    }

    #[test]
    fn truthiness_and_errors() {
        let p = JqProgram::compile(r#".state == "CRIT""#).unwrap();
        assert!(p.truthy(&json!({"state": "CRIT"})).unwrap());
        assert!(!p.truthy(&json!({"state": "OK"})).unwrap());
        let p = JqProgram::compile(r#"error("boom")"#).unwrap();
        assert!(p.run(&json!(null)).is_err());
    }

    #[test]
    fn halt_is_an_error_not_an_exit() {
        let p = JqProgram::compile("halt").unwrap();
        assert!(p.run(&json!(null)).is_err());
        let p = JqProgram::compile(r#""x" | halt_error"#).unwrap();
        assert!(p.run(&json!(null)).is_err());
    }

    #[test]
    fn compiled_programs_are_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<JqProgram>();
    }
}
