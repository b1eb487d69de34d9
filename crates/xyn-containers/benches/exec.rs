#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! `container.exec` of `true` from a local image, per call (median and p90 of 20): a fresh
//! container each time (create, start, wait, logs, remove), a command in a run's workcell (the
//! container already there), and the Docker CLI's `docker run --rm` as the baseline, in one run.
//! Needs the Docker Engine `.ci/run` starts (`/run/xyn-docker/docker.sock`, or
//! `XYN_TEST_DOCKER_HOST`) and Debian's busybox-static, from which the image is made.
//! `cargo bench -p xyn-containers --bench exec`

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use serde_json::json;
use support::{IMAGE, ctx, docker, docker_host, image, run_id};
use xyn_actions::Action;
use xyn_containers::{ContainerExec, Containers, Settings};
use xyn_core::RunId;

const RUNS: usize = 20;

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
    let run: RunId = run_id();
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
                .execute(&ctx(Some(run)), json!({"image": IMAGE, "cmd": ["true"]}))
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
                    &ctx(Some(run)),
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
