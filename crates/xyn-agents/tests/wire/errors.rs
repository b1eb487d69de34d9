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
