//! `/api/v1/packs`: upload a signed pack and install it on the running node, list, read and
//! remove installed packs. Installing is done by a [`PackService`] the binary provides (it
//! needs the data dir, the trust store and the sandbox); this module only translates HTTP.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use xyn_core::{ErrorKind, XynError, codes};

use crate::AppState;
use crate::dto::ErrorResponse;
use crate::error::{ApiJson, ApiResult};
use crate::extract::{Actor, Who};

/// Future returned by [`PackService`] methods.
pub type PackFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, XynError>> + Send>>;

/// Installs and removes packs on the running node.
pub trait PackService: Send + Sync {
    /// Verifies and installs `archive` (with its DSSE envelope, if any); returns the record.
    fn install(
        &self,
        archive: Vec<u8>,
        envelope: Option<Vec<u8>>,
        allow_unsigned: bool,
        actor: String,
    ) -> PackFuture<Value>;
    /// The installed packs' records, sorted by id.
    fn list(&self) -> PackFuture<Vec<Value>>;
    /// Removes an installed pack.
    fn remove(&self, id: String, actor: String) -> PackFuture<()>;
}

/// `POST /api/v1/packs`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackUploadRequest {
    /// The pack archive (`xyn pack build`), base64 (standard or URL-safe).
    pub archive: String,
    /// Its signature envelope (`FILE.sig.json`): the JSON object, or its text.
    #[serde(default)]
    pub signature: Option<Value>,
    /// Install without a trusted signature (recorded in the audit log). Default false.
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// Installed packs.
#[derive(serde::Serialize, ToSchema)]
pub struct PackList {
    /// Pack records, sorted by id.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
}

fn service(s: &AppState) -> Result<Arc<dyn PackService>, XynError> {
    s.packs.clone().ok_or_else(|| {
        XynError::new(
            ErrorKind::Unavailable,
            "pack.unavailable",
            "this node does not install packs over the API",
        )
    })
}

fn operator(who: &crate::Principal, what: &str) -> Result<(), XynError> {
    if who.is_operator() {
        Ok(())
    } else {
        Err(XynError::new(
            ErrorKind::Forbidden,
            codes::AUTH_FORBIDDEN,
            format!(
                "{what} needs the operator role; {} is {}",
                who.name,
                who.role.as_str()
            ),
        ))
    }
}

fn decode(field: &str, text: &str) -> Result<Vec<u8>, XynError> {
    let t = text.trim();
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .map_err(|e| {
            XynError::invalid(
                codes::REQUEST_INVALID,
                format!("{field} is not base64: {e}"),
            )
        })
}

/// Uploads a pack and installs it on this node, live: digests verified, a signature by a
/// trusted publisher required (unless `allow_unsigned`), the Xyn range and dependencies
/// checked, then its actions and blueprints applied atomically. Operator role.
#[utoipa::path(post, path = "/api/v1/packs", tag = "packs", request_body = PackUploadRequest,
    responses((status = 201, description = "The installed pack's record", body = Object),
        (status = 403, description = "Not an operator", body = ErrorResponse),
        (status = 413, description = "Over the upload limit", body = ErrorResponse),
        (status = 422, description = "Refused: pack.digest_mismatch, pack.signature_invalid, pack.untrusted_key, pack.unsigned, pack.incompatible, pack.missing_dependency, pack.invalid, pack.too_large", body = ErrorResponse)))]
pub async fn install(
    State(s): State<AppState>,
    Who(who): Who,
    Actor(actor): Actor,
    ApiJson(req): ApiJson<PackUploadRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    operator(&who, "installing a pack")?;
    let svc = service(&s)?;
    let archive = decode("archive", &req.archive)?;
    let envelope =
        match req.signature {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.into_bytes()),
            Some(v @ Value::Object(_)) => Some(serde_json::to_vec(&v).map_err(|e| {
                XynError::invalid(codes::REQUEST_INVALID, format!("signature: {e}"))
            })?),
            Some(_) => {
                return Err(XynError::invalid(
                    codes::REQUEST_INVALID,
                    "signature must be the envelope object or its text",
                )
                .into());
            }
        };
    let rec = svc
        .install(archive, envelope, req.allow_unsigned, actor)
        .await?;
    Ok((StatusCode::CREATED, Json(rec)))
}

/// Lists the installed packs.
#[utoipa::path(get, path = "/api/v1/packs", tag = "packs",
    responses((status = 200, description = "Installed packs", body = PackList)))]
pub async fn list(State(s): State<AppState>) -> ApiResult<Json<PackList>> {
    let items = service(&s)?.list().await?;
    Ok(Json(PackList { items }))
}

/// One installed pack: manifest fields, digests, signers, actions, blueprints and the
/// provenance statement it was signed with.
#[utoipa::path(get, path = "/api/v1/packs/{id}", tag = "packs",
    params(("id" = String, Path, description = "Pack id (ns.name)")),
    responses((status = 200, description = "The pack's record", body = Object),
        (status = 404, description = "Not installed", body = ErrorResponse)))]
pub async fn get_one(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let items = service(&s)?.list().await?;
    items
        .into_iter()
        .find(|r| r["id"] == id.as_str())
        .map(Json)
        .ok_or_else(|| {
            XynError::not_found("pack.not_found", format!("no pack {id:?} is installed")).into()
        })
}

/// Removes an installed pack (its actions go unless another pack provides them; blueprint
/// versions stay). Refused with 409 `pack.in_use` while an unfinished run (waiting ones too)
/// is on a blueprint version the pack installed. Operator role.
#[utoipa::path(delete, path = "/api/v1/packs/{id}", tag = "packs",
    params(("id" = String, Path, description = "Pack id (ns.name)")),
    responses((status = 204, description = "Removed"),
        (status = 403, description = "Not an operator", body = ErrorResponse),
        (status = 404, description = "Not installed", body = ErrorResponse),
        (status = 409, description = "pack.in_use: unfinished runs use its blueprints", body = ErrorResponse)))]
pub async fn remove(
    State(s): State<AppState>,
    Who(who): Who,
    Actor(actor): Actor,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    operator(&who, "removing a pack")?;
    service(&s)?.remove(id, actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
