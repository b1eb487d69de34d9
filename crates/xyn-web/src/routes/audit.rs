use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::dto::{AuditReportDto, NoParams};
use crate::error::ApiResult;
use crate::extract::ApiQuery;

/// Walks the hash-chained event log and names the first broken seq, if any (200 either way;
/// `ok` tells).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The verification report", body = AuditReportDto)))]
pub async fn verify(
    State(s): State<AppState>,
    ApiQuery(_): ApiQuery<NoParams>,
) -> ApiResult<Json<AuditReportDto>> {
    Ok(Json(s.node.store().verify_chain().await?.into()))
}
