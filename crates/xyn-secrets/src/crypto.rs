//! Envelope encryption. Each secret version has its own random 256-bit data key; the value is
//! sealed with it (XChaCha20-Poly1305, a random 192-bit nonce), and the data key is sealed
//! with the master key. The associated data binds a ciphertext to its path and version, and a
//! wrapped data key to its path, version and master key id: bytes moved to another row do not
//! open.
//!
//! Key material lives in [`Zeroizing`] buffers, wiped when dropped.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use xyn_core::{ErrorKind, XynError};
use zeroize::Zeroizing;

use crate::codes;

pub const KEY_BYTES: usize = 32;
pub const NONCE_BYTES: usize = 24;

/// A 256-bit key, wiped on drop.
pub type Key = Zeroizing<[u8; KEY_BYTES]>;

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N], XynError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| XynError::internal(format!("the system random source failed: {e}")))?;
    Ok(b)
}

/// A fresh random key.
pub fn new_key() -> Result<Key, XynError> {
    let mut k = Zeroizing::new([0u8; KEY_BYTES]);
    getrandom::fill(k.as_mut())
        .map_err(|e| XynError::internal(format!("the system random source failed: {e}")))?;
    Ok(k)
}

fn cipher(key: &Key) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&(**key).into())
}

/// Seals `plaintext`: returns the nonce and the ciphertext (with its tag).
pub fn seal(
    key: &Key,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; NONCE_BYTES], Vec<u8>), XynError> {
    let nonce: [u8; NONCE_BYTES] = random()?;
    let ct = cipher(key)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| XynError::internal("encryption failed"))?;
    Ok((nonce, ct))
}

/// Opens what [`seal`] sealed; a wrong key, nonce, associated data or a changed byte fails.
pub fn open(
    key: &Key,
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, XynError> {
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| decrypt_failed())?;
    cipher(key)
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| decrypt_failed())
}

fn decrypt_failed() -> XynError {
    XynError::new(
        ErrorKind::Internal,
        codes::DECRYPT_FAILED,
        "a secret did not decrypt (wrong key, or its stored bytes were changed or moved)",
    )
}

/// Associated data of a value: `path` and `version`.
pub fn value_aad(path: &str, version: i64) -> Vec<u8> {
    let mut a = b"xyn-secret-value/v1\0".to_vec();
    a.extend_from_slice(path.as_bytes());
    a.push(0);
    a.extend_from_slice(&version.to_be_bytes());
    a
}

/// Associated data of a wrapped data key: `path`, `version` and the master key id.
pub fn key_aad(path: &str, version: i64, key_id: &str) -> Vec<u8> {
    let mut a = b"xyn-secret-key/v1\0".to_vec();
    a.extend_from_slice(path.as_bytes());
    a.push(0);
    a.extend_from_slice(&version.to_be_bytes());
    a.push(0);
    a.extend_from_slice(key_id.as_bytes());
    a
}

/// Wraps a data key: `nonce ‖ ciphertext`.
pub fn wrap(master: &Key, aad: &[u8], data_key: &Key) -> Result<Vec<u8>, XynError> {
    let (nonce, ct) = seal(master, aad, data_key.as_ref())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Unwraps what [`wrap`] wrapped.
pub fn unwrap_key(master: &Key, aad: &[u8], wrapped: &[u8]) -> Result<Key, XynError> {
    if wrapped.len() < NONCE_BYTES {
        return Err(decrypt_failed());
    }
    let (nonce, ct) = wrapped.split_at(NONCE_BYTES);
    let plain = open(master, nonce, aad, ct)?;
    let mut k = Zeroizing::new([0u8; KEY_BYTES]);
    if plain.len() != KEY_BYTES {
        return Err(decrypt_failed());
    }
    k.copy_from_slice(&plain);
    Ok(k)
}

/// Argon2id settings of a passphrase-derived master key (OWASP's minimum: 19 MiB, 2 passes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub algorithm: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// Hex.
    pub salt: String,
}

impl KdfParams {
    pub fn new_random() -> Result<Self, XynError> {
        Ok(Self {
            algorithm: "argon2id".into(),
            m_cost_kib: 19_456,
            t_cost: 2,
            p_cost: 1,
            salt: hex::encode(random::<16>()?),
        })
    }

    /// Derives the master key from `passphrase`.
    pub fn derive(&self, passphrase: &[u8]) -> Result<Key, XynError> {
        if self.algorithm != "argon2id" {
            return Err(XynError::internal(format!(
                "unknown key derivation {:?}",
                self.algorithm
            )));
        }
        let salt = hex::decode(&self.salt)
            .map_err(|_| XynError::internal("the stored passphrase salt is not hex"))?;
        let params =
            argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(KEY_BYTES))
                .map_err(|e| XynError::internal(format!("bad Argon2 parameters: {e}")))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut k = Zeroizing::new([0u8; KEY_BYTES]);
        a.hash_password_into(passphrase, &salt, k.as_mut())
            .map_err(|e| XynError::internal(format!("key derivation failed: {e}")))?;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_aad() {
        let k = new_key().unwrap();
        let aad = value_aad("team/t/x", 1);
        let (n, ct) = seal(&k, &aad, b"hunter22").unwrap();
        assert_eq!(open(&k, &n, &aad, &ct).unwrap().as_slice(), b"hunter22");
        assert!(!ct.windows(8).any(|w| w == b"hunter22"));
        let other = new_key().unwrap();
        for (key, aad2) in [
            (&other, aad.clone()),
            (&k, value_aad("team/t/y", 1)),
            (&k, value_aad("team/t/x", 2)),
        ] {
            let e = open(key, &n, &aad2, &ct).unwrap_err();
            assert_eq!(e.code, codes::DECRYPT_FAILED);
        }
        let mut flipped = ct.clone();
        flipped[0] ^= 1;
        assert!(open(&k, &n, &aad, &flipped).is_err());
        assert!(open(&k, &n[..23], &aad, &ct).is_err());
    }

    #[test]
    fn keys_wrap_and_unwrap_bound_to_their_row() {
        let master = new_key().unwrap();
        let dk = new_key().unwrap();
        let w = wrap(&master, &key_aad("team/t/x", 1, "k1"), &dk).unwrap();
        assert_eq!(
            *unwrap_key(&master, &key_aad("team/t/x", 1, "k1"), &w).unwrap(),
            *dk
        );
        assert!(unwrap_key(&master, &key_aad("team/t/x", 1, "k2"), &w).is_err());
        assert!(unwrap_key(&master, &key_aad("team/t/y", 1, "k1"), &w).is_err());
        assert!(unwrap_key(&master, &key_aad("team/t/x", 1, "k1"), &w[..10]).is_err());
    }

    #[test]
    fn argon2id_derives_the_same_key_from_the_same_passphrase_only() {
        let mut p = KdfParams::new_random().unwrap();
        // Small costs keep the unit test fast; the real ones are checked by the store tests.
        p.m_cost_kib = 64;
        p.t_cost = 1;
        let a = p.derive(b"correct horse").unwrap();
        assert_eq!(*a, *p.derive(b"correct horse").unwrap());
        assert_ne!(*a, *p.derive(b"correct horsf").unwrap());
        let q = KdfParams {
            salt: hex::encode([9u8; 16]),
            ..p.clone()
        };
        assert_ne!(*a, *q.derive(b"correct horse").unwrap());
    }
}
