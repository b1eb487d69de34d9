//! The sealed worker's own limits, end to end with the real binary: denials reach the node
//! as they happen (so a worker the watchdog kills still leaves them, and a complete
//! incident), and a worker stays within its action's memory budget plus the stated
//! overhead when a guest makes SQLite sort far more than that.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use xyn_sandbox::action::{SandboxHost, SandboxedAction};
use xyn_sandbox::install::{Layout, install};
use xyn_sandbox::limits::WORKER_MEMORY_OVERHEAD;
use xyn_sandbox::pool::{Partial, PoolConfig, WorkerPool};
use xyn_sandbox::{InvokeReport, Manifest};

const RUNTIMES: [(&str, &str); 3] = [("lua", "main.lua"), ("js", "main.js"), ("wasm", "main.wat")];

/// A node's sandbox host over `data`, with the real worker binary.
fn host(data: &Path) -> Arc<SandboxHost> {
    let layout = Layout::new(data);
    let pool = WorkerPool::new(PoolConfig {
        program: PathBuf::from(env!("CARGO_BIN_EXE_xyn")),
        prefix: vec!["sandbox-worker".into()],
        worker: layout.worker_args(false, Default::default()),
        size: 2,
        max_idle: 0,
    });
    Arc::new(SandboxHost {
        pool,
        layout,
        limits: Default::default(),
    })
}

/// Installs a package and returns it as the node's action.
fn action(
    host: &Arc<SandboxHost>,
    src: &Path,
    name: &str,
    entry: &str,
    code: &str,
    extra: &str,
) -> SandboxedAction {
    let dir = src.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(entry), code).unwrap();
    let runtime = entry
        .rsplit('.')
        .next()
        .map(|e| if e == "wat" { "wasm" } else { e })
        .unwrap();
    std::fs::write(
        dir.join("xyn-action.toml"),
        format!("name = \"{name}\"\nruntime = \"{runtime}\"\nentry = \"{entry}\"\n{extra}\n"),
    )
    .unwrap();
    install(&dir, &host.layout).unwrap();
    let installed = host.layout.package(name);
    SandboxedAction::new(host.clone(), Manifest::load(&installed).unwrap(), installed).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A core module with a bump `alloc` and the `call` import; `body` defines `handle`.
fn wat(body: &str) -> String {
    format!(
        r#"(module
  (import "xyn" "call" (func $call (param i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $len)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.const 16)))))
    (local.get $p))
  {body}
)"#
    )
}

/// Six refused calls, then a loop that never ends (in `hang`).
fn deny_six_then(runtime: &str, hang: &str) -> String {
    match runtime {
        "lua" => format!(
            "function handle(input)\n  for i = 1, 6 do pcall(xyn.fs.read, '../escape-' .. i) end\n  {hang}\nend\n"
        ),
        "js" => format!(
            "export function handle(input) {{\n  for (let i = 1; i <= 6; i++) {{ try {{ xyn.fs.read('../escape-' + i); }} catch (e) {{}} }}\n  {hang}\n}}\n"
        ),
        _ => wat(r#"(data (i32.const 1024) "fs.read")
  (data (i32.const 1100) "{\"path\":\"../escape\"}")
  (func (export "handle") (param i32 i32) (result i64)
    (local $i i32)
    (loop $deny
      (drop (call $call (i32.const 1024) (i32.const 7) (i32.const 1100) (i32.const 20)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $deny (i32.lt_u (local.get $i) (i32.const 6))))
    (loop $l (br $l))
    (i64.const 0))"#),
    }
}

fn assert_six_denials(r: &InvokeReport, what: &str) {
    assert_eq!(r.denials.len(), 6, "{what}: {:?}", r.denials);
    assert!(
        r.denials.iter().all(|d| d.capability == "fs.read"),
        "{what}"
    );
}

#[test]
fn denials_reach_the_node_before_the_watchdog_kills_the_worker() {
    let d = tempfile::tempdir().unwrap();
    let host = host(&d.path().join("data"));
    let rt = rt();

    // The reproduction: six denials, then Lua's pattern matcher, which runs no hooks at
    // all, so only the watchdog ends it. The node's report keeps everything.
    let find = "local s = string.rep('a', 200000)\n  return {m = string.find(s, '(.-)(.-)(.-)(.-)(.-)(.-)(.-)b')}";
    let a = action(
        &host,
        d.path(),
        "t.deny_find",
        "main.lua",
        &deny_six_then("lua", find),
        "[limits]\ntimeout_ms = 300\n",
    );
    let r = rt.block_on(a.invoke(json!({"n": 1}))).unwrap();
    assert_eq!(r.result.as_ref().unwrap_err().code, "budget.timeout");
    assert_six_denials(&r, "killed worker");
    assert_eq!(r.digest.len(), 64, "no module digest: {r:?}");
    assert!(r.usage.wall_us >= 300_000, "{:?}", r.usage);
    assert!(r.usage.memory_bytes > 0, "no peak memory: {:?}", r.usage);
    let inc = r.incident.as_ref().unwrap();
    assert_eq!(inc["report"]["denials"].as_array().map(Vec::len), Some(6));
    assert_eq!(inc["module"]["sha256"], json!(r.digest));
    assert_eq!(inc["input"], json!({"n": 1}));
    assert_eq!(inc["report"]["capability_calls"]["fs.read"], 6);
    // Every denial becomes an `xyn.cap.denied` event of the step.
    let events = xyn_sandbox::action::records(&r)
        .into_iter()
        .filter(|rec| matches!(rec, xyn_actions::Record::Event { name, .. } if name == "xyn.cap.denied"))
        .count();
    assert_eq!(events, 6);

    // The same with a hang inside a gsub callback: the worker's own budget ends it now.
    let gsub = "return {s = string.gsub('aaaa', 'a', function(c) while true do end end)}";
    let a = action(
        &host,
        d.path(),
        "t.deny_gsub",
        "main.lua",
        &deny_six_then("lua", gsub),
        "[limits]\ntimeout_ms = 300\n",
    );
    let r = rt.block_on(a.invoke(json!({}))).unwrap();
    assert_eq!(r.result.as_ref().unwrap_err().code, "budget.timeout");
    assert_six_denials(&r, "gsub");
    assert_eq!(
        r.incident.as_ref().unwrap()["report"]["denials"]
            .as_array()
            .map(Vec::len),
        Some(6)
    );

    // Every runtime: the watchdog (here given 1.5 s, far less than the guest's own
    // 60 s) kills a worker that is still spinning; the denials were already streamed.
    for (runtime, entry) in RUNTIMES {
        let hang = match runtime {
            "lua" => "while true do end",
            "js" => "for (;;) {}",
            _ => "",
        };
        let name = format!("t.deny_spin_{runtime}");
        let a = action(
            &host,
            d.path(),
            &name,
            entry,
            &deny_six_then(runtime, hang),
            "[limits]\ntimeout_ms = 60000\nfuel = 100000000000000\n",
        );
        let roots = host.layout.roots(&name, &host.layout.package(&name));
        let msg = xyn_sandbox::worker::InvokeMsg {
            id: 0,
            package: host.layout.package(&name),
            data_dir: Some(host.layout.data(&name)),
            db_path: None,
            env: Default::default(),
            secrets: Default::default(),
            input: json!({}),
        };
        let mut partial = Partial::default();
        let res = rt.block_on(host.pool.invoke_tracked(
            &roots,
            msg,
            Duration::from_millis(1500),
            &mut partial,
        ));
        assert!(res.is_err(), "{runtime}: the worker answered");
        assert_eq!(partial.denials.len(), 6, "{runtime}: {:?}", partial.denials);
        assert_eq!(partial.digest.len(), 64, "{runtime}");
        drop(a);
    }
}

/// The peak resident memory of the live workers sealed to `package`.
fn worker_peak_rss(package: &Path) -> Vec<u64> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        };
        if field("PPid:").as_deref() != Some(me.as_str()) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(&*package.to_string_lossy()) {
            continue;
        }
        if let Some(kb) = field("VmHWM:").and_then(|v| v.parse::<u64>().ok()) {
            out.push(kb * 1024);
        }
    }
    out
}

/// A guest that sorts ~200 MB of random blobs in SQLite (an in-memory sort) with a
/// 16 MiB budget, catching the error its call returns.
fn big_sort(runtime: &str) -> String {
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT x, randomblob(100) AS b FROM c ORDER BY b";
    match runtime {
        "lua" => format!(
            "function handle()\n  local ok, v = pcall(xyn.db.query, \"{sql}\", {{}})\n  return {{ok = ok}}\nend\n"
        ),
        "js" => format!(
            "export function handle() {{\n  try {{ xyn.db.query(\"{sql}\", []); return {{ok: true}}; }} catch (e) {{ return {{ok: false}}; }}\n}}\n"
        ),
        _ => {
            let args = json!({"sql": sql, "params": []}).to_string();
            let esc = args.replace('\\', "\\\\").replace('"', "\\\"");
            wat(&format!(
                r#"(data (i32.const 1024) "db.query")
  (data (i32.const 1100) "{esc}")
  (func (export "handle") (param i32 i32) (result i64)
    (call $call (i32.const 1024) (i32.const 8) (i32.const 1100) (i32.const {})))"#,
                args.len()
            ))
        }
    }
}

#[test]
fn a_workers_memory_stays_within_its_budget_plus_the_overhead() {
    let d = tempfile::tempdir().unwrap();
    let host = host(&d.path().join("data"));
    let rt = rt();
    const BUDGET: u64 = 16 << 20;
    for (runtime, entry) in RUNTIMES {
        let name = format!("t.sort_{runtime}");
        let a = action(
            &host,
            d.path(),
            &name,
            entry,
            &big_sort(runtime),
            "[capabilities]\ndb = true\n[limits]\nmemory_mb = 16\ntimeout_ms = 60000\nfuel = 100000000000000\n",
        );
        let r = rt.block_on(a.invoke(json!({}))).unwrap();
        let e = r.result.as_ref().unwrap_err();
        assert_eq!(e.code, "budget.memory_exceeded", "{runtime}: {e:?}");
        let peaks = worker_peak_rss(&host.layout.package(&name));
        assert!(!peaks.is_empty(), "{runtime}: no live worker found");
        for peak in peaks {
            assert!(
                peak < BUDGET + WORKER_MEMORY_OVERHEAD,
                "{runtime}: the worker peaked at {} MiB",
                peak >> 20
            );
        }
    }
    // The worker says how it is limited.
    let seal = host.pool.seal_report().unwrap();
    assert!(
        seal.notes.iter().any(|n| n.contains("RLIMIT_DATA")),
        "{:?}",
        seal.notes
    );
}
