//! ACME (RFC 8555) with instant-acme: certificates for the configured hosts, proved with
//! HTTP-01 (answered by the plain-HTTP listener) or TLS-ALPN-01 (answered by the HTTPS
//! listener's handshake), kept in the data directory (`tls/acme/`, keys 0600) and renewed when
//! a third of their lifetime is left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::{Certs, TlsError, certified_key, not_after, write_private};

/// How a host proves control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    Http01,
    TlsAlpn01,
}

impl std::str::FromStr for Challenge {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http-01" => Ok(Self::Http01),
            "tls-alpn-01" => Ok(Self::TlsAlpn01),
            other => Err(format!(
                "unknown ACME challenge '{other}' (use http-01 or tls-alpn-01)"
            )),
        }
    }
}

/// ACME settings.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// The directory URL (Let's Encrypt: `https://acme-v02.api.letsencrypt.org/directory`).
    pub directory: String,
    pub hosts: Vec<String>,
    pub challenge: Challenge,
    /// `mailto:` contacts.
    pub contact: Vec<String>,
    /// A PEM root certificate that the directory's HTTPS certificate chains to (test CAs).
    pub ca_root: Option<PathBuf>,
    /// Where the account and the certificates are kept (`<data dir>/tls/acme`).
    pub dir: PathBuf,
    /// How often certificates are checked for renewal.
    pub check_every: Duration,
}

/// HTTP-01 answers: token → key authorization.
#[derive(Debug, Default)]
pub struct Http01Tokens(RwLock<HashMap<String, String>>);

impl Http01Tokens {
    /// The key authorization for `token`, while its challenge is pending.
    pub fn get(&self, token: &str) -> Option<String> {
        self.0.read().ok()?.get(token).cloned()
    }
    fn set(&self, token: &str, value: Option<String>) {
        if let Ok(mut m) = self.0.write() {
            match value {
                Some(v) => m.insert(token.to_string(), v),
                None => m.remove(token),
            };
        }
    }
}

/// Whether a certificate valid from `not_before` to `not_after` (seconds) is due for renewal
/// at `now`: a third of its lifetime (30 days of Let's Encrypt's 90) or less is left.
pub fn due(not_before: i64, not_after: i64, now: i64) -> bool {
    let lifetime = (not_after - not_before).max(0);
    not_after - now <= lifetime / 3
}

/// Obtains and renews the certificates of [`AcmeConfig::hosts`].
pub struct Acme {
    cfg: AcmeConfig,
    certs: Arc<Certs>,
    tokens: Arc<Http01Tokens>,
}

impl Acme {
    pub fn new(cfg: AcmeConfig, certs: Arc<Certs>, tokens: Arc<Http01Tokens>) -> Self {
        Self { cfg, certs, tokens }
    }

    fn host_dir(&self, host: &str) -> PathBuf {
        self.cfg.dir.join(host.to_ascii_lowercase())
    }

    /// Loads the certificates kept from earlier runs; returns the hosts that need one now.
    pub fn load_stored(&self) -> Vec<String> {
        let now = unix_now();
        let mut need = Vec::new();
        for host in &self.cfg.hosts {
            match self.stored(host) {
                Some((ck, from, to)) => {
                    self.certs.set_host(host, Arc::new(ck));
                    if due(from, to, now) {
                        need.push(host.clone());
                    }
                }
                None => need.push(host.clone()),
            }
        }
        need
    }

    fn stored(&self, host: &str) -> Option<(rustls::sign::CertifiedKey, i64, i64)> {
        let d = self.host_dir(host);
        let cert = std::fs::read(d.join("cert.pem")).ok()?;
        let key = std::fs::read(d.join("key.pem")).ok()?;
        let ck = certified_key(&cert, &key).ok()?;
        let leaf = ck.cert.first()?;
        let (_, x) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let from = x.validity().not_before.timestamp();
        let to = x.validity().not_after.timestamp();
        Some((ck, from, to))
    }

    /// Runs until dropped: issues what is missing, then checks for renewals periodically.
    /// Failures are logged and retried (after a minute, then at the check interval).
    pub async fn run(self) {
        let mut wait = Duration::ZERO;
        loop {
            tokio::time::sleep(wait).await;
            let need = self.load_stored();
            let mut failed = false;
            for host in need {
                match self.issue(&host).await {
                    Ok(expires) => {
                        tracing::info!(host, expires, "ACME certificate obtained")
                    }
                    Err(e) => {
                        failed = true;
                        tracing::error!(host, error = %e, "ACME certificate not obtained");
                    }
                }
            }
            wait = if failed {
                Duration::from_secs(60).min(self.cfg.check_every)
            } else {
                self.cfg.check_every
            };
        }
    }

    async fn account(&self) -> Result<Account, TlsError> {
        let builder = || match &self.cfg.ca_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        let path = self.cfg.dir.join("account.json");
        if let Ok(text) = std::fs::read(&path)
            && let Ok(creds) = serde_json::from_slice::<AccountCredentials>(&text)
        {
            return builder()
                .map_err(acme_err)?
                .from_credentials(creds)
                .await
                .map_err(acme_err);
        }
        let contact: Vec<&str> = self.cfg.contact.iter().map(String::as_str).collect();
        let (account, creds) = builder()
            .map_err(acme_err)?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.cfg.directory.clone(),
                None,
            )
            .await
            .map_err(acme_err)?;
        std::fs::create_dir_all(&self.cfg.dir).map_err(|e| io_err(&self.cfg.dir, e))?;
        let text = serde_json::to_vec(&creds).map_err(|e| TlsError::Invalid(e.to_string()))?;
        write_private(&path, &text).map_err(|e| io_err(&path, e))?;
        Ok(account)
    }

    /// Orders, proves and stores a certificate for `host`, and serves it from now on.
    /// Returns its expiry (seconds since the epoch).
    pub async fn issue(&self, host: &str) -> Result<i64, TlsError> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(host.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(acme_err)?;
        let mut cleanup: Vec<String> = Vec::new();
        let proved = self.prove(&mut order, &mut cleanup).await;
        let result = match proved {
            Ok(()) => self.finish(host, &mut order).await,
            Err(e) => Err(e),
        };
        for token in cleanup {
            self.tokens.set(&token, None);
        }
        self.certs.set_challenge(host, None);
        result
    }

    async fn prove(
        &self,
        order: &mut instant_acme::Order,
        cleanup: &mut Vec<String>,
    ) -> Result<(), TlsError> {
        let kind = match self.cfg.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut auths = order.authorizations();
        while let Some(a) = auths.next().await {
            let mut a = a.map_err(acme_err)?;
            match a.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(TlsError::Invalid(format!("authorization is {other:?}")));
                }
            }
            let mut ch = a.challenge(kind.clone()).ok_or_else(|| {
                TlsError::Invalid(format!("the ACME server offers no {kind:?} challenge"))
            })?;
            let ka = ch.key_authorization();
            let name = match ch.identifier().identifier {
                Identifier::Dns(d) => d.clone(),
                other => {
                    return Err(TlsError::Invalid(format!(
                        "unsupported identifier {other:?}"
                    )));
                }
            };
            match self.cfg.challenge {
                Challenge::Http01 => {
                    self.tokens.set(&ch.token, Some(ka.as_str().to_string()));
                    cleanup.push(ch.token.clone());
                }
                Challenge::TlsAlpn01 => {
                    let ck = alpn_challenge_cert(&name, ka.digest().as_ref())?;
                    self.certs.set_challenge(&name, Some(Arc::new(ck)));
                }
            }
            ch.set_ready().await.map_err(acme_err)?;
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(200))
            .timeout(Duration::from_secs(60));
        let status = order.poll_ready(&retry).await.map_err(acme_err)?;
        if status != OrderStatus::Ready {
            return Err(TlsError::Invalid(format!(
                "the order is {status:?} after the challenges"
            )));
        }
        Ok(())
    }

    async fn finish(&self, host: &str, order: &mut instant_acme::Order) -> Result<i64, TlsError> {
        let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Invalid(e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec![host.to_string()])
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        let csr = params
            .serialize_request(&key)
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        order.finalize_csr(csr.der()).await.map_err(acme_err)?;
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(200))
            .timeout(Duration::from_secs(60));
        let chain = order.poll_certificate(&retry).await.map_err(acme_err)?;
        let key_pem = key.serialize_pem();
        let ck = certified_key(chain.as_bytes(), key_pem.as_bytes())?;
        let expires = ck.cert.first().and_then(not_after).unwrap_or_default();
        let d = self.host_dir(host);
        std::fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
        write_private(&d.join("key.pem"), key_pem.as_bytes())
            .map_err(|e| io_err(&d.join("key.pem"), e))?;
        std::fs::write(d.join("cert.pem"), chain.as_bytes())
            .map_err(|e| io_err(&d.join("cert.pem"), e))?;
        self.certs.set_host(host, Arc::new(ck));
        Ok(expires)
    }
}

/// The self-signed certificate answering a TLS-ALPN-01 validation (RFC 8737): the host as its
/// only name and the key authorization's digest in the `acmeIdentifier` extension.
fn alpn_challenge_cert(host: &str, digest: &[u8]) -> Result<rustls::sign::CertifiedKey, TlsError> {
    if digest.len() != 32 {
        return Err(TlsError::Invalid("bad key authorization digest".into()));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Invalid(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    // Not through `certified_key`: its key check parses the certificate with webpki, which
    // refuses the critical `acmeIdentifier` extension this certificate exists to carry.
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = crate::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    Ok(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    ))
}

fn acme_err(e: instant_acme::Error) -> TlsError {
    TlsError::Invalid(format!("ACME: {e}"))
}

fn io_err(p: &Path, e: std::io::Error) -> TlsError {
    TlsError::Read {
        path: p.to_path_buf(),
        message: e.to_string(),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_in_the_last_third() {
        let day = 86_400;
        assert!(!due(0, 90 * day, 59 * day));
        assert!(due(0, 90 * day, 60 * day));
        assert!(due(0, 90 * day, 91 * day));
    }

    #[test]
    fn the_alpn_challenge_certificate_loads() {
        let ck = alpn_challenge_cert("example.test", &[7u8; 32]).expect("cert");
        assert_eq!(ck.cert.len(), 1);
        assert!(alpn_challenge_cert("example.test", &[7u8; 31]).is_err());
    }
}
