//! Sandboxed actions end to end with the real binary: the sealed worker, `xyn action`,
//! `xyn doctor`, and a node that keeps serving while sandboxed steps fail or crash.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn xyn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xyn"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A tiny HTTP server on 127.0.0.1 answering 200 "hello" to everything.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

/// Copies an example package, pointing its allowed host at `port`.
fn example(name: &str, port: u16, into: &Path) -> PathBuf {
    let src = repo().join("examples/actions").join(name);
    let dst = into.join(name);
    copy_dir(&src, &dst);
    let m = dst.join("xyn-action.toml");
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{port}"));
    std::fs::write(m, text).unwrap();
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// Writes a package from its manifest fields and code.
fn package(
    into: &Path,
    name: &str,
    runtime: &str,
    entry: &str,
    code: &str,
    extra: &str,
) -> PathBuf {
    let dir = into.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(entry), code).unwrap();
    std::fs::write(
        dir.join("xyn-action.toml"),
        format!("name = \"{name}\"\nruntime = \"{runtime}\"\nentry = \"{entry}\"\n{extra}\n"),
    )
    .unwrap();
    dir
}

fn install(dir: &Path, data: &Path) {
    let out = xyn()
        .args(["action", "install"])
        .arg(dir)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `xyn action run`: (exit code, stdout).
fn run(name: &str, input: Value, data: &Path) -> (i32, String) {
    let out = xyn()
        .args([
            "action",
            "run",
            name,
            "--input",
            &input.to_string(),
            "--data-dir",
        ])
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[test]
fn the_sealed_worker_cannot_open_files_outside_its_roots_or_spawn_processes() {
    let d = tempfile::tempdir().unwrap();
    let (read, write) = (d.path().join("r"), d.path().join("w"));
    std::fs::create_dir_all(&read).unwrap();
    std::fs::create_dir_all(&write).unwrap();
    std::fs::write(read.join("x"), "x").unwrap();
    let out = xyn()
        .args(["sandbox-worker", "--self-test-seal", "--read"])
        .arg(&read)
        .arg("--write")
        .arg(&write)
        .env_clear()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(r["seal"]["landlock"], "full", "{r}");
    assert!(r["seal"]["landlock_abi"].as_i64().unwrap() >= 3, "{r}");
    assert_eq!(r["seal"]["seccomp"], true, "{r}");
    for who in ["main_thread", "thread"] {
        let open = &r[who]["open_etc_hostname"];
        assert_eq!(open["ok"], false, "{who}: {r}");
        assert_eq!(open["errno"], 13, "{who}: Landlock answers EACCES: {r}");
        let spawn = &r[who]["spawn_process"];
        assert_eq!(spawn["ok"], false, "{who}: {r}");
        assert_eq!(spawn["errno"], 1, "{who}: seccomp answers EPERM: {r}");
    }
    assert_eq!(r["main_thread"]["tcp_socket"]["ok"], false, "{r}");
    // Inside its roots it still works, so the refusals above are the seal, not breakage.
    assert_eq!(r["read_inside_root"]["ok"], true, "{r}");
    assert_eq!(r["write_inside_root"]["ok"], true, "{r}");
    assert_eq!(
        std::fs::read_to_string(write.join("self-test.txt")).unwrap(),
        "ok"
    );
}

#[test]
fn doctor_reports_the_sandbox_protections() {
    let d = tempfile::tempdir().unwrap();
    let out = xyn()
        .args(["doctor", "--json", "--data-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{r}");
    assert_eq!(r["ok"], true);
    let sandbox = &r["sections"]["sandbox"];
    assert_eq!(sandbox["ok"], true, "{r}");
    let checks = sandbox["detail"].as_array().unwrap();
    assert!(checks.len() >= 8);
    assert!(checks.iter().all(|c| c["ok"] == true), "{r}");
    let landlock = checks.iter().find(|c| c["check"] == "landlock").unwrap();
    assert!(
        landlock["detail"].as_str().unwrap().contains("ABI"),
        "{landlock}"
    );
}

#[test]
fn the_examples_install_and_run_in_each_runtime() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let port = http_server();
    for (dir, name) in [
        ("wasm-notes", "demo.wasm_notes"),
        ("component-notes", "demo.component_notes"),
        ("lua-notes", "demo.lua_notes"),
        ("js-notes", "demo.js_notes"),
    ] {
        install(&example(dir, port, d.path()), &data);
        let url = format!("http://127.0.0.1:{port}/health");
        let (code, out) = run(name, json!({"url": url}), &data);
        assert_eq!(code, 0, "{name}: {out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        if name == "demo.wasm_notes" {
            assert!(
                v["fs"]["ok"].as_str().unwrap().contains("wasm action"),
                "{v}"
            );
            assert_eq!(v["db"]["ok"][0]["visits"], 1, "{v}");
            assert_eq!(v["http"]["ok"]["status"], 200, "{v}");
        } else if name == "demo.component_notes" {
            assert_eq!(v["runtime"], "component", "{v}");
            assert!(
                v["fs"].as_str().unwrap().contains("component action"),
                "{v}"
            );
            assert_eq!(v["db"][0]["visits"], 1, "{v}");
            assert_eq!(v["http"]["status"], 200, "{v}");
        } else {
            assert!(
                v["note"].as_str().unwrap().contains("action's data dir"),
                "{v}"
            );
            assert_eq!(v["visits"], 1, "{v}");
            assert_eq!(v["http_status"], 200, "{v}");
        }
        let seen = data.join("action-data").join(name).join("outbox/seen.txt");
        assert!(
            std::fs::read_to_string(&seen)
                .unwrap()
                .starts_with("seen by"),
            "{}",
            seen.display()
        );
        // The database is the action's own and persists between runs.
        let (_, out) = run(name, json!({"url": url}), &data);
        let v: Value = serde_json::from_str(&out).unwrap();
        let visits = if name == "demo.wasm_notes" {
            &v["db"]["ok"][0]["visits"]
        } else if name == "demo.component_notes" {
            &v["db"][0]["visits"]
        } else {
            &v["visits"]
        };
        assert_eq!(*visits, 2, "{v}");
    }
    let list = xyn()
        .args(["action", "list", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let l: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(l.as_array().unwrap().len(), 4);
    // Input is checked against the package's input schema before anything runs.
    let (code, out) = run("demo.lua_notes", json!({"nope": 1}), &data);
    assert_eq!((code, out.as_str()), (1, "action.input_invalid"));
}

#[test]
fn action_run_prints_the_stable_code_and_exits_1() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let pkgs = d.path().join("pkgs");
    let spin = package(
        &pkgs,
        "t.spin",
        "lua",
        "main.lua",
        "function handle() while true do end end\n",
        "[limits]\nfuel = 1000000\n",
    );
    let slow = package(
        &pkgs,
        "t.slow",
        "js",
        "main.js",
        "export function handle() { for (;;) {} }\n",
        "[limits]\nfuel = 100000000000000\ntimeout_ms = 300\n",
    );
    let deny = package(
        &pkgs,
        "t.deny",
        "lua",
        "main.lua",
        "function handle() return {x = xyn.fs.read('../../etc/passwd')} end\n",
        "[capabilities]\nfs_read = [\"in\"]\n",
    );
    let trap = package(
        &pkgs,
        "t.trap",
        "wasm",
        "main.wat",
        "(module (memory (export \"memory\") 1) (func (export \"alloc\") (param i32) (result i32) (i32.const 0)) (func (export \"handle\") (param i32 i32) (result i64) unreachable))",
        "",
    );
    let big = package(
        &pkgs,
        "t.big",
        "js",
        "main.js",
        "export function handle() { return {s: 'x'.repeat(4096)}; }\n",
        "[limits]\nmax_output_bytes = 100\n",
    );
    let mem = package(
        &pkgs,
        "t.mem",
        "lua",
        "main.lua",
        "function handle() local t = {} for i = 1, 1e9 do t[i] = string.rep('y', 4096) .. i end end\n",
        "[limits]\nmemory_mb = 8\n",
    );
    for p in [&spin, &slow, &deny, &trap, &big, &mem] {
        install(p, &data);
    }
    assert_eq!(
        run("t.spin", json!({}), &data),
        (1, "budget.fuel_exceeded".into())
    );
    let t = Instant::now();
    assert_eq!(
        run("t.slow", json!({}), &data),
        (1, "budget.timeout".into())
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(
        run("t.deny", json!({}), &data),
        (1, "capability.denied".into())
    );
    assert_eq!(run("t.trap", json!({}), &data), (1, "action.failed".into()));
    assert_eq!(
        run("t.big", json!({}), &data),
        (1, "budget.output_exceeded".into())
    );
    assert_eq!(
        run("t.mem", json!({}), &data),
        (1, "budget.memory_exceeded".into())
    );
    assert_eq!(
        run("t.nothing", json!({}), &data),
        (1, "action.unknown".into())
    );
    // Budget failures leave an incident bundle.
    let incidents: Vec<_> = std::fs::read_dir(data.join("incidents"))
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert!(incidents.len() >= 4, "{incidents:?}");
    let one: Value = serde_json::from_slice(&std::fs::read(incidents[0].path()).unwrap()).unwrap();
    assert!(
        one["report"]["code"]
            .as_str()
            .unwrap()
            .starts_with("budget."),
        "{one}"
    );
    assert!(
        one["report"]["limits"].is_object() && one["module"].is_object(),
        "{one}"
    );
}

#[test]
fn a_worker_stuck_in_a_c_function_is_stopped_by_the_watchdog() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    // Lua's pattern matcher runs no hooks; this match takes longer than anyone will wait.
    let hang = package(
        d.path(),
        "t.hang",
        "lua",
        "main.lua",
        "function handle()\n  local s = string.rep('a', 200000)\n  return {m = string.find(s, '(.-)(.-)(.-)(.-)(.-)(.-)(.-)b')}\nend\n",
        "[limits]\ntimeout_ms = 300\n",
    );
    install(&hang, &data);
    let t = Instant::now();
    assert_eq!(
        run("t.hang", json!({}), &data),
        (1, "budget.timeout".into())
    );
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
}

struct Node {
    child: Child,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path, data: &Path, blueprints: &Path) -> Node {
    start_node_with(dir, data, blueprints, &[], &[]).0
}

/// Starts a node with extra arguments and environment; also returns what it wrote to
/// stderr before it listened.
fn start_node_with(
    dir: &Path,
    data: &Path,
    blueprints: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (Node, Vec<String>) {
    let mut cmd = xyn();
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--data-dir",
        ])
        .arg(data)
        .arg("--blueprints")
        .arg(blueprints)
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut before = Vec::new();
    let port = loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "the node exited before listening: {before:?}"
        );
        before.push(line.trim_end().to_string());
        if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u16>()
                .unwrap();
        }
    };
    std::thread::spawn(move || for _ in err.lines() {});
    (Node { child, port }, before)
}

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, rest) = resp.split_once("\r\n\r\n").unwrap();
    let text = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn wait_run(port: u16, run_id: &str) -> Value {
    let t = Instant::now();
    loop {
        let r = http(port, "GET", &format!("/api/v1/runs/{run_id}"), None);
        if ["completed", "failed", "cancelled"].contains(&r["status"].as_str().unwrap_or("")) {
            return r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "run did not finish: {r}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_run(port: u16, blueprint: &str, inputs: Value) -> String {
    let r = http(
        port,
        "POST",
        "/api/v1/runs",
        Some(&json!({"blueprint_ref": blueprint, "inputs": inputs})),
    );
    r["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string()
}

fn step_error(port: u16, run_id: &str, step: &str) -> Value {
    let steps = http(port, "GET", &format!("/api/v1/runs/{run_id}/steps"), None);
    let s = steps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == step)
        .unwrap()
        .clone();
    s["error"].clone()
}

#[test]
fn a_node_runs_sandboxed_steps_and_keeps_serving_when_one_crashes() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let port = http_server();
    for dir in ["wasm-notes", "lua-notes", "js-notes"] {
        install(&example(dir, port, d.path()), &data);
    }
    let pkgs = d.path().join("pkgs");
    install(
        &package(
            &pkgs,
            "t.trap",
            "wasm",
            "main.wat",
            "(module (memory (export \"memory\") 1) (func (export \"alloc\") (param i32) (result i32) (i32.const 0)) (func (export \"handle\") (param i32 i32) (result i64) unreachable))",
            "",
        ),
        &data,
    );
    install(
        &package(
            &pkgs,
            "t.hang",
            "lua",
            "main.lua",
            "function handle() return {m = string.find(string.rep('a', 200000), '(.-)(.-)(.-)(.-)(.-)(.-)(.-)b')} end\n",
            "[limits]\ntimeout_ms = 200\n",
        ),
        &data,
    );
    install(
        &package(
            &pkgs,
            "t.peek",
            "js",
            "main.js",
            "export function handle() { let r; try { r = xyn.fs.read('/etc/passwd'); } catch (e) { r = e.message; } return {r, home: xyn.env.get('HOME') ?? null}; }\n",
            "[capabilities]\nfs_read = [\"in\"]\n",
        ),
        &data,
    );
    let bps = d.path().join("blueprints");
    std::fs::create_dir_all(&bps).unwrap();
    let example_bp = std::fs::read_to_string(repo().join("examples/sandboxed-notes.yaml")).unwrap();
    std::fs::write(bps.join("notes.yaml"), example_bp).unwrap();
    for (id, action) in [
        ("bp.t.trap", "t.trap"),
        ("bp.t.hang", "t.hang"),
        ("bp.t.peek", "t.peek"),
    ] {
        std::fs::write(
            bps.join(format!("{id}.yaml")),
            format!("id: {id}\nname: {id}\ntrigger:\n  event_type: \"test.{action}\"\nplan:\n  - kind: action_task\n    id: only\n    action: {action}\n    with: {{}}\n"),
        )
        .unwrap();
    }
    let node = start_node(d.path(), &data, &bps);
    let p = node.port;

    let hang = start_run(p, "bp.t.hang", json!({}));
    let r = wait_run(p, &hang);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(step_error(p, &hang, "only")["code"], "budget.timeout");
    let arts = http(p, "GET", &format!("/api/v1/artifacts?run_id={hang}"), None);
    assert!(
        arts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "incident"),
        "{arts}"
    );

    let trap = start_run(p, "bp.t.trap", json!({}));
    assert_eq!(wait_run(p, &trap)["status"], "failed");
    assert_eq!(step_error(p, &trap, "only")["code"], "action.failed");

    assert_eq!(
        http(p, "GET", "/api/v1/health", None)["status"],
        "ok",
        "the node keeps serving"
    );

    let notes = start_run(
        p,
        "bp.demo.sandboxed_notes",
        json!({"health_url": format!("http://127.0.0.1:{port}/health")}),
    );
    let r = wait_run(p, &notes);
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(
        r["outputs"]["runtimes"],
        json!(["wasm", "lua", "js"]),
        "{r}"
    );

    let peek = start_run(p, "bp.t.peek", json!({}));
    let r = wait_run(p, &peek);
    assert_eq!(r["status"], "completed", "{r}");
    let ev = http(
        p,
        "GET",
        &format!("/api/v1/events?run_id={peek}&event_name=xyn.cap.denied"),
        None,
    );
    let items = ev["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{ev}");
    let caps: Vec<&str> = items
        .iter()
        .map(|e| e["data"]["capability"].as_str().unwrap())
        .collect();
    assert!(
        caps.contains(&"fs.read") && caps.contains(&"env.get"),
        "{caps:?}"
    );
    assert!(items.iter().all(|e| e["data"]["action"] == "t.peek"));
    assert!(items.iter().any(|e| e["data"]["target"] == "/etc/passwd"));
}

/// `xyn action run` with extra arguments and environment: (exit code, stdout, stderr).
fn run_with(
    name: &str,
    input: Value,
    data: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = xyn();
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .args([
            "action",
            "run",
            name,
            "--input",
            &input.to_string(),
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn each_actions_worker_is_sealed_to_that_actions_roots_only() {
    use xyn_sandbox::install::Layout;
    let d = tempfile::tempdir().unwrap();
    let layout = Layout::new(&d.path().join("data"));
    layout.ensure().unwrap();
    for name in ["t.a", "t.b"] {
        layout.prepare_action(name).unwrap();
        std::fs::create_dir_all(layout.package(name)).unwrap();
        std::fs::write(layout.package(name).join("main.lua"), "-- code").unwrap();
        std::fs::write(layout.data(name).join("file.txt"), name).unwrap();
        std::fs::write(layout.db(name), "db").unwrap();
        std::fs::write(layout.action_cache(name).join("x.cwasm"), "cache").unwrap();
    }
    // The worker for t.a, exactly as the pool starts it, trying to read both actions'
    // files from native code after sealing.
    let roots = layout.roots("t.a", &layout.package("t.a"));
    let mut args = vec!["sandbox-worker".to_string(), "--self-test-seal".into()];
    for r in &roots.read {
        args.extend(["--read".into(), r.display().to_string()]);
    }
    for w in &roots.write {
        args.extend(["--write".into(), w.display().to_string()]);
    }
    let probes = |name: &str| {
        vec![
            layout.package(name).join("main.lua"),
            layout.data(name).join("file.txt"),
            layout.db(name),
            layout.action_cache(name).join("x.cwasm"),
        ]
    };
    for p in probes("t.a").into_iter().chain(probes("t.b")) {
        args.extend(["--probe".into(), p.display().to_string()]);
    }
    args.extend(["--probe".into(), layout.data_root().display().to_string()]);
    let out = xyn().args(&args).env_clear().output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let r: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(r["seal"]["landlock"], "full", "{r}");
    let probes = r["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 9, "{r}");
    for p in probes {
        let path = p["path"].as_str().unwrap();
        let own = path.contains("/t.a");
        if own {
            assert_eq!(p["result"]["ok"], true, "its own files stay readable: {p}");
        } else {
            assert_eq!(p["result"]["ok"], false, "another action's files: {p}");
            assert_eq!(p["result"]["errno"], 13, "Landlock answers EACCES: {p}");
        }
    }
}

#[test]
fn without_landlock_untrusted_actions_are_refused_unless_allowed_weak() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let pkg = package(
        &d.path().join("pkgs"),
        "t.hello",
        "lua",
        "main.lua",
        "function handle() return {hello = 'world'} end\n",
        "",
    );
    install(&pkg, &data);
    let no_landlock = [("XYN_TEST_NO_LANDLOCK", "1")];
    // The control: this machine has Landlock, so the action runs sealed.
    assert_eq!(
        run("t.hello", json!({}), &data),
        (0, r#"{"hello":"world"}"#.to_string())
    );
    // As on a kernel without Landlock: refused with sandbox.weak …
    let (code, out, err) = run_with("t.hello", json!({}), &data, &[], &no_landlock);
    assert_eq!((code, out.as_str()), (1, "sandbox.weak"), "{err}");
    assert!(err.contains("no Landlock"), "{err}");
    // … and run with --allow-weak-sandbox.
    let (code, out, err) = run_with(
        "t.hello",
        json!({}),
        &data,
        &["--allow-weak-sandbox"],
        &no_landlock,
    );
    assert_eq!((code, out.as_str()), (0, r#"{"hello":"world"}"#), "{err}");

    // A node says so at start, and refuses the action in a step.
    let bps = d.path().join("blueprints");
    std::fs::create_dir_all(&bps).unwrap();
    std::fs::write(
        bps.join("hello.yaml"),
        "id: bp.t.hello\nname: hello\ntrigger:\n  event_type: \"test.hello\"\nplan:\n  - kind: action_task\n    id: only\n    action: t.hello\n    with: {}\n",
    )
    .unwrap();
    let (node, said) = start_node_with(d.path(), &data, &bps, &[], &no_landlock);
    let warning = said
        .iter()
        .find(|l| l.contains("WARNING"))
        .unwrap_or_else(|| panic!("no warning at start: {said:?}"));
    assert!(
        warning.contains("no Landlock") && warning.contains("untrusted actions are refused"),
        "{warning}"
    );
    let run_id = start_run(node.port, "bp.t.hello", json!({}));
    assert_eq!(wait_run(node.port, &run_id)["status"], "failed");
    assert_eq!(
        step_error(node.port, &run_id, "only")["code"],
        "sandbox.weak"
    );
    drop(node);

    let (node, said) = start_node_with(
        d.path(),
        &data,
        &bps,
        &["--allow-weak-sandbox"],
        &no_landlock,
    );
    let warning = said
        .iter()
        .find(|l| l.contains("WARNING"))
        .unwrap_or_else(|| panic!("no warning at start: {said:?}"));
    assert!(
        warning.contains("not fully sealed") && warning.contains("--allow-weak-sandbox"),
        "{warning}"
    );
    let run_id = start_run(node.port, "bp.t.hello", json!({}));
    let r = wait_run(node.port, &run_id);
    assert_eq!(r["status"], "completed", "{r}");
}

#[test]
fn deployment_limits_come_from_the_sandbox_section_of_the_config() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let pkgs = d.path().join("pkgs");
    // No fuel in its manifest: the deployment's default applies.
    let spin = package(
        &pkgs,
        "t.spin",
        "lua",
        "main.lua",
        "function handle() while true do end end\n",
        "[limits]\ntimeout_ms = 20000\n",
    );
    // Asks for more fuel than the deployment allows.
    let greedy = package(
        &pkgs,
        "t.greedy",
        "lua",
        "main.lua",
        "function handle() return {} end\n",
        "[limits]\nfuel = 9000000\n",
    );
    install(&spin, &data);
    install(&greedy, &data);
    let config = d.path().join("xyn.toml");
    std::fs::write(
        &config,
        "[sandbox]\npool_size = 3\n[sandbox.defaults]\nfuel = 1000000\n[sandbox.maximum]\nfuel = 5000000\n",
    )
    .unwrap();
    let cfg = ["--config", config.to_str().unwrap()];
    let (code, out, err) = run_with("t.spin", json!({}), &data, &cfg, &[]);
    assert_eq!((code, out.as_str()), (1, "budget.fuel_exceeded"), "{err}");
    let incident = err
        .lines()
        .find_map(|l| l.strip_prefix("incident bundle: "))
        .unwrap();
    let inc: Value = serde_json::from_slice(&std::fs::read(incident).unwrap()).unwrap();
    assert_eq!(inc["report"]["limits"]["fuel"], 1_000_000, "{inc}");
    let (code, out, err) = run_with("t.greedy", json!({}), &data, &cfg, &[]);
    assert_eq!((code, out.as_str()), (1, "manifest.invalid"), "{err}");
    assert!(
        err.contains("limits.fuel = 9000000") && err.contains("sandbox.maximum.fuel = 5000000"),
        "{err}"
    );
    // Without the config the built-in maximum allows it.
    assert_eq!(run("t.greedy", json!({}), &data).0, 0);

    // A node does not register the greedy action, and says why.
    let bps = d.path().join("blueprints");
    std::fs::create_dir_all(&bps).unwrap();
    let (node, said) = start_node_with(d.path(), &data, &bps, &cfg, &[]);
    assert!(
        said.iter()
            .any(|l| l.contains("t.greedy not registered") && l.contains("sandbox.maximum.fuel")),
        "{said:?}"
    );
    drop(node);

    // Bad values are refused at start, naming the key.
    std::fs::write(&config, "[sandbox.defaults]\ntimeout_ms = 0\n").unwrap();
    let (code, _, err) = run_with("t.spin", json!({}), &data, &cfg, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("sandbox.defaults.timeout_ms"), "{err}");
    let out = xyn()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(cfg)
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sandbox.defaults.timeout_ms"), "{err}");
    std::fs::write(&config, "[sandbox]\npool_sise = 2\n").unwrap();
    let (code, _, err) = run_with("t.spin", json!({}), &data, &cfg, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("pool_sise"), "{err}");
}

#[test]
fn the_pool_keeps_one_worker_per_action_and_at_most_size_busy() {
    use xyn_sandbox::install::Layout;
    use xyn_sandbox::pool::{PoolConfig, WorkerPool};
    use xyn_sandbox::worker::InvokeMsg;
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let pkgs = d.path().join("pkgs");
    for name in ["t.one", "t.two"] {
        install(
            &package(
                &pkgs,
                name,
                "lua",
                "main.lua",
                "function handle(input) if input.spin then while true do end end return {} end\n",
                "[limits]\ntimeout_ms = 400\nfuel = 100000000000000\n",
            ),
            &data,
        );
    }
    let layout = Layout::new(&data);
    let pool_of = |size: usize| {
        WorkerPool::new(PoolConfig {
            program: PathBuf::from(env!("CARGO_BIN_EXE_xyn")),
            prefix: vec!["sandbox-worker".into()],
            worker: layout.worker_args(false, Default::default()),
            size,
            max_idle: 0,
        })
    };
    let msg = |name: &str, input: Value| InvokeMsg {
        id: 0,
        package: layout.package(name),
        data_dir: Some(layout.data(name)),
        db_path: None,
        env: Default::default(),
        secrets: Default::default(),
        input,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = pool_of(1);
        for name in ["t.one", "t.two", "t.one"] {
            let roots = layout.roots(name, &layout.package(name));
            let r = pool
                .invoke(&roots, msg(name, json!({})), Duration::from_secs(10))
                .await
                .unwrap();
            assert!(r.result.is_ok(), "{:?}", r.result);
        }
        // One idle worker per action, reused for the same action only.
        assert_eq!(pool.idle_keys(), vec!["t.two", "t.one"]);
        // Size 1: two spinning invocations (400 ms each) run one after the other.
        let (r1, r2) = (
            layout.roots("t.one", &layout.package("t.one")),
            layout.roots("t.two", &layout.package("t.two")),
        );
        let t = Instant::now();
        let (a, b) = tokio::join!(
            pool.invoke(
                &r1,
                msg("t.one", json!({"spin": true})),
                Duration::from_secs(10)
            ),
            pool.invoke(
                &r2,
                msg("t.two", json!({"spin": true})),
                Duration::from_secs(10)
            ),
        );
        let took = t.elapsed();
        for r in [a.unwrap(), b.unwrap()] {
            assert_eq!(r.result.unwrap_err().code, "budget.timeout");
        }
        assert!(
            took >= Duration::from_millis(790),
            "size 1 ran both at once: {took:?}"
        );
    });
}
