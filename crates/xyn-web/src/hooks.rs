//! Webhook intake: `POST /hooks/{source}` maps a JSON body to an event, by a configured
//! mapping per source (`[hooks.<source>]` in xyn.toml):
//!
//! ```toml
//! [hooks.checkmk]
//! event_name = "checkmk.alert"            # a fixed name, or:
//! [hooks.github]
//! name_from_header = "X-GitHub-Event"      # the name from a header,
//! # name_from = "/type"                    # or from a JSON pointer into the body,
//! prefix = "github."                       # with a prefix
//! secret_env = "XYN_HOOK_GITHUB_SECRET"    # shared secret (Bearer, or X-Hub-Signature-256)
//! ```
//!
//! The body becomes the event's `data` (a JSON object); the actor is `hook:<source>`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use xyn_core::{ErrorKind, XynError, codes};
use xyn_engine::EmitEvent;

use crate::AppState;
use crate::dto::{ErrorResponse, EventDto};
use crate::error::ApiResult;
use crate::extract::Cid;

/// How one webhook source maps to events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookConfig {
    /// A fixed event name.
    pub event_name: Option<String>,
    /// A JSON pointer into the body whose string value names the event.
    pub name_from: Option<String>,
    /// A header whose value names the event.
    pub name_from_header: Option<String>,
    /// Put before a name taken from the body or a header.
    pub prefix: String,
    /// Shared secret: `Authorization: Bearer <secret>` or `X-Hub-Signature-256: sha256=<hmac>`.
    pub secret: Option<String>,
}

fn refuse(code: &'static str, msg: &str) -> XynError {
    XynError::new(ErrorKind::Unauthorized, code, msg)
}

fn check_secret(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), XynError> {
    if let Some(sig) = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
    {
        let want = hex::decode(sig.trim())
            .map_err(|_| refuse(codes::HOOK_BAD_SIGNATURE, "X-Hub-Signature-256 is not hex"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| XynError::internal("hmac key"))?;
        mac.update(body);
        return mac.verify_slice(&want).map_err(|_| {
            refuse(
                codes::HOOK_BAD_SIGNATURE,
                "the webhook signature does not match",
            )
        });
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare MACs of both, so timing tells nothing about the secret.
    let tag = |s: &str| {
        let mut m = Hmac::<Sha256>::new_from_slice(b"xyn-hook-compare").ok()?;
        m.update(s.as_bytes());
        Some(m.finalize().into_bytes())
    };
    if !given.is_empty() && tag(given) == tag(secret) {
        Ok(())
    } else {
        Err(refuse(
            codes::HOOK_BAD_SIGNATURE,
            "this webhook needs its secret: `Authorization: Bearer <secret>` or `X-Hub-Signature-256`",
        ))
    }
}

/// Receives a webhook and emits the mapped event (durable before the 201).
#[utoipa::path(post, path = "/hooks/{source}", tag = "hooks",
    params(("source" = String, Path, description = "A source configured in [hooks.<source>]")),
    request_body(content = serde_json::Value, description = "Any JSON object; it becomes the event's data"),
    responses((status = 201, description = "The event", body = EventDto),
        (status = 404, description = "No such source", body = ErrorResponse),
        (status = 422, description = "No event name, or not a JSON object", body = ErrorResponse)))]
pub async fn intake(
    State(s): State<AppState>,
    Path(source): Path<String>,
    Cid(cid): Cid,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<EventDto>)> {
    let hook = s.config.hooks.get(&source).ok_or_else(|| {
        XynError::not_found(
            codes::HOOK_UNKNOWN_SOURCE,
            format!("no webhook source {source:?} is configured"),
        )
    })?;
    match &hook.secret {
        Some(secret) => check_secret(secret, &headers, &body)?,
        None if s.config.auth.enabled() => {
            let ok = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|t| s.config.auth.lookup(t))
                .is_some();
            if !ok {
                return Err(refuse(
                    codes::AUTH_REQUIRED,
                    "this node requires auth: configure a secret for the source or send an API token",
                )
                .into());
            }
        }
        None => {}
    }
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
        format!("{}{}", hook.prefix, raw.trim().to_ascii_lowercase())
    };
    let stored = s
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
        .await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}
