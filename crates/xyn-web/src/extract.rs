//! Extractors that fail with the standard error shape.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use xyn_core::{XynError, codes};

use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::correlation::CorrelationId;
use crate::error::ApiError;

/// Who is calling, as recorded on what the request creates. With auth on, the principal of
/// the token or session; on an open node, what the client says in `X-Actor` (e.g. `cli:alice`),
/// else `api`.
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let principal = parts.extensions.get::<Principal>().cloned();
        if let Some(p) = principal.as_ref().filter(|p| !p.open) {
            return Ok(Actor(p.name.clone()));
        }
        let given = parts
            .headers
            .get("x-actor")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_graphic()));
        Ok(Actor(given.unwrap_or_else(|| "api".into())))
    }
}

/// The authenticated principal (the local operator on an open node).
pub struct Who(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Who(parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(Principal::local)))
    }
}

/// Typed query parameters (`deny_unknown_fields` structs): unknown parameters are refused
/// with 422 `request.unknown_field` naming them, malformed ones with 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<T>(q)
            .map(ApiQuery)
            .map_err(|e| {
                let m = e.to_string();
                if m.contains("unknown field") {
                    XynError::invalid(
                        codes::REQUEST_UNKNOWN_FIELD,
                        format!(
                            "unknown query parameter: {}",
                            m.replace("field", "parameter")
                        ),
                    )
                } else {
                    XynError::bad_request(codes::REQUEST_INVALID, format!("bad query: {m}"))
                }
                .into()
            })
    }
}

/// A query value, `None` when absent or empty.
pub fn nz(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The correlation id of the request (set by the correlation layer).
pub struct Cid(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Cid {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Cid(parts
            .extensions
            .get::<CorrelationId>()
            .map(|c| c.0.clone())
            .unwrap_or_default()))
    }
}
