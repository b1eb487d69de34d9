//! The CLI as a new user meets it: it finds the node from xyn.toml on any port, says what to
//! do about a missing token, documents every flag, and names its user without `$USER`.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{BIN, Node};

const GATE_BP: &str = r#"
id: bp.t.cli
name: CLI test
trigger:
  event_type: demo.cli
plan:
  - kind: gate
    id: approve
    mode: manual
    message: "Approve?"
"#;

/// The CLI in `dir` with none of the node-finding or auth variables of the test's own
/// environment; `env` adds some back.
fn xyn(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("XYN_URL")
        .env_remove("XYN_CONFIG")
        .env_remove("XYN_API_TOKEN")
        .env_remove("XYN_LISTEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `xyn serve` started the way the quick start does (no --listen, no XYN_URL): only
/// `[web] listen` in ./xyn.toml names the port; then `xyn run list` in the same directory, with
/// no XYN_URL either, must reach it.
#[test]
fn run_list_finds_a_node_on_another_port_from_xyn_toml_alone() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("xyn.toml"),
        format!("[web]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir", "data", "--blueprints", "blueprints"])
        .current_dir(dir.path())
        .env_remove("XYN_URL")
        .env_remove("XYN_LISTEN")
        .env_remove("XYN_CONFIG")
        .env_remove("XYN_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("xyn listening on ") {
                let _ = tx.send(line.clone());
            }
        }
    });
    let listening = rx.recv_timeout(Duration::from_secs(60));
    let result = std::panic::catch_unwind(|| {
        let line = listening.expect("xyn serve did not start");
        assert!(
            line.contains(&format!("127.0.0.1:{port}")),
            "serve ignored [web] listen: {line}"
        );
        let (code, out, err) = xyn(dir.path(), &[], &["run", "list", "--json"]);
        assert_eq!(code, 0, "run list did not find the node:\n{out}\n{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert!(v["items"].is_array(), "{out}");

        // The same from another directory with --config naming the file.
        let elsewhere = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("xyn.toml");
        let (code, out, err) = xyn(
            elsewhere.path(),
            &[],
            &["run", "list", "--config", cfg.to_str().unwrap()],
        );
        assert_eq!(code, 0, "--config was not used:\n{out}\n{err}");
        // And without either, the CLI looks at 8080 and says how to point it elsewhere.
        let (code, _, err) = xyn(elsewhere.path(), &[], &["run", "list"]);
        if code != 0 {
            assert!(err.contains("XYN_URL"), "{err}");
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_node_with_auth_on_and_no_token_gets_a_hint_and_a_failure_exit() {
    let node = Node::builder()
        .env("XYN_API_TOKEN", "op-token-for-the-cli-test-0123456789")
        .start();
    let url = node.url.clone();
    let (code, out, err) = xyn(node.dir.path(), &[("XYN_URL", &url)], &["run", "list"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains("XYN_API_TOKEN") && err.contains("--token"),
        "no hint: {err}"
    );
    // A wrong token: the hint says the token was refused.
    let (code, _, err) = xyn(
        node.dir.path(),
        &[("XYN_URL", &url)],
        &["run", "list", "--token", "not-the-token-not-the-token"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("refused the token"), "{err}");
    // The right token works (so the hint is not printed on success).
    let (code, out, err) = xyn(
        node.dir.path(),
        &[
            ("XYN_URL", &url),
            ("XYN_API_TOKEN", "op-token-for-the-cli-test-0123456789"),
        ],
        &["run", "list"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("hint"), "{err}");
}

/// The subcommands listed in a help text's `Commands:` section.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A wrapped description is indented deeper than the command names.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every argument in the Arguments/Options sections of `-h` output has a description. Clap
/// starts an argument at indent 2 (`  -h, --help`, `  <FILE>`) or 6 (`      --flag`); its help
/// follows two spaces after the spec or, when it does not fit, on the next, deeper line, where
/// an undocumented argument shows only `[default: …]` / `[env: …]`.
fn undocumented(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut bad = vec![];
    let mut in_args = false;
    for (i, l) in lines.iter().enumerate() {
        if !l.starts_with(' ') {
            in_args = l.starts_with("Arguments:") || l.starts_with("Options:");
            continue;
        }
        if !in_args || !(indent(l) == 2 || indent(l) == 6) {
            continue;
        }
        let same_line = l
            .trim_start()
            .split_once("  ")
            .is_some_and(|(_, rest)| !rest.trim().is_empty());
        let next_line = lines.get(i + 1).is_some_and(|n| {
            indent(n) > 6 && !n.trim().is_empty() && !n.trim_start().starts_with('[')
        });
        if !same_line && !next_line {
            bad.push(l.to_string());
        }
    }
    bad
}

#[test]
fn every_command_flag_and_positional_has_help_text() {
    let dir = tempfile::tempdir().unwrap();
    let (code, top, _) = xyn(dir.path(), &[], &["--help"]);
    assert_eq!(code, 0);
    assert!(!top.contains("CLI and wiring"), "{top}");
    assert!(
        top.contains("XYN_URL") && top.contains("XYN_API_TOKEN"),
        "{top}"
    );
    let mut missing = vec![];
    let mut queue: Vec<Vec<String>> = subcommands(&top).into_iter().map(|c| vec![c]).collect();
    let mut seen = 0;
    while let Some(path) = queue.pop() {
        seen += 1;
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("-h");
        let (code, help, err) = xyn(dir.path(), &[], &args);
        assert_eq!(code, 0, "{path:?}: {err}");
        assert!(
            !help.contains('§'),
            "xyn {}: a section number in the help",
            path.join(" ")
        );
        for line in undocumented(&help) {
            missing.push(format!("xyn {}: {line}", path.join(" ")));
        }
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            queue.push(p);
        }
    }
    assert!(seen > 30, "only {seen} commands walked");
    assert!(missing.is_empty(), "no help text:\n{}", missing.join("\n"));
}

#[test]
fn the_actor_without_user_is_the_uids_name_not_unknown() {
    let node = Node::builder().blueprint("gate.yaml", GATE_BP).start();
    let mut cmd = Command::new(BIN);
    let out = cmd
        .args(["run", "start", "bp.t.cli", "--json"])
        .current_dir(node.dir.path())
        .env_remove("USER")
        .env_remove("XYN_API_TOKEN")
        .env("XYN_URL", &node.url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_str(&text).unwrap();
    let actor = run["actor"].as_str().unwrap_or_default().to_string();
    assert_ne!(actor, "cli:unknown");
    assert!(actor.starts_with("cli:") && actor.len() > 4, "{actor}");
    // It is the name /etc/passwd gives this process's uid (or uid:<n> when it has none).
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    let uid = uid.trim();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let expected = passwd
        .lines()
        .find(|l| l.split(':').nth(2) == Some(uid))
        .and_then(|l| l.split(':').next())
        .map_or_else(|| format!("uid:{uid}"), str::to_string);
    assert_eq!(actor, format!("cli:{expected}"));
}

/// Logs to a file (not a terminal) are JSON lines by default; XYN_LOG_FORMAT=human overrides.
#[test]
fn serve_logs_json_off_a_terminal_and_human_when_asked() {
    let is_json = |log: &str| {
        let first = log.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        serde_json::from_str::<Value>(first).is_ok_and(|v| v.is_object())
    };
    let mut json_node = Node::builder().start();
    let log = json_node.stdout_log();
    json_node.stop();
    assert!(is_json(&log), "not JSON: {log}");
    let mut human_node = Node::builder().env("XYN_LOG_FORMAT", "human").start();
    let log = human_node.stdout_log();
    human_node.stop();
    assert!(!log.trim().is_empty() && !is_json(&log), "not human: {log}");
    assert!(log.contains("INFO"), "{log}");
}
