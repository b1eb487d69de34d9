//! Helpers for reads: limits, keyset pages, row mapping and the WHERE clauses of filters.

use super::*;

// ---------------------------------------------------------------------------------------------
// Reads.

pub(super) fn limit(n: usize) -> i64 {
    n.clamp(1, 1000) as i64
}

pub(super) fn paginate<T>(mut rows: Vec<(i64, T)>, lim: i64) -> Page<T> {
    let next = if rows.len() as i64 > lim {
        rows.truncate(lim as usize);
        rows.last().map(|(k, _)| *k)
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(|(_, t)| t).collect(),
        next,
    }
}

pub(super) fn map_rows<T>(rows: &[Row], f: impl Fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(f).collect()
}

/// SQL for an event-name filter: exact, `prefix.*` (one more segment) or `prefix.**`.
/// SQL for an id filter on `col`: the whole id, or a range of the short-id index
/// (`substr(col, 29)` in the C collation, the last eight digits).
pub(super) fn id_filter(col: &str, p: &IdPattern, args: &mut Params) -> String {
    match p {
        IdPattern::Exact(u) => {
            args.push(Box::new(u.hyphenated().to_string()));
            format!("{col} = ${}", args.len())
        }
        IdPattern::Tail(t) => {
            let (from, to) = IdPattern::range(t);
            args.push(Box::new(from));
            args.push(Box::new(to));
            let n = args.len();
            format!(
                "substr({col}, 29) COLLATE \"C\" >= ${} AND substr({col}, 29) COLLATE \"C\" < ${n}",
                n - 1
            )
        }
    }
}

pub(super) fn name_filter(name: &str, args: &mut Params) -> String {
    if let Some(prefix) = name.strip_suffix(".**") {
        args.push(Box::new(format!("{prefix}.")));
        args.push(Box::new(format!("{prefix}/")));
        let n = args.len();
        format!("event_name >= ${} AND event_name < ${n}", n - 1)
    } else if let Some(prefix) = name.strip_suffix(".*") {
        args.push(Box::new(format!("{prefix}.")));
        args.push(Box::new(format!("{prefix}/")));
        let n = args.len();
        format!(
            "event_name >= ${} AND event_name < ${n} AND strpos(substr(event_name, {}), '.') = 0",
            n - 1,
            prefix.len() + 2
        )
    } else {
        args.push(Box::new(name.to_string()));
        format!("event_name = ${}", args.len())
    }
}

pub(super) fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    }
}

/// Runs per blueprint and status, from the aggregate the `runs` trigger keeps.
pub(super) const BLUEPRINT_RUN_COUNTS: &str = "SELECT blueprint_id, status, runs, last_created_at \
     FROM blueprint_run_counts WHERE runs > 0 ORDER BY blueprint_id, status";

pub(super) fn blueprint_run_count(r: &Row) -> StoreResult<BlueprintRunCount> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(format!("blueprint_run_counts: {e}"));
    Ok(BlueprintRunCount {
        blueprint_id: r.try_get(0).map_err(get)?,
        status: r.try_get(1).map_err(get)?,
        runs: r.try_get::<_, i64>(2).map_err(get)?.max(0) as u64,
        last_created_at: r
            .try_get::<_, Option<i64>>(3)
            .map_err(get)?
            .map(Timestamp::from_micros),
    })
}

pub(super) const BLUEPRINT_TRIGGERS: &str = "SELECT blueprint_id, enabled, changed_at, changed_by \
     FROM blueprint_triggers ORDER BY blueprint_id";

pub(super) fn blueprint_trigger(r: &Row) -> StoreResult<BlueprintTrigger> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(format!("blueprint_triggers: {e}"));
    Ok(BlueprintTrigger {
        blueprint_id: r.try_get(0).map_err(get)?,
        enabled: r.try_get(1).map_err(get)?,
        changed_at: Timestamp::from_micros(r.try_get(2).map_err(get)?),
        changed_by: r.try_get(3).map_err(get)?,
    })
}
