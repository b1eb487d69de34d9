//! DSSE envelopes (Dead Simple Signing Envelope, v1) and their pre-authentication encoding.
//!
//! The signature is over `PAE(payloadType, payload)`:
//! `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths as ASCII decimals of the
//! byte lengths. The envelope's `payload` and `sig` are base64; on read both the standard
//! and the URL-safe alphabets are accepted, with or without padding, as the spec asks.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::{PackError, Result, codes};

/// The payload type of an in-toto statement.
pub const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// A hint naming the key (here the public key, `ed25519:<base64>`); never trusted by
    /// itself — trust is decided against the node's trusted keys.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    pub sig: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

/// The pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// Decodes base64 in the standard or URL-safe alphabet, padded or not.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// Standard base64 (what we write).
pub fn b64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

impl Envelope {
    /// Parses an envelope; anything malformed is `pack.signature_invalid`.
    pub fn parse(bytes: &[u8]) -> Result<Envelope> {
        if bytes.len() as u64 > crate::limits::ENVELOPE_MAX {
            return Err(PackError::new(
                codes::TOO_LARGE,
                format!(
                    "the signature envelope is {} bytes, more than {}",
                    bytes.len(),
                    crate::limits::ENVELOPE_MAX
                ),
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| {
            PackError::new(
                codes::SIGNATURE_INVALID,
                format!("the signature file is not a DSSE envelope: {e}"),
            )
        })
    }

    /// The decoded payload.
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        b64_decode(&self.payload).ok_or_else(|| {
            PackError::new(
                codes::SIGNATURE_INVALID,
                "the envelope's payload is not base64",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the DSSE specification (protocol.md, "Test Vectors").
    #[test]
    fn pae_matches_the_dsse_spec_vector() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn both_base64_alphabets_are_read() {
        let bytes = [0xfbu8, 0xff, 0xbf, 0x01];
        assert_eq!(b64_encode(&bytes), "+/+/AQ==");
        for s in ["+/+/AQ==", "-_-_AQ==", "+/+/AQ", "-_-_AQ"] {
            assert_eq!(b64_decode(s).as_deref(), Some(&bytes[..]), "{s}");
        }
        assert_eq!(b64_decode("not base64!"), None);
    }
}
