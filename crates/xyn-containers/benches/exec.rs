#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! `container.exec` of `true` from a local image, per call (median and p90 of 20): a fresh
//! container each time (create, start, wait, logs, remove), a command in a run's workcell (the
//! container already there), and the Docker CLI's `docker run --rm` as the baseline, in one run.
//! Needs the Docker Engine `.ci/run` starts (`/run/xyn-docker/docker.sock`, or
//! `XYN_TEST_DOCKER_HOST`) and Debian's busybox-static, from which the image is made.
//! `cargo bench -p xyn-containers --bench exec`

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use xyn_actions::net::{Destinations, Egress};
use xyn_actions::{Action, ActionContext, ArtifactSink, Platform};
use xyn_containers::{ContainerExec, Containers, Settings};
use xyn_core::records::Artifact;
use xyn_core::{RunId, XynError};

const IMAGE: &str = "xyn-test/busybox:1";
const RUNS: usize = 20;

fn docker_host() -> String {
    std::env::var("XYN_TEST_DOCKER_HOST")
        .unwrap_or_else(|_| "unix:///run/xyn-docker/docker.sock".into())
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .env("DOCKER_HOST", docker_host())
        .args(args)
        .output()
        .expect("the docker client (Debian's docker.io)");
    assert!(out.status.success(), "docker {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image the tests use: busybox-static in an empty root, imported (nothing is pulled).
fn image() {
    if !docker(&["images", "-q", IMAGE]).trim().is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox-static is installed");
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "true", "echo", "cat", "sleep"] {
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

struct NoArtifacts;

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
        Err(XynError::invalid("bench", "no artifacts here"))
    }
}

struct NoPlatform;

#[async_trait]
impl Platform for NoPlatform {
    async fn save_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("bench", "no platform"))
    }
    async fn validate_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("bench", "no platform"))
    }
    async fn promote_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("bench", "no platform"))
    }
    async fn emit_event(&self, _: &str, _: Value, _: &str, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("bench", "no platform"))
    }
}

fn ctx(run_id: RunId) -> ActionContext {
    ActionContext {
        run_id: Some(run_id),
        step_id: None,
        attempt: 1,
        idempotency_key: "bench:1".into(),
        correlation_id: "c".into(),
        actor: "bench".into(),
        timeout: Some(Duration::from_secs(60)),
        platform: Arc::new(NoPlatform),
        artifacts: Arc::new(NoArtifacts),
        http: xyn_actions::http_client(),
        egress: Arc::new(Egress::new()),
        destinations: Destinations {
            rules: vec![],
            any_public: false,
            allow_node: false,
            list_name: "bench",
        },
    }
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "| {name} | {:.1} | {:.1} |",
        ms[ms.len() / 2],
        ms[(ms.len() * 9 / 10).min(ms.len() - 1)]
    );
}

fn main() {
    image();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let containers = Containers::new(Settings {
        docker_host: Some(docker_host()),
        images: vec![IMAGE.into()],
        node_label: format!("xyn-containers-bench-{}", std::process::id()),
        ..Default::default()
    });
    let exec = ContainerExec {
        containers: containers.clone(),
    };
    let run: RunId = uuid_like();
    println!("container.exec of `true` from a local image, {RUNS} calls each");
    println!("| path | median ms | p90 ms |\n|---|---|---|");
    let mut cli = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        docker(&["run", "--rm", "--network", "none", IMAGE, "true"]);
        cli.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    summary("`docker run --rm` (the Docker CLI)", cli);
    let (fresh, cell) = rt.block_on(async {
        let mut fresh = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let out = exec
                .execute(&ctx(run), json!({"image": IMAGE, "cmd": ["true"]}))
                .await
                .unwrap();
            fresh.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(out.output["exit_code"], 0, "{}", out.output);
        }
        let mut cell = Vec::new();
        for i in 0..=RUNS {
            let t = Instant::now();
            let out = exec
                .execute(
                    &ctx(run),
                    json!({"image": IMAGE, "workcell": "bench", "cmd": ["true"]}),
                )
                .await
                .unwrap();
            assert_eq!(out.output["exit_code"], 0, "{}", out.output);
            // The first call makes the workcell; the others reuse it.
            if i > 0 {
                cell.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        containers
            .remove_run_workcells(&run.to_string())
            .await
            .unwrap();
        (fresh, cell)
    });
    summary("container.exec, a fresh container", fresh);
    summary(
        "container.exec in a workcell (container already there)",
        cell,
    );
}

fn uuid_like() -> RunId {
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
