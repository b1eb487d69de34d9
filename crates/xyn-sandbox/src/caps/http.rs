//! Outbound HTTP. The host allowlist is matched on whole labels, checked for the first URL
//! and again for every redirect (redirects are followed here, one hop at a time, never by
//! the client), and checked **after DNS resolution**: a name that resolves to a loopback,
//! private, link-local, CGNAT or metadata address is refused unless the manifest names that
//! destination explicitly (an IP literal, or `localhost`). No proxy settings from the
//! environment are honoured.
//!
//! The requests themselves are made by the node process ([`HttpExecutor`]), never by the
//! sealed worker: the worker forwards each call over its pipe, so it needs no socket at
//! all. In-process use (tests, benchmarks) goes through [`DirectHttp`], the same executor.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Serialize};

use crate::manifest::{HostPattern, HostRule};

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
}

impl HttpPolicy {
    pub fn rules(&self) -> Vec<HostRule> {
        self.hosts
            .iter()
            .filter_map(|h| HostRule::parse(h).ok())
            .collect()
    }

    /// Checks a URL against the allowlist: `Err((target, reason))` when refused.
    pub fn check_url(&self, url: &str) -> Result<Url, (String, String)> {
        let u = Url::parse(url).map_err(|e| (url.to_string(), format!("not a URL ({e})")))?;
        check_parsed(&self.rules(), &u)?;
        Ok(u)
    }
}

fn target_of(u: &Url) -> String {
    format!(
        "{}:{}",
        u.host_str().unwrap_or(""),
        u.port_or_known_default().unwrap_or(0)
    )
}

fn check_parsed(rules: &[HostRule], u: &Url) -> Result<(), (String, String)> {
    let scheme = u.scheme();
    if scheme != "http" && scheme != "https" {
        return Err((u.to_string(), format!("scheme {scheme} is not allowed")));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err((target_of(u), "credentials in URLs are not allowed".into()));
    }
    let Some(host) = u.host_str() else {
        return Err((u.to_string(), "no host".into()));
    };
    let default = if scheme == "https" { 443 } else { 80 };
    let port = u.port_or_known_default().unwrap_or(default);
    let is_ip = matches!(
        u.host(),
        Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_))
    );
    let ok = rules.iter().any(|r| {
        // A suffix pattern never matches an IP literal.
        !(is_ip && matches!(r.host, HostPattern::Suffix(_))) && r.matches(host, port, default)
    });
    if ok {
        Ok(())
    } else {
        Err((target_of(u), "host not in the http_hosts allowlist".into()))
    }
}

/// Whether an address is one a guest may reach without naming it explicitly.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 among them)
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64
                || (s[0] == 0x2001 && s[1] == 0xdb8)) // documentation
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata 169.254.169.254 among them
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10 (Alibaba metadata)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240)
}

/// Error raised by the resolver when every address of a name is refused.
#[derive(Debug)]
struct RefusedAddress {
    host: String,
    addr: IpAddr,
}

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} resolves to a non-public address {}",
            self.host, self.addr
        )
    }
}

impl std::error::Error for RefusedAddress {}

/// Resolves names, then drops addresses the policy does not allow.
struct PolicyResolver {
    rules: Vec<HostRule>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        // A destination named explicitly (`localhost`) may resolve to a private address.
        let explicit = self
            .rules
            .iter()
            .any(|r| r.names_private() && matches!(&r.host, HostPattern::Name(n) if *n == host));
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refused = None;
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| {
                    let allowed = explicit || is_public(a.ip());
                    if !allowed && first_refused.is_none() {
                        first_refused = Some(a.ip());
                    }
                    allowed
                })
                .collect();
            if ok.is_empty() {
                let addr = first_refused.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                return Err(Box::new(RefusedAddress { host, addr }) as _);
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

fn refused_in_chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a RefusedAddress> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<RefusedAddress>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// Makes the requests, in the node process. One client per policy (its resolver knows the
/// policy), kept for connection reuse.
#[derive(Default)]
pub struct HttpExecutor {
    clients: Mutex<HashMap<Vec<String>, reqwest::Client>>,
}

impl HttpExecutor {
    fn client(&self, policy: &HttpPolicy) -> Result<reqwest::Client, HttpFailure> {
        let mut map = self
            .clients
            .lock()
            .map_err(|_| HttpFailure::Failed("client cache poisoned".into()))?;
        if let Some(c) = map.get(&policy.hosts) {
            return Ok(c.clone());
        }
        xyn_actions::install_crypto_provider();
        let c = reqwest::Client::builder()
            .user_agent(concat!("xyn-sandbox/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .dns_resolver(PolicyResolver {
                rules: policy.rules(),
            })
            .build()
            .map_err(|e| HttpFailure::Failed(format!("cannot build the HTTP client: {e}")))?;
        if map.len() > 256 {
            map.clear();
        }
        map.insert(policy.hosts.clone(), c.clone());
        Ok(c)
    }

    /// Performs the request, following redirects that stay inside the allowlist.
    pub async fn execute(
        &self,
        policy: &HttpPolicy,
        req: HttpRequest,
    ) -> Result<HttpResponse, HttpFailure> {
        let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(30_000));
        match tokio::time::timeout(timeout, self.execute_inner(policy, req)).await {
            Ok(r) => r,
            Err(_) => Err(HttpFailure::Failed(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    async fn execute_inner(
        &self,
        policy: &HttpPolicy,
        req: HttpRequest,
    ) -> Result<HttpResponse, HttpFailure> {
        let rules = policy.rules();
        let client = self.client(policy)?;
        let mut url =
            Url::parse(&req.url).map_err(|e| HttpFailure::Failed(format!("not a URL: {e}")))?;
        let mut method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| HttpFailure::Failed(format!("bad method {:?}", req.method)))?;
        let mut body = req.body.clone();
        for hop in 0..=MAX_REDIRECTS {
            check_parsed(&rules, &url)
                .map_err(|(target, reason)| HttpFailure::Denied { target, reason })?;
            let mut rb = client.request(method.clone(), url.clone());
            for (k, v) in &req.headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            let resp = rb.send().await.map_err(|e| match refused_in_chain(&e) {
                Some(r) => HttpFailure::Denied {
                    target: format!("{}:{}", r.host, url.port_or_known_default().unwrap_or(0)),
                    reason: format!("resolves to non-public address {}", r.addr),
                },
                None => HttpFailure::Failed(e.to_string()),
            })?;
            let status = resp.status();
            if status.is_redirection()
                && let Some(loc) = resp.headers().get(reqwest::header::LOCATION)
            {
                if hop == MAX_REDIRECTS {
                    return Err(HttpFailure::Failed("too many redirects".into()));
                }
                let loc = loc
                    .to_str()
                    .map_err(|_| HttpFailure::Failed("bad Location header".into()))?;
                let next = url
                    .join(loc)
                    .map_err(|e| HttpFailure::Failed(format!("bad Location: {e}")))?;
                if let Err((target, reason)) = check_parsed(&rules, &next) {
                    return Err(HttpFailure::Denied {
                        target,
                        reason: format!("redirect: {reason}"),
                    });
                }
                if matches!(status.as_u16(), 301..=303) && method != reqwest::Method::HEAD {
                    method = reqwest::Method::GET;
                    body = None;
                }
                url = next;
                continue;
            }
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
            let mut resp = resp;
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
            return Ok(HttpResponse {
                status: status.as_u16(),
                headers,
                body: String::from_utf8_lossy(&buf).into_owned(),
            });
        }
        Err(HttpFailure::Failed("too many redirects".into()))
    }
}

/// The port through which the capability layer makes HTTP requests.
pub trait HttpBackend: Send + Sync {
    fn request(&self, policy: &HttpPolicy, req: HttpRequest) -> Result<HttpResponse, HttpFailure>;
}

/// In-process HTTP (tests, benchmarks): the executor on its own small runtime.
pub struct DirectHttp {
    exec: Arc<HttpExecutor>,
    rt: tokio::runtime::Runtime,
}

impl DirectHttp {
    pub fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        Ok(Self {
            exec: Arc::new(HttpExecutor::default()),
            rt,
        })
    }
}

impl HttpBackend for DirectHttp {
    fn request(&self, policy: &HttpPolicy, req: HttpRequest) -> Result<HttpResponse, HttpFailure> {
        let exec = self.exec.clone();
        let policy = policy.clone();
        self.rt
            .block_on(async move { exec.execute(&policy, req).await })
    }
}

/// A backend that refuses every request (actions without `http_hosts`, or no network).
pub struct NoHttp;

impl HttpBackend for NoHttp {
    fn request(&self, _: &HttpPolicy, req: HttpRequest) -> Result<HttpResponse, HttpFailure> {
        Err(HttpFailure::Denied {
            target: req.url,
            reason: "no network in this sandbox".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "1.1.1.1",
        ] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn urls_checked_against_rules() {
        let p = HttpPolicy {
            action: "a.b".into(),
            hosts: vec!["example.com".into(), "*.0.1".into(), "127.0.0.1:9".into()],
        };
        assert!(p.check_url("https://example.com/x").is_ok());
        assert!(p.check_url("https://evil-example.com/x").is_err());
        assert!(p.check_url("ftp://example.com/x").is_err());
        assert!(p.check_url("https://user:pw@example.com/").is_err());
        assert!(p.check_url("http://127.0.0.1:9/").is_ok());
        assert!(
            p.check_url("http://127.0.0.1:10/").is_err(),
            "suffix never matches an IP"
        );
    }
}
