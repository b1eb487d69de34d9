//! WASI 0.2 components: the world of `wit/xyn-action.wit`, the same capability layer and the
//! same budgets as core modules. The guests are component-model text (WAT), compiled by the
//! `wat` crate when the package is loaded — sources, no binaries.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xyn_sandbox::caps::http::DirectHttp;
use xyn_sandbox::{InvokeReport, InvokeRequest, Sandbox, SandboxConfig};

/// A component implementing the world `xyn-action`: a "libc" core module with the memory
/// and `realloc`, every host function lowered against them, and a main core module whose
/// definitions are `body` (which must export `handle (param i32 i32) (result i32)`).
///
/// In the main module: `$call`, `$fs-read`, `$fs-write`, `$http-request`, `$env-get`,
/// `$db-query`, `$db-exec` take their strings as (ptr, len) and a result pointer last;
/// `$time-now-ms` returns i64; `$log-info` takes (ptr, len). Helpers: `$ok (p n)` and
/// `$err (p n)` return handle's result; `$failed (r)` is 1 when the host call whose
/// result is at `r` failed; `$err_of (r)` returns err(its message); `$ok_of (r)` returns
/// ok(its string).
fn component(body: &str) -> String {
    format!(
        r#"(component
  (import "xyn:action/host@0.1.0" (instance $host
    (type $ce (record (field "code" string) (field "message" string)))
    (export "cap-error" (type $cap-error (eq $ce)))
    (type $r-str (result string (error $cap-error)))
    (type $r-unit (result (error $cap-error)))
    (export "call" (func (param "name" string) (param "args" string) (result $r-str)))
    (export "fs-read" (func (param "path" string) (result $r-str)))
    (export "fs-write" (func (param "path" string) (param "data" string) (result $r-unit)))
    (export "http-request" (func (param "request" string) (result $r-str)))
    (export "env-get" (func (param "name" string) (result (option string))))
    (export "db-query" (func (param "sql" string) (param "params" string) (result $r-str)))
    (export "db-exec" (func (param "sql" string) (param "params" string) (result $r-str)))
    (export "time-now-ms" (func (result s64)))
    (export "log-info" (func (param "msg" string)))
  ))
  (core module $libc
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 16384))
    (func (export "realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (block $done
        (loop $grow
          (br_if $done (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
          (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
          (br $grow)))
      (global.set $heap (local.get $end))
      (if (local.get $old)
        (then (memory.copy (local.get $p) (local.get $old) (local.get $old_size))))
      (local.get $p)))
  (core instance $libc (instantiate $libc))
  (alias core export $libc "memory" (core memory $mem))
  (alias core export $libc "realloc" (core func $realloc))
  (core func $call (canon lower (func $host "call") (memory $mem) (realloc $realloc)))
  (core func $fs-read (canon lower (func $host "fs-read") (memory $mem) (realloc $realloc)))
  (core func $fs-write (canon lower (func $host "fs-write") (memory $mem) (realloc $realloc)))
  (core func $http-request (canon lower (func $host "http-request") (memory $mem) (realloc $realloc)))
  (core func $env-get (canon lower (func $host "env-get") (memory $mem) (realloc $realloc)))
  (core func $db-query (canon lower (func $host "db-query") (memory $mem) (realloc $realloc)))
  (core func $db-exec (canon lower (func $host "db-exec") (memory $mem) (realloc $realloc)))
  (core func $time-now-ms (canon lower (func $host "time-now-ms")))
  (core func $log-info (canon lower (func $host "log-info") (memory $mem)))
  (core module $main
    (import "libc" "memory" (memory 1))
    (import "libc" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "host" "call" (func $call (param i32 i32 i32 i32 i32)))
    (import "host" "fs-read" (func $fs-read (param i32 i32 i32)))
    (import "host" "fs-write" (func $fs-write (param i32 i32 i32 i32 i32)))
    (import "host" "http-request" (func $http-request (param i32 i32 i32)))
    (import "host" "env-get" (func $env-get (param i32 i32 i32)))
    (import "host" "db-query" (func $db-query (param i32 i32 i32 i32 i32)))
    (import "host" "db-exec" (func $db-exec (param i32 i32 i32 i32 i32)))
    (import "host" "time-now-ms" (func $time-now-ms (result i64)))
    (import "host" "log-info" (func $log-info (param i32 i32)))
    (func $ret (param $case i32) (param $p i32) (param $n i32) (result i32)
      (i32.store8 (i32.const 256) (local.get $case))
      (i32.store offset=4 (i32.const 256) (local.get $p))
      (i32.store offset=8 (i32.const 256) (local.get $n))
      (i32.const 256))
    (func $ok (param $p i32) (param $n i32) (result i32) (call $ret (i32.const 0) (local.get $p) (local.get $n)))
    (func $err (param $p i32) (param $n i32) (result i32) (call $ret (i32.const 1) (local.get $p) (local.get $n)))
    (func $failed (param $r i32) (result i32) (i32.load8_u (local.get $r)))
    (func $err_of (param $r i32) (result i32)
      (call $err (i32.load offset=12 (local.get $r)) (i32.load offset=16 (local.get $r))))
    (func $ok_of (param $r i32) (result i32)
      (call $ok (i32.load offset=4 (local.get $r)) (i32.load offset=8 (local.get $r))))
    {body}
  )
  (core instance $main (instantiate $main
    (with "libc" (instance $libc))
    (with "host" (instance
      (export "call" (func $call))
      (export "fs-read" (func $fs-read))
      (export "fs-write" (func $fs-write))
      (export "http-request" (func $http-request))
      (export "env-get" (func $env-get))
      (export "db-query" (func $db-query))
      (export "db-exec" (func $db-exec))
      (export "time-now-ms" (func $time-now-ms))
      (export "log-info" (func $log-info))))))
  (func $handle (param "input" string) (result (result string (error string)))
    (canon lift (core func $main "handle") (memory $mem) (realloc $realloc)))
  (export "handle" (func $handle))
)"#
    )
}

/// A component whose `handle` answers ok(`s`).
fn constant(s: &str) -> String {
    let esc = s.replace('\\', "\\\\").replace('"', "\\\"");
    component(&format!(
        r#"(data (i32.const 1024) "{esc}")
    (func (export "handle") (param i32 i32) (result i32) (call $ok (i32.const 1024) (i32.const {})))"#,
        s.len()
    ))
}

/// A component that calls capability `cap` (by its dotted name, through `call`) with the
/// input as its argument object; ok(result JSON) or err(message).
fn probe(cap: &str) -> String {
    component(&format!(
        r#"(data (i32.const 1024) "{cap}")
    (func (export "handle") (param $in i32) (param $n i32) (result i32)
      (call $call (i32.const 1024) (i32.const {}) (local.get $in) (local.get $n) (i32.const 512))
      (if (result i32) (call $failed (i32.const 512))
        (then (call $err_of (i32.const 512)))
        (else (call $ok_of (i32.const 512)))))"#,
        cap.len()
    ))
}

struct Env {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
    http: Arc<DirectHttp>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        let sandbox = Sandbox::new(SandboxConfig {
            limits: Default::default(),
            cache_dir: Some(dir.path().join("cache")),
        });
        Env {
            dir,
            sandbox,
            http: Arc::new(DirectHttp::new().unwrap()),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn package(&self, tag: &str, code: &str, extra: &str) -> PathBuf {
        let name = format!("t.component_{tag}");
        let dir = self.dir.path().join("pkgs").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.wat"), code).unwrap();
        std::fs::write(
            dir.join("xyn-action.toml"),
            format!("name = \"{name}\"\nruntime = \"wasm\"\nentry = \"main.wat\"\n{extra}\n"),
        )
        .unwrap();
        dir
    }

    fn invoke_in(&self, sandbox: &Sandbox, pkg: &Path, input: Value) -> InvokeReport {
        let p = sandbox.package(pkg).unwrap();
        sandbox.invoke(
            &p,
            InvokeRequest {
                input,
                data_dir: Some(self.data()),
                db_path: Some(self.dir.path().join("db").join("t.sqlite")),
                env: BTreeMap::from([("XYN_TEST_ALLOWED".to_string(), "yes".to_string())]),
                secrets: BTreeMap::new(),
                http: self.http.clone(),
                limits: None,
            },
        )
    }

    fn invoke(&self, pkg: &Path, input: Value) -> InvokeReport {
        self.invoke_in(&self.sandbox, pkg, input)
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

/// A tiny HTTP server on 127.0.0.1 answering 200 "hello" on /ok.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
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

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn a_noop_component_runs_and_is_cached_precompiled_by_content_hash() {
    let env = Env::new();
    let pkg = env.package("noop", &constant("{}"), "");
    let r = env.invoke(&pkg, json!({"x": 1}));
    assert_eq!(ok(&r), json!({}));
    assert_eq!(r.runtime.as_str(), "wasm");
    assert!(r.usage.fuel > 0, "fuel is metered: {:?}", r.usage);
    assert!(r.usage.memory_bytes >= 65536, "{:?}", r.usage);
    let cached: Vec<String> = std::fs::read_dir(env.dir.path().join("cache"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(
        cached[0].starts_with(&r.digest) && cached[0].ends_with(".component.cwasm"),
        "{cached:?}"
    );
    // A second sandbox (a fresh worker) loads it from the cache: same answer.
    let fresh = Sandbox::new(SandboxConfig {
        limits: Default::default(),
        cache_dir: Some(env.dir.path().join("cache")),
    });
    assert_eq!(ok(&env.invoke_in(&fresh, &pkg, json!({}))), json!({}));
    // Warm invocations reuse the prepared component.
    for _ in 0..20 {
        assert_eq!(ok(&env.invoke(&pkg, json!({}))), json!({}));
    }
}

#[test]
fn a_component_uses_fs_db_and_http_through_the_capability_layer() {
    let env = Env::new();
    let port = http_server();
    // The committed example, with its allowed host pointed at the test server.
    let src = repo().join("examples/actions/component-notes");
    let dir = env.dir.path().join("pkgs/component-notes");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["notes.wat", "input.schema.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(src.join("xyn-action.toml"))
        .unwrap()
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{port}"));
    std::fs::write(dir.join("xyn-action.toml"), manifest).unwrap();
    std::fs::create_dir_all(env.data().join("inbox")).unwrap();
    std::fs::create_dir_all(env.data().join("outbox")).unwrap();
    std::fs::write(env.data().join("inbox/note.txt"), "a \"quoted\" note").unwrap();

    let url = format!("http://127.0.0.1:{port}/ok");
    let r = env.invoke(&dir, json!({"url": url}));
    let out = ok(&r);
    assert_eq!(out["runtime"], "component");
    assert_eq!(out["fs"], "a \"quoted\" note");
    assert_eq!(out["db"], json!([{"visits": 1}]));
    assert_eq!(out["http"]["status"], 200, "{out}");
    assert_eq!(out["http"]["body"], "hello");
    assert_eq!(
        std::fs::read_to_string(env.data().join("outbox/seen.txt")).unwrap(),
        "seen by component"
    );
    for (cap, n) in [
        ("fs.read", 1),
        ("fs.write", 1),
        ("db.exec", 2),
        ("db.query", 1),
        ("http.request", 1),
    ] {
        assert_eq!(r.counts.get(cap), Some(&n), "{cap}: {:?}", r.counts);
    }
    assert!(r.denials.is_empty(), "{:?}", r.denials);
    let again = ok(&env.invoke(&dir, json!({"url": url})));
    assert_eq!(
        again["db"],
        json!([{"visits": 2}]),
        "its own database persists"
    );

    // A host outside the allowlist: the call is refused and the guest's err(message)
    // ends the invocation as capability.denied.
    let r = env.invoke(&dir, json!({"url": "http://example.com/"}));
    assert_eq!(code_of(&r), "capability.denied", "{:?}", r.result);
    assert_eq!(r.denials[0].capability, "http.request");
}

#[test]
fn denied_capabilities_reach_the_component_as_errors_and_are_recorded() {
    let env = Env::new();
    std::fs::create_dir_all(env.data().join("inbox")).unwrap();
    std::fs::write(env.data().join("inbox/a.txt"), "inside").unwrap();
    std::fs::write(env.data().join("secret.txt"), "not for the action").unwrap();
    let caps = "[capabilities]\nfs_read = [\"inbox\"]\nenv = [\"XYN_TEST_ALLOWED\"]\n";
    let read = env.package("read", &probe("fs.read"), caps);
    assert_eq!(
        ok(&env.invoke(&read, json!({"path": "inbox/a.txt"}))),
        "inside"
    );
    for path in ["../../etc/passwd", "/etc/passwd", "secret.txt"] {
        let r = env.invoke(&read, json!({"path": path}));
        assert_eq!(code_of(&r), "capability.denied", "{path}: {:?}", r.result);
        let e = r.result.as_ref().unwrap_err();
        assert!(e.message.starts_with("capability denied: fs.read"), "{e:?}");
        assert_eq!(r.denials.len(), 1);
        assert_eq!(r.denials[0].capability, "fs.read");
        assert_eq!(r.denials[0].target, path);
    }
    // Not granted at all: db.
    let db = env.package("db", &probe("db.query"), caps);
    let r = env.invoke(&db, json!({"sql": "SELECT 1", "params": []}));
    assert_eq!(code_of(&r), "capability.denied", "{:?}", r.result);
    assert_eq!(r.denials[0].capability, "db.query");

    // The typed `env-get` answers none for a name outside the allowlist (and audits it).
    let env_get = component(
        r#"(data (i32.const 1024) "XYN_TEST_ALLOWED")
    (data (i32.const 1056) "HOME")
    (data (i32.const 1088) "[\"set\",\"none\"]")
    (data (i32.const 1120) "[\"none\",\"none\"]")
    (func (export "handle") (param i32 i32) (result i32)
      (call $env-get (i32.const 1024) (i32.const 16) (i32.const 512))
      (call $env-get (i32.const 1056) (i32.const 4) (i32.const 544))
      (if (result i32) (i32.and (i32.load8_u (i32.const 512)) (i32.eqz (i32.load8_u (i32.const 544))))
        (then (call $ok (i32.const 1088) (i32.const 14)))
        (else (call $ok (i32.const 1120) (i32.const 15)))))"#,
    );
    let pkg = env.package("env", &env_get, caps);
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(ok(&r), json!(["set", "none"]));
    assert_eq!(r.denials.len(), 1);
    assert_eq!(r.denials[0].capability, "env.get");
    assert_eq!(r.denials[0].target, "HOME");

    // time = false: the typed time-now-ms is refused, and that ends the invocation.
    let time = component(
        r#"(data (i32.const 1024) "{}")
    (func (export "handle") (param i32 i32) (result i32)
      (drop (call $time-now-ms))
      (call $ok (i32.const 1024) (i32.const 2)))"#,
    );
    let pkg = env.package("notime", &time, "[capabilities]\ntime = false\n");
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(code_of(&r), "capability.denied", "{:?}", r.result);
    let pkg = env.package("time", &time, "");
    assert_eq!(ok(&env.invoke(&pkg, json!({}))), json!({}));
}

fn spin() -> String {
    component(
        r#"(func (export "handle") (param i32 i32) (result i32)
      (loop $l (br $l)) (i32.const 0))"#,
    )
}

#[test]
fn an_infinite_loop_in_a_component_is_stopped_by_the_cpu_budget() {
    let env = Env::new();
    let pkg = env.package(
        "spin",
        &spin(),
        "[limits]\nfuel = 2000000\ntimeout_ms = 20000\n",
    );
    let t = Instant::now();
    let r = env.invoke(&pkg, json!({}));
    let took = t.elapsed();
    assert_eq!(code_of(&r), "budget.fuel_exceeded", "{:?}", r.result);
    assert!(took < Duration::from_secs(3), "stopped only after {took:?}");
    assert!(r.usage.fuel >= 1_000_000, "used {} fuel", r.usage.fuel);
    let inc = r.incident.as_ref().expect("an incident bundle");
    assert_eq!(inc["report"]["code"], "budget.fuel_exceeded");
    assert_eq!(inc["report"]["limits"]["fuel"], 2_000_000);
    assert_eq!(inc["module"]["sha256"], r.digest.as_str());
    assert_eq!(inc["input"], json!({}));
}

#[test]
fn an_infinite_loop_in_a_component_is_stopped_by_the_wall_clock() {
    let env = Env::new();
    let pkg = env.package(
        "spin",
        &spin(),
        "[limits]\nfuel = 100000000000000\ntimeout_ms = 300\n",
    );
    let t = Instant::now();
    let r = env.invoke(&pkg, json!({}));
    let took = t.elapsed();
    assert_eq!(code_of(&r), "budget.timeout", "{:?}", r.result);
    assert!(
        took >= Duration::from_millis(290),
        "stopped early, {took:?}"
    );
    assert!(
        took < Duration::from_millis(2000),
        "stopped only after {took:?}"
    );
    assert_eq!(
        r.incident.as_ref().unwrap()["report"]["code"],
        "budget.timeout"
    );
}

#[test]
fn a_component_allocating_past_the_memory_limit_traps() {
    let env = Env::new();
    let grow = component(
        r#"(func (export "handle") (param i32 i32) (result i32)
      (loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i32.const 0))"#,
    );
    let pkg = env.package(
        "mem",
        &grow,
        "[limits]\nmemory_mb = 16\nfuel = 100000000000\ntimeout_ms = 20000\n",
    );
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(code_of(&r), "budget.memory_exceeded", "{:?}", r.result);
    assert!(r.usage.memory_bytes <= 16 << 20, "{:?}", r.usage);
    assert!(r.incident.is_some());
    // The same guest growing within the limit once answers normally.
    let once = component(
        r#"(data (i32.const 1024) "{}")
    (func (export "handle") (param i32 i32) (result i32)
      (drop (memory.grow (i32.const 16))) (call $ok (i32.const 1024) (i32.const 2)))"#,
    );
    let pkg = env.package("mem_ok", &once, "[limits]\nmemory_mb = 16\n");
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(ok(&r), json!({}));
    assert_eq!(r.usage.memory_bytes, 17 * 65536, "{:?}", r.usage);
}

#[test]
fn deep_recursion_in_a_component_traps_on_the_stack_limit() {
    let env = Env::new();
    let deep = component(
        r#"(func $r (param i32) (result i32) (i32.add (i32.const 1) (call $r (local.get 0))))
    (func (export "handle") (param i32 i32) (result i32) (call $r (i32.const 0)))"#,
    );
    let pkg = env.package(
        "deep",
        &deep,
        "[limits]\nfuel = 100000000000\ntimeout_ms = 20000\n",
    );
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(code_of(&r), "budget.stack_exceeded", "{:?}", r.result);
}

#[test]
fn component_output_beyond_the_cap_is_refused() {
    let env = Env::new();
    // ok("xxx…x") as a JSON string of 5000 bytes, written into a realloc'd buffer.
    let big = component(
        r#"(func (export "handle") (param i32 i32) (result i32)
      (local $p i32)
      (local.set $p (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 5000)))
      (memory.fill (local.get $p) (i32.const 120) (i32.const 5000))
      (i32.store8 (local.get $p) (i32.const 34))
      (i32.store8 (i32.add (local.get $p) (i32.const 4999)) (i32.const 34))
      (call $ok (local.get $p) (i32.const 5000)))"#,
    );
    let pkg = env.package("big", &big, "[limits]\nmax_output_bytes = 1000\n");
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(code_of(&r), "budget.output_exceeded", "{:?}", r.result);
    assert!(r.incident.is_some());
    let small = env.package("small", &big, "[limits]\nmax_output_bytes = 10000\n");
    let r = env.invoke(&small, json!({}));
    assert_eq!(ok(&r).as_str().map(str::len), Some(4998));
}

#[test]
fn a_trapping_component_fails_only_its_invocation() {
    let env = Env::new();
    let trap = component(r#"(func (export "handle") (param i32 i32) (result i32) unreachable)"#);
    let pkg = env.package("trap", &trap, "");
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(code_of(&r), "action.failed", "{:?}", r.result);
    assert!(r.incident.is_none());
    // An err(...) the guest returns itself is action.failed with its message.
    let err = component(
        r#"(data (i32.const 1024) "no can do")
    (func (export "handle") (param i32 i32) (result i32) (call $err (i32.const 1024) (i32.const 9)))"#,
    );
    let pkg = env.package("err", &err, "");
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(code_of(&r), "action.failed");
    assert_eq!(r.result.as_ref().unwrap_err().message, "no can do");
    let fine = env.package("fine", &constant("{\"fine\":true}"), "");
    assert_eq!(ok(&env.invoke(&fine, json!({})))["fine"], true);
}

#[test]
fn a_component_that_does_not_implement_the_world_is_refused() {
    let env = Env::new();
    let wrong = r#"(component
  (core module $m (func (export "f") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $f (result u32) (canon lift (core func $i "f")))
  (export "handle" (func $f)))"#;
    let pkg = env.package("wrong", wrong, "");
    let r = env.invoke(&pkg, json!({}));
    let e = r.result.unwrap_err();
    assert!(e.message.contains("xyn-action"), "{e:?}");
    let unknown = r#"(component
  (import "evil:net/sockets@1.0.0" (instance (export "connect" (func (param "host" string)))))
)"#;
    let pkg = env.package("unknown", unknown, "");
    let e = env.invoke(&pkg, json!({})).result.unwrap_err();
    assert!(e.message.contains("cannot be linked"), "{e:?}");
}

/// A component using WASI 0.2 directly (as ordinary toolchains' output does): environment,
/// preopened directories, the wall clock, random bytes and stdout.
fn wasi_guest() -> String {
    r#"(component
  (import "wasi:cli/environment@0.2.0" (instance $environment
    (export "get-environment" (func (result (list (tuple string string)))))
    (export "get-arguments" (func (result (list string))))))
  (import "wasi:filesystem/types@0.2.0" (instance $types
    (export "descriptor" (type (sub resource)))))
  (alias export $types "descriptor" (type $descriptor))
  (import "wasi:filesystem/preopens@0.2.0" (instance $preopens
    (alias outer 1 $descriptor (type $d))
    (export "descriptor" (type $d2 (eq $d)))
    (export "get-directories" (func (result (list (tuple (own $d2) string)))))))
  (type $datetime (record (field "seconds" u64) (field "nanoseconds" u32)))
  (import "wasi:clocks/wall-clock@0.2.0" (instance $wall
    (export "datetime" (type $dt (eq $datetime)))
    (export "now" (func (result $dt)))))
  (import "wasi:random/random@0.2.0" (instance $random
    (export "get-random-u64" (func (result u64)))))
  (core module $libc
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 16384))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p)))
  (core instance $libc (instantiate $libc))
  (alias core export $libc "memory" (core memory $mem))
  (alias core export $libc "realloc" (core func $realloc))
  (core func $get-env (canon lower (func $environment "get-environment") (memory $mem) (realloc $realloc)))
  (core func $get-args (canon lower (func $environment "get-arguments") (memory $mem) (realloc $realloc)))
  (core func $get-dirs (canon lower (func $preopens "get-directories") (memory $mem) (realloc $realloc)))
  (core func $now (canon lower (func $wall "now") (memory $mem)))
  (core func $rand (canon lower (func $random "get-random-u64")))
  (core module $main
    (import "libc" "memory" (memory 1))
    (import "wasi" "get-env" (func $get-env (param i32)))
    (import "wasi" "get-args" (func $get-args (param i32)))
    (import "wasi" "get-dirs" (func $get-dirs (param i32)))
    (import "wasi" "now" (func $now (param i32)))
    (import "wasi" "rand" (func $rand (result i64)))
    (global $out (mut i32) (i32.const 2048))
    (func $digit (param $n i32)
      (i32.store8 (global.get $out) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (global.set $out (i32.add (global.get $out) (i32.const 1))))
    (func $char (param $c i32)
      (i32.store8 (global.get $out) (local.get $c))
      (global.set $out (i32.add (global.get $out) (i32.const 1))))
    ;; Answers [env count, arg count, preopen count, clock seconds > 0, random u64 as 2 halves > 0]
    ;; as a JSON array of digits.
    (func (export "handle") (param i32 i32) (result i32)
      (call $get-env (i32.const 512))
      (call $get-args (i32.const 520))
      (call $get-dirs (i32.const 528))
      (call $now (i32.const 544))
      (call $char (i32.const 91))
      (call $digit (i32.load offset=4 (i32.const 512)))
      (call $char (i32.const 44))
      (call $digit (i32.load offset=4 (i32.const 520)))
      (call $char (i32.const 44))
      (call $digit (i32.load offset=4 (i32.const 528)))
      (call $char (i32.const 44))
      (call $digit (i64.ne (i64.load (i32.const 544)) (i64.const 0)))
      (call $char (i32.const 44))
      (call $digit (i64.ne (call $rand) (i64.const 0)))
      (call $char (i32.const 93))
      (i32.store8 (i32.const 256) (i32.const 0))
      (i32.store offset=4 (i32.const 256) (i32.const 2048))
      (i32.store offset=8 (i32.const 256) (i32.sub (global.get $out) (i32.const 2048)))
      (i32.const 256)))
  (core instance $main (instantiate $main
    (with "libc" (instance $libc))
    (with "wasi" (instance
      (export "get-env" (func $get-env))
      (export "get-args" (func $get-args))
      (export "get-dirs" (func $get-dirs))
      (export "now" (func $now))
      (export "rand" (func $rand))))))
  (func $handle (param "input" string) (result (result string (error string)))
    (canon lift (core func $main "handle") (memory $mem) (realloc $realloc)))
  (export "handle" (func $handle))
)"#
    .to_string()
}

#[test]
fn wasi_in_a_component_is_deny_by_default() {
    let env = Env::new();
    // The node process has an environment and a filesystem; the component sees neither.
    let pkg = env.package(
        "wasi",
        &wasi_guest(),
        "[capabilities]\nenv = [\"XYN_TEST_ALLOWED\", \"PATH\"]\nfs_read = [\"inbox\"]\n",
    );
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(
        ok(&r),
        json!([0, 0, 0, 1, 1]),
        "no env, no args, no preopens; a real clock and random bytes"
    );
    assert_eq!(r.counts.get("time.now_ms"), Some(&1), "{:?}", r.counts);
    assert!(r.denials.is_empty(), "{:?}", r.denials);
    // time = false: the WASI wall clock reads 0 and the refusal is audited; crypto = false:
    // random bytes come from a fixed sequence (still non-zero, never the host's).
    let pkg = env.package(
        "wasi_off",
        &wasi_guest(),
        "[capabilities]\ntime = false\ncrypto = false\n",
    );
    let r = env.invoke(&pkg, json!({}));
    assert_eq!(ok(&r), json!([0, 0, 0, 0, 1]));
    assert_eq!(r.denials.len(), 1, "{:?}", r.denials);
    assert_eq!(r.denials[0].capability, "time.now_ms");
    assert_eq!(r.denials[0].target, "wasi:clocks/wall-clock");
}

#[test]
fn a_component_sleeping_through_wasi_is_stopped_at_its_deadline() {
    // Subscribes to a one-hour monotonic-clock timer and blocks on it, in a loop. Host
    // calls are not interrupted by epochs; the subscription is clamped to the time left.
    let sleeper = r#"(component
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type (sub resource)))
    (export "[method]pollable.block" (func (param "self" (borrow 0))))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $mono
    (alias outer 1 $pollable (type $p))
    (export "pollable" (type $p2 (eq $p)))
    (export "subscribe-duration" (func (param "when" u64) (result (own $p2))))))
  (core func $subscribe (canon lower (func $mono "subscribe-duration")))
  (core func $block (canon lower (func $poll "[method]pollable.block")))
  (core module $main
    (import "wasi" "subscribe" (func $subscribe (param i64) (result i32)))
    (import "wasi" "block" (func $block (param i32)))
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096))
    (func (export "handle") (param i32 i32) (result i32)
      (loop $l
        (call $block (call $subscribe (i64.const 3600000000000)))
        (br $l))
      (i32.const 0)))
  (core instance $main (instantiate $main
    (with "wasi" (instance (export "subscribe" (func $subscribe)) (export "block" (func $block))))))
  (func $handle (param "input" string) (result (result string (error string)))
    (canon lift (core func $main "handle") (memory (core memory $main "memory")) (realloc (core func $main "realloc"))))
  (export "handle" (func $handle))
)"#;
    let env = Env::new();
    let pkg = env.package("sleep", sleeper, "[limits]\ntimeout_ms = 300\n");
    let t = Instant::now();
    let r = env.invoke(&pkg, json!({}));
    let took = t.elapsed();
    assert_eq!(code_of(&r), "budget.timeout", "{:?}", r.result);
    assert!(
        took >= Duration::from_millis(290),
        "stopped early, {took:?}"
    );
    assert!(
        took < Duration::from_millis(2000),
        "slept past the deadline: {took:?}"
    );
}
