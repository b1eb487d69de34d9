//! Destination rules: `host`, `host:port`, `*.suffix` and IP literals, matched on whole
//! labels. The same rules serve a sandboxed action's `http_hosts`, the hosts a secret is
//! bound to, and the node's `[actions.http] allow` list.

use std::net::IpAddr;

/// One destination rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostRule {
    pub host: HostPattern,
    /// `None`: the scheme's default port only (80 for http, 443 for https).
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// A DNS name, lower case, without a trailing dot.
    Name(String),
    /// `*.suffix`: any name with at least one more label before `suffix`.
    Suffix(String),
    /// An IP literal; naming one explicitly allows it even when private or loopback.
    Ip(IpAddr),
}

impl HostRule {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.contains('/') || s.contains('@') || s.contains("://") {
            return Err(format!("{s:?} is not a host, host:port or *.suffix"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed ["))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(parse_port(s, p)?),
                None if after.is_empty() => None,
                None => return Err(format!("{s:?} is not a host, host:port or *.suffix")),
            };
            (h.to_string(), port)
        } else if s.matches(':').count() > 1 {
            (s.to_string(), None)
        } else if let Some((h, p)) = s.split_once(':') {
            (h.to_string(), Some(parse_port(s, p)?))
        } else {
            (s.to_string(), None)
        };
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_string();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(HostRule {
                host: HostPattern::Ip(ip),
                port,
            });
        }
        if let Some(suffix) = host.strip_prefix("*.") {
            valid_dns_name(suffix).map_err(|e| format!("{s:?}: {e}"))?;
            return Ok(HostRule {
                host: HostPattern::Suffix(suffix.to_string()),
                port,
            });
        }
        valid_dns_name(&host).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(HostRule {
            host: HostPattern::Name(host),
            port,
        })
    }

    /// Whether `host` (lower case, as in a parsed URL) and `port` match, on whole labels.
    pub fn matches(&self, host: &str, port: u16, default_port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => port == default_port,
        };
        if !port_ok {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host);
        match &self.host {
            HostPattern::Name(n) => host.eq_ignore_ascii_case(n),
            HostPattern::Suffix(sfx) => {
                let h = host.to_ascii_lowercase();
                h.len() > sfx.len() + 1
                    && h.ends_with(sfx.as_str())
                    && h.as_bytes()[h.len() - sfx.len() - 1] == b'.'
            }
            HostPattern::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
        }
    }

    /// Whether this rule names a destination that is normally refused after resolution
    /// (an IP literal, or `localhost`).
    pub fn names_private(&self) -> bool {
        match &self.host {
            HostPattern::Ip(_) => true,
            HostPattern::Name(n) => n == "localhost",
            HostPattern::Suffix(_) => false,
        }
    }
}

fn parse_port(whole: &str, p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{whole:?}: bad port {p:?}"))
}

fn valid_dns_name(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 253 {
        return Err("empty or too long host name".into());
    }
    for label in h.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("bad label {label:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules_match_whole_labels() {
        let r = HostRule::parse("example.com").unwrap();
        assert!(r.matches("example.com", 443, 443));
        assert!(r.matches("EXAMPLE.com.", 80, 80));
        assert!(!r.matches("evil-example.com", 443, 443));
        assert!(!r.matches("example.com.evil.net", 443, 443));
        assert!(!r.matches("example.com", 8443, 443), "ports are exact");
        let s = HostRule::parse("*.example.com").unwrap();
        assert!(s.matches("api.example.com", 443, 443));
        assert!(s.matches("a.b.example.com", 443, 443));
        assert!(!s.matches("example.com", 443, 443));
        assert!(!s.matches("evil-example.com", 443, 443));
        assert!(!s.matches("xexample.com", 443, 443));
        let p = HostRule::parse("127.0.0.1:8080").unwrap();
        assert!(p.matches("127.0.0.1", 8080, 80));
        assert!(!p.matches("127.0.0.1", 8081, 80));
        assert!(p.names_private());
        let v6 = HostRule::parse("[::1]:9000").unwrap();
        assert!(v6.matches("[::1]", 9000, 80));
        for bad in [
            "http://x.com",
            "a/b",
            "x..com",
            "-a.com",
            "x.com:0",
            "x.com:99999",
            "",
        ] {
            assert!(HostRule::parse(bad).is_err(), "{bad}");
        }
    }
}
