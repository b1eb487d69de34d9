#![allow(clippy::unwrap_used)]
//! The encrypted local store on SQLite and PostgreSQL: versions, the attacks it must refuse
//! (moved ciphertext, a wrong passphrase, a readable key file, another store's key file) and
//! master-key rotation.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xyn_secrets::local::{KeySource, LocalSecretStore};
use xyn_secrets::{SecretPath, SecretStore, SecretValue, codes};
use xyn_store::Store;
use xyn_store::postgres::{PgConfig, PgStore};
use xyn_store::sqlite::{SqliteConfig, SqliteStore};
use zeroize::Zeroizing;

struct Env {
    dir: PathBuf,
    store: Arc<dyn Store>,
}

impl Env {
    fn key_file(&self) -> PathBuf {
        self.dir.join("secrets.key")
    }
    fn with_file(&self) -> LocalSecretStore {
        LocalSecretStore::new(self.store.clone(), KeySource::KeyFile(self.key_file()))
    }
    fn with_pass(&self, p: &str) -> LocalSecretStore {
        LocalSecretStore::new(
            self.store.clone(),
            KeySource::Passphrase(Zeroizing::new(p.into())),
        )
    }
}

async fn sqlite() -> Env {
    let dir = tempfile::tempdir().unwrap().keep();
    let store = Arc::new(SqliteStore::open(dir.join("xyn.db"), SqliteConfig::default()).unwrap());
    Env { dir, store }
}

fn pg_url() -> String {
    std::env::var("XYN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn postgres() -> Env {
    let dir = tempfile::tempdir().unwrap().keep();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut cfg = PgConfig::new(pg_url());
    cfg.schema = Some(format!("xt_{now}_{}", uuid_like()));
    cfg.pool_size = 4;
    Env {
        dir,
        store: Arc::new(
            PgStore::open(cfg)
                .await
                .expect("PostgreSQL on 127.0.0.1:5432 (see .ci/run)"),
        ),
    }
}

fn uuid_like() -> String {
    hex::encode(xyn_secrets::crypto::random::<12>().unwrap())
}

fn p(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

fn v(s: &str) -> SecretValue {
    SecretValue::new(s.into()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn read(s: &LocalSecretStore, path: &str) -> String {
    s.get(&p(path), None)
        .await
        .unwrap()
        .unwrap()
        .value
        .expose()
        .to_string()
}

async fn versions_and_metadata(e: Env) {
    let s = e.with_file();
    assert!(
        !e.key_file().exists(),
        "nothing is created before first use"
    );
    assert!(s.get(&p("team/t1/db"), None).await.unwrap().is_none());
    assert!(!e.key_file().exists(), "a read creates no key");
    let m1 = s
        .put(&p("team/t1/db"), &v("first-value-1"), "alice")
        .await
        .unwrap();
    assert_eq!(
        (m1.version, m1.versions, m1.updated_by.as_str()),
        (1, 1, "alice")
    );
    assert_eq!(mode(&e.key_file()), 0o600);
    let m2 = s
        .put(&p("team/t1/db"), &v("second-value-2"), "bob")
        .await
        .unwrap();
    assert_eq!((m2.version, m2.versions), (2, 2));
    s.put(&p("sys/prod/providers/openai"), &v("sk-test-abcdef"), "op")
        .await
        .unwrap();
    assert_eq!(read(&s, "team/t1/db").await, "second-value-2");
    let old = s.get(&p("team/t1/db"), Some(1)).await.unwrap().unwrap();
    assert_eq!(
        (old.value.expose(), old.version, old.backend),
        ("first-value-1", 1, "local")
    );
    assert!(s.get(&p("team/t1/db"), Some(3)).await.unwrap().is_none());
    let listed = s.list("team/").await.unwrap();
    assert_eq!(listed.len(), 1);
    let shown = serde_json::to_string(&listed).unwrap();
    assert!(
        shown.contains("team/t1/db") && !shown.contains("value-"),
        "{shown}"
    );
    assert_eq!(s.list("").await.unwrap().len(), 2);
    assert_eq!(
        s.list("team/../").await.unwrap_err().code,
        codes::PATH_INVALID
    );
    let vs = s.versions(&p("team/t1/db")).await.unwrap();
    assert_eq!(
        vs.iter()
            .map(|v| (v.version, v.created_by.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "alice"), (2, "bob")]
    );
    // Another instance (another process) with the same key file reads the same values.
    assert_eq!(
        read(&e.with_file(), "sys/prod/providers/openai").await,
        "sk-test-abcdef"
    );
    assert!(s.delete(&p("team/t1/db")).await.unwrap());
    assert!(!s.delete(&p("team/t1/db")).await.unwrap());
    assert!(s.get(&p("team/t1/db"), None).await.unwrap().is_none());
}

async fn moved_ciphertext_does_not_decrypt(e: Env) {
    let s = e.with_file();
    s.put(&p("team/a/victim"), &v("victim-secret-1"), "x")
        .await
        .unwrap();
    s.put(&p("team/b/attacker"), &v("attacker-own-1"), "x")
        .await
        .unwrap();
    s.put(&p("team/a/victim"), &v("victim-secret-2"), "x")
        .await
        .unwrap();
    // Someone with write access to the database copies the victim's row under their path.
    let mut row = e
        .store
        .secret_get("team/a/victim", Some(1))
        .await
        .unwrap()
        .unwrap();
    row.path = "team/b/attacker".into();
    row.version = 2;
    e.store.secret_put(row).await.unwrap();
    let err = s.get(&p("team/b/attacker"), None).await.unwrap_err();
    assert_eq!(err.code, codes::DECRYPT_FAILED);
    assert!(!err.message.contains("victim-secret"), "{}", err.message);
    // An old version replayed as a new one of the same path fails too (the version is bound).
    let mut row = e
        .store
        .secret_get("team/a/victim", Some(1))
        .await
        .unwrap()
        .unwrap();
    row.version = 3;
    e.store.secret_put(row).await.unwrap();
    assert_eq!(
        s.get(&p("team/a/victim"), None).await.unwrap_err().code,
        codes::DECRYPT_FAILED
    );
    // The genuine rows still open.
    assert_eq!(
        s.get(&p("team/a/victim"), Some(2))
            .await
            .unwrap()
            .unwrap()
            .value
            .expose(),
        "victim-secret-2"
    );
    assert_eq!(
        s.get(&p("team/b/attacker"), Some(1))
            .await
            .unwrap()
            .unwrap()
            .value
            .expose(),
        "attacker-own-1"
    );
}

async fn a_wrong_passphrase_is_refused_and_changes_nothing(e: Env) {
    let s = e.with_pass("correct horse battery");
    s.put(&p("team/t/x"), &v("value-under-pass"), "a")
        .await
        .unwrap();
    assert!(
        !e.key_file().exists(),
        "a passphrase store writes no key file"
    );
    let before = e.store.secret_wrapped_keys().await.unwrap();
    let master = e.store.secret_master().await.unwrap();
    let wrong = e.with_pass("correct horse battery!");
    assert_eq!(
        wrong.unlock().await.unwrap_err().code,
        codes::WRONG_PASSPHRASE
    );
    assert_eq!(
        wrong.get(&p("team/t/x"), None).await.unwrap_err().code,
        codes::WRONG_PASSPHRASE
    );
    assert_eq!(
        wrong
            .put(&p("team/t/x"), &v("overwrite"), "m")
            .await
            .unwrap_err()
            .code,
        codes::WRONG_PASSPHRASE
    );
    assert_eq!(
        wrong
            .put(&p("team/t/new"), &v("overwrite"), "m")
            .await
            .unwrap_err()
            .code,
        codes::WRONG_PASSPHRASE
    );
    assert_eq!(e.store.secret_wrapped_keys().await.unwrap(), before);
    assert_eq!(e.store.secret_master().await.unwrap(), master);
    // Without the passphrase the store says what it needs.
    assert_eq!(
        e.with_file()
            .get(&p("team/t/x"), None)
            .await
            .unwrap_err()
            .code,
        codes::PASSPHRASE_REQUIRED
    );
    assert!(!e.key_file().exists());
    assert_eq!(
        read(&e.with_pass("correct horse battery"), "team/t/x").await,
        "value-under-pass"
    );
}

async fn an_exposed_or_foreign_key_file_is_refused(e: Env) {
    let s = e.with_file();
    s.put(&p("team/t/x"), &v("value-key-file"), "a")
        .await
        .unwrap();
    std::fs::set_permissions(e.key_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = e.with_file().get(&p("team/t/x"), None).await.unwrap_err();
    assert_eq!(err.code, codes::KEY_FILE_INSECURE);
    assert!(err.message.contains("0644"), "{}", err.message);
    std::fs::set_permissions(e.key_file(), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        e.with_file().unlock().await.unwrap_err().code,
        codes::KEY_FILE_INSECURE
    );
    std::fs::set_permissions(e.key_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read(&e.with_file(), "team/t/x").await, "value-key-file");
    // Another store's key file does not open this one.
    let other = tempfile::tempdir().unwrap();
    let foreign = other.path().join("secrets.key");
    let o = LocalSecretStore::new(sqlite().await.store, KeySource::KeyFile(foreign.clone()));
    o.put(&p("team/t/y"), &v("elsewhere"), "a").await.unwrap();
    let err = LocalSecretStore::new(e.store.clone(), KeySource::KeyFile(foreign))
        .get(&p("team/t/x"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, codes::WRONG_KEY_FILE);
    // A passphrase does not stand in for the key file.
    assert_eq!(
        e.with_pass("guess").unlock().await.unwrap_err().code,
        codes::PASSPHRASE_NOT_USED
    );
    // A missing key file is named.
    std::fs::remove_file(e.key_file()).unwrap();
    assert_eq!(
        e.with_file().unlock().await.unwrap_err().code,
        codes::KEY_FILE_MISSING
    );
}

async fn rotation_rewraps_without_reencrypting(e: Env) {
    let s = e.with_file();
    for (path, val) in [
        ("team/t/a", "alpha-1"),
        ("team/t/a", "alpha-2"),
        ("sys/e/providers/x", "xray-1"),
        ("sys/e/integrations/y", "yank-1"),
    ] {
        s.put(&p(path), &v(val), "a").await.unwrap();
    }
    let old_key = std::fs::read(e.key_file()).unwrap();
    let before_a = e
        .store
        .secret_get("team/t/a", Some(1))
        .await
        .unwrap()
        .unwrap();
    let r = s.rotate(KeySource::KeyFile(e.key_file())).await.unwrap();
    assert_eq!((r.rewrapped, r.kind), (4, "key_file"));
    assert_ne!(std::fs::read(e.key_file()).unwrap(), old_key);
    assert_eq!(mode(&e.key_file()), 0o600);
    assert!(!e.dir.join("secrets.key.new").exists());
    let after_a = e
        .store
        .secret_get("team/t/a", Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (&after_a.ciphertext, &after_a.nonce),
        (&before_a.ciphertext, &before_a.nonce),
        "values are not re-encrypted"
    );
    assert_ne!(after_a.wrapped_key, before_a.wrapped_key);
    for store in [&s, &e.with_file()] {
        assert_eq!(read(store, "team/t/a").await, "alpha-2");
        assert_eq!(
            store
                .get(&p("team/t/a"), Some(1))
                .await
                .unwrap()
                .unwrap()
                .value
                .expose(),
            "alpha-1"
        );
        assert_eq!(read(store, "sys/e/integrations/y").await, "yank-1");
    }
    // The old key file opens nothing any more.
    let old_dir = tempfile::tempdir().unwrap();
    let old_path = old_dir.path().join("secrets.key");
    std::fs::write(&old_path, &old_key).unwrap();
    std::fs::set_permissions(&old_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stale = LocalSecretStore::new(e.store.clone(), KeySource::KeyFile(old_path));
    assert_eq!(
        stale.unlock().await.unwrap_err().code,
        codes::WRONG_KEY_FILE
    );
    // To a passphrase: the key file goes, the passphrase reads everything.
    let r = s
        .rotate(KeySource::Passphrase(Zeroizing::new(
            "new pass phrase".into(),
        )))
        .await
        .unwrap();
    assert_eq!((r.rewrapped, r.kind), (4, "passphrase"));
    assert!(!e.key_file().exists());
    assert_eq!(read(&s, "sys/e/providers/x").await, "xray-1");
    let fresh = e.with_pass("new pass phrase");
    assert_eq!(read(&fresh, "team/t/a").await, "alpha-2");
    assert_eq!(
        e.with_pass("old").unlock().await.unwrap_err().code,
        codes::WRONG_PASSPHRASE
    );
    // Writes after a rotation use the new key.
    fresh.put(&p("team/t/a"), &v("alpha-3"), "b").await.unwrap();
    assert_eq!(read(&s, "team/t/a").await, "alpha-3");
}

async fn a_rotation_cut_short_before_the_rename_is_finished_at_unlock(e: Env) {
    let s = e.with_file();
    s.put(&p("team/t/a"), &v("survives-rotation"), "a")
        .await
        .unwrap();
    s.rotate(KeySource::KeyFile(e.key_file())).await.unwrap();
    // Simulate a crash after the commit and before the rename: the new key is still at
    // secrets.key.new and the old one at secrets.key.
    let new_key = std::fs::read(e.key_file()).unwrap();
    std::fs::rename(e.key_file(), e.dir.join("secrets.key.new")).unwrap();
    std::fs::write(e.key_file(), format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(e.key_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read(&e.with_file(), "team/t/a").await, "survives-rotation");
    assert_eq!(std::fs::read(e.key_file()).unwrap(), new_key);
    assert!(!e.dir.join("secrets.key.new").exists());
}

/// Resolution reuses a value for a short time: a write through this node is seen at once, one
/// made by another node over the same database once the reuse time has passed.
async fn resolution_is_cached_but_never_stale_after_a_write(e: Env) {
    use std::time::Duration;
    use xyn_secrets::Secrets;
    use xyn_secrets::env::EnvSecretStore;
    let local = Arc::new(e.with_file());
    let env = Arc::new(EnvSecretStore::from_vars(Vec::<(String, String)>::new()));
    let secrets = Secrets::with_cache_ttl(local.clone(), env, Duration::from_millis(300));
    let path = p("team/t/cached");
    local.put(&path, &v("one"), "t").await.unwrap();
    let got =
        |r: Option<xyn_secrets::Resolved>| r.map(|r| (r.value.expose().to_string(), r.version));
    assert_eq!(
        got(secrets.resolve(&path).await.unwrap()),
        Some(("one".into(), 1))
    );
    // Written through this node: the next resolution reads it.
    local.put(&path, &v("two"), "t").await.unwrap();
    assert_eq!(
        got(secrets.resolve(&path).await.unwrap()),
        Some(("two".into(), 2))
    );
    // Written by another node (another store over the same database): reused until the time
    // is up, then read.
    let other = e.with_file();
    other.put(&path, &v("three"), "t").await.unwrap();
    assert_eq!(
        got(secrets.resolve(&path).await.unwrap()),
        Some(("two".into(), 2))
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        got(secrets.resolve(&path).await.unwrap()),
        Some(("three".into(), 3))
    );
    // Removed through this node: gone at once.
    assert!(local.delete(&path).await.unwrap());
    assert!(secrets.resolve(&path).await.unwrap().is_none());
}

macro_rules! suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            macro_rules! check {
                ($f:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $f() {
                        super::$f($make.await).await
                    }
                };
            }
            check!(versions_and_metadata);
            check!(moved_ciphertext_does_not_decrypt);
            check!(a_wrong_passphrase_is_refused_and_changes_nothing);
            check!(an_exposed_or_foreign_key_file_is_refused);
            check!(rotation_rewraps_without_reencrypting);
            check!(a_rotation_cut_short_before_the_rename_is_finished_at_unlock);
            check!(resolution_is_cached_but_never_stale_after_a_write);
        }
    };
}

suite!(on_sqlite, sqlite());
suite!(on_postgres, postgres());

#[tokio::test]
async fn the_database_file_never_holds_a_value() {
    let e = sqlite().await;
    let s = e.with_file();
    let value = "plaintext-canary-7f3a9c";
    s.put(&p("team/t/canary"), &v(value), "a").await.unwrap();
    s.put(&p("team/t/canary"), &v(value), "a").await.unwrap();
    s.rotate(KeySource::KeyFile(e.key_file())).await.unwrap();
    assert_eq!(read(&s, "team/t/canary").await, value);
    for entry in std::fs::read_dir(&e.dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{} holds the value",
            path.display()
        );
    }
}
