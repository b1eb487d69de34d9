//! Helpers for end-to-end tests: start the real `xyn` binary on a temporary data directory
//! and port 0, talk to it over HTTP and through the CLI, and serve fixtures on 127.0.0.1.

#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod fixture;
pub mod services;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_xyn");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A running `xyn serve`.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub url: String,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

pub struct NodeBuilder {
    blueprints: Vec<(String, String)>,
    env: Vec<(String, String)>,
    engine_toml: String,
    extra_toml: String,
    args: Vec<String>,
}

impl NodeBuilder {
    pub fn blueprint(mut self, file: &str, text: &str) -> Self {
        self.blueprints.push((file.into(), text.into()));
        self
    }
    /// A line for the `[engine]` section of the node's xyn.toml.
    pub fn engine(mut self, line: &str) -> Self {
        self.engine_toml.push_str(line);
        self.engine_toml.push('\n');
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// More sections of the node's xyn.toml (`[web]`, `[hooks.x]`, …).
    pub fn toml(mut self, text: &str) -> Self {
        self.extra_toml.push_str(text);
        self.extra_toml.push('\n');
        self
    }

    /// Lets `http.call` reach the fixture at `url` (`[actions.http] allow`): loopback
    /// addresses are refused unless listed.
    pub fn allow_http(self, url: &str) -> Self {
        let host = url.trim_start_matches("http://").trim_end_matches('/');
        self.toml(&format!("[actions.http]\nallow = [{host:?}]"))
    }

    /// More arguments for `xyn serve` (`--database-url`, `--role`, …).
    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }
    pub fn start(self) -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blueprints")).unwrap();
        for (f, t) in &self.blueprints {
            std::fs::write(dir.path().join("blueprints").join(f), t).unwrap();
        }
        let cassette = repo_root().join("examples/cassettes/checkmk.jsonl");
        std::fs::write(
            dir.path().join("xyn.toml"),
            format!(
                "[engine]\n{}\n[agents]\nfallback_cassette = {:?}\n{}\n",
                self.engine_toml,
                cassette.display().to_string(),
                self.extra_toml
            ),
        )
        .unwrap();
        let mut n = Node {
            dir,
            url: String::new(),
            child: None,
            stderr: Arc::new(Mutex::new(String::new())),
            env: self.env,
            args: self.args,
        };
        n.launch();
        n
    }
}

impl Node {
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            blueprints: vec![],
            env: vec![],
            engine_toml: String::new(),
            extra_toml: String::new(),
            args: vec![],
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stdout.log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path()).arg("serve");
        // A test that needs to know the port before the start passes its own `--listen`.
        if !self.args.iter().any(|a| a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(["--data-dir", "data", "--blueprints", "blueprints"])
            .args(&self.args)
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("XYN_AGENT_CASSETTE")
            .env("XYN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start xyn");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let buf = self.stderr.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("xyn listening on ")
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                // A worker serves no API: it says it is ready instead.
                if line.starts_with("xyn worker ")
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(String::new());
                }
                buf.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => self.url = url,
            Err(_) => panic!(
                "xyn did not start:\n{}\n{}",
                self.stderr(),
                self.stdout_log()
            ),
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if c.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("xyn did not stop on SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the binary again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn relaunch_after_kill(&mut self) {
        assert!(self.child.is_none());
        self.launch();
    }

    /// Runs the CLI against this node; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(BIN);
        // The CLI runs in the node's environment (so it has the node's XYN_API_TOKEN, if any).
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out: Output = cmd
            .args(args)
            .env("XYN_URL", &self.url)
            .env("XYN_DATA_DIR", self.data_dir())
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the CLI with `--json` and parses its output.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let (code, out, err) = self.cli(&a);
        assert_eq!(code, 0, "xyn {args:?} failed:\n{out}\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// The body of a GET as text (a page, a download).
    pub async fn get_text(&self, path: &str) -> String {
        client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = client()
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, path: &str, body: &str, ctype: &str) -> (u16, Value) {
        let r = client()
            .post(format!("{}{path}", self.url))
            .header("content-type", ctype)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn emit(&self, name: &str, data: Value) -> Value {
        let (s, v) = self
            .post("/api/v1/events", json!({"event_name": name, "data": data}))
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    pub async fn run(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/runs/{id}")).await.1
    }

    pub async fn steps(&self, id: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/runs/{id}/steps")).await.1["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn step(&self, run: &str, name: &str) -> Value {
        self.steps(run)
            .await
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or(Value::Null)
    }

    /// The runs of a blueprint (newest first).
    pub async fn runs_of(&self, bp: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/runs?blueprint_id={bp}&limit=500"))
            .await
            .1["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits for `f` to hold, up to `secs`.
    pub async fn until<F, Fut>(&self, secs: u64, what: &str, mut f: F) -> Value
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<Value>>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- stderr\n{}\n--- log\n{}",
                    self.stderr(),
                    tail(&self.stdout_log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the only run of `bp` to exist and returns its id.
    pub async fn the_run_of(&self, bp: &str) -> String {
        self.until(10, "a run", || async {
            self.runs_of(bp).await.first().map(|r| r["run_id"].clone())
        })
        .await
        .as_str()
        .unwrap()
        .to_string()
    }

    pub async fn until_run_status(&self, run: &str, status: &str, secs: u64) -> Value {
        self.until(secs, &format!("run {run} to be {status}"), || async {
            let r = self.run(run).await;
            (r["status"] == status).then_some(r)
        })
        .await
    }

    pub async fn until_step_status(&self, run: &str, step: &str, status: &str, secs: u64) -> Value {
        self.until(secs, &format!("step {step} to be {status}"), || async {
            let s = self.step(run, step).await;
            (s["status"] == status).then_some(s)
        })
        .await
    }

    /// All events of a run, oldest first.
    pub async fn events_of(&self, run: &str) -> Vec<Value> {
        let mut v = self
            .get(&format!("/api/v1/events?run_id={run}&limit=500"))
            .await
            .1["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        v.reverse();
        v
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn client() -> reqwest::Client {
    xyn_actions::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Files under `dir` whose bytes contain `needle`.
pub fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .map(|p| p.display().to_string())
        .collect()
}
