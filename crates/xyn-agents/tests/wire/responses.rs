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
