//! `POST /graphql` (rule 27): the Verified Orchestration approval operations under their own
//! names and field names, so that an existing client switches by changing its URL.
//!
//! The schema ([`schema`]) is executed by async-graphql, which validates the whole document
//! against the schema before any resolver runs: a document with any error executes nothing.
//! Before the library sees a document, [`bound`] refuses what would make validation itself
//! expensive (nesting, fields written, and fields once fragments are spread, counted without
//! spreading them); the schema then limits depth and complexity. Introspection is on, and the
//! schema's SDL is served at `GET /graphql/schema.graphql`.
//!
//! Statuses: a request that is not a GraphQL request (no token, not JSON, a document that does
//! not parse, is over a limit, or fails validation) gets 400 (401 without a token) and
//! `errors` only; a document that executes answers 200, with field errors in `errors` carrying
//! `extensions.code`.

mod bound;
mod positions;
pub mod schema;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_graphql::extensions::{
    Extension as GraphqlExtension, ExtensionContext, ExtensionFactory, NextExecute,
};
use async_graphql::{EmptySubscription, Schema, ServerError, Variables};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use proto::GraphqlRequest;
use serde_json::{Value, json};

use crate::{ApiError, AppState, Auth};
use schema::{ApprovalSchema, Caller, Mutation, Query};

/// The deepest selection a document may make (the introspection query a client such as
/// graphql-core sends is 13 deep).
pub const MAX_DEPTH: usize = 16;
/// The largest complexity (one per field, fragments spread) a document may have; the
/// introspection query is about 200.
pub const MAX_COMPLEXITY: usize = 500;

/// The schema with its limits.
pub fn schema() -> ApprovalSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(bound::MAX_NESTING)
        .limit_directives(8)
        .extension(Executed)
        .finish()
}

/// `POST /graphql` and `GET /graphql/schema.graphql`, with the schema built once.
pub fn router() -> Router<AppState> {
    let schema = schema();
    let sdl = schema.sdl();
    let gql = Gql {
        positions: positions::Positions::from_sdl(&sdl),
        sdl,
        schema,
    };
    Router::new()
        .route("/graphql", post(handler))
        .route("/graphql/schema.graphql", get(schema_sdl))
        .layer(Extension(Arc::new(gql)))
}

/// The schema, its SDL, and the input positions read from it.
struct Gql {
    schema: ApprovalSchema,
    sdl: String,
    positions: positions::Positions,
}

async fn schema_sdl(Extension(gql): Extension<Arc<Gql>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        gql.sdl.clone(),
    )
        .into_response()
}

/// A request-level failure: `errors` only, no `data`.
fn refuse(status: StatusCode, message: impl Into<String>, code: &str) -> Response {
    let e = json!({ "message": message.into(), "extensions": { "code": code } });
    (status, Json(json!({ "errors": [e] }))).into_response()
}

async fn handler(
    State(state): State<AppState>,
    Extension(gql): Extension<Arc<Gql>>,
    auth: Result<Auth, ApiError>,
    headers: HeaderMap,
    body: Result<Json<GraphqlRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let actor = match auth {
        Ok(Auth(a)) => a,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.message, "UNAUTHENTICATED"),
    };
    let body = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            let e = ApiError::from(e);
            return refuse(e.status, e.message, "BAD_REQUEST");
        }
    };
    let idempotency_key = match crate::routes::idempotency_key(&headers) {
        Ok(k) => k,
        Err(e) => return refuse(e.status, e.message, "BAD_REQUEST"),
    };
    let doc = match bound::parse(&body.query) {
        Ok(d) => d,
        Err(bound::Refused::Parse(msg)) => {
            return refuse(StatusCode::BAD_REQUEST, msg, "GRAPHQL_PARSE_FAILED");
        }
        Err(bound::Refused::Limit(msg)) => {
            return refuse(StatusCode::BAD_REQUEST, msg, "GRAPHQL_VALIDATION_FAILED");
        }
    };
    let variables = body.variables.unwrap_or_default();
    if let Some(msg) = bound::missing_variable(&doc, body.operation_name.as_deref(), &variables) {
        return refuse(StatusCode::BAD_REQUEST, msg, "GRAPHQL_VALIDATION_FAILED");
    }
    if let Some(msg) = gql.positions.check(&doc) {
        return refuse(StatusCode::BAD_REQUEST, msg, "GRAPHQL_VALIDATION_FAILED");
    }
    let executed = Arc::new(AtomicBool::new(false));
    let mut request = async_graphql::Request::new(body.query)
        .variables(Variables::from_json(Value::Object(variables)))
        .data(Caller {
            state,
            actor,
            idempotency_key,
        })
        .data(ExecutionStarted(executed.clone()));
    if let Some(name) = body.operation_name {
        request = request.operation_name(name);
    }
    request.set_parsed_query(doc);
    let response = gql.schema.execute(request).await;
    if !executed.load(Ordering::SeqCst) {
        // Refused before execution (validation, limits, an unknown operation): nothing ran.
        return invalid(response.errors);
    }
    let mut body = serde_json::to_value(&response).unwrap_or_else(|_| json!({}));
    // Every error of the engine carries a code; what async-graphql raises itself while
    // executing (an argument that does not coerce) is the caller's input.
    if let Some(Value::Array(errors)) = body.get_mut("errors") {
        for e in errors {
            if e.pointer("/extensions/code").is_none() {
                e["extensions"] = json!({ "code": "BAD_USER_INPUT" });
            }
        }
    }
    Json(body).into_response()
}

/// 400 with the validation errors, each coded `GRAPHQL_VALIDATION_FAILED`.
fn invalid(errors: Vec<ServerError>) -> Response {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|e| {
            let mut v = serde_json::to_value(&e).unwrap_or_else(|_| json!({}));
            v["extensions"] = json!({ "code": "GRAPHQL_VALIDATION_FAILED" });
            v
        })
        .collect();
    (StatusCode::BAD_REQUEST, Json(json!({ "errors": errors }))).into_response()
}

/// Set by [`Executed`] once a document has passed validation and starts executing.
struct ExecutionStarted(Arc<AtomicBool>);

/// Marks the request's [`ExecutionStarted`]: async-graphql calls an extension's `execute` only
/// for a document that parsed and validated, which is how the handler tells a refused
/// document (400) from an executed one (200).
struct Executed;

impl ExtensionFactory for Executed {
    fn create(&self) -> Arc<dyn GraphqlExtension> {
        Arc::new(Executed)
    }
}

#[async_graphql::async_trait::async_trait]
impl GraphqlExtension for Executed {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        if let Some(started) = ctx.data_opt::<ExecutionStarted>() {
            started.0.store(true, Ordering::SeqCst);
        }
        next.run(ctx, operation_name).await
    }
}
