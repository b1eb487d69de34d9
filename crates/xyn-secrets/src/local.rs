//! The encrypted local secret store, kept in the node's store.
//!
//! Rows hold ciphertext and wrapped data keys (`xyn_store::secrets`); the master key never
//! touches the database. It comes from a key file (`<data-dir>/secrets.key`, 64 hex digits,
//! created with mode 0600 and refused when group or others may read it) or from a passphrase
//! through Argon2id (its salt and costs are in the database, with a check value that only the
//! right key opens, so a wrong passphrase is refused before anything is read or written).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use xyn_core::{ErrorKind, XynError};
use xyn_store::Store;
use xyn_store::secrets::{MasterKeyRow, SecretVersionRow, WrappedKeyRow};
use zeroize::Zeroizing;

use crate::crypto::{self, KdfParams, Key};
use crate::{
    Resolved, SecretMeta, SecretPath, SecretStore, SecretValue, VersionMeta, check_prefix, codes,
};

/// The file name of the key file in a data directory.
pub const KEY_FILE: &str = "secrets.key";
/// The passphrase variable.
pub const PASSPHRASE_VAR: &str = "XYN_SECRET_PASSPHRASE";

const KIND_FILE: &str = "key_file";
const KIND_PASSPHRASE: &str = "passphrase";
const CHECK_PLAINTEXT: &[u8] = b"xyn secret store master key check v1";

/// Where the master key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// A key file, created (mode 0600) on first use.
    KeyFile(PathBuf),
    /// A passphrase, stretched with Argon2id.
    Passphrase(Zeroizing<String>),
}

impl KeySource {
    /// The node's choice: the passphrase when `XYN_SECRET_PASSPHRASE` is set (and not empty),
    /// else `<data_dir>/secrets.key`.
    pub fn from_env(data_dir: &Path, passphrase: Option<String>) -> Self {
        match passphrase.filter(|p| !p.is_empty()) {
            Some(p) => KeySource::Passphrase(Zeroizing::new(p)),
            None => KeySource::KeyFile(data_dir.join(KEY_FILE)),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            KeySource::KeyFile(_) => KIND_FILE,
            KeySource::Passphrase(_) => KIND_PASSPHRASE,
        }
    }
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::KeyFile(p) => write!(f, "KeyFile({})", p.display()),
            KeySource::Passphrase(_) => f.write_str("Passphrase(<hidden>)"),
        }
    }
}

/// An unlocked master key.
struct Master {
    id: String,
    key: Key,
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RotateReport {
    pub old_key_id: Option<String>,
    pub new_key_id: String,
    pub kind: &'static str,
    /// Data keys rewrapped (values were not re-encrypted).
    pub rewrapped: usize,
}

/// The encrypted local store.
pub struct LocalSecretStore {
    store: Arc<dyn Store>,
    source: std::sync::Mutex<KeySource>,
    master: tokio::sync::RwLock<Option<Arc<Master>>>,
    /// Counts the writes and removals made through this store, so that values resolved
    /// before one are not reused after it.
    generation: std::sync::atomic::AtomicU64,
}

fn forbidden(code: &'static str, msg: impl Into<String>) -> XynError {
    XynError::new(ErrorKind::Forbidden, code, msg)
}

fn unavailable(code: &'static str, msg: impl Into<String>) -> XynError {
    XynError::new(ErrorKind::Unavailable, code, msg)
}

fn check_aad(key_id: &str) -> Vec<u8> {
    let mut a = b"xyn-secret-check/v1\0".to_vec();
    a.extend_from_slice(key_id.as_bytes());
    a
}

fn new_key_id() -> Result<String, XynError> {
    Ok(hex::encode(crypto::random::<8>()?))
}

fn check_value(key: &Key, key_id: &str) -> Result<Vec<u8>, XynError> {
    let (nonce, ct) = crypto::seal(key, &check_aad(key_id), CHECK_PLAINTEXT)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

fn opens_check(key: &Key, row: &MasterKeyRow) -> bool {
    row.check.len() > crypto::NONCE_BYTES && {
        let (n, ct) = row.check.split_at(crypto::NONCE_BYTES);
        crypto::open(key, n, &check_aad(&row.key_id), ct)
            .is_ok_and(|p| p.as_slice() == CHECK_PLAINTEXT)
    }
}

/// Reads a key file, refusing one that group or others may read.
pub fn read_key_file(path: &Path) -> Result<Key, XynError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        unavailable(
            codes::KEY_FILE_MISSING,
            format!("cannot read the secret key file {}: {e}", path.display()),
        )
    })?;
    if !meta.file_type().is_file() {
        return Err(forbidden(
            codes::KEY_FILE_INSECURE,
            format!(
                "the secret key file {} is not a regular file",
                path.display()
            ),
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(forbidden(
            codes::KEY_FILE_INSECURE,
            format!(
                "the secret key file {} has mode {mode:04o}: group or others may read it; \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        unavailable(
            codes::KEY_FILE_MISSING,
            format!("cannot read the secret key file {}: {e}", path.display()),
        )
    })?);
    let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
        forbidden(
            codes::KEY_FILE_INVALID,
            format!(
                "the secret key file {} is not 64 hex digits",
                path.display()
            ),
        )
    })?);
    if bytes.len() != crypto::KEY_BYTES {
        return Err(forbidden(
            codes::KEY_FILE_INVALID,
            format!(
                "the secret key file {} is not 64 hex digits",
                path.display()
            ),
        ));
    }
    let mut k = Zeroizing::new([0u8; crypto::KEY_BYTES]);
    k.copy_from_slice(&bytes);
    Ok(k)
}

/// Writes a new key file with mode 0600 (refusing to replace one) and syncs it.
fn write_key_file(path: &Path, key: &Key) -> Result<(), XynError> {
    let fail = |e: std::io::Error| {
        unavailable(
            codes::KEY_FILE_MISSING,
            format!("cannot write the secret key file {}: {e}", path.display()),
        )
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_ref())));
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    sync_dir(path);
    Ok(())
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

fn pending_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".new");
    PathBuf::from(s)
}

impl LocalSecretStore {
    /// A store over `store`, keyed by `source`. Nothing is read or created until first use.
    pub fn new(store: Arc<dyn Store>, source: KeySource) -> Self {
        Self {
            store,
            source: std::sync::Mutex::new(source),
            master: tokio::sync::RwLock::new(None),
            generation: Default::default(),
        }
    }

    /// The number of writes and removals made through this store so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn source(&self) -> Result<KeySource, XynError> {
        self.source
            .lock()
            .map(|s| s.clone())
            .map_err(|_| XynError::internal("secret key source lock poisoned"))
    }

    /// Checks the master key now, when one is set (`xyn serve` does this at start, so a wrong
    /// passphrase or an unreadable key file stops the node before it serves anything).
    pub async fn unlock(&self) -> Result<(), XynError> {
        self.master(false).await.map(|_| ())
    }

    /// The unlocked master key; with `create`, a new one is made when none is set.
    async fn master(&self, create: bool) -> Result<Option<Arc<Master>>, XynError> {
        let row = self.store.secret_master().await?;
        if let (Some(m), Some(r)) = (self.master.read().await.as_ref(), &row)
            && m.id == r.key_id
        {
            return Ok(Some(m.clone()));
        }
        let mut slot = self.master.write().await;
        let m = match row {
            Some(r) => self.unlock_row(&r)?,
            None if create => match self.init().await? {
                Some(m) => m,
                // Another process set one meanwhile.
                None => match self.store.secret_master().await? {
                    Some(r) => self.unlock_row(&r)?,
                    None => return Err(XynError::internal("the master key row vanished")),
                },
            },
            None => return Ok(None),
        };
        let m = Arc::new(m);
        *slot = Some(m.clone());
        Ok(Some(m))
    }

    /// Sets a new master key from the source; `None` when one was set meanwhile.
    async fn init(&self) -> Result<Option<Master>, XynError> {
        let id = new_key_id()?;
        let (key, params) = match self.source()? {
            KeySource::KeyFile(path) => {
                let key = if path.exists() {
                    read_key_file(&path)?
                } else {
                    let k = crypto::new_key()?;
                    write_key_file(&path, &k)?;
                    k
                };
                (key, "{}".to_string())
            }
            KeySource::Passphrase(p) => {
                let kdf = KdfParams::new_random()?;
                let key = kdf.derive(p.as_bytes())?;
                let params =
                    serde_json::to_string(&kdf).map_err(|e| XynError::internal(e.to_string()))?;
                (key, params)
            }
        };
        let kind = self.source()?.kind();
        let row = MasterKeyRow {
            check: check_value(&key, &id)?,
            key_id: id.clone(),
            kind: kind.into(),
            params,
            created_at: crate::now(),
        };
        match self.store.secret_master_init(row).await {
            Ok(()) => Ok(Some(Master { id, key })),
            Err(xyn_store::StoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Derives or reads the key the master row describes and checks it.
    fn unlock_row(&self, row: &MasterKeyRow) -> Result<Master, XynError> {
        let source = self.source()?;
        let key = match (row.kind.as_str(), &source) {
            (KIND_FILE, KeySource::KeyFile(path)) => {
                let pending = pending_path(path);
                match read_key_file(path) {
                    Ok(k) if opens_check(&k, row) => k,
                    // A rotation that committed but did not rename its new key file yet.
                    first if pending.exists() => {
                        let k = read_key_file(&pending)?;
                        if !opens_check(&k, row) {
                            first?;
                            return Err(wrong_key_file(path));
                        }
                        std::fs::rename(&pending, path).map_err(|e| {
                            unavailable(
                                codes::KEY_FILE_MISSING,
                                format!(
                                    "cannot finish the key rotation (rename {}): {e}",
                                    pending.display()
                                ),
                            )
                        })?;
                        sync_dir(path);
                        k
                    }
                    Ok(_) => return Err(wrong_key_file(path)),
                    Err(e) => return Err(e),
                }
            }
            (KIND_PASSPHRASE, KeySource::Passphrase(p)) => {
                let kdf: KdfParams = serde_json::from_str(&row.params).map_err(|e| {
                    XynError::internal(format!("bad stored key derivation settings: {e}"))
                })?;
                let k = kdf.derive(p.as_bytes())?;
                if !opens_check(&k, row) {
                    return Err(forbidden(
                        codes::WRONG_PASSPHRASE,
                        format!(
                            "{PASSPHRASE_VAR} does not unlock this secret store (wrong passphrase); nothing was read or changed"
                        ),
                    ));
                }
                k
            }
            (KIND_PASSPHRASE, KeySource::KeyFile(_)) => {
                return Err(unavailable(
                    codes::PASSPHRASE_REQUIRED,
                    format!("this secret store is locked by a passphrase: set {PASSPHRASE_VAR}"),
                ));
            }
            (KIND_FILE, KeySource::Passphrase(_)) => {
                return Err(XynError::new(
                    ErrorKind::Conflict,
                    codes::PASSPHRASE_NOT_USED,
                    format!(
                        "this secret store is keyed by its key file ({KEY_FILE} in the data directory), \
                         not a passphrase: unset {PASSPHRASE_VAR}, or move to a passphrase with \
                         `xyn secret rotate-master --to-passphrase`"
                    ),
                ));
            }
            (other, _) => {
                return Err(XynError::internal(format!(
                    "unknown master key kind {other:?}"
                )));
            }
        };
        Ok(Master {
            id: row.key_id.clone(),
            key,
        })
    }

    fn decrypt(&self, m: &Master, row: &SecretVersionRow) -> Result<SecretValue, XynError> {
        let dk = crypto::unwrap_key(
            &m.key,
            &crypto::key_aad(&row.path, row.version, &m.id),
            &row.wrapped_key,
        )?;
        let plain = crypto::open(
            &dk,
            &row.nonce,
            &crypto::value_aad(&row.path, row.version),
            &row.ciphertext,
        )?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| {
            XynError::new(
                ErrorKind::Internal,
                codes::DECRYPT_FAILED,
                "a secret decrypted to bytes that are not UTF-8",
            )
        })?;
        Ok(SecretValue::stored(Zeroizing::new(text)))
    }

    /// Replaces the master key by one from `new_source`: every data key is unwrapped with the
    /// old key and wrapped with the new one in one transaction; values are not re-encrypted.
    /// A new key file is written beside the old one first and renamed over it once the
    /// database has committed (a crash in between is finished at the next unlock).
    pub async fn rotate(&self, new_source: KeySource) -> Result<RotateReport, XynError> {
        let old = self.master(false).await?;
        let kind = new_source.kind();
        let Some(old) = old else {
            // Nothing stored yet: the new source simply becomes the key.
            if let KeySource::KeyFile(p) = &new_source
                && p.exists()
            {
                std::fs::remove_file(p).map_err(|e| {
                    unavailable(
                        codes::KEY_FILE_MISSING,
                        format!("cannot replace {}: {e}", p.display()),
                    )
                })?;
            }
            *self
                .source
                .lock()
                .map_err(|_| XynError::internal("lock poisoned"))? = new_source;
            let m = self
                .master(true)
                .await?
                .ok_or_else(|| XynError::internal("no master key after init"))?;
            return Ok(RotateReport {
                old_key_id: None,
                new_key_id: m.id.clone(),
                kind,
                rewrapped: 0,
            });
        };
        let id = new_key_id()?;
        let (key, params, pending) = match &new_source {
            KeySource::KeyFile(path) => {
                let k = crypto::new_key()?;
                let pending = pending_path(path);
                if pending.exists() {
                    std::fs::remove_file(&pending).map_err(|e| {
                        unavailable(
                            codes::KEY_FILE_MISSING,
                            format!("cannot remove {}: {e}", pending.display()),
                        )
                    })?;
                }
                write_key_file(&pending, &k)?;
                (k, "{}".to_string(), Some((pending, path.clone())))
            }
            KeySource::Passphrase(p) => {
                let kdf = KdfParams::new_random()?;
                let k = kdf.derive(p.as_bytes())?;
                (
                    k,
                    serde_json::to_string(&kdf).map_err(|e| XynError::internal(e.to_string()))?,
                    None,
                )
            }
        };
        let rows = self.store.secret_wrapped_keys().await?;
        let mut rewrapped = Vec::with_capacity(rows.len());
        for r in &rows {
            let dk = crypto::unwrap_key(
                &old.key,
                &crypto::key_aad(&r.path, r.version, &r.key_id),
                &r.wrapped_key,
            )?;
            rewrapped.push(WrappedKeyRow {
                path: r.path.clone(),
                version: r.version,
                key_id: id.clone(),
                wrapped_key: crypto::wrap(&key, &crypto::key_aad(&r.path, r.version, &id), &dk)?,
            });
        }
        let n = rewrapped.len();
        let row = MasterKeyRow {
            check: check_value(&key, &id)?,
            key_id: id.clone(),
            kind: kind.into(),
            params,
            created_at: crate::now(),
        };
        let mut slot = self.master.write().await;
        if let Err(e) = self.store.secret_rotate(&old.id, row, rewrapped).await {
            if let Some((pending, _)) = &pending {
                let _ = std::fs::remove_file(pending);
            }
            return Err(e.into());
        }
        let old_source = self.source()?;
        match &pending {
            Some((pending, path)) => {
                std::fs::rename(pending, path).map_err(|e| {
                    unavailable(
                        codes::KEY_FILE_MISSING,
                        format!(
                            "rotated, but cannot rename {} (the next start finishes it): {e}",
                            pending.display()
                        ),
                    )
                })?;
                sync_dir(path);
            }
            None => {
                // Moving to a passphrase: the old key file opens nothing any more.
                if let KeySource::KeyFile(p) = &old_source {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        *self
            .source
            .lock()
            .map_err(|_| XynError::internal("lock poisoned"))? = new_source;
        *slot = Some(Arc::new(Master {
            id: id.clone(),
            key,
        }));
        Ok(RotateReport {
            old_key_id: Some(old.id.clone()),
            new_key_id: id,
            kind,
            rewrapped: n,
        })
    }
}

fn wrong_key_file(path: &Path) -> XynError {
    forbidden(
        codes::WRONG_KEY_FILE,
        format!(
            "the secret key file {} does not unlock this secret store (it belongs to another store)",
            path.display()
        ),
    )
}

#[async_trait]
impl SecretStore for LocalSecretStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn put(
        &self,
        path: &SecretPath,
        value: &SecretValue,
        actor: &str,
    ) -> Result<SecretMeta, XynError> {
        // A concurrent writer of the same path (or a rotation) makes the store refuse the
        // version; try again with what is current then.
        for _ in 0..5 {
            let m = self
                .master(true)
                .await?
                .ok_or_else(|| XynError::internal("no master key after init"))?;
            let version = self
                .store
                .secret_versions(path.as_str())
                .await?
                .last()
                .map_or(1, |v| v.version + 1);
            let dk = crypto::new_key()?;
            let (nonce, ciphertext) = crypto::seal(
                &dk,
                &crypto::value_aad(path.as_str(), version),
                value.expose().as_bytes(),
            )?;
            let row = SecretVersionRow {
                path: path.as_str().into(),
                version,
                created_at: crate::now(),
                created_by: actor.into(),
                key_id: m.id.clone(),
                wrapped_key: crypto::wrap(
                    &m.key,
                    &crypto::key_aad(path.as_str(), version, &m.id),
                    &dk,
                )?,
                nonce: nonce.to_vec(),
                ciphertext,
            };
            let stored = self.store.secret_put(row).await;
            // Counted whatever the outcome: a failed commit may still have landed.
            self.bump();
            match stored {
                Ok(()) => {
                    let metas = self.store.secret_list(path.as_str()).await?;
                    return metas
                        .into_iter()
                        .find(|x| x.path == path.as_str())
                        .map(meta)
                        .ok_or_else(|| XynError::internal("the stored secret is not listed"));
                }
                Err(xyn_store::StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(XynError::conflict(
            "store.conflict",
            format!("{path} kept changing while it was written; try again"),
        ))
    }

    async fn get(
        &self,
        path: &SecretPath,
        version: Option<i64>,
    ) -> Result<Option<Resolved>, XynError> {
        let Some(row) = self.store.secret_get(path.as_str(), version).await? else {
            return Ok(None);
        };
        // Warm: the unlocked key that wrapped this row is at hand, no other read is needed.
        let cached = self
            .master
            .read()
            .await
            .as_ref()
            .filter(|m| m.id == row.key_id)
            .cloned();
        let m = match cached {
            Some(m) => m,
            None => self
                .master(false)
                .await?
                .ok_or_else(|| XynError::internal("a secret is stored but no master key is set"))?,
        };
        if m.id != row.key_id {
            return Err(XynError::new(
                ErrorKind::Internal,
                codes::DECRYPT_FAILED,
                format!(
                    "{path} is wrapped by master key {} but the store's key is {}",
                    row.key_id, m.id
                ),
            ));
        }
        Ok(Some(Resolved {
            value: self.decrypt(&m, &row)?,
            version: row.version,
            backend: "local",
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<SecretMeta>, XynError> {
        check_prefix(prefix)?;
        Ok(self
            .store
            .secret_list(prefix)
            .await?
            .into_iter()
            .map(meta)
            .collect())
    }

    async fn versions(&self, path: &SecretPath) -> Result<Vec<VersionMeta>, XynError> {
        Ok(self
            .store
            .secret_versions(path.as_str())
            .await?
            .into_iter()
            .map(|v| VersionMeta {
                version: v.version,
                created_at: v.created_at,
                created_by: v.created_by,
            })
            .collect())
    }

    async fn delete(&self, path: &SecretPath) -> Result<bool, XynError> {
        let removed = self.store.secret_delete(path.as_str()).await;
        self.bump();
        Ok(removed? > 0)
    }
}

fn meta(m: xyn_store::secrets::SecretMetaRow) -> SecretMeta {
    SecretMeta {
        path: m.path,
        version: m.latest_version,
        versions: m.versions,
        created_at: m.created_at,
        updated_at: m.updated_at,
        updated_by: m.updated_by,
        backend: "local",
    }
}
