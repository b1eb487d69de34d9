#![allow(clippy::unwrap_used)]
//! `GET /metrics` on the real binary: the operator role guards it, both exposition formats
//! are served, HTTP requests are labelled by route template (1,000 distinct run ids in paths
//! add no series), and a real Prometheus (Debian's package, started here) scrapes the node so
//! that PromQL over a run's counters returns what the node did.

mod support;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Node, client};

const FLOW: &str = r#"
id: bp.m.flow
trigger:
  event_type: demo.flow
plan:
  - {kind: transform, id: s1, expr: '1'}
  - {kind: transform, id: s2, expr: '2'}
  - {kind: transform, id: s3, expr: '3'}
"#;

const FAIL: &str = r#"
id: bp.m.fail
trigger:
  event_type: demo.fail
plan:
  - {kind: transform, id: boom, expr: 'error("boom")'}
"#;

const OP: &str = "op-token-0123456789abcdef";
const OWNER: &str = "owner-token-0123456789abcdef";

async fn get(
    node: &Node,
    path: &str,
    token: Option<&str>,
    accept: Option<&str>,
) -> (u16, String, String) {
    let mut r = client().get(format!("{}{path}", node.url));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(a) = accept {
        r = r.header("accept", a);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

async fn emit(node: &Node, name: &str) {
    let r = client()
        .post(format!("{}/api/v1/events", node.url))
        .bearer_auth(OP)
        .json(&json!({"event_name": name, "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

async fn runs(node: &Node, bp: &str, status: &str) -> usize {
    let (_, _, body) = get(
        node,
        &format!("/api/v1/runs?blueprint_id={bp}&status={status}&limit=500"),
        Some(OP),
        None,
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["items"].as_array().map_or(0, Vec::len)
}

fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect()
}

/// A Prometheus server of the test's own, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(target: &str, token: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: xyn\n    metrics_path: /metrics\n    authorization:\n      credentials: {token}\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package `prometheus`, installed by .ci/run)");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// The value of an instant PromQL query with one result, once Prometheus has one.
async fn query(p: &Prometheus, promql: &str) -> Option<f64> {
    let q: String = xyn_web::path_segment(promql);
    let r = client()
        .get(format!("{}/api/v1/query?query={q}", p.url))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

async fn until_query(p: &Prometheus, promql: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = None;
    while Instant::now() < deadline {
        last = query(p, promql).await;
        if last == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("PromQL {promql}: wanted {want}, last answer {last:?}");
}

fn slo_doc(bp: &str, target: f64) -> String {
    format!(
        r#"apiVersion: openslo/v1
kind: SLO
metadata:
  name: {bp}-success
spec:
  service: xyn
  budgetingMethod: Occurrences
  timeWindow:
    - duration: 1h
      isRolling: true
  objectives:
    - target: {target}
  indicator:
    metadata:
      name: run-success
    spec:
      ratioMetric:
        counter: true
        good:
          metricSource:
            type: prometheus
            spec:
              query: sum(increase(xyn_runs_total{{blueprint="{bp}",status="completed"}}[1h])) or vector(0)
        total:
          metricSource:
            type: prometheus
            spec:
              query: sum(increase(xyn_runs_total{{blueprint="{bp}"}}[1h])) or vector(0)
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_node_and_promql_counts_its_runs() {
    let node = Node::builder()
        .blueprint("flow.yaml", FLOW)
        .blueprint("fail.yaml", FAIL)
        .env("XYN_API_TOKEN", OP)
        .env("XYN_OWNER_TOKEN", OWNER)
        .start();

    // Operator only: no token 401, an owner 403, in the standard error shape.
    let (s, _, body) = get(&node, "/metrics", None, None).await;
    assert_eq!(s, 401, "{body}");
    let (s, _, body) = get(&node, "/metrics", Some(OWNER), None).await;
    assert_eq!(s, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "auth.forbidden");

    for _ in 0..7 {
        emit(&node, "demo.flow").await;
    }
    for _ in 0..3 {
        emit(&node, "demo.fail").await;
    }
    node.until(30, "runs to end", || async {
        (runs(&node, "bp.m.flow", "completed").await == 7
            && runs(&node, "bp.m.fail", "failed").await == 3)
            .then_some(Value::Null)
    })
    .await;

    // Prometheus text by default, OpenMetrics when asked for.
    let (s, ct, text) = get(&node, "/metrics", Some(OP), None).await;
    assert_eq!(s, 200, "{text}");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(
        text.contains("xyn_runs_total{blueprint=\"bp.m.flow\",status=\"completed\"} 7"),
        "{text}"
    );
    assert!(
        text.contains("xyn_runs_total{blueprint=\"bp.m.fail\",status=\"failed\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("xyn_step_duration_seconds_count{kind=\"transform\"} 24"),
        "{text}"
    );
    let (s, ct, om) = get(
        &node,
        "/metrics",
        Some(OP),
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    )
    .await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.ends_with("# EOF\n"));

    // Route templates, not paths: a thousand distinct run ids add no series.
    let before = series(&get(&node, "/metrics", Some(OP), None).await.2);
    let ids: Vec<String> = (0..1000)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let n = &node;
    let statuses: Vec<u16> = futures_util::stream::iter(ids.iter())
        .map(|id| async move {
            get(n, &format!("/api/v1/runs/{id}"), Some(OP), None)
                .await
                .0
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 404));
    let (_, _, text) = get(&node, "/metrics", Some(OP), None).await;
    let after = series(&text);
    let new: Vec<_> = after.difference(&before).collect();
    // The 404 answers are counted under the route template, once.
    assert!(
        new.iter()
            .all(|s| s.contains("route=\"/api/v1/runs/{run_id}\"")),
        "{new:#?}"
    );
    assert!(text.contains("xyn_http_requests_total{route=\"/api/v1/runs/{run_id}\",method=\"GET\",status=\"404\"} 1000"), "{text}");
    for id in &ids[..20] {
        assert!(!text.contains(id.as_str()));
    }

    // A real Prometheus scrapes the node with the operator token.
    let target = node.url.trim_start_matches("http://").to_string();
    let prom = start_prometheus(&target, OP);
    until_query(&prom, "up{job=\"xyn\"}", 1.0).await;
    until_query(
        &prom,
        "xyn_runs_total{blueprint=\"bp.m.flow\",status=\"completed\"}",
        7.0,
    )
    .await;
    until_query(&prom, "sum(xyn_runs_total{blueprint=\"bp.m.fail\"})", 3.0).await;
    // Two more runs: the counter moves and PromQL sees it at the next scrape.
    emit(&node, "demo.flow").await;
    emit(&node, "demo.flow").await;
    until_query(
        &prom,
        "xyn_runs_total{blueprint=\"bp.m.flow\",status=\"completed\"}",
        9.0,
    )
    .await;
    until_query(
        &prom,
        "sum by (kind) (xyn_steps_total{kind=\"transform\",status=\"completed\"})",
        27.0,
    )
    .await;
    // Prometheus' own scrapes are counted under `/metrics`.
    let scrapes = query(
        &prom,
        "sum(xyn_http_requests_total{route=\"/metrics\",status=\"200\"})",
    )
    .await;
    assert!(scrapes.is_some_and(|n| n >= 1.0), "{scrapes:?}");

    // `xyn slo eval`: OpenSLO ratio SLIs over the node's /metrics, and over Prometheus.
    let dir = tempfile::tempdir().unwrap();
    let slo = |bp: &str, target: f64| {
        let f = dir.path().join(format!("{bp}-{target}.yaml"));
        std::fs::write(&f, slo_doc(bp, target)).unwrap();
        f.display().to_string()
    };
    let eval = |args: &[&str]| {
        let out = Command::new(support::BIN)
            .args(["slo", "eval"])
            .args(args)
            .env("XYN_API_TOKEN", OP)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = eval(&[&slo("bp.m.flow", 0.9), "--url", &node.url]);
    assert_eq!(code, 0, "promote: {out}");
    assert!(
        out.contains("decision: promote") && out.contains("9 good of 9"),
        "{out}"
    );
    let (code, out) = eval(&[&slo("bp.m.fail", 0.9), "--url", &node.url]);
    assert_eq!(code, 2, "rollback: {out}");
    let (code, out) = eval(&[&slo("bp.m.none", 0.9), "--url", &node.url]);
    assert_eq!(code, 3, "inconclusive: {out}");
    let (code, out) = eval(&[&slo("bp.m.flow", 0.9), "--url", &node.url, "--token", OWNER]);
    assert_eq!(code, 1, "an owner may not read /metrics: {out}");
    let (code, out) = eval(&[
        &slo("bp.m.flow", 0.9),
        "--prometheus",
        &prom.url,
        "--window",
        "1h",
        "--json",
    ]);
    assert_eq!(code, 0, "promote via Prometheus: {out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["decision"], "promote");
    assert_eq!(v["burn_rates"].as_array().unwrap().len(), 5, "{v}");
    // Prometheus counts increases it saw: two more failures after its first scrape.
    emit(&node, "demo.fail").await;
    emit(&node, "demo.fail").await;
    until_query(&prom, "sum(xyn_runs_total{blueprint=\"bp.m.fail\"})", 5.0).await;
    let (code, out) = eval(&[&slo("bp.m.fail", 0.9), "--prometheus", &prom.url]);
    assert_eq!(code, 2, "rollback via Prometheus: {out}");
    assert!(
        out.contains("ALERT page"),
        "a failing blueprint burns its budget: {out}"
    );

    // Every query of the Grafana dashboard in docs/ is valid PromQL over these metrics and
    // has data here.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo_root().join("docs/grafana/xyn-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().replace("$instance", ".*"))
        .collect();
    assert!(exprs.len() >= 10);
    for e in exprs {
        let r = client()
            .get(format!(
                "{}/api/v1/query?query={}",
                prom.url,
                xyn_web::path_segment(&e)
            ))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "success", "{e}: {v}");
        // LLM panels have no data on a node without agent steps.
        if !e.contains("llm") {
            assert!(
                !v["data"]["result"].as_array().unwrap().is_empty(),
                "{e}: no data"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() {
    let node = Node::builder()
        .blueprint("flow.yaml", FLOW)
        .toml("[telemetry]\nmetrics = false")
        .start();
    let (s, _, body) = get(&node, "/metrics", None, None).await;
    assert_eq!(s, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "metrics.disabled");
    assert!(v["correlation_id"].is_string());
}
