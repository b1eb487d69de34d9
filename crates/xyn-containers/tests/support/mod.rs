//! What the Docker-backed tests and the benchmark share: the engine's socket, the docker CLI,
//! the image made from Debian's busybox-static (nothing is pulled), and an action context
//! without artifacts or platform.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use xyn_actions::net::{Destinations, Egress};
use xyn_actions::{ActionContext, ArtifactSink, Platform};
use xyn_core::records::Artifact;
use xyn_core::{RunId, XynError};

pub const IMAGE: &str = "xyn-test/busybox:1";
pub const OTHER: &str = "xyn-test/busybox:wc-other";

pub fn docker_host() -> String {
    std::env::var("XYN_TEST_DOCKER_HOST")
        .unwrap_or_else(|_| "unix:///run/xyn-docker/docker.sock".into())
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .env("DOCKER_HOST", docker_host())
        .args(args)
        .output()
        .expect("the docker client (Debian's docker.io)");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test image (as `crates/xyn/tests/containers.rs` makes it), and a second name for it.
pub fn image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if docker(&["images", "-q", IMAGE]).trim().is_empty() {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            std::fs::create_dir_all(root.join("bin")).unwrap();
            std::fs::create_dir_all(root.join("tmp")).unwrap();
            let bb = ["/bin/busybox", "/usr/bin/busybox"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .expect("busybox-static is installed");
            std::fs::copy(bb, root.join("bin/busybox")).unwrap();
            for applet in [
                "sh", "true", "echo", "cat", "sleep", "head", "yes", "dd", "seq",
            ] {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
            let tar = dir.path().join("image.tar");
            let ok = Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .status()
                .unwrap();
            assert!(ok.success());
            docker(&[
                "import",
                "-c",
                "ENV PATH=/bin",
                tar.to_str().unwrap(),
                IMAGE,
            ]);
        }
        docker(&["tag", IMAGE, OTHER]);
    });
}

pub struct NoArtifacts;

#[async_trait]
impl ArtifactSink for NoArtifacts {
    async fn put(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Vec<u8>,
        _: Value,
    ) -> Result<Artifact, XynError> {
        Err(XynError::invalid("test", "no artifacts here"))
    }
}

pub struct NoPlatform;

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

pub fn ctx(run_id: Option<RunId>) -> ActionContext {
    ActionContext {
        run_id,
        step_id: None,
        attempt: 1,
        idempotency_key: "test:1".into(),
        correlation_id: "c".into(),
        actor: "test".into(),
        timeout: Some(Duration::from_secs(60)),
        platform: Arc::new(NoPlatform),
        artifacts: Arc::new(NoArtifacts),
        http: xyn_actions::http_client(),
        egress: Arc::new(Egress::new()),
        destinations: Destinations {
            rules: vec![],
            any_public: false,
            allow_node: false,
            list_name: "test",
        },
    }
}

/// A run id no other test uses.
pub fn run_id() -> RunId {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:08x}-0000-7000-8000-{:012x}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
    .parse()
    .unwrap()
}
