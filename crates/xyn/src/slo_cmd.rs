//! `xyn slo eval FILE [--url NODE_URL | --prometheus URL] [--window 1h]`: evaluates an
//! OpenSLO v1 SLO (ratio SLI over PromQL) and exits 0 promote, 2 rollback, 3 inconclusive
//! (1 for a refusal: a bad document, an unsupported query, an unreachable source).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use xyn_ops::{openslo, promql};

#[derive(Subcommand, Debug)]
pub enum SloCmd {
    /// Evaluate an OpenSLO v1 SLO: prints the SLI, error budget left and burn rates; exits 0
    /// promote (objective met), 2 rollback (missed), 3 inconclusive (no events in the window).
    Eval(EvalArgs),
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The OpenSLO document (YAML or JSON, `kind: SLO` with a `ratioMetric` SLI).
    pub file: PathBuf,
    /// Evaluate against this node's own `GET /metrics` (its counters since it started).
    #[arg(long, env = "XYN_URL", conflicts_with = "prometheus")]
    pub url: Option<String>,
    /// Evaluate against a Prometheus server instead (burn rates over the workbook's windows
    /// included).
    #[arg(long)]
    pub prometheus: Option<String>,
    /// The evaluation window (e.g. 1h, 28d) [default: the SLO's timeWindow].
    #[arg(long)]
    pub window: Option<String>,
    /// API token for a node with auth on (the operator role reads /metrics).
    #[arg(long, env = "XYN_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: SloCmd) -> Result<ExitCode> {
    let SloCmd::Eval(a) = cmd;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(eval(a))
}

fn refusal(e: xyn_ops::OpsError) -> anyhow::Error {
    anyhow!("{} ({})", e.message, e.code)
}

async fn eval(a: EvalArgs) -> Result<ExitCode> {
    xyn_actions::install_crypto_provider();
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let slo = openslo::parse(&text).map_err(refusal)?;
    let window = a
        .window
        .as_deref()
        .map(openslo::parse_duration)
        .transpose()
        .map_err(refusal)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let report = match &a.prometheus {
        Some(base) => {
            let base = base.trim_end_matches('/');
            // Every window's two queries, answered by the server first, then evaluated.
            let mut answers = std::collections::HashMap::new();
            let mut wanted = vec![window.unwrap_or(slo.window)];
            for r in xyn_ops::burn::WORKBOOK {
                wanted.push(Duration::from_secs(r.short_secs));
                wanted.push(Duration::from_secs(r.long_secs));
            }
            for w in wanted {
                for e in [&slo.numerator, &slo.total] {
                    let q = promql::with_range(e, w).to_string();
                    if answers.contains_key(&q) {
                        continue;
                    }
                    let v = prometheus_query(&http, base, &q).await?;
                    answers.insert(q, v);
                }
            }
            openslo::evaluate(&slo, window, true, |e, w| {
                Ok(answers
                    .get(&promql::with_range(e, w).to_string())
                    .copied()
                    .flatten())
            })
            .map_err(refusal)?
        }
        None => {
            let base = a.url.as_deref().unwrap_or("http://127.0.0.1:8080");
            let mut r = http.get(format!("{}/metrics", base.trim_end_matches('/')));
            if let Some(t) = a.token.as_deref().filter(|t| !t.trim().is_empty()) {
                r = r.bearer_auth(t);
            }
            let resp = r
                .send()
                .await
                .with_context(|| format!("cannot reach the node at {base}"))?;
            let status = resp.status();
            let body = resp.text().await?;
            if !status.is_success() {
                bail!("GET {base}/metrics answered {status}: {body}");
            }
            let snap = promql::Snapshot::parse(&body).map_err(refusal)?;
            let uptime = snap
                .series
                .get("xyn_uptime_seconds")
                .and_then(|s| s.first())
                .map_or(0.0, |s| s.1);
            let lifetime = Duration::from_secs_f64(uptime.max(1.0));
            openslo::evaluate(&slo, window, false, |e, w| {
                promql::eval(e, &snap, lifetime.min(w))?.single()
            })
            .map_err(refusal)?
        }
    };
    if a.json {
        #[allow(clippy::print_stdout)]
        {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    } else {
        print_report(&report);
    }
    Ok(ExitCode::from(report.exit.exit_code()))
}

#[allow(clippy::print_stdout)]
fn print_report(r: &openslo::Report) {
    let pct =
        |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{:.4}%", v * 100.0));
    println!(
        "SLO {} over {}s: {} good of {} (target {})",
        r.slo,
        r.window_seconds,
        r.good,
        r.total,
        pct(Some(r.target))
    );
    println!(
        "  SLI {}, error budget remaining {}",
        pct(r.sli),
        pct(r.error_budget_remaining)
    );
    for (secs, b) in &r.burn_rates {
        println!(
            "  burn rate over {secs}s: {}",
            b.map_or_else(|| "n/a".into(), |b| format!("{b:.2}x"))
        );
    }
    for a in &r.alerts {
        println!("  ALERT {a}");
    }
    println!("decision: {}", r.decision);
}

async fn prometheus_query(http: &reqwest::Client, base: &str, q: &str) -> Result<Option<f64>> {
    let mut url = reqwest::Url::parse(&format!("{base}/api/v1/query"))
        .with_context(|| format!("--prometheus {base:?} is not a URL"))?;
    url.query_pairs_mut().append_pair("query", q);
    let v: Value = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach Prometheus at {base}"))?
        .json()
        .await?;
    if v["status"] != "success" {
        bail!("Prometheus refused {q}: {}", v["error"]);
    }
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    match (v["data"]["resultType"].as_str(), result.as_slice()) {
        (Some("scalar"), _) => Ok(v["data"]["result"][1].as_str().and_then(|s| s.parse().ok())),
        (_, []) => Ok(None),
        (_, [one]) => Ok(one["value"][1].as_str().and_then(|s| s.parse().ok())),
        (_, many) => bail!(
            "{q} returns {} series; aggregate it to one (sum)",
            many.len()
        ),
    }
}
