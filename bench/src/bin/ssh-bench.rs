//! `ssh.run` latency per call against a local OpenSSH server, next to the OpenSSH client
//! (`ssh -o BatchMode=yes … true`, what `ssh.run` ran before it used russh):
//!
//! - `openssh`: the system client, a new process and connection per call;
//! - `ssh.run new`: the action with pooling off (`pool_idle = 0`): TCP, handshake, host key
//!   check, authentication and `exec` per call;
//! - `ssh.run pooled`: the action reusing its authenticated connection: `exec` on a new
//!   channel per call.
//!
//! Each is the median (and p90) of `--runs` calls of `true`. `bash bench/run-ssh.sh` starts
//! the server and runs this.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use clap::Parser;
use serde_json::{Value, json};
use xyn_actions::net::{Egress, HostRule};
use xyn_actions::ssh::{SshRun, SshSettings};
use xyn_actions::{Action, ActionContext, ArtifactSink, Platform};
use xyn_core::XynError;
use xyn_core::records::Artifact;

#[derive(Parser)]
struct Args {
    /// The server's port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The client's private key.
    #[arg(long)]
    key: PathBuf,
    /// A known_hosts file with the server's key.
    #[arg(long)]
    known_hosts: PathBuf,
    #[arg(long, default_value = "root")]
    user: String,
    #[arg(long, default_value_t = 50)]
    runs: usize,
}

struct Nothing;

#[async_trait]
impl Platform for Nothing {
    async fn save_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("bench", "no platform"))
    }
    async fn validate_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("bench", "no platform"))
    }
    async fn promote_draft(&self, _: Value, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("bench", "no platform"))
    }
    async fn emit_event(&self, _: &str, _: Value, _: &str, _: &str) -> Result<Value, XynError> {
        Err(XynError::invalid("bench", "no platform"))
    }
}

#[async_trait]
impl ArtifactSink for Nothing {
    async fn put(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Vec<u8>,
        _: Value,
    ) -> Result<Artifact, XynError> {
        Err(XynError::invalid("bench", "no artifacts"))
    }
}

fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

async fn action_runs(a: &SshRun, args: &Args, n: usize) -> Result<Vec<f64>> {
    let ctx = ActionContext {
        run_id: None,
        step_id: None,
        attempt: 1,
        idempotency_key: "bench".into(),
        correlation_id: "bench".into(),
        actor: "bench".into(),
        timeout: Some(Duration::from_secs(30)),
        platform: Arc::new(Nothing),
        artifacts: Arc::new(Nothing),
        http: xyn_actions::http_client(),
        egress: Arc::new(Egress::new()),
        destinations: xyn_actions::ssh::default_destinations(),
    };
    let input = json!({"host": "127.0.0.1", "port": args.port, "user": args.user, "cmd": "true"});
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = a.execute(&ctx, input.clone()).await;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        if let Err(e) = r {
            bail!("ssh.run failed: {e}");
        }
    }
    Ok(out)
}

fn openssh_runs(args: &Args) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        let st = std::process::Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", args.known_hosts.display()))
            .args(["-o", "IdentitiesOnly=yes", "-o", "ControlMaster=no", "-i"])
            .arg(&args.key)
            .args([
                "-p",
                &args.port.to_string(),
                "-l",
                &args.user,
                "--",
                "127.0.0.1",
                "true",
            ])
            .stdin(std::process::Stdio::null())
            .status()
            .context("ssh")?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        if !st.success() {
            bail!("ssh exited with {st}");
        }
    }
    Ok(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let settings = |pool_idle: Duration| {
        let mut s = SshSettings {
            known_hosts: Some(args.known_hosts.clone()),
            identity_file: Some(args.key.clone()),
            pool_idle,
            ..Default::default()
        };
        s.destinations.any_public = false;
        s.destinations.rules =
            vec![HostRule::parse(&format!("127.0.0.1:{}", args.port)).map_err(anyhow::Error::msg)?];
        anyhow::Ok(s)
    };
    let fresh = SshRun::new(settings(Duration::ZERO)?).map_err(anyhow::Error::msg)?;
    let pooled = SshRun::new(settings(Duration::from_secs(60))?).map_err(anyhow::Error::msg)?;
    // Warm up each path once (page cache, sshd's first fork).
    openssh_runs(&Args {
        runs: 1,
        ..clone_args(&args)
    })?;
    action_runs(&fresh, &args, 1).await?;
    action_runs(&pooled, &args, 1).await?;
    let old = stats(openssh_runs(&args)?);
    let new = stats(action_runs(&fresh, &args, args.runs).await?);
    let pool = stats(action_runs(&pooled, &args, args.runs).await?);
    println!(
        "ssh.run of `true` against sshd on 127.0.0.1:{}, {} calls each",
        args.port, args.runs
    );
    println!("| path | median ms | p90 ms |");
    println!("|---|---|---|");
    println!(
        "| OpenSSH client (`ssh -o BatchMode=yes`), new connection | {:.2} | {:.2} |",
        old.0, old.1
    );
    println!(
        "| ssh.run (russh), new connection | {:.2} | {:.2} |",
        new.0, new.1
    );
    println!(
        "| ssh.run (russh), pooled connection | {:.2} | {:.2} |",
        pool.0, pool.1
    );
    println!(
        "ratio OpenSSH / ssh.run: new connection {:.2}x, pooled {:.2}x",
        old.0 / new.0,
        old.0 / pool.0
    );
    Ok(())
}

fn clone_args(a: &Args) -> Args {
    Args {
        port: a.port,
        key: a.key.clone(),
        known_hosts: a.known_hosts.clone(),
        user: a.user.clone(),
        runs: a.runs,
    }
}
