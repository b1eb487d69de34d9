//! The API route table (`/api/v1`, `/api/internal`). One file per area under `routes/`; every
//! handler carries its OpenAPI description (`#[utoipa::path]`), so the document at
//! `/api/v1/openapi.json` is generated from the code that answers.

pub mod approvals;
pub mod artifacts;
pub mod audit;
pub mod blueprints;
pub mod drafts;
pub mod events;
pub mod footprints;
pub mod health;
pub mod internal;
pub mod packs;
pub mod rerun;
pub mod runs;
pub mod search;
pub mod secrets;

use axum::Router;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use xyn_core::{XynError, codes};

use crate::AppState;
use crate::error::{ApiError, status_error};

/// The documented API routes, with their OpenAPI description.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(events::list, events::emit))
        .routes(routes!(events::stream))
        .routes(routes!(events::get_one))
        .routes(routes!(runs::list, runs::create))
        .routes(routes!(runs::get_one))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::steps))
        .routes(routes!(runs::step))
        .routes(routes!(runs::approve))
        .routes(routes!(search::get))
        .routes(routes!(runs::reject))
        .routes(routes!(approvals::list))
        .routes(routes!(rerun::retry))
        .routes(routes!(rerun::rerun))
        .routes(routes!(blueprints::list, blueprints::apply))
        .routes(routes!(blueprints::validate))
        .routes(routes!(blueprints::get_one))
        .routes(routes!(blueprints::versions))
        .routes(routes!(blueprints::disable))
        .routes(routes!(blueprints::enable))
        .routes(routes!(drafts::list, drafts::create))
        .routes(routes!(drafts::get_one, drafts::update))
        .routes(routes!(drafts::validate))
        .routes(routes!(drafts::promote))
        .routes(routes!(artifacts::list, artifacts::create))
        .routes(routes!(artifacts::get_one))
        .routes(routes!(artifacts::download))
        .routes(routes!(footprints::list))
        .routes(routes!(footprints::rollup))
        .routes(routes!(audit::verify))
        .routes(routes!(secrets::list))
        .routes(routes!(secrets::put, secrets::remove))
        .routes(routes!(packs::list, packs::install))
        .routes(routes!(packs::get_one, packs::remove))
        .routes(routes!(internal::stats))
        .routes(routes!(internal::execute))
        .routes(routes!(internal::workcells))
        .routes(routes!(internal::create_workcell))
        .routes(routes!(internal::destroy_workcell))
        .routes(routes!(crate::hooks::intake))
}

/// The API router (the OpenAPI document is served from it too).
pub fn router() -> Router<AppState> {
    let (router, _) = api().split_for_parts();
    router
        .route("/api/v1/openapi.json", axum::routing::get(health::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found(
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    principal: Option<axum::Extension<crate::auth::Principal>>,
) -> axum::response::Response {
    // A browser that lands outside the API gets the UI's page, with its navigation.
    if !uri.path().starts_with("/api/") && crate::ui::wants_html(&headers) {
        return crate::ui::UiError::not_found("There is no page at this address.")
            .page(principal.as_ref().map(|p| &p.0));
    }
    ApiError::from(XynError::not_found(
        codes::ROUTE_NOT_FOUND,
        format!("no route for {}", uri.path()),
    ))
    .into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> impl IntoResponse {
    status_error(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
