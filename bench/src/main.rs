//! Kernel benchmark harness. Starts the real `xyn` binary (release build) on a temporary data
//! directory and measures, in one run on this machine:
//!
//! - idle RSS and idle database activity (must be zero queries);
//! - `GET /api/v1/health` with wrk (the HTTP ceiling, the baseline);
//! - durable event ingest `POST /api/v1/events` with wrk, 32 connections;
//! - runs of a 3-step transform blueprint triggered by events: completions per second and
//!   event→completed latency under load, from the node's own timestamps;
//! - event→completed latency when idle (events one at a time);
//! - where the time goes: commits, rows and events per run, per-step overhead.
//!
//! `cargo run --release -p xyn-bench -- --xyn target/release/xyn` (see docs/benchmarks/kernel.md).
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks a xyn node: ingest, run throughput, latency, idle cost")]
struct Args {
    /// The xyn binary to benchmark (build it with `cargo build --release -p xyn`).
    #[arg(long, default_value = "target/release/xyn")]
    xyn: PathBuf,
    /// Seconds per wrk measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Repetitions of each wrk measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Events (= runs) in the throughput measurement.
    #[arg(long, default_value_t = 20_000)]
    runs: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Where to write the markdown report.
    #[arg(long, default_value = "bench/results/kernel-latest.md")]
    out: PathBuf,
}

struct NodeProc {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(xyn: &Path) -> Result<NodeProc> {
    let dir = tempfile::tempdir()?;
    let bps = dir.path().join("blueprints");
    std::fs::create_dir_all(&bps)?;
    std::fs::copy("bench/blueprints/flow3.yaml", bps.join("flow3.yaml"))
        .context("run from the repository root")?;
    std::fs::write(dir.path().join("xyn.toml"), "")?;
    let log = std::fs::File::create(dir.path().join("node.log"))?;
    let mut child = Command::new(xyn)
        .current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
            "--blueprints",
            "blueprints",
        ])
        .env("XYN_LOG", "warn")
        .stdout(Stdio::from(log))
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", xyn.display()))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut url = None;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("xyn listening on ") {
            url = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let url = url.context("the node did not say where it listens")?;
    Ok(NodeProc { child, url, dir })
}

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no VmRSS")
}

#[derive(Clone, Debug, Default)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(f64::NAN)
    } else if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().map(|x| x / 1000.0).unwrap_or(f64::NAN)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().map(|x| x * 1000.0).unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

fn wrk(url: &str, clients: usize, secs: u64, script: Option<&str>, event: &str) -> Result<Wrk> {
    let mut c = Command::new("wrk");
    c.args([
        "-t2",
        &format!("-c{clients}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    if let Some(s) = script {
        c.args(["-s", s]);
    }
    c.arg(url).env("XYN_BENCH_EVENT", event);
    let out = c.output().context("wrk is needed: apt-get install wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut w = Wrk::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            w.p50_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            w.p99_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if t.starts_with("Socket errors:") {
            w.errors += t
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if w.rps == 0.0 {
        bail!("wrk printed nothing usable:\n{text}");
    }
    Ok(w)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn repeat_wrk(url: &str, a: &Args, script: Option<&str>, event: &str) -> Result<Wrk> {
    let runs: Vec<Wrk> = (0..a.repeats)
        .map(|_| wrk(url, a.clients, a.duration, script, event))
        .collect::<Result<_>>()?;
    Ok(Wrk {
        rps: median(runs.iter().map(|w| w.rps).collect()),
        p50_ms: median(runs.iter().map(|w| w.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|w| w.p99_ms).collect()),
        errors: runs.iter().map(|w| w.errors).sum(),
    })
}

async fn stats(c: &reqwest::Client, url: &str) -> Result<Value> {
    Ok(c.get(format!("{url}/api/internal/stats"))
        .send()
        .await?
        .json()
        .await?)
}

fn db(dir: &Path) -> Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open_with_flags(
        dir.join("data/xyn.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    c.busy_timeout(Duration::from_secs(5))?;
    Ok(c)
}

fn count(c: &rusqlite::Connection, sql: &str) -> Result<i64> {
    Ok(c.query_row(sql, [], |r| r.get(0))?)
}

/// Event→completed latencies (ms) and the completion window of the runs of bench.flow3.
fn run_latencies(c: &rusqlite::Connection, since_id: i64) -> Result<(Vec<f64>, f64, i64)> {
    let mut stmt = c.prepare(
        "SELECT r.completed_at - e.occurred_at, r.created_at, r.completed_at FROM runs r JOIN events e ON e.event_id = r.trigger_event_id \
         WHERE r.blueprint_id = 'bench.flow3' AND r.status = 'completed' AND r.id > ?1",
    )?;
    let mut lat = Vec::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let rows = stmt.query_map([since_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (l, c0, c1) = row?;
        lat.push(l as f64 / 1000.0);
        first = first.min(c0);
        last = last.max(c1);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = lat.len() as i64;
    Ok((lat, (last - first) as f64 / 1e6, n))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    anyhow::ensure!(
        a.xyn.exists(),
        "{} not found: cargo build --release -p xyn",
        a.xyn.display()
    );
    let node = start_node(&a.xyn)?;
    let pid = node.child.id();
    // Pooled connections are dropped before the node's idle timeout (60 s) closes them, so a
    // request after a long wrk phase never lands on a connection the node already closed.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.clients)
        .pool_idle_timeout(std::time::Duration::from_secs(20))
        .build()?;
    let url = node.url.clone();
    println!("node {url} pid {pid} data {}", node.dir.path().display());

    // Idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid)?;
    let s0 = stats(&http, &url).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s1 = stats(&http, &url).await?;
    let idle_reads =
        s1["store"]["reads"].as_u64().unwrap_or(0) - s0["store"]["reads"].as_u64().unwrap_or(0);
    let idle_commits =
        s1["store"]["commits"].as_u64().unwrap_or(0) - s0["store"]["commits"].as_u64().unwrap_or(0);
    println!(
        "idle: rss {} KiB, {idle_reads} reads and {idle_commits} commits in 5 s",
        rss_idle
    );

    // Baseline and ingest.
    let health = repeat_wrk(&format!("{url}/api/v1/health"), &a, None, "")?;
    println!(
        "health: {:.0} req/s p50 {:.2} ms p99 {:.2} ms",
        health.rps, health.p50_ms, health.p99_ms
    );
    let ingest = repeat_wrk(
        &format!("{url}/api/v1/events"),
        &a,
        Some("bench/lua/post_event.lua"),
        "bench.ingest",
    )?;
    println!(
        "ingest: {:.0} events/s p50 {:.2} ms p99 {:.2} ms ({} errors)",
        ingest.rps, ingest.p50_ms, ingest.p99_ms, ingest.errors
    );

    // Run throughput under load.
    let conn = db(node.dir.path())?;
    let start_run_id = count(&conn, "SELECT COALESCE(MAX(id), 0) FROM runs")?;
    let rows_before = table_rows(&conn)?;
    let st_before = stats(&http, &url).await?;
    let next = Arc::new(AtomicU64::new(0));
    let acks = Arc::new(std::sync::Mutex::new(Vec::<f64>::with_capacity(a.runs)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.clients {
        let (http, url, next, acks, total) = (
            http.clone(),
            url.clone(),
            next.clone(),
            acks.clone(),
            a.runs as u64,
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let t = Instant::now();
                let r = http
                    .post(format!("{url}/api/v1/events"))
                    .json(&json!({"event_name": "bench.flow", "data": {"host": format!("web-{}", n % 97), "n": n}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => acks.lock().map(|mut v| v.push(t.elapsed().as_secs_f64() * 1000.0)).unwrap_or(()),
                    Ok(r) => eprintln!("unexpected status {}", r.status()),
                    Err(e) => eprintln!("request failed: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let emitted_in = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = count(
            &conn,
            &format!(
                "SELECT COUNT(*) FROM runs WHERE blueprint_id='bench.flow3' AND status='completed' AND id > {start_run_id}"
            ),
        )?;
        if done as usize >= a.runs {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {} runs completed",
            a.runs
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = t0.elapsed();
    let st_after = stats(&http, &url).await?;
    let rows_after = table_rows(&conn)?;
    let (lat_load, window_s, n) = run_latencies(&conn, start_run_id)?;
    let runs_per_s = n as f64 / window_s;
    let mut acks_v = acks.lock().map(|v| v.clone()).unwrap_or_default();
    acks_v.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
    let rss_load = rss_kib(pid)?;
    println!(
        "flow: {n} runs in {window_s:.2} s of node time ({runs_per_s:.0} runs/s; client saw {:.2} s emit, {:.2} s total), latency p50 {:.2} ms p99 {:.2} ms",
        emitted_in.as_secs_f64(),
        wall.as_secs_f64(),
        pct(&lat_load, 0.5),
        pct(&lat_load, 0.99)
    );
    let commits = st_after["store"]["commits"].as_u64().unwrap_or(0)
        - st_before["store"]["commits"].as_u64().unwrap_or(0);
    let batches = st_after["store"]["batches"].as_u64().unwrap_or(0)
        - st_before["store"]["batches"].as_u64().unwrap_or(0);
    let per_run = |k: usize| (rows_after[k].1 - rows_before[k].1) as f64 / n as f64;

    // Idle latency: one event at a time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_start = count(&conn, "SELECT COALESCE(MAX(id), 0) FROM runs")?;
    let idle_n = 300;
    for i in 0..idle_n {
        http.post(format!("{url}/api/v1/events"))
            .json(&json!({"event_name": "bench.flow", "data": {"host": "idle", "n": i}}))
            .send()
            .await?;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (lat_idle, _, n_idle) = run_latencies(&conn, idle_start)?;
    println!(
        "idle latency: {n_idle} runs, p50 {:.2} ms p99 {:.2} ms",
        pct(&lat_idle, 0.5),
        pct(&lat_idle, 0.99)
    );

    let steps_overhead_ms = pct(&lat_idle, 0.5) / 3.0;
    let report = format!(
        "# Kernel benchmark\n\n\
         Measured {date} on this machine ({cpus} cores), `{xyn}` (release), SQLite WAL `synchronous=FULL` (every acknowledged commit fsync'd).\n\
         Reproduce: `bash bench/run.sh` (or `cargo build --release -p xyn && cargo run --release -p xyn-bench -- --xyn target/release/xyn`).\n\
         wrk: 2 threads, {c} connections, {d} s per measurement, median of {r}.\n\n\
         | measure | result | target |\n|---|---|---|\n\
         | `GET /api/v1/health` (baseline, no store) | {h_rps:.0} req/s, p50 {h_p50:.2} ms, p99 {h_p99:.2} ms | — |\n\
         | durable event ingest `POST /api/v1/events` | **{i_rps:.0} events/s** ({ratio:.0}% of health), p50 {i_p50:.2} ms, **p99 {i_p99:.2} ms**, {i_err} errors | ≥ 10,000/s, p99 ≤ 25 ms |\n\
         | 3-step transform runs, {n} events from {c} clients | **{runs_per_s:.0} runs completed/s**; event→completed p50 {l50:.2} ms, p99 {l99:.2} ms; ack p50 {a50:.2} ms, p99 {a99:.2} ms | ≥ 2,000 runs/s |\n\
         | event→completed when idle ({n_idle} events, one at a time) | **p50 {il50:.2} ms**, p99 {il99:.2} ms | p50 ≤ 5 ms |\n\
         | idle database activity (5 s) | {idle_reads} reads, {idle_commits} commits | 0 |\n\
         | RSS idle / after the load | **{rss_idle:.1} MiB** / {rss_load:.1} MiB | idle ≤ 40 MiB |\n\n\
         ## Where the time goes (the run throughput phase)\n\n\
         | per run | value |\n|---|---|\n\
         | transactions (fsyncs) | {cpr:.3} (batches per transaction: {bpc:.1}) |\n\
         | event rows (hash-chained) + outbox rows | {ev:.1} + {ob:.1} |\n\
         | run rows / step rows / footprint rows | {ru:.1} / {sr:.1} / {fp:.1} |\n\
         | store batches | {bpr:.1} (intake, then one at completion) |\n\
         | idle per-step overhead (p50 latency / 3 steps) | {steps_overhead_ms:.2} ms |\n\n\
         A run of three transforms writes two batches: the intake transaction (event, outbox, run, three steps,\n\
         `xyn.run.started`, `run.count`) and the completion (three step updates, six step events, `xyn.run.completed`,\n\
         seven footprints). Group commit folds the batches of concurrent runs into one fsync'd transaction, so\n\
         throughput is bounded by the single SQLite writer's row rate and by CPU shared with the load generator on\n\
         {cpus} cores, not by fsync latency.\n",
        date = chrono_now(),
        cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        xyn = a.xyn.display(),
        c = a.clients,
        d = a.duration,
        r = a.repeats,
        h_rps = health.rps,
        h_p50 = health.p50_ms,
        h_p99 = health.p99_ms,
        i_rps = ingest.rps,
        ratio = 100.0 * ingest.rps / health.rps,
        i_p50 = ingest.p50_ms,
        i_p99 = ingest.p99_ms,
        i_err = ingest.errors,
        l50 = pct(&lat_load, 0.5),
        l99 = pct(&lat_load, 0.99),
        a50 = pct(&acks_v, 0.5),
        a99 = pct(&acks_v, 0.99),
        il50 = pct(&lat_idle, 0.5),
        il99 = pct(&lat_idle, 0.99),
        rss_idle = rss_idle as f64 / 1024.0,
        rss_load = rss_load as f64 / 1024.0,
        cpr = commits as f64 / n as f64,
        bpc = batches as f64 / commits.max(1) as f64,
        bpr = batches as f64 / n as f64,
        ev = per_run(0),
        ob = per_run(1),
        ru = per_run(2),
        sr = per_run(3),
        fp = per_run(4),
    );
    if let Some(p) = a.out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&a.out, &report)?;
    println!("\n{report}\nwritten to {}", a.out.display());
    Ok(())
}

fn table_rows(c: &rusqlite::Connection) -> Result<Vec<(&'static str, i64)>> {
    ["events", "outbox", "runs", "steps", "footprints"]
        .into_iter()
        .map(|t| Ok((t, count(c, &format!("SELECT COUNT(*) FROM {t}"))?)))
        .collect()
}

fn chrono_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
