//! The `SecretStore` port of Xyn and its backends.
//!
//! A secret is named by a canonical [`SecretPath`] (`sys/<env_id>/providers/<name>`,
//! `sys/<env_id>/integrations/<name>`, `team/<team_id>/<name>`); the platform passes paths
//! around, never values. Backends:
//!
//! - [`local::LocalSecretStore`]: encrypted in the node's own store (SQLite or PostgreSQL),
//!   one random data key per version wrapped by a master key that comes from a key file
//!   (`<data-dir>/secrets.key`, mode 0600) or from a passphrase through Argon2id; versions,
//!   and master-key rotation that rewraps data keys without re-encrypting values.
//! - [`env::EnvSecretStore`]: read-only, from `XYN_SECRET_*` environment variables (what
//!   nodes did before the local store existed, kept).
//!
//! [`Secrets`] puts them together the way the node uses them: reads try the local store, then
//! the environment; writes go to the local store.
//!
//! *Architecture Invariant:* no value leaves this crate except through [`SecretValue::expose`],
//! and no listing carries one. The store underneath sees ciphertext only.

pub mod crypto;
pub mod env;
pub mod local;
pub mod path;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::json;
use xyn_core::event::{Event, Resource};
use xyn_core::{EventId, RunId, StepId, Timestamp, XynError};
use zeroize::Zeroizing;

pub use path::{Scope, SecretPath, check_prefix};

/// Stable error codes of the secret store.
pub mod codes {
    pub const PATH_INVALID: &str = "secret.path_invalid";
    pub const NOT_FOUND: &str = "secret.not_found";
    pub const VALUE_INVALID: &str = "secret.value_invalid";
    pub const READ_ONLY: &str = "secret.read_only";
    pub const DECRYPT_FAILED: &str = "secret.decrypt_failed";
    pub const WRONG_PASSPHRASE: &str = "secret.wrong_passphrase";
    pub const WRONG_KEY_FILE: &str = "secret.wrong_key_file";
    pub const KEY_FILE_INSECURE: &str = "secret.key_file_insecure";
    pub const KEY_FILE_MISSING: &str = "secret.key_file_missing";
    pub const KEY_FILE_INVALID: &str = "secret.key_file_invalid";
    pub const PASSPHRASE_REQUIRED: &str = "secret.passphrase_required";
    pub const PASSPHRASE_NOT_USED: &str = "secret.passphrase_not_used";
    pub const FORBIDDEN: &str = "secret.forbidden";
}

/// Audit event of a secret read (actor, run and path; never the value).
pub const SECRET_READ: &str = "xyn.secret.read";
/// Audit event of a new secret version.
pub const SECRET_WRITTEN: &str = "xyn.secret.written";
/// Audit event of a removed secret.
pub const SECRET_DELETED: &str = "xyn.secret.deleted";
/// Audit event of a master-key rotation.
pub const MASTER_ROTATED: &str = "xyn.secret.master_rotated";

/// Largest accepted value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A secret value: wiped from memory when dropped, never printed by `Debug`.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// A value to store: not empty, at most [`MAX_VALUE_BYTES`], no NUL.
    pub fn new(value: String) -> Result<Self, XynError> {
        let v = Zeroizing::new(value);
        if v.is_empty() {
            return Err(XynError::invalid(
                codes::VALUE_INVALID,
                "a secret value cannot be empty",
            ));
        }
        if v.len() > MAX_VALUE_BYTES {
            return Err(XynError::invalid(
                codes::VALUE_INVALID,
                format!("a secret value is at most {MAX_VALUE_BYTES} bytes"),
            ));
        }
        if v.contains('\0') {
            return Err(XynError::invalid(
                codes::VALUE_INVALID,
                "a secret value cannot contain NUL",
            ));
        }
        Ok(Self(v))
    }

    /// A value read back from a backend (already checked when it was stored).
    pub(crate) fn stored(value: Zeroizing<String>) -> Self {
        Self(value)
    }

    /// The value itself. Every call site is a place where the value leaves the store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<hidden>)")
    }
}

/// A secret's metadata, never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretMeta {
    pub path: String,
    /// The latest version.
    pub version: i64,
    pub versions: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub updated_by: String,
    pub backend: &'static str,
}

/// One version's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionMeta {
    pub version: i64,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// A value read, with where it came from.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub value: SecretValue,
    /// 0 for the environment backend, which has no versions.
    pub version: i64,
    pub backend: &'static str,
}

/// The secret store port.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// A short name of the backend (`local`, `env`).
    fn backend(&self) -> &'static str;
    /// Stores `value` as the next version of `path`.
    async fn put(
        &self,
        path: &SecretPath,
        value: &SecretValue,
        actor: &str,
    ) -> Result<SecretMeta, XynError>;
    /// The given version of `path`, or its latest; `None` when there is none.
    async fn get(
        &self,
        path: &SecretPath,
        version: Option<i64>,
    ) -> Result<Option<Resolved>, XynError>;
    /// Metadata of the secrets under `prefix`, by path.
    async fn list(&self, prefix: &str) -> Result<Vec<SecretMeta>, XynError>;
    /// The versions of `path`, oldest first.
    async fn versions(&self, path: &SecretPath) -> Result<Vec<VersionMeta>, XynError>;
    /// Removes every version of `path`; whether there was one.
    async fn delete(&self, path: &SecretPath) -> Result<bool, XynError>;
}

/// The node's secrets: the encrypted local store first, then the environment.
#[derive(Clone)]
pub struct Secrets {
    pub local: Arc<local::LocalSecretStore>,
    pub env: Arc<env::EnvSecretStore>,
    cache: Arc<ResolveCache>,
}

/// How long a resolved value is reused without reading the store again. A value written
/// through this node is seen at once (the write empties the cache); one written by another
/// node of a cluster, or by `xyn secret set` on the data directory, within this time.
pub const RESOLVE_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Values resolved recently, by path, with the local store's write generation they were read
/// at. Entries past their time are dropped as new ones arrive, so decrypted values do not
/// linger; they are wiped from memory when dropped ([`SecretValue`]).
struct ResolveCache {
    ttl: std::time::Duration,
    entries:
        std::sync::Mutex<std::collections::HashMap<String, (Resolved, std::time::Instant, u64)>>,
}

impl ResolveCache {
    fn get(&self, path: &SecretPath, generation: u64) -> Option<Resolved> {
        let map = self.entries.lock().ok()?;
        let (r, at, g) = map.get(path.as_str())?;
        (*g == generation && at.elapsed() < self.ttl).then(|| r.clone())
    }

    fn put(&self, path: &SecretPath, r: &Resolved, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut map) = self.entries.lock() {
            let ttl = self.ttl;
            map.retain(|_, (_, at, g)| *g == generation && at.elapsed() < ttl);
            map.insert(
                path.as_str().to_string(),
                (r.clone(), std::time::Instant::now(), generation),
            );
        }
    }
}

impl Secrets {
    pub fn new(local: Arc<local::LocalSecretStore>, env: Arc<env::EnvSecretStore>) -> Self {
        Self::with_cache_ttl(local, env, RESOLVE_CACHE_TTL)
    }

    /// As [`Secrets::new`], reusing resolved values for `ttl` (zero: never).
    pub fn with_cache_ttl(
        local: Arc<local::LocalSecretStore>,
        env: Arc<env::EnvSecretStore>,
        ttl: std::time::Duration,
    ) -> Self {
        Self {
            local,
            env,
            cache: Arc::new(ResolveCache {
                ttl,
                entries: Default::default(),
            }),
        }
    }

    /// Reads `path` (latest version): the local store, else the environment. A value read
    /// within [`RESOLVE_CACHE_TTL`] and not rewritten through this node since is reused.
    pub async fn resolve(&self, path: &SecretPath) -> Result<Option<Resolved>, XynError> {
        let generation = self.local.generation();
        if let Some(r) = self.cache.get(path, generation) {
            return Ok(Some(r));
        }
        let found = match self.local.get(path, None).await? {
            Some(r) => Some(r),
            None => self.env.get(path, None).await?,
        };
        if let Some(r) = &found {
            self.cache.put(path, r, generation);
        }
        Ok(found)
    }
}

/// Who read a secret, for the audit event.
#[derive(Clone, Debug, Default)]
pub struct ReadContext {
    pub actor: String,
    pub run_id: Option<RunId>,
    pub step_id: Option<StepId>,
    pub correlation_id: Option<String>,
}

/// The data of an `xyn.secret.*` audit event: the path and what is known about the version,
/// never the value.
pub fn audit_data(
    path: &SecretPath,
    version: i64,
    backend: &str,
    actor: &str,
) -> serde_json::Value {
    json!({"path": path.as_str(), "version": version, "backend": backend, "actor": actor})
}

/// An `xyn.secret.*` audit event ready to commit.
pub fn audit_event(
    name: &str,
    env_id: &str,
    ctx: &ReadContext,
    resource_id: &str,
    data: serde_json::Value,
    now: Timestamp,
) -> Event {
    Event {
        event_id: EventId(uuid::Uuid::now_v7()),
        event_name: name.into(),
        occurred_at: now,
        env_id: env_id.into(),
        actor: ctx.actor.clone(),
        correlation_id: ctx
            .correlation_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        run_id: ctx.run_id,
        step_id: ctx.step_id,
        resource: Some(Resource {
            kind: "secret".into(),
            id: resource_id.into(),
        }),
        data,
    }
}

/// The system clock, in microseconds.
pub fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    Timestamp::from_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_never_debug_printed() {
        let v = SecretValue::new("hunter22".into()).unwrap();
        assert_eq!(v.expose(), "hunter22");
        assert!(!format!("{v:?}").contains("hunter22"));
        for bad in [
            String::new(),
            "a\0b".into(),
            "x".repeat(MAX_VALUE_BYTES + 1),
        ] {
            assert_eq!(
                SecretValue::new(bad).unwrap_err().code,
                codes::VALUE_INVALID
            );
        }
    }
}
