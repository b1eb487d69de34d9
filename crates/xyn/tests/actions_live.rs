#![allow(clippy::unwrap_used)]
//! Action packages installed, replaced or removed with `xyn action install` while the node
//! runs are taken up without a restart (the node watches its packages directory), each change
//! is in the event log, a package cannot take over a built-in action's name, and `xyn blueprint
//! validate --data-dir` checks against the same actions the node has.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Node;

const LIVE_BP: &str = "id: bp.t.live\nname: Live\ntrigger:\n  event_type: test.live\nplan:\n  - kind: action_task\n    id: only\n    action: t.live\n    with: {}\n";

/// Writes a Lua package named `name` whose `handle` returns `{v = version}`.
fn lua_package(into: &Path, name: &str, version: u32) -> PathBuf {
    let dir = into.join(format!("{name}-v{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.lua"),
        format!("function handle(input) return {{v = {version}}} end\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("xyn-action.toml"),
        format!("name = \"{name}\"\nruntime = \"lua\"\nentry = \"main.lua\"\nversion = \"{version}.0.0\"\n"),
    )
    .unwrap();
    dir
}

fn install(node: &Node, pkg: &Path) {
    let data = node.data_dir();
    let (code, out, e) = node.cli(&[
        "action",
        "install",
        pkg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{e}");
}

async fn apply(node: &Node) -> (u16, Value) {
    node.post("/api/v1/blueprints", json!({"definition": LIVE_BP}))
        .await
}

async fn output_v(node: &Node) -> Value {
    let (s, r) = node
        .post(
            "/api/v1/runs",
            json!({"blueprint_ref": "bp.t.live", "inputs": {}}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let id = r["run_id"].as_str().unwrap().to_string();
    node.until_run_status(&id, "completed", 30).await;
    node.step(&id, "only").await["outputs"]["v"].clone()
}

async fn events(node: &Node, name: &str) -> Vec<Value> {
    let (s, v) = node.get(&format!("/api/v1/events?event_name={name}")).await;
    assert_eq!(s, 200, "{v}");
    v["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_installed_while_the_node_runs_are_taken_up_live() {
    let node = Node::builder().start();
    let pkgs = tempfile::tempdir().unwrap();

    // Not installed: the blueprint is refused.
    let (s, v) = apply(&node).await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("action.unknown"), "{v}");

    // Installed while the node runs: taken up within moments, no restart.
    install(&node, &lua_package(pkgs.path(), "t.live", 1));
    let t = Instant::now();
    node.until(10, "the installed action", || async {
        let (s, _) = apply(&node).await;
        (s == 201 || s == 200).then_some(Value::Null)
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "taken up after {:?}",
        t.elapsed()
    );
    assert_eq!(output_v(&node).await, json!(1));
    let ev = events(&node, "xyn.action.installed").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["resource"]["id"], "t.live");
    assert_eq!(ev[0]["data"]["version"], "1.0.0");

    // A new version replaces it.
    install(&node, &lua_package(pkgs.path(), "t.live", 2));
    node.until(10, "the second version", || async {
        (events(&node, "xyn.action.installed").await.len() == 2).then_some(Value::Null)
    })
    .await;
    assert_eq!(output_v(&node).await, json!(2));

    // A package cannot take over a built-in action: it is not registered, nothing recorded.
    install(&node, &lua_package(pkgs.path(), "http.call", 1));
    // Removed: dropped, recorded, and a run needing it fails with a stable code.
    std::fs::remove_dir_all(node.data_dir().join("actions/t.live")).unwrap();
    node.until(10, "the removal", || async {
        (!events(&node, "xyn.action.removed").await.is_empty()).then_some(Value::Null)
    })
    .await;
    let installed = events(&node, "xyn.action.installed").await;
    assert!(
        installed.iter().all(|e| e["resource"]["id"] == "t.live"),
        "a built-in name was taken over: {installed:?}"
    );
    let (s, r) = node
        .post(
            "/api/v1/runs",
            json!({"blueprint_ref": "bp.t.live", "inputs": {}}),
        )
        .await;
    if s == 201 {
        let id = r["run_id"].as_str().unwrap().to_string();
        let run = node.until_run_status(&id, "failed", 30).await;
        assert_eq!(run["error"]["cause"]["code"], "action.unknown", "{run}");
    } else {
        assert!(r.to_string().contains("action.unknown"), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blueprint_validate_sees_the_actions_of_the_data_dir() {
    let node = Node::builder().start();
    let pkgs = tempfile::tempdir().unwrap();
    let bp = pkgs.path().join("live.yaml");
    std::fs::write(&bp, LIVE_BP).unwrap();
    let data = node.data_dir();
    let validate = || {
        node.cli(&[
            "blueprint",
            "validate",
            bp.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
    };
    let (code, out, _) = validate();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("action.unknown"), "{out}");
    install(&node, &lua_package(pkgs.path(), "t.live", 1));
    let (code, out, e) = validate();
    assert_eq!(code, 0, "{out}{e}");
    assert!(out.contains("valid"), "{out}");
    // The same file against a directory with nothing installed: refused again.
    let empty = tempfile::tempdir().unwrap();
    let (code, out, _) = node.cli(&[
        "blueprint",
        "validate",
        bp.to_str().unwrap(),
        "--data-dir",
        empty.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        !empty.path().join("xyn.db").exists(),
        "validate must not create a database"
    );
}
