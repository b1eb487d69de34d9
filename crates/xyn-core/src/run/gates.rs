//! Approval gates in the run machine: opening a gate, deciding it (approve, reject, expiry)
//! and following the gates that are still open when the run's status is computed.

use super::*;

impl RunMachine {
    /// Opens a gate: the step waits for a decision.
    pub fn open_gate(
        &mut self,
        ids: &dyn IdSource,
        now: Timestamp,
        idx: usize,
        message: Option<String>,
        effects: Value,
    ) {
        let timeout_ms = self.plan.steps[idx].timeout_ms;
        let approvers = match &self.plan.steps[idx].body {
            StepBody::Gate { approvers, .. } => approvers.clone(),
            _ => vec![],
        };
        let step = &mut self.steps[idx];
        step.status = StepStatus::Waiting;
        step.attempt += 1;
        step.started_at = Some(now);
        // What the gate approves: the effects of the action steps it guards, resolved; and
        // who may decide (empty: anyone who may write).
        step.inputs = Some(json!({"message": message, "effects": effects, "approvers": approvers}));
        let name = step.name.clone();
        self.run.step_executions += 1;
        self.changes.run_changed = true;
        self.follow_gates();
        self.touch_step(idx);
        self.emit(
            ids,
            now,
            names::GATE_WAITING,
            "system",
            Some(idx),
            json!({
                "step": name,
                "message": message,
                "effects": effects,
                "approvers": approvers,
                "timeout_at": timeout_ms.map(|t| now.plus_ms(t).to_string()),
            }),
        );
    }

    /// Records a decision on a waiting gate. The caller checked that it waits.
    pub fn decide_gate(
        &mut self,
        ids: &dyn IdSource,
        now: Timestamp,
        idx: usize,
        approved: bool,
        actor: &str,
        comment: Option<String>,
    ) {
        let on_reject = match &self.plan.steps[idx].body {
            StepBody::Gate { on_reject, .. } => *on_reject,
            _ => OnReject::Fail,
        };
        self.touch_step(idx);
        let step = &mut self.steps[idx];
        step.decided_by = Some(actor.to_string());
        step.decision_comment = comment.clone();
        step.completed_at = Some(now);
        let wall_ms = step.started_at.map_or(0, |s| now.ms_since(s));
        let name = step.name.clone();
        let decision = json!({
            "approved": approved,
            "decided_by": actor,
            "comment": comment,
            "decided_at": now.to_string(),
        });
        if approved {
            step.status = StepStatus::Completed;
            step.outputs = Some(decision.clone());
            step.error = None;
        } else {
            step.status = StepStatus::Failed;
            step.outputs = Some(decision.clone());
            step.error = Some(json!({
                "code": "gate.rejected",
                "message": format!("rejected by {actor}"),
                "comment": comment,
            }));
        }
        self.step_footprints(now, idx, wall_ms);
        self.follow_gates();
        self.emit(
            ids,
            now,
            if approved {
                names::GATE_APPROVED
            } else {
                names::GATE_REJECTED
            },
            actor,
            Some(idx),
            json!({"step": name, "comment": comment, "waited_ms": wall_ms}),
        );
        if !approved {
            let (status, code) = match on_reject {
                OnReject::Fail => (RunStatus::Failed, "gate.rejected"),
                OnReject::Cancel => (RunStatus::Cancelled, "gate.rejected"),
            };
            let err = json!({
                "code": code,
                "message": format!("gate '{name}' was rejected by {actor}"),
                "step": name,
                "comment": comment,
            });
            self.skip_remaining(ids, now, "run ended at a rejected gate");
            self.finish(ids, now, status, None, Some(err), actor);
        }
    }

    /// A gate whose decision deadline passed fails.
    pub fn time_out_gate(&mut self, ids: &dyn IdSource, now: Timestamp, idx: usize) {
        let t = self.plan.steps[idx].timeout_ms.unwrap_or(0);
        let err = error_value(
            "gate.timed_out",
            format!(
                "no decision within {}",
                crate::duration::format_duration_ms(t)
            ),
        );
        self.fail_step(ids, now, idx, err, false);
        self.follow_gates();
    }

    /// Keeps the run's status in step with its gates: `waiting` while a gate waits for a
    /// decision, `running` again once none does. Called by every transition that opens or
    /// closes a gate, so the status is written in the same batch as the gate's event.
    pub(super) fn follow_gates(&mut self) {
        if !matches!(self.run.status, RunStatus::Running | RunStatus::Waiting) {
            return;
        }
        let waiting = self.steps.iter().any(|s| s.status == StepStatus::Waiting);
        let status = if waiting {
            RunStatus::Waiting
        } else {
            RunStatus::Running
        };
        if status != self.run.status {
            self.run.status = status;
            self.changes.run_changed = true;
        }
    }
}
