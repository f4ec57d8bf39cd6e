//! The GraphQL schema of rule 27: Verified Orchestration's four approval operations under
//! their own names, types and field names, declared with async-graphql's derives. Each
//! resolver makes one engine call through the same path as the REST API, as the caller the
//! handler put in the request's data ([`Caller`]).
//!
//! These types are the GraphQL surface's wire types. They live here rather than in `proto`
//! because their shape is declared by async-graphql's macros, which `proto` (and so the CLI)
//! should not depend on.

use std::collections::BTreeMap;

use async_graphql::{
    Context, EmptySubscription, ErrorExtensions, ID, InputObject, Json, Object, Schema,
    SimpleObject,
};
use domain::{Actor, CallbackFormat, RequestState};
use proto::{CallbackBody, CreateRequestBody};
use serde::Deserialize;
use serde_json::Value;

use crate::{ApiError, AppState};

pub type ApprovalSchema = Schema<Query, Mutation, EmptySubscription>;

/// Who is calling, put in each request's data by the handler.
pub struct Caller {
    pub state: AppState,
    pub actor: Actor,
    /// The `Idempotency-Key` header, for `createApprovalRequest`.
    pub idempotency_key: Option<String>,
}

/// A field error with the code clients branch on in `extensions.code`.
fn field_error(message: impl Into<String>, code: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> Self {
        let code = match e.status.as_u16() {
            404 => "NOT_FOUND",
            403 => "FORBIDDEN",
            409 => "CONFLICT",
            401 => "UNAUTHENTICATED",
            400..=499 => "BAD_USER_INPUT",
            _ => "INTERNAL_SERVER_ERROR",
        };
        field_error(e.message, code)
    }
}

fn engine_error(e: engine::EngineError) -> async_graphql::Error {
    ApiError::from(e).into()
}

fn caller<'c>(ctx: &Context<'c>) -> async_graphql::Result<&'c Caller> {
    ctx.data::<Caller>()
}

pub struct Query;

#[Object]
impl Query {
    /// The outcome of a request: null while it is pending.
    async fn actioned_approval_data(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<ActionedApprovalData>> {
        let c = caller(ctx)?;
        let r = c
            .state
            .engine
            .request(&c.actor, &id)
            .await
            .map_err(engine_error)?;
        if r.state == RequestState::Pending {
            return Ok(None);
        }
        // The same body the callback carries, so that polling and the callback never differ
        // (rule 24).
        let body = engine::callback::outcome_body(&r, CallbackFormat::Graphql);
        serde_json::from_value(body)
            .map(Some)
            .map_err(|e| field_error(e.to_string(), "INTERNAL_SERVER_ERROR"))
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates an approval request. `callbackSecret` is returned here only.
    async fn create_approval_request(
        &self,
        ctx: &Context<'_>,
        request: ApprovalRequestInput,
    ) -> async_graphql::Result<ApprovalRequestCreated> {
        let c = caller(ctx)?;
        let created = crate::routes::create(
            &c.state,
            &c.actor,
            request.into_body(),
            c.idempotency_key.clone(),
            CallbackFormat::Graphql,
        )
        .await?;
        let public_url = &c.state.engine.config().server.public_url;
        Ok(ApprovalRequestCreated {
            portal_url: crate::convert::portal_url(public_url, &created.request.id),
            id: ID(created.request.id),
            callback_secret: created.callback_secret,
        })
    }

    /// Changes the purpose or reason of a pending request (its creator only).
    async fn update_approval_request(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateApprovalRequestInput,
    ) -> async_graphql::Result<bool> {
        let c = caller(ctx)?;
        c.state
            .engine
            .update_request(&c.actor, &id, input.purpose, input.reason)
            .await
            .map_err(engine_error)?;
        Ok(true)
    }

    /// Cancels a pending request (its creator only).
    async fn cancel_approval_request(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<bool> {
        let c = caller(ctx)?;
        c.state
            .engine
            .cancel(&c.actor, &id, None)
            .await
            .map_err(engine_error)?;
        Ok(true)
    }
}

/// A new approval request. `requester`, `reason`, `duration` and `fields` are Countersign's
/// additions.
#[derive(InputObject)]
pub struct ApprovalRequestInput {
    /// The resource name in the configuration.
    request_type: String,
    /// Markdown; its first line stands in for the reason.
    purpose: Option<String>,
    reference_url: Option<String>,
    correlation_id: Option<String>,
    request_data: Option<Json<Value>>,
    callback: Option<CallbackInput>,
    presentation_request_input: Option<PresentationRequestInput>,
    /// The person the app asks for (a configured user).
    requester: Option<String>,
    reason: Option<String>,
    /// 30m, 1h, …
    duration: Option<String>,
    /// The resource's typed fields.
    fields: Option<Json<BTreeMap<String, Value>>>,
}

impl ApprovalRequestInput {
    /// The REST body it stands for: requested credential types are groups (or `admin`) every
    /// reviewer must hold.
    fn into_body(self) -> CreateRequestBody {
        CreateRequestBody {
            resource: self.request_type,
            reason: self.reason.unwrap_or_default(),
            duration: self.duration,
            fields: self.fields.map(|f| f.0).unwrap_or_default(),
            start_at: None,
            purpose: self.purpose,
            reference_url: self.reference_url,
            correlation_id: self.correlation_id,
            request_data: self.request_data.map(|d| d.0).filter(|v| !v.is_null()),
            requester: self.requester,
            callback: self.callback.map(|c| CallbackBody { url: c.url }),
            reviewer_credentials: self
                .presentation_request_input
                .map(|p| {
                    p.requested_credentials
                        .into_iter()
                        .map(|c| c.r#type)
                        .collect()
                })
                .unwrap_or_default(),
            // Applications never break glass (rule 39).
            break_glass: false,
            // Action approvals (issue 18) are asked through REST and MCP.
            action: None,
        }
    }
}

#[derive(InputObject)]
pub struct CallbackInput {
    url: String,
}

#[derive(InputObject)]
pub struct PresentationRequestInput {
    requested_credentials: Vec<RequestedCredential>,
}

/// A credential every reviewer must hold: the name of a group, or `admin`.
#[derive(InputObject)]
pub struct RequestedCredential {
    r#type: String,
}

#[derive(InputObject)]
pub struct UpdateApprovalRequestInput {
    purpose: Option<String>,
    reason: Option<String>,
}

#[derive(SimpleObject)]
pub struct ApprovalRequestCreated {
    id: ID,
    /// The page where reviewers decide.
    portal_url: String,
    /// The Standard Webhooks key callbacks are signed with (`whsec_…`).
    callback_secret: Option<String>,
}

/// A request's outcome, as its callback carries it.
#[derive(SimpleObject, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionedApprovalData {
    approval_request_id: ID,
    /// approved, rejected, cancelled or expired.
    status: String,
    actioned_comment: Option<String>,
    /// RFC 3339.
    actioned_at: Option<String>,
    /// Null for an expiry or a policy decision.
    actioned_by: Option<ActionedBy>,
    correlation_id: Option<String>,
    request_data: Option<Json<Value>>,
}

#[derive(SimpleObject, Deserialize)]
pub struct ActionedBy {
    id: ID,
    name: String,
}
