//! Mapping between records and SQLite rows.

use rusqlite::{Row, types::Value as SqlValue};
use serde_json::Value;
use xyn_core::blueprint::StepKind;
use xyn_core::event::{Event, Resource, StoredEvent};
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft, DraftStatus};
use xyn_core::run::{Run, RunStatus, Step, StepStatus};
use xyn_core::{ArtifactId, DraftId, EventId, RunId, StepId, Timestamp};

use crate::{StoreError, StoreResult, parse_json};

pub(crate) fn ts(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::as_micros)
}

pub(crate) fn json_text(v: &Value) -> String {
    v.to_string()
}

pub(crate) fn opt_json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(json_text)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn get<T: rusqlite::types::FromSql>(r: &Row<'_>, i: usize, what: &str) -> StoreResult<T> {
    r.get(i).map_err(|e| corrupt(what, e))
}

fn uuid_col<T: std::str::FromStr>(r: &Row<'_>, i: usize, what: &str) -> StoreResult<T> {
    let s: String = get(r, i, what)?;
    s.parse()
        .map_err(|_| corrupt(what, format!("bad id {s:?}")))
}

fn opt_uuid_col<T: std::str::FromStr>(r: &Row<'_>, i: usize, what: &str) -> StoreResult<Option<T>> {
    let s: Option<String> = get(r, i, what)?;
    match s {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| corrupt(what, format!("bad id {s:?}"))),
    }
}

fn opt_ts(r: &Row<'_>, i: usize, what: &str) -> StoreResult<Option<Timestamp>> {
    Ok(get::<Option<i64>>(r, i, what)?.map(Timestamp::from_micros))
}

fn opt_json(r: &Row<'_>, i: usize, what: &str) -> StoreResult<Option<Value>> {
    match get::<Option<String>>(r, i, what)? {
        None => Ok(None),
        Some(s) => parse_json(&s, what).map(Some),
    }
}

pub(crate) const EVENT_COLS: &str = "seq, event_id, event_name, occurred_at, env_id, actor, correlation_id, run_id, step_id, resource_type, resource_id, data, hash";

/// `data` is the event data's JSON text (canonical, computed once with the hash).
pub(crate) fn event_params(seq: i64, e: &Event, data: String, hash: &str) -> [SqlValue; 13] {
    [
        SqlValue::Integer(seq),
        SqlValue::Text(e.event_id.to_string()),
        SqlValue::Text(e.event_name.clone()),
        SqlValue::Integer(e.occurred_at.as_micros()),
        SqlValue::Text(e.env_id.clone()),
        SqlValue::Text(e.actor.clone()),
        SqlValue::Text(e.correlation_id.clone()),
        opt_text(e.run_id.map(|r| r.to_string())),
        opt_text(e.step_id.map(|s| s.to_string())),
        opt_text(e.resource.as_ref().map(|r| r.kind.clone())),
        opt_text(e.resource.as_ref().map(|r| r.id.clone())),
        SqlValue::Text(data),
        SqlValue::Text(hash.to_string()),
    ]
}

fn opt_text(s: Option<String>) -> SqlValue {
    s.map_or(SqlValue::Null, SqlValue::Text)
}

pub(crate) fn event_from_row(r: &Row<'_>) -> StoreResult<StoredEvent> {
    let what = "event";
    let rt: Option<String> = get(r, 9, what)?;
    let rid: Option<String> = get(r, 10, what)?;
    let data: String = get(r, 11, what)?;
    Ok(StoredEvent {
        seq: get(r, 0, what)?,
        hash: get(r, 12, what)?,
        event: Event {
            event_id: uuid_col::<EventId>(r, 1, what)?,
            event_name: get(r, 2, what)?,
            occurred_at: Timestamp::from_micros(get(r, 3, what)?),
            env_id: get(r, 4, what)?,
            actor: get(r, 5, what)?,
            correlation_id: get(r, 6, what)?,
            run_id: opt_uuid_col::<RunId>(r, 7, what)?,
            step_id: opt_uuid_col::<StepId>(r, 8, what)?,
            resource: match (rt, rid) {
                (Some(kind), Some(id)) => Some(Resource { kind, id }),
                _ => None,
            },
            data: parse_json(&data, "event data")?,
        },
    })
}

pub(crate) const RUN_COLS: &str = "run_id, name, blueprint_id, blueprint_version, status, created_at, started_at, completed_at, actor, correlation_id, env_id, trigger_event_id, inputs, outputs, error, deadline_at, priority, step_executions, revision";

pub(crate) fn run_params(r: &Run) -> [SqlValue; 19] {
    [
        SqlValue::Text(r.run_id.to_string()),
        SqlValue::Text(r.name.clone()),
        SqlValue::Text(r.blueprint_id.clone()),
        SqlValue::Integer(r.blueprint_version),
        SqlValue::Text(r.status.as_str().into()),
        SqlValue::Integer(r.created_at.as_micros()),
        opt_int(ts(r.started_at)),
        opt_int(ts(r.completed_at)),
        SqlValue::Text(r.actor.clone()),
        SqlValue::Text(r.correlation_id.clone()),
        SqlValue::Text(r.env_id.clone()),
        opt_text(r.trigger_event_id.map(|e| e.to_string())),
        SqlValue::Text(json_text(&r.inputs)),
        opt_text(opt_json_text(&r.outputs)),
        opt_text(opt_json_text(&r.error)),
        opt_int(ts(r.deadline_at)),
        SqlValue::Integer(r.priority),
        SqlValue::Integer(r.step_executions as i64),
        SqlValue::Integer(r.revision),
    ]
}

fn opt_int(v: Option<i64>) -> SqlValue {
    v.map_or(SqlValue::Null, SqlValue::Integer)
}

/// `id` first, then [`RUN_COLS`].
pub(crate) fn run_from_row(r: &Row<'_>) -> StoreResult<(i64, Run)> {
    let what = "run";
    let status: String = get(r, 5, what)?;
    let inputs: String = get(r, 13, what)?;
    Ok((
        get(r, 0, what)?,
        Run {
            run_id: uuid_col(r, 1, what)?,
            name: get(r, 2, what)?,
            blueprint_id: get(r, 3, what)?,
            blueprint_version: get(r, 4, what)?,
            status: RunStatus::parse(&status)
                .ok_or_else(|| corrupt(what, format!("bad status {status:?}")))?,
            created_at: Timestamp::from_micros(get(r, 6, what)?),
            started_at: opt_ts(r, 7, what)?,
            completed_at: opt_ts(r, 8, what)?,
            actor: get(r, 9, what)?,
            correlation_id: get(r, 10, what)?,
            env_id: get(r, 11, what)?,
            trigger_event_id: opt_uuid_col(r, 12, what)?,
            inputs: parse_json(&inputs, "run inputs")?,
            outputs: opt_json(r, 14, what)?,
            error: opt_json(r, 15, what)?,
            deadline_at: opt_ts(r, 16, what)?,
            priority: get(r, 17, what)?,
            step_executions: get::<i64>(r, 18, what)? as u32,
            revision: get(r, 19, what)?,
        },
    ))
}

pub(crate) const STEP_COLS: &str = "step_id, run_id, name, idx, kind, status, attempt, started_at, completed_at, inputs, outputs, error, next_attempt_at, decided_by, decision_comment, logs_artifact_id";

pub(crate) fn step_params(s: &Step) -> [SqlValue; 16] {
    [
        SqlValue::Text(s.step_id.to_string()),
        SqlValue::Text(s.run_id.to_string()),
        SqlValue::Text(s.name.clone()),
        SqlValue::Integer(s.idx as i64),
        SqlValue::Text(s.kind.as_str().into()),
        SqlValue::Text(s.status.as_str().into()),
        SqlValue::Integer(s.attempt as i64),
        opt_int(ts(s.started_at)),
        opt_int(ts(s.completed_at)),
        opt_text(opt_json_text(&s.inputs)),
        opt_text(opt_json_text(&s.outputs)),
        opt_text(opt_json_text(&s.error)),
        opt_int(ts(s.next_attempt_at)),
        opt_text(s.decided_by.clone()),
        opt_text(s.decision_comment.clone()),
        opt_text(s.logs_artifact_id.map(|a| a.to_string())),
    ]
}

pub(crate) fn step_from_row(r: &Row<'_>) -> StoreResult<Step> {
    let what = "step";
    let kind: String = get(r, 4, what)?;
    let status: String = get(r, 5, what)?;
    Ok(Step {
        step_id: uuid_col(r, 0, what)?,
        run_id: uuid_col(r, 1, what)?,
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
        logs_artifact_id: opt_uuid_col::<ArtifactId>(r, 15, what)?,
    })
}

pub(crate) const ARTIFACT_COLS: &str = "artifact_id, name, kind, content_type, byte_length, sha256, created_at, created_by, run_id, step_id, metadata";

pub(crate) fn artifact_params(a: &Artifact) -> [SqlValue; 11] {
    [
        SqlValue::Text(a.artifact_id.to_string()),
        SqlValue::Text(a.name.clone()),
        SqlValue::Text(a.kind.clone()),
        SqlValue::Text(a.content_type.clone()),
        SqlValue::Integer(a.byte_length),
        SqlValue::Text(a.sha256.clone()),
        SqlValue::Integer(a.created_at.as_micros()),
        SqlValue::Text(a.created_by.clone()),
        opt_text(a.run_id.map(|r| r.to_string())),
        opt_text(a.step_id.map(|s| s.to_string())),
        SqlValue::Text(json_text(&a.metadata)),
    ]
}

/// `id` first, then [`ARTIFACT_COLS`].
pub(crate) fn artifact_from_row(r: &Row<'_>) -> StoreResult<(i64, Artifact)> {
    let what = "artifact";
    let meta: String = get(r, 11, what)?;
    Ok((
        get(r, 0, what)?,
        Artifact {
            artifact_id: uuid_col(r, 1, what)?,
            name: get(r, 2, what)?,
            kind: get(r, 3, what)?,
            content_type: get(r, 4, what)?,
            byte_length: get(r, 5, what)?,
            sha256: get(r, 6, what)?,
            created_at: Timestamp::from_micros(get(r, 7, what)?),
            created_by: get(r, 8, what)?,
            run_id: opt_uuid_col(r, 9, what)?,
            step_id: opt_uuid_col(r, 10, what)?,
            metadata: parse_json(&meta, "artifact metadata")?,
        },
    ))
}

pub(crate) const FOOTPRINT_COLS: &str =
    "occurred_at, run_id, step_id, source_kind, source_ref, metric, quantity, unit, class, dims";

pub(crate) fn footprint_params(f: &Footprint) -> [SqlValue; 10] {
    [
        SqlValue::Integer(f.occurred_at.as_micros()),
        opt_text(f.run_id.map(|r| r.to_string())),
        opt_text(f.step_id.map(|s| s.to_string())),
        SqlValue::Text(f.source_kind.clone()),
        SqlValue::Text(f.source_ref.clone()),
        SqlValue::Text(f.metric.clone()),
        SqlValue::Real(f.quantity),
        SqlValue::Text(f.unit.clone()),
        SqlValue::Text(f.class.clone()),
        SqlValue::Text(json_text(&f.dims)),
    ]
}

/// `id` first, then [`FOOTPRINT_COLS`].
pub(crate) fn footprint_from_row(r: &Row<'_>) -> StoreResult<(i64, Footprint)> {
    let what = "footprint";
    let dims: String = get(r, 10, what)?;
    Ok((
        get(r, 0, what)?,
        Footprint {
            occurred_at: Timestamp::from_micros(get(r, 1, what)?),
            run_id: opt_uuid_col(r, 2, what)?,
            step_id: opt_uuid_col(r, 3, what)?,
            source_kind: get(r, 4, what)?,
            source_ref: get(r, 5, what)?,
            metric: get(r, 6, what)?,
            quantity: get(r, 7, what)?,
            unit: get(r, 8, what)?,
            class: get(r, 9, what)?,
            dims: parse_json(&dims, "footprint dims")?,
        },
    ))
}

pub(crate) const BLUEPRINT_COLS: &str =
    "blueprint_id, version, name, definition, source, digest, created_at, created_by, origin";

pub(crate) fn blueprint_params(b: &BlueprintVersion) -> [SqlValue; 9] {
    [
        SqlValue::Text(b.blueprint_id.clone()),
        SqlValue::Integer(b.version),
        SqlValue::Text(b.name.clone()),
        SqlValue::Text(json_text(&b.definition)),
        SqlValue::Text(b.source.clone()),
        SqlValue::Text(b.digest.clone()),
        SqlValue::Integer(b.created_at.as_micros()),
        SqlValue::Text(b.created_by.clone()),
        SqlValue::Text(b.origin.clone()),
    ]
}

pub(crate) fn blueprint_from_row(r: &Row<'_>) -> StoreResult<BlueprintVersion> {
    let what = "blueprint";
    let def: String = get(r, 3, what)?;
    Ok(BlueprintVersion {
        blueprint_id: get(r, 0, what)?,
        version: get(r, 1, what)?,
        name: get(r, 2, what)?,
        definition: parse_json(&def, "blueprint definition")?,
        source: get(r, 4, what)?,
        digest: get(r, 5, what)?,
        created_at: Timestamp::from_micros(get(r, 6, what)?),
        created_by: get(r, 7, what)?,
        origin: get(r, 8, what)?,
    })
}

pub(crate) const DRAFT_COLS: &str = "draft_id, name, kind, status, revision, trigger_event_type, definition, definition_artifact_id, notes, source_run_id, validation, promoted_version, created_at, updated_at";

pub(crate) fn draft_params(d: &Draft) -> [SqlValue; 14] {
    [
        SqlValue::Text(d.draft_id.to_string()),
        SqlValue::Text(d.name.clone()),
        SqlValue::Text(d.kind.clone()),
        SqlValue::Text(d.status.as_str().into()),
        SqlValue::Integer(d.revision),
        opt_text(d.trigger_event_type.clone()),
        SqlValue::Text(d.definition.clone()),
        opt_text(d.definition_artifact_id.map(|a| a.to_string())),
        opt_text(d.notes.clone()),
        opt_text(d.source_run_id.map(|r| r.to_string())),
        opt_text(opt_json_text(&d.validation)),
        opt_int(d.promoted_version),
        SqlValue::Integer(d.created_at.as_micros()),
        SqlValue::Integer(d.updated_at.as_micros()),
    ]
}

/// `id` first, then [`DRAFT_COLS`].
pub(crate) fn draft_from_row(r: &Row<'_>) -> StoreResult<(i64, Draft)> {
    let what = "draft";
    let status: String = get(r, 4, what)?;
    Ok((
        get(r, 0, what)?,
        Draft {
            draft_id: uuid_col::<DraftId>(r, 1, what)?,
            name: get(r, 2, what)?,
            kind: get(r, 3, what)?,
            status: DraftStatus::parse(&status)
                .ok_or_else(|| corrupt(what, format!("bad status {status:?}")))?,
            revision: get(r, 5, what)?,
            trigger_event_type: get(r, 6, what)?,
            definition: get(r, 7, what)?,
            definition_artifact_id: opt_uuid_col(r, 8, what)?,
            notes: get(r, 9, what)?,
            source_run_id: opt_uuid_col(r, 10, what)?,
            validation: opt_json(r, 11, what)?,
            promoted_version: get(r, 12, what)?,
            created_at: Timestamp::from_micros(get(r, 13, what)?),
            updated_at: Timestamp::from_micros(get(r, 14, what)?),
        },
    ))
}
