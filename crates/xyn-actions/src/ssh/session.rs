//! The SSH client of `ssh.run` (russh): connecting to addresses the destination policy
//! allowed, host key verification, authentication, one command per session channel, and a
//! pool of authenticated connections per host, address, user and credential.
//!
//! *Invariant: the client opens session channels and runs `exec` on them, nothing else: no
//! PTY, no shell, no agent forwarding, no port or X11 forwarding; channels the server
//! offers are refused (russh's default handler answers them with a failure).*

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};
use sha2::{Digest, Sha256};
use tokio::time::timeout_at;

use super::hostkeys::{HostKeys, Verdict, fingerprint};

/// How `ssh.run` failed, before the action maps it to a stable code.
#[derive(Debug)]
pub enum SshError {
    /// TCP connect, DNS or the SSH handshake failed, or took longer than the connect timeout.
    Connect(String),
    HostKeyUnknown {
        host: String,
        fingerprint: String,
    },
    HostKeyMismatch {
        host: String,
        fingerprint: String,
    },
    /// The known_hosts file could not be read or written.
    HostKeyStore(String),
    /// The server refused every credential offered (or none was configured).
    Auth(String),
    /// The step's deadline passed while the command ran.
    Timeout,
    /// A session channel could not be opened (the command did not start).
    ChannelOpen(String),
    /// The connection broke after the command was sent.
    Protocol(String),
}

/// What the node authenticates with.
#[derive(Clone)]
pub struct Credentials {
    pub key: Option<Arc<PrivateKey>>,
    pub password: Option<String>,
}

impl Credentials {
    /// A digest naming the credentials (the public key, the password), for pooling.
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        if let Some(k) = &self.key {
            h.update(b"key\0");
            h.update(k.public_key().to_bytes().unwrap_or_default());
        }
        if let Some(p) = &self.password {
            h.update(b"\0password\0");
            h.update(p.as_bytes());
        }
        h.finalize().into()
    }
}

/// One destination as the client connects to it.
pub struct Target {
    /// The host as known_hosts names it (lower case; an address in its plain spelling).
    pub name: String,
    pub port: u16,
    /// Addresses the policy allowed, tried in order.
    pub addrs: Vec<SocketAddr>,
    pub user: String,
    pub accept_new: bool,
}

/// What the verifier saw during the handshake.
#[derive(Clone, Debug, Default)]
struct Seen {
    verdict: Option<Verdict>,
    fingerprint: String,
}

struct Verifier {
    name: String,
    port: u16,
    accept_new: bool,
    keys: Arc<HostKeys>,
    seen: Arc<Mutex<Seen>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let (verdict, fp) = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => (
                self.keys
                    .verify(&self.name, self.port, key, self.accept_new),
                fingerprint(key),
            ),
            PublicKeyOrCertificate::Certificate(_) => (
                Verdict::Error("host certificates are not supported".into()),
                String::new(),
            ),
        };
        let ok = matches!(verdict, Verdict::Known | Verdict::Learned);
        if let Ok(mut s) = self.seen.lock() {
            s.verdict = Some(verdict);
            s.fingerprint = fp;
        }
        Ok(ok)
    }
}

/// An authenticated connection.
pub struct Conn {
    handle: Handle<Verifier>,
    key: PoolKey,
    pub fingerprint: String,
    /// The host key was recorded by this connection (`accept-new`).
    pub learned: bool,
    /// Taken from the pool rather than made for this call.
    pub reused: bool,
}

impl Conn {
    /// Ends the connection (after a timeout or an error: never pooled again).
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.handle.disconnect(Disconnect::ByApplication, "", "en"),
        )
        .await;
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    addr: SocketAddr,
    name: String,
    user: String,
    credentials: [u8; 32],
}

/// Idle authenticated connections, per address, host name, user and credentials.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<(Conn, Instant)>>>,
}

/// Most idle connections kept per key.
const POOL_PER_KEY: usize = 4;

impl Pool {
    fn take(&self, key: &PoolKey, ttl: Duration) -> Option<Conn> {
        let mut map = self.idle.lock().ok()?;
        let list = map.get_mut(key)?;
        while let Some((c, since)) = list.pop() {
            if since.elapsed() < ttl && !c.handle.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// Keeps a connection for the next call (`ttl` zero: pooling is off).
    pub fn put(&self, conn: Conn, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut map) = self.idle.lock() else {
            return;
        };
        for list in map.values_mut() {
            list.retain(|(c, since)| since.elapsed() < ttl && !c.handle.is_closed());
        }
        map.retain(|_, l| !l.is_empty());
        let list = map.entry(conn.key.clone()).or_default();
        if list.len() < POOL_PER_KEY {
            list.push((conn, Instant::now()));
        }
    }

    /// Idle connections kept now.
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// Host key algorithms in russh's order, the types of the keys recorded for the host
/// first (as OpenSSH does), so a server with several keys presents one we know.
fn preferred_keys(known: &[PublicKey]) -> russh::Preferred {
    let default = russh::Preferred::default();
    let known_type = |a: &russh::keys::Algorithm| {
        known.iter().any(|k| {
            let ka = k.algorithm();
            ka == *a || (ka.is_rsa() && matches!(a, russh::keys::Algorithm::Rsa { .. }))
        })
    };
    let mut keys: Vec<russh::keys::Algorithm> = default
        .key
        .iter()
        .filter(|a| known_type(a))
        .cloned()
        .collect();
    keys.extend(default.key.iter().filter(|a| !known_type(a)).cloned());
    russh::Preferred {
        key: keys.into(),
        ..default
    }
}

/// A pooled connection for the target, or a new one: TCP to an allowed address, the
/// handshake, the host key checked, then authentication, all within `connect_timeout`.
pub async fn connect(
    target: &Target,
    creds: &Credentials,
    keys: &Arc<HostKeys>,
    pool: &Pool,
    pool_ttl: Duration,
    connect_timeout: Duration,
) -> Result<Conn, SshError> {
    for addr in &target.addrs {
        let key = PoolKey {
            addr: *addr,
            name: target.name.clone(),
            user: target.user.clone(),
            credentials: creds.digest(),
        };
        if let Some(mut c) = pool.take(&key, pool_ttl) {
            c.reused = true;
            c.learned = false;
            return Ok(c);
        }
    }
    if creds.key.is_none() && creds.password.is_none() {
        return Err(SshError::Auth(
            "no credential: set private_key, password or identity_file on the step, or \
             [actions.ssh] identity_file"
                .into(),
        ));
    }
    let known = keys
        .known(&target.name, target.port)
        .map_err(SshError::HostKeyStore)?;
    let config = Arc::new(client::Config {
        preferred: preferred_keys(&known),
        nodelay: true,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        ..Default::default()
    });
    let deadline = tokio::time::Instant::now() + connect_timeout;
    let mut last = String::from("no address to connect to");
    for addr in &target.addrs {
        let tcp = match timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last = format!("cannot connect to {}: {e}", target_label(target));
                continue;
            }
            Err(_) => {
                return Err(SshError::Connect(format!(
                    "connecting to {} took longer than {}ms",
                    target_label(target),
                    connect_timeout.as_millis()
                )));
            }
        };
        let _ = tcp.set_nodelay(true);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let handler = Verifier {
            name: target.name.clone(),
            port: target.port,
            accept_new: target.accept_new,
            keys: keys.clone(),
            seen: seen.clone(),
        };
        let handshake = timeout_at(
            deadline,
            client::connect_stream(config.clone(), tcp, handler),
        );
        let handle = match handshake.await {
            Ok(Ok(h)) => h,
            other => {
                let s = seen.lock().map(|s| s.clone()).unwrap_or_default();
                match s.verdict {
                    Some(Verdict::Unknown) => {
                        return Err(SshError::HostKeyUnknown {
                            host: crate::ssh::hostkeys::host_port(&target.name, target.port),
                            fingerprint: s.fingerprint,
                        });
                    }
                    Some(Verdict::Mismatch) => {
                        return Err(SshError::HostKeyMismatch {
                            host: crate::ssh::hostkeys::host_port(&target.name, target.port),
                            fingerprint: s.fingerprint,
                        });
                    }
                    Some(Verdict::Error(e)) => return Err(SshError::HostKeyStore(e)),
                    _ => {}
                }
                return Err(SshError::Connect(match other {
                    Ok(Err(e)) => {
                        format!("SSH handshake with {} failed: {e}", target_label(target))
                    }
                    _ => format!(
                        "the SSH handshake with {} took longer than {}ms",
                        target_label(target),
                        connect_timeout.as_millis()
                    ),
                }));
            }
        };
        let (fingerprint, learned) = seen
            .lock()
            .map(|s| (s.fingerprint.clone(), s.verdict == Some(Verdict::Learned)))
            .unwrap_or_default();
        let mut conn = Conn {
            handle,
            key: PoolKey {
                addr: *addr,
                name: target.name.clone(),
                user: target.user.clone(),
                credentials: creds.digest(),
            },
            fingerprint,
            learned,
            reused: false,
        };
        match timeout_at(
            deadline,
            authenticate(&mut conn.handle, &target.user, creds),
        )
        .await
        {
            Ok(Ok(())) => return Ok(conn),
            Ok(Err(e)) => {
                conn.close().await;
                return Err(e);
            }
            Err(_) => {
                conn.close().await;
                return Err(SshError::Connect(format!(
                    "authenticating to {} took longer than {}ms",
                    target_label(target),
                    connect_timeout.as_millis()
                )));
            }
        }
    }
    Err(SshError::Connect(last))
}

fn target_label(t: &Target) -> String {
    crate::ssh::hostkeys::host_port(&t.name, t.port)
}

async fn authenticate(
    h: &mut Handle<Verifier>,
    user: &str,
    creds: &Credentials,
) -> Result<(), SshError> {
    let proto = |e: russh::Error| SshError::Connect(format!("authentication failed: {e}"));
    if let Some(key) = &creds.key {
        let hash = if key.algorithm().is_rsa() {
            h.best_supported_rsa_hash().await.map_err(proto)?.flatten()
        } else {
            None
        };
        let r = h
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .map_err(proto)?;
        if r.success() {
            return Ok(());
        }
    }
    if let Some(pw) = &creds.password {
        let r = h
            .authenticate_password(user, pw.clone())
            .await
            .map_err(proto)?;
        if r.success() {
            return Ok(());
        }
    }
    Err(SshError::Auth(format!(
        "the server refused the {} for user {user}",
        match (&creds.key, &creds.password) {
            (Some(_), Some(_)) => "key and the password",
            (Some(_), None) => "key",
            _ => "password",
        }
    )))
}

/// How the command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Status(u32),
    Signal(String),
    /// The channel closed without an exit status.
    Unknown,
}

/// A stream's bytes (up to the cap) and how many were sent in all.
#[derive(Default)]
pub struct Stream {
    pub bytes: Vec<u8>,
    pub total: u64,
}

impl Stream {
    fn push(&mut self, data: &[u8], cap: usize) {
        self.total += data.len() as u64;
        let room = cap.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

pub struct Captured {
    pub stdout: Stream,
    pub stderr: Stream,
    pub exit: Exit,
}

/// Runs `cmd` on a new session channel (no PTY), capturing up to `cap` bytes per stream,
/// until the channel closes or `deadline` passes; at the deadline the command is sent
/// `KILL` and the channel closed (the caller then ends the connection).
pub async fn exec(
    conn: &Conn,
    cmd: &str,
    cap: usize,
    deadline: tokio::time::Instant,
) -> Result<Captured, SshError> {
    let broken = |e: russh::Error| SshError::Protocol(e.to_string());
    let mut channel = match timeout_at(deadline, conn.handle.channel_open_session()).await {
        Ok(c) => c.map_err(|e| SshError::ChannelOpen(e.to_string()))?,
        Err(_) => return Err(SshError::Timeout),
    };
    match timeout_at(deadline, channel.exec(true, cmd)).await {
        Ok(r) => r.map_err(broken)?,
        Err(_) => return Err(SshError::Timeout),
    }
    let mut out = Captured {
        stdout: Stream::default(),
        stderr: Stream::default(),
        exit: Exit::Unknown,
    };
    loop {
        match timeout_at(deadline, channel.wait()).await {
            Err(_) => {
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    let _ = channel.signal(Sig::KILL).await;
                    let _ = channel.close().await;
                })
                .await;
                return Err(SshError::Timeout);
            }
            Ok(None) | Ok(Some(ChannelMsg::Close)) => break,
            Ok(Some(ChannelMsg::Data { data })) => out.stdout.push(&data, cap),
            Ok(Some(ChannelMsg::ExtendedData { data, ext: 1 })) => out.stderr.push(&data, cap),
            Ok(Some(ChannelMsg::ExitStatus { exit_status })) => {
                out.exit = Exit::Status(exit_status)
            }
            Ok(Some(ChannelMsg::ExitSignal { signal_name, .. })) => {
                out.exit = Exit::Signal(format!("{signal_name:?}"))
            }
            Ok(Some(ChannelMsg::Failure)) => {
                return Err(SshError::Protocol(
                    "the server refused to run the command".into(),
                ));
            }
            Ok(Some(_)) => {}
        }
    }
    Ok(out)
}

/// Whether a failure on a pooled connection may be retried on a new one (the command was
/// not started).
pub fn stale(e: &SshError) -> bool {
    matches!(e, SshError::ChannelOpen(_))
}
