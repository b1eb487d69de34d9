//! The node's repositories against the real `git`: what gitoxide writes must be what Git
//! reads (log, trailers, contents, fsck), and names, paths and clone sources that would leave
//! the repositories directory are refused.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use xyn_git::repo::codes;
use xyn_git::{Provenance, Repos};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn files(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect()
}

fn who(run: &str) -> Provenance {
    Provenance {
        actor: "alice".into(),
        run_id: Some(run.into()),
        step_id: Some("step-1".into()),
    }
}

#[test]
fn commits_are_read_by_git_with_the_run_in_their_trailers() {
    let dir = tempfile::tempdir().unwrap();
    let repos = Repos::new(dir.path().join("repos"));
    assert_eq!(repos.init("app").unwrap()["created"], true);
    assert_eq!(repos.init("app").unwrap()["created"], false);
    let empty = repos.log("app", None, 10).unwrap();
    assert_eq!(empty["commits"].as_array().unwrap().len(), 0);

    let c1 = repos
        .commit(
            "app",
            None,
            "Add the service",
            &files(&[
                ("README.md", Some("hello\n")),
                ("src/main.rs", Some("fn main() {}\n")),
            ]),
            &who("run-1"),
        )
        .unwrap();
    let c2 = repos
        .commit(
            "app",
            None,
            "Change and remove",
            &files(&[("README.md", Some("hello\nworld\n")), ("src/main.rs", None)]),
            &who("run-2"),
        )
        .unwrap();
    // Nothing to change: no commit.
    let same = repos
        .commit(
            "app",
            None,
            "Again",
            &files(&[("README.md", Some("hello\nworld\n"))]),
            &who("run-3"),
        )
        .unwrap();
    assert_eq!(same["changed"], false);
    assert_eq!(same["commit"], c2["commit"]);

    let gd = repos.path_of("app").unwrap();
    let head = git(&gd, &["rev-parse", "HEAD"]);
    assert_eq!(head.trim(), c2["commit"].as_str().unwrap());
    assert_eq!(
        git(&gd, &["rev-parse", "HEAD~1"]).trim(),
        c1["commit"].as_str().unwrap()
    );
    assert_eq!(
        git(&gd, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
    assert_eq!(
        git(&gd, &["log", "-1", "--format=%an <%ae>"]).trim(),
        "alice <alice@xyn.invalid>"
    );
    let trailers = git(
        &gd,
        &["log", "-1", "--format=%(trailers:key=Xyn-Run,valueonly)"],
    );
    assert_eq!(trailers.trim(), "run-2");
    assert_eq!(git(&gd, &["show", "HEAD:README.md"]), "hello\nworld\n");
    assert_eq!(
        git(&gd, &["ls-tree", "-r", "--name-only", "HEAD"]).trim(),
        "README.md"
    );
    git(&gd, &["fsck", "--strict"]);

    // Our diff agrees with Git's about what changed.
    let (summary, text) = repos.diff("app", None, None).unwrap();
    let changes = summary["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{summary}");
    assert_eq!(changes[0]["path"], "README.md");
    assert_eq!(changes[0]["status"], "modified");
    assert_eq!(changes[0]["added"], 1);
    assert_eq!(changes[1]["status"], "deleted");
    assert!(text.contains("+world"), "{text}");
    assert!(text.contains("-fn main() {}"), "{text}");
    let names = git(&gd, &["diff", "--name-status", "HEAD~1", "HEAD"]);
    assert_eq!(names, "M\tREADME.md\nD\tsrc/main.rs\n");

    // Log and checkout, by branch, full and short ids.
    let log = repos.log("app", None, 10).unwrap();
    let commits = log["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 2);
    assert_eq!(commits[0]["run_id"], "run-2");
    assert_eq!(commits[1]["run_id"], "run-1");
    assert_eq!(commits[1]["summary"], "Add the service");
    let short = &c1["commit"].as_str().unwrap()[..8];
    let old = repos.checkout("app", Some(short), None).unwrap();
    assert_eq!(old["files"]["src/main.rs"], "fn main() {}\n");
    let only = repos
        .checkout("app", Some("main"), Some("README.md"))
        .unwrap();
    assert_eq!(only["files"].as_object().unwrap().len(), 1);
    assert_eq!(
        repos.checkout("app", Some("nope"), None).unwrap_err().code,
        codes::REV_NOT_FOUND
    );

    // A clone of a node repository has the same history, and Git can read it.
    let cl = repos.clone_from("repo:app", "app-copy").unwrap();
    assert_eq!(cl["head"], c2["commit"]);
    let cd = repos.path_of("app-copy").unwrap();
    assert_eq!(git(&cd, &["rev-parse", "HEAD"]).trim(), head.trim());
    git(&cd, &["fsck", "--strict"]);
    assert_eq!(
        repos.clone_from("repo:app", "app-copy").unwrap_err().code,
        codes::REPO_EXISTS
    );
}

#[test]
fn names_paths_and_clone_sources_cannot_leave_the_repositories_directory() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    // A repository outside the node, made by git, with a hook that must never come along.
    let src = outside.path().join("src.git");
    assert!(
        Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&src)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(
        src.join("hooks/post-update"),
        "#!/bin/sh\ntouch /tmp/pwned\n",
    )
    .unwrap();

    let allowed = tempfile::tempdir().unwrap();
    let ok_src = allowed.path().join("ok.git");
    assert!(
        Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&ok_src)
            .status()
            .unwrap()
            .success()
    );
    let repos =
        Repos::new(dir.path().join("repos")).with_clone_sources(vec![allowed.path().to_path_buf()]);

    for bad in ["../evil", "/tmp/x", "a/b", ".git", ""] {
        assert_eq!(
            repos.init(bad).unwrap_err().code,
            codes::INVALID_REPO,
            "{bad:?}"
        );
    }
    repos.init("r").unwrap();
    for bad in [
        "../../escape",
        "/etc/passwd",
        ".git/config",
        "a/../../b",
        "x/.git/hooks/pre-commit",
    ] {
        let e = repos
            .commit("r", None, "x", &files(&[(bad, Some("boom"))]), &who("run"))
            .unwrap_err();
        assert_eq!(e.code, codes::INVALID_PATH, "{bad:?}");
    }
    for bad in ["../main", "-x", "a..b"] {
        let e = repos
            .commit(
                "r",
                Some(bad),
                "x",
                &files(&[("f", Some("1"))]),
                &who("run"),
            )
            .unwrap_err();
        assert_eq!(e.code, codes::INVALID_PATH, "{bad:?}");
    }
    assert!(!dir.path().join("escape").exists());

    // Local clone sources: only under the configured directories, also through a symlink.
    let e = repos
        .clone_from(src.to_str().unwrap(), "stolen")
        .unwrap_err();
    assert_eq!(e.code, codes::SOURCE_DENIED);
    std::os::unix::fs::symlink(&src, allowed.path().join("link.git")).unwrap();
    let e = repos
        .clone_from(allowed.path().join("link.git").to_str().unwrap(), "stolen")
        .unwrap_err();
    assert_eq!(e.code, codes::SOURCE_DENIED);
    assert_eq!(
        repos
            .clone_from("relative/path", "stolen")
            .unwrap_err()
            .code,
        codes::SOURCE_DENIED
    );
    assert_eq!(
        repos.clone_from("repo:../x", "stolen").unwrap_err().code,
        codes::INVALID_REPO
    );
    repos.clone_from(ok_src.to_str().unwrap(), "fine").unwrap();
    assert!(
        !repos
            .path_of("fine")
            .unwrap()
            .join("hooks/post-update")
            .exists()
    );
    assert_eq!(
        repos
            .commit("nope", None, "x", &files(&[("f", Some("1"))]), &who("r"))
            .unwrap_err()
            .code,
        codes::REPO_NOT_FOUND
    );
}

#[test]
fn concurrent_commits_to_one_repository_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let repos = Arc::new(Repos::new(dir.path().join("repos")));
    repos.init("busy").unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let r = repos.clone();
            std::thread::spawn(move || {
                for j in 0..5 {
                    r.commit(
                        "busy",
                        None,
                        &format!("commit {i}/{j}"),
                        &files(&[(&format!("t{i}/f{j}"), Some("x"))]),
                        &who(&format!("run-{i}")),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let gd = repos.path_of("busy").unwrap();
    assert_eq!(git(&gd, &["rev-list", "--count", "HEAD"]).trim(), "40");
    assert_eq!(
        git(&gd, &["ls-tree", "-r", "--name-only", "HEAD"])
            .lines()
            .count(),
        40
    );
}
