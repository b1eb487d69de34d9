//! `http.call`: one HTTP request, its response captured.
//!
//! Event data and blueprint inputs often choose the URL, so the request goes through the
//! node's destination policy ([`crate::net`]): without `[actions.http] allow` in `xyn.toml`
//! any public address may be called and loopback, private, link-local and metadata
//! addresses (in every spelling, also after DNS) are refused; with it, only the listed
//! destinations (an IP literal or `localhost` listed there may be private). The node's own
//! listeners are refused unless `[actions.http] allow_node = true` and a rule names them.
//! Redirects are followed one hop at a time (at most 5), each checked again; one to another
//! origin drops credentials. A refusal fails the step with `http.denied`.
//!
//! The request carries `Idempotency-Key: <run_id>:<step_id>` (the same for every attempt of the
//! step, so a receiver can deduplicate a call repeated after a crash), `Idempotency-Attempt:
//! <attempt>` and `X-Correlation-Id`, unless the blueprint sets them. The response's status, headers and body are the output;
//! a body over 64 KiB (or not text) is stored as an artifact and referenced by id. By default
//! a status outside 2xx fails the step: 408, 429 and 5xx as retryable, other 4xx as not.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::net::{EgressError, ErrorKind, OutRequest};
use crate::{Action, ActionContext, ActionError, ActionOutput, Redaction};

/// Most redirects `http.call` follows.
const MAX_REDIRECTS: usize = 5;

/// Bodies up to this size are kept inline in the step output.
pub const INLINE_BODY_MAX: usize = 64 * 1024;
/// Responses larger than this are refused.
pub const RESPONSE_MAX: usize = 16 * 1024 * 1024;

pub struct HttpCall;

#[async_trait]
impl Action for HttpCall {
    fn name(&self) -> &str {
        "http.call"
    }

    fn description(&self) -> &str {
        "Sends one HTTP request and captures the response status, headers and body."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["url"],
            "properties": {
                "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                                                       "get", "head", "post", "put", "patch", "delete", "options"]},
                "url": {"type": "string", "pattern": "^https?://"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "query": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                "json": {},
                "body": {"type": "string"},
                "timeout": {"type": "string", "description": "duration, e.g. 10s"},
                "fail_on_status": {"type": "boolean", "default": true}
            },
            "not": {"required": ["json", "body"]}
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["status", "headers"],
            "properties": {
                "status": {"type": "integer"},
                "headers": {"type": "object"},
                "body": {"type": "string"},
                "json": {},
                "body_artifact_id": {"type": "string"},
                "body_bytes": {"type": "integer"},
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
        let method = input
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| {
            ActionError::new(
                "action.input_invalid",
                format!("bad method {method}"),
                false,
            )
        })?;
        let url = input.get("url").and_then(Value::as_str).unwrap_or_default();
        let mut url = reqwest::Url::parse(url).map_err(|e| {
            ActionError::new("http.bad_url", format!("bad url {url:?}: {e}"), false)
        })?;
        if let Some(q) = input.get("query").and_then(Value::as_object) {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in q {
                pairs.append_pair(k, &v.as_str().map_or_else(|| v.to_string(), str::to_string));
            }
        }
        let timeout = input
            .get("timeout")
            .and_then(Value::as_str)
            .map(|s| {
                xyn_core::duration::parse_duration_ms(s).ok_or_else(|| {
                    ActionError::new("action.input_invalid", format!("bad timeout {s:?}"), false)
                })
            })
            .transpose()?
            .map(Duration::from_millis);
        let timeout = match (timeout, ctx.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .unwrap_or(Duration::from_secs(30));
        let fail_on_status = input
            .get("fail_on_status")
            .and_then(Value::as_bool)
            .unwrap_or(true);

        let mut headers: Vec<(String, String)> = Vec::new();
        let mut has_idem = false;
        let mut has_attempt = false;
        let mut has_corr = false;
        if let Some(h) = input.get("headers").and_then(Value::as_object) {
            for (k, v) in h {
                let lk = k.to_ascii_lowercase();
                has_idem |= lk == "idempotency-key";
                has_attempt |= lk == "idempotency-attempt";
                has_corr |= lk == "x-correlation-id";
                if let Some(v) = v.as_str() {
                    headers.push((k.clone(), v.to_string()));
                }
            }
        }
        if !has_idem {
            headers.push(("Idempotency-Key".into(), ctx.idempotency_key.clone()));
        }
        if !has_attempt && ctx.attempt > 0 {
            headers.push(("Idempotency-Attempt".into(), ctx.attempt.to_string()));
        }
        if !has_corr {
            headers.push(("X-Correlation-Id".into(), ctx.correlation_id.clone()));
        }
        let mut bytes_out = 0u64;
        let mut body = None;
        if let Some(j) = input.get("json") {
            let b = serde_json::to_vec(j).unwrap_or_default();
            bytes_out = b.len() as u64;
            headers.push(("Content-Type".into(), "application/json".into()));
            body = Some(b);
        } else if let Some(b) = input.get("body").and_then(Value::as_str) {
            bytes_out = b.len() as u64;
            body = Some(b.as_bytes().to_vec());
        }

        let started = Instant::now();
        let out_req = OutRequest {
            method: method.clone(),
            url: url.clone(),
            headers,
            body,
            secrets: Vec::new(),
            max_redirects: MAX_REDIRECTS,
        };
        let sent = tokio::time::timeout(timeout, ctx.egress.send(&ctx.destinations, out_req))
            .await
            .map_err(|_| timed_out(&url, timeout))?
            .map_err(|e| egress_error(e, &url, timeout))?;
        let resp = sent.response;
        let status = resp.status().as_u16();
        let mut headers = Map::new();
        for (k, v) in resp.headers() {
            headers.insert(
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            );
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let rest = timeout.saturating_sub(started.elapsed());
        let read = tokio::time::timeout(rest, read_capped(resp, RESPONSE_MAX))
            .await
            .map_err(|_| timed_out(&url, timeout))?;
        let body = read.map_err(|e| match e {
            ReadError::TooLarge => ActionError::new(
                "http.response_too_large",
                format!("the response from {url} is larger than {RESPONSE_MAX} bytes"),
                false,
            ),
            ReadError::Http(e) => classify(&e, &url, timeout),
        })?;
        let elapsed_ms = started.elapsed().as_millis() as u64;

        let mut out = json!({
            "status": status,
            "headers": headers,
            "body_bytes": body.len(),
            "elapsed_ms": elapsed_ms,
        });
        let text = std::str::from_utf8(&body).ok();
        match text {
            Some(t) if body.len() <= INLINE_BODY_MAX => {
                out["body"] = Value::String(t.to_string());
                if content_type.contains("json")
                    && let Ok(j) = serde_json::from_str::<Value>(t)
                {
                    out["json"] = j;
                }
            }
            _ => {
                let a = ctx
                    .artifacts
                    .put(
                        "response-body",
                        "body",
                        &content_type,
                        body.clone(),
                        json!({"url": url.as_str(), "status": status}),
                    )
                    .await
                    .map_err(ActionError::from)?;
                out["body_artifact_id"] = Value::String(a.artifact_id.to_string());
            }
        }
        if fail_on_status && !(200..300).contains(&status) {
            let retryable = status == 408 || status == 429 || status >= 500;
            return Err(ActionError::new(
                "http.status",
                format!("{method} {url} answered {status}"),
                retryable,
            )
            .with_details(out));
        }
        Ok(ActionOutput {
            output: out,
            bytes_in: body.len() as u64,
            bytes_out,
            records: Vec::new(),
        })
    }
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if buf.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn timed_out(url: &reqwest::Url, timeout: Duration) -> ActionError {
    let host = url.host_str().unwrap_or("?");
    ActionError::new(
        "http.timeout",
        format!("no response from {host} within {}ms", timeout.as_millis()),
        true,
    )
}

fn egress_error(e: EgressError, url: &reqwest::Url, timeout: Duration) -> ActionError {
    let host = url.host_str().unwrap_or("?");
    match e {
        EgressError::Denied {
            target,
            reason,
            redirect,
        } => ActionError::new(
            "http.denied",
            if redirect {
                format!("a redirect to {target} was refused: {reason}")
            } else {
                format!("{target} is not an allowed destination: {reason}")
            },
            false,
        )
        .with_details(json!({"target": target, "reason": reason, "redirect": redirect})),
        EgressError::TooManyRedirects => ActionError::new(
            "http.redirect",
            format!("too many redirects from {host}"),
            false,
        ),
        EgressError::Failed(m) => {
            ActionError::new("http.error", format!("request to {host} failed: {m}"), true)
        }
        EgressError::Http(_, ErrorKind::Timeout) => timed_out(url, timeout),
        EgressError::Http(m, ErrorKind::Connect) => ActionError::new(
            "http.connect",
            format!("cannot connect to {host}: {m}"),
            true,
        ),
        EgressError::Http(m, ErrorKind::Other) => {
            ActionError::new("http.error", format!("request to {host} failed: {m}"), true)
        }
    }
}

fn classify(e: &reqwest::Error, url: &reqwest::Url, timeout: Duration) -> ActionError {
    let host = url.host_str().unwrap_or("?");
    if e.is_timeout() {
        ActionError::new(
            "http.timeout",
            format!("no response from {host} within {}ms", timeout.as_millis()),
            true,
        )
    } else if e.is_connect() {
        ActionError::new(
            "http.connect",
            format!("cannot connect to {host}: {e}"),
            true,
        )
    } else if e.is_redirect() {
        ActionError::new(
            "http.redirect",
            format!("too many redirects from {host}"),
            false,
        )
    } else {
        ActionError::new("http.error", format!("request to {host} failed: {e}"), true)
    }
}
