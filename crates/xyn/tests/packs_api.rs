//! Packs on a running node through `/api/v1/packs`, and the atomicity of installs under
//! SIGKILL, all through the real binary.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use support::{BIN, Node, client, repo_root};

fn xyn(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("XYN_DATA_DIR")
        .env_remove("XYN_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = xyn(dir, args);
    assert_eq!(code, 0, "xyn {args:?}:\n{out}\n{err}");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// A publisher key (and a second, untrusted one) in a temp dir.
struct Kit {
    tmp: tempfile::TempDir,
    pubkey: String,
}

impl Kit {
    fn new() -> Kit {
        let tmp = tempfile::tempdir().unwrap();
        let pubkey = ok(
            tmp.path(),
            &["key", "new", "release", "--data-dir", "publisher"],
        )
        .trim()
        .to_string();
        ok(
            tmp.path(),
            &["key", "new", "stranger", "--data-dir", "publisher"],
        );
        Kit { tmp, pubkey }
    }
    fn dir(&self) -> &Path {
        self.tmp.path()
    }
    /// The sample pack at `version`, its blueprint and Lua action marked with the version.
    fn src(&self, version: &str) -> PathBuf {
        let src = self.dir().join(format!("src-{version}"));
        if !src.exists() {
            copy_tree(&repo_root().join("examples/packs/hello"), &src);
            let m = src.join("xyn-pack.toml");
            let t = std::fs::read_to_string(&m).unwrap();
            std::fs::write(
                &m,
                t.replace("version = \"1.0.0\"", &format!("version = \"{version}\"")),
            )
            .unwrap();
            let b = src.join("blueprints/hello.yaml");
            let t = std::fs::read_to_string(&b).unwrap();
            std::fs::write(
                &b,
                t.replace("\"hello, \"", &format!("\"hello {version}, \"")),
            )
            .unwrap();
            let l = src.join("actions/examples.greet/greet.lua");
            let mut t = std::fs::read_to_string(&l).unwrap();
            t.push_str(&format!("\n-- version {version}\n"));
            std::fs::write(&l, t).unwrap();
        }
        src
    }
    /// Builds the pack at `version` and signs it with `key`.
    fn pack(&self, version: &str, key: &str) -> PathBuf {
        let src = self.src(version);
        let file = self.dir().join(format!("hello-{version}-{key}.xynpack"));
        if !file.exists() {
            ok(self.dir(), &["pack", "build", s(&src), "-o", s(&file)]);
            ok(
                self.dir(),
                &[
                    "pack",
                    "sign",
                    s(&file),
                    "--key",
                    key,
                    "--data-dir",
                    "publisher",
                ],
            );
        }
        file
    }
}

fn upload_body(file: &Path, signed: bool) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let archive = b64.encode(std::fs::read(file).unwrap());
    let mut body = json!({ "archive": archive });
    if signed {
        let sig = PathBuf::from(format!("{}.sig.json", file.display()));
        body["signature"] = serde_json::from_slice(&std::fs::read(sig).unwrap()).unwrap();
    }
    body
}

async fn send(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut r = client().request(method, format!("{}{path}", node.url));
    if let Some(b) = body {
        r = r.json(&b);
    }
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn code(r: &(u16, Value)) -> &str {
    r.1["error"]["code"].as_str().unwrap_or("")
}

/// A node that trusts the kit's `release` key (trust is changed while the node is stopped).
fn trusting_node(k: &Kit, b: support::NodeBuilder) -> Node {
    let mut node = b.start();
    node.stop();
    let data = node.data_dir();
    ok(
        k.dir(),
        &["trust", "add", "release", &k.pubkey, "--data-dir", s(&data)],
    );
    node.restart();
    node
}

fn pack_events(node: &Node) -> Vec<(String, Value)> {
    let c = rusqlite::Connection::open(node.data_dir().join("xyn.db")).unwrap();
    c.prepare("SELECT event_name, data FROM events WHERE event_name LIKE 'xyn.pack.%' ORDER BY seq")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or(Value::Null),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_installs_an_uploaded_pack_and_runs_it_live() {
    let k = Kit::new();
    let v1 = k.pack("1.0.0", "release");
    let node = trusting_node(&k, Node::builder().args(&["--allow-weak-sandbox"]));
    let (st, list) = node.get("/api/v1/packs").await;
    assert_eq!((st, list.clone()), (200, json!({"items": []})));

    let r = send(
        &node,
        reqwest::Method::POST,
        "/api/v1/packs",
        Some(upload_body(&v1, true)),
        None,
    )
    .await;
    assert_eq!(r.0, 201, "{}", r.1);
    assert_eq!(r.1["id"], "examples.hello");
    assert_eq!(r.1["signers"][0]["trusted_as"], "release");
    assert_eq!(r.1["blueprints"][0]["version"], 1, "{}", r.1);

    // The catalogue and the actions changed live: both blueprints run, the sandboxed one
    // with the pack's Lua action, without a restart.
    node.emit("hello.pack", json!({"who": "api"})).await;
    let run = node.the_run_of("examples.hello").await;
    let run = node.until_run_status(&run, "completed", 30).await;
    let step = node.step(run["run_id"].as_str().unwrap(), "greet").await;
    assert_eq!(step["outputs"]["greeting"], "hello 1.0.0, api", "{step}");
    node.emit("hello.pack.sandboxed", json!({"who": "lua"}))
        .await;
    let run = node.the_run_of("examples.greet_sandboxed").await;
    let run = node.until_run_status(&run, "completed", 60).await;
    let step = node.step(run["run_id"].as_str().unwrap(), "greet").await;
    assert!(step["outputs"].to_string().contains("lua"), "{step}");

    let (st, list) = node.get("/api/v1/packs").await;
    assert_eq!(st, 200);
    assert_eq!(list["items"][0]["version"], "1.0.0");
    let (st, one) = node.get("/api/v1/packs/examples.hello").await;
    assert_eq!(st, 200);
    assert_eq!(
        one["provenance"]["_type"], "https://in-toto.io/Statement/v1",
        "{one}"
    );
    assert_eq!(one["sha256"], list["items"][0]["sha256"]);
    // What POST answered is what is recorded.
    assert_eq!(one, r.1);

    // An upgrade: new blueprint version, the old one stays for runs that started on it.
    let v2 = k.pack("2.0.0", "release");
    let r = send(
        &node,
        reqwest::Method::POST,
        "/api/v1/packs",
        Some(upload_body(&v2, true)),
        None,
    )
    .await;
    assert_eq!(r.0, 201, "{}", r.1);
    assert_eq!(r.1["version"], "2.0.0");
    node.emit("hello.pack", json!({"who": "again"})).await;
    let runs = node
        .until(30, "a run on version 2", || async {
            let runs = node.runs_of("examples.hello").await;
            runs.into_iter()
                .find(|r| r["blueprint_version"] == 2 && r["status"] == "completed")
        })
        .await;
    let step = node.step(runs["run_id"].as_str().unwrap(), "greet").await;
    assert_eq!(step["outputs"]["greeting"], "hello 2.0.0, again", "{step}");
    let (_, versions) = node.get("/api/v1/blueprints/examples.hello/versions").await;
    assert!(versions.to_string().contains("\"version\":1"), "{versions}");

    // Remove: 204, then 404 with the stable code; the action is gone from the node.
    let r = send(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/packs/examples.hello",
        None,
        None,
    )
    .await;
    assert_eq!(r.0, 204, "{}", r.1);
    let r = node.get("/api/v1/packs/examples.hello").await;
    assert_eq!((r.0, code(&r)), (404, "pack.not_found"));
    let r = send(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/packs/examples.hello",
        None,
        None,
    )
    .await;
    assert_eq!((r.0, code(&r)), (404, "pack.not_found"));
    assert!(!node.data_dir().join("actions/examples.greet").exists());

    let names: Vec<String> = pack_events(&node).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "xyn.pack.installed",
            "xyn.pack.installed",
            "xyn.pack.removed"
        ]
    );
    let (code_, out, err) = node.cli(&["audit", "verify"]);
    assert_eq!(code_, 0, "{out}{err}");

    // The OpenAPI document describes the routes.
    let (_, doc) = node.get("/api/v1/openapi.json").await;
    assert!(doc["paths"]["/api/v1/packs"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/packs/{id}"]["delete"].is_object());
}

/// An archive holding `entries` as they are (no path checks by the tar writer).
fn raw_archive(file: &Path, entries: &[(&str, &[u8])]) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(file).unwrap(),
        flate2::Compression::default(),
    );
    let mut b = tar::Builder::new(gz);
    for (p, bytes) in entries {
        let mut h = tar::Header::new_old();
        let name = &mut h.as_old_mut().name;
        name[..p.len()].copy_from_slice(p.as_bytes());
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *bytes).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

/// Rewrites one entry of an archive (keeping the digest list as it was).
fn tamper_entry(from: &Path, to: &Path, path: &str, f: impl Fn(&mut Vec<u8>)) {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(from).unwrap());
    let mut ar = tar::Archive::new(gz);
    let mut es = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        if p == path {
            f(&mut b);
        }
        es.push((p, b));
    }
    let refs: Vec<(&str, &[u8])> = es.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
    raw_archive(to, &refs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_are_refused_with_stable_codes_and_nothing_changes() {
    let k = Kit::new();
    let good = k.pack("1.0.0", "release");
    let node = trusting_node(&k, Node::builder());
    let sig: Value =
        serde_json::from_slice(&std::fs::read(format!("{}.sig.json", good.display())).unwrap())
            .unwrap();

    let tampered = k.dir().join("tampered.xynpack");
    tamper_entry(&good, &tampered, "blueprints/hello.yaml", |b| {
        b.extend_from_slice(b"# evil\n")
    });
    let mut tampered_body = upload_body(&tampered, false);
    tampered_body["signature"] = sig.clone();

    let traversal = k.dir().join("traversal.xynpack");
    raw_archive(
        &traversal,
        &[
            (
                "xyn-pack.toml",
                b"id = \"evil.pack\"\nversion = \"1.0.0\"\nxyn = \"*\"\n",
            ),
            ("blueprints/../../evil.yaml", b"x"),
        ],
    );
    let stranger = k.pack("1.0.0", "stranger");
    let mut swapped = upload_body(&good, true);
    swapped["signature"]["payloadType"] = json!("application/json");

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "tampered blueprint",
            tampered_body,
            422,
            "pack.digest_mismatch",
        ),
        (
            "untrusted key",
            upload_body(&stranger, true),
            422,
            "pack.untrusted_key",
        ),
        ("unsigned", upload_body(&good, false), 422, "pack.unsigned"),
        (
            "payloadType swapped",
            swapped,
            422,
            "pack.signature_invalid",
        ),
        (
            "path traversal",
            json!({"archive": base64::engine::general_purpose::STANDARD.encode(std::fs::read(&traversal).unwrap()), "allow_unsigned": true}),
            422,
            "pack.invalid",
        ),
        (
            "not base64",
            json!({"archive": "%%%"}),
            422,
            "request.invalid",
        ),
        (
            "not a pack",
            json!({"archive": "aGVsbG8=", "allow_unsigned": true}),
            422,
            "pack.invalid",
        ),
        (
            "unknown field",
            json!({"archive": "", "force": true}),
            422,
            "request.unknown_field",
        ),
    ];
    for (what, body, status, want) in cases {
        let r = send(
            &node,
            reqwest::Method::POST,
            "/api/v1/packs",
            Some(body),
            None,
        )
        .await;
        assert_eq!((r.0, code(&r)), (status, want), "{what}: {}", r.1);
        assert!(r.1["correlation_id"].is_string(), "{what}: {}", r.1);
    }
    // Over the upload limit (16 MiB by default): 413 on the declared length, before the
    // body is read (sent by hand: a client still writing the body may see the reset first).
    let addr = node.url.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            c,
            "POST /api/v1/packs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"archive\": \"",
            17 * 1024 * 1024
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"request.too_large\""), "{answer}");

    let (_, list) = node.get("/api/v1/packs").await;
    assert_eq!(list, json!({"items": []}));
    assert!(pack_events(&node).is_empty());
    assert!(!node.data_dir().join("actions/examples.greet").exists());
    let leftovers: Vec<_> = std::fs::read_dir(node.data_dir().join("packs"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // --allow-unsigned over the API is recorded in the install event.
    let mut body = upload_body(&good, false);
    body["allow_unsigned"] = json!(true);
    let r = send(
        &node,
        reqwest::Method::POST,
        "/api/v1/packs",
        Some(body),
        None,
    )
    .await;
    assert_eq!(r.0, 201, "{}", r.1);
    assert_eq!(pack_events(&node)[0].1["allow_unsigned"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operators_change_packs_when_auth_is_on() {
    const OP: &str = "op-token-0123456789abcdef";
    const OWNER: &str = "owner-token-0123456789abcdef";
    let k = Kit::new();
    let good = k.pack("1.0.0", "release");
    let node = trusting_node(
        &k,
        Node::builder()
            .env("XYN_API_TOKEN", OP)
            .env("XYN_OWNER_TOKEN", OWNER),
    );
    let post = |t: Option<&'static str>| {
        let body = upload_body(&good, true);
        let node = &node;
        async move { send(node, reqwest::Method::POST, "/api/v1/packs", Some(body), t).await }
    };
    let r = post(None).await;
    assert_eq!((r.0, code(&r)), (401, "auth.required"));
    let r = post(Some(OWNER)).await;
    assert_eq!((r.0, code(&r)), (403, "auth.forbidden"), "{}", r.1);
    let r = send(
        &node,
        reqwest::Method::GET,
        "/api/v1/packs",
        None,
        Some(OWNER),
    )
    .await;
    assert_eq!(r.0, 200);
    assert!(pack_events(&node).is_empty());
    let r = post(Some(OP)).await;
    assert_eq!(r.0, 201, "{}", r.1);
    let r = send(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/packs/examples.hello",
        None,
        Some(OWNER),
    )
    .await;
    assert_eq!((r.0, code(&r)), (403, "auth.forbidden"));
    let ev = pack_events(&node);
    assert_eq!(ev.len(), 1);
}

/// Where an install left a data dir: the version every part of it says, and whether the parts
/// agree. `None`: no pack.
fn state_of(data: &Path) -> Option<String> {
    let rec = data.join("packs/examples.hello/record.json");
    let listed = std::fs::read(&rec).ok().map(|b| {
        serde_json::from_slice::<Value>(&b).unwrap()["version"]
            .as_str()
            .unwrap()
            .to_string()
    });
    let lua = std::fs::read_to_string(data.join("actions/examples.greet/greet.lua")).ok();
    let action = lua.map(|t| {
        t.lines()
            .rev()
            .find_map(|l| l.strip_prefix("-- version ").map(str::to_string))
            .unwrap_or_default()
    });
    let c = rusqlite::Connection::open(data.join("xyn.db")).unwrap();
    let last_event: Option<String> = c
        .query_row(
            "SELECT json_extract(data, '$.version') FROM events WHERE event_name = 'xyn.pack.installed' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .ok();
    let head: Option<String> = c
        .query_row(
            "SELECT origin FROM blueprint_versions WHERE blueprint_id = 'examples.hello' ORDER BY version DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .ok();
    let head = head.and_then(|o| {
        o.split('@')
            .nth(1)
            .and_then(|v| v.split(':').next())
            .map(str::to_string)
    });
    assert_eq!(listed, action, "record and action disagree");
    assert_eq!(listed, last_event, "record and event log disagree");
    assert_eq!(listed, head, "record and blueprint catalogue disagree");
    listed
}

#[test]
fn an_install_killed_at_random_points_leaves_the_old_or_the_new_state() {
    let k = Kit::new();
    let d = k.dir();
    let data = d.join("node");
    ok(
        d,
        &["trust", "add", "release", &k.pubkey, "--data-dir", s(&data)],
    );
    let packs = [k.pack("1.0.0", "release"), k.pack("2.0.0", "release")];
    ok(
        d,
        &["pack", "install", s(&packs[0]), "--data-dir", s(&data)],
    );
    assert_eq!(state_of(&data).as_deref(), Some("1.0.0"));
    // How long an install takes, to spread the kills over it.
    let t = Instant::now();
    ok(
        d,
        &["pack", "install", s(&packs[1]), "--data-dir", s(&data)],
    );
    let full = t.elapsed().as_micros() as u64;
    assert_eq!(state_of(&data).as_deref(), Some("2.0.0"));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut outcomes = Vec::new();
    for i in 0..20 {
        let before = state_of(&data).unwrap();
        let file = if before == "1.0.0" {
            &packs[1]
        } else {
            &packs[0]
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = Duration::from_micros(seed % (full + full / 4));
        let mut child = Command::new(BIN)
            .args(["pack", "install", s(file), "--data-dir", s(&data)])
            .current_dir(d)
            .env_remove("XYN_DATA_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        // The next pack command finishes or undoes what the kill interrupted.
        let listed: Value =
            serde_json::from_str(&ok(d, &["pack", "list", "--json", "--data-dir", s(&data)]))
                .unwrap();
        let after = state_of(&data).unwrap();
        assert_eq!(listed[0]["version"], after.as_str());
        let leftovers: Vec<String> = std::fs::read_dir(data.join("packs"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "try {i}: {leftovers:?}");
        outcomes.push((at.as_millis(), status.success(), before != after));
        ok(d, &["audit", "verify", "--data-dir", s(&data)]);
    }
    eprintln!(
        "install took {} ms; (kill at ms, exited, changed): {outcomes:?}",
        full / 1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_an_api_install_comes_back_with_the_old_or_the_new_pack() {
    let k = Kit::new();
    let packs = [k.pack("1.0.0", "release"), k.pack("2.0.0", "release")];
    let mut node = trusting_node(&k, Node::builder());
    let t = Instant::now();
    let r = send(
        &node,
        reqwest::Method::POST,
        "/api/v1/packs",
        Some(upload_body(&packs[0], true)),
        None,
    )
    .await;
    assert_eq!(r.0, 201, "{}", r.1);
    let full = t.elapsed().as_micros() as u64;
    let data = node.data_dir();
    let mut seed = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64)
        | 1;
    for i in 0..6 {
        let before = state_of(&data).unwrap();
        let file = if before == "1.0.0" {
            &packs[1]
        } else {
            &packs[0]
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = Duration::from_micros(seed % (full + full / 4));
        let req = client()
            .post(format!("{}/api/v1/packs", node.url))
            .json(&upload_body(file, true))
            .send();
        let pending = tokio::spawn(req);
        tokio::time::sleep(at).await;
        node.kill9();
        let _ = pending.await;
        node.relaunch_after_kill();
        let after = state_of(&data).unwrap();
        let (_, list) = node.get("/api/v1/packs").await;
        assert_eq!(list["items"][0]["version"], after.as_str(), "try {i}");
        // The node runs the blueprint of whichever version it has.
        node.emit("hello.pack", json!({"who": format!("try{i}")}))
            .await;
        let who = format!("try{i}");
        let want = format!("hello {after}, {who}");
        node.until(30, "the run of this try", || {
            let want = want.clone();
            let node = &node;
            async move {
                for r in node.runs_of("examples.hello").await {
                    if r["status"] != "completed" {
                        continue;
                    }
                    let step = node.step(r["run_id"].as_str()?, "greet").await;
                    if step["outputs"]["greeting"] == want.as_str() {
                        return Some(step);
                    }
                }
                None
            }
        })
        .await;
        let (c, out, err) = node.cli(&["audit", "verify"]);
        assert_eq!(c, 0, "try {i}: {out}{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_postgresql_installs_an_uploaded_pack_live() {
    let db = support::services::TestDb::create().await;
    let k = Kit::new();
    let good = k.pack("1.0.0", "release");
    let mut node = Node::builder().args(&["--database-url", &db.url]).start();
    node.stop();
    ok(
        k.dir(),
        &[
            "trust",
            "add",
            "release",
            &k.pubkey,
            "--data-dir",
            s(&node.data_dir()),
            "--database-url",
            &db.url,
        ],
    );
    node.restart();
    let r = send(
        &node,
        reqwest::Method::POST,
        "/api/v1/packs",
        Some(upload_body(&good, true)),
        None,
    )
    .await;
    assert_eq!(r.0, 201, "{}", r.1);
    node.emit("hello.pack", json!({"who": "pg"})).await;
    let run = node.the_run_of("examples.hello").await;
    let run = node.until_run_status(&run, "completed", 30).await;
    let step = node.step(run["run_id"].as_str().unwrap(), "greet").await;
    assert_eq!(step["outputs"]["greeting"], "hello 1.0.0, pg", "{step}");
    let c = support::services::connect(&db.url).await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM events WHERE event_name = 'xyn.pack.installed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let (code_, out, err) = node.cli(&["audit", "verify", "--database-url", &db.url]);
    assert_eq!(code_, 0, "{out}{err}");
}

const GATE_BP: &str = r#"
id: examples.gate
name: Waits for a person
trigger:
  event_type: hello.gate
plan:
  - kind: gate
    id: approve
    mode: manual
    message: "Go on?"
  - kind: transform
    id: done
    expr: '"done"'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_a_waiting_run_needs_is_not_removed() {
    let k = Kit::new();
    let src = k.src("3.0.0");
    std::fs::write(src.join("blueprints/gate.yaml"), GATE_BP).unwrap();
    let file = k.pack("3.0.0", "release");
    let mut node = trusting_node(&k, Node::builder());
    let r = send(
        &node,
        reqwest::Method::POST,
        "/api/v1/packs",
        Some(upload_body(&file, true)),
        None,
    )
    .await;
    assert_eq!(r.0, 201, "{}", r.1);
    node.emit("hello.gate", json!({})).await;
    let run = node.the_run_of("examples.gate").await;
    node.until_step_status(&run, "approve", "waiting", 30).await;

    let r = send(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/packs/examples.hello",
        None,
        None,
    )
    .await;
    assert_eq!((r.0, code(&r)), (409, "pack.in_use"), "{}", r.1);
    assert!(r.1["error"]["message"].as_str().unwrap().contains(&run));
    // The CLI refuses too (node stopped, the run still waiting).
    node.stop();
    let (c, _, err) = xyn(
        k.dir(),
        &[
            "pack",
            "remove",
            "examples.hello",
            "--data-dir",
            s(&node.data_dir()),
        ],
    );
    assert_eq!(c, 1);
    assert!(err.starts_with("pack.in_use"), "{err}");
    node.restart();
    let (st, _) = node
        .post(&format!("/api/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert!(st < 300, "{st}");
    node.until_run_status(&run, "cancelled", 30).await;
    let r = send(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/packs/examples.hello",
        None,
        None,
    )
    .await;
    assert_eq!(r.0, 204, "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_are_checked_on_install_upgrade_and_remove() {
    let k = Kit::new();
    let hello1 = k.pack("1.0.0", "release");
    let hello2 = k.pack("2.0.0", "release");
    let child_src = k.dir().join("child");
    std::fs::create_dir_all(child_src.join("blueprints")).unwrap();
    std::fs::write(
        child_src.join("xyn-pack.toml"),
        "id = \"examples.child\"\nversion = \"1.0.0\"\nxyn = \">=0.1\"\ndescription = \"needs hello 1\"\n[depends]\n\"examples.hello\" = \"^1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        child_src.join("blueprints/child.yaml"),
        "id: examples.child\nname: child\ntrigger:\n  event_type: child.go\nplan:\n  - kind: transform\n    id: t\n    expr: '1'\n",
    )
    .unwrap();
    let child = k.dir().join("child.xynpack");
    ok(k.dir(), &["pack", "build", s(&child_src), "-o", s(&child)]);
    ok(
        k.dir(),
        &[
            "pack",
            "sign",
            s(&child),
            "--key",
            "release",
            "--data-dir",
            "publisher",
        ],
    );
    let node = trusting_node(&k, Node::builder());
    let post = |f: PathBuf| {
        let node = &node;
        async move {
            send(
                node,
                reqwest::Method::POST,
                "/api/v1/packs",
                Some(upload_body(&f, true)),
                None,
            )
            .await
        }
    };
    let r = post(child.clone()).await;
    assert_eq!((r.0, code(&r)), (422, "pack.missing_dependency"), "{}", r.1);
    assert_eq!(post(hello2.clone()).await.0, 201);
    let r = post(child.clone()).await;
    assert_eq!(
        (r.0, code(&r)),
        (422, "pack.missing_dependency"),
        "2.0.0 is out of ^1.0: {}",
        r.1
    );
    assert_eq!(post(hello1.clone()).await.0, 201);
    assert_eq!(post(child.clone()).await.0, 201);
    // Upgrading hello out of the child's range, or removing it, would break the child.
    let r = post(hello2.clone()).await;
    assert_eq!((r.0, code(&r)), (422, "pack.incompatible"), "{}", r.1);
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("examples.child needs")
    );
    let r = send(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/packs/examples.hello",
        None,
        None,
    )
    .await;
    assert_eq!((r.0, code(&r)), (409, "pack.in_use"), "{}", r.1);
    let (_, one) = node.get("/api/v1/packs/examples.hello").await;
    assert_eq!(one["version"], "1.0.0");
    // Child first, then hello: both go.
    let r = send(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/packs/examples.child",
        None,
        None,
    )
    .await;
    assert_eq!(r.0, 204, "{}", r.1);
    let r = send(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/packs/examples.hello",
        None,
        None,
    )
    .await;
    assert_eq!(r.0, 204, "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_are_serialised_and_the_cli_points_at_the_api() {
    let k = Kit::new();
    let packs = [k.pack("1.0.0", "release"), k.pack("2.0.0", "release")];
    let node = trusting_node(&k, Node::builder());
    for _ in 0..3 {
        let a = send(
            &node,
            reqwest::Method::POST,
            "/api/v1/packs",
            Some(upload_body(&packs[0], true)),
            None,
        );
        let b = send(
            &node,
            reqwest::Method::POST,
            "/api/v1/packs",
            Some(upload_body(&packs[1], true)),
            None,
        );
        let (a, b) = tokio::join!(a, b);
        assert_eq!((a.0, b.0), (201, 201), "{} {}", a.1, b.1);
        let v = state_of(&node.data_dir()).unwrap();
        let (_, one) = node.get("/api/v1/packs/examples.hello").await;
        assert_eq!(one["version"], v.as_str());
    }
    assert_eq!(
        pack_events(&node).len(),
        6,
        "every upload is one installed event"
    );
    let (c, out, err) = node.cli(&["audit", "verify"]);
    assert_eq!(c, 0, "{out}{err}");
    // The CLI cannot install into the data dir the node serves, and says what to do.
    let (c, _, err) = xyn(
        k.dir(),
        &[
            "pack",
            "install",
            s(&packs[0]),
            "--data-dir",
            s(&node.data_dir()),
        ],
    );
    assert_eq!(c, 1);
    assert!(err.contains("POST /api/v1/packs"), "{err}");
}
