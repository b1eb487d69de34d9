//! OpenAI Chat Completions (`POST {base_url}/chat/completions`), also used for any
//! OpenAI-compatible server (vLLM, Ollama `/v1`, llama.cpp `llama-server`).
//!
//! Non-streaming. Parsing is tolerant of the compatible servers' deviations listed in
//! `shared/reference/llm-wire-formats.md` §5.4: optional `id`/`model`/`usage`, empty
//! `choices`, `content: null`, integer error codes, `error` as a plain string, flat error
//! bodies, non-JSON error pages.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::retry::{Backoff, Policy, post_json};
use crate::{AgentError, ChatRequest, ChatResponse, FinishReason, Provider, Usage};

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Where and how to reach an OpenAI-style API.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// Includes the version path (`https://api.openai.com/v1`).
    pub base_url: String,
    pub api_key: Option<String>,
    /// The variable the key comes from, named in errors.
    pub key_var: String,
    pub organization: Option<String>,
    pub project: Option<String>,
    /// OpenAI itself needs a key; compatible servers often do not.
    pub key_required: bool,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            api_key: None,
            key_var: "OPENAI_API_KEY".into(),
            organization: None,
            project: None,
            key_required: true,
        }
    }
}

pub struct OpenAi {
    name: String,
    config: OpenAiConfig,
    http: reqwest::Client,
    policy: Policy,
}

impl OpenAi {
    /// A provider that retries at most `max_retries` times with the SDKs' [`Backoff`].
    pub fn new(name: &str, config: OpenAiConfig, http: reqwest::Client, max_retries: u32) -> Self {
        Self {
            name: name.into(),
            config,
            http,
            policy: Policy {
                max_retries,
                backoff: Backoff::default(),
            },
        }
    }

    /// Replaces the delays between retries.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }
}

/// Joins a base URL and a path the way the official SDKs do (exactly one `/` between).
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// The request body for a [`ChatRequest`].
pub fn request_body(req: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    if let Some(s) = &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": req.prompt}));
    let mut body = json!({"model": req.model, "messages": messages});
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = req.max_tokens {
        body["max_completion_tokens"] = json!(m);
    }
    if req.json_output {
        body["response_format"] = json!({"type": "json_object"});
    }
    body
}

/// Parses a Chat Completions response body.
pub fn parse_response(
    provider: &str,
    body: &Value,
) -> Result<(String, String, FinishReason, Option<Usage>), AgentError> {
    if let Some(err) = body.get("error").filter(|e| !e.is_null()) {
        // An error frame inside a 200 (compatible servers do this).
        let (msg, code) = error_parts(err);
        let mut e = AgentError::new("agent.provider_error", format!("{provider}: {msg}"), false);
        e.provider_code = code;
        return Err(e);
    }
    let choices = body
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            AgentError::new(
                "agent.protocol",
                format!("{provider}: the response has no 'choices'"),
                false,
            )
        })?;
    let choice = choices.first().ok_or_else(|| {
        AgentError::new(
            "agent.protocol",
            format!("{provider}: the response has an empty 'choices'"),
            false,
        )
    })?;
    let message = choice.get("message").cloned().unwrap_or(Value::Null);
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let refusal = message.get("refusal").and_then(Value::as_str);
    let finish = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_string()),
        None if refusal.is_some() => FinishReason::ContentFilter,
        None => FinishReason::Other("unknown".into()),
    };
    let text = if text.is_empty() {
        refusal.map(str::to_string).unwrap_or(text)
    } else {
        text
    };
    let usage = body.get("usage").filter(|u| u.is_object()).map(|u| Usage {
        tokens_in: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        tokens_out: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    });
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Ok((text, model, finish, usage))
}

/// `(message, code)` of an error object, or of an error given as a plain string.
pub(crate) fn error_parts(err: &Value) -> (String, Option<String>) {
    match err {
        Value::String(s) => (s.clone(), None),
        Value::Object(m) => {
            let msg = m
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string();
            let code = m
                .get("code")
                .filter(|c| !c.is_null())
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string))
                .or_else(|| m.get("type").and_then(Value::as_str).map(str::to_string));
            (msg, code)
        }
        other => (other.to_string(), None),
    }
}

/// The error for a non-2xx response: JSON (`{"error":{…}}`, `{"error":"…"}`, vLLM's flat
/// `{"object":"error","message":…}`) or anything else (an HTML error page).
pub(crate) fn status_error(
    provider: &str,
    status: u16,
    body: &[u8],
    retryable: bool,
) -> AgentError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let (msg, code) = match &parsed {
        Some(v) if v.get("error").is_some() => error_parts(&v["error"]),
        Some(v) if v.get("message").is_some() => error_parts(v),
        _ => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(300).collect();
            (
                if text.trim().is_empty() {
                    "no body".into()
                } else {
                    text
                },
                None,
            )
        }
    };
    AgentError {
        code: "agent.http_status".into(),
        message: format!("{provider} answered {status}: {msg}"),
        retryable,
        status: Some(status),
        provider_code: code,
    }
}

#[async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        req: &ChatRequest,
        timeout: Duration,
    ) -> Result<ChatResponse, AgentError> {
        let base = req
            .options
            .get("base_url")
            .and_then(Value::as_str)
            .unwrap_or(&self.config.base_url)
            .to_string();
        let mut headers = Vec::new();
        match &self.config.api_key {
            Some(k) => headers.push(("Authorization", format!("Bearer {k}"))),
            None if self.config.key_required => {
                return Err(AgentError::new(
                    "agent.missing_key",
                    format!(
                        "{} is not set: export it to call {}, or configure a replay cassette",
                        self.config.key_var, self.name
                    ),
                    false,
                ));
            }
            None => {}
        }
        if let Some(o) = &self.config.organization {
            headers.push(("OpenAI-Organization", o.clone()));
        }
        if let Some(p) = &self.config.project {
            headers.push(("OpenAI-Project", p.clone()));
        }
        let body = request_body(req);
        let url = join_url(&base, "chat/completions");
        let ex = post_json(
            &self.http,
            &url,
            &headers,
            &body,
            timeout,
            &self.policy,
            &self.name,
        )
        .await?;
        if !(200..300).contains(&ex.status) {
            let retryable = crate::retry::should_retry(ex.status, &ex.headers);
            return Err(status_error(&self.name, ex.status, &ex.body, retryable));
        }
        let wire_response: Value = serde_json::from_slice(&ex.body).map_err(|e| {
            AgentError::new(
                "agent.protocol",
                format!("{}: the response is not JSON: {e}", self.name),
                false,
            )
        })?;
        let (text, model, finish, usage) = parse_response(&self.name, &wire_response)?;
        Ok(ChatResponse {
            provider: self.name.clone(),
            model: if model.is_empty() {
                req.model.clone()
            } else {
                model
            },
            text,
            finish,
            usage,
            request_id: ex
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            wire_request: body,
            wire_response,
            requests: ex.requests,
        })
    }
}
