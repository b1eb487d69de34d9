//! `xyn doctor`: checks what a node depends on and says what it found, one section per
//! concern (each a function returning a [`Section`], so sections can be added side by side).
//! Each section checks for real rather than reading version numbers; the sandbox section starts
//! the sandbox worker with its seal self-test, which seals itself exactly as for untrusted code
//! and then tries to escape.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};
use xyn_store::Store;

use crate::cli::{NatsArgs, StoreArgs};

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// The node's data directory (for the embedded store).
    #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One checked concern.
pub struct Section {
    pub name: &'static str,
    pub ok: bool,
    /// One line for people.
    pub line: String,
    pub detail: Value,
}

impl Section {
    fn new(name: &'static str, ok: bool, line: impl Into<String>, detail: Value) -> Self {
        Self {
            name,
            ok,
            line: line.into(),
            detail,
        }
    }
}

pub async fn run(args: DoctorArgs) -> Result<ExitCode> {
    let mut sections = Vec::new();
    // Read-only: doctor in a directory without a node creates nothing there.
    let db = args.data_dir.join("xyn.db");
    let no_node = args.store.database_url.is_none() && !db.exists();
    match crate::serve::open_store_read_only(&args.data_dir, &args.store).await {
        _ if no_node => sections.push(Section::new(
            "store",
            true,
            format!(
                "no node in {} yet (no database to check)",
                args.data_dir.display()
            ),
            json!({"path": db.display().to_string(), "exists": false}),
        )),
        Ok(opened) => {
            let store = opened.store.clone();
            sections.push(store_section(store.as_ref()).await);
            sections.push(migrations_section(store.as_ref()).await);
            sections.push(leases_section(store.as_ref()).await);
            sections.push(outbox_section(store.as_ref(), args.nats.nats_url.is_some()).await);
            opened.close();
        }
        Err(e) => sections.push(Section::new(
            "store",
            false,
            format!("{e:#}"),
            json!({"error": format!("{e:#}")}),
        )),
    }
    sections.push(nats_section(&args.nats).await);
    sections.push(sandbox_summary());
    let ok = sections.iter().all(|s| s.ok);
    if args.json {
        let v: serde_json::Map<String, Value> = sections
            .iter()
            .map(|s| {
                (
                    s.name.to_string(),
                    json!({"ok": s.ok, "summary": s.line, "detail": s.detail}),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": ok, "sections": v}))?
        );
    } else {
        for s in &sections {
            println!(
                "{:<10} {:<4} {}",
                s.name,
                if s.ok { "ok" } else { "FAIL" },
                s.line
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Which store, and whether it answers.
/// The sandbox: can its worker seal itself here (Landlock, seccomp), and does the seal hold?
pub fn sandbox_summary() -> Section {
    match sandbox_section() {
        Ok(checks) => {
            let ok = checks.iter().all(|c| c.ok);
            let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
            let line = if ok {
                format!("worker sealed; {} escape attempts refused", checks.len())
            } else {
                format!(
                    "not fully sealed ({}): untrusted actions are refused unless the node runs with --allow-weak-sandbox",
                    failed.join(", ")
                )
            };
            let detail: Vec<Value> = checks
                .iter()
                .map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail}))
                .collect();
            Section::new("sandbox", ok, line, Value::Array(detail))
        }
        Err(e) => Section::new(
            "sandbox",
            false,
            format!("the worker self-test did not run: {e:#}"),
            json!({"error": format!("{e:#}")}),
        ),
    }
}

/// One check: a name, whether it holds, and what was seen.
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

pub async fn store_section(store: &dyn Store) -> Section {
    match store.chain_head().await {
        Ok(head) => Section::new(
            "store",
            true,
            format!(
                "{} (log head seq {})",
                store.describe(),
                head.as_ref().map_or(0, |h| h.0)
            ),
            json!({"store": store.describe(), "head_seq": head.map(|h| h.0)}),
        ),
        Err(e) => Section::new(
            "store",
            false,
            format!("{}: {e}", store.describe()),
            json!({"store": store.describe(), "error": e.to_string()}),
        ),
    }
}

/// The schema version applied, against the newest this build knows.
pub async fn migrations_section(store: &dyn Store) -> Section {
    match store.schema_version().await {
        Ok((applied, known)) => Section::new(
            "migrations",
            applied == known,
            format!("{applied} of {known} applied"),
            json!({"applied": applied, "known": known}),
        ),
        Err(e) => Section::new(
            "migrations",
            false,
            e.to_string(),
            json!({"error": e.to_string()}),
        ),
    }
}

/// The shared run queue: queued, due, held and expired leases.
pub async fn leases_section(store: &dyn Store) -> Section {
    match store.queue_stats().await {
        Ok(q) => Section::new(
            "leases",
            true,
            format!(
                "{} runs queued, {} due, {} held by {} workers, {} expired leases",
                q.queued, q.due, q.held, q.owners, q.expired
            ),
            json!(q),
        ),
        Err(e) => Section::new(
            "leases",
            false,
            e.to_string(),
            json!({"error": e.to_string()}),
        ),
    }
}

/// How far the outbox dispatcher is behind.
pub async fn outbox_section(store: &dyn Store, publishing: bool) -> Section {
    match store.outbox_lag().await {
        Ok(l) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            let lag_ms = l
                .oldest_pending_at
                .map(|t| (now - t.as_micros()).max(0) / 1000);
            let line = match (publishing, lag_ms) {
                (_, None) => format!(
                    "nothing pending (published up to seq {})",
                    l.published_seq.unwrap_or(0)
                ),
                (true, Some(ms)) => format!(
                    "{} events in {} rows pending, oldest {ms} ms ago",
                    l.pending_events, l.pending_rows
                ),
                (false, Some(_)) => format!(
                    "{} events pending (no --nats-url: nothing publishes them)",
                    l.pending_events
                ),
            };
            Section::new(
                "outbox",
                true,
                line,
                json!({"lag_ms": lag_ms, "pending_rows": l.pending_rows,
                    "pending_events": l.pending_events, "published_seq": l.published_seq}),
            )
        }
        Err(e) => Section::new(
            "outbox",
            false,
            e.to_string(),
            json!({"error": e.to_string()}),
        ),
    }
}

/// Which NATS, whether it answers, and the event stream.
pub async fn nats_section(args: &NatsArgs) -> Section {
    let Some(url) = &args.nats_url else {
        return Section::new(
            "nats",
            true,
            "not configured (events are not published)",
            json!({"url": null}),
        );
    };
    let connect = async_nats::ConnectOptions::new()
        .name("xyn-doctor")
        .connection_timeout(Duration::from_secs(3))
        .connect(url.as_str());
    let client = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Section::new(
                "nats",
                false,
                format!("{url}: {e}"),
                json!({"url": url, "error": e.to_string()}),
            );
        }
        Err(_) => {
            return Section::new(
                "nats",
                false,
                format!("{url}: no answer within 5 s"),
                json!({"url": url, "error": "timeout"}),
            );
        }
    };
    let js = async_nats::jetstream::new(client);
    match js.get_stream(&args.nats_stream).await {
        Ok(mut s) => match s.info().await {
            Ok(info) => Section::new(
                "nats",
                true,
                format!(
                    "{url}, stream {} holds {} messages (last seq {})",
                    args.nats_stream, info.state.messages, info.state.last_sequence
                ),
                json!({"url": url, "stream": args.nats_stream, "messages": info.state.messages}),
            ),
            Err(e) => Section::new(
                "nats",
                false,
                format!("{url}: {e}"),
                json!({"url": url, "error": e.to_string()}),
            ),
        },
        Err(e) => Section::new(
            "nats",
            true,
            format!(
                "{url} reachable; stream {} not created yet ({e})",
                args.nats_stream
            ),
            json!({"url": url, "stream": args.nats_stream, "created": false}),
        ),
    }
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
