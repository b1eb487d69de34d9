//! Packs attacked from outside: reproducibility, unsafe entries, size caps and every kind of
//! tampering with an archive or its signature.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use xyn_pack::archive::{DIGESTS_FILE, DigestList, FileDigest, Pack};
use xyn_pack::codes;
use xyn_pack::dsse::{Envelope, b64_decode, b64_encode};
use xyn_pack::keys::{TrustStore, public_key_string};
use xyn_pack::verify::{KeyPolicy, read_envelope, sig_path, sign, verify_pack};

const MANIFEST: &str = r#"id = "acme.hello"
version = "1.0.0"
xyn = ">=0.1"
description = "A test pack"
"#;

fn sample(dir: &Path) {
    std::fs::create_dir_all(dir.join("blueprints")).unwrap();
    std::fs::create_dir_all(dir.join("actions/greet")).unwrap();
    std::fs::write(dir.join("xyn-pack.toml"), MANIFEST).unwrap();
    std::fs::write(
        dir.join("blueprints/hello.yaml"),
        "id: hello\nname: Hello\nsteps: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/greet/xyn-action.toml"),
        "name = \"greet\"\nruntime = \"lua\"\nentry = \"main.lua\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/greet/main.lua"),
        "return function(i) return {hi = i.name} end\n",
    )
    .unwrap();
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn built(tmp: &Path) -> PathBuf {
    let src = tmp.join("src");
    sample(&src);
    let out = tmp.join("acme.hello-1.0.0.xynpack");
    xyn_pack::build(&src, &out).unwrap();
    out
}

fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        out.push((p, b));
    }
    out
}

/// Writes an archive with exactly these entries (raw names, so hostile ones go in as is).
fn write_raw(path: &Path, files: &[(String, Vec<u8>, tar::EntryType)]) {
    let f = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::new(6));
    let mut b = tar::Builder::new(gz);
    for (p, bytes, kind) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        let name = &mut h.as_old_mut().name;
        name[..p.len()].copy_from_slice(p.as_bytes());
        if *kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_cksum();
        b.append(&h, bytes.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

/// Rewrites an archive's entries through `f` (keeping order and the digest list as is).
fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) {
    let mut es = entries(path);
    f(&mut es);
    let raw: Vec<_> = es
        .into_iter()
        .map(|(p, b)| (p, b, tar::EntryType::Regular))
        .collect();
    write_raw(path, &raw);
}

/// A digest list recomputed for the entries as they now are (what a careful attacker does).
fn fix_digests(es: &mut [(String, Vec<u8>)]) {
    let files: Vec<FileDigest> = es
        .iter()
        .filter(|(p, _)| p != DIGESTS_FILE)
        .map(|(p, b)| FileDigest {
            path: p.clone(),
            sha256: xyn_pack::sha256_hex(b),
            size: b.len() as u64,
        })
        .collect();
    let list = DigestList::new(files);
    for e in es.iter_mut() {
        if e.0 == DIGESTS_FILE {
            e.1 = serde_json::to_vec(&list).unwrap();
        }
    }
}

fn set(es: &mut [(String, Vec<u8>)], path: &str, bytes: &[u8]) {
    let e = es.iter_mut().find(|e| e.0 == path).unwrap();
    e.1 = bytes.to_vec();
}

fn verify_with(
    archive: &Path,
    policy: &KeyPolicy,
) -> Result<xyn_pack::Verified, xyn_pack::PackError> {
    let env = read_envelope(&sig_path(archive)).unwrap();
    verify_pack(archive, env.as_deref(), policy, false)
}

#[test]
fn two_builds_of_the_same_tree_are_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let a = built(tmp.path());
    let b = tmp.path().join("again.xynpack");
    // A copy of the tree made later (other mtimes, inode order) builds the same bytes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let src2 = tmp.path().join("copy");
    sample(&src2);
    xyn_pack::build(&src2, &b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let names: Vec<String> = entries(&a).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "actions/greet/main.lua",
            "actions/greet/xyn-action.toml",
            "blueprints/hello.yaml",
            "xyn-pack.toml",
            DIGESTS_FILE
        ]
    );
    let p = Pack::read(&a, true).unwrap();
    assert_eq!(p.manifest.id, "acme.hello");
    assert_eq!(p.files.len(), 4);
    let (sha, size) = xyn_pack::archive::file_sha256(&a).unwrap();
    assert_eq!(
        (p.archive_sha256.as_str(), p.archive_size),
        (sha.as_str(), size)
    );
    assert_eq!(p.digests.files.len(), 4);
}

#[cfg(unix)]
#[test]
fn build_refuses_symlinks_and_strays() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample(&src);
    std::os::unix::fs::symlink("/etc/passwd", src.join("blueprints/passwd.yaml")).unwrap();
    let out = tmp.path().join("x.xynpack");
    let e = xyn_pack::build(&src, &out).unwrap_err();
    assert_eq!(e.code, codes::INVALID, "{e}");
    assert!(e.message.contains("symlink"));
    assert!(!out.exists(), "a failed build leaves no file");
    std::fs::remove_file(src.join("blueprints/passwd.yaml")).unwrap();
    std::fs::write(src.join("notes.txt"), "x").unwrap();
    assert_eq!(
        xyn_pack::build(&src, &out).unwrap_err().code,
        codes::INVALID
    );
}

#[test]
fn build_enforces_the_size_caps() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample(&src);
    let out = tmp.path().join("x.xynpack");
    // A file just over 256 MiB (sparse: nothing is written).
    let big = std::fs::File::create(src.join("blueprints/big.yaml")).unwrap();
    big.set_len(256 * 1024 * 1024 + 1).unwrap();
    let e = xyn_pack::build(&src, &out).unwrap_err();
    assert_eq!(e.code, codes::TOO_LARGE);
    assert_eq!(e.file.as_deref(), Some("blueprints/big.yaml"));
    std::fs::remove_file(src.join("blueprints/big.yaml")).unwrap();
    let m = std::fs::OpenOptions::new()
        .append(true)
        .open(src.join("xyn-pack.toml"))
        .unwrap();
    m.set_len(8 * 1024 * 1024 + 1).unwrap();
    let e = xyn_pack::build(&src, &out).unwrap_err();
    assert_eq!(e.code, codes::TOO_LARGE);
    assert_eq!(e.file.as_deref(), Some("xyn-pack.toml"));
}

#[test]
fn hostile_archive_entries_are_refused_at_read() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("evil.xynpack");
    let m = (
        "xyn-pack.toml".to_string(),
        MANIFEST.as_bytes().to_vec(),
        tar::EntryType::Regular,
    );
    for (name, kind, code) in [
        ("../escape.yaml", tar::EntryType::Regular, codes::INVALID),
        (
            "blueprints/../../x",
            tar::EntryType::Regular,
            codes::INVALID,
        ),
        ("/etc/cron.d/x", tar::EntryType::Regular, codes::INVALID),
        ("blueprints//x", tar::EntryType::Regular, codes::INVALID),
        (
            "blueprints/link.yaml",
            tar::EntryType::Symlink,
            codes::INVALID,
        ),
        ("blueprints/hard.yaml", tar::EntryType::Link, codes::INVALID),
        ("blueprints/dev", tar::EntryType::Char, codes::INVALID),
        ("other/x.yaml", tar::EntryType::Regular, codes::INVALID),
    ] {
        write_raw(&path, &[m.clone(), (name.to_string(), b"x".to_vec(), kind)]);
        let e = Pack::read(&path, true).unwrap_err();
        assert_eq!(e.code, code, "{name}: {e}");
    }
    // A duplicate entry.
    let dup = (
        "blueprints/a.yaml".to_string(),
        b"x".to_vec(),
        tar::EntryType::Regular,
    );
    write_raw(&path, &[m.clone(), dup.clone(), dup]);
    assert_eq!(Pack::read(&path, true).unwrap_err().code, codes::INVALID);
    // No digest list at all.
    write_raw(&path, std::slice::from_ref(&m));
    assert_eq!(
        Pack::read(&path, true).unwrap_err().code,
        codes::DIGEST_MISMATCH
    );
    // Not an archive.
    std::fs::write(&path, b"hello").unwrap();
    assert_eq!(Pack::read(&path, true).unwrap_err().code, codes::INVALID);
}

#[test]
fn an_entry_claiming_more_than_the_cap_is_refused_before_it_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bomb.xynpack");
    // A header that claims 300 MiB, with no data behind it.
    let f = std::fs::File::create(&path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::new(6));
    let mut h = tar::Header::new_gnu();
    h.set_path("blueprints/bomb.yaml").unwrap();
    h.set_size(300 * 1024 * 1024);
    h.set_mode(0o644);
    h.set_cksum();
    gz.write_all(h.as_bytes()).unwrap();
    gz.finish().unwrap();
    let e = Pack::read(&path, true).unwrap_err();
    assert_eq!(e.code, codes::TOO_LARGE, "{e}");
}

#[test]
fn a_signed_pack_verifies_and_names_its_signer() {
    let tmp = tempfile::tempdir().unwrap();
    let a = built(tmp.path());
    let (sig, env) = sign(&a, &key(1)).unwrap();
    assert_eq!(sig, sig_path(&a));
    assert_eq!(env.payload_type, "application/vnd.in-toto+json");
    let pk = key(1).verifying_key();
    let v = verify_with(&a, &KeyPolicy::Only(pk)).unwrap();
    assert_eq!(v.signers[0].public_key, public_key_string(&pk));
    assert_eq!(v.builder_id, format!("xyn/{}", xyn_pack::XYN_VERSION));
    assert_eq!(
        v.statement["subject"][0]["digest"]["sha256"],
        v.pack.archive_sha256
    );
    assert_eq!(
        v.statement["predicate"]["buildDefinition"]["externalParameters"]["manifest"]["id"],
        "acme.hello"
    );
    assert_eq!(
        v.statement["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Trusted through the trust store.
    let dd = tmp.path().join("data");
    TrustStore::add(&dd, "acme", &public_key_string(&pk)).unwrap();
    let t = TrustStore::load(&dd).unwrap();
    let v = verify_with(&a, &KeyPolicy::Trusted(t)).unwrap();
    assert_eq!(v.signers[0].trusted_as.as_deref(), Some("acme"));
    // A URL-safe re-encoding of the envelope verifies the same.
    let mut env: Envelope = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    let url = |s: &str| s.replace('+', "-").replace('/', "_").replace('=', "");
    env.payload = url(&env.payload);
    env.signatures[0].sig = url(&env.signatures[0].sig);
    std::fs::write(&sig, serde_json::to_vec(&env).unwrap()).unwrap();
    assert!(verify_with(&a, &KeyPolicy::Only(pk)).is_ok());
}

#[test]
fn co_signing_keeps_both_signatures() {
    let tmp = tempfile::tempdir().unwrap();
    let a = built(tmp.path());
    sign(&a, &key(1)).unwrap();
    let (_, env) = sign(&a, &key(2)).unwrap();
    assert_eq!(env.signatures.len(), 2);
    assert!(verify_with(&a, &KeyPolicy::Only(key(1).verifying_key())).is_ok());
    assert!(verify_with(&a, &KeyPolicy::Only(key(2).verifying_key())).is_ok());
}

#[test]
fn tampering_with_any_file_is_a_digest_mismatch_naming_it() {
    for (file, evil) in [
        (
            "blueprints/hello.yaml",
            &b"id: hello\nname: Evil\nsteps: []\n"[..],
        ),
        ("actions/greet/main.lua", b"os.execute('rm -rf /')\n"),
        (
            "xyn-pack.toml",
            b"id = \"acme.hello\"\nversion = \"1.0.0\"\nxyn = \"*\"\n",
        ),
    ] {
        for careful in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let a = built(tmp.path());
            sign(&a, &key(1)).unwrap();
            rewrite(&a, |es| {
                set(es, file, evil);
                if careful {
                    fix_digests(es);
                }
            });
            let e = verify_with(&a, &KeyPolicy::Only(key(1).verifying_key())).unwrap_err();
            assert_eq!(
                e.code,
                codes::DIGEST_MISMATCH,
                "{file} careful={careful}: {e}"
            );
            assert_eq!(e.file.as_deref(), Some(file), "{e}");
        }
    }
}

#[test]
fn tampering_with_the_digest_list_is_a_digest_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let a = built(tmp.path());
    sign(&a, &key(1)).unwrap();
    // Drop a file from the list (and the archive) and recompute the tree: the signed
    // statement still names it.
    rewrite(&a, |es| {
        es.retain(|e| e.0 != "blueprints/hello.yaml");
        fix_digests(es);
    });
    let e = verify_with(&a, &KeyPolicy::Only(key(1).verifying_key())).unwrap_err();
    assert_eq!(e.code, codes::DIGEST_MISMATCH, "{e}");
    // A list whose tree digest does not add up.
    let tmp = tempfile::tempdir().unwrap();
    let a = built(tmp.path());
    sign(&a, &key(1)).unwrap();
    rewrite(&a, |es| {
        let e = es.iter_mut().find(|e| e.0 == DIGESTS_FILE).unwrap();
        let mut l: DigestList = serde_json::from_slice(&e.1).unwrap();
        l.tree = "00".repeat(32);
        e.1 = serde_json::to_vec(&l).unwrap();
    });
    let e = verify_with(&a, &KeyPolicy::Only(key(1).verifying_key())).unwrap_err();
    assert_eq!(e.code, codes::DIGEST_MISMATCH);
    assert_eq!(e.file.as_deref(), Some(DIGESTS_FILE));
}

#[test]
fn a_tampered_envelope_is_signature_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let a = built(tmp.path());
    let (sig, env) = sign(&a, &key(1)).unwrap();
    let pk = key(1).verifying_key();
    // Payload: the statement edited to name another archive digest.
    let mut st: serde_json::Value =
        serde_json::from_slice(&b64_decode(&env.payload).unwrap()).unwrap();
    st["subject"][0]["digest"]["sha256"] = "11".repeat(32).into();
    let mut e1 = env.clone();
    e1.payload = b64_encode(&serde_json::to_vec(&st).unwrap());
    // payloadType swapped (the signature was over the in-toto type).
    let mut e2 = env.clone();
    e2.payload_type = "application/json".into();
    let mut e3 = env.clone();
    e3.payload_type = "application/vnd.in-toto+json ".into();
    // The signature itself flipped.
    let mut e4 = env.clone();
    let mut s = b64_decode(&e4.signatures[0].sig).unwrap();
    s[0] ^= 1;
    e4.signatures[0].sig = b64_encode(&s);
    for bad in [e1, e2, e3, e4] {
        std::fs::write(&sig, serde_json::to_vec(&bad).unwrap()).unwrap();
        for policy in [
            KeyPolicy::Only(pk),
            KeyPolicy::Report(TrustStore::default()),
        ] {
            let e = verify_with(&a, &policy).unwrap_err();
            assert_eq!(e.code, codes::SIGNATURE_INVALID, "{e}");
        }
    }
    std::fs::write(&sig, b"{not json").unwrap();
    assert_eq!(
        verify_with(&a, &KeyPolicy::Only(pk)).unwrap_err().code,
        codes::SIGNATURE_INVALID
    );
    // An envelope over the 16 MiB cap is refused before it is parsed.
    std::fs::write(&sig, vec![b' '; 16 * 1024 * 1024 + 1]).unwrap();
    assert_eq!(read_envelope(&sig).unwrap_err().code, codes::TOO_LARGE);
}

#[test]
fn wrong_untrusted_and_missing_signatures_have_their_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = built(tmp.path());
    assert_eq!(
        verify_with(&a, &KeyPolicy::Only(key(1).verifying_key()))
            .unwrap_err()
            .code,
        codes::UNSIGNED
    );
    sign(&a, &key(1)).unwrap();
    let e = verify_with(&a, &KeyPolicy::Only(key(2).verifying_key())).unwrap_err();
    assert_eq!(e.code, codes::UNTRUSTED_KEY, "{e}");
    let mut t = TrustStore::default();
    assert_eq!(
        verify_with(&a, &KeyPolicy::Trusted(t.clone()))
            .unwrap_err()
            .code,
        codes::UNTRUSTED_KEY
    );
    t.keys
        .insert("other".into(), public_key_string(&key(2).verifying_key()));
    assert_eq!(
        verify_with(&a, &KeyPolicy::Trusted(t)).unwrap_err().code,
        codes::UNTRUSTED_KEY
    );
    // A keyid lying about the key changes nothing: trust follows the key that verifies.
    let sig = sig_path(&a);
    let mut env: Envelope = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    env.signatures[0].keyid = public_key_string(&key(2).verifying_key());
    std::fs::write(&sig, serde_json::to_vec(&env).unwrap()).unwrap();
    let mut t = TrustStore::default();
    t.keys
        .insert("two".into(), public_key_string(&key(2).verifying_key()));
    assert_eq!(
        verify_with(&a, &KeyPolicy::Trusted(t)).unwrap_err().code,
        codes::SIGNATURE_INVALID
    );
}
