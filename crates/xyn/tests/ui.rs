#![allow(clippy::unwrap_used)]
//! Browser tests of the Xyn Core UI: headless Chromium (Debian's `/usr/bin/chromium`) driven by
//! `playwright-core` (npm, `crates/xyn-web/ui`), against the real binary. The script is
//! `crates/xyn-web/ui/browser/ui.test.mjs`; it saves a screenshot of every page to
//! `target/ui-screenshots/` in the repository. `.ci/run` installs Chromium and the npm
//! packages; when one is missing this test fails and says what to install — it never skips.

mod support;

use support::Node;
use support::browser::{self, Browser};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_works_in_a_real_browser() {
    let chromium = Browser::require();
    let shots = browser::screenshots();
    let _ = std::fs::remove_dir_all(&shots);

    let node = Node::builder()
        .blueprint("ui.yaml", BP)
        .blueprint("form.yaml", FORM_BP)
        .blueprint("md.yaml", MD_BP)
        .start();
    chromium.run(&node, "ui.test.mjs", &shots).await;
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
    // The blueprint page: its diagram and version diff, in both themes and at phone width.
    for name in ["blueprint", "blueprint-diff"] {
        for width in [
            "1280",
            "390",
            "dark-1280",
            "light-1280",
            "dark-390",
            "light-390",
        ] {
            assert!(
                shots.join(format!("{name}-{width}.png")).exists(),
                "screenshot of {name} at {width}"
            );
        }
    }
    eprintln!("UI screenshots: {}", shots.display());
}
