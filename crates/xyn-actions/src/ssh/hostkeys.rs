//! Host key verification for `ssh.run`: a known_hosts file in OpenSSH's format (hashed
//! entries included) and keys pinned in the node's configuration.
//!
//! A host is named as OpenSSH names it: `host` on port 22, `[host]:port` otherwise, with
//! `host` the name as written in the step (lower case) or the address it spells.
//!
//! *Invariant: a server key is accepted only when it equals a key recorded for the host. A
//! host with recorded keys whose key differs — also of another type — is refused as a
//! mismatch, never learned anew; a host with none is learned only in `accept-new` mode.*

use std::path::PathBuf;
use std::sync::Mutex;

use russh::keys::{HashAlg, PublicKey};

/// What the verifier decided about a server key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded for the host (in the file or pinned).
    Known,
    /// Not known, recorded now (`accept-new`).
    Learned,
    /// No key is recorded for the host (and the step did not ask to learn it).
    Unknown,
    /// Keys are recorded for the host and this one is not among them.
    Mismatch,
    /// The known_hosts file cannot be read or written, or a certificate was offered.
    Error(String),
}

/// One pinned key: the host patterns (a comma-separated list, as in known_hosts) and the key.
#[derive(Clone, Debug)]
struct Pinned {
    hosts: Vec<String>,
    key: PublicKey,
}

/// The keys the node trusts.
#[derive(Debug)]
pub struct HostKeys {
    file: Option<PathBuf>,
    pinned: Vec<Pinned>,
    /// Serialises check-then-append in `accept-new` mode (two steps learning one host
    /// record it once).
    learn: Mutex<()>,
}

/// `host` or `[host]:port`, as OpenSSH writes it.
pub fn host_port(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The SHA-256 fingerprint of a key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl HostKeys {
    /// `file`: the known_hosts file (`None`: no file; only pinned keys are known and
    /// nothing can be learned). `pinned`: lines in known_hosts format
    /// (`host[,host…] key-type base64`).
    pub fn new(file: Option<PathBuf>, pinned: &[String]) -> Result<Self, String> {
        let mut keys = Vec::new();
        for line in pinned {
            let line = line.trim();
            let (hosts, key) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("host key {line:?}: expected `host key-type base64`"))?;
            let key = PublicKey::from_openssh(key.trim())
                .map_err(|e| format!("host key for {hosts}: {e}"))?;
            keys.push(Pinned {
                hosts: hosts
                    .split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .collect(),
                key,
            });
        }
        Ok(Self {
            file,
            pinned: keys,
            learn: Mutex::new(()),
        })
    }

    /// Only a known_hosts file (no pinned keys).
    pub fn file_only(file: Option<PathBuf>) -> Self {
        Self {
            file,
            pinned: Vec::new(),
            learn: Mutex::new(()),
        }
    }

    pub fn file(&self) -> Option<&PathBuf> {
        self.file.as_ref()
    }

    /// Every key recorded for the host.
    pub fn known(&self, host: &str, port: u16) -> Result<Vec<PublicKey>, String> {
        let host = host.to_ascii_lowercase();
        let name = host_port(&host, port);
        let mut out: Vec<PublicKey> = self
            .pinned
            .iter()
            .filter(|p| p.hosts.contains(&name))
            .map(|p| p.key.clone())
            .collect();
        if let Some(f) = &self.file {
            let found = russh::keys::known_hosts::known_host_keys_path(&host, port, f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            out.extend(found.into_iter().map(|(_, k)| k));
        }
        Ok(out)
    }

    /// Decides about the key a server presented.
    pub fn verify(&self, host: &str, port: u16, key: &PublicKey, accept_new: bool) -> Verdict {
        let host = host.to_ascii_lowercase();
        let check = |s: &Self| -> Result<Option<Verdict>, String> {
            let known = s.known(&host, port)?;
            if known.iter().any(|k| k.key_data() == key.key_data()) {
                return Ok(Some(Verdict::Known));
            }
            if !known.is_empty() {
                return Ok(Some(Verdict::Mismatch));
            }
            Ok(None)
        };
        if !accept_new {
            return match check(self) {
                Ok(Some(v)) => v,
                Ok(None) => Verdict::Unknown,
                Err(e) => Verdict::Error(e),
            };
        }
        let Some(file) = &self.file else {
            return Verdict::Error("no known_hosts file to record the key in".into());
        };
        let _guard = match self.learn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match check(self) {
            Ok(Some(v)) => v,
            Ok(None) => match append(file, &host_port(&host, port), key) {
                Ok(()) => Verdict::Learned,
                Err(e) => Verdict::Error(format!("cannot write {}: {e}", file.display())),
            },
            Err(e) => Verdict::Error(e),
        }
    }
}

/// Appends `name key` as one line (a newline first if the file does not end with one).
fn append(file: &std::path::Path, name: &str, key: &PublicKey) -> Result<(), String> {
    use std::io::Write;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let text = key.to_openssh().map_err(|e| e.to_string())?;
    let before = std::fs::read(file).unwrap_or_default();
    let mut line = String::new();
    if before.last().is_some_and(|b| *b != b'\n') {
        line.push('\n');
    }
    line.push_str(&format!("{name} {text}\n"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| e.to_string())?;
    f.write_all(line.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G2sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).expect("test key")
    }

    #[test]
    fn strict_accepts_only_recorded_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("known_hosts");
        std::fs::write(&f, format!("[web-1]:2222 {A}\n")).expect("write");
        let hk = HostKeys::new(Some(f.clone()), &[]).expect("keys");
        assert_eq!(hk.verify("web-1", 2222, &key(A), false), Verdict::Known);
        assert_eq!(hk.verify("WEB-1", 2222, &key(A), false), Verdict::Known);
        assert_eq!(hk.verify("web-1", 2222, &key(B), false), Verdict::Mismatch);
        assert_eq!(hk.verify("web-1", 22, &key(A), false), Verdict::Unknown);
        // A mismatch is never learned over, even in accept-new mode.
        assert_eq!(hk.verify("web-1", 2222, &key(B), true), Verdict::Mismatch);
        let text = std::fs::read_to_string(&f).expect("read");
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn accept_new_records_once_and_then_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("sub").join("known_hosts");
        let hk = HostKeys::new(Some(f.clone()), &[]).expect("keys");
        assert_eq!(hk.verify("10.0.0.5", 22, &key(A), false), Verdict::Unknown);
        assert_eq!(hk.verify("10.0.0.5", 22, &key(A), true), Verdict::Learned);
        assert_eq!(hk.verify("10.0.0.5", 22, &key(A), true), Verdict::Known);
        assert_eq!(hk.verify("10.0.0.5", 22, &key(B), true), Verdict::Mismatch);
        let text = std::fs::read_to_string(&f).expect("read");
        assert!(text.starts_with("10.0.0.5 ssh-ed25519 "), "{text}");
        // Read back by a fresh verifier (persisted).
        let again = HostKeys::new(Some(f), &[]).expect("keys");
        assert_eq!(again.verify("10.0.0.5", 22, &key(A), false), Verdict::Known);
    }

    #[test]
    fn pinned_keys_count_as_recorded() {
        let hk = HostKeys::new(None, &[format!("db-1,[db-2]:2200 {B}")]).expect("keys");
        assert_eq!(hk.verify("db-1", 22, &key(B), false), Verdict::Known);
        assert_eq!(hk.verify("db-2", 2200, &key(B), false), Verdict::Known);
        assert_eq!(hk.verify("db-2", 2200, &key(A), false), Verdict::Mismatch);
        assert!(matches!(
            hk.verify("db-3", 22, &key(A), true),
            Verdict::Error(_)
        ));
        assert!(HostKeys::new(None, &["db-1".into()]).is_err());
        assert!(HostKeys::new(None, &["db-1 ssh-ed25519 !!!".into()]).is_err());
    }
}
