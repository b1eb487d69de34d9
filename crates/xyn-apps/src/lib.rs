//! Apps on the node: small web apps in Lua or JavaScript (HULL-style), run in the same
//! sealed sandbox workers as actions.
//!
//! An app is a directory with `xyn-app.toml` ([`AppManifest`]: `name`, `runtime`, `entry`,
//! optional `description`, and the `[capabilities]` / `[limits]` of actions, limits per
//! request). Its entry registers routes (`app.get("/users/:id", fn)`, `app.post`, `app.put`,
//! `app.delete`, `app.use(method, pattern, mw)`); the [`router`] resolves each request in the
//! node and [`host::AppHost`] hands it to a worker. The HTTP edge that parses requests is
//! `xyn-web`'s.
//!
//! *Architecture Invariant:* app code never runs in the node process.

pub mod host;
pub mod router;

pub use host::{AppHost, AppRequest, AppResponse, HostConfig};
pub use router::{Registration, Resolved, Router};
pub use xyn_sandbox::manifest::{APP_MANIFEST_FILE, AppManifest, valid_app_name};

/// Stable error codes of apps.
pub mod codes {
    /// A handler ran out of its per-request budget (CPU, memory, time) and was stopped: 503.
    pub const HANDLER_STOPPED: &str = "app.handler_stopped";
    /// The app failed (did not load, threw outside a handler, answered garbage): 500.
    pub const APP_FAILED: &str = "app.failed";
    pub const NOT_FOUND: &str = "app.not_found";
    pub const METHOD_NOT_ALLOWED: &str = "app.method_not_allowed";
}
