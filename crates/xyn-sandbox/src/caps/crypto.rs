//! Hashes, HMAC, Ed25519 (signing keys are node secrets the guest names but never reads),
//! random bytes and Argon2id password hashing.

use std::collections::BTreeMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

use super::CapError;

pub enum CryptoError {
    /// (target, reason)
    Denied(String, String),
    Failed(CapError),
}

impl From<CapError> for CryptoError {
    fn from(e: CapError) -> Self {
        CryptoError::Failed(e)
    }
}

fn data(args: &Value) -> Result<Vec<u8>, CapError> {
    match args.get("data") {
        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
        Some(v) if args.get("hex").and_then(Value::as_bool) == Some(true) => {
            let s = v.as_str().unwrap_or_default();
            hex::decode(s).map_err(|_| CapError::bad_args("'data' is not hex"))
        }
        _ => Err(CapError::bad_args("'data' must be a string")),
    }
}

fn hex_arg(args: &Value, key: &str) -> Result<Vec<u8>, CapError> {
    let s = args
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| CapError::bad_args(format!("'{key}' must be a hex string")))?;
    hex::decode(s).map_err(|_| CapError::bad_args(format!("'{key}' is not hex")))
}

fn secret<'a>(
    args: &Value,
    allowed: &[String],
    values: &'a BTreeMap<String, String>,
) -> Result<&'a str, CryptoError> {
    let name = args
        .get("key_secret")
        .and_then(Value::as_str)
        .ok_or_else(|| CapError::bad_args("'key_secret' must name a secret"))?;
    if !allowed.iter().any(|a| a == name) {
        return Err(CryptoError::Denied(
            name.to_string(),
            "secret not listed in the manifest".into(),
        ));
    }
    values
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| CryptoError::Failed(CapError::failed(format!("secret {name} is not set"))))
}

pub fn call(
    name: &str,
    args: &Value,
    allowed_secrets: &[String],
    secrets: &BTreeMap<String, String>,
) -> Result<Value, CryptoError> {
    Ok(match name {
        "crypto.sha256" => json!(hex::encode(Sha256::digest(data(args)?))),
        "crypto.sha512" => json!(hex::encode(Sha512::digest(data(args)?))),
        "crypto.hmac_sha256" => {
            let key = if args.get("key_secret").is_some() {
                secret(args, allowed_secrets, secrets)?.as_bytes().to_vec()
            } else {
                args.get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CapError::bad_args("'key' or 'key_secret' is required"))?
                    .as_bytes()
                    .to_vec()
            };
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
                .map_err(|e| CapError::failed(e.to_string()))?;
            mac.update(&data(args)?);
            json!(hex::encode(mac.finalize().into_bytes()))
        }
        "crypto.random_bytes" => {
            let n = args.get("len").and_then(Value::as_u64).unwrap_or(32);
            if n > 4096 {
                return Err(CapError::bad_args("'len' must be at most 4096").into());
            }
            let mut buf = vec![0u8; n as usize];
            getrandom::fill(&mut buf).map_err(|e| CapError::failed(e.to_string()))?;
            json!(hex::encode(buf))
        }
        "crypto.ed25519_sign" => {
            let seed = hex::decode(secret(args, allowed_secrets, secrets)?.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    CapError::failed("the signing key secret is not a 32-byte hex seed")
                })?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            use ed25519_dalek::Signer;
            json!(hex::encode(key.sign(&data(args)?).to_bytes()))
        }
        "crypto.ed25519_verify" => {
            let pk = <[u8; 32]>::try_from(hex_arg(args, "public_key")?)
                .map_err(|_| CapError::bad_args("'public_key' must be 32 bytes"))?;
            let sig = <[u8; 64]>::try_from(hex_arg(args, "signature")?)
                .map_err(|_| CapError::bad_args("'signature' must be 64 bytes"))?;
            let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&pk) else {
                return Ok(json!(false));
            };
            let sig = ed25519_dalek::Signature::from_bytes(&sig);
            json!(vk.verify_strict(&data(args)?, &sig).is_ok())
        }
        "crypto.password_hash" => {
            let pw = args
                .get("password")
                .and_then(Value::as_str)
                .ok_or_else(|| CapError::bad_args("'password' must be a string"))?;
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).map_err(|e| CapError::failed(e.to_string()))?;
            let salt =
                SaltString::encode_b64(&salt).map_err(|e| CapError::failed(e.to_string()))?;
            let h = argon2::Argon2::default()
                .hash_password(pw.as_bytes(), &salt)
                .map_err(|e| CapError::failed(e.to_string()))?;
            json!(h.to_string())
        }
        "crypto.password_verify" => {
            let pw = args
                .get("password")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let h = args.get("hash").and_then(Value::as_str).unwrap_or_default();
            let ok = PasswordHash::new(h).is_ok_and(|ph| {
                argon2::Argon2::default()
                    .verify_password(pw.as_bytes(), &ph)
                    .is_ok()
            });
            json!(ok)
        }
        other => {
            return Err(CapError {
                code: super::cap_codes::UNKNOWN.into(),
                message: format!("no capability named {other:?}"),
            }
            .into());
        }
    })
}
