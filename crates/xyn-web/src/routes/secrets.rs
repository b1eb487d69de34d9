//! `/api/v1/secrets`: the secret store's metadata, and write-only values. A value is accepted
//! by `PUT` and never returned by any route. Who may touch a path: `sys/…` (system secrets)
//! the operator role only; `team/…` owners and operators. Listing shows an owner the `team/`
//! paths only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use xyn_core::{ErrorKind, XynError, codes};
use xyn_secrets::{Scope, SecretMeta, SecretPath, SecretValue};

use crate::AppState;
use crate::auth::Principal;
use crate::dto::ErrorResponse;
use crate::error::{ApiJson, ApiResult};
use crate::extract::{Actor, ApiQuery, Cid, Who};

/// A secret's metadata (never its value).
#[derive(Serialize, ToSchema)]
pub struct SecretMetaDto {
    /// sys/<env_id>/providers/<name>, sys/<env_id>/integrations/<name> or team/<team_id>/<name>.
    pub path: String,
    /// The latest version (1, 2, …).
    pub version: i64,
    /// How many versions are kept.
    pub versions: i64,
    pub created_at: String,
    pub updated_at: String,
    pub updated_by: String,
}

impl From<SecretMeta> for SecretMetaDto {
    fn from(m: SecretMeta) -> Self {
        Self {
            path: m.path,
            version: m.version,
            versions: m.versions,
            created_at: m.created_at.to_string(),
            updated_at: m.updated_at.to_string(),
            updated_by: m.updated_by,
        }
    }
}

/// Secrets, by path.
#[derive(Serialize, ToSchema)]
pub struct SecretList {
    pub items: Vec<SecretMetaDto>,
}

/// Filters of the list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SecretListParams {
    /// Only paths starting with this.
    pub prefix: Option<String>,
}

/// `PUT /api/v1/secrets/{path}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretPutRequest {
    /// The value (write-only: no route returns it).
    pub value: String,
}

pub(crate) fn allowed(who: &Principal, path: &SecretPath) -> Result<(), XynError> {
    match path.scope() {
        Scope::Team { .. } => Ok(()),
        Scope::System { .. } if who.is_operator() => Ok(()),
        Scope::System { .. } => Err(XynError::new(
            ErrorKind::Forbidden,
            codes::AUTH_FORBIDDEN,
            format!(
                "system secrets (sys/…) need the operator role; {} is {}",
                who.name,
                who.role.as_str()
            ),
        )),
    }
}

/// Lists secrets (metadata only: path, versions, who changed them and when). Owners see the
/// `team/` paths, operators all.
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", params(SecretListParams),
    responses((status = 200, description = "Secrets, by path", body = SecretList),
        (status = 422, description = "secret.path_invalid: a bad prefix", body = ErrorResponse)))]
pub async fn list(
    State(s): State<AppState>,
    Who(who): Who,
    ApiQuery(q): ApiQuery<SecretListParams>,
) -> ApiResult<Json<SecretList>> {
    let items = s
        .node
        .list_secrets(q.prefix.as_deref().unwrap_or(""))
        .await?
        .into_iter()
        .filter(|m| who.is_operator() || m.path.starts_with("team/"))
        .map(SecretMetaDto::from)
        .collect();
    Ok(Json(SecretList { items }))
}

/// Stores a new version of a secret. The value is write-only. `sys/…` needs the operator role.
#[utoipa::path(put, path = "/api/v1/secrets/{*path}", tag = "secrets", request_body = SecretPutRequest,
    params(("path" = String, Path, description = "The secret's path, e.g. team/payments/db (slashes as they are)")),
    responses((status = 200, description = "The secret's metadata after the write", body = SecretMetaDto),
        (status = 403, description = "Not allowed for this path", body = ErrorResponse),
        (status = 422, description = "secret.path_invalid, secret.value_invalid", body = ErrorResponse)))]
pub async fn put(
    State(s): State<AppState>,
    Who(who): Who,
    Actor(actor): Actor,
    Cid(cid): Cid,
    Path(path): Path<String>,
    ApiJson(req): ApiJson<SecretPutRequest>,
) -> ApiResult<Json<SecretMetaDto>> {
    let path = SecretPath::parse(&path)?;
    allowed(&who, &path)?;
    let value = SecretValue::new(req.value)?;
    let meta = s.node.put_secret(&path, value, &actor, Some(cid)).await?;
    Ok(Json(meta.into()))
}

/// Removes a secret and all its versions. `sys/…` needs the operator role.
#[utoipa::path(delete, path = "/api/v1/secrets/{*path}", tag = "secrets",
    params(("path" = String, Path, description = "The secret's path, e.g. team/payments/db (slashes as they are)")),
    responses((status = 204, description = "Removed"),
        (status = 403, description = "Not allowed for this path", body = ErrorResponse),
        (status = 404, description = "secret.not_found", body = ErrorResponse)))]
pub async fn remove(
    State(s): State<AppState>,
    Who(who): Who,
    Actor(actor): Actor,
    Cid(cid): Cid,
    Path(path): Path<String>,
) -> ApiResult<StatusCode> {
    let path = SecretPath::parse(&path)?;
    allowed(&who, &path)?;
    s.node.delete_secret(&path, &actor, Some(cid)).await?;
    Ok(StatusCode::NO_CONTENT)
}
