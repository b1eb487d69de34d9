//! The LLM provider port of Xyn and its router (xyn-seed-plan §8).
//!
//! Providers: [`openai::OpenAi`] (Chat Completions; also any OpenAI-compatible server such as
//! vLLM, Ollama or llama.cpp through `openai_compatible`), [`anthropic::Anthropic`] (Messages)
//! and [`replay::Replay`] (plays recorded exchanges from a cassette, parsed by the same code
//! that parses live responses). The [`Router`] picks one per step and applies node overrides.
//!
//! Configuration is passed in (built from the environment by the binary), so tests never
//! mutate process environment variables.

pub mod anthropic;
mod errors;
pub mod openai;
pub mod replay;
mod retry;

pub use retry::Backoff;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One completion request, provider-neutral.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChatRequest {
    /// The provider the blueprint asked for (`openai`, `anthropic`, …).
    pub provider: String,
    pub model: String,
    pub system: Option<String>,
    pub prompt: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    /// Ask for a JSON object answer.
    pub json_output: bool,
    /// Provider options from the step (`base_url`, `cassette`), already rendered.
    pub options: Value,
    /// The step's own API key (`api_key_ref`, read from the secret store), used instead of the
    /// node's configured one. Never serialized.
    #[serde(skip)]
    pub api_key: Option<String>,
}

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    Other(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::Other(s) => s,
        }
    }
}

/// Token counts as the provider reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// A completion.
#[derive(Clone, Debug)]
pub struct ChatResponse {
    /// The provider that answered (`openai`, `anthropic`, `openai_compatible`, `replay`).
    pub provider: String,
    pub model: String,
    pub text: String,
    pub finish: FinishReason,
    pub usage: Option<Usage>,
    pub request_id: Option<String>,
    /// The request body as sent on the wire (no credentials: those travel in headers).
    pub wire_request: Value,
    /// The response body as received.
    pub wire_response: Value,
    /// HTTP requests made, retries included.
    pub requests: u32,
}

/// A failed completion.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AgentError {
    /// `agent.missing_key`, `agent.http_status` (a non-2xx answer), `agent.provider_error` (an
    /// error object in a 2xx answer), `agent.timeout`, `agent.connect`, `agent.http` (another
    /// transport failure, e.g. a connection closed mid-body), `agent.config` (an unusable base
    /// URL or key), `agent.protocol`, `agent.replay` (an unreadable cassette),
    /// `agent.no_recording`, `agent.unknown_provider`.
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub status: Option<u16>,
    /// The provider's error type/code, when it sent one.
    pub provider_code: Option<String>,
    /// The provider's id of the failed request (`x-request-id`, `request-id` or the error
    /// body's `request_id`), to quote to its support.
    pub request_id: Option<String>,
}

impl AgentError {
    pub fn new(code: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable,
            status: None,
            provider_code: None,
            request_id: None,
        }
    }
}

/// A model provider.
#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    async fn complete(
        &self,
        req: &ChatRequest,
        timeout: Duration,
    ) -> Result<ChatResponse, AgentError>;
}

/// Node configuration of the agent layer. [`Default`] is [`AgentsConfig::from_env`] with an
/// empty environment.
#[derive(Clone, Debug)]
pub struct AgentsConfig {
    pub openai: openai::OpenAiConfig,
    pub anthropic: anthropic::AnthropicConfig,
    pub openai_compatible: openai::OpenAiConfig,
    /// A cassette used for every provider whose API key is not set (offline demo).
    pub fallback_cassette: Option<std::path::PathBuf>,
    /// Route every agent task to the replay provider with this cassette.
    pub force_cassette: Option<std::path::PathBuf>,
    /// Retries after the first attempt (the official SDKs use 2).
    pub max_retries: u32,
    /// The delays between retries (the official SDKs' by default).
    pub backoff: Backoff,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self::from_env(|_| None)
    }
}

impl AgentsConfig {
    /// Reads the variables the official SDKs read (`OPENAI_API_KEY`, `OPENAI_BASE_URL`,
    /// `OPENAI_ORG_ID`, `OPENAI_PROJECT_ID`, `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`) and Xyn's own
    /// (`XYN_OPENAI_COMPATIBLE_BASE_URL`, `XYN_OPENAI_COMPATIBLE_API_KEY`, `XYN_AGENT_CASSETTE`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Self {
        // Values are trimmed: a key read from a file often ends with a line break, which is
        // not a valid header value.
        let nonempty = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Self {
            openai: openai::OpenAiConfig {
                base_url: nonempty("OPENAI_BASE_URL")
                    .unwrap_or_else(|| openai::DEFAULT_BASE_URL.into()),
                api_key: nonempty("OPENAI_API_KEY"),
                key_var: "OPENAI_API_KEY".into(),
                organization: nonempty("OPENAI_ORG_ID"),
                project: nonempty("OPENAI_PROJECT_ID"),
                key_required: true,
                max_tokens_field: openai::MaxTokensField::MaxCompletionTokens,
            },
            anthropic: anthropic::AnthropicConfig {
                base_url: nonempty("ANTHROPIC_BASE_URL")
                    .unwrap_or_else(|| anthropic::DEFAULT_BASE_URL.into()),
                api_key: nonempty("ANTHROPIC_API_KEY"),
            },
            openai_compatible: openai::OpenAiConfig {
                base_url: nonempty("XYN_OPENAI_COMPATIBLE_BASE_URL")
                    .unwrap_or_else(|| "http://127.0.0.1:11434/v1".into()),
                api_key: nonempty("XYN_OPENAI_COMPATIBLE_API_KEY"),
                key_var: "XYN_OPENAI_COMPATIBLE_API_KEY".into(),
                organization: None,
                project: None,
                key_required: false,
                max_tokens_field: openai::MaxTokensField::MaxTokens,
            },
            fallback_cassette: None,
            force_cassette: nonempty("XYN_AGENT_CASSETTE").map(Into::into),
            max_retries: 2,
            backoff: Backoff::default(),
        }
    }
}

/// Picks the provider for a step.
pub struct Router {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    fallback: Option<Arc<replay::Replay>>,
    force: Option<Arc<replay::Replay>>,
    missing_keys: BTreeMap<String, String>,
}

/// The route chosen for a step, and why.
pub struct Route {
    pub provider: Arc<dyn Provider>,
    /// Set when the node replaced the blueprint's provider (a forced or fallback cassette).
    pub note: Option<String>,
}

impl Router {
    /// Builds the router. Cassettes are loaded now, so a broken cassette fails at start.
    pub fn new(config: &AgentsConfig, http: reqwest::Client) -> Result<Self, AgentError> {
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        let mut missing_keys = BTreeMap::new();
        providers.insert(
            "openai".into(),
            Arc::new(
                openai::OpenAi::new(
                    "openai",
                    config.openai.clone(),
                    http.clone(),
                    config.max_retries,
                )
                .with_backoff(config.backoff),
            ),
        );
        if config.openai.api_key.is_none() {
            missing_keys.insert("openai".into(), "OPENAI_API_KEY".into());
        }
        providers.insert(
            "anthropic".into(),
            Arc::new(
                anthropic::Anthropic::new(
                    config.anthropic.clone(),
                    http.clone(),
                    config.max_retries,
                )
                .with_backoff(config.backoff),
            ),
        );
        if config.anthropic.api_key.is_none() {
            missing_keys.insert("anthropic".into(), "ANTHROPIC_API_KEY".into());
        }
        providers.insert(
            "openai_compatible".into(),
            Arc::new(
                openai::OpenAi::new(
                    "openai_compatible",
                    config.openai_compatible.clone(),
                    http,
                    config.max_retries,
                )
                .with_backoff(config.backoff),
            ),
        );
        let load = |p: &std::path::PathBuf| replay::Replay::from_file(p).map(Arc::new);
        let fallback = config.fallback_cassette.as_ref().map(load).transpose()?;
        let force = config.force_cassette.as_ref().map(load).transpose()?;
        providers.insert(
            "replay".into(),
            match &force {
                Some(r) => r.clone(),
                None => Arc::new(replay::Replay::empty()),
            },
        );
        Ok(Self {
            providers,
            fallback,
            force,
            missing_keys,
        })
    }

    /// The provider for `name`, after node overrides.
    pub fn route(&self, name: &str) -> Result<Route, AgentError> {
        self.route_with_key(name, false)
    }

    /// As [`Router::route`]; a step that brings its own key (`has_key`) is never sent to the
    /// fallback cassette for want of the node's key.
    pub fn route_with_key(&self, name: &str, has_key: bool) -> Result<Route, AgentError> {
        if let Some(f) = &self.force {
            return Ok(Route {
                provider: f.clone(),
                note: Some(format!(
                    "node routes every agent task to the cassette {}",
                    f.source()
                )),
            });
        }
        if let (Some(var), Some(fb), false) = (self.missing_keys.get(name), &self.fallback, has_key)
        {
            return Ok(Route {
                provider: fb.clone(),
                note: Some(format!(
                    "{var} is not set: answered from the cassette {}",
                    fb.source()
                )),
            });
        }
        self.providers
            .get(name)
            .cloned()
            .map(|provider| Route {
                provider,
                note: None,
            })
            .ok_or_else(|| {
                AgentError::new(
                    "agent.unknown_provider",
                    format!("no provider named {name:?}"),
                    false,
                )
            })
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.providers.keys().cloned().collect()
    }
}
