//! Lua 5.4 (mlua, vendored). The state is built with an explicit library set — base,
//! table, string, math, utf8, coroutine; never `io`, `os`, `package` or `debug` — and
//! `load`, `loadfile`, `dofile`, `require`, `collectgarbage` and `string.dump` are removed.
//! The entry is loaded as text only (binary chunks are refused). Globals offered: `xyn`
//! (`xyn.fs`, `xyn.http`, `xyn.env`, `xyn.db`, `xyn.time`, `xyn.crypto`, `xyn.log`) and
//! `json` (`json.encode`, `json.decode`).
//!
//! Warm starts: an action's state (entry chunk run, `handle` found) is kept per thread and
//! reused by its next invocation of the same code and limits; any failure throws it away.
//!
//! Budgets: a memory limit on the allocator; an instruction-count hook that also checks the
//! wall clock; when either budget is spent the hook *yields* the coroutine the action runs
//! in (a yield passes through `pcall`, an error would not). A C function (a pathological
//! `string.find`) does not run hooks: the node's watchdog ends the worker process at the
//! deadline (see `pool`).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::debug::Debug as LuaDebug;
use mlua::thread::ThreadStatus;
use mlua::{
    Function, HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, Thread, Value as LuaValue,
    VmState,
};
use serde_json::Value;

use super::{GuestOutcome, GuestRun, WarmCache, guest_error};
use crate::caps::Caps;
use crate::error::{SandboxError, codes};
use crate::limits::Usage;

const PRELUDE: &str = include_str!("prelude.lua");
/// Instructions between two hook calls (at most; less for small fuel budgets).
const HOOK_EVERY: u64 = 1000;
/// The error a spent budget raises where a yield cannot happen.
const BUDGET_SPENT: &str = "the invocation's budget is spent";

#[derive(Clone, Copy, PartialEq)]
enum Tripped {
    No,
    Fuel,
    Time,
}

/// A loaded Lua action: its state (libraries, prelude, entry chunk run, `handle` found) and
/// the cells its instruction hook shares with the invocation in progress. Kept per action (by
/// code digest and limits) for warm invocations, like a warm serverless function: globals the
/// action sets may persist between invocations of the *same* action, never between actions.
/// Dropped after any failure.
struct Warm {
    /// `None` until the first invocation has run the entry chunk.
    handle: Option<Function>,
    lua: Lua,
    tripped: Rc<Cell<Tripped>>,
    fuel_used: Rc<Cell<u64>>,
    fuel: Rc<Cell<u64>>,
    deadline: Rc<Cell<Instant>>,
}

/// The cells the capability binding charges host work to (kept in the state's app data).
#[derive(Clone)]
struct Meter {
    tripped: Rc<Cell<Tripped>>,
    fuel_used: Rc<Cell<u64>>,
    fuel: Rc<Cell<u64>>,
}

thread_local! {
    static WARM: WarmCache<Warm> = WarmCache::new();
}

/// Drops every loaded Lua action of this thread (the next invocation is a cold start).
pub fn forget() {
    WARM.with(WarmCache::clear);
}

/// Runs one invocation of a Lua action, in its loaded state when a previous invocation of the
/// same code (`digest`) with the same limits succeeded, else in a fresh one.
pub fn run(source: &str, chunk_name: &str, digest: &str, run: GuestRun<'_>) -> GuestOutcome {
    let started = Instant::now();
    let limits = run.limits;
    let every = HOOK_EVERY.min(limits.fuel.max(1)) as u32;
    let key = format!("{digest}:{}:{every}", limits.memory_bytes);
    let warm = WARM.with(|w| w.take(&key));
    let deadline = started + Duration::from_millis(limits.timeout_ms);
    let warm = match warm.map_or_else(
        || load(limits.memory_bytes, every, deadline, limits.fuel),
        Ok,
    ) {
        Ok(w) => w,
        Err(e) => {
            return GuestOutcome {
                result: Err(SandboxError::failed(format!("cannot start Lua: {e}"))),
                caps: run.caps,
                usage: Usage::default(),
            };
        }
    };
    warm.tripped.set(Tripped::No);
    warm.fuel_used.set(0);
    warm.fuel.set(limits.fuel);
    warm.deadline.set(deadline);
    warm.lua.set_app_data(run.caps);

    let mut warm = warm;
    let result = invoke(
        &mut warm,
        source,
        chunk_name,
        run.input,
        limits.timeout_ms,
        started,
    )
    .and_then(|out| {
        if out.len() as u64 > limits.max_output_bytes {
            Err(SandboxError::new(
                codes::OUTPUT_EXCEEDED,
                format!(
                    "the output is {} bytes; the limit is {}",
                    out.len(),
                    limits.max_output_bytes
                ),
            ))
        } else {
            Ok(out)
        }
    });
    let fuel = warm.fuel_used.get().min(limits.fuel);
    let outcome = finish(&warm.lua, result, started, fuel);
    if outcome.result.is_ok() {
        WARM.with(|w| w.keep(key, warm));
    }
    outcome
}

/// A fresh state with the memory limit and the instruction hook; `handle` is filled in by the
/// first invocation, which runs the entry chunk under its own budget.
fn load(memory_bytes: u64, every: u32, deadline: Instant, fuel: u64) -> mlua::Result<Warm> {
    let lua = new_state()?;
    let tripped = Rc::new(Cell::new(Tripped::No));
    let fuel_used = Rc::new(Cell::new(0u64));
    let fuel = Rc::new(Cell::new(fuel));
    let deadline = Rc::new(Cell::new(deadline));
    {
        let (tripped, fuel_used, fuel, deadline) = (
            tripped.clone(),
            fuel_used.clone(),
            fuel.clone(),
            deadline.clone(),
        );
        // Whether the last hook call asked for a yield: a hook called again after that is
        // running where the yield could not happen (inside a C function that called back
        // into Lua — a `string.gsub` replacement function, a `table.sort` comparator —
        // which mlua silently ignores), so it raises an error instead, which unwinds
        // through the C function; the next hook in a yieldable frame yields.
        let yielded = Cell::new(false);
        let hook = move |_: &Lua, _: &LuaDebug| -> mlua::Result<VmState> {
            if tripped.get() != Tripped::No {
                if yielded.replace(!yielded.get()) {
                    return Err(mlua::Error::runtime(BUDGET_SPENT));
                }
                return Ok(VmState::Yield);
            }
            yielded.set(false);
            let used = fuel_used.get() + u64::from(every);
            fuel_used.set(used);
            if used > fuel.get() {
                tripped.set(Tripped::Fuel);
                yielded.set(true);
                return Ok(VmState::Yield);
            }
            if Instant::now() >= deadline.get() {
                tripped.set(Tripped::Time);
                yielded.set(true);
                return Ok(VmState::Yield);
            }
            Ok(VmState::Continue)
        };
        lua.set_global_hook(HookTriggers::new().every_nth_instruction(every), hook)?;
    }
    lua.set_app_data(Meter {
        tripped: tripped.clone(),
        fuel_used: fuel_used.clone(),
        fuel: fuel.clone(),
    });
    let _ = lua.set_memory_limit(usize::try_from(memory_bytes).unwrap_or(usize::MAX));
    Ok(Warm {
        handle: None,
        lua,
        tripped,
        fuel_used,
        fuel,
        deadline,
    })
}

fn finish(
    lua: &Lua,
    result: Result<Vec<u8>, SandboxError>,
    started: Instant,
    fuel: u64,
) -> GuestOutcome {
    let usage = Usage {
        wall_us: started.elapsed().as_micros() as u64,
        fuel,
        memory_bytes: lua.used_memory() as u64,
        output_bytes: result.as_ref().map_or(0, |o| o.len() as u64),
    };
    let caps = lua.remove_app_data::<Caps>().unwrap_or_else(|| {
        Caps::new(crate::caps::CapsConfig {
            action: String::new(),
            capabilities: Default::default(),
            data_dir: None,
            db_path: None,
            env: Default::default(),
            secrets: Default::default(),
            http: std::sync::Arc::new(crate::caps::http::NoHttp),
            deadline: Instant::now(),
        })
    });
    GuestOutcome {
        result,
        caps,
        usage,
    }
}

fn new_state() -> mlua::Result<Lua> {
    let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    let g = lua.globals();
    for name in [
        "load",
        "loadfile",
        "dofile",
        "require",
        "collectgarbage",
        "loadstring",
    ] {
        g.raw_set(name, LuaValue::Nil)?;
    }
    if let Ok(string) = g.get::<mlua::Table>("string") {
        string.raw_set("dump", LuaValue::Nil)?;
    }
    let call = lua.create_function(|lua, (name, args): (String, LuaValue)| {
        let args: Value = if args.is_nil() {
            Value::Object(Default::default())
        } else {
            lua.from_value(args)?
        };
        let meter = lua.app_data_ref::<Meter>().map(|m| m.clone());
        let left = meter
            .as_ref()
            .map_or(u64::MAX, |m| m.fuel.get().saturating_sub(m.fuel_used.get()));
        let (res, spent) = {
            let mut caps = lua
                .app_data_mut::<Caps>()
                .ok_or_else(|| mlua::Error::runtime("no capabilities"))?;
            let (res, used) = caps.call_metered(&name, &args, left);
            (res, (used, caps.spent()))
        };
        // Host work (SQLite steps) is charged to the guest's fuel; a budget it ran out of
        // stops the guest at its next hook.
        if let Some(m) = &meter {
            m.fuel_used.set(m.fuel_used.get().saturating_add(spent.0));
            match spent.1 {
                Some(codes::FUEL_EXCEEDED) => m.tripped.set(Tripped::Fuel),
                Some(codes::TIMEOUT) => m.tripped.set(Tripped::Time),
                _ => {}
            }
        }
        match res {
            Ok(v) => Ok((true, to_lua(lua, v)?)),
            Err(e) => Ok((false, LuaValue::String(lua.create_string(&e.message)?))),
        }
    })?;
    g.raw_set("__xyn_call", call)?;
    // Whether the invocation's budget is spent: the prelude's `pcall`, `xpcall` and
    // `coroutine.resume` re-raise a caught error then, so a guest cannot swallow the error
    // a spent budget raises where it cannot yield (inside a C function's callback).
    let spent = lua.create_function(|lua, ()| {
        Ok(lua
            .app_data_ref::<Meter>()
            .is_some_and(|m| m.tripped.get() != Tripped::No))
    })?;
    g.raw_set("__xyn_spent", spent)?;
    let json = lua.create_table()?;
    json.raw_set(
        "encode",
        lua.create_function(|lua, v: LuaValue| {
            let v: Value = lua.from_value(v)?;
            Ok(v.to_string())
        })?,
    )?;
    json.raw_set(
        "decode",
        lua.create_function(|lua, s: String| {
            let v: Value = serde_json::from_str(&s).map_err(mlua::Error::external)?;
            to_lua(lua, v)
        })?,
    )?;
    json.raw_set("null", lua.null())?;
    g.raw_set("json", json)?;
    lua.load(PRELUDE)
        .set_name("=xyn-prelude")
        .set_mode(ChunkMode::Text)
        .exec()?;
    Ok(lua)
}

/// JSON to Lua the way a Lua programmer expects absent values: `null` on its own (an
/// absent result such as `xyn.env.get` of a name not allowed) and `null` as an object
/// member (a missing key) are `nil`, so `if xyn.env.get("X") then` is false. Only a `null`
/// inside an array, where `nil` would leave a hole and shift what follows, becomes the
/// sentinel `xyn.null` (also `json.null`), which `json.encode` and the output turn back
/// into `null`.
fn to_lua(lua: &Lua, v: Value) -> mlua::Result<LuaValue> {
    fn strip(v: Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(strip).collect()),
            other => other,
        }
    }
    match v {
        Value::Null => Ok(LuaValue::Nil),
        v => lua.to_value(&strip(v)),
    }
}

/// Runs `f` in a coroutine so that a spent budget can yield out of it.
fn resume(
    lua: &Lua,
    f: Function,
    arg: LuaValue,
    tripped: &Rc<Cell<Tripped>>,
    timeout_ms: u64,
    started: Instant,
) -> Result<LuaValue, SandboxError> {
    let th: Thread = lua
        .create_thread(f)
        .map_err(|e| SandboxError::failed(format!("lua: {e}")))?;
    let res = th.resume::<LuaValue>(arg);
    match tripped.get() {
        Tripped::Fuel => {
            return Err(SandboxError::new(
                codes::FUEL_EXCEEDED,
                "the CPU budget (instructions) ran out",
            ));
        }
        Tripped::Time => {
            return Err(SandboxError::new(
                codes::TIMEOUT,
                format!(
                    "did not finish within {timeout_ms} ms (ran {} ms)",
                    started.elapsed().as_millis()
                ),
            ));
        }
        Tripped::No => {}
    }
    match res {
        Ok(v) if th.status() == ThreadStatus::Finished => Ok(v),
        Ok(_) => Err(SandboxError::failed(
            "the action yielded instead of returning",
        )),
        Err(e) => Err(lua_error(e)),
    }
}

fn lua_error(e: mlua::Error) -> SandboxError {
    let root = root_error(&e);
    match root {
        mlua::Error::MemoryError(m) => SandboxError::new(
            codes::MEMORY_EXCEEDED,
            format!("the Lua memory limit was reached: {m}"),
        ),
        mlua::Error::StackError => SandboxError::new(codes::STACK_EXCEEDED, "Lua stack overflow"),
        other => {
            let msg = match other {
                mlua::Error::RuntimeError(m) => m.clone(),
                e => e.to_string(),
            };
            if msg.contains("stack overflow") {
                SandboxError::new(
                    codes::STACK_EXCEEDED,
                    format!("Lua stack overflow: {}", first_line(&msg)),
                )
            } else if msg.contains("not enough memory") {
                SandboxError::new(codes::MEMORY_EXCEEDED, "the Lua memory limit was reached")
            } else {
                guest_error(first_line(&msg).to_string())
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn root_error(e: &mlua::Error) -> &mlua::Error {
    match e {
        mlua::Error::CallbackError { cause, .. } => root_error(cause),
        mlua::Error::WithContext { cause, .. } => root_error(cause),
        other => other,
    }
}

fn invoke(
    warm: &mut Warm,
    source: &str,
    chunk_name: &str,
    input: &[u8],
    timeout_ms: u64,
    started: Instant,
) -> Result<Vec<u8>, SandboxError> {
    // A fresh state runs the entry chunk first, under this invocation's budget.
    if warm.handle.is_none() {
        let (lua, tripped) = (&warm.lua, &warm.tripped);
        if source.as_bytes().first() == Some(&0x1b) {
            return Err(SandboxError::failed("binary Lua chunks are refused"));
        }
        let chunk = lua
            .load(source)
            .set_name(format!("={chunk_name}"))
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| SandboxError::failed(format!("the Lua entry does not load: {e}")))?;
        resume(lua, chunk, LuaValue::Nil, tripped, timeout_ms, started)?;
        let handle = lua
            .globals()
            .get::<Option<Function>>("handle")
            .ok()
            .flatten()
            .ok_or_else(|| {
                SandboxError::failed("the Lua entry defines no function handle(input)")
            })?;
        warm.handle = Some(handle);
    }
    let lua = &warm.lua;
    let tripped = &warm.tripped;
    let handle = warm
        .handle
        .clone()
        .ok_or_else(|| SandboxError::failed("the Lua entry defines no function handle(input)"))?;
    let input: Value = serde_json::from_slice(input)
        .map_err(|e| SandboxError::failed(format!("input is not JSON: {e}")))?;
    let arg = to_lua(lua, input).map_err(|e| SandboxError::failed(format!("lua: {e}")))?;
    let out = resume(lua, handle, arg, tripped, timeout_ms, started)?;
    let out: Value = lua.from_value(out).map_err(|e| {
        SandboxError::failed(format!("handle returned something that is not JSON: {e}"))
    })?;
    serde_json::to_vec(&out).map_err(|e| SandboxError::failed(e.to_string()))
}
