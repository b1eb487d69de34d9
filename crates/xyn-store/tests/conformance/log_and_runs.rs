//! Conformance checks of the log and the records: the chain, group commits and their
//! preconditions, run revisions, pages, filters and search, blueprint versions, drafts, cron
//! slots, footprints, artifacts, waiting and unfinished runs, batched loads and stats.

use super::*;

pub(super) fn events(n: usize, name: &str) -> WriteBatch {
    WriteBatch {
        events: (0..n).map(|_| event(name, None)).collect(),
        ..Default::default()
    }
}

pub async fn events_get_seq_and_a_verifiable_chain(s: Arc<dyn Store>) {
    let a = s.commit(events(3, "a.one")).await.unwrap();
    let b = s.commit(events(2, "a.two")).await.unwrap();
    let seqs: Vec<i64> = a.iter().chain(b.iter()).map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let report = s.verify_chain().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 5);
    assert_eq!(s.chain_head().await.unwrap(), Some((5, b[1].hash.clone())));
    let got = s.get_event(a[1].event.event_id).await.unwrap().unwrap();
    assert_eq!(got, a[1]);
    let after = s.events_after(2, 10).await.unwrap();
    assert_eq!(
        after.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(s.get_event(EventId(id())).await.unwrap().is_none());
}

pub async fn concurrent_commits_keep_seq_contiguous(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.commit(events(1 + i % 4, "c.burst")).await.unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap().into_iter().map(|e| e.seq));
    }
    seqs.sort_unstable();
    let n = seqs.len() as i64;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    assert!(s.verify_chain().await.unwrap().ok);
}

pub async fn a_failed_precondition_changes_nothing_and_spares_other_batches(s: Arc<dyn Store>) {
    let r = run("bp.x", RunStatus::Running);
    s.commit(WriteBatch {
        runs: vec![RunWrite::Insert(r.clone())],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        let mut stale = r.clone();
        stale.revision = 7; // the store has revision 0: expects 6, finds 0
        tasks.push(tokio::spawn(async move {
            let mut b = events(2, if i % 2 == 0 { "ok.batch" } else { "bad.batch" });
            if i % 2 == 1 {
                b.runs.push(RunWrite::Update {
                    run: stale,
                    expect: None,
                });
            }
            (i, s.commit(b).await)
        }));
    }
    for t in tasks {
        let (i, res) = t.await.unwrap();
        if i % 2 == 1 {
            assert!(matches!(res, Err(StoreError::Conflict(_))), "{res:?}");
        } else {
            assert_eq!(res.unwrap().len(), 2);
        }
    }
    let bad = s
        .list_events(EventQuery {
            event_name: Some("bad.batch".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        bad.items.is_empty(),
        "events of refused batches must not be stored"
    );
    let ok = s
        .list_events(EventQuery {
            event_name: Some("ok.batch".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ok.items.len(), 20);
    let report = s.verify_chain().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 20);
    assert_eq!(s.get_run(r.run_id).await.unwrap().unwrap().revision, 0);
}

pub async fn runs_update_only_from_the_revision_they_read(s: Arc<dyn Store>) {
    let mut r = run("bp.x", RunStatus::Running);
    let st = step(&r, 0, "a");
    s.commit(WriteBatch {
        runs: vec![RunWrite::Insert(r.clone())],
        steps: vec![StepWrite::Insert(st.clone())],
        ..Default::default()
    })
    .await
    .unwrap();
    r.revision = 1;
    r.status = RunStatus::Completed;
    s.commit(WriteBatch {
        runs: vec![RunWrite::Update {
            run: r.clone(),
            expect: None,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    // A second writer that also read revision 0 loses.
    let res = s
        .commit(WriteBatch {
            runs: vec![RunWrite::Update {
                run: r.clone(),
                expect: None,
            }],
            ..Default::default()
        })
        .await;
    assert!(matches!(res, Err(StoreError::Conflict(_))), "{res:?}");
    // Status preconditions.
    let mut r2 = r.clone();
    r2.revision = 2;
    let res = s
        .commit(WriteBatch {
            runs: vec![RunWrite::Update {
                run: r2,
                expect: Some(vec![RunStatus::Running]),
            }],
            ..Default::default()
        })
        .await;
    assert!(matches!(res, Err(StoreError::Conflict(_))), "{res:?}");
    let got = s.get_run(r.run_id).await.unwrap().unwrap();
    assert_eq!(got, r);
    // Step preconditions.
    let mut st2 = st.clone();
    st2.status = StepStatus::Completed;
    let res = s
        .commit(WriteBatch {
            steps: vec![StepWrite::Update {
                step: st2.clone(),
                expect: Some(vec![StepStatus::Waiting]),
            }],
            ..Default::default()
        })
        .await;
    assert!(matches!(res, Err(StoreError::Conflict(_))), "{res:?}");
    s.commit(WriteBatch {
        steps: vec![StepWrite::Update {
            step: st2.clone(),
            expect: Some(vec![StepStatus::Created]),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.get_steps(r.run_id).await.unwrap(), vec![st2]);
}

pub async fn pages_are_stable_under_concurrent_inserts(s: Arc<dyn Store>) {
    s.commit(events(25, "p.page")).await.unwrap();
    let q = |before| EventQuery {
        event_name: Some("p.page".into()),
        before,
        limit: 10,
        ..Default::default()
    };
    let p1 = s.list_events(q(None)).await.unwrap();
    assert_eq!(p1.items.len(), 10);
    assert_eq!(p1.items[0].seq, 25, "newest first");
    // New events arrive while a client pages through older ones.
    s.commit(events(5, "p.page")).await.unwrap();
    let p2 = s.list_events(q(p1.next)).await.unwrap();
    let p3 = s.list_events(q(p2.next)).await.unwrap();
    assert_eq!(p3.next, None);
    let seqs: Vec<i64> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| p.items.iter().map(|e| e.seq))
        .collect();
    assert_eq!(seqs, (1..=25).rev().collect::<Vec<_>>());

    for i in 0..12 {
        let status = if i % 3 == 0 {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        };
        s.commit(WriteBatch {
            runs: vec![RunWrite::Insert(run("bp.page", status))],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let rq = |before| RunQuery {
        blueprint_id: Some("bp.page".into()),
        before,
        limit: 5,
        ..Default::default()
    };
    let a = s.list_runs(rq(None)).await.unwrap();
    let b = s.list_runs(rq(a.next)).await.unwrap();
    let c = s.list_runs(rq(b.next)).await.unwrap();
    assert_eq!(
        (a.items.len(), b.items.len(), c.items.len(), c.next),
        (5, 5, 2, None)
    );
    let failed = s
        .list_runs(RunQuery {
            status: Some(vec![RunStatus::Failed]),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 4);
    assert!(failed.items.iter().all(|r| r.status == RunStatus::Failed));
}

pub async fn event_filters(s: Arc<dyn Store>) {
    let r = RunId(id());
    let mut b = WriteBatch::default();
    for n in [
        "checkmk.alert",
        "checkmk.alert.crit",
        "checkmk.ok",
        "zabbix.alert",
        "checkmkx.alert",
    ] {
        b.events.push(event(n, None));
    }
    b.events.push(event("run.thing", Some(r)));
    s.commit(b).await.unwrap();
    let names = |q: EventQuery| {
        let s = s.clone();
        async move {
            let mut v: Vec<String> = s
                .list_events(q)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|e| e.event.event_name)
                .collect();
            v.sort();
            v
        }
    };
    let by = |n: &str| EventQuery {
        event_name: Some(n.into()),
        limit: 50,
        ..Default::default()
    };
    assert_eq!(names(by("checkmk.alert")).await, vec!["checkmk.alert"]);
    assert_eq!(
        names(by("checkmk.*")).await,
        vec!["checkmk.alert", "checkmk.ok"]
    );
    assert_eq!(
        names(by("checkmk.**")).await,
        vec!["checkmk.alert", "checkmk.alert.crit", "checkmk.ok"]
    );
    assert_eq!(
        names(EventQuery {
            run_id: Some(r),
            limit: 50,
            ..Default::default()
        })
        .await,
        vec!["run.thing"]
    );
}

/// A run with a chosen id, inputs and creation time.
pub(super) fn run_with(id: &str, inputs: serde_json::Value, created: i64) -> Run {
    let mut r = run("bp.search", RunStatus::Completed);
    r.run_id = id.parse().unwrap();
    r.inputs = inputs;
    r.created_at = ts(created);
    r
}

pub async fn runs_and_events_are_found_by_short_id_input_value_and_time(s: Arc<dyn Store>) {
    use xyn_core::IdPattern;
    // Time-ordered ids share their start; the short id is their random tail.
    let a = run_with(
        "019ae6b2-1c3d-7a10-8f00-1234abcd5678",
        json!({"host": "Web-1", "port": 8080, "dry": true, "tags": ["x"], "note": null}),
        10,
    );
    let b = run_with(
        "019ae6b2-1c3d-7a10-8f00-5678abcd9999",
        json!({"host": "web-2", "text": "  Padded  "}),
        20,
    );
    let c = run_with(
        "019ae6b2-1c3d-7a10-8f00-9abcabce0000",
        json!({"host": "web-1 ", "nested": {"host": "deep"}}),
        30,
    );
    // Two inputs holding one value: the run is found once.
    let d = run_with(
        "019ae6b2-1c3d-7a10-8f00-deadbeef0001",
        json!({"primary": "db-9", "replica": "DB-9"}),
        40,
    );
    let f = run_with(
        "019ae6b2-1c3d-7a10-8f00-deadbeef0002",
        json!({"primary": "db-9"}),
        50,
    );
    let mut batch = WriteBatch::default();
    for r in [&a, &b, &c, &d, &f] {
        batch.runs.push(RunWrite::Insert(r.clone()));
    }
    let mut e = event("search.thing", Some(a.run_id));
    e.event_id = "019ae6b2-1c3d-7a10-8f00-000011112222".parse().unwrap();
    batch.events.push(e.clone());
    s.commit(batch).await.unwrap();

    let find = |q: RunQuery| {
        let s = s.clone();
        async move {
            let mut ids: Vec<String> = s
                .list_runs(RunQuery { limit: 50, ..q })
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|r| xyn_core::short_id(&r.run_id.to_string()).to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    let by_id = |t: &str| RunQuery {
        id: IdPattern::parse(t),
        ..Default::default()
    };
    assert_eq!(find(by_id("abcd")).await, vec!["abcd5678", "abcd9999"]);
    assert_eq!(find(by_id("ABCD56")).await, vec!["abcd5678"]);
    assert_eq!(find(by_id("abce0000")).await, vec!["abce0000"]);
    assert!(
        find(by_id("1234")).await.is_empty(),
        "the start of the id is not the short id"
    );
    assert_eq!(find(by_id(&b.run_id.to_string())).await, vec!["abcd9999"]);
    let by_value = |v: &str| RunQuery {
        input_value: Some(v.into()),
        ..Default::default()
    };
    // Case and surrounding spaces do not matter; numbers and booleans are found as text;
    // nested values, lists and nulls are not indexed.
    assert_eq!(find(by_value("WEB-1")).await, vec!["abcd5678", "abce0000"]);
    assert_eq!(find(by_value("padded")).await, vec!["abcd9999"]);
    assert_eq!(find(by_value("8080")).await, vec!["abcd5678"]);
    assert_eq!(find(by_value("true")).await, vec!["abcd5678"]);
    assert_eq!(find(by_value("db-9")).await, vec!["beef0001", "beef0002"]);
    // Pages by value: newest first, one run per page, each once.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let p = s
            .list_runs(RunQuery {
                input_value: Some("db-9".into()),
                limit: 1,
                before,
                ..Default::default()
            })
            .await
            .unwrap();
        pages.extend(
            p.items
                .iter()
                .map(|r| xyn_core::short_id(&r.run_id.to_string()).to_string()),
        );
        match p.next {
            Some(n) if pages.len() < 5 => before = Some(n),
            _ => break,
        }
    }
    assert_eq!(pages, vec!["beef0002", "beef0001"]);
    assert!(find(by_value("deep")).await.is_empty());
    assert!(find(by_value("x")).await.is_empty());
    assert!(find(by_value("web")).await.is_empty(), "whole values only");
    // Filters combine: the value, a time window, the short id.
    assert_eq!(
        find(RunQuery {
            input_value: Some("web-1".into()),
            created_since: Some(ts(20)),
            ..Default::default()
        })
        .await,
        vec!["abce0000"]
    );
    assert_eq!(
        find(RunQuery {
            created_since: Some(ts(10)),
            created_until: Some(ts(30)),
            blueprint_id: Some("bp.search".into()),
            ..Default::default()
        })
        .await,
        vec!["abcd5678", "abcd9999"]
    );
    assert!(
        find(RunQuery {
            input_value: Some("web-2".into()),
            id: IdPattern::parse("abce"),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    let events = s
        .list_events(EventQuery {
            id: IdPattern::parse("1111"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1);
    assert_eq!(events.items[0].event.event_id, e.event_id);
    let none = s
        .list_events(EventQuery {
            id: IdPattern::parse("2222"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.items.is_empty());
}

pub async fn blueprint_versions(s: Arc<dyn Store>) {
    let v = |id: &str, version: i64| BlueprintVersion {
        blueprint_id: id.into(),
        version,
        name: id.into(),
        definition: json!({"id": id, "v": version}),
        source: format!("id: {id}"),
        digest: format!("d{version}"),
        created_at: ts(version),
        created_by: "t".into(),
        origin: "test".into(),
    };
    s.commit(WriteBatch {
        blueprint_versions: vec![v("bp.a", 1), v("bp.b", 1)],
        ..Default::default()
    })
    .await
    .unwrap();
    s.commit(WriteBatch {
        blueprint_versions: vec![v("bp.a", 2)],
        ..Default::default()
    })
    .await
    .unwrap();
    let dup = s
        .commit(WriteBatch {
            blueprint_versions: vec![v("bp.a", 2)],
            events: vec![event("x.y", None)],
            ..Default::default()
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let heads = s.blueprint_heads().await.unwrap();
    assert_eq!(
        heads
            .iter()
            .map(|h| (h.blueprint_id.as_str(), h.version))
            .collect::<Vec<_>>(),
        vec![("bp.a", 2), ("bp.b", 1)]
    );
    assert_eq!(
        s.get_blueprint("bp.a", None)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        s.get_blueprint("bp.a", Some(1)).await.unwrap().unwrap(),
        v("bp.a", 1)
    );
    assert!(s.get_blueprint("bp.zz", None).await.unwrap().is_none());
    assert_eq!(s.list_blueprint_versions("bp.a").await.unwrap().len(), 2);
    assert!(
        s.verify_chain().await.unwrap().events_checked == 0,
        "the refused batch's event is not stored"
    );
}

pub async fn blueprint_triggers_switch_and_wake_the_catalog(s: Arc<dyn Store>) {
    let sw = |id: &str, enabled: bool, at: i64| xyn_store::BlueprintTrigger {
        blueprint_id: id.into(),
        enabled,
        changed_at: ts(at),
        changed_by: format!("user:{at}"),
    };
    assert!(s.blueprint_triggers().await.unwrap().is_empty());
    let mut rx = s.subscribe();
    s.commit(WriteBatch {
        blueprint_triggers: vec![sw("bp.b", false, 1)],
        events: vec![event("xyn.blueprint.trigger.disabled", None)],
        ..Default::default()
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(Signal::Catalog)) => break,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            other => panic!("a trigger switch wakes the catalog: {other:?}"),
        }
    }
    // Concurrent switches of different blueprints (one commit group), then one replaced.
    let (a, c) = tokio::join!(
        s.commit(WriteBatch {
            blueprint_triggers: vec![sw("bp.a", false, 2)],
            ..Default::default()
        }),
        s.commit(WriteBatch {
            blueprint_triggers: vec![sw("bp.c", false, 2)],
            ..Default::default()
        })
    );
    a.unwrap();
    c.unwrap();
    // Two switches of one blueprint in one batch: the later one holds.
    s.commit(WriteBatch {
        blueprint_triggers: vec![sw("bp.a", false, 3), sw("bp.a", true, 4)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.blueprint_triggers().await.unwrap(),
        vec![
            sw("bp.a", true, 4),
            sw("bp.b", false, 1),
            sw("bp.c", false, 2)
        ]
    );
}

pub async fn drafts_revise_with_a_precondition(s: Arc<dyn Store>) {
    let d = Draft {
        draft_id: DraftId(id()),
        name: "d".into(),
        kind: "blueprint".into(),
        status: DraftStatus::Draft,
        revision: 1,
        trigger_event_type: Some("a.b".into()),
        definition: "id: x".into(),
        definition_artifact_id: None,
        notes: None,
        source_run_id: None,
        validation: None,
        promoted_version: None,
        created_at: ts(1),
        updated_at: ts(1),
    };
    s.commit(WriteBatch {
        drafts: vec![DraftWrite::Insert(d.clone())],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut d2 = d.clone();
    d2.revision = 2;
    d2.definition = "id: y".into();
    s.commit(WriteBatch {
        drafts: vec![DraftWrite::Update {
            draft: d2.clone(),
            expect_revision: Some(1),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let stale = s
        .commit(WriteBatch {
            drafts: vec![DraftWrite::Update {
                draft: d2.clone(),
                expect_revision: Some(1),
            }],
            ..Default::default()
        })
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    assert_eq!(s.get_draft(d.draft_id).await.unwrap().unwrap(), d2);
    assert_eq!(s.list_drafts(None, 10).await.unwrap().items.len(), 1);
}

pub async fn a_cron_slot_fires_once(s: Arc<dyn Store>) {
    let fire = |slot| CronFire {
        blueprint_id: "bp.cron".into(),
        slot: ts(slot),
        fired_at: ts(slot),
    };
    s.commit(WriteBatch {
        cron_fires: vec![fire(60)],
        events: vec![event("x.cron", None)],
        ..Default::default()
    })
    .await
    .unwrap();
    let again = s
        .commit(WriteBatch {
            cron_fires: vec![fire(60)],
            events: vec![event("x.cron", None)],
            ..Default::default()
        })
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    s.commit(WriteBatch {
        cron_fires: vec![fire(120)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.last_cron_slot("bp.cron").await.unwrap(), Some(ts(120)));
    assert_eq!(s.last_cron_slot("bp.other").await.unwrap(), None);
    assert_eq!(s.verify_chain().await.unwrap().events_checked, 1);
}

pub async fn footprints_artifacts_and_unfinished_runs(s: Arc<dyn Store>) {
    let r = run("bp.f", RunStatus::Running);
    let done = run("bp.f", RunStatus::Completed);
    let st = step(&r, 0, "a");
    let fp = |metric: &str, q: f64| {
        Footprint::new(
            ts(2),
            Some(r.run_id),
            Some(st.step_id),
            "step",
            "a",
            metric,
            q,
            "ms",
            json!({"k": "v"}),
        )
    };
    let art = Artifact {
        artifact_id: ArtifactId(id()),
        name: "prompt.json".into(),
        kind: "prompt".into(),
        content_type: "application/json".into(),
        byte_length: 12,
        sha256: "0".repeat(64),
        created_at: ts(2),
        created_by: "t".into(),
        run_id: Some(r.run_id),
        step_id: Some(st.step_id),
        metadata: json!({}),
    };
    s.commit(WriteBatch {
        runs: vec![RunWrite::Insert(r.clone()), RunWrite::Insert(done.clone())],
        steps: vec![StepWrite::Insert(st.clone())],
        footprints: vec![fp("wall_ms", 12.0), fp("step.count", 1.0)],
        artifacts: vec![art.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let f = s
        .list_footprints(FootprintQuery {
            run_id: Some(r.run_id),
            metric: Some("wall_ms".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(f.items, vec![fp("wall_ms", 12.0)]);
    let a = s
        .list_artifacts(ArtifactQuery {
            run_id: Some(r.run_id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(a.items, vec![art.clone()]);
    assert_eq!(s.get_artifact(art.artifact_id).await.unwrap(), Some(art));
    assert_eq!(s.unfinished_runs().await.unwrap(), vec![r.run_id]);
}

/// A run held at a gate is `waiting`: stored, filtered on, found unfinished (recovery drives it
/// again after a restart), and moved back to `running` under a status precondition.
pub async fn waiting_runs_are_filtered_and_unfinished(s: Arc<dyn Store>) {
    let working = run("bp.w", RunStatus::Running);
    let mut held = run("bp.w", RunStatus::Waiting);
    let done = run("bp.w", RunStatus::Completed);
    let mut gate = step(&held, 0, "approve");
    gate.kind = StepKind::Gate;
    gate.status = StepStatus::Waiting;
    gate.attempt = 1;
    gate.started_at = Some(ts(2));
    gate.inputs = Some(json!({"message": "ship it?", "effects": []}));
    s.commit(WriteBatch {
        runs: vec![
            RunWrite::Insert(working.clone()),
            RunWrite::Insert(held.clone()),
            RunWrite::Insert(done.clone()),
        ],
        steps: vec![StepWrite::Insert(gate.clone())],
        ..Default::default()
    })
    .await
    .unwrap();
    let waiting = |st: Vec<RunStatus>| RunQuery {
        status: Some(st),
        blueprint_id: Some("bp.w".into()),
        limit: 10,
        ..Default::default()
    };
    let got = s
        .list_runs(waiting(vec![RunStatus::Waiting]))
        .await
        .unwrap();
    assert_eq!(got.items, vec![held.clone()]);
    let got = s
        .list_runs(waiting(vec![RunStatus::Running, RunStatus::Waiting]))
        .await
        .unwrap();
    assert_eq!(got.items.len(), 2);
    let mut unfinished = s.unfinished_runs().await.unwrap();
    unfinished.sort_by_key(|r| r.to_string());
    let mut want = vec![working.run_id, held.run_id];
    want.sort_by_key(|r| r.to_string());
    assert_eq!(unfinished, want);
    // The decision: the gate completes and the run goes on, only if it still waits.
    held.revision = 1;
    held.status = RunStatus::Running;
    gate.status = StepStatus::Completed;
    s.commit(WriteBatch {
        runs: vec![RunWrite::Update {
            run: held.clone(),
            expect: Some(vec![RunStatus::Waiting]),
        }],
        steps: vec![StepWrite::Update {
            step: gate.clone(),
            expect: Some(vec![StepStatus::Waiting]),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut twice = held.clone();
    twice.revision = 2;
    let res = s
        .commit(WriteBatch {
            runs: vec![RunWrite::Update {
                run: twice,
                expect: Some(vec![RunStatus::Waiting]),
            }],
            ..Default::default()
        })
        .await;
    assert!(matches!(res, Err(StoreError::Conflict(_))), "{res:?}");
    assert_eq!(s.get_run(held.run_id).await.unwrap(), Some(held));
    let got = s
        .list_runs(waiting(vec![RunStatus::Waiting]))
        .await
        .unwrap();
    assert!(got.items.is_empty(), "{:?}", got.items);
}

pub async fn runs_load_in_batches_with_steps_and_trigger(s: Arc<dyn Store>) {
    let ev = s.commit(events(1, "t.trigger")).await.unwrap().remove(0);
    let mut a = run("bp.l", RunStatus::Running);
    a.trigger_event_id = Some(ev.event.event_id);
    let b = run("bp.l", RunStatus::Running);
    let steps_a = vec![step(&a, 0, "x"), step(&a, 1, "y")];
    let steps_b = vec![step(&b, 0, "z")];
    s.commit(WriteBatch {
        runs: vec![RunWrite::Insert(a.clone()), RunWrite::Insert(b.clone())],
        steps: steps_a
            .iter()
            .chain(steps_b.iter())
            .cloned()
            .map(StepWrite::Insert)
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut got = s
        .load_runs(&[b.run_id, RunId(id()), a.run_id])
        .await
        .unwrap();
    got.sort_by_key(|l| l.run.run_id.0);
    let mut want = vec![
        xyn_store::LoadedRun {
            run: a,
            steps: steps_a,
            trigger: Some(ev),
        },
        xyn_store::LoadedRun {
            run: b,
            steps: steps_b,
            trigger: None,
        },
    ];
    want.sort_by_key(|l| l.run.run_id.0);
    assert_eq!(got, want);
    assert!(s.load_runs(&[]).await.unwrap().is_empty());
}

pub async fn stats_count_work_and_empty_batches_are_free(s: Arc<dyn Store>) {
    let before = s.stats();
    assert_eq!(s.commit(WriteBatch::default()).await.unwrap().len(), 0);
    assert_eq!(
        s.stats().commits,
        before.commits,
        "an empty batch does not touch the database"
    );
    s.commit(events(3, "s.x")).await.unwrap();
    let _ = s.get_event(EventId(id())).await.unwrap();
    let after = s.stats();
    assert_eq!(after.commits, before.commits + 1);
    assert_eq!(after.events, before.events + 3);
    assert!(after.reads > before.reads);
}

/// Runs per blueprint and status follow inserts and status changes, and a refused batch leaves
/// them as they were.
pub async fn runs_are_counted_per_blueprint_and_status(s: Arc<dyn Store>) {
    let counts = |s: Arc<dyn Store>| async move {
        let mut v: Vec<(String, String, u64)> = s
            .blueprint_run_counts()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.blueprint_id.starts_with("bp.count"))
            .map(|c| (c.blueprint_id, c.status, c.runs))
            .collect();
        v.sort();
        v
    };
    let row = |b: &str, st: &str, n: u64| (b.to_string(), st.to_string(), n);
    let mut a = run("bp.count.a", RunStatus::Running);
    let mut b = run("bp.count.a", RunStatus::Running);
    b.created_at = ts(5);
    let c = run("bp.count.b", RunStatus::Completed);
    s.commit(WriteBatch {
        runs: vec![
            RunWrite::Insert(a.clone()),
            RunWrite::Insert(b.clone()),
            RunWrite::Insert(c.clone()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        counts(s.clone()).await,
        [
            row("bp.count.a", "running", 2),
            row("bp.count.b", "completed", 1)
        ]
    );
    // One completes, one fails; a write that keeps the status changes no count.
    a.revision = 1;
    a.status = RunStatus::Completed;
    b.revision = 1;
    b.status = RunStatus::Failed;
    s.commit(WriteBatch {
        runs: vec![
            RunWrite::Update {
                run: a.clone(),
                expect: None,
            },
            RunWrite::Update {
                run: b.clone(),
                expect: None,
            },
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    a.revision = 2;
    a.step_executions = 3;
    s.commit(WriteBatch {
        runs: vec![RunWrite::Update {
            run: a.clone(),
            expect: None,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        counts(s.clone()).await,
        [
            row("bp.count.a", "completed", 1),
            row("bp.count.a", "failed", 1),
            row("bp.count.b", "completed", 1)
        ]
    );
    // A refused update (stale revision) counts nothing.
    let mut stale = b.clone();
    stale.status = RunStatus::Completed;
    let res = s
        .commit(WriteBatch {
            runs: vec![RunWrite::Update {
                run: stale,
                expect: None,
            }],
            ..Default::default()
        })
        .await;
    assert!(matches!(res, Err(StoreError::Conflict(_))), "{res:?}");
    assert_eq!(counts(s.clone()).await.len(), 3);
    // The newest run's creation time, per status.
    let all = s.blueprint_run_counts().await.unwrap();
    let failed = all
        .iter()
        .find(|c| c.blueprint_id == "bp.count.a" && c.status == "failed")
        .unwrap();
    assert_eq!(failed.last_created_at, Some(ts(5)));
}
