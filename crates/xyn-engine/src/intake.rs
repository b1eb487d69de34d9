//! Intake: an event is validated, matched against blueprint triggers, and committed together
//! with the runs it starts, in one transaction. Only then is it acknowledged.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use xyn_core::blueprint::{Plan, bind_inputs};
use xyn_core::event::{Event, EventNameError, Resource, StoredEvent, validate_external_event_name};
use xyn_core::run::{Run, RunMachine, RunStatus, event_json};
use xyn_core::{EventId, RunId, StepId, XynError, codes, names};
use xyn_store::{QueueWrite, RunWrite, StepWrite, StoreError, WriteBatch};

use crate::Node;
use crate::scheduler::Work;

/// An event given by a client.
#[derive(Clone, Debug, Default)]
pub struct EmitEvent {
    pub event_name: String,
    pub data: Value,
    pub resource: Option<Resource>,
    pub run_id: Option<RunId>,
    pub step_id: Option<StepId>,
    pub actor: String,
    /// From `X-Correlation-Id`; a new one is made when absent.
    pub correlation_id: Option<String>,
}

/// A manual run request.
#[derive(Clone, Debug, Default)]
pub struct StartRun {
    pub blueprint_id: String,
    pub version: Option<i64>,
    pub inputs: Map<String, Value>,
    pub name: Option<String>,
    pub priority: i64,
    pub actor: String,
    pub correlation_id: Option<String>,
}

/// Checks a client-supplied correlation id: 1–200 visible ASCII characters.
pub fn valid_correlation_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_graphic())
}

impl Node {
    fn correlation(&self, given: Option<String>) -> Result<String, XynError> {
        match given {
            Some(c) if valid_correlation_id(&c) => Ok(c),
            Some(_) => Err(XynError::bad_request(
                codes::REQUEST_INVALID,
                "X-Correlation-Id must be 1 to 200 visible ASCII characters",
            )),
            None => Ok(self.inner().ids.new_uuid().to_string()),
        }
    }

    /// Creates a run in memory: inputs bound (or the run failed at start when they do not bind).
    fn new_run(
        &self,
        plan: Arc<Plan>,
        version: i64,
        event: &Event,
        explicit: Option<&Map<String, Value>>,
        actor: &str,
    ) -> Result<RunMachine, Vec<xyn_core::blueprint::Issue>> {
        let inner = self.inner();
        let now = inner.clock.now();
        let ev = event_json(event);
        let bound = bind_inputs(&plan, Some(&ev), explicit);
        let inputs = bound.clone().unwrap_or_default();
        let mut m = RunMachine::create(
            plan,
            version,
            inner.ids.as_ref(),
            now,
            actor,
            &inner.config.env_id,
            &event.correlation_id,
            Some(event),
            inputs,
            inner.config.limits,
        );
        match bound {
            Ok(_) => m.start(inner.ids.as_ref(), now),
            Err(issues) => {
                if explicit.is_some() {
                    return Err(issues);
                }
                let msg = issues
                    .iter()
                    .map(|i| i.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                m.fail_at_start(
                    inner.ids.as_ref(),
                    now,
                    json!({"code": codes::RUN_INPUTS_INVALID, "message": msg, "issues": issues}),
                );
            }
        }
        Ok(m)
    }

    fn insert_run(batch: &mut WriteBatch, m: &mut RunMachine) {
        let ch = m.take_changes();
        batch.runs.push(RunWrite::Insert(m.run.clone()));
        batch
            .steps
            .extend(m.steps.iter().cloned().map(StepWrite::Insert));
        batch.events.extend(ch.events);
        batch.footprints.extend(ch.footprints);
        batch.artifacts.extend(ch.artifacts);
    }

    /// On a shared store, puts a new running run in the queue: held by this process when it
    /// executes runs (it drives the run from memory at once), else due for any worker.
    fn enqueue(&self, batch: &mut WriteBatch, m: &RunMachine) {
        if let Some(c) = &self.inner().config.cluster
            && m.run.status == RunStatus::Running
        {
            batch.queue.push(QueueWrite::Enqueue {
                run_id: m.run.run_id,
                due_at: Some(self.inner().clock.now()),
                owner: c.execute.then(|| c.owner.clone()),
                lease_ms: c.lease_ms,
            });
        }
    }

    /// After the commit: drives a new running run here, unless another process will.
    fn dispatch(&self, m: RunMachine) {
        let inner = self.inner();
        if m.run.status != RunStatus::Running {
            return;
        }
        match &inner.config.cluster {
            None => inner.scheduler.push(Work::Fresh(Box::new(m))),
            Some(c) if c.execute => {
                inner.held.insert(m.run.run_id);
                inner.scheduler.push(Work::Fresh(Box::new(m)));
            }
            Some(_) => {}
        }
    }

    /// Commits a batch that creates runs and hands the runs to the scheduler, in a task of its
    /// own: once started, neither half can be cancelled with the caller's future (a client
    /// that disconnects while its request is in flight drops that future), so whatever is
    /// committed is driven.
    async fn commit_and_dispatch(
        &self,
        batch: WriteBatch,
        started: Vec<RunMachine>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let node = self.clone();
        let handoff = tokio::spawn(async move {
            let stored = node.inner().store.commit(batch).await?;
            for m in started {
                node.dispatch(m);
            }
            Ok(stored)
        });
        handoff.await.map_err(|e| {
            tracing::error!(error = %e, "the intake commit task failed");
            StoreError::Unavailable("the intake commit task failed".into())
        })?
    }

    /// Accepts an event: durable (with the runs it triggers) before this returns.
    pub async fn emit_event(&self, req: EmitEvent) -> Result<StoredEvent, XynError> {
        let id = EventId(self.inner().ids.new_uuid());
        self.emit_event_with_id(id, req).await
    }

    /// Accepts an event whose id the caller chose (a message from a durable source, so that a
    /// redelivery is refused as a conflict instead of becoming a second event).
    pub async fn emit_event_with_id(
        &self,
        event_id: EventId,
        req: EmitEvent,
    ) -> Result<StoredEvent, XynError> {
        let inner = self.inner();
        validate_external_event_name(&req.event_name).map_err(|e| match e {
            EventNameError::Reserved => {
                XynError::invalid(codes::EVENT_RESERVED_NAME, e.to_string())
            }
            other => XynError::invalid(codes::EVENT_INVALID_NAME, other.to_string()),
        })?;
        if !req.data.is_object() {
            return Err(XynError::invalid(
                codes::EVENT_INVALID_DATA,
                "data must be a JSON object",
            ));
        }
        let size = serde_json::to_vec(&req.data).map(|v| v.len()).unwrap_or(0);
        if size > inner.config.max_event_bytes {
            return Err(XynError::new(
                xyn_core::ErrorKind::TooLarge,
                codes::REQUEST_TOO_LARGE,
                format!(
                    "event data is {size} bytes; the limit is {}",
                    inner.config.max_event_bytes
                ),
            ));
        }
        if let Some(r) = &req.resource
            && (r.kind.is_empty() || r.id.is_empty())
        {
            return Err(XynError::invalid(
                codes::REQUEST_INVALID,
                "resource needs a non-empty type and id",
            ));
        }
        let event = Event {
            event_id,
            event_name: req.event_name,
            occurred_at: inner.clock.now(),
            env_id: inner.config.env_id.clone(),
            actor: req.actor.clone(),
            correlation_id: self.correlation(req.correlation_id)?,
            run_id: req.run_id,
            step_id: req.step_id,
            resource: req.resource,
            data: req.data,
        };
        let mut batch = WriteBatch {
            events: vec![event.clone()],
            ..Default::default()
        };
        let mut started = Vec::new();
        let (matching, failures) = self.matching_plans(&event);
        for f in failures {
            // The failure is recorded with the event, so the blueprint's author can see why it
            // did not trigger; intake itself goes on.
            batch.events.push(Event {
                event_id: EventId(inner.ids.new_uuid()),
                event_name: names::TRIGGER_FILTER_FAILED.into(),
                occurred_at: inner.clock.now(),
                env_id: inner.config.env_id.clone(),
                actor: req.actor.clone(),
                correlation_id: event.correlation_id.clone(),
                run_id: None,
                step_id: None,
                resource: Some(xyn_core::Resource {
                    kind: "blueprint".into(),
                    id: f.blueprint_id,
                }),
                data: json!({
                    "event_id": event.event_id,
                    "version": f.version,
                    "code": f.error.code,
                    "message": f.error.message,
                }),
            });
        }
        for (version, plan) in matching {
            if let Ok(mut m) = self.new_run(plan, version, &event, None, &req.actor) {
                Self::insert_run(&mut batch, &mut m);
                self.enqueue(&mut batch, &m);
                started.push(m);
            }
        }
        for m in &started {
            tracing::info!(run_id = %m.run.run_id, blueprint_id = %m.run.blueprint_id,
                correlation_id = %m.run.correlation_id, event_id = %event.event_id, "run triggered");
        }
        let stored = self.commit_and_dispatch(batch, started).await?;
        stored
            .into_iter()
            .next()
            .ok_or_else(|| XynError::internal("the store returned no event"))
    }

    /// Starts a run of a blueprint by hand. Inputs are checked first: bad inputs change nothing.
    pub async fn start_run(&self, req: StartRun) -> Result<Run, XynError> {
        self.start_run_linked(req, None).await
    }

    /// Re-runs a run: a new run of the same blueprint version with the old run's inputs, or
    /// with `inputs` when given (checked first: bad inputs change nothing). The two are linked
    /// both ways in the log: the new run's request (`xyn.run.requested`) names the old run in
    /// `rerun_of`, and `xyn.run.rerun` on the old run names the new one.
    pub async fn rerun(
        &self,
        old: RunId,
        inputs: Option<Map<String, Value>>,
        name: Option<String>,
        actor: String,
        correlation_id: Option<String>,
    ) -> Result<Run, XynError> {
        let prev =
            self.inner().store.get_run(old).await?.ok_or_else(|| {
                XynError::not_found(codes::RUN_NOT_FOUND, format!("no run {old}"))
            })?;
        let inputs = match inputs {
            Some(i) => i,
            None => prev.inputs.as_object().cloned().unwrap_or_default(),
        };
        let req = StartRun {
            blueprint_id: prev.blueprint_id.clone(),
            version: Some(prev.blueprint_version),
            inputs,
            name: name.or_else(|| Some(prev.name.clone())),
            priority: prev.priority,
            actor,
            correlation_id,
        };
        self.start_run_linked(req, Some(&prev)).await
    }

    async fn start_run_linked(
        &self,
        req: StartRun,
        rerun_of: Option<&Run>,
    ) -> Result<Run, XynError> {
        let inner = self.inner();
        let (version, plan) = match req.version {
            Some(v) => (v, self.plan_for(&req.blueprint_id, v).await?),
            None => self.head_plan(&req.blueprint_id).await?,
        };
        let event = Event {
            event_id: EventId(inner.ids.new_uuid()),
            event_name: names::RUN_REQUESTED.into(),
            occurred_at: inner.clock.now(),
            env_id: inner.config.env_id.clone(),
            actor: req.actor.clone(),
            correlation_id: self.correlation(req.correlation_id)?,
            run_id: None,
            step_id: None,
            resource: Some(Resource {
                kind: "blueprint".into(),
                id: plan.id.clone(),
            }),
            data: json!({"blueprint_id": plan.id, "version": version, "inputs": req.inputs}),
        };
        let mut event = event;
        if let Some(prev) = rerun_of {
            event.data["rerun_of"] = json!(prev.run_id.to_string());
        }
        let mut m = self
            .new_run(plan, version, &event, Some(&req.inputs), &req.actor)
            .map_err(|issues| {
                let msg = issues
                    .iter()
                    .map(|i| i.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                XynError::invalid(codes::RUN_INPUTS_INVALID, msg)
                    .with_details(json!({"issues": issues}))
            })?;
        if let Some(n) = req.name.filter(|n| !n.trim().is_empty()) {
            m.run.name = n;
        }
        m.run.priority = req.priority;
        let mut batch = WriteBatch {
            events: vec![event],
            ..Default::default()
        };
        Self::insert_run(&mut batch, &mut m);
        if let Some(prev) = rerun_of {
            batch.events.push(Event {
                event_id: EventId(inner.ids.new_uuid()),
                event_name: names::RUN_RERUN.into(),
                occurred_at: inner.clock.now(),
                env_id: inner.config.env_id.clone(),
                actor: req.actor.clone(),
                correlation_id: prev.correlation_id.clone(),
                run_id: Some(prev.run_id),
                step_id: None,
                resource: Some(Resource {
                    kind: "run".into(),
                    id: prev.run_id.to_string(),
                }),
                data: json!({
                    "rerun_run_id": m.run.run_id.to_string(),
                    "inputs_changed": m.run.inputs != prev.inputs,
                }),
            });
        }
        self.enqueue(&mut batch, &m);
        let run = m.run.clone();
        self.commit_and_dispatch(batch, vec![m]).await?;
        tracing::info!(run_id = %run.run_id, blueprint_id = %run.blueprint_id, actor = %run.actor, rerun_of = ?rerun_of.map(|r| r.run_id), "run started by hand");
        Ok(run)
    }

    /// Creates the run of a cron slot together with its claim; `false` when the slot had
    /// already fired (here or in another process).
    pub(crate) async fn fire_cron(
        &self,
        plan: Arc<Plan>,
        version: i64,
        slot: xyn_core::Timestamp,
    ) -> Result<bool, XynError> {
        let inner = self.inner();
        let now = inner.clock.now();
        let event = Event {
            event_id: EventId(inner.ids.new_uuid()),
            event_name: names::CRON_FIRED.into(),
            occurred_at: now,
            env_id: inner.config.env_id.clone(),
            actor: "system:cron".into(),
            correlation_id: inner.ids.new_uuid().to_string(),
            run_id: None,
            step_id: None,
            resource: Some(Resource {
                kind: "blueprint".into(),
                id: plan.id.clone(),
            }),
            data: json!({
                "blueprint_id": plan.id,
                "version": version,
                "slot": slot.to_string(),
                "cron": plan.trigger.cron.as_ref().map(|c| c.source()),
            }),
        };
        let mut batch = WriteBatch {
            events: vec![event.clone()],
            cron_fires: vec![xyn_store::CronFire {
                blueprint_id: plan.id.clone(),
                slot,
                fired_at: now,
            }],
            ..Default::default()
        };
        let Ok(mut m) = self.new_run(plan, version, &event, None, "system:cron") else {
            return Ok(false);
        };
        Self::insert_run(&mut batch, &mut m);
        self.enqueue(&mut batch, &m);
        let (run_id, blueprint_id) = (m.run.run_id, m.run.blueprint_id.clone());
        match self.commit_and_dispatch(batch, vec![m]).await {
            Ok(_) => {
                tracing::info!(%run_id, %blueprint_id, slot = %slot, "cron fired");
                Ok(true)
            }
            Err(xyn_store::StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
