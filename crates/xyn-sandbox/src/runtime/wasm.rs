//! WebAssembly core modules under wasmtime.
//!
//! ABI (pinned): the module exports `memory`, `alloc(len: i32) -> i32` and
//! `handle(ptr: i32, len: i32) -> i64`; the input is UTF-8 JSON written at `alloc(len)`,
//! the result is `(ptr << 32) | len` of UTF-8 JSON in the module's memory.
//!
//! Host functions, import module `xyn`, all `(ptr: i32, len: i32) -> i64` with a JSON
//! argument object in and a JSON envelope out (written into guest memory through its
//! `alloc`, returned as `(ptr << 32) | len`): `{"ok": <result>}` or
//! `{"error": {"code": "capability.denied", "message": "capability denied: …"}}`.
//! The names are those of [`crate::runtime::CAPABILITIES`] (`fs_read`, `fs_write`,
//! `http_request`, `env_get`, `db_query`, `db_exec`, `time_now_ms`, `log_info`, …), plus
//! `call(name_ptr, name_len, args_ptr, args_len) -> i64` for any capability by its dotted
//! name, and `abort(ptr, len)`, which ends the invocation with that message.
//!
//! Budgets: fuel (CPU), an epoch deadline (wall clock), a resource limiter (linear memory,
//! table elements, instances; growing past a limit traps), `max_wasm_stack`, output size.
//! Modules are compiled once per content hash and cached on disk precompiled; instances
//! come from an `InstancePre` and the pooling allocator, which hands out memory slots that
//! are reset between uses.
//!
//! The same engine runs WASI 0.2 **components** ([`super::component`]): the entry's binary
//! header says which layer it is (a `.wat` entry may hold `(module …)` or
//! `(component …)` text), and a component gets the same budgets, the same capability
//! layer, the same cache by content hash and its own `InstancePre`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, Engine, Extern, InstanceAllocationStrategy, InstancePre, Linker, Memory,
    Module, PoolingAllocationConfig, ResourceLimiter, Store, Trap, TypedFunc,
};

use super::component::{self, ComponentPre, ComponentState};
use super::{GuestOutcome, GuestRun, guest_error};
use crate::caps::Caps;
use crate::error::{SandboxError, codes};
use crate::limits::{DeploymentLimits, Limits, Usage};

/// Epoch tick: the resolution of the wall-clock deadline.
const TICK: Duration = Duration::from_millis(2);

/// The wasm engine of a process: configuration, module cache and the epoch ticker.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    components: wasmtime::component::Linker<ComponentState>,
    cache_dir: Option<PathBuf>,
    modules: Mutex<HashMap<String, Arc<Loaded>>>,
    ticker: Arc<Ticker>,
}

/// A module or component ready to instantiate.
pub struct Loaded {
    pre: Pre,
    /// sha256 of the module bytes.
    pub digest: String,
}

enum Pre {
    Module(InstancePre<HostState>),
    Component(Box<ComponentPre>),
}

impl Loaded {
    /// Whether this is a WASI 0.2 component (else a core module).
    pub fn is_component(&self) -> bool {
        matches!(self.pre, Pre::Component(_))
    }
}

/// Whether `bytes` are a component (the binary header's layer field is 1) rather than a
/// core module (layer 0).
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[6..8] == [1, 0]
}

struct HostState {
    caps: Option<Caps>,
    limiter: Limiter,
    abort: Option<String>,
}

/// The resource limiter of one store. Linear memory is counted across all the store's
/// memories (a component may have more than one), so the limit is a total.
pub(crate) struct Limiter {
    memory: usize,
    table_elements: usize,
    instances: usize,
    /// Most tables and memories (counts, not sizes).
    max_tables: usize,
    max_memories: usize,
    total_memory: usize,
    pub(crate) peak_memory: usize,
}

impl Limiter {
    fn new(limits: &Limits, max_tables: usize, max_memories: usize) -> Self {
        Self {
            memory: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            table_elements: usize::try_from(limits.table_elements).unwrap_or(usize::MAX),
            instances: usize::try_from(limits.max_instances).unwrap_or(1),
            max_tables,
            max_memories,
            total_memory: 0,
            peak_memory: 0,
        }
    }

    fn for_module(limits: &Limits) -> Self {
        Self::new(limits, 4, 1)
    }

    /// A component is several core instances (its code, shims, adapters): a few more
    /// tables and memories, the same total memory.
    pub(crate) fn for_component(limits: &Limits) -> Self {
        Self::new(limits, 16, 4)
    }
}

/// A trap that carries its stable code (an exceeded budget, an uncaught refusal).
#[derive(Debug)]
pub(crate) struct CodeTrap(pub(crate) &'static str, pub(crate) String);

impl std::fmt::Display for CodeTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for CodeTrap {}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .total_memory
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory {
            return Err(wasmtime::Error::new(CodeTrap(
                codes::MEMORY_EXCEEDED,
                format!(
                    "linear memory would grow from {current} to {desired} bytes ({total} in \
                     all); the limit is {}",
                    self.memory
                ),
            )));
        }
        self.total_memory = total;
        self.peak_memory = self.peak_memory.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(CodeTrap(
                codes::TABLE_EXCEEDED,
                format!(
                    "a table would grow from {current} to {desired} elements; the limit is {}",
                    self.table_elements
                ),
            )));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }
    fn tables(&self) -> usize {
        self.max_tables
    }
    fn memories(&self) -> usize {
        self.max_memories
    }
}

/// Advances the engine epoch while at least one invocation runs; sleeps otherwise.
struct Ticker {
    active: Mutex<usize>,
    wake: Condvar,
    started: AtomicUsize,
}

impl Ticker {
    fn start(self: &Arc<Self>, engine: Engine) {
        if self.started.swap(1, Ordering::SeqCst) == 1 {
            return;
        }
        let t = self.clone();
        let spawned = std::thread::Builder::new()
            .name("xyn-wasm-epoch".into())
            .spawn(move || {
                loop {
                    {
                        let mut n = t.active.lock().unwrap_or_else(|e| e.into_inner());
                        while *n == 0 {
                            n = t.wake.wait(n).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            });
        if spawned.is_err() {
            self.started.store(0, Ordering::SeqCst);
        }
    }

    fn enter(&self) {
        let mut n = self.active.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        self.wake.notify_all();
    }

    fn leave(&self) {
        let mut n = self.active.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
    }
}

fn pack(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

fn read_guest(
    mem: &Memory,
    store: impl wasmtime::AsContext,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(&store)
        .get(ptr..ptr.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg("guest pointer out of bounds"))
}

fn memory_of(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::Error::msg("the module exports no memory")),
    }
}

/// Writes `bytes` into guest memory through its `alloc`; returns the packed pointer.
fn write_back(caller: &mut Caller<'_, HostState>, bytes: &[u8]) -> wasmtime::Result<i64> {
    let alloc = match caller.get_export("alloc") {
        Some(Extern::Func(f)) => f.typed::<i32, i32>(&*caller)?,
        _ => return Err(wasmtime::Error::msg("the module exports no alloc")),
    };
    let len = i32::try_from(bytes.len()).map_err(|_| wasmtime::Error::msg("result too large"))?;
    let ptr = alloc.call(&mut *caller, len)?;
    let mem = memory_of(caller)?;
    mem.write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|_| wasmtime::Error::msg("alloc returned a pointer out of bounds"))?;
    Ok(pack(ptr as u32, len as u32))
}

fn host_call(caller: &mut Caller<'_, HostState>, name: &str, args: &[u8]) -> wasmtime::Result<i64> {
    let args: Value = serde_json::from_slice(args).unwrap_or(Value::Null);
    let left = caller.get_fuel().unwrap_or(u64::MAX);
    let caps = caller
        .data_mut()
        .caps
        .as_mut()
        .ok_or_else(|| wasmtime::Error::msg("no capabilities in this store"))?;
    // Host work (SQLite steps) is charged to the module's fuel; when it ran out of fuel
    // the module has none left, and the epoch deadline covers the wall clock.
    let (res, used) = caps.call_metered(name, &args, left);
    let spent = caps.spent();
    let left = if spent == Some(codes::FUEL_EXCEEDED) {
        0
    } else {
        left.saturating_sub(used)
    };
    let _ = caller.set_fuel(left);
    let envelope = match res {
        Ok(v) => json!({"ok": v}),
        Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
    };
    let bytes = serde_json::to_vec(&envelope).unwrap_or_default();
    write_back(caller, &bytes)
}

fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    for (import, cap) in super::CAPABILITIES {
        let cap: &'static str = cap;
        linker.func_wrap(
            "xyn",
            import,
            move |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i64> {
                let mem = memory_of(&mut caller)?;
                let args = read_guest(&mem, &caller, ptr, len)?;
                host_call(&mut caller, cap, &args)
            },
        )?;
    }
    linker.func_wrap(
        "xyn",
        "call",
        |mut caller: Caller<'_, HostState>,
         np: i32,
         nl: i32,
         ap: i32,
         al: i32|
         -> wasmtime::Result<i64> {
            let mem = memory_of(&mut caller)?;
            let name = String::from_utf8(read_guest(&mem, &caller, np, nl)?)
                .map_err(|_| wasmtime::Error::msg("capability name is not UTF-8"))?;
            let args = read_guest(&mem, &caller, ap, al)?;
            host_call(&mut caller, &name, &args)
        },
    )?;
    linker.func_wrap(
        "xyn",
        "abort",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let mem = memory_of(&mut caller)?;
            let msg = String::from_utf8_lossy(&read_guest(&mem, &caller, ptr, len.min(4096))?)
                .into_owned();
            caller.data_mut().abort = Some(msg.clone());
            Err(wasmtime::Error::msg(msg))
        },
    )?;
    Ok(linker)
}

impl WasmRuntime {
    /// An engine with the deployment's stack limit and a pooling allocator sized for it.
    pub fn new(
        limits: &DeploymentLimits,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self, SandboxError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(64)
            .total_memories(64)
            .total_tables(64)
            .total_component_instances(16)
            .max_memories_per_module(1)
            .max_memory_size(4 << 30)
            .table_elements(limits.table_elements as usize)
            // Keep up to 1 MiB per slot resident, zeroed with memset on reuse: fast warm
            // starts, and a reused slot never shows the previous invocation's memory.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16)
            // Guests run synchronously: no fiber stacks are needed, and the pool's mapping
            // (writable, so counted by the worker's RLIMIT_DATA) stays small.
            .total_stacks(4);
        let mut cfg = Config::new();
        cfg.consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(limits.stack_bytes as usize)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg)
            .map_err(|e| SandboxError::failed(format!("cannot start wasmtime: {e}")))?;
        let linker = build_linker(&engine)
            .map_err(|e| SandboxError::failed(format!("cannot define host functions: {e}")))?;
        let components = component::build_linker(&engine).map_err(|e| {
            SandboxError::failed(format!("cannot define component host functions: {e:#}"))
        })?;
        Ok(Self {
            engine,
            linker,
            components,
            cache_dir,
            modules: Mutex::new(HashMap::new()),
            ticker: Arc::new(Ticker {
                active: Mutex::new(0),
                wake: Condvar::new(),
                started: AtomicUsize::new(0),
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn compat_tag(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Drops the in-memory module cache (the next load is a cold start from disk).
    pub fn forget(&self) {
        if let Ok(mut m) = self.modules.lock() {
            m.clear();
        }
    }

    /// Loads a module by its bytes: from memory, then the on-disk precompiled cache, then
    /// by compiling it (and caching the result).
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Loaded>, SandboxError> {
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(l) = self
            .modules
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned())
        {
            return Ok(l);
        }
        let pre =
            if is_component(bytes) {
                let c = self.load_component(&digest, bytes)?;
                Pre::Component(Box::new(component::prepare(&self.components, &c)?))
            } else {
                let module = self.load_module(&digest, bytes)?;
                Pre::Module(self.linker.instantiate_pre(&module).map_err(|e| {
                    SandboxError::failed(format!("the module cannot be linked: {e}"))
                })?)
            };
        let loaded = Arc::new(Loaded {
            pre,
            digest: digest.clone(),
        });
        if let Ok(mut m) = self.modules.lock() {
            if m.len() > 512 {
                m.clear();
            }
            m.insert(digest, loaded.clone());
        }
        Ok(loaded)
    }

    /// Where the precompiled form of `digest` is cached (modules and components apart).
    pub fn cache_path(&self, digest: &str, component: bool) -> Option<PathBuf> {
        let kind = if component { "component" } else { "module" };
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.{kind}.cwasm", self.compat_tag())))
    }

    fn store_cached(&self, digest: &str, component: bool, ser: wasmtime::Result<Vec<u8>>) {
        if let Some(p) = self.cache_path(digest, component)
            && let Ok(ser) = ser
        {
            let tmp = p.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, ser).is_ok() {
                let _ = std::fs::rename(&tmp, &p);
            }
        }
    }

    fn load_module(&self, digest: &str, bytes: &[u8]) -> Result<Module, SandboxError> {
        if let Some(p) = self.cache_path(digest, false)
            && p.is_file()
            && let Ok(m) = deserialize_cached(&self.engine, &p)
        {
            return Ok(m);
        }
        let module = Module::new(&self.engine, bytes)
            .map_err(|e| SandboxError::failed(format!("the module does not compile: {e}")))?;
        self.store_cached(digest, false, module.serialize());
        Ok(module)
    }

    fn load_component(
        &self,
        digest: &str,
        bytes: &[u8],
    ) -> Result<wasmtime::component::Component, SandboxError> {
        if let Some(p) = self.cache_path(digest, true)
            && p.is_file()
            && let Ok(c) = deserialize_cached_component(&self.engine, &p)
        {
            return Ok(c);
        }
        let c = wasmtime::component::Component::new(&self.engine, bytes)
            .map_err(|e| SandboxError::failed(format!("the component does not compile: {e:#}")))?;
        self.store_cached(digest, true, c.serialize());
        Ok(c)
    }

    /// Checks that a module exports the pinned ABI (`memory`, `alloc`, `handle`), or that a
    /// component implements the world `xyn-action` and links.
    pub fn check_exports(&self, bytes: &[u8]) -> Result<(), SandboxError> {
        if is_component(bytes) {
            let c = wasmtime::component::Component::new(&self.engine, bytes).map_err(|e| {
                SandboxError::manifest(format!("the component does not compile: {e:#}"))
            })?;
            return component::prepare(&self.components, &c).map(|_| ());
        }
        let m = Module::new(&self.engine, bytes)
            .map_err(|e| SandboxError::manifest(format!("the module does not compile: {e}")))?;
        let has = |name: &str, want: &str| {
            m.exports().any(|e| {
                e.name() == name
                    && match (e.ty(), want) {
                        (wasmtime::ExternType::Memory(_), "memory") => true,
                        (wasmtime::ExternType::Func(f), sig) => {
                            let p: Vec<String> = f.params().map(|t| t.to_string()).collect();
                            let r: Vec<String> = f.results().map(|t| t.to_string()).collect();
                            format!("{}->{}", p.join(","), r.join(",")) == sig
                        }
                        _ => false,
                    }
            })
        };
        for (name, want) in [
            ("memory", "memory"),
            ("alloc", "i32->i32"),
            ("handle", "i32,i32->i64"),
        ] {
            if !has(name, want) {
                return Err(SandboxError::manifest(format!(
                    "the module must export {name} ({want}); see the ABI in the README"
                )));
            }
        }
        Ok(())
    }

    /// Compiles `bytes` into the disk cache ahead of time (at install).
    pub fn precompile(&self, bytes: &[u8]) -> Result<String, SandboxError> {
        let digest = hex::encode(Sha256::digest(bytes));
        if is_component(bytes) {
            self.load_component(&digest, bytes)?;
        } else {
            self.load_module(&digest, bytes)?;
        }
        Ok(digest)
    }

    /// Runs one invocation of a loaded module.
    pub fn run(&self, loaded: &Loaded, run: GuestRun<'_>) -> GuestOutcome {
        self.ticker.start(self.engine.clone());
        self.ticker.enter();
        let out = match &loaded.pre {
            Pre::Module(pre) => self.run_module(pre, run),
            Pre::Component(pre) => component::run(&self.engine, pre, run),
        };
        self.ticker.leave();
        out
    }

    fn run_module(&self, pre: &InstancePre<HostState>, run: GuestRun<'_>) -> GuestOutcome {
        let started = Instant::now();
        let limits = run.limits;
        let mut store = Store::new(
            &self.engine,
            HostState {
                caps: Some(run.caps),
                limiter: Limiter::for_module(limits),
                abort: None,
            },
        );
        store.limiter(|s| &mut s.limiter);
        let _ = store.set_fuel(limits.fuel);
        store.set_epoch_deadline(epoch_ticks(limits.timeout_ms));
        store.epoch_deadline_trap();

        let result = call_handle(&mut store, pre, run.input, limits.max_output_bytes);
        let fuel_left = store.get_fuel().unwrap_or(0);
        let mut usage = Usage {
            wall_us: started.elapsed().as_micros() as u64,
            fuel: limits.fuel.saturating_sub(fuel_left),
            memory_bytes: store.data().limiter.peak_memory as u64,
            output_bytes: 0,
        };
        let mut state = store.into_data();
        let result =
            result.map_err(|e| classify(e, state.abort.take(), started, limits.timeout_ms));
        if let Ok(o) = &result {
            usage.output_bytes = o.len() as u64;
        }
        let caps = state.caps.take().unwrap_or_else(empty_caps);
        GuestOutcome {
            result,
            caps,
            usage,
        }
    }
}

/// Epoch ticks for a wall-clock budget.
pub(crate) fn epoch_ticks(timeout_ms: u64) -> u64 {
    timeout_ms.div_ceil(TICK.as_millis() as u64).max(1)
}

/// `Caps` are always put back by the runners; this keeps the type checker honest without a
/// panic path in release builds.
pub(crate) fn empty_caps() -> Caps {
    Caps::new(crate::caps::CapsConfig {
        action: String::new(),
        capabilities: Default::default(),
        data_dir: None,
        db_path: None,
        env: Default::default(),
        secrets: Default::default(),
        http: Arc::new(crate::caps::http::NoHttp),
        deadline: Instant::now(),
    })
}

#[allow(
    unsafe_code,
    reason = "loading a precompiled module is unsafe by wasmtime's API"
)]
fn deserialize_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    // SAFETY: the file is one this process family wrote itself with `Module::serialize` for
    // an engine with the same compatibility hash (part of the file name), into the node's
    // own cache directory, which guests cannot reach (no fs capability resolves there).
    // wasmtime additionally checks the header and the engine configuration on load.
    unsafe { Module::deserialize_file(engine, path) }
}

#[allow(
    unsafe_code,
    reason = "loading a precompiled component is unsafe by wasmtime's API"
)]
fn deserialize_cached_component(
    engine: &Engine,
    path: &Path,
) -> wasmtime::Result<wasmtime::component::Component> {
    // SAFETY: as for `deserialize_cached`: a file this process family wrote with
    // `Component::serialize` for an engine with the same compatibility hash, in the node's
    // cache directory, which no fs capability resolves to; wasmtime checks the header and
    // the engine configuration on load.
    unsafe { wasmtime::component::Component::deserialize_file(engine, path) }
}

fn call_handle(
    store: &mut Store<HostState>,
    pre: &InstancePre<HostState>,
    input: &[u8],
    max_output: u64,
) -> wasmtime::Result<Vec<u8>> {
    let instance = pre.instantiate(&mut *store)?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::Error::msg("the module must export `memory`"))?;
    let alloc: TypedFunc<i32, i32> =
        instance.get_typed_func(&mut *store, "alloc").map_err(|e| {
            wasmtime::Error::msg(format!("the module must export alloc(i32) -> i32: {e}"))
        })?;
    let handle: TypedFunc<(i32, i32), i64> = instance
        .get_typed_func(&mut *store, "handle")
        .map_err(|e| {
            wasmtime::Error::msg(format!(
                "the module must export handle(i32, i32) -> i64: {e}"
            ))
        })?;
    let len = i32::try_from(input.len()).map_err(|_| wasmtime::Error::msg("input too large"))?;
    let ptr = alloc.call(&mut *store, len)?;
    memory
        .write(&mut *store, ptr as u32 as usize, input)
        .map_err(|_| wasmtime::Error::msg("alloc returned a pointer out of bounds"))?;
    let packed = handle.call(&mut *store, (ptr, len))? as u64;
    let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    if out_len as u64 > max_output {
        return Err(wasmtime::Error::new(CodeTrap(
            codes::OUTPUT_EXCEEDED,
            format!("the output is {out_len} bytes; the limit is {max_output}"),
        )));
    }
    memory
        .data(&*store)
        .get(out_ptr..out_ptr.saturating_add(out_len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg("handle returned a result out of bounds"))
}

pub(crate) fn classify(
    e: wasmtime::Error,
    abort: Option<String>,
    started: Instant,
    timeout_ms: u64,
) -> SandboxError {
    if let Some(b) = e.downcast_ref::<CodeTrap>() {
        return SandboxError::new(b.0, b.1.clone());
    }
    if let Some(msg) = abort {
        return guest_error(msg);
    }
    if let Some(t) = e.downcast_ref::<Trap>() {
        return match t {
            Trap::OutOfFuel => {
                SandboxError::new(codes::FUEL_EXCEEDED, "the CPU budget (fuel) ran out")
            }
            Trap::Interrupt => SandboxError::new(
                codes::TIMEOUT,
                format!(
                    "did not finish within {timeout_ms} ms (ran {} ms)",
                    started.elapsed().as_millis()
                ),
            ),
            Trap::StackOverflow => {
                SandboxError::new(codes::STACK_EXCEEDED, "the wasm stack limit was reached")
            }
            other => SandboxError::failed(format!("wasm trap: {other}")),
        };
    }
    let msg = format!("{e:#}");
    if msg.contains("resource limit exceeded") || msg.contains("instance count too high") {
        return SandboxError::new(codes::TABLE_EXCEEDED, msg);
    }
    SandboxError::failed(format!("wasm: {msg}"))
}
