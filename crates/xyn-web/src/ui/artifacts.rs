//! The artifact browser: list, detail with a text/JSON preview, download.

use axum::extract::{Path, Query, State};
use axum::response::Html;
use serde::Deserialize;
use serde_json::{Value, json};
use xyn_core::XynError;
use xyn_store::ArtifactQuery;

use super::{Ui, UiResult, q, url_with};
use crate::AppState;
use crate::dto::{ArtifactDto, decode_cursor, encode_cursor, parse_id};

const PREVIEW_LIMIT: usize = 256 * 1024;

#[derive(Deserialize, Default)]
pub struct ArtifactFilter {
    kind: Option<String>,
    run_id: Option<String>,
    cursor: Option<String>,
}

async fn rows(s: &AppState, f: &ArtifactFilter) -> Result<Value, XynError> {
    let page = s
        .node
        .store()
        .list_artifacts(ArtifactQuery {
            run_id: q(&f.run_id).map(|r| parse_id("run id", r)).transpose()?,
            step_id: None,
            kind: q(&f.kind).map(str::to_string),
            before: decode_cursor(q(&f.cursor))?,
            limit: 50,
        })
        .await?;
    let next = encode_cursor(page.next);
    let more_url = url_with(
        "/ui/artifacts/_list",
        &[
            ("kind", q(&f.kind)),
            ("run_id", q(&f.run_id)),
            ("cursor", next.as_deref()),
        ],
    );
    let artifacts: Vec<ArtifactDto> = page.items.into_iter().map(Into::into).collect();
    Ok(json!({"artifacts": artifacts, "next_cursor": next, "more_url": more_url}))
}

/// `GET /ui/artifacts`.
pub async fn page(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<ArtifactFilter>,
) -> UiResult<Html<String>> {
    let (mut data, error) = match rows(&s, &f).await {
        Ok(d) => (d, None),
        Err(e) if e.kind != xyn_core::ErrorKind::Internal => {
            (json!({"artifacts": []}), Some(e.message))
        }
        Err(e) => return Err(e.into()),
    };
    data["filter"] = json!({"kind": q(&f.kind), "run_id": q(&f.run_id)});
    data["filter_error"] = json!(error);
    ui.page("artifacts.html", "artifacts", data)
}

/// `GET /ui/artifacts/_list`.
pub async fn list_partial(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<ArtifactFilter>,
) -> UiResult<Html<String>> {
    ui.partial("_artifact_rows.html", rows(&s, &f).await?)
}

fn previewable(content_type: &str, name: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.contains("json")
        || ct.contains("yaml")
        || ct.contains("xml")
        || [".txt", ".log", ".json", ".yaml", ".yml", ".md", ".csv"]
            .iter()
            .any(|e| name.ends_with(e))
}

/// `GET /ui/artifacts/{artifact_id}`.
pub async fn detail(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
) -> UiResult<Html<String>> {
    let a = crate::routes::artifacts::load(&s, &id).await?;
    let (mut preview, mut is_json, mut truncated) = (None, false, false);
    if previewable(&a.content_type, &a.name) {
        let bytes = crate::routes::artifacts::bytes_of(&s, &a).await?;
        truncated = bytes.len() > PREVIEW_LIMIT;
        let head = &bytes[..bytes.len().min(PREVIEW_LIMIT)];
        let text = String::from_utf8_lossy(head).into_owned();
        let pretty = (!truncated)
            .then(|| serde_json::from_str::<Value>(&text).ok())
            .flatten()
            .and_then(|v| serde_json::to_string_pretty(&v).ok());
        is_json = pretty.is_some();
        preview = Some(pretty.unwrap_or(text));
    }
    ui.page(
        "artifact.html",
        "artifacts",
        json!({"a": ArtifactDto::from(a), "preview": preview, "preview_json": is_json,
            "truncated": truncated, "preview_limit": PREVIEW_LIMIT}),
    )
}
