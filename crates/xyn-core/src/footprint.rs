//! Footprints: measured consumption.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{RunId, StepId};
use crate::time::Timestamp;

pub const RUN_COUNT: &str = "run.count";
pub const STEP_COUNT: &str = "step.count";
/// Working wall time of a step attempt (gates excluded: see [`GATE_WAIT_MS`]).
pub const WALL_MS: &str = "wall_ms";
/// Time a gate waited for its decision: waiting for a person, not working.
pub const GATE_WAIT_MS: &str = "gate_wait_ms";
pub const TOKENS_IN: &str = "tokens_in";
pub const TOKENS_OUT: &str = "tokens_out";
pub const REQUEST_COUNT: &str = "request_count";
pub const BYTES_IN: &str = "bytes_in";
pub const BYTES_OUT: &str = "bytes_out";
pub const ARTIFACT_BYTES_WRITTEN: &str = "artifact_bytes_written";
/// Capability calls of a sandboxed action (`dims.capability` names which).
pub const CAP_CALLS: &str = "cap_calls";

/// One measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    pub occurred_at: Timestamp,
    pub run_id: Option<RunId>,
    pub step_id: Option<StepId>,
    /// What emitted it: `run`, `step`, `agent`, `action`, `artifact`.
    pub source_kind: String,
    /// Which one: the blueprint id, step name, `provider/model`, action name, …
    pub source_ref: String,
    pub metric: String,
    pub quantity: f64,
    pub unit: String,
    /// Policy-facing classifier (`internal`, `billable`, …).
    pub class: String,
    pub dims: Value,
}

impl Footprint {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        occurred_at: Timestamp,
        run_id: Option<RunId>,
        step_id: Option<StepId>,
        source_kind: &str,
        source_ref: &str,
        metric: &str,
        quantity: f64,
        unit: &str,
        dims: Value,
    ) -> Self {
        Self {
            occurred_at,
            run_id,
            step_id,
            source_kind: source_kind.into(),
            source_ref: source_ref.into(),
            metric: metric.into(),
            quantity,
            unit: unit.into(),
            class: "internal".into(),
            dims,
        }
    }
}
