//! The worker process (`xyn sandbox-worker`): seals itself, then runs invocations it
//! receives on stdin, one at a time, answering on stdout. Messages are JSON, one per line.
//!
//! ```text
//! node → worker   {"type":"invoke", "id":1, "package":…, "input":…, …}
//! worker → node   {"type":"started", "id":1, "digest":…}               (before the guest runs)
//! worker → node   {"type":"http", "id":1, "policy":…, "request":…}     (0..n times)
//! node → worker   {"type":"http_result", "id":1, "result":…}
//! worker → node   {"type":"denied", "id":1, "denial":{…}}              (as each happens)
//! worker → node   {"type":"done", "id":1, "report":{…}}
//! ```
//!
//! The first line the worker writes is `{"type":"ready","seal":{…}}`. It exits when stdin
//! closes. Nothing else is ever written to stdout; the guest's `print` goes to its log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Stdin, Stdout, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::caps::Denial;
use crate::caps::http::{HttpBackend, HttpFailure, HttpPolicy, HttpRequest, HttpResponse};
use crate::error::{SandboxError, codes};
use crate::limits::DeploymentLimits;
use crate::sandbox::{InvokeReport, InvokeRequest, Sandbox, SandboxConfig};
use crate::seal::{SealConfig, SealReport};

/// Node → worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    Invoke(Box<InvokeMsg>),
    HttpResult {
        id: u64,
        result: Result<HttpResponse, HttpFailure>,
    },
    /// Drop cached packages and modules (benchmarks of cold starts).
    Forget,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvokeMsg {
    pub id: u64,
    pub package: PathBuf,
    pub data_dir: Option<PathBuf>,
    pub db_path: Option<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    pub input: Value,
}

/// Worker → node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    Ready {
        seal: SealReport,
    },
    /// The invocation's package is loaded: the digest of the code about to run (so the
    /// incident of a worker killed later names its module).
    Started {
        id: u64,
        digest: String,
    },
    Http {
        id: u64,
        policy: HttpPolicy,
        request: HttpRequest,
    },
    /// A refusal, sent as it happens (before the result), so that a worker killed later
    /// still leaves every `xyn.cap.denied` behind.
    Denied {
        id: u64,
        denial: Denial,
    },
    Done {
        id: u64,
        report: Box<InvokeReport>,
    },
    Fatal {
        code: String,
        message: String,
    },
}

/// How the worker was started.
#[derive(Clone, Debug, Default)]
pub struct WorkerArgs {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    /// Run even when the kernel cannot seal the process.
    pub allow_weak: bool,
    /// Test hook: seal, try to escape, print a JSON report, exit.
    pub self_test_seal: bool,
    /// Extra paths the seal self-test tries to read (each must be refused or allowed as
    /// the roots say).
    pub probe: Vec<PathBuf>,
    /// Test hook (`--test-no-landlock`, accepted only by builds with the `test-hooks`
    /// feature): seal as on a kernel without Landlock.
    pub test_no_landlock: bool,
    pub limits: DeploymentLimits,
    /// The worker's data-segment limit (`RLIMIT_DATA`, bytes): its action's memory budget
    /// plus [`crate::limits::WORKER_MEMORY_OVERHEAD`]. Set before sealing.
    pub memory_limit: Option<u64>,
}

impl WorkerArgs {
    /// Parses the worker's command line (after `sandbox-worker`).
    pub fn parse(args: &[String]) -> Result<WorkerArgs, String> {
        let mut w = WorkerArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                "--read" => w.read.push(PathBuf::from(val()?)),
                "--write" => w.write.push(PathBuf::from(val()?)),
                "--cache" => w.cache_dir = Some(PathBuf::from(val()?)),
                "--allow-weak" => w.allow_weak = true,
                "--self-test-seal" => w.self_test_seal = true,
                "--probe" => w.probe.push(PathBuf::from(val()?)),
                "--test-no-landlock" if crate::seal::TEST_HOOKS => w.test_no_landlock = true,
                "--memory-limit" => {
                    w.memory_limit =
                        Some(val()?.parse().map_err(|e| format!("--memory-limit: {e}"))?)
                }
                "--limits" => {
                    w.limits =
                        serde_json::from_str(&val()?).map_err(|e| format!("--limits: {e}"))?
                }
                other => return Err(format!("unknown worker argument {other:?}")),
            }
        }
        Ok(w)
    }

    /// The command-line form of these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for r in &self.read {
            v.push("--read".into());
            v.push(r.display().to_string());
        }
        for r in &self.write {
            v.push("--write".into());
            v.push(r.display().to_string());
        }
        if let Some(c) = &self.cache_dir {
            v.push("--cache".into());
            v.push(c.display().to_string());
        }
        if self.allow_weak {
            v.push("--allow-weak".into());
        }
        if self.self_test_seal {
            v.push("--self-test-seal".into());
        }
        for p in &self.probe {
            v.push("--probe".into());
            v.push(p.display().to_string());
        }
        if self.test_no_landlock {
            v.push("--test-no-landlock".into());
        }
        if let Some(m) = self.memory_limit {
            v.push("--memory-limit".into());
            v.push(m.to_string());
        }
        v.push("--limits".into());
        v.push(serde_json::to_string(&self.limits).unwrap_or_else(|_| "{}".into()));
        v
    }
}

struct Pipe {
    reader: Mutex<BufReader<Stdin>>,
    writer: Mutex<Stdout>,
}

impl Pipe {
    fn send(&self, msg: &FromWorker) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(&line)?;
        w.flush()
    }

    fn recv(&self) -> std::io::Result<Option<ToWorker>> {
        let mut r = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("bad message from the node: {e}")))
    }
}

/// HTTP through the node: the request goes up the pipe, the answer comes back down.
struct PipeHttp {
    pipe: Arc<Pipe>,
    id: u64,
}

impl HttpBackend for PipeHttp {
    fn request(
        &self,
        policy: &HttpPolicy,
        req: HttpRequest,
        _secrets: &BTreeMap<String, String>,
    ) -> Result<HttpResponse, HttpFailure> {
        self.pipe
            .send(&FromWorker::Http {
                id: self.id,
                policy: policy.clone(),
                request: req,
            })
            .map_err(|e| HttpFailure::Failed(format!("node unreachable: {e}")))?;
        match self.pipe.recv() {
            Ok(Some(ToWorker::HttpResult { id, result })) if id == self.id => result,
            Ok(_) => Err(HttpFailure::Failed(
                "unexpected message from the node".into(),
            )),
            Err(e) => Err(HttpFailure::Failed(e.to_string())),
        }
    }
}

/// The worker's main function. Returns the process exit code.
pub fn main(args: WorkerArgs) -> i32 {
    // The memory limit, then the seal, before any thread exists.
    let memory = args.memory_limit.map(|m| {
        crate::seal::limit_memory(m).map(|()| {
            format!(
                "memory: the worker's data segment is limited to {} MiB (RLIMIT_DATA)",
                m >> 20
            )
        })
    });
    let seal = crate::seal::seal(
        &SealConfig {
            read: args.read.clone(),
            write: args.write.clone(),
            simulate_no_landlock: args.test_no_landlock,
        },
        !args.allow_weak,
    );
    if args.self_test_seal {
        return self_test(seal, &args);
    }
    let pipe = Arc::new(Pipe {
        reader: Mutex::new(BufReader::new(std::io::stdin())),
        writer: Mutex::new(std::io::stdout()),
    });
    let seal = match (seal, memory) {
        (Ok(mut s), Some(Err(e))) if args.allow_weak => {
            s.notes.push(format!("memory: not limited ({e})"));
            Ok(s)
        }
        (Ok(_), Some(Err(e))) => Err(SandboxError::new(
            codes::SANDBOX_WEAK,
            format!("cannot limit the worker's memory: {e}"),
        )),
        (Ok(mut s), Some(Ok(note))) => {
            s.notes.push(note);
            Ok(s)
        }
        (s, _) => s,
    };
    let seal = match seal {
        Ok(s) => s,
        Err(e) => {
            let _ = pipe.send(&FromWorker::Fatal {
                code: e.code,
                message: e.message,
            });
            return 3;
        }
    };
    if pipe.send(&FromWorker::Ready { seal }).is_err() {
        return 1;
    }
    let sandbox = Sandbox::new(SandboxConfig {
        limits: args.limits.clone(),
        cache_dir: args.cache_dir.clone(),
    });
    loop {
        let msg = match pipe.recv() {
            Ok(Some(m)) => m,
            Ok(None) => return 0,
            Err(_) => return 1,
        };
        match msg {
            ToWorker::Invoke(m) => {
                let id = m.id;
                let report = invoke(&sandbox, &pipe, *m);
                if pipe
                    .send(&FromWorker::Done {
                        id,
                        report: Box::new(report),
                    })
                    .is_err()
                {
                    return 1;
                }
            }
            ToWorker::Forget => sandbox.forget(),
            ToWorker::HttpResult { .. } => {}
        }
    }
}

fn invoke(sandbox: &Sandbox, pipe: &Arc<Pipe>, m: InvokeMsg) -> InvokeReport {
    let pkg = match sandbox.package(&m.package) {
        Ok(p) => p,
        Err(e) => return failed_report(&m, e),
    };
    let id = m.id;
    let _ = pipe.send(&FromWorker::Started {
        id,
        digest: pkg.digest.clone(),
    });
    let to_node = pipe.clone();
    let on_denial: crate::caps::DenialSink = Box::new(move |d: &Denial| {
        let _ = to_node.send(&FromWorker::Denied {
            id,
            denial: d.clone(),
        });
    });
    sandbox.invoke_with(
        &pkg,
        InvokeRequest {
            input: m.input,
            data_dir: m.data_dir,
            db_path: m.db_path,
            env: m.env,
            secrets: m.secrets,
            http: Arc::new(PipeHttp {
                pipe: pipe.clone(),
                id: m.id,
            }),
            limits: None,
        },
        Some(on_denial),
    )
}

fn failed_report(m: &InvokeMsg, e: SandboxError) -> InvokeReport {
    InvokeReport {
        action: m.package.display().to_string(),
        runtime: crate::manifest::RuntimeKind::Wasm,
        result: Err(e),
        counts: Default::default(),
        denials: Vec::new(),
        logs: Vec::new(),
        usage: Default::default(),
        limits: DeploymentLimits::default()
            .fill(crate::manifest::RuntimeKind::Wasm, &Default::default()),
        digest: String::new(),
        incident: None,
    }
}

/// The sealing test hook: after sealing, what native code in the worker (standing in for a
/// runtime bug) can still do. Printed as one JSON line.
fn self_test(seal: Result<SealReport, SandboxError>, args: &WorkerArgs) -> i32 {
    fn attempt(f: impl FnOnce() -> std::io::Result<String>) -> Value {
        match f() {
            Ok(s) => json!({"ok": true, "detail": s}),
            Err(e) => json!({"ok": false, "errno": e.raw_os_error(), "error": e.to_string()}),
        }
    }
    let open_outside = || attempt(|| std::fs::read_to_string("/etc/hostname"));
    let spawn = || {
        attempt(|| {
            std::process::Command::new("/bin/true")
                .status()
                .map(|s| s.to_string())
        })
    };
    let inside = args
        .read
        .first()
        .map(|r| attempt(|| std::fs::read_dir(r).map(|d| format!("{} entries", d.count()))));
    let write_inside = args.write.first().map(|w| {
        attempt(|| std::fs::write(w.join("self-test.txt"), b"ok").map(|_| "written".to_string()))
    });
    let socket =
        || attempt(|| std::net::TcpStream::connect("127.0.0.1:9").map(|_| "connected".into()));
    let main_thread = json!({
        "open_etc_hostname": open_outside(),
        "spawn_process": spawn(),
        "tcp_socket": socket(),
    });
    // The same from a thread started after sealing (threads must still work: clone3 is
    // answered with ENOSYS and libc falls back to clone).
    let from_thread = std::thread::spawn(move || {
        json!({
            "open_etc_hostname": open_outside(),
            "spawn_process": spawn(),
        })
    })
    .join()
    .unwrap_or_else(|_| json!({"panicked": true}));
    let probes: Vec<Value> = args
        .probe
        .iter()
        .map(|p| {
            let r = attempt(|| {
                if p.is_dir() {
                    std::fs::read_dir(p).map(|d| format!("{} entries", d.count()))
                } else {
                    std::fs::read(p).map(|b| format!("{} bytes", b.len()))
                }
            });
            json!({"path": p.display().to_string(), "result": r})
        })
        .collect();
    let report = json!({
        "probes": probes,
        "seal": match &seal { Ok(s) => json!(s), Err(e) => e.to_value() },
        "main_thread": main_thread,
        "thread": from_thread,
        "read_inside_root": inside,
        "write_inside_root": write_inside,
    });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{report}");
    let _ = out.flush();
    if seal.is_err() { 3 } else { 0 }
}

/// The error the node reports when the worker could not be used.
pub fn unavailable(message: impl Into<String>) -> SandboxError {
    SandboxError::new(codes::SANDBOX_UNAVAILABLE, message)
}
