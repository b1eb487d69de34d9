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

use crate::errors::{error_parts, request_id, status_error};
use crate::retry::{Backoff, Policy, post_json};
use crate::{AgentError, ChatRequest, ChatResponse, FinishReason, Provider, Usage};

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Appended to the prompt in JSON mode when the step's text does not mention JSON: OpenAI
/// rejects `response_format: json_object` unless a message contains the word.
pub const JSON_INSTRUCTION: &str = "Answer with one JSON object and nothing else.";

/// Which field carries the step's token limit (§1.3, §5.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxTokensField {
    /// `max_completion_tokens`: OpenAI's current field, required by reasoning models.
    #[default]
    MaxCompletionTokens,
    /// `max_tokens`: deprecated at OpenAI, but the one vLLM, Ollama and llama.cpp all read
    /// (Ollama ignores `max_completion_tokens`).
    MaxTokens,
}

impl MaxTokensField {
    pub fn as_str(self) -> &'static str {
        match self {
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
            MaxTokensField::MaxTokens => "max_tokens",
        }
    }
}

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
    /// The field for the token limit.
    pub max_tokens_field: MaxTokensField,
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
            max_tokens_field: MaxTokensField::default(),
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

/// The request body for a [`ChatRequest`], as sent to OpenAI.
pub fn request_body(req: &ChatRequest) -> Value {
    request_body_with(req, MaxTokensField::MaxCompletionTokens)
}

/// The request body for a [`ChatRequest`], with the token limit in `max_tokens_field`.
pub fn request_body_with(req: &ChatRequest, max_tokens_field: MaxTokensField) -> Value {
    let mut messages = Vec::new();
    if let Some(s) = &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    let mentions_json = |s: &str| s.to_ascii_lowercase().contains("json");
    let prompt = if req.json_output
        && !mentions_json(&req.prompt)
        && !req.system.as_deref().is_some_and(mentions_json)
    {
        format!("{}\n\n{JSON_INSTRUCTION}", req.prompt)
    } else {
        req.prompt.clone()
    };
    messages.push(json!({"role": "user", "content": prompt}));
    let mut body = json!({"model": req.model, "messages": messages});
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = req.max_tokens {
        body[max_tokens_field.as_str()] = json!(m);
    }
    if req.json_output {
        body["response_format"] = json!({"type": "json_object"});
    }
    body
}

/// Parses a Chat Completions response body: `(text, model, finish, usage)`.
///
/// A refusal (`message.refusal`) is the text and finishes as
/// [`FinishReason::ContentFilter`], whatever `finish_reason` says (OpenAI sends `stop`).
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
    let protocol = |what: &str| {
        AgentError::new(
            "agent.protocol",
            format!("{provider}: the response has {what}"),
            false,
        )
    };
    let choices = body
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| protocol("no 'choices'"))?;
    let choice = choices
        .first()
        .ok_or_else(|| protocol("an empty 'choices'"))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    let content = message.get("content").and_then(Value::as_str).unwrap_or("");
    let finish = match (choice.get("finish_reason").and_then(Value::as_str), refusal) {
        (Some("length"), _) => FinishReason::Length,
        (_, Some(_)) => FinishReason::ContentFilter,
        (Some("stop"), _) => FinishReason::Stop,
        (Some("tool_calls") | Some("function_call"), _) => FinishReason::ToolCalls,
        (Some("content_filter"), _) => FinishReason::ContentFilter,
        (Some(other), _) => FinishReason::Other(other.to_string()),
        (None, None) => FinishReason::Other("unknown".into()),
    };
    let text = match refusal {
        Some(r) if content.is_empty() => r.to_string(),
        _ => content.to_string(),
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
        match req.api_key.as_ref().or(self.config.api_key.as_ref()) {
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
        let body = request_body_with(req, self.config.max_tokens_field);
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
            let mut e = status_error(&self.name, ex.status, &ex.headers, &ex.body);
            if ex.status == 401 && self.config.api_key.is_none() {
                e.message
                    .push_str(&format!("; {} is not set", self.config.key_var));
            }
            return Err(e);
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
            request_id: request_id(&ex.headers),
            wire_request: body,
            wire_response,
            requests: ex.requests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prompt: &str, system: Option<&str>, json_output: bool) -> ChatRequest {
        ChatRequest {
            provider: "openai".into(),
            model: "m".into(),
            system: system.map(str::to_string),
            prompt: prompt.into(),
            json_output,
            max_tokens: Some(7),
            ..Default::default()
        }
    }

    fn user_text(body: &Value) -> &str {
        body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
    }

    #[test]
    fn json_instruction_only_when_json_is_not_mentioned() {
        let b = request_body(&req("Summarise.", None, true));
        assert_eq!(user_text(&b), format!("Summarise.\n\n{JSON_INSTRUCTION}"));
        for (prompt, system) in [
            ("Reply in json.", None),
            ("Summarise.", Some("Always answer with a JSON object.")),
        ] {
            let b = request_body(&req(prompt, system, true));
            assert_eq!(user_text(&b), prompt);
        }
        let b = request_body(&req("Summarise.", None, false));
        assert_eq!(user_text(&b), "Summarise.");
        assert_eq!(b.get("response_format"), None);
    }

    #[test]
    fn token_limit_field() {
        let r = req("x", None, false);
        assert_eq!(request_body(&r)["max_completion_tokens"], json!(7));
        let b = request_body_with(&r, MaxTokensField::MaxTokens);
        assert_eq!(b["max_tokens"], json!(7));
        assert_eq!(b.get("max_completion_tokens"), None);
    }

    fn parse(v: Value) -> Result<(String, String, FinishReason, Option<Usage>), AgentError> {
        parse_response("openai", &v)
    }

    #[test]
    fn refusals_and_finish_reasons() {
        let choice = |message: Value, finish: Value| json!({"choices": [{"index": 0, "message": message, "finish_reason": finish}]});
        let (text, _, finish, usage) = parse(choice(
            json!({"content": null, "refusal": "No."}),
            json!("stop"),
        ))
        .unwrap();
        assert_eq!(
            (text.as_str(), finish),
            ("No.", FinishReason::ContentFilter)
        );
        assert_eq!(usage, None);
        // A refusal cut short is still a truncation.
        let (_, _, finish, _) = parse(choice(
            json!({"content": null, "refusal": "No"}),
            json!("length"),
        ))
        .unwrap();
        assert_eq!(finish, FinishReason::Length);
        // An empty refusal is no refusal.
        let (text, _, finish, _) = parse(choice(
            json!({"content": "Yes", "refusal": ""}),
            json!("stop"),
        ))
        .unwrap();
        assert_eq!((text.as_str(), finish), ("Yes", FinishReason::Stop));
        let (_, _, finish, _) = parse(choice(json!({"content": "x"}), Value::Null)).unwrap();
        assert_eq!(finish, FinishReason::Other("unknown".into()));
        // No message at all: empty text, not a panic.
        let (text, _, _, _) = parse(json!({"choices": [{"finish_reason": "stop"}]})).unwrap();
        assert_eq!(text, "");
    }

    #[test]
    fn odd_usage_and_model() {
        let (_, model, _, usage) = parse(json!({
            "model": 5,
            "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": "3", "completion_tokens": 2}
        }))
        .unwrap();
        assert_eq!(model, "");
        assert_eq!(
            usage,
            Some(Usage {
                tokens_in: 0,
                tokens_out: 2
            })
        );
    }

    #[test]
    fn url_joining() {
        for base in ["http://h/v1", "http://h/v1/", "http://h/v1//"] {
            assert_eq!(
                join_url(base, "chat/completions"),
                "http://h/v1/chat/completions"
            );
            assert_eq!(
                join_url(base, "/chat/completions"),
                "http://h/v1/chat/completions"
            );
        }
    }
}
