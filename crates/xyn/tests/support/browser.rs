//! Browser tests: the UI's scripts in `crates/xyn-web/ui/browser/` drive Debian's Chromium with
//! playwright-core under Node.js, against a running node. `.ci/run` installs all three; a test
//! that finds one missing fails with the command that installs it (it never skips).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Node, repo_root, tail};

/// Where screenshots go: `target/ui-screenshots` in the checkout.
pub fn screenshots() -> PathBuf {
    repo_root().join("target/ui-screenshots")
}

/// Chromium, Node.js and the UI's npm packages, checked to be there.
pub struct Browser {
    ui: PathBuf,
    chromium: String,
}

fn require(ok: bool, what: &str) {
    assert!(ok, "{what} (.ci/run installs it; this test does not skip)");
}

impl Browser {
    pub fn require() -> Self {
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
        Browser { ui, chromium }
    }

    /// Runs `browser/<script>` against `node`, screenshots into `shots`, asserts that every
    /// check passed (the node's log tail is in the failure message) and returns its output.
    pub async fn run(&self, node: &Node, script: &str, shots: &Path) -> String {
        let script = self.ui.join("browser").join(script);
        let (url, shots_dir, chromium) =
            (node.url.clone(), shots.to_path_buf(), self.chromium.clone());
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
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "browser tests failed (screenshots in {}):\n{stdout}\n{stderr}\n--- node log\n{}",
            shots.display(),
            tail(&node.stdout_log(), 30)
        );
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
        stdout
    }
}
