//! Actions installed into the data directory while the node runs (`xyn action install`) are
//! taken up live: the packages directory is watched (inotify on Linux, through the `notify`
//! crate; no polling), and on a change the node's action registry is brought in line with what
//! is installed — new packages registered, replaced ones registered again (their input schema
//! may have changed), removed ones dropped. Each change is an event in the log
//! (`xyn.action.installed`, `xyn.action.removed`), so the audit trail shows when the node's
//! actions changed. Names of built-in actions are never taken over by a package.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher as _;
use serde_json::{Value, json};
use xyn_core::event::{Event, Resource};
use xyn_core::{EventId, names};
use xyn_engine::Node;
use xyn_sandbox::action::{SandboxHost, SandboxedAction};
use xyn_store::WriteBatch;

/// Changes that arrive together (an install renames a directory, then removes the old one)
/// are handled once, after this much quiet.
const SETTLE: Duration = Duration::from_millis(100);

/// The packages the node registered, by name, with the digest of the installed version.
pub type Registered = BTreeMap<String, String>;

/// The digest `xyn action install` recorded for the package in `dir` (empty when unknown).
fn digest(dir: &Path) -> String {
    std::fs::read(dir.join(".xyn/install.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["sha256"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// What is installed now, by name (packages that do not load are logged and left out).
pub fn installed(
    host: &SandboxHost,
) -> BTreeMap<String, (xyn_sandbox::manifest::Manifest, std::path::PathBuf)> {
    let mut out = BTreeMap::new();
    for item in host.layout.installed() {
        match item {
            Ok((m, dir)) => {
                out.insert(m.name.clone(), (m, dir));
            }
            Err((dir, e)) => {
                tracing::warn!(dir = %dir.display(), code = %e.code, error = %e.message,
                "installed action package cannot be loaded")
            }
        }
    }
    out
}

/// The digests of the packages `register_installed` registered at start, by name.
pub fn registered_at_start(
    host: &SandboxHost,
    names: impl IntoIterator<Item = String>,
) -> Registered {
    names
        .into_iter()
        .map(|name| {
            let sha = digest(&host.layout.package(&name));
            (name, sha)
        })
        .collect()
}

/// Watches the packages directory until the returned watcher is dropped.
pub fn watch(
    node: Node,
    host: Arc<SandboxHost>,
    mut registered: Registered,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut w = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        if r.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx.send(());
        }
    })?;
    let dir = host.layout.packages();
    std::fs::create_dir_all(&dir)?;
    w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let the burst of one install settle, then look once.
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let events = sync(&node, &host, &mut registered);
            if !events.is_empty()
                && let Err(e) = node
                    .store()
                    .commit(WriteBatch {
                        events,
                        ..Default::default()
                    })
                    .await
            {
                tracing::error!(error = %e, "cannot record the change of installed actions");
            }
        }
    });
    Ok(w)
}

/// Brings the registry in line with what is installed; the events that record the changes.
pub fn sync(node: &Node, host: &Arc<SandboxHost>, registered: &mut Registered) -> Vec<Event> {
    let now = installed(host);
    let env = node.config().env_id.clone();
    let mut events = Vec::new();
    node.update_actions(|r| {
        for (name, (m, dir)) in &now {
            let sha = digest(dir);
            let before = registered.get(name);
            if before == Some(&sha) {
                continue;
            }
            if before.is_none() && r.contains(name) {
                tracing::warn!(action = %name, "an installed package has the name of an action this node already has; it is not registered");
                continue;
            }
            let action = match SandboxedAction::new(host.clone(), m.clone(), dir.clone()) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(action = %name, code = %e.code, error = %e.message, "installed action not registered");
                    continue;
                }
            };
            r.remove(name);
            host.pool.retire(name);
            if let Err(e) = r.register(Arc::new(action)) {
                tracing::error!(action = %name, error = %e.message, "installed action not registered");
                registered.remove(name);
                continue;
            }
            tracing::info!(action = %name, sha256 = %sha, "installed action registered");
            events.push(event(
                &env,
                names::ACTION_INSTALLED,
                name,
                json!({"name": name, "runtime": m.runtime.as_str(), "version": m.version,
                       "sha256": sha, "replaced": before}),
            ));
            registered.insert(name.clone(), sha);
        }
        let gone: Vec<String> = registered
            .keys()
            .filter(|n| !now.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            r.remove(&name);
            host.pool.retire(&name);
            let sha = registered.remove(&name);
            tracing::info!(action = %name, "removed action unregistered");
            events.push(event(
                &env,
                names::ACTION_REMOVED,
                &name,
                json!({"name": name, "sha256": sha}),
            ));
        }
    });
    events
}

fn event(env: &str, name: &str, action: &str, data: Value) -> Event {
    Event {
        event_id: EventId(uuid::Uuid::now_v7()),
        event_name: name.to_string(),
        occurred_at: crate::pack_install::now(),
        env_id: env.to_string(),
        actor: "system:actions".into(),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        run_id: None,
        step_id: None,
        resource: Some(Resource {
            kind: "action".into(),
            id: action.to_string(),
        }),
        data,
    }
}
