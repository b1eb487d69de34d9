//! The node's side of the worker protocol, against a worker that lies: a compromised
//! worker (here a shell script speaking the protocol) cannot widen its action's HTTP
//! allowlist by sending a policy of its own.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use xyn_sandbox::caps::http::HttpPolicy;
use xyn_sandbox::pool::{PoolConfig, WorkerPool, WorkerRoots};
use xyn_sandbox::worker::{InvokeMsg, WorkerArgs};
use xyn_sandbox::{DeploymentLimits, InvokeReport, RuntimeKind};

/// A server on 127.0.0.1 that counts connections and answers 200.
fn server(hits: Arc<AtomicUsize>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut s) = stream else { continue };
            hits.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

/// A fake worker: ready, then for the first invocation asks the node for an HTTP request
/// with a policy that allows `127.0.0.1:<port>`, and answers with the node's reply as
/// its output.
fn lying_worker(port: u16) -> String {
    let report = InvokeReport {
        action: "t.evil".into(),
        runtime: RuntimeKind::Wasm,
        result: Ok(json!("REPLY")),
        counts: Default::default(),
        denials: Vec::new(),
        logs: Vec::new(),
        usage: Default::default(),
        limits: DeploymentLimits::default().fill(RuntimeKind::Wasm, &Default::default()),
        digest: String::new(),
        incident: None,
    };
    let report = serde_json::to_string(&report)
        .unwrap()
        .replace("\"REPLY\"", "$reply");
    let http = json!({
        "type": "http", "id": 4242,
        "policy": {"action": "t.evil", "hosts": [format!("127.0.0.1:{port}")]},
        "request": {"method": "GET", "url": format!("http://127.0.0.1:{port}/ok")},
    })
    .to_string()
    .replace("4242", "$id");
    format!(
        r#"echo '{{"type":"ready","seal":{{"landlock_abi":null,"landlock":"none","seccomp":false,"no_new_privs":false,"notes":[]}}}}'
read -r line
id=$(printf '%s' "$line" | sed 's/.*"id":\([0-9]*\).*/\1/')
echo "{http}" | sed "s/\$id/$id/"
read -r reply
printf '{{"type":"done","id":%s,"report":%s}}\n' "$id" '{report}' | sed "s|\$reply|$reply|"
sleep 5
"#,
        http = http.replace('"', "\\\""),
    )
}

#[test]
fn the_node_checks_forwarded_http_against_the_actions_own_allowlist() {
    let hits = Arc::new(AtomicUsize::new(0));
    let port = server(hits.clone());
    let script = lying_worker(port);
    let pool = WorkerPool::new(PoolConfig {
        program: PathBuf::from("/bin/sh"),
        prefix: vec!["-c".into(), script, "worker".into()],
        worker: WorkerArgs::default(),
        size: 1,
        max_idle: 0,
    });
    let msg = InvokeMsg {
        id: 0,
        package: PathBuf::from("/nonexistent"),
        data_dir: None,
        db_path: None,
        env: Default::default(),
        secrets: Default::default(),
        input: json!({}),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The node's own policy for this action allows no host at all.
    let roots = WorkerRoots {
        key: "t.evil".into(),
        http_policy: Some(HttpPolicy {
            action: "t.evil".into(),
            hosts: vec!["example.com".into()],
            secret_hosts: Default::default(),
        }),
        ..Default::default()
    };
    let report = rt
        .block_on(pool.invoke(&roots, msg.clone(), Duration::from_secs(10)))
        .unwrap();
    let reply: Value = report.result.unwrap();
    assert_eq!(reply["type"], "http_result", "{reply}");
    assert!(
        reply["result"]["Err"]["Denied"].is_object(),
        "the widened policy was honoured: {reply}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the node connected");

    // The control: with the worker's policy (no node policy known), the request is made.
    let pool = WorkerPool::new(PoolConfig {
        program: PathBuf::from("/bin/sh"),
        prefix: vec!["-c".into(), lying_worker(port), "worker".into()],
        worker: WorkerArgs::default(),
        size: 1,
        max_idle: 0,
    });
    let roots = WorkerRoots {
        key: "t.evil".into(),
        ..Default::default()
    };
    let report = rt
        .block_on(pool.invoke(&roots, msg, Duration::from_secs(10)))
        .unwrap();
    let reply: Value = report.result.unwrap();
    assert_eq!(reply["result"]["Ok"]["status"], 200, "{reply}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
