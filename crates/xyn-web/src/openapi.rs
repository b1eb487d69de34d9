//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` descriptions and
//! the DTOs' `ToSchema` derives. Errors every operation can answer (bad request, auth,
//! limits, timeouts, unavailable store) are added to each operation here, so the document
//! lists every status the edge can produce.

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use crate::dto::ErrorResponse;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Xyn API",
        description = "Events in, runs of blueprints out. Errors use one shape: `{\"error\":{\"code\",\"message\",\"details\"},\"correlation_id\"}`. Lists are cursor-paginated (`limit`, `cursor` → `next_cursor`). Send `X-Correlation-Id` to trace a request; it is echoed and carried into events. Open on localhost; with tokens configured every route needs `Authorization: Bearer` (or the UI session cookie).",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorResponse)),
    tags(
        (name = "health"), (name = "events"), (name = "runs"), (name = "blueprints"),
        (name = "drafts"), (name = "artifacts"), (name = "footprints"), (name = "audit"),
        (name = "packs", description = "Signed bundles of blueprints and actions"),
        (name = "secrets", description = "The encrypted secret store: metadata out, values in only"),
        (name = "hooks", description = "Webhook intake; authenticated by the source's secret"),
        (name = "internal", description = "Not stable; operator-only")
    )
)]
struct ApiDoc;

/// Errors any operation may answer, with their reasons.
const COMMON: &[(&str, &str)] = &[
    (
        "400",
        "Malformed request: bad JSON, id, cursor or parameter",
    ),
    ("401", "Authentication required or token invalid"),
    ("403", "Authenticated but not allowed (role, CSRF)"),
    ("404", "Not found"),
    ("408", "The request took too long"),
    ("413", "The body is over the limit"),
    (
        "422",
        "Well-formed but refused: wrong types, unknown fields (named)",
    ),
    ("431", "The request headers are over the limit"),
    (
        "500",
        "Internal error (details are in the node's log under the correlation id)",
    ),
    ("503", "The store is unavailable; try again"),
];

fn add_common(op: &mut Operation, write: bool) {
    let mut add = |code: &str, why: &str| {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(why)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorResponse")))
                                .build(),
                        )
                        .build(),
                )
            });
    };
    for (code, why) in COMMON {
        add(code, why);
    }
    if write {
        add(
            "409",
            "Conflict: the target changed meanwhile or is in the wrong state",
        );
        add("415", "The body must be JSON");
    }
}

/// The document as a value.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, api) = crate::routes::api().split_for_parts();
    let mut doc = ApiDoc::openapi();
    doc.merge(api);
    // A secret's path keeps its slashes in the URL (the router matches the rest of the path);
    // OpenAPI names that parameter plainly.
    if let Some(item) = doc.paths.paths.remove("/api/v1/secrets/{*path}") {
        doc.paths
            .paths
            .insert("/api/v1/secrets/{path}".into(), item);
    }
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.head].into_iter().flatten() {
            add_common(op, false);
        }
        for op in [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            add_common(op, true);
        }
    }
    // A download answers with the artifact's own media type: any bytes, no schema.
    if let Some(op) = doc
        .paths
        .paths
        .get_mut("/api/v1/artifacts/{artifact_id}/download")
        .and_then(|i| i.get.as_mut())
    {
        op.responses.responses.insert(
            "200".into(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("The bytes, with the artifact's own content type")
                    .content("*/*", ContentBuilder::new().build())
                    .build(),
            ),
        );
    }
    let comps = doc.components.get_or_insert_with(Default::default);
    comps.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    comps.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
            crate::auth::SESSION_COOKIE,
        ))),
    );
    doc.security = Some(vec![
        utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new()),
        utoipa::openapi::security::SecurityRequirement::new("session", Vec::<String>::new()),
        utoipa::openapi::security::SecurityRequirement::default(),
    ]);
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The document as JSON text.
pub fn document_json() -> String {
    document().to_pretty_json().unwrap_or_else(|_| "{}".into())
}
