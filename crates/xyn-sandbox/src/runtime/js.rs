//! JavaScript (QuickJS through rquickjs, with its default allocator so the memory limit
//! holds). The entry is an ES module that exports `handle(input)` (a global `handle` works
//! too); a returned Promise is awaited. No `std`/`os` modules, no module loader (imports
//! fail), no `eval` and no `Function` constructors; globals offered: `xyn` (`xyn.fs`,
//! `xyn.http`, `xyn.env`, `xyn.db`, `xyn.time`, `xyn.crypto`, `xyn.log`), `json`, `console`.
//!
//! Budgets: the runtime's memory limit and stack limit, and an interrupt handler that
//! counts CPU ticks (fuel) and checks the wall clock. QuickJS polls it inside the regex
//! engine too, so catastrophic backtracking is stopped as well.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, Module, Promise, Runtime, Value,
};

use super::{GuestOutcome, GuestRun, guest_error};
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

/// Runs one invocation of a JS action in a fresh runtime.
pub fn run(source: &str, module_name: &str, run: GuestRun<'_>) -> GuestOutcome {
    let started = Instant::now();
    let limits = run.limits;
    let caps = Rc::new(RefCell::new(Some(run.caps)));
    let tripped = Rc::new(Cell::new(Tripped::No));
    let polls = Rc::new(Cell::new(0u64));
    let take_caps = |caps: &Rc<RefCell<Option<Caps>>>| caps.borrow_mut().take();
    let rt = match Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            return outcome(
                take_caps(&caps),
                Err(SandboxError::failed(format!("cannot start QuickJS: {e}"))),
                started,
                0,
                0,
            );
        }
    };
    rt.set_memory_limit(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX));
    rt.set_max_stack_size(usize::try_from(limits.stack_bytes).unwrap_or(1 << 20));
    {
        let deadline = started + Duration::from_millis(limits.timeout_ms);
        let max_polls = limits.fuel.div_ceil(TICKS_PER_POLL).max(1);
        let (tripped, polls) = (tripped.clone(), polls.clone());
        rt.set_interrupt_handler(Some(Box::new(move || {
            if tripped.get() != Tripped::No {
                return true;
            }
            let n = polls.get() + 1;
            polls.set(n);
            if n > max_polls {
                tripped.set(Tripped::Fuel);
                return true;
            }
            if Instant::now() >= deadline {
                tripped.set(Tripped::Time);
                return true;
            }
            false
        })));
    }
    let result = match Context::full(&rt) {
        Ok(ctx) => ctx.with(|ctx| invoke(&ctx, &caps, source, module_name, run.input)),
        Err(e) => Err(SandboxError::failed(format!("cannot start QuickJS: {e}"))),
    };
    let result = match tripped.get() {
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
    // Walking the heap for its size costs more than a small invocation: only for failures
    // (their report and incident bundle).
    let mem = if result.is_err() {
        rt.memory_usage().malloc_size.max(0) as u64
    } else {
        0
    };
    let fuel = (polls.get() * TICKS_PER_POLL).min(limits.fuel);
    outcome(take_caps(&caps), result, started, fuel, mem)
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

fn invoke(
    ctx: &Ctx<'_>,
    caps: &Rc<RefCell<Option<Caps>>>,
    source: &str,
    module_name: &str,
    input: &[u8],
) -> Result<Vec<u8>, SandboxError> {
    let caps2 = caps.clone();
    let native = Function::new(ctx.clone(), move |name: String, args: String| -> String {
        let args: serde_json::Value = serde_json::from_str(&args).unwrap_or_default();
        let mut guard = caps2.borrow_mut();
        let envelope = match guard.as_mut() {
            Some(c) => match c.call(&name, &args) {
                Ok(v) => serde_json::json!({"ok": v}),
                Err(e) => serde_json::json!({"error": {"code": e.code, "message": e.message}}),
            },
            None => serde_json::json!({"error": {"code": "capability.failed", "message": "no capabilities"}}),
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
