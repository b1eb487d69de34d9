//! Column arrays: how a group of batches becomes the arrays that the writer's set-based
//! `unnest` statements take, one struct per table.

use super::*;

/// Column arrays for one table, and which batch each row came from.
#[derive(Default)]
pub(super) struct RunCols {
    pub(super) pos: Vec<usize>,
    pub(super) run_id: Vec<String>,
    pub(super) name: Vec<String>,
    pub(super) blueprint_id: Vec<String>,
    pub(super) blueprint_version: Vec<i64>,
    pub(super) status: Vec<String>,
    pub(super) created_at: Vec<i64>,
    pub(super) started_at: Vec<Option<i64>>,
    pub(super) completed_at: Vec<Option<i64>>,
    pub(super) actor: Vec<String>,
    pub(super) correlation_id: Vec<String>,
    pub(super) env_id: Vec<String>,
    pub(super) trigger_event_id: Vec<Option<String>>,
    pub(super) inputs: Vec<String>,
    pub(super) outputs: Vec<Option<String>>,
    pub(super) error: Vec<Option<String>>,
    pub(super) deadline_at: Vec<Option<i64>>,
    pub(super) priority: Vec<i64>,
    pub(super) step_executions: Vec<i64>,
    pub(super) revision: Vec<i64>,
    pub(super) expect: Vec<Option<String>>,
}

impl RunCols {
    pub(super) fn push(&mut self, pos: usize, r: &Run, expect: Option<String>) {
        self.pos.push(pos);
        self.run_id.push(r.run_id.to_string());
        self.name.push(r.name.clone());
        self.blueprint_id.push(r.blueprint_id.clone());
        self.blueprint_version.push(r.blueprint_version);
        self.status.push(r.status.as_str().into());
        self.created_at.push(r.created_at.as_micros());
        self.started_at.push(ts(r.started_at));
        self.completed_at.push(ts(r.completed_at));
        self.actor.push(r.actor.clone());
        self.correlation_id.push(r.correlation_id.clone());
        self.env_id.push(r.env_id.clone());
        self.trigger_event_id
            .push(r.trigger_event_id.map(|e| e.to_string()));
        self.inputs.push(json_text(&r.inputs));
        self.outputs.push(opt_json_text(&r.outputs));
        self.error.push(opt_json_text(&r.error));
        self.deadline_at.push(ts(r.deadline_at));
        self.priority.push(r.priority);
        self.step_executions.push(r.step_executions as i64);
        self.revision.push(r.revision);
        self.expect.push(expect);
    }

    pub(super) fn params(&self, with_expect: bool) -> Vec<&(dyn ToSql + Sync)> {
        let mut v: Vec<&(dyn ToSql + Sync)> = vec![
            &self.run_id,
            &self.name,
            &self.blueprint_id,
            &self.blueprint_version,
            &self.status,
            &self.created_at,
            &self.started_at,
            &self.completed_at,
            &self.actor,
            &self.correlation_id,
            &self.env_id,
            &self.trigger_event_id,
            &self.inputs,
            &self.outputs,
            &self.error,
            &self.deadline_at,
            &self.priority,
            &self.step_executions,
            &self.revision,
        ];
        if with_expect {
            v.push(&self.expect);
        }
        v
    }
}

#[derive(Default)]
pub(super) struct StepCols {
    pub(super) pos: Vec<usize>,
    pub(super) names: Vec<String>,
    pub(super) step_id: Vec<String>,
    pub(super) run_id: Vec<String>,
    pub(super) name: Vec<String>,
    pub(super) idx: Vec<i64>,
    pub(super) kind: Vec<String>,
    pub(super) status: Vec<String>,
    pub(super) attempt: Vec<i64>,
    pub(super) started_at: Vec<Option<i64>>,
    pub(super) completed_at: Vec<Option<i64>>,
    pub(super) inputs: Vec<Option<String>>,
    pub(super) outputs: Vec<Option<String>>,
    pub(super) error: Vec<Option<String>>,
    pub(super) next_attempt_at: Vec<Option<i64>>,
    pub(super) decided_by: Vec<Option<String>>,
    pub(super) decision_comment: Vec<Option<String>>,
    pub(super) logs_artifact_id: Vec<Option<String>>,
    pub(super) expect: Vec<Option<String>>,
}

impl StepCols {
    pub(super) fn push(&mut self, pos: usize, s: &Step, expect: Option<String>) {
        self.pos.push(pos);
        self.names.push(s.name.clone());
        self.step_id.push(s.step_id.to_string());
        self.run_id.push(s.run_id.to_string());
        self.name.push(s.name.clone());
        self.idx.push(s.idx as i64);
        self.kind.push(s.kind.as_str().into());
        self.status.push(s.status.as_str().into());
        self.attempt.push(s.attempt as i64);
        self.started_at.push(ts(s.started_at));
        self.completed_at.push(ts(s.completed_at));
        self.inputs.push(opt_json_text(&s.inputs));
        self.outputs.push(opt_json_text(&s.outputs));
        self.error.push(opt_json_text(&s.error));
        self.next_attempt_at.push(ts(s.next_attempt_at));
        self.decided_by.push(s.decided_by.clone());
        self.decision_comment.push(s.decision_comment.clone());
        self.logs_artifact_id
            .push(s.logs_artifact_id.map(|a| a.to_string()));
        self.expect.push(expect);
    }

    pub(super) fn params(&self, with_expect: bool) -> Vec<&(dyn ToSql + Sync)> {
        let mut v: Vec<&(dyn ToSql + Sync)> = vec![
            &self.step_id,
            &self.run_id,
            &self.name,
            &self.idx,
            &self.kind,
            &self.status,
            &self.attempt,
            &self.started_at,
            &self.completed_at,
            &self.inputs,
            &self.outputs,
            &self.error,
            &self.next_attempt_at,
            &self.decided_by,
            &self.decision_comment,
            &self.logs_artifact_id,
        ];
        if with_expect {
            v.push(&self.expect);
        }
        v
    }
}

/// `run_id, due_at, owner, lease_ms` columns of queue inserts.
pub(super) type EnqueueCols = (Vec<String>, Vec<Option<i64>>, Vec<Option<String>>, Vec<i64>);

#[derive(Default)]
pub(super) struct Tables {
    pub(super) cron: (Vec<usize>, Vec<String>, Vec<i64>, Vec<i64>),
    pub(super) bps: Vec<(usize, BlueprintVersion)>,
    pub(super) drafts_ins: Vec<Draft>,
    pub(super) draft_upd: Vec<(usize, Draft, Option<i64>)>,
    pub(super) runs_ins: RunCols,
    pub(super) runs_upd: RunCols,
    pub(super) steps_ins: StepCols,
    pub(super) steps_upd: StepCols,
    pub(super) artifacts: Vec<Artifact>,
    pub(super) footprints: Vec<Footprint>,
    pub(super) enqueue: EnqueueCols,
    pub(super) hold: (Vec<usize>, Vec<String>, Vec<String>, Vec<i64>),
    pub(super) park: (Vec<usize>, Vec<String>, Vec<String>, Vec<Option<i64>>),
    pub(super) finish: Vec<String>,
    pub(super) wake: (Vec<String>, Vec<i64>),
    pub(super) notify: Vec<String>,
    /// Trigger switches: blueprint id, enabled, changed at, changed by (in id order).
    pub(super) triggers: (Vec<String>, Vec<bool>, Vec<i64>, Vec<String>),
}

pub(super) fn expect_list<T: Copy>(
    e: &Option<Vec<T>>,
    f: impl Fn(T) -> &'static str,
) -> Option<String> {
    e.as_ref()
        .map(|v| v.iter().map(|s| f(*s)).collect::<Vec<_>>().join(","))
}

impl Tables {
    pub(super) fn build(batches: &[&WriteBatch]) -> Self {
        let mut t = Tables::default();
        let (mut work, mut catalog) = (false, false);
        let mut trig = Vec::new();
        // Rows are written in key order, so two processes lock rows in the same order.
        let mut run_upd: Vec<(usize, &Run, Option<String>)> = Vec::new();
        let mut step_upd: Vec<(usize, &Step, Option<String>)> = Vec::new();
        for (pos, b) in batches.iter().enumerate() {
            for f in &b.cron_fires {
                t.cron.0.push(pos);
                t.cron.1.push(f.blueprint_id.clone());
                t.cron.2.push(f.slot.as_micros());
                t.cron.3.push(f.fired_at.as_micros());
            }
            for v in &b.blueprint_versions {
                t.bps.push((pos, v.clone()));
                catalog = true;
            }
            for x in &b.blueprint_triggers {
                trig.push(x);
                catalog = true;
            }
            for d in &b.drafts {
                match d {
                    DraftWrite::Insert(d) => t.drafts_ins.push(d.clone()),
                    DraftWrite::Update {
                        draft,
                        expect_revision,
                    } => t.draft_upd.push((pos, draft.clone(), *expect_revision)),
                }
            }
            for r in &b.runs {
                match r {
                    RunWrite::Insert(r) => t.runs_ins.push(pos, r, None),
                    RunWrite::Update { run, expect } => {
                        run_upd.push((pos, run, expect_list(expect, |s| s.as_str())))
                    }
                }
            }
            for s in &b.steps {
                match s {
                    StepWrite::Insert(s) => t.steps_ins.push(pos, s, None),
                    StepWrite::Update { step, expect } => {
                        step_upd.push((pos, step, expect_list(expect, |s| s.as_str())))
                    }
                }
            }
            t.artifacts.extend(b.artifacts.iter().cloned());
            t.footprints.extend(b.footprints.iter().cloned());
            for q in &b.queue {
                match q {
                    QueueWrite::Enqueue {
                        run_id,
                        due_at,
                        owner,
                        lease_ms,
                    } => {
                        work |= owner.is_none();
                        t.enqueue.0.push(run_id.to_string());
                        t.enqueue.1.push(due_at.map(Timestamp::as_micros));
                        t.enqueue.2.push(owner.clone());
                        t.enqueue.3.push(*lease_ms as i64);
                    }
                    QueueWrite::Hold {
                        run_id,
                        owner,
                        lease_ms,
                    } => {
                        t.hold.0.push(pos);
                        t.hold.1.push(run_id.to_string());
                        t.hold.2.push(owner.clone());
                        t.hold.3.push(*lease_ms as i64);
                    }
                    QueueWrite::Park {
                        run_id,
                        owner,
                        due_at,
                    } => {
                        work = true;
                        t.park.0.push(pos);
                        t.park.1.push(run_id.to_string());
                        t.park.2.push(owner.clone());
                        t.park.3.push(due_at.map(Timestamp::as_micros));
                    }
                    QueueWrite::Finish { run_id } => t.finish.push(run_id.to_string()),
                    QueueWrite::Wake { run_id, at } => {
                        work = true;
                        t.wake.0.push(run_id.to_string());
                        t.wake.1.push(at.as_micros());
                    }
                    QueueWrite::Cancel { run_id } => t.notify.push(format!("cancel:{run_id}")),
                }
            }
        }
        run_upd.sort_by_key(|(_, r, _)| r.run_id.0);
        for (pos, r, e) in run_upd {
            t.runs_upd.push(pos, r, e);
        }
        step_upd.sort_by_key(|(_, s, _)| s.step_id.0);
        for (pos, s, e) in step_upd {
            t.steps_upd.push(pos, s, e);
        }
        t.finish.sort();
        // In id order (stable: of one blueprint's switches the last written holds).
        trig.sort_by(|a: &&crate::BlueprintTrigger, b| a.blueprint_id.cmp(&b.blueprint_id));
        let mut last: Vec<&crate::BlueprintTrigger> = Vec::new();
        for x in trig {
            match last.last_mut() {
                Some(l) if l.blueprint_id == x.blueprint_id => *l = x,
                _ => last.push(x),
            }
        }
        for x in last {
            t.triggers.0.push(x.blueprint_id.clone());
            t.triggers.1.push(x.enabled);
            t.triggers.2.push(x.changed_at.as_micros());
            t.triggers.3.push(x.changed_by.clone());
        }
        if work {
            t.notify.push("work".into());
        }
        if catalog {
            t.notify.push("catalog".into());
        }
        t
    }
}

#[derive(Default)]
pub(super) struct EventCols {
    pub(super) seq: Vec<i64>,
    pub(super) event_id: Vec<String>,
    pub(super) event_name: Vec<String>,
    pub(super) occurred_at: Vec<i64>,
    pub(super) env_id: Vec<String>,
    pub(super) actor: Vec<String>,
    pub(super) correlation_id: Vec<String>,
    pub(super) run_id: Vec<Option<String>>,
    pub(super) step_id: Vec<Option<String>>,
    pub(super) resource_type: Vec<Option<String>>,
    pub(super) resource_id: Vec<Option<String>>,
    pub(super) data: Vec<String>,
    pub(super) hash: Vec<String>,
}

impl EventCols {
    pub(super) fn push(&mut self, seq: i64, e: &xyn_core::event::Event, data: String, hash: &str) {
        self.seq.push(seq);
        self.event_id.push(e.event_id.to_string());
        self.event_name.push(e.event_name.clone());
        self.occurred_at.push(e.occurred_at.as_micros());
        self.env_id.push(e.env_id.clone());
        self.actor.push(e.actor.clone());
        self.correlation_id.push(e.correlation_id.clone());
        self.run_id.push(e.run_id.map(|r| r.to_string()));
        self.step_id.push(e.step_id.map(|s| s.to_string()));
        self.resource_type
            .push(e.resource.as_ref().map(|r| r.kind.clone()));
        self.resource_id
            .push(e.resource.as_ref().map(|r| r.id.clone()));
        self.data.push(data);
        self.hash.push(hash.to_string());
    }

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.seq,
            &self.event_id,
            &self.event_name,
            &self.occurred_at,
            &self.env_id,
            &self.actor,
            &self.correlation_id,
            &self.run_id,
            &self.step_id,
            &self.resource_type,
            &self.resource_id,
            &self.data,
            &self.hash,
        ]
    }
}
