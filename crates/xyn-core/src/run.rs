//! Runs and steps: their records, their state machine, and the events each transition emits.
//!
//! [`RunMachine`] owns one run's state in memory. Its methods are the only way a run or step
//! changes; each one updates the records and queues the `xyn.*` event (and footprints) that
//! describe the change, so the log and the tables cannot drift apart. [`RunMachine::decide`]
//! says what the run needs next. Nothing here performs I/O or reads a clock.

mod gates;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::blueprint::{OnReject, Plan, StepBody, StepKind};
use crate::event::{Event, Resource};
use crate::footprint::{self, Footprint};
use crate::ids::{EventId, IdSource, RunId, StepId};
use crate::names;
use crate::time::Timestamp;

/// The status of a run: `created`, `running`, `waiting` (a gate waits for a decision, so the
/// run cannot go on without someone), then one of the three terminal ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Created,
    Running,
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Created => "created",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => RunStatus::Created,
            "running" => RunStatus::Running,
            "waiting" => RunStatus::Waiting,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
    /// Every status, in lifecycle order (for messages and filters).
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Created,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];
    /// The names of every status, comma-separated.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// The status of a step (`waiting`: a gate awaiting its decision).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Created,
    Running,
    Waiting,
    Completed,
    Failed,
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Created => "created",
            StepStatus::Running => "running",
            StepStatus::Waiting => "waiting",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => StepStatus::Created,
            "running" => StepStatus::Running,
            "waiting" => StepStatus::Waiting,
            "completed" => StepStatus::Completed,
            "failed" => StepStatus::Failed,
            "skipped" => StepStatus::Skipped,
            _ => return None,
        })
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepStatus::Completed | StepStatus::Failed | StepStatus::Skipped
        )
    }
}

/// A run record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: RunId,
    pub name: String,
    pub blueprint_id: String,
    pub blueprint_version: i64,
    pub status: RunStatus,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub actor: String,
    pub correlation_id: String,
    pub env_id: String,
    pub trigger_event_id: Option<EventId>,
    pub inputs: Value,
    pub outputs: Option<Value>,
    pub error: Option<Value>,
    /// The wall-clock limit: the run fails if it is not finished by then.
    pub deadline_at: Option<Timestamp>,
    pub priority: i64,
    /// How many step executions (attempts included) the run has used (safety rail).
    pub step_executions: u32,
    /// Incremented on every stored change; writers must name the revision they read
    /// (optimistic concurrency between drivers, API calls and processes).
    pub revision: i64,
}

/// A step record (one per plan step per run; attempts update it in place).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub step_id: StepId,
    pub run_id: RunId,
    /// The blueprint step id.
    pub name: String,
    pub idx: u32,
    pub kind: StepKind,
    pub status: StepStatus,
    pub attempt: u32,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub inputs: Option<Value>,
    pub outputs: Option<Value>,
    pub error: Option<Value>,
    /// When a retry is due (status `created`, attempt ≥ 1).
    pub next_attempt_at: Option<Timestamp>,
    /// Who approved or rejected a gate, and what they said.
    pub decided_by: Option<String>,
    pub decision_comment: Option<String>,
    pub logs_artifact_id: Option<crate::ids::ArtifactId>,
}

/// Limits that hold for every run on a node.
#[derive(Clone, Copy, Debug)]
pub struct RunLimits {
    /// Most step executions (attempts count) per run.
    pub max_step_executions: u32,
    /// Default and maximum run wall-clock time.
    pub max_wall_ms: u64,
    /// The least number of interrupted attempts a step survives whatever its retry policy
    /// (see [`RunMachine::interrupted_attempts_allowed`]).
    pub max_interruptions: u32,
    /// The budget of every jq evaluation of the run: transforms, `if:` conditions
    /// (`[engine] jq_fuel`, `jq_memory_mb`, `jq_stack_kb` in `xyn.toml`).
    pub jq: crate::jq::JqLimits,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_step_executions: 200,
            max_wall_ms: 60 * 60 * 1000,
            max_interruptions: 3,
            jq: crate::jq::JqLimits::default(),
        }
    }
}

/// An error recorded on a step or run: `{code, message, details?}`.
pub fn error_value(code: &str, message: impl Into<String>) -> Value {
    json!({"code": code, "message": message.into()})
}

/// What a run needs next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Execute the step at this index now.
    Execute(usize),
    /// The step's condition is false: skip it.
    Skip(usize),
    /// A retry is due later; wake up at this time.
    Sleep(Timestamp),
    /// A gate waits for a decision; wake up at the deadline (gate timeout or run deadline).
    AwaitDecision {
        idx: usize,
        deadline: Option<Timestamp>,
    },
    /// A gate must start waiting now.
    OpenGate(usize),
    /// A gate's decision deadline passed.
    GateTimedOut(usize),
    /// Every step is done: complete the run with these outputs.
    Complete(Value),
    /// The run failed (a step failed for good, a limit was hit).
    Fail(Value),
    /// The run is already finished.
    Done,
}

/// Changes made since the last [`RunMachine::take_changes`].
#[derive(Debug, Default)]
pub struct Changes {
    pub events: Vec<Event>,
    pub footprints: Vec<Footprint>,
    pub artifacts: Vec<crate::records::Artifact>,
    pub run_changed: bool,
    pub steps_changed: Vec<usize>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.footprints.is_empty()
            && self.artifacts.is_empty()
            && !self.run_changed
            && self.steps_changed.is_empty()
    }
}

/// One run's state and its transitions.
pub struct RunMachine {
    pub plan: Arc<Plan>,
    pub run: Run,
    pub steps: Vec<Step>,
    /// The triggering event's JSON (as `{{event.*}}` sees it), `null` for manual runs.
    pub event: Value,
    pub limits: RunLimits,
    changes: Changes,
}

impl RunMachine {
    /// A brand-new run: the run and all its steps in `created`, nothing emitted yet.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        plan: Arc<Plan>,
        blueprint_version: i64,
        ids: &dyn IdSource,
        now: Timestamp,
        actor: &str,
        env_id: &str,
        correlation_id: &str,
        trigger_event: Option<&Event>,
        inputs: Map<String, Value>,
        limits: RunLimits,
    ) -> Self {
        let run_id = RunId(ids.new_uuid());
        let wall = plan
            .timeout_ms
            .map_or(limits.max_wall_ms, |t| t.min(limits.max_wall_ms));
        let run = Run {
            run_id,
            name: plan.name.clone(),
            blueprint_id: plan.id.clone(),
            blueprint_version,
            status: RunStatus::Created,
            created_at: now,
            started_at: None,
            completed_at: None,
            actor: actor.to_string(),
            correlation_id: correlation_id.to_string(),
            env_id: env_id.to_string(),
            trigger_event_id: trigger_event.map(|e| e.event_id),
            inputs: Value::Object(inputs),
            outputs: None,
            error: None,
            deadline_at: Some(now.plus_ms(wall)),
            priority: 0,
            step_executions: 0,
            revision: 0,
        };
        let steps = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| Step {
                step_id: StepId(ids.new_uuid()),
                run_id,
                name: s.id.clone(),
                idx: i as u32,
                kind: s.kind,
                status: StepStatus::Created,
                attempt: 0,
                started_at: None,
                completed_at: None,
                inputs: None,
                outputs: None,
                error: None,
                next_attempt_at: None,
                decided_by: None,
                decision_comment: None,
                logs_artifact_id: None,
            })
            .collect();
        let event = trigger_event.map(event_json).unwrap_or(Value::Null);
        Self {
            plan,
            run,
            steps,
            event,
            limits,
            changes: Changes::default(),
        }
    }

    /// A run loaded back from the store.
    pub fn resume(
        plan: Arc<Plan>,
        run: Run,
        steps: Vec<Step>,
        event: Option<&Event>,
        limits: RunLimits,
    ) -> Self {
        Self {
            plan,
            run,
            steps,
            event: event.map(event_json).unwrap_or(Value::Null),
            limits,
            changes: Changes::default(),
        }
    }

    pub fn take_changes(&mut self) -> Changes {
        let mut c = std::mem::take(&mut self.changes);
        c.steps_changed.sort_unstable();
        c.steps_changed.dedup();
        c
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    fn emit(
        &mut self,
        ids: &dyn IdSource,
        now: Timestamp,
        name: &str,
        actor: &str,
        step: Option<usize>,
        data: Value,
    ) {
        let step_id = step.map(|i| self.steps[i].step_id);
        self.changes.events.push(Event {
            event_id: EventId(ids.new_uuid()),
            event_name: name.to_string(),
            occurred_at: now,
            env_id: self.run.env_id.clone(),
            actor: actor.to_string(),
            correlation_id: self.run.correlation_id.clone(),
            run_id: Some(self.run.run_id),
            step_id,
            resource: Some(Resource {
                kind: if step.is_some() { "step" } else { "run" }.into(),
                id: step_id
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| self.run.run_id.to_string()),
            }),
            data,
        });
    }

    fn touch_step(&mut self, idx: usize) {
        self.changes.steps_changed.push(idx);
    }

    /// Records a measurement made while executing a step.
    pub fn record_footprint(&mut self, f: Footprint) {
        self.changes.footprints.push(f);
    }

    /// Records an audit event about step `idx` that changes no state (e.g. an action's
    /// refused capability use, `xyn.cap.denied`), in the same batch as the step's result.
    pub fn record_step_event(
        &mut self,
        ids: &dyn IdSource,
        now: Timestamp,
        idx: usize,
        name: &str,
        data: Value,
    ) {
        self.emit(ids, now, name, "system", Some(idx), data);
    }

    /// Attaches an artifact written by a step: its metadata row, `xyn.artifact.attached` and
    /// the `artifact_bytes_written` footprint.
    pub fn attach_artifact(
        &mut self,
        ids: &dyn IdSource,
        now: Timestamp,
        idx: usize,
        artifact: crate::records::Artifact,
    ) {
        let step_name = self.steps[idx].name.clone();
        self.changes.footprints.push(Footprint::new(
            now,
            Some(self.run.run_id),
            Some(self.steps[idx].step_id),
            "artifact",
            &artifact.kind,
            footprint::ARTIFACT_BYTES_WRITTEN,
            artifact.byte_length as f64,
            "bytes",
            json!({"step": step_name}),
        ));
        self.emit(
            ids,
            now,
            names::ARTIFACT_ATTACHED,
            "system",
            Some(idx),
            json!({
                "artifact_id": artifact.artifact_id.to_string(),
                "name": artifact.name,
                "kind": artifact.kind,
                "content_type": artifact.content_type,
                "byte_length": artifact.byte_length,
                "sha256": artifact.sha256,
                "step": step_name,
            }),
        );
        self.changes.artifacts.push(artifact);
    }

    /// Moves a created run to running. Emits `xyn.run.started` and the `run.count` footprint.
    pub fn start(&mut self, ids: &dyn IdSource, now: Timestamp) {
        if self.run.status != RunStatus::Created {
            return;
        }
        self.run.status = RunStatus::Running;
        self.run.started_at = Some(now);
        self.changes.run_changed = true;
        let data = json!({
            "blueprint_id": self.run.blueprint_id,
            "blueprint_version": self.run.blueprint_version,
            "trigger_event_id": self.run.trigger_event_id.map(|e| e.to_string()),
            "inputs": self.run.inputs,
            "steps": self.plan.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        });
        let actor = self.run.actor.clone();
        self.emit(ids, now, names::RUN_STARTED, &actor, None, data);
        self.changes.footprints.push(Footprint::new(
            now,
            Some(self.run.run_id),
            None,
            "run",
            &self.run.blueprint_id,
            footprint::RUN_COUNT,
            1.0,
            "count",
            json!({"blueprint_version": self.run.blueprint_version}),
        ));
    }

    /// Fails a run that could not start (its inputs did not bind).
    pub fn fail_at_start(&mut self, ids: &dyn IdSource, now: Timestamp, error: Value) {
        self.start(ids, now);
        for i in 0..self.steps.len() {
            self.steps[i].status = StepStatus::Skipped;
            self.touch_step(i);
        }
        self.finish(ids, now, RunStatus::Failed, None, Some(error), "system");
    }

    /// The template/jq context of the run: `{inputs, event, steps, run}`.
    pub fn context(&self) -> Value {
        let mut steps = Map::new();
        for s in &self.steps {
            let mut m = Map::new();
            m.insert("status".into(), Value::String(s.status.as_str().into()));
            m.insert("outputs".into(), s.outputs.clone().unwrap_or(Value::Null));
            m.insert("error".into(), s.error.clone().unwrap_or(Value::Null));
            steps.insert(s.name.clone(), Value::Object(m));
        }
        json!({
            "inputs": self.run.inputs,
            "event": self.event,
            "steps": steps,
            "run": {
                "id": self.run.run_id.to_string(),
                "correlation_id": self.run.correlation_id,
                "blueprint_id": self.run.blueprint_id,
                "blueprint_version": self.run.blueprint_version,
                "started_at": self.run.started_at.map(|t| t.to_string()),
                "actor": self.run.actor,
            }
        })
    }

    /// Decides what the run needs next, given the time.
    pub fn decide(&self, now: Timestamp) -> Next {
        if self.run.status.is_terminal() {
            return Next::Done;
        }
        if let Some(d) = self.run.deadline_at
            && now >= d
        {
            return Next::Fail(error_value(
                "run.timed_out",
                format!(
                    "the run did not finish within its wall-clock limit ({})",
                    crate::duration::format_duration_ms(d.ms_since(self.run.created_at))
                ),
            ));
        }
        for (i, step) in self.steps.iter().enumerate() {
            match step.status {
                StepStatus::Completed | StepStatus::Skipped => continue,
                StepStatus::Failed => {
                    return Next::Fail(json!({
                        "code": "step.failed",
                        "message": format!("step '{}' failed", step.name),
                        "step": step.name,
                        "cause": step.error,
                    }));
                }
                StepStatus::Running => {
                    // Only seen after a crash: the engine re-runs it (see `interrupt`).
                    return Next::Execute(i);
                }
                StepStatus::Waiting => {
                    let gate_deadline = self.plan.steps[i]
                        .timeout_ms
                        .and_then(|t| step.started_at.map(|s| s.plus_ms(t)));
                    if let Some(gd) = gate_deadline
                        && now >= gd
                    {
                        return Next::GateTimedOut(i);
                    }
                    return Next::AwaitDecision {
                        idx: i,
                        deadline: min_opt(gate_deadline, self.run.deadline_at),
                    };
                }
                StepStatus::Created => {
                    if let Some(at) = step.next_attempt_at
                        && now < at
                    {
                        return Next::Sleep(min_opt(Some(at), self.run.deadline_at).unwrap_or(at));
                    }
                    if step.attempt == 0
                        && let Some(cond) = &self.plan.steps[i].condition
                    {
                        match cond.truthy_with(&self.context(), &self.limits.jq) {
                            Ok(true) => {}
                            Ok(false) => return Next::Skip(i),
                            Err(e) => {
                                // A condition over its jq budget fails with the budget's code.
                                let code = if e.code == crate::jq::codes::FAILED {
                                    "step.condition_failed"
                                } else {
                                    e.code
                                };
                                return Next::Fail(json!({
                                    "code": code,
                                    "message": format!("the 'if' of step '{}' failed: {}", step.name, e.message),
                                    "step": step.name,
                                }));
                            }
                        }
                    }
                    if self.run.step_executions >= self.limits.max_step_executions {
                        return Next::Fail(error_value(
                            "run.step_limit_exceeded",
                            format!(
                                "the run used its limit of {} step executions",
                                self.limits.max_step_executions
                            ),
                        ));
                    }
                    if self.plan.steps[i].kind == StepKind::Gate {
                        return Next::OpenGate(i);
                    }
                    return Next::Execute(i);
                }
            }
        }
        Next::Complete(self.outputs())
    }

    /// The run's outputs: each declared output's `value`, or else the field of that name from
    /// the latest step whose outputs have it. Without declared outputs: the last step's outputs.
    pub fn outputs(&self) -> Value {
        let ctx = self.context();
        if self.plan.outputs.is_empty() {
            return self
                .steps
                .iter()
                .rev()
                .find(|s| s.status == StepStatus::Completed)
                .and_then(|s| s.outputs.clone())
                .unwrap_or_else(|| json!({}));
        }
        let mut out = Map::new();
        for o in &self.plan.outputs {
            let v = match &o.value {
                Some(t) => t
                    .render(&ctx, &mut crate::template::SecretAccess::Mask)
                    .unwrap_or(Value::Null),
                None => self
                    .steps
                    .iter()
                    .rev()
                    .filter(|s| s.status == StepStatus::Completed)
                    .find_map(|s| s.outputs.as_ref().and_then(|v| v.get(&o.name)).cloned())
                    .unwrap_or(Value::Null),
            };
            out.insert(o.name.clone(), v);
        }
        Value::Object(out)
    }

    /// Starts an attempt of a step. `inputs` is what is recorded (secrets masked).
    pub fn start_step(&mut self, ids: &dyn IdSource, now: Timestamp, idx: usize, inputs: Value) {
        let attempt = self.steps[idx].attempt + 1;
        let step = &mut self.steps[idx];
        step.status = StepStatus::Running;
        step.attempt = attempt;
        step.started_at = Some(now);
        step.completed_at = None;
        step.next_attempt_at = None;
        step.inputs = Some(inputs);
        let kind = step.kind.as_str();
        let name = step.name.clone();
        self.run.step_executions += 1;
        self.changes.run_changed = true;
        self.touch_step(idx);
        self.emit(
            ids,
            now,
            names::STEP_STARTED,
            "system",
            Some(idx),
            json!({"step": name, "kind": kind, "attempt": attempt}),
        );
    }

    /// Completes the running attempt with its outputs.
    pub fn complete_step(
        &mut self,
        ids: &dyn IdSource,
        now: Timestamp,
        idx: usize,
        outputs: Value,
    ) {
        let step = &mut self.steps[idx];
        step.status = StepStatus::Completed;
        step.completed_at = Some(now);
        step.outputs = Some(outputs);
        step.error = None;
        let wall_ms = step.started_at.map_or(0, |s| now.ms_since(s));
        let (name, attempt, kind) = (step.name.clone(), step.attempt, step.kind.as_str());
        self.touch_step(idx);
        self.step_footprints(now, idx, wall_ms);
        self.emit(
            ids,
            now,
            names::STEP_COMPLETED,
            "system",
            Some(idx),
            json!({"step": name, "kind": kind, "attempt": attempt, "wall_ms": wall_ms}),
        );
    }

    fn step_footprints(&mut self, now: Timestamp, idx: usize, wall_ms: u64) {
        let step = &self.steps[idx];
        let dims = json!({"kind": step.kind.as_str(), "attempt": step.attempt, "blueprint_id": self.run.blueprint_id});
        let (run_id, step_id, name) = (self.run.run_id, step.step_id, step.name.clone());
        self.changes.footprints.push(Footprint::new(
            now,
            Some(run_id),
            Some(step_id),
            "step",
            &name,
            footprint::STEP_COUNT,
            1.0,
            "count",
            dims.clone(),
        ));
        self.changes.footprints.push(Footprint::new(
            now,
            Some(run_id),
            Some(step_id),
            "step",
            &name,
            // A gate's time is spent waiting for a person: reported apart from working time.
            if step.kind == StepKind::Gate {
                footprint::GATE_WAIT_MS
            } else {
                footprint::WALL_MS
            },
            wall_ms as f64,
            "ms",
            dims,
        ));
    }

    /// Records a failed attempt. When `retryable` and attempts remain, schedules the next one;
    /// otherwise the step fails for good. Returns true when a retry was scheduled.
    pub fn fail_step(
        &mut self,
        ids: &dyn IdSource,
        now: Timestamp,
        idx: usize,
        error: Value,
        retryable: bool,
    ) -> bool {
        let policy = self.plan.steps[idx].retry.clone();
        let step = &mut self.steps[idx];
        let wall_ms = step.started_at.map_or(0, |s| now.ms_since(s));
        let attempt = step.attempt;
        let retry_at = (retryable && attempt < policy.max_attempts)
            .then(|| now.plus_ms(policy.delay_before(attempt + 1)));
        step.error = Some(error.clone());
        step.completed_at = Some(now);
        match retry_at {
            Some(at) => {
                step.status = StepStatus::Created;
                step.next_attempt_at = Some(at);
            }
            None => step.status = StepStatus::Failed,
        }
        let name = step.name.clone();
        let kind = step.kind.as_str();
        self.touch_step(idx);
        self.step_footprints(now, idx, wall_ms);
        self.emit(
            ids,
            now,
            names::STEP_FAILED,
            "system",
            Some(idx),
            json!({
                "step": name,
                "kind": kind,
                "attempt": attempt,
                "error": error,
                "will_retry": retry_at.is_some(),
                "retry_at": retry_at.map(|t| t.to_string()),
                "wall_ms": wall_ms,
            }),
        );
        retry_at.is_some()
    }

    /// How many attempts a step may use when attempts are interrupted: its retry policy's
    /// `max_attempts`, but never fewer than `1 + max_interruptions`, so a step without retries
    /// still survives a bounded number of crashes.
    pub fn interrupted_attempts_allowed(&self, idx: usize) -> u32 {
        self.plan.steps[idx]
            .retry
            .max_attempts
            .max(1 + self.limits.max_interruptions)
    }

    /// A step found `running` after a restart (or by the worker that took over an expired
    /// lease): its attempt was interrupted. An interrupted attempt counts as an attempt of the
    /// step's retry policy: the step is retried at once, with the next attempt number, while
    /// the attempt number is below [`Self::interrupted_attempts_allowed`]; then it fails with
    /// `step.interrupted`.
    pub fn interrupt_running(&mut self, ids: &dyn IdSource, now: Timestamp) -> Vec<usize> {
        let mut out = Vec::new();
        for idx in 0..self.steps.len() {
            if self.steps[idx].status != StepStatus::Running {
                continue;
            }
            let allowed = self.interrupted_attempts_allowed(idx);
            let step = &mut self.steps[idx];
            let attempt = step.attempt;
            let give_up = attempt >= allowed;
            let error = json!({
                "code": "step.interrupted",
                "message": if give_up {
                    format!("attempt {attempt} was interrupted (the node stopped while it ran); the step used its {allowed} attempts")
                } else {
                    format!("attempt {attempt} was interrupted (the node stopped while it ran)")
                },
                "attempts_allowed": allowed,
            });
            step.error = Some(error.clone());
            step.completed_at = Some(now);
            if give_up {
                step.status = StepStatus::Failed;
            } else {
                step.status = StepStatus::Created;
                step.next_attempt_at = Some(now);
            }
            let name = step.name.clone();
            self.touch_step(idx);
            self.emit(
                ids,
                now,
                names::STEP_FAILED,
                "system",
                Some(idx),
                json!({"step": name, "attempt": attempt, "error": error, "will_retry": !give_up}),
            );
            out.push(idx);
        }
        out
    }

    /// Skips a step whose condition is false (or that a finished run never reached).
    pub fn skip_step(&mut self, ids: &dyn IdSource, now: Timestamp, idx: usize, reason: &str) {
        let step = &mut self.steps[idx];
        step.status = StepStatus::Skipped;
        step.completed_at = Some(now);
        let name = step.name.clone();
        self.touch_step(idx);
        self.emit(
            ids,
            now,
            names::STEP_SKIPPED,
            "system",
            Some(idx),
            json!({"step": name, "reason": reason}),
        );
    }

    fn skip_remaining(&mut self, ids: &dyn IdSource, now: Timestamp, reason: &str) {
        for i in 0..self.steps.len() {
            if matches!(
                self.steps[i].status,
                StepStatus::Created | StepStatus::Waiting
            ) {
                self.skip_step(ids, now, i, reason);
            }
        }
    }

    /// Ends the run.
    pub fn finish(
        &mut self,
        ids: &dyn IdSource,
        now: Timestamp,
        status: RunStatus,
        outputs: Option<Value>,
        error: Option<Value>,
        actor: &str,
    ) {
        if self.run.status.is_terminal() {
            return;
        }
        if self.run.started_at.is_none() {
            self.run.started_at = Some(now);
        }
        self.run.status = status;
        self.run.completed_at = Some(now);
        self.run.outputs = outputs.clone();
        self.run.error = error.clone();
        self.changes.run_changed = true;
        let name = match status {
            RunStatus::Completed => names::RUN_COMPLETED,
            RunStatus::Cancelled => names::RUN_CANCELLED,
            _ => names::RUN_FAILED,
        };
        let wall_ms = self.run.started_at.map_or(0, |s| now.ms_since(s));
        // Of the wall time, how long the run waited at gates for people to decide.
        let gate_wait_ms: u64 = self
            .steps
            .iter()
            .filter(|s| s.kind == StepKind::Gate)
            .filter_map(|s| {
                s.started_at
                    .map(|a| s.completed_at.unwrap_or(now).ms_since(a))
            })
            .sum();
        self.emit(
            ids,
            now,
            name,
            actor,
            None,
            json!({
                "blueprint_id": self.run.blueprint_id,
                "status": status.as_str(),
                "outputs": outputs,
                "error": error,
                "wall_ms": wall_ms,
                "gate_wait_ms": gate_wait_ms,
            }),
        );
    }

    /// The failed step a retry starts from: the first step that failed for good.
    pub fn failed_step(&self) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.status == StepStatus::Failed)
    }

    /// Retries a failed run from its failed step `idx`: that step gets a new attempt (its
    /// attempt number goes on, so earlier attempts stay told apart in the log), the steps after
    /// it that the failure skipped are reset, and the run is `running` again with a fresh
    /// wall-clock limit. Emits `xyn.run.retried`. The caller checked
    /// [`Self::check_retry`].
    pub fn retry(&mut self, ids: &dyn IdSource, now: Timestamp, idx: usize, actor: &str) {
        let previous_error = self.run.error.take();
        let failed = &mut self.steps[idx];
        let from_attempt = failed.attempt;
        failed.status = StepStatus::Created;
        failed.next_attempt_at = None;
        failed.decided_by = None;
        failed.decision_comment = None;
        let name = failed.name.clone();
        self.touch_step(idx);
        for i in idx + 1..self.steps.len() {
            let s = &mut self.steps[i];
            if matches!(s.status, StepStatus::Skipped | StepStatus::Failed) {
                s.status = StepStatus::Created;
                s.started_at = None;
                s.completed_at = None;
                s.outputs = None;
                s.error = None;
                s.next_attempt_at = None;
                self.changes.steps_changed.push(i);
            }
        }
        let wall = self
            .plan
            .timeout_ms
            .map_or(self.limits.max_wall_ms, |t| t.min(self.limits.max_wall_ms));
        self.run.status = RunStatus::Running;
        self.run.completed_at = None;
        self.run.outputs = None;
        self.run.deadline_at = Some(now.plus_ms(wall));
        self.changes.run_changed = true;
        self.emit(
            ids,
            now,
            names::RUN_RETRIED,
            actor,
            None,
            json!({
                "step": name,
                "attempt": from_attempt + 1,
                "previous_attempt": from_attempt,
                "previous_error": previous_error,
            }),
        );
    }

    /// Whether the run can be retried from step `idx` (`None`: its failed step): the run
    /// failed, and the step is the one that failed. Returns the step's index.
    pub fn check_retry(&self, idx: Option<usize>) -> Result<usize, crate::XynError> {
        use crate::{XynError, codes};
        if self.run.status != RunStatus::Failed {
            return Err(XynError::conflict(
                codes::RUN_NOT_FAILED,
                format!(
                    "run {} is {}: only a failed run is retried (re-run it to start again)",
                    self.run.run_id,
                    self.run.status.as_str()
                ),
            )
            .with_details(json!({"status": self.run.status.as_str()})));
        }
        let failed = self.failed_step();
        let idx = match (idx, failed) {
            (Some(i), _) => i,
            (None, Some(f)) => f,
            (None, None) => {
                return Err(XynError::conflict(
                    codes::STEP_NOT_FAILED,
                    format!(
                        "run {} failed before any step did ({}): re-run it instead",
                        self.run.run_id,
                        self.run
                            .error
                            .as_ref()
                            .and_then(|e| e.get("code"))
                            .and_then(Value::as_str)
                            .unwrap_or("no step failed")
                    ),
                ));
            }
        };
        let s = &self.steps[idx];
        if s.status != StepStatus::Failed || Some(idx) != failed {
            return Err(XynError::conflict(
                codes::STEP_NOT_FAILED,
                format!(
                    "step '{}' is {}, not the step that failed: a retry starts at the failed step",
                    s.name,
                    s.status.as_str()
                ),
            )
            .with_details(json!({"status": s.status.as_str(), "failed_step": failed.map(|f| self.steps[f].name.clone())})));
        }
        Ok(idx)
    }

    /// Completes the run with its outputs.
    pub fn complete(&mut self, ids: &dyn IdSource, now: Timestamp, outputs: Value) {
        self.finish(
            ids,
            now,
            RunStatus::Completed,
            Some(outputs),
            None,
            "system",
        );
    }

    /// Fails the run: steps not yet finished are skipped (a running one fails).
    pub fn fail(&mut self, ids: &dyn IdSource, now: Timestamp, error: Value) {
        self.end_open_steps(ids, now, &error);
        self.finish(ids, now, RunStatus::Failed, None, Some(error), "system");
    }

    /// Cancels the run on `actor`'s request.
    pub fn cancel(
        &mut self,
        ids: &dyn IdSource,
        now: Timestamp,
        actor: &str,
        reason: Option<String>,
    ) {
        let error = json!({
            "code": "run.cancelled",
            "message": format!("cancelled by {actor}"),
            "reason": reason,
        });
        self.end_open_steps(ids, now, &error);
        self.finish(ids, now, RunStatus::Cancelled, None, Some(error), actor);
    }

    fn end_open_steps(&mut self, ids: &dyn IdSource, now: Timestamp, error: &Value) {
        for i in 0..self.steps.len() {
            if self.steps[i].status == StepStatus::Running {
                self.fail_step(ids, now, i, error.clone(), false);
            }
        }
        let code = error
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("run.ended")
            .to_string();
        self.skip_remaining(ids, now, &code);
    }
}

fn min_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The JSON an event shows to templates and jq (`{{event.data.host}}`).
pub fn event_json(e: &Event) -> Value {
    json!({
        "event_id": e.event_id.to_string(),
        "event_name": e.event_name,
        "occurred_at": e.occurred_at.to_string(),
        "env_id": e.env_id,
        "actor": e.actor,
        "correlation_id": e.correlation_id,
        "resource": e.resource.as_ref().map(|r| json!({"type": r.kind, "id": r.id})),
        "data": e.data,
    })
}

#[cfg(test)]
mod tests;
