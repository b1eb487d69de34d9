//! `xyn run retry`, `xyn run rerun`, `xyn run watch`, `xyn event show` and `xyn search`.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::cli::Remote;
use crate::output::{self, path_seg};

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

/// The longest `xyn run watch` waits for an event before reading the run again: a safety net
/// for a stream that stalls behind a proxy (the run's events normally wake it at once).
const WATCH_QUIET: Duration = Duration::from_secs(15);
/// How long `xyn run watch` waits before subscribing again when the stream broke.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// `xyn run watch ID`: prints each step as it changes until the run ends. Exit 0 when the run
/// completed, 1 when it failed or was cancelled. Driven by the run's events on
/// `/api/v1/events/stream` (it subscribes first, then reads the run, so nothing is missed); it
/// reads the run and its steps once per burst of events.
pub async fn watch(run_id: String, remote: Remote) -> Result<ExitCode> {
    use futures_util::StreamExt;
    let c = remote.client(None)?;
    let id = path_seg(&run_id);
    let first = c.get(&format!("/api/v1/runs/{id}"), &[]).await?;
    let full = first["run_id"].as_str().unwrap_or(&run_id).to_string();
    let subscribe = || async {
        c.stream("/api/v1/events/stream", &[("run_id", full.clone())])
            .await
            .ok()
    };
    let mut events = subscribe().await;
    let mut shown = Shown::default();
    loop {
        let run = c.get(&format!("/api/v1/runs/{id}"), &[]).await?;
        let steps = c
            .get(
                &format!("/api/v1/runs/{id}/steps"),
                &[("limit", "500".into())],
            )
            .await?;
        if let Some(code) = shown.print(&run_id, &run, &steps, remote.json)? {
            return Ok(code);
        }
        let Some(s) = events.as_mut() else {
            tokio::time::sleep(WATCH_RETRY).await;
            events = subscribe().await;
            continue;
        };
        match tokio::time::timeout(WATCH_QUIET, s.next()).await {
            Ok(Some(Ok(_))) => {
                // Events come in bursts (a step ends, the next starts): one read for the burst.
                for _ in 0..100 {
                    match tokio::time::timeout(Duration::from_millis(20), s.next()).await {
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
            }
            Ok(Some(Err(_)) | None) => events = None,
            Err(_) => {}
        }
    }
}

/// What `xyn run watch` printed so far: each step's state, the run's status.
#[derive(Default)]
struct Shown {
    steps: HashMap<String, (String, u64)>,
    status: String,
}

impl Shown {
    /// Prints what changed; the exit code once the run has ended.
    fn print(
        &mut self,
        run_id: &str,
        run: &Value,
        steps: &Value,
        json: bool,
    ) -> Result<Option<ExitCode>> {
        for st in steps["items"].as_array().into_iter().flatten() {
            let key = st["step_id"].as_str().unwrap_or("").to_string();
            let state = (
                st["status"].as_str().unwrap_or("").to_string(),
                st["attempt"].as_u64().unwrap_or(0),
            );
            if state.0 == "created" && state.1 == 0 {
                continue;
            }
            if self.steps.get(&key) != Some(&state) {
                if json {
                    println!("{}", serde_json::to_string(st)?);
                } else {
                    println!("{}", step_line(st));
                }
                self.steps.insert(key, state);
            }
        }
        let status = run["status"].as_str().unwrap_or("").to_string();
        if status != self.status && !json {
            println!("run {run_id}  {status}");
        }
        self.status.clone_from(&status);
        Ok(match status.as_str() {
            "completed" => Some(ExitCode::SUCCESS),
            "failed" | "cancelled" => {
                if json {
                    println!("{}", serde_json::to_string(run)?);
                } else if let Some(e) = run["error"]["message"].as_str() {
                    println!(
                        "  {}: {e}",
                        run["error"]["code"].as_str().unwrap_or("error")
                    );
                }
                Some(ExitCode::from(1))
            }
            _ => None,
        })
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

/// `xyn search [QUERY]`: what `GET /api/v1/search` finds.
#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// What to look for: the start of a short id (3 to 8 hex digits), a whole run or event id,
    /// a run's input value (any case), a blueprint id or an event name (`checkmk.*` for a
    /// family). Leave it out to list runs by the filters alone.
    pub query: Option<String>,
    /// Only runs in these states, comma-separated: created, running, waiting, completed,
    /// failed, cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs of this blueprint.
    #[arg(long)]
    pub blueprint: Option<String>,
    /// Only runs created at or after this time: RFC 3339, or a day YYYY-MM-DD (UTC).
    #[arg(long)]
    pub since: Option<String>,
    /// Only runs created before this time: RFC 3339, or a day YYYY-MM-DD (the whole day counts).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many runs and this many events (1 to 500).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[command(flatten)]
    pub remote: Remote,
}

/// `xyn search`: runs then events, with how the query was read.
pub async fn search(a: SearchArgs) -> Result<ExitCode> {
    let c = a.remote.client(None)?;
    let mut q = vec![("limit", a.limit.to_string())];
    for (k, v) in [
        ("q", a.query),
        ("status", a.status),
        ("blueprint_id", a.blueprint),
        ("since", a.since),
        ("until", a.until),
    ] {
        if let Some(v) = v {
            q.push((k, v));
        }
    }
    let v = c.get("/api/v1/search", &q).await?;
    output::print(&a.remote, &v, search_text)
}

fn search_text(v: &Value) -> String {
    let runs = v["runs"].as_array().map_or(0, Vec::len);
    let events = v["events"].as_array().map_or(0, Vec::len);
    if runs + events == 0 {
        return "nothing found".into();
    }
    let read_as: Vec<&str> = v["read_as"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = Vec::new();
    if !read_as.is_empty() {
        out.push(format!("read as: {}", read_as.join(", ").replace('_', " ")));
    }
    if runs > 0 {
        out.push(format!("\n{runs} run{}", if runs == 1 { "" } else { "s" }));
        out.push(output::run_table(&json!({"items": v["runs"]})));
    }
    if events > 0 {
        out.push(format!(
            "\n{events} event{}",
            if events == 1 { "" } else { "s" }
        ));
        out.push(output::event_table(&json!({"items": v["events"]})));
    }
    out.join("\n")
}
