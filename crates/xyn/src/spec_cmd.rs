//! `xyn spec fmt|lint|check|verify` and `xyn test`: operation specs (see docs/specs.md). The
//! model, checks and runners live in `xyn-spec`; this module reads files, prints, and exits
//! 0 (clean) or 1 (findings).
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::Value;
use xyn_spec::lint::{lint_examples, lint_spec, parse_examples};
use xyn_spec::verify::{Verdict, verify};
use xyn_spec::{Spec, examples_path, fmt, run};

#[derive(Subcommand, Debug)]
pub enum SpecCmd {
    /// Rewrite spec and examples files canonically (sorted keys); --check only reports.
    Fmt {
        /// Spec files or directories (default: the current directory).
        paths: Vec<PathBuf>,
        /// Do not write; exit 1 when a file is not canonical.
        #[arg(long)]
        check: bool,
    },
    /// Check a spec's shape, JSON Schemas, jq clauses and its examples (errors with JSON paths).
    Lint {
        /// The spec file (`<id>.xynspec.json`; its examples are read beside it).
        file: PathBuf,
    },
    /// Lint, then check conformance: the subject's implementation compiles and every example's
    /// input satisfies `requires`.
    Check {
        /// The spec file (`<id>.xynspec.json`; its examples are read beside it).
        file: PathBuf,
    },
    /// Prove each operation over a finite input domain, or falsify it with a counterexample.
    Verify {
        /// The spec file (`<id>.xynspec.json`).
        file: PathBuf,
        /// The most inputs to enumerate.
        #[arg(long, default_value_t = 100_000)]
        limit: usize,
    },
}

fn spec_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let roots = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    for r in roots {
        walk(&r, &mut out);
    }
    out.sort();
    out
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let name = e.file_name();
                if name.to_string_lossy().starts_with('.') || name == "target" {
                    continue;
                }
                walk(&e.path(), out);
            }
        }
    } else if p.to_string_lossy().ends_with(".xynspec.json") {
        out.push(p.to_path_buf());
    }
}

fn load(
    file: &Path,
) -> Result<(
    Value,
    Spec,
    Vec<xyn_spec::Example>,
    Vec<xyn_spec::Diagnostic>,
)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
    let mut diags = lint_spec(&doc);
    let spec = Spec::from_value(&doc);
    let ex_text = std::fs::read_to_string(examples_path(file)).unwrap_or_default();
    let (examples, d) = parse_examples(&ex_text);
    diags.extend(d);
    if diags.is_empty() {
        diags.extend(lint_examples(&spec, &examples));
    }
    Ok((doc, spec, examples, diags))
}

fn report(file: &Path, diags: &[xyn_spec::Diagnostic]) -> ExitCode {
    for d in diags {
        println!("{}: {d}", file.display());
    }
    if diags.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn spec(cmd: SpecCmd) -> Result<ExitCode> {
    match cmd {
        SpecCmd::Fmt { paths, check } => {
            let mut dirty = 0;
            for f in spec_files(&paths) {
                let mut pairs = vec![(f.clone(), true)];
                let ex = examples_path(&f);
                if ex.exists() {
                    pairs.push((ex, false));
                }
                for (p, is_spec) in pairs {
                    let text = std::fs::read_to_string(&p)?;
                    let canon = if is_spec {
                        fmt::format_spec(&text)
                    } else {
                        fmt::format_examples(&text)
                    }
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                    if canon != text {
                        dirty += 1;
                        if check {
                            println!("{}: not canonical (run `xyn spec fmt`)", p.display());
                        } else {
                            std::fs::write(&p, canon)?;
                            println!("formatted {}", p.display());
                        }
                    }
                }
            }
            Ok(if check && dirty > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        SpecCmd::Lint { file } => {
            let (_, _, _, diags) = load(&file)?;
            Ok(report(&file, &diags))
        }
        SpecCmd::Check { file } => {
            let (_, spec, examples, mut diags) = load(&file)?;
            if diags.is_empty() {
                for (i, op) in spec.operations.iter().enumerate() {
                    match xyn_spec::model::Compiled::new(op, spec.subject_transform()) {
                        Err(e) => diags.push(xyn_spec::Diagnostic {
                            path: format!("$.operations[{i}]"),
                            message: e,
                        }),
                        Ok(c) => {
                            if c.transform.is_none() {
                                diags.push(xyn_spec::Diagnostic {
                                    path: "$.subject".into(),
                                    message: format!("conformance of {} is not checked by this build (jq subjects and transforms only)", spec.subject),
                                });
                            }
                            for e in examples
                                .iter()
                                .filter(|e| e.operation.as_deref().is_none_or(|n| n == op.name))
                            {
                                if let Some(r) = c.failed_requires(&e.input) {
                                    diags.push(xyn_spec::Diagnostic {
                                        path: format!("examples:{} $.input", e.line),
                                        message: format!("fails {r}"),
                                    });
                                }
                            }
                        }
                    }
                }
            }
            Ok(report(&file, &diags))
        }
        SpecCmd::Verify { file, limit } => {
            let (_, spec, _, diags) = load(&file)?;
            if !diags.is_empty() {
                return Ok(report(&file, &diags));
            }
            let mut code = ExitCode::SUCCESS;
            for op in &spec.operations {
                match verify(op, spec.subject_transform(), limit) {
                    Verdict::Proved { inputs } => {
                        println!("{}: proved (bounded: {inputs} inputs)", op.name)
                    }
                    Verdict::Falsified {
                        input,
                        output,
                        clause,
                    } => {
                        code = ExitCode::from(1);
                        println!("{}: falsified by {clause}", op.name);
                        println!("{input}");
                        println!("output: {output}");
                    }
                    Verdict::NotBounded { reason } => {
                        println!("{}: not bounded ({reason})", op.name)
                    }
                }
            }
            Ok(code)
        }
    }
}

/// `xyn test [DIR]`.
pub fn test(dir: Option<PathBuf>, seed: Option<u64>, cases: usize) -> Result<ExitCode> {
    let root = dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let files = spec_files(std::slice::from_ref(&root));
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut failed = 0;
    for f in &files {
        let (_, spec, examples, diags) = load(f)?;
        if !diags.is_empty() {
            failed += 1;
            report(f, &diags);
            continue;
        }
        match run::run(&spec, &examples, seed, cases) {
            Err(e) => {
                failed += 1;
                println!("{}: {e}", f.display());
            }
            Ok(r) => {
                println!(
                    "{}: {} examples passed, {} generated cases checked",
                    f.display(),
                    r.examples_passed,
                    r.properties_checked
                );
                for fl in &r.failures {
                    failed += 1;
                    let ex = examples_path(f);
                    let at = if fl.seed.is_some() {
                        f.display().to_string()
                    } else {
                        ex.display().to_string()
                    };
                    println!("FAIL {at} {}: input {}\n{}", fl.case, fl.input, fl.message);
                    if let Some(s) = fl.seed {
                        println!(
                            "seed {s}; reproduce with: xyn test {} --seed {s}",
                            root.display()
                        );
                    }
                }
            }
        }
    }
    println!("{} spec file(s), {failed} failure(s)", files.len());
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
