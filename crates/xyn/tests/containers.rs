//! `container.exec` on the real node against a real Docker Engine (Debian's `docker.io`,
//! started by `.ci/run` on its own socket; `XYN_TEST_DOCKER_HOST` overrides it). Images cannot
//! be pulled here: the test imports one made from Debian's static busybox.
//!
//! Written as the attacks: an image the node does not list, a network the node does not allow,
//! a fork bomb, a memory hog, a command that never ends, a node SIGKILLed while its container
//! runs — each ends with its code and leaves no container behind.
#![allow(clippy::unwrap_used)]

/// The Docker fixtures the `xyn-containers` tests use: the engine's socket, the docker CLI and
/// the image made from busybox-static.
#[path = "../../xyn-containers/tests/support/mod.rs"]
mod docker_support;
mod support;

use docker_support::{IMAGE, docker, docker_host, image};
use serde_json::{Value, json};
use support::Node;

fn node_containers(label: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=dev.xyn.node={label}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// One blueprint for every case: the event says what to run; each optional field has the
/// action's default.
const EXEC_BP: &str = r#"
id: bp.exec
trigger: {event_type: exec}
inputs:
  - {name: with, type: object}
plan:
  - kind: action_task
    id: run
    action: container.exec
    timeout: 60s
    with:
      image: "{{inputs.with.image}}"
      cmd: "{{inputs.with.cmd}}"
      network: '{{inputs.with.network | default("none")}}'
      memory_mb: "{{inputs.with.memory_mb | default(256)}}"
      pids: "{{inputs.with.pids | default(128)}}"
      timeout: "{{inputs.with.timeout | default(50)}}"
      fail_on_exit: "{{inputs.with.fail_on_exit | default(true)}}"
"#;

fn node() -> Node {
    image();
    Node::builder()
        .toml(&format!(
            "[containers]\ndocker_host = {:?}\nimages = [{IMAGE:?}]\n",
            docker_host()
        ))
        .blueprint("exec.yaml", EXEC_BP)
        .start()
}

async fn exec(node: &Node, with: Value, status: &str) -> Value {
    let before = node.runs_of("bp.exec").await.len();
    node.emit("exec", json!({"with": with})).await;
    let run = node
        .until(10, "the new run", || async {
            let runs = node.runs_of("bp.exec").await;
            (runs.len() > before).then(|| runs[0]["run_id"].clone())
        })
        .await;
    let run = run.as_str().unwrap().to_string();
    node.until_run_status(&run, status, 90).await;
    node.step(&run, "run").await
}

fn label(node: &Node) -> String {
    std::fs::canonicalize(node.data_dir())
        .unwrap()
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_in_fresh_containers_that_are_always_removed() {
    let node = node();
    let who = label(&node);

    // A command: exit code, stdout and stderr; no network inside; the container is gone.
    let s = exec(
        &node,
        json!({"image": IMAGE, "cmd": ["sh", "-c", "echo out; echo err >&2; cat /proc/net/dev | wc -l; id -u"]}),
        "completed",
    )
    .await;
    let o = &s["outputs"];
    assert_eq!(o["exit_code"], 0, "{s}");
    assert!(o["stdout"].as_str().unwrap().starts_with("out\n"), "{o}");
    assert_eq!(o["stderr"], "err\n");
    // Only the loopback interface: two header lines and `lo`.
    assert!(o["stdout"].as_str().unwrap().contains("\n3\n"), "{o}");
    assert!(o["stdout"].as_str().unwrap().ends_with("65534\n"), "{o}");
    assert!(node_containers(&who).is_empty());

    // A non-zero exit fails the step with the code and the output in the details.
    let s = exec(
        &node,
        json!({"image": IMAGE, "cmd": ["sh", "-c", "exit 3"]}),
        "failed",
    )
    .await;
    assert_eq!(s["error"]["code"], "container.exit_nonzero", "{s}");
    assert_eq!(s["error"]["details"]["exit_code"], 3, "{s}");

    // Attacks: an image the node does not list, a network it does not allow.
    let s = exec(
        &node,
        json!({"image": "alpine:latest", "cmd": ["true"]}),
        "failed",
    )
    .await;
    assert_eq!(s["error"]["code"], "container.image_denied", "{s}");
    let s = exec(
        &node,
        json!({"image": IMAGE, "cmd": ["true"], "network": "host"}),
        "failed",
    )
    .await;
    assert_eq!(s["error"]["code"], "container.network_denied", "{s}");

    // A fork bomb stops at the pids limit; a memory hog is killed at the memory limit.
    let s = exec(
        &node,
        json!({"image": IMAGE, "pids": 16, "cmd": ["sh", "-c", "for i in $(seq 1 64); do sleep 5 & done; wait"], "fail_on_exit": false}),
        "completed",
    )
    .await;
    assert!(
        s["outputs"]["stderr"].as_str().unwrap().contains("fork")
            || s["outputs"]["stderr"]
                .as_str()
                .unwrap()
                .contains("Resource"),
        "{s}"
    );
    let s = exec(
        &node,
        json!({"image": IMAGE, "memory_mb": 16, "cmd": ["sh", "-c", "dd if=/dev/zero bs=1M count=64 | cat > /tmp/x; cat /tmp/x /tmp/x /tmp/x > /dev/null; x=$(cat /tmp/x /tmp/x)"]}),
        "failed",
    )
    .await;
    assert_eq!(s["error"]["code"], "container.exit_nonzero", "{s}");
    assert_ne!(s["error"]["details"]["exit_code"], 0, "{s}");

    // A command that never ends: the step's timeout, the container removed.
    let s = exec(
        &node,
        json!({"image": IMAGE, "cmd": ["sleep", "600"], "timeout": 2}),
        "failed",
    )
    .await;
    assert_eq!(s["error"]["code"], "container.timed_out", "{s}");
    assert!(node_containers(&who).is_empty());

    // Large output: the end is kept, the whole log is an artifact.
    let s = exec(
        &node,
        json!({"image": IMAGE, "cmd": ["sh", "-c", "seq 1 200000"]}),
        "completed",
    )
    .await;
    assert_eq!(
        s["outputs"]["stdout_truncated"], true,
        "{}",
        s["outputs"]["exit_code"]
    );
    assert!(
        s["outputs"]["stdout"]
            .as_str()
            .unwrap()
            .ends_with("200000\n")
    );
    assert!(s["outputs"]["logs_artifact_id"].is_string());
    assert!(node_containers(&who).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_left_by_a_killed_node_is_removed_at_its_next_start() {
    let mut node = node();
    let who = label(&node);
    node.emit(
        "exec",
        json!({"with": {"image": IMAGE, "cmd": ["sleep", "600"]}}),
    )
    .await;
    // Wait until the container runs, then kill the node.
    let mut seen = false;
    for _ in 0..300 {
        if !node_containers(&who).is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "the container never started");
    node.kill9();
    assert_eq!(
        node_containers(&who).len(),
        1,
        "the container outlives the killed node"
    );
    let stale = node_containers(&who);
    node.relaunch_after_kill();
    // The leftover is removed at start; the resumed step may start a new container of its own.
    let now = node_containers(&who);
    for id in &stale {
        assert!(
            !now.contains(id),
            "the leftover {id} is still there: {now:?}"
        );
    }
    // Cancel the resumed run so that its new container does not outlive the test.
    let run = node.the_run_of("bp.exec").await;
    let (st, _) = node
        .post(&format!("/api/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert!(st < 300, "{st}");
    node.until_run_status(&run, "cancelled", 30).await;
    until_no_container(&run).await;
}

/// Three steps sharing one workcell: the first writes `/work/f`, the second appends (and exits
/// with `inputs.code`), the third reads it.
const WC_BP: &str = r#"
id: bp.wc
trigger: {event_type: wc}
inputs:
  - {name: code, type: integer, default: 0}
plan:
  - kind: action_task
    id: one
    action: container.exec
    timeout: 60s
    with: {image: "xyn-test/busybox:1", workcell: build, cmd: [sh, -c, "echo one > /work/f"]}
  - kind: action_task
    id: two
    action: container.exec
    timeout: 60s
    with: {image: "xyn-test/busybox:1", workcell: build, cmd: [sh, -c, "echo two >> f; exit {{inputs.code}}"]}
  - kind: action_task
    id: three
    action: container.exec
    timeout: 60s
    with: {image: "xyn-test/busybox:1", workcell: build, cmd: [cat, /work/f]}
"#;

/// A workcell step, a gate, a workcell step.
const WC_GATE_BP: &str = r#"
id: bp.wcgate
trigger: {event_type: wcgate}
plan:
  - kind: action_task
    id: one
    action: container.exec
    timeout: 60s
    with: {image: "xyn-test/busybox:1", workcell: cell-1, cmd: [sh, -c, "echo one > /work/f"]}
  - {kind: gate, id: wait, mode: manual}
  - kind: action_task
    id: three
    action: container.exec
    timeout: 60s
    with: {image: "xyn-test/busybox:1", workcell: cell-1, cmd: [cat, /work/f]}
"#;

fn wc_node() -> Node {
    image();
    Node::builder()
        .toml(&format!(
            "[containers]\ndocker_host = {:?}\nimages = [{IMAGE:?}]\n",
            docker_host()
        ))
        .blueprint("wc.yaml", WC_BP)
        .blueprint("wcgate.yaml", WC_GATE_BP)
        .start()
}

fn run_containers(run: &str) -> Vec<String> {
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

/// Waits until no container of the run is left (the teardown runs just after the run's end).
async fn until_no_container(run: &str) {
    for _ in 0..200 {
        if run_containers(run).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "the containers of run {run} are still there: {:?}",
        run_containers(run)
    );
}

async fn start(node: &Node, bp: &str, event: &str, data: Value) -> String {
    let before = node.runs_of(bp).await.len();
    node.emit(event, data).await;
    let run = node
        .until(10, "the new run", || async {
            let runs = node.runs_of(bp).await;
            (runs.len() > before).then(|| runs[0]["run_id"].clone())
        })
        .await;
    run.as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_of_a_run_share_its_workcell_which_goes_when_the_run_ends() {
    let node = wc_node();

    // Step 1 writes, step 2 appends (its working directory is /work), step 3 reads both.
    let run = start(&node, "bp.wc", "wc", json!({})).await;
    node.until_run_status(&run, "completed", 90).await;
    let three = node.step(&run, "three").await;
    assert_eq!(three["outputs"]["stdout"], "one\ntwo\n", "{three}");
    assert_eq!(three["outputs"]["workcell"], "build", "{three}");
    until_no_container(&run).await;

    // The middle step fails: the run fails and its workcell is removed all the same.
    let run = start(&node, "bp.wc", "wc", json!({"code": 1})).await;
    node.until_run_status(&run, "failed", 90).await;
    let two = node.step(&run, "two").await;
    assert_eq!(two["error"]["code"], "container.exit_nonzero", "{two}");
    assert_eq!(two["error"]["details"]["exit_code"], 1, "{two}");
    until_no_container(&run).await;
    assert!(node_containers(&label(&node)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workcell_is_listed_destroyed_and_removed_when_its_run_is_cancelled() {
    let node = wc_node();

    // A run waits at its gate with its workcell alive: the API lists it.
    let run = start(&node, "bp.wcgate", "wcgate", json!({})).await;
    node.until_step_status(&run, "wait", "waiting", 60).await;
    let live = run_containers(&run);
    assert_eq!(live.len(), 1, "{live:?}");
    let (st, list) = node.get("/api/internal/workcells").await;
    assert_eq!(st, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let w = &items[0];
    assert_eq!(w["run_id"], run.as_str());
    assert_eq!(w["name"], "cell-1");
    assert_eq!(w["image"], IMAGE);
    assert_eq!(w["status"], "running");
    assert_eq!(w["container_name"], format!("xyn-wc-{run}-cell-1"));
    assert!(live[0].starts_with(&w["container_id"].as_str().unwrap()[..12]));

    // Workcells are made by runs only; one can be removed by hand.
    let (st, e) = node.post("/api/internal/workcells/create", json!({})).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("workcell.run_scoped")),
        "{e}"
    );
    let id = w["workcell_id"].as_str().unwrap().to_string();
    let (st, gone) = node
        .post(&format!("/api/internal/workcells/{id}/destroy"), json!({}))
        .await;
    assert_eq!(st, 200, "{gone}");
    assert_eq!(gone["status"], "removed");
    assert!(run_containers(&run).is_empty());
    let (st, e) = node
        .post(&format!("/api/internal/workcells/{id}/destroy"), json!({}))
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("workcell.not_found")),
        "{e}"
    );
    let (st, _) = node
        .post(&format!("/api/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert!(st < 300, "{st}");
    node.until_run_status(&run, "cancelled", 30).await;

    // Cancelled while its gate waits between two workcell steps: the workcell goes.
    let run = start(&node, "bp.wcgate", "wcgate", json!({})).await;
    node.until_step_status(&run, "wait", "waiting", 60).await;
    assert_eq!(run_containers(&run).len(), 1);
    let (st, _) = node
        .post(&format!("/api/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert!(st < 300, "{st}");
    node.until_run_status(&run, "cancelled", 30).await;
    until_no_container(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workcell_left_by_a_killed_node_is_removed_at_its_next_start() {
    let mut node = wc_node();
    let run = start(&node, "bp.wcgate", "wcgate", json!({})).await;
    node.until_step_status(&run, "wait", "waiting", 60).await;
    let stale = run_containers(&run);
    assert_eq!(stale.len(), 1, "{stale:?}");
    node.kill9();
    assert_eq!(
        run_containers(&run),
        stale,
        "the workcell outlives the killed node"
    );
    node.relaunch_after_kill();
    assert!(
        run_containers(&run).is_empty(),
        "the workcell is still there after the restart"
    );
    let (st, list) = node.get("/api/internal/workcells").await;
    assert_eq!(
        (st, list["items"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{list}"
    );
    let (st, _) = node
        .post(&format!("/api/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert!(st < 300, "{st}");
}
