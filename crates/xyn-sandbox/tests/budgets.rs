//! Budgets that host calls and C callbacks used to escape, written as the attacks: CPU
//! burnt inside Lua C-call callbacks (`string.gsub` replacement functions, `table.sort`
//! comparators, `__gc`), JavaScript's native `Array.prototype.join`, a recursive CTE in
//! the action's database (every runtime); memory grown by SQLite past the action's budget;
//! Lua seeing JSON null as a truthy value; the installer following links planted in an
//! action's data dir. In-process, as the worker runs them; the worker's own limits are
//! tested end to end in `crates/xyn/tests/sandbox_budgets.rs`.
#![allow(clippy::unwrap_used)] // test helpers: a failed set-up step should panic

mod support;

use support::{ALL, Rt, wat_forward};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xyn_sandbox::caps::http::NoHttp;
use xyn_sandbox::{InvokeReport, InvokeRequest, Sandbox, SandboxConfig};

/// A sandbox over a temporary directory; each `run` writes a package and invokes it once.
struct Bench {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        let sandbox = Sandbox::new(SandboxConfig {
            limits: Default::default(),
            cache_dir: Some(dir.path().join("cache")),
        });
        Bench { dir, sandbox }
    }

    fn run(&self, rt: Rt, tag: &str, code: &str, manifest: &str, input: Value) -> InvokeReport {
        let name = format!("t.{}_{tag}", rt.name());
        let pkg = self.dir.path().join("pkgs").join(&name);
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join(rt.entry()), code).unwrap();
        std::fs::write(
            pkg.join("xyn-action.toml"),
            format!(
                "name = \"{name}\"\nruntime = \"{}\"\nentry = \"{}\"\n{manifest}\n",
                rt.name(),
                rt.entry()
            ),
        )
        .unwrap();
        let p = self.sandbox.package(&pkg).unwrap();
        self.sandbox.invoke(
            &p,
            InvokeRequest {
                input,
                data_dir: Some(self.dir.path().join("data")),
                db_path: Some(self.dir.path().join("db").join(format!("{name}.sqlite"))),
                env: Default::default(),
                secrets: Default::default(),
                http: Arc::new(NoHttp),
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

/// A guest that runs `input.sql` through `db.query` and *catches* the error its call
/// returns, answering `{"error": …}` — so only the sandbox can turn a spent budget into
/// the invocation's end.
fn db_prober(rt: Rt) -> String {
    match rt {
        Rt::Wasm => wat_forward("db.query"),
        Rt::Lua => "function handle(input)\n  local ok, v = pcall(xyn.db.query, input.sql, {})\n  if ok then return {ok = v} end\n  return {error = tostring(v)}\nend\n".into(),
        Rt::Js => "export function handle(input) {\n  try { return {ok: xyn.db.query(input.sql, [])}; } catch (e) { return {error: String(e.message)}; }\n}\n".into(),
    }
}

/// A statement that never ends: SQLite counts forever inside one host call.
const ENDLESS_CTE: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) AS n FROM c";

#[test]
fn a_recursive_cte_is_stopped_by_the_deadline_in_every_runtime() {
    let b = Bench::new();
    for rt in ALL {
        let t = Instant::now();
        let r = b.run(
            rt,
            "cte_time",
            &db_prober(rt),
            "[capabilities]\ndb = true\n[limits]\ntimeout_ms = 300\nfuel = 100000000000000\n",
            json!({"sql": ENDLESS_CTE, "params": []}),
        );
        let took = t.elapsed();
        assert_eq!(code_of(&r), "budget.timeout", "{rt:?}: {:?}", r.result);
        assert!(took < Duration::from_secs(3), "{rt:?}: took {took:?}");
        assert!(r.incident.is_some(), "{rt:?}: no incident");
    }
}

#[test]
fn a_recursive_cte_is_charged_to_the_cpu_budget_in_every_runtime() {
    let b = Bench::new();
    for rt in ALL {
        let r = b.run(
            rt,
            "cte_fuel",
            &db_prober(rt),
            "[capabilities]\ndb = true\n[limits]\ntimeout_ms = 60000\nfuel = 2000000\n",
            json!({"sql": ENDLESS_CTE, "params": []}),
        );
        assert_eq!(
            code_of(&r),
            "budget.fuel_exceeded",
            "{rt:?}: {:?}",
            r.result
        );
        // The statement's steps were charged (the guest alone used almost nothing).
        assert!(
            r.usage.fuel >= 1_000_000 || rt == Rt::Wasm,
            "{rt:?}: {:?}",
            r.usage
        );
    }
    // A bounded statement within the budget still runs.
    let r = b.run(
        Rt::Lua,
        "cte_small",
        &db_prober(Rt::Lua),
        "[capabilities]\ndb = true\n[limits]\nfuel = 2000000\n",
        json!({"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) SELECT count(*) AS n FROM c"}),
    );
    assert_eq!(r.result.unwrap()["ok"], json!([{"n": 1000}]));
}

#[test]
fn sqlite_cannot_grow_past_the_actions_memory_budget() {
    let b = Bench::new();
    // An in-memory sort of ~200 MB of random blobs with a 16 MiB budget.
    let sort = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) \
                SELECT x, randomblob(100) AS b FROM c ORDER BY b";
    for rt in ALL {
        let r = b.run(
            rt,
            "sort",
            &db_prober(rt),
            "[capabilities]\ndb = true\n[limits]\nmemory_mb = 16\ntimeout_ms = 60000\nfuel = 100000000000000\n",
            json!({"sql": sort, "params": []}),
        );
        assert_eq!(
            code_of(&r),
            "budget.memory_exceeded",
            "{rt:?}: {:?}",
            r.result
        );
    }
}

/// A Lua guest spinning inside a C-call callback: hooks run there, but a yield cannot.
fn lua_callback_spin(kind: &str) -> String {
    let body = match kind {
        "gsub" => "return {s = string.gsub('aaaa', 'a', function(c) while true do end end)}",
        "sort" => {
            "local t = {}\n  for i = 1, 100 do t[i] = i end\n  table.sort(t, function(a, b) while true do end end)\n  return {}"
        }
        // The guest catches the budget's error inside the callback and keeps going.
        "gsub_pcall" => {
            "return {s = string.gsub('aaaa', 'a', function(c) while true do pcall(function() while true do end end) end end)}"
        }
        other => panic!("{other}"),
    };
    format!("function handle(input)\n  {body}\nend\n")
}

#[test]
fn lua_callbacks_called_from_c_functions_are_stopped_by_both_budgets() {
    let b = Bench::new();
    for kind in ["gsub", "sort", "gsub_pcall"] {
        let t = Instant::now();
        let r = b.run(
            Rt::Lua,
            &format!("{kind}_time"),
            &lua_callback_spin(kind),
            "[limits]\ntimeout_ms = 300\nfuel = 100000000000000\n",
            json!({}),
        );
        let took = t.elapsed();
        assert_eq!(code_of(&r), "budget.timeout", "{kind}: {:?}", r.result);
        assert!(took < Duration::from_secs(3), "{kind}: took {took:?}");
        let r = b.run(
            Rt::Lua,
            &format!("{kind}_fuel"),
            &lua_callback_spin(kind),
            "[limits]\ntimeout_ms = 60000\nfuel = 2000000\n",
            json!({}),
        );
        assert_eq!(
            code_of(&r),
            "budget.fuel_exceeded",
            "{kind}: {:?}",
            r.result
        );
        assert!(r.usage.fuel >= 1_000_000, "{kind}: {:?}", r.usage);
    }
}

#[test]
fn lua_finalizers_which_run_outside_the_budgets_are_refused() {
    let b = Bench::new();
    // A `__gc` that would spin where no hook runs (Lua turns hooks off for finalizers).
    let r = b.run(
        Rt::Lua,
        "gc",
        "function handle(input)\n  for i = 1, 1000 do setmetatable({}, {__gc = function() while true do end end}) end\n  return {}\nend\n",
        "[limits]\ntimeout_ms = 300\n",
        json!({}),
    );
    let e = r.result.unwrap_err();
    assert_eq!(e.code, "action.failed", "{e:?}");
    assert!(e.message.contains("__gc"), "{e:?}");
    // Other metatables still work.
    let r = b.run(
        Rt::Lua,
        "mt",
        "function handle(input)\n  local t = setmetatable({}, {__index = function(_, k) return k .. '!' end})\n  return {v = t.x}\nend\n",
        "",
        json!({}),
    );
    assert_eq!(r.result.unwrap(), json!({"v": "x!"}));
}

#[test]
fn js_join_of_a_huge_array_is_stopped_by_both_budgets() {
    let b = Bench::new();
    let code = "export function handle() { return {n: new Array(4294967295).join('').length}; }\n";
    let t = Instant::now();
    let r = b.run(
        Rt::Js,
        "join_time",
        code,
        "[limits]\ntimeout_ms = 300\nfuel = 100000000000000\n",
        json!({}),
    );
    let took = t.elapsed();
    assert_eq!(code_of(&r), "budget.timeout", "{:?}", r.result);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let r = b.run(
        Rt::Js,
        "join_fuel",
        code,
        "[limits]\ntimeout_ms = 60000\nfuel = 2000000\n",
        json!({}),
    );
    assert_eq!(code_of(&r), "budget.fuel_exceeded", "{:?}", r.result);
    // join keeps its meaning for ordinary and large arrays, typed arrays too.
    let r = b.run(
        Rt::Js,
        "join_ok",
        "export function handle() {\n  const big = Array.from({length: 10000}, (_, i) => i % 10);\n  return {a: [1, null, 'x', undefined, [2, 3]].join(), b: [1, 2].join(' - '), c: big.join('').length, d: big.join('').slice(0, 12), e: new Uint8Array(5000).join('').length, f: String([1, [2, 3]])};\n}\n",
        "",
        json!({}),
    );
    assert_eq!(
        r.result.unwrap(),
        json!({"a": "1,,x,,2,3", "b": "1 - 2", "c": 10000, "d": "012345678901", "e": 5000, "f": "1,2,3"})
    );
}

#[test]
fn lua_absent_values_are_nil_and_json_null_round_trips_through_xyn_null() {
    let b = Bench::new();
    let code = r#"function handle(input)
  local missing = xyn.env.get("NOT_ALLOWED")
  xyn.db.exec("CREATE TABLE IF NOT EXISTS t(a, b)", {})
  xyn.db.exec("DELETE FROM t", {})
  xyn.db.exec("INSERT INTO t(a, b) VALUES (1, NULL)", {})
  local row = xyn.db.query("SELECT a, b FROM t", {})[1]
  local arr = json.decode('[1, null, 3]')
  return {
    env_is_nil = missing == nil,
    env_truthy = (xyn.env.get("NOT_ALLOWED") and true) or false,
    null_column_is_nil = row.b == nil,
    input_null_is_nil = input.gone == nil,
    array_keeps_its_null = arr[2] == xyn.null and arr[2] == json.null and #arr == 3,
    top_null_is_nil = json.decode("null") == nil,
    encoded = json.encode(arr),
    echoed = arr,
  }
end
"#;
    let r = b.run(
        Rt::Lua,
        "null",
        code,
        "[capabilities]\ndb = true\n",
        json!({"gone": null}),
    );
    assert_eq!(
        r.result.unwrap(),
        json!({
            "env_is_nil": true,
            "env_truthy": false,
            "null_column_is_nil": true,
            "input_null_is_nil": true,
            "array_keeps_its_null": true,
            "top_null_is_nil": true,
            "encoded": "[1,null,3]",
            "echoed": [1, null, 3],
        })
    );
    assert_eq!(r.denials.len(), 2, "{:?}", r.denials);
}

/// An upgrade of a package whose `data/` holds `notes.txt` and `sub/seed.txt`, after the
/// guest planted links in its data dir: `notes.txt` → a file outside, `sub` → a directory
/// outside, `fresh.txt` → a path outside that does not exist yet.
#[test]
fn installing_never_follows_links_planted_in_the_data_dir() {
    use xyn_sandbox::install::{Layout, install};
    let d = tempfile::tempdir().unwrap();
    let pkg = d.path().join("pkg");
    std::fs::create_dir_all(pkg.join("data/sub")).unwrap();
    std::fs::write(
        pkg.join("xyn-action.toml"),
        "name = \"t.seeded\"\nruntime = \"lua\"\nentry = \"main.lua\"\n",
    )
    .unwrap();
    std::fs::write(pkg.join("main.lua"), "function handle() return {} end\n").unwrap();
    std::fs::write(pkg.join("data/notes.txt"), "seed").unwrap();
    std::fs::write(pkg.join("data/fresh.txt"), "seed").unwrap();
    std::fs::write(pkg.join("data/sub/seed.txt"), "seed").unwrap();
    let layout = Layout::new(&d.path().join("xyn-data"));
    install(&pkg, &layout).unwrap();
    let data = layout.data("t.seeded");
    assert_eq!(
        std::fs::read_to_string(data.join("sub/seed.txt")).unwrap(),
        "seed"
    );

    // What the guest plants (it can write its data dir; a runtime escape can make links).
    let outside = d.path().join("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("victim.txt"), "untouched").unwrap();
    for f in ["notes.txt", "fresh.txt"] {
        std::fs::remove_file(data.join(f)).unwrap();
    }
    std::fs::remove_dir_all(data.join("sub")).unwrap();
    let link = |target: &Path, at: &str| std::os::unix::fs::symlink(target, data.join(at)).unwrap();
    link(&outside.join("victim.txt"), "notes.txt");
    link(&outside.join("dir"), "sub");
    link(&outside.join("created-by-install.txt"), "fresh.txt");

    install(&pkg, &layout).unwrap();
    assert_eq!(
        std::fs::read_to_string(outside.join("victim.txt")).unwrap(),
        "untouched"
    );
    assert_eq!(
        std::fs::read_dir(outside.join("dir")).unwrap().count(),
        0,
        "a file was created through the planted directory link"
    );
    assert!(!outside.join("created-by-install.txt").exists());
    // The links are kept as they are, not replaced or followed.
    for at in ["notes.txt", "sub", "fresh.txt"] {
        assert!(
            std::fs::symlink_metadata(data.join(at))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{at}"
        );
    }
}
