//! The three runtimes. Each takes the input JSON bytes, the budgets and the invocation's
//! [`Caps`], and gives back the output JSON bytes (or a stable error), the `Caps` (with
//! their counts and denials) and what was used.

pub mod component;
pub mod js;
pub mod lua;
pub mod wasm;

use std::cell::RefCell;
use std::collections::HashMap;

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

/// Loaded guests (JS runtimes, Lua states) kept per thread for warm invocations, keyed by code
/// digest and limits. An invocation takes its guest out and puts it back only when it
/// succeeded, so a failure always leaves the next invocation a cold start.
pub(crate) struct WarmCache<T>(RefCell<HashMap<String, T>>);

impl<T> WarmCache<T> {
    /// Most loaded guests kept per thread; beyond it the cache starts over.
    const MAX: usize = 64;

    pub(crate) fn new() -> Self {
        Self(RefCell::new(HashMap::new()))
    }

    pub(crate) fn take(&self, key: &str) -> Option<T> {
        self.0.borrow_mut().remove(key)
    }

    pub(crate) fn keep(&self, key: String, guest: T) {
        let mut m = self.0.borrow_mut();
        if m.len() >= Self::MAX {
            m.clear();
        }
        m.insert(key, guest);
    }

    pub(crate) fn clear(&self) {
        self.0.borrow_mut().clear();
    }
}
