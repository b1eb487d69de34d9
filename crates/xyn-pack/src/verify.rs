//! Signing a pack, and verifying one with stable codes.
//!
//! Verification order: the archive against its digest list (`pack.digest_mismatch` naming
//! the file, `pack.invalid`, `pack.too_large`); a signature file at all (`pack.unsigned`);
//! the envelope and each signature over the PAE (`pack.signature_invalid`); whether a key
//! that verified is accepted (`pack.untrusted_key`); finally the signed statement against the
//! archive — every file's digest, the tree digest and the archive's sha256
//! (`pack.digest_mismatch`).

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature as EdSignature, Signer as _, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use serde_json::Value;

use crate::archive::{Pack, write_atomic};
use crate::dsse::{Envelope, INTOTO_PAYLOAD_TYPE, Signature, b64_decode, b64_encode, pae};
use crate::keys::{TrustStore, parse_public_key, public_key_string};
use crate::provenance::{check_claims, claims, statement};
use crate::{PackError, Result, codes, limits};

/// The signature file of an archive: `FILE.sig.json`.
pub fn sig_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_os_string();
    s.push(".sig.json");
    PathBuf::from(s)
}

fn archive_name(archive: &Path) -> String {
    archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pack".into())
}

/// Signs the archive at `archive`: checks it against its digest list, builds its provenance
/// statement and writes the DSSE envelope to `FILE.sig.json` (atomically: on any failure no
/// file is left). An existing envelope gains this signature when it is over the same
/// statement; otherwise it is replaced.
pub fn sign(archive: &Path, key: &SigningKey) -> Result<(PathBuf, Envelope)> {
    let pack = Pack::read(archive, false)?;
    let st = statement(
        &archive_name(archive),
        &pack.archive_sha256,
        &pack.manifest,
        &pack.digests,
    );
    let payload = serde_json::to_vec(&st).map_err(|e| PackError::new(codes::IO, e.to_string()))?;
    let sig = key.sign(&pae(INTOTO_PAYLOAD_TYPE, &payload));
    let keyid = public_key_string(&key.verifying_key());
    let out = sig_path(archive);
    let mut env = Envelope {
        payload: b64_encode(&payload),
        payload_type: INTOTO_PAYLOAD_TYPE.to_string(),
        signatures: Vec::new(),
    };
    // Co-signing: keep the other signatures of an envelope over the very same payload.
    if let Ok(bytes) = std::fs::read(&out)
        && let Ok(old) = Envelope::parse(&bytes)
        && old.payload_type == env.payload_type
        && old.payload_bytes().ok().as_deref() == Some(payload.as_slice())
    {
        env.signatures = old
            .signatures
            .into_iter()
            .filter(|s| s.keyid != keyid)
            .collect();
    }
    env.signatures.push(Signature {
        keyid,
        sig: b64_encode(&sig.to_bytes()),
    });
    let bytes =
        serde_json::to_vec_pretty(&env).map_err(|e| PackError::new(codes::IO, e.to_string()))?;
    if bytes.len() as u64 > limits::ENVELOPE_MAX {
        return Err(PackError::new(
            codes::TOO_LARGE,
            "the signature envelope would exceed 16 MiB",
        ));
    }
    write_atomic(&out, &bytes, Some(0o644))?;
    Ok((out, env))
}

/// Which keys a verification accepts.
#[derive(Debug, Clone)]
pub enum KeyPolicy {
    /// Any key whose signature verifies (`xyn pack verify` without `--key`); trust is only
    /// reported, from this store.
    Report(TrustStore),
    /// Only this key (`--key`).
    Only(VerifyingKey),
    /// Only keys in the node's trust store (install).
    Trusted(TrustStore),
}

/// One signature of a verified envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signer {
    /// `ed25519:<base64>`
    pub public_key: String,
    /// The trust store name of the key, when it is trusted.
    pub trusted_as: Option<String>,
}

/// A verified pack.
#[derive(Debug, Clone)]
pub struct Verified {
    pub pack: Pack,
    /// The keys whose signatures verified (and were accepted by the policy, first).
    pub signers: Vec<Signer>,
    pub statement: Value,
    pub builder_id: String,
}

/// Reads an envelope file, with its size cap; `None` when there is none.
pub fn read_envelope(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > limits::ENVELOPE_MAX => Err(PackError::new(
            codes::TOO_LARGE,
            format!(
                "{} is {} bytes, more than the {} an envelope may have",
                path.display(),
                m.len(),
                limits::ENVELOPE_MAX
            ),
        )),
        Ok(_) => std::fs::read(path)
            .map(Some)
            .map_err(|e| PackError::io(path.display(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PackError::io(path.display(), e)),
    }
}

/// Verifies the archive at `archive` with the envelope `envelope` (the bytes of
/// `FILE.sig.json`, `None` when there is none); `contents` keeps the files' bytes.
pub fn verify_pack(
    archive: &Path,
    envelope: Option<&[u8]>,
    policy: &KeyPolicy,
    contents: bool,
) -> Result<Verified> {
    let pack = Pack::read(archive, contents)?;
    let Some(envelope) = envelope else {
        return Err(PackError::new(
            codes::UNSIGNED,
            format!(
                "{} has no signature ({} is missing)",
                archive.display(),
                sig_path(archive).display()
            ),
        ));
    };
    let env = Envelope::parse(envelope)?;
    if env.payload_type != INTOTO_PAYLOAD_TYPE {
        return Err(PackError::new(
            codes::SIGNATURE_INVALID,
            format!(
                "the envelope's payloadType is {:?}, not {INTOTO_PAYLOAD_TYPE}",
                env.payload_type
            ),
        ));
    }
    if env.signatures.is_empty() {
        return Err(PackError::new(
            codes::UNSIGNED,
            "the envelope has no signatures",
        ));
    }
    let payload = env.payload_bytes()?;
    let message = pae(&env.payload_type, &payload);
    let trust = match policy {
        KeyPolicy::Report(t) | KeyPolicy::Trusted(t) => Some(t),
        KeyPolicy::Only(_) => None,
    };
    let mut accepted = Vec::new();
    let mut valid_elsewhere = Vec::new();
    for s in &env.signatures {
        let Some(sig) = b64_decode(&s.sig)
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| EdSignature::from_bytes(&b))
        else {
            continue;
        };
        // The keyid is only a hint: candidates are that key and the keys the policy names.
        let mut candidates: Vec<VerifyingKey> = parse_public_key(&s.keyid).into_iter().collect();
        match policy {
            KeyPolicy::Only(k) => candidates.push(*k),
            KeyPolicy::Trusted(t) | KeyPolicy::Report(t) => {
                candidates.extend(t.keys.values().filter_map(|k| parse_public_key(k).ok()))
            }
        }
        let Some(key) = candidates
            .into_iter()
            .find(|k| k.verify(&message, &sig).is_ok())
        else {
            continue;
        };
        let signer = Signer {
            public_key: public_key_string(&key),
            trusted_as: trust.and_then(|t| t.name_of(&key)).map(str::to_string),
        };
        let ok = match policy {
            KeyPolicy::Report(_) => true,
            KeyPolicy::Only(k) => *k == key,
            KeyPolicy::Trusted(_) => signer.trusted_as.is_some(),
        };
        if ok {
            accepted.push(signer);
        } else {
            valid_elsewhere.push(signer);
        }
    }
    if accepted.is_empty() {
        if let Some(s) = valid_elsewhere.first() {
            let wanted = match policy {
                KeyPolicy::Only(k) => format!("the key {}", public_key_string(k)),
                _ => "a trusted key (xyn trust add)".to_string(),
            };
            return Err(PackError::new(
                codes::UNTRUSTED_KEY,
                format!("signed by {}, not by {wanted}", s.public_key),
            ));
        }
        return Err(PackError::new(
            codes::SIGNATURE_INVALID,
            "no signature in the envelope verifies over its payload",
        ));
    }
    let st: Value = serde_json::from_slice(&payload).map_err(|e| {
        PackError::new(
            codes::SIGNATURE_INVALID,
            format!("the signed payload is not JSON: {e}"),
        )
    })?;
    let c = claims(&st)?;
    check_claims(
        &c,
        &archive_name(archive),
        &pack.archive_sha256,
        &pack.digests,
    )?;
    accepted.extend(valid_elsewhere);
    Ok(Verified {
        pack,
        signers: accepted,
        statement: st,
        builder_id: c.builder_id,
    })
}
