//! Error answers of every provider, live or replayed, turned into [`AgentError`]s.
//!
//! Bodies (`shared/reference/llm-wire-formats.md` §3.1, §4.6, §5): OpenAI
//! `{"error":{message,type,param,code}}` (param/code nullable), Anthropic
//! `{"type":"error","error":{type,message},"request_id"}`, vLLM's `{"error":"Unauthorized"}`
//! and its flat pre-0.10.1 `{"object":"error","message",…,"code":400}`, llama.cpp's integer
//! `code`, FastAPI's `{"detail":…}`, and anything else (an HTML page from a proxy), of which
//! the status and a line of text are kept.

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::AgentError;
use crate::retry::should_retry;

/// At most this many characters of a non-JSON error body go into a message.
const MAX_TEXT: usize = 300;

/// `(message, code)` of an error object, or of an error given as a plain string.
///
/// The code is the most specific one the provider gave: Anthropic's
/// `error.details.error_code`, a string `code`, the `type`, and last an integer `code`
/// (vLLM and llama.cpp put the HTTP status there, which says nothing new).
pub(crate) fn error_parts(err: &Value) -> (String, Option<String>) {
    match err {
        Value::String(s) => (s.clone(), None),
        Value::Object(m) => {
            let msg = match m.get("message") {
                Some(Value::String(s)) => s.clone(),
                Some(v) if !v.is_null() => v.to_string(),
                _ => "error".into(),
            };
            let str_at = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
            let code = str_at(m.get("details").and_then(|d| d.get("error_code")))
                .or_else(|| str_at(m.get("code")))
                .or_else(|| str_at(m.get("type")))
                .or_else(|| m.get("code").and_then(Value::as_i64).map(|c| c.to_string()));
            (msg, code)
        }
        Value::Null => ("error".into(), None),
        other => (other.to_string(), None),
    }
}

/// The error for a non-2xx answer. `retryable` follows the retry policy
/// ([`should_retry_answer`]); the request id comes from the headers or the body.
pub(crate) fn status_error(
    provider: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> AgentError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let (msg, code) = match &parsed {
        Some(v) if v.get("error").is_some_and(|e| !e.is_null()) => error_parts(&v["error"]),
        Some(v) if v.get("message").is_some() => error_parts(v),
        Some(Value::Object(m)) if m.get("detail").is_some_and(Value::is_string) => {
            (m["detail"].as_str().unwrap_or_default().to_string(), None)
        }
        _ => (body_text(body), None),
    };
    let request_id = request_id(headers).or_else(|| {
        parsed
            .as_ref()
            .and_then(|v| v.get("request_id"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    });
    let mut message = format!("{provider} answered {status}: {msg}");
    if let Some(id) = &request_id {
        message.push_str(&format!(" (request id {id})"));
    }
    AgentError {
        code: "agent.http_status".into(),
        message,
        retryable: should_retry_answer(status, headers, body),
        status: Some(status),
        provider_code: code,
        request_id,
    }
}

/// The provider's request id: OpenAI's `x-request-id` or Anthropic's `request-id`.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    ["x-request-id", "request-id"]
        .iter()
        .filter_map(|h| headers.get(*h)?.to_str().ok())
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_string)
}

/// Whether a non-2xx answer is worth another attempt: the SDK policy ([`should_retry`]),
/// except that a 429 saying the quota or spend cap is exhausted is final (§3.2, §4.6): the
/// limit does not lift within a retry's wait. An `x-should-retry` header still decides.
pub(crate) fn should_retry_answer(status: u16, headers: &HeaderMap, body: &[u8]) -> bool {
    if status == 429 && !headers.contains_key("x-should-retry") && quota_exhausted(body) {
        return false;
    }
    should_retry(status, headers)
}

fn quota_exhausted(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let e = &v["error"];
    let is = |v: &Value, s: &str| v.as_str() == Some(s);
    is(&e["code"], "insufficient_quota")
        || is(&e["type"], "insufficient_quota")
        || is(&e["details"]["error_code"], "enforced_spend_limit_reached")
}

/// One line of text from a non-JSON body: an HTML page's `<title>` (or its text without
/// tags), whitespace collapsed, at most [`MAX_TEXT`] characters.
fn body_text(body: &[u8]) -> String {
    let raw = String::from_utf8_lossy(body);
    let lower = raw.to_ascii_lowercase();
    let html = lower.trim_start().starts_with('<');
    let text: String = match (lower.find("<title>"), lower.find("</title>")) {
        (Some(a), Some(b)) if html && a + 7 <= b => raw[a + 7..b].to_string(),
        _ if html => strip_tags(&raw),
        _ => raw.into_owned(),
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return "no body".into();
    }
    let mut out: String = text.chars().take(MAX_TEXT).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn codes_prefer_the_most_specific() {
        let p = |v: Value| error_parts(&v);
        assert_eq!(
            p(
                json!({"message": "m", "type": "invalid_request_error", "param": null, "code": null})
            ),
            ("m".into(), Some("invalid_request_error".into()))
        );
        assert_eq!(
            p(json!({"message": "m", "type": "tokens", "code": "rate_limit_exceeded"})),
            ("m".into(), Some("rate_limit_exceeded".into()))
        );
        assert_eq!(
            p(json!({"message": "m", "type": "BadRequestError", "code": 400})),
            ("m".into(), Some("BadRequestError".into()))
        );
        assert_eq!(
            p(json!({"message": "m", "code": 500})),
            ("m".into(), Some("500".into()))
        );
        assert_eq!(
            p(json!({"type": "rate_limit_error", "message": "m",
                     "details": {"error_code": "enforced_spend_limit_reached"}})),
            ("m".into(), Some("enforced_spend_limit_reached".into()))
        );
        assert_eq!(p(json!("Unauthorized")), ("Unauthorized".into(), None));
        assert_eq!(p(json!({})), ("error".into(), None));
        assert_eq!(p(json!({"message": ["a"]})), (r#"["a"]"#.into(), None));
        assert_eq!(p(json!(42)), ("42".into(), None));
    }

    #[test]
    fn bodies_of_every_shape() {
        let e = status_error(
            "x",
            500,
            &HeaderMap::new(),
            br#"{"error": null, "detail": "boom"}"#,
        );
        assert_eq!(e.message, "x answered 500: boom");
        let e = status_error("x", 500, &HeaderMap::new(), b"\xff\xfe not utf-8");
        assert!(e.message.starts_with("x answered 500: "), "{e}");
        let long = "a".repeat(1000);
        let e = status_error("x", 500, &HeaderMap::new(), long.as_bytes());
        assert_eq!(
            e.message.chars().count(),
            "x answered 500: ".len() + MAX_TEXT + 1
        );
        let e = status_error(
            "x",
            503,
            &HeaderMap::new(),
            b"<!DOCTYPE html><html><body><h1>Service\n Unavailable</h1><p>later</p></body></html>",
        );
        assert_eq!(e.message, "x answered 503: Service Unavailable later");
        assert!(e.retryable);
        let e = status_error("x", 500, &HeaderMap::new(), b"<title>");
        assert_eq!(e.message, "x answered 500: no body");
    }

    #[test]
    fn request_ids() {
        assert_eq!(
            request_id(&h(&[("x-request-id", "req_1")])).as_deref(),
            Some("req_1")
        );
        assert_eq!(
            request_id(&h(&[("request-id", "req_2")])).as_deref(),
            Some("req_2")
        );
        assert_eq!(request_id(&h(&[("x-request-id", " ")])), None);
        let e = status_error(
            "anthropic",
            529,
            &HeaderMap::new(),
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_b"}"#,
        );
        assert_eq!(e.request_id.as_deref(), Some("req_b"));
        assert_eq!(
            e.message,
            "anthropic answered 529: Overloaded (request id req_b)"
        );
        assert!(e.retryable);
    }

    #[test]
    fn exhausted_quota_is_final_unless_the_server_says_otherwise() {
        let quota = br#"{"error":{"message":"q","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert!(!should_retry_answer(429, &HeaderMap::new(), quota));
        assert!(should_retry_answer(
            429,
            &h(&[("x-should-retry", "true")]),
            quota
        ));
        assert!(should_retry_answer(429, &HeaderMap::new(), b"{}"));
        assert!(should_retry_answer(429, &HeaderMap::new(), b"<html>"));
        assert!(should_retry_answer(503, &HeaderMap::new(), quota));
    }
}
