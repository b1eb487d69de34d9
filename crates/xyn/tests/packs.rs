//! Packs end to end through the real binary: keys, trust (audited), build, sign, verify,
//! install into a node's data dir (the node then runs the pack's blueprint), and every
//! refusal leaving nothing installed.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::{BIN, Node, repo_root};

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

/// Exits 1 with `code` at the start of stderr.
fn refused(dir: &Path, args: &[&str], code: &str) -> String {
    let (c, out, err) = xyn(dir, args);
    assert_eq!(c, 1, "xyn {args:?} should fail with {code}:\n{out}\n{err}");
    assert!(
        err.starts_with(code),
        "xyn {args:?}: expected {code}, got:\n{err}"
    );
    err
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

fn sample_src() -> PathBuf {
    repo_root().join("examples/packs/hello")
}

struct Kit {
    tmp: tempfile::TempDir,
    pubkey: String,
}

impl Kit {
    /// A publisher key in its own dir, and a node data dir that trusts it.
    fn new() -> Kit {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let pubkey = ok(d, &["key", "new", "release", "--data-dir", "publisher"])
            .trim()
            .to_string();
        assert!(pubkey.starts_with("ed25519:"), "{pubkey}");
        Kit { tmp, pubkey }
    }
    fn dir(&self) -> &Path {
        self.tmp.path()
    }
    fn trust(&self, data: &str) {
        ok(
            self.dir(),
            &["trust", "add", "release", &self.pubkey, "--data-dir", data],
        );
    }
    /// Builds (from `src`, default the sample) and signs `name`.
    fn pack(&self, name: &str, src: Option<&Path>) -> PathBuf {
        let src = src.map_or_else(sample_src, Path::to_path_buf);
        let file = self.dir().join(name);
        ok(
            self.dir(),
            &[
                "pack",
                "build",
                src.to_str().unwrap(),
                "-o",
                file.to_str().unwrap(),
            ],
        );
        ok(
            self.dir(),
            &[
                "pack",
                "sign",
                file.to_str().unwrap(),
                "--key",
                "release",
                "--data-dir",
                "publisher",
            ],
        );
        file
    }
    fn installed(&self, data: &str) -> Vec<Value> {
        let out = ok(self.dir(), &["pack", "list", "--json", "--data-dir", data]);
        serde_json::from_str(&out).unwrap()
    }
    fn assert_nothing_installed(&self, data: &str) {
        assert_eq!(self.installed(data), Vec::<Value>::new());
        let actions = self.dir().join(data).join("actions/examples.greet");
        assert!(!actions.exists(), "an action was installed");
        // No blueprint version was written: no store, or a store without pack events.
        let db = self.dir().join(data).join("xyn.db");
        if db.exists() {
            let c = rusqlite::Connection::open(&db).unwrap();
            let n: i64 = c
                .query_row(
                    "SELECT count(*) FROM events WHERE event_name IN ('xyn.pack.installed', 'xyn.blueprint.version.created')",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 0, "the store changed");
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn key_trust_build_sign_verify_install_list_remove() {
    let k = Kit::new();
    let d = k.dir();
    // The private key is the owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(d.join("publisher/keys/release.key")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }
    let listed: Value = serde_json::from_str(&ok(
        d,
        &["key", "list", "--json", "--data-dir", "publisher"],
    ))
    .unwrap();
    assert_eq!(listed[0]["public_key"], k.pubkey.as_str());

    let file = k.pack("hello.xynpack", None);
    assert!(d.join("hello.xynpack.sig.json").is_file());
    let out = ok(d, &["pack", "verify", s(&file), "--data-dir", "node"]);
    assert!(out.contains(&k.pubkey), "{out}");
    ok(d, &["pack", "verify", s(&file), "--key", &k.pubkey]);
    let other = ok(d, &["key", "new", "other", "--data-dir", "publisher"]);
    refused(
        d,
        &["pack", "verify", s(&file), "--key", other.trim()],
        "pack.untrusted_key",
    );
    let inspect: Value =
        serde_json::from_str(&ok(d, &["pack", "inspect", s(&file), "--json"])).unwrap();
    assert_eq!(inspect["manifest"]["id"], "examples.hello");
    assert_eq!(inspect["signature"]["status"], "valid");
    assert_eq!(inspect["capabilities"]["examples.greet"]["crypto"], false);

    // Untrusted until trusted; the trust change is an audit event.
    refused(
        d,
        &["pack", "install", s(&file), "--data-dir", "node"],
        "pack.untrusted_key",
    );
    k.assert_nothing_installed("node");
    k.trust("node");
    let trusted: Value =
        serde_json::from_str(&ok(d, &["trust", "list", "--json", "--data-dir", "node"])).unwrap();
    assert_eq!(
        trusted,
        json!([{"name": "release", "public_key": k.pubkey}])
    );
    ok(d, &["pack", "install", s(&file), "--data-dir", "node"]);
    let packs = k.installed("node");
    assert_eq!(packs.len(), 1);
    assert_eq!(packs[0]["id"], "examples.hello");
    assert_eq!(packs[0]["version"], "1.0.0");
    assert_eq!(packs[0]["signers"][0]["trusted_as"], "release");
    assert!(d.join("node/actions/examples.greet/greet.lua").is_file());
    // Installing the same pack again writes no new blueprint versions.
    ok(d, &["pack", "install", s(&file), "--data-dir", "node"]);
    let c = rusqlite::Connection::open(d.join("node/xyn.db")).unwrap();
    let names: Vec<String> = c
        .prepare("SELECT event_name FROM events ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        names,
        [
            "xyn.trust.added",
            "xyn.blueprint.version.created",
            "xyn.blueprint.version.created",
            "xyn.pack.installed",
            "xyn.pack.installed",
        ]
    );
    drop(c);
    ok(d, &["audit", "verify", "--data-dir", "node"]);

    ok(
        d,
        &["pack", "remove", "examples.hello", "--data-dir", "node"],
    );
    assert!(k.installed("node").is_empty());
    assert!(!d.join("node/actions/examples.greet").exists());
    ok(d, &["trust", "remove", "release", "--data-dir", "node"]);
    let c = rusqlite::Connection::open(d.join("node/xyn.db")).unwrap();
    let last: Vec<String> = c
        .prepare("SELECT event_name FROM events ORDER BY seq DESC LIMIT 2")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(last, ["xyn.trust.removed", "xyn.pack.removed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_the_blueprint_of_an_installed_pack() {
    let k = Kit::new();
    let file = k.pack("hello.xynpack", None);
    let mut node = Node::builder().start();
    node.stop();
    let data = node.data_dir();
    ok(
        k.dir(),
        &["trust", "add", "release", &k.pubkey, "--data-dir", s(&data)],
    );
    ok(
        k.dir(),
        &["pack", "install", s(&file), "--data-dir", s(&data)],
    );
    node.restart();
    node.emit("hello.pack", json!({"who": "pack"})).await;
    let run = node.the_run_of("examples.hello").await;
    let run = node.until_run_status(&run, "completed", 30).await;
    let step = node.step(run["run_id"].as_str().unwrap(), "greet").await;
    assert_eq!(step["outputs"]["greeting"], "hello, pack", "{step}");
    let (code, out, _) = node.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

/// Rewrites one entry of an archive (keeping the digest list as it was).
fn tamper_entry(file: &Path, path: &str, f: impl Fn(&mut Vec<u8>)) {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(file).unwrap());
    let mut ar = tar::Archive::new(gz);
    let mut es = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        es.push((p, b));
    }
    let mut hit = false;
    for e in &mut es {
        if e.0 == path {
            f(&mut e.1);
            hit = true;
        }
    }
    assert!(hit, "{path} not in the archive");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(file).unwrap(),
        flate2::Compression::default(),
    );
    let mut b = tar::Builder::new(gz);
    for (p, bytes) in es {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, p, bytes.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

/// A change to an archive entry.
type Edit = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn tampered_packs_are_refused_with_their_code_and_nothing_is_installed() {
    let k = Kit::new();
    let d = k.dir();
    k.trust("node");
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "blueprints/hello.yaml",
            "pack.digest_mismatch",
            Box::new(|b| b.extend_from_slice(b"# evil\n")),
        ),
        (
            "actions/examples.greet/greet.lua",
            "pack.digest_mismatch",
            Box::new(|b| *b = b"function handle() os.exit(1) end\n".to_vec()),
        ),
        (
            "xyn-pack.toml",
            "pack.digest_mismatch",
            Box::new(|b| *b = String::from_utf8_lossy(b).replace("1.0.0", "9.0.0").into()),
        ),
        (
            "xyn-pack.digests.json",
            "pack.digest_mismatch",
            Box::new(|b| {
                let mut v: Value = serde_json::from_slice(b).unwrap();
                v["files"][0]["sha256"] = json!("00".repeat(32));
                *b = serde_json::to_vec(&v).unwrap();
            }),
        ),
    ];
    for (i, (entry, code, f)) in cases.into_iter().enumerate() {
        let file = k.pack(&format!("t{i}.xynpack"), None);
        tamper_entry(&file, entry, f);
        let err = refused(
            d,
            &["pack", "install", s(&file), "--data-dir", "node"],
            code,
        );
        if entry != "xyn-pack.digests.json" {
            assert!(err.contains(entry), "{err}");
        }
        refused(d, &["pack", "verify", s(&file)], code);
        k.assert_nothing_installed("node");
    }
    // The envelope: payload edited, payloadType swapped.
    for (i, edit) in [
        (|env: &mut Value| {
            let p = env["payload"].as_str().unwrap().to_string();
            let mut bytes = base64_decode(&p);
            let st = String::from_utf8(bytes.clone())
                .unwrap()
                .replace("examples.hello", "examples.evil");
            bytes = st.into_bytes();
            env["payload"] = json!(base64_encode(&bytes));
        }) as fn(&mut Value),
        |env: &mut Value| env["payloadType"] = json!("application/json"),
    ]
    .into_iter()
    .enumerate()
    {
        let file = k.pack(&format!("e{i}.xynpack"), None);
        let sig = d.join(format!("e{i}.xynpack.sig.json"));
        let mut env: Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
        edit(&mut env);
        std::fs::write(&sig, serde_json::to_vec(&env).unwrap()).unwrap();
        refused(
            d,
            &["pack", "install", s(&file), "--data-dir", "node"],
            "pack.signature_invalid",
        );
        k.assert_nothing_installed("node");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn unsigned_incompatible_and_missing_dependency_are_refused() {
    let k = Kit::new();
    let d = k.dir();
    k.trust("node");
    // Unsigned: refused, then allowed with --allow-unsigned (and audited as such).
    let file = d.join("unsigned.xynpack");
    ok(d, &["pack", "build", s(&sample_src()), "-o", s(&file)]);
    refused(d, &["pack", "verify", s(&file)], "pack.unsigned");
    refused(
        d,
        &["pack", "install", s(&file), "--data-dir", "node"],
        "pack.unsigned",
    );
    k.assert_nothing_installed("node");
    ok(
        d,
        &[
            "pack",
            "install",
            s(&file),
            "--data-dir",
            "unsigned-ok",
            "--allow-unsigned",
        ],
    );
    let c = rusqlite::Connection::open(d.join("unsigned-ok/xyn.db")).unwrap();
    let data: String = c
        .query_row(
            "SELECT data FROM events WHERE event_name = 'xyn.pack.installed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["allow_unsigned"], true, "{data}");

    // Incompatible Xyn range.
    let src = d.join("future");
    copy_tree(&sample_src(), &src);
    let m = std::fs::read_to_string(src.join("xyn-pack.toml")).unwrap();
    std::fs::write(
        src.join("xyn-pack.toml"),
        m.replace("xyn = \">=0.1\"", "xyn = \">=99\""),
    )
    .unwrap();
    let file = k.pack("future.xynpack", Some(&src));
    refused(
        d,
        &["pack", "install", s(&file), "--data-dir", "node"],
        "pack.incompatible",
    );
    k.assert_nothing_installed("node");

    // A missing dependency, then present in the wrong version, then satisfied.
    let src = d.join("dependent");
    copy_tree(&sample_src(), &src);
    let m = std::fs::read_to_string(src.join("xyn-pack.toml")).unwrap();
    std::fs::write(
        src.join("xyn-pack.toml"),
        m.replace("examples.hello", "examples.dependent")
            + "\n[depends]\n\"examples.base\" = \"^2\"\n",
    )
    .unwrap();
    let file = k.pack("dependent.xynpack", Some(&src));
    refused(
        d,
        &["pack", "install", s(&file), "--data-dir", "node"],
        "pack.missing_dependency",
    );
    k.assert_nothing_installed("node");
    let base = d.join("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(
        base.join("xyn-pack.toml"),
        "id = \"examples.base\"\nversion = \"1.5.0\"\nxyn = \"*\"\n",
    )
    .unwrap();
    let base_file = k.pack("base.xynpack", Some(&base));
    ok(d, &["pack", "install", s(&base_file), "--data-dir", "node"]);
    refused(
        d,
        &["pack", "install", s(&file), "--data-dir", "node"],
        "pack.missing_dependency",
    );
    assert_eq!(k.installed("node").len(), 1);
}

#[test]
fn the_committed_sample_pack_is_reproducible_and_signed_by_the_test_key() {
    let root = repo_root().join("examples/packs");
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh.xynpack");
    ok(
        tmp.path(),
        &["pack", "build", s(&sample_src()), "-o", s(&fresh)],
    );
    assert_eq!(
        std::fs::read(&fresh).unwrap(),
        std::fs::read(root.join("hello-1.0.0.xynpack")).unwrap(),
        "examples/packs/hello-1.0.0.xynpack is not what `xyn pack build examples/packs/hello` makes"
    );
    let pubkey = std::fs::read_to_string(root.join("TEST-ONLY-signing-key.pub")).unwrap();
    ok(
        tmp.path(),
        &[
            "pack",
            "verify",
            s(&root.join("hello-1.0.0.xynpack")),
            "--key",
            pubkey.trim(),
        ],
    );
}

#[test]
fn a_trust_change_that_cannot_be_audited_is_undone() {
    let k = Kit::new();
    let d = k.dir();
    // A store that refuses connections: the audit event cannot be written.
    let (code, out, err) = xyn(
        d,
        &[
            "trust",
            "add",
            "release",
            &k.pubkey,
            "--data-dir",
            "node",
            "--database-url",
            "postgres://xyn@127.0.0.1:1/none",
        ],
    );
    assert_ne!(code, 0, "{out}\n{err}");
    let trusted: Value =
        serde_json::from_str(&ok(d, &["trust", "list", "--json", "--data-dir", "node"])).unwrap();
    assert_eq!(trusted, json!([]), "{err}");
}

#[test]
fn an_install_whose_store_write_fails_puts_the_previous_actions_back() {
    let k = Kit::new();
    let d = k.dir();
    k.trust("node");
    let v1 = k.pack("v1.xynpack", None);
    ok(d, &["pack", "install", s(&v1), "--data-dir", "node"]);
    let lua = d.join("node/actions/examples.greet/greet.lua");
    let before = std::fs::read(&lua).unwrap();
    // Version 2 changes the action; its install fails at the store (refusing connections).
    let src = d.join("v2");
    copy_tree(&sample_src(), &src);
    std::fs::write(
        src.join("actions/examples.greet/greet.lua"),
        "function handle(i) return {greeting = \"v2\"} end\n",
    )
    .unwrap();
    let m = std::fs::read_to_string(src.join("xyn-pack.toml")).unwrap();
    std::fs::write(src.join("xyn-pack.toml"), m.replace("1.0.0", "2.0.0")).unwrap();
    let v2 = k.pack("v2.xynpack", Some(&src));
    let (code, out, err) = xyn(
        d,
        &[
            "pack",
            "install",
            s(&v2),
            "--data-dir",
            "node",
            "--database-url",
            "postgres://xyn@127.0.0.1:1/none",
        ],
    );
    assert_ne!(code, 0, "{out}\n{err}");
    assert_eq!(
        std::fs::read(&lua).unwrap(),
        before,
        "the v1 action is back"
    );
    let packs = k.installed("node");
    assert_eq!(packs.len(), 1);
    assert_eq!(packs[0]["version"], "1.0.0");
    let left: Vec<_> = std::fs::read_dir(d.join("node/packs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["examples.hello"], "no staging left behind");
}
