//! OpenSLO v1 `kind: SLO` documents with a `ratioMetric` SLI whose `metricSource` is
//! `type: prometheus`, evaluated into a [`Report`]: the SLI over the window, the error budget
//! left, a [`Decision`], and (where the source has history) the burn rates and alerts of the
//! workbook's windows.

use std::time::Duration;

use promql_parser::parser::Expr;
use serde::Deserialize;

use crate::burn::{self, Counts};
use crate::{Decision, OpsError, codes, promql};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    indicator: Option<Indicator>,
    #[serde(default)]
    indicator_ref: Option<String>,
    #[serde(default)]
    time_window: Vec<TimeWindow>,
    objectives: Vec<Objective>,
}

#[derive(Debug, Deserialize)]
struct Indicator {
    spec: IndicatorSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndicatorSpec {
    #[serde(default)]
    ratio_metric: Option<RatioMetric>,
    #[serde(default)]
    threshold_metric: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RatioMetric {
    good: Option<MetricRef>,
    bad: Option<MetricRef>,
    total: MetricRef,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetricRef {
    metric_source: MetricSource,
}

#[derive(Debug, Deserialize)]
struct MetricSource {
    #[serde(rename = "type")]
    kind: String,
    spec: SourceSpec,
}

#[derive(Debug, Deserialize)]
struct SourceSpec {
    query: String,
}

#[derive(Debug, Deserialize)]
struct TimeWindow {
    duration: String,
}

#[derive(Debug, Deserialize)]
struct Objective {
    target: f64,
}

/// A parsed SLO.
#[derive(Debug, Clone)]
pub struct Slo {
    pub name: String,
    pub target: f64,
    pub window: Duration,
    /// Good events, or bad events when `bad` is set.
    pub numerator: Expr,
    pub bad: bool,
    pub total: Expr,
}

fn invalid(m: impl Into<String>) -> OpsError {
    OpsError::new(codes::SLO_INVALID, m)
}

/// An OpenSLO duration: `30s`, `5m`, `1h`, `28d`, `1w`.
pub fn parse_duration(s: &str) -> Result<Duration, OpsError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| invalid(format!("{s:?} is not a duration like 1h or 28d")))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(invalid(format!("{s:?}: the unit must be s, m, h, d or w"))),
    };
    n.checked_mul(secs)
        .filter(|&v| v > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| invalid(format!("{s:?} is out of range")))
}

fn query_of(m: &MetricRef) -> Result<Expr, OpsError> {
    if m.metric_source.kind != "prometheus" {
        return Err(OpsError::new(
            codes::SLO_UNSUPPORTED,
            format!(
                "metricSource type {:?}: only prometheus is supported",
                m.metric_source.kind
            ),
        ));
    }
    promql::parse(&m.metric_source.spec.query)
}

/// Parses one OpenSLO v1 SLO document (YAML or JSON).
pub fn parse(text: &str) -> Result<Slo, OpsError> {
    let doc: Doc = serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if doc.api_version != "openslo/v1" || doc.kind != "SLO" {
        return Err(invalid(format!(
            "expected apiVersion openslo/v1 and kind SLO, found {} {}",
            doc.api_version, doc.kind
        )));
    }
    if doc.spec.indicator_ref.is_some() {
        return Err(OpsError::new(
            codes::SLO_UNSUPPORTED,
            "indicatorRef: inline the SLI (spec.indicator)",
        ));
    }
    let ind = doc
        .spec
        .indicator
        .ok_or_else(|| invalid("spec.indicator is missing"))?;
    if ind.spec.threshold_metric.is_some() {
        return Err(OpsError::new(
            codes::SLO_UNSUPPORTED,
            "thresholdMetric SLIs are not supported yet; use ratioMetric",
        ));
    }
    let ratio = ind
        .spec
        .ratio_metric
        .ok_or_else(|| invalid("spec.indicator.spec.ratioMetric is missing"))?;
    let (numerator, bad) = match (&ratio.good, &ratio.bad) {
        (Some(g), None) => (query_of(g)?, false),
        (None, Some(b)) => (query_of(b)?, true),
        _ => return Err(invalid("ratioMetric needs exactly one of good and bad")),
    };
    let total = query_of(&ratio.total)?;
    let [objective] = doc.spec.objectives.as_slice() else {
        return Err(invalid("exactly one objective is supported"));
    };
    if !(objective.target > 0.0 && objective.target < 1.0) {
        return Err(invalid(format!(
            "target {} must be between 0 and 1",
            objective.target
        )));
    }
    let window = match doc.spec.time_window.as_slice() {
        [w] => parse_duration(&w.duration)?,
        _ => return Err(invalid("exactly one timeWindow is needed")),
    };
    Ok(Slo {
        name: doc.metadata.name,
        target: objective.target,
        window,
        numerator,
        bad,
        total,
    })
}

/// What an evaluation found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub slo: String,
    pub window_seconds: u64,
    pub target: f64,
    pub good: f64,
    pub total: f64,
    pub sli: Option<f64>,
    pub error_budget_remaining: Option<f64>,
    pub decision: &'static str,
    /// `(window seconds, burn rate)` for each window of the workbook, when the source has
    /// history.
    pub burn_rates: Vec<(u64, Option<f64>)>,
    /// Alerts that fire: severity, long and short window.
    pub alerts: Vec<String>,
    #[serde(skip)]
    pub exit: Decision,
}

/// Evaluates `slo`: `query(expr, window)` answers one PromQL expression over `window` (a
/// single value, `None` for no data). `history`: the source can answer shorter windows
/// (a Prometheus server), so burn rates are computed.
pub fn evaluate(
    slo: &Slo,
    window: Option<Duration>,
    history: bool,
    mut query: impl FnMut(&Expr, Duration) -> Result<Option<f64>, OpsError>,
) -> Result<Report, OpsError> {
    let window = window.unwrap_or(slo.window);
    let mut counts = |w: Duration| -> Result<(f64, f64), OpsError> {
        let num = query(&slo.numerator, w)?.unwrap_or(0.0);
        let total = query(&slo.total, w)?.unwrap_or(0.0);
        let good = if slo.bad { total - num } else { num };
        Ok((good.max(0.0), total.max(0.0)))
    };
    let (good, total) = counts(window)?;
    let decision = crate::decide(good, total, slo.target);
    let mut burn_rates = Vec::new();
    let mut alerts = Vec::new();
    if history && let Some(ppm) = burn::target_ppm(slo.target) {
        let mut cache = std::collections::BTreeMap::new();
        let mut windows = Vec::new();
        for r in burn::WORKBOOK {
            windows.push(r.short_secs);
            windows.push(r.long_secs);
        }
        windows.sort_unstable();
        windows.dedup();
        for secs in windows {
            let (g, t) = counts(Duration::from_secs(secs))?;
            let c = Counts {
                bad: (t - g).round().max(0.0) as u64,
                total: t.round() as u64,
            };
            burn_rates.push((secs, burn::burn_rate(c, ppm)));
            cache.insert(secs, c);
        }
        for a in burn::alerts(ppm, |s| cache.get(&s).copied().unwrap_or_default()) {
            alerts.push(format!(
                "{}: burn {:.2}x over {}s and {:.2}x over {}s (threshold {}x)",
                a.rule.severity,
                a.long_burn,
                a.rule.long_secs,
                a.short_burn,
                a.rule.short_secs,
                a.rule.factor_tenths as f64 / 10.0
            ));
        }
    }
    Ok(Report {
        slo: slo.name.clone(),
        window_seconds: window.as_secs(),
        target: slo.target,
        good,
        total,
        sli: (total > 0.0).then(|| good / total),
        error_budget_remaining: crate::budget_remaining(good, total, slo.target),
        decision: decision.as_str(),
        burn_rates,
        alerts,
        exit: decision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn doc(good: &str, total: &str, target: f64) -> String {
        format!(
            "apiVersion: openslo/v1\nkind: SLO\nmetadata:\n  name: s\nspec:\n  service: xyn\n  budgetingMethod: Occurrences\n  timeWindow:\n    - duration: 1h\n      isRolling: true\n  objectives:\n    - target: {target}\n  indicator:\n    metadata:\n      name: i\n    spec:\n      ratioMetric:\n        counter: true\n        good:\n          metricSource:\n            type: prometheus\n            spec:\n              query: '{good}'\n        total:\n          metricSource:\n            type: prometheus\n            spec:\n              query: '{total}'\n"
        )
    }

    fn eval_on(text: &str, slo: &str) -> Report {
        let snap = promql::Snapshot::parse(text).unwrap();
        let slo = parse(slo).unwrap();
        evaluate(&slo, None, false, |e, w| {
            promql::eval(e, &snap, w)?.single()
        })
        .unwrap()
    }

    const TEXT: &str = "xyn_runs_total{blueprint=\"a\",status=\"completed\"} 99\n\
        xyn_runs_total{blueprint=\"a\",status=\"failed\"} 1\n\
        xyn_runs_total{blueprint=\"b\",status=\"failed\"} 5\n";

    #[test]
    fn promote_rollback_inconclusive() {
        let q = |bp: &str| {
            (
                format!(
                    "sum(increase(xyn_runs_total{{blueprint=\"{bp}\",status=\"completed\"}}[1h])) or vector(0)"
                ),
                format!("sum(increase(xyn_runs_total{{blueprint=\"{bp}\"}}[1h])) or vector(0)"),
            )
        };
        let (g, t) = q("a");
        let r = eval_on(TEXT, &doc(&g, &t, 0.99));
        assert_eq!((r.exit, r.good, r.total), (Decision::Promote, 99.0, 100.0));
        assert!(r.error_budget_remaining.unwrap().abs() < 1e-9);
        let r = eval_on(TEXT, &doc(&g, &t, 0.995));
        assert_eq!(r.exit, Decision::Rollback);
        let (g, t) = q("none");
        let r = eval_on(TEXT, &doc(&g, &t, 0.99));
        assert_eq!(r.exit, Decision::Inconclusive);
        assert_eq!(r.sli, None);
    }

    #[test]
    fn burn_rates_from_a_source_with_history() {
        // 99.9 %: 1.44 % bad in every window fires both pages and the ticket.
        let slo = parse(&doc("sum(rate(good[5m]))", "sum(rate(all[5m]))", 0.999)).unwrap();
        let r = evaluate(&slo, None, true, |e, _| {
            Ok(Some(if e.to_string().contains("good") {
                98_560.0
            } else {
                100_000.0
            }))
        })
        .unwrap();
        assert_eq!(r.alerts.len(), 3, "{:?}", r.alerts);
        assert!(
            r.burn_rates
                .iter()
                .all(|(_, b)| (b.unwrap() - 14.4).abs() < 1e-6)
        );
        let r = evaluate(&slo, None, true, |e, _| {
            Ok(Some(if e.to_string().contains("good") {
                98_561.0
            } else {
                100_000.0
            }))
        })
        .unwrap();
        assert_eq!(
            r.alerts.len(),
            2,
            "just under 14.4x: only the 6x page and the ticket"
        );
    }

    #[test]
    fn refusals_have_codes() {
        assert_eq!(parse("kind: SLO").unwrap_err().code, codes::SLO_INVALID);
        let bad_source = doc("x", "y", 0.9).replacen("type: prometheus", "type: datadog", 1);
        assert_eq!(parse(&bad_source).unwrap_err().code, codes::SLO_UNSUPPORTED);
        assert_eq!(
            parse(&doc("sum(", "y", 0.9)).unwrap_err().code,
            codes::PROMQL_INVALID
        );
        assert_eq!(
            parse(&doc("x", "y", 1.5)).unwrap_err().code,
            codes::SLO_INVALID
        );
        assert_eq!(
            parse_duration("28d").unwrap(),
            Duration::from_secs(28 * 86400)
        );
        assert!(parse_duration("5y").is_err());
    }
}
