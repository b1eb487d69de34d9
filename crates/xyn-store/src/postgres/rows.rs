//! Mapping between records and PostgreSQL rows. Column lists are shared with the SQLite
//! adapter's (`crate::sqlite::rows`), so both read the same shapes.

use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;
use xyn_core::Timestamp;
use xyn_core::blueprint::StepKind;
use xyn_core::event::{Event, Resource, StoredEvent};
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft, DraftStatus};
use xyn_core::run::{Run, RunStatus, Step, StepStatus};

use crate::{StoreError, StoreResult, parse_json};

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize, what: &str) -> StoreResult<T> {
    r.try_get(i).map_err(|e| corrupt(what, e))
}

fn id<T: std::str::FromStr>(r: &Row, i: usize, what: &str) -> StoreResult<T> {
    let s: String = get(r, i, what)?;
    s.parse()
        .map_err(|_| corrupt(what, format!("bad id {s:?}")))
}

fn opt_id<T: std::str::FromStr>(r: &Row, i: usize, what: &str) -> StoreResult<Option<T>> {
    match get::<Option<String>>(r, i, what)? {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| corrupt(what, format!("bad id {s:?}"))),
    }
}

fn opt_ts(r: &Row, i: usize, what: &str) -> StoreResult<Option<Timestamp>> {
    Ok(get::<Option<i64>>(r, i, what)?.map(Timestamp::from_micros))
}

fn ts(r: &Row, i: usize, what: &str) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_micros(get(r, i, what)?))
}

fn json(r: &Row, i: usize, what: &str) -> StoreResult<Value> {
    let s: String = get(r, i, what)?;
    parse_json(&s, what)
}

fn opt_json(r: &Row, i: usize, what: &str) -> StoreResult<Option<Value>> {
    match get::<Option<String>>(r, i, what)? {
        None => Ok(None),
        Some(s) => parse_json(&s, what).map(Some),
    }
}

/// [`crate::sqlite::rows::EVENT_COLS`] order.
pub(crate) fn event(r: &Row) -> StoreResult<StoredEvent> {
    let what = "event";
    let rt: Option<String> = get(r, 9, what)?;
    let rid: Option<String> = get(r, 10, what)?;
    Ok(StoredEvent {
        seq: get(r, 0, what)?,
        hash: get(r, 12, what)?,
        event: Event {
            event_id: id(r, 1, what)?,
            event_name: get(r, 2, what)?,
            occurred_at: ts(r, 3, what)?,
            env_id: get(r, 4, what)?,
            actor: get(r, 5, what)?,
            correlation_id: get(r, 6, what)?,
            run_id: opt_id(r, 7, what)?,
            step_id: opt_id(r, 8, what)?,
            resource: match (rt, rid) {
                (Some(kind), Some(id)) => Some(Resource { kind, id }),
                _ => None,
            },
            data: json(r, 11, "event data")?,
        },
    })
}

/// `id` first, then the run columns.
pub(crate) fn run(r: &Row) -> StoreResult<(i64, Run)> {
    let what = "run";
    let status: String = get(r, 5, what)?;
    Ok((
        get(r, 0, what)?,
        Run {
            run_id: id(r, 1, what)?,
            name: get(r, 2, what)?,
            blueprint_id: get(r, 3, what)?,
            blueprint_version: get(r, 4, what)?,
            status: RunStatus::parse(&status)
                .ok_or_else(|| corrupt(what, format!("bad status {status:?}")))?,
            created_at: ts(r, 6, what)?,
            started_at: opt_ts(r, 7, what)?,
            completed_at: opt_ts(r, 8, what)?,
            actor: get(r, 9, what)?,
            correlation_id: get(r, 10, what)?,
            env_id: get(r, 11, what)?,
            trigger_event_id: opt_id(r, 12, what)?,
            inputs: json(r, 13, "run inputs")?,
            outputs: opt_json(r, 14, what)?,
            error: opt_json(r, 15, what)?,
            deadline_at: opt_ts(r, 16, what)?,
            priority: get(r, 17, what)?,
            step_executions: get::<i64>(r, 18, what)? as u32,
            revision: get(r, 19, what)?,
        },
    ))
}

pub(crate) fn step(r: &Row) -> StoreResult<Step> {
    let what = "step";
    let kind: String = get(r, 4, what)?;
    let status: String = get(r, 5, what)?;
    Ok(Step {
        step_id: id(r, 0, what)?,
        run_id: id(r, 1, what)?,
        name: get(r, 2, what)?,
        idx: get::<i64>(r, 3, what)? as u32,
        kind: StepKind::parse(&kind).ok_or_else(|| corrupt(what, format!("bad kind {kind:?}")))?,
        status: StepStatus::parse(&status)
            .ok_or_else(|| corrupt(what, format!("bad status {status:?}")))?,
        attempt: get::<i64>(r, 6, what)? as u32,
        started_at: opt_ts(r, 7, what)?,
        completed_at: opt_ts(r, 8, what)?,
        inputs: opt_json(r, 9, what)?,
        outputs: opt_json(r, 10, what)?,
        error: opt_json(r, 11, what)?,
        next_attempt_at: opt_ts(r, 12, what)?,
        decided_by: get(r, 13, what)?,
        decision_comment: get(r, 14, what)?,
        logs_artifact_id: opt_id(r, 15, what)?,
    })
}

/// `id` first.
pub(crate) fn artifact(r: &Row) -> StoreResult<(i64, Artifact)> {
    let what = "artifact";
    Ok((
        get(r, 0, what)?,
        Artifact {
            artifact_id: id(r, 1, what)?,
            name: get(r, 2, what)?,
            kind: get(r, 3, what)?,
            content_type: get(r, 4, what)?,
            byte_length: get(r, 5, what)?,
            sha256: get(r, 6, what)?,
            created_at: ts(r, 7, what)?,
            created_by: get(r, 8, what)?,
            run_id: opt_id(r, 9, what)?,
            step_id: opt_id(r, 10, what)?,
            metadata: json(r, 11, "artifact metadata")?,
        },
    ))
}

/// `id` first.
pub(crate) fn footprint(r: &Row) -> StoreResult<(i64, Footprint)> {
    let what = "footprint";
    Ok((
        get(r, 0, what)?,
        Footprint {
            occurred_at: ts(r, 1, what)?,
            run_id: opt_id(r, 2, what)?,
            step_id: opt_id(r, 3, what)?,
            source_kind: get(r, 4, what)?,
            source_ref: get(r, 5, what)?,
            metric: get(r, 6, what)?,
            quantity: get(r, 7, what)?,
            unit: get(r, 8, what)?,
            class: get(r, 9, what)?,
            dims: json(r, 10, "footprint dims")?,
        },
    ))
}

pub(crate) fn blueprint(r: &Row) -> StoreResult<BlueprintVersion> {
    let what = "blueprint";
    Ok(BlueprintVersion {
        blueprint_id: get(r, 0, what)?,
        version: get(r, 1, what)?,
        name: get(r, 2, what)?,
        definition: json(r, 3, "blueprint definition")?,
        source: get(r, 4, what)?,
        digest: get(r, 5, what)?,
        created_at: ts(r, 6, what)?,
        created_by: get(r, 7, what)?,
        origin: get(r, 8, what)?,
    })
}

/// `id` first.
pub(crate) fn draft(r: &Row) -> StoreResult<(i64, Draft)> {
    let what = "draft";
    let status: String = get(r, 4, what)?;
    Ok((
        get(r, 0, what)?,
        Draft {
            draft_id: id(r, 1, what)?,
            name: get(r, 2, what)?,
            kind: get(r, 3, what)?,
            status: DraftStatus::parse(&status)
                .ok_or_else(|| corrupt(what, format!("bad status {status:?}")))?,
            revision: get(r, 5, what)?,
            trigger_event_type: get(r, 6, what)?,
            definition: get(r, 7, what)?,
            definition_artifact_id: opt_id(r, 8, what)?,
            notes: get(r, 9, what)?,
            source_run_id: opt_id(r, 10, what)?,
            validation: opt_json(r, 11, what)?,
            promoted_version: get(r, 12, what)?,
            created_at: ts(r, 13, what)?,
            updated_at: ts(r, 14, what)?,
        },
    ))
}
