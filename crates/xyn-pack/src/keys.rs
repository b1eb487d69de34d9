//! Ed25519 signing keys and the node's trusted publishers.
//!
//! ```text
//! <data-dir>/keys/<name>.key    a private key: `ed25519-secret:<base64 seed>` (mode 0600)
//! <data-dir>/trust.json         trusted publishers: {"keys": {"<name>": "ed25519:<base64>"}}
//! ```
//!
//! Public keys are written `ed25519:<base64>` (standard alphabet); both alphabets are read.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::archive::write_atomic;
use crate::dsse::{b64_decode, b64_encode};
use crate::{PackError, Result, codes};

const SECRET_PREFIX: &str = "ed25519-secret:";
const PUBLIC_PREFIX: &str = "ed25519:";

/// A key or trust name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 characters.
pub fn check_name(name: &str) -> Result<()> {
    let mut cs = name.chars();
    let ok = name.len() <= 64
        && cs.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(PackError::new(
            codes::KEY_INVALID,
            format!(
                "key name {name:?} must be letters, digits, `_`, `.` or `-`, starting with a \
                 letter or digit, at most 64 characters"
            ),
        ))
    }
}

/// The public key as `ed25519:<base64>`.
pub fn public_key_string(key: &VerifyingKey) -> String {
    format!("{PUBLIC_PREFIX}{}", b64_encode(key.as_bytes()))
}

/// Parses `ed25519:<base64>` (standard or URL-safe).
pub fn parse_public_key(s: &str) -> Result<VerifyingKey> {
    let bad = || {
        PackError::new(
            codes::KEY_INVALID,
            format!("{s:?} is not a public key of the form ed25519:<base64 of 32 bytes>"),
        )
    };
    let b64 = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
    let bytes: [u8; 32] = b64_decode(b64)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// Where named keys live.
pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

/// The file of a named key.
pub fn key_path(data_dir: &Path, name: &str) -> Result<PathBuf> {
    check_name(name)?;
    Ok(keys_dir(data_dir).join(format!("{name}.key")))
}

fn random_seed() -> Result<[u8; 32]> {
    // The workspace reads the OS random source directly (as the checkpoint key does) rather
    // than pulling a second RNG crate into this one.
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| PackError::io("reading random bytes for a key", e))?;
    Ok(seed)
}

/// Writes a new key to `path` (mode 0600, refused when the file exists).
pub fn new_key_at(path: &Path) -> Result<SigningKey> {
    if path.exists() {
        return Err(PackError::new(
            codes::KEY_EXISTS,
            format!("{} exists; keys are never overwritten", path.display()),
        ));
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| PackError::io(dir.display(), e))?;
        #[cfg(unix)]
        if dir.file_name().is_some_and(|n| n == "keys") {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let key = SigningKey::from_bytes(&random_seed()?);
    let text = format!("{SECRET_PREFIX}{}\n", b64_encode(key.as_bytes()));
    write_atomic(path, text.as_bytes(), Some(0o600))?;
    Ok(key)
}

/// Creates the named key in the data dir.
pub fn new_key(data_dir: &Path, name: &str) -> Result<SigningKey> {
    new_key_at(&key_path(data_dir, name)?)
}

/// Reads a private key file.
pub fn read_key_file(path: &Path) -> Result<SigningKey> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PackError::new(
                codes::KEY_NOT_FOUND,
                format!("no key at {}", path.display()),
            ));
        }
        Err(e) => return Err(PackError::io(path.display(), e)),
    };
    let seed: [u8; 32] = text
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .and_then(b64_decode)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            PackError::new(
                codes::KEY_INVALID,
                format!("{} is not an ed25519-secret: key file", path.display()),
            )
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Loads a signing key named `name` from the data dir, or — when `name` is not a key name
/// but a path to a key file — from that file.
pub fn load_key(data_dir: &Path, name: &str) -> Result<SigningKey> {
    if check_name(name).is_ok() {
        let p = key_path(data_dir, name)?;
        if p.exists() || !Path::new(name).is_file() {
            return read_key_file(&p);
        }
    }
    read_key_file(Path::new(name))
}

/// The named keys in the data dir with their public keys, sorted by name.
pub fn list_keys(data_dir: &Path) -> Result<Vec<(String, Result<String>)>> {
    let dir = keys_dir(data_dir);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PackError::io(dir.display(), e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| PackError::io(dir.display(), e))?;
        let fname = ent.file_name();
        let Some(name) = fname.to_str().and_then(|n| n.strip_suffix(".key")) else {
            continue;
        };
        let pk = read_key_file(&ent.path()).map(|k| public_key_string(&k.verifying_key()));
        out.push((name.to_string(), pk));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The node's trusted publishers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustStore {
    /// name → `ed25519:<base64>`
    pub keys: BTreeMap<String, String>,
}

/// What a trust change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustChange {
    Added,
    Unchanged,
    Removed,
}

impl TrustStore {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("trust.json")
    }

    pub fn load(data_dir: &Path) -> Result<TrustStore> {
        let p = Self::path(data_dir);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                PackError::new(
                    codes::KEY_INVALID,
                    format!("{} is not a trust store: {e}", p.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustStore::default()),
            Err(e) => Err(PackError::io(p.display(), e)),
        }
    }

    fn save(&self, data_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(data_dir).map_err(|e| PackError::io(data_dir.display(), e))?;
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| PackError::new(codes::IO, e.to_string()))?;
        write_atomic(&Self::path(data_dir), &bytes, Some(0o644))
    }

    /// Trusts `public_key` as `name` (the same pair again changes nothing; another key
    /// under a taken name is refused).
    pub fn add(data_dir: &Path, name: &str, public_key: &str) -> Result<(TrustChange, String)> {
        check_name(name)?;
        let key = public_key_string(&parse_public_key(public_key)?);
        let mut t = Self::load(data_dir)?;
        match t.keys.get(name) {
            Some(k) if *k == key => return Ok((TrustChange::Unchanged, key)),
            Some(k) => {
                return Err(PackError::new(
                    codes::KEY_EXISTS,
                    format!("{name} already trusts {k}; remove it first"),
                ));
            }
            None => {}
        }
        t.keys.insert(name.to_string(), key.clone());
        t.save(data_dir)?;
        Ok((TrustChange::Added, key))
    }

    /// Stops trusting `name`; `key.not_found` when it is not trusted.
    pub fn remove(data_dir: &Path, name: &str) -> Result<String> {
        let mut t = Self::load(data_dir)?;
        let Some(k) = t.keys.remove(name) else {
            return Err(PackError::new(
                codes::KEY_NOT_FOUND,
                format!("no trusted key is named {name:?}"),
            ));
        };
        t.save(data_dir)?;
        Ok(k)
    }

    /// The name under which a public key is trusted.
    pub fn name_of(&self, public_key: &VerifyingKey) -> Option<&str> {
        let s = public_key_string(public_key);
        self.keys
            .iter()
            .find(|(_, k)| **k == s)
            .map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Signer, Verifier};

    /// RFC 8032 section 7.1, TEST 1–3: secret key, public key, message, signature.
    const RFC8032: [(&str, &str, &str, &str); 3] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];

    #[test]
    fn rfc8032_test_vectors_1_to_3_sign_and_verify_through_key_files() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (sk, pk, msg, sig)) in RFC8032.iter().enumerate() {
            let seed: [u8; 32] = hex::decode(sk).unwrap().try_into().unwrap();
            // Through the key file format, so the vector checks what `xyn pack sign` reads.
            let path = dir.path().join(format!("t{i}.key"));
            std::fs::write(&path, format!("{SECRET_PREFIX}{}\n", b64_encode(&seed))).unwrap();
            let key = read_key_file(&path).unwrap();
            assert_eq!(hex::encode(key.verifying_key().as_bytes()), *pk);
            let msg = hex::decode(msg).unwrap();
            let s = key.sign(&msg);
            assert_eq!(hex::encode(s.to_bytes()), *sig, "TEST {}", i + 1);
            let vk = parse_public_key(&public_key_string(&key.verifying_key())).unwrap();
            let expected = Signature::from_bytes(&hex::decode(sig).unwrap().try_into().unwrap());
            assert!(vk.verify(&msg, &expected).is_ok());
            let mut other = msg.clone();
            other.push(0);
            assert!(vk.verify(&other, &expected).is_err());
        }
    }

    #[test]
    fn a_new_key_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let k = new_key(dir.path(), "release").unwrap();
        let p = key_path(dir.path(), "release").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(
            new_key(dir.path(), "release").unwrap_err().code,
            codes::KEY_EXISTS
        );
        assert_eq!(
            load_key(dir.path(), "release").unwrap().to_bytes(),
            k.to_bytes()
        );
        let listed = list_keys(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].1.as_ref().unwrap(),
            &public_key_string(&k.verifying_key())
        );
        for bad in ["", "../x", "a/b", ".hidden", "x y"] {
            assert_eq!(
                new_key(dir.path(), bad).unwrap_err().code,
                codes::KEY_INVALID
            );
        }
    }

    #[test]
    fn trust_add_remove_and_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let pk = public_key_string(&k);
        let url_safe = pk.replace('+', "-").replace('/', "_");
        assert_eq!(
            TrustStore::add(dir.path(), "alice", &url_safe).unwrap().0,
            TrustChange::Added
        );
        assert_eq!(
            TrustStore::add(dir.path(), "alice", &pk).unwrap().0,
            TrustChange::Unchanged
        );
        let other = public_key_string(&SigningKey::from_bytes(&[8u8; 32]).verifying_key());
        assert_eq!(
            TrustStore::add(dir.path(), "alice", &other)
                .unwrap_err()
                .code,
            codes::KEY_EXISTS
        );
        assert_eq!(
            TrustStore::load(dir.path()).unwrap().name_of(&k),
            Some("alice")
        );
        for bad in ["ed25519:", "rsa:AAAA", "ed25519:AAAA", "ed25519:!!!"] {
            assert_eq!(
                TrustStore::add(dir.path(), "bob", bad).unwrap_err().code,
                codes::KEY_INVALID
            );
        }
        assert_eq!(TrustStore::remove(dir.path(), "alice").unwrap(), pk);
        assert_eq!(
            TrustStore::remove(dir.path(), "alice").unwrap_err().code,
            codes::KEY_NOT_FOUND
        );
        assert!(TrustStore::load(dir.path()).unwrap().keys.is_empty());
    }
}
