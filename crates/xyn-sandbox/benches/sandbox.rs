//! Per-invocation overhead of sandboxed actions, and the cost of a capability call against
//! the same operation done natively. A plain harness (median and p99 are what we report).
//!
//! ```sh
//! cargo build --release -p xyn          # the worker binary, for the through-the-worker rows
//! cargo bench -p xyn-sandbox --bench sandbox
//! cargo bench -p xyn-sandbox --bench sandbox -- overshoot   # only the timeout overshoot
//! ```
//!
//! `overshoot`: by how much an invocation that burns CPU where budgets used not to reach
//! (Lua C-call callbacks, JavaScript's native `join`, a recursive CTE in each runtime)
//! exceeds its `timeout_ms`, median of 5 runs, in-process (no watchdog involved).
//!
//! "in-process" rows run the runtime and the capability layer in this process (what the
//! worker does per invocation); "worker" rows go through `WorkerPool` (a sealed
//! `xyn sandbox-worker` child, JSON over pipes). Results: docs/benchmarks/sandbox.md.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xyn_sandbox::caps::http::NoHttp;
use xyn_sandbox::install::Layout;
use xyn_sandbox::pool::{PoolConfig, WorkerPool};
use xyn_sandbox::worker::InvokeMsg;
use xyn_sandbox::{InvokeRequest, Sandbox, SandboxConfig};

const WAT_PRELUDE: &str = r#"
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $p) (local.get $len)) (i32.const 7)) (i32.const -8)))
    (block $done
      (loop $grow
        (br_if $done (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (global.set $heap (local.get $end))
    (local.get $p))
  (data (i32.const 1024) "{}")
"#;

/// Calls capability import `imp` with the constant JSON `args` `n` times (n from 0..).
fn wat_loop(imp: &str, args: &str, n: u32) -> String {
    let esc = args.replace('"', "\\\"");
    format!(
        r#"(module
  (import "xyn" "{imp}" (func $cap (param i32 i32) (result i64)))
  {WAT_PRELUDE}
  (data (i32.const 2048) "{esc}")
  (func (export "handle") (param i32 i32) (result i64)
    (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (i32.const {n})))
      (drop (call $cap (i32.const 2048) (i32.const {len})))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 2)))
)"#,
        len = args.len()
    )
}

/// A WASI 0.2 component (component-model text) doing `n` calls of the typed host
/// function `imp` (`fs-read` or `db-query`); a libc core module owns memory and realloc.
fn component_loop(cap: &str, n: u32) -> String {
    let (import, lowered, core_sig, call) = match cap {
        "db" => (
            r#"(export "db-query" (func (param "sql" string) (param "params" string) (result $r-str)))"#,
            r#"(core func $f (canon lower (func $host "db-query") (memory $mem) (realloc $realloc)))"#,
            "(param i32 i32 i32 i32 i32)",
            "(call $f (i32.const 1024) (i32.const 29) (i32.const 1088) (i32.const 7) (i32.const 512))",
        ),
        _ => (
            r#"(export "fs-read" (func (param "path" string) (result $r-str)))"#,
            r#"(core func $f (canon lower (func $host "fs-read") (memory $mem) (realloc $realloc)))"#,
            "(param i32 i32 i32)",
            "(call $f (i32.const 1120) (i32.const 12) (i32.const 512))",
        ),
    };
    format!(
        r#"(component
  (import "xyn:action/host@0.1.0" (instance $host
    (type $ce (record (field "code" string) (field "message" string)))
    (export "cap-error" (type $cap-error (eq $ce)))
    (type $r-str (result string (error $cap-error)))
    {import}))
  (core module $libc
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 16384))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32) (local $end i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (local.set $end (i32.add (local.get $p) (local.get 3)))
      (block $done (loop $grow
        (br_if $done (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
      (global.set $heap (local.get $end))
      (local.get $p)))
  (core instance $libc (instantiate $libc))
  (alias core export $libc "memory" (core memory $mem))
  (alias core export $libc "realloc" (core func $realloc))
  {lowered}
  (core module $main
    (import "libc" "memory" (memory 1))
    (import "host" "f" (func $f {core_sig}))
    (data (i32.const 1024) "SELECT v FROM kv WHERE k = ?1")
    (data (i32.const 1088) "[\"k42\"]")
    (data (i32.const 1120) "inbox/1k.txt")
    (data (i32.const 1152) "{{}}")
    (func (export "handle") (param i32 i32) (result i32)
      (local $i i32)
      (block $done (loop $l
        (br_if $done (i32.ge_u (local.get $i) (i32.const {n})))
        {call}
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
      (i32.store8 (i32.const 256) (i32.const 0))
      (i32.store (i32.const 260) (i32.const 1152))
      (i32.store (i32.const 264) (i32.const 2))
      (i32.const 256)))
  (core instance $main (instantiate $main
    (with "libc" (instance $libc))
    (with "host" (instance (export "f" (func $f))))))
  (func $handle (param "input" string) (result (result string (error string)))
    (canon lift (core func $main "handle") (memory $mem) (realloc $realloc)))
  (export "handle" (func $handle))
)"#
    )
}

/// A component whose `handle` answers ok("{}") (input lifted into its memory through
/// its realloc).
const COMPONENT_NOOP: &str = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (data (i32.const 1024) "{}")
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096))
    (func (export "handle") (param i32 i32) (result i32)
      (i32.store8 (i32.const 256) (i32.const 0))
      (i32.store (i32.const 260) (i32.const 1024))
      (i32.store (i32.const 264) (i32.const 2))
      (i32.const 256)))
  (core instance $i (instantiate $m))
  (func $handle (param "input" string) (result (result string (error string)))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "handle" (func $handle)))"#;

/// The runtimes benchmarked: `component` is a WASI 0.2 component under runtime `wasm`.
const RUNTIMES: [&str; 4] = ["wasm", "component", "lua", "js"];

fn noop(rt: &str) -> (&'static str, String) {
    match rt {
        "component" => ("main.wat", COMPONENT_NOOP.to_string()),
        "wasm" => (
            "main.wat",
            format!(
                "(module {WAT_PRELUDE} (func (export \"handle\") (param i32 i32) (result i64) (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 2))))"
            ),
        ),
        "lua" => ("main.lua", "function handle(input) return {} end\n".into()),
        _ => (
            "main.js",
            "export function handle(input) { return {}; }\n".into(),
        ),
    }
}

/// A guest doing `n` calls of `cap` ("db" or "fs").
fn looping(rt: &str, cap: &str, n: u32) -> (&'static str, String) {
    let (imp, args, lua, js) = match cap {
        "db" => (
            "db_query",
            r#"{"sql":"SELECT v FROM kv WHERE k = ?1","params":["k42"]}"#,
            "xyn.db.query('SELECT v FROM kv WHERE k = ?1', {'k42'})",
            "xyn.db.query('SELECT v FROM kv WHERE k = ?1', ['k42'])",
        ),
        _ => (
            "fs_read",
            r#"{"path":"inbox/1k.txt"}"#,
            "xyn.fs.read('inbox/1k.txt')",
            "xyn.fs.read('inbox/1k.txt')",
        ),
    };
    match rt {
        "wasm" => ("main.wat", wat_loop(imp, args, n)),
        "component" => ("main.wat", component_loop(cap, n)),
        "lua" => (
            "main.lua",
            format!("function handle() for i = 1, {n} do local r = {lua} end return {{}} end\n"),
        ),
        _ => (
            "main.js",
            format!(
                "export function handle() {{ for (let i = 0; i < {n}; i++) {{ const r = {js}; }} return {{}}; }}\n"
            ),
        ),
    }
}

fn write_pkg(root: &Path, name: &str, rt: &str, entry: &str, code: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(entry), code).unwrap();
    std::fs::write(
        dir.join("xyn-action.toml"),
        format!("name = \"{name}\"\nruntime = \"{}\"\nentry = \"{entry}\"\n[capabilities]\nfs_read = [\"inbox\"]\ndb = true\n[limits]\nfuel = 100000000000\ntimeout_ms = 60000\n", if rt == "component" { "wasm" } else { rt }),
    )
    .unwrap();
    dir
}

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        median: v[v.len() / 2],
        p99: v[(v.len() * 99 / 100).min(v.len() - 1)],
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn row(what: &str, mode: &str, s: &Stats, n: usize) {
    println!(
        "| {what} | {mode} | {} | {} | {n} |",
        us(s.median),
        us(s.p99)
    );
}

struct Bench {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
}

impl Bench {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn db(&self) -> PathBuf {
        self.dir.path().join("db.sqlite")
    }
    fn req(&self) -> InvokeRequest {
        InvokeRequest {
            input: json!({}),
            data_dir: Some(self.data()),
            db_path: Some(self.db()),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            http: Arc::new(NoHttp),
            limits: None,
        }
    }
    fn time(&self, pkg: &Path, n: usize, cold: bool) -> Vec<Duration> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            if cold {
                self.sandbox.forget();
            }
            let t = Instant::now();
            let p = self.sandbox.package(pkg).unwrap();
            let r = self.sandbox.invoke(&p, self.req());
            out.push(t.elapsed());
            assert!(r.result.is_ok(), "{:?}", r.result);
        }
        out
    }
}

/// The overshoot over `timeout_ms` per path that used to escape the budgets.
fn overshoot(b: &Bench) {
    const TIMEOUT_MS: u64 = 200;
    const RUNS: usize = 5;
    let cte = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) AS n FROM c";
    let wasm_cte = {
        let args = json!({"sql": cte, "params": []}).to_string();
        let esc = args.replace('"', "\\\"");
        format!(
            r#"(module
  (import "xyn" "call" (func $call (param i32 i32 i32 i32) (result i64)))
  {WAT_PRELUDE}
  (data (i32.const 3072) "db.query")
  (data (i32.const 4096) "{esc}")
  (func (export "handle") (param i32 i32) (result i64)
    (drop (call $call (i32.const 3072) (i32.const 8) (i32.const 4096) (i32.const {})))
    (loop $l (br $l))
    (i64.const 0))
)"#,
            args.len()
        )
    };
    let paths: Vec<(&str, &str, &str, String)> = vec![
        ("Lua string.gsub callback", "lua", "main.lua", "function handle() return {s = string.gsub('aaaa', 'a', function() while true do end end)} end\n".into()),
        ("Lua table.sort comparator", "lua", "main.lua", "function handle() local t = {} for i = 1, 100 do t[i] = i end table.sort(t, function() while true do end end) return {} end\n".into()),
        ("JS Array.prototype.join, 2^32-1 holes", "js", "main.js", "export function handle() { return {n: new Array(4294967295).join('').length}; }\n".into()),
        ("db recursive CTE from Lua", "lua", "main.lua", format!("function handle() pcall(xyn.db.query, \"{cte}\", {{}}) while true do end end\n")),
        ("db recursive CTE from JS", "js", "main.js", format!("export function handle() {{ try {{ xyn.db.query(\"{cte}\", []); }} catch (e) {{}} for (;;) {{}} }}\n")),
        ("db recursive CTE from wasm", "wasm", "main.wat", wasm_cte),
    ];
    println!("\n## Timeout overshoot (timeout_ms = {TIMEOUT_MS}; in-process; median of {RUNS})\n");
    println!("| path | code | overshoot median ms | max ms |\n|---|---|---|---|");
    for (i, (what, rt, entry, code)) in paths.iter().enumerate() {
        let pkg = write_pkg(b.dir.path(), &format!("o.over{i}"), rt, entry, code);
        let mut limits = b
            .sandbox
            .limits_for(&b.sandbox.package(&pkg).unwrap())
            .unwrap();
        limits.timeout_ms = TIMEOUT_MS;
        let mut over = Vec::new();
        let mut code_seen = String::new();
        for _ in 0..RUNS {
            let p = b.sandbox.package(&pkg).unwrap();
            let mut req = b.req();
            req.limits = Some(limits.clone());
            let t = Instant::now();
            let r = b.sandbox.invoke(&p, req);
            let took = t.elapsed();
            code_seen = r.result.err().map_or_else(|| "ok".into(), |e| e.code);
            over.push(took.saturating_sub(Duration::from_millis(TIMEOUT_MS)));
        }
        over.sort();
        println!(
            "| {what} | {code_seen} | {:.1} | {:.1} |",
            over[RUNS / 2].as_secs_f64() * 1e3,
            over[RUNS - 1].as_secs_f64() * 1e3
        );
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let b = Bench {
        sandbox: Sandbox::new(SandboxConfig {
            limits: Default::default(),
            cache_dir: Some(cache),
        }),
        dir,
    };
    if std::env::args().any(|a| a == "overshoot") {
        overshoot(&b);
        return;
    }
    std::fs::create_dir_all(b.data().join("inbox")).unwrap();
    std::fs::write(b.data().join("inbox/1k.txt"), "x".repeat(1024)).unwrap();
    {
        let c = rusqlite::Connection::open(b.db()).unwrap();
        c.execute_batch("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT);")
            .unwrap();
        for i in 0..100 {
            c.execute(
                "INSERT INTO kv VALUES (?1, ?2)",
                [format!("k{i}"), format!("value {i}")],
            )
            .unwrap();
        }
    }
    let pkgs = b.dir.path().join("pkgs");
    println!(
        "## Per-invocation overhead of a no-op action (in-process: runtime + capability layer)\n"
    );
    println!("| runtime | mode | median µs | p99 µs | n |\n|---|---|---|---|---|");
    for rt in RUNTIMES {
        let (entry, code) = noop(rt);
        let pkg = write_pkg(&pkgs, &format!("bench.noop_{rt}"), rt, entry, &code);
        b.time(&pkg, 200, false);
        row(rt, "warm", &stats(b.time(&pkg, 3000, false)), 3000);
        let label = if rt == "wasm" || rt == "component" {
            "cold (precompiled module from the disk cache)"
        } else {
            "cold (package re-read)"
        };
        row(rt, label, &stats(b.time(&pkg, 300, true)), 300);
    }
    // A true first compile of the module (no disk cache), for reference.
    {
        let (entry, code) = noop("wasm");
        let mut firsts = Vec::new();
        for i in 0..20 {
            let code = code.replace(
                "(i32.const 8192)",
                &format!("(i32.const {})", 8192 + 8 * (i + 1)),
            );
            let pkg = write_pkg(&pkgs, &format!("bench.compile_{i}"), "wasm", entry, &code);
            firsts.extend(b.time(&pkg, 1, false));
        }
        row("wasm", "first compile (no cache)", &stats(firsts), 20);
        let mut firsts = Vec::new();
        for i in 0..20 {
            let code = COMPONENT_NOOP.replace(
                "(i32.const 4096)",
                &format!("(i32.const {})", 4096 + 8 * (i + 1)),
            );
            let pkg = write_pkg(
                &pkgs,
                &format!("bench.ccompile_{i}"),
                "component",
                "main.wat",
                &code,
            );
            firsts.extend(b.time(&pkg, 1, false));
        }
        row("component", "first compile (no cache)", &stats(firsts), 20);
    }

    println!("\n## Capability calls against the same operation natively (in-process)\n");
    println!("| operation | median µs per call | p99 µs per call | n |\n|---|---|---|---|");
    const K: u32 = 200;
    let native_db = {
        let c = rusqlite::Connection::open(b.db()).unwrap();
        let mut v = Vec::new();
        for _ in 0..3000 {
            let t = Instant::now();
            let mut s = c.prepare_cached("SELECT v FROM kv WHERE k = ?1").unwrap();
            let _r: Vec<String> = s
                .query_map(["k42"], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            v.push(t.elapsed());
        }
        stats(v)
    };
    println!(
        "| db read, native rusqlite (prepared, cached statement) | {} | {} | 3000 |",
        us(native_db.median),
        us(native_db.p99)
    );
    let native_fs = {
        let mut v = Vec::new();
        let p = b.data().join("inbox/1k.txt");
        for _ in 0..3000 {
            let t = Instant::now();
            let _ = std::fs::read(&p).unwrap();
            v.push(t.elapsed());
        }
        stats(v)
    };
    println!(
        "| fs read 1 KiB, native std::fs::read | {} | {} | 3000 |",
        us(native_fs.median),
        us(native_fs.p99)
    );
    for cap in ["db", "fs"] {
        for rt in RUNTIMES {
            let (entry, code) = looping(rt, cap, K);
            let pkg = write_pkg(&pkgs, &format!("bench.{cap}_{rt}"), rt, entry, &code);
            let (e0, c0) = looping(rt, cap, 0);
            let base = write_pkg(&pkgs, &format!("bench.{cap}0_{rt}"), rt, e0, &c0);
            b.time(&pkg, 5, false);
            b.time(&base, 5, false);
            let with = stats(b.time(&pkg, 60, false));
            let without = stats(b.time(&base, 60, false));
            let per = |a: Duration, z: Duration| a.saturating_sub(z) / K;
            let label = if cap == "db" {
                "db read (db.query, one row)"
            } else {
                "fs read 1 KiB (fs.read)"
            };
            println!(
                "| {label} from {rt} | {} | {} | {}×{K} |",
                us(per(with.median, without.median)),
                us(per(with.p99, without.median)),
                60
            );
        }
    }

    let exe = std::env::current_exe().unwrap();
    let xyn = exe.parent().and_then(Path::parent).map(|p| p.join("xyn"));
    match xyn.filter(|p| p.is_file()) {
        Some(xyn) => worker_rows(&xyn, &b),
        None => println!(
            "\n(no release `xyn` binary next to the bench: build it with `cargo build --release -p xyn` for the worker rows)"
        ),
    }
}

fn worker_rows(xyn: &Path, b: &Bench) {
    println!("\n## Through the worker (sealed `xyn sandbox-worker` child; JSON over pipes)\n");
    println!("| runtime | mode | median µs | p99 µs | n |\n|---|---|---|---|---|");
    let layout = Layout::new(&b.dir.path().join("node"));
    layout.ensure().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool_for = || {
        WorkerPool::new(PoolConfig {
            program: xyn.to_path_buf(),
            prefix: vec!["sandbox-worker".into()],
            worker: layout.worker_args(false, Default::default()),
            size: 1,
            max_idle: 0,
        })
    };
    let msg = |pkg: &Path| InvokeMsg {
        id: 0,
        package: pkg.to_path_buf(),
        data_dir: pkg.file_name().map(|n| layout.data(&n.to_string_lossy())),
        db_path: None,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        input: Value::Object(Default::default()),
    };
    for r in RUNTIMES {
        let (entry, code) = noop(r);
        let pkg = write_pkg(
            &layout.packages(),
            &format!("bench.noop_{r}"),
            r,
            entry,
            &code,
        );
        let name = format!("bench.noop_{r}");
        layout.prepare_action(&name).unwrap();
        let roots = layout.roots(&name, &pkg);
        let pool = pool_for();
        let warm: Vec<Duration> = rt.block_on(async {
            let mut v = Vec::new();
            for i in 0..2200 {
                let t = Instant::now();
                let rep = pool
                    .invoke(&roots, msg(&pkg), Duration::from_secs(30))
                    .await
                    .unwrap();
                if i >= 200 {
                    v.push(t.elapsed());
                }
                assert!(rep.result.is_ok(), "{:?}", rep.result);
            }
            v
        });
        row(r, "warm (same worker)", &stats(warm), 2000);
        let cold_module: Vec<Duration> = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..200 {
                pool.forget().await;
                let t = Instant::now();
                pool.invoke(&roots, msg(&pkg), Duration::from_secs(30))
                    .await
                    .unwrap();
                v.push(t.elapsed());
            }
            v
        });
        let label = if r == "wasm" || r == "component" {
            "cold module (caches dropped; precompiled from disk)"
        } else {
            "cold package (caches dropped)"
        };
        row(r, label, &stats(cold_module), 200);
        let cold_process: Vec<Duration> = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..20 {
                let p = pool_for();
                let t = Instant::now();
                p.invoke(&roots, msg(&pkg), Duration::from_secs(30))
                    .await
                    .unwrap();
                v.push(t.elapsed());
            }
            v
        });
        row(
            r,
            "cold worker (spawn + seal + first invocation)",
            &stats(cold_process),
            20,
        );
    }
}
