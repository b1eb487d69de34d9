//! `xyn run retry`, `xyn run rerun`, `xyn run watch` and `xyn event show`.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::cli::Remote;
use crate::output::{self, path_seg};

/// How often `xyn run watch` reads the run.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// `xyn run retry ID [--step NAME]`.
pub async fn retry(run_id: String, step: Option<String>, remote: Remote) -> Result<ExitCode> {
    let c = remote.client(None)?;
    let v = c
        .post(
            &format!("/api/v1/runs/{}/retry", path_seg(&run_id)),
            &json!({"step": step}),
        )
        .await?;
    output::print(&remote, &v, |v| {
        format!(
            "{}  (retrying from the failed step; `xyn run watch {}` follows it)",
            output::run_line(v),
            v["run_id"].as_str().unwrap_or("-")
        )
    })
}

/// `xyn run rerun ID [--input JSON] [--name NAME]`.
pub async fn rerun(
    run_id: String,
    input: Option<String>,
    name: Option<String>,
    remote: Remote,
) -> Result<ExitCode> {
    let inputs = match input {
        Some(text) => {
            let v: Value = serde_json::from_str(&text).context("--input is not valid JSON")?;
            anyhow::ensure!(
                v.is_object(),
                "--input must be a JSON object (all the inputs)"
            );
            Some(v)
        }
        None => None,
    };
    let c = remote.client(None)?;
    let v = c
        .post(
            &format!("/api/v1/runs/{}/rerun", path_seg(&run_id)),
            &json!({"inputs": inputs, "name": name}),
        )
        .await?;
    let old = run_id.clone();
    let human = move |v: &Value| format!("{}  (re-run of {old})", output::run_line(v));
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", human(&v));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per change of a step, as `xyn run watch` prints it.
fn step_line(st: &Value) -> String {
    let status = st["status"].as_str().unwrap_or("-");
    let mut line = format!(
        "{}  {:<20} {:<10} attempt {}",
        st["name"].as_str().unwrap_or("-"),
        st["kind"].as_str().unwrap_or("-"),
        status,
        st["attempt"]
    );
    if let Some(d) = st["duration_ms"].as_u64() {
        line.push_str(&format!("  {d} ms"));
    }
    if status == "waiting" {
        line.push_str(&format!(
            "  waiting for a decision: xyn run approve {} --step {}",
            st["run_id"].as_str().unwrap_or("-"),
            st["name"].as_str().unwrap_or("-")
        ));
    }
    if let Some(m) = st["error"]["message"].as_str() {
        line.push_str(&format!(
            "  {}: {m}",
            st["error"]["code"].as_str().unwrap_or("error")
        ));
    }
    line
}

/// `xyn run watch ID`: prints each step as it changes until the run ends. Exit 0 when the run
/// completed, 1 when it failed or was cancelled.
pub async fn watch(run_id: String, remote: Remote) -> Result<ExitCode> {
    let c = remote.client(None)?;
    let id = path_seg(&run_id);
    let mut seen: HashMap<String, (String, u64)> = HashMap::new();
    let mut last_status = String::new();
    loop {
        let run = c.get(&format!("/api/v1/runs/{id}"), &[]).await?;
        let steps = c
            .get(
                &format!("/api/v1/runs/{id}/steps"),
                &[("limit", "500".into())],
            )
            .await?;
        for st in steps["items"].as_array().into_iter().flatten() {
            let key = st["step_id"].as_str().unwrap_or("").to_string();
            let state = (
                st["status"].as_str().unwrap_or("").to_string(),
                st["attempt"].as_u64().unwrap_or(0),
            );
            if state.0 == "created" && state.1 == 0 {
                continue;
            }
            if seen.get(&key) != Some(&state) {
                if remote.json {
                    println!("{}", serde_json::to_string(st)?);
                } else {
                    println!("{}", step_line(st));
                }
                seen.insert(key, state);
            }
        }
        let status = run["status"].as_str().unwrap_or("").to_string();
        if status != last_status && !remote.json {
            println!("run {run_id}  {status}");
        }
        last_status = status.clone();
        match status.as_str() {
            "completed" => return Ok(ExitCode::SUCCESS),
            "failed" | "cancelled" => {
                if remote.json {
                    println!("{}", serde_json::to_string(&run)?);
                } else if let Some(e) = run["error"]["message"].as_str() {
                    println!(
                        "  {}: {e}",
                        run["error"]["code"].as_str().unwrap_or("error")
                    );
                }
                return Ok(ExitCode::from(1));
            }
            _ => tokio::time::sleep(WATCH_EVERY).await,
        }
    }
}

/// `xyn event show ID`.
pub async fn event_show(event_id: String, remote: Remote) -> Result<ExitCode> {
    let c = remote.client(None)?;
    let v = c
        .get(&format!("/api/v1/events/{}", path_seg(&event_id)), &[])
        .await?;
    output::print(&remote, &v, |e| {
        let mut out = vec![
            output::event_line(e),
            format!(
                "occurred   {}   actor {}",
                e["occurred_at"].as_str().unwrap_or("-"),
                e["actor"].as_str().unwrap_or("-")
            ),
        ];
        if let Some(r) = e["run_id"].as_str() {
            out.push(format!(
                "run        {r}{}",
                e["step_id"]
                    .as_str()
                    .map(|s| format!("   step {s}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(r) = e.get("resource").filter(|r| !r.is_null()) {
            out.push(format!(
                "resource   {}:{}",
                r["type"].as_str().unwrap_or("-"),
                r["id"].as_str().unwrap_or("-")
            ));
        }
        out.push(String::new());
        out.push(serde_json::to_string_pretty(&e["data"]).unwrap_or_default());
        out.join("\n")
    })
}
