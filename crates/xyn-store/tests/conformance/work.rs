//! Conformance checks of the work side: the queue and its claims, leases, the outbox, signals,
//! singletons, retention pruning, footprint roll-ups and the secret store.

use super::*;

pub(super) fn enqueue(run_id: RunId, due_at: Option<Timestamp>) -> QueueWrite {
    QueueWrite::Enqueue {
        run_id,
        due_at,
        owner: None,
        lease_ms: 0,
    }
}

pub(super) async fn queue(s: &Arc<dyn Store>, w: QueueWrite) -> Result<(), StoreError> {
    s.commit(WriteBatch {
        queue: vec![w],
        ..Default::default()
    })
    .await
    .map(|_| ())
}

pub async fn claims_are_exclusive_and_skip_what_is_not_due(s: Arc<dyn Store>) {
    let due: Vec<RunId> = (0..12).map(|_| RunId(id())).collect();
    let later = RunId(id());
    let waiting = RunId(id());
    let mut b = WriteBatch::default();
    for r in &due {
        b.queue.push(enqueue(*r, Some(ts(0))));
    }
    let far = Timestamp::from_micros(4_000_000_000_000_000);
    b.queue.push(enqueue(later, Some(far)));
    b.queue.push(enqueue(waiting, None));
    s.commit(b).await.unwrap();
    // Four workers claim at once, three runs at a time, until nothing is due.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let c = s.claim(&format!("w{w}"), 3, 60_000).await.unwrap();
                if c.runs.is_empty() {
                    return (got, c.next_due);
                }
                assert!(c.runs.iter().all(|c| c.claims == 1 && !c.expired));
                got.extend(c.runs.into_iter().map(|c| c.run_id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let (got, _) = t.await.unwrap();
        all.extend(got);
    }
    all.sort_by_key(|r| r.0);
    let mut want = due.clone();
    want.sort_by_key(|r| r.0);
    assert_eq!(
        all, want,
        "every due run claimed exactly once, nothing else"
    );
    let stats = s.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.due, stats.held), (14, 0, 12));
    assert!((1..=4).contains(&stats.owners), "{stats:?}");
    // The waiting run falls due only when woken; the later one stays put.
    let c = s.claim("w9", 10, 60_000).await.unwrap();
    assert!(c.runs.is_empty());
    queue(
        &s,
        QueueWrite::Wake {
            run_id: waiting,
            at: ts(0),
        },
    )
    .await
    .unwrap();
    let c = s.claim("w9", 10, 60_000).await.unwrap();
    assert_eq!(
        c.runs.iter().map(|c| c.run_id).collect::<Vec<_>>(),
        vec![waiting]
    );
    // A finished run leaves the queue.
    queue(&s, QueueWrite::Finish { run_id: waiting })
        .await
        .unwrap();
    assert_eq!(s.queue_stats().await.unwrap().queued, 13);
}

pub async fn leases_fence_writers_and_expire(s: Arc<dyn Store>) {
    let r = run("bp.lease", RunStatus::Running);
    s.commit(WriteBatch {
        runs: vec![RunWrite::Insert(r.clone())],
        queue: vec![enqueue(r.run_id, Some(ts(0)))],
        ..Default::default()
    })
    .await
    .unwrap();
    let c = s.claim("a", 5, 300).await.unwrap();
    assert_eq!(c.runs.len(), 1);
    assert!(
        c.next_due.is_some(),
        "the held lease's expiry is the next due time"
    );
    // The holder writes under its lease; someone else cannot.
    let hold = |owner: &str| QueueWrite::Hold {
        run_id: r.run_id,
        owner: owner.into(),
        lease_ms: 300,
    };
    queue(&s, hold("a")).await.unwrap();
    let stolen = queue(&s, hold("b")).await;
    assert!(
        matches!(stolen, Err(StoreError::LeaseLost(_))),
        "{stolen:?}"
    );
    assert!(
        s.claim("b", 5, 300).await.unwrap().runs.is_empty(),
        "a live lease is not claimed"
    );
    assert_eq!(s.renew_leases("a", 300).await.unwrap(), vec![r.run_id]);
    assert!(s.renew_leases("b", 300).await.unwrap().is_empty());
    // `a` stops renewing: after expiry `b` takes the run over, and `a` is fenced off, even in
    // a batch that would otherwise commit (its run update is refused with it).
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    assert_eq!(s.queue_stats().await.unwrap().expired, 1);
    let c = s.claim("b", 5, 60_000).await.unwrap();
    assert_eq!(c.runs.len(), 1);
    assert!(c.runs[0].expired);
    assert_eq!(c.runs[0].claims, 2);
    let mut r1 = r.clone();
    r1.revision = 1;
    let late = s
        .commit(WriteBatch {
            runs: vec![RunWrite::Update {
                run: r1.clone(),
                expect: None,
            }],
            events: vec![event("late.write", Some(r.run_id))],
            queue: vec![hold("a")],
            ..Default::default()
        })
        .await;
    assert!(matches!(late, Err(StoreError::LeaseLost(_))), "{late:?}");
    assert_eq!(s.get_run(r.run_id).await.unwrap().unwrap().revision, 0);
    assert!(s.renew_leases("a", 300).await.unwrap().is_empty());
    // `b` parks the run until later (a retry's time); nobody claims it before.
    s.commit(WriteBatch {
        runs: vec![RunWrite::Update {
            run: r1,
            expect: None,
        }],
        queue: vec![QueueWrite::Park {
            run_id: r.run_id,
            owner: "b".into(),
            due_at: Some(Timestamp::from_micros(4_000_000_000_000_000)),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let c = s.claim("c", 5, 300).await.unwrap();
    assert!(c.runs.is_empty());
    assert_eq!(
        c.next_due,
        Some(Timestamp::from_micros(4_000_000_000_000_000))
    );
    let park_again = queue(
        &s,
        QueueWrite::Park {
            run_id: r.run_id,
            owner: "b".into(),
            due_at: None,
        },
    )
    .await;
    assert!(
        matches!(park_again, Err(StoreError::LeaseLost(_))),
        "{park_again:?}"
    );
}

pub async fn outbox_rows_cover_every_event_and_are_marked(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..30 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.commit(events(1 + i % 3, "o.x")).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A commit on its own is a transaction of its own: at least two rows exist.
    s.commit(events(2, "o.x")).await.unwrap();
    // Batches without events write no outbox row.
    s.commit(WriteBatch {
        runs: vec![RunWrite::Insert(run("bp.o", RunStatus::Running))],
        ..Default::default()
    })
    .await
    .unwrap();
    let rows = s.outbox_pending(1000).await.unwrap();
    let mut next = 1;
    for r in &rows {
        assert_eq!(r.first_seq, next, "contiguous, in seq order: {rows:?}");
        assert!(r.last_seq >= r.first_seq);
        next = r.last_seq + 1;
    }
    let total: usize = (0..30).map(|i| 1 + i % 3).sum::<usize>() + 2;
    assert_eq!(next - 1, total as i64);
    assert!(
        (2..=31).contains(&rows.len()),
        "one row per transaction, not per event"
    );
    let lag = s.outbox_lag().await.unwrap();
    assert_eq!(lag.pending_events, total as i64);
    assert_eq!(lag.published_seq, None);
    let half: Vec<i64> = rows
        .iter()
        .take((rows.len() / 2).max(1))
        .map(|r| r.id)
        .collect();
    s.mark_published(&half, ts(5)).await.unwrap();
    let rest = s.outbox_pending(1000).await.unwrap();
    assert_eq!(rest.len(), rows.len() - half.len());
    assert_eq!(rest[0].first_seq, rows[half.len()].first_seq);
    let lag = s.outbox_lag().await.unwrap();
    assert_eq!(lag.published_seq, Some(rows[half.len() - 1].last_seq));
    assert_eq!(lag.pending_rows, rest.len() as i64);
    assert_eq!(s.outbox_pending(2).await.unwrap().len(), 2.min(rest.len()));
}

pub async fn signals_wake_subscribers(s: Arc<dyn Store>) {
    let mut rx = s.subscribe();
    let expect = |want: Signal| {
        let mut rx = rx.resubscribe();
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Ok(s)) if s == want => return,
                    Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                    other => panic!("no {want:?}: {other:?}"),
                }
            }
        }
    };
    let w = expect(Signal::Outbox);
    s.commit(events(1, "sig.x")).await.unwrap();
    w.await;
    let w = expect(Signal::Work);
    queue(&s, enqueue(RunId(id()), Some(ts(0)))).await.unwrap();
    w.await;
    let r = RunId(id());
    let w = expect(Signal::Cancel(r));
    queue(&s, QueueWrite::Cancel { run_id: r }).await.unwrap();
    w.await;
    let _ = rx.try_recv();
}

pub async fn a_singleton_has_one_holder_at_a_time(s: Arc<dyn Store>) {
    let name = format!("conformance-{}", id());
    let g = s.lock_singleton(&name).await.unwrap();
    assert!(!g.is_lost());
    let s2 = s.clone();
    let n2 = name.clone();
    let waiter = tokio::spawn(async move { s2.lock_singleton(&n2).await.map(|_| ()) });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "a second holder waits");
    drop(g);
    tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
        .await
        .expect("the lock passes on when the holder lets go")
        .unwrap()
        .unwrap();
}

/// Signs with a fixed key (the store only stores what it is given; `xyn audit verify` checks).
pub struct TestSigner;

impl CheckpointSigner for TestSigner {
    fn public_key(&self) -> String {
        "test-key".into()
    }
    fn sign(&self, bytes: &[u8]) -> String {
        format!("sig:{}", String::from_utf8_lossy(bytes))
    }
}

pub async fn retention_prunes_a_prefix_and_the_chain_verifies_from_its_checkpoint(
    s: Arc<dyn Store>,
) {
    let old = |n: usize| {
        let mut b = events(n, "r.old");
        for e in &mut b.events {
            e.occurred_at = ts(-100_000);
        }
        b
    };
    s.commit(old(5)).await.unwrap();
    s.commit(old(3)).await.unwrap();
    s.commit(events(4, "r.new")).await.unwrap();
    let fp = |at| Footprint::new(at, None, None, "step", "a", "wall_ms", 2.0, "ms", json!({}));
    s.commit(WriteBatch {
        footprints: vec![fp(ts(-100_000)), fp(ts(-100_000)), fp(ts(1))],
        ..Default::default()
    })
    .await
    .unwrap();
    // The first outbox row is published, the second is not: with keep_unpublished, only the
    // first five go.
    let rows = s.outbox_pending(10).await.unwrap();
    s.mark_published(&[rows[0].id], ts(0)).await.unwrap();
    let r = s.prune(ts(0), true, &TestSigner, ts(2)).await.unwrap();
    assert_eq!(r.events_removed, 5);
    assert_eq!(r.footprints_rolled_up, 2);
    assert_eq!(r.rollup_rows_written, 1);
    let cp = r.checkpoint.unwrap();
    assert_eq!(cp.seq, 5);
    assert_eq!(
        cp.signature,
        format!("sig:xyn-checkpoint:v1:5:{}:{}", cp.hash, ts(2).as_micros())
    );
    assert_eq!(s.checkpoint().await.unwrap(), Some(cp));
    let report = s.verify_chain().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!((report.events_checked, report.first_seq), (7, Some(6)));
    // Without keep_unpublished the other old events go too; new ones stay.
    let r = s.prune(ts(0), false, &TestSigner, ts(3)).await.unwrap();
    assert_eq!(r.events_removed, 3);
    let report = s.verify_chain().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!((report.events_checked, report.first_seq), (4, Some(9)));
    assert_eq!(
        s.list_footprints(FootprintQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .items
        .len(),
        1
    );
    // Nothing more to prune; appending goes on from the head.
    let r = s.prune(ts(0), false, &TestSigner, ts(4)).await.unwrap();
    assert_eq!((r.events_removed, r.checkpoint), (0, None));
    let e = s.commit(events(1, "r.after")).await.unwrap();
    assert_eq!(e[0].seq, 13);
    assert!(s.verify_chain().await.unwrap().ok);
    let (v, newest) = s.schema_version().await.unwrap();
    assert_eq!(v, newest);
}

pub async fn footprints_roll_up_by_day_and_metric(s: Arc<dyn Store>) {
    let r = run("bp.roll", RunStatus::Running);
    let day = 86_400i64;
    let at = |sec: i64, metric: &str, q: f64, run: Option<RunId>| Footprint {
        occurred_at: ts(sec),
        run_id: run,
        step_id: None,
        source_kind: "step".into(),
        source_ref: "x".into(),
        metric: metric.into(),
        quantity: q,
        unit: if metric == "wall_ms" { "ms" } else { "tokens" }.into(),
        class: "internal".into(),
        dims: json!({}),
    };
    let fps = vec![
        at(10, "wall_ms", 5.0, Some(r.run_id)),
        at(20, "wall_ms", 7.0, Some(r.run_id)),
        at(30, "tokens_in", 100.0, Some(r.run_id)),
        at(day + 10, "wall_ms", 1.0, None),
        at(2 * day + 10, "tokens_in", 3.0, None),
    ];
    s.commit(WriteBatch {
        runs: vec![RunWrite::Insert(r.clone())],
        footprints: fps.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let all = s
        .footprint_rollup(FootprintRollupQuery::default())
        .await
        .unwrap();
    assert_eq!(
        all,
        xyn_store::rollup_footprints(&fps),
        "matches the reference"
    );
    assert_eq!(all.len(), 4);
    assert_eq!(
        (all[0].metric.as_str(), all[0].total, all[0].count),
        ("tokens_in", 100.0, 1)
    );
    assert_eq!(
        (all[1].metric.as_str(), all[1].total, all[1].count),
        ("wall_ms", 12.0, 2)
    );
    assert_eq!(all[0].day.as_micros() % xyn_store::DAY_MICROS, 0);
    assert!(all[2].day > all[1].day);
    let only = s
        .footprint_rollup(FootprintRollupQuery {
            metrics: vec!["wall_ms".into()],
            since: Some(ts(15)),
            until: Some(ts(2 * day)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        only.iter().map(|d| (d.total, d.count)).collect::<Vec<_>>(),
        vec![(7.0, 1), (1.0, 1)]
    );
    let of_run = s
        .footprint_rollup(FootprintRollupQuery {
            run_id: Some(r.run_id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(of_run.len(), 2);
    // Whole days (aligned bounds, every run) come from the kept daily totals; they agree with
    // the reference over the same footprints.
    let from_day1 = s
        .footprint_rollup(FootprintRollupQuery {
            since: Some(ts(day)),
            until: Some(ts(3 * day)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        from_day1,
        xyn_store::rollup_footprints(&fps[3..]),
        "whole days match the reference"
    );
    // More measurements on a day add to its total.
    s.commit(WriteBatch {
        footprints: vec![at(day + 20, "wall_ms", 2.5, None)],
        ..Default::default()
    })
    .await
    .unwrap();
    let wall: Vec<(f64, u64)> = s
        .footprint_rollup(FootprintRollupQuery {
            metrics: vec!["wall_ms".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|d| (d.total, d.count))
        .collect();
    assert_eq!(wall, vec![(12.0, 2), (3.5, 2)]);
    // Retention removes the measurements of the first day and its totals with them.
    s.prune(ts(day), false, &TestSigner, ts(3 * day))
        .await
        .unwrap();
    let left = s
        .footprint_rollup(FootprintRollupQuery::default())
        .await
        .unwrap();
    assert_eq!(
        left.iter()
            .map(|d| (d.metric.as_str(), d.total, d.count))
            .collect::<Vec<_>>(),
        vec![("wall_ms", 3.5, 2), ("tokens_in", 3.0, 1)]
    );
}

pub async fn secrets_keep_versions_and_rotate_all_or_nothing(s: Arc<dyn Store>) {
    use xyn_store::secrets::{MasterKeyRow, SecretVersionRow, WrappedKeyRow};
    let master = |id: &str| MasterKeyRow {
        key_id: id.into(),
        kind: "key_file".into(),
        params: "{}".into(),
        check: vec![1, 2, 3],
        created_at: ts(1),
    };
    let row = |path: &str, version: i64, key: &str| SecretVersionRow {
        path: path.into(),
        version,
        created_at: ts(version),
        created_by: format!("actor-{version}"),
        key_id: key.into(),
        wrapped_key: vec![version as u8; 40],
        nonce: vec![7; 24],
        ciphertext: vec![0, 255, 9, version as u8],
    };
    assert_eq!(s.secret_master().await.unwrap(), None);
    // No put before a master key is set.
    assert!(matches!(
        s.secret_put(row("team/a/x", 1, "k1")).await,
        Err(StoreError::Conflict(_))
    ));
    s.secret_master_init(master("k1")).await.unwrap();
    assert!(matches!(
        s.secret_master_init(master("k2")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.secret_master().await.unwrap(), Some(master("k1")));
    s.secret_put(row("team/a/x", 1, "k1")).await.unwrap();
    s.secret_put(row("team/a/x", 2, "k1")).await.unwrap();
    s.secret_put(row("team/a/y", 1, "k1")).await.unwrap();
    s.secret_put(row("team/ab/z", 1, "k1")).await.unwrap();
    // Versions only go one up; a wrapped key of another master key is refused.
    for bad in [
        row("team/a/x", 2, "k1"),
        row("team/a/x", 4, "k1"),
        row("team/a/x", 3, "kx"),
    ] {
        assert!(matches!(
            s.secret_put(bad).await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert_eq!(
        s.secret_get("team/a/x", None).await.unwrap(),
        Some(row("team/a/x", 2, "k1"))
    );
    assert_eq!(
        s.secret_get("team/a/x", Some(1)).await.unwrap(),
        Some(row("team/a/x", 1, "k1"))
    );
    assert_eq!(s.secret_get("team/a/x", Some(3)).await.unwrap(), None);
    assert_eq!(s.secret_get("team/a", None).await.unwrap(), None);
    let listed = s.secret_list("team/a/").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| (
                m.path.as_str(),
                m.latest_version,
                m.versions,
                m.updated_by.as_str()
            ))
            .collect::<Vec<_>>(),
        vec![("team/a/x", 2, 2, "actor-2"), ("team/a/y", 1, 1, "actor-1")]
    );
    assert_eq!((listed[0].created_at, listed[0].updated_at), (ts(1), ts(2)));
    assert_eq!(s.secret_list("").await.unwrap().len(), 3);
    // A prefix is matched literally (no LIKE wildcards).
    assert_eq!(s.secret_list("team/_").await.unwrap().len(), 0);
    let v = s.secret_versions("team/a/x").await.unwrap();
    assert_eq!(v.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
    // Rotation: all rewrapped or nothing changes.
    let all = s.secret_wrapped_keys().await.unwrap();
    assert_eq!(all.len(), 4);
    let rewrap = |w: &WrappedKeyRow| WrappedKeyRow {
        key_id: "k2".into(),
        wrapped_key: vec![42; 40],
        ..w.clone()
    };
    let partial: Vec<WrappedKeyRow> = all.iter().take(3).map(rewrap).collect();
    assert!(matches!(
        s.secret_rotate("k1", master("k2"), partial).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.secret_master().await.unwrap(), Some(master("k1")));
    assert!(
        s.secret_wrapped_keys()
            .await
            .unwrap()
            .iter()
            .all(|w| w.key_id == "k1")
    );
    let full: Vec<WrappedKeyRow> = all.iter().map(rewrap).collect();
    assert!(matches!(
        s.secret_rotate("k0", master("k2"), full.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    s.secret_rotate("k1", master("k2"), full).await.unwrap();
    assert_eq!(
        s.secret_master().await.unwrap().map(|m| m.key_id),
        Some("k2".into())
    );
    let got = s.secret_get("team/a/x", Some(1)).await.unwrap().unwrap();
    assert_eq!((got.key_id.as_str(), got.wrapped_key), ("k2", vec![42; 40]));
    // The data itself is untouched by rotation.
    assert_eq!(got.ciphertext, row("team/a/x", 1, "k1").ciphertext);
    assert!(matches!(
        s.secret_put(row("team/a/x", 3, "k1")).await,
        Err(StoreError::Conflict(_))
    ));
    s.secret_put(row("team/a/x", 3, "k2")).await.unwrap();
    assert_eq!(s.secret_delete("team/a/x").await.unwrap(), 3);
    assert_eq!(s.secret_delete("team/a/x").await.unwrap(), 0);
    assert_eq!(s.secret_get("team/a/x", None).await.unwrap(), None);
    assert_eq!(s.secret_list("").await.unwrap().len(), 2);
}
