#![allow(clippy::unwrap_used)]
//! The secret store end to end, on the real binary: the CLI on a fresh data directory (key
//! file and passphrase), the API's roles and write-only values, references in blueprints that
//! are resolved at execution and scrubbed from everything the step leaves, and the attacks:
//! a step echoing the secret back, grepping the data directory and the log for the value, a
//! wrong passphrase, a readable key file, a blueprint reaching for the passphrase, and the
//! same on PostgreSQL.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::fixture::Fixture;
use support::{BIN, Node, client, files_holding};

/// Runs `xyn secret …` on `data_dir` with extra environment; (exit code, stdout, stderr).
fn secret(
    data_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("secret")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("XYN_SECRET_PASSPHRASE")
        .env_remove("XYN_SECRET_NEW_PASSPHRASE")
        .env_remove("XYN_DATABASE_URL")
        .current_dir(data_dir.parent().unwrap())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "stdout: {}\nstderr: {}", r.1, r.2);
    r.1
}

fn fails(r: (i32, String, String), code: &str) -> String {
    assert_ne!(r.0, 0, "expected {code}; stdout: {}", r.1);
    assert!(r.2.contains(code), "expected {code}; stderr: {}", r.2);
    r.2
}

fn events(data_dir: &Path, name: &str) -> Vec<Value> {
    let c = rusqlite::Connection::open(data_dir.join("xyn.db")).unwrap();
    let mut st = c
        .prepare("SELECT actor, run_id, resource_id, data FROM events WHERE event_name = ?1 ORDER BY seq")
        .unwrap();
    st.query_map([name], |r| {
        Ok(json!({
            "actor": r.get::<_, String>(0)?,
            "run_id": r.get::<_, Option<String>>(1)?,
            "resource_id": r.get::<_, Option<String>>(2)?,
            "data": serde_json::from_str::<Value>(&r.get::<_, String>(3)?).unwrap(),
        }))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn the_cli_sets_gets_lists_and_removes_on_a_fresh_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let value = "pw-canary-5a1e0c";
    let err = ok(secret(&d, &["set", "team/payments/db", value], &[], None));
    let err = {
        let _ = err;
        let r = secret(
            &d,
            &["set", "team/payments/db", "pw-canary-second"],
            &[],
            None,
        );
        assert_eq!(r.0, 0);
        r.2
    };
    assert!(
        err.contains("process list"),
        "a value in argv is warned about: {err}"
    );
    let key = d.join("secrets.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // stdin: the safe way; one trailing newline is dropped.
    ok(secret(
        &d,
        &["set", "sys/prod/providers/openai", "--value-stdin"],
        &[],
        Some("sk-stdin-canary-77\n"),
    ));
    let file = tmp.path().join("v.txt");
    std::fs::write(&file, "from-file-canary\n").unwrap();
    ok(secret(
        &d,
        &[
            "set",
            "sys/prod/integrations/checkmk",
            "--from-file",
            file.to_str().unwrap(),
        ],
        &[],
        None,
    ));
    assert_eq!(
        ok(secret(&d, &["get", "team/payments/db"], &[], None)),
        "pw-canary-second\n"
    );
    assert_eq!(
        ok(secret(
            &d,
            &["get", "team/payments/db", "--version", "1"],
            &[],
            None
        )),
        format!("{value}\n")
    );
    assert_eq!(
        ok(secret(&d, &["get", "sys/prod/providers/openai"], &[], None)),
        "sk-stdin-canary-77\n"
    );
    assert_eq!(
        ok(secret(
            &d,
            &["get", "sys/prod/integrations/checkmk"],
            &[],
            None
        )),
        "from-file-canary\n"
    );
    let listed: Value =
        serde_json::from_str(&ok(secret(&d, &["list", "sys/", "--json"], &[], None))).unwrap();
    let paths: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["sys/prod/integrations/checkmk", "sys/prod/providers/openai"]
    );
    let all = ok(secret(&d, &["list", "--json"], &[], None));
    assert!(
        all.contains("\"versions\": 2") && !all.contains("canary"),
        "{all}"
    );
    // Paths outside the canonical shapes are refused before anything is stored.
    for bad in [
        "../etc/passwd",
        "team/a/../b",
        "user/u/x",
        "sys/prod/x",
        "team/a/b\u{0}c",
    ] {
        if bad.contains('\0') {
            continue; // argv cannot carry NUL; the unit tests cover it
        }
        fails(
            secret(&d, &["set", bad, "--value-stdin"], &[], Some("x")),
            "secret.path_invalid",
        );
    }
    fails(
        secret(&d, &["set", "team/a/empty", "--value-stdin"], &[], Some("")),
        "secret.value_invalid",
    );
    ok(secret(&d, &["rm", "team/payments/db"], &[], None));
    fails(
        secret(&d, &["get", "team/payments/db"], &[], None),
        "secret.not_found",
    );
    fails(
        secret(&d, &["rm", "team/payments/db"], &[], None),
        "secret.not_found",
    );
    // Every read and change is on record (path, actor; never the value), and the log verifies.
    let reads = events(&d, "xyn.secret.read");
    assert_eq!(reads.len(), 4);
    assert_eq!(reads[0]["resource_id"], "team/payments/db");
    assert!(reads[0]["actor"].as_str().unwrap().starts_with("cli:"));
    assert_eq!(events(&d, "xyn.secret.written").len(), 4);
    assert_eq!(events(&d, "xyn.secret.deleted").len(), 1);
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    for v in [
        value,
        "pw-canary-second",
        "sk-stdin-canary-77",
        "from-file-canary",
    ] {
        assert!(
            files_holding(&d, v).is_empty(),
            "{v} reached {:?}",
            files_holding(&d, v)
        );
    }
}

#[test]
fn a_passphrase_locks_the_store_and_a_wrong_one_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let pass = [("XYN_SECRET_PASSPHRASE", "a long passphrase 42")];
    ok(secret(
        &d,
        &["set", "team/t/x", "--value-stdin"],
        &pass,
        Some("under-passphrase-1"),
    ));
    assert!(
        !d.join("secrets.key").exists(),
        "no key file with a passphrase"
    );
    assert_eq!(
        ok(secret(&d, &["get", "team/t/x"], &pass, None)),
        "under-passphrase-1\n"
    );
    let db_before = std::fs::read(d.join("xyn.db")).unwrap();
    let wrong = [("XYN_SECRET_PASSPHRASE", "a long passphrase 43")];
    let e = fails(
        secret(&d, &["get", "team/t/x"], &wrong, None),
        "secret.wrong_passphrase",
    );
    assert!(!e.contains("under-passphrase"), "{e}");
    fails(
        secret(
            &d,
            &["set", "team/t/x", "--value-stdin"],
            &wrong,
            Some("overwritten"),
        ),
        "secret.wrong_passphrase",
    );
    fails(
        secret(&d, &["rotate-master"], &wrong, None),
        "secret.wrong_passphrase",
    );
    fails(
        secret(&d, &["get", "team/t/x"], &[], None),
        "secret.passphrase_required",
    );
    assert!(!d.join("secrets.key").exists());
    assert_eq!(
        ok(secret(&d, &["get", "team/t/x"], &pass, None)),
        "under-passphrase-1\n"
    );
    let listed = ok(secret(&d, &["list", "--json"], &pass, None));
    assert!(
        listed.contains("\"version\": 1"),
        "nothing was written: {listed}"
    );
    let _ = db_before;
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    ok(secret(
        &d,
        &["set", "team/t/x", "--value-stdin"],
        &[],
        Some("key-file-value"),
    ));
    let key = d.join("secrets.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = fails(
        secret(&d, &["get", "team/t/x"], &[], None),
        "secret.key_file_insecure",
    );
    assert!(e.contains("chmod 600"), "{e}");
    // The node refuses to start on it too.
    std::fs::create_dir_all(tmp.path().join("blueprints")).unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--blueprints",
            "blueprints",
            "--data-dir",
        ])
        .arg(&d)
        .env_remove("XYN_SECRET_PASSPHRASE")
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("secret.key_file_insecure"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        ok(secret(&d, &["get", "team/t/x"], &[], None)),
        "key-file-value\n"
    );
}

#[test]
fn rotate_master_keeps_every_secret_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    for (p, v) in [
        ("team/t/a", "rot-a-1"),
        ("team/t/a", "rot-a-2"),
        ("sys/e/providers/b", "rot-b-1"),
    ] {
        ok(secret(&d, &["set", p, "--value-stdin"], &[], Some(v)));
    }
    let old_key = std::fs::read(d.join("secrets.key")).unwrap();
    let r: Value =
        serde_json::from_str(&ok(secret(&d, &["rotate-master", "--json"], &[], None))).unwrap();
    assert_eq!(
        (r["rewrapped"].as_u64(), r["kind"].as_str()),
        (Some(3), Some("key_file"))
    );
    assert_ne!(std::fs::read(d.join("secrets.key")).unwrap(), old_key);
    assert_eq!(ok(secret(&d, &["get", "team/t/a"], &[], None)), "rot-a-2\n");
    assert_eq!(
        ok(secret(
            &d,
            &["get", "team/t/a", "--version", "1"],
            &[],
            None
        )),
        "rot-a-1\n"
    );
    // To a passphrase.
    let newp = [("XYN_SECRET_NEW_PASSPHRASE", "the new passphrase!")];
    ok(secret(
        &d,
        &["rotate-master", "--to-passphrase"],
        &newp,
        None,
    ));
    assert!(!d.join("secrets.key").exists());
    let pass = [("XYN_SECRET_PASSPHRASE", "the new passphrase!")];
    assert_eq!(
        ok(secret(&d, &["get", "sys/e/providers/b"], &pass, None)),
        "rot-b-1\n"
    );
    // And on to another passphrase, read from stdin.
    ok(secret(
        &d,
        &["rotate-master", "--to-passphrase", "--new-passphrase-stdin"],
        &pass,
        Some("third passphrase here\n"),
    ));
    let third = [("XYN_SECRET_PASSPHRASE", "third passphrase here")];
    assert_eq!(
        ok(secret(&d, &["get", "team/t/a"], &third, None)),
        "rot-a-2\n"
    );
    fails(
        secret(&d, &["get", "team/t/a"], &pass, None),
        "secret.wrong_passphrase",
    );
    assert_eq!(events(&d, "xyn.secret.master_rotated").len(), 3);
}

const OP: &str = "op-token-0123456789abcdef";
const OWNER: &str = "owner-token-0123456789abcdef";

async fn call(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let mut rq = client().request(method, format!("{}{path}", node.url));
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let r = rq.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_values_but_never_returns_them_and_checks_roles() {
    use reqwest::Method;
    let node = Node::builder()
        .env("XYN_API_TOKEN", OP)
        .env("XYN_OWNER_TOKEN", OWNER)
        .start();
    let v = "api-canary-value-31";
    let put = |p: &str| format!("/api/v1/secrets/{p}");
    // No token, a wrong token: nothing.
    for t in [None, Some("not-a-token-000000000000")] {
        let (s, b) = call(
            &node,
            Method::PUT,
            &put("team/t/db"),
            t,
            Some(json!({"value": v})),
        )
        .await;
        assert_eq!(s, 401, "{b}");
        let (s, _) = call(&node, Method::GET, "/api/v1/secrets", t, None).await;
        assert_eq!(s, 401);
    }
    // An owner may not touch system secrets.
    let (s, b) = call(
        &node,
        Method::PUT,
        &put("sys/prod/providers/openai"),
        Some(OWNER),
        Some(json!({"value": v})),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b.contains("auth.forbidden") || b.contains("forbidden"),
        "{b}"
    );
    let (s, b) = call(
        &node,
        Method::DELETE,
        &put("sys/prod/providers/openai"),
        Some(OWNER),
        None,
    )
    .await;
    assert_eq!(s, 403, "{b}");
    // Writes answer with metadata only.
    let (s, b) = call(
        &node,
        Method::PUT,
        &put("team/t/db"),
        Some(OWNER),
        Some(json!({"value": v})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let m: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (m["path"].as_str(), m["version"].as_i64()),
        (Some("team/t/db"), Some(1))
    );
    let (s, b) = call(
        &node,
        Method::PUT,
        &put("sys/prod/providers/openai"),
        Some(OP),
        Some(json!({"value": "sk-op-canary-99"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // Percent-encoded slashes name the same path.
    let (s, b) = call(
        &node,
        Method::PUT,
        "/api/v1/secrets/team%2Ft%2Fdb",
        Some(OP),
        Some(json!({"value": v})),
    )
    .await;
    assert_eq!(
        (
            s,
            serde_json::from_str::<Value>(&b).unwrap()["version"].as_i64()
        ),
        (200, Some(2)),
        "{b}"
    );
    // Bad paths and values.
    for (p, code) in [
        ("team/t/../x", "secret.path_invalid"),
        ("nope", "secret.path_invalid"),
        ("sys/p/providers", "secret.path_invalid"),
    ] {
        let (s, b) = call(
            &node,
            Method::PUT,
            &put(p),
            Some(OP),
            Some(json!({"value": v})),
        )
        .await;
        assert!(s == 422 || s == 404 || s == 400, "{p}: {s} {b}");
        if s == 422 {
            assert!(b.contains(code), "{b}");
        }
    }
    let (s, b) = call(
        &node,
        Method::PUT,
        &put("team/t/e"),
        Some(OP),
        Some(json!({"value": ""})),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    assert!(b.contains("secret.value_invalid"), "{b}");
    let (s, b) = call(
        &node,
        Method::PUT,
        &put("team/t/e"),
        Some(OP),
        Some(json!({"value": "x", "extra": 1})),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    // Listing: operators see everything, owners the team paths; no value anywhere.
    let (_, all) = call(&node, Method::GET, "/api/v1/secrets", Some(OP), None).await;
    let (_, owners) = call(&node, Method::GET, "/api/v1/secrets", Some(OWNER), None).await;
    let n = |b: &str| {
        serde_json::from_str::<Value>(b).unwrap()["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((n(&all), n(&owners)), (2, 1), "{all} {owners}");
    // There is no route that reads a value.
    let (s, b) = call(&node, Method::GET, &put("team/t/db"), Some(OP), None).await;
    assert!(s == 405 || s == 404, "{s} {b}");
    for body in [&all, &owners, &b] {
        assert!(
            !body.contains(v) && !body.contains("sk-op-canary"),
            "{body}"
        );
    }
    let (s, doc) = call(&node, Method::GET, "/api/v1/openapi.json", Some(OP), None).await;
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(
        doc["paths"]["/api/v1/secrets/{path}"]["put"].is_object(),
        "{}",
        doc["paths"]
    );
    assert!(doc["paths"]["/api/v1/secrets"]["get"].is_object());
    // Delete, then it is gone.
    let (s, _) = call(&node, Method::DELETE, &put("team/t/db"), Some(OWNER), None).await;
    assert_eq!(s, 204);
    let (s, b) = call(&node, Method::DELETE, &put("team/t/db"), Some(OWNER), None).await;
    assert_eq!(s, 404, "{b}");
    assert!(b.contains("secret.not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_echoing_a_secret_is_scrubbed_and_the_value_is_stored_nowhere() {
    let fx = Fixture::start().await;
    let bp = format!(
        "id: echo-secret\ntrigger: {{event_type: test.secret}}\nplan:\n  - kind: action_task\n    id: call\n    action: http.call\n    with:\n      url: \"{}/echo\"\n      method: POST\n      json: {{note: 'key={{{{secret \"sys/test/providers/echo\"}}}}', again: '{{{{ secret \"sys/test/providers/echo\" }}}}'}}\n  - kind: transform\n    id: copy\n    expr: '{{\"got\": .steps.call.outputs}}'\n",
        fx.url
    );
    let value = "sk-echo-canary-4f9e2b77";
    let mut node = Node::builder()
        .blueprint("e.yaml", &bp)
        .allow_http(&fx.url)
        .env("XYN_SECRET_PASSPHRASE", "node passphrase 123")
        .start();
    let (s, b) = call(
        &node,
        reqwest::Method::PUT,
        "/api/v1/secrets/sys/test/providers/echo",
        None,
        Some(json!({"value": value})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    node.emit("test.secret", json!({})).await;
    let run_id = node.the_run_of("echo-secret").await;
    let run = node.until_run_status(&run_id, "completed", 15).await;
    // The request carried the value…
    let seen = fx.seen("/echo");
    assert!(
        seen[0].body.contains(&format!("key={value}")),
        "{}",
        seen[0].body
    );
    // …the step's inputs show the reference, its output the redaction marker with the path.
    let step = node.step(&run_id, "call").await;
    let text = step.to_string();
    assert!(!text.contains(value), "{text}");
    assert!(text.contains("[secret:sys/test/providers/echo]"), "{text}");
    assert!(
        text.contains("[redacted:sys/test/providers/echo]"),
        "{text}"
    );
    assert!(!run.to_string().contains(value));
    // The read is an audit event of the run: path, actor, version; not the value.
    let evs = node.events_of(&run_id).await;
    let reads: Vec<&Value> = evs
        .iter()
        .filter(|e| e["event_name"] == "xyn.secret.read")
        .collect();
    assert_eq!(reads.len(), 1, "one read per path per step: {evs:?}");
    assert_eq!(reads[0]["data"]["path"], "sys/test/providers/echo");
    assert_eq!(reads[0]["data"]["backend"], "local");
    assert!(reads[0]["data"]["actor"].is_string());
    assert!(!evs.iter().any(|e| e.to_string().contains(value)));
    let (_, b) = call(
        &node,
        reqwest::Method::GET,
        "/api/v1/events?limit=200",
        None,
        None,
    )
    .await;
    assert!(!b.contains(value));
    node.stop();
    let hits = files_holding(&node.data_dir(), value);
    assert!(hits.is_empty(), "the value reached {hits:?}");
    assert!(
        !node.stdout_log().contains(value),
        "the value reached the log"
    );
    assert!(!node.stderr().contains(value));
}

/// `api_key_ref`: an agent step's provider key comes from the secret store when the step runs.
/// The provider gets it (the node has no key of its own and would otherwise answer from its
/// fallback cassette); a provider echoing it back leaves only the redaction marker behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_step_takes_its_provider_key_from_the_secret_store() {
    let fx = Fixture::start().await;
    let bp = format!(
        "id: keyed\ntrigger: {{event_type: test.keyed}}\nplan:\n  - kind: agent_task\n    id: ask\n    provider: openai\n    model: gpt-4o-mini\n    prompt: hi\n    api_key_ref: sys/local/providers/openai\n    options: {{base_url: \"{}/openai/v1\"}}\n",
        fx.url
    );
    let key = "sk-proj-from-the-store-7d1c55e0";
    let node = Node::builder().blueprint("k.yaml", &bp).start();
    let (s, b) = call(
        &node,
        reqwest::Method::PUT,
        "/api/v1/secrets/sys/local/providers/openai",
        None,
        Some(json!({"value": key})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    node.emit("test.keyed", json!({})).await;
    let run_id = node.the_run_of("keyed").await;
    let run = node.until_run_status(&run_id, "completed", 15).await;
    let seen = fx.seen("/openai/v1/chat/completions");
    assert_eq!(seen.len(), 1, "the provider was called, not the cassette");
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {key}").as_str())
    );
    assert!(!seen[0].body.contains(key), "the key is not in the body");
    let step = node.step(&run_id, "ask").await;
    let text = step.to_string();
    assert!(!text.contains(key), "{text}");
    assert!(
        text.contains("[redacted:sys/local/providers/openai]"),
        "{text}"
    );
    assert!(!run.to_string().contains(key));
    let evs = node.events_of(&run_id).await;
    assert!(
        evs.iter().any(|e| e["event_name"] == "xyn.secret.read"
            && e["data"]["path"] == "sys/local/providers/openai"),
        "{evs:?}"
    );
    assert!(!evs.iter().any(|e| e.to_string().contains(key)));
    // A reference that is not a secret path is refused when the blueprint is applied.
    let bad = bp.replace("sys/local/providers/openai", "not a path");
    let (s, b) = node
        .post("/api/v1/blueprints", json!({"definition": bad}))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("blueprint.invalid")),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blueprints_cannot_read_the_passphrase_or_a_missing_secret() {
    let bp = "id: grab\ntrigger: {event_type: test.grab}\nplan:\n  - kind: action_task\n    id: leak\n    action: events.emit\n    with:\n      name: grabbed\n      data: {p: '{{secrets.passphrase}}'}\n";
    let bp2 = "id: missing\ntrigger: {event_type: test.missing}\nplan:\n  - kind: action_task\n    id: use\n    action: events.emit\n    with:\n      name: used\n      data: {p: '{{secret \"team/t/none\"}}'}\n";
    let node = Node::builder()
        .blueprint("g.yaml", bp)
        .blueprint("m.yaml", bp2)
        .env("XYN_SECRET_PASSPHRASE", "never-readable-pass")
        .start();
    node.emit("test.grab", json!({})).await;
    let run = node.the_run_of("grab").await;
    node.until_run_status(&run, "failed", 10).await;
    let step = node.step(&run, "leak").await;
    assert_eq!(step["error"]["code"], "secret.missing", "{step}");
    assert!(!step.to_string().contains("never-readable-pass"));
    node.emit("test.missing", json!({})).await;
    let run = node.the_run_of("missing").await;
    node.until_run_status(&run, "failed", 10).await;
    let step = node.step(&run, "use").await;
    assert_eq!(step["error"]["code"], "secret.missing", "{step}");
    assert!(
        step["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team/t/none")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_cli_and_a_node_share_the_encrypted_store() {
    let db = support::services::TestDb::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let url = db.url.clone();
    let env = [
        ("XYN_DATABASE_URL", url.as_str()),
        ("XYN_SECRET_PASSPHRASE", "cluster passphrase 1"),
    ];
    let value = "pg-canary-value-8c1d";
    ok(secret(
        &d,
        &["set", "team/t/pg", "--value-stdin"],
        &env,
        Some(value),
    ));
    assert_eq!(
        ok(secret(&d, &["get", "team/t/pg"], &env, None)),
        format!("{value}\n")
    );
    let wrong = [
        ("XYN_DATABASE_URL", url.as_str()),
        ("XYN_SECRET_PASSPHRASE", "cluster passphrase 2"),
    ];
    fails(
        secret(&d, &["get", "team/t/pg"], &wrong, None),
        "secret.wrong_passphrase",
    );
    let newp = [
        ("XYN_DATABASE_URL", url.as_str()),
        ("XYN_SECRET_PASSPHRASE", "cluster passphrase 1"),
        ("XYN_SECRET_NEW_PASSPHRASE", "cluster passphrase 3"),
    ];
    ok(secret(
        &d,
        &["rotate-master", "--to-passphrase"],
        &newp,
        None,
    ));
    let third = [
        ("XYN_DATABASE_URL", url.as_str()),
        ("XYN_SECRET_PASSPHRASE", "cluster passphrase 3"),
    ];
    assert_eq!(
        ok(secret(&d, &["get", "team/t/pg"], &third, None)),
        format!("{value}\n")
    );
    // The database holds ciphertext only.
    let rows = db
        .query("SELECT encode(ciphertext, 'escape') || encode(wrapped_key, 'escape') FROM secrets")
        .await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].get::<_, String>(0).contains(value));
    let reads = db.count("SELECT COUNT(*) FROM events WHERE event_name = 'xyn.secret.read' AND data NOT LIKE '%pg-canary%'").await;
    assert_eq!(reads, 2);
    // A node on the same store resolves the reference.
    let fx = Fixture::start().await;
    let bp = format!(
        "id: pg-secret\ntrigger: {{event_type: test.pg}}\nplan:\n  - kind: action_task\n    id: call\n    action: http.call\n    with:\n      url: \"{}/echo\"\n      method: POST\n      json: {{k: '{{{{secret \"team/t/pg\"}}}}'}}\n",
        fx.url
    );
    let node = Node::builder()
        .blueprint("p.yaml", &bp)
        .allow_http(&fx.url)
        .env("XYN_SECRET_PASSPHRASE", "cluster passphrase 3")
        .args(&["--database-url", &url])
        .start();
    node.emit("test.pg", json!({})).await;
    let run = node.the_run_of("pg-secret").await;
    node.until_run_status(&run, "completed", 15).await;
    assert!(fx.seen("/echo")[0].body.contains(value));
    let step = node.step(&run, "call").await;
    assert!(step.to_string().contains("[redacted:team/t/pg]"), "{step}");
    let leaked = db.count(&format!("SELECT COUNT(*) FROM events WHERE data LIKE '%{value}%'")).await
        + db.count(&format!("SELECT COUNT(*) FROM steps WHERE COALESCE(outputs, '') LIKE '%{value}%' OR COALESCE(inputs, '') LIKE '%{value}%'")).await;
    assert_eq!(leaked, 0);
}
