//! The in-process façade: load a package, run one invocation under its budgets and
//! capabilities, and report what happened. The worker process calls this; so do tests and
//! benchmarks. Untrusted code in a node always runs through the worker (see `pool`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::caps::{Caps, CapsConfig, Denial, DenialSink, HttpBackend, LogLine};
use crate::error::SandboxError;
use crate::limits::{DeploymentLimits, Limits, Usage};
use crate::manifest::{MANIFEST_FILE, Manifest, RuntimeKind};
use crate::runtime::wasm::WasmRuntime;
use crate::runtime::{GuestRun, js, lua};

/// Where a compiled `.wat` entry is kept inside an installed package.
pub const COMPILED_WASM: &str = ".xyn/module.wasm";

/// An action package read from disk.
#[derive(Debug)]
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub code: Code,
    /// sha256 of the code the runtime executes.
    pub digest: String,
    modified: Option<SystemTime>,
}

#[derive(Debug)]
pub enum Code {
    Wasm(Vec<u8>),
    Script(String),
}

impl Package {
    /// Reads a package directory: its manifest and its entry (a `.wat` entry is compiled,
    /// or read from its compiled form when installed).
    pub fn load(dir: &Path) -> Result<Package, SandboxError> {
        // An app directory (`xyn-app.toml`, no action manifest) runs as an action whose
        // code is the app framework followed by the app's entry (see `app_source`).
        let is_app = !dir.join(MANIFEST_FILE).exists()
            && dir.join(crate::manifest::APP_MANIFEST_FILE).exists();
        let manifest = if is_app {
            crate::manifest::AppManifest::load(dir)?.as_action()
        } else {
            Manifest::load(dir)?
        };
        let manifest_file = if is_app {
            crate::manifest::APP_MANIFEST_FILE
        } else {
            MANIFEST_FILE
        };
        let modified = std::fs::metadata(dir.join(manifest_file))
            .and_then(|m| m.modified())
            .ok();
        let entry = dir.join(&manifest.entry);
        let code =
            match manifest.runtime {
                RuntimeKind::Wasm => {
                    let compiled = dir.join(COMPILED_WASM);
                    if manifest.entry.ends_with(".wat") && compiled.is_file() {
                        Code::Wasm(read(&compiled)?)
                    } else if manifest.entry.ends_with(".wat") {
                        Code::Wasm(wat::parse_file(&entry).map_err(|e| {
                            SandboxError::manifest(format!("{}: {e}", manifest.entry))
                        })?)
                    } else {
                        Code::Wasm(read(&entry)?)
                    }
                }
                RuntimeKind::Lua | RuntimeKind::Js => {
                    let bytes = read(&entry)?;
                    let text = String::from_utf8(bytes).map_err(|_| {
                        SandboxError::manifest(format!("{} is not UTF-8 text", manifest.entry))
                    })?;
                    if is_app {
                        Code::Script(app_source(manifest.runtime, &text))
                    } else {
                        Code::Script(text)
                    }
                }
            };
        let digest = match &code {
            Code::Wasm(b) => hex::encode(Sha256::digest(b)),
            Code::Script(s) => hex::encode(Sha256::digest(s.as_bytes())),
        };
        Ok(Package {
            dir: dir.to_path_buf(),
            manifest,
            code,
            digest,
            modified,
        })
    }
}

const APP_LUA: &str = include_str!("runtime/app.lua");
const APP_JS: &str = include_str!("runtime/app.js");

/// An app's code as the runtime runs it: the app framework (`app.get` … and the `handle`
/// that dispatches a request to the registered handlers) on the first line, so the app's
/// own lines keep their numbers in error messages, then the app's entry.
pub fn app_source(runtime: RuntimeKind, entry: &str) -> String {
    let framework = match runtime {
        RuntimeKind::Js => APP_JS,
        _ => APP_LUA,
    };
    let one_line: Vec<&str> = framework.lines().map(str::trim).collect();
    format!("{} {entry}", one_line.join(" "))
}

fn read(p: &Path) -> Result<Vec<u8>, SandboxError> {
    std::fs::read(p)
        .map_err(|e| SandboxError::manifest(format!("cannot read {}: {e}", p.display())))
}

/// Settings of a sandbox (one per process).
#[derive(Clone, Debug, Default)]
pub struct SandboxConfig {
    pub limits: DeploymentLimits,
    /// Where precompiled wasm modules are cached (by content hash).
    pub cache_dir: Option<PathBuf>,
}

/// What one invocation needs besides the package.
#[derive(Clone)]
pub struct InvokeRequest {
    pub input: Value,
    pub data_dir: Option<PathBuf>,
    pub db_path: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub http: Arc<dyn HttpBackend>,
    /// Overrides the limits resolved from the deployment and the manifest.
    pub limits: Option<Limits>,
}

/// What happened in one invocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvokeReport {
    pub action: String,
    pub runtime: RuntimeKind,
    pub result: Result<Value, SandboxError>,
    pub counts: BTreeMap<String, u64>,
    pub denials: Vec<Denial>,
    pub logs: Vec<LogLine>,
    pub usage: Usage,
    pub limits: Limits,
    pub digest: String,
    /// Written as a run artifact when a budget was exceeded.
    pub incident: Option<Value>,
}

/// Runtimes and caches of one process.
pub struct Sandbox {
    cfg: SandboxConfig,
    wasm: OnceLock<Result<WasmRuntime, SandboxError>>,
    packages: Mutex<HashMap<PathBuf, Arc<Package>>>,
}

impl Sandbox {
    pub fn new(cfg: SandboxConfig) -> Self {
        Self {
            cfg,
            wasm: OnceLock::new(),
            packages: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// The wasm engine, created on first use.
    pub fn wasm(&self) -> Result<&WasmRuntime, SandboxError> {
        self.wasm
            .get_or_init(|| WasmRuntime::new(&self.cfg.limits, self.cfg.cache_dir.clone()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A package by directory, cached until its manifest changes.
    pub fn package(&self, dir: &Path) -> Result<Arc<Package>, SandboxError> {
        let modified = std::fs::metadata(dir.join(MANIFEST_FILE))
            .or_else(|_| std::fs::metadata(dir.join(crate::manifest::APP_MANIFEST_FILE)))
            .and_then(|m| m.modified())
            .ok();
        if let Some(p) = self.packages.lock().ok().and_then(|m| m.get(dir).cloned())
            && p.modified == modified
        {
            return Ok(p);
        }
        let p = Arc::new(Package::load(dir)?);
        if let Ok(mut m) = self.packages.lock() {
            m.insert(dir.to_path_buf(), p.clone());
        }
        Ok(p)
    }

    /// Drops cached packages and modules: the next invocation is a cold start.
    pub fn forget(&self) {
        if let Ok(mut m) = self.packages.lock() {
            m.clear();
        }
        if let Ok(w) = self.wasm() {
            w.forget();
        }
        js::forget();
        lua::forget();
    }

    /// The limits an invocation of `pkg` runs under (refused when its manifest asks for
    /// more than the deployment's maximum).
    pub fn limits_for(&self, pkg: &Package) -> Result<Limits, SandboxError> {
        self.cfg
            .limits
            .resolve(pkg.manifest.runtime, &pkg.manifest.limits)
    }

    /// Runs one invocation.
    pub fn invoke(&self, pkg: &Package, req: InvokeRequest) -> InvokeReport {
        self.invoke_with(pkg, req, None)
    }

    /// Runs one invocation, telling `on_denial` of each refusal as it happens.
    pub fn invoke_with(
        &self,
        pkg: &Package,
        req: InvokeRequest,
        on_denial: Option<DenialSink>,
    ) -> InvokeReport {
        let resolved = match req.limits.clone() {
            Some(l) => Ok(l),
            None => self.limits_for(pkg),
        };
        let limits = match resolved {
            Ok(l) => l,
            Err(e) => {
                return InvokeReport {
                    action: pkg.manifest.name.clone(),
                    runtime: pkg.manifest.runtime,
                    result: Err(e),
                    counts: BTreeMap::new(),
                    denials: Vec::new(),
                    logs: Vec::new(),
                    usage: Usage::default(),
                    limits: self
                        .cfg
                        .limits
                        .fill(pkg.manifest.runtime, &Default::default()),
                    digest: pkg.digest.clone(),
                    incident: None,
                };
            }
        };
        let input = serde_json::to_vec(&req.input).unwrap_or_else(|_| b"null".to_vec());
        let mut caps = Caps::new(CapsConfig {
            action: pkg.manifest.name.clone(),
            capabilities: pkg.manifest.capabilities.clone(),
            data_dir: req.data_dir.clone(),
            db_path: req.db_path.clone(),
            env: req.env.clone(),
            secrets: req.secrets.clone(),
            http: req.http.clone(),
            deadline: Instant::now() + Duration::from_millis(limits.timeout_ms),
        });
        caps.set_budgets(limits.fuel, limits.memory_bytes);
        if let Some(sink) = on_denial {
            caps.on_denial(sink);
        }
        let run = GuestRun {
            input: &input,
            limits: &limits,
            caps,
        };
        let out = match (&pkg.code, pkg.manifest.runtime) {
            (Code::Wasm(bytes), RuntimeKind::Wasm) => {
                match self.wasm().and_then(|w| w.load(bytes).map(|l| (w, l))) {
                    Ok((w, loaded)) => w.run(&loaded, run),
                    Err(e) => crate::runtime::GuestOutcome {
                        result: Err(e),
                        caps: run.caps,
                        usage: Usage::default(),
                    },
                }
            }
            (Code::Script(src), RuntimeKind::Lua) => {
                lua::run(src, &pkg.manifest.entry, &pkg.digest, run)
            }
            (Code::Script(src), RuntimeKind::Js) => {
                js::run(src, &pkg.manifest.entry, &pkg.digest, run)
            }
            _ => crate::runtime::GuestOutcome {
                result: Err(SandboxError::failed("entry does not fit the runtime")),
                caps: run.caps,
                usage: Usage::default(),
            },
        };
        let result = out.result.and_then(|bytes| {
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| SandboxError::failed(format!("the output is not JSON: {e}")))
        });
        let caps = out.caps;
        // Host work that ran out of a budget ends the invocation with that budget's code,
        // even when the guest caught the error its call returned.
        let result = match (caps.spent(), result) {
            (Some(code), r) if !r.as_ref().is_err_and(SandboxError::is_budget) => Err(
                SandboxError::new(code, "a host call (the database) ran out of the budget"),
            ),
            (_, r) => r,
        };
        let mut report = InvokeReport {
            action: pkg.manifest.name.clone(),
            runtime: pkg.manifest.runtime,
            result,
            counts: caps.counts,
            denials: caps.denials,
            logs: caps.logs,
            usage: out.usage,
            limits,
            digest: pkg.digest.clone(),
            incident: None,
        };
        if let Err(e) = &report.result
            && e.is_budget()
        {
            report.incident = Some(incident(&report, &req.input, e));
        }
        report
    }
}

/// The incident bundle of an exceeded budget (x07-wasm's shape): the input, a report with
/// the budget and what was used, and the module digest.
pub fn incident(r: &InvokeReport, input: &Value, e: &SandboxError) -> Value {
    json!({
        "kind": "xyn.sandbox.incident",
        "input": input,
        "report": {
            "action": r.action,
            "runtime": r.runtime.as_str(),
            "code": e.code,
            "message": e.message,
            "limits": r.limits,
            "usage": r.usage,
            "capability_calls": r.counts,
            "denials": r.denials,
        },
        "module": {"sha256": r.digest},
    })
}
