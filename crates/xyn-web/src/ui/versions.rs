//! What the blueprint page shows beside the definition: the plan diagram of a version and the
//! diff between two versions (`/ui/blueprints/{id}/diff?from=&to=`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use serde::Deserialize;
use serde_json::{Value, json};
use xyn_core::blueprint::{ValidationEnv, compile};
use xyn_core::records::BlueprintVersion;

use super::diff::{CONTEXT, line_diff};
use super::{Ui, UiError, UiResult, diagram, q};
use crate::AppState;

/// The plan diagram of a stored version, as an inline SVG; none when the version no longer
/// compiles. Action names are not checked against this node (as when a run loads its plan), so
/// a version whose action was removed since still draws.
pub fn diagram_of(b: &BlueprintVersion) -> Option<String> {
    compile(&b.definition, &ValidationEnv::permissive())
        .ok()
        .map(|plan| diagram::plan_svg(&plan))
}

/// The version numbers, newest first, with the default pair to compare: the one before the
/// newest, and the newest.
pub fn compare_choices(versions: &[i64]) -> Value {
    let mut vs = versions.to_vec();
    vs.sort_unstable_by(|a, b| b.cmp(a));
    let to = vs.first().copied();
    let from = vs.get(1).copied().or(to);
    json!({"versions": vs, "from": from, "to": to})
}

#[derive(Deserialize, Default)]
pub struct DiffQ {
    from: Option<String>,
    to: Option<String>,
}

fn version_param(name: &str, v: &Option<String>) -> UiResult<Option<i64>> {
    match q(v) {
        None => Ok(None),
        Some(s) => s.parse::<i64>().map(Some).map_err(|_| {
            UiError::new(
                StatusCode::BAD_REQUEST,
                "Bad request",
                &format!("'{name}' must be a version number such as 3."),
            )
        }),
    }
}

/// `GET /ui/blueprints/{blueprint_id}/diff?from=&to=`: the line diff of two versions'
/// definitions (by default the one before the newest against the newest).
pub async fn diff(
    State(s): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    Query(p): Query<DiffQ>,
) -> UiResult<Html<String>> {
    let from = version_param("from", &p.from)?;
    let to = version_param("to", &p.to)?;
    let versions = s.node.store().list_blueprint_versions(&id).await?;
    if versions.is_empty() {
        return Err(UiError::not_found("No such blueprint."));
    }
    let numbers: Vec<i64> = versions.iter().map(|v| v.version).collect();
    let mut choices = compare_choices(&numbers);
    let pick = |wanted: Option<i64>, default: &Value| -> UiResult<&BlueprintVersion> {
        let n = wanted.or_else(|| default.as_i64());
        versions
            .iter()
            .find(|v| Some(v.version) == n)
            .ok_or_else(|| match wanted {
                Some(n) => UiError::not_found(&format!("Blueprint {id} has no version {n}.")),
                None => UiError::not_found("No such blueprint."),
            })
    };
    let old = pick(from, &choices["from"])?;
    let new = pick(to, &choices["to"])?;
    choices["from"] = json!(old.version);
    choices["to"] = json!(new.version);
    let d = line_diff(&old.source, &new.source, CONTEXT);
    ui.page(
        "blueprint_diff.html",
        "blueprints",
        json!({
            "blueprint_id": id,
            "old": {"version": old.version, "digest": old.digest, "created_at": old.created_at.to_string()},
            "new": {"version": new.version, "digest": new.digest, "created_at": new.created_at.to_string()},
            "compare": choices,
            "diff": d,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_the_one_before_the_newest_with_the_newest() {
        let c = compare_choices(&[1, 3, 2]);
        assert_eq!(c["versions"], json!([3, 2, 1]));
        assert_eq!((c["from"].as_i64(), c["to"].as_i64()), (Some(2), Some(3)));
        let one = compare_choices(&[4]);
        assert_eq!(
            (one["from"].as_i64(), one["to"].as_i64()),
            (Some(4), Some(4))
        );
        assert_eq!(compare_choices(&[])["to"], Value::Null);
    }

    #[test]
    fn the_diff_partial_escapes_the_definitions_and_signs_each_change() {
        let d = line_diff(
            "a: 1\n",
            "a: 1\nb: \"<script>alert(1)</script> & <img src=x onerror=alert(2)>\"\n",
            CONTEXT,
        );
        let html = super::super::templates()
            .render(
                "_blueprint_diff.html",
                json!({"diff": d, "old": {"version": 1}, "new": {"version": 2}}),
            )
            .unwrap_or_default();
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;alert(1)"), "{html}");
        assert!(html.contains(" &amp; &lt;img"), "{html}");
        assert_eq!(html.matches(r#"data-testid="diff-add""#).count(), 1);
        assert!(html.contains(r#"<span class="diff-sign">+</span>"#));
        assert!(html.contains("1 line added"));
    }
}
