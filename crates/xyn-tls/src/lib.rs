//! TLS for Xyn's listeners.
//!
//! - [`Certs`] is the certificate resolver every handshake goes through: the operator's
//!   certificate (PEM files, reloaded on demand, for example on SIGHUP; open connections keep
//!   the certificate they were made with), certificates issued by ACME per host name, and the
//!   short-lived TLS-ALPN-01 challenge certificates.
//! - [`server_config`] builds the rustls configuration: TLS 1.3 only unless TLS 1.2 is asked
//!   for, ALPN `h2`, `http/1.1` (and `acme-tls/1` for validation handshakes), the `ring`
//!   provider.
//! - [`self_signed`] makes a development certificate; [`acme`] obtains and renews certificates.

pub mod acme;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// The ALPN id of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ALPN_ACME: &[u8] = b"acme-tls/1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The crypto provider of every Xyn listener.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a certificate chain and its private key from PEM files and checks that they belong
/// together.
pub fn load_pem_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| TlsError::Read {
            path: p.to_path_buf(),
            message: e.to_string(),
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    certified_key(&cert_pem, &key_pem).map_err(|e| match e {
        TlsError::Invalid(m) => {
            TlsError::Invalid(format!("{} / {}: {m}", cert.display(), key.display()))
        }
        other => other,
    })
}

/// A certificate chain and key from PEM text.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Invalid("no certificate in the PEM file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Invalid(format!("private key PEM: {e}")))?;
    let ck = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| TlsError::Invalid(format!("certificate and key: {e}")))?;
    Ok(ck)
}

/// Seconds since the epoch at which the first certificate of `chain` expires.
pub fn not_after(leaf: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Where the operator's certificate comes from.
#[derive(Clone, Debug)]
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate resolver of a listener (see the crate documentation).
#[derive(Debug, Default)]
pub struct Certs {
    files: Option<PemFiles>,
    default: RwLock<Option<Arc<CertifiedKey>>>,
    by_host: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Certs {
    /// A resolver serving the certificate in `files` (loaded now: a bad file is an error at
    /// start, not at the first handshake), or none until ACME has issued one.
    pub fn new(files: Option<PemFiles>) -> Result<Arc<Self>, TlsError> {
        let default = match &files {
            Some(f) => Some(Arc::new(load_pem_files(&f.cert, &f.key)?)),
            None => None,
        };
        Ok(Arc::new(Self {
            files,
            default: RwLock::new(default),
            ..Default::default()
        }))
    }

    /// Reads the PEM files again. On an error the current certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some(f) = &self.files else {
            return Ok(());
        };
        let ck = Arc::new(load_pem_files(&f.cert, &f.key)?);
        if let Ok(mut d) = self.default.write() {
            *d = Some(ck);
        }
        Ok(())
    }

    /// Serves `ck` to clients asking for `host` (an ACME certificate).
    pub fn set_host(&self, host: &str, ck: Arc<CertifiedKey>) {
        if let Ok(mut m) = self.by_host.write() {
            m.insert(host.to_ascii_lowercase(), ck);
        }
    }

    /// The certificate served for `host`, if one was set with [`Certs::set_host`].
    pub fn host(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.by_host
            .read()
            .ok()?
            .get(&host.to_ascii_lowercase())
            .cloned()
    }

    /// Answers TLS-ALPN-01 validation handshakes for `host` with `ck` until cleared.
    pub fn set_challenge(&self, host: &str, ck: Option<Arc<CertifiedKey>>) {
        if let Ok(mut m) = self.challenges.write() {
            match ck {
                Some(ck) => m.insert(host.to_ascii_lowercase(), ck),
                None => m.remove(&host.to_ascii_lowercase()),
            };
        }
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let acme = hello
            .alpn()
            .is_some_and(|mut p| p.any(|proto| proto == ALPN_ACME));
        if acme {
            // A validation handshake gets the challenge certificate or nothing.
            return self.challenges.read().ok()?.get(sni.as_deref()?).cloned();
        }
        if let Some(h) = sni.as_deref()
            && let Some(ck) = self.by_host.read().ok()?.get(h)
        {
            return Some(ck.clone());
        }
        if let Some(ck) = self.default.read().ok()?.clone() {
            return Some(ck);
        }
        // No operator certificate: any ACME certificate rather than a failed handshake.
        self.by_host.read().ok()?.values().next().cloned()
    }
}

/// The rustls configuration of an HTTPS listener.
pub fn server_config(
    certs: Arc<Certs>,
    tls12: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec(), ALPN_ACME.to_vec()];
    Ok(Arc::new(cfg))
}

/// A self-signed development certificate for `hosts` (`localhost`, `127.0.0.1` and `::1`
/// when empty): `(cert PEM, key PEM)`.
pub fn self_signed(hosts: &[String]) -> Result<(String, String), TlsError> {
    let names = if hosts.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        hosts.to_vec()
    };
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::Invalid(format!("cannot make the certificate: {e}")))?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// Writes `contents` to `path`, readable by the owner only (a private key).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o.open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_loads_and_mismatched_key_is_refused() {
        let (c1, k1) = self_signed(&[]).expect("cert");
        let (_c2, k2) = self_signed(&["example.test".into()]).expect("cert");
        assert!(certified_key(c1.as_bytes(), k1.as_bytes()).is_ok());
        let err = certified_key(c1.as_bytes(), k2.as_bytes()).expect_err("mismatch");
        assert!(err.to_string().contains("certificate and key"), "{err}");
        assert!(certified_key(b"garbage", k1.as_bytes()).is_err());
    }

    #[test]
    fn reload_keeps_the_old_certificate_when_the_new_files_are_bad() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c, k) = self_signed(&[]).expect("cert");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, &c).expect("w");
        write_private(&key, k.as_bytes()).expect("w");
        let certs = Certs::new(Some(PemFiles {
            cert: cert.clone(),
            key: key.clone(),
        }))
        .expect("load");
        std::fs::write(&cert, "not a pem").expect("w");
        assert!(certs.reload().is_err());
        assert!(
            certs
                .default
                .read()
                .expect("lock")
                .as_ref()
                .is_some_and(|d| d.cert[0].as_ref()
                    == CertificateDer::from_pem_slice(c.as_bytes())
                        .expect("pem")
                        .as_ref())
        );
    }
}
