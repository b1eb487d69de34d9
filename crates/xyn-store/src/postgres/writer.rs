//! The writer: one task per process that commits waiting batches in groups, checks their
//! preconditions from what the set-based statements return, then numbers, hashes and appends
//! the group's events under the chain head lock.

use super::*;

// ---------------------------------------------------------------------------------------------
// The writer.

pub(super) struct WConn {
    pub(super) client: Client,
    pub(super) st: WStmts,
    pub(super) task: JoinHandle<()>,
}

impl Drop for WConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) struct WStmts {
    pub(super) lock_head: Statement,
    pub(super) events: Statement,
    pub(super) head: Statement,
    pub(super) outbox: Statement,
    pub(super) notify: Statement,
    pub(super) cron: Statement,
    pub(super) blueprints: Statement,
    pub(super) drafts_insert: Statement,
    pub(super) draft_update: Statement,
    pub(super) runs_insert: Statement,
    pub(super) runs_update: Statement,
    pub(super) steps_insert: Statement,
    pub(super) steps_update: Statement,
    pub(super) artifacts: Statement,
    pub(super) footprints: Statement,
    pub(super) q_enqueue: Statement,
    pub(super) q_hold: Statement,
    pub(super) q_park: Statement,
    pub(super) q_finish: Statement,
    pub(super) q_wake: Statement,
    pub(super) triggers: Statement,
}

pub(super) fn unnest(cols: &str, types: &[&str]) -> String {
    let args: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", i + 1))
        .collect();
    format!("unnest({}) AS u({cols})", args.join(", "))
}

pub(super) const RUN_TYPES: [&str; 19] = [
    "text", "text", "text", "bigint", "text", "bigint", "bigint", "bigint", "text", "text", "text",
    "text", "text", "text", "text", "bigint", "bigint", "bigint", "bigint",
];
pub(super) const STEP_TYPES: [&str; 16] = [
    "text", "text", "text", "bigint", "text", "text", "bigint", "bigint", "bigint", "text", "text",
    "text", "bigint", "text", "text", "text",
];

pub(super) fn set_list(cols: &str, skip: usize) -> String {
    cols.split(',')
        .map(str::trim)
        .skip(skip)
        .map(|c| format!("{c} = u.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl WConn {
    pub(super) async fn connect(pc: &tokio_postgres::Config, target: &str) -> StoreResult<Self> {
        let (client, task) = connect(pc, target).await?;
        let run_u = format!("{RUN_COLS}, expect");
        let mut run_ut = RUN_TYPES.to_vec();
        run_ut.push("text");
        let step_u = format!("{STEP_COLS}, expect");
        let mut step_ut = STEP_TYPES.to_vec();
        step_ut.push("text");
        let sqls: Vec<String> = vec![
            "SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE".into(),
            format!(
                "INSERT INTO events ({EVENT_COLS}) SELECT * FROM {}",
                unnest(
                    EVENT_COLS,
                    &[
                        "bigint", "text", "text", "bigint", "text", "text", "text", "text", "text",
                        "text", "text", "text", "text"
                    ]
                )
            ),
            "UPDATE chain_head SET seq = $1, hash = $2 WHERE id = 1".into(),
            "INSERT INTO outbox (first_seq, last_seq, created_at) VALUES ($1, $2, xyn_now_us())"
                .into(),
            format!("SELECT pg_notify('{CHANNEL}', p) FROM unnest($1::text[]) AS p"),
            format!(
                "INSERT INTO cron_fires (blueprint_id, slot, fired_at) SELECT * FROM {} \
                 ON CONFLICT DO NOTHING RETURNING blueprint_id, slot",
                unnest("blueprint_id, slot, fired_at", &["text", "bigint", "bigint"])
            ),
            format!(
                "INSERT INTO blueprint_versions ({BLUEPRINT_COLS}) SELECT * FROM {} \
                 ON CONFLICT DO NOTHING RETURNING blueprint_id, version",
                unnest(
                    BLUEPRINT_COLS,
                    &["text", "bigint", "text", "text", "text", "text", "bigint", "text", "text"]
                )
            ),
            format!(
                "INSERT INTO drafts ({DRAFT_COLS}) SELECT * FROM {}",
                unnest(
                    DRAFT_COLS,
                    &[
                        "text", "text", "text", "text", "bigint", "text", "text", "text", "text",
                        "text", "text", "bigint", "bigint", "bigint"
                    ]
                )
            ),
            "UPDATE drafts SET name=$2, kind=$3, status=$4, revision=$5, trigger_event_type=$6, definition=$7, \
             definition_artifact_id=$8, notes=$9, source_run_id=$10, validation=$11, promoted_version=$12, \
             created_at=$13, updated_at=$14 WHERE draft_id=$1 AND ($15::bigint IS NULL OR revision = $15)"
                .into(),
            format!(
                "INSERT INTO runs ({RUN_COLS}) SELECT * FROM {}",
                unnest(RUN_COLS, &RUN_TYPES)
            ),
            format!(
                "UPDATE runs r SET {} FROM {} WHERE r.run_id = u.run_id AND r.revision = u.revision - 1 \
                 AND (u.expect IS NULL OR r.status = ANY(string_to_array(u.expect, ','))) RETURNING r.run_id",
                set_list(RUN_COLS, 1),
                unnest(&run_u, &run_ut)
            ),
            format!(
                "INSERT INTO steps ({STEP_COLS}) SELECT * FROM {}",
                unnest(STEP_COLS, &STEP_TYPES)
            ),
            format!(
                "UPDATE steps s SET {} FROM {} WHERE s.step_id = u.step_id \
                 AND (u.expect IS NULL OR s.status = ANY(string_to_array(u.expect, ','))) RETURNING s.step_id",
                set_list(STEP_COLS, 1),
                unnest(&step_u, &step_ut)
            ),
            format!(
                "INSERT INTO artifacts ({ARTIFACT_COLS}) SELECT * FROM {}",
                unnest(
                    ARTIFACT_COLS,
                    &[
                        "text", "text", "text", "text", "bigint", "text", "bigint", "text", "text",
                        "text", "text"
                    ]
                )
            ),
            format!(
                "INSERT INTO footprints ({FOOTPRINT_COLS}) SELECT * FROM {}",
                unnest(
                    FOOTPRINT_COLS,
                    &[
                        "bigint", "text", "text", "text", "text", "text", "float8", "text", "text",
                        "text"
                    ]
                )
            ),
            format!(
                "INSERT INTO run_queue (run_id, due_at, owner, lease_until, claims, enqueued_at) \
                 SELECT u.run_id, u.due_at, u.owner, \
                   CASE WHEN u.owner IS NULL THEN NULL ELSE xyn_now_us() + u.lease_ms * 1000 END, \
                   CASE WHEN u.owner IS NULL THEN 0 ELSE 1 END, xyn_now_us() FROM {}",
                unnest(
                    "run_id, due_at, owner, lease_ms",
                    &["text", "bigint", "text", "bigint"]
                )
            ),
            format!(
                "UPDATE run_queue q SET lease_until = xyn_now_us() + u.lease_ms * 1000 FROM {} \
                 WHERE q.run_id = u.run_id AND q.owner = u.owner RETURNING q.run_id",
                unnest("run_id, owner, lease_ms", &["text", "text", "bigint"])
            ),
            format!(
                "UPDATE run_queue q SET owner = NULL, lease_until = NULL, due_at = u.due_at FROM {} \
                 WHERE q.run_id = u.run_id AND q.owner = u.owner RETURNING q.run_id",
                unnest("run_id, owner, due_at", &["text", "text", "bigint"])
            ),
            "DELETE FROM run_queue WHERE run_id = ANY($1::text[])".into(),
            format!(
                "UPDATE run_queue q SET due_at = LEAST(COALESCE(q.due_at, u.at), u.at) FROM {} \
                 WHERE q.run_id = u.run_id AND q.owner IS NULL",
                unnest("run_id, at", &["text", "bigint"])
            ),
            format!(
                "INSERT INTO blueprint_triggers (blueprint_id, enabled, changed_at, changed_by) \
                 SELECT * FROM {} ON CONFLICT (blueprint_id) DO UPDATE SET \
                 enabled = excluded.enabled, changed_at = excluded.changed_at, \
                 changed_by = excluded.changed_by",
                unnest(
                    "blueprint_id, enabled, changed_at, changed_by",
                    &["text", "boolean", "bigint", "text"]
                )
            ),
        ];
        let prepared = futures_util::future::try_join_all(sqls.iter().map(|s| client.prepare(s)))
            .await
            .map_err(pg_err)?;
        let mut it = prepared.into_iter();
        let mut next = || {
            it.next()
                .ok_or_else(|| StoreError::Unavailable("statement missing".into()))
        };
        let st = WStmts {
            lock_head: next()?,
            events: next()?,
            head: next()?,
            outbox: next()?,
            notify: next()?,
            cron: next()?,
            blueprints: next()?,
            drafts_insert: next()?,
            draft_update: next()?,
            runs_insert: next()?,
            runs_update: next()?,
            steps_insert: next()?,
            steps_update: next()?,
            artifacts: next()?,
            footprints: next()?,
            q_enqueue: next()?,
            q_hold: next()?,
            q_park: next()?,
            q_finish: next()?,
            q_wake: next()?,
            triggers: next()?,
        };
        Ok(Self { client, st, task })
    }
}

pub(super) async fn writer_loop(
    pc: tokio_postgres::Config,
    target: String,
    mut rx: mpsc::UnboundedReceiver<(Box<WriteBatch>, Reply)>,
    c: Arc<Counters>,
) {
    let mut conn: Option<WConn> = None;
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => group.push(cmd),
                Err(_) => break,
            }
        }
        if conn.as_ref().is_none_or(|w| w.client.is_closed()) {
            conn = None;
            match WConn::connect(&pc, &target).await {
                Ok(w) => conn = Some(w),
                Err(e) => {
                    tracing::error!(error = %e, "the store writer cannot connect; refusing the group");
                    for (_, reply) in group {
                        let _ = reply.send(Err(e.clone_unavailable()));
                    }
                    continue;
                }
            }
        }
        let Some(w) = conn.as_mut() else { continue };
        let batches: Vec<&WriteBatch> = group.iter().map(|(b, _)| b.as_ref()).collect();
        match commit_group(w, &batches).await {
            Ok((results, commits)) => {
                c.commits.fetch_add(commits, Ordering::Relaxed);
                c.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
                let n: usize = results.iter().map(|x| x.as_ref().map_or(0, Vec::len)).sum();
                c.events.fetch_add(n as u64, Ordering::Relaxed);
                for ((_, reply), res) in group.into_iter().zip(results) {
                    let _ = reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "PostgreSQL commit failed; the group is refused");
                if w.client.is_closed() {
                    conn = None;
                }
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Unavailable(format!(
                        "the store could not commit: {e}"
                    ))));
                }
            }
        }
    }
}

impl StoreError {
    pub(super) fn clone_unavailable(&self) -> StoreError {
        StoreError::Unavailable(self.to_string())
    }
}

pub(super) type Fut<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>>;

pub(super) enum Outcome {
    Committed(Vec<Vec<StoredEvent>>),
    /// Rolled back: these batches (positions in the attempt) failed a precondition.
    Refused(Vec<(usize, StoreError)>),
    /// Rolled back by an error.
    Failed(tokio_postgres::Error),
}

/// Commits a group; returns each batch's result and the number of transactions committed.
pub(super) async fn commit_group(
    w: &mut WConn,
    group: &[&WriteBatch],
) -> Result<(Vec<StoreResult<Vec<StoredEvent>>>, u64), tokio_postgres::Error> {
    let mut results: Vec<Option<StoreResult<Vec<StoredEvent>>>> =
        group.iter().map(|_| None).collect();
    let mut commits = 0;
    let mut alive: Vec<usize> = (0..group.len()).collect();
    let mut retries = 0;
    // Duplicate keys inside one statement would defeat the per-batch checks: such groups are
    // written one batch at a time.
    let mut one_by_one = has_duplicates(group);
    while !alive.is_empty() {
        if one_by_one && alive.len() > 1 {
            for &i in &alive {
                let res = match attempt(w, &[group[i]]).await {
                    Outcome::Committed(mut ev) => {
                        commits += 1;
                        Ok(ev.pop().unwrap_or_default())
                    }
                    Outcome::Refused(mut f) => Err(f
                        .pop()
                        .map_or_else(|| StoreError::Conflict("refused".into()), |(_, e)| e)),
                    Outcome::Failed(e) if is_db_error(&e) => Err(pg_err(e)),
                    Outcome::Failed(e) => return Err(e),
                };
                results[i] = Some(res);
            }
            break;
        }
        let batches: Vec<&WriteBatch> = alive.iter().map(|&i| group[i]).collect();
        match attempt(w, &batches).await {
            Outcome::Committed(events) => {
                commits += 1;
                for (&i, ev) in alive.iter().zip(events) {
                    results[i] = Some(Ok(ev));
                }
                break;
            }
            Outcome::Refused(failed) => {
                let mut drop_pos: HashSet<usize> = HashSet::new();
                for (pos, e) in failed {
                    results[alive[pos]] = Some(Err(e));
                    drop_pos.insert(pos);
                }
                alive = alive
                    .iter()
                    .enumerate()
                    .filter(|(p, _)| !drop_pos.contains(p))
                    .map(|(_, &i)| i)
                    .collect();
            }
            Outcome::Failed(e) if is_retryable(&e) && retries < 3 => {
                retries += 1;
                tracing::debug!(error = %e, "group commit retried");
            }
            Outcome::Failed(e) if is_db_error(&e) => {
                if alive.len() == 1 {
                    results[alive[0]] = Some(Err(pg_err(e)));
                    break;
                }
                one_by_one = true;
            }
            Outcome::Failed(e) => return Err(e),
        }
    }
    Ok((
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Unavailable("not attempted".into()))))
            .collect(),
        commits,
    ))
}

pub(super) fn has_duplicates(group: &[&WriteBatch]) -> bool {
    let mut runs = HashSet::new();
    let mut steps = HashSet::new();
    let mut queue = HashSet::new();
    let mut keys = HashSet::new();
    for b in group {
        for r in &b.runs {
            let id = match r {
                RunWrite::Insert(r) => r.run_id,
                RunWrite::Update { run, .. } => run.run_id,
            };
            if !runs.insert(id) {
                return true;
            }
        }
        for s in &b.steps {
            let id = match s {
                StepWrite::Insert(s) => s.step_id,
                StepWrite::Update { step, .. } => step.step_id,
            };
            if !steps.insert(id) {
                return true;
            }
        }
        for q in &b.queue {
            let id = match q {
                QueueWrite::Enqueue { run_id, .. }
                | QueueWrite::Hold { run_id, .. }
                | QueueWrite::Park { run_id, .. }
                | QueueWrite::Finish { run_id }
                | QueueWrite::Wake { run_id, .. } => *run_id,
                QueueWrite::Cancel { .. } => continue,
            };
            if !queue.insert(id) {
                return true;
            }
        }
        for f in &b.cron_fires {
            if !keys.insert(format!("cron:{}:{}", f.blueprint_id, f.slot.as_micros())) {
                return true;
            }
        }
        for v in &b.blueprint_versions {
            if !keys.insert(format!("bp:{}:{}", v.blueprint_id, v.version)) {
                return true;
            }
        }
        for d in &b.drafts {
            let id = match d {
                DraftWrite::Insert(d) => d.draft_id,
                DraftWrite::Update { draft, .. } => draft.draft_id,
            };
            if !keys.insert(format!("draft:{id}")) {
                return true;
            }
        }
    }
    false
}

pub(super) fn returned(rows: &[Row]) -> HashSet<String> {
    rows.iter()
        .filter_map(|r| r.try_get::<_, String>(0).ok())
        .collect()
}

pub(super) async fn attempt(w: &WConn, batches: &[&WriteBatch]) -> Outcome {
    match attempt_inner(w, batches).await {
        Ok(o) => o,
        Err(e) => {
            let _ = w.client.batch_execute("ROLLBACK").await;
            Outcome::Failed(e)
        }
    }
}

pub(super) async fn attempt_inner(
    w: &WConn,
    batches: &[&WriteBatch],
) -> Result<Outcome, tokio_postgres::Error> {
    let t = Tables::build(batches);
    let c = &w.client;
    let st = &w.st;
    let has_events = batches.iter().any(|b| !b.events.is_empty());

    // Phase 1: every write but the events, then the chain head lock, in one round trip.
    let bp_cols = (
        t.bps
            .iter()
            .map(|(_, v)| v.blueprint_id.clone())
            .collect::<Vec<_>>(),
        t.bps.iter().map(|(_, v)| v.version).collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.name.clone())
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| json_text(&v.definition))
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.source.clone())
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.digest.clone())
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.created_at.as_micros())
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.created_by.clone())
            .collect::<Vec<_>>(),
        t.bps
            .iter()
            .map(|(_, v)| v.origin.clone())
            .collect::<Vec<_>>(),
    );
    let d = &t.drafts_ins;
    let draft_cols = (
        d.iter().map(|x| x.draft_id.to_string()).collect::<Vec<_>>(),
        d.iter().map(|x| x.name.clone()).collect::<Vec<_>>(),
        d.iter().map(|x| x.kind.clone()).collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.status.as_str().to_string())
            .collect::<Vec<_>>(),
        d.iter().map(|x| x.revision).collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.trigger_event_type.clone())
            .collect::<Vec<_>>(),
        d.iter().map(|x| x.definition.clone()).collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.definition_artifact_id.map(|a| a.to_string()))
            .collect::<Vec<_>>(),
        d.iter().map(|x| x.notes.clone()).collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.source_run_id.map(|r| r.to_string()))
            .collect::<Vec<_>>(),
        d.iter()
            .map(|x| opt_json_text(&x.validation))
            .collect::<Vec<_>>(),
        d.iter().map(|x| x.promoted_version).collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.created_at.as_micros())
            .collect::<Vec<_>>(),
        d.iter()
            .map(|x| x.updated_at.as_micros())
            .collect::<Vec<_>>(),
    );
    let a = &t.artifacts;
    let art_cols = (
        a.iter()
            .map(|x| x.artifact_id.to_string())
            .collect::<Vec<_>>(),
        a.iter().map(|x| x.name.clone()).collect::<Vec<_>>(),
        a.iter().map(|x| x.kind.clone()).collect::<Vec<_>>(),
        a.iter().map(|x| x.content_type.clone()).collect::<Vec<_>>(),
        a.iter().map(|x| x.byte_length).collect::<Vec<_>>(),
        a.iter().map(|x| x.sha256.clone()).collect::<Vec<_>>(),
        a.iter()
            .map(|x| x.created_at.as_micros())
            .collect::<Vec<_>>(),
        a.iter().map(|x| x.created_by.clone()).collect::<Vec<_>>(),
        a.iter()
            .map(|x| x.run_id.map(|r| r.to_string()))
            .collect::<Vec<_>>(),
        a.iter()
            .map(|x| x.step_id.map(|s| s.to_string()))
            .collect::<Vec<_>>(),
        a.iter().map(|x| json_text(&x.metadata)).collect::<Vec<_>>(),
    );
    let f = &t.footprints;
    let fp_cols = (
        f.iter()
            .map(|x| x.occurred_at.as_micros())
            .collect::<Vec<_>>(),
        f.iter()
            .map(|x| x.run_id.map(|r| r.to_string()))
            .collect::<Vec<_>>(),
        f.iter()
            .map(|x| x.step_id.map(|s| s.to_string()))
            .collect::<Vec<_>>(),
        f.iter().map(|x| x.source_kind.clone()).collect::<Vec<_>>(),
        f.iter().map(|x| x.source_ref.clone()).collect::<Vec<_>>(),
        f.iter().map(|x| x.metric.clone()).collect::<Vec<_>>(),
        f.iter().map(|x| x.quantity).collect::<Vec<_>>(),
        f.iter().map(|x| x.unit.clone()).collect::<Vec<_>>(),
        f.iter().map(|x| x.class.clone()).collect::<Vec<_>>(),
        f.iter().map(|x| json_text(&x.dims)).collect::<Vec<_>>(),
    );
    let draft_params: Vec<Params> = t
        .draft_upd
        .iter()
        .map(|(_, x, rev)| -> Params {
            vec![
                Box::new(x.draft_id.to_string()),
                Box::new(x.name.clone()),
                Box::new(x.kind.clone()),
                Box::new(x.status.as_str().to_string()),
                Box::new(x.revision),
                Box::new(x.trigger_event_type.clone()),
                Box::new(x.definition.clone()),
                Box::new(x.definition_artifact_id.map(|a| a.to_string())),
                Box::new(x.notes.clone()),
                Box::new(x.source_run_id.map(|r| r.to_string())),
                Box::new(opt_json_text(&x.validation)),
                Box::new(x.promoted_version),
                Box::new(x.created_at.as_micros()),
                Box::new(x.updated_at.as_micros()),
                Box::new(*rev),
            ]
        })
        .collect();
    let draft_refs: Vec<Vec<&(dyn ToSql + Sync)>> = draft_params.iter().map(refs).collect();

    #[derive(Clone, Copy, PartialEq)]
    enum K {
        Begin,
        Cron,
        Bps,
        Draft(usize),
        Rows,
        RunsUpd,
        StepsUpd,
        Hold,
        Park,
        Head,
    }
    enum Out {
        Rows(Vec<Row>),
        Count(u64),
    }
    let mut futs: Vec<(K, Fut<'_, Out>)> = Vec::new();
    futs.push((
        K::Begin,
        Box::pin(async move {
            // A transaction that appends events holds the chain lock until it commits, so it
            // commits without waiting for the WAL flush and waits for it afterwards, outside
            // the lock (see `flush_wal`).
            let begin = if has_events {
                "BEGIN; SET LOCAL synchronous_commit TO off"
            } else {
                "BEGIN"
            };
            c.batch_execute(begin).await.map(|_| Out::Count(0))
        }),
    ));
    if !t.cron.0.is_empty() {
        let p: Vec<&(dyn ToSql + Sync)> = vec![&t.cron.1, &t.cron.2, &t.cron.3];
        futs.push((
            K::Cron,
            Box::pin(async move { c.query(&st.cron, &p).await.map(Out::Rows) }),
        ));
    }
    if !t.bps.is_empty() {
        let b = &bp_cols;
        let p: Vec<&(dyn ToSql + Sync)> =
            vec![&b.0, &b.1, &b.2, &b.3, &b.4, &b.5, &b.6, &b.7, &b.8];
        futs.push((
            K::Bps,
            Box::pin(async move { c.query(&st.blueprints, &p).await.map(Out::Rows) }),
        ));
    }
    if !t.triggers.0.is_empty() {
        let x = &t.triggers;
        let p: Vec<&(dyn ToSql + Sync)> = vec![&x.0, &x.1, &x.2, &x.3];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.triggers, &p).await.map(Out::Count) }),
        ));
    }
    if !d.is_empty() {
        let x = &draft_cols;
        let p: Vec<&(dyn ToSql + Sync)> = vec![
            &x.0, &x.1, &x.2, &x.3, &x.4, &x.5, &x.6, &x.7, &x.8, &x.9, &x.10, &x.11, &x.12, &x.13,
        ];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.drafts_insert, &p).await.map(Out::Count) }),
        ));
    }
    for (i, p) in draft_refs.iter().enumerate() {
        futs.push((
            K::Draft(i),
            Box::pin(async move { c.execute(&st.draft_update, p).await.map(Out::Count) }),
        ));
    }
    if !t.runs_ins.pos.is_empty() {
        let p = t.runs_ins.params(false);
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.runs_insert, &p).await.map(Out::Count) }),
        ));
    }
    if !t.runs_upd.pos.is_empty() {
        let p = t.runs_upd.params(true);
        futs.push((
            K::RunsUpd,
            Box::pin(async move { c.query(&st.runs_update, &p).await.map(Out::Rows) }),
        ));
    }
    if !t.steps_ins.pos.is_empty() {
        let p = t.steps_ins.params(false);
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.steps_insert, &p).await.map(Out::Count) }),
        ));
    }
    if !t.steps_upd.pos.is_empty() {
        let p = t.steps_upd.params(true);
        futs.push((
            K::StepsUpd,
            Box::pin(async move { c.query(&st.steps_update, &p).await.map(Out::Rows) }),
        ));
    }
    if !a.is_empty() {
        let x = &art_cols;
        let p: Vec<&(dyn ToSql + Sync)> = vec![
            &x.0, &x.1, &x.2, &x.3, &x.4, &x.5, &x.6, &x.7, &x.8, &x.9, &x.10,
        ];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.artifacts, &p).await.map(Out::Count) }),
        ));
    }
    if !f.is_empty() {
        let x = &fp_cols;
        let p: Vec<&(dyn ToSql + Sync)> =
            vec![&x.0, &x.1, &x.2, &x.3, &x.4, &x.5, &x.6, &x.7, &x.8, &x.9];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.footprints, &p).await.map(Out::Count) }),
        ));
    }
    if !t.enqueue.0.is_empty() {
        let x = &t.enqueue;
        let p: Vec<&(dyn ToSql + Sync)> = vec![&x.0, &x.1, &x.2, &x.3];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.q_enqueue, &p).await.map(Out::Count) }),
        ));
    }
    if !t.hold.0.is_empty() {
        let x = &t.hold;
        let p: Vec<&(dyn ToSql + Sync)> = vec![&x.1, &x.2, &x.3];
        futs.push((
            K::Hold,
            Box::pin(async move { c.query(&st.q_hold, &p).await.map(Out::Rows) }),
        ));
    }
    if !t.park.0.is_empty() {
        let x = &t.park;
        let p: Vec<&(dyn ToSql + Sync)> = vec![&x.1, &x.2, &x.3];
        futs.push((
            K::Park,
            Box::pin(async move { c.query(&st.q_park, &p).await.map(Out::Rows) }),
        ));
    }
    if !t.wake.0.is_empty() {
        let x = &t.wake;
        let p: Vec<&(dyn ToSql + Sync)> = vec![&x.0, &x.1];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.q_wake, &p).await.map(Out::Count) }),
        ));
    }
    if !t.finish.is_empty() {
        let p: Vec<&(dyn ToSql + Sync)> = vec![&t.finish];
        futs.push((
            K::Rows,
            Box::pin(async move { c.execute(&st.q_finish, &p).await.map(Out::Count) }),
        ));
    }
    if has_events {
        futs.push((
            K::Head,
            Box::pin(async move { c.query(&st.lock_head, &[]).await.map(Out::Rows) }),
        ));
    }
    let kinds: Vec<K> = futs.iter().map(|(k, _)| *k).collect();
    let outs = futures_util::future::join_all(futs.into_iter().map(|(_, f)| f)).await;

    let mut refused: HashMap<usize, StoreError> = HashMap::new();
    let mut head: Option<(i64, [u8; 32])> = None;
    let mut first_err = None;
    for (k, out) in kinds.into_iter().zip(outs) {
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                first_err.get_or_insert(e);
                continue;
            }
        };
        match (k, out) {
            (K::Cron, Out::Rows(rows)) => {
                let got: HashSet<(String, i64)> = rows
                    .iter()
                    .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                    .collect();
                for i in 0..t.cron.0.len() {
                    if !got.contains(&(t.cron.1[i].clone(), t.cron.2[i])) {
                        refused.entry(t.cron.0[i]).or_insert_with(|| {
                            StoreError::Conflict(format!(
                                "cron slot {} of {} already fired",
                                Timestamp::from_micros(t.cron.2[i]),
                                t.cron.1[i]
                            ))
                        });
                    }
                }
            }
            (K::Bps, Out::Rows(rows)) => {
                let got: HashSet<(String, i64)> = rows
                    .iter()
                    .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                    .collect();
                for (pos, v) in &t.bps {
                    if !got.contains(&(v.blueprint_id.clone(), v.version)) {
                        refused.entry(*pos).or_insert_with(|| {
                            StoreError::Conflict(format!(
                                "blueprint {} version {} already exists",
                                v.blueprint_id, v.version
                            ))
                        });
                    }
                }
            }
            (K::Draft(i), Out::Count(n)) if n != 1 => {
                let (pos, d, rev) = &t.draft_upd[i];
                refused.entry(*pos).or_insert_with(|| match rev {
                    Some(r) => StoreError::Conflict(format!(
                        "draft {} changed meanwhile (expected revision {r})",
                        d.draft_id
                    )),
                    None => StoreError::Conflict(format!("draft {} does not exist", d.draft_id)),
                });
            }
            (K::RunsUpd, Out::Rows(rows)) => {
                let got = returned(&rows);
                let u = &t.runs_upd;
                for i in 0..u.pos.len() {
                    if !got.contains(&u.run_id[i]) {
                        refused.entry(u.pos[i]).or_insert_with(|| {
                            StoreError::Conflict(match &u.expect[i] {
                                Some(e) => format!(
                                    "run {} changed meanwhile (expected revision {}) or is not {}",
                                    u.run_id[i],
                                    u.revision[i] - 1,
                                    e.replace(',', " or ")
                                ),
                                None => format!(
                                    "run {} changed meanwhile (expected revision {})",
                                    u.run_id[i],
                                    u.revision[i] - 1
                                ),
                            })
                        });
                    }
                }
            }
            (K::StepsUpd, Out::Rows(rows)) => {
                let got = returned(&rows);
                let u = &t.steps_upd;
                for i in 0..u.pos.len() {
                    if !got.contains(&u.step_id[i]) {
                        refused.entry(u.pos[i]).or_insert_with(|| {
                            StoreError::Conflict(match &u.expect[i] {
                                Some(e) => format!(
                                    "step '{}' does not exist or is not {}",
                                    u.names[i],
                                    e.replace(',', " or ")
                                ),
                                None => format!("step {} does not exist", u.step_id[i]),
                            })
                        });
                    }
                }
            }
            (K::Hold, Out::Rows(rows)) => {
                let got = returned(&rows);
                for i in 0..t.hold.0.len() {
                    if !got.contains(&t.hold.1[i]) {
                        refused.entry(t.hold.0[i]).or_insert_with(|| {
                            StoreError::LeaseLost(format!(
                                "{} no longer holds run {}",
                                t.hold.2[i], t.hold.1[i]
                            ))
                        });
                    }
                }
            }
            (K::Park, Out::Rows(rows)) => {
                let got = returned(&rows);
                for i in 0..t.park.0.len() {
                    if !got.contains(&t.park.1[i]) {
                        refused.entry(t.park.0[i]).or_insert_with(|| {
                            StoreError::LeaseLost(format!(
                                "{} no longer holds run {}",
                                t.park.2[i], t.park.1[i]
                            ))
                        });
                    }
                }
            }
            (K::Head, Out::Rows(rows)) => {
                if let Some(r) = rows.first() {
                    let seq: i64 = r.try_get(0)?;
                    let h: String = r.try_get(1)?;
                    head = crate::sqlite::hash_bytes(&h).ok().map(|b| (seq, b));
                }
            }
            _ => {}
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if !refused.is_empty() {
        c.batch_execute("ROLLBACK").await?;
        return Ok(Outcome::Refused(refused.into_iter().collect()));
    }

    // Phase 2: number and hash the events under the chain lock, insert them, commit.
    let mut stored: Vec<Vec<StoredEvent>> = batches.iter().map(|_| Vec::new()).collect();
    let mut notify = t.notify.clone();
    let mut ev = EventCols::default();
    let mut range = None;
    if has_events {
        let Some((mut seq, mut prev)) = head else {
            c.batch_execute("ROLLBACK").await?;
            return Ok(Outcome::Refused(
                (0..batches.len())
                    .map(|i| {
                        (
                            i,
                            StoreError::Corrupt("the chain head row is missing".into()),
                        )
                    })
                    .collect(),
            ));
        };
        let first = seq + 1;
        for (pos, b) in batches.iter().enumerate() {
            for e in &b.events {
                seq += 1;
                let parts = e.chain_parts();
                let h = parts.hash(&prev, seq);
                let hex_hash = hex::encode(h);
                ev.push(seq, e, parts.data_text, &hex_hash);
                stored[pos].push(StoredEvent {
                    seq,
                    hash: hex_hash,
                    event: e.clone(),
                });
                prev = h;
            }
        }
        range = Some((first, seq, hex::encode(prev)));
        notify.push("outbox".into());
    }
    let mut futs: Vec<Fut<'_, u64>> = Vec::new();
    if let Some((first, last, hash)) = &range {
        let p = ev.params();
        futs.push(Box::pin(async move { c.execute(&st.events, &p).await }));
        futs.push(Box::pin(
            async move { c.execute(&st.head, &[last, hash]).await },
        ));
        futs.push(Box::pin(async move {
            c.execute(&st.outbox, &[first, last]).await
        }));
    }
    if !notify.is_empty() {
        let n = &notify;
        futs.push(Box::pin(async move { c.execute(&st.notify, &[n]).await }));
    }
    futs.push(Box::pin(async move {
        c.batch_execute("COMMIT").await.map(|_| 0)
    }));
    for r in futures_util::future::join_all(futs).await {
        // An error before COMMIT aborted the transaction (COMMIT then rolls back).
        r?;
    }
    if has_events {
        flush_wal(c).await?;
    }
    Ok(Outcome::Committed(stored))
}

/// Waits until everything committed so far is flushed to disk: a transaction with an id
/// commits with `synchronous_commit` on, and the WAL is flushed in order, so when its commit
/// returns, every earlier commit is durable too. Nothing is acknowledged before this returns,
/// and any later transaction that saw the earlier commit's rows commits after it in the WAL.
pub(super) async fn flush_wal(c: &Client) -> Result<(), tokio_postgres::Error> {
    c.batch_execute("BEGIN; SELECT txid_current(); COMMIT")
        .await
}
