//! The catalog of platform event names (`xyn.<domain>.<noun>.<verb_or_state>`).

pub const RUN_STARTED: &str = "xyn.run.started";
pub const RUN_COMPLETED: &str = "xyn.run.completed";
pub const RUN_FAILED: &str = "xyn.run.failed";
pub const RUN_CANCELLED: &str = "xyn.run.cancelled";
/// A failed run was retried from its failed step (a new attempt of that step, same run).
pub const RUN_RETRIED: &str = "xyn.run.retried";
/// A run was started again as a new run (on the old run: names the new one).
pub const RUN_RERUN: &str = "xyn.run.rerun";
pub const STEP_STARTED: &str = "xyn.step.started";
pub const STEP_COMPLETED: &str = "xyn.step.completed";
pub const STEP_FAILED: &str = "xyn.step.failed";
pub const STEP_SKIPPED: &str = "xyn.step.skipped";
pub const GATE_WAITING: &str = "xyn.gate.waiting";
pub const GATE_APPROVED: &str = "xyn.gate.approved";
pub const GATE_REJECTED: &str = "xyn.gate.rejected";
pub const ARTIFACT_ATTACHED: &str = "xyn.artifact.attached";
pub const BLUEPRINT_APPLIED: &str = "xyn.blueprint.version.created";
/// A blueprint's trigger was switched off: its events, NATS messages and cron slots start no runs.
pub const BLUEPRINT_TRIGGER_DISABLED: &str = "xyn.blueprint.trigger.disabled";
/// A blueprint's trigger was switched back on.
pub const BLUEPRINT_TRIGGER_ENABLED: &str = "xyn.blueprint.trigger.enabled";
pub const DRAFT_SAVED: &str = "xyn.draft.saved";
pub const DRAFT_VALIDATED: &str = "xyn.draft.validated";
pub const DRAFT_VALIDATION_FAILED: &str = "xyn.draft.validation_failed";
pub const DRAFT_PROMOTED: &str = "xyn.draft.promoted";
pub const CRON_FIRED: &str = "xyn.trigger.cron.fired";
pub const RUN_REQUESTED: &str = "xyn.run.requested";
pub const NODE_STARTED: &str = "xyn.node.started";
/// A sandboxed action used a capability its manifest does not grant.
pub const CAP_DENIED: &str = "xyn.cap.denied";
/// A blueprint's trigger filter failed on an event (the blueprint was not triggered).
pub const TRIGGER_FILTER_FAILED: &str = "xyn.trigger.filter_failed";
/// A sandboxed action package installed into the data directory was registered while the node
/// ran (new, or a new version of one it had).
pub const ACTION_INSTALLED: &str = "xyn.action.installed";
/// A sandboxed action package was removed from the data directory while the node ran.
pub const ACTION_REMOVED: &str = "xyn.action.removed";
