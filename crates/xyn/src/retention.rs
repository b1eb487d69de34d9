//! Retention: events and footprints older than a window are removed
//! (footprints rolled up into daily sums first), and the last removed event's seq and hash
//! are kept as a checkpoint signed with an Ed25519 key that lives outside the database, in
//! the data directory (`checkpoint.key`). `xyn audit verify` then checks the log from that
//! checkpoint and the checkpoint's signature, so a pruned log still proves nothing was edited.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use xyn_core::Timestamp;
use xyn_store::{Checkpoint, CheckpointSigner, PruneReport, Store};

const KEY_FILE: &str = "checkpoint.key";

/// Signs checkpoints with the node's key.
pub struct KeySigner(SigningKey);

impl CheckpointSigner for KeySigner {
    fn public_key(&self) -> String {
        hex::encode(self.0.verifying_key().as_bytes())
    }
    fn sign(&self, bytes: &[u8]) -> String {
        hex::encode(self.0.sign(bytes).to_bytes())
    }
}

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

fn read_key(path: &Path) -> Result<Option<SigningKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("{} is not a hex Ed25519 secret key", path.display()))?;
    Ok(Some(SigningKey::from_bytes(&bytes)))
}

/// The signing key in `data_dir`, created (readable by its owner only) on first use.
pub fn load_or_create_key(data_dir: &Path) -> Result<KeySigner> {
    let path = key_path(data_dir);
    if let Some(k) = read_key(&path)? {
        return Ok(KeySigner(k));
    }
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("cannot read random bytes for the checkpoint key")?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write;
    opts.open(&path)
        .and_then(|mut f| f.write_all(hex::encode(secret).as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(KeySigner(SigningKey::from_bytes(&secret)))
}

/// The public key of the key in `data_dir`, if there is one.
pub fn public_key_in(data_dir: &Path) -> Result<Option<String>> {
    Ok(read_key(&key_path(data_dir))?.map(|k| KeySigner(k).public_key()))
}

/// Checks a checkpoint's signature against the expected public key.
pub fn verify_checkpoint(cp: &Checkpoint, expected_key: Option<&str>) -> Result<(), String> {
    let Some(key) = expected_key else {
        return Err(
            "no public key to check its signature with (pass --checkpoint-key or --data-dir)"
                .into(),
        );
    };
    if !cp.public_key.eq_ignore_ascii_case(key.trim()) {
        return Err(format!(
            "it was signed with key {}, not the expected {}",
            cp.public_key,
            key.trim()
        ));
    }
    let vk = hex::decode(key.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or("the public key is not a hex Ed25519 key")?;
    let sig = hex::decode(&cp.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or("the signature is not a hex Ed25519 signature")?;
    vk.verify(
        &Checkpoint::signed_bytes(cp.seq, &cp.hash, cp.created_at),
        &sig,
    )
    .map_err(|_| "its signature does not verify (the checkpoint was changed)".to_string())
}

fn now() -> Timestamp {
    Timestamp::from_micros(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64),
    )
}

/// One retention pass: removes what is older than `window_ms`.
pub async fn run_once(
    store: &dyn Store,
    data_dir: &Path,
    window_ms: u64,
    keep_unpublished: bool,
) -> Result<PruneReport> {
    let signer = load_or_create_key(data_dir)?;
    let now = now();
    let cutoff = Timestamp::from_micros(now.as_micros() - (window_ms as i64).saturating_mul(1000));
    store
        .prune(cutoff, keep_unpublished, &signer, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs a retention pass at start and then every `every` (a timer, not a poll of work).
pub fn spawn(
    store: Arc<dyn Store>,
    data_dir: PathBuf,
    window_ms: u64,
    keep_unpublished: bool,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match run_once(store.as_ref(), &data_dir, window_ms, keep_unpublished).await {
                Ok(r) => tracing::info!(
                    events_removed = r.events_removed,
                    footprints_rolled_up = r.footprints_rolled_up,
                    checkpoint_seq = r.checkpoint.as_ref().map(|c| c.seq),
                    "retention pass"
                ),
                Err(e) => tracing::error!(error = %e, "retention pass failed"),
            }
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_unchanged_and_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let signer = load_or_create_key(dir.path()).unwrap();
        let again = load_or_create_key(dir.path()).unwrap();
        assert_eq!(signer.public_key(), again.public_key(), "the key is kept");
        let at = Timestamp::from_micros(1_790_000_000_000_000);
        let hash = "ab".repeat(32);
        let cp = Checkpoint {
            seq: 41,
            signature: signer.sign(&Checkpoint::signed_bytes(41, &hash, at)),
            public_key: signer.public_key(),
            hash,
            created_at: at,
        };
        let key = public_key_in(dir.path()).unwrap();
        assert_eq!(verify_checkpoint(&cp, key.as_deref()), Ok(()));
        let mut moved = cp.clone();
        moved.seq = 42;
        assert!(verify_checkpoint(&moved, key.as_deref()).is_err());
        let other = tempfile::tempdir().unwrap();
        let other_key = load_or_create_key(other.path()).unwrap().public_key();
        assert!(verify_checkpoint(&cp, Some(&other_key)).is_err());
        assert!(verify_checkpoint(&cp, None).is_err());
    }
}
