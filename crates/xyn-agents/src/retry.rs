//! The retry policy of the official OpenAI and Anthropic SDKs (see
//! `shared/reference/llm-wire-formats.md` §3.4): retry connection errors, timeouts and HTTP
//! 408, 409, 429 and ≥ 500; obey `x-should-retry`; honour `retry-after-ms` / `retry-after`
//! (seconds or HTTP date) when 0 < delay ≤ 60 s; otherwise back off 0.5 s · 2ⁿ capped at 8 s,
//! with jitter in [0.75, 1.0].

use std::time::Duration;

use reqwest::header::HeaderMap;

/// Whether a status should be retried, given the server's `x-should-retry` override.
pub(crate) fn should_retry(status: u16, headers: &HeaderMap) -> bool {
    if let Some(v) = headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
        match v {
            "true" => return true,
            "false" => return false,
            _ => {}
        }
    }
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// The delay before retry number `retries_taken + 1`.
pub(crate) fn delay(retries_taken: u32, headers: Option<&HeaderMap>, jitter: f64) -> Duration {
    if let Some(h) = headers
        && let Some(d) = server_hint(h)
        && d > Duration::ZERO
        && d <= Duration::from_secs(60)
    {
        return d;
    }
    let base = (0.5 * 2f64.powi(retries_taken as i32)).min(8.0);
    let j = jitter.clamp(0.75, 1.0);
    Duration::from_secs_f64(base * j)
}

fn server_hint(h: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = h
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        && ms.is_finite()
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).max(0.0)));
    }
    let ra = h.get("retry-after").and_then(|v| v.to_str().ok())?.trim();
    if let Ok(secs) = ra.parse::<f64>() {
        return secs
            .is_finite()
            .then(|| Duration::from_secs_f64(secs.max(0.0)));
    }
    // HTTP-date (RFC 7231 IMF-fixdate).
    let when = chrono_like_parse(ra)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs((when - now).max(0) as u64))
}

/// Parses `Sun, 06 Nov 1994 08:49:37 GMT` into Unix seconds.
fn chrono_like_parse(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
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

/// Posts `body` as JSON, retrying as the SDKs do, within an overall `timeout`.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: &serde_json::Value,
    timeout: Duration,
    max_retries: u32,
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
                format!("{provider}: no answer within {}ms", timeout.as_millis()),
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
        match outcome {
            Ok((status, h, body)) => {
                let retry = !(200..300).contains(&status) && should_retry(status, &h);
                if retry && retries < max_retries {
                    let d = delay(retries, Some(&h), jitter());
                    if tokio::time::Instant::now() + d < deadline {
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
            Err(e) => {
                let (code, what) = if e.is_timeout() {
                    ("agent.timeout", "timed out")
                } else if e.is_connect() {
                    ("agent.connect", "cannot connect")
                } else {
                    ("agent.http", "request failed")
                };
                if retries < max_retries {
                    let d = delay(retries, None, jitter());
                    if tokio::time::Instant::now() + d < deadline {
                        retries += 1;
                        tokio::time::sleep(d).await;
                        continue;
                    }
                }
                return Err(AgentError::new(
                    code,
                    format!("{provider}: {what}: {e}"),
                    true,
                ));
            }
        }
    }
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

    #[test]
    fn hints_and_backoff() {
        assert_eq!(
            delay(0, Some(&h(&[("retry-after-ms", "1500")])), 1.0),
            Duration::from_millis(1500)
        );
        assert_eq!(
            delay(0, Some(&h(&[("retry-after", "2")])), 1.0),
            Duration::from_secs(2)
        );
        // Too long a hint falls back to exponential backoff.
        assert_eq!(
            delay(1, Some(&h(&[("retry-after", "600")])), 1.0),
            Duration::from_secs(1)
        );
        assert_eq!(delay(0, None, 1.0), Duration::from_millis(500));
        assert_eq!(delay(10, None, 1.0), Duration::from_secs(8));
        assert_eq!(delay(0, None, 0.75), Duration::from_millis(375));
        assert_eq!(
            chrono_like_parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
    }
}
