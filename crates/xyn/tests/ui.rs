#![allow(clippy::unwrap_used)]
//! Browser tests of the Xyn Core UI: headless Chromium (Debian's `/usr/bin/chromium`) driven by
//! `playwright-core` (npm, `crates/xyn-web/ui`), against the real binary. The script is
//! `crates/xyn-web/ui/browser/ui.test.mjs`; it saves a screenshot of every page to
//! `target/ui-screenshots/` in the repository. `.ci/run` installs Chromium and the npm
//! packages; when one is missing this test fails and says what to install — it never skips.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Node, repo_root};

const BP: &str = r#"
id: bp.ui.gate
name: UI gate
trigger:
  event_type: demo.ui
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
  - kind: transform
    id: finish
    expr: '.steps.greet.outputs.message'
outputs:
  - name: message
    value: "{{steps.greet.outputs.message}}"
"#;

/// The launcher form's blueprint: a required input and optional ones with defaults of each type.
const FORM_BP: &str = r#"
id: bp.ui.form
name: UI form
trigger:
  event_type: demo.ui.form
inputs:
  - name: who
    type: string
    description: Who to greet
  - name: greeting
    type: string
    default: hello
  - name: times
    type: integer
    default: 1
  - name: loud
    type: boolean
    default: false
plan:
  - kind: transform
    id: greet
    template:
      message: "{{inputs.greeting}} {{inputs.who}} x{{inputs.times}}"
outputs:
  - name: message
    value: "{{steps.greet.outputs.message}}"
"#;

/// A step whose output is text an LLM could have written (Markdown, and an attack in it).
const MD_BP: &str = r#"
id: bp.ui.md
name: UI markdown
trigger:
  event_type: demo.ui.md
inputs:
  - name: text
    type: string
plan:
  - kind: transform
    id: answer
    template:
      answer: "{{inputs.text}}"
outputs:
  - name: answer
    value: "{{steps.answer.outputs.answer}}"
"#;

fn require(ok: bool, what: &str) {
    assert!(ok, "{what} (.ci/run installs it; this test does not skip)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_works_in_a_real_browser() {
    let ui = repo_root().join("crates/xyn-web/ui");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    require(
        Path::new(&chromium).exists(),
        &format!("Chromium is missing at {chromium}: `apt-get install chromium`"),
    );
    require(
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "Node.js is missing: `apt-get install nodejs npm`",
    );
    require(
        ui.join("node_modules/playwright-core/package.json")
            .exists(),
        &format!(
            "playwright-core is missing: `npm ci --prefix {}`",
            ui.display()
        ),
    );
    let shots = repo_root().join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);

    let node = Node::builder()
        .blueprint("ui.yaml", BP)
        .blueprint("form.yaml", FORM_BP)
        .blueprint("md.yaml", MD_BP)
        .start();
    let url = node.url.clone();
    let script = ui.join("browser/ui.test.mjs");
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
    for page in [
        "events",
        "runs",
        "approvals",
        "launch",
        "blueprints",
        "drafts",
        "artifacts",
        "footprints",
        "health",
        "operator",
        "search",
    ] {
        for width in ["1280", "390", "dark-1280", "light-1280", "dark-390"] {
            assert!(
                shots.join(format!("{page}-{width}.png")).exists(),
                "screenshot of {page} at {width}"
            );
        }
    }
    eprintln!("UI screenshots: {}", shots.display());
}
