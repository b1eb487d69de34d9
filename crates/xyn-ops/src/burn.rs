//! Multi-window, multi-burn-rate alerts (the SRE workbook, "Alerting on SLOs"): an alert fires
//! when the error budget burns at least `factor` times the sustainable rate over both a long
//! and a short window. Burn rate = error ratio / (1 − target).
//!
//! Comparisons are exact: counts are integers, the target is in parts per million and the
//! factor in tenths, so a burn of exactly 14.4 fires and one event less does not (floating
//! point would put `0.144` on either side of the line).

/// One alert rule of the workbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub long_secs: u64,
    pub short_secs: u64,
    /// The burn-rate factor, in tenths (144 = 14.4×).
    pub factor_tenths: u64,
    pub severity: &'static str,
}

/// The workbook's three rules: 14.4× over 1 h and 5 m, 6× over 6 h and 30 m (pages),
/// 1× over 3 d and 6 h (ticket).
pub const WORKBOOK: [Rule; 3] = [
    Rule {
        long_secs: 3600,
        short_secs: 300,
        factor_tenths: 144,
        severity: "page",
    },
    Rule {
        long_secs: 6 * 3600,
        short_secs: 1800,
        factor_tenths: 60,
        severity: "page",
    },
    Rule {
        long_secs: 3 * 86400,
        short_secs: 6 * 3600,
        factor_tenths: 10,
        severity: "ticket",
    },
];

/// Bad and total events in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub bad: u64,
    pub total: u64,
}

/// A target such as 0.999 in parts per million (999000), checked to be in (0, 1).
pub fn target_ppm(target: f64) -> Option<u64> {
    let ppm = (target * 1_000_000.0).round();
    (ppm > 0.0 && ppm < 1_000_000.0).then_some(ppm as u64)
}

/// The burn rate of `c` (for display).
pub fn burn_rate(c: Counts, target_ppm: u64) -> Option<f64> {
    (c.total > 0)
        .then(|| (c.bad as f64 / c.total as f64) / ((1_000_000 - target_ppm) as f64 / 1_000_000.0))
}

/// Whether `c` burns at least `factor_tenths / 10` times the budget, exactly:
/// `bad / total ≥ factor × (1 − target)` ⇔ `bad × 10 × 10⁶ ≥ factor_tenths × total × (10⁶ − target_ppm)`.
pub fn burns_at_least(c: Counts, target_ppm: u64, factor_tenths: u64) -> bool {
    if c.total == 0 {
        return false;
    }
    let lhs = u128::from(c.bad) * 10 * 1_000_000;
    let rhs = u128::from(factor_tenths) * u128::from(c.total) * u128::from(1_000_000 - target_ppm);
    lhs >= rhs
}

/// An alert that fires: its rule and the burn rates over both windows.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub rule: Rule,
    pub long_burn: f64,
    pub short_burn: f64,
}

/// Evaluates the workbook's rules; `counts(secs)` gives the bad and total events over the
/// last `secs` seconds.
pub fn alerts(target_ppm: u64, mut counts: impl FnMut(u64) -> Counts) -> Vec<Alert> {
    let mut out = Vec::new();
    for rule in WORKBOOK {
        let long = counts(rule.long_secs);
        let short = counts(rule.short_secs);
        if burns_at_least(long, target_ppm, rule.factor_tenths)
            && burns_at_least(short, target_ppm, rule.factor_tenths)
        {
            out.push(Alert {
                rule,
                long_burn: burn_rate(long, target_ppm).unwrap_or(0.0),
                short_burn: burn_rate(short, target_ppm).unwrap_or(0.0),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Synthetic traffic: 1,000,000 events per window, `bad[i]` of them bad in window i.
    fn windows(bad: &[(u64, u64)]) -> impl FnMut(u64) -> Counts + '_ {
        move |secs| {
            let b = bad.iter().find(|(s, _)| *s == secs).map_or(0, |x| x.1);
            Counts {
                bad: b,
                total: 1_000_000,
            }
        }
    }

    const T: u64 = 999_000; // 99.9 %: a budget of 1,000 bad events per million.

    #[test]
    fn each_rule_fires_exactly_at_its_threshold() {
        // 14.4× of 0.1 % is 1.44 %: 14,400 bad events per million.
        for (rule, at) in [(0usize, 14_400u64), (1, 6_000), (2, 1_000)] {
            let r = WORKBOOK[rule];
            let fired = alerts(T, windows(&[(r.long_secs, at), (r.short_secs, at)]));
            assert!(fired.iter().any(|a| a.rule == r), "rule {rule} at {at}");
            let below = alerts(T, windows(&[(r.long_secs, at - 1), (r.short_secs, at)]));
            assert!(!below.iter().any(|a| a.rule == r), "rule {rule} long below");
            let below = alerts(T, windows(&[(r.long_secs, at), (r.short_secs, at - 1)]));
            assert!(
                !below.iter().any(|a| a.rule == r),
                "rule {rule} short below"
            );
        }
    }

    #[test]
    fn burn_rates_are_reported() {
        let fired = alerts(T, windows(&[(3600, 14_400), (300, 20_000)]));
        assert_eq!(fired.len(), 1);
        assert!((fired[0].long_burn - 14.4).abs() < 1e-9);
        assert!((fired[0].short_burn - 20.0).abs() < 1e-9);
        assert!(alerts(T, |_| Counts::default()).is_empty());
    }

    #[test]
    fn exactness_where_floating_point_would_wobble() {
        // 99 %: 14.4 × 1 % = 14.4 %; 144 of 1,000 fires, 143 does not.
        let t = target_ppm(0.99).unwrap();
        assert!(burns_at_least(
            Counts {
                bad: 144,
                total: 1000
            },
            t,
            144
        ));
        assert!(!burns_at_least(
            Counts {
                bad: 143,
                total: 1000
            },
            t,
            144
        ));
        assert_eq!(target_ppm(1.0), None);
        assert_eq!(target_ppm(0.0), None);
    }
}
