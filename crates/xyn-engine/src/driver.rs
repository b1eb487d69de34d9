//! Driving a run: decide, execute, persist, until the run must wait or is finished; and the
//! operations that change a run from outside (approve, reject, cancel).

use serde_json::{Value, json};
use xyn_core::run::{Next, Run, RunMachine, Step, StepStatus};
use xyn_core::template::SecretAccess;
use xyn_core::{RunId, Timestamp, XynError, codes};
use xyn_store::{QueueWrite, RunWrite, StepWrite, StoreError, WriteBatch};

use crate::Node;
use crate::scheduler::Work;

/// What a sync does with the run's place in the queue. On the embedded node only `Park`
/// matters (it sets the in-memory timer); on a shared store each becomes a [`QueueWrite`]
/// committed with the run's rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum End {
    /// The driver goes on: its lease is checked and renewed.
    Keep,
    /// The driver lets go; the run is due again then (`None`: when a decision arrives).
    Park(Option<Timestamp>),
    /// The run ended.
    Finish,
    /// Written from outside the driver (a gate decision): the run is due now.
    Wake,
    /// The run was cancelled from outside: it ends, and whoever executes it is told to stop.
    Cancel,
    /// A finished run was retried: it is queued again, due now, for any worker.
    Requeue,
}

/// What executing one step left the driver with.
pub(crate) enum Progress {
    /// Carry on deciding.
    Continue,
    /// The run was cancelled while the step ran: stop without writing.
    Cancelled,
}

impl Node {
    pub(crate) async fn run_work(&self, work: Work) -> Result<(), XynError> {
        let run_id = work.run_id();
        let recovering = work.recovering();
        let _guard = self.inner().run_locks.lock(run_id).await;
        let mut m = match work {
            Work::Fresh(m) | Work::TakenOver(m) => *m,
            Work::Resume(id) => match self.load_machine(id).await? {
                Some(m) => m,
                None => return Ok(()),
            },
            Work::Recover(id) | Work::Claimed(id) => match self.load_machine(id).await? {
                Some(mut m) => {
                    let inner = self.inner();
                    let interrupted = m.interrupt_running(inner.ids.as_ref(), inner.clock.now());
                    if !interrupted.is_empty() {
                        tracing::warn!(%run_id, steps = ?interrupted, "retrying steps whose attempt was interrupted (a restart, or a worker whose lease expired)");
                    }
                    m
                }
                None => {
                    // A queue row without its run: drop the row.
                    self.inner()
                        .store
                        .commit(WriteBatch {
                            queue: vec![QueueWrite::Finish { run_id }],
                            ..Default::default()
                        })
                        .await?;
                    self.inner().held.remove(run_id);
                    return Ok(());
                }
            },
        };
        self.drive(&mut m, recovering).await
    }

    /// Loads a run with its steps, plan and triggering event.
    /// The machine of a run a caller named: `run.not_found` when there is none.
    async fn existing_machine(&self, run_id: RunId) -> Result<RunMachine, XynError> {
        self.load_machine(run_id)
            .await?
            .ok_or_else(|| XynError::not_found(codes::RUN_NOT_FOUND, format!("no run {run_id}")))
    }

    pub(crate) async fn load_machine(&self, run_id: RunId) -> Result<Option<RunMachine>, XynError> {
        let inner = self.inner();
        let Some(run) = inner.store.get_run(run_id).await? else {
            return Ok(None);
        };
        let steps = inner.store.get_steps(run_id).await?;
        let plan = self
            .plan_for(&run.blueprint_id, run.blueprint_version)
            .await?;
        let event = match run.trigger_event_id {
            Some(e) => inner.store.get_event(e).await?.map(|s| s.event),
            None => None,
        };
        Ok(Some(RunMachine::resume(
            plan,
            run,
            steps,
            event.as_ref(),
            inner.config.limits,
        )))
    }

    /// Commits the machine's changes. On a conflict (someone else changed the run since it was
    /// read), reloads the machine from the store and returns `false`.
    pub(crate) async fn sync(&self, m: &mut RunMachine) -> Result<bool, XynError> {
        self.sync_with(m, End::Keep).await
    }

    /// Commits the machine's changes together with what `end` does to the run's place in the
    /// queue. On a conflict, reloads the machine and returns `false` (nothing was written); a
    /// lost lease is an error (`run.lease_lost`): the caller must stop driving the run.
    pub(crate) async fn sync_with(&self, m: &mut RunMachine, end: End) -> Result<bool, XynError> {
        let inner = self.inner();
        let run_id = m.run.run_id;
        let queue: Vec<QueueWrite> = match &inner.config.cluster {
            None => vec![],
            Some(c) => {
                let held = inner.held.contains(run_id);
                match end {
                    End::Keep if held => vec![QueueWrite::Hold {
                        run_id,
                        owner: c.owner.clone(),
                        lease_ms: c.lease_ms,
                    }],
                    End::Keep => vec![],
                    End::Park(due_at) if held => vec![QueueWrite::Park {
                        run_id,
                        owner: c.owner.clone(),
                        due_at,
                    }],
                    End::Park(_) => vec![],
                    End::Finish => vec![QueueWrite::Finish { run_id }],
                    End::Wake => vec![QueueWrite::Wake {
                        run_id,
                        at: inner.clock.now(),
                    }],
                    End::Cancel => {
                        vec![QueueWrite::Finish { run_id }, QueueWrite::Cancel { run_id }]
                    }
                    End::Requeue => vec![QueueWrite::Enqueue {
                        run_id,
                        due_at: Some(inner.clock.now()),
                        owner: None,
                        lease_ms: c.lease_ms,
                    }],
                }
            }
        };
        let releases = queue
            .iter()
            .any(|q| matches!(q, QueueWrite::Park { .. } | QueueWrite::Finish { .. }));
        let must_write = queue.iter().any(|q| !matches!(q, QueueWrite::Hold { .. }));
        if !m.has_changes() && !must_write {
            if let (None, End::Park(Some(at))) = (&inner.config.cluster, end) {
                inner.scheduler.wake_at(at, run_id);
            }
            return Ok(true);
        }
        let changed = m.has_changes();
        let mut batch = WriteBatch {
            queue,
            ..Default::default()
        };
        if changed {
            let ch = m.take_changes();
            m.run.revision += 1;
            batch.events = ch.events;
            batch.runs = vec![RunWrite::Update {
                run: m.run.clone(),
                expect: None,
            }];
            batch.steps = ch
                .steps_changed
                .iter()
                .map(|&i| StepWrite::Update {
                    step: m.steps[i].clone(),
                    expect: None,
                })
                .collect();
            batch.footprints = ch.footprints;
            batch.artifacts = ch.artifacts;
        }
        match inner.store.commit(batch).await {
            Ok(_) => {
                if releases {
                    inner.held.remove(run_id);
                }
                if changed && m.run.status.is_terminal() {
                    self.teardown(run_id);
                }
                if let (None, End::Park(Some(at))) = (&inner.config.cluster, end) {
                    inner.scheduler.wake_at(at, run_id);
                }
                Ok(true)
            }
            Err(StoreError::LeaseLost(why)) => {
                inner.held.remove(run_id);
                Err(XynError::conflict("run.lease_lost", why))
            }
            Err(StoreError::Conflict(why)) => {
                tracing::debug!(run_id = %m.run.run_id, %why, "run changed meanwhile; reloading");
                match self.load_machine(m.run.run_id).await? {
                    Some(fresh) => *m = fresh,
                    None => return Err(XynError::internal("the run disappeared")),
                }
                Ok(false)
            }
            Err(e) => {
                if changed {
                    m.run.revision -= 1;
                }
                Err(e.into())
            }
        }
    }

    /// Releases what the ended run held outside the store (the teardown port), in the
    /// background: its errors are logged and never change the run.
    fn teardown(&self, run_id: RunId) {
        let Some(t) = self.inner().teardown.clone() else {
            return;
        };
        tokio::spawn(async move {
            match tokio::time::timeout(std::time::Duration::from_secs(120), t.run_ended(run_id))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%run_id, error = %e, "the run's teardown failed; what it held is swept later")
                }
                Err(_) => {
                    tracing::warn!(%run_id, "the run's teardown timed out; what it held is swept later")
                }
            }
        });
    }

    /// Drives a run until it waits (gate, timer) or ends. The caller holds the run lock.
    /// `recovering`: the run was resumed after a restart or taken over from another worker;
    /// its pure steps are started durably (they may be what crashed the process before).
    pub(crate) async fn drive(&self, m: &mut RunMachine, recovering: bool) -> Result<(), XynError> {
        let inner = self.inner();
        let ids = inner.ids.as_ref();
        loop {
            let now = inner.clock.now();
            if inner.shutdown.is_cancelled() {
                // On a shared store another worker takes the run over at once.
                let end = match inner.config.cluster {
                    Some(_) => End::Park(Some(now)),
                    None => End::Keep,
                };
                self.sync_with(m, end).await?;
                return Ok(());
            }
            match m.decide(now) {
                Next::Done => {
                    if self.sync_with(m, End::Finish).await? {
                        return Ok(());
                    }
                }
                Next::Complete(outputs) => {
                    if !crate::steps::json_fits(&outputs, inner.config.max_output_bytes) {
                        let max = inner.config.max_output_bytes;
                        m.fail(
                            ids,
                            now,
                            json!({"code": codes::RUN_OUTPUT_TOO_LARGE, "message": format!(
                                "the run's outputs are larger than the limit of {max} bytes (engine.max_output_bytes)"
                            ), "limit_bytes": max}),
                        );
                        if self.sync_with(m, End::Finish).await? {
                            return Ok(());
                        }
                        continue;
                    }
                    m.complete(ids, now, outputs);
                    if self.sync_with(m, End::Finish).await? {
                        tracing::info!(run_id = %m.run.run_id, blueprint_id = %m.run.blueprint_id,
                            correlation_id = %m.run.correlation_id, "run completed");
                        return Ok(());
                    }
                }
                Next::Fail(error) => {
                    m.fail(ids, now, error.clone());
                    if self.sync_with(m, End::Finish).await? {
                        tracing::warn!(run_id = %m.run.run_id, blueprint_id = %m.run.blueprint_id,
                            correlation_id = %m.run.correlation_id, error = %error, "run failed");
                        return Ok(());
                    }
                }
                Next::Skip(i) => m.skip_step(ids, now, i, "its condition ('if') is false"),
                Next::Sleep(at) => {
                    if self.sync_with(m, End::Park(Some(at))).await? {
                        return Ok(());
                    }
                }
                Next::AwaitDecision { deadline, .. } => {
                    if self.sync_with(m, End::Park(deadline)).await? {
                        return Ok(());
                    }
                }
                Next::OpenGate(i) => {
                    let message = match &m.plan.steps[i].body {
                        xyn_core::blueprint::StepBody::Gate {
                            message: Some(t), ..
                        } => {
                            let v = t
                                .render(&m.context(), &mut SecretAccess::Mask)
                                .unwrap_or(Value::Null);
                            Some(v.as_str().map_or_else(|| v.to_string(), str::to_string))
                        }
                        _ => None,
                    };
                    let effects = self.gate_effects(m, i);
                    m.open_gate(ids, now, i, message, effects);
                    tracing::info!(run_id = %m.run.run_id, step = %m.steps[i].name, "gate waits for a decision");
                }
                Next::GateTimedOut(i) => m.time_out_gate(ids, now, i),
                Next::Execute(i) => match self.execute_step(m, i, recovering).await? {
                    Progress::Continue => {}
                    Progress::Cancelled => {
                        // Whoever cancelled wrote the run's end (and dropped its queue row).
                        inner.held.remove(m.run.run_id);
                        return Ok(());
                    }
                },
            }
        }
    }

    pub(crate) async fn fail_after_panic(&self, run_id: RunId, msg: &str) -> Result<(), XynError> {
        let _g = self.inner().run_locks.lock(run_id).await;
        let Some(mut m) = self.load_machine(run_id).await? else {
            return Ok(());
        };
        if m.run.status.is_terminal() {
            return Ok(());
        }
        let inner = self.inner();
        m.fail(
            inner.ids.as_ref(),
            inner.clock.now(),
            json!({"code": codes::INTERNAL, "message": format!("internal error while running: {msg}")}),
        );
        self.sync_with(&mut m, End::Finish).await.map(|_| ())
    }

    /// Approves or rejects a waiting gate. `step` is the step's id or its blueprint name.
    pub async fn decide_gate(
        &self,
        run_id: RunId,
        step: &str,
        approve: bool,
        actor: &str,
        comment: Option<String>,
    ) -> Result<Step, XynError> {
        let inner = self.inner();
        for _ in 0..3 {
            let guard = inner.run_locks.lock(run_id).await;
            let mut m = self.existing_machine(run_id).await?;
            let idx = m
                .steps
                .iter()
                .position(|s| s.name == step || s.step_id.to_string() == step)
                .ok_or_else(|| {
                    XynError::not_found(
                        codes::STEP_NOT_FOUND,
                        format!("run {run_id} has no step {step:?}"),
                    )
                })?;
            let s = &m.steps[idx];
            if s.kind != xyn_core::blueprint::StepKind::Gate {
                return Err(XynError::conflict(
                    codes::STEP_NOT_A_GATE,
                    format!(
                        "step '{}' is a {}, not a gate: only gates are approved or rejected",
                        s.name,
                        s.kind.as_str()
                    ),
                ));
            }
            if s.status != StepStatus::Waiting {
                return Err(XynError::conflict(
                    codes::STEP_NOT_WAITING,
                    format!(
                        "gate '{}' is {}, not waiting for a decision",
                        s.name,
                        s.status.as_str()
                    ),
                )
                .with_details(
                    json!({"status": s.status.as_str(), "run_status": m.run.status.as_str()}),
                ));
            }
            m.decide_gate(
                inner.ids.as_ref(),
                inner.clock.now(),
                idx,
                approve,
                actor,
                comment.clone(),
            );
            let end = if m.run.status.is_terminal() {
                End::Finish
            } else {
                End::Wake
            };
            if !self.sync_with(&mut m, end).await? {
                drop(guard);
                continue;
            }
            let out = m.steps[idx].clone();
            tracing::info!(%run_id, step = %out.name, approved = approve, actor, "gate decided");
            drop(guard);
            // On a shared store the queue row is due now and a worker claims it.
            if !m.run.status.is_terminal() && inner.config.cluster.is_none() {
                inner.scheduler.push(Work::Fresh(Box::new(m)));
            }
            return Ok(out);
        }
        Err(XynError::conflict(
            "run.busy",
            format!("run {run_id} kept changing; try again"),
        ))
    }

    /// Cancels a run that has not finished.
    pub async fn cancel_run(
        &self,
        run_id: RunId,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Run, XynError> {
        let inner = self.inner();
        for _ in 0..5 {
            let token = inner
                .cancels
                .lock()
                .ok()
                .and_then(|m| m.get(&run_id).cloned());
            if let Some(t) = token {
                t.cancel();
            }
            let _guard = inner.run_locks.lock(run_id).await;
            let mut m = self.existing_machine(run_id).await?;
            if m.run.status.is_terminal() {
                return Err(XynError::conflict(
                    codes::RUN_ALREADY_FINISHED,
                    format!("run {run_id} is already {}", m.run.status.as_str()),
                )
                .with_details(json!({"status": m.run.status.as_str()})));
            }
            m.cancel(inner.ids.as_ref(), inner.clock.now(), actor, reason.clone());
            match self.sync_with(&mut m, End::Cancel).await {
                Ok(true) => {
                    tracing::info!(%run_id, actor, "run cancelled");
                    return Ok(m.run);
                }
                Ok(false) => continue,
                Err(e) => {
                    // Whatever happened, make sure the run is driven again.
                    if inner.config.cluster.is_none() {
                        inner.scheduler.push(Work::Resume(run_id));
                    }
                    return Err(e);
                }
            }
        }
        Err(XynError::conflict(
            "run.busy",
            format!("run {run_id} kept changing; try again"),
        ))
    }

    /// Retries a failed run from its failed step (`step`: that step's id or name; `None`: the
    /// one that failed): a new attempt of the step in the same run, recorded as
    /// `xyn.run.retried` by `actor`. Earlier attempts stay in the log.
    pub async fn retry_run(
        &self,
        run_id: RunId,
        step: Option<&str>,
        actor: &str,
    ) -> Result<Run, XynError> {
        let inner = self.inner();
        for _ in 0..3 {
            let guard = inner.run_locks.lock(run_id).await;
            let mut m = self.existing_machine(run_id).await?;
            let idx = match step {
                None => None,
                Some(name) => Some(
                    m.steps
                        .iter()
                        .position(|s| s.name == name || s.step_id.to_string() == name)
                        .ok_or_else(|| {
                            XynError::not_found(
                                codes::STEP_NOT_FOUND,
                                format!("run {run_id} has no step {name:?}"),
                            )
                        })?,
                ),
            };
            let idx = m.check_retry(idx)?;
            m.retry(inner.ids.as_ref(), inner.clock.now(), idx, actor);
            if !self.sync_with(&mut m, End::Requeue).await? {
                drop(guard);
                continue;
            }
            tracing::info!(%run_id, step = %m.steps[idx].name, actor, "run retried from its failed step");
            drop(guard);
            let run = m.run.clone();
            if inner.config.cluster.is_none() {
                inner.scheduler.push(Work::Fresh(Box::new(m)));
            }
            return Ok(run);
        }
        Err(XynError::conflict(
            "run.busy",
            format!("run {run_id} kept changing; try again"),
        ))
    }
}
