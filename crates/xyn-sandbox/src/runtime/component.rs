//! WebAssembly components (WASI 0.2) under wasmtime's component model.
//!
//! A component implements the world `xyn-action` of `wit/xyn-action.wit`: it imports the
//! interface `xyn:action/host` (every function a call into the same [`Caps`] layer core
//! modules, Lua and JavaScript use) and exports `handle(input: string) -> result<string,
//! string>`, input and output UTF-8 JSON. An `err` ends the invocation with
//! `action.failed`, or `capability.denied` when the message starts with
//! `capability denied:`.
//!
//! WASI 0.2 (`wasmtime-wasi`, linked synchronously) is offered only so that components
//! built by ordinary toolchains link; it is deny-by-default and grants nothing the
//! manifest does not:
//!
//! - no preopened directories (no filesystem), no environment variables, no arguments,
//!   stdin closed; stdout and stderr go to the invocation's log (first 64 KiB each);
//! - no sockets: TCP, UDP and name lookup are off (and the sealed worker has no `socket`
//!   syscall anyway); outbound HTTP is `http-request` through the capability layer;
//! - clocks: the host's clock objects count every reading as `time.now_ms` /
//!   `time.monotonic_ms` and record wall-clock readings for replay; with `time = false`
//!   both read 0 and the refusal is audited;
//! - random: the host's generator when the manifest grants `crypto` (the default), a fixed
//!   sequence otherwise;
//! - sleeping (`monotonic-clock.subscribe-*` + `poll`) never blocks past the invocation's
//!   deadline: the subscriptions are clamped to the time left, and the guest code that
//!   runs next meets the epoch deadline.
//!
//! Budgets are the core modules': fuel, the epoch deadline, the resource limiter (total
//! linear memory across the component's memories, table elements, core instances),
//! `max_wasm_stack`, the output size.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::{Value, json};
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamError};
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

use super::wasm::{CodeTrap, Limiter, classify};
use super::{GuestOutcome, GuestRun, guest_error};
use crate::caps::Caps;
use crate::error::{SandboxError, codes};
use crate::limits::Usage;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "xyn-action",
    imports: { default: trappable },
});

use xyn::action::host::{CapError as WitCapError, Host};

/// The WASI clocks interface whose subscriptions are clamped to the deadline (the version
/// `wasmtime-wasi` implements; guests importing an older 0.2.x resolve to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";
/// Most bytes of stdout and of stderr kept per invocation (the rest is dropped).
const MAX_STDIO: usize = 64 * 1024;

/// A component ready to instantiate.
pub type ComponentPre = XynActionPre<ComponentState>;

/// The store data of one component invocation.
pub struct ComponentState {
    caps: Option<Caps>,
    limiter: Limiter,
    wasi: WasiCtx,
    table: ResourceTable,
    deadline: Instant,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ComponentState {
    fn cap(&mut self, name: &str, args: Value) -> wasmtime::Result<Result<Value, WitCapError>> {
        let caps = self
            .caps
            .as_mut()
            .ok_or_else(|| wasmtime::Error::msg("no capabilities in this store"))?;
        Ok(caps.call(name, &args).map_err(|e| WitCapError {
            code: e.code,
            message: e.message,
        }))
    }
}

fn bad_args(what: &str, e: serde_json::Error) -> WitCapError {
    WitCapError {
        code: crate::caps::cap_codes::BAD_ARGS.into(),
        message: format!("{what} is not JSON: {e}"),
    }
}

/// JSON text in; an empty string reads as `null`.
fn json_arg(what: &str, text: &str) -> Result<Value, WitCapError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| bad_args(what, e))
}

fn text_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

impl Host for ComponentState {
    fn call(
        &mut self,
        name: String,
        args: String,
    ) -> wasmtime::Result<Result<String, WitCapError>> {
        let args = match json_arg("args", &args) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.cap(&name, args)?.map(|v| v.to_string()))
    }

    fn fs_read(&mut self, path: String) -> wasmtime::Result<Result<String, WitCapError>> {
        Ok(self.cap("fs.read", json!({ "path": path }))?.map(text_of))
    }

    fn fs_write(
        &mut self,
        path: String,
        data: String,
    ) -> wasmtime::Result<Result<(), WitCapError>> {
        Ok(self
            .cap("fs.write", json!({ "path": path, "data": data }))?
            .map(|_| ()))
    }

    fn http_request(&mut self, request: String) -> wasmtime::Result<Result<String, WitCapError>> {
        let req = match json_arg("request", &request) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.cap("http.request", req)?.map(|v| v.to_string()))
    }

    fn env_get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(match self.cap("env.get", json!({ "name": name }))? {
            Ok(Value::String(s)) => Some(s),
            _ => None,
        })
    }

    fn db_query(
        &mut self,
        sql: String,
        params: String,
    ) -> wasmtime::Result<Result<String, WitCapError>> {
        let params = match json_arg("params", &params) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self
            .cap("db.query", json!({ "sql": sql, "params": params }))?
            .map(|v| v.to_string()))
    }

    fn db_exec(
        &mut self,
        sql: String,
        params: String,
    ) -> wasmtime::Result<Result<String, WitCapError>> {
        let params = match json_arg("params", &params) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self
            .cap("db.exec", json!({ "sql": sql, "params": params }))?
            .map(|v| v.to_string()))
    }

    fn time_now_ms(&mut self) -> wasmtime::Result<i64> {
        match self.cap("time.now_ms", json!({}))? {
            Ok(v) => Ok(v.as_i64().unwrap_or(0)),
            // The WIT function has no error case: a refusal ends the invocation, as an
            // uncaught refusal does in every runtime.
            Err(e) => Err(wasmtime::Error::new(CodeTrap(
                if e.code == crate::caps::cap_codes::DENIED {
                    codes::CAPABILITY_DENIED
                } else {
                    codes::ACTION_FAILED
                },
                e.message,
            ))),
        }
    }

    fn log_info(&mut self, msg: String) -> wasmtime::Result<()> {
        let _ = self.cap("log.info", json!({ "msg": msg }))?;
        Ok(())
    }
}

/// Clock readings a component made through WASI, merged into its `Caps` afterwards.
#[derive(Default)]
struct ClockLog {
    wall: u64,
    monotonic: u64,
    readings: Vec<i64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct WallClock {
    allowed: bool,
    log: Arc<Mutex<ClockLog>>,
}

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        let mut log = lock(&self.log);
        log.wall += 1;
        if !self.allowed {
            return Duration::ZERO;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if log.readings.len() < 10_000 {
            log.readings.push(now.as_millis() as i64);
        }
        now
    }
}

struct MonotonicClock {
    allowed: bool,
    start: Instant,
    log: Arc<Mutex<ClockLog>>,
}

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        lock(&self.log).monotonic += 1;
        if !self.allowed {
            return 0;
        }
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// stdout / stderr of a component: the first [`MAX_STDIO`] bytes are kept, the rest is
/// dropped (never an error the guest could trip over).
#[derive(Clone, Default)]
struct OutBuf(Arc<Mutex<Vec<u8>>>);

impl IsTerminal for OutBuf {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutBuf {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI 0.3 would use this; 0.2 streams go through `p2_stream`.
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutBuf {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for OutBuf {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let mut buf = lock(&self.0);
        let room = MAX_STDIO.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(MAX_STDIO)
    }
}

/// The component linker: WASI 0.2 (deny-by-default, see the module docs), the
/// `xyn:action/host` interface, and the clamped clock subscriptions.
pub fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<ComponentState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    XynAction::add_to_linker::<ComponentState, HasSelf<ComponentState>>(&mut linker, |s| s)?;
    linker.allow_shadowing(true);
    let mut mono = linker.instance(MONOTONIC_CLOCK)?;
    mono.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, ComponentState>,
         (nanos,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            let s = store.data_mut();
            let nanos = nanos.min(nanos_left(s.deadline));
            let mut view = s.clocks();
            Ok((monotonic_clock::Host::subscribe_duration(&mut view, nanos)?,))
        },
    )?;
    mono.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, ComponentState>,
         (when,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            let s = store.data_mut();
            let left = nanos_left(s.deadline);
            let mut view = s.clocks();
            let now = monotonic_clock::Host::now(&mut view)?;
            let nanos = when.saturating_sub(now).min(left);
            Ok((monotonic_clock::Host::subscribe_duration(&mut view, nanos)?,))
        },
    )?;
    Ok(linker)
}

fn nanos_left(deadline: Instant) -> u64 {
    u64::try_from(
        deadline
            .saturating_duration_since(Instant::now())
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
}

/// Links a compiled component and checks that it implements the world (exports
/// `handle(string) -> result<string, string>`).
pub fn prepare(
    linker: &Linker<ComponentState>,
    component: &wasmtime::component::Component,
) -> Result<ComponentPre, SandboxError> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| SandboxError::failed(format!("the component cannot be linked: {e:#}")))?;
    XynActionPre::new(pre).map_err(|e| {
        SandboxError::manifest(format!(
            "the component does not implement the world xyn-action of wit/xyn-action.wit \
             (export handle: func(input: string) -> result<string, string>): {e:#}"
        ))
    })
}

fn wasi_ctx(caps: &Caps, log: &Arc<Mutex<ClockLog>>, out: &OutBuf, err: &OutBuf) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stdout(out.clone())
        .stderr(err.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(WallClock {
            allowed: caps.allows_time(),
            log: log.clone(),
        })
        .monotonic_clock(MonotonicClock {
            allowed: caps.allows_time(),
            start: Instant::now(),
            log: log.clone(),
        });
    if !caps.allows_crypto() {
        b.secure_random(Deterministic::new(vec![0x5a; 8]))
            .insecure_random(Deterministic::new(vec![0xa5; 8]))
            .insecure_random_seed(0);
    }
    b.build()
}

/// Runs one invocation of a prepared component.
pub fn run(engine: &Engine, pre: &ComponentPre, run: GuestRun<'_>) -> GuestOutcome {
    let started = Instant::now();
    let limits = run.limits;
    let clocks = Arc::new(Mutex::new(ClockLog::default()));
    let (out, err) = (OutBuf::default(), OutBuf::default());
    let wasi = wasi_ctx(&run.caps, &clocks, &out, &err);
    let time_allowed = run.caps.allows_time();
    let deadline = run.caps.deadline();
    let mut store = Store::new(
        engine,
        ComponentState {
            caps: Some(run.caps),
            limiter: Limiter::for_component(limits),
            wasi,
            table: ResourceTable::new(),
            deadline,
        },
    );
    store.limiter(|s| &mut s.limiter);
    let _ = store.set_fuel(limits.fuel);
    store.set_epoch_deadline(super::wasm::epoch_ticks(limits.timeout_ms));
    store.epoch_deadline_trap();

    let result = match call_handle(&mut store, pre, run.input, limits.max_output_bytes) {
        Ok(Ok(out)) => Ok(out.into_bytes()),
        Ok(Err(message)) => Err(guest_error(message)),
        Err(e) => Err(classify(e, None, started, limits.timeout_ms)),
    };
    let fuel_left = store.get_fuel().unwrap_or(0);
    let mut usage = Usage {
        wall_us: started.elapsed().as_micros() as u64,
        fuel: limits.fuel.saturating_sub(fuel_left),
        memory_bytes: store.data().limiter.peak_memory as u64,
        output_bytes: 0,
    };
    if let Ok(o) = &result {
        usage.output_bytes = o.len() as u64;
    }
    let mut state = store.into_data();
    let mut caps = state.caps.take().unwrap_or_else(super::wasm::empty_caps);
    merge_wasi(&mut caps, &clocks, time_allowed, &out, &err);
    GuestOutcome {
        result,
        caps,
        usage,
    }
}

/// Instantiates and calls `handle`; the outer error is a trap, the inner the guest's `err`.
fn call_handle(
    store: &mut Store<ComponentState>,
    pre: &ComponentPre,
    input: &[u8],
    max_output: u64,
) -> wasmtime::Result<Result<String, String>> {
    let bindings = pre.instantiate(&mut *store)?;
    let input =
        std::str::from_utf8(input).map_err(|_| wasmtime::Error::msg("the input is not UTF-8"))?;
    let out = bindings.call_handle(&mut *store, input)?;
    if let Ok(s) = &out
        && s.len() as u64 > max_output
    {
        return Err(wasmtime::Error::new(CodeTrap(
            codes::OUTPUT_EXCEEDED,
            format!("the output is {} bytes; the limit is {max_output}", s.len()),
        )));
    }
    Ok(out)
}

/// Clock reads and stdio of the invocation, into its capability record.
fn merge_wasi(
    caps: &mut Caps,
    clocks: &Mutex<ClockLog>,
    time_allowed: bool,
    out: &OutBuf,
    err: &OutBuf,
) {
    let log = std::mem::take(&mut *lock(clocks));
    caps.count_external("time.now_ms", log.wall);
    caps.count_external("time.monotonic_ms", log.monotonic);
    caps.time_readings.extend(log.readings);
    if !time_allowed {
        if log.wall > 0 {
            caps.deny_external(
                "time.now_ms",
                "wasi:clocks/wall-clock",
                "the manifest sets time = false (read as 0)",
            );
        }
        if log.monotonic > 0 {
            caps.deny_external(
                "time.monotonic_ms",
                "wasi:clocks/monotonic-clock",
                "the manifest sets time = false (read as 0)",
            );
        }
    }
    for (level, buf) in [("log.info", out), ("log.warn", err)] {
        let bytes = std::mem::take(&mut *lock(&buf.0));
        for line in String::from_utf8_lossy(&bytes).lines() {
            if !line.trim().is_empty() {
                let _ = caps.call(level, &json!({ "msg": line }));
            }
        }
    }
}
