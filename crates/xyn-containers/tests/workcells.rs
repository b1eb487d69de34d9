//! Workcells against a real Docker Engine (the one `.ci/run` starts; `XYN_TEST_DOCKER_HOST`
//! overrides it), with an image made from Debian's static busybox: steps that reach a new
//! workcell at once make one container; a step naming another image, a step outside a run,
//! a command past its timeout; a run's end and the sweep remove them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use serde_json::json;
use support::{IMAGE, OTHER, ctx, docker, docker_host, image, run_id};
use xyn_actions::Action;
use xyn_containers::{ContainerExec, Containers, Settings, codes};
use xyn_core::RunId;
fn containers(label: &str) -> Arc<Containers> {
    image();
    Containers::new(Settings {
        docker_host: Some(docker_host()),
        images: vec![IMAGE.into(), OTHER.into()],
        node_label: format!("xyn-containers-test-{label}-{}", std::process::id()),
        ..Default::default()
    })
}

fn of_run(run: RunId) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=dev.xyn.run={run}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_reaching_a_new_workcell_at_once_share_one_container() {
    let c = containers("race");
    let exec = Arc::new(ContainerExec {
        containers: c.clone(),
    });
    let run = run_id();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move {
            exec.execute(
                &ctx(Some(run)),
                json!({"image": IMAGE, "workcell": "w", "cmd": ["sh", "-c", format!("echo {i} >> /work/log")]}),
            )
            .await
        }));
    }
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert_eq!(out.output["exit_code"], 0, "{}", out.output);
    }
    assert_eq!(of_run(run).len(), 1, "one container for the workcell");
    let out = exec
        .execute(
            &ctx(Some(run)),
            json!({"image": IMAGE, "workcell": "w", "cmd": ["sh", "-c", "wc -l < log; id -u"]}),
        )
        .await
        .unwrap();
    assert_eq!(out.output["stdout"], "4\n65534\n", "{}", out.output);
    let list = c.workcells().await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (list[0].name.as_str(), list[0].image.as_str()),
        ("w", IMAGE)
    );
    assert_eq!(list[0].run_id, run.to_string());

    // Another image for the same workcell, a workcell outside a run, a bad name: refused.
    let e = exec
        .execute(
            &ctx(Some(run)),
            json!({"image": OTHER, "workcell": "w", "cmd": ["true"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::WORKCELL_INVALID, "{}", e.message);
    let e = exec
        .execute(
            &ctx(None),
            json!({"image": IMAGE, "workcell": "w", "cmd": ["true"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::WORKCELL_INVALID, "{}", e.message);
    let e = exec
        .execute(
            &ctx(Some(run)),
            json!({"image": IMAGE, "workcell": "W_1", "cmd": ["true"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::WORKCELL_INVALID, "{}", e.message);

    // The run's end removes it.
    assert_eq!(c.remove_run_workcells(&run.to_string()).await.unwrap(), 1);
    assert!(of_run(run).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_timeout_takes_its_workcell_and_the_sweep_takes_ended_runs() {
    let c = containers("sweep");
    let exec = ContainerExec {
        containers: c.clone(),
    };
    let run = run_id();
    let e = exec
        .execute(
            &ctx(Some(run)),
            json!({"image": IMAGE, "workcell": "slow", "cmd": ["sleep", "600"], "timeout": 1}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::TIMED_OUT, "{}", e.message);
    assert!(of_run(run).is_empty(), "the workcell went with the timeout");

    // Two runs with a workcell each: the sweep removes the one whose run has ended.
    let (live, ended) = (run_id(), run_id());
    for r in [live, ended] {
        exec.execute(
            &ctx(Some(r)),
            json!({"image": IMAGE, "workcell": "a", "cmd": ["true"]}),
        )
        .await
        .unwrap();
    }
    let live_s = live.to_string();
    let n = c
        .sweep(|r| {
            let live = r == live_s;
            async move { Ok(live) }
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(of_run(ended).is_empty());
    assert_eq!(of_run(live).len(), 1);
    // A run whose state cannot be read keeps its workcell.
    assert_eq!(
        c.sweep(|_| async { Err("store down".to_string()) })
            .await
            .unwrap(),
        0
    );
    assert_eq!(of_run(live).len(), 1);
    // The node's start removes all of them.
    assert_eq!(c.reap().await.unwrap(), 1);
    assert!(of_run(live).is_empty());
}
