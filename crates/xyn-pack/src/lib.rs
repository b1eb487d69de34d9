//! Packs: the unit in which blueprints, actions, policies and migrations travel between nodes.
//!
//! - [`manifest`]: `xyn-pack.toml` (id `ns.name`, semver version, the `xyn` range it runs on,
//!   description, dependencies on other packs).
//! - [`archive`]: `xyn pack build` — a reproducible `tar.gz` (sorted entries, fixed mtimes,
//!   owners and modes, fixed deflate level and gzip header) whose first entry is the digest
//!   list (sha256 per file and a tree digest); reading an archive back with every entry
//!   checked (no symlinks, no absolute or `..` paths, size caps).
//! - [`keys`]: Ed25519 signing keys in a data directory and the node's trusted publishers.
//! - [`dsse`]: DSSE envelopes and their pre-authentication encoding.
//! - [`provenance`]: the in-toto Statement v1 with SLSA provenance v1 a pack's signature
//!   carries.
//! - [`verify`]: checking a pack and its envelope, with stable codes.
//!
//! This crate does file I/O on the paths it is given and nothing else: no store, no network,
//! no clock. The binary records trust changes and installs in the node's event log.

pub mod archive;
pub mod dsse;
pub mod keys;
pub mod manifest;
pub mod provenance;
pub mod verify;

pub use archive::{DigestList, FileDigest, Pack, build};
pub use manifest::PackManifest;
pub use verify::{Signer, Verified, verify_pack};

/// Stable error codes.
pub mod codes {
    /// A file's content does not match its digest (the message names the file).
    pub const DIGEST_MISMATCH: &str = "pack.digest_mismatch";
    /// The envelope's signature does not verify, or the envelope is malformed.
    pub const SIGNATURE_INVALID: &str = "pack.signature_invalid";
    /// The signature verifies, but with a key that is not trusted (or not the one asked for).
    pub const UNTRUSTED_KEY: &str = "pack.untrusted_key";
    /// The pack has no signature.
    pub const UNSIGNED: &str = "pack.unsigned";
    /// The pack's `xyn` range does not include this Xyn version.
    pub const INCOMPATIBLE: &str = "pack.incompatible";
    /// A pack it depends on is not installed (or not in the required range).
    pub const MISSING_DEPENDENCY: &str = "pack.missing_dependency";
    /// The pack is malformed: manifest, layout, an unsafe entry (symlink, absolute or `..`
    /// path), a duplicate entry.
    pub const INVALID: &str = "pack.invalid";
    /// A size cap was exceeded (manifest 8 MiB, a file 256 MiB, an envelope 16 MiB).
    pub const TOO_LARGE: &str = "pack.too_large";
    /// A key name, key file or public key is malformed, missing or already there.
    pub const KEY_INVALID: &str = "key.invalid";
    pub const KEY_NOT_FOUND: &str = "key.not_found";
    pub const KEY_EXISTS: &str = "key.exists";
    /// Reading or writing a file failed.
    pub const IO: &str = "pack.io";
}

/// Size caps (the limits x07-wasm uses for its bundles).
pub mod limits {
    /// `xyn-pack.toml`, and the digest list.
    pub const MANIFEST_MAX: u64 = 8 * 1024 * 1024;
    /// Any one file in a pack.
    pub const FILE_MAX: u64 = 256 * 1024 * 1024;
    /// A signature envelope (`*.sig.json`).
    pub const ENVELOPE_MAX: u64 = 16 * 1024 * 1024;
}

/// The Xyn version this crate belongs to (packs name a range of these; provenance names the
/// builder `xyn/<version>`).
pub const XYN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error with a stable code; `file` names the file it concerns, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PackError {
    pub code: &'static str,
    pub message: String,
    pub file: Option<String>,
}

impl PackError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            file: None,
        }
    }
    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID, message)
    }
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        Self::new(codes::IO, format!("{what}: {e}"))
    }
}

pub type Result<T, E = PackError> = std::result::Result<T, E>;

/// Lower-case hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
