#![allow(clippy::unwrap_used)]
//! The Checkmk integration as the docs give it (examples/integrations/checkmk): Checkmk's
//! notification script posts an alert to `/hooks/checkmk`, the remediation blueprint looks at
//! the host over SSH (a real OpenSSH server of the test's own), waits for a person, then
//! cleans up. Attacked too: a delivery without the source's secret, an alert naming a host the
//! policy does not list, and the SSH key never appearing anywhere the node writes.

#[path = "../../xyn-actions/tests/sshd/mod.rs"]
mod sshd;
#[path = "support/mod.rs"]
mod support;

use std::process::Command;

use serde_json::json;
use support::{Node, repo_root};

const BP: &str = "bp.checkmk.remediate_filesystem";
const CACHE: &str = "/var/tmp/xyn-app-cache";

/// Runs the example's notification script as Checkmk would: the context in NOTIFY_* variables.
fn notify(node: &Node, secret: &str, context: &[(&str, &str)]) -> (i32, String) {
    let mut c = Command::new("python3");
    c.arg(repo_root().join("examples/integrations/checkmk/notify-xyn.py"))
        .env("XYN_HOOK_URL", format!("{}/hooks/checkmk", node.url))
        .env("XYN_HOOK_CHECKMK_SECRET", secret);
    for (k, v) in context {
        c.env(format!("NOTIFY_{k}"), v);
    }
    let out = c.output().expect("python3");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn alert<'a>(host: &'a str, port: &'a str, state: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("WHAT", "SERVICE"),
        ("HOSTNAME", "web-1"),
        ("HOSTADDRESS", host),
        ("HOST_SSH_PORT", port),
        ("SERVICEDESC", "Filesystem /var"),
        ("SERVICESTATE", state),
        ("SERVICEOUTPUT", "CRIT - 97.1% used (19.4 of 20.0 GB)"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkmk_alert_is_remediated_over_ssh_after_approval() {
    let sshd = sshd::Sshd::start();
    let port = sshd.port.to_string();
    let key = std::fs::read_to_string(sshd.path("client_ed25519")).unwrap();
    let example = repo_root().join("examples/integrations/checkmk");
    let bp = std::fs::read_to_string(example.join("remediate-filesystem.yaml")).unwrap();
    // The example's xyn.toml with this machine's host, account and the server's key.
    let toml = std::fs::read_to_string(example.join("xyn.toml"))
        .unwrap()
        .replace("user = \"xyn-remediation\"", "user = \"root\"")
        .replace(
            "allow = [\"web-1.internal\", \"web-2.internal:2222\", \"10.20.0.15\"]",
            &format!(
                "allow = [\"127.0.0.1:{port}\"]\nhost_keys = [{:?}]",
                sshd.host_key_line()
            ),
        );
    assert!(
        toml.contains("root") && toml.contains("host_keys"),
        "{toml}"
    );
    let secret = "checkmk-hook-secret-5c1e";
    let node = Node::builder()
        .blueprint("remediate-filesystem.yaml", &bp)
        .toml(&toml)
        .env("XYN_HOOK_CHECKMK_SECRET", secret)
        .start();
    let put = support::client()
        .put(format!(
            "{}/api/v1/secrets/sys/local/integrations/checkmk-ssh",
            node.url
        ))
        .json(&json!({"value": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{:?}", put.text().await);
    std::fs::create_dir_all(CACHE).unwrap();
    std::fs::write(format!("{CACHE}/old-build.tar"), "x".repeat(4096)).unwrap();

    // A delivery without the source's secret is refused, and starts nothing.
    let (code, out) = notify(
        &node,
        "not-the-secret",
        &alert("127.0.0.1", &port, "CRITICAL"),
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("401"), "{out}");
    // An alert that is not a filesystem CRITICAL starts nothing (the trigger's filter).
    let (code, out) = notify(&node, secret, &alert("127.0.0.1", &port, "WARNING"));
    assert_eq!(code, 0, "{out}");

    let (code, out) = notify(&node, secret, &alert("127.0.0.1", &port, "CRITICAL"));
    assert_eq!(code, 0, "{out}");
    let run_id = node.the_run_of(BP).await;
    node.until_step_status(&run_id, "approve", "waiting", 30)
        .await;
    let diagnose = node.step(&run_id, "diagnose").await;
    assert_eq!(diagnose["status"], "completed", "{diagnose}");
    let df = diagnose["outputs"]["stdout"].as_str().unwrap_or_default();
    assert!(
        df.contains("/var/tmp") || df.contains("Filesystem"),
        "{diagnose}"
    );
    // ssh.run masks its credential fields in the recorded input.
    assert_eq!(
        diagnose["inputs"]["private_key"], "[REDACTED]",
        "{diagnose}"
    );
    let run = node.run(&run_id).await;
    assert_eq!(run["status"], "waiting", "{run}");
    assert_eq!(run["actor"], "hook:checkmk");
    let (s, v) = node
        .post(
            &format!("/api/v1/runs/{run_id}/steps/approve/approve"),
            json!({"comment": "go"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let run = node
        .until(30, "the run to complete", || async {
            let r = node.run(&run_id).await;
            (r["status"] == "completed" || r["status"] == "failed").then_some(r)
        })
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(
        std::fs::read_dir(CACHE).unwrap().next().is_none(),
        "the cache was cleared"
    );
    let runs = node.runs_of(BP).await;
    assert_eq!(
        runs.len(),
        1,
        "only the CRITICAL alert with the secret started a run"
    );

    // An alert naming a host the policy does not list fails before anything connects.
    let (code, out) = notify(&node, secret, &alert("169.254.169.254", "22", "CRITICAL"));
    assert_eq!(code, 0, "{out}");
    let denied = node
        .until(30, "the second run to fail", || async {
            node.runs_of(BP)
                .await
                .into_iter()
                .find(|r| r["run_id"] != json!(run_id) && r["status"] == "failed")
        })
        .await;
    let id = denied["run_id"].as_str().unwrap();
    let step = node.step(id, "diagnose").await;
    assert_eq!(step["error"]["code"], "ssh.denied", "{step}");

    // The key is in the encrypted store only: not in the database, events, outputs or logs.
    let body: String = key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    let needle = &body[..40];
    let events = node.get("/api/v1/events?limit=500").await.1;
    assert!(!events.to_string().contains(needle));
    assert!(!node.stdout_log().contains(needle) && !node.stderr().contains(needle));
    let hits = support::files_holding(&node.data_dir(), needle);
    assert!(hits.is_empty(), "the key in {hits:?}");
}
