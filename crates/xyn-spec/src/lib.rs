//! Operation specs (`specs/<id>.xynspec.json` and `specs/<id>.xynspec.examples.jsonl`).
//!
//! A spec names a subject and its operations; each operation has `params` and `result` as
//! JSON Schemas, `requires`/`ensures` as jq predicates over `{input, output}`, and the error
//! codes it may return. This crate is pure: it lints, formats canonically, runs examples and
//! generated cases against a jq `transform`, and proves operations over finite domains.

pub mod fmt;
pub mod generate;
pub mod lint;
pub mod model;
pub mod run;
pub mod verify;

pub use lint::Diagnostic;
pub use model::{Example, Expect, Operation, Spec};

/// The examples file that belongs to a spec file (`x.xynspec.json` → `x.xynspec.examples.jsonl`).
pub fn examples_path(spec: &std::path::Path) -> std::path::PathBuf {
    let name = spec
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stem = name.strip_suffix(".json").unwrap_or(name);
    spec.with_file_name(format!("{stem}.examples.jsonl"))
}
