//! The one capability layer. Every runtime (wasm, Lua, QuickJS) reaches the world only
//! through [`Caps::call`]: a capability name and JSON arguments in, JSON out. A rule is
//! therefore written once, here, and holds for all three runtimes.
//!
//! | name | arguments | result |
//! |---|---|---|
//! | `fs.read` | `{path}` | file contents (string) |
//! | `fs.write` | `{path, data}` | `true` |
//! | `http.request` | `{method, url, headers, body, timeout_ms}` | `{status, headers, body}` |
//! | `env.get` | `{name}` | string or `null` (also `null` when not allowed) |
//! | `db.query` | `{sql, params}` | array of row objects |
//! | `db.exec` | `{sql, params}` | `{changes, last_insert_rowid}` |
//! | `time.now_ms`, `time.monotonic_ms` | `{}` | integer |
//! | `crypto.sha256`, `crypto.sha512` | `{data}` | hex |
//! | `crypto.hmac_sha256` | `{data, key}` or `{data, key_secret}` | hex |
//! | `crypto.random_bytes` | `{len}` (≤ 4096) | hex |
//! | `crypto.ed25519_sign` | `{data, key_secret}` (32-byte seed, hex) | hex signature |
//! | `crypto.ed25519_verify` | `{data, public_key, signature}` (hex) | bool |
//! | `crypto.password_hash` | `{password}` | Argon2id PHC string |
//! | `crypto.password_verify` | `{password, hash}` | bool |
//! | `log.info`, `log.warn`, `log.error` | `{msg}` | `null` |
//!
//! Every call is counted (footprints); every refusal is recorded as a [`Denial`] (the
//! engine writes `xyn.cap.denied` for each) and reaches the guest as an error whose message
//! starts with `capability denied:` — except `env.get`, which answers `null`.

pub mod crypto;
pub mod db;
pub mod fs;
pub mod http;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::manifest::Capabilities;

pub use http::{HttpBackend, HttpFailure, HttpPolicy, HttpRequest, HttpResponse};

/// Stable codes of capability errors, as the guest sees them.
pub mod cap_codes {
    pub const DENIED: &str = "capability.denied";
    pub const FAILED: &str = "capability.failed";
    pub const BAD_ARGS: &str = "capability.bad_args";
    pub const UNKNOWN: &str = "capability.unknown";
}

/// A capability call that did not succeed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapError {
    pub code: String,
    pub message: String,
}

impl CapError {
    pub fn failed(m: impl Into<String>) -> Self {
        Self {
            code: cap_codes::FAILED.into(),
            message: m.into(),
        }
    }
    pub fn bad_args(m: impl Into<String>) -> Self {
        Self {
            code: cap_codes::BAD_ARGS.into(),
            message: m.into(),
        }
    }
    pub fn is_denied(&self) -> bool {
        self.code == cap_codes::DENIED
    }
}

/// One refused capability use: recorded as an `xyn.cap.denied` audit event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Denial {
    pub capability: String,
    pub target: String,
    pub reason: String,
}

/// A guest log line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: String,
    pub msg: String,
}

/// Most log lines kept per invocation, and their length.
const MAX_LOG_LINES: usize = 200;
const MAX_LOG_LEN: usize = 4096;
/// Longest any blocking host call may take, whatever the invocation's budget.
const MAX_HOST_CALL: Duration = Duration::from_secs(30);

/// Where an invocation's capabilities live, and the values the host gives it.
#[derive(Clone)]
pub struct CapsConfig {
    pub action: String,
    pub capabilities: Capabilities,
    /// The action's data directory (fs capabilities resolve under it).
    pub data_dir: Option<PathBuf>,
    /// The action's own SQLite database.
    pub db_path: Option<PathBuf>,
    /// Values of the allowed environment variables that are set.
    pub env: BTreeMap<String, String>,
    /// Values of the secrets the manifest refers to (never shown to the guest).
    pub secrets: BTreeMap<String, String>,
    pub http: Arc<dyn HttpBackend>,
    /// When the invocation must end; blocking host calls never run past it.
    pub deadline: Instant,
}

/// The capability layer of one invocation.
pub struct Caps {
    cfg: CapsConfig,
    fs: fs::FsCap,
    db: Option<db::DbCap>,
    started: Instant,
    /// Calls per capability name.
    pub counts: BTreeMap<String, u64>,
    pub denials: Vec<Denial>,
    pub logs: Vec<LogLine>,
    /// Time readings handed out, in order (recordable for replay).
    pub time_readings: Vec<i64>,
    /// Told of each refusal as it happens (the worker sends it to the node at once, so a
    /// worker killed later still leaves its denials behind).
    on_denial: Option<DenialSink>,
    /// CPU used by host work (SQLite steps), charged as fuel.
    meter: Arc<db::HostMeter>,
}

/// Where refusals go as they happen.
pub type DenialSink = Box<dyn Fn(&Denial) + Send + Sync>;

fn arg_str<'a>(args: &'a Value, key: &str) -> Result<&'a str, CapError> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| CapError::bad_args(format!("'{key}' must be a string")))
}

impl Caps {
    pub fn new(cfg: CapsConfig) -> Self {
        let fs = fs::FsCap::new(
            cfg.data_dir.as_deref(),
            &cfg.capabilities.fs_read,
            &cfg.capabilities.fs_write,
        );
        let meter = Arc::new(db::HostMeter::new(u64::MAX));
        let db = match (&cfg.db_path, cfg.capabilities.db) {
            (Some(p), true) => Some(db::DbCap::new(p.clone(), meter.clone(), cfg.deadline, 0)),
            _ => None,
        };
        Self {
            cfg,
            fs,
            db,
            started: Instant::now(),
            counts: BTreeMap::new(),
            denials: Vec::new(),
            logs: Vec::new(),
            time_readings: Vec::new(),
            on_denial: None,
            meter,
        }
    }

    /// Sets the invocation's fuel and memory budgets for host work (SQLite's heap limit
    /// and its steps charged as fuel).
    pub fn set_budgets(&mut self, fuel: u64, memory_bytes: u64) {
        self.meter.begin(fuel);
        if let Some(db) = self.db.as_mut() {
            db.set_heap(memory_bytes);
        }
    }

    /// Sends every refusal to `sink` as it happens (besides keeping it in `denials`).
    pub fn on_denial(&mut self, sink: DenialSink) {
        self.on_denial = Some(sink);
    }

    /// [`Caps::call`] for a guest with `fuel_left` units: host work (SQLite steps) is
    /// charged against them and stops when they or the deadline run out. Returns the
    /// result and the fuel the call used.
    pub fn call_metered(
        &mut self,
        name: &str,
        args: &Value,
        fuel_left: u64,
    ) -> (Result<Value, CapError>, u64) {
        self.meter.begin(fuel_left);
        let before = self.host_fuel();
        let r = self.call(name, args);
        (r, self.host_fuel() - before)
    }

    /// Fuel charged for host work so far.
    pub fn host_fuel(&self) -> u64 {
        self.meter.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The budget host work ran out of (`budget.fuel_exceeded`, `budget.timeout`), if any:
    /// the invocation ends with it even when the guest catches the error.
    pub fn spent(&self) -> Option<&'static str> {
        self.meter.spent()
    }

    pub fn action(&self) -> &str {
        &self.cfg.action
    }

    pub fn deadline(&self) -> Instant {
        self.cfg.deadline
    }

    fn deny(&mut self, capability: &str, target: &str, reason: &str) -> CapError {
        let d = Denial {
            capability: capability.to_string(),
            target: truncate(target, 512),
            reason: reason.to_string(),
        };
        if let Some(sink) = &self.on_denial {
            sink(&d);
        }
        self.denials.push(d);
        CapError {
            code: cap_codes::DENIED.into(),
            message: format!(
                "capability denied: {capability} {}: {reason}",
                truncate(target, 200)
            ),
        }
    }

    /// Counts `n` uses of capability `name` made outside [`Caps::call`] (the WASI clocks a
    /// component reads go through the host's clock objects, which count them here after
    /// the invocation).
    pub fn count_external(&mut self, name: &str, n: u64) {
        if n > 0 {
            *self.counts.entry(name.to_string()).or_insert(0) += n;
        }
    }

    /// Records a refusal made outside [`Caps::call`] (see [`Caps::count_external`]).
    pub fn deny_external(&mut self, capability: &str, target: &str, reason: &str) {
        let _ = self.deny(capability, target, reason);
    }

    /// Whether the manifest grants `time` (wall clock and monotonic time).
    pub fn allows_time(&self) -> bool {
        self.cfg.capabilities.time
    }

    /// Whether the manifest grants `crypto` (which includes random bytes).
    pub fn allows_crypto(&self) -> bool {
        self.cfg.capabilities.crypto
    }

    /// Calls capability `name` with JSON `args`. Counted whatever the outcome.
    pub fn call(&mut self, name: &str, args: &Value) -> Result<Value, CapError> {
        *self.counts.entry(name.to_string()).or_insert(0) += 1;
        match name {
            "fs.read" => {
                let path = arg_str(args, "path")?;
                match self.fs.read(path) {
                    Ok(bytes) => String::from_utf8(bytes)
                        .map(Value::String)
                        .map_err(|_| CapError::failed(format!("fs.read {path}: not UTF-8 text"))),
                    Err(fs::FsError::Denied(r)) => Err(self.deny(name, path, &r)),
                    Err(fs::FsError::Failed(m)) => Err(CapError::failed(m)),
                }
            }
            "fs.write" => {
                let path = arg_str(args, "path")?;
                let data = match args.get("data") {
                    Some(Value::String(s)) => s.as_bytes().to_vec(),
                    Some(v @ (Value::Object(_) | Value::Array(_) | Value::Number(_))) => {
                        v.to_string().into_bytes()
                    }
                    _ => return Err(CapError::bad_args("'data' must be a string")),
                };
                match self.fs.write(path, &data) {
                    Ok(()) => Ok(Value::Bool(true)),
                    Err(fs::FsError::Denied(r)) => Err(self.deny(name, path, &r)),
                    Err(fs::FsError::Failed(m)) => Err(CapError::failed(m)),
                }
            }
            "env.get" => {
                let var = arg_str(args, "name")?;
                if !self.cfg.capabilities.env.iter().any(|e| e == var) {
                    let _ = self.deny(name, var, "not in the env allowlist");
                    return Ok(Value::Null);
                }
                Ok(self
                    .cfg
                    .env
                    .get(var)
                    .map_or(Value::Null, |v| Value::String(v.clone())))
            }
            "db.query" | "db.exec" => {
                let sql = arg_str(args, "sql")?.to_string();
                let params = args.get("params").cloned().unwrap_or(Value::Null);
                let Some(db) = self.db.as_mut() else {
                    return Err(self.deny(name, &sql, "the manifest does not grant db"));
                };
                match db.run(&sql, &params, name == "db.query") {
                    Ok(v) => Ok(v),
                    Err(db::DbError::Denied(r)) => Err(self.deny(name, &sql, &r)),
                    Err(db::DbError::Failed(m)) => match self.meter.spent() {
                        Some(code) => Err(CapError {
                            code: code.into(),
                            message: format!("{name}: the invocation's budget ran out ({code})"),
                        }),
                        None => Err(CapError::failed(m)),
                    },
                }
            }
            "time.now_ms" | "time.monotonic_ms" => {
                if !self.cfg.capabilities.time {
                    return Err(self.deny(name, "", "the manifest sets time = false"));
                }
                let v = if name == "time.now_ms" {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0)
                } else {
                    self.started.elapsed().as_millis() as i64
                };
                if self.time_readings.len() < 10_000 {
                    self.time_readings.push(v);
                }
                Ok(json!(v))
            }
            "http.request" => self.http(args),
            "log.info" | "log.warn" | "log.error" | "log.debug" => {
                let msg = match args.get("msg") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                if self.logs.len() < MAX_LOG_LINES {
                    self.logs.push(LogLine {
                        level: name.trim_start_matches("log.").to_string(),
                        msg: truncate(&msg, MAX_LOG_LEN),
                    });
                }
                Ok(Value::Null)
            }
            n if n.starts_with("crypto.") => {
                if !self.cfg.capabilities.crypto {
                    return Err(self.deny(name, "", "the manifest sets crypto = false"));
                }
                let names: Vec<String> = self.cfg.capabilities.secrets.keys().cloned().collect();
                match crypto::call(n, args, &names, &self.cfg.secrets) {
                    Ok(v) => Ok(v),
                    Err(crypto::CryptoError::Denied(target, r)) => {
                        Err(self.deny(name, &target, &r))
                    }
                    Err(crypto::CryptoError::Failed(e)) => Err(e),
                }
            }
            _ => Err(CapError {
                code: cap_codes::UNKNOWN.into(),
                message: format!("no capability named {name:?}"),
            }),
        }
    }

    fn http(&mut self, args: &Value) -> Result<Value, CapError> {
        const NAME: &str = "http.request";
        let mut req: HttpRequest = serde_json::from_value(args.clone())
            .map_err(|e| CapError::bad_args(format!("http.request: {e}")))?;
        let policy = HttpPolicy::of(&self.cfg.action, &self.cfg.capabilities);
        if let Err((target, reason)) = policy.check_url(&req.url) {
            return Err(self.deny(NAME, &target, &reason));
        }
        // Secret references in header values: "{{secrets.NAME}}", for names the manifest lists.
        for v in req.headers.values_mut() {
            if let Some(name) = v
                .trim()
                .strip_prefix("{{secrets.")
                .and_then(|r| r.strip_suffix("}}"))
                .map(str::trim)
                .map(str::to_string)
            {
                if !self.cfg.capabilities.secrets.contains_key(&name) {
                    return Err(self.deny(NAME, &name, "secret not listed in the manifest"));
                }
                match self.cfg.secrets.get(&name) {
                    Some(s) => *v = s.clone(),
                    None => return Err(CapError::failed(format!("secret {name} is not set"))),
                }
            }
        }
        let left = self.cfg.deadline.saturating_duration_since(Instant::now());
        let mut timeout = left.min(MAX_HOST_CALL);
        if let Some(ms) = req.timeout_ms {
            timeout = timeout.min(Duration::from_millis(ms));
        }
        if timeout.is_zero() {
            return Err(CapError::failed("http.request: no time left in the budget"));
        }
        req.timeout_ms = Some(timeout.as_millis() as u64);
        match self.cfg.http.request(&policy, req, &self.cfg.secrets) {
            Ok(resp) => serde_json::to_value(resp).map_err(|e| CapError::failed(e.to_string())),
            Err(HttpFailure::Denied { target, reason }) => Err(self.deny(NAME, &target, &reason)),
            Err(HttpFailure::Failed(m)) => Err(CapError::failed(format!("http.request: {m}"))),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
