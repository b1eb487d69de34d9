//! Anthropic Messages (`POST {base_url}/v1/messages`, `anthropic-version: 2023-06-01`).
//! Non-streaming; `system` is a top-level field; `max_tokens` is always sent.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::errors::{error_parts, request_id, status_error};
use crate::openai::{JSON_INSTRUCTION, join_url};
use crate::retry::{Backoff, Policy, post_json};
use crate::{AgentError, ChatRequest, ChatResponse, FinishReason, Provider, Usage};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; used when the step does not set it.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;

#[derive(Clone, Debug)]
pub struct AnthropicConfig {
    /// Without the version path (`https://api.anthropic.com`).
    pub base_url: String,
    pub api_key: Option<String>,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            api_key: None,
        }
    }
}

pub struct Anthropic {
    config: AnthropicConfig,
    http: reqwest::Client,
    policy: Policy,
}

impl Anthropic {
    /// A provider that retries at most `max_retries` times with the SDKs' [`Backoff`].
    pub fn new(config: AnthropicConfig, http: reqwest::Client, max_retries: u32) -> Self {
        Self {
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

/// The request body for a [`ChatRequest`].
pub fn request_body(req: &ChatRequest) -> Value {
    let mut prompt = req.prompt.clone();
    if req.json_output {
        prompt.push_str("\n\n");
        prompt.push_str(JSON_INSTRUCTION);
    }
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": [{"role": "user", "content": prompt}],
    });
    if let Some(s) = &req.system {
        body["system"] = json!(s);
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t.min(1.0));
    }
    body
}

/// Parses a Messages response body.
pub fn parse_response(
    body: &Value,
) -> Result<(String, String, FinishReason, Option<Usage>), AgentError> {
    if body.get("type").and_then(Value::as_str) == Some("error") {
        let (msg, code) = error_parts(body.get("error").unwrap_or(&Value::Null));
        let mut e = AgentError::new("agent.provider_error", format!("anthropic: {msg}"), false);
        e.provider_code = code;
        return Err(e);
    }
    let content = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            AgentError::new(
                "agent.protocol",
                "anthropic: the response has no 'content'",
                false,
            )
        })?;
    let text: String = content
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("");
    let finish = match body.get("stop_reason").and_then(Value::as_str) {
        Some("end_turn") | Some("stop_sequence") => FinishReason::Stop,
        Some("max_tokens") | Some("model_context_window_exceeded") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_string()),
        None => FinishReason::Other("unknown".into()),
    };
    let usage = body.get("usage").filter(|u| u.is_object()).map(|u| {
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        Usage {
            // `input_tokens` excludes cached tokens; the prompt is all three.
            tokens_in: n("input_tokens")
                + n("cache_creation_input_tokens")
                + n("cache_read_input_tokens"),
            tokens_out: n("output_tokens"),
        }
    });
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Ok((text, model, finish, usage))
}

#[async_trait]
impl Provider for Anthropic {
    fn name(&self) -> &str {
        "anthropic"
    }

    async fn complete(
        &self,
        req: &ChatRequest,
        timeout: Duration,
    ) -> Result<ChatResponse, AgentError> {
        let key = req.api_key.clone().or_else(|| self.config.api_key.clone()).ok_or_else(|| {
            AgentError::new(
                "agent.missing_key",
                "ANTHROPIC_API_KEY is not set: export it to call anthropic, or configure a replay cassette",
                false,
            )
        })?;
        let base = req
            .options
            .get("base_url")
            .and_then(Value::as_str)
            .unwrap_or(&self.config.base_url)
            .to_string();
        let headers = vec![
            ("x-api-key", key),
            ("anthropic-version", API_VERSION.to_string()),
        ];
        let body = request_body(req);
        let url = join_url(&base, "v1/messages");
        let ex = post_json(
            &self.http,
            &url,
            &headers,
            &body,
            timeout,
            &self.policy,
            "anthropic",
        )
        .await?;
        if !(200..300).contains(&ex.status) {
            return Err(status_error("anthropic", ex.status, &ex.headers, &ex.body));
        }
        let wire_response: Value = serde_json::from_slice(&ex.body).map_err(|e| {
            AgentError::new(
                "agent.protocol",
                format!("anthropic: the response is not JSON: {e}"),
                false,
            )
        })?;
        let (text, model, finish, usage) = parse_response(&wire_response)?;
        Ok(ChatResponse {
            provider: "anthropic".into(),
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

    #[test]
    fn body_defaults_and_json_instruction() {
        let req = ChatRequest {
            model: "claude".into(),
            prompt: "Summarise.".into(),
            json_output: true,
            temperature: Some(-0.5),
            ..Default::default()
        };
        let b = request_body(&req);
        assert_eq!(b["max_tokens"], json!(DEFAULT_MAX_TOKENS));
        assert_eq!(
            b["messages"][0]["content"],
            json!(format!("Summarise.\n\n{JSON_INSTRUCTION}"))
        );
        assert_eq!(b.get("system"), None);
        assert_eq!(
            b["temperature"],
            json!(-0.5),
            "the API reports out-of-range values"
        );
        assert!(
            !b["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["role"] == "system")
        );
    }

    #[test]
    fn error_in_a_200_and_odd_usage() {
        let e = parse_response(&json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        .unwrap_err();
        assert_eq!(e.code, "agent.provider_error");
        assert_eq!(e.provider_code.as_deref(), Some("overloaded_error"));
        let (text, _, finish, usage) = parse_response(&json!({
            "content": [{"type": "text"}, {"type": "text", "text": "a"}, "junk"],
            "usage": {"output_tokens": 4}
        }))
        .unwrap();
        assert_eq!(text, "a");
        assert_eq!(finish, FinishReason::Other("unknown".into()));
        assert_eq!(
            usage,
            Some(Usage {
                tokens_in: 0,
                tokens_out: 4
            })
        );
    }
}
