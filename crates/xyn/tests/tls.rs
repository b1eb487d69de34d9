#![allow(clippy::unwrap_used)]
//! HTTPS on the real binary with a rustls client: TLS 1.3 by default and TLS 1.2 refused
//! unless enabled, HTTP/2 through ALPN, HSTS only over HTTPS, the certificate reloaded on
//! SIGHUP while an open connection keeps working, the HTTP→HTTPS redirect listener, and ACME
//! issuance (HTTP-01 and TLS-ALPN-01) against pebble.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use support::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const BIN: &str = env!("CARGO_BIN_EXE_xyn");

/// `xyn tls self-signed --out DIR` for `hosts`; returns (cert, key) paths.
fn self_signed(dir: &Path, hosts: &[&str]) -> (PathBuf, PathBuf) {
    let mut cmd = Command::new(BIN);
    cmd.args(["tls", "self-signed", "--out"]).arg(dir);
    for h in hosts {
        cmd.args(["--host", h]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("cert.pem"), dir.join("key.pem"))
}

fn pem_cert(path: &Path) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting `root`, limited to `versions`, offering `alpn`.
fn client_config(
    root: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(c)
}

fn addr_of(url: &str) -> String {
    url.split_once("://")
        .unwrap()
        .1
        .trim_end_matches('/')
        .to_string()
}

async fn connect(
    addr: &str,
    name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(cfg)
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
}

/// One HTTP/1.1 keep-alive request on `s`; returns the head and body.
async fn get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
) -> (String, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= at + 4 + len {
                let body = String::from_utf8_lossy(&buf[at + 4..at + 4 + len]).to_string();
                return (head, body);
            }
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn https_node(dir: &Path, extra: &[&str]) -> Node {
    let (cert, key) = self_signed(dir, &[]);
    let mut args = vec![
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::builder().args(&a).start()
}

#[tokio::test]
async fn tls13_by_default_tls12_only_when_enabled_h2_and_hsts() {
    let certs = tempfile::tempdir().unwrap();
    let node = https_node(certs.path(), &[]);
    assert!(node.url.starts_with("https://"), "{}", node.url);
    let addr = addr_of(&node.url);
    let root = pem_cert(&certs.path().join("cert.pem"));

    // The key is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // TLS 1.3, HTTP/1.1: HSTS present.
    let cfg = client_config(&root, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let mut s = connect(&addr, "localhost", cfg).await.unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let (head, body) = get(&mut s, "/api/v1/health").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("ok") || body.contains("status"), "{body}");
    assert_eq!(
        header(&head, "strict-transport-security"),
        Some("max-age=31536000")
    );
    // The full edge (not the health fast path) too.
    let (head, _) = get(&mut s, "/api/v1/runs").await;
    assert_eq!(
        header(&head, "strict-transport-security"),
        Some("max-age=31536000"),
        "{head}"
    );

    // TLS 1.2 only: refused.
    let cfg12 = client_config(&root, &[&rustls::version::TLS12], &[b"http/1.1"]);
    assert!(connect(&addr, "localhost", cfg12.clone()).await.is_err());

    // Plain HTTP to the HTTPS port gets no answer in the clear.
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), plain.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(!String::from_utf8_lossy(&b[..n]).contains("200"));

    // HTTP/2 through ALPN (reqwest over the same root).
    let cfg_h2 = client_config(&root, &[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    let s = connect(&addr, "localhost", cfg_h2.clone()).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(s);
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured((*cfg_h2).clone())
        .build()
        .unwrap();
    let r = client
        .get(format!(
            "https://localhost:{}/api/v1/health",
            addr.rsplit_once(':').unwrap().1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    let r = client
        .get(format!(
            "https://localhost:{}/api/v1/runs",
            addr.rsplit_once(':').unwrap().1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert!(r.status().is_success(), "{}", r.status());

    // With --tls12 the same TLS 1.2 client gets in.
    let certs12 = tempfile::tempdir().unwrap();
    let node12 = https_node(certs12.path(), &["--tls12"]);
    let root12 = pem_cert(&certs12.path().join("cert.pem"));
    let cfg12 = client_config(&root12, &[&rustls::version::TLS12], &[b"http/1.1"]);
    let mut s = connect(&addr_of(&node12.url), "localhost", cfg12)
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (head, _) = get(&mut s, "/api/v1/health").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn hsts_is_absent_over_plain_http() {
    let node = Node::builder().start();
    assert!(node.url.starts_with("http://"));
    let mut s = TcpStream::connect(addr_of(&node.url)).await.unwrap();
    let (head, _) = get(&mut s, "/api/v1/health").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "strict-transport-security"), None);
    let (head, _) = get(&mut s, "/api/v1/runs").await;
    assert_eq!(header(&head, "strict-transport-security"), None, "{head}");
}

#[tokio::test]
async fn sighup_serves_the_new_certificate_and_keeps_open_connections() {
    let certs = tempfile::tempdir().unwrap();
    let node = https_node(certs.path(), &[]);
    let addr = addr_of(&node.url);
    let old = pem_cert(&certs.path().join("cert.pem"));
    let cfg_old = client_config(&old, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let mut open = connect(&addr, "localhost", cfg_old.clone()).await.unwrap();
    let (head, _) = get(&mut open, "/api/v1/health").await;
    assert!(head.starts_with("HTTP/1.1 200"));

    // A broken file on SIGHUP: the old certificate stays.
    std::fs::write(certs.path().join("cert.pem"), "not a certificate").unwrap();
    signal_hup(node.pid());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(connect(&addr, "localhost", cfg_old.clone()).await.is_ok());

    // A new pair: new handshakes get it, the open connection keeps working.
    let fresh = tempfile::tempdir().unwrap();
    self_signed(fresh.path(), &["localhost"]);
    std::fs::copy(fresh.path().join("cert.pem"), certs.path().join("cert.pem")).unwrap();
    std::fs::copy(fresh.path().join("key.pem"), certs.path().join("key.pem")).unwrap();
    let new = pem_cert(&certs.path().join("cert.pem"));
    assert_ne!(old, new);
    signal_hup(node.pid());
    let cfg_new = client_config(&new, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = connect(&addr, "localhost", cfg_new.clone()).await {
            assert_eq!(s.get_ref().1.peer_certificates().unwrap()[0], new);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A fresh client (no resumable session) trusting only the old certificate is refused.
    let fresh_old = client_config(&old, &[&rustls::version::TLS13], &[b"http/1.1"]);
    assert!(connect(&addr, "localhost", fresh_old).await.is_err());
    let (head, _) = get(&mut open, "/api/v1/health").await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the open connection broke: {head}"
    );
    assert!(node.stderr().is_empty() || !node.stderr().contains("panicked"));
}

fn signal_hup(pid: u32) {
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn redirect_listener_answers_308_to_https() {
    let certs = tempfile::tempdir().unwrap();
    let port = free_port();
    let node = https_node(
        certs.path(),
        &["--redirect-http", &format!("127.0.0.1:{port}")],
    );
    let https_port = node.url.rsplit_once(':').unwrap().1.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /ui/runs?x=1 HTTP/1.1\r\nHost: example.test:80\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 308"), "{text}");
    assert_eq!(
        header(&text, "location"),
        Some(format!("https://example.test:{https_port}/ui/runs?x=1").as_str())
    );
    // A Host that would put another authority in the Location is refused.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: evil.test@good.test\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"));
    // An unknown ACME token is a 404, not a redirect.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 404"));
}

/// A pebble process, killed on drop.
struct Pebble(Child);

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pebble_bin() -> Option<PathBuf> {
    ["/usr/bin/pebble", "/usr/local/bin/pebble"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[tokio::test]
async fn acme_issuance_against_pebble_http01_and_tls_alpn01() {
    let pebble = pebble_bin()
        .expect("pebble is not installed (apt-get install pebble; .ci/run installs it)");
    let dir = tempfile::tempdir().unwrap();
    // Pebble's own HTTPS certificate, made with the tool under test.
    let (pcert, pkey) = self_signed(&dir.path().join("pebble"), &["localhost", "127.0.0.1"]);
    let acme_port = free_port();
    let mgmt_port = free_port();
    let http_port = free_port();
    let tls_port = free_port();
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme_port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
        "certificate": pcert, "privateKey": pkey,
        "httpPort": http_port, "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": false
    }});
    let cfg_path = dir.path().join("pebble.json");
    std::fs::write(&cfg_path, config.to_string()).unwrap();
    let _pebble = Pebble(
        Command::new(pebble)
            .arg("-config")
            .arg(&cfg_path)
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_err() {
        assert!(Instant::now() < deadline, "pebble did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let directory = format!("https://127.0.0.1:{acme_port}/dir");
    let ca = pcert.display().to_string();

    // HTTP-01: answered by the redirect listener on pebble's httpPort.
    let a = Node::builder()
        .args(&[
            "--acme-host",
            "localhost",
            "--acme-directory",
            &directory,
            "--acme-ca-root",
            &ca,
            "--redirect-http",
            &format!("127.0.0.1:{http_port}"),
        ])
        .start();
    // TLS-ALPN-01: answered by the HTTPS listener on pebble's tlsPort.
    let b = Node::builder()
        .args(&[
            "--listen",
            &format!("127.0.0.1:{tls_port}"),
            "--acme-host",
            "localhost",
            "--acme-directory",
            &directory,
            "--acme-ca-root",
            &ca,
            "--acme-challenge",
            "tls-alpn-01",
        ])
        .start();
    let root = pebble_root(mgmt_port, &pcert).await;
    for node in [&a, &b] {
        let cfg = client_config(&root, &[&rustls::version::TLS13], &[b"http/1.1"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut s = loop {
            match connect(&addr_of(&node.url), "localhost", cfg.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no certificate from pebble: {e}\n{}\n{}",
                        node.stderr(),
                        node.stdout_log()
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        let (head, _) = get(&mut s, "/api/v1/health").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let key = node.data_dir().join("tls/acme/localhost/key.pem");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(node.data_dir().join("tls/acme/account.json").exists());
    }
}

/// Pebble's issuing root, from its management interface (its HTTPS certificate is `tls_root`).
async fn pebble_root(mgmt_port: u16, tls_root: &Path) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    let cert = reqwest::Certificate::from_pem(&std::fs::read(tls_root).unwrap()).unwrap();
    xyn_actions::install_crypto_provider();
    let client = reqwest::Client::builder()
        .add_root_certificate(cert)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = client
            .get(format!("https://localhost:{mgmt_port}/roots/0"))
            .send()
            .await
            && r.status().is_success()
        {
            let pem = r.bytes().await.unwrap();
            return CertificateDer::from_pem_slice(&pem).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "pebble's management interface did not answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
