//! Budgets per invocation: the deployment's defaults, overridden per action by `[limits]`.

use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestLimits, RuntimeKind};

/// The budgets one invocation runs under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall clock, from the start of the invocation.
    pub timeout_ms: u64,
    /// Linear memory (wasm) or interpreter heap (Lua, QuickJS).
    pub memory_bytes: u64,
    /// CPU: wasm fuel units, Lua VM instructions, QuickJS interrupt ticks × 10,000.
    pub fuel: u64,
    /// Largest output (serialized JSON), in bytes.
    pub max_output_bytes: u64,
    /// wasm: most elements across tables.
    pub table_elements: u64,
    /// wasm: most instances per invocation.
    pub max_instances: u64,
    /// Stack of the guest (wasm stack, QuickJS stack).
    pub stack_bytes: u64,
}

/// The deployment's defaults (x07-wasm's: fuel 200,000,000; memory 128 MiB for wasm;
/// tables 131,072 elements; stack 1 MiB) and 64 MiB for Lua and QuickJS heaps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentLimits {
    pub timeout_ms: u64,
    pub wasm_memory_mb: u64,
    pub script_memory_mb: u64,
    pub fuel: u64,
    pub max_output_bytes: u64,
    pub table_elements: u64,
    pub max_instances: u64,
    pub stack_bytes: u64,
}

impl Default for DeploymentLimits {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            wasm_memory_mb: 128,
            script_memory_mb: 64,
            fuel: 200_000_000,
            max_output_bytes: 1 << 20,
            table_elements: 131_072,
            max_instances: 4,
            stack_bytes: 1 << 20,
        }
    }
}

impl DeploymentLimits {
    /// The limits of one action: its manifest's values where set, these defaults elsewhere.
    pub fn resolve(&self, runtime: RuntimeKind, m: &ManifestLimits) -> Limits {
        let default_mb = match runtime {
            RuntimeKind::Wasm => self.wasm_memory_mb,
            RuntimeKind::Lua | RuntimeKind::Js => self.script_memory_mb,
        };
        Limits {
            timeout_ms: m.timeout_ms.unwrap_or(self.timeout_ms),
            memory_bytes: m.memory_mb.unwrap_or(default_mb) << 20,
            fuel: m.fuel.unwrap_or(self.fuel),
            max_output_bytes: m.max_output_bytes.unwrap_or(self.max_output_bytes),
            table_elements: m.table_elements.unwrap_or(self.table_elements),
            max_instances: self.max_instances,
            stack_bytes: self.stack_bytes,
        }
    }
}

/// What an invocation used, for the report and the incident bundle.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub wall_us: u64,
    /// CPU units consumed (same unit as `Limits::fuel`).
    pub fuel: u64,
    /// Peak memory seen (wasm linear memory; interpreter heap for Lua/QuickJS).
    pub memory_bytes: u64,
    pub output_bytes: u64,
}
