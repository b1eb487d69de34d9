//! The retry policy of the official OpenAI and Anthropic SDKs (see
//! `shared/reference/llm-wire-formats.md` §3.4): retry connection errors, timeouts and HTTP
//! 408, 409, 429 and ≥ 500; obey `x-should-retry`; honour `retry-after-ms` / `retry-after`
//! (seconds or HTTP date) when 0 < delay ≤ 60 s; otherwise back off 0.5 s · 2ⁿ capped at 8 s,
//! with jitter in [0.75, 1.0]. The delays are a [`Backoff`] (SDK values by default) so tests
//! can shrink them.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// The delays between retries. [`Backoff::default`] is the official SDKs' policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry when the server gives no hint (SDKs: 0.5 s); doubled
    /// for each further retry.
    pub initial_delay: Duration,
    /// The cap of the doubled delay (SDKs: 8 s).
    pub max_delay: Duration,
    /// The longest `retry-after-ms` / `retry-after` honoured (SDKs: 60 s); a longer (or
    /// zero, negative, malformed) hint falls back to the backoff.
    pub max_server_delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_server_delay: Duration::from_secs(60),
        }
    }
}

/// How a provider retries: at most `max_retries` retries after the first attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub max_retries: u32,
    pub backoff: Backoff,
}

/// Whether a status should be retried, given the server's `x-should-retry` override.
pub(crate) fn should_retry(status: u16, headers: &HeaderMap) -> bool {
    if let Some(v) = headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
        match v.trim() {
            "true" => return true,
            "false" => return false,
            _ => {}
        }
    }
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// The delay before retry number `retries_taken + 1`.
pub(crate) fn delay(
    retries_taken: u32,
    headers: Option<&HeaderMap>,
    jitter: f64,
    backoff: &Backoff,
) -> Duration {
    if let Some(h) = headers
        && let Some(d) = server_hint(h)
        && d > Duration::ZERO
        && d <= backoff.max_server_delay
    {
        return d;
    }
    let base = backoff
        .initial_delay
        .checked_mul(1u32 << retries_taken.min(20))
        .unwrap_or(backoff.max_delay)
        .min(backoff.max_delay);
    Duration::try_from_secs_f64(base.as_secs_f64() * jitter.clamp(0.75, 1.0)).unwrap_or(base)
}

/// The server's hint: `retry-after-ms` (float milliseconds), then `retry-after` as float
/// seconds, then as an HTTP date. Negative values are zero; absurdly large ones are `None`.
fn server_hint(h: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = h
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        return Duration::try_from_secs_f64((ms / 1000.0).max(0.0)).ok();
    }
    let ra = h.get("retry-after").and_then(|v| v.to_str().ok())?.trim();
    if let Ok(secs) = ra.parse::<f64>() {
        return Duration::try_from_secs_f64(secs.max(0.0)).ok();
    }
    // HTTP-date (RFC 7231 IMF-fixdate).
    let when = parse_http_date(ra)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(when.saturating_sub(now)))
}

/// Parses `Sun, 06 Nov 1994 08:49:37 GMT` into Unix seconds (years 1970–9999).
fn parse_http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok().filter(|d| (1..=31).contains(d))?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3]
        .parse()
        .ok()
        .filter(|y| (1970..=9999).contains(y))?;
    let hms: Vec<i64> = parts[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else {
        return None;
    };
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..=60).contains(&sec) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm); the year range keeps this positive.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + sec).ok()
}

/// A jitter factor in [0.75, 1.0] without a random-number dependency: the low bits of the clock.
pub(crate) fn jitter() -> f64 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    1.0 - 0.25 * ((n % 1000) as f64 / 1000.0)
}

/// A completed HTTP exchange.
pub(crate) struct Exchange {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub requests: u32,
}

/// Posts `body` as JSON, retrying as the SDKs do, within an overall `timeout` (retry delays
/// included: a retry whose delay would end past the deadline is not made).
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: &serde_json::Value,
    timeout: Duration,
    policy: &Policy,
    provider: &str,
) -> Result<Exchange, crate::AgentError> {
    use crate::AgentError;
    let deadline = tokio::time::Instant::now() + timeout;
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut retries = 0u32;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(AgentError::new(
                "agent.timeout",
                format!(
                    "{provider}: no answer from {url} within {}ms{}",
                    timeout.as_millis(),
                    attempts(retries)
                ),
                true,
            ));
        }
        let mut req = http
            .post(url)
            .timeout(remaining)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(bytes.clone());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let outcome = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let h = resp.headers().clone();
                match resp.bytes().await {
                    Ok(b) => Ok((status, h, b.to_vec())),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let can_retry = |retries: u32, d: Duration| {
            retries < policy.max_retries && tokio::time::Instant::now() + d < deadline
        };
        match outcome {
            Ok((status, h, body)) => {
                let retry = !(200..300).contains(&status)
                    && crate::errors::should_retry_answer(status, &h, &body);
                if retry {
                    let d = delay(retries, Some(&h), jitter(), &policy.backoff);
                    if can_retry(retries, d) {
                        tracing::debug!(
                            provider,
                            status,
                            retry = retries + 1,
                            delay_ms = d.as_millis() as u64,
                            "retrying"
                        );
                        retries += 1;
                        tokio::time::sleep(d).await;
                        continue;
                    }
                }
                return Ok(Exchange {
                    status,
                    headers: h,
                    body,
                    requests: retries + 1,
                });
            }
            Err(e) if e.is_builder() => {
                // An unusable URL or header value (a key with a line break): retrying won't help.
                return Err(AgentError::new(
                    "agent.config",
                    format!(
                        "{provider}: cannot build the request to {url}: {}",
                        describe(e)
                    ),
                    false,
                ));
            }
            Err(e) => {
                let d = delay(retries, None, jitter(), &policy.backoff);
                if can_retry(retries, d) {
                    tracing::debug!(provider, error = %e, retry = retries + 1, delay_ms = d.as_millis() as u64, "retrying");
                    retries += 1;
                    tokio::time::sleep(d).await;
                    continue;
                }
                let (code, what) = if e.is_timeout() {
                    (
                        "agent.timeout",
                        format!("no answer from {url} within {}ms", timeout.as_millis()),
                    )
                } else if e.is_connect() {
                    ("agent.connect", format!("cannot connect to {url}"))
                } else {
                    ("agent.http", format!("the exchange with {url} failed"))
                };
                return Err(AgentError::new(
                    code,
                    format!("{provider}: {what}{}: {}", attempts(retries), describe(e)),
                    true,
                ));
            }
        }
    }
}

fn attempts(retries: u32) -> String {
    if retries == 0 {
        String::new()
    } else {
        format!(" ({} attempts)", retries + 1)
    }
}

/// The error and its causes on one line, without the URL (the caller names it once).
fn describe(e: reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        causes.push(s.to_string());
        src = s.source();
    }
    let mut out = e.without_url().to_string();
    for c in causes {
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn retryable_statuses_and_override() {
        for s in [408, 409, 429, 500, 503, 529] {
            assert!(should_retry(s, &HeaderMap::new()), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert!(!should_retry(s, &HeaderMap::new()), "{s}");
        }
        assert!(!should_retry(429, &h(&[("x-should-retry", "false")])));
        assert!(should_retry(400, &h(&[("x-should-retry", "true")])));
    }

    fn sdk(n: u32, hdrs: Option<&HeaderMap>, jitter: f64) -> Duration {
        delay(n, hdrs, jitter, &Backoff::default())
    }

    #[test]
    fn hints_and_backoff() {
        assert_eq!(
            sdk(0, Some(&h(&[("retry-after-ms", "1500")])), 1.0),
            Duration::from_millis(1500)
        );
        assert_eq!(
            sdk(0, Some(&h(&[("retry-after", "2")])), 1.0),
            Duration::from_secs(2)
        );
        // `retry-after-ms` wins over `retry-after`; float seconds are accepted.
        assert_eq!(
            sdk(
                0,
                Some(&h(&[("retry-after", "2"), ("retry-after-ms", "250")])),
                1.0
            ),
            Duration::from_millis(250)
        );
        assert_eq!(
            sdk(0, Some(&h(&[("retry-after", "0.5")])), 1.0),
            Duration::from_millis(500)
        );
        // Too long, zero, negative or malformed hints fall back to exponential backoff.
        for v in ["600", "0", "-3", "soon", "1e308", "NaN", "inf"] {
            assert_eq!(
                sdk(1, Some(&h(&[("retry-after", v)])), 1.0),
                Duration::from_secs(1),
                "{v}"
            );
        }
        for v in ["600000", "0", "-3", "soon", "1e308", "NaN", "inf"] {
            assert_eq!(
                sdk(1, Some(&h(&[("retry-after-ms", v)])), 1.0),
                Duration::from_secs(1),
                "{v}"
            );
        }
        assert_eq!(sdk(0, None, 1.0), Duration::from_millis(500));
        assert_eq!(sdk(1, None, 1.0), Duration::from_secs(1));
        assert_eq!(sdk(4, None, 1.0), Duration::from_secs(8));
        assert_eq!(sdk(10, None, 1.0), Duration::from_secs(8));
        assert_eq!(sdk(u32::MAX, None, 1.0), Duration::from_secs(8));
        assert_eq!(sdk(0, None, 0.75), Duration::from_millis(375));
        assert_eq!(
            sdk(0, None, 0.1),
            Duration::from_millis(375),
            "jitter clamped"
        );
    }

    #[test]
    fn configured_backoff() {
        let b = Backoff {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(25),
            max_server_delay: Duration::from_millis(100),
        };
        assert_eq!(delay(0, None, 1.0, &b), Duration::from_millis(10));
        assert_eq!(delay(1, None, 1.0, &b), Duration::from_millis(20));
        assert_eq!(delay(2, None, 1.0, &b), Duration::from_millis(25));
        let hint = h(&[("retry-after-ms", "80")]);
        assert_eq!(delay(0, Some(&hint), 1.0, &b), Duration::from_millis(80));
        let long = h(&[("retry-after", "1")]);
        assert_eq!(delay(0, Some(&long), 1.0, &b), Duration::from_millis(10));
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Mon, 29 Feb 2027 00:00:00 GMT").map(|_| ()),
            Some(()),
            "lenient about the day of the month, like most parsers"
        );
        for bad in [
            "Sun, 06 Nov 99999999999999 08:49:37 GMT",
            "Sun, 06 Nov -5 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:01 GMT",
            "Sun, 06 Nov 1994 99:49:37 GMT",
            "Sun, 99 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
        // A date in the past is a zero hint: backoff applies.
        let past = h(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(sdk(0, Some(&past), 1.0), Duration::from_millis(500));
        // A date in the near future is honoured.
        let soon = std::time::SystemTime::now() + Duration::from_secs(30);
        let secs = soon
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let future = h(&[("retry-after", &imf_fixdate(secs))]);
        let d = sdk(0, Some(&future), 1.0);
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }

    /// Formats Unix seconds as an IMF-fixdate (test helper; the weekday is not checked).
    fn imf_fixdate(secs: u64) -> String {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Civil from days (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!(
            "Mon, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
            months[(m - 1) as usize],
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}
