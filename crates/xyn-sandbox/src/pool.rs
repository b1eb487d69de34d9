//! The node's side of the worker processes: spawns `xyn sandbox-worker`, reuses idle
//! workers, forwards the HTTP requests they ask for (through the same allowlist checks),
//! and keeps a watchdog on each invocation: a worker that does not answer by the deadline
//! (stuck in a C function, say) is killed and the step fails with `budget.timeout`. A
//! worker that dies fails only the invocation it was running.

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
    pub worker: WorkerArgs,
    /// Most workers at once (concurrent invocations).
    pub size: usize,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// Spawns and reuses sandbox workers.
pub struct WorkerPool {
    cfg: PoolConfig,
    idle: Mutex<Vec<Worker>>,
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

    /// How the last worker started was sealed.
    pub fn seal_report(&self) -> Option<SealReport> {
        self.seal.lock().ok().and_then(|s| s.clone())
    }

    async fn spawn(&self) -> Result<Worker, PoolError> {
        let mut cmd = Command::new(&self.cfg.program);
        cmd.args(&self.cfg.prefix)
            .args(self.cfg.worker.to_args())
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

    /// Starts one worker (to learn how it is sealed) and keeps it for later use.
    pub async fn warm_up(&self) -> Result<SealReport, SandboxError> {
        let w = self.spawn().await.map_err(|e| e.to_error())?;
        self.put_back(w);
        self.seal_report()
            .ok_or_else(|| unavailable("no seal report"))
    }

    fn put_back(&self, w: Worker) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(w);
        }
    }

    /// Asks every idle worker to drop its caches (benchmarks of cold starts).
    pub async fn forget(&self) {
        let workers: Vec<Worker> = self
            .idle
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        for mut w in workers {
            if send(&mut w.stdin, &ToWorker::Forget).await.is_ok() {
                self.put_back(w);
            }
        }
    }

    /// Runs one invocation in a worker; `deadline` is the watchdog's limit.
    pub async fn invoke(
        &self,
        mut msg: InvokeMsg,
        deadline: Duration,
    ) -> Result<InvokeReport, PoolError> {
        let _permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| PoolError::Unavailable(unavailable("the pool is closed")))?;
        let worker = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut w = match worker {
            Some(w) => w,
            None => self.spawn().await?,
        };
        msg.id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let res = tokio::time::timeout(deadline, self.converse(&mut w, msg)).await;
        match res {
            Ok(Ok(report)) => {
                self.put_back(w);
                Ok(report)
            }
            Ok(Err(e)) => {
                let _ = w.child.start_kill();
                let status = tokio::time::timeout(Duration::from_secs(2), w.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "no exit status".into());
                Err(PoolError::Crashed(format!("{e} ({status})")))
            }
            Err(_) => {
                let _ = w.child.kill().await;
                Err(PoolError::Timeout(deadline))
            }
        }
    }

    async fn converse(&self, w: &mut Worker, msg: InvokeMsg) -> Result<InvokeReport, String> {
        let id = msg.id;
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
                Ok(FromWorker::Http {
                    id: got,
                    policy,
                    request,
                }) if got == id => {
                    let result = self.http.execute(&policy, request).await;
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

async fn send(stdin: &mut ChildStdin, msg: &ToWorker) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await
}
