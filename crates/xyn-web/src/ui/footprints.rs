//! Footprints: tokens and wall time per day as SVG bar charts rendered on the server.

use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;
use serde_json::{Value, json};
use xyn_core::Timestamp;
use xyn_core::footprint::{GATE_WAIT_MS, TOKENS_IN, TOKENS_OUT, WALL_MS};
use xyn_store::{DAY_MICROS, FootprintRollupQuery};

use super::{Ui, UiResult, q};
use crate::AppState;
use crate::dto::{FootprintDayDto, parse_id};

#[derive(Deserialize, Default)]
pub struct FootprintQ {
    days: Option<String>,
    run_id: Option<String>,
}

const W: f64 = 560.0;
const H: f64 = 200.0;
const LEFT: f64 = 44.0;
const BASE: f64 = 180.0;
const TOP: f64 = 12.0;

fn human(n: f64) -> String {
    if n >= 1_000_000.0 {
        format!("{:.1}M", n / 1_000_000.0)
    } else if n >= 10_000.0 {
        format!("{:.0}k", n / 1000.0)
    } else if n >= 1000.0 {
        format!("{:.1}k", n / 1000.0)
    } else {
        format!("{n:.0}")
    }
}

fn chart(id: &str, title: &str, days: &[(String, f64)], fmt: &dyn Fn(f64) -> String) -> Value {
    let max = days.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
    let n = days.len().max(1) as f64;
    let slot = (W - LEFT - 4.0) / n;
    let w = (slot * 0.7).max(1.0);
    let every = ((days.len() as f64 / 7.0).ceil() as usize).max(1);
    let bars: Vec<Value> = days
        .iter()
        .enumerate()
        .map(|(i, (day, v))| {
            let h = if max > 0.0 {
                (v / max) * (BASE - TOP)
            } else {
                0.0
            };
            let x = LEFT + i as f64 * slot + (slot - w) / 2.0;
            json!({
                "x": (x * 10.0).round() / 10.0, "y": ((BASE - h) * 10.0).round() / 10.0,
                "w": (w * 10.0).round() / 10.0, "h": (h * 10.0).round() / 10.0,
                "day": day, "day_short": day.get(5..).unwrap_or(day), "label": fmt(*v),
                "show_day": i % every == 0 || i + 1 == days.len(),
            })
        })
        .collect();
    // `+ 0.0`: an empty float sum is -0.0.
    let total: f64 = days.iter().map(|(_, v)| v).sum::<f64>() + 0.0;
    json!({"id": id, "title": title, "bars": bars, "width": W, "height": H, "base": BASE,
        "max_label": fmt(max), "total_label": fmt(total), "empty": max <= 0.0})
}

/// `GET /ui/footprints?days=&run_id=`.
pub async fn page(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<FootprintQ>,
) -> UiResult<Html<String>> {
    let days: i64 = q(&f.days)
        .and_then(|d| d.parse().ok())
        .filter(|d| (1..=366).contains(d))
        .unwrap_or(14);
    let (run_id, filter_error) = match q(&f.run_id).map(|r| parse_id("run id", r)).transpose() {
        Ok(r) => (r, None),
        Err(e) => (None, Some(e.message)),
    };
    let today = s.node.now().as_micros().div_euclid(DAY_MICROS) * DAY_MICROS;
    let since = today - (days - 1) * DAY_MICROS;
    let rows = s
        .node
        .store()
        .footprint_rollup(FootprintRollupQuery {
            run_id,
            metrics: vec![],
            since: Some(Timestamp::from_micros(since)),
            until: None,
        })
        .await?;
    let mut tokens = Vec::new();
    let mut wall = Vec::new();
    let mut waited = Vec::new();
    for i in 0..days {
        let day = since + i * DAY_MICROS;
        let label = Timestamp::from_micros(day)
            .to_datetime()
            .format("%Y-%m-%d")
            .to_string();
        let of = |metric: &str| -> f64 {
            rows.iter()
                .filter(|r| r.day.as_micros() == day && r.metric == metric)
                .map(|r| r.total)
                .sum::<f64>()
                + 0.0
        };
        tokens.push((label.clone(), of(TOKENS_IN) + of(TOKENS_OUT)));
        wall.push((label.clone(), of(WALL_MS)));
        waited.push((label, of(GATE_WAIT_MS)));
    }
    let secs = |ms: f64| {
        if ms >= 60_000.0 {
            format!("{:.1} min", ms / 60_000.0)
        } else {
            format!("{:.1} s", ms / 1000.0)
        }
    };
    let charts = vec![
        chart("tokens", "LLM tokens (in + out)", &tokens, &human),
        chart("wall", "Working wall time", &wall, &secs),
        chart("gate-wait", "Waiting at gates", &waited, &secs),
    ];
    let table: Vec<Value> = rows
        .into_iter()
        .rev()
        .map(|r| {
            let d = FootprintDayDto::from(r);
            let mut v = serde_json::to_value(&d).unwrap_or_default();
            v["total_label"] = json!(human(d.total));
            v
        })
        .collect();
    ui.page(
        "footprints.html",
        "footprints",
        json!({"charts": charts, "rows": table, "days": days, "run_id": q(&f.run_id), "filter_error": filter_error}),
    )
}
