//! The store conformance suite: every adapter must pass it unchanged.
//! `conformance_suite!(module_name, async || -> Arc<dyn Store>)` generates one test per check.

#![allow(dead_code)]

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use xyn_core::blueprint::StepKind;
use xyn_core::event::Event;
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft, DraftStatus};
use xyn_core::run::{Run, RunStatus, Step, StepStatus};
use xyn_core::{ArtifactId, DraftId, EventId, RunId, StepId, Timestamp};
use xyn_store::{
    ArtifactQuery, CheckpointSigner, CronFire, DraftWrite, EventQuery, FootprintQuery,
    FootprintRollupQuery, QueueWrite, RunQuery, RunWrite, Signal, StepWrite, Store, StoreError,
    WriteBatch,
};

pub fn id() -> Uuid {
    Uuid::now_v7()
}

pub fn ts(s: i64) -> Timestamp {
    Timestamp::from_micros(1_790_000_000_000_000 + s * 1_000_000)
}

pub fn event(name: &str, run: Option<RunId>) -> Event {
    Event {
        event_id: EventId(id()),
        event_name: name.into(),
        occurred_at: ts(1),
        env_id: "test".into(),
        actor: "tester".into(),
        correlation_id: "corr-1".into(),
        run_id: run,
        step_id: None,
        resource: None,
        data: json!({"n": 1, "nested": {"b": [1, 2, 3], "a": "x"}}),
    }
}

pub fn run(bp: &str, status: RunStatus) -> Run {
    Run {
        run_id: RunId(id()),
        name: bp.into(),
        blueprint_id: bp.into(),
        blueprint_version: 1,
        status,
        created_at: ts(1),
        started_at: Some(ts(1)),
        completed_at: None,
        actor: "tester".into(),
        correlation_id: "corr-1".into(),
        env_id: "test".into(),
        trigger_event_id: None,
        inputs: json!({"host": "web-1"}),
        outputs: None,
        error: None,
        deadline_at: Some(ts(3600)),
        priority: 0,
        step_executions: 0,
        revision: 0,
    }
}

pub fn step(run: &Run, idx: u32, name: &str) -> Step {
    Step {
        step_id: StepId(id()),
        run_id: run.run_id,
        name: name.into(),
        idx,
        kind: StepKind::Transform,
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
    }
}

fn events(n: usize, name: &str) -> WriteBatch {
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
fn run_with(id: &str, inputs: serde_json::Value, created: i64) -> Run {
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
    let mut batch = WriteBatch::default();
    for r in [&a, &b, &c] {
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

fn enqueue(run_id: RunId, due_at: Option<Timestamp>) -> QueueWrite {
    QueueWrite::Enqueue {
        run_id,
        due_at,
        owner: None,
        lease_ms: 0,
    }
}

async fn queue(s: &Arc<dyn Store>, w: QueueWrite) -> Result<(), StoreError> {
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

#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::conformance as c;
            #[allow(unused_imports)]
            use super::*;
            macro_rules! check {
                ($f:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $f() {
                        let make = $make;
                        c::$f(make().await).await
                    }
                };
            }
            check!(events_get_seq_and_a_verifiable_chain);
            check!(concurrent_commits_keep_seq_contiguous);
            check!(a_failed_precondition_changes_nothing_and_spares_other_batches);
            check!(runs_update_only_from_the_revision_they_read);
            check!(pages_are_stable_under_concurrent_inserts);
            check!(event_filters);
            check!(blueprint_versions);
            check!(drafts_revise_with_a_precondition);
            check!(a_cron_slot_fires_once);
            check!(footprints_artifacts_and_unfinished_runs);
            check!(waiting_runs_are_filtered_and_unfinished);
            check!(runs_load_in_batches_with_steps_and_trigger);
            check!(stats_count_work_and_empty_batches_are_free);
            check!(claims_are_exclusive_and_skip_what_is_not_due);
            check!(leases_fence_writers_and_expire);
            check!(outbox_rows_cover_every_event_and_are_marked);
            check!(signals_wake_subscribers);
            check!(a_singleton_has_one_holder_at_a_time);
            check!(retention_prunes_a_prefix_and_the_chain_verifies_from_its_checkpoint);
            check!(footprints_roll_up_by_day_and_metric);
            check!(secrets_keep_versions_and_rotate_all_or_nothing);
            check!(runs_and_events_are_found_by_short_id_input_value_and_time);
        }
    };
}
