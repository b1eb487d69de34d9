//! What the store keeps for the encrypted secret store (`xyn-secrets`): ciphertext, wrapped
//! data keys and the master key's check value. The store never sees a secret value or a key
//! in clear; it keeps the bytes it is given and answers by path.

use xyn_core::Timestamp;

/// One encrypted version of a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersionRow {
    pub path: String,
    /// 1, 2, …: each put adds the next version.
    pub version: i64,
    pub created_at: Timestamp,
    pub created_by: String,
    /// The master key that wrapped `wrapped_key`.
    pub key_id: String,
    /// The version's data key, encrypted by the master key.
    pub wrapped_key: Vec<u8>,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A secret's metadata, never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretMetaRow {
    pub path: String,
    pub latest_version: i64,
    pub versions: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// One version's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersionInfo {
    pub version: i64,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// A data key, wrapped, as rotation reads and rewrites it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKeyRow {
    pub path: String,
    pub version: i64,
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
}

/// The master key's description: how it is obtained (`kind`, `params` as JSON: the KDF and its
/// salt for a passphrase) and a check value only the right key opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterKeyRow {
    pub key_id: String,
    pub kind: String,
    pub params: String,
    pub check: Vec<u8>,
    pub created_at: Timestamp,
}
