//! Runs and success rate per blueprint, for the blueprints list and the blueprint page, from
//! the store's per-blueprint run counts (an aggregate kept as runs are written: reading it costs
//! one row per blueprint and status, whatever the number of runs).

use std::collections::BTreeMap;

use serde::Serialize;
use xyn_store::BlueprintRunCount;

/// One blueprint's runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunStats {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Created, running or waiting.
    pub active: u64,
    /// Completed runs as a whole percentage of the completed and failed ones (cancelled runs
    /// were stopped on purpose and are not counted); none before any of them finished.
    pub success_rate: Option<u64>,
    pub last_run_at: Option<String>,
}

/// The counts, per blueprint.
pub fn by_blueprint(rows: &[BlueprintRunCount]) -> BTreeMap<String, RunStats> {
    let mut out: BTreeMap<String, RunStats> = BTreeMap::new();
    let mut last: BTreeMap<&str, xyn_core::Timestamp> = BTreeMap::new();
    for r in rows {
        let s = out.entry(r.blueprint_id.clone()).or_default();
        s.total += r.runs;
        match r.status.as_str() {
            "completed" => s.completed += r.runs,
            "failed" => s.failed += r.runs,
            "cancelled" => s.cancelled += r.runs,
            _ => s.active += r.runs,
        }
        if let Some(t) = r.last_created_at {
            let e = last.entry(&r.blueprint_id).or_insert(t);
            if t > *e {
                *e = t;
            }
        }
    }
    for (id, s) in &mut out {
        let decided = s.completed + s.failed;
        s.success_rate = (decided > 0).then(|| (s.completed * 100 + decided / 2) / decided);
        s.last_run_at = last.get(id.as_str()).map(ToString::to_string);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use xyn_core::Timestamp;

    fn row(id: &str, status: &str, runs: u64, at: i64) -> BlueprintRunCount {
        BlueprintRunCount {
            blueprint_id: id.into(),
            status: status.into(),
            runs,
            last_created_at: Some(Timestamp::from_micros(at)),
        }
    }

    #[test]
    fn counts_rates_and_the_newest_run() {
        let s = by_blueprint(&[
            row("a", "completed", 2, 10),
            row("a", "failed", 1, 30),
            row("a", "cancelled", 5, 20),
            row("a", "running", 1, 5),
            row("b", "waiting", 1, 7),
        ]);
        let a = &s["a"];
        assert_eq!(
            (a.total, a.completed, a.failed, a.cancelled, a.active),
            (9, 2, 1, 5, 1)
        );
        // 2 of 3 finished by themselves: 67 %.
        assert_eq!(a.success_rate, Some(67));
        assert_eq!(
            a.last_run_at.as_deref(),
            Some(Timestamp::from_micros(30).to_string().as_str())
        );
        assert_eq!(s["b"].success_rate, None);
        assert_eq!(s["b"].total, 1);
        assert!(!s.contains_key("c"));
    }
}
