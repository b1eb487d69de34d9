//! Helpers of the read side: page limits, pagination, row collection and the id and event-name
//! filters the list queries share.

use super::*;

pub(super) fn limit(n: usize) -> i64 {
    n.clamp(1, 1000) as i64
}

/// Splits a page fetched with one extra row into items and the next key.
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

pub(super) fn collect<T>(
    conn: &Connection,
    sql: &str,
    args: Vec<rusqlite::types::Value>,
    f: impl Fn(&rusqlite::Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(unavailable)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(unavailable)? {
        out.push(f(r)?);
    }
    Ok(out)
}

/// SQL for an id filter on `col`: the whole id, or a range of the short-id index
/// (`substr(col, 29)`, the last eight digits).
pub(super) fn id_filter(
    col: &str,
    p: &IdPattern,
    args: &mut Vec<rusqlite::types::Value>,
) -> String {
    match p {
        IdPattern::Exact(u) => {
            args.push(u.hyphenated().to_string().into());
            format!("{col} = ?{}", args.len())
        }
        IdPattern::Tail(t) => {
            let (from, to) = IdPattern::range(t);
            args.push(from.into());
            args.push(to.into());
            let n = args.len();
            format!(
                "substr({col}, 29) >= ?{} AND substr({col}, 29) < ?{n}",
                n - 1
            )
        }
    }
}

/// SQL for an event-name filter: exact, `prefix.*` (one more segment) or `prefix.**`.
pub(super) fn name_filter(name: &str, args: &mut Vec<rusqlite::types::Value>) -> String {
    use rusqlite::types::Value as V;
    if let Some(prefix) = name.strip_suffix(".**") {
        args.push(V::Text(format!("{prefix}.")));
        args.push(V::Text(format!("{prefix}/")));
        let n = args.len();
        format!("event_name >= ?{} AND event_name < ?{n}", n - 1)
    } else if let Some(prefix) = name.strip_suffix(".*") {
        args.push(V::Text(format!("{prefix}.")));
        args.push(V::Text(format!("{prefix}/")));
        let n = args.len();
        format!(
            "event_name >= ?{} AND event_name < ?{n} AND instr(substr(event_name, {}), '.') = 0",
            n - 1,
            prefix.len() + 2
        )
    } else {
        args.push(V::Text(name.to_string()));
        format!("event_name = ?{}", args.len())
    }
}

/// Runs per blueprint and status, from the aggregate the `runs` triggers keep.
pub(super) fn blueprint_run_counts(conn: &Connection) -> StoreResult<Vec<BlueprintRunCount>> {
    collect(
        conn,
        "SELECT blueprint_id, status, runs, last_created_at FROM blueprint_run_counts \
         WHERE runs > 0 ORDER BY blueprint_id, status",
        vec![],
        |r| {
            let get =
                |e: rusqlite::Error| StoreError::Corrupt(format!("blueprint_run_counts: {e}"));
            Ok(BlueprintRunCount {
                blueprint_id: r.get(0).map_err(get)?,
                status: r.get(1).map_err(get)?,
                runs: r.get::<_, i64>(2).map_err(get)?.max(0) as u64,
                last_created_at: r
                    .get::<_, Option<i64>>(3)
                    .map_err(get)?
                    .map(Timestamp::from_micros),
            })
        },
    )
}

/// Every blueprint's trigger switch that was ever set.
pub(super) fn blueprint_triggers(conn: &Connection) -> StoreResult<Vec<BlueprintTrigger>> {
    collect(
        conn,
        "SELECT blueprint_id, enabled, changed_at, changed_by FROM blueprint_triggers \
         ORDER BY blueprint_id",
        vec![],
        |r| {
            let get = |e: rusqlite::Error| StoreError::Corrupt(format!("blueprint_triggers: {e}"));
            Ok(BlueprintTrigger {
                blueprint_id: r.get(0).map_err(get)?,
                enabled: r.get(1).map_err(get)?,
                changed_at: Timestamp::from_micros(r.get(2).map_err(get)?),
                changed_by: r.get(3).map_err(get)?,
            })
        },
    )
}
