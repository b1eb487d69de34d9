//! Search benchmark: seeds 100,000 runs (and an event for every tenth) into a fresh SQLite
//! store and a fresh PostgreSQL schema, then times what the search box and `GET
//! /api/v1/search` do — the whole search (every reading of the query, as the API runs it) and
//! each indexed lookup alone: the start of a short id, an input value that few or many runs
//! have, a status in a time window. p50/p95/max over repeated queries with varying values.
//!
//! `cargo run --release -p xyn-bench --bin search-bench` (from the repository root) writes
//! docs/benchmarks/search.md. The budget is 50 ms per search with 100,000 runs.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use xyn_core::event::Event;
use xyn_core::run::{Run, RunStatus};
use xyn_core::{EventId, IdPattern, RunId, Timestamp, short_id};
use xyn_store::postgres::{PgConfig, PgStore};
use xyn_store::sqlite::{SqliteConfig, SqliteStore};
use xyn_store::{RunQuery, RunWrite, Store, WriteBatch};
use xyn_web::routes::search::{SearchParams, search};

#[derive(Parser, Debug)]
#[command(about = "Times search over 100,000 runs on SQLite and PostgreSQL")]
struct Args {
    /// Runs to seed.
    #[arg(long, default_value_t = 100_000)]
    runs: usize,
    /// Queries per measurement.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// PostgreSQL to measure (a fresh schema is made and dropped); `none` skips it.
    #[arg(
        long,
        env = "XYN_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Where to write the report.
    #[arg(long, default_value = "docs/benchmarks/search.md")]
    out: PathBuf,
}

const T0: i64 = 1_790_000_000_000_000;
const BATCH: usize = 1_000;
const REGIONS: [&str; 4] = ["eu", "us", "ap", "sa"];

fn run_at(i: usize) -> Run {
    let created = Timestamp::from_micros(T0 + i as i64 * 1_000_000);
    let status = match i % 10 {
        0 => RunStatus::Failed,
        1 => RunStatus::Running,
        _ => RunStatus::Completed,
    };
    Run {
        run_id: RunId(uuid::Uuid::now_v7()),
        name: format!("bp.bench.{}", i % 20),
        blueprint_id: format!("bp.bench.{}", i % 20),
        blueprint_version: 1,
        status,
        created_at: created,
        started_at: Some(created),
        completed_at: None,
        actor: "bench".into(),
        correlation_id: format!("c-{i}"),
        env_id: "bench".into(),
        trigger_event_id: None,
        // `host` has 5,000 values (20 runs each), `region` 4 (25,000 runs each), `ticket` one
        // per run.
        inputs: json!({"host": format!("web-{}", i % 5_000), "region": REGIONS[i % 4],
            "ticket": format!("T-{i}"), "dry_run": i.is_multiple_of(2)}),
        outputs: None,
        error: None,
        deadline_at: None,
        priority: 0,
        step_executions: 0,
        revision: 0,
    }
}

async fn seed(store: &Arc<dyn Store>, n: usize) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let mut b = WriteBatch::default();
        for j in i..(i + BATCH).min(n) {
            let r = run_at(j);
            ids.push(r.run_id.to_string());
            if j.is_multiple_of(10) {
                b.events.push(Event {
                    event_id: EventId(uuid::Uuid::now_v7()),
                    event_name: "bench.search".into(),
                    occurred_at: r.created_at,
                    env_id: "bench".into(),
                    actor: "bench".into(),
                    correlation_id: r.correlation_id.clone(),
                    run_id: Some(r.run_id),
                    step_id: None,
                    resource: None,
                    data: json!({"i": j}),
                });
            }
            b.runs.push(RunWrite::Insert(r));
        }
        store.commit(b).await.context("seeding")?;
        i += BATCH;
    }
    Ok(ids)
}

struct Stat {
    name: String,
    p50: f64,
    p95: f64,
    max: f64,
    found: usize,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn time<F, Fut>(name: &str, n: usize, mut f: F) -> Result<Stat>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    f(0).await?; // warm the statement cache
    let mut ms = Vec::with_capacity(n);
    let mut found = 0;
    for k in 0..n {
        let t = Instant::now();
        found += f(k + 1).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(Stat {
        name: name.to_string(),
        p50: pct(&ms, 0.5),
        p95: pct(&ms, 0.95),
        max: *ms.last().unwrap_or(&f64::NAN),
        found: found / n.max(1),
    })
}

fn params(q: &str) -> SearchParams {
    SearchParams {
        q: Some(q.to_string()),
        ..Default::default()
    }
}

/// A search case: its name and the query of the k-th measurement.
type Case<'a> = (&'static str, Box<dyn Fn(usize) -> SearchParams + 'a>);

async fn measure(store: Arc<dyn Store>, ids: &[String], n: usize) -> Result<Vec<Stat>> {
    let pick = |k: usize| &ids[(k * 7_919) % ids.len()];
    let s = &store;
    let cases: Vec<Case<'_>> = vec![
        (
            "search: a short id (8 digits)",
            Box::new(move |k| params(short_id(pick(k)))),
        ),
        (
            "search: the start of a short id (4 digits)",
            Box::new(move |k| params(&short_id(pick(k))[..4])),
        ),
        (
            "search: an input value of 1 run (`T-…`)",
            Box::new(|k| params(&format!("T-{}", (k * 7_919) % ids.len()))),
        ),
        (
            "search: an input value of 20 runs (`web-…`)",
            Box::new(|k| params(&format!("web-{}", k % 5_000))),
        ),
        (
            "search: an input value of 25,000 runs (`eu`), first page",
            Box::new(|_| params("eu")),
        ),
        (
            "search: failed runs in a one-day window",
            Box::new(|_| SearchParams {
                status: Some("failed".into()),
                since: Some(Timestamp::from_micros(T0 + 20_000 * 1_000_000).to_string()),
                until: Some(Timestamp::from_micros(T0 + 106_400 * 1_000_000).to_string()),
                ..Default::default()
            }),
        ),
        (
            "search: a blueprint id and an input value",
            Box::new(|k| SearchParams {
                q: Some(format!("web-{}", k % 5_000)),
                blueprint_id: Some(format!("bp.bench.{}", k % 20)),
                ..Default::default()
            }),
        ),
    ];
    let mut out = Vec::new();
    for (name, query) in &cases {
        out.push(
            time(name, n, |k| {
                let p = query(k);
                async move { Ok(search(s.as_ref(), &p).await?.runs.len()) }
            })
            .await?,
        );
    }
    out.push(
        time(
            "lookup alone: runs by short-id prefix (4 digits)",
            n,
            |k| async move {
                let page = s
                    .list_runs(RunQuery {
                        id: IdPattern::parse(&short_id(pick(k))[..4]),
                        limit: 50,
                        ..Default::default()
                    })
                    .await?;
                Ok(page.items.len())
            },
        )
        .await?,
    );
    Ok(out)
}

async fn postgres(url: &str) -> Result<(Arc<dyn Store>, String)> {
    let schema = format!("xb_search_{}", uuid::Uuid::new_v4().simple());
    let mut cfg = PgConfig::new(url.to_string());
    cfg.schema = Some(schema.clone());
    cfg.pool_size = 4;
    Ok((Arc::new(PgStore::open(cfg).await?), schema))
}

async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    Ok(())
}

fn table(md: &mut String, title: &str, seed_s: f64, stats: &[Stat]) {
    let _ = writeln!(md, "\n## {title}\n\nSeeded in {seed_s:.1} s.\n");
    md.push_str("| query | p50 ms | p95 ms | max ms | runs found |\n|---|---:|---:|---:|---:|\n");
    for s in stats {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.2} | {} |",
            s.name, s.p50, s.p95, s.max, s.found
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = Args::parse();
    let mut md = String::from("# Search with 100,000 runs\n\n");
    let _ = writeln!(
        md,
        "`cargo run --release -p xyn-bench --bin search-bench` seeds {} runs (and an event for every tenth) into a fresh store and times {} searches of each kind, each with a different value. A search reads the query every way it can at once (short id, whole id, input value, blueprint id, event name), each through an index (`runs_by_short_id`, `run_input_values_by_value`, `runs_by_created`, `events_by_short_id`); the budget is 50 ms.",
        a.runs, a.queries
    );

    let dir = tempfile::tempdir()?;
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(
        dir.path().join("xyn.db"),
        SqliteConfig::default(),
    )?);
    let t = Instant::now();
    let ids = seed(&sqlite, a.runs).await?;
    let seed_s = t.elapsed().as_secs_f64();
    let stats = measure(sqlite.clone(), &ids, a.queries).await?;
    table(&mut md, "SQLite", seed_s, &stats);
    for s in &stats {
        println!(
            "sqlite   {:<60} p50 {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms",
            s.name, s.p50, s.p95, s.max
        );
    }

    if a.database_url != "none" {
        let (pg, schema) = postgres(&a.database_url).await?;
        let t = Instant::now();
        let res = async {
            let ids = seed(&pg, a.runs).await?;
            let seed_s = t.elapsed().as_secs_f64();
            let stats = measure(pg.clone(), &ids, a.queries).await?;
            anyhow::Ok((seed_s, stats))
        }
        .await;
        drop(pg);
        drop_schema(&a.database_url, &schema).await?;
        let (seed_s, stats) = res?;
        table(&mut md, "PostgreSQL", seed_s, &stats);
        for s in &stats {
            println!(
                "postgres {:<60} p50 {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms",
                s.name, s.p50, s.p95, s.max
            );
        }
    }
    let _ = writeln!(
        md,
        "\nMachine: {} logical CPUs, shared with other work while measured.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    std::fs::write(&a.out, md).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}
