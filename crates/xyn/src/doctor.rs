//! `xyn doctor`: what this machine offers Xyn. Each section checks for real rather than
//! reading version numbers. Section "sandbox": starts the sandbox worker with its seal
//! self-test, which seals itself exactly as for untrusted code and then tries to escape.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One check: a name, whether it holds, and what was seen.
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

pub fn run(args: DoctorArgs) -> Result<ExitCode> {
    let sandbox = sandbox_section()?;
    let ok = sandbox.iter().all(|c| c.ok);
    if args.json {
        let checks: Vec<Value> = sandbox
            .iter()
            .map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": ok, "sandbox": checks}))?
        );
    } else {
        println!("sandbox (worker seal self-test):");
        for c in &sandbox {
            println!(
                "  {} {:<34} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        if !ok {
            println!(
                "  → untrusted actions are refused on this machine unless the node runs with --allow-weak-sandbox"
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Seals a worker over two temporary roots and reports what it could and could not do.
fn sandbox_section() -> Result<Vec<Check>> {
    let read = tempdir("read")?;
    let write = tempdir("write")?;
    let exe = std::env::current_exe().context("cannot find the xyn binary")?;
    let out = std::process::Command::new(exe)
        .arg("sandbox-worker")
        .arg("--self-test-seal")
        .arg("--read")
        .arg(&read)
        .arg("--write")
        .arg(&write)
        .env_clear()
        .output()
        .context("cannot start the sandbox worker")?;
    let _ = std::fs::remove_dir_all(&read);
    let _ = std::fs::remove_dir_all(&write);
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(text.trim()).with_context(|| {
        format!(
            "the worker's self-test said {text:?} ({})",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(checks(&r))
}

fn refused(v: &Value) -> (bool, String) {
    let ok = v["ok"] == json!(false);
    let detail = if ok {
        format!("refused ({})", v["error"].as_str().unwrap_or(""))
    } else {
        format!("NOT refused: {}", v["detail"])
    };
    (ok, detail)
}

fn checks(r: &Value) -> Vec<Check> {
    let seal = &r["seal"];
    let abi = seal["landlock_abi"].as_i64();
    let mut out = vec![
        Check {
            name: "landlock",
            ok: seal["landlock"] == json!("full") || seal["landlock"] == json!("partial"),
            detail: format!(
                "{} (kernel ABI {})",
                seal["landlock"].as_str().unwrap_or("none"),
                abi.map_or("none".to_string(), |a| a.to_string())
            ),
        },
        Check {
            name: "seccomp filter",
            ok: seal["seccomp"] == json!(true),
            detail: if seal["seccomp"] == json!(true) {
                "applied to all threads (TSYNC)".into()
            } else {
                seal["notes"].to_string()
            },
        },
    ];
    for (name, v) in [
        (
            "open /etc/hostname (outside roots)",
            &r["main_thread"]["open_etc_hostname"],
        ),
        ("spawn a process", &r["main_thread"]["spawn_process"]),
        ("open a TCP socket", &r["main_thread"]["tcp_socket"]),
        (
            "open /etc/hostname from a thread",
            &r["thread"]["open_etc_hostname"],
        ),
        (
            "spawn a process from a thread",
            &r["thread"]["spawn_process"],
        ),
    ] {
        let (ok, detail) = refused(v);
        out.push(Check { name, ok, detail });
    }
    out.push(Check {
        name: "threads after sealing",
        ok: r["thread"].get("open_etc_hostname").is_some(),
        detail: "a thread started after sealing ran (clone3 → ENOSYS, clone works)".into(),
    });
    let inside =
        r["read_inside_root"]["ok"] == json!(true) && r["write_inside_root"]["ok"] == json!(true);
    out.push(Check {
        name: "read/write inside its roots",
        ok: inside,
        detail: if inside {
            "allowed".into()
        } else {
            format!("{} / {}", r["read_inside_root"], r["write_inside_root"])
        },
    });
    out
}

fn tempdir(what: &str) -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("xyn-doctor-{what}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d)
}
