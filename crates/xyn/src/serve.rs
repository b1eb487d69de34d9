//! `xyn serve` (wiring of the node) and `xyn audit verify`.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use xyn_engine::{ClusterConfig, EnvSecrets, Node, NodeParts, SystemClock, UuidV7Ids};
use xyn_store::Store;
use xyn_store::blob::BlobStore;
use xyn_store::postgres::{PgConfig, PgStore};
use xyn_store::sqlite::{SqliteConfig, SqliteStore};

use crate::cli::{ServeArgs, StoreArgs};
use crate::config;

/// An open store, and the SQLite handle to close on the way out.
pub struct OpenStore {
    pub store: Arc<dyn Store>,
    sqlite: Option<Arc<SqliteStore>>,
}

impl OpenStore {
    pub fn close(&self) {
        if let Some(s) = &self.sqlite {
            s.close();
        }
    }

    pub fn is_shared(&self) -> bool {
        self.sqlite.is_none()
    }
}

/// Runs `f` on the node's store for a CLI command made while the node is stopped: a SQLite
/// data dir is locked first (refused, naming the running node's pid, while a node serves it)
/// unless the caller holds the lock already (`locked`); the store is opened on a runtime of
/// its own and closed after `f`, whatever `f` returns.
pub fn with_offline_store<T>(
    data_dir: &Path,
    args: &StoreArgs,
    locked: bool,
    f: impl AsyncFnOnce(Arc<dyn Store>) -> Result<T>,
) -> Result<T> {
    let _lock = match (&args.database_url, locked) {
        (None, false) => Some(crate::datadir::DataDirLock::acquire(data_dir)?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let opened = open_store(data_dir, args, true).await?;
        let r = f(opened.store.clone()).await;
        opened.close();
        r
    })
}

/// Opens PostgreSQL when a database URL is given (applying migrations), else the SQLite
/// database in `data_dir`.
pub async fn open_store(data_dir: &Path, args: &StoreArgs, sqlite_full: bool) -> Result<OpenStore> {
    match &args.database_url {
        Some(url) => {
            let pg = PgStore::open(PgConfig::new(url.clone()))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("cannot open the store")?;
            Ok(OpenStore {
                store: Arc::new(pg),
                sqlite: None,
            })
        }
        None => {
            let db = data_dir.join("xyn.db");
            let s = SqliteStore::open(
                &db,
                SqliteConfig {
                    synchronous_full: sqlite_full,
                    ..Default::default()
                },
            )
            .with_context(|| format!("cannot open the store at {}", db.display()))?;
            let s = Arc::new(s);
            Ok(OpenStore {
                store: s.clone(),
                sqlite: Some(s),
            })
        }
    }
}

/// Opens the store for a CLI command that only reads: PostgreSQL as usual; SQLite read-only
/// (no directory or empty database is created, no migration applied, no write possible).
pub async fn open_store_read_only(data_dir: &Path, args: &StoreArgs) -> Result<OpenStore> {
    if args.database_url.is_some() {
        return open_store(data_dir, args, true).await;
    }
    let db = data_dir.join("xyn.db");
    let s = SqliteStore::open_read_only(&db, SqliteConfig::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!(
                "cannot read the store at {} (set --data-dir, or --database-url)",
                db.display()
            )
        })?;
    let s = Arc::new(s);
    Ok(OpenStore {
        store: s.clone(),
        sqlite: Some(s),
    })
}

/// A name for this process in lease rows: host, pid and a random suffix.
fn owner_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "xyn".into());
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &rand[..8])
}

/// Logs go to stdout: human-readable when it is a terminal, JSON lines otherwise (for log
/// shippers), unless `--log-format` / `XYN_LOG_FORMAT` says which.
fn init_logging(format: Option<&str>) {
    use std::io::IsTerminal;
    let human = match format {
        Some(f) => f == "human" || f == "text",
        None => std::io::stdout().is_terminal(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("XYN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    if human {
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
    init_logging(args.log_format.as_deref());
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

async fn run_node(args: ServeArgs, mut settings: config::Settings) -> Result<ExitCode> {
    xyn_actions::install_crypto_provider();
    let role = args.role.as_str();
    anyhow::ensure!(
        role == "all" || args.store.database_url.is_some(),
        "--role {role} needs a shared store: pass --database-url postgres://…"
    );
    let lease_ms = xyn_core::duration::parse_duration_ms(&args.lease)
        .with_context(|| format!("--lease {:?} is not a duration like 30s", args.lease))?;
    // One process per SQLite data directory, locked before anything in it is read (on a
    // shared store, leases keep processes apart instead).
    let _lock = match args.store.database_url {
        None => Some(crate::datadir::DataDirLock::acquire(&args.data_dir)?),
        Some(_) => None,
    };
    let opened = open_store(&args.data_dir, &args.store, settings.sqlite_full).await?;
    let store = opened.store.clone();
    // A pack install a crash interrupted is finished or undone before actions are loaded.
    crate::pack_install::recover(&args.data_dir, store.as_ref()).await?;
    if opened.is_shared() {
        settings.node.cluster = Some(ClusterConfig {
            owner: owner_name(),
            lease_ms: lease_ms.max(100),
            execute: role != "api",
        });
    }
    // Every commit's events are announced to live views (SSE, the UI's event console).
    let (mut notifying, feed) = xyn_store::notify::NotifyingStore::new(store.clone(), 1024);
    if let Some(m) = &settings.web.metrics {
        notifying = notifying.with_observer(Arc::new(m.clone()));
    }
    let blobs = BlobStore::open(args.data_dir.join("artifacts"))
        .context("cannot open the artifact store")?;
    let http = xyn_actions::http_client();
    let mut agents_cfg = xyn_agents::AgentsConfig::from_env(|k| std::env::var(k).ok());
    agents_cfg.fallback_cassette = settings.fallback_cassette.clone();
    let agents =
        xyn_agents::Router::new(&agents_cfg, http.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Sandboxed actions: installed packages run in sealed worker processes.
    // One egress for every request made on behalf of others (guests, http.call): it
    // learns the node's listen addresses once the listener is bound.
    let egress = Arc::new(xyn_actions::net::Egress::new());
    let sandbox = crate::action_cmd::host(
        &args.data_dir,
        args.allow_weak_sandbox,
        settings.sandbox_limits.clone(),
        settings.sandbox_pool,
        xyn_sandbox::caps::http::HttpExecutor::new(egress.clone(), settings.sandbox_allow_node),
    )?;
    let mut container_settings = settings.containers.clone();
    container_settings.node_label = std::fs::canonicalize(&args.data_dir)
        .unwrap_or_else(|_| args.data_dir.clone())
        .display()
        .to_string();
    let containers = xyn_containers::Containers::new(container_settings);
    // A node that runs containers has workcells: removed when their run ends, listed and
    // removed through `/api/internal/workcells`, swept when their run ended elsewhere.
    let runs_containers = !containers.settings().images.is_empty();
    if runs_containers {
        // Containers a killed node left behind are removed before any step runs.
        match tokio::time::timeout(Duration::from_secs(30), containers.reap()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                removed = n,
                "removed containers left by an earlier run of this node"
            ),
            Ok(Err(e)) => {
                tracing::warn!(code = %e.code, error = %e.message, "cannot reap leftover containers")
            }
            Err(_) => tracing::warn!("reaping leftover containers timed out"),
        }
    }
    // `ssh.run` with the node's `[actions.ssh]`; its known_hosts file defaults to the data
    // directory.
    let mut ssh = settings.ssh.clone();
    if ssh.known_hosts.is_none() {
        ssh.known_hosts = Some(args.data_dir.join("ssh").join("known_hosts"));
    }
    let mut actions = node_actions(
        &args.data_dir,
        settings.git_clone_sources.clone(),
        containers.clone(),
        ssh,
    )?;
    let not_packages: std::collections::HashSet<String> = actions.names().into_iter().collect();
    for (name, e) in xyn_sandbox::action::register_installed(&sandbox, &mut actions) {
        tracing::error!(action = %name, code = %e.code, error = %e.message, "sandboxed action not registered");
        eprintln!("xyn: action {name} not registered: {}", e.message);
    }
    // The packages just registered, for the watch that keeps them in line while the node runs.
    let registered = crate::action_watch::registered_at_start(
        &sandbox,
        actions
            .names()
            .into_iter()
            .filter(|n| !not_packages.contains(n)),
    );
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
    // The secret store: encrypted in the node's store, keyed by the data dir's key file or
    // by XYN_SECRET_PASSPHRASE; a wrong key stops the node here, before it serves anything.
    let local_secrets = Arc::new(xyn_secrets::local::LocalSecretStore::new(
        store.clone(),
        xyn_secrets::local::KeySource::from_env(
            &args.data_dir,
            std::env::var(xyn_secrets::local::PASSPHRASE_VAR).ok(),
        ),
    ));
    local_secrets
        .unlock()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot unlock the secret store")?;
    let secret_store = xyn_secrets::Secrets::new(
        local_secrets,
        Arc::new(xyn_secrets::env::EnvSecretStore::from_process()),
    );
    let node = Node::start(NodeParts {
        store: Arc::new(notifying),
        blobs,
        clock: Arc::new(SystemClock),
        ids: Arc::new(UuidV7Ids),
        secrets: Arc::new(EnvSecrets),
        secret_store: Some(secret_store),
        actions,
        agents,
        http,
        egress: egress.clone(),
        config: settings.node.clone(),
        teardown: runs_containers.then(|| {
            Arc::new(crate::workcells::Teardown(containers.clone()))
                as Arc<dyn xyn_engine::RunTeardown>
        }),
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Packages installed while the node runs are registered live (and removed ones dropped).
    let _action_watch = match crate::action_watch::watch(node.clone(), sandbox.clone(), registered)
    {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the installed actions; installs are seen after a restart");
            None
        }
    };
    if let Some(src) = &settings.source {
        tracing::info!(config = %src.display(), "configuration loaded");
    }
    if let Some(c) = &settings.fallback_cassette {
        tracing::info!(cassette = %c.display(), "agent tasks whose provider has no API key are answered from this cassette");
    }
    let dispatcher = match &args.nats.nats_url {
        Some(url) => Some(
            crate::nats::start(&node, url, &args.nats)
                .await
                .with_context(|| format!("cannot start the NATS publisher ({url})"))?,
        ),
        None => None,
    };
    let retention = match settings.retention_ms {
        Some(window) if role != "worker" => Some(crate::retention::spawn(
            store.clone(),
            args.data_dir.clone(),
            window,
            args.nats.nats_url.is_some(),
            Duration::from_secs(3600),
        )),
        _ => None,
    };
    if role == "worker" {
        let owner = node.cluster().map(|c| c.owner.clone()).unwrap_or_default();
        tracing::info!(owner = %owner, store = %store.describe(), lease_ms, "xyn worker ready");
        eprintln!("xyn worker {owner} ready (store {})", store.describe());
        shutdown_signal().await;
        tracing::info!("shutting down");
        node.shutdown();
        drop(dispatcher);
        tokio::time::sleep(Duration::from_millis(200)).await;
        opened.close();
        return Ok(ExitCode::SUCCESS);
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
    let listen = args
        .listen
        .clone()
        .filter(|l| !l.trim().is_empty())
        .or_else(|| settings.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let loopback = listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or_else(|_| listen.starts_with("localhost:"));
    anyhow::ensure!(
        loopback || auth_on || args.insecure_open,
        "refusing to listen on {} without auth: set XYN_API_TOKEN (or a tokens file), or pass --insecure-open",
        listen
    );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let https = crate::tls_cmd::start(&args.tls, &settings.tls, &args.data_dir)?;
    let scheme = if https.is_some() { "https" } else { "http" };
    let mut own = vec![addr];
    if let Some(h) = &https
        && let Some(r) = &h.redirect
    {
        let l = tokio::net::TcpListener::bind(r)
            .await
            .with_context(|| format!("cannot listen on {r}"))?;
        let raddr = l.local_addr()?;
        own.push(raddr);
        tracing::info!(url = %format!("http://{raddr}"), "redirecting plain HTTP to HTTPS");
        eprintln!(
            "xyn redirecting http://{raddr} to https (port {})",
            addr.port()
        );
        tokio::spawn(xyn_web::redirect::serve(
            l,
            addr.port(),
            h.tokens.clone(),
            shutdown_signal(),
        ));
    }
    egress.set_listeners(own);
    tracing::info!(url = %format!("{scheme}://{addr}"), data_dir = %args.data_dir.display(), store = %store.describe(),
        auth = if auth_on { "tokens" } else { "open" }, hooks = settings.web.hooks.len(), "xyn listening");
    eprintln!(
        "xyn listening on {scheme}://{addr} (data in {})",
        args.data_dir.display()
    );

    let mut web = settings.web;
    web.outbox_dispatched = dispatcher.is_some();
    web.cursor_key = Some(crate::datadir::cursor_key(&args.data_dir)?);
    let packs = crate::pack_live::LivePacks::new(
        crate::pack_install::Live {
            node: node.clone(),
            sandbox: sandbox.clone(),
            rt: tokio::runtime::Handle::current(),
        },
        args.data_dir.clone(),
    );
    let sweep =
        runs_containers.then(|| crate::workcells::spawn_sweep(containers.clone(), node.clone()));
    let workcells = runs_containers.then(|| {
        Arc::new(crate::workcells::LiveWorkcells(containers.clone()))
            as Arc<dyn xyn_web::routes::internal::WorkcellService>
    });
    let state =
        xyn_web::AppState::with_services(node.clone(), feed, web, Some(Arc::new(packs)), workcells);
    xyn_web::serve_with(
        listener,
        state,
        https.map(|h| h.listener),
        shutdown_signal(),
    )
    .await?;
    tracing::info!("shutting down");
    node.shutdown();
    drop(dispatcher);
    if let Some(r) = retention {
        r.abort();
    }
    if let Some(s) = sweep {
        s.abort();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    opened.close();
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

/// The actions every node has: the built-ins, `container.exec` and the Git actions over the
/// repositories in `<data-dir>/repos`. (Validation uses the same list, so a blueprint valid for the CLI is
/// valid for the node.)
pub fn node_actions(
    data_dir: &Path,
    clone_sources: Vec<std::path::PathBuf>,
    containers: std::sync::Arc<xyn_containers::Containers>,
    ssh: xyn_actions::ssh::SshSettings,
) -> Result<xyn_actions::Registry> {
    let mut r = xyn_actions::Registry::with_builtins();
    if let Err(e) = r.register(std::sync::Arc::new(xyn_containers::ContainerExec {
        containers,
    })) {
        tracing::error!(error = %e, "container.exec refused");
    }
    let repos = std::sync::Arc::new(
        xyn_git::Repos::new(data_dir.join("repos")).with_clone_sources(clone_sources),
    );
    for a in xyn_git::actions(repos) {
        if let Err(e) = r.register(a) {
            tracing::error!(error = %e, "git action refused");
        }
    }
    let ssh_run =
        xyn_actions::ssh::SshRun::new(ssh).map_err(|e| anyhow::anyhow!("[actions.ssh]: {e}"))?;
    r.register(std::sync::Arc::new(ssh_run))
        .map_err(|e| anyhow::anyhow!("ssh.run: {e}"))?;
    Ok(r)
}

/// The names of the actions a node on `data_dir` has: the built-in ones and the packages
/// installed there (read only; nothing is created). What offline checks validate against.
pub fn known_actions(data_dir: &Path) -> Result<std::collections::HashSet<String>> {
    let builtin = node_actions(
        data_dir,
        Vec::new(),
        xyn_containers::Containers::new(Default::default()),
        Default::default(),
    )?;
    let mut names: std::collections::HashSet<String> = builtin.names().into_iter().collect();
    names.extend(
        xyn_sandbox::install::Layout::new(data_dir)
            .installed()
            .into_iter()
            .filter_map(|r| r.ok().map(|(m, _)| m.name)),
    );
    Ok(names)
}

/// `xyn audit verify`: opens the store read-only (on SQLite) and
/// walks the log; after retention, from the latest checkpoint, whose signature must verify.
pub async fn audit_verify(
    data_dir: &Path,
    store_args: &StoreArgs,
    checkpoint_key: Option<&str>,
    as_json: bool,
) -> Result<ExitCode> {
    let opened = open_store_read_only(data_dir, store_args).await?;
    let store = opened.store.clone();
    let mut report = store
        .verify_chain()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let checkpoint = store
        .checkpoint()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    opened.close();
    let mut cp_line = None;
    if let Some(cp) = &checkpoint {
        let key = match checkpoint_key {
            Some(k) => Some(k.to_string()),
            None => crate::retention::public_key_in(data_dir)?,
        };
        match crate::retention::verify_checkpoint(cp, key.as_deref()) {
            Ok(()) => {
                cp_line = Some(format!(
                    "from the signed checkpoint at seq {} ({})",
                    cp.seq, cp.created_at
                ))
            }
            Err(why) => {
                report.ok = false;
                report.broken_seq.get_or_insert(cp.seq);
                report.reason = Some(format!("the retention checkpoint at seq {}: {why}", cp.seq));
            }
        }
    }
    if as_json {
        let mut v = json!(report);
        v["checkpoint"] = json!(checkpoint);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if report.ok {
        println!(
            "audit: OK — {} events, seq {}..{}, head {}{}",
            report.events_checked,
            report.first_seq.unwrap_or(0),
            report.last_seq.unwrap_or(0),
            report.head_hash.as_deref().unwrap_or("-"),
            cp_line.map(|l| format!(", {l}")).unwrap_or_default()
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
