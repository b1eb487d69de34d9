//! The writer side of the SQLite adapter: migrations, the writer thread and its group commit,
//! the application of a batch (events with their chain hashes, runs, steps, queue, outbox),
//! and retention pruning.

use super::*;

pub(super) fn migrate(conn: &Connection) -> StoreResult<()> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    let target = schema::MIGRATIONS.len() as i64;
    if current > target {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {current}, newer than this xyn ({target}); upgrade xyn"
        )));
    }
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
        let v = i as i64 + 1;
        conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {v}; COMMIT;"))
            .map_err(|e| StoreError::Unavailable(format!("migration {v} failed: {e}")))?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
pub(super) struct Head {
    seq: i64,
    hash: [u8; 32],
}

pub(crate) fn hash_bytes(h: &str) -> StoreResult<[u8; 32]> {
    hex::decode(h)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("bad chain hash {h:?}")))
}

pub(super) fn load_head(conn: &Connection) -> StoreResult<Head> {
    let row: Option<(i64, String)> = conn
        .query_row("SELECT seq, hash FROM chain_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(unavailable)?;
    match row {
        None => Ok(Head {
            seq: 0,
            hash: GENESIS_HASH,
        }),
        Some((seq, hex_hash)) => {
            let bytes = hex::decode(&hex_hash)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| StoreError::Corrupt("chain head hash".into()))?;
            Ok(Head { seq, hash: bytes })
        }
    }
}

/// Copies WAL frames into the database when the writer asks (every few commits), without
/// blocking the writer (PASSIVE mode). Sleeps otherwise.
pub(super) fn checkpoint_loop(conn: Connection, rx: mpsc::Receiver<()>) {
    while rx.recv().is_ok() {
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
            tracing::warn!(error = %e, "background checkpoint failed");
        }
    }
}

pub(super) fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Cmd>,
    mut head: Head,
    c: Arc<Counters>,
    checkpoint: mpsc::SyncSender<()>,
    signals: tokio::sync::broadcast::Sender<Signal>,
) {
    let mut since_checkpoint = 0u64;
    while let Ok(first) = rx.recv() {
        let mut group = Vec::new();
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Exec(f) => {
                    // Runs alone, between groups; it reloads nothing the writer caches but
                    // the chain head (retention leaves the head as it is).
                    f(&mut conn);
                }
                commit => group.push(commit),
            }
            if group.len() >= MAX_GROUP {
                break;
            }
            next = rx.try_recv().ok();
        }
        if group.is_empty() {
            continue;
        }
        let committed_head = head;
        let mut flags = SignalFlags::default();
        let results = commit_group(&mut conn, &mut group, &mut head, &mut flags);
        let results = match results {
            Ok(r) => {
                c.commits.fetch_add(1, Ordering::Relaxed);
                since_checkpoint += 1;
                if since_checkpoint >= CHECKPOINT_EVERY {
                    since_checkpoint = 0;
                    // Coalesces: a checkpoint already asked for covers this one.
                    let _ = checkpoint.try_send(());
                }
                c.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
                let n: usize = r.iter().map(|x| x.as_ref().map_or(0, Vec::len)).sum();
                c.events.fetch_add(n as u64, Ordering::Relaxed);
                flags.send(&signals);
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "sqlite commit failed; the group is refused");
                head = load_head(&conn).unwrap_or(committed_head);
                group.iter().map(|_| Err(unavailable(&e))).collect()
            }
        };
        for (cmd, res) in group.into_iter().zip(results) {
            if let Cmd::Commit(_, reply) = cmd {
                let _ = reply.send(res);
            }
        }
    }
}

/// What a committed group should wake up.
#[derive(Default)]
pub(super) struct SignalFlags {
    outbox: bool,
    work: bool,
    catalog: bool,
    cancel: Vec<RunId>,
}

impl SignalFlags {
    fn note(&mut self, b: &WriteBatch) {
        self.catalog |= !b.blueprint_versions.is_empty() || !b.blueprint_triggers.is_empty();
        for q in &b.queue {
            match q {
                QueueWrite::Enqueue { owner: None, .. }
                | QueueWrite::Park { .. }
                | QueueWrite::Wake { .. } => self.work = true,
                QueueWrite::Cancel { run_id } => self.cancel.push(*run_id),
                _ => {}
            }
        }
    }

    fn send(self, tx: &tokio::sync::broadcast::Sender<Signal>) {
        // No receiver is fine: nobody listens on an embedded node without a dispatcher.
        if self.outbox {
            let _ = tx.send(Signal::Outbox);
        }
        if self.work {
            let _ = tx.send(Signal::Work);
        }
        if self.catalog {
            let _ = tx.send(Signal::Catalog);
        }
        for r in self.cancel {
            let _ = tx.send(Signal::Cancel(r));
        }
    }
}

pub(super) fn commit_group(
    conn: &mut Connection,
    group: &mut [Cmd],
    head: &mut Head,
    flags: &mut SignalFlags,
) -> Result<Vec<StoreResult<Vec<StoredEvent>>>, rusqlite::Error> {
    let start_head = *head;
    let now = now_us();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for cmd in group.iter_mut() {
        let Cmd::Commit(batch, _) = cmd else {
            results.push(Ok(vec![]));
            continue;
        };
        let before = *head;
        tx.execute_batch("SAVEPOINT b")?;
        match apply(&tx, batch, head, now) {
            Ok(events) => {
                tx.execute_batch("RELEASE b")?;
                flags.note(batch);
                results.push(Ok(events));
            }
            Err(e) => {
                tx.execute_batch("ROLLBACK TO b; RELEASE b")?;
                *head = before;
                results.push(Err(e));
            }
        }
    }
    if head.seq != start_head.seq {
        flags.outbox = true;
        tx.prepare_cached(
            "INSERT INTO outbox (first_seq, last_seq, created_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![start_head.seq + 1, head.seq, now])?;
        tx.prepare_cached(
            "INSERT INTO chain_head (id, seq, hash) VALUES (1, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )?
        .execute(params![head.seq, hex::encode(head.hash)])?;
    }
    match tx.commit() {
        Ok(()) => Ok(results),
        Err(e) => {
            *head = start_head;
            Err(e)
        }
    }
}

pub(super) fn sql_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        return StoreError::Conflict(e.to_string());
    }
    StoreError::Unavailable(e.to_string())
}

/// A precondition: the row's stored status is one of `allowed`.
pub(super) fn expect_status(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    id: &str,
    what: &str,
    allowed: &[&str],
) -> StoreResult<()> {
    let cur: Option<String> = tx
        .prepare_cached(select)
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(sql_err)?;
    match cur {
        None => Err(StoreError::Conflict(format!("{what} does not exist"))),
        Some(s) if !allowed.contains(&s.as_str()) => Err(StoreError::Conflict(format!(
            "{what} is {s}, not {}",
            allowed.join(" or ")
        ))),
        Some(_) => Ok(()),
    }
}

pub(super) fn apply(
    tx: &rusqlite::Transaction<'_>,
    b: &WriteBatch,
    head: &mut Head,
    now: i64,
) -> StoreResult<Vec<StoredEvent>> {
    apply_queue(tx, &b.queue, now)?;
    for t in &b.blueprint_triggers {
        tx.prepare_cached(
            "INSERT INTO blueprint_triggers (blueprint_id, enabled, changed_at, changed_by) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (blueprint_id) DO UPDATE SET \
             enabled = excluded.enabled, changed_at = excluded.changed_at, \
             changed_by = excluded.changed_by",
        )
        .and_then(|mut s| {
            s.execute(params![
                t.blueprint_id,
                t.enabled,
                t.changed_at.as_micros(),
                t.changed_by
            ])
        })
        .map_err(sql_err)?;
    }
    for f in &b.cron_fires {
        tx.prepare_cached(
            "INSERT INTO cron_fires (blueprint_id, slot, fired_at) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| {
            s.execute(params![
                f.blueprint_id,
                f.slot.as_micros(),
                f.fired_at.as_micros()
            ])
        })
        .map_err(|e| match sql_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "cron slot {} of {} already fired",
                f.slot, f.blueprint_id
            )),
            other => other,
        })?;
    }
    for w in &b.runs {
        match w {
            RunWrite::Insert(r) => {
                tx.prepare_cached(&format!(
                    "INSERT INTO runs ({RUN_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)"
                ))
                .and_then(|mut s| s.execute(params_from_iter(run_params(r))))
                .map_err(sql_err)?;
            }
            RunWrite::Update { run, expect } => {
                if let Some(allowed) = expect {
                    let allowed: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
                    expect_status(
                        tx,
                        "SELECT status FROM runs WHERE run_id = ?1",
                        &run.run_id.to_string(),
                        &format!("run {}", run.run_id),
                        &allowed,
                    )?;
                }
                let n = tx
                    .prepare_cached(
                        "UPDATE runs SET name=?2, blueprint_id=?3, blueprint_version=?4, status=?5, created_at=?6, \
                         started_at=?7, completed_at=?8, actor=?9, correlation_id=?10, env_id=?11, trigger_event_id=?12, \
                         inputs=?13, outputs=?14, error=?15, deadline_at=?16, priority=?17, step_executions=?18, \
                         revision=?19 WHERE run_id=?1 AND revision=?19 - 1",
                    )
                    .and_then(|mut s| s.execute(params_from_iter(run_params(run))))
                    .map_err(sql_err)?;
                if n != 1 {
                    return Err(StoreError::Conflict(format!(
                        "run {} changed meanwhile (expected revision {})",
                        run.run_id,
                        run.revision - 1
                    )));
                }
            }
        }
    }
    for w in &b.steps {
        match w {
            StepWrite::Insert(s) => {
                tx.prepare_cached(&format!(
                    "INSERT INTO steps ({STEP_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"
                ))
                .and_then(|mut st| st.execute(params_from_iter(step_params(s))))
                .map_err(sql_err)?;
            }
            StepWrite::Update { step, expect } => {
                if let Some(allowed) = expect {
                    let allowed: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
                    expect_status(
                        tx,
                        "SELECT status FROM steps WHERE step_id = ?1",
                        &step.step_id.to_string(),
                        &format!("step '{}'", step.name),
                        &allowed,
                    )?;
                }
                let n = tx
                    .prepare_cached(
                        "UPDATE steps SET run_id=?2, name=?3, idx=?4, kind=?5, status=?6, attempt=?7, started_at=?8, \
                         completed_at=?9, inputs=?10, outputs=?11, error=?12, next_attempt_at=?13, decided_by=?14, \
                         decision_comment=?15, logs_artifact_id=?16 WHERE step_id=?1",
                    )
                    .and_then(|mut s| s.execute(params_from_iter(step_params(step))))
                    .map_err(sql_err)?;
                if n != 1 {
                    return Err(StoreError::Conflict(format!(
                        "step {} does not exist",
                        step.step_id
                    )));
                }
            }
        }
    }
    for a in &b.artifacts {
        tx.prepare_cached(&format!(
            "INSERT INTO artifacts ({ARTIFACT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
        ))
        .and_then(|mut s| s.execute(params_from_iter(artifact_params(a))))
        .map_err(sql_err)?;
    }
    for f in &b.footprints {
        tx.prepare_cached(&format!(
            "INSERT INTO footprints ({FOOTPRINT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"
        ))
        .and_then(|mut s| s.execute(params_from_iter(footprint_params(f))))
        .map_err(sql_err)?;
    }
    for v in &b.blueprint_versions {
        tx.prepare_cached(&format!(
            "INSERT INTO blueprint_versions ({BLUEPRINT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)"
        ))
        .and_then(|mut s| s.execute(params_from_iter(blueprint_params(v))))
        .map_err(|e| match sql_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "blueprint {} version {} already exists",
                v.blueprint_id, v.version
            )),
            other => other,
        })?;
    }
    for w in &b.drafts {
        match w {
            DraftWrite::Insert(d) => {
                tx.prepare_cached(&format!(
                    "INSERT INTO drafts ({DRAFT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)"
                ))
                .and_then(|mut s| s.execute(params_from_iter(draft_params(d))))
                .map_err(sql_err)?;
            }
            DraftWrite::Update {
                draft,
                expect_revision,
            } => {
                if let Some(rev) = expect_revision {
                    let cur: Option<i64> = tx
                        .prepare_cached("SELECT revision FROM drafts WHERE draft_id = ?1")
                        .and_then(|mut s| {
                            s.query_row([draft.draft_id.to_string()], |r| r.get(0))
                                .optional()
                        })
                        .map_err(sql_err)?;
                    if cur != Some(*rev) {
                        return Err(StoreError::Conflict(format!(
                            "draft {} changed meanwhile (revision {:?}, expected {rev})",
                            draft.draft_id, cur
                        )));
                    }
                }
                let n = tx
                    .prepare_cached(
                        "UPDATE drafts SET name=?2, kind=?3, status=?4, revision=?5, trigger_event_type=?6, definition=?7, \
                         definition_artifact_id=?8, notes=?9, source_run_id=?10, validation=?11, promoted_version=?12, \
                         created_at=?13, updated_at=?14 WHERE draft_id=?1",
                    )
                    .and_then(|mut s| s.execute(params_from_iter(draft_params(draft))))
                    .map_err(sql_err)?;
                if n != 1 {
                    return Err(StoreError::Conflict(format!(
                        "draft {} does not exist",
                        draft.draft_id
                    )));
                }
            }
        }
    }
    let mut stored = Vec::with_capacity(b.events.len());
    for e in &b.events {
        let seq = head.seq + 1;
        let (hash, data_text) = e.chain_hash_and_data(&head.hash, seq);
        let hex_hash = hex::encode(hash);
        tx.prepare_cached(INSERT_EVENT)
            .and_then(|mut s| {
                s.execute(params_from_iter(event_params(seq, e, data_text, &hex_hash)))
            })
            .map_err(sql_err)?;
        head.seq = seq;
        head.hash = hash;
        stored.push(StoredEvent {
            seq,
            hash: hex_hash,
            event: e.clone(),
        });
    }
    Ok(stored)
}

pub(super) fn lease_lost(run_id: RunId, owner: &str) -> StoreError {
    StoreError::LeaseLost(format!("{owner} no longer holds run {run_id}"))
}

pub(super) fn lease_until(now: i64, lease_ms: u64) -> i64 {
    now.saturating_add((lease_ms as i64).saturating_mul(1000))
}

pub(super) fn apply_queue(
    tx: &rusqlite::Transaction<'_>,
    writes: &[QueueWrite],
    now: i64,
) -> StoreResult<()> {
    for w in writes {
        match w {
            QueueWrite::Enqueue {
                run_id,
                due_at,
                owner,
                lease_ms,
            } => {
                let until = owner.as_ref().map(|_| lease_until(now, *lease_ms));
                tx.prepare_cached(
                    "INSERT INTO run_queue (run_id, due_at, owner, lease_until, claims, enqueued_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        run_id.to_string(),
                        due_at.map(Timestamp::as_micros),
                        owner,
                        until,
                        i64::from(owner.is_some()),
                        now
                    ])
                })
                .map_err(sql_err)?;
            }
            QueueWrite::Hold {
                run_id,
                owner,
                lease_ms,
            } => {
                let n = tx
                    .prepare_cached(
                        "UPDATE run_queue SET lease_until = ?3 WHERE run_id = ?1 AND owner = ?2",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            run_id.to_string(),
                            owner,
                            lease_until(now, *lease_ms)
                        ])
                    })
                    .map_err(sql_err)?;
                if n != 1 {
                    return Err(lease_lost(*run_id, owner));
                }
            }
            QueueWrite::Park {
                run_id,
                owner,
                due_at,
            } => {
                let n = tx
                    .prepare_cached(
                        "UPDATE run_queue SET owner = NULL, lease_until = NULL, due_at = ?3 \
                         WHERE run_id = ?1 AND owner = ?2",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            run_id.to_string(),
                            owner,
                            due_at.map(Timestamp::as_micros)
                        ])
                    })
                    .map_err(sql_err)?;
                if n != 1 {
                    return Err(lease_lost(*run_id, owner));
                }
            }
            QueueWrite::Finish { run_id } => {
                tx.prepare_cached("DELETE FROM run_queue WHERE run_id = ?1")
                    .and_then(|mut s| s.execute([run_id.to_string()]))
                    .map_err(sql_err)?;
            }
            QueueWrite::Wake { run_id, at } => {
                tx.prepare_cached(
                    "UPDATE run_queue SET due_at = CASE WHEN due_at IS NULL OR due_at > ?2 \
                     THEN ?2 ELSE due_at END WHERE run_id = ?1 AND owner IS NULL",
                )
                .and_then(|mut s| s.execute(params![run_id.to_string(), at.as_micros()]))
                .map_err(sql_err)?;
            }
            QueueWrite::Cancel { .. } => {}
        }
    }
    Ok(())
}

/// Which prefix of the log a retention pass removes: the last event to remove and its hash.
pub(super) fn prune_target(
    c: &Connection,
    cutoff: i64,
    keep_unpublished: bool,
) -> StoreResult<Option<(i64, String)>> {
    let first_keep: Option<i64> = c
        .query_row(
            "SELECT seq FROM events WHERE occurred_at >= ?1 ORDER BY seq LIMIT 1",
            [cutoff],
            |r| r.get(0),
        )
        .optional()
        .map_err(unavailable)?;
    let max_seq: Option<i64> = c
        .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
        .map_err(unavailable)?;
    let mut last = match (first_keep, max_seq) {
        (Some(k), _) => k - 1,
        (None, Some(m)) => m,
        (None, None) => return Ok(None),
    };
    if keep_unpublished {
        let unpublished: Option<i64> = c
            .query_row(
                "SELECT MIN(first_seq) FROM outbox WHERE published_at IS NULL",
                [],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        if let Some(u) = unpublished {
            last = last.min(u - 1);
        }
    }
    c.query_row("SELECT hash FROM events WHERE seq = ?1", [last], |r| {
        r.get(0)
    })
    .optional()
    .map_err(unavailable)
    .map(|h| h.map(|h| (last, h)))
}

/// Removes the log up to the checkpoint's seq (if its hash still matches), writes the
/// checkpoint, and rolls up footprints older than `cutoff`.
pub(super) fn prune_apply(
    conn: &mut Connection,
    cutoff: i64,
    cp: Option<Checkpoint>,
) -> StoreResult<PruneReport> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let mut report = PruneReport::default();
    if let Some(cp) = cp {
        let hash: Option<String> = tx
            .query_row("SELECT hash FROM events WHERE seq = ?1", [cp.seq], |r| {
                r.get(0)
            })
            .optional()
            .map_err(unavailable)?;
        if hash.as_deref() != Some(cp.hash.as_str()) {
            return Err(StoreError::Conflict(format!(
                "event seq {} changed while pruning",
                cp.seq
            )));
        }
        report.events_removed = tx
            .execute("DELETE FROM events WHERE seq <= ?1", [cp.seq])
            .map_err(unavailable)? as i64;
        report.outbox_rows_removed = tx
            .execute("DELETE FROM outbox WHERE last_seq <= ?1", [cp.seq])
            .map_err(unavailable)? as i64;
        tx.execute(
            "INSERT INTO chain_checkpoints (seq, hash, created_at, public_key, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![cp.seq, cp.hash, cp.created_at.as_micros(), cp.public_key, cp.signature],
        )
        .map_err(unavailable)?;
        report.checkpoint = Some(cp);
    }
    report.rollup_rows_written = tx
        .execute(
            "INSERT INTO footprint_rollups (day, metric, source_kind, source_ref, unit, class, quantity, samples) \
             SELECT (occurred_at / 86400000000) * 86400000000 AS day, metric, source_kind, source_ref, unit, class, \
                    SUM(quantity), COUNT(*) FROM footprints WHERE occurred_at < ?1 \
             GROUP BY day, metric, source_kind, source_ref, unit, class \
             ON CONFLICT (day, metric, source_kind, source_ref, unit, class) DO UPDATE SET \
                quantity = quantity + excluded.quantity, samples = samples + excluded.samples",
            [cutoff],
        )
        .map_err(unavailable)? as i64;
    report.footprints_rolled_up = tx
        .execute("DELETE FROM footprints WHERE occurred_at < ?1", [cutoff])
        .map_err(unavailable)? as i64;
    tx.commit().map_err(unavailable)?;
    Ok(report)
}
