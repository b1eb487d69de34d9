//! `xyn serve` (wiring of the node) and `xyn audit verify`.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use xyn_engine::{EnvSecrets, Node, NodeParts, SystemClock, UuidV7Ids};
use xyn_store::Store;
use xyn_store::blob::BlobStore;
use xyn_store::sqlite::{SqliteConfig, SqliteStore};

use crate::cli::ServeArgs;
use crate::config;

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("XYN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    if format == "text" {
        let _ = builder.try_init();
    } else {
        let _ = builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init();
    }
}

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    init_logging(&args.log_format);
    let settings = config::load(args.config.as_deref())?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_node(args, settings))
}

async fn run_node(args: ServeArgs, settings: config::Settings) -> Result<ExitCode> {
    xyn_actions::install_crypto_provider();
    let db = args.data_dir.join("xyn.db");
    let store = SqliteStore::open(
        &db,
        SqliteConfig {
            synchronous_full: settings.sqlite_full,
            ..Default::default()
        },
    )
    .with_context(|| format!("cannot open the store at {}", db.display()))?;
    let store: Arc<SqliteStore> = Arc::new(store);
    // Every commit's events are announced to live views (SSE, the UI's event console).
    let (notifying, feed) = xyn_store::notify::NotifyingStore::new(store.clone(), 1024);
    let blobs = BlobStore::open(args.data_dir.join("artifacts"))
        .context("cannot open the artifact store")?;
    let http = xyn_actions::http_client();
    let mut agents_cfg = xyn_agents::AgentsConfig::from_env(|k| std::env::var(k).ok());
    agents_cfg.fallback_cassette = settings.fallback_cassette.clone();
    let agents =
        xyn_agents::Router::new(&agents_cfg, http.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Sandboxed actions: installed packages run in sealed worker processes.
    let sandbox = crate::action_cmd::host(
        &args.data_dir,
        args.allow_weak_sandbox,
        settings.sandbox_limits.clone(),
        settings.sandbox_pool,
    )?;
    let mut actions = xyn_actions::Registry::with_builtins();
    for (name, e) in xyn_sandbox::action::register_installed(&sandbox, &mut actions) {
        tracing::error!(action = %name, code = %e.code, error = %e.message, "sandboxed action not registered");
        eprintln!("xyn: action {name} not registered: {}", e.message);
    }
    match sandbox.pool.warm_up().await {
        Ok(seal) => {
            tracing::info!(landlock = %seal.landlock, landlock_abi = ?seal.landlock_abi, seccomp = seal.seccomp,
                weak = !seal.sealed(), pool_size = settings.sandbox_pool, "sandbox worker ready");
            if !seal.sealed() {
                let why = seal.notes.join("; ");
                tracing::warn!(landlock = %seal.landlock, seccomp = seal.seccomp, notes = %why,
                    "the sandbox worker is not fully sealed; untrusted actions run anyway (--allow-weak-sandbox)");
                eprintln!(
                    "xyn: WARNING: the sandbox worker is not fully sealed (landlock: {}, seccomp: {}; {why}); untrusted actions run anyway because of --allow-weak-sandbox",
                    seal.landlock, seal.seccomp
                );
            }
        }
        Err(e) if e.code == xyn_sandbox::codes::SANDBOX_WEAK => {
            tracing::error!(code = %e.code, error = %e.message, "the sandbox worker cannot be sealed; untrusted actions are refused (start with --allow-weak-sandbox to run them anyway)");
            eprintln!(
                "xyn: WARNING: {}; untrusted actions are refused (start with --allow-weak-sandbox to run them anyway)",
                e.message
            );
        }
        Err(e) => {
            tracing::error!(code = %e.code, error = %e.message, "the sandbox worker did not start");
            eprintln!(
                "xyn: WARNING: the sandbox worker did not start: {}",
                e.message
            );
        }
    }
    if args.allow_weak_sandbox {
        tracing::warn!(
            "--allow-weak-sandbox: untrusted actions run even where the worker cannot be sealed"
        );
    }
    let node = Node::start(NodeParts {
        store: Arc::new(notifying),
        blobs,
        clock: Arc::new(SystemClock),
        ids: Arc::new(UuidV7Ids),
        secrets: Arc::new(EnvSecrets),
        actions,
        agents,
        http,
        config: settings.node.clone(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    if let Some(src) = &settings.source {
        tracing::info!(config = %src.display(), "configuration loaded");
    }
    if let Some(c) = &settings.fallback_cassette {
        tracing::info!(cassette = %c.display(), "agent tasks whose provider has no API key are answered from this cassette");
    }
    if args.blueprints.is_dir() {
        for (file, res) in node.apply_dir(&args.blueprints, "system:startup").await {
            match res {
                Ok(o) => {
                    tracing::info!(file, blueprint_id = %o.version.blueprint_id, version = o.version.version,
                    created = o.created, "blueprint applied")
                }
                Err(e) => {
                    tracing::error!(file, code = e.code, error = %e.message, details = %e.details.clone().unwrap_or_default(), "blueprint not applied");
                    eprintln!("xyn: blueprint {file} not applied: {}", e.message);
                }
            }
        }
    } else {
        tracing::info!(dir = %args.blueprints.display(), "no blueprints directory");
    }

    let auth_on = settings.web.auth.enabled();
    let loopback = args
        .listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or_else(|_| args.listen.starts_with("localhost:"));
    anyhow::ensure!(
        loopback || auth_on || args.insecure_open,
        "refusing to listen on {} without auth: set XYN_API_TOKEN (or a tokens file), or pass --insecure-open",
        args.listen
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(url = %format!("http://{addr}"), data_dir = %args.data_dir.display(), store = %store.describe(),
        auth = if auth_on { "tokens" } else { "open" }, hooks = settings.web.hooks.len(), "xyn listening");
    eprintln!(
        "xyn listening on http://{addr} (data in {})",
        args.data_dir.display()
    );

    let state = xyn_web::AppState::new(node.clone(), feed, settings.web);
    xyn_web::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("shutting down");
    node.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.close();
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `xyn audit verify`: opens the store (migrations are a no-op on a current database) and
/// walks the log.
pub async fn audit_verify(data_dir: &Path, as_json: bool) -> Result<ExitCode> {
    let db = data_dir.join("xyn.db");
    anyhow::ensure!(
        db.exists(),
        "no Xyn database at {} (set --data-dir)",
        db.display()
    );
    let store = SqliteStore::open(&db, SqliteConfig::default())
        .with_context(|| format!("cannot open {}", db.display()))?;
    let report = store
        .verify_chain()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.close();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!(report))?);
    } else if report.ok {
        println!(
            "audit: OK — {} events, seq {}..{}, head {}",
            report.events_checked,
            report.first_seq.unwrap_or(0),
            report.last_seq.unwrap_or(0),
            report.head_hash.as_deref().unwrap_or("-")
        );
    } else {
        println!(
            "audit: BROKEN at seq {} — {} ({} events verified before it)",
            report.broken_seq.unwrap_or(0),
            report.reason.as_deref().unwrap_or("unknown"),
            report.events_checked
        );
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
