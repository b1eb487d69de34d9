//! An OpenSSH server of the test's own (Debian's `openssh-server`): `sshd -D` as root on a
//! free loopback port, with a fresh host key, client keys (ed25519, RSA, and one the server
//! does not know) and authorized_keys in a temporary directory. No systemd.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An `sshd -D` of the test's own.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

fn keygen(path: &Path, kind: &str) {
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-N", "", "-t", kind, "-f"]).arg(path);
    if kind == "rsa" {
        c.args(["-b", "2048"]);
    }
    let st = c
        .status()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(st.success(), "ssh-keygen {kind}");
}

fn sshd_path() -> PathBuf {
    for p in ["/usr/sbin/sshd", "/usr/bin/sshd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("sshd is not installed (apt-get install openssh-server; .ci/run does it)");
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for (name, kind) in [
            ("host_ed25519", "ed25519"),
            ("client_ed25519", "ed25519"),
            ("client_rsa", "rsa"),
            ("other_ed25519", "ed25519"),
        ] {
            keygen(&d.join(name), kind);
        }
        let mut auth = std::fs::read_to_string(d.join("client_ed25519.pub")).expect("pub");
        auth.push_str(&std::fs::read_to_string(d.join("client_rsa.pub")).expect("pub"));
        std::fs::write(d.join("authorized_keys"), auth).expect("authorized_keys");
        // Privilege separation needs this directory (systemd makes it on a real host).
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nPidFile none\nLogLevel VERBOSE\nMaxStartups 100\n\
                 AllowAgentForwarding no\nAllowTcpForwarding no\nX11Forwarding no\n",
                d = d.display()
            );
            std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
            let log = std::fs::File::create(d.join("sshd.log")).expect("log");
            let mut child = Command::new(sshd_path())
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start sshd");
            // Ready when it answers with its banner; gone if the port was taken meanwhile.
            let ready_by = Instant::now() + Duration::from_secs(10);
            let ready = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    use std::io::Read;
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut b = [0u8; 8];
                    if s.read_exact(&mut b).is_ok() && &b[..4] == b"SSH-" {
                        break true;
                    }
                }
                if Instant::now() > ready_by {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if ready {
                return Sshd { dir, port, child };
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            );
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn host_key_line(&self) -> String {
        let k = std::fs::read_to_string(self.path("host_ed25519.pub")).expect("host key");
        format!("[127.0.0.1]:{} {}", self.port, k.trim())
    }

    /// A known_hosts file recording the server's real key.
    pub fn known_hosts(&self) -> PathBuf {
        let f = self.path("known_hosts");
        std::fs::write(&f, format!("{}\n", self.host_key_line())).expect("known_hosts");
        f
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
