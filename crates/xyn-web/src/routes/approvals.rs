//! `/api/v1/approvals`: the gates waiting for a decision, oldest first — what the UI's
//! "Needs approval" inbox shows. A run held at a gate has the status `waiting`; its plan runs
//! one step at a time, so it waits at one gate at most.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use xyn_core::run::{RunStatus, Step, StepStatus};
use xyn_core::{ErrorKind, RunId, Timestamp, XynError, codes};
use xyn_store::RunQuery;

use crate::AppState;
use crate::auth::{Principal, Role};
use crate::dto::{decode_cursor, encode_cursor, parse_limit};
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Who, nz};

/// One gate waiting for a decision.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ApprovalDto {
    #[schema(format = Uuid)]
    pub run_id: String,
    pub run_name: String,
    pub blueprint_id: String,
    pub blueprint_version: i64,
    /// The actor that started the run.
    pub run_actor: String,
    pub correlation_id: String,
    /// The run's inputs.
    pub inputs: Value,
    #[schema(format = Uuid)]
    pub step_id: String,
    /// The gate's id in the blueprint.
    pub step: String,
    /// The gate's message, rendered when it opened.
    pub message: Option<String>,
    /// What approving lets happen: the resolved effects of the steps the gate guards
    /// (`{step, action, method, url, event_name, unresolved}`).
    #[schema(value_type = Vec<Object>)]
    pub effects: Value,
    /// When the gate started waiting.
    #[schema(format = DateTime)]
    pub waiting_since: String,
    /// How long it has waited so far.
    pub waited_ms: u64,
    /// Who may decide: principal names and `role:owner` / `role:operator`, as the gate's
    /// `approvers:` declares them; by default every owner and operator. Viewers never.
    pub approvers: Vec<String>,
    /// Whether the caller may decide this gate.
    pub may_decide: bool,
    /// `POST` here (optional body `{"comment"}`) to approve; `…/reject` to reject.
    pub approve_url: String,
    pub reject_url: String,
}

/// A page of waiting gates.
#[derive(Serialize, ToSchema)]
pub struct ApprovalList {
    pub items: Vec<ApprovalDto>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/approvals` parameters.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApprovalParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    pub cursor: Option<String>,
    /// Only gates of this blueprint.
    pub blueprint_id: Option<String>,
    /// `true`: only the gates the caller may decide.
    pub mine: Option<String>,
}

/// Who may decide a gate that names no approvers: every owner and operator.
pub const APPROVERS: &[&str] = &["role:owner", "role:operator"];

/// The approvers a waiting gate recorded when it opened (empty: the default).
pub fn approvers_of(step: &Step) -> Vec<String> {
    step.inputs
        .as_ref()
        .and_then(|i| i.get("approvers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `who` may decide a gate with these approvers. Viewers never; on an open node (no
/// identities) the local operator always; else a listed name or role, or, when the gate names
/// nobody, any owner or operator.
pub fn may_decide(who: &Principal, approvers: &[String]) -> bool {
    if who.role == Role::Viewer {
        return false;
    }
    if who.open || approvers.is_empty() {
        return true;
    }
    approvers.iter().any(|a| match a.strip_prefix("role:") {
        Some(role) => role == who.role.as_str(),
        None => *a == who.name,
    })
}

/// Refuses (403 `gate.not_an_approver`) a decision by someone the gate does not name. A step
/// that is missing or not waiting is left to the decision itself to report.
pub async fn check_decider(
    s: &AppState,
    who: &Principal,
    run_id: RunId,
    step: &str,
) -> Result<(), XynError> {
    let steps = s.node.store().get_steps(run_id).await?;
    let Some(st) = steps
        .iter()
        .find(|x| x.name == step || x.step_id.to_string() == step)
    else {
        return Ok(());
    };
    let approvers = approvers_of(st);
    if st.status != StepStatus::Waiting || may_decide(who, &approvers) {
        return Ok(());
    }
    Err(XynError::new(
        ErrorKind::Forbidden,
        codes::GATE_NOT_AN_APPROVER,
        format!(
            "gate '{}' is decided by {}; {} is not one of them",
            st.name,
            approvers.join(", "),
            who.name
        ),
    )
    .with_details(json!({"approvers": approvers})))
}

/// The waiting gates of one page of waiting runs (newest runs first, as runs are listed).
pub async fn waiting_gates(
    s: &AppState,
    who: &Principal,
    mine: bool,
    blueprint_id: Option<String>,
    before: Option<i64>,
    limit: usize,
) -> Result<(Vec<ApprovalDto>, Option<i64>), XynError> {
    let store = s.node.store();
    let page = store
        .list_runs(RunQuery {
            status: Some(vec![RunStatus::Waiting]),
            blueprint_id,
            before,
            limit,
            ..Default::default()
        })
        .await?;
    let ids: Vec<_> = page.items.iter().map(|r| r.run_id).collect();
    let loaded = store.load_runs(&ids).await?;
    let now = s.node.now();
    let mut out = Vec::with_capacity(loaded.len());
    // Keep the order of the run listing.
    for id in ids {
        let Some(l) = loaded.iter().find(|l| l.run.run_id == id) else {
            continue;
        };
        for st in l.steps.iter().filter(|st| st.status == StepStatus::Waiting) {
            let g = gate_dto(&l.run, st, now, who);
            if g.may_decide || !mine {
                out.push(g);
            }
        }
    }
    Ok((out, page.next))
}

fn gate_dto(run: &xyn_core::run::Run, st: &Step, now: Timestamp, who: &Principal) -> ApprovalDto {
    let declared = approvers_of(st);
    let may = may_decide(who, &declared);
    let inputs = st.inputs.clone().unwrap_or(Value::Null);
    let since = st.started_at.unwrap_or(run.created_at);
    let base = format!("/api/v1/runs/{}/steps/{}", run.run_id, st.step_id);
    ApprovalDto {
        run_id: run.run_id.to_string(),
        run_name: run.name.clone(),
        blueprint_id: run.blueprint_id.clone(),
        blueprint_version: run.blueprint_version,
        run_actor: run.actor.clone(),
        correlation_id: run.correlation_id.clone(),
        inputs: run.inputs.clone(),
        step_id: st.step_id.to_string(),
        step: st.name.clone(),
        message: inputs
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string),
        effects: inputs
            .get("effects")
            .cloned()
            .filter(Value::is_array)
            .unwrap_or_else(|| Value::Array(vec![])),
        waiting_since: since.to_string(),
        waited_ms: now.ms_since(since),
        approvers: if declared.is_empty() {
            APPROVERS.iter().map(|r| r.to_string()).collect()
        } else {
            declared
        },
        may_decide: may,
        approve_url: format!("{base}/approve"),
        reject_url: format!("{base}/reject"),
    }
}

/// How many gates wait for a decision, counted up to `cap` (the inbox badge shows `cap+`).
pub async fn waiting_count(s: &AppState, cap: usize) -> Result<usize, XynError> {
    let page = s
        .node
        .store()
        .list_runs(RunQuery {
            status: Some(vec![RunStatus::Waiting]),
            limit: cap,
            ..Default::default()
        })
        .await?;
    Ok(page.items.len())
}

/// The gates waiting for a decision: the inbox of approvals. Each item names the run, the
/// gate's message and the effects approving lets happen, how long it has waited, who may decide
/// it (and whether the caller may: `mine=true` keeps only those), and the URLs that decide it. Runs held at a gate are also listed by `GET /api/v1/runs?status=waiting`.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "runs", params(ApprovalParams),
    responses((status = 200, description = "A page of waiting gates, newest run first", body = ApprovalList)))]
pub async fn list(
    State(s): State<AppState>,
    Who(who): Who,
    ApiQuery(p): ApiQuery<ApprovalParams>,
) -> ApiResult<Json<ApprovalList>> {
    let mine = match nz(&p.mine) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(XynError::bad_request(
                codes::REQUEST_INVALID,
                format!("mine must be true or false, not {other:?}"),
            )
            .into());
        }
    };
    let (items, next) = waiting_gates(
        &s,
        &who,
        mine,
        nz(&p.blueprint_id).map(str::to_string),
        decode_cursor(nz(&p.cursor))?,
        parse_limit(nz(&p.limit))?,
    )
    .await?;
    Ok(Json(ApprovalList {
        items,
        next_cursor: encode_cursor(next),
    }))
}
