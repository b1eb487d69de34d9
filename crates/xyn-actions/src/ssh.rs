//! `ssh.run`: runs one command on a host over SSH with the russh client.
//!
//! - **Where**: the host and port go through the node's destination policy
//!   (`[actions.ssh] allow`, the same rules and post-DNS address checks as `http.call`):
//!   the name is resolved once, every address checked, and the client connects to a checked
//!   address, never to the name again. Loopback, private, link-local and metadata addresses
//!   are refused (`ssh.denied`) unless a rule names the destination.
//! - **Who**: the server's host key must be recorded (known_hosts file or keys pinned in
//!   the configuration); `known_hosts: accept-new` records the key of a host with none;
//!   a different key is `ssh.host_key_mismatch`, never learned over.
//! - **How**: key (`private_key` text, `identity_file`, or `[actions.ssh] identity_file`)
//!   or `password`; one `exec` on a session channel, no PTY, no forwarding of any kind;
//!   stdout and stderr captured (inline up to 64 KiB, the rest in artifacts, 8 MiB read at
//!   most per stream); at the deadline the command is sent `KILL`, the channel closed and
//!   the connection ended.
//! - Authenticated connections are pooled per address, host, user and credentials for
//!   `[actions.ssh] pool_idle` (30 s), so a second command to a host skips the handshake.
//!
//! `private_key`, `passphrase` and `password` are where secret references resolve (their
//! values are masked in what is recorded).

pub mod hostkeys;
pub mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::net::{Destinations, EgressError};
use crate::{Action, ActionContext, ActionError, ActionOutput, Redaction};
use hostkeys::HostKeys;
use session::{Captured, Credentials, Exit, Pool, SshError, Target};

/// Output kept inline per stream; the whole stream (up to [`STREAM_MAX`]) goes to an artifact.
pub const INLINE_MAX: usize = 64 * 1024;
/// Most output read per stream; more is counted and dropped.
pub const STREAM_MAX: usize = 8 * 1024 * 1024;

/// `[actions.ssh]`, resolved.
#[derive(Clone, Debug)]
pub struct SshSettings {
    /// Where `ssh.run` may connect (a rule without a port means port 22).
    pub destinations: Destinations,
    /// The known_hosts file (read, and appended to in `accept-new` mode).
    pub known_hosts: Option<PathBuf>,
    /// Host keys pinned in the configuration, in known_hosts format.
    pub host_keys: Vec<String>,
    /// The key used when the step names none.
    pub identity_file: Option<PathBuf>,
    /// The user when the step names none.
    pub user: Option<String>,
    /// TCP connect, handshake and authentication together.
    pub connect_timeout: Duration,
    /// How long an idle authenticated connection is kept (zero: no pooling).
    pub pool_idle: Duration,
}

/// Without `[actions.ssh] allow`: any public address, never the node itself.
pub fn default_destinations() -> Destinations {
    Destinations {
        rules: Vec::new(),
        any_public: true,
        allow_node: false,
        list_name: "[actions.ssh] allow",
    }
}

impl Default for SshSettings {
    fn default() -> Self {
        Self {
            destinations: default_destinations(),
            known_hosts: std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".ssh").join("known_hosts")),
            host_keys: Vec::new(),
            identity_file: None,
            user: None,
            connect_timeout: Duration::from_secs(10),
            pool_idle: Duration::from_secs(30),
        }
    }
}

/// The `ssh.run` action.
pub struct SshRun {
    settings: SshSettings,
    keys: Arc<HostKeys>,
    pool: Pool,
}

impl Default for SshRun {
    fn default() -> Self {
        let settings = SshSettings::default();
        Self {
            keys: Arc::new(HostKeys::file_only(settings.known_hosts.clone())),
            settings,
            pool: Pool::default(),
        }
    }
}

impl SshRun {
    /// The action with the node's settings; fails on a pinned key that does not parse.
    pub fn new(settings: SshSettings) -> Result<Self, String> {
        let keys = HostKeys::new(settings.known_hosts.clone(), &settings.host_keys)?;
        Ok(Self {
            settings,
            keys: Arc::new(keys),
            pool: Pool::default(),
        })
    }

    /// Idle pooled connections.
    pub fn pooled(&self) -> usize {
        self.pool.idle()
    }
}

fn invalid(msg: impl Into<String>) -> ActionError {
    ActionError::new(xyn_core::codes::ACTION_INPUT_INVALID, msg, false)
}

/// A user name the server will take as one (no control characters, no option syntax).
fn valid_user(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@' | b'$'))
}

fn duration_input(input: &Value, key: &str) -> Result<Option<Duration>, ActionError> {
    match input.get(key).and_then(Value::as_str) {
        None => Ok(None),
        Some(s) => xyn_core::duration::parse_duration_ms(s)
            .map(|ms| Some(Duration::from_millis(ms)))
            .ok_or_else(|| {
                invalid(format!(
                    "{key}: {s:?} is not a duration like 30s, 10m or 1h"
                ))
            }),
    }
}

fn key_error(what: &str, e: impl std::fmt::Display) -> ActionError {
    ActionError::new(
        "ssh.key_invalid",
        format!("cannot use the private key from {what}: {e}"),
        false,
    )
}

impl SshRun {
    /// The credentials of a step: its `private_key` (the key's text, where a secret
    /// reference resolves) or `identity_file`, else `[actions.ssh] identity_file`; its
    /// `password`.
    /// A key file a step names: a bare file name in the directory of `[actions.ssh]
    /// identity_file`, never a path. Step inputs come from event data, which must not choose
    /// which file on the node is read as a key.
    fn named_identity_file(&self, name: &str) -> Result<PathBuf, ActionError> {
        let refuse = |why: &str| {
            ActionError::new(
                "ssh.key_invalid",
                format!("identity_file {name:?} {why}"),
                false,
            )
        };
        if name.contains(['/', '\\', '\0']) || name.starts_with('.') {
            return Err(refuse(
                "must be a file name in the directory of [actions.ssh] identity_file",
            ));
        }
        let dir = self
            .settings
            .identity_file
            .as_deref()
            .and_then(std::path::Path::parent)
            .ok_or_else(|| refuse("needs [actions.ssh] identity_file to name the key directory"))?;
        Ok(dir.join(name))
    }

    fn credentials(&self, input: &Value) -> Result<Credentials, ActionError> {
        let get = |k: &str| {
            input
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let passphrase = get("passphrase");
        let key = if let Some(text) = get("private_key") {
            Some(
                russh::keys::decode_secret_key(text, passphrase)
                    .map_err(|e| key_error("private_key", e))?,
            )
        } else {
            let file = match get("identity_file") {
                Some(name) => Some(self.named_identity_file(name)?),
                None => self.settings.identity_file.clone(),
            };
            match file {
                Some(f) => Some(
                    russh::keys::load_secret_key(&f, passphrase)
                        .map_err(|e| key_error(&f.display().to_string(), e))?,
                ),
                None => None,
            }
        };
        Ok(Credentials {
            key: key.map(Arc::new),
            password: get("password").map(str::to_string),
        })
    }
}

fn denied(target: String, reason: String) -> ActionError {
    ActionError::new(
        "ssh.denied",
        format!("{target} is not an allowed destination: {reason}"),
        false,
    )
    .with_details(json!({"target": target, "reason": reason}))
}

fn ssh_error(e: SshError, label: &str, limit: Duration) -> ActionError {
    match e {
        SshError::Connect(m) => ActionError::new("ssh.connect", m, true),
        SshError::HostKeyUnknown { host, fingerprint } => ActionError::new(
            "ssh.host_key_unknown",
            format!(
                "the host key of {host} ({fingerprint}) is not known: record it in the \
                 known_hosts file or [actions.ssh] host_keys, or run the step once with \
                 known_hosts: accept-new"
            ),
            false,
        )
        .with_details(json!({"host": host, "fingerprint": fingerprint})),
        SshError::HostKeyMismatch { host, fingerprint } => ActionError::new(
            "ssh.host_key_mismatch",
            format!(
                "the host key of {host} ({fingerprint}) differs from the one recorded: the \
                 host was reinstalled or someone is intercepting the connection"
            ),
            false,
        )
        .with_details(json!({"host": host, "fingerprint": fingerprint})),
        SshError::HostKeyStore(m) => ActionError::new("ssh.known_hosts", m, false),
        SshError::Auth(m) => ActionError::new("ssh.auth", m, false),
        SshError::Timeout => ActionError::new(
            "ssh.timeout",
            format!(
                "the command on {label} did not finish within {}ms (it was killed and the \
                 connection closed)",
                limit.as_millis()
            ),
            true,
        ),
        SshError::ChannelOpen(m) | SshError::Protocol(m) => ActionError::new(
            "ssh.error",
            format!("the connection to {label} failed: {m}"),
            true,
        ),
    }
}

fn text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > INLINE_MAX {
        let mut cut = INLINE_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…[{} more bytes]", &s[..cut], s.len() - cut)
    } else {
        s.into_owned()
    }
}

#[async_trait]
impl Action for SshRun {
    fn name(&self) -> &str {
        "ssh.run"
    }

    fn description(&self) -> &str {
        "Runs one command on a host over SSH (destination policy, host keys verified, no PTY or forwarding)."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["host", "cmd"],
            "properties": {
                "host": {"type": "string", "minLength": 1, "maxLength": 255},
                "cmd": {"type": "string", "minLength": 1},
                "user": {"type": "string"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "private_key": {"type": "string"},
                "passphrase": {"type": "string"},
                "password": {"type": "string"},
                "identity_file": {"type": "string"},
                "known_hosts": {"type": "string", "enum": ["strict", "accept-new"]},
                "timeout": {"type": "string"},
                "connect_timeout": {"type": "string"},
                "allow_failure": {"type": "boolean"}
            }
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["exit_code", "stdout", "stderr"],
            "properties": {
                "exit_code": {"type": "integer"},
                "signal": {"type": "string"},
                "stdout": {"type": "string"},
                "stderr": {"type": "string"},
                "stdout_bytes": {"type": "integer"},
                "stderr_bytes": {"type": "integer"},
                "stdout_artifact_id": {"type": "string"},
                "stderr_artifact_id": {"type": "string"},
                "host_key": {"type": "string"},
                "host_key_learned": {"type": "boolean"},
                "reused_connection": {"type": "boolean"},
                "elapsed_ms": {"type": "integer"}
            }
        })
    }

    fn redaction(&self) -> Redaction {
        Redaction {
            pointers: vec!["/private_key", "/passphrase", "/password"],
            sensitive_keys: true,
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: Value,
    ) -> Result<ActionOutput, ActionError> {
        let started = std::time::Instant::now();
        let get = |k: &str| input.get(k).and_then(Value::as_str);
        let host = get("host").unwrap_or_default();
        let port = input
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(22);
        let user = match get("user") {
            Some(u) => u.to_string(),
            None => self
                .settings
                .user
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "root".into()),
        };
        if !valid_user(&user) {
            return Err(invalid(format!("user {user:?} is not a user name")));
        }
        let cmd = get("cmd").unwrap_or_default();
        let accept_new = get("known_hosts") == Some("accept-new");
        let limit = match (ctx.timeout, duration_input(&input, "timeout")?) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(Duration::from_secs(600)),
        };
        let connect_timeout = duration_input(&input, "connect_timeout")?
            .unwrap_or(self.settings.connect_timeout)
            .min(limit);
        let deadline = tokio::time::Instant::now() + limit;

        // The destination policy, before any lookup or connection.
        let dest = &self.settings.destinations;
        let parsed = ctx
            .egress
            .check_host(dest, host, port, 22)
            .map_err(|(t, r)| denied(t, r))?;
        let name = match &parsed {
            url::Host::Domain(d) => d.clone(),
            url::Host::Ipv4(v4) => v4.to_string(),
            url::Host::Ipv6(v6) => v6.to_string(),
        };
        let label = hostkeys::host_port(&name, port);
        let creds = self.credentials(&input)?;
        let addrs = match tokio::time::timeout(
            connect_timeout,
            ctx.egress.resolve_checked(dest, &parsed, port, 22, true),
        )
        .await
        {
            Ok(Ok(a)) => a,
            Ok(Err(EgressError::Denied { target, reason, .. })) => {
                return Err(denied(target, reason));
            }
            Ok(Err(EgressError::Http(m, _) | EgressError::Failed(m))) => {
                return Err(ActionError::new("ssh.connect", m, true));
            }
            Ok(Err(EgressError::TooManyRedirects)) | Err(_) => {
                return Err(ActionError::new(
                    "ssh.connect",
                    format!(
                        "resolving {name} took longer than {}ms",
                        connect_timeout.as_millis()
                    ),
                    true,
                ));
            }
        };
        let target = Target {
            name,
            port,
            addrs,
            user,
            accept_new,
        };
        let ttl = self.settings.pool_idle;
        let connect = || {
            session::connect(
                &target,
                &creds,
                &self.keys,
                &self.pool,
                ttl,
                connect_timeout,
            )
        };
        let mut conn = connect().await.map_err(|e| ssh_error(e, &label, limit))?;
        let mut result = session::exec(&conn, cmd, STREAM_MAX, deadline).await;
        if conn.reused && result.as_ref().err().is_some_and(session::stale) {
            // The pooled connection was gone; the command never started.
            conn.close().await;
            conn = connect().await.map_err(|e| ssh_error(e, &label, limit))?;
            result = session::exec(&conn, cmd, STREAM_MAX, deadline).await;
        }
        let (fingerprint, learned, reused) = (conn.fingerprint.clone(), conn.learned, conn.reused);
        let captured: Captured = match result {
            Ok(c) => {
                self.pool.put(conn, ttl);
                c
            }
            Err(e) => {
                conn.close().await;
                return Err(ssh_error(e, &label, limit));
            }
        };
        let (code, signal) = match &captured.exit {
            Exit::Status(s) => (i64::from(*s), None),
            Exit::Signal(s) => (-1, Some(s.clone())),
            Exit::Unknown => (-1, None),
        };
        let mut output = json!({
            "exit_code": code,
            "stdout": text(&captured.stdout.bytes),
            "stderr": text(&captured.stderr.bytes),
            "stdout_bytes": captured.stdout.total,
            "stderr_bytes": captured.stderr.total,
            "host_key": fingerprint,
            "host_key_learned": learned,
            "reused_connection": reused,
            "elapsed_ms": started.elapsed().as_millis() as u64,
        });
        if let Some(s) = signal {
            output["signal"] = Value::String(s);
        }
        for (stream, s) in [("stdout", &captured.stdout), ("stderr", &captured.stderr)] {
            if s.bytes.len() > INLINE_MAX || s.total > s.bytes.len() as u64 {
                let a = ctx
                    .artifacts
                    .put(
                        stream,
                        "log",
                        "text/plain",
                        s.bytes.clone(),
                        json!({"host": label, "bytes": s.total, "truncated": s.total > s.bytes.len() as u64}),
                    )
                    .await
                    .map_err(ActionError::from)?;
                output[format!("{stream}_artifact_id")] = Value::String(a.artifact_id.to_string());
            }
        }
        let allow_failure = input
            .get("allow_failure")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if code != 0 && !allow_failure {
            let why = match output.get("signal").and_then(Value::as_str) {
                Some(sig) => format!("was killed by signal {sig}"),
                None if code < 0 => "ended without an exit status".to_string(),
                None => format!("exited with {code}"),
            };
            return Err(ActionError::new(
                "ssh.exit_status",
                format!("the command on {label} {why}"),
                false,
            )
            .with_details(output));
        }
        Ok(ActionOutput {
            output,
            bytes_in: captured.stdout.total + captured.stderr.total,
            bytes_out: cmd.len() as u64,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_checked() {
        assert!(valid_user("deploy"));
        assert!(valid_user("svc.web-1_x"));
        assert!(!valid_user("-oProxyCommand=x"));
        assert!(!valid_user("a b"));
        assert!(!valid_user("a\nb"));
        assert!(!valid_user(""));
    }
}
