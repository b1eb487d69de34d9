//! Secrets: the secret store's metadata (path, versions, who changed it and when), a form that
//! sets a value and a button that removes a secret. Values go in and never come out: the page
//! never shows one, and a refused form comes back with the value field empty. The same rules
//! as `/api/v1/secrets`: `sys/…` paths are the operator's, `team/…` paths owners' and
//! operators'; a viewer sees the `team/` metadata and changes nothing.

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use xyn_core::XynError;
use xyn_secrets::{SecretPath, SecretValue};

use super::{Ui, UiResult, q};
use crate::AppState;
use crate::routes::secrets::{SecretMetaDto, allowed};

#[derive(Deserialize, Default)]
pub struct SecretsQ {
    prefix: Option<String>,
    flash: Option<String>,
}

/// `GET /ui/secrets?prefix=`.
pub async fn page(
    State(s): State<AppState>,
    ui: Ui,
    Query(f): Query<SecretsQ>,
) -> UiResult<Html<String>> {
    render(&s, &ui, q(&f.prefix), q(&f.flash).map(flash_text), None, "").await
}

fn flash_text(code: &str) -> String {
    match code {
        "set" => "Secret stored.",
        "removed" => "Secret removed.",
        _ => "",
    }
    .to_string()
}

/// The page, with `error` (and the path the refused form named) when a change was refused.
async fn render(
    s: &AppState,
    ui: &Ui,
    prefix: Option<&str>,
    flash: Option<String>,
    error: Option<String>,
    form_path: &str,
) -> UiResult<Html<String>> {
    let operator = ui.who.is_operator();
    let (items, store_error): (Vec<SecretMetaDto>, Option<String>) =
        match s.node.list_secrets(prefix.unwrap_or("")).await {
            Ok(list) => (
                list.into_iter()
                    .filter(|m| operator || m.path.starts_with("team/"))
                    .map(SecretMetaDto::from)
                    .collect(),
                None,
            ),
            Err(e) => (vec![], Some(e.message)),
        };
    ui.page(
        "secrets.html",
        "secrets",
        json!({"secrets": items, "store_error": store_error, "prefix": prefix,
            "flash": flash.filter(|f| !f.is_empty()), "error": error, "form_path": form_path,
            "operator": operator, "viewer": ui.who.role.as_str() == "viewer"}),
    )
}

#[derive(Deserialize, Default)]
pub struct SecretForm {
    /// `set` or `remove`.
    #[serde(default)]
    op: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    value: String,
}

/// `POST /ui/secrets`: sets a value (`op=set`) or removes a secret (`op=remove`), then shows the
/// list again; a refusal re-renders the page with the message (422/403) and without the value.
pub async fn change(
    State(s): State<AppState>,
    ui: Ui,
    Form(f): Form<SecretForm>,
) -> UiResult<Response> {
    let done = async {
        let path = SecretPath::parse(f.path.trim())?;
        allowed(&ui.who, &path)?;
        match f.op.as_str() {
            "set" => {
                let value = SecretValue::new(f.value)?;
                s.node.put_secret(&path, value, &ui.actor(), None).await?;
                Ok("set")
            }
            "remove" => {
                s.node.delete_secret(&path, &ui.actor(), None).await?;
                Ok("removed")
            }
            _ => Err(XynError::bad_request(
                xyn_core::codes::REQUEST_INVALID,
                "op must be set or remove",
            )),
        }
    }
    .await;
    match done {
        Ok(what) => Ok(ui.redirect(&format!("/ui/secrets?flash={what}"))),
        Err(e) if e.kind != xyn_core::ErrorKind::Internal => {
            let status = crate::error::status_of(e.kind);
            let page = render(&s, &ui, None, None, Some(e.message), f.path.trim()).await?;
            Ok((status, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
