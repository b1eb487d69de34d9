//! Times `GET /metrics` rendering with 1,000 blueprints that have runs (every label series
//! of the run counters present), in both formats:
//! `cargo run --release -p xyn-metrics --example render`.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use serde_json::json;
use xyn_core::event::{Event, StoredEvent};
use xyn_core::{RunId, Timestamp};
use xyn_metrics::Metrics;

fn main() {
    let m = Metrics::new();
    let run = RunId::from_uuid(uuid::Uuid::nil());
    for b in 0..1000 {
        let bp = format!("team.pack.blueprint-{b:04}");
        let events: Vec<StoredEvent> = ["xyn.run.started", "xyn.run.completed", "xyn.run.failed"]
            .iter()
            .enumerate()
            .map(|(i, name)| StoredEvent {
                seq: b * 3 + i as i64,
                hash: String::new(),
                event: Event {
                    event_id: xyn_core::EventId::from_uuid(uuid::Uuid::nil()),
                    event_name: (*name).into(),
                    occurred_at: Timestamp::from_micros(0),
                    env_id: "local".into(),
                    actor: "system".into(),
                    correlation_id: String::new(),
                    run_id: Some(run),
                    step_id: None,
                    resource: None,
                    data: json!({"blueprint_id": bp, "wall_ms": 30}),
                },
            })
            .collect();
        m.record_commit(&[], &events, Duration::from_micros(200));
    }
    for r in 0..40 {
        m.http_request(
            &format!("/api/v1/route{r}"),
            "GET",
            200,
            Duration::from_millis(1),
        );
    }
    for openmetrics in [false, true] {
        let mut times: Vec<f64> = (0..200)
            .map(|_| {
                let t = Instant::now();
                let s = m.render(openmetrics);
                std::hint::black_box(s.len());
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let size = m.render(openmetrics).len();
        println!(
            "{}: 1,000 blueprints, {} bytes: median {:.2} ms, p99 {:.2} ms",
            if openmetrics {
                "OpenMetrics"
            } else {
                "Prometheus text"
            },
            size,
            times[100],
            times[198]
        );
    }
}
