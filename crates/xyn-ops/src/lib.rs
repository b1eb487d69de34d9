//! Operating Xyn as code: SLOs written as OpenSLO v1 documents ([`openslo`]) whose ratio SLIs
//! are PromQL queries ([`promql`], parsed by the `promql-parser` crate), evaluated into a
//! promote / rollback / inconclusive decision with the error budget left, and the SRE
//! workbook's multi-window burn-rate alerts ([`burn`]).

pub mod burn;
pub mod openslo;
pub mod promql;

/// Stable codes of refusals.
pub mod codes {
    pub const SLO_INVALID: &str = "slo.invalid";
    pub const SLO_UNSUPPORTED: &str = "slo.unsupported";
    pub const PROMQL_INVALID: &str = "promql.invalid";
    pub const PROMQL_UNSUPPORTED: &str = "promql.unsupported";
    pub const METRICS_UNREADABLE: &str = "metrics.unreadable";
}

/// A refusal with a stable code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct OpsError {
    pub code: &'static str,
    pub message: String,
}

impl OpsError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The outcome of an SLO evaluation, with x07-wasm's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The objective is met: exit 0.
    Promote,
    /// The objective is missed: exit 2.
    Rollback,
    /// No events in the window: exit 3.
    Inconclusive,
}

impl Decision {
    pub fn exit_code(self) -> u8 {
        match self {
            Decision::Promote => 0,
            Decision::Rollback => 2,
            Decision::Inconclusive => 3,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Promote => "promote",
            Decision::Rollback => "rollback",
            Decision::Inconclusive => "inconclusive",
        }
    }
}

/// Decides on `good` out of `total` events against `target` (0 < target < 1).
pub fn decide(good: f64, total: f64, target: f64) -> Decision {
    // NaN counts as no events too.
    if total.is_nan() || total <= 0.0 {
        return Decision::Inconclusive;
    }
    if good / total >= target {
        Decision::Promote
    } else {
        Decision::Rollback
    }
}

/// The share of the error budget left: 1 when nothing failed, 0 when exactly spent,
/// negative when overspent. `None` without events.
pub fn budget_remaining(good: f64, total: f64, target: f64) -> Option<f64> {
    (total > 0.0).then(|| 1.0 - (1.0 - good / total) / (1.0 - target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_and_budget() {
        assert_eq!(decide(99.0, 100.0, 0.99), Decision::Promote);
        assert_eq!(decide(98.0, 100.0, 0.99), Decision::Rollback);
        assert_eq!(decide(0.0, 0.0, 0.99), Decision::Inconclusive);
        assert_eq!(budget_remaining(100.0, 100.0, 0.99), Some(1.0));
        assert!((budget_remaining(99.5, 100.0, 0.99).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(budget_remaining(0.0, 0.0, 0.99), None);
    }
}
