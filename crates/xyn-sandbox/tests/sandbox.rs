//! Budgets, capabilities and isolation, for each runtime (wasm, Lua, JS). These run the
//! runtimes and the capability layer in-process — the same code the sealed worker runs;
//! the worker, the seal and the CLI are tested end to end in `crates/xyn/tests`.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

mod support;

use support::{ALL, Rt, wat};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xyn_sandbox::caps::http::DirectHttp;
use xyn_sandbox::{InvokeReport, InvokeRequest, Sandbox, SandboxConfig};

/// A wasm handle that returns the constant JSON `s`.
fn wat_const(s: &str) -> String {
    let esc = s.replace('\\', "\\\\").replace('"', "\\\"");
    wat(&format!(
        r#"(data (i32.const 1024) "{esc}")
  (func (export "handle") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const {})))"#,
        s.len()
    ))
}

struct Env {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
    http: Arc<DirectHttp>,
    env: BTreeMap<String, String>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new(SandboxConfig {
            limits: Default::default(),
            cache_dir: Some(dir.path().join("cache")),
        });
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        Env {
            dir,
            sandbox,
            http: Arc::new(DirectHttp::new().unwrap()),
            env: BTreeMap::from([("XYN_TEST_ALLOWED".to_string(), "yes".to_string())]),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes a package and returns its directory.
    fn package(&self, rt: Rt, tag: &str, code: &str, extra: &str) -> PathBuf {
        let name = format!("t.{}_{tag}", rt.name());
        let dir = self.dir.path().join("pkgs").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(rt.entry()), code).unwrap();
        std::fs::write(
            dir.join("xyn-action.toml"),
            format!(
                "name = \"{name}\"\nruntime = \"{}\"\nentry = \"{}\"\n{extra}\n",
                rt.name(),
                rt.entry()
            ),
        )
        .unwrap();
        dir
    }

    fn invoke(&self, pkg: &Path, input: Value) -> InvokeReport {
        let p = self.sandbox.package(pkg).unwrap();
        self.sandbox.invoke(
            &p,
            InvokeRequest {
                input,
                data_dir: Some(self.data()),
                db_path: Some(self.dir.path().join("db").join("t.sqlite")),
                env: self.env.clone(),
                secrets: BTreeMap::new(),
                http: self.http.clone(),
                limits: None,
            },
        )
    }
}

fn code_of(r: &InvokeReport) -> &str {
    match &r.result {
        Ok(_) => "ok",
        Err(e) => &e.code,
    }
}

fn ok(r: &InvokeReport) -> Value {
    match &r.result {
        Ok(v) => v.clone(),
        Err(e) => panic!("{} failed: {e}", r.action),
    }
}

fn infinite_loop(rt: Rt) -> String {
    match rt {
        Rt::Wasm => wat(r#"(func (export "handle") (param i32 i32) (result i64)
    (loop $l (br $l)) (i64.const 0))"#),
        Rt::Lua => {
            "function handle(input)\n  local n = 0\n  while true do n = n + 1 end\nend\n".into()
        }
        Rt::Js => "export function handle(input) { let n = 0; for (;;) { n++; } }\n".into(),
    }
}

#[test]
fn an_infinite_loop_is_stopped_by_the_cpu_budget() {
    let env = Env::new();
    for rt in ALL {
        let pkg = env.package(
            rt,
            "spin",
            &infinite_loop(rt),
            "[limits]\nfuel = 2000000\ntimeout_ms = 20000\n",
        );
        let t = Instant::now();
        let r = env.invoke(&pkg, json!({}));
        let took = t.elapsed();
        assert_eq!(
            code_of(&r),
            "budget.fuel_exceeded",
            "{rt:?}: {:?}",
            r.result
        );
        assert!(
            took < Duration::from_secs(3),
            "{rt:?}: stopped only after {took:?}"
        );
        assert!(
            r.usage.fuel >= 1_000_000,
            "{rt:?}: used {} fuel",
            r.usage.fuel
        );
        let inc = r.incident.as_ref().expect("an incident bundle");
        assert_eq!(inc["report"]["code"], "budget.fuel_exceeded");
        assert_eq!(inc["report"]["limits"]["fuel"], 2_000_000);
        assert_eq!(inc["module"]["sha256"].as_str().map(str::len), Some(64));
        assert_eq!(inc["input"], json!({}));
    }
}

#[test]
fn an_infinite_loop_is_stopped_by_the_wall_clock() {
    let env = Env::new();
    for rt in ALL {
        let pkg = env.package(
            rt,
            "spin",
            &infinite_loop(rt),
            "[limits]\nfuel = 100000000000000\ntimeout_ms = 300\n",
        );
        let t = Instant::now();
        let r = env.invoke(&pkg, json!({}));
        let took = t.elapsed();
        assert_eq!(code_of(&r), "budget.timeout", "{rt:?}: {:?}", r.result);
        assert!(
            took >= Duration::from_millis(290),
            "{rt:?}: stopped early, {took:?}"
        );
        assert!(
            took < Duration::from_millis(2000),
            "{rt:?}: stopped only after {took:?}"
        );
        assert!(r.incident.is_some());
    }
}

#[test]
fn catastrophic_regex_backtracking_is_stopped() {
    let env = Env::new();
    let pkg = env.package(
        Rt::Js,
        "regex",
        "export function handle() { return {m: /^(a+)+$/.test('a'.repeat(40) + 'b')}; }\n",
        "[limits]\nfuel = 100000000000000\ntimeout_ms = 300\n",
    );
    let t = Instant::now();
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(code_of(&r), "budget.timeout", "{:?}", r.result);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn allocating_past_the_memory_limit_traps() {
    let env = Env::new();
    for rt in ALL {
        let code = match rt {
            Rt::Wasm => wat(r#"(func (export "handle") (param i32 i32) (result i64)
    (loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i64.const 0))"#),
            Rt::Lua => "function handle(input)\n  local t = {}\n  for i = 1, 100000000 do t[i] = string.rep('x', 1024) .. i end\n  return {n = #t}\nend\n".into(),
            Rt::Js => "export function handle() { const a = []; for (let i = 0; ; i++) a.push('x'.repeat(1024) + i); }\n".into(),
        };
        let pkg = env.package(
            rt,
            "mem",
            &code,
            "[limits]\nmemory_mb = 16\nfuel = 100000000000\ntimeout_ms = 20000\n",
        );
        let r = env.invoke(&pkg, json!({}));
        assert_eq!(
            code_of(&r),
            "budget.memory_exceeded",
            "{rt:?}: {:?}",
            r.result
        );
        assert!(r.incident.is_some());
    }
}

#[test]
fn deep_recursion_traps_on_the_stack_limit() {
    let env = Env::new();
    for rt in ALL {
        let code = match rt {
            Rt::Wasm => wat(r#"(func $r (param i32) (result i32) (i32.add (i32.const 1) (call $r (local.get 0))))
  (func (export "handle") (param i32 i32) (result i64) (i64.extend_i32_u (call $r (i32.const 0))))"#),
            Rt::Lua => "local function f(n) return 1 + f(n + 1) end\nfunction handle(input) return {n = f(0)} end\n".into(),
            Rt::Js => "function f(n) { return 1 + f(n + 1); }\nexport function handle() { return {n: f(0)}; }\n".into(),
        };
        let pkg = env.package(
            rt,
            "deep",
            &code,
            "[limits]\nfuel = 100000000000\ntimeout_ms = 20000\n",
        );
        let r = env.invoke(&pkg, json!({}));
        assert_eq!(
            code_of(&r),
            "budget.stack_exceeded",
            "{rt:?}: {:?}",
            r.result
        );
    }
}

#[test]
fn output_beyond_the_cap_is_refused() {
    let env = Env::new();
    let big = format!("{{\"s\":\"{}\"}}", "x".repeat(5000));
    for rt in ALL {
        let code = match rt {
            Rt::Wasm => wat_const(&big),
            Rt::Lua => "function handle() return {s = string.rep('x', 5000)} end\n".into(),
            Rt::Js => "export function handle() { return {s: 'x'.repeat(5000)}; }\n".into(),
        };
        let pkg = env.package(rt, "big", &code, "[limits]\nmax_output_bytes = 1000\n");
        let r = env.invoke(&pkg, json!({}));
        assert_eq!(
            code_of(&r),
            "budget.output_exceeded",
            "{rt:?}: {:?}",
            r.result
        );
        let small = env.package(rt, "small", &code, "[limits]\nmax_output_bytes = 10000\n");
        assert_eq!(
            ok(&env.invoke(&small, json!({})))["s"]
                .as_str()
                .map(str::len),
            Some(5000)
        );
    }
}

/// A guest that calls capability `cap` with the input as its arguments and returns
/// `{"ok": result}` or `{"error": {"message": …}}`. Lua and JS use the pinned host modules.
fn probe(rt: Rt, cap: &str) -> String {
    match rt {
        Rt::Wasm => {
            let n = cap.len();
            wat(&format!(
                r#"(data (i32.const 1024) "{cap}")
  (func (export "handle") (param i32 i32) (result i64)
    (call $call (i32.const 1024) (i32.const {n}) (local.get 0) (local.get 1)))"#
            ))
        }
        Rt::Lua | Rt::Js => {
            let lua = rt == Rt::Lua;
            let expr = match cap {
                "fs.read" => "xyn.fs.read(input.path)",
                "fs.write" => "xyn.fs.write(input.path, input.data)",
                "http.request" => "xyn.http.request(input)",
                "env.get" => "xyn.env.get(input.name)",
                "db.query" => "xyn.db.query(input.sql, input.params)",
                "db.exec" => "xyn.db.exec(input.sql, input.params)",
                other => panic!("no probe for {other}"),
            };
            if lua {
                format!(
                    "function handle(input)\n  local ok, v = pcall(function() return {expr} end)\n  if ok then return {{ok = v}} else return {{error = {{message = tostring(v)}}}} end\nend\n"
                )
            } else {
                format!(
                    "export function handle(input) {{\n  try {{ return {{ok: {expr}}}; }} catch (e) {{ return {{error: {{message: String(e.message)}}}}; }}\n}}\n"
                )
            }
        }
    }
}

fn denied(out: &Value) -> bool {
    out["error"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("capability denied:"))
}

fn fs_fixture(env: &Env) {
    let d = env.data();
    std::fs::create_dir_all(d.join("inbox")).unwrap();
    std::fs::create_dir_all(d.join("outbox")).unwrap();
    std::fs::write(d.join("inbox/a.txt"), "inside").unwrap();
    std::fs::write(d.join("secret.txt"), "not for the action").unwrap();
    std::fs::write(env.dir.path().join("outside.txt"), "outside").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.join("inbox/passwd")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", d.join("inbox/up")).unwrap();
    std::os::unix::fs::symlink("/etc", d.join("inbox/etc")).unwrap();
    std::fs::hard_link(env.dir.path().join("outside.txt"), d.join("inbox/hard.txt")).unwrap();
    std::os::unix::fs::symlink(d.join("inbox"), d.join("outbox/link")).unwrap();
}

const FS_CAPS: &str = "[capabilities]\nfs_read = [\"inbox\"]\nfs_write = [\"outbox\"]\n";

#[test]
fn file_reads_outside_the_roots_are_denied() {
    let env = Env::new();
    fs_fixture(&env);
    for rt in ALL {
        let pkg = env.package(rt, "read", &probe(rt, "fs.read"), FS_CAPS);
        let r = env.invoke(&pkg, json!({"path": "inbox/a.txt"}));
        assert_eq!(ok(&r)["ok"], "inside", "{rt:?}: the control read must work");
        for path in [
            "../../etc/passwd",
            "/etc/passwd",
            "inbox/../secret.txt",
            "inbox/passwd",
            "inbox/up",
            "inbox/etc/passwd",
            "inbox/hard.txt",
            "secret.txt",
        ] {
            let r = env.invoke(&pkg, json!({"path": path}));
            let out = ok(&r);
            assert!(denied(&out), "{rt:?}: reading {path} gave {out}");
            assert_eq!(r.denials.len(), 1, "{rt:?} {path}");
            assert_eq!(r.denials[0].capability, "fs.read");
            assert_eq!(r.denials[0].target, path);
            assert_eq!(r.counts.get("fs.read"), Some(&1));
        }
    }
}

#[test]
fn writes_outside_fs_write_are_denied() {
    let env = Env::new();
    fs_fixture(&env);
    for rt in ALL {
        let pkg = env.package(rt, "write", &probe(rt, "fs.write"), FS_CAPS);
        let r = env.invoke(&pkg, json!({"path": "outbox/new/r.txt", "data": rt.name()}));
        assert_eq!(ok(&r)["ok"], true, "{rt:?}");
        assert_eq!(
            std::fs::read_to_string(env.data().join("outbox/new/r.txt")).unwrap(),
            rt.name()
        );
        for path in [
            "inbox/a.txt",
            "secret.txt",
            "outbox/../inbox/a.txt",
            "/tmp/x.txt",
            "outbox/link/a.txt",
        ] {
            let r = env.invoke(&pkg, json!({"path": path, "data": "overwritten"}));
            assert!(
                denied(&ok(&r)),
                "{rt:?}: writing {path} gave {:?}",
                r.result
            );
            assert_eq!(r.denials[0].capability, "fs.write");
        }
        assert_eq!(
            std::fs::read_to_string(env.data().join("inbox/a.txt")).unwrap(),
            "inside"
        );
        assert_eq!(
            std::fs::read_to_string(env.data().join("secret.txt")).unwrap(),
            "not for the action"
        );
    }
}

#[test]
fn an_uncaught_denial_ends_with_capability_denied() {
    let env = Env::new();
    fs_fixture(&env);
    for rt in [Rt::Lua, Rt::Js] {
        let code = match rt {
            Rt::Lua => "function handle() return {s = xyn.fs.read('/etc/passwd')} end\n",
            _ => "export function handle() { return {s: xyn.fs.read('/etc/passwd')}; }\n",
        };
        let pkg = env.package(rt, "uncaught", code, FS_CAPS);
        let r = env.invoke(&pkg, json!({}));
        assert_eq!(code_of(&r), "capability.denied", "{rt:?}: {:?}", r.result);
        let msg = r.result.unwrap_err().message;
        assert!(msg.starts_with("capability denied:"), "{msg}");
    }
}

/// A small HTTP server on 127.0.0.1 for the allowlist and redirect cases.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(500) {
            let Ok(mut s) = stream else { continue };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let resp = match path.as_str() {
                "/ok" => "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello".to_string(),
                "/redirect-out" => format!(
                    "HTTP/1.1 302 Found\r\nlocation: http://localhost:{port}/ok\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                ),
                "/redirect-in" => "HTTP/1.1 302 Found\r\nlocation: /ok\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
                _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
            };
            let _ = s.write_all(resp.as_bytes());
        }
    });
    port
}

#[test]
fn http_outside_the_allowlist_is_denied_also_through_redirects() {
    let env = Env::new();
    let port = http_server();
    let caps = format!("[capabilities]\nhttp_hosts = [\"127.0.0.1:{port}\", \"example.com\"]\n");
    for rt in ALL {
        let pkg = env.package(rt, "http", &probe(rt, "http.request"), &caps);
        let r = env.invoke(
            &pkg,
            json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/ok")}),
        );
        let out = ok(&r);
        assert_eq!(out["ok"]["status"], 200, "{rt:?}: {out}");
        assert_eq!(out["ok"]["body"], "hello");

        let r = env.invoke(
            &pkg,
            json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/redirect-in")}),
        );
        assert_eq!(
            ok(&r)["ok"]["status"],
            200,
            "{rt:?}: a redirect inside the allowlist is followed"
        );

        for url in [
            format!("http://localhost:{port}/ok"),
            format!("http://127.0.0.1:{}/ok", port.wrapping_add(1)),
            "http://evil-example.com/".to_string(),
            "http://example.com.evil.net/".to_string(),
            "file:///etc/passwd".to_string(),
        ] {
            let r = env.invoke(&pkg, json!({"method": "GET", "url": url}));
            assert!(denied(&ok(&r)), "{rt:?}: {url} gave {:?}", r.result);
            assert_eq!(r.denials[0].capability, "http.request");
        }

        let r = env.invoke(
            &pkg,
            json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/redirect-out")}),
        );
        let out = ok(&r);
        assert!(
            denied(&out),
            "{rt:?}: a redirect to a host outside the allowlist: {out}"
        );
        assert_eq!(r.denials[0].target, format!("localhost:{port}"));
        assert!(
            r.denials[0].reason.starts_with("redirect"),
            "{:?}",
            r.denials[0]
        );
    }
}

#[test]
fn names_that_resolve_to_private_addresses_are_refused_unless_named() {
    use xyn_sandbox::caps::http::{HttpExecutor, HttpFailure, HttpPolicy, HttpRequest};
    let port = http_server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exec = HttpExecutor::default();
    let get = |hosts: Vec<String>, url: String| {
        rt.block_on(exec.execute(
            &HttpPolicy {
                action: "t.x".into(),
                hosts,
                secret_hosts: Default::default(),
            },
            HttpRequest {
                method: "GET".into(),
                url,
                headers: Default::default(),
                body: None,
                timeout_ms: Some(5000),
            },
            &BTreeMap::new(),
        ))
    };
    // `*.localhost` matches `api.localhost` by name, but the name resolves (if at all) to
    // loopback, which the rule does not name: refused after resolution, never connected.
    let suffix = get(
        vec![format!("*.localhost:{port}")],
        format!("http://api.localhost:{port}/ok"),
    );
    match suffix {
        Err(HttpFailure::Denied { reason, .. }) => {
            assert!(reason.contains("not allowed"), "{reason}")
        }
        Err(HttpFailure::Failed(m)) => assert!(
            m.contains("dns") || m.contains("resolve") || m.contains("error"),
            "{m}"
        ),
        Ok(r) => panic!("reached a loopback address through a suffix rule: {r:?}"),
    }
    // Naming `localhost` explicitly allows it.
    let named = get(
        vec![format!("localhost:{port}")],
        format!("http://localhost:{port}/ok"),
    )
    .unwrap();
    assert_eq!(named.status, 200);
}

#[test]
fn env_vars_outside_the_allowlist_read_as_nothing() {
    let env = Env::new();
    for rt in ALL {
        let pkg = env.package(
            rt,
            "env",
            &probe(rt, "env.get"),
            "[capabilities]\nenv = [\"XYN_TEST_ALLOWED\"]\n",
        );
        let r = env.invoke(&pkg, json!({"name": "XYN_TEST_ALLOWED"}));
        assert_eq!(ok(&r)["ok"], "yes", "{rt:?}");
        for name in ["HOME", "PATH", "XYN_SECRET_X"] {
            let r = env.invoke(&pkg, json!({"name": name}));
            let out = ok(&r);
            assert!(
                out.get("ok").is_none_or(Value::is_null),
                "{rt:?}: {name} gave {out}"
            );
            assert!(out.get("error").is_none(), "{rt:?}: {out}");
            assert_eq!(r.denials[0].capability, "env.get");
            assert_eq!(r.denials[0].target, name);
        }
    }
}

#[test]
fn sql_injection_through_parameters_is_impossible() {
    let env = Env::new();
    for rt in ALL {
        let caps = "[capabilities]\ndb = true\n";
        let exec = env.package(rt, "exec", &probe(rt, "db.exec"), caps);
        let query = env.package(rt, "query", &probe(rt, "db.query"), caps);
        let table = format!("users_{}", rt.name());
        let r = env.invoke(
            &exec,
            json!({"sql": format!("CREATE TABLE IF NOT EXISTS {table}(name TEXT)"), "params": []}),
        );
        assert!(ok(&r).get("ok").is_some(), "{rt:?}: {:?}", r.result);
        let evil = format!("x'); DROP TABLE {table}; --");
        let r = env.invoke(
            &exec,
            json!({"sql": format!("INSERT INTO {table}(name) VALUES (?1)"), "params": [evil]}),
        );
        assert_eq!(ok(&r)["ok"]["changes"], 1, "{rt:?}");
        let r = env.invoke(&query, json!({"sql": format!("SELECT name FROM {table} WHERE name = ?1"), "params": ["' OR '1'='1"]}));
        assert_eq!(
            ok(&r)["ok"],
            json!([]),
            "{rt:?}: the quote trick matched rows"
        );
        let r = env.invoke(
            &query,
            json!({"sql": format!("SELECT name FROM {table}"), "params": []}),
        );
        assert_eq!(
            ok(&r)["ok"],
            json!([{"name": evil}]),
            "{rt:?}: stored literally, table intact"
        );
        // One statement per call: a second statement is never run.
        let r = env.invoke(
            &exec,
            json!({"sql": format!("DELETE FROM {table}; DROP TABLE {table}"), "params": []}),
        );
        assert!(ok(&r).get("error").is_some(), "{rt:?}");
        let r = env.invoke(
            &query,
            json!({"sql": format!("SELECT count(*) AS n FROM {table}"), "params": []}),
        );
        assert_eq!(ok(&r)["ok"], json!([{"n": 1}]), "{rt:?}");
        for sql in [
            "ATTACH DATABASE '/tmp/xyn-attach.db' AS other",
            "PRAGMA writable_schema = 1",
            "PRAGMA journal_mode",
            "SELECT load_extension('/tmp/evil.so')",
        ] {
            let r = env.invoke(&exec, json!({"sql": sql, "params": []}));
            assert!(denied(&ok(&r)), "{rt:?}: {sql} gave {:?}", r.result);
        }
        let r = env.invoke(
            &exec,
            json!({"sql": "VACUUM INTO '/tmp/xyn-vacuum-copy.db'", "params": []}),
        );
        assert!(ok(&r).get("error").is_some(), "{rt:?}: VACUUM INTO ran");
        assert!(!Path::new("/tmp/xyn-vacuum-copy.db").exists());
    }
}

#[test]
fn a_guest_that_crashes_its_runtime_fails_only_its_invocation() {
    let env = Env::new();
    for rt in ALL {
        let code = match rt {
            Rt::Wasm => wat(r#"(func (export "handle") (param i32 i32) (result i64) unreachable)"#),
            // A C-level error inside the Lua library (sort with an inconsistent comparator).
            Rt::Lua => "function handle()\n  local t = {}\n  for i = 1, 100 do t[i] = i end\n  table.sort(t, function(a, b) return true end)\n  return {}\nend\n".into(),
            Rt::Js => "export function handle() { return null.x; }\n".into(),
        };
        let pkg = env.package(rt, "crash", &code, "");
        let r = env.invoke(&pkg, json!({}));
        assert_eq!(code_of(&r), "action.failed", "{rt:?}: {:?}", r.result);
        assert!(r.incident.is_none(), "no budget was exceeded");
        let fine = env.package(
            rt,
            "fine",
            &match rt {
                Rt::Wasm => wat_const("{\"fine\":true}"),
                Rt::Lua => "function handle() return {fine = true} end\n".into(),
                Rt::Js => "export function handle() { return {fine: true}; }\n".into(),
            },
            "",
        );
        assert_eq!(
            ok(&env.invoke(&fine, json!({})))["fine"],
            true,
            "{rt:?}: the next invocation runs"
        );
    }
}

#[test]
fn a_reused_wasm_slot_never_shows_the_previous_memory() {
    let env = Env::new();
    // Reads the byte at 40000, then writes 0x7f there; answers what it read.
    let code = wat(r#"(data (i32.const 1024) "{\"seen\":0}")
  (data (i32.const 1040) "{\"seen\":1}")
  (func (export "handle") (param i32 i32) (result i64)
    (local $seen i32)
    (local.set $seen (i32.load8_u (i32.const 40000)))
    (i32.store8 (i32.const 40000) (i32.const 127))
    (i64.or
      (i64.shl (i64.extend_i32_u (select (i32.const 1040) (i32.const 1024) (local.get $seen))) (i64.const 32))
      (i64.const 10)))"#);
    let pkg = env.package(Rt::Wasm, "reuse", &code, "");
    for _ in 0..5 {
        assert_eq!(ok(&env.invoke(&pkg, json!({}))), json!({"seen": 0}));
    }
}

#[test]
fn lua_and_js_offer_only_the_xyn_modules() {
    let env = Env::new();
    let lua = env.package(
        Rt::Lua,
        "globals",
        "function handle()\n  return {io = type(io), os = type(os), load = type(load), loadfile = type(loadfile), dofile = type(dofile), require = type(require), package = type(package), debug = type(debug), dump = type(string.dump), xyn = type(xyn), json = type(json), call = type(__xyn_call)}\nend\n",
        "",
    );
    let out = ok(&env.invoke(&lua, json!({})));
    for k in [
        "io", "os", "load", "loadfile", "dofile", "require", "package", "debug", "dump", "call",
    ] {
        assert_eq!(out[k], "nil", "lua {k}");
    }
    assert_eq!(out["xyn"], "table");
    assert_eq!(out["json"], "table");

    let binary = env.package(Rt::Lua, "binary", "\x1bLua\x54\x00 not text", "");
    assert_eq!(code_of(&env.invoke(&binary, json!({}))), "action.failed");

    let js = env.package(
        Rt::Js,
        "globals",
        r#"function tries(f) { try { f(); return "ran"; } catch (e) { return "refused"; } }
export function handle() {
  return {
    eval: typeof eval,
    Function: tries(() => Function("return 1")()),
    ctor: tries(() => (function () {}).constructor("return 1")()),
    async_ctor: tries(() => (async function () {}).constructor("return 1")),
    std: typeof std, os: typeof os, call: typeof __xyn_call, xyn: typeof xyn,
  };
}
"#,
        "",
    );
    let out = ok(&env.invoke(&js, json!({})));
    assert_eq!(
        out,
        json!({"eval": "undefined", "Function": "refused", "ctor": "refused", "async_ctor": "refused",
        "std": "undefined", "os": "undefined", "call": "undefined", "xyn": "object"})
    );

    let import = env.package(
        Rt::Js,
        "import",
        "import * as os from 'os';\nexport function handle() { return {}; }\n",
        "",
    );
    assert_eq!(code_of(&env.invoke(&import, json!({}))), "action.failed");
}

#[test]
fn a_returned_promise_is_awaited() {
    let env = Env::new();
    let pkg = env.package(
        Rt::Js,
        "async",
        "export async function handle(input) { const x = await Promise.resolve(input.n * 2); return {x}; }\n",
        "",
    );
    assert_eq!(ok(&env.invoke(&pkg, json!({"n": 21}))), json!({"x": 42}));
}

#[test]
fn crypto_time_and_log_capabilities() {
    let env = Env::new();
    let lua = env.package(
        Rt::Lua,
        "misc",
        "function handle()\n  local h = xyn.crypto.sha256('abc')\n  local t = xyn.time.now_ms()\n  local ph = xyn.crypto.password_hash('pw')\n  xyn.log.info('hashed')\n  return {h = h, t = t, ok = xyn.crypto.password_verify('pw', ph), bad = xyn.crypto.password_verify('no', ph), r = #xyn.crypto.random_bytes(16)}\nend\n",
        "",
    );
    let r = env.invoke(&lua, json!({}));
    let out = ok(&r);
    assert_eq!(
        out["h"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(out["t"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(out["ok"], true);
    assert_eq!(out["bad"], false);
    assert_eq!(out["r"], 32);
    assert_eq!(r.logs[0].msg, "hashed");
    assert_eq!(r.counts.get("crypto.sha256"), Some(&1));
    let off = env.package(
        Rt::Js,
        "nocrypto",
        "export function handle() { return {h: xyn.crypto.sha256('abc')}; }\n",
        "[capabilities]\ncrypto = false\n",
    );
    assert_eq!(code_of(&env.invoke(&off, json!({}))), "capability.denied");
}

#[test]
fn a_warm_js_action_keeps_its_module_state_until_it_fails() {
    let env = Env::new();
    let pkg = env.package(
        Rt::Js,
        "warm",
        "let n = 0;\nexport function handle(input) { n++; if (input.fail) throw new Error('asked to'); return {n}; }\n",
        "",
    );
    assert_eq!(ok(&env.invoke(&pkg, json!({}))), json!({"n": 1}));
    assert_eq!(
        ok(&env.invoke(&pkg, json!({}))),
        json!({"n": 2}),
        "the loaded module is reused"
    );
    assert_eq!(
        code_of(&env.invoke(&pkg, json!({"fail": true}))),
        "action.failed"
    );
    assert_eq!(
        ok(&env.invoke(&pkg, json!({}))),
        json!({"n": 1}),
        "a failure discards the state"
    );
    env.sandbox.forget();
    assert_eq!(
        ok(&env.invoke(&pkg, json!({}))),
        json!({"n": 1}),
        "forget is a cold start"
    );
}

#[test]
fn a_warm_lua_action_keeps_its_state_until_it_fails_and_each_call_gets_its_own_budget() {
    let env = Env::new();
    let pkg = env.package(
        Rt::Lua,
        "warm",
        "local n = 0\nfunction handle(input)\n  n = n + 1\n  if input.fail then error('asked to') end\n  if input.spin then while true do end end\n  return {n = n}\nend\n",
        "[limits]\ntimeout_ms = 2000\nfuel = 5000000\n",
    );
    assert_eq!(ok(&env.invoke(&pkg, json!({}))), json!({"n": 1}));
    assert_eq!(
        ok(&env.invoke(&pkg, json!({}))),
        json!({"n": 2}),
        "the loaded state is reused"
    );
    assert_eq!(
        code_of(&env.invoke(&pkg, json!({"fail": true}))),
        "action.failed"
    );
    assert_eq!(
        ok(&env.invoke(&pkg, json!({}))),
        json!({"n": 1}),
        "a failure discards the state"
    );
    // Many warm calls do not add up to one budget: the fuel is counted per invocation.
    for i in 2..=50 {
        assert_eq!(ok(&env.invoke(&pkg, json!({}))), json!({"n": i}));
    }
    assert_eq!(
        code_of(&env.invoke(&pkg, json!({"spin": true}))),
        "budget.fuel_exceeded",
        "a warm state still runs under the budget"
    );
    assert_eq!(
        ok(&env.invoke(&pkg, json!({}))),
        json!({"n": 1}),
        "a spent budget discards the state"
    );
    env.sandbox.forget();
    assert_eq!(
        ok(&env.invoke(&pkg, json!({}))),
        json!({"n": 1}),
        "forget is a cold start"
    );
}
