//! Sandboxed actions: code Xyn did not write, run without trusting it.
//!
//! An action package (a directory with `xyn-action.toml`, see [`manifest`]) names a
//! runtime — WebAssembly (wasmtime: core modules and WASI 0.2 components implementing
//! `wit/xyn-action.wit`), Lua 5.4 (mlua) or JavaScript (QuickJS) — an entry,
//! and the capabilities it asks for. All three runtimes reach the world only through the
//! one capability layer in [`caps`], which checks every call against the manifest, counts
//! it and records each refusal. Budgets ([`limits`]) end an invocation with a stable
//! `budget.*` code and an incident bundle; the deployment's defaults and maximums come from
//! the `[sandbox]` section of `xyn.toml` ([`limits::SandboxSettings`]).
//!
//! Untrusted code runs in worker processes ([`worker`], `xyn sandbox-worker`), spawned and
//! reused by the node ([`pool`]), one action per worker; on Linux each worker seals itself
//! with Landlock (to its action's roots) and seccomp ([`seal`]) before it runs anything. [`action::SandboxedAction`] makes an
//! installed package an ordinary [`xyn_actions::Action`] that blueprints call as
//! `action_task`.
//!
//! *Architecture Invariant:* no runtime touches files, sockets, the environment or a
//! database except through `Caps::call`.
//!
//! *Architecture Invariant:* the node process never instantiates a guest runtime; guests
//! run in the sealed worker. The node only makes the HTTP requests the worker forwards,
//! after the same allowlist checks.

pub mod action;
pub mod caps;
pub mod error;
pub mod install;
pub mod limits;
pub mod manifest;
pub mod pool;
pub mod runtime;
pub mod sandbox;
pub mod seal;
pub mod worker;

pub use error::{SandboxError, codes};
pub use limits::{DeploymentLimits, Limits, MaximumLimits, SandboxSettings, Usage};
pub use manifest::{Manifest, RuntimeKind};
pub use sandbox::{InvokeReport, InvokeRequest, Package, Sandbox, SandboxConfig};
