//! `ssh.run` against a real OpenSSH server (Debian's `openssh-server`), started by each test
//! as root on a free loopback port with its own host key and authorized_keys.

mod sshd;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use xyn_actions::net::{Destinations, Egress, HostRule};
use xyn_actions::ssh::{SshRun, SshSettings};
use xyn_actions::{Action, ActionContext, ActionError, ActionOutput, ArtifactSink, Platform};
use xyn_core::records::Artifact;
use xyn_core::{ArtifactId, Timestamp, XynError};

use sshd::Sshd;

#[derive(Default)]
struct Artifacts(Mutex<Vec<(Artifact, Vec<u8>)>>);

#[async_trait]
impl ArtifactSink for Artifacts {
    async fn put(
        &self,
        name: &str,
        kind: &str,
        content_type: &str,
        bytes: Vec<u8>,
        metadata: Value,
    ) -> Result<Artifact, XynError> {
        let a = Artifact {
            artifact_id: ArtifactId(uuid::Uuid::now_v7()),
            name: name.into(),
            kind: kind.into(),
            content_type: content_type.into(),
            byte_length: bytes.len() as i64,
            sha256: String::new(),
            created_at: Timestamp::from_micros(0),
            created_by: "test".into(),
            run_id: None,
            step_id: None,
            metadata,
        };
        self.0.lock().expect("artifacts").push((a.clone(), bytes));
        Ok(a)
    }
}

struct NoPlatform;

#[async_trait]
impl Platform for NoPlatform {
    async fn save_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("test", "no platform"))
    }
    async fn validate_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("test", "no platform"))
    }
    async fn promote_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("test", "no platform"))
    }
    async fn emit_event(&self, _: &str, _: Value, _: &str, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("test", "no platform"))
    }
}

fn ctx(timeout: Option<Duration>, artifacts: Arc<Artifacts>, egress: Arc<Egress>) -> ActionContext {
    ActionContext {
        run_id: None,
        step_id: None,
        attempt: 1,
        idempotency_key: "test:1".into(),
        correlation_id: "c".into(),
        actor: "test".into(),
        timeout,
        platform: Arc::new(NoPlatform),
        artifacts,
        http: xyn_actions::http_client(),
        egress,
        destinations: Destinations {
            rules: vec![],
            any_public: true,
            allow_node: false,
            list_name: "test",
        },
    }
}

/// `ssh.run` allowed to reach the test server only, with its key recorded.
fn action(sshd: &Sshd) -> SshRun {
    action_with(sshd, |_| {})
}

fn action_with(sshd: &Sshd, f: impl FnOnce(&mut SshSettings)) -> SshRun {
    let mut s = SshSettings {
        known_hosts: Some(sshd.known_hosts()),
        identity_file: Some(sshd.path("client_ed25519")),
        user: Some("root".into()),
        ..Default::default()
    };
    s.destinations.any_public = false;
    s.destinations
        .rules
        .push(HostRule::parse(&format!("127.0.0.1:{}", sshd.port)).expect("rule"));
    f(&mut s);
    SshRun::new(s).expect("settings")
}

struct Call {
    artifacts: Arc<Artifacts>,
    egress: Arc<Egress>,
    timeout: Option<Duration>,
}

impl Call {
    fn new() -> Self {
        Call {
            artifacts: Arc::new(Artifacts::default()),
            egress: Arc::new(Egress::new()),
            timeout: Some(Duration::from_secs(60)),
        }
    }

    async fn run(&self, a: &SshRun, input: Value) -> Result<ActionOutput, ActionError> {
        let c = ctx(self.timeout, self.artifacts.clone(), self.egress.clone());
        // Checked as the registry does before executing.
        let schema_ok = jsonschema::validator_for(&a.input_schema())
            .expect("schema")
            .is_valid(&input);
        assert!(schema_ok, "input does not match the schema: {input}");
        a.execute(&c, input).await
    }
}

fn input(sshd: &Sshd, cmd: &str) -> Value {
    json!({"host": "127.0.0.1", "port": sshd.port, "cmd": cmd})
}

#[tokio::test]
async fn runs_a_command_and_reuses_the_connection() {
    let sshd = Sshd::start();
    let a = action(&sshd);
    let call = Call::new();
    let out = call
        .run(
            &a,
            input(&sshd, "echo out; echo err >&2; printf '%s' \"$SSH_TTY\""),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", sshd.log()))
        .output;
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["stdout"], "out\n", "no PTY: SSH_TTY is empty");
    assert_eq!(out["stderr"], "err\n");
    assert_eq!(out["reused_connection"], false);
    assert!(
        out["host_key"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{out}"
    );
    assert_eq!(a.pooled(), 1);
    let again = call
        .run(&a, input(&sshd, "true"))
        .await
        .expect("second call")
        .output;
    assert_eq!(again["reused_connection"], true, "{again}");
    assert_eq!(again["exit_code"], 0);
}

#[tokio::test]
async fn rsa_keys_and_keys_given_as_text_authenticate() {
    let sshd = Sshd::start();
    let a = action_with(&sshd, |s| s.identity_file = None);
    let call = Call::new();
    let key = std::fs::read_to_string(sshd.path("client_rsa")).expect("rsa key");
    let mut i = input(&sshd, "echo rsa");
    i["private_key"] = json!(key);
    let out = call.run(&a, i).await.expect("rsa by text").output;
    assert_eq!(out["stdout"], "rsa\n");
    // A step names a key file by its name, in the directory of the configured key.
    let named = action_with(&sshd, |s| {
        s.identity_file = Some(sshd.path("other_ed25519"))
    });
    let mut i = input(&sshd, "echo file");
    i["identity_file"] = json!("client_ed25519");
    let out = call.run(&named, i).await.expect("ed25519 by file").output;
    assert_eq!(out["stdout"], "file\n");
}

/// Event data must not choose which file on the node is read as a key: a path, a dot file or
/// a name without a configured key directory is refused before anything is read.
#[tokio::test]
async fn a_step_cannot_point_identity_file_at_any_file_on_the_node() {
    let sshd = Sshd::start();
    let call = Call::new();
    let configured = action_with(&sshd, |s| {
        s.identity_file = Some(sshd.path("other_ed25519"))
    });
    let full = sshd.path("client_ed25519").display().to_string();
    for bad in [
        full.as_str(),
        "../client_ed25519",
        ".ssh",
        "/etc/shadow",
        "a\\b",
    ] {
        let mut i = input(&sshd, "true");
        i["identity_file"] = json!(bad);
        let e = call.run(&configured, i).await.unwrap_err();
        assert_eq!(e.code, "ssh.key_invalid", "{bad}: {e:?}");
    }
    let unconfigured = action_with(&sshd, |s| s.identity_file = None);
    let mut i = input(&sshd, "true");
    i["identity_file"] = json!("client_ed25519");
    let e = call.run(&unconfigured, i).await.unwrap_err();
    assert_eq!(e.code, "ssh.key_invalid", "{e:?}");
}

#[tokio::test]
async fn a_key_the_server_does_not_know_is_refused() {
    let sshd = Sshd::start();
    let a = action_with(&sshd, |s| {
        s.identity_file = Some(sshd.path("other_ed25519"))
    });
    let e = Call::new().run(&a, input(&sshd, "true")).await.unwrap_err();
    assert_eq!(e.code, "ssh.auth", "{e:?}");
    assert!(!e.retryable);
    let none = action_with(&sshd, |s| s.identity_file = None);
    let e = Call::new()
        .run(&none, input(&sshd, "true"))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ssh.auth", "{e:?}");
}

#[tokio::test]
async fn non_zero_exit_fails_the_step_with_the_output() {
    let sshd = Sshd::start();
    let a = action(&sshd);
    let call = Call::new();
    let e = call
        .run(&a, input(&sshd, "echo partial; echo broken >&2; exit 3"))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ssh.exit_status", "{e:?}");
    assert!(!e.retryable);
    let d = e.details.expect("details");
    assert_eq!(d["exit_code"], 3);
    assert_eq!(d["stdout"], "partial\n");
    assert_eq!(d["stderr"], "broken\n");
    let mut i = input(&sshd, "exit 4");
    i["allow_failure"] = json!(true);
    let out = call.run(&a, i).await.expect("allowed failure").output;
    assert_eq!(out["exit_code"], 4);
}

/// The pids whose command line contains `marker`.
fn pids_running(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let c = std::fs::read(e.path().join("cmdline")).ok()?;
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                        .then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_timeout_ends_the_command_channel_and_connection() {
    let sshd = Sshd::start();
    let a = action(&sshd);
    let mut call = Call::new();
    call.timeout = Some(Duration::from_millis(1500));
    // A number no other process has on its command line.
    let secs = format!("30.{}", std::process::id());
    let started = Instant::now();
    let e = call
        .run(&a, input(&sshd, &format!("exec sleep {secs}")))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ssh.timeout", "{e:?}");
    assert!(e.retryable);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(a.pooled(), 0, "a timed-out connection is never pooled");
    // The client asked for the command to be killed, then ended the connection. (OpenSSH
    // delivers the signal for users it runs under privilege separation, not for root, whose
    // command runs on until it ends: this test cleans it up.)
    let gone_by = Instant::now() + Duration::from_secs(20);
    loop {
        let log = sshd.log();
        if log.contains("session_signal_req") && log.contains("Disconnected from user root") {
            break;
        }
        assert!(
            Instant::now() < gone_by,
            "no signal or disconnect seen\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in pids_running(&format!("sleep {secs}")) {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    // The step's own `timeout` is honoured too.
    let mut i = input(&sshd, &format!("exec sleep {secs}"));
    i["timeout"] = json!("1s");
    let started = Instant::now();
    let e = Call::new().run(&a, i).await.unwrap_err();
    assert_eq!(e.code, "ssh.timeout", "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    for pid in pids_running(&format!("sleep {secs}")) {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
}

#[tokio::test]
async fn a_changed_host_key_is_refused() {
    let sshd = Sshd::start();
    let other = std::fs::read_to_string(sshd.path("other_ed25519.pub")).expect("key");
    let f = sshd.path("known_hosts_changed");
    std::fs::write(&f, format!("[127.0.0.1]:{} {}", sshd.port, other.trim())).expect("write");
    let a = action_with(&sshd, |s| s.known_hosts = Some(f.clone()));
    for mode in ["strict", "accept-new"] {
        let mut i = input(&sshd, "touch /tmp/should-not-run");
        i["known_hosts"] = json!(mode);
        let e = Call::new().run(&a, i).await.unwrap_err();
        assert_eq!(e.code, "ssh.host_key_mismatch", "{mode}: {e:?}");
        assert!(!e.retryable);
    }
    let text = std::fs::read_to_string(&f).expect("read");
    assert_eq!(
        text.lines().count(),
        1,
        "nothing learned over a mismatch: {text}"
    );
    // A key pinned in the configuration counts as recorded.
    let pinned = action_with(&sshd, |s| {
        s.known_hosts = None;
        s.host_keys = vec![format!("[127.0.0.1]:{} {}", sshd.port, other.trim())];
    });
    let e = Call::new()
        .run(&pinned, input(&sshd, "true"))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ssh.host_key_mismatch", "{e:?}");
    let right = action_with(&sshd, |s| {
        s.known_hosts = None;
        s.host_keys = vec![sshd.host_key_line()];
    });
    Call::new()
        .run(&right, input(&sshd, "true"))
        .await
        .expect("pinned key");
}

#[tokio::test]
async fn an_unknown_host_needs_accept_new_which_records_its_key() {
    let sshd = Sshd::start();
    let f = sshd.path("state").join("known_hosts");
    let a = action_with(&sshd, |s| s.known_hosts = Some(f.clone()));
    let e = Call::new().run(&a, input(&sshd, "true")).await.unwrap_err();
    assert_eq!(e.code, "ssh.host_key_unknown", "{e:?}");
    assert!(!f.exists(), "strict mode records nothing");
    let mut i = input(&sshd, "echo first");
    i["known_hosts"] = json!("accept-new");
    let out = Call::new().run(&a, i).await.expect("accept-new").output;
    assert_eq!(out["host_key_learned"], true);
    let text = std::fs::read_to_string(&f).expect("recorded");
    assert!(
        text.trim_start()
            .starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)),
        "{text}"
    );
    // A fresh action (a restarted node) trusts the recorded key in strict mode.
    let fresh = action_with(&sshd, |s| s.known_hosts = Some(f.clone()));
    let out = Call::new()
        .run(&fresh, input(&sshd, "echo again"))
        .await
        .expect("strict after learning")
        .output;
    assert_eq!(out["stdout"], "again\n");
}

#[tokio::test]
async fn large_output_is_cut_inline_and_kept_whole_in_an_artifact() {
    let sshd = Sshd::start();
    let a = action(&sshd);
    let call = Call::new();
    let out = call
        .run(
            &a,
            input(
                &sshd,
                "head -c 200000 /dev/zero | tr '\\0' a; echo tail >&2",
            ),
        )
        .await
        .expect("large output")
        .output;
    assert_eq!(out["stdout_bytes"], 200000);
    let inline = out["stdout"].as_str().expect("stdout");
    assert!(inline.len() < 70 * 1024, "inline is cut: {}", inline.len());
    assert!(
        inline.ends_with("more bytes]"),
        "{}",
        &inline[inline.len() - 40..]
    );
    assert_eq!(out["stderr"], "tail\n");
    assert!(out.get("stderr_artifact_id").is_none());
    let id = out["stdout_artifact_id"].as_str().expect("artifact id");
    let arts = call.artifacts.0.lock().expect("artifacts");
    let (art, bytes) = arts
        .iter()
        .find(|(a, _)| a.artifact_id.0.to_string() == id)
        .expect("artifact stored");
    assert_eq!(art.name, "stdout");
    assert_eq!(bytes.len(), 200000);
    assert!(bytes.iter().all(|b| *b == b'a'));
}

/// Event data chooses the host: every address the policy does not allow is refused before
/// any connection is made — checked with a listener of the test's own that must see none.
#[tokio::test]
async fn destinations_outside_the_policy_are_refused_before_connecting() {
    let sshd = Sshd::start();
    let trap = TcpListener::bind("127.0.0.1:0").expect("trap");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_port = trap.local_addr().expect("addr").port();
    let open = action_with(&sshd, |s| {
        s.destinations = xyn_actions::ssh::default_destinations();
    });
    let listed = action(&sshd);
    let call = Call::new();
    for (a, host, port) in [
        (&open, "127.0.0.1", trap_port),
        (&open, "2130706433", trap_port),
        (&open, "0x7f000001", trap_port),
        (&open, "127.1", trap_port),
        (&open, "::ffff:127.0.0.1", trap_port),
        (&open, "[::ffff:127.0.0.1]", trap_port),
        (&open, "localhost", trap_port),
        (&open, "169.254.169.254", 22),
        (&open, "10.0.0.1", 22),
        // The allowlist names the test server's port only.
        (&listed, "127.0.0.1", trap_port),
        (&listed, "2130706433", trap_port),
        (&listed, "localhost", sshd.port),
        (&listed, "169.254.169.254", sshd.port),
    ] {
        let i = json!({"host": host, "port": port, "cmd": "true"});
        let e = call.run(a, i).await.unwrap_err();
        assert_eq!(e.code, "ssh.denied", "{host}:{port}: {e:?}");
        assert!(!e.retryable);
    }
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a refused destination was connected to"
    );
    // Option syntax in the host or user never reaches anything.
    for (host, user) in [
        ("-oProxyCommand=x", "root"),
        ("127.0.0.1", "-oProxyCommand=x"),
    ] {
        let i = json!({"host": host, "port": sshd.port, "user": user, "cmd": "true"});
        let e = call.run(&listed, i).await.unwrap_err();
        assert!(
            e.code == "ssh.denied" || e.code == "action.input_invalid",
            "{host} {user}: {e:?}"
        );
    }
    // The node's own listener is refused even when listed.
    call.egress.set_listeners(vec![
        format!("127.0.0.1:{}", sshd.port).parse().expect("addr"),
    ]);
    let e = call.run(&listed, input(&sshd, "true")).await.unwrap_err();
    assert_eq!(e.code, "ssh.denied", "{e:?}");
}
