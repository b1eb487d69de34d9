//! The node's side of the worker processes: spawns `xyn sandbox-worker`, reuses idle
//! workers, forwards the HTTP requests they ask for (through the same allowlist checks),
//! and keeps a watchdog on each invocation: a worker that does not answer by the deadline
//! (stuck in a C function, say) is killed and the step fails with `budget.timeout`. A
//! worker that dies fails only the invocation it was running.
//!
//! Workers are keyed by action: each is sealed to the roots of the one action it serves
//! ([`WorkerRoots`]: its package read-only, its own data dir, database dir and module
//! cache), and only ever runs that action's invocations. An escape from one guest's
//! runtime therefore reaches that action's files, never another action's. At most
//! `size` workers are busy at once; up to `max_idle` idle ones are kept (the least
//! recently used is stopped first).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use crate::caps::http::HttpExecutor;
use crate::error::{SandboxError, codes};
use crate::sandbox::InvokeReport;
use crate::seal::SealReport;
use crate::worker::{FromWorker, InvokeMsg, ToWorker, WorkerArgs, unavailable};

/// How to start workers.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The program (the `xyn` binary).
    pub program: PathBuf,
    /// Arguments before the worker's own (`["sandbox-worker"]`).
    pub prefix: Vec<String>,
    /// The arguments every worker shares (limits, `--allow-weak`); its roots are replaced
    /// by those of the action a worker serves.
    pub worker: WorkerArgs,
    /// Most workers busy at once (concurrent invocations).
    pub size: usize,
    /// Most idle workers kept for reuse (0: `4 × size`).
    pub max_idle: usize,
}

/// What one worker is sealed to: the roots of one action. Workers are reused only for the
/// same `key`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerRoots {
    /// The action's name.
    pub key: String,
    /// Read-only roots (its package).
    pub read: Vec<PathBuf>,
    /// Writable roots (its data dir, database dir, module cache).
    pub write: Vec<PathBuf>,
    /// Where its precompiled modules are cached.
    pub cache_dir: Option<PathBuf>,
    /// The action's HTTP allowlist, as the node knows it from the manifest. When set, the
    /// node checks the requests this worker forwards against it — never against the policy
    /// the worker sends along, which a compromised worker could widen.
    pub http_policy: Option<crate::caps::http::HttpPolicy>,
    /// The action's memory budget: the worker's data segment is limited to it plus
    /// [`crate::limits::WORKER_MEMORY_OVERHEAD`].
    pub memory_bytes: Option<u64>,
}

/// What the node learned of an invocation while it ran: enough for a complete incident
/// when the worker never answers (the watchdog killed it, it crashed).
#[derive(Clone, Debug, Default)]
pub struct Partial {
    /// The refusals the worker sent as they happened.
    pub denials: Vec<crate::caps::Denial>,
    /// The digest of the code the worker started running.
    pub digest: String,
    /// The worker's peak resident memory (`VmHWM`), read before it was stopped.
    pub peak_rss_bytes: Option<u64>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// Spawns and reuses sandbox workers.
pub struct WorkerPool {
    cfg: PoolConfig,
    /// Idle workers with the key they serve, least recently used first.
    idle: Mutex<Vec<(String, Worker)>>,
    slots: Semaphore,
    http: Arc<HttpExecutor>,
    seal: Mutex<Option<SealReport>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// How an invocation through the pool ended, when it did not produce a report.
#[derive(Debug)]
pub enum PoolError {
    /// The worker did not answer by the deadline and was killed.
    Timeout(Duration),
    /// The worker died (crash, signal, runtime bug).
    Crashed(String),
    /// The worker was stopped by its memory limit: it aborted when an allocation failed
    /// under its `RLIMIT_DATA`, or the kernel killed it (a cgroup's `memory.max`).
    OutOfMemory(String),
    /// The worker could not be started or used.
    Unavailable(SandboxError),
}

impl PoolError {
    pub fn to_error(&self) -> SandboxError {
        match self {
            PoolError::Timeout(d) => SandboxError::new(
                codes::TIMEOUT,
                format!(
                    "the sandbox worker did not answer within {} ms and was stopped",
                    d.as_millis()
                ),
            ),
            PoolError::Crashed(m) => {
                SandboxError::failed(format!("the sandbox worker crashed: {m}"))
                    .with_details(serde_json::json!({"reason": "worker_crashed"}))
            }
            PoolError::OutOfMemory(m) => SandboxError::new(
                codes::MEMORY_EXCEEDED,
                format!("the sandbox worker ran out of memory and was stopped: {m}"),
            )
            .with_details(serde_json::json!({"reason": "worker_memory_limit"})),
            PoolError::Unavailable(e) => e.clone(),
        }
    }
}

impl WorkerPool {
    pub fn new(cfg: PoolConfig) -> Self {
        let size = cfg.size.max(1);
        Self {
            cfg,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(size),
            http: Arc::new(HttpExecutor::default()),
            seal: Mutex::new(None),
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Forwarded requests go through `exec` (the node's egress, its listeners and the
    /// operator's choices) instead of a default executor.
    pub fn with_http(mut self, exec: HttpExecutor) -> Self {
        self.http = Arc::new(exec);
        self
    }

    /// How the last worker started was sealed.
    pub fn seal_report(&self) -> Option<SealReport> {
        self.seal.lock().ok().and_then(|s| s.clone())
    }

    /// The worker arguments for `roots`.
    pub fn worker_args(&self, roots: &WorkerRoots) -> WorkerArgs {
        WorkerArgs {
            read: roots.read.clone(),
            write: roots.write.clone(),
            cache_dir: roots.cache_dir.clone(),
            memory_limit: roots
                .memory_bytes
                .map(|m| m.saturating_add(crate::limits::WORKER_MEMORY_OVERHEAD)),
            ..self.cfg.worker.clone()
        }
    }

    /// Most busy workers.
    pub fn size(&self) -> usize {
        self.cfg.size.max(1)
    }

    /// How many idle workers are kept, and for which keys (oldest first).
    pub fn idle_keys(&self) -> Vec<String> {
        self.idle
            .lock()
            .map(|v| v.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default()
    }

    async fn spawn(&self, roots: &WorkerRoots) -> Result<Worker, PoolError> {
        let mut cmd = Command::new(&self.cfg.program);
        cmd.args(&self.cfg.prefix)
            .args(self.worker_args(roots).to_args())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            PoolError::Unavailable(unavailable(format!(
                "cannot start {}: {e}",
                self.cfg.program.display()
            )))
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(PoolError::Unavailable(unavailable(
                "the worker has no pipes",
            )));
        };
        let mut stdout = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), stdout.next_line()).await;
        let line = match first {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                return Err(PoolError::Unavailable(unavailable(format!(
                    "the worker exited at start ({status})"
                ))));
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(PoolError::Unavailable(unavailable(
                    "the worker did not start in time",
                )));
            }
        };
        match serde_json::from_str::<FromWorker>(&line) {
            Ok(FromWorker::Ready { seal }) => {
                if let Ok(mut s) = self.seal.lock() {
                    *s = Some(seal);
                }
                Ok(Worker {
                    child,
                    stdin,
                    stdout,
                })
            }
            Ok(FromWorker::Fatal { code, message }) => {
                let _ = child.wait().await;
                Err(PoolError::Unavailable(SandboxError::new(&code, message)))
            }
            _ => {
                let _ = child.kill().await;
                Err(PoolError::Unavailable(unavailable(
                    "the worker spoke out of turn",
                )))
            }
        }
    }

    /// Starts one worker sealed to no root at all, to learn how this machine seals
    /// workers, and stops it.
    pub async fn warm_up(&self) -> Result<SealReport, SandboxError> {
        let mut w = self
            .spawn(&WorkerRoots::default())
            .await
            .map_err(|e| e.to_error())?;
        let _ = w.child.start_kill();
        self.seal_report()
            .ok_or_else(|| unavailable("no seal report"))
    }

    fn put_back(&self, key: &str, w: Worker) {
        let max_idle = match self.cfg.max_idle {
            0 => self.size() * 4,
            n => n,
        };
        let evicted = match self.idle.lock() {
            Ok(mut idle) => {
                idle.push((key.to_string(), w));
                let over = idle.len().saturating_sub(max_idle);
                idle.drain(..over).collect::<Vec<_>>()
            }
            Err(_) => Vec::new(),
        };
        // Dropping a worker kills it (`kill_on_drop`).
        drop(evicted);
    }

    /// Stops the idle workers of `key`: its package was replaced or removed, and a worker's
    /// Landlock rules hold the old directory (by inode) and its caches the old code.
    pub fn retire(&self, key: &str) {
        let gone: Vec<(String, Worker)> = match self.idle.lock() {
            Ok(mut idle) => {
                let (gone, keep) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|(k, _)| k == key);
                *idle = keep;
                gone
            }
            Err(_) => Vec::new(),
        };
        // Dropping a worker kills it (`kill_on_drop`).
        drop(gone);
    }

    fn take_idle(&self, key: &str) -> Option<Worker> {
        let mut idle = self.idle.lock().ok()?;
        let at = idle.iter().rposition(|(k, _)| k == key)?;
        Some(idle.remove(at).1)
    }

    /// Asks every idle worker to drop its caches (benchmarks of cold starts).
    pub async fn forget(&self) {
        let workers: Vec<(String, Worker)> = self
            .idle
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        for (key, mut w) in workers {
            if send(&mut w.stdin, &ToWorker::Forget).await.is_ok() {
                self.put_back(&key, w);
            }
        }
    }

    /// Runs one invocation in a worker sealed to `roots` (an idle one for the same key, or
    /// a new one); `deadline` is the watchdog's limit.
    pub async fn invoke(
        &self,
        roots: &WorkerRoots,
        msg: InvokeMsg,
        deadline: Duration,
    ) -> Result<InvokeReport, PoolError> {
        self.invoke_tracked(roots, msg, deadline, &mut Partial::default())
            .await
    }

    /// [`WorkerPool::invoke`], keeping in `partial` what the worker reported while it ran
    /// (denials as they happened, the module digest, its peak memory when stopped).
    pub async fn invoke_tracked(
        &self,
        roots: &WorkerRoots,
        mut msg: InvokeMsg,
        deadline: Duration,
        partial: &mut Partial,
    ) -> Result<InvokeReport, PoolError> {
        let _permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| PoolError::Unavailable(unavailable("the pool is closed")))?;
        let mut w = match self.take_idle(&roots.key) {
            Some(w) => w,
            None => self.spawn(roots).await?,
        };
        msg.id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let res = tokio::time::timeout(
            deadline,
            self.converse(&mut w, msg, roots.http_policy.as_ref(), partial),
        )
        .await;
        if res.as_ref().map_or(true, Result::is_err) {
            partial.peak_rss_bytes = w.child.id().and_then(peak_rss);
        }
        match res {
            Ok(Ok(report)) => {
                self.put_back(&roots.key, w);
                Ok(report)
            }
            Ok(Err(e)) => {
                // Reap first: a worker that died on its own has a status that says how.
                let died = tokio::time::timeout(Duration::from_millis(500), w.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok);
                let status = match died {
                    Some(s) => Some(s),
                    None => {
                        let _ = w.child.start_kill();
                        tokio::time::timeout(Duration::from_secs(2), w.child.wait())
                            .await
                            .ok()
                            .and_then(Result::ok)
                    }
                };
                let text = status.map_or_else(|| "no exit status".into(), |s| s.to_string());
                if roots.memory_bytes.is_some() && status.is_some_and(memory_death) {
                    return Err(PoolError::OutOfMemory(format!("{e} ({text})")));
                }
                Err(PoolError::Crashed(format!("{e} ({text})")))
            }
            Err(_) => {
                let _ = w.child.kill().await;
                Err(PoolError::Timeout(deadline))
            }
        }
    }

    async fn converse(
        &self,
        w: &mut Worker,
        msg: InvokeMsg,
        node_policy: Option<&crate::caps::http::HttpPolicy>,
        partial: &mut Partial,
    ) -> Result<InvokeReport, String> {
        let id = msg.id;
        // The node's copy of the secret values: forwarded requests are checked against the
        // hosts each is bound to, and responses scrubbed of them, whatever the worker says.
        let secrets = msg.secrets.clone();
        send(&mut w.stdin, &ToWorker::Invoke(Box::new(msg)))
            .await
            .map_err(|e| format!("cannot write to the worker: {e}"))?;
        loop {
            let line = match w.stdout.next_line().await {
                Ok(Some(l)) => l,
                Ok(None) => return Err("the worker closed its output".into()),
                Err(e) => return Err(format!("cannot read from the worker: {e}")),
            };
            match serde_json::from_str::<FromWorker>(&line) {
                Ok(FromWorker::Done { id: got, report }) if got == id => return Ok(*report),
                Ok(FromWorker::Started { id: got, digest }) if got == id => {
                    partial.digest = digest;
                }
                Ok(FromWorker::Denied { id: got, denial }) if got == id => {
                    if partial.denials.len() < MAX_STREAMED_DENIALS {
                        partial.denials.push(denial);
                    }
                }
                Ok(FromWorker::Http {
                    id: got,
                    policy,
                    request,
                }) if got == id => {
                    let policy = node_policy.unwrap_or(&policy);
                    let result = self.http.execute(policy, request, &secrets).await;
                    send(&mut w.stdin, &ToWorker::HttpResult { id, result })
                        .await
                        .map_err(|e| format!("cannot write to the worker: {e}"))?;
                }
                Ok(other) => return Err(format!("unexpected message from the worker: {other:?}")),
                Err(e) => return Err(format!("garbled message from the worker: {e}")),
            }
        }
    }
}

/// Whether a worker that exited with `status` was stopped by its memory limit: Rust aborts
/// (`SIGABRT`) when an allocation fails under `RLIMIT_DATA`; the kernel's OOM killer
/// (a cgroup's `memory.max`) sends `SIGKILL`, which the node never sends but at the
/// watchdog's deadline.
fn memory_death(status: std::process::ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        matches!(status.signal(), Some(6 | 9))
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        false
    }
}

/// Most denials kept from one invocation's stream (a guest could refuse itself in a loop).
const MAX_STREAMED_DENIALS: usize = 10_000;

/// A process's peak resident memory (`VmHWM` in `/proc/<pid>/status`), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

async fn send(stdin: &mut ChildStdin, msg: &ToWorker) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await
}
