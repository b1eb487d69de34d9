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
    ArtifactQuery, CronFire, DraftWrite, EventQuery, FootprintQuery, FootprintRollupQuery,
    RunQuery, RunWrite, StepWrite, Store, StoreError, WriteBatch,
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
            check!(stats_count_work_and_empty_batches_are_free);
            check!(footprints_roll_up_by_day_and_metric);
        }
    };
}
