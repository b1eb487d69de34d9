//! A small client for the node's API, turning the standard error body into a readable error.

use std::fmt;

use anyhow::Result;
use serde_json::Value;

pub struct Client {
    base: String,
    http: reqwest::Client,
    actor: String,
    token: Option<String>,
    correlation_id: Option<String>,
}

/// An error answered by the node, in the standard shape.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub details: Value,
    /// What to do about it, when the CLI knows (a missing or refused token).
    pub hint: Option<String>,
}

/// The hint for a 401 or 403: which token to set, depending on whether one was sent.
fn auth_hint(status: u16, token_sent: bool) -> Option<String> {
    match (status, token_sent) {
        (401, false) => Some(
            "this node has auth on: set XYN_API_TOKEN or pass --token with one of its tokens"
                .into(),
        ),
        (401, true) => Some(
            "the node refused the token: check XYN_API_TOKEN or --token (a token from its \
             tokens file, or the node's own XYN_API_TOKEN)"
                .into(),
        ),
        (403, _) => Some(
            "the token's role may not do this: use an owner token in XYN_API_TOKEN or --token"
                .into(),
        ),
        _ => None,
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)?;
        if let Some(issues) = self.details.get("issues").and_then(Value::as_array) {
            for i in issues {
                write!(
                    f,
                    "\n  {}  {}  {}",
                    i.get("path").and_then(Value::as_str).unwrap_or(""),
                    i.get("code").and_then(Value::as_str).unwrap_or(""),
                    i.get("message").and_then(Value::as_str).unwrap_or("")
                )?;
            }
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    pub fn new(
        base: &str,
        token: Option<String>,
        actor: String,
        correlation_id: Option<String>,
    ) -> Self {
        xyn_actions::install_crypto_provider();
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            actor,
            token: token.filter(|t| !t.trim().is_empty()),
            correlation_id,
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(m, format!("{}{path}", self.base))
            .header("X-Actor", &self.actor);
        if let Some(c) = &self.correlation_id {
            r = r.header("X-Correlation-Id", c);
        }
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let path_q = self.with_query(path, query)?;
        self.send(self.req(reqwest::Method::GET, &path_q)).await
    }

    /// `path?query`, the query encoded.
    fn with_query(&self, path: &str, query: &[(&str, String)]) -> Result<String> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))?;
        {
            let mut qp = url.query_pairs_mut();
            for (k, v) in query {
                qp.append_pair(k, v);
            }
        }
        Ok(format!(
            "{}{}",
            url.path(),
            url.query().map(|q| format!("?{q}")).unwrap_or_default()
        ))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.req(reqwest::Method::POST, path).json(body))
            .await
    }

    /// Opens a Server-Sent Events stream (`GET path?query`); yields each event's `data` as
    /// JSON. The stream ends when the node closes it.
    pub async fn stream(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<impl futures_util::Stream<Item = Result<Value>> + Unpin + use<>> {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let resp = self
            .req(reqwest::Method::GET, &self.with_query(path, query)?)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(self.failure(status, &bytes).into());
        }
        // The body as a stream of chunks (reqwest's `bytes_stream` needs a feature the rest of
        // the workspace does not use; `chunk` is the same read).
        let body = futures_util::stream::unfold(resp, |mut r| async move {
            match r.chunk().await {
                Ok(Some(b)) => Some((Ok::<_, reqwest::Error>(b), r)),
                Ok(None) => None,
                Err(e) => Some((Err(e), r)),
            }
        });
        Ok(Box::pin(body.eventsource().map(|e| {
            let e = e.map_err(|e| anyhow::anyhow!("the event stream broke: {e}"))?;
            Ok(serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)))
        })))
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the node at {}: {e}\n  (is `xyn serve` running? set --url or XYN_URL)",
            self.base
        )
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<Value> {
        let resp = r.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        if (200..300).contains(&status) {
            return Ok(serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())));
        }
        Err(self.failure(status, &bytes).into())
    }

    /// The API's error shape (or the raw body) as a failure with a hint for 401/403.
    fn failure(&self, status: u16, bytes: &[u8]) -> ApiFailure {
        let v: Value = serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
        let e = v.get("error").cloned().unwrap_or(Value::Null);
        ApiFailure {
            status,
            code: e
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or("http")
                .to_string(),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
            details: e.get("details").cloned().unwrap_or(Value::Null),
            hint: auth_hint(status, self.token.is_some()),
        }
    }
}
