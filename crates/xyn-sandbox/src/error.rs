//! Stable error codes of sandboxed actions and the one error type that carries them.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The stable codes an invocation can end with. Scripts and tests match on these strings.
pub mod codes {
    /// The CPU budget (wasm fuel, Lua instructions, QuickJS interrupt ticks) ran out.
    pub const FUEL_EXCEEDED: &str = "budget.fuel_exceeded";
    /// The guest tried to grow its memory past the limit.
    pub const MEMORY_EXCEEDED: &str = "budget.memory_exceeded";
    /// The wall-clock timeout passed.
    pub const TIMEOUT: &str = "budget.timeout";
    /// The output was larger than `max_output_bytes`.
    pub const OUTPUT_EXCEEDED: &str = "budget.output_exceeded";
    /// The guest recursed past its stack limit.
    pub const STACK_EXCEEDED: &str = "budget.stack_exceeded";
    /// A wasm table grew past its element limit, or too many instances were created.
    pub const TABLE_EXCEEDED: &str = "budget.table_exceeded";
    /// The guest used a capability its manifest does not grant (and did not handle the error).
    pub const CAPABILITY_DENIED: &str = "capability.denied";
    /// Anything else: the guest threw, trapped, returned something that is not JSON, or its
    /// worker crashed.
    pub const ACTION_FAILED: &str = "action.failed";
    /// The manifest or package is not valid.
    pub const MANIFEST_INVALID: &str = "manifest.invalid";
    /// An action package could not be installed.
    pub const INSTALL_FAILED: &str = "action.install_failed";
    /// The node cannot seal its sandbox worker (no Landlock) and was not started with
    /// `--allow-weak-sandbox`.
    pub const SANDBOX_WEAK: &str = "sandbox.weak";
    /// The sandbox worker could not be started or spoke out of turn.
    pub const SANDBOX_UNAVAILABLE: &str = "sandbox.unavailable";
}

/// A failed invocation or sandbox operation: a stable code, a sentence, optional details.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SandboxError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl SandboxError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(codes::ACTION_FAILED, message)
    }

    pub fn manifest(message: impl Into<String>) -> Self {
        Self::new(codes::MANIFEST_INVALID, message)
    }

    /// Whether this is one of the `budget.*` codes (those write an incident bundle).
    pub fn is_budget(&self) -> bool {
        self.code.starts_with("budget.")
    }

    pub fn to_value(&self) -> Value {
        let mut v = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}
