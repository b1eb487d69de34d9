//! The three runtimes. Each takes the input JSON bytes, the budgets and the invocation's
//! [`Caps`], and gives back the output JSON bytes (or a stable error), the `Caps` (with
//! their counts and denials) and what was used.

pub mod component;
pub mod js;
pub mod lua;
pub mod wasm;

use crate::caps::Caps;
use crate::error::SandboxError;
use crate::limits::{Limits, Usage};

/// One invocation handed to a runtime.
pub struct GuestRun<'a> {
    pub input: &'a [u8],
    pub limits: &'a Limits,
    pub caps: Caps,
}

/// What a runtime hands back.
pub struct GuestOutcome {
    pub result: Result<Vec<u8>, SandboxError>,
    pub caps: Caps,
    pub usage: Usage,
}

/// The message prefix of a refused capability call, as every runtime's guest sees it.
pub const DENIED_PREFIX: &str = "capability denied:";

/// Maps an uncaught guest error message to a stable code.
pub(crate) fn guest_error(message: String) -> SandboxError {
    if message.contains(DENIED_PREFIX) {
        SandboxError::new(crate::error::codes::CAPABILITY_DENIED, message)
    } else {
        SandboxError::failed(message)
    }
}

/// The capability names a guest may call, with the import names wasm modules use.
pub const CAPABILITIES: &[(&str, &str)] = &[
    ("fs_read", "fs.read"),
    ("fs_write", "fs.write"),
    ("http_request", "http.request"),
    ("env_get", "env.get"),
    ("db_query", "db.query"),
    ("db_exec", "db.exec"),
    ("time_now_ms", "time.now_ms"),
    ("time_monotonic_ms", "time.monotonic_ms"),
    ("crypto_sha256", "crypto.sha256"),
    ("crypto_sha512", "crypto.sha512"),
    ("crypto_hmac_sha256", "crypto.hmac_sha256"),
    ("crypto_random_bytes", "crypto.random_bytes"),
    ("crypto_ed25519_sign", "crypto.ed25519_sign"),
    ("crypto_ed25519_verify", "crypto.ed25519_verify"),
    ("crypto_password_hash", "crypto.password_hash"),
    ("crypto_password_verify", "crypto.password_verify"),
    ("log_info", "log.info"),
    ("log_warn", "log.warn"),
    ("log_error", "log.error"),
];
