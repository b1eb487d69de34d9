//! Layered configuration: defaults, then `xyn.toml` (when present), then `XYN_*` variables.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub env_id: Option<String>,
    #[serde(default)]
    pub engine: EngineSection,
    #[serde(default)]
    pub agents: AgentsSection,
    /// Sandboxed actions: deployment defaults and maximums of the budgets, pool size.
    #[serde(default)]
    pub sandbox: xyn_sandbox::SandboxSettings,
    #[serde(default)]
    pub web: WebSection,
    #[serde(default)]
    pub auth: AuthSection,
    /// Webhook sources: `POST /hooks/<name>`.
    #[serde(default)]
    pub hooks: std::collections::BTreeMap<String, HookSection>,
    #[serde(default)]
    pub retention: RetentionSection,
    /// Built-in actions: `[actions.http]`, where `http.call` may connect; `[actions.ssh]`,
    /// where `ssh.run` may connect, its host keys and credentials.
    #[serde(default)]
    pub actions: ActionsSection,
    /// The node's Git repositories: `[git] clone_sources`.
    #[serde(default)]
    pub git: GitSection,
    /// `container.exec`: the engine, the images and networks allowed, the maximums.
    #[serde(default)]
    pub containers: ContainersSection,
    /// `[telemetry]`: Prometheus metrics.
    #[serde(default)]
    pub telemetry: TelemetrySection,
}

/// `[containers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainersSection {
    /// `unix:///run/docker.sock` (default: `DOCKER_HOST`, else `/var/run/docker.sock`).
    pub docker_host: Option<String>,
    /// Images steps may run: names, or prefixes ending in `*`. Empty: none.
    #[serde(default)]
    pub images: Vec<String>,
    /// Networks a step may ask for besides `none`.
    #[serde(default)]
    pub networks: Vec<String>,
    pub max_memory_mb: Option<u64>,
    pub max_pids: Option<i64>,
    pub max_cpus: Option<f64>,
    /// Longest `timeout` a step may set, e.g. "1h".
    pub max_timeout: Option<String>,
}

/// `[git]`: local directories `git.clone` may copy repositories from (besides the node's own
/// repositories, `repo:<name>`). Relative paths are relative to the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSection {
    #[serde(default)]
    pub clone_sources: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// Record metrics and serve `GET /metrics` (default true; `XYN_METRICS=0` turns them off).
    pub metrics: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsSection {
    #[serde(default)]
    pub http: ActionsHttpSection,
    #[serde(default)]
    pub ssh: ActionsSshSection,
}

/// `[actions.ssh]`: where `ssh.run` may connect and how it checks and authenticates.
/// `allow` lists destinations as `[actions.http] allow` does, a rule without a port meaning
/// port 22; a name listed exactly may resolve to a private address (internal hosts are the
/// usual target). Without it, any public address. Paths are relative to the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsSshSection {
    pub allow: Option<Vec<String>>,
    /// The known_hosts file (default `<data-dir>/ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// Pinned host keys, known_hosts lines: `"[10.0.0.5]:2222 ssh-ed25519 AAAA…"`.
    #[serde(default)]
    pub host_keys: Vec<String>,
    /// The private key used when a step names none (`XYN_SSH_IDENTITY_FILE` wins).
    pub identity_file: Option<PathBuf>,
    /// The user when a step names none.
    pub user: Option<String>,
    /// TCP connect, handshake and authentication, e.g. "10s".
    pub connect_timeout: Option<String>,
    /// How long an idle authenticated connection is kept for the next step, e.g. "30s";
    /// "0s" turns pooling off.
    pub pool_idle: Option<String>,
}

/// The `[actions.ssh]` settings; `known_hosts` stays `None` when unset (the node puts it in
/// its data directory).
fn ssh_settings(
    s: &ActionsSshSection,
    source: Option<&Path>,
    base: &Path,
) -> Result<xyn_actions::ssh::SshSettings> {
    let where_ = || source.map_or_else(|| "xyn.toml".into(), |p| p.display().to_string());
    let mut d = xyn_actions::ssh::default_destinations();
    if let Some(allow) = &s.allow {
        d.any_public = false;
        for h in allow {
            d.rules
                .push(xyn_actions::net::HostRule::parse(h).map_err(|e| {
                    anyhow::anyhow!("bad config {}: [actions.ssh] allow: {e}", where_())
                })?);
        }
    }
    let rel = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let mut out = xyn_actions::ssh::SshSettings {
        destinations: d,
        known_hosts: s.known_hosts.as_ref().map(rel),
        host_keys: s.host_keys.clone(),
        identity_file: std::env::var_os("XYN_SSH_IDENTITY_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| s.identity_file.as_ref().map(rel)),
        user: s.user.clone(),
        ..Default::default()
    };
    if let Some(t) = &s.connect_timeout {
        out.connect_timeout =
            std::time::Duration::from_millis(duration("[actions.ssh] connect_timeout", t)?.max(1));
    }
    if let Some(t) = &s.pool_idle {
        out.pool_idle = std::time::Duration::from_millis(duration("[actions.ssh] pool_idle", t)?);
    }
    // Pinned keys are checked now, so a typo stops the node instead of every step.
    xyn_actions::ssh::SshRun::new(out.clone())
        .map_err(|e| anyhow::anyhow!("bad config {}: [actions.ssh] host_keys: {e}", where_()))?;
    Ok(out)
}

/// `[actions.http]`: `allow` lists the destinations `http.call` may reach (`host`,
/// `host:port`, `*.suffix`, IP literals; a listed IP literal or `localhost` may be
/// private). Without it, any public address. `allow_node` lets it reach the node's own
/// listeners when `allow` names them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsHttpSection {
    pub allow: Option<Vec<String>>,
    #[serde(default)]
    pub allow_node: bool,
}

fn http_call_destinations(
    s: &ActionsHttpSection,
    source: Option<&Path>,
) -> Result<xyn_actions::net::Destinations> {
    let mut d = xyn_engine::default_http_call_destinations();
    d.allow_node = s.allow_node;
    if let Some(allow) = &s.allow {
        d.any_public = false;
        for h in allow {
            d.rules
                .push(xyn_actions::net::HostRule::parse(h).map_err(|e| {
                    anyhow::anyhow!(
                        "bad config {}: [actions.http] allow: {e}",
                        source.map_or_else(|| "xyn.toml".into(), |p| p.display().to_string())
                    )
                })?);
        }
    }
    Ok(d)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// Address the node listens on, e.g. "127.0.0.1:9000" (`--listen` and `XYN_LISTEN` win);
    /// the CLI reads it to find the node when `XYN_URL` is unset.
    pub listen: Option<String>,
    /// Time to produce a response, e.g. "30s" (408 after it).
    pub request_timeout: Option<String>,
    /// Extra time to send a request head, e.g. "10s"; a connection whose request is not
    /// answered within request_timeout plus this is closed.
    pub header_read_timeout: Option<String>,
    /// Largest artifact upload body in bytes.
    pub max_upload_bytes: Option<usize>,
    /// Largest total request header size in bytes (431 above it).
    pub max_header_bytes: Option<usize>,
    /// A new connection that sends nothing for this long is closed, e.g. "10s".
    pub first_byte_timeout: Option<String>,
    /// A kept-alive connection without traffic for this long is closed, e.g. "60s".
    pub idle_timeout: Option<String>,
    /// Most open connections (default: three quarters of the open-file limit).
    pub max_connections: Option<usize>,
    /// HTTPS: certificate chain and private key (PEM), reloaded on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    #[serde(default)]
    pub tls12: bool,
    /// A plain-HTTP listener that redirects to HTTPS (and answers ACME HTTP-01).
    pub redirect_http: Option<String>,
    /// Hosts to get certificates for with ACME.
    #[serde(default)]
    pub acme_hosts: Vec<String>,
    /// ACME directory URL (default: Let's Encrypt).
    pub acme_directory: Option<String>,
    /// `http-01` (default) or `tls-alpn-01`.
    pub acme_challenge: Option<String>,
    /// Contact e-mail for the ACME account.
    pub acme_email: Option<String>,
    /// PEM root of the ACME directory's HTTPS certificate (test CAs such as pebble).
    pub acme_ca_root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// A file of `ROLE NAME TOKEN` lines (roles: operator, owner).
    pub tokens_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSection {
    pub event_name: Option<String>,
    pub name_from: Option<String>,
    pub name_from_header: Option<String>,
    #[serde(default)]
    pub prefix: String,
    /// The environment variable holding the source's shared secret.
    pub secret_env: Option<String>,
    /// How the secret is checked: shared (default), github, standard, stripe.
    pub scheme: Option<String>,
    /// The event names (before the prefix) a delivery may select.
    pub events: Option<Vec<String>>,
    /// How long delivery ids and signatures are remembered, e.g. "24h".
    pub replay_window: Option<String>,
    /// How far a signed timestamp may be from the node's clock, e.g. "5m".
    pub max_skew: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Remove events and footprints older than this (e.g. "7d"); unset keeps everything.
    pub window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    pub workers: Option<usize>,
    /// Run wall-clock limit, e.g. "60m".
    pub run_timeout: Option<String>,
    pub max_step_executions: Option<u32>,
    pub max_event_bytes: Option<usize>,
    /// Largest step output (and run output), as serialized JSON; default 1 MiB.
    pub max_output_bytes: Option<usize>,
    pub default_step_timeout: Option<String>,
    /// Evaluation steps one jq evaluation may take (transforms, `if:`, trigger filters).
    pub jq_fuel: Option<u64>,
    /// Memory one jq evaluation may build, in MiB.
    pub jq_memory_mb: Option<u64>,
    /// Stack one jq evaluation may use, in KiB (at most 1536: evaluations run on threads with
    /// 2 MiB stacks).
    pub jq_stack_kb: Option<usize>,
    /// `full` (default) or `normal`.
    pub sqlite_synchronous: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsSection {
    /// Answer agent tasks from this cassette when the provider's API key is not set.
    pub fallback_cassette: Option<PathBuf>,
}

/// The jq budget from `[engine] jq_fuel`, `jq_memory_mb` and `jq_stack_kb`, each checked
/// against a range that keeps the node safe (a stack allowance larger than the threads that
/// evaluate could overflow them).
fn jq_limits(e: &EngineSection) -> Result<xyn_core::jq::JqLimits> {
    fn within<T: PartialOrd + std::fmt::Display + Copy>(
        key: &str,
        v: T,
        lo: T,
        hi: T,
    ) -> Result<T> {
        if v < lo || v > hi {
            anyhow::bail!("[engine] {key} = {v} is outside {lo}..={hi}");
        }
        Ok(v)
    }
    let mut l = xyn_core::jq::JqLimits::default();
    if let Some(f) = e.jq_fuel {
        l.fuel = within("jq_fuel", f, 1_000, 1_000_000_000)?;
    }
    if let Some(m) = e.jq_memory_mb {
        l.memory_bytes = within("jq_memory_mb", m, 1, 4096)? << 20;
    }
    if let Some(k) = e.jq_stack_kb {
        l.stack_bytes = within("jq_stack_kb", k, 64, 1536)? << 10;
    }
    Ok(l)
}

/// The effective settings of `xyn serve`.
#[derive(Debug)]
pub struct Settings {
    pub node: xyn_engine::NodeConfig,
    /// Budgets of sandboxed actions (`[sandbox]`, validated).
    pub sandbox_limits: xyn_sandbox::DeploymentLimits,
    /// Most sandbox workers busy at once (`[sandbox] pool_size`).
    pub sandbox_pool: usize,
    /// Guests may reach the node's own listeners (`[sandbox] allow_node_api`).
    pub sandbox_allow_node: bool,
    pub fallback_cassette: Option<PathBuf>,
    pub sqlite_full: bool,
    pub source: Option<PathBuf>,
    pub web: xyn_web::WebConfig,
    /// Retention window in milliseconds, when set.
    pub retention_ms: Option<u64>,
    /// `[web] listen`, when set.
    pub listen: Option<String>,
    /// `[git] clone_sources`, made absolute.
    pub git_clone_sources: Vec<PathBuf>,
    /// `[containers]` (the node label is set by `xyn serve` from the data directory).
    pub containers: xyn_containers::Settings,
    /// The TLS keys of `[web]` (paths resolved against the configuration file's directory).
    pub tls: crate::tls_cmd::TlsFile,
    /// `[actions.ssh]` (`known_hosts` unset: the node's data directory).
    pub ssh: xyn_actions::ssh::SshSettings,
}

fn duration(what: &str, s: &str) -> Result<u64> {
    xyn_core::duration::parse_duration_ms(s)
        .with_context(|| format!("{what}: {s:?} is not a duration like 30s, 10m or 1h"))
}

/// The `[sandbox]` settings alone (for `xyn action run`): deployment limits and pool size.
pub fn load_sandbox(explicit: Option<&Path>) -> Result<(xyn_sandbox::DeploymentLimits, usize)> {
    let (file, source) = read_file(explicit)?;
    sandbox_of(&file, source.as_deref())
}

fn sandbox_of(
    file: &FileConfig,
    source: Option<&Path>,
) -> Result<(xyn_sandbox::DeploymentLimits, usize)> {
    file.sandbox.resolve().map_err(|e| {
        anyhow::anyhow!(
            "bad config {}: {}",
            source.map_or_else(|| "xyn.toml".into(), |p| p.display().to_string()),
            e.message
        )
    })
}

/// `[web] listen` of the configuration file (`explicit`, else ./xyn.toml when it exists):
/// where the CLI finds the node when `XYN_URL` is unset.
pub fn listen_of(explicit: Option<&Path>) -> Result<Option<String>> {
    let (file, _) = read_file(explicit)?;
    Ok(file.web.listen.filter(|l| !l.trim().is_empty()))
}

fn read_file(explicit: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>)> {
    Ok(match explicit {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?;
            (
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("bad config {}", p.display()))?,
                Some(p.to_path_buf()),
            )
        }
        None => {
            let p = PathBuf::from("xyn.toml");
            match std::fs::read_to_string(&p) {
                Ok(text) => (
                    toml::from_str::<FileConfig>(&text)
                        .with_context(|| format!("bad config {}", p.display()))?,
                    Some(p),
                ),
                Err(_) => (FileConfig::default(), None),
            }
        }
    })
}

pub fn load(explicit: Option<&Path>) -> Result<Settings> {
    let (file, source) = read_file(explicit)?;
    let (sandbox_limits, sandbox_pool) = sandbox_of(&file, source.as_deref())?;
    let http_call = http_call_destinations(&file.actions.http, source.as_deref())?;
    let sandbox_allow_node = file.sandbox.allow_node_api;
    let base = source
        .as_ref()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());

    let mut node = xyn_engine::NodeConfig::default();
    if let Some(e) = env("XYN_ENV_ID").or(file.env_id) {
        node.env_id = e;
    }
    let e = file.engine;
    node.limits.jq = jq_limits(&e)?;
    if let Some(w) = env("XYN_WORKERS")
        .map(|v| v.parse::<usize>())
        .transpose()
        .context("XYN_WORKERS")?
        .or(e.workers)
    {
        node.workers = w.max(1);
    }
    if let Some(t) = env("XYN_RUN_TIMEOUT").or(e.run_timeout) {
        node.limits.max_wall_ms = duration("run_timeout", &t)?;
    }
    if let Some(n) = e.max_step_executions {
        node.limits.max_step_executions = n;
    }
    if let Some(n) = env("XYN_MAX_EVENT_BYTES")
        .map(|v| v.parse::<usize>())
        .transpose()
        .context("XYN_MAX_EVENT_BYTES")?
        .or(e.max_event_bytes)
    {
        node.max_event_bytes = n;
    }
    if let Some(n) = env("XYN_MAX_OUTPUT_BYTES")
        .map(|v| v.parse::<usize>())
        .transpose()
        .context("XYN_MAX_OUTPUT_BYTES")?
        .or(e.max_output_bytes)
    {
        node.max_output_bytes = n.max(1);
    }
    if let Some(t) = env("XYN_STEP_TIMEOUT").or(e.default_step_timeout.clone()) {
        node.default_step_timeout_ms = duration("default_step_timeout", &t)?;
    }
    let sqlite_full = match env("XYN_SQLITE_SYNCHRONOUS")
        .or(e.sqlite_synchronous)
        .as_deref()
    {
        None | Some("full") | Some("FULL") => true,
        Some("normal") | Some("NORMAL") => false,
        Some(other) => anyhow::bail!("sqlite_synchronous must be full or normal, not {other:?}"),
    };
    let fallback_cassette = env("XYN_AGENT_FALLBACK_CASSETTE")
        .map(PathBuf::from)
        .or_else(|| {
            file.agents
                .fallback_cassette
                .map(|p| if p.is_absolute() { p } else { base.join(p) })
        });
    let listen = file.web.listen.clone().filter(|l| !l.trim().is_empty());
    let c = &file.containers;
    let mut containers = xyn_containers::Settings {
        docker_host: c.docker_host.clone(),
        images: c.images.clone(),
        networks: c.networks.clone(),
        ..Default::default()
    };
    if let Some(m) = c.max_memory_mb {
        containers.max_memory_mb = m.max(4);
    }
    if let Some(p) = c.max_pids {
        containers.max_pids = p.max(1);
    }
    if let Some(cpu) = c.max_cpus {
        anyhow::ensure!(cpu > 0.0, "[containers] max_cpus must be positive");
        containers.max_cpus = cpu;
    }
    if let Some(t) = &c.max_timeout {
        containers.max_timeout =
            std::time::Duration::from_millis(duration("[containers] max_timeout", t)?);
    }
    let git_clone_sources = file
        .git
        .clone_sources
        .iter()
        .map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        })
        .collect();
    let ssh = ssh_settings(&file.actions.ssh, source.as_deref(), &base)?;
    let rel = |p: Option<PathBuf>| p.map(|p| if p.is_absolute() { p } else { base.join(p) });
    let tls = crate::tls_cmd::TlsFile {
        cert: rel(file.web.tls_cert.clone()),
        key: rel(file.web.tls_key.clone()),
        tls12: file.web.tls12,
        redirect_http: file.web.redirect_http.clone(),
        acme_hosts: file.web.acme_hosts.clone(),
        acme_directory: file.web.acme_directory.clone(),
        acme_challenge: file.web.acme_challenge.clone(),
        acme_email: file.web.acme_email.clone(),
        acme_ca_root: rel(file.web.acme_ca_root.clone()),
    };
    let mut web = xyn_web::WebConfig {
        max_body_bytes: node.max_event_bytes + 64 * 1024,
        ..Default::default()
    };
    if let Some(t) = env("XYN_REQUEST_TIMEOUT").or(file.web.request_timeout) {
        web.request_timeout = std::time::Duration::from_millis(duration("request_timeout", &t)?);
    }
    if let Some(t) = env("XYN_HEADER_READ_TIMEOUT").or(file.web.header_read_timeout) {
        web.header_read_timeout =
            std::time::Duration::from_millis(duration("header_read_timeout", &t)?);
    }
    if let Some(t) = file.web.first_byte_timeout {
        web.first_byte_timeout =
            std::time::Duration::from_millis(duration("first_byte_timeout", &t)?.max(100));
    }
    if let Some(t) = file.web.idle_timeout {
        web.idle_timeout = std::time::Duration::from_millis(duration("idle_timeout", &t)?.max(100));
    }
    if let Some(n) = file.web.max_connections {
        anyhow::ensure!(n > 0, "[web] max_connections must be at least 1");
        web.max_connections = Some(n);
    }
    if let Some(n) = file.web.max_upload_bytes {
        web.max_upload_bytes = n;
    }
    if let Some(n) = file.web.max_header_bytes {
        web.max_header_bytes = n.max(1024);
    }
    // Auth: tokens from the environment and from a tokens file; none means an open node.
    if let Some(t) = env("XYN_API_TOKEN") {
        web.auth
            .add(&t, "operator", xyn_web::Role::Operator)
            .map_err(|e| anyhow::anyhow!("XYN_API_TOKEN: {e}"))?;
    }
    if let Some(t) = env("XYN_OWNER_TOKEN") {
        web.auth
            .add(&t, "owner", xyn_web::Role::Owner)
            .map_err(|e| anyhow::anyhow!("XYN_OWNER_TOKEN: {e}"))?;
    }
    let tokens_file = env("XYN_TOKENS_FILE").map(PathBuf::from).or_else(|| {
        file.auth
            .tokens_file
            .map(|p| if p.is_absolute() { p } else { base.join(p) })
    });
    if let Some(p) = tokens_file {
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("cannot read the tokens file {}", p.display()))?;
        web.auth
            .add_file(&text)
            .map_err(|e| anyhow::anyhow!("tokens file {}: {e}", p.display()))?;
    }
    for (name, h) in file.hooks {
        let named = [&h.event_name, &h.name_from, &h.name_from_header]
            .iter()
            .filter(|x| x.is_some())
            .count();
        anyhow::ensure!(
            named == 1,
            "[hooks.{name}]: set exactly one of event_name, name_from, name_from_header"
        );
        let secret = match &h.secret_env {
            Some(var) => Some(env(var).with_context(|| {
                format!("[hooks.{name}] secret_env: the variable {var} is not set")
            })?),
            None => None,
        };
        let mut hook = xyn_web::HookConfig {
            event_name: h.event_name,
            name_from: h.name_from,
            name_from_header: h.name_from_header,
            events: h
                .events
                .map(|v| v.iter().map(|e| e.trim().to_ascii_lowercase()).collect()),
            prefix: h.prefix,
            secret,
            ..Default::default()
        };
        if let Some(sc) = &h.scheme {
            hook.scheme = xyn_web::HookScheme::parse(sc).with_context(|| {
                format!(
                    "[hooks.{name}] scheme must be shared, github, standard or stripe, not {sc:?}"
                )
            })?;
        }
        if let Some(w) = &h.replay_window {
            hook.replay_window = std::time::Duration::from_millis(duration("replay_window", w)?);
        }
        if let Some(w) = &h.max_skew {
            hook.max_skew = std::time::Duration::from_millis(duration("max_skew", w)?);
        }
        hook.check()
            .map_err(|e| anyhow::anyhow!("[hooks.{name}]: {e}"))?;
        if hook.secret.is_none() && web.auth.enabled() {
            anyhow::bail!(
                "[hooks.{name}]: this node has API tokens, so the source needs its own secret (secret_env); webhooks never authenticate with API tokens"
            );
        }
        web.hooks.insert(name, hook);
    }
    let retention_ms = env("XYN_RETENTION_WINDOW")
        .or(file.retention.window)
        .map(|w| duration("retention window", &w))
        .transpose()?;
    node.http_call = http_call;
    let metrics = match env("XYN_METRICS").as_deref() {
        Some("0" | "false" | "off") => false,
        Some("1" | "true" | "on") => true,
        Some(other) => {
            anyhow::bail!("XYN_METRICS: {other:?} is not one of 0, 1, true, false, on, off")
        }
        None => file.telemetry.metrics.unwrap_or(true),
    };
    if metrics {
        web.metrics = Some(xyn_metrics::Metrics::new());
    }
    Ok(Settings {
        node,
        sandbox_limits,
        sandbox_pool,
        sandbox_allow_node,
        fallback_cassette,
        sqlite_full,
        source,
        web,
        retention_ms,
        listen,
        git_clone_sources,
        containers,
        tls,
        ssh,
    })
}
