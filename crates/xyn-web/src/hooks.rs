//! Webhook intake: `POST /hooks/{source}` maps a JSON body to an event, by a configured
//! mapping per source (`[hooks.<source>]` in xyn.toml):
//!
//! ```toml
//! [hooks.checkmk]
//! event_name = "checkmk.alert"            # a fixed name, or:
//! [hooks.github]
//! name_from_header = "X-GitHub-Event"      # the name from a header (unsigned: needs `events`),
//! events = ["push", "pull_request"]        # the names that header may select,
//! # name_from = "/type"                    # or from a JSON pointer into the (signed) body
//! prefix = "github."                       # with a prefix
//! secret_env = "XYN_HOOK_GITHUB_SECRET"    # shared secret
//! scheme = "github"                        # shared (default), github, standard, stripe
//! ```
//!
//! A source authenticates by its own scheme only, never by API tokens. Deliveries are
//! remembered for the replay window (by delivery id and by signature) and timestamped schemes
//! must be within the allowed clock skew. Every credential failure, and an unknown source,
//! answers the same 401, so sources cannot be probed; the node's log says which it was.
//!
//! The body becomes the event's `data` (a JSON object); the actor is `hook:<source>`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use xyn_core::{ErrorKind, XynError, codes};
use xyn_engine::EmitEvent;

use crate::AppState;
use crate::dto::{ErrorResponse, EventDto};
use crate::error::ApiResult;
use crate::extract::Cid;

/// How a source proves a delivery is its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HookScheme {
    /// `Authorization: Bearer <secret>` or `X-Hub-Signature-256: sha256=<HMAC of the body>`.
    #[default]
    Shared,
    /// GitHub: `X-Hub-Signature-256` only; `X-GitHub-Delivery` is remembered.
    Github,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`
    /// over `id.timestamp.body` (secret `whsec_<base64>` or raw).
    Standard,
    /// Stripe-style: `Stripe-Signature: t=<unix>,v1=<hex HMAC of "t.body">`.
    Stripe,
}

impl HookScheme {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "shared" => Some(Self::Shared),
            "github" => Some(Self::Github),
            "standard" | "standard-webhooks" => Some(Self::Standard),
            "stripe" => Some(Self::Stripe),
            _ => None,
        }
    }
}

/// How one webhook source maps to events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookConfig {
    /// A fixed event name.
    pub event_name: Option<String>,
    /// A JSON pointer into the body whose string value names the event.
    pub name_from: Option<String>,
    /// A header whose value names the event. Headers are not signed: with a secret, `events`
    /// must pin the names it may select.
    pub name_from_header: Option<String>,
    /// The names (before the prefix, lower case) a delivery may select; `None`: any.
    pub events: Option<Vec<String>>,
    /// Put before a name taken from the body or a header.
    pub prefix: String,
    /// Shared secret, checked by `scheme`.
    pub secret: Option<String>,
    pub scheme: HookScheme,
    /// How long a delivery id or signature is remembered (a replay within it is refused).
    pub replay_window: Duration,
    /// How far a signed timestamp may be from the node's clock.
    pub max_skew: Duration,
}

impl Default for HookConfig {
    fn default() -> Self {
        Self {
            event_name: None,
            name_from: None,
            name_from_header: None,
            events: None,
            prefix: String::new(),
            secret: None,
            scheme: HookScheme::Shared,
            replay_window: Duration::from_secs(24 * 3600),
            max_skew: Duration::from_secs(300),
        }
    }
}

impl HookConfig {
    /// A mapping that would let an unsigned header choose the event name is refused.
    pub fn check(&self) -> Result<(), String> {
        if self.secret.is_some() && self.name_from_header.is_some() && self.events.is_none() {
            return Err(
                "name_from_header takes the event name from a header the signature does not cover: pin the allowed names with `events = [...]`, or take the name from the body (name_from)".into(),
            );
        }
        if self.secret.is_none() && self.scheme != HookScheme::Shared {
            return Err("this scheme needs secret_env".into());
        }
        Ok(())
    }
}

/// Most deliveries remembered per source; the oldest are forgotten first past it.
const REMEMBERED_PER_SOURCE: usize = 50_000;

/// Delivery ids and signatures seen within each source's replay window, bounded in memory.
/// (In memory only: a restart forgets them; timestamped schemes are still bounded by their
/// clock skew.)
#[derive(Default)]
pub struct Replays {
    by_source: Mutex<HashMap<String, Seen>>,
}

#[derive(Default)]
struct Seen {
    order: VecDeque<(Instant, String)>,
    keys: HashSet<String>,
}

impl Replays {
    /// Records `keys` unless one of them was seen within `window`: then `false`.
    fn first_time(&self, source: &str, keys: &[String], window: Duration) -> bool {
        let mut m = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let seen = m.entry(source.to_string()).or_default();
        let now = Instant::now();
        while let Some((at, _)) = seen.order.front() {
            if now.duration_since(*at) < window && seen.order.len() < REMEMBERED_PER_SOURCE {
                break;
            }
            if let Some((_, k)) = seen.order.pop_front() {
                seen.keys.remove(&k);
            }
        }
        if keys.iter().any(|k| seen.keys.contains(k)) {
            return false;
        }
        for k in keys {
            seen.keys.insert(k.clone());
            seen.order.push_back((now, k.clone()));
        }
        true
    }

    /// Forgets `keys` (the delivery was not accepted after all, so it may be retried).
    fn forget(&self, source: &str, keys: &[String]) {
        let mut m = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = m.get_mut(source) {
            for k in keys {
                seen.keys.remove(k);
            }
        }
    }
}

/// The one answer to any credential failure (and to an unknown source).
fn refused() -> XynError {
    XynError::new(
        ErrorKind::Unauthorized,
        codes::HOOK_BAD_SIGNATURE,
        "the webhook's signature or secret is missing or wrong",
    )
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).ok()?;
    for p in parts {
        m.update(p);
    }
    Some(m)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn fresh(ts: &str, skew: Duration) -> Result<(), String> {
    let t: i64 = ts
        .parse()
        .map_err(|_| "timestamp is not a number".to_string())?;
    let off = (now_unix() - t).unsigned_abs();
    if off > skew.as_secs() {
        return Err(format!("timestamp is {off} s off the node's clock"));
    }
    Ok(())
}

/// Checks a delivery by the source's scheme; `Ok` carries the keys to remember it by (its
/// delivery id and signature). `Err` carries what the log says.
fn verify(
    hook: &HookConfig,
    secret: &str,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Vec<String>, String> {
    let mut keys = delivery_ids(h);
    match hook.scheme {
        HookScheme::Shared | HookScheme::Github => {
            if let Some(sig) =
                header(h, "x-hub-signature-256").and_then(|v| v.strip_prefix("sha256="))
            {
                let want = hex::decode(sig).map_err(|_| "X-Hub-Signature-256 is not hex")?;
                hmac(secret.as_bytes(), &[body])
                    .ok_or("hmac key")?
                    .verify_slice(&want)
                    .map_err(|_| "X-Hub-Signature-256 does not match")?;
                keys.push(format!("sig:{}", sig.to_ascii_lowercase()));
                return Ok(keys);
            }
            if hook.scheme == HookScheme::Github {
                return Err("no X-Hub-Signature-256".into());
            }
            let given = header(h, header::AUTHORIZATION.as_str())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            // Compare MACs of both, so timing tells nothing about the secret.
            let tag = |s: &str| {
                hmac(b"xyn-hook-compare", &[s.as_bytes()]).map(|m| m.finalize().into_bytes())
            };
            if !given.is_empty() && tag(given) == tag(secret) {
                Ok(keys)
            } else {
                Err("neither a matching bearer secret nor X-Hub-Signature-256".into())
            }
        }
        HookScheme::Standard => {
            let id = header(h, "webhook-id").ok_or("no webhook-id")?;
            let ts = header(h, "webhook-timestamp").ok_or("no webhook-timestamp")?;
            fresh(ts, hook.max_skew)?;
            let key = secret
                .strip_prefix("whsec_")
                .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
                .unwrap_or_else(|| secret.as_bytes().to_vec());
            let mac =
                hmac(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]).ok_or("hmac key")?;
            let want = mac.finalize().into_bytes();
            let sigs = header(h, "webhook-signature").ok_or("no webhook-signature")?;
            let ok = sigs.split_whitespace().any(|s| {
                s.strip_prefix("v1,")
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .is_some_and(|b| hmac_eq(&b, &want))
            });
            if !ok {
                return Err("webhook-signature does not match".into());
            }
            Ok(keys)
        }
        HookScheme::Stripe => {
            let sig = header(h, "stripe-signature").ok_or("no Stripe-Signature")?;
            let mut t = None;
            let mut v1 = Vec::new();
            for part in sig.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => t = Some(v),
                    Some(("v1", v)) => v1.push(v),
                    _ => {}
                }
            }
            let t = t.ok_or("Stripe-Signature has no t=")?;
            fresh(t, hook.max_skew)?;
            let want = hmac(secret.as_bytes(), &[t.as_bytes(), b".", body])
                .ok_or("hmac key")?
                .finalize()
                .into_bytes();
            let hit = v1
                .iter()
                .find(|v| hex::decode(v).is_ok_and(|b| hmac_eq(&b, &want)))
                .ok_or("Stripe-Signature does not match")?;
            keys.push(format!("sig:{}", hit.to_ascii_lowercase()));
            Ok(keys)
        }
    }
}

/// The delivery ids a request carries (GitHub's, Xyn's generic one, Standard Webhooks').
fn delivery_ids(h: &HeaderMap) -> Vec<String> {
    ["x-github-delivery", "x-xyn-delivery", "webhook-id"]
        .iter()
        .filter_map(|n| header(h, n).filter(|v| !v.is_empty()))
        .map(|v| format!("id:{v}"))
        .collect()
}

/// Constant-time comparison of two MACs.
fn hmac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Receives a webhook and emits the mapped event (durable before the 201).
#[utoipa::path(post, path = "/hooks/{source}", tag = "hooks",
    params(("source" = String, Path, description = "A source configured in [hooks.<source>]")),
    request_body(content = serde_json::Value, description = "Any JSON object; it becomes the event's data"),
    responses((status = 201, description = "The event", body = EventDto),
        (status = 401, description = "Missing or wrong credentials, or no such source", body = ErrorResponse),
        (status = 409, description = "A replayed delivery", body = ErrorResponse),
        (status = 422, description = "No event name, or not a JSON object", body = ErrorResponse)))]
pub async fn intake(
    State(s): State<AppState>,
    Path(source): Path<String>,
    Cid(cid): Cid,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<EventDto>)> {
    let Some(hook) = s.config.hooks.get(&source) else {
        tracing::info!(source = %source, "webhook refused: no such source");
        return Err(refused().into());
    };
    let keys = match &hook.secret {
        Some(secret) => verify(hook, secret, &headers, &body).map_err(|why| {
            tracing::info!(source = %source, why = %why, "webhook refused");
            refused()
        })?,
        // A source without a secret is open only on an open node: on a node with tokens it
        // has no way to authenticate (API tokens are never accepted here).
        None if s.config.auth.enabled() => {
            tracing::info!(source = %source, "webhook refused: the source has no secret on a node with API tokens");
            return Err(refused().into());
        }
        None => delivery_ids(&headers),
    };
    let data: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            XynError::bad_request(
                codes::REQUEST_INVALID_JSON,
                format!("the body is not valid JSON: {e}"),
            )
        })?
    };
    let name = if let Some(n) = &hook.event_name {
        n.clone()
    } else {
        let raw = if let Some(h) = &hook.name_from_header {
            headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        } else if let Some(p) = &hook.name_from {
            data.pointer(p).and_then(Value::as_str).map(str::to_string)
        } else {
            None
        };
        let raw = raw.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
            XynError::invalid(
                codes::HOOK_NO_EVENT_NAME,
                format!("the webhook of {source:?} does not say its event name"),
            )
        })?;
        let raw = raw.trim().to_ascii_lowercase();
        if let Some(allowed) = &hook.events
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&raw))
        {
            return Err(XynError::invalid(
                codes::HOOK_EVENT_NOT_ALLOWED,
                format!("the source {source:?} may not send {raw:?}"),
            )
            .into());
        }
        format!("{}{}", hook.prefix, raw)
    };
    if !keys.is_empty() && !s.replays.first_time(&source, &keys, hook.replay_window) {
        tracing::info!(source = %source, "webhook refused: a replay within the replay window");
        return Err(
            XynError::conflict(codes::HOOK_REPLAYED, "this delivery was already accepted").into(),
        );
    }
    let emitted = s
        .node
        .emit_event(EmitEvent {
            event_name: name,
            data,
            resource: None,
            run_id: None,
            step_id: None,
            actor: format!("hook:{source}"),
            correlation_id: Some(cid),
        })
        .await;
    let stored = match emitted {
        Ok(e) => e,
        Err(e) => {
            s.replays.forget(&source, &keys);
            return Err(e.into());
        }
    };
    Ok((StatusCode::CREATED, Json(stored.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsigned_selector_needs_pinned_events() {
        let mut h = HookConfig {
            name_from_header: Some("X-GitHub-Event".into()),
            secret: Some("s".into()),
            ..Default::default()
        };
        assert!(h.check().unwrap_err().contains("events"));
        h.events = Some(vec!["push".into()]);
        assert!(h.check().is_ok());
    }

    #[test]
    fn replays_are_remembered_within_the_window_and_bounded() {
        let r = Replays::default();
        let k = vec!["id:1".to_string()];
        assert!(r.first_time("s", &k, Duration::from_secs(60)));
        assert!(!r.first_time("s", &k, Duration::from_secs(60)));
        assert!(r.first_time("other", &k, Duration::from_secs(60)));
        r.forget("s", &k);
        assert!(r.first_time("s", &k, Duration::from_secs(60)));
        assert!(r.first_time("z", &k, Duration::ZERO));
        assert!(
            r.first_time("z", &k, Duration::ZERO),
            "an expired key is forgotten"
        );
        for i in 0..REMEMBERED_PER_SOURCE + 10 {
            r.first_time("b", &[format!("id:{i}")], Duration::from_secs(3600));
        }
        let m = r.by_source.lock().unwrap();
        assert!(m["b"].keys.len() <= REMEMBERED_PER_SOURCE + 1);
    }
}
