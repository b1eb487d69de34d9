//! Search across runs and events (`GET /api/v1/search`), and reading the short ids people type.
//!
//! A query is read every way it can be at once, each an indexed lookup: as the start of a short
//! id (runs and events), as a whole id, as a whole input value of a run (any case), as a
//! blueprint id and as an event name (or `name.*` pattern). Filters (status, blueprint, a time
//! window) narrow the runs. Every lookup reads at most `limit` rows through an index, so a
//! search costs the same with a hundred runs or a hundred thousand.

use axum::Json;
use axum::extract::State;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use xyn_core::run::Run;
use xyn_core::{IdPattern, RunId, SHORT_ID_LEN, Timestamp, XynError, codes, short_id};
use xyn_store::{EventQuery, RunQuery, Store};

use crate::AppState;
use crate::dto::{ErrorResponse, EventDto, RunDto, parse_limit};
use crate::error::ApiResult;
use crate::extract::{ApiQuery, nz};
use crate::routes::runs::parse_statuses;

/// `GET /api/v1/search` parameters.
#[derive(Deserialize, IntoParams, Default, Clone)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// What to look for: the start of a short id (3 to 8 hex digits) or a whole id of a run or
    /// an event, a whole input value of a run (any case), a blueprint id, or an event name
    /// (`checkmk.*` for a family). Empty: only the filters apply.
    pub q: Option<String>,
    /// Runs in these states, comma-separated: created, running, waiting, completed,
    /// failed, cancelled.
    pub status: Option<String>,
    /// Runs of this blueprint.
    pub blueprint_id: Option<String>,
    /// Runs created at or after this time: RFC 3339, or a day `YYYY-MM-DD` (UTC).
    pub since: Option<String>,
    /// Runs created before this time: RFC 3339, or a day `YYYY-MM-DD` (UTC; the whole day counts).
    pub until: Option<String>,
    /// At most this many runs and this many events (1 to 500, default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
}

/// What a search found.
#[derive(Serialize, ToSchema)]
pub struct SearchResult {
    /// Matching runs: those whose id matches first, then newest first.
    pub runs: Vec<RunDto>,
    /// Matching events, newest first.
    pub events: Vec<EventDto>,
    /// How the query was read: `short_id`, `id`, `input_value`, `blueprint_id`, `event_name`.
    pub read_as: Vec<&'static str>,
}

/// The store-level result of a search (the UI renders it, the API serialises it).
pub struct Hits {
    pub runs: Vec<Run>,
    pub events: Vec<xyn_core::event::StoredEvent>,
    pub read_as: Vec<&'static str>,
}

/// Parses `since`/`until`: RFC 3339, or a UTC day (`until` then means the end of that day).
pub fn parse_time(
    name: &str,
    v: Option<&str>,
    end_of_day: bool,
) -> Result<Option<Timestamp>, XynError> {
    let Some(v) = v else { return Ok(None) };
    if let Some(t) = Timestamp::parse(v) {
        return Ok(Some(t));
    }
    let day = NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
        XynError::bad_request(
            codes::REQUEST_INVALID,
            format!("{name} {v:?} is neither a day (2026-12-04) nor an RFC 3339 time"),
        )
    })?;
    let day = if end_of_day {
        day.succ_opt().unwrap_or(day)
    } else {
        day
    };
    let at = day.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
    Ok(at.map(Timestamp::from_datetime))
}

/// Appends the runs not already there.
fn merge(runs: &mut Vec<Run>, found: Vec<Run>) {
    for r in found {
        if !runs.iter().any(|x| x.run_id == r.run_id) {
            runs.push(r);
        }
    }
}

fn looks_like_event_name(q: &str) -> bool {
    q.contains('.')
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*'))
}

/// Runs one search.
pub async fn search(store: &dyn Store, p: &SearchParams) -> Result<Hits, XynError> {
    let limit = parse_limit(nz(&p.limit))?;
    let base = RunQuery {
        status: parse_statuses(nz(&p.status))?,
        blueprint_id: nz(&p.blueprint_id).map(str::to_string),
        created_since: parse_time("since", nz(&p.since), false)?,
        created_until: parse_time("until", nz(&p.until), true)?,
        limit,
        ..Default::default()
    };
    let mut read_as = Vec::new();
    let Some(q) = nz(&p.q) else {
        let runs = store.list_runs(base).await?.items;
        return Ok(Hits {
            runs,
            events: vec![],
            read_as,
        });
    };
    let mut runs: Vec<Run> = Vec::new();
    let mut events = Vec::new();
    if let Some(pat) = IdPattern::parse(q) {
        read_as.push(match pat {
            IdPattern::Exact(_) => "id",
            IdPattern::Tail(_) => "short_id",
        });
        let by_id = RunQuery {
            id: Some(pat.clone()),
            ..base.clone()
        };
        merge(&mut runs, store.list_runs(by_id).await?.items);
        let ev = EventQuery {
            id: Some(pat.clone()),
            limit,
            ..Default::default()
        };
        events.extend(store.list_events(ev).await?.items);
        if let IdPattern::Exact(u) = pat {
            // A whole run id also finds the run's events.
            let ev = EventQuery {
                run_id: Some(RunId(u)),
                limit,
                ..Default::default()
            };
            for e in store.list_events(ev).await?.items {
                if !events
                    .iter()
                    .any(|x: &xyn_core::event::StoredEvent| x.seq == e.seq)
                {
                    events.push(e);
                }
            }
        }
    }
    let by_value = RunQuery {
        input_value: Some(q.to_string()),
        ..base.clone()
    };
    let found = store.list_runs(by_value).await?.items;
    if !found.is_empty() {
        read_as.push("input_value");
    }
    merge(&mut runs, found);
    if base.blueprint_id.is_none() {
        let by_bp = RunQuery {
            blueprint_id: Some(q.to_string()),
            ..base.clone()
        };
        let found = store.list_runs(by_bp).await?.items;
        if !found.is_empty() {
            read_as.push("blueprint_id");
        }
        merge(&mut runs, found);
    }
    if looks_like_event_name(q) {
        let ev = EventQuery {
            event_name: Some(q.to_string()),
            limit,
            ..Default::default()
        };
        let found = store.list_events(ev).await?.items;
        if !found.is_empty() {
            read_as.push("event_name");
        }
        for e in found {
            if !events.iter().any(|x| x.seq == e.seq) {
                events.push(e);
            }
        }
    }
    runs.truncate(limit);
    events.sort_by_key(|e| std::cmp::Reverse(e.seq));
    events.truncate(limit);
    Ok(Hits {
        runs,
        events,
        read_as,
    })
}

/// Finds runs and events by short id, id, input value, blueprint or event name, narrowed by
/// status, blueprint and a time window.
#[utoipa::path(get, path = "/api/v1/search", tag = "runs", params(SearchParams),
    responses((status = 200, description = "What matched", body = SearchResult),
        (status = 400, description = "A malformed filter", body = ErrorResponse)))]
pub async fn get(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<SearchParams>,
) -> ApiResult<Json<SearchResult>> {
    let hits = search(s.node.store().as_ref(), &p).await?;
    Ok(Json(SearchResult {
        runs: hits.runs.into_iter().map(Into::into).collect(),
        events: hits.events.into_iter().map(Into::into).collect(),
        read_as: hits.read_as,
    }))
}

/// Reads a run id as typed: a whole id, or the start of a short id that names exactly one run.
/// More than one: 409 `run.id_ambiguous` listing them; none: 404 `run.not_found`.
pub async fn resolve_run(store: &dyn Store, typed: &str) -> Result<RunId, XynError> {
    match IdPattern::parse(typed) {
        Some(IdPattern::Exact(u)) => Ok(RunId(u)),
        Some(IdPattern::Tail(t)) => {
            let found = store
                .list_runs(RunQuery {
                    id: Some(IdPattern::Tail(t.clone())),
                    limit: 10,
                    ..Default::default()
                })
                .await?;
            match found.items.as_slice() {
                [] => Err(XynError::not_found(
                    codes::RUN_NOT_FOUND,
                    format!("no run has a short id starting with {t:?}"),
                )),
                [one] => Ok(one.run_id),
                many => {
                    let candidates: Vec<_> = many
                        .iter()
                        .map(|r| {
                            let id = r.run_id.to_string();
                            json!({
                                "run_id": id, "short_id": short_id(&id),
                                "blueprint_id": r.blueprint_id, "status": r.status.as_str(),
                                "created_at": r.created_at.to_string(),
                            })
                        })
                        .collect();
                    let more = if found.next.is_some() { " or more" } else { "" };
                    Err(XynError::conflict(
                        codes::RUN_ID_AMBIGUOUS,
                        format!(
                            "{t:?} is the start of the short ids of {}{more} runs; type more of the id (up to {SHORT_ID_LEN} digits) or all of it",
                            many.len()
                        ),
                    )
                    .with_details(json!({"candidates": candidates})))
                }
            }
        }
        None => Err(XynError::bad_request(
            codes::REQUEST_INVALID_ID,
            format!(
                "run id {typed:?} is neither an id nor the start of a short id (3 to {SHORT_ID_LEN} hex digits)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use serde_json::json;
    use xyn_core::ErrorKind;
    use xyn_core::run::RunStatus;
    use xyn_store::sqlite::{SqliteConfig, SqliteStore};
    use xyn_store::{RunWrite, WriteBatch};

    use super::*;

    fn run(id: &str, inputs: serde_json::Value) -> Run {
        let at = Timestamp::from_micros(1_790_000_000_000_000);
        Run {
            run_id: id.parse().unwrap(),
            name: "bp.s".into(),
            blueprint_id: "bp.s".into(),
            blueprint_version: 1,
            status: RunStatus::Completed,
            created_at: at,
            started_at: Some(at),
            completed_at: None,
            actor: "t".into(),
            correlation_id: "c".into(),
            env_id: "t".into(),
            trigger_event_id: None,
            inputs,
            outputs: None,
            error: None,
            deadline_at: None,
            priority: 0,
            step_executions: 0,
            revision: 0,
        }
    }

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("x.db"), SqliteConfig::default()).unwrap());
        let mut b = WriteBatch::default();
        for (id, host) in [
            ("019ae6b2-1c3d-7a10-8f00-1234abcd5678", "web-1"),
            ("019ae6b2-1c3d-7a10-8f00-1234abce0000", "web-2"),
            ("019ae6b2-1c3d-7a10-8f00-12349999aaaa", "abcd"),
        ] {
            b.runs
                .push(RunWrite::Insert(run(id, json!({"host": host}))));
        }
        s.commit(b).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn a_unique_start_of_a_short_id_names_its_run() {
        let (_d, s) = store().await;
        let id = resolve_run(s.as_ref(), "ABCD5").await.unwrap();
        assert_eq!(id.to_string(), "019ae6b2-1c3d-7a10-8f00-1234abcd5678");
        let id = resolve_run(s.as_ref(), "9999aaaa").await.unwrap();
        assert_eq!(id.to_string(), "019ae6b2-1c3d-7a10-8f00-12349999aaaa");
        // A whole id is taken as it is (the caller's lookup says whether it exists).
        let whole = "019ae6b2-1c3d-7a10-8f00-000000000000";
        assert_eq!(
            resolve_run(s.as_ref(), whole).await.unwrap().to_string(),
            whole
        );
    }

    #[tokio::test]
    async fn an_ambiguous_or_unknown_start_is_refused_clearly() {
        let (_d, s) = store().await;
        let e = resolve_run(s.as_ref(), "abc").await.unwrap_err();
        assert_eq!(
            (e.kind, e.code),
            (ErrorKind::Conflict, codes::RUN_ID_AMBIGUOUS)
        );
        let c = e.details.unwrap()["candidates"].clone();
        let shorts: Vec<&str> = c
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["short_id"].as_str().unwrap())
            .collect();
        assert_eq!(shorts.len(), 2);
        assert!(shorts.contains(&"abcd5678") && shorts.contains(&"abce0000"));
        let e = resolve_run(s.as_ref(), "fff").await.unwrap_err();
        assert_eq!(
            (e.kind, e.code),
            (ErrorKind::NotFound, codes::RUN_NOT_FOUND)
        );
        for bad in ["ab", "web-1", "abcd56789", "' OR 1=1 --", "%"] {
            let e = resolve_run(s.as_ref(), bad).await.unwrap_err();
            assert_eq!(e.code, codes::REQUEST_INVALID_ID, "{bad}");
        }
    }

    #[tokio::test]
    async fn search_reads_the_query_every_way_at_once() {
        let (_d, s) = store().await;
        let q = |q: &str| SearchParams {
            q: Some(q.into()),
            ..Default::default()
        };
        // "abcd" is the start of a short id and also an input value: both are found, the id
        // match first.
        let h = search(s.as_ref(), &q("abcd")).await.unwrap();
        let shorts: Vec<String> = h
            .runs
            .iter()
            .map(|r| short_id(&r.run_id.to_string()).to_string())
            .collect();
        assert_eq!(shorts, vec!["abcd5678", "9999aaaa"]);
        assert_eq!(h.read_as, vec!["short_id", "input_value"]);
        let h = search(s.as_ref(), &q("WEB-2")).await.unwrap();
        assert_eq!(h.runs.len(), 1);
        assert_eq!(h.read_as, vec!["input_value"]);
        let h = search(s.as_ref(), &q("bp.s")).await.unwrap();
        assert_eq!(h.runs.len(), 3);
        assert!(h.read_as.contains(&"blueprint_id"));
        // Filters: a day before the runs finds nothing; a bad day is a clear 400.
        let p = SearchParams {
            until: Some("2026-01-01".into()),
            ..Default::default()
        };
        assert!(search(s.as_ref(), &p).await.unwrap().runs.is_empty());
        let p = SearchParams {
            since: Some("yesterday".into()),
            ..Default::default()
        };
        let e = search(s.as_ref(), &p).await.err().unwrap();
        assert_eq!(e.code, codes::REQUEST_INVALID);
    }

    #[test]
    fn days_and_times_read_as_utc() {
        let t = parse_time("since", Some("2026-12-04"), false)
            .unwrap()
            .unwrap();
        assert_eq!(
            t.to_string(),
            Timestamp::parse("2026-12-04T00:00:00Z")
                .unwrap()
                .to_string()
        );
        let t = parse_time("until", Some("2026-12-04"), true)
            .unwrap()
            .unwrap();
        assert_eq!(
            t.to_string(),
            Timestamp::parse("2026-12-05T00:00:00Z")
                .unwrap()
                .to_string()
        );
        assert!(parse_time("since", None, false).unwrap().is_none());
    }
}
