//! `xyn spec` and `xyn test` on the real binary: the shipped example spec is formatted, lints,
//! is proved over its finite domain and its examples pass; a wrong implementation is falsified
//! with a counterexample, a wrong example fails with its line number and a diff, and a failing
//! property prints a reproduction command that reproduces it.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::{BIN, repo_root};

fn xyn(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn example_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["clamp.xynspec.json", "clamp.xynspec.examples.jsonl"] {
        std::fs::copy(
            repo_root().join("examples/specs").join(f),
            dir.path().join(f),
        )
        .unwrap();
    }
    dir
}

#[test]
fn the_example_spec_is_formatted_lints_is_proved_and_passes() {
    let specs = repo_root().join("examples/specs");
    let spec = specs.join("clamp.xynspec.json");
    let (code, out) = xyn(&["spec", "fmt", "--check", specs.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = xyn(&["spec", "lint", spec.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = xyn(&["spec", "verify", spec.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("proved (bounded: 202 inputs)"), "{out}");
    let (code, out) = xyn(&["test", specs.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn wrong_implementations_and_examples_fail_with_what_reproduces_them() {
    let dir = example_dir();
    let spec = dir.path().join("clamp.xynspec.json");
    // An implementation that can answer 11: falsified, with the counterexample.
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("[., 10] | min", "[., 11] | min");
    std::fs::write(&spec, &text).unwrap();
    let (code, out) = xyn(&["spec", "verify", spec.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("falsified"), "{out}");
    assert!(out.contains("\"x\""), "{out}");
    // `xyn test` finds it on generated inputs and prints the seed to reproduce it.
    let (code, out) = xyn(&["test", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let repro = out
        .lines()
        .find_map(|l| l.find("xyn test ").map(|i| l[i..].trim().to_string()))
        .unwrap_or_else(|| panic!("no reproduction command in {out}"));
    let args: Vec<&str> = repro.split_whitespace().skip(1).collect();
    let (again, out2) = xyn(&args);
    assert_eq!(again, 1, "{repro}: {out2}");

    // A wrong example: its line number and a diff.
    let dir = example_dir();
    let ex = dir.path().join("clamp.xynspec.examples.jsonl");
    let lines = std::fs::read_to_string(&ex)
        .unwrap()
        .replace("\"output\":10", "\"output\":9");
    std::fs::write(&ex, lines).unwrap();
    let (code, out) = xyn(&["test", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("line 3"), "{out}");
    assert!(out.contains('9') && out.contains("10"), "{out}");

    // An unformatted file fails `fmt --check`, and `fmt` fixes it.
    let dir = example_dir();
    let spec = dir.path().join("clamp.xynspec.json");
    let compact: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spec).unwrap()).unwrap();
    std::fs::write(&spec, compact.to_string()).unwrap();
    let (code, out) = xyn(&["spec", "fmt", "--check", dir.path().to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    let (code, _) = xyn(&["spec", "fmt", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    let (code, out) = xyn(&["spec", "fmt", "--check", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}
