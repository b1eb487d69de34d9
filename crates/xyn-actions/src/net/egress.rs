//! The one destination policy for requests the node makes on behalf of someone else: a
//! sandboxed guest (`http.request`) or event data (the built-in `http.call`).
//!
//! - Every URL (the first and each redirect target, followed one hop at a time, never by
//!   the client) is checked against the [`Destinations`]: scheme, no credentials, the
//!   allowlist on whole labels, and for IP literals the address itself.
//! - Names are checked **after DNS resolution** by the client's resolver: an address that
//!   is not public (loopback, private, link-local, CGNAT, metadata, in any IPv6 spelling)
//!   is dropped unless the rule names the destination explicitly (an IP literal, or
//!   `localhost`); if none is left, the request is refused before connecting.
//! - The node's own listeners (every address it serves on; a `0.0.0.0`/`::` listener means
//!   every local address on that port) are refused unless the destination allows the node
//!   **and** a rule names it.
//! - Headers that frame or route the request (`Host`, `Content-Length`, hop-by-hop ones)
//!   are set by the client only; a redirect to another origin drops `Authorization`,
//!   `Cookie`, `Proxy-Authorization` and every header carrying a secret.
//! - A secret is sent only to the hosts it is bound to ([`SecretBinding`]), checked on
//!   every hop by value.
//! - Every request carries [`MARKER_HEADER`] with a per-process value; the node's edge
//!   refuses any API or UI request that carries it, so a request the node makes for
//!   someone else is never taken for the local operator.
//!
//! Denials tell the caller little (the target and a short reason); what a name resolved to
//! is logged for the operator, never returned.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::addr::{V6_UNSPECIFIED, canonical, is_local, is_public};
use super::rules::{HostPattern, HostRule};

/// The header every request made for someone else carries; the edge refuses it.
pub const MARKER_HEADER: &str = "x-xyn-egress";

/// The per-process value of [`MARKER_HEADER`].
pub fn marker() -> &'static str {
    static M: OnceLock<String> = OnceLock::new();
    M.get_or_init(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Request headers only the client sets. A caller's value for one of these is dropped.
pub fn host_only_header(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    matches!(
        n.as_str(),
        "host"
            | "connection"
            | "transfer-encoding"
            | "content-length"
            | "te"
            | "trailer"
            | "upgrade"
            | "keep-alive"
            | "expect"
            | "http2-settings"
            | MARKER_HEADER
    ) || n.starts_with("proxy-")
        || n.starts_with(':')
}

/// Headers dropped on a redirect to another origin (as browsers and curl do).
fn credential_header(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "authorization" | "cookie" | "proxy-authorization"
    )
}

/// Where requests may go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destinations {
    /// Named destinations. A rule naming an IP literal or `localhost` allows that
    /// destination even though it is not public.
    pub rules: Vec<HostRule>,
    /// Any public destination is allowed too (`http.call` without an allowlist).
    pub any_public: bool,
    /// The node's own listeners may be reached when a rule names them (the operator's
    /// choice; off by default).
    pub allow_node: bool,
    /// How the allowlist is called in refusals (`http_hosts`, `[actions.http] allow`).
    pub list_name: &'static str,
}

/// A secret and the hosts it may be sent to, by value.
#[derive(Clone, Debug)]
pub struct SecretBinding {
    pub name: String,
    pub value: String,
    pub hosts: Vec<HostRule>,
}

/// One request, before the policy.
#[derive(Clone, Debug)]
pub struct OutRequest {
    pub method: reqwest::Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Secrets the request may carry (their values are looked for in every hop).
    pub secrets: Vec<SecretBinding>,
    pub max_redirects: usize,
}

/// Why a request was not made or did not complete.
#[derive(Clone, Debug, PartialEq)]
pub enum EgressError {
    /// Refused by the policy: the target (`host:port`) and a short reason.
    Denied {
        target: String,
        reason: String,
        redirect: bool,
    },
    /// Too many redirects.
    TooManyRedirects,
    /// The request failed (connect, TLS, protocol).
    Failed(String),
    /// The request failed for a reason reqwest reports (kept for classification).
    Http(String, ErrorKind),
}

/// Classes of transport failures callers map to their own codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Timeout,
    Connect,
    Other,
}

/// The answer: the final response and its URL.
pub struct OutResponse {
    pub response: reqwest::Response,
    pub url: Url,
}

/// The node's egress: its listen addresses and one client per destination set.
#[derive(Default)]
pub struct Egress {
    listeners: Arc<RwLock<Vec<SocketAddr>>>,
    clients: Mutex<HashMap<Destinations, reqwest::Client>>,
}

/// A bare host as the node will connect to it: an IP address in any spelling the system
/// resolver would also accept (`2130706433`, `0x7f.0.0.1`, `127.1`, `::ffff:127.0.0.1`,
/// with or without brackets) becomes that address; a name is checked and lower-cased.
pub fn parse_host(host: &str) -> Result<url::Host<String>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(v4) => url::Host::Ipv4(v4),
            IpAddr::V6(v6) => url::Host::Ipv6(v6),
        });
    }
    if host.is_empty() || host.len() > 253 || host.starts_with('-') || host.contains('%') {
        return Err(format!("{host:?} is not a host name or address"));
    }
    match url::Host::parse(host) {
        Ok(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_string();
            let ok = !d.is_empty()
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if ok {
                Ok(url::Host::Domain(d))
            } else {
                Err(format!("{host:?} is not a host name or address"))
            }
        }
        Ok(other) => Ok(other),
        Err(_) => Err(format!("{host:?} is not a host name or address")),
    }
}

fn target_of(u: &Url) -> String {
    match u.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]:{}", u.port_or_known_default().unwrap_or(0)),
        _ => format!(
            "{}:{}",
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
    }
}

fn own_listener(listeners: &[SocketAddr], ip: IpAddr, port: Option<u16>) -> bool {
    let ip = canonical(ip);
    listeners.iter().any(|l| {
        let lip = canonical(l.ip());
        port.is_none_or(|p| p == l.port())
            && (lip == ip
                || ip.is_unspecified()
                || (lip.is_unspecified() && is_local(ip))
                || (lip.is_loopback() && ip.is_loopback() && lip.is_ipv4() == ip.is_ipv4()))
    })
}

impl Egress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the addresses the node serves on (after binding, so port 0 is resolved).
    pub fn set_listeners(&self, addrs: Vec<SocketAddr>) {
        if let Ok(mut l) = self.listeners.write() {
            *l = addrs;
        }
    }

    pub fn listeners(&self) -> Vec<SocketAddr> {
        self.listeners.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether `ip:port` is one of the node's own listeners (`port` `None`: any port).
    pub fn is_own(&self, ip: IpAddr, port: Option<u16>) -> bool {
        own_listener(&self.listeners(), ip, port)
    }

    /// Checks one URL against the policy (before any connection; names are checked again
    /// after resolution).
    pub fn check_url(&self, dest: &Destinations, u: &Url) -> Result<(), (String, String)> {
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
        let ip = match u.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        self.check_target(dest, host, ip, port, default)
            .map_err(|reason| (target_of(u), reason))
    }

    /// Checks a bare host (a name or an IP address in any spelling: `2130706433`,
    /// `0x7f.1` and `::ffff:127.0.0.1` are the addresses they stand for) and a port against
    /// the policy, before any connection (`default_port`: what a rule without a port
    /// means). Answers the host as parsed; names are checked again by
    /// [`Egress::resolve_checked`].
    pub fn check_host(
        &self,
        dest: &Destinations,
        host: &str,
        port: u16,
        default_port: u16,
    ) -> Result<url::Host<String>, (String, String)> {
        let parsed = parse_host(host).map_err(|reason| (format!("{host}:{port}"), reason))?;
        let (text, ip) = match &parsed {
            url::Host::Domain(d) => (d.clone(), None),
            url::Host::Ipv4(v4) => (v4.to_string(), Some(IpAddr::V4(*v4))),
            url::Host::Ipv6(v6) => (format!("[{v6}]"), Some(IpAddr::V6(*v6))),
        };
        self.check_target(dest, &text, ip, port, default_port)
            .map_err(|reason| (format!("{text}:{port}"), reason))?;
        Ok(parsed)
    }

    /// The addresses to connect to for a host [`Egress::check_host`] allowed: an IP
    /// literal as it is; a name resolved once, then every address the policy does not
    /// allow dropped (not public, unless a rule names the destination: `localhost`, or —
    /// with `exact_names_private`, as for SSH, where internal hosts are the usual target —
    /// any name listed exactly; never the node's own listeners). The caller connects to
    /// these addresses, never to the name, so no second lookup can answer differently.
    pub async fn resolve_checked(
        &self,
        dest: &Destinations,
        host: &url::Host<String>,
        port: u16,
        default_port: u16,
        exact_names_private: bool,
    ) -> Result<Vec<SocketAddr>, EgressError> {
        let name = match host {
            url::Host::Ipv4(v4) => return Ok(vec![SocketAddr::new(IpAddr::V4(*v4), port)]),
            url::Host::Ipv6(v6) => return Ok(vec![SocketAddr::new(IpAddr::V6(*v6), port)]),
            url::Host::Domain(d) => d.clone(),
        };
        let named = |r: &HostRule| {
            matches!(&r.host, HostPattern::Name(n) if *n == name)
                && r.matches(&name, port, default_port)
        };
        let explicit = dest
            .rules
            .iter()
            .any(|r| named(r) && (exact_names_private || r.names_private()));
        let matched = dest
            .rules
            .iter()
            .any(|r| r.matches(&name, port, default_port));
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|e| {
                EgressError::Http(format!("cannot resolve {name}: {e}"), ErrorKind::Connect)
            })?
            .collect();
        let listeners = self.listeners();
        let mut first_refused = None;
        let ok: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| {
                let own = own_listener(&listeners, a.ip(), Some(port));
                let allowed =
                    (explicit || is_public(a.ip())) && (!own || (dest.allow_node && matched));
                if !allowed && first_refused.is_none() {
                    first_refused = Some(a.ip());
                }
                allowed
            })
            .collect();
        if ok.is_empty() {
            if let Some(addr) = first_refused {
                tracing::warn!(host = %name, address = %addr, port,
                    "egress refused: the name resolves to an address that is not allowed");
            }
            return Err(EgressError::Denied {
                target: format!("{name}:{port}"),
                reason: "the name resolves to an address that is not allowed".into(),
                redirect: false,
            });
        }
        Ok(ok)
    }

    /// The policy for one destination; `host` as in a URL (IPv6 in brackets), `ip` when it
    /// is an address. Answers the reason of a refusal.
    fn check_target(
        &self,
        dest: &Destinations,
        host: &str,
        ip: Option<IpAddr>,
        port: u16,
        default: u16,
    ) -> Result<(), String> {
        let matched = dest.rules.iter().any(|r| {
            // A suffix pattern never matches an IP literal.
            !(ip.is_some() && matches!(r.host, HostPattern::Suffix(_)))
                && r.matches(host, port, default)
        });
        let lname = host.trim_end_matches('.').to_ascii_lowercase();
        let loopback_name = lname == "localhost" || lname.ends_with(".localhost");
        let node = || -> bool {
            match ip {
                Some(ip) => self.is_own(ip, Some(port)),
                None if loopback_name => {
                    self.is_own(IpAddr::V4(Ipv4Addr::LOCALHOST), Some(port))
                        || self.is_own(IpAddr::V6(Ipv6Addr::LOCALHOST), Some(port))
                }
                None => false,
            }
        };
        if node() && !(dest.allow_node && matched) {
            return Err("the node's own address is not reachable".into());
        }
        if matched {
            return Ok(());
        }
        let public_ok = match ip {
            Some(ip) => is_public(ip),
            None => !loopback_name,
        };
        if dest.any_public && public_ok {
            return Ok(());
        }
        if dest.any_public {
            return Err("not a public address".into());
        }
        Err(format!("host not in the {} allowlist", dest.list_name))
    }

    fn client(&self, dest: &Destinations) -> Result<reqwest::Client, EgressError> {
        let mut map = self
            .clients
            .lock()
            .map_err(|_| EgressError::Failed("client cache poisoned".into()))?;
        if let Some(c) = map.get(dest) {
            return Ok(c.clone());
        }
        crate::install_crypto_provider();
        let c = reqwest::Client::builder()
            .user_agent(concat!("xyn/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .dns_resolver(PolicyResolver {
                dest: dest.clone(),
                listeners: self.listeners.clone(),
            })
            .build()
            .map_err(|e| EgressError::Failed(format!("cannot build the HTTP client: {e}")))?;
        if map.len() > 256 {
            map.clear();
        }
        map.insert(dest.clone(), c.clone());
        Ok(c)
    }

    /// Sends the request, following redirects one hop at a time, each checked.
    pub async fn send(
        &self,
        dest: &Destinations,
        req: OutRequest,
    ) -> Result<OutResponse, EgressError> {
        let client = self.client(dest)?;
        let OutRequest {
            mut method,
            mut url,
            headers,
            mut body,
            secrets,
            max_redirects,
        } = req;
        let mut headers: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(k, _)| !host_only_header(k))
            .collect();
        for hop in 0..=max_redirects {
            let redirect = hop > 0;
            self.check_url(dest, &url)
                .map_err(|(target, reason)| EgressError::Denied {
                    target,
                    reason,
                    redirect,
                })?;
            check_secrets(&secrets, &url, &headers, body.as_deref()).map_err(|reason| {
                EgressError::Denied {
                    target: target_of(&url),
                    reason,
                    redirect,
                }
            })?;
            let mut rb = client.request(method.clone(), url.clone());
            for (k, v) in &headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            rb = rb.header(MARKER_HEADER, marker());
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            let resp = rb.send().await.map_err(|e| match refused_in_chain(&e) {
                Some(r) => {
                    tracing::warn!(host = %r.host, address = %r.addr, url = %url,
                        "egress refused: the name resolves to an address that is not allowed");
                    EgressError::Denied {
                        target: target_of(&url),
                        reason: "the name resolves to an address that is not allowed".into(),
                        redirect,
                    }
                }
                None => transport_error(&e),
            })?;
            let status = resp.status();
            let location = resp.headers().get(reqwest::header::LOCATION).cloned();
            let (true, Some(loc)) = (status.is_redirection(), location) else {
                return Ok(OutResponse {
                    response: resp,
                    url,
                });
            };
            if hop == max_redirects {
                return Err(EgressError::TooManyRedirects);
            }
            let loc = loc
                .to_str()
                .map_err(|_| EgressError::Failed("bad Location header".into()))?;
            let next = url
                .join(loc)
                .map_err(|e| EgressError::Failed(format!("bad Location: {e}")))?;
            if next.origin() != url.origin() {
                headers.retain(|(k, v)| {
                    !credential_header(k) && !secrets.iter().any(|s| carries(v, &s.value))
                });
            }
            if matches!(status.as_u16(), 301..=303) && method != reqwest::Method::HEAD {
                method = reqwest::Method::GET;
                body = None;
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
            }
            url = next;
        }
        Err(EgressError::TooManyRedirects)
    }
}

/// Whether `hay` contains the secret `value` (values shorter than 4 bytes are never
/// matched: they would match ordinary text, and redaction ignores them too).
fn carries(hay: &str, value: &str) -> bool {
    value.len() >= 4 && hay.contains(value)
}

fn check_secrets(
    secrets: &[SecretBinding],
    url: &Url,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<(), String> {
    let host = url.host_str().unwrap_or("");
    let default = if url.scheme() == "https" { 443 } else { 80 };
    let port = url.port_or_known_default().unwrap_or(default);
    let body = body.and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
    for s in secrets {
        let present = carries(url.as_str(), &s.value)
            || carries(body, &s.value)
            || headers.iter().any(|(_, v)| carries(v, &s.value));
        if present && !s.hosts.iter().any(|r| r.matches(host, port, default)) {
            return Err(format!("secret {} is not bound to this host", s.name));
        }
    }
    Ok(())
}

fn transport_error(e: &reqwest::Error) -> EgressError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Other
    };
    // reqwest's Display omits the cause; the chain says what went wrong.
    let mut msg = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cur = c.source();
    }
    EgressError::Http(msg, kind)
}

/// Error raised by the resolver when every address of a name is refused.
#[derive(Debug)]
struct RefusedAddress {
    host: String,
    addr: IpAddr,
}

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Said to the operator's log only; callers get a shorter reason.
        write!(
            f,
            "{} resolves to an address that is not allowed",
            self.host
        )
    }
}

impl std::error::Error for RefusedAddress {}

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

/// Resolves names, then drops addresses the policy does not allow.
struct PolicyResolver {
    dest: Destinations,
    listeners: Arc<RwLock<Vec<SocketAddr>>>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        // A destination named explicitly (`localhost`) may resolve to a private address;
        // whether it is the node itself was checked with its port before connecting.
        let explicit =
            self.dest.rules.iter().any(|r| {
                r.names_private() && matches!(&r.host, HostPattern::Name(n) if *n == host)
            });
        let allow_node = self.dest.allow_node;
        let listeners = self.listeners.read().map(|l| l.clone()).unwrap_or_default();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refused = None;
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| {
                    // The resolver does not know the port: a name that resolves to an
                    // address the node serves on is refused whatever the port.
                    let allowed = explicit
                        || (is_public(a.ip())
                            && (allow_node || !own_listener(&listeners, a.ip(), None)));
                    if !allowed && first_refused.is_none() {
                        first_refused = Some(a.ip());
                    }
                    allowed
                })
                .collect();
            if ok.is_empty() {
                let addr = first_refused.unwrap_or(V6_UNSPECIFIED);
                return Err(Box::new(RefusedAddress { host, addr }) as _);
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(rules: &[&str], any_public: bool, allow_node: bool) -> Destinations {
        Destinations {
            rules: rules.iter().map(|r| HostRule::parse(r).unwrap()).collect(),
            any_public,
            allow_node,
            list_name: "test",
        }
    }

    fn check(e: &Egress, d: &Destinations, url: &str) -> Result<(), (String, String)> {
        e.check_url(d, &Url::parse(url).unwrap())
    }

    #[test]
    fn urls_checked_against_rules() {
        let e = Egress::new();
        let p = dest(&["example.com", "*.0.1", "127.0.0.1:9"], false, false);
        assert!(check(&e, &p, "https://example.com/x").is_ok());
        assert!(check(&e, &p, "https://evil-example.com/x").is_err());
        assert!(check(&e, &p, "ftp://example.com/x").is_err());
        assert!(check(&e, &p, "https://user:pw@example.com/").is_err());
        assert!(check(&e, &p, "http://127.0.0.1:9/").is_ok());
        assert!(
            check(&e, &p, "http://127.0.0.1:10/").is_err(),
            "suffix never matches an IP"
        );
    }

    #[test]
    fn the_nodes_own_listeners_need_a_rule_and_the_operator() {
        let e = Egress::new();
        e.set_listeners(vec![
            "0.0.0.0:8080".parse().unwrap(),
            "[::1]:8081".parse().unwrap(),
        ]);
        let named = dest(
            &["127.0.0.1:8080", "localhost:8080", "[::1]:8081"],
            false,
            false,
        );
        for url in [
            "http://127.0.0.1:8080/api/v1/events",
            "http://localhost:8080/",
            "http://[::1]:8081/",
        ] {
            let (_, reason) = check(&e, &named, url).unwrap_err();
            assert!(reason.contains("own address"), "{url}: {reason}");
        }
        let allowed = Destinations {
            allow_node: true,
            ..named
        };
        assert!(check(&e, &allowed, "http://127.0.0.1:8080/").is_ok());
        // Allowed by the operator, but not named: still refused.
        let unnamed = dest(&["127.0.0.1:9"], true, true);
        assert!(check(&e, &unnamed, "http://127.0.0.1:8080/").is_err());
        // Every spelling of a local address, on the node's port.
        let open = dest(&[], true, false);
        for url in [
            "http://0.0.0.0:8080/",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://0x7f000001:8080/",
            "http://127.1:8080/",
        ] {
            assert!(check(&e, &open, url).is_err(), "{url}");
        }
    }

    #[test]
    fn any_public_refuses_every_non_public_spelling() {
        let e = Egress::new();
        let open = dest(&[], true, false);
        assert!(check(&e, &open, "https://example.com/").is_ok());
        assert!(check(&e, &open, "http://93.184.216.34/").is_ok());
        for url in [
            "http://127.0.0.1:9/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost/",
            "http://api.localhost/",
        ] {
            assert!(check(&e, &open, url).is_err(), "{url}");
        }
    }

    #[test]
    fn bare_hosts_are_parsed_as_the_resolver_would_and_checked() {
        for (host, ip) in [
            ("2130706433", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
            ("[::1]", "::1"),
        ] {
            let parsed = parse_host(host).unwrap();
            let want: IpAddr = ip.parse().unwrap();
            let got = match parsed {
                url::Host::Ipv4(v4) => IpAddr::V4(v4),
                url::Host::Ipv6(v6) => IpAddr::V6(v6),
                url::Host::Domain(d) => panic!("{host} parsed as the name {d}"),
            };
            assert_eq!(got, want, "{host}");
        }
        assert_eq!(
            parse_host("Web-1.Example.COM.").unwrap(),
            url::Host::Domain(String::from("web-1.example.com"))
        );
        for bad in ["-oProxyCommand=x", "a b", "", "x%y", "a/b", "a..b"] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
        let e = Egress::new();
        let open = dest(&[], true, false);
        for host in [
            "2130706433",
            "localhost",
            "169.254.169.254",
            "::ffff:10.0.0.1",
        ] {
            assert!(e.check_host(&open, host, 22, 22).is_err(), "{host}");
        }
        assert!(e.check_host(&open, "93.184.216.34", 22, 22).is_ok());
        let listed = dest(&["10.0.0.5", "web-1.internal:2222"], false, false);
        assert!(e.check_host(&listed, "10.0.0.5", 22, 22).is_ok());
        assert!(
            e.check_host(&listed, "10.0.0.5", 2222, 22).is_err(),
            "port 22 only"
        );
        assert!(e.check_host(&listed, "web-1.internal", 2222, 22).is_ok());
        assert!(e.check_host(&listed, "web-2.internal", 2222, 22).is_err());
    }

    #[tokio::test]
    async fn names_resolve_once_and_only_to_allowed_addresses() {
        let e = Egress::new();
        let open = dest(&[], true, false);
        let host = e.check_host(&open, "localhost.", 22, 22);
        assert!(
            host.is_err(),
            "loopback names are refused before resolution"
        );
        // `localhost` listed exactly may be private (explicitly named).
        let listed = dest(&["localhost:2200"], false, false);
        let h = e.check_host(&listed, "localhost", 2200, 22).unwrap();
        let addrs = e
            .resolve_checked(&listed, &h, 2200, 22, false)
            .await
            .unwrap();
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 2200)
        );
        // The node's own listener is dropped after resolution even when listed.
        e.set_listeners(vec![
            "127.0.0.1:2200".parse().unwrap(),
            "[::1]:2200".parse().unwrap(),
        ]);
        let r = e.resolve_checked(&listed, &h, 2200, 22, true).await;
        assert!(matches!(r, Err(EgressError::Denied { .. })), "{r:?}");
    }

    #[test]
    fn only_the_client_sets_framing_headers() {
        for h in [
            "Host",
            "transfer-encoding",
            "Content-Length",
            "TE",
            "Connection",
            "Upgrade",
            "Proxy-Authorization",
            "Keep-Alive",
            "Trailer",
            "X-Xyn-Egress",
        ] {
            assert!(host_only_header(h), "{h}");
        }
        assert!(!host_only_header("Authorization"));
        assert!(!host_only_header("X-Api-Key"));
    }

    #[test]
    fn secrets_only_go_to_their_hosts() {
        let s = vec![SecretBinding {
            name: "TOKEN".into(),
            value: "s3cr3t-value".into(),
            hosts: vec![HostRule::parse("api.example.com").unwrap()],
        }];
        let h = vec![(
            "Authorization".to_string(),
            "Bearer s3cr3t-value".to_string(),
        )];
        let ok = Url::parse("https://api.example.com/").unwrap();
        let other = Url::parse("https://example.org/").unwrap();
        assert!(check_secrets(&s, &ok, &h, None).is_ok());
        assert!(check_secrets(&s, &other, &h, None).is_err());
        assert!(check_secrets(&s, &other, &[], Some(b"x=s3cr3t-value")).is_err());
        assert!(check_secrets(&s, &other, &[], None).is_ok());
    }
}
