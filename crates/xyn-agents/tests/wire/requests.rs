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
