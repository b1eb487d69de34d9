//! What the CLI prints: a human summary by default, the API's JSON with `--json`.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{Value, json};

use crate::cli::Remote;

pub use xyn_web::path_segment as path_seg;

pub fn print(remote: &Remote, v: &Value, human: fn(&Value) -> String) -> Result<ExitCode> {
    if remote.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        println!("{}", human(v));
    }
    Ok(ExitCode::SUCCESS)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

fn short(v: &Value, max: usize) -> String {
    let t = match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let t = t.replace('\n', " ");
    if t.chars().count() > max {
        format!(
            "{}…",
            t.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    } else {
        t
    }
}

/// Time of day of an ISO timestamp (`2026-11-22T10:07:30.123456Z` → `10:07:30`).
fn hms(ts: &str) -> &str {
    ts.get(11..19).unwrap_or(ts)
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_uppercase()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

pub fn event_line(v: &Value) -> String {
    format!(
        "event {}  {}  seq {}  correlation {}",
        s(v, "event_id"),
        s(v, "event_name"),
        v.get("seq").map_or("-".into(), Value::to_string),
        s(v, "correlation_id")
    )
}

pub fn event_table(v: &Value) -> String {
    let rows = items(v)
        .iter()
        .map(|e| {
            vec![
                e.get("seq").map_or("-".into(), Value::to_string),
                s(e, "occurred_at").to_string(),
                s(e, "event_name").to_string(),
                s(e, "run_id").to_string(),
                short(&e["data"], 60),
            ]
        })
        .collect();
    table(
        &["seq", "occurred_at", "event_name", "run_id", "data"],
        rows,
    )
}

fn items(v: &Value) -> Vec<Value> {
    v.get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub fn run_line(v: &Value) -> String {
    format!(
        "run {}  {}  {}",
        s(v, "run_id"),
        s(v, "blueprint_id"),
        s(v, "status")
    )
}

pub fn run_table(v: &Value) -> String {
    let rows = items(v)
        .iter()
        .map(|r| {
            vec![
                s(r, "short_id").to_string(),
                s(r, "run_id").to_string(),
                s(r, "blueprint_id").to_string(),
                s(r, "status").to_string(),
                s(r, "created_at").to_string(),
                s(r, "actor").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "short",
            "run_id",
            "blueprint",
            "status",
            "created_at",
            "actor",
        ],
        rows,
    )
}

pub fn run_show(v: &Value) -> String {
    let r = &v["run"];
    let mut out = vec![
        format!("run        {}", s(r, "run_id")),
        format!(
            "blueprint  {} (version {})",
            s(r, "blueprint_id"),
            r["blueprint_version"]
        ),
        format!("status     {}", s(r, "status")),
        format!(
            "created    {}   started {}   completed {}",
            s(r, "created_at"),
            s(r, "started_at"),
            s(r, "completed_at")
        ),
        format!(
            "actor      {}   correlation {}",
            s(r, "actor"),
            s(r, "correlation_id")
        ),
        format!("inputs     {}", short(&r["inputs"], 120)),
    ];
    if !r["outputs"].is_null() {
        out.push(format!("outputs    {}", short(&r["outputs"], 120)));
    }
    if !r["error"].is_null() {
        out.push(format!("error      {}", short(&r["error"], 160)));
    }
    out.push(String::new());
    let steps = v["steps"].as_array().cloned().unwrap_or_default();
    let rows = steps
        .iter()
        .map(|st| {
            let dur = st
                .get("duration_ms")
                .and_then(Value::as_u64)
                .map_or("-".into(), |d| format!("{d}ms"));
            let mut note = match s(st, "status") {
                "waiting" => "waiting for approval".to_string(),
                "completed" | "failed" if !st["decided_by"].is_null() => {
                    format!(
                        "by {}: {}",
                        s(st, "decided_by"),
                        st["decision_comment"].as_str().unwrap_or("")
                    )
                }
                _ => String::new(),
            };
            if let Some(next) = st.get("next_attempt_at").and_then(Value::as_str) {
                note = format!("retry at {}", hms(next));
            }
            if !st["error"].is_null() && note.is_empty() {
                note = short(&st["error"]["message"], 60);
            }
            vec![
                s(st, "name").to_string(),
                s(st, "kind").to_string(),
                s(st, "status").to_string(),
                st.get("attempt").map_or("-".into(), Value::to_string),
                st.get("started_at")
                    .and_then(Value::as_str)
                    .map_or("-".into(), |t| hms(t).to_string()),
                dur,
                note,
            ]
        })
        .collect();
    out.push(table(
        &[
            "step", "kind", "status", "attempt", "started", "took", "note",
        ],
        rows,
    ));
    for st in &steps {
        if st["inputs"].is_null() && st["outputs"].is_null() {
            continue;
        }
        out.push(format!("\n[{}]", s(st, "name")));
        if !st["inputs"].is_null() {
            out.push(format!("  inputs   {}", short(&st["inputs"], 200)));
        }
        if !st["outputs"].is_null() {
            out.push(format!("  outputs  {}", short(&st["outputs"], 200)));
        }
        if !st["error"].is_null() {
            out.push(format!("  error    {}", short(&st["error"], 200)));
        }
    }
    let arts = v["artifacts"].as_array().cloned().unwrap_or_default();
    if !arts.is_empty() {
        out.push(String::new());
        let step_names: std::collections::HashMap<String, String> = steps
            .iter()
            .map(|st| (s(st, "step_id").to_string(), s(st, "name").to_string()))
            .collect();
        let rows = arts
            .iter()
            .map(|a| {
                vec![
                    s(a, "artifact_id").to_string(),
                    step_names
                        .get(s(a, "step_id"))
                        .cloned()
                        .unwrap_or_else(|| "-".into()),
                    s(a, "name").to_string(),
                    s(a, "kind").to_string(),
                    a.get("byte_length").map_or("-".into(), Value::to_string),
                ]
            })
            .collect();
        out.push(table(
            &["artifact_id", "step", "name", "kind", "bytes"],
            rows,
        ));
    }
    out.join("\n")
}

pub fn step_decided(v: &Value) -> String {
    format!(
        "step {} of run {} is {} (decided by {})",
        s(v, "name"),
        s(v, "run_id"),
        s(v, "status"),
        s(v, "decided_by")
    )
}

pub fn blueprint_applied(v: &Value) -> String {
    let created = v.get("created").and_then(Value::as_bool).unwrap_or(false);
    format!(
        "blueprint {} version {} ({})",
        s(v, "blueprint_id"),
        v["version"],
        if created { "new version" } else { "unchanged" }
    )
}

pub fn blueprint_switched(v: &Value) -> String {
    let on = v.get("enabled").and_then(Value::as_bool).unwrap_or(true);
    format!(
        "blueprint {}: trigger {}",
        s(v, "blueprint_id"),
        if on { "enabled" } else { "disabled" }
    )
}

pub fn blueprint_table(v: &Value) -> String {
    let rows = items(v)
        .iter()
        .map(|b| {
            let trig = &b["definition"]["trigger"];
            let t = match (
                trig.get("event_type").and_then(Value::as_str),
                trig.get("cron").and_then(Value::as_str),
            ) {
                (Some(e), Some(c)) => format!("{e} + cron {c}"),
                (Some(e), None) => e.to_string(),
                (None, Some(c)) => format!("cron {c}"),
                _ => "-".into(),
            };
            vec![
                s(b, "blueprint_id").to_string(),
                b["version"].to_string(),
                s(b, "name").to_string(),
                t,
                if b.get("enabled").and_then(Value::as_bool) == Some(false) {
                    "no"
                } else {
                    "yes"
                }
                .to_string(),
                s(b, "origin").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "blueprint_id",
            "version",
            "name",
            "trigger",
            "enabled",
            "origin",
        ],
        rows,
    )
}

pub fn blueprint_show(v: &Value) -> String {
    format!(
        "# {} version {} ({}), digest {}\n{}",
        s(v, "blueprint_id"),
        v["version"],
        s(v, "origin"),
        s(v, "digest"),
        s(v, "source")
    )
}

/// `xyn blueprint validate`: checks against the actions a node on `data_dir` has — the
/// built-in ones and the packages installed there (read only; nothing is created).
pub fn validate_files(files: &[PathBuf], as_json: bool, data_dir: &Path) -> Result<ExitCode> {
    let names = crate::serve::known_actions(data_dir)?;
    let known = |a: &str| names.contains(a);
    let env = xyn_core::blueprint::ValidationEnv {
        is_known_action: &known,
        known_providers: xyn_core::blueprint::PROVIDERS,
    };
    let mut all_ok = true;
    let mut reports = Vec::new();
    for f in files {
        let report = match std::fs::read_to_string(f) {
            Ok(text) => xyn_core::blueprint::validate_text(&text, &env),
            Err(e) => xyn_core::blueprint::ValidationReport {
                valid: false,
                blueprint_id: None,
                issues: vec![xyn_core::blueprint::Issue {
                    path: "$".into(),
                    code: "file.unreadable",
                    message: format!("cannot read {}: {e}", f.display()),
                }],
            },
        };
        all_ok &= report.valid;
        if as_json {
            reports.push(
                json!({"file": f.display().to_string(), "valid": report.valid,
                "blueprint_id": report.blueprint_id, "issues": report.issues}),
            );
        } else if report.valid {
            println!(
                "{}: valid ({})",
                f.display(),
                report.blueprint_id.as_deref().unwrap_or("?")
            );
        } else {
            let n = report.issues.len();
            println!(
                "{}: {n} problem{}",
                f.display(),
                if n == 1 { "" } else { "s" }
            );
            let rows = report
                .issues
                .iter()
                .map(|i| vec![i.path.clone(), i.code.to_string(), i.message.clone()])
                .collect();
            println!("{}", indent(&table(&["path", "code", "message"], rows)));
        }
    }
    if as_json {
        let out = if reports.len() == 1 {
            reports.remove(0)
        } else {
            Value::Array(reports)
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
