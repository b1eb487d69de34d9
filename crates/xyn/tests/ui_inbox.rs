#![allow(clippy::unwrap_used)]
//! Browser tests of the approvals inbox (its live count, deciding from a card), retry from a
//! failed step and re-run with an edited input: headless Chromium driven by `playwright-core`
//! (`crates/xyn-web/ui/browser/inbox.test.mjs`) against the real binary. Screenshots go to
//! `target/ui-screenshots/`. Like `tests/ui.rs`, it never skips: a missing Chromium or npm
//! package fails it with what to install.

mod support;

use std::path::Path;
use std::process::Command;

use support::fixture::Fixture;
use support::{Node, repo_root};

const GATE: &str = r#"
id: bp.ui.gate
trigger:
  event_type: demo.ui.gate
inputs:
  - name: who
    type: string
plan:
  - kind: transform
    id: greet
    template:
      message: "hello {{inputs.who}}"
  - kind: gate
    id: approve
    mode: manual
    message: "Greet {{inputs.who}}?"
outputs:
  - name: message
    value: "{{steps.greet.outputs.message}}"
"#;

const HELLO: &str = r#"
id: bp.ui.hello
trigger:
  event_type: demo.ui.hello
inputs:
  - name: who
    type: string
plan:
  - kind: transform
    id: greet
    template:
      message: "hello {{inputs.who}}"
outputs:
  - name: message
    value: "{{steps.greet.outputs.message}}"
"#;

fn require(ok: bool, what: &str) {
    assert!(ok, "{what} (.ci/run installs it; this test does not skip)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_retry_and_rerun_work_in_a_real_browser() {
    let ui = repo_root().join("crates/xyn-web/ui");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    require(
        Path::new(&chromium).exists(),
        &format!("Chromium is missing at {chromium}: `apt-get install chromium`"),
    );
    require(
        ui.join("node_modules/playwright-core/package.json")
            .exists(),
        &format!(
            "playwright-core is missing: `npm ci --prefix {}`",
            ui.display()
        ),
    );
    let fx = Fixture::start().await;
    fx.fail_first("ui", 1);
    let flaky = format!(
        "id: bp.ui.flaky\ntrigger: {{event_type: demo.ui.flaky}}\nplan:\n  - kind: action_task\n    id: call\n    action: http.call\n    with: {{url: \"{}/flaky/ui\", method: POST, json: {{n: 1}}}}\n  - {{kind: transform, id: after, expr: '{{status: .steps.call.outputs.status}}'}}\n",
        fx.url
    );
    let node = Node::builder()
        .blueprint("gate.yaml", GATE)
        .blueprint("hello.yaml", HELLO)
        .blueprint("flaky.yaml", &flaky)
        .allow_http(&fx.url)
        .start();
    let shots = repo_root().join("target/ui-screenshots");
    let script = ui.join("browser/inbox.test.mjs");
    let url = node.url.clone();
    let shots_dir = shots.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .current_dir(script.parent().unwrap())
            .env("XYN_URL", url)
            .env("SCREENSHOT_DIR", &shots_dir)
            .env("CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser tests failed (screenshots in {}):\n{stdout}\n{stderr}\n--- node log\n{}",
        shots.display(),
        support::tail(&node.stdout_log(), 30)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    eprintln!("{stdout}");
    for name in [
        "approvals-1280",
        "approvals-390",
        "run-retried",
        "rerun-new-run",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }
}
