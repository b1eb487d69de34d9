//! Git actions on the real node: a run commits files it computed from its event, diffs and
//! logs them; `git` reads the repository and finds the run's id in the commit's trailer and
//! the run's actor as the author. Event data that names a path outside the repository or
//! another repository directory fails the step with its code and writes nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use serde_json::json;
use support::Node;

const BP: &str = r#"
id: bp.git.change
trigger: {event_type: change.requested}
inputs:
  - {name: repo, type: string}
  - {name: path, type: string}
  - {name: content, type: string}
plan:
  - {kind: action_task, id: init, action: git.repo.init, with: {repo: "{{inputs.repo}}"}}
  - kind: transform
    id: files
    expr: '{files: {(.inputs.path): .inputs.content}}'
  - kind: action_task
    id: commit
    action: git.commit
    with: {repo: "{{inputs.repo}}", message: "Apply the requested change", files: "{{steps.files.outputs.files}}"}
  - {kind: action_task, id: diff, action: git.diff, with: {repo: "{{inputs.repo}}"}}
  - {kind: action_task, id: log, action: git.log, with: {repo: "{{inputs.repo}}", limit: 5}}
"#;

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_commits_diffs_and_logs_with_its_provenance() {
    let node = Node::builder().blueprint("git.yaml", BP).start();
    let data = json!({"repo": "config", "path": "hosts/web-1.conf", "content": "max_conn = 64\n"});
    node.emit("change.requested", data).await;
    let run = node.the_run_of("bp.git.change").await;
    let r = node.until_run_status(&run, "completed", 60).await;
    let commit = node.step(&run, "commit").await;
    let id = commit["outputs"]["commit"].as_str().unwrap().to_string();
    assert_eq!(commit["outputs"]["changed"], true, "{commit}");

    let gd = node.data_dir().join("repos/config.git");
    assert_eq!(git(&gd, &["rev-parse", "HEAD"]).trim(), id);
    let trailer = git(
        &gd,
        &["log", "-1", "--format=%(trailers:key=Xyn-Run,valueonly)"],
    );
    assert_eq!(trailer.trim(), run, "{r}");
    let actor = r["actor"].as_str().unwrap();
    assert_eq!(git(&gd, &["log", "-1", "--format=%an"]).trim(), actor);
    assert_eq!(
        git(&gd, &["show", "HEAD:hosts/web-1.conf"]),
        "max_conn = 64\n"
    );

    // The diff is an artifact of the step; the log names the run.
    let diff = node.step(&run, "diff").await;
    assert_eq!(
        diff["outputs"]["changes"][0]["path"], "hosts/web-1.conf",
        "{diff}"
    );
    assert_eq!(diff["outputs"]["changes"][0]["status"], "added");
    let art = diff["outputs"]["artifact_id"].as_str().unwrap();
    let text = node
        .get_text(&format!("/api/v1/artifacts/{art}/download"))
        .await;
    assert!(text.contains("+max_conn = 64"), "{text}");
    // The run page shows the commit it made and the diff, with the diff's artifact.
    let page = node.get_text(&format!("/ui/runs/{run}")).await;
    assert!(page.contains("data-testid=\"run-commit\""), "{page}");
    assert!(page.contains(&id[..12]) && page.contains("Apply the requested change"));
    assert!(page.contains(&format!("/ui/artifacts/{art}")) && page.contains("hosts/web-1.conf"));
    let log = node.step(&run, "log").await;
    assert_eq!(
        log["outputs"]["commits"][0]["run_id"],
        run.as_str(),
        "{log}"
    );

    // Hostile event data: a path out of the repository, and a repository name that is a path.
    node.emit(
        "change.requested",
        json!({"repo": "config", "path": "../../../escape", "content": "x"}),
    )
    .await;
    node.emit(
        "change.requested",
        json!({"repo": "../outside", "path": "f", "content": "x"}),
    )
    .await;
    let runs = node.runs_of("bp.git.change").await;
    assert_eq!(runs.len(), 3);
    let mut codes = Vec::new();
    for r in runs.iter().filter(|r| r["run_id"] != run.as_str()) {
        let id = r["run_id"].as_str().unwrap();
        node.until_run_status(id, "failed", 60).await;
        let failed: Vec<_> = node
            .steps(id)
            .await
            .into_iter()
            .filter(|s| s["status"] == "failed")
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        codes.push(
            failed[0]["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    codes.sort();
    assert_eq!(codes, ["action.input_invalid", "git.invalid_path"]);
    assert_eq!(git(&gd, &["rev-list", "--count", "HEAD"]).trim(), "1");
    assert!(!node.data_dir().join("escape").exists());
    assert!(!node.data_dir().join("outside.git").exists());
    assert!(!node.data_dir().parent().unwrap().join("escape").exists());
}
