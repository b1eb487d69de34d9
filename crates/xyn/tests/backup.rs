//! `xyn backup` of a running node under load and `xyn restore` into a new data dir, through
//! the real binary: the restored node passes audit verify, has the snapshot's runs, steps,
//! events and blueprints exactly, and resumes a run that was waiting.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

mod support;

use std::path::Path;

use serde_json::json;
use support::{BIN, Node};

const GATE_BP: &str = r#"
id: bp.gate
name: Waits for a person
trigger:
  event_type: demo.gate
plan:
  - kind: gate
    id: approve
    mode: manual
    message: "Go on?"
  - kind: transform
    id: done
    expr: '"done"'
"#;

fn rows(db: &Path, sql: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let n = c.prepare(sql).unwrap().column_count();
    c.prepare(sql)
        .unwrap()
        .query_map([], |r| {
            let mut out = String::new();
            for i in 0..n {
                let v: rusqlite::types::Value = r.get(i)?;
                out.push_str(&format!("{v:?}|"));
            }
            Ok(out)
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn xyn(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env_remove("XYN_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_to_an_identical_node_that_resumes_a_waiting_run() {
    let node = Node::builder().blueprint("gate.yaml", GATE_BP).start();
    node.emit("demo.gate", json!({})).await;
    let waiting = node.the_run_of("bp.gate").await;
    node.until_step_status(&waiting, "approve", "waiting", 30)
        .await;
    let art = node
        .post(
            "/api/v1/artifacts",
            json!({"name": "a.txt", "kind": "file", "content_type": "text/plain", "content_base64": "aGVsbG8="}),
        )
        .await;
    assert!(art.0 < 300, "{:?}", art);

    // Events keep arriving while the backup is taken.
    let url = node.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let load = tokio::spawn(async move {
        let c = support::client();
        let mut n = 0u32;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let r = c
                .post(format!("{url}/api/v1/events"))
                .json(&json!({"event_name": "load.tick", "data": {"n": n}}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            n += 1;
        }
        n
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let tmp = tempfile::tempdir().unwrap();
    let bdir = tmp.path().join("backup");
    let data = node.data_dir();
    let (c, out, err) = xyn(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        bdir.to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{out}{err}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(sent > 5, "the load was light: {sent}");
    // The node kept serving and is ahead of the snapshot.
    let live_events = rows(&data.join("xyn.db"), "SELECT count(*) FROM events");
    let snap_events = rows(&bdir.join("xyn.db"), "SELECT count(*) FROM events");
    assert_ne!(
        live_events, snap_events,
        "the backup did not run while events arrived"
    );

    // A damaged backup restores nothing.
    let bad = tmp.path().join("bad");
    support_copy(&bdir, &bad);
    std::fs::write(bad.join("cursor.key"), b"tampered").unwrap();
    let restored_bad = tmp.path().join("nope");
    let (c, _, err) = xyn(&[
        "restore",
        bad.to_str().unwrap(),
        "--data-dir",
        restored_bad.to_str().unwrap(),
    ]);
    assert_eq!(c, 1);
    assert!(err.contains("sha256"), "{err}");
    assert!(!restored_bad.exists());

    let restored = tmp.path().join("restored");
    let (c, out, err) = xyn(&[
        "restore",
        bdir.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{out}{err}");
    // Refused into a data dir that has something in it.
    let (c, _, err) = xyn(&[
        "restore",
        bdir.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(c, 1, "{err}");

    for sql in [
        "SELECT seq, event_id, event_name, occurred_at, data, hash FROM events ORDER BY seq",
        "SELECT * FROM runs ORDER BY run_id",
        "SELECT * FROM steps ORDER BY run_id, step_id",
        "SELECT * FROM blueprint_versions ORDER BY blueprint_id, version",
        "SELECT * FROM artifacts ORDER BY artifact_id",
    ] {
        assert_eq!(
            rows(&bdir.join("xyn.db"), sql),
            rows(&restored.join("xyn.db"), sql),
            "{sql}"
        );
        assert!(!rows(&restored.join("xyn.db"), sql).is_empty(), "{sql}");
    }
    let (c, out, err) = xyn(&["audit", "verify", "--data-dir", restored.to_str().unwrap()]);
    assert_eq!(c, 0, "{out}{err}");

    // The restored node runs: its waiting run is still waiting and can be approved; the
    // artifact's bytes came along.
    let mut node = node;
    node.stop();
    let mut moved = Node::builder().start();
    moved.stop();
    let home = moved.data_dir();
    std::fs::remove_dir_all(&home).unwrap();
    std::fs::rename(&restored, &home).unwrap();
    moved.restart();
    let run = moved.run(&waiting).await;
    assert_eq!(run["status"], "waiting", "{run}");
    moved
        .until_step_status(&waiting, "approve", "waiting", 30)
        .await;
    let (st, body) = moved
        .post(
            &format!("/api/v1/runs/{waiting}/steps/approve/approve"),
            json!({}),
        )
        .await;
    assert!(st < 300, "{st} {body}");
    moved.until_run_status(&waiting, "completed", 30).await;
    let id = art.1["artifact_id"].as_str().unwrap();
    let r = support::client()
        .get(format!("{}/api/v1/artifacts/{id}/download", moved.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");
    let (c, out, err) = moved.cli(&["audit", "verify"]);
    assert_eq!(c, 0, "{out}{err}");
}

fn support_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            support_copy(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// A backup carries the secret store as ciphertext only unless the key file is asked for: the
/// value is nowhere in it, the restored node cannot read the secret until the key is put back,
/// and `--with-secret-key` restores a node that reads it at once.
#[test]
fn a_backup_holds_secrets_as_ciphertext_unless_the_key_is_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let value = "backup-secret-value-91c2e0";
    let (c, out, err) = xyn(&["secret", "set", "team/ops/db", value, "--data-dir", d]);
    assert_eq!(c, 0, "{out}{err}");
    let key = std::fs::read(data.join("secrets.key")).unwrap();

    let bare = tmp.path().join("bare");
    let (c, out, err) = xyn(&["backup", "--data-dir", d, "--to", bare.to_str().unwrap()]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("ciphertext only"), "{out}");
    assert!(!bare.join("secrets.key").exists());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bare.join("backup.json")).unwrap()).unwrap();
    assert_eq!(manifest["secret_key"], "left out");
    for f in std::fs::read_dir(&bare).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(value));
    }
    let restored = tmp.path().join("restored");
    let r = restored.to_str().unwrap();
    let (c, out, err) = xyn(&["restore", bare.to_str().unwrap(), "--data-dir", r]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("secrets.key"), "{out}");
    let (c, out, err) = xyn(&["secret", "get", "team/ops/db", "--data-dir", r]);
    assert_ne!(c, 0, "{out}");
    assert!(err.contains("secret.key_file_missing"), "{err}");
    assert!(
        !restored.join("secrets.key").exists(),
        "a failed read creates no key"
    );
    // The key put back by hand: the secret reads again.
    std::fs::write(restored.join("secrets.key"), &key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            restored.join("secrets.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let (c, out, err) = xyn(&["secret", "get", "team/ops/db", "--data-dir", r]);
    assert_eq!((c, out.trim()), (0, value), "{err}");

    let full = tmp.path().join("full");
    let (c, out, err) = xyn(&[
        "backup",
        "--data-dir",
        d,
        "--to",
        full.to_str().unwrap(),
        "--with-secret-key",
    ]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(full.join("secrets.key").exists());
    let again = tmp.path().join("again");
    let a = again.to_str().unwrap();
    let (c, out, err) = xyn(&["restore", full.to_str().unwrap(), "--data-dir", a]);
    assert_eq!(c, 0, "{out}{err}");
    let (c, out, err) = xyn(&["secret", "get", "team/ops/db", "--data-dir", a]);
    assert_eq!((c, out.trim()), (0, value), "{err}");
}
