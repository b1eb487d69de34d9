//! jq expressions (via the `jaq` crates) for `transform` steps, step conditions and trigger filters.
//!
//! Programs are compiled once per blueprint version and run on `serde_json::Value`s. The jaq
//! functions that reach outside the value (`env`, `$ENV`, `now`, `input`, `halt`, `debug`, …)
//! are not offered: a blueprint's jq must be a pure function of its input, and must not be able
//! to read the node's environment (where secrets live).
//!
//! Hostile programs are bounded. Before a program is parsed, [`check_shape`] refuses sources
//! that are too long or nest too deeply for jaq's recursive parser and compiler (code
//! `jq.too_complex`). Every evaluation runs under a [`JqLimits`] budget checked inside the
//! evaluator (jaq-core and jaq-json carry a small patch, see `vendor/README.md`): fuel (terms
//! run), stack (nesting of the evaluation) and memory (bytes of strings, arrays and objects
//! built). Exceeding it fails the evaluation with `jq.budget_exceeded` or `jq.memory_exceeded`;
//! exhaustion is sticky, so `try … catch` cannot swallow it and continue. Values deeper than
//! [`MAX_VALUE_DEPTH`] are refused at the boundary, and a panic inside the evaluator becomes an
//! error instead of unwinding into the caller.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use jaq_core::budget::{Budget, Exceeded};
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

/// Stable codes of jq failures.
pub mod codes {
    /// The program failed (`error(…)`, a type error, too many outputs, …).
    pub const FAILED: &str = "jq.failed";
    /// The program ran out of fuel (steps) or nested deeper than its stack allowance.
    pub const BUDGET_EXCEEDED: &str = "jq.budget_exceeded";
    /// The program built more bytes of values than its memory allowance.
    pub const MEMORY_EXCEEDED: &str = "jq.memory_exceeded";
    /// The source is too long or nests too deeply to be parsed safely.
    pub const TOO_COMPLEX: &str = "jq.too_complex";
}

/// A jq program that does not compile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JqCompileError {
    /// `jq.invalid` for syntax and unknown names, [`codes::TOO_COMPLEX`] for refused shapes.
    pub code: &'static str,
    pub message: String,
}

/// A jq program that failed while running.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JqRunError {
    /// One of [`codes`].
    pub code: &'static str,
    pub message: String,
}

impl JqRunError {
    fn failed(message: impl Into<String>) -> Self {
        Self {
            code: codes::FAILED,
            message: message.into(),
        }
    }
}

/// The budget of one jq evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JqLimits {
    /// Evaluation steps (terms run, elements collected).
    pub fuel: u64,
    /// Bytes of strings, arrays and objects the program may build.
    pub memory_bytes: u64,
    /// Bytes of stack the evaluation may use (it recurses once per nested call).
    pub stack_bytes: usize,
}

impl Default for JqLimits {
    fn default() -> Self {
        Self {
            fuel: DEFAULT_FUEL,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            stack_bytes: DEFAULT_STACK_BYTES,
        }
    }
}

/// Default fuel: ample for transforms over large events (a `map` over 100,000 elements takes
/// about 500,000), and about a second of work at most.
pub const DEFAULT_FUEL: u64 = 5_000_000;
/// Default memory allowance: 64 MiB of values built.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
/// Default stack allowance: 1 MiB, well under the 2 MiB of the node's worker threads.
pub const DEFAULT_STACK_BYTES: usize = 1 << 20;
/// The longest jq source accepted.
pub const MAX_SOURCE_BYTES: usize = 64 << 10;
/// The deepest syntactic nesting accepted, in units of parser recursion (see [`check_shape`]).
pub const MAX_NESTING: usize = 256;
/// The deepest input or output value an evaluation accepts (deeper values are refused
/// instead of being converted or dropped recursively).
pub const MAX_VALUE_DEPTH: usize = 128;

/// The most outputs one run of a program may produce, so that a runaway `range(1e12)` ends.
pub const MAX_OUTPUTS: usize = 10_000;

impl JqProgram {
    /// Parses and compiles `source`.
    pub fn compile(source: &str) -> Result<Self, JqCompileError> {
        check_shape(source)?;
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
                code: JQ_INVALID,
                message: describe_load_errors(source, errs),
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| JqCompileError {
                code: JQ_INVALID,
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

    /// Runs the program on `input` under the default budget and returns every output.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, JqRunError> {
        self.run_with(input, &JqLimits::default())
    }

    /// Runs the program on `input` under `limits` and returns every output.
    pub fn run_with(&self, input: &Value, limits: &JqLimits) -> Result<Vec<Value>, JqRunError> {
        self.run_cancellable(input, limits, None)
    }

    /// [`Self::run_with`] that also stops soon after `cancel` is set: a caller whose deadline
    /// passed sets it, so the evaluation does not go on spinning on its thread.
    pub fn run_cancellable(
        &self,
        input: &Value,
        limits: &JqLimits,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<Vec<Value>, JqRunError> {
        if value_depth(input) > MAX_VALUE_DEPTH {
            return Err(JqRunError::failed(format!(
                "the input nests deeper than {MAX_VALUE_DEPTH} levels"
            )));
        }
        // Converted before the budget is armed: the input is the node's, already depth-checked.
        let val: Val = serde::Deserialize::deserialize(input)
            .map_err(|e| JqRunError::failed(format!("input is not representable: {e}")))?;
        // A panic inside the evaluator fails this evaluation, not the thread that runs it.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _armed = Budget {
                fuel: limits.fuel,
                memory: limits.memory_bytes,
                stack: limits.stack_bytes,
            }
            .enter_cancellable(cancel);
            let r = self.eval(val);
            // Exhaustion wins over whatever the program made of it (it may have caught the
            // error): the budget is what stopped it.
            match jaq_core::budget::exceeded() {
                Some(e) => Err(exceeded_error(e)),
                None => r,
            }
        }));
        jaq_json::depth::clear();
        outcome.unwrap_or_else(|_| Err(JqRunError::failed("the jq evaluator failed")))
    }

    fn eval(&self, val: Val) -> Result<Vec<Value>, JqRunError> {
        let ctx = Ctx::<JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for r in self.filter.id.run((ctx, val)) {
            if let Some(e) = jaq_core::budget::exceeded() {
                return Err(exceeded_error(e));
            }
            // Not `jaq_core::unwrap_valr`: it calls `process::exit` when a program uses `halt`.
            let r = r.map_err(|exn| match exn.get_err() {
                Ok(err) => describe_error(err),
                Err(exn) => match exn.get_halt() {
                    Ok(code) => format!("the program halted (exit code {code})"),
                    Err(_) => "the program used break outside of a label".to_string(),
                },
            });
            match r {
                Ok(v) => {
                    if out.len() >= MAX_OUTPUTS {
                        return Err(JqRunError::failed(format!(
                            "more than {MAX_OUTPUTS} outputs"
                        )));
                    }
                    out.push(val_to_json(&v)?);
                }
                Err(message) => return Err(JqRunError::failed(message)),
            }
        }
        Ok(out)
    }

    /// Runs the program and folds its outputs into one value: nothing gives `null`, one output
    /// gives itself, several give an array of them.
    pub fn run_one(&self, input: &Value) -> Result<Value, JqRunError> {
        self.run_one_with(input, &JqLimits::default())
    }

    /// [`Self::run_one`] under `limits`.
    pub fn run_one_with(&self, input: &Value, limits: &JqLimits) -> Result<Value, JqRunError> {
        self.run_one_cancellable(input, limits, None)
    }

    /// [`Self::run_one_with`] that stops soon after `cancel` is set (see
    /// [`Self::run_cancellable`]).
    pub fn run_one_cancellable(
        &self,
        input: &Value,
        limits: &JqLimits,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<Value, JqRunError> {
        let mut outs = self.run_cancellable(input, limits, cancel)?;
        Ok(match outs.len() {
            0 => Value::Null,
            1 => outs.pop().unwrap_or(Value::Null),
            _ => Value::Array(outs),
        })
    }

    /// Runs the program as a condition: true when its first output is neither `false` nor `null`.
    pub fn truthy(&self, input: &Value) -> Result<bool, JqRunError> {
        self.truthy_with(input, &JqLimits::default())
    }

    /// [`Self::truthy`] under `limits`.
    pub fn truthy_with(&self, input: &Value, limits: &JqLimits) -> Result<bool, JqRunError> {
        let outs = self.run_with(input, limits)?;
        Ok(matches!(outs.first(), Some(v) if !matches!(v, Value::Null | Value::Bool(false))))
    }
}

const JQ_INVALID: &str = "jq.invalid";

fn exceeded_error(e: Exceeded) -> JqRunError {
    match e {
        Exceeded::Fuel => JqRunError {
            code: codes::BUDGET_EXCEEDED,
            message: "the jq program exceeded its step budget (fuel)".into(),
        },
        Exceeded::Stack => JqRunError {
            code: codes::BUDGET_EXCEEDED,
            message: "the jq program nested deeper than its budget allows".into(),
        },
        Exceeded::Memory => JqRunError {
            code: codes::MEMORY_EXCEEDED,
            message: "the jq program built more data than its memory budget allows".into(),
        },
        Exceeded::Cancelled => JqRunError {
            code: codes::BUDGET_EXCEEDED,
            message: "the jq program was stopped at its deadline".into(),
        },
    }
}

/// Describes a jq error, cutting long messages.
fn describe_error(err: jaq_core::Error<Val>) -> String {
    const MAX_MESSAGE: usize = 1_000;
    let mut s = err.to_string();
    // `error("text")` carries a string value, which jaq shows as JSON ("\"text\""): the
    // message is the text itself, quoted once by whoever serialises it.
    if let Ok(Value::String(text)) = serde_json::from_str::<Value>(&s) {
        s = text;
    }
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The nesting depth of a JSON value, computed without recursion.
pub fn value_depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}

/// The nesting depth of a jaq value, computed without recursion, stopping past the limit.
fn val_depth(v: &Val) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        if max > MAX_VALUE_DEPTH {
            break;
        }
        match v {
            Val::Arr(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Val::Obj(o) => stack.extend(o.iter().flat_map(|(k, x)| [(k, d + 1), (x, d + 1)])),
            _ => {}
        }
    }
    max
}

/// Refuses sources jaq's recursive lexer, parser and compiler cannot take safely.
///
/// A conservative estimate of the depth of the syntax tree, computed in one pass without
/// recursion: every bracket, brace, parenthesis and string (interpolations nest) opens a
/// level that costs `BRACKET_WEIGHT` units (measured: about 3 KiB of stack per level in
/// jaq 3.1), and every operator or nesting keyword (`if`, `try`, `def`, `reduce`, `label`,
/// `as`, `and`, …) inside a level adds one unit (chains such as `1 + 1 + …` or `- - 1` nest in
/// the tree without brackets; about 1 KiB each). Entries of an object and arguments separated
/// by `;` are independent subtrees, so each counts on its own.
pub fn check_shape(source: &str) -> Result<(), JqCompileError> {
    const BRACKET_WEIGHT: usize = 3;
    const KEYWORDS: &[&[u8]] = &[
        b"if", b"then", b"elif", b"else", b"try", b"catch", b"def", b"reduce", b"foreach",
        b"label", b"as", b"and", b"or",
    ];
    #[derive(PartialEq)]
    enum Kind {
        Root,
        Group,
        Object,
        Str,
    }
    struct Level {
        kind: Kind,
        /// Units of the current entry of this level.
        cur: usize,
        /// The deepest sub-level of the current entry.
        child: usize,
        /// The deepest finished entry.
        best: usize,
    }
    impl Level {
        fn new(kind: Kind) -> Self {
            Self {
                kind,
                cur: 0,
                child: 0,
                best: 0,
            }
        }
        fn depth(&self) -> usize {
            let base = if self.kind == Kind::Root {
                0
            } else {
                BRACKET_WEIGHT
            };
            base + self.best.max(self.cur + self.child)
        }
        fn next_entry(&mut self) {
            self.best = self.best.max(self.cur + self.child);
            self.cur = 0;
            self.child = 0;
        }
    }
    let too_complex = |message: String| JqCompileError {
        code: codes::TOO_COMPLEX,
        message,
    };
    if source.len() > MAX_SOURCE_BYTES {
        return Err(too_complex(format!(
            "the jq program is {} bytes long; at most {MAX_SOURCE_BYTES} are allowed",
            source.len()
        )));
    }
    let mut levels = vec![Level::new(Kind::Root)];
    let close = |levels: &mut Vec<Level>| {
        if levels.len() > 1
            && let Some(l) = levels.pop()
            && let Some(parent) = levels.last_mut()
        {
            parent.child = parent.child.max(l.depth());
        }
    };
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let in_string = levels.last().is_some_and(|l| l.kind == Kind::Str);
        if in_string {
            match c {
                b'\\' if bytes.get(i + 1) == Some(&b'(') => {
                    levels.push(Level::new(Kind::Group));
                    i += 2;
                }
                b'\\' => i += 2,
                b'"' => {
                    close(&mut levels);
                    i += 1;
                }
                _ => i += 1,
            }
        } else {
            match c {
                b'#' => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b'"' => levels.push(Level::new(Kind::Str)),
                b'(' | b'[' => levels.push(Level::new(Kind::Group)),
                b'{' => levels.push(Level::new(Kind::Object)),
                b')' | b']' | b'}' => close(&mut levels),
                b';' => {
                    if let Some(l) = levels.last_mut() {
                        l.next_entry();
                    }
                }
                b',' | b':' if levels.last().is_some_and(|l| l.kind == Kind::Object) => {
                    if let Some(l) = levels.last_mut() {
                        l.next_entry();
                    }
                }
                b'|' | b',' | b'+' | b'-' | b'*' | b'/' | b'%' | b'=' | b'<' | b'>' | b'?' => {
                    if let Some(l) = levels.last_mut() {
                        l.cur += 1;
                    }
                }
                c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'.' => {
                    let start = i;
                    while i + 1 < bytes.len()
                        && (bytes[i + 1].is_ascii_alphanumeric() || bytes[i + 1] == b'_')
                    {
                        i += 1;
                    }
                    let word = &bytes[start..=i];
                    if KEYWORDS.contains(&word)
                        && let Some(l) = levels.last_mut()
                    {
                        l.cur += 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        let depth: usize = levels
            .iter()
            .map(|l| {
                let base = if l.kind == Kind::Root {
                    0
                } else {
                    BRACKET_WEIGHT
                };
                base + l.cur
            })
            .sum::<usize>()
            + levels.last().map_or(0, |l| l.child.max(l.best));
        let done: usize = levels.first().map_or(0, Level::depth);
        if depth.max(done) > MAX_NESTING {
            return Err(too_complex(format!(
                "the jq program nests too deeply (more than {MAX_NESTING} levels of brackets, \
                 operators and keywords)"
            )));
        }
    }
    Ok(())
}

fn val_to_json(v: &Val) -> Result<Value, JqRunError> {
    // jaq renders its values as JSON; parse that back. Byte strings and non-string keys
    // (jaq extensions) come out as their JSON rendering too.
    if val_depth(v) > MAX_VALUE_DEPTH {
        return Err(JqRunError::failed(format!(
            "an output nests deeper than {MAX_VALUE_DEPTH} levels"
        )));
    }
    let s = v.to_string();
    serde_json::from_str(&s).map_err(|e| JqRunError::failed(format!("output is not JSON ({e})")))
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
        let p = JqProgram::compile(r#"error("boom \"x\"")"#).unwrap();
        let e = p.run(&json!(null)).unwrap_err();
        assert_eq!(
            e.message, r#"boom "x""#,
            "quoted once, when serialised, not twice"
        );
        let p = JqProgram::compile(r#"error({"a": 1})"#).unwrap();
        assert_eq!(p.run(&json!(null)).unwrap_err().message, r#"{"a":1}"#);
    }

    #[test]
    fn halt_is_an_error_not_an_exit() {
        let p = JqProgram::compile("halt").unwrap();
        assert!(p.run(&json!(null)).is_err());
        let p = JqProgram::compile(r#""x" | halt_error"#).unwrap();
        assert!(p.run(&json!(null)).is_err());
    }

    fn run_err(src: &str) -> JqRunError {
        let p = JqProgram::compile(src).unwrap();
        p.run(&json!({"n": 1})).unwrap_err()
    }

    #[test]
    fn deeply_nested_sources_are_refused_before_parsing() {
        for n in [1_000, 100_000] {
            for (open, close) in [("(", ")"), ("[", "]"), ("{a:", "}"), ("\"\\(", ")\"")] {
                let src = format!("{}1{}", open.repeat(n), close.repeat(n));
                let e = JqProgram::compile(&src).unwrap_err();
                assert_eq!(e.code, codes::TOO_COMPLEX, "{open} x {n}: {e}");
            }
        }
        for src in [
            format!("1{}", "+1".repeat(5_000)),
            format!("{}1", "-".repeat(5_000)),
            format!("{}1", "label $a | ".repeat(2_000)),
            format!("{}1", "try ".repeat(2_000)),
        ] {
            let e = JqProgram::compile(&src).unwrap_err();
            assert_eq!(e.code, codes::TOO_COMPLEX, "{e}");
        }
    }

    #[test]
    fn nesting_at_the_limit_still_compiles_on_a_small_stack() {
        // The test threads have 2 MiB of stack, like the node's workers.
        let parens = MAX_NESTING / 3 - 1;
        let src = format!("{}1{}", "(".repeat(parens), ")".repeat(parens));
        assert_eq!(
            JqProgram::compile(&src)
                .unwrap()
                .run_one(&json!(null))
                .unwrap(),
            json!(1)
        );
        let src = format!("1{}", "+1".repeat(MAX_NESTING - 1));
        assert_eq!(
            JqProgram::compile(&src)
                .unwrap()
                .run_one(&json!(null))
                .unwrap(),
            json!(MAX_NESTING)
        );
        // Ordinary programs with many entries are not "deep".
        let obj = (0..500)
            .map(|i| format!("k{i}: .n"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(JqProgram::compile(&format!("{{{obj}}}")).is_ok());
    }

    #[test]
    fn infinite_recursion_exceeds_the_budget() {
        let e = run_err("def f: 1 + f; f");
        assert_eq!(e.code, codes::BUDGET_EXCEEDED, "{e}");
        let e = run_err("def f: [f]; f");
        assert_eq!(e.code, codes::BUDGET_EXCEEDED, "{e}");
    }

    #[test]
    fn endless_loops_run_out_of_fuel() {
        let e = run_err("last(range(1e11)) | true");
        assert_eq!(e.code, codes::BUDGET_EXCEEDED, "{e}");
        let e = run_err("def f: f; f");
        assert_eq!(e.code, codes::BUDGET_EXCEEDED, "{e}");
        let e = run_err("[limit(1; repeat(1) | select(false))]");
        assert_eq!(e.code, codes::BUDGET_EXCEEDED, "{e}");
    }

    #[test]
    fn amplifying_programs_exceed_the_memory_budget_before_allocating() {
        let e = run_err(r#""x" * 1000000000"#);
        assert_eq!(e.code, codes::MEMORY_EXCEEDED, "{e}");
        // jaq does not repeat by a float; the attack fails without allocating either way.
        assert!(
            JqProgram::compile(r#""x" * 1e9"#)
                .unwrap()
                .run(&json!(null))
                .is_err()
        );
        let e = run_err(r#"reduce range(64) as $i ("x"; . + .)"#);
        assert_eq!(e.code, codes::MEMORY_EXCEEDED, "{e}");
        let e = run_err("reduce range(64) as $i ([1]; . + .)");
        assert_eq!(e.code, codes::MEMORY_EXCEEDED, "{e}");
        let e = run_err("[range(1e9)]");
        assert!(
            [codes::MEMORY_EXCEEDED, codes::BUDGET_EXCEEDED].contains(&e.code),
            "{e}"
        );
        let e = run_err(r#"reduce range(40) as $i ("x"; tojson)"#);
        assert!(
            [codes::MEMORY_EXCEEDED, codes::BUDGET_EXCEEDED].contains(&e.code),
            "{e}"
        );
    }

    #[test]
    fn deep_json_text_is_refused_by_fromjson() {
        let e = run_err(r#"("[" * 200000) + ("]" * 200000) | fromjson"#);
        assert_eq!(e.code, codes::FAILED, "{e}");
        assert!(e.message.contains("deeper"), "{e}");
        let p = JqProgram::compile(r#"("[" * 100) + ("]" * 100) | fromjson | length"#).unwrap();
        assert_eq!(p.run_one(&json!(null)).unwrap(), json!(1));
    }

    #[test]
    fn deep_values_are_refused_not_overflowing() {
        let e = run_err("reduce range(200000) as $i (null; [.])");
        assert!(
            [
                codes::BUDGET_EXCEEDED,
                codes::MEMORY_EXCEEDED,
                codes::FAILED
            ]
            .contains(&e.code),
            "{e}"
        );
        let e = run_err("reduce range(200000) as $i (null; {a: .}) | length");
        assert!(
            [
                codes::BUDGET_EXCEEDED,
                codes::MEMORY_EXCEEDED,
                codes::FAILED
            ]
            .contains(&e.code),
            "{e}"
        );
    }

    #[test]
    fn exhaustion_cannot_be_caught() {
        for src in [
            "try (def f: 1 + f; f) catch 0",
            "(def f: 1 + f; f)?, 1",
            "try last(range(1e11)) catch \"caught\"",
            "try (\"x\" * 1000000000) catch \"caught\"",
            "label $out | try (def f: 1 + f; f) catch (1, break $out)",
            "[.[]?, (try (def f: [f]; f) catch empty)] | length",
        ] {
            let e = run_err(src);
            assert!(
                [codes::BUDGET_EXCEEDED, codes::MEMORY_EXCEEDED].contains(&e.code),
                "{src}: {e}"
            );
        }
    }

    #[test]
    fn budgets_are_configurable_and_per_evaluation() {
        let p = JqProgram::compile("[range(1000)] | length").unwrap();
        let tiny = JqLimits {
            fuel: 100,
            ..JqLimits::default()
        };
        assert_eq!(
            p.run_one_with(&json!(null), &tiny).unwrap_err().code,
            codes::BUDGET_EXCEEDED
        );
        // The next evaluation on the same thread starts with a fresh budget.
        assert_eq!(p.run_one(&json!(null)).unwrap(), json!(1000));
        let small = JqLimits {
            memory_bytes: 1_000,
            ..JqLimits::default()
        };
        let p = JqProgram::compile(r#""abc" * 1000"#).unwrap();
        assert_eq!(
            p.run_one_with(&json!(null), &small).unwrap_err().code,
            codes::MEMORY_EXCEEDED
        );
    }

    #[test]
    fn a_cancelled_evaluation_stops() {
        let p = JqProgram::compile("def f: f; f").unwrap();
        let cancel = Arc::new(AtomicBool::new(true));
        let e = p
            .run_cancellable(&json!(null), &JqLimits::default(), Some(cancel))
            .unwrap_err();
        assert_eq!(e.code, codes::BUDGET_EXCEEDED, "{e}");
        assert!(e.message.contains("deadline"), "{e}");
    }

    /// Values nested deeply through path updates rather than constructors (`setpath`, `.[0] =`,
    /// `to_entries`/`from_entries`…) are bounded like constructed ones: the evaluation fails
    /// with a code and nothing overflows the stack when the value is dropped or printed.
    #[test]
    fn deep_values_built_by_path_updates_fail_instead_of_overflowing() {
        for src in [
            "null | setpath([range(200000) | 0]; 1) | 0",
            "null | setpath([range(200000) | \"a\"]; 1) | 0",
            "reduce range(200000) as $i (null; .[0] = .) | 0",
            "reduce range(200000) as $i (null; .a = .) | 0",
            "reduce range(200000) as $i ([]; .[0] |= [.]) | 0",
            "reduce range(200000) as $i ({}; {a: .} | .b = 1) | 0",
            "[limit(200000; repeat(0))] | reduce .[] as $x (null; [.] | .[0] += []) | 0",
            "null | getpath([range(200000) | 0]) | 0",
        ] {
            let p = JqProgram::compile(src).unwrap();
            // Run on a thread with the node's 2 MiB stack, as the engine does.
            let out = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || p.run_one(&json!(null)).map_err(|e| e.code))
                .unwrap()
                .join()
                .unwrap();
            match out {
                Ok(v) => assert_eq!(v, json!(0), "{src}"),
                Err(code) => assert!(
                    [
                        codes::BUDGET_EXCEEDED,
                        codes::MEMORY_EXCEEDED,
                        codes::TOO_COMPLEX,
                        codes::FAILED
                    ]
                    .contains(&code),
                    "{src}: {code}"
                ),
            }
        }
    }

    #[test]
    fn compiled_programs_are_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<JqProgram>();
    }
}
