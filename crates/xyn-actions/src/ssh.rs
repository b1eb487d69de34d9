//! `ssh.run`: runs one command on a host through the system's OpenSSH client.
//!
//! Non-interactive (`BatchMode=yes`), host keys checked (`StrictHostKeyChecking=yes` unless the
//! step says `known_hosts: accept-new`), bounded by the step timeout; the child is killed when
//! the step ends. Exit status 255 is OpenSSH's own failure (connection, authentication) and is
//! retryable; any other non-zero status fails the step with the command's output attached.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::{Action, ActionContext, ActionError, ActionOutput, Redaction};

/// Output kept inline per stream; the rest is cut (the full stream goes to an artifact).
const INLINE_MAX: usize = 64 * 1024;
/// Most output read per stream.
const STREAM_MAX: usize = 8 * 1024 * 1024;

pub struct SshRun;

fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

#[async_trait]
impl Action for SshRun {
    fn name(&self) -> &str {
        "ssh.run"
    }

    fn description(&self) -> &str {
        "Runs one command on a host over SSH (OpenSSH client, non-interactive, host keys checked)."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["host", "cmd"],
            "properties": {
                "host": {"type": "string", "minLength": 1},
                "cmd": {"type": "string", "minLength": 1},
                "user": {"type": "string"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "identity_file": {"type": "string"},
                "known_hosts": {"type": "string", "enum": ["strict", "accept-new"]},
                "known_hosts_file": {"type": "string"},
                "connect_timeout": {"type": "string"},
                "allow_failure": {"type": "boolean"}
            }
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["exit_code", "stdout", "stderr"],
            "properties": {
                "exit_code": {"type": "integer"},
                "stdout": {"type": "string"},
                "stderr": {"type": "string"},
                "stdout_artifact_id": {"type": "string"},
                "elapsed_ms": {"type": "integer"}
            }
        })
    }

    fn redaction(&self) -> Redaction {
        Redaction {
            pointers: vec![],
            sensitive_keys: true,
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: Value,
    ) -> Result<ActionOutput, ActionError> {
        let get = |k: &str| input.get(k).and_then(Value::as_str);
        let host = get("host").unwrap_or_default();
        if !safe_name(host) {
            return Err(ActionError::new(
                "action.input_invalid",
                format!("host {host:?} is not a host name"),
                false,
            ));
        }
        let user = get("user");
        if let Some(u) = user
            && !safe_name(u)
        {
            return Err(ActionError::new(
                "action.input_invalid",
                format!("user {u:?} is not a user name"),
                false,
            ));
        }
        let cmd = get("cmd").unwrap_or_default();
        let connect_timeout = get("connect_timeout")
            .and_then(xyn_core::duration::parse_duration_ms)
            .map_or(10, |ms| (ms / 1000).max(1));
        let strict = match get("known_hosts") {
            Some("accept-new") => "accept-new",
            _ => "yes",
        };
        let mut c = tokio::process::Command::new("ssh");
        c.arg("-o").arg("BatchMode=yes");
        c.arg("-o").arg(format!("ConnectTimeout={connect_timeout}"));
        c.arg("-o").arg(format!("StrictHostKeyChecking={strict}"));
        if let Some(f) = get("known_hosts_file") {
            c.arg("-o").arg(format!("UserKnownHostsFile={f}"));
        }
        if let Some(p) = input.get("port").and_then(Value::as_u64) {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(i) = get("identity_file") {
            c.arg("-i").arg(i).arg("-o").arg("IdentitiesOnly=yes");
        }
        if let Some(u) = user {
            c.arg("-l").arg(u);
        }
        c.arg("--").arg(host).arg(cmd);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = std::time::Instant::now();
        let mut child = c.spawn().map_err(|e| {
            ActionError::new(
                "ssh.unavailable",
                format!("cannot start the ssh client: {e} (is OpenSSH installed?)"),
                false,
            )
        })?;
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let read = |s: Option<tokio::process::ChildStdout>| async move {
            let mut buf = Vec::new();
            if let Some(mut s) = s {
                let _ = (&mut s).take(STREAM_MAX as u64).read_to_end(&mut buf).await;
            }
            buf
        };
        let read_err = |s: Option<tokio::process::ChildStderr>| async move {
            let mut buf = Vec::new();
            if let Some(mut s) = s {
                let _ = (&mut s).take(STREAM_MAX as u64).read_to_end(&mut buf).await;
            }
            buf
        };
        let limit = ctx.timeout.unwrap_or(Duration::from_secs(600));
        let res = tokio::time::timeout(limit, async {
            let (o, e) = tokio::join!(read(out.take()), read_err(err.take()));
            let status = child.wait().await;
            (o, e, status)
        })
        .await;
        let (stdout, stderr, status) = match res {
            Ok(x) => x,
            Err(_) => {
                return Err(ActionError::new(
                    "ssh.timeout",
                    format!(
                        "the command on {host} did not finish within {}ms",
                        limit.as_millis()
                    ),
                    true,
                ));
            }
        };
        let status = status.map_err(|e| {
            ActionError::new("ssh.error", format!("waiting for ssh failed: {e}"), true)
        })?;
        let code = status.code().unwrap_or(-1);
        let text = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            if s.len() > INLINE_MAX {
                let mut cut = INLINE_MAX;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}…[{} more bytes]", &s[..cut], s.len() - cut)
            } else {
                s.into_owned()
            }
        };
        let mut output = json!({
            "exit_code": code,
            "stdout": text(&stdout),
            "stderr": text(&stderr),
            "elapsed_ms": started.elapsed().as_millis() as u64,
        });
        if stdout.len() > INLINE_MAX {
            let a = ctx
                .artifacts
                .put(
                    "stdout",
                    "log",
                    "text/plain",
                    stdout.clone(),
                    json!({"host": host}),
                )
                .await
                .map_err(ActionError::from)?;
            output["stdout_artifact_id"] = Value::String(a.artifact_id.to_string());
        }
        let allow_failure = input
            .get("allow_failure")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if code == 255 {
            return Err(ActionError::new(
                "ssh.connect",
                format!(
                    "ssh to {host} failed: {}",
                    String::from_utf8_lossy(&stderr).trim()
                ),
                true,
            )
            .with_details(output));
        }
        if code != 0 && !allow_failure {
            return Err(ActionError::new(
                "ssh.exit_status",
                format!("the command on {host} exited with {code}"),
                false,
            )
            .with_details(output));
        }
        Ok(ActionOutput {
            output,
            bytes_in: (stdout.len() + stderr.len()) as u64,
            bytes_out: cmd.len() as u64,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_option_injection() {
        assert!(safe_name("web-1.example.com"));
        assert!(safe_name("10.0.0.1"));
        assert!(!safe_name("-oProxyCommand=touch /tmp/x"));
        assert!(!safe_name("a b"));
        assert!(!safe_name(""));
    }
}
