#![allow(clippy::unwrap_used)]
//! Browser tests of the approvals inbox (its live count, deciding from a card), retry from a
//! failed step and re-run with an edited input: headless Chromium driven by `playwright-core`
//! (`crates/xyn-web/ui/browser/inbox.test.mjs`) against the real binary. Screenshots go to
//! `target/ui-screenshots/`. Like `tests/ui.rs`, it never skips: a missing Chromium or npm
//! package fails it with what to install.

mod support;

use support::Node;
use support::browser::{self, Browser};
use support::fixture::Fixture;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_retry_and_rerun_work_in_a_real_browser() {
    let chromium = Browser::require();
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
    let shots = browser::screenshots();
    let stdout = chromium.run(&node, "inbox.test.mjs", &shots).await;
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
