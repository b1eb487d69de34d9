#![allow(clippy::unwrap_used)]
//! The metrics stay bounded whatever the traffic: 10,000 runs with distinct run, step, event
//! and correlation ids (and 10,000 distinct request paths) add no series; the pinned names and
//! labels are there, and both exposition formats render.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use xyn_core::event::{Event, StoredEvent};
use xyn_core::footprint::Footprint;
use xyn_core::{RunId, StepId, Timestamp};
use xyn_metrics::Metrics;

fn ev(
    seq: i64,
    name: &str,
    run: RunId,
    step: Option<StepId>,
    data: serde_json::Value,
) -> StoredEvent {
    StoredEvent {
        seq,
        hash: format!("{seq:064x}"),
        event: Event {
            event_id: xyn_core::EventId::from_uuid(uuid::Uuid::new_v4()),
            event_name: name.into(),
            occurred_at: Timestamp::from_micros(seq),
            env_id: "local".into(),
            actor: "system".into(),
            correlation_id: uuid::Uuid::new_v4().to_string(),
            run_id: Some(run),
            step_id: step,
            resource: None,
            data,
        },
    }
}

/// One run of blueprint `bp`: an external trigger, start, a transform and an agent step, end.
fn run_batch(m: &Metrics, i: i64, bp: &str, status: &str) {
    let run = RunId::from_uuid(uuid::Uuid::new_v4());
    let step = StepId::from_uuid(uuid::Uuid::new_v4());
    let events = vec![
        ev(i * 10, "demo.trigger", run, None, json!({"n": i})),
        ev(
            i * 10 + 1,
            "xyn.run.started",
            run,
            None,
            json!({"blueprint_id": bp, "run_id": run.to_string()}),
        ),
        ev(
            i * 10 + 2,
            "xyn.step.completed",
            run,
            Some(step),
            json!({"step": format!("s{i}"), "kind": "transform", "wall_ms": i % 700}),
        ),
        ev(
            i * 10 + 3,
            "xyn.step.failed",
            run,
            Some(step),
            json!({"step": "a", "kind": "agent_task", "wall_ms": 12}),
        ),
        ev(
            i * 10 + 4,
            &format!("xyn.run.{status}"),
            run,
            None,
            json!({"blueprint_id": bp, "wall_ms": 40}),
        ),
    ];
    let fp = Footprint::new(
        Timestamp::from_micros(i),
        Some(run),
        Some(step),
        "agent",
        "replay/checkmk-1",
        "tokens_in",
        10.0,
        "tokens",
        json!({}),
    );
    m.record_commit(&[fp], &events, Duration::from_micros(300));
}

/// Series (name and labels, without values) of a rendering.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect()
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn ten_thousand_runs_add_no_series() {
    let m = Metrics::new();
    let statuses = ["completed", "failed", "cancelled"];
    for i in 0..10 {
        run_batch(&m, i, &format!("bp.{}", i % 3), statuses[i as usize % 3]);
        m.http_request(
            "/api/v1/runs/{run_id}",
            "GET",
            200,
            Duration::from_millis(2),
        );
    }
    let before = series(&m.render(false));
    for i in 10..10_010 {
        run_batch(&m, i, &format!("bp.{}", i % 3), statuses[i as usize % 3]);
        m.http_request(
            "/api/v1/runs/{run_id}",
            "GET",
            200,
            Duration::from_millis(2),
        );
    }
    let text = m.render(false);
    let after = series(&text);
    assert_eq!(before, after, "new series appeared with new run ids");
    assert!(after.len() < 200, "{} series", after.len());
    // No label value is a run, step, event or correlation id (all UUIDs here).
    for s in &after {
        assert!(
            !s.contains('-') || s.contains("replay/checkmk-1"),
            "an id in {s}"
        );
    }
    let total: f64 = (0..3)
        .flat_map(|b| statuses.map(|st| (b, st)))
        .map(|(b, st)| {
            value(
                &text,
                &format!("xyn_runs_total{{blueprint=\"bp.{b}\",status=\"{st}\"}}"),
            )
        })
        .sum();
    assert_eq!(total, 10_010.0);
    assert_eq!(
        value(
            &text,
            "xyn_runs_total{blueprint=\"bp.1\",status=\"failed\"}"
        ),
        // i % 3 == 1 → bp.1 and failed, for i in 0..10_010.
        3337.0
    );
    assert_eq!(
        value(&text, "xyn_step_duration_seconds_count{kind=\"transform\"}"),
        10_010.0
    );
    assert_eq!(
        value(
            &text,
            "xyn_step_duration_seconds_bucket{kind=\"agent_task\",le=\"0.025\"}"
        ),
        10_010.0
    );
    assert_eq!(
        value(
            &text,
            "xyn_step_duration_seconds_bucket{kind=\"agent_task\",le=\"0.01\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&text, "xyn_events_total{origin=\"external\"}"),
        10_010.0
    );
    assert_eq!(
        value(
            &text,
            "xyn_llm_tokens_total{model=\"replay/checkmk-1\",direction=\"in\"}"
        ),
        100_100.0
    );
    assert_eq!(
        value(
            &text,
            "xyn_http_requests_total{route=\"/api/v1/runs/{run_id}\",method=\"GET\",status=\"200\"}"
        ),
        10_010.0
    );
}

#[test]
fn open_ended_labels_are_capped() {
    let m = Metrics::new();
    for i in 0..(xyn_metrics::MAX_ROUTES + 50) {
        m.http_request(&format!("/r/{i}"), "BREW", 418, Duration::from_millis(1));
    }
    let text = m.render(false);
    let routes: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("xyn_http_requests_total{"))
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        routes.len(),
        xyn_metrics::MAX_ROUTES + 1,
        "the cap plus `other`"
    );
    assert!(routes.contains("other"));
    assert!(
        value(
            &text,
            "xyn_http_requests_total{route=\"other\",method=\"other\",status=\"418\"}"
        ) >= 50.0
    );
}

#[test]
fn both_formats_render_the_pinned_metrics() {
    let m = Metrics::new();
    run_batch(&m, 1, "bp.x", "completed");
    let text = m.render(false);
    assert!(text.contains("# TYPE xyn_runs_total counter"), "{text}");
    assert!(text.contains("# TYPE xyn_step_duration_seconds histogram"));
    assert!(!text.contains("# EOF"));
    let om = m.render(true);
    assert!(om.contains("# TYPE xyn_runs counter"), "{om}");
    assert!(om.contains("xyn_runs_total{blueprint=\"bp.x\",status=\"completed\"} 1"));
    assert!(om.ends_with("# EOF\n"));
}
