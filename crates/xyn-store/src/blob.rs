//! Content-addressed artifact bytes on the local file system:
//! `<root>/<first two hex chars>/<sha256>`. A blob is written to a temporary file, synced and
//! renamed into place, so a crash leaves either the whole blob or nothing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{StoreError, StoreResult};

/// The local blob store.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (and creates) the store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", root.display()))
        })?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.root.join(&sha256[..2]).join(sha256))
    }

    /// Stores `bytes` and returns their sha256 (hex). Idempotent.
    pub fn put(&self, bytes: &[u8]) -> StoreResult<String> {
        let sha = hex::encode(Sha256::digest(bytes));
        let path = self
            .path_of(&sha)
            .ok_or_else(|| StoreError::Corrupt("bad digest".into()))?;
        if path.exists() {
            return Ok(sha);
        }
        let dir = path
            .parent()
            .ok_or_else(|| StoreError::Corrupt("blob path has no parent".into()))?;
        let io = |e: std::io::Error| StoreError::Unavailable(format!("writing artifact: {e}"));
        fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile_in(dir).map_err(io)?;
        tmp.1.write_all(bytes).map_err(io)?;
        tmp.1.sync_all().map_err(io)?;
        drop(tmp.1);
        fs::rename(&tmp.0, &path).map_err(io)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(sha)
    }

    /// Reads a blob back, checking its digest.
    pub fn get(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        let Some(path) = self.path_of(sha256) else {
            return Ok(None);
        };
        match fs::read(&path) {
            Ok(b) => {
                if hex::encode(Sha256::digest(&b)) != sha256 {
                    return Err(StoreError::Corrupt(format!(
                        "artifact blob {sha256} does not match its digest"
                    )));
                }
                Ok(Some(b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Unavailable(format!("reading artifact: {e}"))),
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    for i in 0..100u32 {
        let name = format!(
            ".tmp-{}-{}-{i}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let p = dir.join(name);
        match fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("could not create a temporary file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let b = BlobStore::open(dir.path().join("artifacts")).unwrap();
        let a = b.put(b"hello").unwrap();
        assert_eq!(
            a,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(b.put(b"hello").unwrap(), a);
        assert_eq!(b.get(&a).unwrap().unwrap(), b"hello");
        assert_eq!(b.get(&"0".repeat(64)).unwrap(), None);
        assert_eq!(b.get("../../etc/passwd").unwrap(), None);
    }

    #[test]
    fn tampered_blob_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let b = BlobStore::open(dir.path()).unwrap();
        let a = b.put(b"hello").unwrap();
        fs::write(dir.path().join(&a[..2]).join(&a), b"HELLO").unwrap();
        assert!(b.get(&a).is_err());
    }
}
