//! The replay provider: answers from recorded exchanges (a cassette), so tests and the
//! offline demo run without network or keys.
//!
//! A cassette is JSON Lines (or one JSON array) of entries:
//!
//! ```json
//! {"provider": "openai", "model": "gpt-5", "match": {"prompt_contains": "disk"},
//!  "response": {"status": 200, "headers": {"x-request-id": "req_1"}, "body": { …Chat Completions body… }}}
//! ```
//!
//! `provider` is the wire format of the recording (`openai`, `openai_compatible` or
//! `anthropic`); `model` may be `*`. The first entry whose provider, model and optional
//! `prompt_contains` match answers. Its `body` is parsed by the same code that parses live
//! responses, and a non-2xx `status` produces the same error a live call would (headers such
//! as `x-should-retry` and `x-request-id` included). A string `body` is the raw text of the
//! answer, for non-JSON bodies such as a proxy's HTML error page.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use crate::openai::MaxTokensField;
use crate::{AgentError, ChatRequest, ChatResponse, Provider, anthropic, errors, openai};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub provider: String,
    #[serde(default = "any_model")]
    pub model: String,
    #[serde(default, rename = "match")]
    pub matcher: Option<Matcher>,
    /// The request as recorded (informational; matching uses `match`).
    #[serde(default)]
    pub request: Option<Value>,
    pub response: Recorded,
}

fn any_model() -> String {
    "*".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub prompt_contains: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    pub body: Value,
}

fn ok_status() -> u16 {
    200
}

impl Recorded {
    /// The recorded headers as HTTP headers (names case-insensitive); invalid ones are skipped.
    fn header_map(&self) -> HeaderMap {
        self.headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                    HeaderValue::from_str(v.trim()).ok()?,
                ))
            })
            .collect()
    }
}

/// The replay provider.
pub struct Replay {
    source: String,
    entries: Vec<Entry>,
    /// Cassettes named by steps (`options.cassette`), loaded once.
    by_path: Mutex<HashMap<PathBuf, Arc<Vec<Entry>>>>,
}

impl Replay {
    /// A replay provider with no default cassette (steps name theirs in `options.cassette`).
    pub fn empty() -> Self {
        Self {
            source: "(none)".into(),
            entries: vec![],
            by_path: Mutex::new(HashMap::new()),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, AgentError> {
        Ok(Self {
            source: path.display().to_string(),
            entries: load(path)?,
            by_path: Mutex::new(HashMap::new()),
        })
    }

    pub fn from_entries(source: &str, entries: Vec<Entry>) -> Self {
        Self {
            source: source.into(),
            entries,
            by_path: Mutex::new(HashMap::new()),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn entries_for(&self, req: &ChatRequest) -> Result<Arc<Vec<Entry>>, AgentError> {
        let Some(p) = req.options.get("cassette").and_then(Value::as_str) else {
            return Ok(Arc::new(self.entries.clone()));
        };
        let path = PathBuf::from(p);
        let mut cache = self
            .by_path
            .lock()
            .map_err(|_| AgentError::new("agent.replay", "cassette cache poisoned", false))?;
        if let Some(e) = cache.get(&path) {
            return Ok(e.clone());
        }
        let e = Arc::new(load(&path)?);
        cache.insert(path, e.clone());
        Ok(e)
    }
}

/// Parses a cassette file.
pub fn load(path: &Path) -> Result<Vec<Entry>, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AgentError::new(
            "agent.replay",
            format!("cannot read cassette {}: {e}", path.display()),
            false,
        )
    })?;
    parse(&text).map_err(|m| {
        AgentError::new(
            "agent.replay",
            format!("cassette {}: {m}", path.display()),
            false,
        )
    })
}

/// Parses cassette text (JSON Lines or one JSON array).
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let t = text.trim_start();
    if t.starts_with('[') {
        return serde_json::from_str(t).map_err(|e| e.to_string());
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

fn stands_for(entry_provider: &str, wanted: &str) -> bool {
    entry_provider == wanted
        || (wanted == "replay")
        || (entry_provider == "openai" && wanted == "openai_compatible")
        || (entry_provider == "openai_compatible" && wanted == "openai")
}

#[async_trait]
impl Provider for Replay {
    fn name(&self) -> &str {
        "replay"
    }

    async fn complete(
        &self,
        req: &ChatRequest,
        _timeout: Duration,
    ) -> Result<ChatResponse, AgentError> {
        let entries = self.entries_for(req)?;
        let entry = entries
            .iter()
            .find(|e| {
                stands_for(&e.provider, &req.provider)
                    && (e.model == "*" || e.model == req.model)
                    && e.matcher
                        .as_ref()
                        .and_then(|m| m.prompt_contains.as_ref())
                        .is_none_or(|needle| req.prompt.contains(needle.as_str()))
            })
            .ok_or_else(|| {
                AgentError::new(
                    "agent.no_recording",
                    format!(
                        "the cassette {} has no recording for provider {} model {}",
                        self.source, req.provider, req.model
                    ),
                    false,
                )
            })?;
        let wire_request = match entry.provider.as_str() {
            "anthropic" => anthropic::request_body(req),
            "openai_compatible" => openai::request_body_with(req, MaxTokensField::MaxTokens),
            _ => openai::request_body(req),
        };
        let r = &entry.response;
        let headers = r.header_map();
        // A string body is the raw text on the wire (an HTML error page, a broken answer).
        let raw = match &r.body {
            Value::String(s) => s.as_bytes().to_vec(),
            v => serde_json::to_vec(v).unwrap_or_default(),
        };
        if !(200..300).contains(&r.status) {
            return Err(errors::status_error(
                &entry.provider,
                r.status,
                &headers,
                &raw,
            ));
        }
        let body: Value = match &r.body {
            Value::String(s) => serde_json::from_str(s).map_err(|e| {
                AgentError::new(
                    "agent.protocol",
                    format!("{}: the response is not JSON: {e}", entry.provider),
                    false,
                )
            })?,
            v => v.clone(),
        };
        let (text, model, finish, usage) = match entry.provider.as_str() {
            "anthropic" => anthropic::parse_response(&body)?,
            _ => openai::parse_response(&entry.provider, &body)?,
        };
        Ok(ChatResponse {
            provider: "replay".into(),
            model: if model.is_empty() {
                req.model.clone()
            } else {
                model
            },
            text,
            finish,
            usage,
            request_id: errors::request_id(&headers),
            wire_request,
            wire_response: body,
            requests: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_headers_are_case_insensitive() {
        let r = Recorded {
            status: 429,
            headers: HashMap::from([
                ("X-Request-Id".to_string(), " req_1 ".to_string()),
                ("Retry-After".to_string(), "2".to_string()),
                ("bad header".to_string(), "x".to_string()),
                ("x-bad-value".to_string(), "a\nb".to_string()),
            ]),
            body: Value::Null,
        };
        let h = r.header_map();
        assert_eq!(h.len(), 2);
        assert_eq!(errors::request_id(&h).as_deref(), Some("req_1"));
        assert_eq!(
            h.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("2")
        );
    }

    #[test]
    fn providers_stand_for_each_other() {
        assert!(stands_for("openai", "openai_compatible"));
        assert!(stands_for("openai_compatible", "openai"));
        assert!(stands_for("anthropic", "replay"));
        assert!(!stands_for("anthropic", "openai"));
        assert!(!stands_for("openai", "anthropic"));
    }
}
