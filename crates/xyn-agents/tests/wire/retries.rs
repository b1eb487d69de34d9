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
