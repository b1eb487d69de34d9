//! Command-line interface.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::client::Client;
use crate::output;

/// Xyn turns events into runs of blueprints, with an audit trail you can verify.
///
/// `xyn serve` runs a node: the API and web UI, the engine that runs blueprints (agent tasks,
/// sandboxed actions, approval gates, jq transforms) and its workers, with every state change
/// in one hash-chained event log (SQLite in --data-dir, or PostgreSQL with --database-url).
///
/// The other commands talk to a running node over its API. They find it at --url or
/// XYN_URL; when neither is set, at the `[web] listen` address of ./xyn.toml (or --config),
/// the file `xyn serve` reads; else at http://127.0.0.1:8080. On a node with auth on, pass
/// --token or set XYN_API_TOKEN. `blueprint validate`, `audit verify`, `doctor` and the
/// `action`, `key`, `trust` and `pack` commands work on local files and the data directory.
///
/// Logs are human-readable on a terminal and JSON lines otherwise (XYN_LOG_FORMAT or
/// --log-format overrides; XYN_LOG sets the level filter, e.g. `info,xyn_engine=debug`).
#[derive(Parser, Debug)]
// `--version` is on the top level only: `blueprint show --version N` names a blueprint version.
#[command(name = "xyn", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where a running node is, and how to print answers.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// Base URL of the node's API [default: `[web] listen` of xyn.toml, else
    /// http://127.0.0.1:8080].
    #[arg(long, env = "XYN_URL", global = true)]
    pub url: Option<String>,
    /// Config file whose `[web] listen` locates the node [default: ./xyn.toml].
    #[arg(long, env = "XYN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print the API's JSON instead of a human summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// API token for a node with auth on (sent as `Authorization: Bearer`).
    #[arg(long, env = "XYN_API_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: API, engine and workers in one process on embedded SQLite, or one role of
    /// a cluster on PostgreSQL (--database-url, --role).
    Serve(Box<ServeArgs>),
    /// TLS helpers: a self-signed certificate for development.
    #[command(subcommand)]
    Tls(crate::tls_cmd::TlsCmd),
    /// Emit, list and show events.
    #[command(subcommand)]
    Event(EventCmd),
    /// Validate, apply and inspect blueprints.
    #[command(subcommand)]
    Blueprint(BlueprintCmd),
    /// Start, inspect and steer runs.
    #[command(subcommand)]
    Run(RunCmd),
    /// Find runs and events: by the start of a short id, a whole id, an input value, a
    /// blueprint id or an event name, narrowed by status, blueprint and a time window.
    Search(crate::run_ops::SearchArgs),
    /// Check the event log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Install, list and run sandboxed action packages (wasm, Lua, JavaScript).
    #[command(subcommand)]
    Action(ActionCmd),
    /// Web apps in Lua or JavaScript: new, dev (serve at / with reload), test.
    #[command(subcommand)]
    App(crate::app_cmd::AppCmd),
    /// Ed25519 signing keys for packs.
    #[command(subcommand)]
    Key(crate::pack_cmd::KeyCmd),
    /// The node's trusted pack publishers.
    #[command(subcommand)]
    Trust(crate::pack_cmd::TrustCmd),
    /// Build, sign, verify, inspect, install, list and remove packs.
    #[command(subcommand)]
    Pack(crate::pack_cmd::PackCmd),
    /// Operation specs: canonical formatting, lint, conformance check, bounded verification.
    #[command(subcommand)]
    Spec(crate::spec_cmd::SpecCmd),
    /// Run every spec's examples and generated cases under DIR (default: .).
    Test {
        /// Directory to search for `*.xynspec.json`.
        dir: Option<std::path::PathBuf>,
        /// The seed for generated cases (printed with every property failure).
        #[arg(long)]
        seed: Option<u64>,
        /// Generated cases per operation.
        #[arg(long, default_value_t = 200)]
        cases: usize,
    },
    /// Check the store, migrations, leases, outbox lag, NATS and the sandbox protections.
    Doctor(crate::doctor::DoctorArgs),
    /// Remove events and footprints older than a window (keeping a signed checkpoint).
    #[command(subcommand)]
    Retention(RetentionCmd),
    /// Copy a node's data directory (SQLite) while it runs: a consistent snapshot of the
    /// database, the artifacts, packs, actions, keys and trust store, with checksums.
    Backup {
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// A new (or empty) directory for the backup.
        #[arg(long)]
        to: PathBuf,
        /// Copy the secret store's key file (secrets.key) too. Without it the backup holds
        /// secrets as ciphertext only, and the key is put back by hand after a restore.
        #[arg(long)]
        with_secret_key: bool,
    },
    /// Restore a backup into a new data directory (checksums and database integrity are
    /// checked first; nothing is written when they fail).
    Restore {
        /// The backup directory (from `xyn backup`).
        from: PathBuf,
        /// The new data directory (must not exist or be empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// The encrypted secret store: set, get, list, rm, rotate-master.
    #[command(subcommand)]
    Secret(crate::secret_cmd::SecretCmd),
    /// Service level objectives as code (OpenSLO v1).
    #[command(subcommand)]
    Slo(crate::slo_cmd::SloCmd),
    /// The sandbox worker process (started by the node, not by hand).
    #[command(hide = true, disable_help_flag = true)]
    SandboxWorker {
        /// The worker's own arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RetentionCmd {
    /// One retention pass now.
    Run {
        /// Keep what is younger than this (e.g. 7d).
        #[arg(long)]
        older_than: String,
        /// Also remove events the outbox has not published yet.
        #[arg(long)]
        include_unpublished: bool,
        /// The node's data directory (its store, and the checkpoint key).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a human summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ActionCmd {
    /// Install an action package (a directory with xyn-action.toml) into the data dir.
    Install {
        /// The package directory (with xyn-action.toml).
        dir: PathBuf,
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
    },
    /// List the installed action packages.
    List {
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// Print JSON instead of a human summary.
        #[arg(long)]
        json: bool,
    },
    /// Run an installed action in the sandbox worker. Prints the output JSON and exits 0,
    /// or prints the stable error code (e.g. budget.timeout, capability.denied) and exits 1.
    Run {
        /// The installed action's name.
        name: String,
        /// The input, a JSON value.
        #[arg(long, default_value = "{}")]
        input: String,
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// Run even when the kernel cannot seal the worker (no Landlock).
        #[arg(long, env = "XYN_ALLOW_WEAK_SANDBOX")]
        allow_weak_sandbox: bool,
        /// Configuration file whose [sandbox] section sets the deployment's limits
        /// (default: ./xyn.toml when it exists).
        #[arg(long, env = "XYN_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on [default: `[web] listen` in xyn.toml, else 127.0.0.1:8080].
    #[arg(long, env = "XYN_LISTEN")]
    pub listen: Option<String>,
    /// Where the database and artifacts live.
    #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
    pub data_dir: PathBuf,
    /// Blueprints applied at start (every *.yaml, *.yml, *.json).
    #[arg(long, env = "XYN_BLUEPRINTS_DIR", default_value = "./blueprints")]
    pub blueprints: PathBuf,
    /// Configuration file (default: ./xyn.toml when it exists).
    #[arg(long, env = "XYN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stdout: `human` (also `text`) or `json` [default: human when stdout is
    /// a terminal, JSON lines otherwise].
    #[arg(long, env = "XYN_LOG_FORMAT", value_parser = ["json", "human", "text"])]
    pub log_format: Option<String>,
    /// Run sandboxed actions even when the kernel cannot seal their worker (no Landlock).
    #[arg(long, env = "XYN_ALLOW_WEAK_SANDBOX")]
    pub allow_weak_sandbox: bool,
    /// Allow listening on a non-loopback address with no auth configured (not recommended).
    #[arg(long)]
    pub insecure_open: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    /// What this process does: `all` (API and workers), `api` (API, intake, cron; no run
    /// execution) or `worker` (executes runs claimed from the shared store; no API).
    /// `api` and `worker` need --database-url.
    #[arg(long, env = "XYN_ROLE", default_value = "all", value_parser = ["all", "api", "worker"])]
    pub role: String,
    /// How long a worker's lease on a run lives without a heartbeat (e.g. 30s).
    #[arg(long, env = "XYN_LEASE", default_value = "30s")]
    pub lease: String,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub tls: crate::tls_cmd::TlsArgs,
}

/// Which store to open.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// A shared PostgreSQL store (`postgres://user:password@host:port/db`) instead of the
    /// embedded SQLite database in --data-dir.
    #[arg(long, env = "XYN_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// Publishing events to NATS JetStream, and NATS subjects as triggers.
#[derive(Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS server (`nats://127.0.0.1:4222`): events are published to JetStream from the outbox.
    #[arg(long, env = "XYN_NATS_URL")]
    pub nats_url: Option<String>,
    /// The JetStream stream events are published to (created when missing).
    #[arg(long, env = "XYN_NATS_STREAM", default_value = "XYN_EVENTS")]
    pub nats_stream: String,
    /// Subject prefix: an event goes to `<prefix>.<event_name>`.
    #[arg(long, env = "XYN_NATS_SUBJECT_PREFIX", default_value = "xyn.events")]
    pub nats_subject_prefix: String,
}

#[derive(Subcommand, Debug)]
pub enum EventCmd {
    /// Emit an event; prints it once it is durable.
    Emit {
        /// Event name, e.g. checkmk.alert.
        name: String,
        /// Event data, a JSON object.
        #[arg(long, default_value = "{}")]
        data: String,
        /// What the event is about, as TYPE:ID.
        #[arg(long)]
        resource: Option<String>,
        /// Correlation id to carry (default: a new one).
        #[arg(long)]
        correlation_id: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one event: its data, run, step and resource.
    Show {
        /// The event's id.
        event_id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List events, newest first.
    List {
        /// Only this name (or pattern ending in .* / .**).
        #[arg(long)]
        name: Option<String>,
        /// Only events of this run.
        #[arg(long)]
        run: Option<String>,
        /// Most events to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub enum BlueprintCmd {
    /// Check blueprint files; reports every problem with its path and code (no node needed).
    Validate {
        /// Blueprint files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The node's data directory: its installed action packages count as known actions
        /// (read only).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply a blueprint file to the node (a new version when it changed).
    Apply {
        /// The blueprint file (YAML or JSON).
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// List blueprints (latest versions).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Switch a blueprint's trigger off: its events, NATS messages and cron slots start no
    /// runs until it is enabled again (`run start` still starts one by hand).
    Disable {
        /// The blueprint's id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Switch a blueprint's trigger back on (cron slots missed while it was off do not fire).
    Enable {
        /// The blueprint's id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one blueprint version.
    Show {
        /// The blueprint's id.
        id: String,
        /// This version (default: the latest).
        #[arg(long)]
        version: Option<i64>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunCmd {
    /// Start a run of a blueprint by hand.
    Start {
        /// Blueprint id, optionally @version.
        blueprint: String,
        /// Inputs, a JSON object.
        #[arg(long, default_value = "{}")]
        inputs: String,
        /// A name for the run.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List runs, newest first.
    List {
        /// Only these statuses, comma-separated: created, running, waiting (held at a gate
        /// until someone decides), completed, failed, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this blueprint id.
        #[arg(long)]
        blueprint: Option<String>,
        /// Most runs to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a run with its steps, timings and artifacts.
    Show {
        /// The run's id, or a unique start of its short id (the eight digits `run list` shows).
        run_id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve a waiting gate.
    Approve {
        /// The run's id, or a unique start of its short id (the eight digits `run list` shows).
        run_id: String,
        /// The gate's step id (its name in the blueprint).
        #[arg(long)]
        step: String,
        /// A comment recorded with the decision.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Reject a waiting gate.
    Reject {
        /// The run's id, or a unique start of its short id (the eight digits `run list` shows).
        run_id: String,
        /// The gate's step id (its name in the blueprint).
        #[arg(long)]
        step: String,
        /// A comment recorded with the decision.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Retry a failed run from its failed step: a new attempt of that step in the same run
    /// (earlier attempts stay in the log).
    Retry {
        /// The run's id.
        run_id: String,
        /// The failed step, by id or blueprint name (default: the step that failed).
        #[arg(long)]
        step: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Start a run again as a new run of the same blueprint version, linked to the old one.
    Rerun {
        /// The run's id.
        run_id: String,
        /// The new run's inputs, a JSON object (default: the old run's inputs).
        #[arg(long)]
        input: Option<String>,
        /// A name for the new run (default: the old run's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Follow a run live: one line per step as it changes, until the run ends (exit 0 when
    /// it completed, 1 when it failed or was cancelled).
    Watch {
        /// The run's id.
        run_id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a run that has not finished.
    Cancel {
        /// The run's id, or a unique start of its short id (the eight digits `run list` shows).
        run_id: String,
        /// Why the run is cancelled (recorded in the event log).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Walk the whole event log and check its hash chain. Exit 0 when intact, 1 when not.
    Verify {
        /// The node's data directory (opened read-only; the node may keep running).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Public key (hex) that retention checkpoints must be signed with (default: the
        /// key in the data directory, when there is one).
        #[arg(long, env = "XYN_CHECKPOINT_PUBLIC_KEY")]
        checkpoint_key: Option<String>,
        /// Print JSON instead of a human summary.
        #[arg(long)]
        json: bool,
    },
}

fn parse_object(what: &str, s: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(s).with_context(|| format!("{what} is not valid JSON"))?;
    anyhow::ensure!(v.is_object(), "{what} must be a JSON object");
    Ok(v)
}

/// Who the CLI acts as (`X-Actor`): `cli:$USER`, or, when `$USER` is unset or empty (cron,
/// containers, systemd units), the name of the process's uid.
fn actor() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(user_of_uid);
    format!("cli:{user}")
}

/// The name of the uid this process runs as, from /etc/passwd, or `uid:<n>`. The uid is the
/// owner of `/proc/self` (no `libc` call, the workspace forbids `unsafe`); the passwd file is
/// parsed by hand because it is seven colon-separated fields and a crate would add nothing.
fn user_of_uid() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    user_in_passwd(&passwd, uid).unwrap_or_else(|| format!("uid:{uid}"))
}

fn user_in_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let id: u32 = f.next()?.trim().parse().ok()?;
        (id == uid && !name.is_empty() && !name.starts_with('#')).then(|| name.to_string())
    })
}

impl Remote {
    /// The node's base URL: --url / XYN_URL, else `[web] listen` of the config file (a
    /// wildcard address is reached on loopback), else http://127.0.0.1:8080.
    pub fn base_url(&self) -> Result<String> {
        if let Some(u) = self.url.as_deref().filter(|u| !u.trim().is_empty()) {
            return Ok(u.to_string());
        }
        Ok(match crate::config::listen_of(self.config.as_deref())? {
            Some(listen) => url_of_listen(&listen),
            None => "http://127.0.0.1:8080".into(),
        })
    }

    /// A client for the node, acting as the CLI's user.
    pub fn client(&self, correlation_id: Option<String>) -> Result<Client> {
        Ok(Client::new(
            &self.base_url()?,
            self.token.clone(),
            actor(),
            correlation_id,
        ))
    }
}

/// `http://` plus the address a node listening on `listen` is reached at from this host.
fn url_of_listen(listen: &str) -> String {
    let listen = listen.trim();
    let host_port = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip: std::net::IpAddr = if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(ip, a.port()).to_string()
        }
        Ok(a) => a.to_string(),
        Err(_) => listen.to_string(),
    };
    format!("http://{host_port}")
}

fn rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => crate::serve::serve(*args),
        Command::Tls(cmd) => crate::tls_cmd::run(cmd),
        Command::Blueprint(BlueprintCmd::Validate {
            files,
            json,
            data_dir,
        }) => output::validate_files(&files, json, &data_dir),
        Command::Audit(AuditCmd::Verify {
            data_dir,
            store,
            checkpoint_key,
            json,
        }) => rt()?.block_on(crate::serve::audit_verify(
            &data_dir,
            &store,
            checkpoint_key.as_deref(),
            json,
        )),
        Command::Doctor(args) => rt()?.block_on(crate::doctor::run(args)),
        Command::Slo(cmd) => crate::slo_cmd::run(cmd),
        Command::Retention(RetentionCmd::Run {
            older_than,
            include_unpublished,
            data_dir,
            store,
            json,
        }) => rt()?.block_on(retention_run(
            &older_than,
            !include_unpublished,
            &data_dir,
            &store,
            json,
        )),
        Command::Event(cmd) => rt()?.block_on(event(cmd)),
        Command::Blueprint(cmd) => rt()?.block_on(blueprint(cmd)),
        Command::Run(cmd) => rt()?.block_on(run_cmd(cmd)),
        Command::Search(a) => rt()?.block_on(crate::run_ops::search(a)),
        Command::Action(cmd) => crate::action_cmd::run(cmd),
        Command::App(cmd) => crate::app_cmd::run(cmd),
        Command::Key(cmd) => crate::pack_cmd::key(cmd),
        Command::Trust(cmd) => crate::pack_cmd::trust(cmd),
        Command::Pack(cmd) => crate::pack_cmd::pack(cmd),
        Command::Backup {
            data_dir,
            to,
            with_secret_key,
        } => crate::backup::backup(&data_dir, &to, with_secret_key),
        Command::Restore { from, data_dir } => crate::backup::restore(&from, &data_dir),
        Command::Spec(cmd) => crate::spec_cmd::spec(cmd),
        Command::Secret(cmd) => crate::secret_cmd::run(cmd),
        Command::Test { dir, seed, cases } => crate::spec_cmd::test(dir, seed, cases),
        Command::SandboxWorker { args } => {
            let args = xyn_sandbox::worker::WorkerArgs::parse(&args)
                .map_err(|e| anyhow::anyhow!("sandbox-worker: {e}"))?;
            let code = xyn_sandbox::worker::main(args);
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
    }
}

#[allow(clippy::print_stdout)]
async fn retention_run(
    older_than: &str,
    keep_unpublished: bool,
    data_dir: &std::path::Path,
    store: &StoreArgs,
    json: bool,
) -> Result<ExitCode> {
    let window = xyn_core::duration::parse_duration_ms(older_than)
        .with_context(|| format!("--older-than {older_than:?} is not a duration like 7d"))?;
    let opened = crate::serve::open_store(data_dir, store, true).await?;
    let r =
        crate::retention::run_once(opened.store.as_ref(), data_dir, window, keep_unpublished).await;
    opened.close();
    let r = r?;
    if json {
        println!("{}", serde_json::to_string_pretty(&json!(r))?);
    } else {
        println!(
            "retention: {} events removed{}, {} footprints rolled up into {} daily rows",
            r.events_removed,
            r.checkpoint
                .as_ref()
                .map(|c| format!(" (signed checkpoint at seq {})", c.seq))
                .unwrap_or_default(),
            r.footprints_rolled_up,
            r.rollup_rows_written
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn event(cmd: EventCmd) -> Result<ExitCode> {
    match cmd {
        EventCmd::Emit {
            name,
            data,
            resource,
            correlation_id,
            remote,
        } => {
            let data = parse_object("--data", &data)?;
            let mut body = json!({"event_name": name, "data": data});
            if let Some(r) = resource {
                let (t, id) = r.split_once(':').context("--resource must be TYPE:ID")?;
                body["resource"] = json!({"type": t, "id": id});
            }
            let c = remote.client(correlation_id)?;
            let v = c.post("/api/v1/events", &body).await?;
            output::print(&remote, &v, output::event_line)
        }
        EventCmd::Show { event_id, remote } => crate::run_ops::event_show(event_id, remote).await,
        EventCmd::List {
            name,
            run,
            limit,
            remote,
        } => {
            let c = remote.client(None)?;
            let mut q = vec![("limit", limit.to_string())];
            if let Some(n) = name {
                q.push(("event_name", n));
            }
            if let Some(r) = run {
                q.push(("run_id", r));
            }
            let v = c.get("/api/v1/events", &q).await?;
            output::print(&remote, &v, output::event_table)
        }
    }
}

async fn blueprint(cmd: BlueprintCmd) -> Result<ExitCode> {
    match cmd {
        BlueprintCmd::Validate {
            files,
            json,
            data_dir,
        } => output::validate_files(&files, json, &data_dir),
        BlueprintCmd::Apply { file, remote } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let c = remote.client(None)?;
            let v = c
                .post("/api/v1/blueprints", &json!({"definition": text}))
                .await?;
            output::print(&remote, &v, output::blueprint_applied)
        }
        BlueprintCmd::List { remote } => {
            let c = remote.client(None)?;
            let v = c.get("/api/v1/blueprints", &[]).await?;
            output::print(&remote, &v, output::blueprint_table)
        }
        BlueprintCmd::Disable { id, remote } => switch_trigger(&id, "disable", &remote).await,
        BlueprintCmd::Enable { id, remote } => switch_trigger(&id, "enable", &remote).await,
        BlueprintCmd::Show {
            id,
            version,
            remote,
        } => {
            let c = remote.client(None)?;
            let q: Vec<(&str, String)> = version
                .map(|v| ("version", v.to_string()))
                .into_iter()
                .collect();
            let v = c
                .get(&format!("/api/v1/blueprints/{}", output::path_seg(&id)), &q)
                .await?;
            output::print(&remote, &v, output::blueprint_show)
        }
    }
}

async fn switch_trigger(id: &str, how: &str, remote: &Remote) -> Result<ExitCode> {
    let c = remote.client(None)?;
    let v = c
        .post(
            &format!("/api/v1/blueprints/{}/{how}", output::path_seg(id)),
            &json!({}),
        )
        .await?;
    output::print(remote, &v, output::blueprint_switched)
}

async fn run_cmd(cmd: RunCmd) -> Result<ExitCode> {
    match cmd {
        RunCmd::Start {
            blueprint,
            inputs,
            name,
            remote,
        } => {
            let inputs = parse_object("--inputs", &inputs)?;
            let c = remote.client(None)?;
            let v = c
                .post(
                    "/api/v1/runs",
                    &json!({"blueprint_ref": blueprint, "inputs": inputs, "name": name}),
                )
                .await?;
            output::print(&remote, &v, output::run_line)
        }
        RunCmd::List {
            status,
            blueprint,
            limit,
            remote,
        } => {
            let c = remote.client(None)?;
            let mut q = vec![("limit", limit.to_string())];
            if let Some(s) = status {
                q.push(("status", s));
            }
            if let Some(b) = blueprint {
                q.push(("blueprint_id", b));
            }
            let v = c.get("/api/v1/runs", &q).await?;
            output::print(&remote, &v, output::run_table)
        }
        RunCmd::Show { run_id, remote } => {
            let c = remote.client(None)?;
            let typed = output::path_seg(&run_id);
            let run = c.get(&format!("/api/v1/runs/{typed}"), &[]).await?;
            // What was typed may be a short id: the rest asks by the whole id the node found.
            let full = run["run_id"].as_str().unwrap_or(&run_id).to_string();
            let id = output::path_seg(&full);
            let steps = c.get(&format!("/api/v1/runs/{id}/steps"), &[]).await?;
            let artifacts = c
                .get(
                    "/api/v1/artifacts",
                    &[("run_id", full.clone()), ("limit", "500".into())],
                )
                .await?;
            let all = json!({"run": run, "steps": steps["items"], "artifacts": artifacts["items"]});
            output::print(&remote, &all, output::run_show)
        }
        RunCmd::Approve {
            run_id,
            step,
            comment,
            remote,
        } => decide(run_id, step, comment, remote, "approve").await,
        RunCmd::Reject {
            run_id,
            step,
            comment,
            remote,
        } => decide(run_id, step, comment, remote, "reject").await,
        RunCmd::Retry {
            run_id,
            step,
            remote,
        } => crate::run_ops::retry(run_id, step, remote).await,
        RunCmd::Rerun {
            run_id,
            input,
            name,
            remote,
        } => crate::run_ops::rerun(run_id, input, name, remote).await,
        RunCmd::Watch { run_id, remote } => crate::run_ops::watch(run_id, remote).await,
        RunCmd::Cancel {
            run_id,
            reason,
            remote,
        } => {
            let c = remote.client(None)?;
            let v = c
                .post(
                    &format!("/api/v1/runs/{}/cancel", output::path_seg(&run_id)),
                    &json!({"reason": reason}),
                )
                .await?;
            output::print(&remote, &v, output::run_line)
        }
    }
}

async fn decide(
    run_id: String,
    step: String,
    comment: Option<String>,
    remote: Remote,
    verb: &str,
) -> Result<ExitCode> {
    let c = remote.client(None)?;
    let v = c
        .post(
            &format!(
                "/api/v1/runs/{}/steps/{}/{verb}",
                output::path_seg(&run_id),
                output::path_seg(&step)
            ),
            &json!({"comment": comment}),
        )
        .await?;
    output::print(&remote, &v, output::step_decided)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_is_named_from_passwd_or_not_at_all() {
        let passwd = "# comment\nroot:x:0:0:root:/root:/bin/bash\nbad:x:nope:0::/:/bin/sh\nann:x:1000:1000::/home/ann:/bin/sh\n";
        assert_eq!(user_in_passwd(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_in_passwd(passwd, 1000).as_deref(), Some("ann"));
        assert_eq!(user_in_passwd(passwd, 4242), None);
        assert_eq!(user_in_passwd("", 0), None);
    }

    #[test]
    fn a_listen_address_becomes_a_url_the_cli_can_reach() {
        assert_eq!(url_of_listen("127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(url_of_listen("0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(url_of_listen("[::]:9000"), "http://[::1]:9000");
        assert_eq!(url_of_listen("localhost:9000"), "http://localhost:9000");
    }
}
