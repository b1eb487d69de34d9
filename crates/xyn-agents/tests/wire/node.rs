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

    let e =
        replay::parse(&format!("{}\nnot json\n", entry("openai", "*", None, "{}"))).unwrap_err();
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
