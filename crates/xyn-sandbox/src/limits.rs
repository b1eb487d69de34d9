//! Budgets per invocation: the deployment's defaults, overridden per action by `[limits]`.

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;
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
/// tables 131,072 elements; stack 1 MiB) and 64 MiB for Lua and QuickJS heaps, and the
/// most any action's `[limits]` may ask for. Read from the `[sandbox]` section of
/// `xyn.toml` (see [`SandboxSettings`]).
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
    /// Ceilings for an action's `[limits]`.
    #[serde(default)]
    pub maximum: MaximumLimits,
}

/// The most an action's manifest may ask for; an action asking for more is not registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaximumLimits {
    pub timeout_ms: u64,
    pub memory_mb: u64,
    pub fuel: u64,
    pub max_output_bytes: u64,
}

impl Default for MaximumLimits {
    /// The widest values a manifest can state at all.
    fn default() -> Self {
        Self {
            timeout_ms: MANIFEST_RANGE.timeout_ms.1,
            memory_mb: MANIFEST_RANGE.memory_mb.1,
            fuel: MANIFEST_RANGE.fuel.1,
            max_output_bytes: MANIFEST_RANGE.max_output_bytes.1,
        }
    }
}

/// The ranges a value may take, in a manifest's `[limits]` and in `[sandbox]`.
pub struct Ranges {
    pub timeout_ms: (u64, u64),
    pub memory_mb: (u64, u64),
    pub fuel: (u64, u64),
    pub max_output_bytes: (u64, u64),
    pub table_elements: (u64, u64),
}

pub const MANIFEST_RANGE: Ranges = Ranges {
    timeout_ms: (1, 600_000),
    memory_mb: (1, 4096),
    fuel: (1, u64::MAX / 2),
    max_output_bytes: (1, 64 << 20),
    table_elements: (1, 10_000_000),
};

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
            maximum: MaximumLimits::default(),
        }
    }
}

impl DeploymentLimits {
    /// The limits of one action: its manifest's values where set, these defaults
    /// elsewhere. A manifest value above the deployment's maximum is refused, naming the
    /// key.
    pub fn resolve(
        &self,
        runtime: RuntimeKind,
        m: &ManifestLimits,
    ) -> Result<Limits, SandboxError> {
        let max = &self.maximum;
        for (key, asked, most, max_key) in [
            ("timeout_ms", m.timeout_ms, max.timeout_ms, "timeout_ms"),
            ("memory_mb", m.memory_mb, max.memory_mb, "memory_mb"),
            ("fuel", m.fuel, max.fuel, "fuel"),
            (
                "max_output_bytes",
                m.max_output_bytes,
                max.max_output_bytes,
                "max_output_bytes",
            ),
        ] {
            if let Some(v) = asked
                && v > most
            {
                return Err(SandboxError::manifest(format!(
                    "limits.{key} = {v} exceeds the deployment's maximum \
                     (sandbox.maximum.{max_key} = {most} in xyn.toml)"
                )));
            }
        }
        Ok(self.fill(runtime, m))
    }

    /// The limits of one action without the maximum check (for reports of invocations
    /// that never started).
    pub fn fill(&self, runtime: RuntimeKind, m: &ManifestLimits) -> Limits {
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

/// The `[sandbox]` section of `xyn.toml`:
///
/// ```toml
/// [sandbox]
/// pool_size = 2                  # most sandboxed invocations at once (workers busy)
///
/// [sandbox.defaults]             # what an action gets when its manifest says nothing
/// fuel = 200000000
/// memory_mb = 128                # wasm linear memory
/// script_memory_mb = 64          # Lua and JavaScript heaps
/// timeout_ms = 10000
/// max_output_bytes = 1048576
///
/// [sandbox.maximum]              # the most an action's [limits] may ask for
/// fuel = 1000000000
/// memory_mb = 512
/// timeout_ms = 60000
/// max_output_bytes = 16777216
/// ```
///
/// Unknown keys are refused; every value is range-checked, and a default above its
/// maximum is an error naming both keys.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    pub pool_size: Option<u64>,
    /// Guests may reach the node's own listeners when their manifest names them (off: a
    /// guest can never call the node's API, whatever its `http_hosts` say).
    #[serde(default)]
    pub allow_node_api: bool,
    #[serde(default)]
    pub defaults: DefaultsSection,
    #[serde(default)]
    pub maximum: MaximumSection,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSection {
    pub fuel: Option<u64>,
    pub memory_mb: Option<u64>,
    pub script_memory_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_output_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaximumSection {
    pub fuel: Option<u64>,
    pub memory_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_output_bytes: Option<u64>,
}

/// What a sandbox worker may use beyond its action's memory budget: the runtimes
/// themselves (wasmtime's engine and compiled code, the Lua or QuickJS state, SQLite's
/// page cache up to the budget), the capability layer's buffers (a 16 MiB file read, a
/// host call's JSON), the pipe to the node. The worker's data segment (`RLIMIT_DATA`) is
/// the budget plus this; a worker that needs more is stopped and its invocation ends with
/// `budget.memory_exceeded`.
pub const WORKER_MEMORY_OVERHEAD: u64 = 256 << 20;

/// Most workers a node may run at once.
pub const MAX_POOL_SIZE: u64 = 64;
/// Workers a node runs at once unless `[sandbox] pool_size` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 2;

impl SandboxSettings {
    /// The deployment limits and the pool size these settings give, or an error naming
    /// the offending key (`sandbox.defaults.fuel`, …).
    pub fn resolve(&self) -> Result<(DeploymentLimits, usize), SandboxError> {
        let r = &MANIFEST_RANGE;
        let check = |key: &str, v: Option<u64>, (lo, hi): (u64, u64)| -> Result<(), SandboxError> {
            match v {
                Some(x) if x < lo || x > hi => Err(SandboxError::manifest(format!(
                    "sandbox.{key} = {x} is outside {lo}..={hi}"
                ))),
                _ => Ok(()),
            }
        };
        check("pool_size", self.pool_size, (1, MAX_POOL_SIZE))?;
        let d = &self.defaults;
        check("defaults.fuel", d.fuel, r.fuel)?;
        check("defaults.memory_mb", d.memory_mb, r.memory_mb)?;
        check("defaults.script_memory_mb", d.script_memory_mb, r.memory_mb)?;
        check("defaults.timeout_ms", d.timeout_ms, r.timeout_ms)?;
        check(
            "defaults.max_output_bytes",
            d.max_output_bytes,
            r.max_output_bytes,
        )?;
        let m = &self.maximum;
        check("maximum.fuel", m.fuel, r.fuel)?;
        check("maximum.memory_mb", m.memory_mb, r.memory_mb)?;
        check("maximum.timeout_ms", m.timeout_ms, r.timeout_ms)?;
        check(
            "maximum.max_output_bytes",
            m.max_output_bytes,
            r.max_output_bytes,
        )?;

        let mut limits = DeploymentLimits::default();
        let maximum = MaximumLimits {
            timeout_ms: m.timeout_ms.unwrap_or(limits.maximum.timeout_ms),
            memory_mb: m.memory_mb.unwrap_or(limits.maximum.memory_mb),
            fuel: m.fuel.unwrap_or(limits.maximum.fuel),
            max_output_bytes: m
                .max_output_bytes
                .unwrap_or(limits.maximum.max_output_bytes),
        };
        // A default above its maximum: an error when the default was set; otherwise the
        // built-in default is lowered to the maximum.
        let pick = |key: &str, set: Option<u64>, builtin: u64, max_key: &str, most: u64| match set {
            Some(v) if v > most => Err(SandboxError::manifest(format!(
                "sandbox.defaults.{key} = {v} exceeds sandbox.maximum.{max_key} = {most}"
            ))),
            Some(v) => Ok(v),
            None => Ok(builtin.min(most)),
        };
        limits.fuel = pick("fuel", d.fuel, limits.fuel, "fuel", maximum.fuel)?;
        limits.wasm_memory_mb = pick(
            "memory_mb",
            d.memory_mb,
            limits.wasm_memory_mb,
            "memory_mb",
            maximum.memory_mb,
        )?;
        limits.script_memory_mb = pick(
            "script_memory_mb",
            d.script_memory_mb,
            limits.script_memory_mb,
            "memory_mb",
            maximum.memory_mb,
        )?;
        limits.timeout_ms = pick(
            "timeout_ms",
            d.timeout_ms,
            limits.timeout_ms,
            "timeout_ms",
            maximum.timeout_ms,
        )?;
        limits.max_output_bytes = pick(
            "max_output_bytes",
            d.max_output_bytes,
            limits.max_output_bytes,
            "max_output_bytes",
            maximum.max_output_bytes,
        )?;
        limits.maximum = maximum;
        let pool = self.pool_size.map_or(DEFAULT_POOL_SIZE, |n| n as usize);
        Ok((limits, pool))
    }

    /// Parses a `[sandbox]` table (the text of the section, without its header).
    pub fn from_toml(text: &str) -> Result<SandboxSettings, SandboxError> {
        toml::from_str(text).map_err(|e| SandboxError::manifest(format!("[sandbox]: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Result<(DeploymentLimits, usize), SandboxError> {
        SandboxSettings::from_toml(text)?.resolve()
    }

    #[test]
    fn defaults_without_a_section() {
        let (l, pool) = settings("").unwrap();
        assert_eq!(l, DeploymentLimits::default());
        assert_eq!(pool, DEFAULT_POOL_SIZE);
    }

    #[test]
    fn the_section_sets_defaults_maximums_and_the_pool() {
        let (l, pool) = settings(
            "pool_size = 5\n[defaults]\nfuel = 1000\nmemory_mb = 32\nscript_memory_mb = 16\ntimeout_ms = 700\nmax_output_bytes = 2048\n[maximum]\nfuel = 5000\nmemory_mb = 64\ntimeout_ms = 900\nmax_output_bytes = 4096\n",
        )
        .unwrap();
        assert_eq!(pool, 5);
        assert_eq!(
            (
                l.fuel,
                l.wasm_memory_mb,
                l.script_memory_mb,
                l.timeout_ms,
                l.max_output_bytes
            ),
            (1000, 32, 16, 700, 2048)
        );
        assert_eq!(
            l.maximum,
            MaximumLimits {
                fuel: 5000,
                memory_mb: 64,
                timeout_ms: 900,
                max_output_bytes: 4096
            }
        );
        // Resolved for an action: its own values up to the maximum, the defaults elsewhere.
        let m = ManifestLimits {
            fuel: Some(5000),
            memory_mb: Some(64),
            ..Default::default()
        };
        let a = l.resolve(RuntimeKind::Lua, &m).unwrap();
        assert_eq!(
            (a.fuel, a.memory_bytes, a.timeout_ms),
            (5000, 64 << 20, 700)
        );
        let b = l
            .resolve(RuntimeKind::Js, &ManifestLimits::default())
            .unwrap();
        assert_eq!(b.memory_bytes, 16 << 20);
        // Above the maximum: refused, naming the manifest key and the deployment key.
        for (m, key) in [
            (
                ManifestLimits {
                    fuel: Some(5001),
                    ..Default::default()
                },
                "fuel",
            ),
            (
                ManifestLimits {
                    memory_mb: Some(65),
                    ..Default::default()
                },
                "memory_mb",
            ),
            (
                ManifestLimits {
                    timeout_ms: Some(901),
                    ..Default::default()
                },
                "timeout_ms",
            ),
            (
                ManifestLimits {
                    max_output_bytes: Some(4097),
                    ..Default::default()
                },
                "max_output_bytes",
            ),
        ] {
            let e = l.resolve(RuntimeKind::Wasm, &m).unwrap_err();
            assert_eq!(e.code, "manifest.invalid");
            assert!(e.message.starts_with(&format!("limits.{key} = ")), "{e:?}");
            assert!(
                e.message.contains(&format!("sandbox.maximum.{key}")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_lower_maximum_lowers_the_builtin_defaults() {
        let (l, _) = settings("[maximum]\nfuel = 1000\ntimeout_ms = 500\n").unwrap();
        assert_eq!((l.fuel, l.timeout_ms), (1000, 500));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("pool_size = 0", "sandbox.pool_size"),
            ("pool_size = 65", "sandbox.pool_size"),
            ("[defaults]\nfuel = 0", "sandbox.defaults.fuel"),
            ("[defaults]\nmemory_mb = 5000", "sandbox.defaults.memory_mb"),
            ("[defaults]\ntimeout_ms = 0", "sandbox.defaults.timeout_ms"),
            (
                "[maximum]\nmax_output_bytes = 0",
                "sandbox.maximum.max_output_bytes",
            ),
            ("[maximum]\nmemory_mb = 0", "sandbox.maximum.memory_mb"),
            (
                "[defaults]\nfuel = 10\n[maximum]\nfuel = 5",
                "sandbox.defaults.fuel",
            ),
            (
                "[defaults]\ntimeout_ms = 10\n[maximum]\ntimeout_ms = 5",
                "sandbox.defaults.timeout_ms",
            ),
        ] {
            let e = settings(text).unwrap_err();
            assert!(e.message.starts_with(key), "{text}: {e:?}");
        }
        for (text, word) in [
            ("pool = 3", "pool"),
            ("[defaults]\nfule = 3", "fule"),
            ("[maximum]\nscript_memory_mb = 3", "script_memory_mb"),
            ("pool_size = \"two\"", "pool_size"),
        ] {
            let e = settings(text).unwrap_err();
            assert!(e.message.contains(word), "{text}: {e:?}");
        }
    }
}
