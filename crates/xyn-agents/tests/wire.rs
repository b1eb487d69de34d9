//! The provider clients against recorded exchanges served from 127.0.0.1.
//!
//! Bodies are the documented examples of `shared/reference/llm-wire-formats.md` (OpenAI
//! Chat Completions §1, errors §3, Anthropic Messages §4, vLLM / Ollama / llama.cpp §5); each
//! test names the §7 checklist items it covers. The real client code makes real HTTP/1.1
//! requests to the fixture server of `support`, which records them.

// Helpers outside `#[test]` functions panic on purpose too (clippy.toml allows it only in them).
#![allow(clippy::unwrap_used)]

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

mod requests {
    use super::*;

    /// §7.1: `OPENAI_BASE_URL` includes `/v1`; trailing slash or not.
    #[tokio::test]
    async fn openai_joins_chat_completions_onto_a_v1_base() {
        for base in ["/v1", "/v1/", "/v1//"] {
            let fx = Fixture::start([Reply::json(200, OPENAI_OK)]).await;
            openai(&fx.url(base))
                .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
                .await
                .unwrap();
            let r = fx.one();
            assert_eq!(
                (r.method.as_str(), r.path.as_str()),
                ("POST", "/v1/chat/completions"),
                "base {base}"
            );
        }
    }

    /// §7.1: `ANTHROPIC_BASE_URL` has no `/v1`; the path carries it.
    #[tokio::test]
    async fn anthropic_joins_v1_messages_onto_a_bare_base() {
        for base in ["", "/"] {
            let fx = Fixture::start([Reply::json(200, ANTHROPIC_TOOL_USE)]).await;
            anthropic(&fx.url(base))
                .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
                .await
                .unwrap();
            let r = fx.one();
            assert_eq!(
                (r.method.as_str(), r.path.as_str()),
                ("POST", "/v1/messages"),
                "base {base:?}"
            );
        }
    }

    /// §7.1: a step's `options.base_url` overrides the node's.
    #[tokio::test]
    async fn step_option_overrides_the_base_url() {
        let fx = Fixture::start([Reply::json(200, OPENAI_OK)]).await;
        let mut req = chat("openai", "gpt-4o-mini", "hi");
        req.options = json!({"base_url": fx.url("/proxy/v1/")});
        openai("http://127.0.0.1:9/nowhere/v1")
            .complete(&req, T)
            .await
            .unwrap();
        assert_eq!(fx.one().path, "/proxy/v1/chat/completions");
    }

    /// §7.2: Bearer key, JSON content type, no organization/project unless configured.
    #[tokio::test]
    async fn openai_headers() {
        let fx = Fixture::start([Reply::json(200, OPENAI_OK), Reply::json(200, OPENAI_OK)]).await;
        openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        let mut cfg = openai_cfg(&fx.url("/v1"));
        cfg.organization = Some("org-abc".into());
        cfg.project = Some("proj_xyz".into());
        OpenAi::new("openai", cfg, http(), 0)
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        let [plain, scoped] = <[_; 2]>::try_from(fx.received()).unwrap();
        for r in [&plain, &scoped] {
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {KEY}").as_str())
            );
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("accept"), Some("application/json"));
            assert_eq!(r.header("x-api-key"), None);
        }
        assert_eq!(plain.header("openai-organization"), None);
        assert_eq!(plain.header("openai-project"), None);
        assert_eq!(scoped.header("openai-organization"), Some("org-abc"));
        assert_eq!(scoped.header("openai-project"), Some("proj_xyz"));
    }

    /// A step's own key (`api_key_ref`) is sent instead of the node's, and a node without a
    /// key of its own still calls the provider with it.
    #[tokio::test]
    async fn a_step_key_replaces_the_node_key() {
        let fx = Fixture::start([
            Reply::json(200, OPENAI_OK),
            Reply::json(200, OPENAI_OK),
            Reply::json(200, ANTHROPIC_TOOL_USE),
        ])
        .await;
        let mut req = chat("openai", "gpt-4o-mini", "hi");
        req.api_key = Some("sk-from-the-secret-store".into());
        openai(&fx.url("/v1")).complete(&req, T).await.unwrap();
        let mut keyless = openai_cfg(&fx.url("/v1"));
        keyless.api_key = None;
        OpenAi::new("openai", keyless, http(), 0)
            .complete(&req, T)
            .await
            .unwrap();
        let cfg = AnthropicConfig {
            base_url: fx.url(""),
            api_key: None,
        };
        let mut areq = chat("anthropic", "claude-sonnet-4-5", "hi");
        areq.api_key = Some("sk-ant-from-the-store".into());
        Anthropic::new(cfg, http(), 0)
            .complete(&areq, T)
            .await
            .unwrap();
        let [a, b, c] = <[_; 3]>::try_from(fx.received()).unwrap();
        for r in [&a, &b] {
            assert_eq!(
                r.header("authorization"),
                Some("Bearer sk-from-the-secret-store")
            );
        }
        assert_eq!(c.header("x-api-key"), Some("sk-ant-from-the-store"));
        // The key is never part of the serialized request.
        assert!(!serde_json::to_string(&req).unwrap().contains("sk-from"));
    }

    /// §7.2: `x-api-key`, `anthropic-version: 2023-06-01`, content type; no Bearer.
    #[tokio::test]
    async fn anthropic_headers() {
        let fx = Fixture::start([Reply::json(200, ANTHROPIC_TOOL_USE)]).await;
        anthropic(&fx.url(""))
            .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
            .await
            .unwrap();
        let r = fx.one();
        assert_eq!(r.header("x-api-key"), Some(KEY));
        assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), None);
    }

    /// §5: a compatible server without a key gets no `Authorization` header; with one, Bearer.
    #[tokio::test]
    async fn compatible_server_key_is_optional() {
        let fx = Fixture::start([Reply::json(200, OLLAMA_OK), Reply::json(200, OLLAMA_OK)]).await;
        compatible(&fx.url("/v1"), None)
            .complete(&chat("openai_compatible", "llama3.2", "hi"), T)
            .await
            .unwrap();
        compatible(&fx.url("/v1"), Some("token-abc"))
            .complete(&chat("openai_compatible", "llama3.2", "hi"), T)
            .await
            .unwrap();
        let r = fx.received();
        assert_eq!(r[0].header("authorization"), None);
        assert_eq!(r[1].header("authorization"), Some("Bearer token-abc"));
    }

    /// §7.3: system message, `max_completion_tokens` (never `max_tokens`), temperature,
    /// `response_format`; the body recorded as `wire_request` is the body sent.
    #[tokio::test]
    async fn openai_body() {
        let fx = Fixture::start([Reply::json(200, OPENAI_OK), Reply::json(200, OPENAI_OK)]).await;
        let p = openai(&fx.url("/v1"));
        let mut req = chat("openai", "gpt-4o-mini", "Return the disk status as JSON.");
        req.system = Some("You are an SRE assistant.".into());
        req.temperature = Some(0.2);
        req.max_tokens = Some(256);
        req.json_output = true;
        let resp = p.complete(&req, T).await.unwrap();
        let sent = fx.received()[0].json();
        assert_eq!(
            sent,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "You are an SRE assistant."},
                    {"role": "user", "content": "Return the disk status as JSON."}
                ],
                "temperature": 0.2,
                "max_completion_tokens": 256,
                "response_format": {"type": "json_object"}
            })
        );
        assert_eq!(resp.wire_request, sent);

        // Nothing optional unless asked for.
        p.complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        assert_eq!(
            fx.received()[1].json(),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        );
    }

    /// §7.3: JSON mode needs the word "JSON" in the messages (the API answers 400 otherwise);
    /// the client adds an instruction when the step's text lacks it.
    #[tokio::test]
    async fn openai_json_mode_always_mentions_json() {
        let fx = Fixture::start([Reply::json(200, OPENAI_OK)]).await;
        let mut req = chat("openai", "gpt-4o-mini", "Summarise the alert.");
        req.json_output = true;
        openai(&fx.url("/v1")).complete(&req, T).await.unwrap();
        let sent = fx.one().json();
        assert_eq!(sent["response_format"], json!({"type": "json_object"}));
        let text = sent["messages"].to_string().to_lowercase();
        assert!(text.contains("json"), "{sent}");
        assert!(
            sent["messages"][0]["content"]
                .as_str()
                .unwrap()
                .starts_with("Summarise the alert.")
        );
    }

    /// §5.2: Ollama does not know `max_completion_tokens`; the compatible provider sends the
    /// `max_tokens` every compatible server reads.
    #[tokio::test]
    async fn compatible_server_gets_max_tokens() {
        let fx = Fixture::start([Reply::json(200, OLLAMA_OK)]).await;
        let mut req = chat("openai_compatible", "llama3.2", "hi");
        req.max_tokens = Some(64);
        compatible(&fx.url("/v1"), None)
            .complete(&req, T)
            .await
            .unwrap();
        let sent = fx.one().json();
        assert_eq!(sent["max_tokens"], json!(64));
        assert_eq!(sent.get("max_completion_tokens"), None);
    }

    /// §7.4: `system` top-level, no system-role message, `max_tokens` always sent,
    /// temperature within Anthropic's 0–1.
    #[tokio::test]
    async fn anthropic_body() {
        let fx = Fixture::start([
            Reply::json(200, ANTHROPIC_TOOL_USE),
            Reply::json(200, ANTHROPIC_TOOL_USE),
        ])
        .await;
        let p = anthropic(&fx.url(""));
        let mut req = chat("anthropic", "claude-sonnet-4-5", "Weather in Paris?");
        req.system = Some("Answer briefly.".into());
        req.temperature = Some(1.5);
        req.max_tokens = Some(300);
        let resp = p.complete(&req, T).await.unwrap();
        let sent = fx.received()[0].json();
        assert_eq!(
            sent,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 300,
                "system": "Answer briefly.",
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "temperature": 1.0
            })
        );
        assert_eq!(resp.wire_request, sent);

        p.complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
            .await
            .unwrap();
        let sent = fx.received()[1].json();
        assert_eq!(
            sent,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": "hi"}]
            })
        );
    }
}

// ---------------------------------------------------------------------------------------------
// §7.5–7 and §7.21: successful responses.

mod responses {
    use super::*;

    /// §7.5, §7.14: text, model, finish, usage and `x-request-id`, from a body written in
    /// many small TCP writes that split the head and the JSON mid-token.
    #[tokio::test]
    async fn openai_text_in_pieces() {
        let fx = Fixture::start([Reply::json(200, OPENAI_OK)
            .header("x-request-id", "req_deaa1b2c3")
            .header("openai-processing-ms", "312")
            .header("x-ratelimit-remaining-requests", "59")
            .in_pieces(17)])
        .await;
        let resp = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.provider, "openai");
        assert_eq!(resp.text, "Hello! How can I help?");
        assert_eq!(resp.model, "gpt-4o-mini-2024-07-18");
        assert_eq!(resp.finish, FinishReason::Stop);
        assert_eq!(
            resp.usage,
            Some(Usage {
                tokens_in: 19,
                tokens_out: 10
            })
        );
        assert_eq!(resp.request_id.as_deref(), Some("req_deaa1b2c3"));
        assert_eq!(resp.requests, 1);
        assert_eq!(
            resp.wire_response,
            serde_json::from_str::<Value>(OPENAI_OK).unwrap()
        );
    }

    /// Chunked transfer coding, in pieces.
    #[tokio::test]
    async fn chunked_bodies() {
        let fx = Fixture::start([
            Reply::json(200, OPENAI_OK).chunked().in_pieces(9),
            Reply::json(200, ANTHROPIC_TOOL_USE).chunked().in_pieces(5),
        ])
        .await;
        let a = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        let b = anthropic(&fx.url(""))
            .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
            .await
            .unwrap();
        assert_eq!(a.text, "Hello! How can I help?");
        assert_eq!(b.text, "Let me check.");
    }

    /// §7.5: a refusal is the text, and is not reported as a normal stop.
    #[tokio::test]
    async fn openai_refusal() {
        let fx = Fixture::start([Reply::json(200, OPENAI_REFUSAL)]).await;
        let resp = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.text, "I'm sorry, I can't assist with that request.");
        assert_eq!(resp.finish, FinishReason::ContentFilter);
    }

    /// §7.5, §7.7: `content: null` with tool calls.
    #[tokio::test]
    async fn openai_tool_calls_with_null_content() {
        let fx = Fixture::start([Reply::json(200, OPENAI_TOOL_CALLS)]).await;
        let resp = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.text, "");
        assert_eq!(resp.finish, FinishReason::ToolCalls);
        assert_eq!(
            resp.usage,
            Some(Usage {
                tokens_in: 82,
                tokens_out: 17
            })
        );
    }

    /// §7.7: every documented `finish_reason`, and an unknown one as `Other`.
    #[tokio::test]
    async fn openai_finish_reasons() {
        let cases = [
            ("stop", FinishReason::Stop),
            ("length", FinishReason::Length),
            ("tool_calls", FinishReason::ToolCalls),
            ("function_call", FinishReason::ToolCalls),
            ("content_filter", FinishReason::ContentFilter),
            ("eos_token", FinishReason::Other("eos_token".into())),
        ];
        let replies = cases.iter().map(|(r, _)| {
            let mut body: Value = serde_json::from_str(OPENAI_OK).unwrap();
            body["choices"][0]["finish_reason"] = json!(r);
            Reply::json(200, &body.to_string())
        });
        let fx = Fixture::start(replies.collect::<Vec<_>>()).await;
        let p = openai(&fx.url("/v1"));
        for (raw, want) in cases {
            let resp = p
                .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
                .await
                .unwrap();
            assert_eq!(resp.finish, want, "{raw}");
            assert_eq!(
                resp.finish.as_str(),
                raw.replace("function_call", "tool_calls")
            );
        }
    }

    /// §7.21: llama.cpp's empty `id` and `model`, extra `timings`: the requested model is used.
    #[tokio::test]
    async fn llama_cpp_empty_id_and_model() {
        let fx = Fixture::start([Reply::json(200, LLAMA_CPP_OK)]).await;
        let resp = compatible(&fx.url("/v1"), None)
            .complete(&chat("openai_compatible", "qwen2.5-7b", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.provider, "openai_compatible");
        assert_eq!(resp.model, "qwen2.5-7b");
        assert_eq!(resp.text, "Hi there.");
        assert_eq!(resp.request_id, None);
        assert_eq!(
            resp.usage,
            Some(Usage {
                tokens_in: 12,
                tokens_out: 4
            })
        );
    }

    /// §7.21: vLLM's extra fields and Ollama's short ids are ignored; a missing `model` and
    /// `usage` are not errors.
    #[tokio::test]
    async fn compatible_servers_extra_and_missing_fields() {
        let minimal = r#"{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]}"#;
        let fx = Fixture::start([
            Reply::json(200, VLLM_OK).header("x-request-id", "chatcmpl-9f8e7d"),
            Reply::json(200, OLLAMA_OK),
            Reply::json(200, minimal),
        ])
        .await;
        let p = compatible(&fx.url("/v1"), None);
        let v = p
            .complete(&chat("openai_compatible", "Qwen/Qwen3-8B", "hi"), T)
            .await
            .unwrap();
        assert_eq!(
            (v.text.as_str(), v.model.as_str()),
            ("Hello!", "Qwen/Qwen3-8B")
        );
        assert_eq!(v.request_id.as_deref(), Some("chatcmpl-9f8e7d"));
        let o = p
            .complete(&chat("openai_compatible", "llama3.2", "hi"), T)
            .await
            .unwrap();
        assert_eq!(o.text, "Hello! How are you?");
        let m = p
            .complete(&chat("openai_compatible", "phi4", "hi"), T)
            .await
            .unwrap();
        assert_eq!((m.text.as_str(), m.model.as_str()), ("ok", "phi4"));
        assert_eq!(m.usage, None);
    }

    /// §5.1, §5.4: `choices` empty, null or missing is a protocol error, not a panic; so are a
    /// non-JSON 200 and a JSON value that is not an object.
    #[tokio::test]
    async fn malformed_success_bodies_are_protocol_errors() {
        let bodies = [
            r#"{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":null}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion","model":"m"}"#,
            r#"{"choices":"nope"}"#,
            r#"[1,2,3]"#,
            r#"{"choices":[{"message":{"content":"truncated"#,
            "",
        ];
        let fx = Fixture::start(bodies.map(|b| Reply::json(200, b))).await;
        let p = openai(&fx.url("/v1"));
        for b in bodies {
            let e = p
                .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
                .await
                .expect_err(b);
            assert_eq!(e.code, "agent.protocol", "{b}: {e}");
            assert!(!e.retryable);
        }
        assert_eq!(fx.received().len(), bodies.len(), "no retries for a 200");
    }

    /// §5.4: an error object inside a 200 (compatible servers) is an error, not an empty answer.
    #[tokio::test]
    async fn error_object_in_a_200() {
        let body = r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#;
        let fx = Fixture::start([Reply::json(200, body)]).await;
        let e = compatible(&fx.url("/v1"), None)
            .complete(&chat("openai_compatible", "m", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.code, "agent.provider_error");
        assert_eq!(
            e.provider_code.as_deref(),
            Some("exceed_context_size_error")
        );
        assert!(
            e.message.contains("exceeds the available context size"),
            "{e}"
        );
    }

    /// §7.6, §7.12 (cache fields), §7.14: text + tool_use blocks, `request-id`.
    #[tokio::test]
    async fn anthropic_text_and_tool_use() {
        let fx = Fixture::start([Reply::json(200, ANTHROPIC_TOOL_USE)
            .header("request-id", "req_018EeWyXxfu5pfWkrYcMdjWG")
            .header("anthropic-ratelimit-requests-remaining", "49")
            .in_pieces(11)])
        .await;
        let resp = anthropic(&fx.url(""))
            .complete(
                &chat("anthropic", "claude-sonnet-4-5", "Weather in Paris?"),
                T,
            )
            .await
            .unwrap();
        assert_eq!(resp.provider, "anthropic");
        assert_eq!(resp.text, "Let me check.");
        assert_eq!(resp.finish, FinishReason::ToolCalls);
        assert_eq!(resp.model, "claude-sonnet-4-5");
        assert_eq!(
            resp.usage,
            Some(Usage {
                tokens_in: 472,
                tokens_out: 89
            })
        );
        assert_eq!(
            resp.request_id.as_deref(),
            Some("req_018EeWyXxfu5pfWkrYcMdjWG")
        );
    }

    /// §4.4: `input_tokens` excludes cached tokens; unknown blocks and fields are ignored;
    /// several text blocks are one text.
    #[tokio::test]
    async fn anthropic_cache_tokens_and_unknown_blocks() {
        let fx = Fixture::start([Reply::json(200, ANTHROPIC_CACHED)]).await;
        let resp = anthropic(&fx.url(""))
            .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.text, "Disk is 94% full.");
        assert_eq!(resp.finish, FinishReason::Stop);
        assert_eq!(
            resp.usage,
            Some(Usage {
                tokens_in: 21 + 1200 + 3000,
                tokens_out: 393
            })
        );
    }

    /// §7.7: every documented `stop_reason`, and an unknown one as `Other`.
    #[tokio::test]
    async fn anthropic_stop_reasons() {
        let cases = [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("refusal", FinishReason::ContentFilter),
            ("pause_turn", FinishReason::Other("pause_turn".into())),
            (
                "brand_new_reason",
                FinishReason::Other("brand_new_reason".into()),
            ),
        ];
        let replies: Vec<_> = cases
            .iter()
            .map(|(r, _)| {
                let mut body: Value = serde_json::from_str(ANTHROPIC_TOOL_USE).unwrap();
                body["stop_reason"] = json!(r);
                Reply::json(200, &body.to_string())
            })
            .collect();
        let fx = Fixture::start(replies).await;
        let p = anthropic(&fx.url(""));
        for (raw, want) in cases {
            let resp = p
                .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
                .await
                .unwrap();
            assert_eq!(resp.finish, want, "{raw}");
        }
    }

    /// An Anthropic body without `model` or `usage`, and one without `content`.
    #[tokio::test]
    async fn anthropic_missing_fields() {
        let fx = Fixture::start([
            Reply::json(
                200,
                r#"{"type":"message","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn"}"#,
            ),
            Reply::json(200, r#"{"type":"message","stop_reason":"end_turn"}"#),
        ])
        .await;
        let p = anthropic(&fx.url(""));
        let r = p
            .complete(&chat("anthropic", "claude-x", "hi"), T)
            .await
            .unwrap();
        assert_eq!((r.text.as_str(), r.model.as_str()), ("ok", "claude-x"));
        assert_eq!(r.usage, None);
        let e = p
            .complete(&chat("anthropic", "claude-x", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.code, "agent.protocol");
    }
}

// ---------------------------------------------------------------------------------------------
// §7.14, §7.15, §7.21: error bodies.

mod errors {
    use super::*;

    /// §7.14: `{"error":{message,type,param,code}}`; the request id travels with the error.
    #[tokio::test]
    async fn openai_error_object() {
        let (e, _) =
            openai_error(Reply::json(400, OPENAI_CONTEXT_400).header("x-request-id", "req_ctx_1"))
                .await;
        assert_eq!(e.code, "agent.http_status");
        assert_eq!(e.status, Some(400));
        assert_eq!(e.provider_code.as_deref(), Some("context_length_exceeded"));
        assert!(
            e.message
                .contains("This model's maximum context length is 4097 tokens"),
            "{e}"
        );
        assert!(e.message.starts_with("openai answered 400: "), "{e}");
        assert_eq!(e.request_id.as_deref(), Some("req_ctx_1"));
        assert!(e.message.contains("req_ctx_1"), "{e}");
        assert!(!e.retryable);
    }

    /// §7.14: null `param` and `code`: the `type` is the provider code.
    #[tokio::test]
    async fn openai_error_with_null_code() {
        let (e, _) = openai_error(Reply::json(400, OPENAI_NULL_CODE_400)).await;
        assert_eq!(e.provider_code.as_deref(), Some("invalid_request_error"));
        assert!(
            e.message.contains("You must provide a model parameter."),
            "{e}"
        );
        assert_eq!(e.request_id, None);
    }

    /// §7.14: `{"type":"error","error":{type,message},"request_id"}` and `request-id`.
    #[tokio::test]
    async fn anthropic_error_object() {
        let fx = Fixture::start([
            Reply::json(404, ANTHROPIC_404).header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy"),
            // The same without the header: the body's request_id is used.
            Reply::json(404, ANTHROPIC_404),
        ])
        .await;
        let p = anthropic(&fx.url(""));
        for _ in 0..2 {
            let e = p
                .complete(&chat("anthropic", "claude-nope", "hi"), T)
                .await
                .unwrap_err();
            assert_eq!(e.code, "agent.http_status");
            assert_eq!(e.status, Some(404));
            assert_eq!(e.provider_code.as_deref(), Some("not_found_error"));
            assert!(
                e.message
                    .contains("The requested resource could not be found."),
                "{e}"
            );
            assert_eq!(
                e.request_id.as_deref(),
                Some("req_011CSHoEeqs5C35K2UUqR7Fy")
            );
            assert!(!e.retryable);
        }
        assert_eq!(fx.received().len(), 2, "404 is not retried");
    }

    /// §7.21, §5.1: vLLM's 401 has `error` as a plain string; with no key configured the
    /// message says which variable to set.
    #[tokio::test]
    async fn vllm_unauthorized_string() {
        let fx = Fixture::start([
            Reply::json(401, r#"{"error": "Unauthorized"}"#),
            Reply::json(401, r#"{"error": "Unauthorized"}"#),
        ])
        .await;
        let e = compatible(&fx.url("/v1"), None)
            .complete(&chat("openai_compatible", "m", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(401));
        assert_eq!(e.provider_code, None);
        assert!(e.message.contains("Unauthorized"), "{e}");
        assert!(e.message.contains("XYN_OPENAI_COMPATIBLE_API_KEY"), "{e}");
        let e = compatible(&fx.url("/v1"), Some("wrong"))
            .complete(&chat("openai_compatible", "m", "hi"), T)
            .await
            .unwrap_err();
        assert!(!e.message.contains("XYN_OPENAI_COMPATIBLE_API_KEY"), "{e}");
    }

    /// §7.21, §5.1: vLLM ≥ 0.10.1 (integer `code`, Python-style `type`) and the flat body of
    /// earlier versions; the integer code only repeats the status, so the type is reported.
    #[tokio::test]
    async fn vllm_error_bodies() {
        let new = r#"{"error":{"message":"The model `gpt-4` does not exist.","type":"NotFoundError","param":null,"code":404}}"#;
        let flat = r#"{"object":"error","message":"This model's maximum context length is 2048 tokens.","type":"BadRequestError","param":null,"code":400}"#;
        let fx = Fixture::start([Reply::json(404, new), Reply::json(400, flat)]).await;
        let p = compatible(&fx.url("/v1"), None);
        let e = p
            .complete(&chat("openai_compatible", "gpt-4", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(404));
        assert_eq!(e.provider_code.as_deref(), Some("NotFoundError"));
        assert!(e.message.contains("does not exist"), "{e}");
        let e = p
            .complete(&chat("openai_compatible", "m", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(400));
        assert_eq!(e.provider_code.as_deref(), Some("BadRequestError"));
        assert!(e.message.contains("maximum context length is 2048"), "{e}");
    }

    /// §7.21, §5.3: llama.cpp's integer `code` and no `param`; §5.2 Ollama's error.
    #[tokio::test]
    async fn llama_cpp_and_ollama_error_bodies() {
        let llama =
            r#"{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}"#;
        let ollama = r#"{"error":{"message":"model \"llama9\" not found, try pulling it first","type":"not_found_error","param":null,"code":null}}"#;
        let fx = Fixture::start([Reply::json(401, llama), Reply::json(404, ollama)]).await;
        let p = compatible(&fx.url("/v1"), Some("k"));
        let e = p
            .complete(&chat("openai_compatible", "m", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.provider_code.as_deref(), Some("authentication_error"));
        assert!(e.message.contains("Invalid API Key"), "{e}");
        let e = p
            .complete(&chat("openai_compatible", "llama9", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.provider_code.as_deref(), Some("not_found_error"));
        assert!(e.message.contains(r#"model "llama9" not found"#), "{e}");
    }

    /// §7.15: an HTML page in front of the API: status and the page's title, not its markup.
    #[tokio::test]
    async fn html_error_pages() {
        let (e, fx) = openai_error(Reply::raw(502, "text/html", HTML_502)).await;
        assert_eq!(e.code, "agent.http_status");
        assert_eq!(e.status, Some(502));
        assert_eq!(e.provider_code, None);
        assert_eq!(e.message, "openai answered 502: 502 Bad Gateway");
        assert!(e.retryable, "a 502 is retryable");
        assert_eq!(fx.received().len(), 1);

        let fx = Fixture::start([Reply::raw(413, "text/html", HTML_413)]).await;
        let e = anthropic(&fx.url(""))
            .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(413));
        assert_eq!(
            e.message,
            "anthropic answered 413: 413 Request Entity Too Large"
        );
        assert!(!e.retryable);
        assert_eq!(fx.received().len(), 1, "413 is not retried");
    }

    /// §7.15: plain text and empty error bodies.
    #[tokio::test]
    async fn text_and_empty_error_bodies() {
        let (e, _) = openai_error(Reply::raw(404, "text/plain", "404 page not found\n")).await;
        assert_eq!(e.message, "openai answered 404: 404 page not found");
        let (e, _) = openai_error(Reply::raw(403, "text/plain", "")).await;
        assert_eq!(e.message, "openai answered 403: no body");
        let (e, _) = openai_error(Reply::json(400, r#"{"detail":"Not Found"}"#)).await;
        assert!(e.message.contains("Not Found"), "{e}");
    }

    /// Missing key: named, and no request is made.
    #[tokio::test]
    async fn missing_keys() {
        let fx = Fixture::start(Vec::<Reply>::new()).await;
        let mut cfg = openai_cfg(&fx.url("/v1"));
        cfg.api_key = None;
        let e = OpenAi::new("openai", cfg, http(), 2)
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.code, "agent.missing_key");
        assert!(e.message.contains("OPENAI_API_KEY"), "{e}");
        assert!(!e.retryable);

        let cfg = AnthropicConfig {
            base_url: fx.url(""),
            api_key: None,
        };
        let e = Anthropic::new(cfg, http(), 2)
            .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.code, "agent.missing_key");
        assert!(e.message.contains("ANTHROPIC_API_KEY"), "{e}");
        assert!(fx.received().is_empty());
    }

    /// A key that cannot be a header value is a configuration error, not retried.
    #[tokio::test]
    async fn unusable_key_or_url() {
        let fx = Fixture::start(Vec::<Reply>::new()).await;
        let mut cfg = openai_cfg(&fx.url("/v1"));
        cfg.api_key = Some("sk-abc\ndef".into());
        let e = OpenAi::new("openai", cfg, http(), 2)
            .with_backoff(fast_backoff())
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.code, "agent.config");
        assert!(!e.retryable);
        assert!(!e.message.contains("sk-abc"), "the key is not echoed: {e}");
        let e = openai("not a url")
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.code, "agent.config", "{e}");
        assert!(fx.received().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// §7.16–19, §7.23: retries and timeouts.

mod retries {
    use super::*;

    /// §7.17: a 429 then a 200: one retry, the same request twice.
    #[tokio::test]
    async fn rate_limited_then_ok() {
        let fx = Fixture::start([
            Reply::json(429, OPENAI_RATE_429),
            Reply::json(200, OPENAI_OK).header("x-request-id", "req_2"),
        ])
        .await;
        let resp = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.requests, 2);
        assert_eq!(resp.request_id.as_deref(), Some("req_2"));
        let r = fx.received();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].body, r[1].body);
        assert_eq!(r[0].header("authorization"), r[1].header("authorization"));
    }

    /// §7.16: `retry-after` in seconds is honoured (the backoff alone would take ~5 ms).
    #[tokio::test]
    async fn retry_after_seconds() {
        let fx = Fixture::start([
            Reply::json(429, OPENAI_RATE_429).header("retry-after", "1"),
            Reply::json(200, OPENAI_OK),
        ])
        .await;
        let t = Instant::now();
        let resp = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        let took = t.elapsed();
        assert_eq!(resp.requests, 2);
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    /// §7.16: `retry-after-ms` wins over `retry-after`.
    #[tokio::test]
    async fn retry_after_ms() {
        let fx = Fixture::start([
            Reply::json(429, OPENAI_RATE_429)
                .header("retry-after-ms", "300")
                .header("retry-after", "20"),
            Reply::json(200, OPENAI_OK),
        ])
        .await;
        let t = Instant::now();
        openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    /// §7.16: a hint beyond the policy's 60 s falls back to the backoff.
    #[tokio::test]
    async fn very_long_hint_falls_back_to_backoff() {
        let fx = Fixture::start([
            Reply::json(429, OPENAI_RATE_429).header("retry-after", "3600"),
            Reply::json(200, OPENAI_OK),
        ])
        .await;
        let t = Instant::now();
        let resp = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.requests, 2);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    /// A hinted wait that would end past the deadline is not taken: the 429 is reported
    /// at once rather than after the caller's timeout.
    #[tokio::test]
    async fn no_retry_past_the_deadline() {
        let fx = Fixture::start([
            Reply::json(429, OPENAI_RATE_429)
                .header("retry-after", "30")
                .header("x-request-id", "req_rl"),
            Reply::json(200, OPENAI_OK),
        ])
        .await;
        let t = Instant::now();
        let e = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(e.status, Some(429));
        assert_eq!(e.provider_code.as_deref(), Some("rate_limit_exceeded"));
        assert!(e.retryable);
        assert_eq!(fx.unserved(), 1);
    }

    /// §7.18: `x-should-retry: false` on a 429 stops; `true` on a 400 retries.
    #[tokio::test]
    async fn should_retry_header_overrides() {
        let fx = Fixture::start([
            Reply::json(429, OPENAI_RATE_429).header("x-should-retry", "false"),
            Reply::json(200, OPENAI_OK),
        ])
        .await;
        let e = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(429));
        assert!(!e.retryable);
        assert_eq!((fx.received().len(), fx.unserved()), (1, 1));

        let fx = Fixture::start([
            Reply::json(400, OPENAI_NULL_CODE_400).header("x-should-retry", "true"),
            Reply::json(200, OPENAI_OK),
        ])
        .await;
        let resp = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.requests, 2);
    }

    /// §7.17: 408, 409, 429, 500, 502, 503, 504 and 529 are retried (both providers).
    #[tokio::test]
    async fn retried_statuses() {
        for status in [408, 409, 429, 500, 502, 503, 504, 529] {
            let fx = Fixture::start([
                Reply::json(status, ANTHROPIC_529),
                Reply::json(200, OPENAI_OK),
                Reply::json(status, ANTHROPIC_529),
                Reply::json(200, ANTHROPIC_TOOL_USE),
            ])
            .await;
            let a = openai(&fx.url("/v1"))
                .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
                .await
                .unwrap();
            let b = anthropic(&fx.url(""))
                .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
                .await
                .unwrap();
            assert_eq!((a.requests, b.requests), (2, 2), "{status}");
        }
    }

    /// §7.18: 400, 401, 403, 404, 413 and 422 are not retried.
    #[tokio::test]
    async fn final_statuses() {
        for status in [400, 401, 403, 404, 413, 422] {
            let fx = Fixture::start([
                Reply::json(status, OPENAI_NULL_CODE_400),
                Reply::json(200, OPENAI_OK),
            ])
            .await;
            let e = openai(&fx.url("/v1"))
                .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
                .await
                .unwrap_err();
            assert_eq!(e.status, Some(status));
            assert!(!e.retryable, "{status}");
            assert_eq!(fx.unserved(), 1, "{status} was retried");
        }
    }

    /// §7.17: at most `max_retries` retries; the last answer is reported.
    #[tokio::test]
    async fn at_most_max_retries() {
        for max in [0u32, 1, 2, 3] {
            let replies = (0..5)
                .map(|i| Reply::json(503, ANTHROPIC_529).header("request-id", &format!("req_{i}")));
            let fx = Fixture::start(replies.collect::<Vec<_>>()).await;
            let e = anthropic_retries(&fx.url(""), max)
                .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
                .await
                .unwrap_err();
            assert_eq!(fx.received().len() as u32, max + 1);
            assert_eq!(e.status, Some(503));
            assert_eq!(e.provider_code.as_deref(), Some("overloaded_error"));
            assert_eq!(e.request_id, Some(format!("req_{max}")));
            assert!(e.retryable);
        }
    }

    /// §7.19: a 429 for an exhausted quota or spend cap is not retried and not retryable;
    /// its code is surfaced.
    #[tokio::test]
    async fn quota_exhausted_is_final() {
        let fx = Fixture::start([
            Reply::json(429, OPENAI_QUOTA_429),
            Reply::json(200, OPENAI_OK),
        ])
        .await;
        let e = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.provider_code.as_deref(), Some("insufficient_quota"));
        assert!(!e.retryable);
        assert_eq!(fx.unserved(), 1);

        let fx = Fixture::start([
            Reply::json(429, ANTHROPIC_SPEND_429),
            Reply::json(200, ANTHROPIC_TOOL_USE),
        ])
        .await;
        let e = anthropic(&fx.url(""))
            .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(
            e.provider_code.as_deref(),
            Some("enforced_spend_limit_reached")
        );
        assert!(!e.retryable);
        assert_eq!(fx.unserved(), 1);
    }

    /// §7.17: connection refused is retried with backoff, then reported as `agent.connect`.
    #[tokio::test]
    async fn connection_refused() {
        let base = closed_port_url().await;
        let backoff = xyn_agents::Backoff {
            initial_delay: Duration::from_millis(40),
            ..fast_backoff()
        };
        let p = OpenAi::new("openai", openai_cfg(&format!("{base}/v1")), http(), 2).with_backoff(
            xyn_agents::Backoff {
                max_delay: Duration::from_millis(80),
                ..backoff
            },
        );
        let t = Instant::now();
        let e = p
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap_err();
        let took = t.elapsed();
        assert_eq!(e.code, "agent.connect", "{e}");
        assert!(e.retryable);
        assert_eq!(e.status, None);
        assert!(e.message.contains("3 attempts"), "{e}");
        assert!(e.message.contains(&base), "{e}");
        // Two waits: ≥ 0.75·40 ms + 0.75·80 ms.
        assert!(took >= Duration::from_millis(90), "{took:?}");

        let e = anthropic_retries(&base, 0)
            .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.code, "agent.connect");
        assert!(!e.message.contains("attempts"), "{e}");
    }

    /// §7.17: a connection closed mid-body is a transport error: retried, then `agent.http`.
    #[tokio::test]
    async fn connection_closed_mid_body() {
        let fx = Fixture::start([
            Reply::json(200, OPENAI_OK).cut_after(40),
            Reply::json(200, OPENAI_OK),
        ])
        .await;
        let resp = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.requests, 2);
        assert_eq!(resp.text, "Hello! How can I help?");

        let replies: Vec<_> = (0..3)
            .map(|_| Reply::json(200, OPENAI_OK).chunked().cut_after(25))
            .collect();
        let fx = Fixture::start(replies).await;
        let e = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.code, "agent.http", "{e}");
        assert!(e.retryable);
        assert!(e.message.contains("3 attempts"), "{e}");
        assert_eq!(fx.received().len(), 3);
    }

    /// §7.23: no answer within the timeout is `agent.timeout`, distinct from HTTP errors, and
    /// the call returns at the deadline (retries included).
    #[tokio::test]
    async fn slow_server_times_out() {
        let fx = Fixture::start([
            Reply::json(200, OPENAI_OK).delayed(Duration::from_secs(5)),
            Reply::json(200, OPENAI_OK).delayed(Duration::from_secs(5)),
            Reply::json(200, OPENAI_OK).delayed(Duration::from_secs(5)),
        ])
        .await;
        let t = Instant::now();
        let e = openai(&fx.url("/v1"))
            .complete(
                &chat("openai", "gpt-4o-mini", "hi"),
                Duration::from_millis(400),
            )
            .await
            .unwrap_err();
        let took = t.elapsed();
        assert_eq!(e.code, "agent.timeout", "{e}");
        assert!(e.retryable);
        assert_eq!(e.status, None);
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert_eq!(fx.received().len(), 1);
    }

    /// §7.23: a head and then nothing: the body read times out too.
    #[tokio::test]
    async fn stalled_body_times_out() {
        let fx = Fixture::start([
            Reply::json(200, ANTHROPIC_TOOL_USE).stall_after_head(Duration::from_secs(5))
        ])
        .await;
        let t = Instant::now();
        let e = anthropic(&fx.url(""))
            .complete(
                &chat("anthropic", "claude-sonnet-4-5", "hi"),
                Duration::from_millis(400),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "agent.timeout", "{e}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    /// §7.17, §7.23: a retry still gets the rest of the budget: a 503, then an answer that
    /// takes 200 ms, within 2 s.
    #[tokio::test]
    async fn retry_then_slow_answer_within_the_deadline() {
        let fx = Fixture::start([
            Reply::json(503, ANTHROPIC_529),
            Reply::json(200, OPENAI_OK).delayed(Duration::from_millis(200)),
        ])
        .await;
        let resp = openai(&fx.url("/v1"))
            .complete(&chat("openai", "gpt-4o-mini", "hi"), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(resp.requests, 2);
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration, router and replay.

mod node {
    use super::*;
    use std::path::PathBuf;
    use xyn_agents::Router;
    use xyn_agents::replay::{self, Replay};

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn from_env_reads_the_documented_variables() {
        let c = AgentsConfig::from_env(env(&[
            ("OPENAI_API_KEY", "sk-live"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:1234/v1"),
            ("OPENAI_ORG_ID", "org-abc"),
            ("OPENAI_PROJECT_ID", "proj_xyz"),
            ("ANTHROPIC_API_KEY", "sk-ant"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:1235"),
            ("XYN_OPENAI_COMPATIBLE_BASE_URL", "http://127.0.0.1:8000/v1"),
            ("XYN_OPENAI_COMPATIBLE_API_KEY", "token"),
            ("XYN_AGENT_CASSETTE", "/tmp/c.jsonl"),
        ]));
        assert_eq!(c.openai.api_key.as_deref(), Some("sk-live"));
        assert_eq!(c.openai.base_url, "http://127.0.0.1:1234/v1");
        assert_eq!(c.openai.organization.as_deref(), Some("org-abc"));
        assert_eq!(c.openai.project.as_deref(), Some("proj_xyz"));
        assert!(c.openai.key_required);
        assert_eq!(c.anthropic.api_key.as_deref(), Some("sk-ant"));
        assert_eq!(c.anthropic.base_url, "http://127.0.0.1:1235");
        assert_eq!(c.openai_compatible.base_url, "http://127.0.0.1:8000/v1");
        assert_eq!(c.openai_compatible.api_key.as_deref(), Some("token"));
        assert_eq!(c.openai_compatible.key_var, "XYN_OPENAI_COMPATIBLE_API_KEY");
        assert!(!c.openai_compatible.key_required);
        assert_eq!(c.force_cassette, Some(PathBuf::from("/tmp/c.jsonl")));
        assert_eq!(c.fallback_cassette, None);
        assert_eq!(c.max_retries, 2);
        assert_eq!(c.backoff, xyn_agents::Backoff::default());
    }

    #[test]
    fn from_env_defaults_blank_and_padded_values() {
        let c = AgentsConfig::from_env(env(&[
            ("OPENAI_API_KEY", "   "),
            ("OPENAI_BASE_URL", ""),
            ("ANTHROPIC_API_KEY", " sk-ant-padded\r\n"),
            ("OPENAI_ORG_ID", "\t"),
        ]));
        assert_eq!(c.openai.api_key, None);
        assert_eq!(c.openai.base_url, "https://api.openai.com/v1");
        assert_eq!(c.openai.organization, None);
        assert_eq!(c.anthropic.api_key.as_deref(), Some("sk-ant-padded"));
        assert_eq!(c.anthropic.base_url, "https://api.anthropic.com");
        assert_eq!(c.openai_compatible.base_url, "http://127.0.0.1:11434/v1");
        assert_eq!(c.force_cassette, None);
        let d = AgentsConfig::default();
        assert_eq!(d.max_retries, 2);
        assert_eq!(d.openai.base_url, "https://api.openai.com/v1");
    }

    fn cassette(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn entry(provider: &str, model: &str, contains: Option<&str>, body: &str) -> String {
        let mut e = json!({"provider": provider, "model": model,
            "response": {"status": 200, "headers": {"x-request-id": "req_rec"},
                         "body": serde_json::from_str::<Value>(body).unwrap()}});
        if let Some(c) = contains {
            e["match"] = json!({"prompt_contains": c});
        }
        e.to_string()
    }

    #[tokio::test]
    async fn router_falls_back_to_the_cassette_when_a_key_is_missing() {
        let c = cassette(
            &[
                entry("openai", "*", None, OPENAI_OK),
                entry("anthropic", "*", None, ANTHROPIC_TOOL_USE),
            ]
            .join("\n"),
        );
        let fx = Fixture::start([Reply::json(200, ANTHROPIC_CACHED)]).await;
        let mut cfg = AgentsConfig::from_env(env(&[
            ("ANTHROPIC_API_KEY", "sk-ant"),
            ("ANTHROPIC_BASE_URL", &fx.url("")),
        ]));
        cfg.fallback_cassette = Some(c.path().to_path_buf());
        let router = Router::new(&cfg, http()).unwrap();

        let route = router.route("openai").unwrap();
        assert_eq!(route.provider.name(), "replay");
        let note = route.note.unwrap();
        assert!(note.contains("OPENAI_API_KEY"), "{note}");
        assert!(note.contains(&c.path().display().to_string()), "{note}");
        let resp = route
            .provider
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.text, "Hello! How can I help?");
        assert_eq!(resp.request_id.as_deref(), Some("req_rec"));

        // A provider with its key is called live.
        let route = router.route("anthropic").unwrap();
        assert_eq!(route.provider.name(), "anthropic");
        assert!(route.note.is_none());
        let resp = route
            .provider
            .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.text, "Disk is 94% full.");
        assert_eq!(fx.received().len(), 1);

        // Compatible servers need no key, so they are never replaced.
        let route = router.route("openai_compatible").unwrap();
        assert_eq!(route.provider.name(), "openai_compatible");
        assert!(route.note.is_none());
    }

    #[tokio::test]
    async fn router_forced_cassette_and_unknown_provider() {
        let c = cassette(&entry("anthropic", "*", None, ANTHROPIC_TOOL_USE));
        let cfg = AgentsConfig::from_env(env(&[
            ("OPENAI_API_KEY", "sk"),
            ("XYN_AGENT_CASSETTE", &c.path().display().to_string()),
        ]));
        let router = Router::new(&cfg, http()).unwrap();
        for name in ["openai", "anthropic", "replay"] {
            let route = router.route(name).unwrap();
            assert_eq!(route.provider.name(), "replay");
            assert!(
                route.note.as_deref().unwrap().contains("every agent task"),
                "{name}"
            );
        }
        let resp = router
            .route("anthropic")
            .unwrap()
            .provider
            .complete(&chat("anthropic", "claude-sonnet-4-5", "hi"), T)
            .await
            .unwrap();
        assert_eq!(resp.text, "Let me check.");

        let router = Router::new(&AgentsConfig::from_env(env(&[])), http()).unwrap();
        let e = router.route("gemini").err().unwrap();
        assert_eq!(e.code, "agent.unknown_provider");
        assert!(e.message.contains("gemini"));
        assert_eq!(
            router.provider_names(),
            ["anthropic", "openai", "openai_compatible", "replay"]
        );
        // No fallback: the live provider reports the missing key.
        let e = router
            .route("openai")
            .unwrap()
            .provider
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.code, "agent.missing_key");
    }

    #[test]
    fn router_rejects_a_broken_cassette_at_start() {
        let c = cassette(&format!(
            "{}\n\n{{\"provider\": \"openai\", \"response\": \n",
            entry("openai", "*", None, OPENAI_OK)
        ));
        let mut cfg = AgentsConfig::from_env(env(&[]));
        cfg.fallback_cassette = Some(c.path().to_path_buf());
        let e = Router::new(&cfg, http()).err().unwrap();
        assert_eq!(e.code, "agent.replay");
        assert!(e.message.contains("line 3"), "{e}");
    }

    /// The router passes `max_retries` and the backoff to the live providers: one retry
    /// after the configured 1 s (the SDK default would wait ≤ 0.5 s).
    #[tokio::test]
    async fn router_applies_the_retry_policy() {
        let replies: Vec<_> = (0..4).map(|_| Reply::json(503, ANTHROPIC_529)).collect();
        let fx = Fixture::start(replies).await;
        let mut cfg = AgentsConfig::from_env(env(&[
            ("OPENAI_API_KEY", "sk"),
            ("OPENAI_BASE_URL", &fx.url("/v1")),
        ]));
        cfg.max_retries = 1;
        cfg.backoff = xyn_agents::Backoff {
            initial_delay: Duration::from_secs(1),
            ..xyn_agents::Backoff::default()
        };
        let router = Router::new(&cfg, http()).unwrap();
        let t = Instant::now();
        let e = router
            .route("openai")
            .unwrap()
            .provider
            .complete(&chat("openai", "gpt-4o-mini", "hi"), T)
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(503));
        assert_eq!(fx.received().len(), 2);
        assert!(
            t.elapsed() >= Duration::from_millis(750),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn cassette_forms_and_parse_errors() {
        let lines = format!(
            "// recorded 2026-08-21\n{}\n\n{}\n",
            entry("openai", "gpt-4o-mini", Some("disk"), OPENAI_OK),
            entry("anthropic", "*", None, ANTHROPIC_TOOL_USE)
        );
        assert_eq!(replay::parse(&lines).unwrap().len(), 2);
        let array = format!(
            "[{}, {}]",
            entry("openai", "*", None, OPENAI_OK),
            entry("anthropic", "*", None, ANTHROPIC_TOOL_USE)
        );
        let parsed = replay::parse(&array).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].provider, "anthropic");

        let e = replay::parse(&format!("{}\nnot json\n", entry("openai", "*", None, "{}")))
            .unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = replay::parse(r#"{"provider": "openai", "respons": {"body": {}}}"#).unwrap_err();
        assert!(e.starts_with("line 1:") && e.contains("respons"), "{e}");
        let e = replay::parse("[\n{\"provider\": \"openai\"}\n]").unwrap_err();
        assert!(e.contains("response") && e.contains("line 2"), "{e}");
        let c = cassette("\n\n{\"provider\": 1}\n");
        let e = replay::load(c.path()).unwrap_err();
        assert_eq!(e.code, "agent.replay");
        assert!(e.message.contains("line 3"), "{e}");
        let e = replay::load(std::path::Path::new("/nonexistent/c.jsonl")).unwrap_err();
        assert_eq!(e.code, "agent.replay");
    }

    #[tokio::test]
    async fn replay_matching() {
        let entries = replay::parse(
            &[
                entry("openai", "gpt-4o-mini", Some("disk"), OPENAI_OK),
                entry("openai", "*", Some("disk"), OPENAI_REFUSAL),
                entry("openai", "*", None, OPENAI_TOOL_CALLS),
                entry("anthropic", "*", Some("disk"), ANTHROPIC_CACHED),
            ]
            .join("\n"),
        )
        .unwrap();
        let r = Replay::from_entries("mem", entries);
        async fn ask(
            r: &Replay,
            p: &str,
            m: &str,
            prompt: &str,
        ) -> Result<(String, FinishReason), AgentError> {
            r.complete(&chat(p, m, prompt), T)
                .await
                .map(|x| (x.text, x.finish))
        }
        let text = |p, m, prompt| ask(&r, p, m, prompt);
        assert_eq!(
            text("openai", "gpt-4o-mini", "disk full").await.unwrap().0,
            "Hello! How can I help?"
        );
        // Another model: the `*` entry with the same needle.
        assert_eq!(
            text("openai", "gpt-5", "disk full").await.unwrap().1,
            FinishReason::ContentFilter
        );
        // No needle: the catch-all entry.
        assert_eq!(
            text("openai", "gpt-5", "cpu").await.unwrap().1,
            FinishReason::ToolCalls
        );
        // OpenAI recordings answer compatible servers.
        assert_eq!(
            text("openai_compatible", "gpt-4o-mini", "disk")
                .await
                .unwrap()
                .0,
            "Hello! How can I help?"
        );
        // Anthropic recordings are parsed as Messages bodies.
        assert_eq!(
            text("anthropic", "claude", "disk").await.unwrap().0,
            "Disk is 94% full."
        );
        let e = text("anthropic", "claude", "cpu").await.unwrap_err();
        assert_eq!(e.code, "agent.no_recording");
        assert!(e.message.contains("mem"), "{e}");
    }

    #[tokio::test]
    async fn replay_step_cassette_option() {
        let c = cassette(&entry("openai", "*", None, OPENAI_OK));
        let r = Replay::empty();
        let mut req = chat("openai", "gpt-4o-mini", "hi");
        assert_eq!(
            r.complete(&req, T).await.unwrap_err().code,
            "agent.no_recording"
        );
        req.options = json!({"cassette": c.path()});
        let resp = r.complete(&req, T).await.unwrap();
        assert_eq!(resp.provider, "replay");
        assert_eq!(resp.requests, 0);
        assert_eq!(resp.wire_request["messages"][0]["content"], "hi");
        req.options = json!({"cassette": "/nonexistent.jsonl"});
        assert_eq!(r.complete(&req, T).await.unwrap_err().code, "agent.replay");
    }

    /// A recorded non-2xx answer gives the error the live call gives for the same exchange.
    #[tokio::test]
    async fn replayed_errors_equal_live_errors() {
        let cases = [
            (
                "openai",
                Reply::json(429, OPENAI_RATE_429).header("X-Request-Id", "req_429"),
            ),
            (
                "openai",
                Reply::json(429, OPENAI_RATE_429).header("x-should-retry", "false"),
            ),
            ("openai", Reply::json(400, OPENAI_CONTEXT_400)),
            ("openai", Reply::json(429, OPENAI_QUOTA_429)),
            ("openai", Reply::raw(502, "text/html", HTML_502)),
            (
                "anthropic",
                Reply::json(529, ANTHROPIC_529).header("request-id", "req_529"),
            ),
            ("anthropic", Reply::json(404, ANTHROPIC_404)),
            (
                "openai_compatible",
                Reply::json(401, r#"{"error": "Unauthorized"}"#),
            ),
        ];
        for (provider, reply) in cases {
            let fx = Fixture::start([reply.clone()]).await;
            let live: Box<dyn Provider> = match provider {
                "anthropic" => Box::new(anthropic_retries(&fx.url(""), 0)),
                "openai_compatible" => Box::new(compatible(&fx.url("/v1"), Some("k"))),
                _ => Box::new(openai_retries(&fx.url("/v1"), 0)),
            };
            let req = chat(provider, "m", "hi");
            let live = live.complete(&req, T).await.unwrap_err();

            // The same exchange as a cassette line.
            let text = String::from_utf8(reply.body.clone()).unwrap();
            let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            let headers: serde_json::Map<String, Value> = reply
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            let line = json!({"provider": provider, "response":
                {"status": reply.status, "headers": headers, "body": body}});
            let r = Replay::from_entries("mem", replay::parse(&line.to_string()).unwrap());
            let replayed = r.complete(&req, T).await.unwrap_err();
            assert_eq!(replayed, live, "{provider} {reply:?}");
        }
    }

    /// A recorded 200 whose body is not a JSON object fails as the live call does.
    #[tokio::test]
    async fn replayed_non_json_success() {
        let line = r#"{"provider": "openai", "response": {"body": "<html>oops</html>"}}"#;
        let r = Replay::from_entries("mem", replay::parse(line).unwrap());
        let e = r.complete(&chat("openai", "m", "hi"), T).await.unwrap_err();
        assert_eq!(e.code, "agent.protocol");
    }
}
