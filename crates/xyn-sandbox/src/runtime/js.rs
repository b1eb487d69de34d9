//! JavaScript (QuickJS through rquickjs, with its default allocator so the memory limit
//! holds). The entry is an ES module that exports `handle(input)` (a global `handle` works
//! too); a returned Promise is awaited. No `std`/`os` modules, no module loader (imports
//! fail), no `eval` and no `Function` constructors; globals offered: `xyn` (`xyn.fs`,
//! `xyn.http`, `xyn.env`, `xyn.db`, `xyn.time`, `xyn.crypto`, `xyn.log`), `json`, `console`.
//!
//! Budgets: the runtime's memory limit and stack limit, and an interrupt handler that
//! counts CPU ticks (fuel) and checks the wall clock. QuickJS polls it inside the regex
//! engine too, so catastrophic backtracking is stopped as well.
//!
//! Warm starts: an action's runtime (module evaluated, `handle` found) is kept per thread
//! and reused by its next invocation; any failure throws it away.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, Module, Persistent, Promise, Runtime,
    Value,
};

use super::{GuestOutcome, GuestRun, WarmCache, guest_error};
use crate::caps::Caps;
use crate::error::{SandboxError, codes};
use crate::limits::Usage;

const PRELUDE: &str = include_str!("prelude.js");
/// CPU units one interrupt-handler call stands for (QuickJS polls every ~10,000 ticks).
const TICKS_PER_POLL: u64 = 10_000;

#[derive(Clone, Copy, PartialEq)]
enum Tripped {
    No,
    Fuel,
    Time,
}

/// A loaded JS action: its runtime, context, `handle` and the cells the native binding and
/// the interrupt handler share with the invocation in progress. Kept per action (by code
/// digest and limits) for warm invocations; dropped after any failure.
struct Warm {
    // Field order is drop order: the handle and the context go before their runtime.
    handle: Persistent<Function<'static>>,
    ctx: Context,
    rt: Runtime,
    caps: Rc<RefCell<Option<Caps>>>,
    tripped: Rc<Cell<Tripped>>,
    polls: Rc<Cell<u64>>,
    max_polls: Rc<Cell<u64>>,
    deadline: Rc<Cell<Instant>>,
}

thread_local! {
    static WARM: WarmCache<Warm> = WarmCache::new();
}

/// Drops every loaded JS action of this thread (the next invocation is a cold start).
pub fn forget() {
    WARM.with(WarmCache::clear);
}

/// Runs one invocation of a JS action. The module is loaded once per action and kept
/// (`digest` names the code): module-level state may persist between invocations of the
/// *same* action, as in a warm serverless function; never between actions. Any failure
/// discards the loaded state.
pub fn run(source: &str, module_name: &str, digest: &str, run: GuestRun<'_>) -> GuestOutcome {
    let started = Instant::now();
    let limits = run.limits;
    let key = format!("{digest}:{}:{}", limits.memory_bytes, limits.stack_bytes);
    let warm = WARM.with(|w| w.take(&key));
    let warm = match warm {
        Some(w) => w,
        None => match load(source, module_name, limits) {
            Ok(w) => w,
            Err(e) => return outcome(Some(run.caps), Err(e), started, 0, 0),
        },
    };
    warm.tripped.set(Tripped::No);
    warm.polls.set(0);
    warm.max_polls
        .set(limits.fuel.div_ceil(TICKS_PER_POLL).max(1));
    warm.deadline
        .set(started + Duration::from_millis(limits.timeout_ms));
    *warm.caps.borrow_mut() = Some(run.caps);

    let result = warm.ctx.with(|ctx| call(&ctx, &warm.handle, run.input));
    let result = match warm.tripped.get() {
        Tripped::Fuel => Err(SandboxError::new(
            codes::FUEL_EXCEEDED,
            "the CPU budget (interrupt ticks) ran out",
        )),
        Tripped::Time => Err(SandboxError::new(
            codes::TIMEOUT,
            format!(
                "did not finish within {} ms (ran {} ms)",
                limits.timeout_ms,
                started.elapsed().as_millis()
            ),
        )),
        Tripped::No => result,
    };
    let result = result.and_then(|out| {
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
    let fuel = (warm.polls.get() * TICKS_PER_POLL).min(limits.fuel);
    let caps = warm.caps.borrow_mut().take();
    // Walking the heap for its size costs more than a small invocation: only for failures
    // (their report and incident bundle).
    let mem = if result.is_err() {
        warm.rt.memory_usage().malloc_size.max(0) as u64
    } else {
        0
    };
    if result.is_ok() {
        WARM.with(|w| w.keep(key, warm));
    }
    outcome(caps, result, started, fuel, mem)
}

/// A fresh runtime with the limits, the prelude and the action's module evaluated.
fn load(
    source: &str,
    module_name: &str,
    limits: &crate::limits::Limits,
) -> Result<Warm, SandboxError> {
    let rt =
        Runtime::new().map_err(|e| SandboxError::failed(format!("cannot start QuickJS: {e}")))?;
    rt.set_memory_limit(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX));
    rt.set_max_stack_size(usize::try_from(limits.stack_bytes).unwrap_or(1 << 20));
    let caps: Rc<RefCell<Option<Caps>>> = Rc::new(RefCell::new(None));
    let tripped = Rc::new(Cell::new(Tripped::No));
    let polls = Rc::new(Cell::new(0u64));
    let max_polls = Rc::new(Cell::new(u64::MAX));
    let deadline = Rc::new(Cell::new(
        Instant::now() + Duration::from_millis(limits.timeout_ms),
    ));
    {
        let (tripped, polls, max_polls, deadline) = (
            tripped.clone(),
            polls.clone(),
            max_polls.clone(),
            deadline.clone(),
        );
        rt.set_interrupt_handler(Some(Box::new(move || {
            if tripped.get() != Tripped::No {
                return true;
            }
            let n = polls.get() + 1;
            polls.set(n);
            if n > max_polls.get() {
                tripped.set(Tripped::Fuel);
                return true;
            }
            if Instant::now() >= deadline.get() {
                tripped.set(Tripped::Time);
                return true;
            }
            false
        })));
    }
    let ctx = Context::full(&rt)
        .map_err(|e| SandboxError::failed(format!("cannot start QuickJS: {e}")))?;
    let meter = Meter {
        tripped: tripped.clone(),
        polls: polls.clone(),
        max_polls: max_polls.clone(),
    };
    let handle = ctx.with(|ctx| setup(&ctx, &caps, &meter, source, module_name))?;
    if tripped.get() != Tripped::No {
        return Err(SandboxError::new(
            if tripped.get() == Tripped::Fuel {
                codes::FUEL_EXCEEDED
            } else {
                codes::TIMEOUT
            },
            "the module's top-level code ran out of budget",
        ));
    }
    Ok(Warm {
        handle,
        ctx,
        rt,
        caps,
        tripped,
        polls,
        max_polls,
        deadline,
    })
}

fn outcome(
    caps: Option<Caps>,
    result: Result<Vec<u8>, SandboxError>,
    started: Instant,
    fuel: u64,
    mem: u64,
) -> GuestOutcome {
    let caps = caps.unwrap_or_else(|| {
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
        usage: Usage {
            wall_us: started.elapsed().as_micros() as u64,
            fuel,
            memory_bytes: mem,
            output_bytes: result.as_ref().map_or(0, |o| o.len() as u64),
        },
        result,
        caps,
    }
}

fn js_error(e: CaughtError<'_>) -> SandboxError {
    let msg = match &e {
        CaughtError::Exception(ex) => {
            let m = ex.message().unwrap_or_default();
            if m.is_empty() { ex.to_string() } else { m }
        }
        // Out of memory while creating the error object itself, QuickJS leaves `null` as
        // the exception (a guest that throws `null` on purpose gets the same code).
        CaughtError::Value(v) if v.is_null() => {
            return SandboxError::new(
                codes::MEMORY_EXCEEDED,
                "the QuickJS memory limit was reached (uncaught null)",
            );
        }
        CaughtError::Value(v) => format!("{v:?}"),
        CaughtError::Error(err) => err.to_string(),
    };
    if msg.contains("out of memory") || matches!(e, CaughtError::Error(rquickjs::Error::Allocation))
    {
        SandboxError::new(
            codes::MEMORY_EXCEEDED,
            "the QuickJS memory limit was reached",
        )
    } else if msg.contains("stack overflow") || msg.contains("call stack size exceeded") {
        SandboxError::new(codes::STACK_EXCEEDED, format!("JS stack overflow: {msg}"))
    } else {
        guest_error(msg)
    }
}

/// Runs pending jobs until `p` settles.
fn settle<'js>(ctx: &Ctx<'js>, p: Promise<'js>) -> Result<Value<'js>, SandboxError> {
    p.finish::<Value>().catch(ctx).map_err(js_error)
}

/// The cells the capability binding charges host work to.
#[derive(Clone)]
struct Meter {
    tripped: Rc<Cell<Tripped>>,
    polls: Rc<Cell<u64>>,
    max_polls: Rc<Cell<u64>>,
}

fn setup(
    ctx: &Ctx<'_>,
    caps: &Rc<RefCell<Option<Caps>>>,
    meter: &Meter,
    source: &str,
    module_name: &str,
) -> Result<Persistent<Function<'static>>, SandboxError> {
    let caps2 = caps.clone();
    let meter = meter.clone();
    let native = Function::new(ctx.clone(), move |name: String, args: String| -> String {
        let args: serde_json::Value = serde_json::from_str(&args).unwrap_or_default();
        let mut guard = caps2.borrow_mut();
        let envelope = match guard.as_mut() {
            Some(c) => {
                // Host work (SQLite steps) is charged to the guest's fuel; a budget it ran
                // out of stops the guest at the next interrupt poll.
                let left = meter
                    .max_polls
                    .get()
                    .saturating_sub(meter.polls.get())
                    .saturating_mul(TICKS_PER_POLL);
                let (res, used) = c.call_metered(&name, &args, left);
                meter
                    .polls
                    .set(meter.polls.get().saturating_add(used / TICKS_PER_POLL));
                match c.spent() {
                    Some(codes::FUEL_EXCEEDED) => meter.tripped.set(Tripped::Fuel),
                    Some(codes::TIMEOUT) => meter.tripped.set(Tripped::Time),
                    _ => {}
                }
                match res {
                    Ok(v) => serde_json::json!({"ok": v}),
                    Err(e) => {
                        serde_json::json!({"error": {"code": e.code, "message": e.message}})
                    }
                }
            }
            None => serde_json::json!({"error": {"code": "capability.failed", "message": "no capabilities outside an invocation"}}),
        };
        envelope.to_string()
    })
    .map_err(|e| SandboxError::failed(format!("js: {e}")))?;
    ctx.globals()
        .set("__xyn_call", native)
        .map_err(|e| SandboxError::failed(format!("js: {e}")))?;
    ctx.eval::<(), _>(PRELUDE)
        .catch(ctx)
        .map_err(|e| SandboxError::failed(format!("the JS prelude failed: {e}")))?;

    let declared = Module::declare(ctx.clone(), module_name, source)
        .catch(ctx)
        .map_err(|e| SandboxError::failed(format!("the JS entry does not load: {e}")))?;
    let (module, done) = declared.eval().catch(ctx).map_err(js_error)?;
    settle(ctx, done)?;
    let handle: Function = module
        .get::<_, Option<Function>>("handle")
        .ok()
        .flatten()
        .or_else(|| {
            ctx.globals()
                .get::<_, Option<Function>>("handle")
                .ok()
                .flatten()
        })
        .ok_or_else(|| SandboxError::failed("the JS entry exports no function handle(input)"))?;
    Ok(Persistent::save(ctx, handle))
}

fn call(
    ctx: &Ctx<'_>,
    handle: &Persistent<Function<'static>>,
    input: &[u8],
) -> Result<Vec<u8>, SandboxError> {
    let handle = handle
        .clone()
        .restore(ctx)
        .map_err(|e| SandboxError::failed(format!("js: {e}")))?;
    let input =
        std::str::from_utf8(input).map_err(|_| SandboxError::failed("input is not UTF-8"))?;
    let arg = ctx.json_parse(input).catch(ctx).map_err(js_error)?;
    let mut out: Value = handle.call((arg,)).catch(ctx).map_err(js_error)?;
    if let Some(p) = out.as_promise().cloned() {
        out = settle(ctx, p)?;
    }
    let text = ctx
        .json_stringify(out)
        .catch(ctx)
        .map_err(js_error)?
        .map(|s| s.to_string())
        .transpose()
        .map_err(|e| SandboxError::failed(format!("js: {e}")))?
        .unwrap_or_else(|| "null".into());
    Ok(text.into_bytes())
}
