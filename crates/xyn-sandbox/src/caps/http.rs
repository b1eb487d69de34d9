//! Outbound HTTP of guests. The destination policy is the node's one
//! ([`xyn_actions::net`]): the host allowlist on whole labels, checked for the first URL and
//! again for every redirect (followed one hop at a time, never by the client), and
//! **after DNS resolution** (a name that resolves to a loopback, private, link-local, CGNAT
//! or metadata address, in any IPv6 spelling, is refused unless the manifest names that
//! destination explicitly: an IP literal, or `localhost`). The node's own listeners are
//! refused unless the manifest names them and the operator allows it
//! (`[sandbox] allow_node_api`). Framing and hop-by-hop headers are the client's; a
//! redirect to another origin drops credentials and secret-bearing headers; a secret is
//! sent only to the hosts the manifest binds it to, and its value is scrubbed from every
//! response before the guest sees it. No proxy settings from the environment are honoured.
//!
//! The requests themselves are made by the node process ([`HttpExecutor`]), never by the
//! sealed worker: the worker forwards each call over its pipe, so it needs no socket at
//! all. In-process use (tests, benchmarks) goes through [`DirectHttp`], the same executor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use xyn_actions::net::{Destinations, Egress, EgressError, HostRule, OutRequest, SecretBinding};
use xyn_core::redact::redact_str;

/// Most redirects followed.
const MAX_REDIRECTS: usize = 5;
/// Largest response body returned to a guest.
pub const MAX_BODY: usize = 8 << 20;

/// What a guest asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    #[serde(default = "get")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn get() -> String {
    "GET".into()
}

/// What the guest gets back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HttpFailure {
    Denied { target: String, reason: String },
    Failed(String),
}

/// The part of a manifest HTTP needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpPolicy {
    pub action: String,
    pub hosts: Vec<String>,
    /// The hosts each secret may be sent to (`[capabilities.secrets.NAME] hosts`).
    #[serde(default)]
    pub secret_hosts: BTreeMap<String, Vec<String>>,
}

impl HttpPolicy {
    /// The policy of an action's capabilities.
    pub fn of(action: &str, caps: &crate::manifest::Capabilities) -> Self {
        Self {
            action: action.to_string(),
            hosts: caps.http_hosts.clone(),
            secret_hosts: caps
                .secrets
                .iter()
                .map(|(n, g)| (n.clone(), g.hosts.clone()))
                .collect(),
        }
    }

    pub fn rules(&self) -> Vec<HostRule> {
        self.hosts
            .iter()
            .filter_map(|h| HostRule::parse(h).ok())
            .collect()
    }

    /// Checks a URL against the allowlist (the node checks again, with its listeners):
    /// `Err((target, reason))` when refused.
    pub fn check_url(&self, url: &str) -> Result<Url, (String, String)> {
        let u = Url::parse(url).map_err(|e| (url.to_string(), format!("not a URL ({e})")))?;
        Egress::default().check_url(&self.destinations(false), &u)?;
        Ok(u)
    }

    fn destinations(&self, allow_node: bool) -> Destinations {
        Destinations {
            rules: self.rules(),
            any_public: false,
            allow_node,
            list_name: "http_hosts",
        }
    }

    fn bindings(&self, secrets: &BTreeMap<String, String>) -> Vec<SecretBinding> {
        secrets
            .iter()
            .map(|(name, value)| SecretBinding {
                name: name.clone(),
                value: value.clone(),
                hosts: self
                    .secret_hosts
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter_map(|h| HostRule::parse(h).ok())
                    .collect(),
            })
            .collect()
    }
}

/// Makes the requests, in the node process, through the node's [`Egress`].
#[derive(Default)]
pub struct HttpExecutor {
    egress: Arc<Egress>,
    /// The operator lets guests reach the node's own listeners (when a manifest names
    /// them): `[sandbox] allow_node_api`.
    allow_node: bool,
}

impl HttpExecutor {
    pub fn new(egress: Arc<Egress>, allow_node: bool) -> Self {
        Self { egress, allow_node }
    }

    /// Checks a URL against the policy before anything is sent.
    pub fn check_url(&self, policy: &HttpPolicy, url: &str) -> Result<Url, (String, String)> {
        let u = Url::parse(url).map_err(|e| (url.to_string(), format!("not a URL ({e})")))?;
        self.egress
            .check_url(&policy.destinations(self.allow_node), &u)?;
        Ok(u)
    }

    /// Performs the request, following redirects that stay inside the allowlist. `secrets`
    /// are the values the invocation may use (name → value): each is sent only to its
    /// hosts and scrubbed from the response.
    pub async fn execute(
        &self,
        policy: &HttpPolicy,
        req: HttpRequest,
        secrets: &BTreeMap<String, String>,
    ) -> Result<HttpResponse, HttpFailure> {
        let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(30_000));
        let values: Vec<String> = secrets.values().cloned().collect();
        let res =
            match tokio::time::timeout(timeout, self.execute_inner(policy, req, secrets)).await {
                Ok(r) => r,
                Err(_) => Err(HttpFailure::Failed(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            };
        // Nothing that holds a secret value reaches the guest: not a response header or
        // body (an echoing server), not an error message.
        match res {
            Ok(mut r) => {
                for v in r.headers.values_mut() {
                    if let Some(s) = redact_str(v, &values) {
                        *v = s;
                    }
                }
                if let Some(s) = redact_str(&r.body, &values) {
                    r.body = s;
                }
                Ok(r)
            }
            Err(HttpFailure::Failed(m)) => {
                Err(HttpFailure::Failed(redact_str(&m, &values).unwrap_or(m)))
            }
            Err(d) => Err(d),
        }
    }

    async fn execute_inner(
        &self,
        policy: &HttpPolicy,
        req: HttpRequest,
        secrets: &BTreeMap<String, String>,
    ) -> Result<HttpResponse, HttpFailure> {
        let url =
            Url::parse(&req.url).map_err(|e| HttpFailure::Failed(format!("not a URL: {e}")))?;
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| HttpFailure::Failed(format!("bad method {:?}", req.method)))?;
        let out = OutRequest {
            method,
            url,
            headers: req.headers.into_iter().collect(),
            body: req.body.map(String::into_bytes),
            secrets: policy.bindings(secrets),
            max_redirects: MAX_REDIRECTS,
        };
        let resp = self
            .egress
            .send(&policy.destinations(self.allow_node), out)
            .await
            .map_err(|e| match e {
                EgressError::Denied {
                    target,
                    reason,
                    redirect,
                } => HttpFailure::Denied {
                    target,
                    reason: if redirect {
                        format!("redirect: {reason}")
                    } else {
                        reason
                    },
                },
                EgressError::TooManyRedirects => HttpFailure::Failed("too many redirects".into()),
                EgressError::Failed(m) | EgressError::Http(m, _) => HttpFailure::Failed(m),
            })?;
        let mut resp = resp.response;
        let status = resp.status();
        let mut headers = BTreeMap::new();
        for (k, v) in resp.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            headers
                .entry(k.as_str().to_string())
                .and_modify(|e: &mut String| {
                    e.push_str(", ");
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| HttpFailure::Failed(e.to_string()))?
        {
            if buf.len() + chunk.len() > MAX_BODY {
                return Err(HttpFailure::Failed(format!(
                    "response body larger than {MAX_BODY} bytes"
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status: status.as_u16(),
            headers,
            body: String::from_utf8_lossy(&buf).into_owned(),
        })
    }
}

/// The port through which the capability layer makes HTTP requests.
pub trait HttpBackend: Send + Sync {
    /// `secrets`: the values the invocation may use (the node's executor binds each to its
    /// hosts and scrubs it from the response; a worker's pipe ignores them, the node
    /// holds its own copy).
    fn request(
        &self,
        policy: &HttpPolicy,
        req: HttpRequest,
        secrets: &BTreeMap<String, String>,
    ) -> Result<HttpResponse, HttpFailure>;
}

/// In-process HTTP (tests, benchmarks): the executor on its own small runtime.
pub struct DirectHttp {
    exec: Arc<HttpExecutor>,
    rt: tokio::runtime::Runtime,
}

impl DirectHttp {
    pub fn new() -> std::io::Result<Self> {
        Self::with_executor(HttpExecutor::default())
    }

    /// In-process HTTP through a given executor (its egress knows the node's listeners).
    pub fn with_executor(exec: HttpExecutor) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        Ok(Self {
            exec: Arc::new(exec),
            rt,
        })
    }
}

impl HttpBackend for DirectHttp {
    fn request(
        &self,
        policy: &HttpPolicy,
        req: HttpRequest,
        secrets: &BTreeMap<String, String>,
    ) -> Result<HttpResponse, HttpFailure> {
        let exec = self.exec.clone();
        let policy = policy.clone();
        let secrets = secrets.clone();
        self.rt
            .block_on(async move { exec.execute(&policy, req, &secrets).await })
    }
}

/// A backend that refuses every request (actions without `http_hosts`, or no network).
pub struct NoHttp;

impl HttpBackend for NoHttp {
    fn request(
        &self,
        _: &HttpPolicy,
        req: HttpRequest,
        _: &BTreeMap<String, String>,
    ) -> Result<HttpResponse, HttpFailure> {
        Err(HttpFailure::Denied {
            target: req.url,
            reason: "no network in this sandbox".into(),
        })
    }
}
