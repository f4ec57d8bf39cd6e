//! The HTTP API: an axum router over the engine.
//!
//! [`app`] builds the whole router from an [`AppState`]; handlers authenticate with [`Auth`],
//! parse the wire types of `proto`, call one engine service and convert the result back.
//! Errors are mapped to HTTP in one place ([`error::ApiError`]). The OpenAPI document is
//! generated from the same handler annotations that mount the routes, so it cannot drift.
//!
//! This crate owns no state and makes no decisions: authorisation lives in the engine and the
//! domain.

pub mod auth;
pub mod convert;
pub mod cursor;
pub mod error;
mod graphql;
pub mod mcp;
pub mod metrics;
mod routes;
mod runs;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engine::Engine;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

pub use auth::{Auth, TokenCache};
pub use error::ApiError;

/// The largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub tokens: Arc<TokenCache>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>) -> AppState {
        AppState {
            engine,
            tokens: Arc::default(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Countersign", description = "Approval engine for just-in-time access and gated actions."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// Adds the answers that come from the extractors every handler shares rather than from the
/// handler itself, so that no operation can forget them (applied in [`app`], once the routes
/// are in the document): 401 from [`Auth`] (every `/v1`
/// handler takes it), 400, 413 and 415 from a JSON body, and 400 from query parameters.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let mut add = |status: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description).into());
                };
                let has_body = op.request_body.is_some();
                let has_query = op.parameters.iter().flatten().any(|p| {
                    matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Header))
                });
                if has_body {
                    add(
                        "400",
                        "The body is not JSON, or not of the expected shape (a missing or unknown key, a wrong JSON type)",
                    );
                    add("413", "The body is larger than 64 KiB");
                    add(
                        "415",
                        "The body was not sent with `Content-Type: application/json`",
                    );
                } else if has_query {
                    add(
                        "400",
                        "An unknown query parameter, or a value the parameter does not accept",
                    );
                }
                add(
                    "401",
                    "No token, a malformed `Authorization` header, or an unknown token",
                );
            }
        }
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of `/v1`, as `GET /v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    finish(routes::router().split_for_parts().1)
}

fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    utoipa::Modify::modify(&CommonResponses, &mut doc);
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The router and the OpenAPI document describing it.
pub fn app(state: AppState) -> Router {
    let (v1, doc) = routes::router().split_for_parts();
    let doc = Arc::new(finish(doc).to_json().unwrap_or_else(|_| "{}".into()));
    Router::new()
        .merge(v1)
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        doc.as_str().to_owned(),
                    )
                }
            }),
        )
        .merge(graphql::router())
        .merge(mcp::router(state.clone()))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::text))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(refuse_declared_oversize))
        .with_state(state)
}

/// JSON with object keys sorted at every level, so that two bodies that differ only in key
/// order or spacing compare equal (rule 25).
pub(crate) fn canonical_json(v: &serde_json::Value) -> String {
    domain::action::canonical_json(v)
}

fn openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
}

/// A body whose declared `Content-Length` is over [`MAX_BODY`] is refused before any of it
/// is read, so that the client is answered at once rather than after sending it (or never,
/// when it declares more than it sends).
async fn refuse_declared_oversize(req: axum::extract::Request, next: Next) -> Response {
    if declared_length(req.headers()).is_some_and(|n| n > MAX_BODY as u64) {
        return ApiError::too_large().into_response();
    }
    next.run(req).await
}

/// The `Content-Length` a request declares (hyper has already refused a malformed one).
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn healthz() -> impl IntoResponse {
    axum::Json(proto::Health {
        status: "ok".into(),
    })
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.engine.store().ping().await {
        Ok(()) => axum::Json(proto::Health {
            status: "ready".into(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database does not answer",
            )
            .into_response()
        }
    }
}
