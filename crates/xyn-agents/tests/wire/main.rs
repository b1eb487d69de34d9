//! The provider clients against recorded exchanges served from 127.0.0.1.
//!
//! Bodies are the documented examples of `shared/reference/llm-wire-formats.md` (OpenAI
//! Chat Completions §1, errors §3, Anthropic Messages §4, vLLM / Ollama / llama.cpp §5); each
//! test names the §7 checklist items it covers. The real client code makes real HTTP/1.1
//! requests to the fixture server of `support`, which records them.

// Helpers outside `#[test]` functions panic on purpose too (clippy.toml allows it only in them).
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Fixture, Reply, closed_port_url, fast_backoff, http};
use xyn_agents::anthropic::{Anthropic, AnthropicConfig};
use xyn_agents::openai::{OpenAi, OpenAiConfig};
use xyn_agents::{AgentError, AgentsConfig, ChatRequest, FinishReason, Provider, Usage};

const KEY: &str = "sk-test-0123456789";
const T: Duration = Duration::from_secs(10);

fn chat(provider: &str, model: &str, prompt: &str) -> ChatRequest {
    ChatRequest {
        provider: provider.into(),
        model: model.into(),
        prompt: prompt.into(),
        options: json!({}),
        ..Default::default()
    }
}

fn openai_cfg(base: &str) -> OpenAiConfig {
    OpenAiConfig {
        base_url: base.into(),
        api_key: Some(KEY.into()),
        ..Default::default()
    }
}

/// OpenAI with 2 retries (the SDK default) and millisecond backoff.
fn openai(base: &str) -> OpenAi {
    openai_retries(base, 2)
}

fn openai_retries(base: &str, max_retries: u32) -> OpenAi {
    OpenAi::new("openai", openai_cfg(base), http(), max_retries).with_backoff(fast_backoff())
}

/// The OpenAI-compatible provider as `AgentsConfig::from_env` configures it.
fn compatible(base: &str, key: Option<&str>) -> OpenAi {
    let cfg = AgentsConfig::from_env(|k| match k {
        "XYN_OPENAI_COMPATIBLE_BASE_URL" => Some(base.to_string()),
        "XYN_OPENAI_COMPATIBLE_API_KEY" => key.map(str::to_string),
        _ => None,
    });
    OpenAi::new("openai_compatible", cfg.openai_compatible, http(), 0)
}

fn anthropic(base: &str) -> Anthropic {
    anthropic_retries(base, 2)
}

fn anthropic_retries(base: &str, max_retries: u32) -> Anthropic {
    let cfg = AnthropicConfig {
        base_url: base.into(),
        api_key: Some(KEY.into()),
    };
    Anthropic::new(cfg, http(), max_retries).with_backoff(fast_backoff())
}

async fn openai_error(reply: Reply) -> (AgentError, Fixture) {
    let fx = Fixture::start([reply]).await;
    let e = openai_retries(&fx.url("/v1"), 0)
        .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
        .await
        .expect_err("an error");
    (e, fx)
}

// ---------------------------------------------------------------------------------------------
// Recorded bodies.

/// §1.4: the OP-SPEC example.
const OPENAI_OK: &str = r#"{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [{
    "index": 0,
    "message": {"role": "assistant", "content": "Hello! How can I help?", "refusal": null, "annotations": []},
    "logprobs": null,
    "finish_reason": "stop"
  }],
  "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
  "service_tier": "default"
}"#;

/// §1.4: the OP-SPEC "Functions" example (content null, tool calls).
const OPENAI_TOOL_CALLS: &str = r#"{"id":"chatcmpl-abc123","object":"chat.completion","created":1699896916,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc123","type":"function","function":{"name":"get_current_weather","arguments":"{\n\"location\": \"Boston, MA\"\n}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99}}"#;

/// §1.4: a refusal (`content` null, `refusal` set, `finish_reason` stop).
const OPENAI_REFUSAL: &str = r#"{"id":"chatcmpl-refusal1","object":"chat.completion","created":1741569952,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I'm sorry, I can't assist with that request.","annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":12,"total_tokens":32}}"#;

/// §5.3: llama.cpp, older build: empty `id` and `model`, extra `timings`.
const LLAMA_CPP_OK: &str = r#"{"choices":[{"finish_reason":"stop","index":0,"message":{"role":"assistant","content":"Hi there."}}],"created":1751000000,"model":"","system_fingerprint":"b5760-bf5bcd0b","object":"chat.completion","usage":{"completion_tokens":4,"prompt_tokens":12,"total_tokens":16},"id":"","timings":{"prompt_n":12,"prompt_ms":20.1,"predicted_n":4,"predicted_ms":40.2}}"#;

/// §5.1: vLLM with its non-OpenAI fields (`reasoning`, `stop_reason`, `prompt_token_ids`, …).
const VLLM_OK: &str = r#"{"id":"chatcmpl-9f8e7d","object":"chat.completion","created":1752000000,"model":"Qwen/Qwen3-8B","choices":[{"index":0,"message":{"role":"assistant","reasoning":"The user greets me.","content":"Hello!","tool_calls":[]},"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":null}],"service_tier":null,"system_fingerprint":null,"usage":{"prompt_tokens":11,"total_tokens":14,"completion_tokens":3,"prompt_tokens_details":null},"prompt_logprobs":null,"prompt_token_ids":null,"kv_transfer_params":null}"#;

/// §5.2: Ollama (`fp_ollama`, short non-unique id, no usage details).
const OLLAMA_OK: &str = r#"{"id":"chatcmpl-245","object":"chat.completion","created":1752000000,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How are you?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":26,"completion_tokens":7,"total_tokens":33}}"#;

/// §4.4: the AN-PY example (text + tool_use).
const ANTHROPIC_TOOL_USE: &str = r#"{
  "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5",
  "content": [
    {"type": "text", "text": "Let me check."},
    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {"input_tokens": 472, "output_tokens": 89,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
}"#;

/// §4.4: text, prompt caching in use, unknown block types and usage fields.
const ANTHROPIC_CACHED: &str = r#"{"id":"msg_01Cache","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"thinking","thinking":"Short answer.","signature":"EqQBCgIYAhIM"},{"type":"text","text":"Disk is "},{"type":"future_block","data":1},{"type":"text","text":"94% full."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":21,"cache_creation_input_tokens":1200,"cache_read_input_tokens":3000,"output_tokens":393,"cache_creation":{"ephemeral_5m_input_tokens":1200,"ephemeral_1h_input_tokens":0},"server_tool_use":{"web_search_requests":0},"service_tier":"standard"},"container":null}"#;

/// §3.1: observed context-length error.
const OPENAI_CONTEXT_400: &str = r#"{"error":{"message":"This model's maximum context length is 4097 tokens. However, your messages resulted in 4294 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;

/// §3.1: the schema with null `param` and `code`.
const OPENAI_NULL_CODE_400: &str = r#"{"error":{"message":"You must provide a model parameter.","type":"invalid_request_error","param":null,"code":null}}"#;

/// §3.1: observed rate-limit error (`type` "tokens").
const OPENAI_RATE_429: &str = r#"{"error":{"message":"Request too large for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Requested 31538.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;

/// §3.2: a 429 for an exhausted quota.
const OPENAI_QUOTA_429: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;

/// §4.6: the AN-ERR example.
const ANTHROPIC_404: &str = r#"{"type": "error",
 "error": {"type": "not_found_error", "message": "The requested resource could not be found."},
 "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}"#;

const ANTHROPIC_529: &str = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSOverloaded"}"#;

/// §4.6: a 429 for the tier's monthly spend cap (no `retry-after`).
const ANTHROPIC_SPEND_429: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_011CSSpend"}"#;

/// A Cloudflare / nginx page in front of an API.
const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";
const HTML_413: &str = "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

// ---------------------------------------------------------------------------------------------
// §7.1 URL joining, §7.2 headers, §7.3–4 bodies.

mod requests;

// ---------------------------------------------------------------------------------------------
// §7.5–7 and §7.21: successful responses.

mod responses;

// ---------------------------------------------------------------------------------------------
// §7.14, §7.15, §7.21: error bodies.

mod errors;

// ---------------------------------------------------------------------------------------------
// §7.16–19, §7.23: retries and timeouts.

mod retries;

// ---------------------------------------------------------------------------------------------
// Configuration, router and replay.

mod node;
