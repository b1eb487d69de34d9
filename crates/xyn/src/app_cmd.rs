//! `xyn app new | dev | test`: apps (a directory with `xyn-app.toml`) outside a node.
//! `dev` serves one app at `/` through the same edge as the node (framing checks, body
//! limit, security headers) and reloads it when a file changes; `test` runs the app's
//! request cases (`tests/*.json`) in-process against the sealed worker and exits 0 or 1.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Deserialize;
use serde_json::Value;
use xyn_apps::{AppHost, AppRequest, HostConfig};
use xyn_sandbox::DeploymentLimits;

#[derive(Subcommand, Debug)]
pub enum AppCmd {
    /// Create an app directory with a working route and a test.
    New {
        /// The app's name (lower case letters, digits, _ and -).
        name: String,
        /// lua or js.
        #[arg(long, default_value = "lua")]
        runtime: String,
        /// Where to create it (the app goes in DIR/NAME).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Serve one app at / and reload it when its files change.
    Dev {
        /// The app directory.
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: String,
        /// Where the app's data (database, files, incidents) is kept.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Workers serving the app at once.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Run even when the kernel cannot seal the worker (no Landlock).
        #[arg(long, env = "XYN_ALLOW_WEAK_SANDBOX")]
        allow_weak_sandbox: bool,
    },
    /// Run the app's request cases (tests/*.json); exit 0 when all pass, 1 otherwise.
    Test {
        /// The app directory.
        dir: PathBuf,
        /// Run even when the kernel cannot seal the worker (no Landlock).
        #[arg(long, env = "XYN_ALLOW_WEAK_SANDBOX")]
        allow_weak_sandbox: bool,
    },
}

fn host(dir: &Path, data_dir: &Path, workers: usize, allow_weak: bool) -> Result<AppHost> {
    let program = std::env::current_exe().context("cannot find the xyn binary")?;
    AppHost::new(HostConfig {
        dir: dir.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        program,
        prefix: vec!["sandbox-worker".into()],
        allow_weak,
        limits: DeploymentLimits::default(),
        workers,
    })
    .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))
}

fn default_data_dir(dir: &Path) -> PathBuf {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".into());
    std::env::temp_dir().join(format!("xyn-app-{name}-{}", std::process::id()))
}

pub fn run(cmd: AppCmd) -> Result<ExitCode> {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    };
    match cmd {
        AppCmd::New { name, runtime, dir } => new_app(&name, &runtime, &dir),
        AppCmd::Dev {
            dir,
            listen,
            data_dir,
            workers,
            allow_weak_sandbox,
        } => {
            let data = data_dir.unwrap_or_else(|| default_data_dir(&dir));
            rt()?.block_on(dev(dir, listen, data, workers, allow_weak_sandbox))
        }
        AppCmd::Test {
            dir,
            allow_weak_sandbox,
        } => {
            let data = tempfile::tempdir().context("cannot create a data directory")?;
            rt()?.block_on(test(&dir, data.path(), allow_weak_sandbox))
        }
    }
}

/// The newest modification time of the app's files (hidden ones skipped).
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() && depth < 4 {
                stack.push((e.path(), depth + 1));
            } else if let Ok(t) = m.modified() {
                best = best.max(Some(t));
            }
        }
    }
    best
}

async fn dev(
    dir: PathBuf,
    listen: String,
    data: PathBuf,
    workers: usize,
    allow_weak: bool,
) -> Result<ExitCode> {
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let first = host(&dir, &data, workers, allow_weak)?;
    if let Err(e) = first.router().await {
        eprintln!("app error: {}: {}", e.code, e.message);
    }
    let slot: xyn_web::apps::AppSlot = Arc::new(RwLock::new(Arc::new(first)));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!(
        "serving {} at http://{}/ (data in {})",
        dir.display(),
        listener.local_addr()?,
        data.display()
    );
    // Hot reload: a changed file replaces the app (new workers, new code) within ~100 ms.
    let watch_slot = slot.clone();
    tokio::spawn(async move {
        let mut seen = newest(&dir);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = newest(&dir);
            if now == seen {
                continue;
            }
            seen = now;
            match host(&dir, &data, workers, allow_weak) {
                Ok(h) => {
                    match h.router().await {
                        Ok(r) => eprintln!("reloaded {} ({} routes)", dir.display(), r.len().0),
                        Err(e) => eprintln!("app error: {}: {}", e.code, e.message),
                    }
                    if let Ok(mut s) = watch_slot.write() {
                        *s = Arc::new(h);
                    }
                }
                Err(e) => eprintln!("app error (keeping the previous version): {e}"),
            }
        }
    });
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    xyn_web::apps::serve(listener, slot, stop).await?;
    Ok(ExitCode::SUCCESS)
}

/// One request case of `xyn app test` (`tests/*.json`: an array of them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: Option<u16>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    body_contains: Option<String>,
    json: Option<Value>,
}

fn get() -> String {
    "GET".into()
}

async fn test(dir: &Path, data: &Path, allow_weak: bool) -> Result<ExitCode> {
    let h = host(dir, data, 1, allow_weak)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
        .with_context(|| format!("{} has no tests/ directory", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no tests/*.json in {}", dir.display());
    }
    let (mut passed, mut failed) = (0, 0);
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let cases: Vec<Case> =
            serde_json::from_str(&text).with_context(|| format!("{}", f.display()))?;
        for c in cases {
            let label = c
                .name
                .clone()
                .unwrap_or_else(|| format!("{} {}", c.method, c.path));
            let body = match &c.body {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            };
            let (path, query) = c.path.split_once('?').unwrap_or((&c.path, ""));
            let req = AppRequest {
                method: c.method.to_ascii_uppercase(),
                path: path.to_string(),
                target: c.path.clone(),
                query: serde_urlencoded::from_str(query).unwrap_or_default(),
                headers: c
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect(),
                cookies: Default::default(),
                body_len: body.len(),
                body,
            };
            let resp = h.handle(req).await;
            let mut why = Vec::new();
            if let Some(s) = c.expect.status
                && s != resp.status
            {
                why.push(format!("status {} (expected {s})", resp.status));
            }
            for (k, v) in &c.expect.headers {
                let got = resp.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(k));
                if got.map(|(_, g)| g) != Some(v) {
                    why.push(format!(
                        "header {k}: {:?} (expected {v:?})",
                        got.map(|g| &g.1)
                    ));
                }
            }
            let text = String::from_utf8_lossy(&resp.body);
            if let Some(want) = &c.expect.body_contains
                && !text.contains(want.as_str())
            {
                why.push(format!("body {text:?} does not contain {want:?}"));
            }
            if let Some(want) = &c.expect.json {
                match serde_json::from_slice::<Value>(&resp.body) {
                    Ok(v) if &v == want => {}
                    Ok(v) => why.push(format!("json {v} (expected {want})")),
                    Err(_) => why.push(format!("body {text:?} is not JSON")),
                }
            }
            if why.is_empty() {
                passed += 1;
                println!("ok   {label}");
            } else {
                failed += 1;
                println!("FAIL {label}: {}", why.join("; "));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

const LUA_APP: &str = r#"-- Routes: app.get|post|put|delete(pattern, function(req, res) ... end)
app.get("/", function(req, res)
  res:html("<h1>Hello from NAME</h1>")
end)

app.get("/hello/:who", function(req, res)
  res:json({ hello = req.params.who })
end)

app.post("/echo", function(req, res)
  res:status(201):json(req:json())
end)
"#;

const JS_APP: &str = r#"// Routes: app.get|post|put|delete(pattern, (req, res) => { ... })
app.get("/", (req, res) => {
  res.html("<h1>Hello from NAME</h1>");
});

app.get("/hello/:who", (req, res) => {
  res.json({ hello: req.params.who });
});

app.post("/echo", (req, res) => {
  res.status(201).json(req.json());
});
"#;

const TESTS: &str = r#"[
  {"name": "home page", "path": "/", "expect": {"status": 200, "body_contains": "Hello from NAME"}},
  {"name": "path parameter", "path": "/hello/world", "expect": {"status": 200, "json": {"hello": "world"}}},
  {"name": "json body", "method": "POST", "path": "/echo", "body": {"n": 1}, "expect": {"status": 201, "json": {"n": 1}}},
  {"name": "unknown path", "path": "/nope", "expect": {"status": 404}},
  {"name": "wrong method", "method": "DELETE", "path": "/echo", "expect": {"status": 405, "headers": {"allow": "POST"}}}
]
"#;

fn new_app(name: &str, runtime: &str, dir: &Path) -> Result<ExitCode> {
    if !xyn_apps::valid_app_name(name) {
        bail!(
            "{name:?}: an app name is lower case letters, digits, _ and - (starting with a letter)"
        );
    }
    let (entry, code) = match runtime {
        "lua" => ("app.lua", LUA_APP),
        "js" => ("app.js", JS_APP),
        "wasm" => bail!("wasm apps are not supported yet; use --runtime lua or js"),
        other => bail!("unknown runtime {other:?} (lua or js)"),
    };
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    std::fs::create_dir_all(root.join("tests"))?;
    std::fs::write(
        root.join(xyn_apps::APP_MANIFEST_FILE),
        format!(
            "name = \"{name}\"\nruntime = \"{runtime}\"\nentry = \"{entry}\"\ndescription = \"A new app\"\n\n[capabilities]\ndb = false\n\n[limits]\ntimeout_ms = 2000\n"
        ),
    )?;
    std::fs::write(root.join(entry), code.replace("NAME", name))?;
    std::fs::write(root.join("tests/basic.json"), TESTS.replace("NAME", name))?;
    println!(
        "created {} — try: xyn app dev {} and xyn app test {}",
        root.display(),
        root.display(),
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}
