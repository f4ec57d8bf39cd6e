//! The `/v1` handlers. Each one authenticates, parses, calls one engine service, converts.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::{Decision, Principal, RequestState, ReviewInput, Scope, Span};
use engine::{CreateRequest, GrantQuery, RequestQuery};
use proto::*;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::convert;
use crate::cursor;
use crate::{ApiError, AppState, Auth};

type ApiResult<T> = Result<T, ApiError>;
pub(crate) type Body<T> = Result<Json<T>, JsonRejection>;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    crate::openapi_router()
        .routes(routes!(list_resources))
        .routes(routes!(field_options))
        .routes(routes!(create_request, list_requests))
        .routes(routes!(get_request, update_request))
        .routes(routes!(explain_request))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
        .routes(routes!(list_notifications))
        .routes(routes!(resend_notification))
        .routes(routes!(simulate))
        .routes(routes!(review_request))
        .routes(routes!(cancel_request))
        .routes(routes!(follow_up_request))
        .routes(routes!(comment_request))
        .routes(routes!(claim_action))
        .routes(routes!(assign_request))
        .routes(routes!(list_grants))
        .routes(routes!(get_grant))
        .routes(routes!(revoke_grant))
        .routes(routes!(extend_grant))
        .routes(routes!(audit))
        .routes(routes!(audit_verify))
        .merge(crate::runs::router())
}

fn span(text: &str) -> ApiResult<Span> {
    Span::parse(text).map_err(|e| ApiError::invalid(e.to_string()))
}

/// Attaches the request's grant to its view when the caller may see that grant (a request
/// answered by another resource's workflow grant shows only its id to other reviewers).
pub(crate) async fn with_grant(
    state: &AppState,
    actor: &domain::Actor,
    r: &domain::Request,
) -> ApiResult<RequestView> {
    let grant = match &r.grant {
        Some(id) => state
            .engine
            .store()
            .grant(id)
            .await
            .map_err(engine::EngineError::from)?
            .filter(|g| state.engine.may_see_grant(actor, g)),
        None => None,
    };
    Ok(convert::request(
        r,
        grant.as_ref(),
        &state.engine.config().server.public_url,
    ))
}

/// The catalog the caller may request, with the people who could review each step.
#[utoipa::path(get, path = "/v1/resources", tag = "resources",
    responses((status = 200, description = "Every configured resource, sorted by name", body = ResourceList)))]
async fn list_resources(State(state): State<AppState>, Auth(actor): Auth) -> Json<ResourceList> {
    let config = state.engine.config();
    Json(ResourceList {
        resources: config
            .resources
            .values()
            .map(|r| convert::resource(r, &config.directory, &actor.id))
            .collect(),
    })
}

/// The choices of a field: an enum's allowed values, or what its `options_from` source
/// answers (fetched server-side through the SSRF guard and cached briefly).
#[utoipa::path(get, path = "/v1/resources/{name}/fields/{field}/options", tag = "resources",
    params(("name" = String, Path, description = "resource"), ("field" = String, Path, description = "field")),
    responses((status = 200, description = "The field's choices", body = FieldOptionList),
        (status = 404, description = "No such resource or field, or a field without choices", body = ErrorBody),
        (status = 502, description = "The field's `options_from` source failed", body = ErrorBody)))]
async fn field_options(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path((name, field)): Path<(String, String)>,
) -> ApiResult<Json<FieldOptionList>> {
    let options = state.engine.field_options(&name, &field).await?;
    Ok(Json(FieldOptionList {
        options: options
            .into_iter()
            .map(|o| FieldOptionView {
                value: o.value,
                label: o.label,
            })
            .collect(),
    }))
}

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Reads the `Idempotency-Key` header: printable ASCII, at most 255 characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .filter(|k| k.chars().all(|c| c.is_ascii_graphic() || c == ' '))
        .ok_or_else(|| {
            ApiError::malformed(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

/// Create a request. With `Idempotency-Key`, a repeat with the same body gets the first
/// response again (with `Idempotent-Replayed: true`); another body is refused with 422, and a
/// repeat while the first is still being created with 409.
#[utoipa::path(post, path = "/v1/requests", tag = "requests", request_body = CreateRequestBody,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[ -~]*[!-~][ -~]*$", max_length = 255,
        description = "Makes retries safe: the same key and body return the first response for 24 hours (1 to 255 printable ASCII characters)")),
    responses((status = 201, description = "The request, created (or, with a repeated `Idempotency-Key`, the first response again)", body = RequestView),
        (status = 403, description = "A person naming another requester, or an application without the `request_approval` role", body = ErrorBody),
        (status = 409, description = "A request with the same `Idempotency-Key` is still being created", body = ErrorBody),
        (status = 422, description = "The request breaks a rule: unknown resource, missing reason, bad duration or field, refused callback URL, an `Idempotency-Key` used with another body, a workflow nobody but the requester could complete", body = ErrorBody),
        (status = 502, description = "The options of an `options_from` field could not be fetched to check its value", body = ErrorBody)))]
async fn create_request(
    State(state): State<AppState>,
    Auth(actor): Auth,
    headers: HeaderMap,
    body: Body<CreateRequestBody>,
) -> ApiResult<Response> {
    let Json(body) = body?;
    let key = idempotency_key(&headers)?;
    let created = create(&state, &actor, body, key, domain::CallbackFormat::Rest).await?;
    let mut view = with_grant(&state, &actor, &created.request).await?;
    view.callback_secret = created.callback_secret;
    let mut res = (StatusCode::CREATED, Json(view)).into_response();
    if created.replay {
        res.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(res)
}

/// Creates a request from its wire body: the one path for REST and GraphQL.
pub(crate) async fn create(
    state: &AppState,
    actor: &domain::Actor,
    body: CreateRequestBody,
    idempotency_key: Option<String>,
    format: domain::CallbackFormat,
) -> ApiResult<engine::Created> {
    let idempotency = match idempotency_key {
        Some(key) => {
            let value = serde_json::to_value(&body).unwrap_or_default();
            let body_hash = store::chain::sha256_hex(crate::canonical_json(&value).as_bytes());
            Some(engine::IdempotencyKey { key, body_hash })
        }
        None => None,
    };
    let duration = body.duration.as_deref().map(span).transpose()?;
    let start_at = body
        .start_at
        .as_deref()
        .map(|t| {
            convert::parse_ts(t)
                .ok_or_else(|| ApiError::invalid(format!("start_at {t:?} is not an RFC 3339 time")))
        })
        .transpose()?;
    let fields = body
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), convert::input(v)))
        .collect();
    state
        .engine
        .create_request(
            actor,
            CreateRequest {
                resource: body.resource,
                reason: body.reason,
                duration,
                fields,
                start_at,
                requester: body.requester,
                context: domain::Context {
                    created_by: None,
                    purpose: body.purpose,
                    reference_url: body.reference_url,
                    correlation_id: body.correlation_id,
                    request_data: body.request_data,
                    callback: body
                        .callback
                        .map(|c| domain::Callback { url: c.url, format }),
                    credentials: body.reviewer_credentials,
                },
                idempotency,
                run: None,
                break_glass: body.break_glass,
                action: body.action.map(|a| domain::ActionInput {
                    tool: a.tool,
                    arguments: a.arguments,
                }),
            },
        )
        .await
        .map_err(ApiError::from)
}

/// A request's outcome callback and every attempt to deliver it; its creator or an admin.
#[utoipa::path(get, path = "/v1/requests/{id}/deliveries", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "The request's callback delivery, if it has one", body = DeliveryList),
        (status = 403, description = "Neither the request's creator nor an admin", body = ErrorBody),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody)))]
async fn list_deliveries(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryList>> {
    let list = state.engine.deliveries(&actor, &id).await?;
    Ok(Json(DeliveryList {
        deliveries: list.iter().map(convert::delivery).collect(),
    }))
}

/// Sends a request's callback again, with the same `webhook-id` and a fresh retry window;
/// its creator or an admin. 409 when there is nothing to deliver yet.
#[utoipa::path(post, path = "/v1/requests/{id}/deliveries/redeliver", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "The delivery, rearmed", body = DeliveryList),
        (status = 403, description = "Neither the request's creator nor an admin", body = ErrorBody),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "The request has no delivery yet", body = ErrorBody)))]
async fn redeliver(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryList>> {
    let list = state.engine.redeliver(&actor, &id).await?;
    Ok(Json(DeliveryList {
        deliveries: list.iter().map(convert::delivery).collect(),
    }))
}

/// What was sent about a request, to whom, on which channel, and every attempt (rule 32);
/// anyone who may see the request.
#[utoipa::path(get, path = "/v1/requests/{id}/notifications", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "The request's notifications, oldest first", body = NotificationList),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody)))]
async fn list_notifications(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<NotificationList>> {
    let list = state.engine.notifications(&actor, &id).await?;
    Ok(Json(NotificationList {
        notifications: list.iter().map(convert::notification).collect(),
    }))
}

/// Sends a notification again, with the same id and a fresh retry window; admins only.
#[utoipa::path(post, path = "/v1/requests/{id}/notifications/{notification}/resend", tag = "requests",
    params(("id" = String, Path), ("notification" = String, Path)),
    responses((status = 200, description = "The notification, rearmed", body = NotificationView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such request or notification, or the caller may not see it", body = ErrorBody)))]
async fn resend_notification(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path((id, notification)): Path<(String, String)>,
) -> ApiResult<Json<NotificationView>> {
    let d = state
        .engine
        .resend_notification(&actor, &id, &notification)
        .await?;
    Ok(Json(convert::notification(&d)))
}

/// The one value `reviewable_by` accepts.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum Me {
    Me,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListRequestsQuery {
    /// Only requests in this state.
    #[param(inline, value_type = Option<proto::RequestState>)]
    state: Option<String>,
    /// Only requests for this resource.
    resource: Option<String>,
    /// Only requests by this requester.
    requester: Option<String>,
    /// `me`: only requests the caller may decide now.
    #[param(inline, value_type = Option<Me>)]
    reviewable_by: Option<String>,
    /// 100 by default; larger values count as 500, and 0 as 1.
    // Any u32 is accepted (and clamped), so the schema says so rather than int32's range.
    #[param(format = Int64, minimum = 0, maximum = 4294967295.0)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page, to read the next one. A cursor is bound to
    /// the caller and to the filters it was given out with; any other is 400.
    #[param(schema_with = proto::schema::cursor)]
    cursor: Option<String>,
}

/// Requests the caller may see, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/requests", tag = "requests", params(ListRequestsQuery),
    responses((status = 200, description = "The requests, newest first", body = RequestList)))]
async fn list_requests(
    State(state): State<AppState>,
    Auth(actor): Auth,
    q: Result<Query<ListRequestsQuery>, QueryRejection>,
) -> ApiResult<Json<RequestList>> {
    let Query(q) = q?;
    let st = match q.state.as_deref() {
        Some(s) => Some(RequestState::parse(s).ok_or_else(|| {
            ApiError::malformed(format!(
                "unknown state {s:?}: use pending, approved, denied, cancelled or expired"
            ))
        })?),
        None => None,
    };
    let reviewable_by_me = match q.reviewable_by.as_deref() {
        None => false,
        Some("me") => true,
        Some(other) => {
            return Err(ApiError::malformed(format!(
                "reviewable_by takes only \"me\", not {other:?}"
            )));
        }
    };
    let scope = cursor::Scope::new("requests", &actor.id)
        .filter("state", q.state.as_deref())
        .filter("resource", q.resource.as_deref())
        .filter("requester", q.requester.as_deref())
        .filter("reviewable_by", q.reviewable_by.as_deref());
    let after = q.cursor.as_deref().map(|c| scope.position(c)).transpose()?;
    let page = state
        .engine
        .list_requests(
            &actor,
            RequestQuery {
                state: st,
                resource: q.resource.clone(),
                requester: q.requester.clone(),
                reviewable_by_me,
                limit: q.limit.unwrap_or(100),
                after,
                ..RequestQuery::default()
            },
        )
        .await?;
    let public_url = state.engine.config().server.public_url.clone();
    Ok(Json(RequestList {
        requests: page
            .items
            .iter()
            .map(|r| convert::request(r, None, &public_url))
            .collect(),
        next_cursor: page.next.as_ref().map(|p| scope.position_cursor(p)),
    }))
}

/// One request: state, steps with their reviews, comments, grant and outcome.
#[utoipa::path(get, path = "/v1/requests/{id}", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "The request", body = RequestView),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody)))]
async fn get_request(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestView>> {
    let r = state.engine.request(&actor, &id).await?;
    Ok(Json(with_grant(&state, &actor, &r).await?))
}

/// Update the purpose or reason of a pending request (its creator only).
#[utoipa::path(patch, path = "/v1/requests/{id}", tag = "requests", params(("id" = String, Path)),
    request_body = UpdateRequestBody,
    responses((status = 200, description = "The updated request", body = RequestView),
        (status = 403, description = "The caller did not create the request", body = ErrorBody),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "The request is decided or its `pending_until` has passed", body = ErrorBody),
        (status = 422, description = "Nothing to update, or an empty or invalid text", body = ErrorBody)))]
async fn update_request(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<UpdateRequestBody>,
) -> ApiResult<Json<RequestView>> {
    let Json(body) = body?;
    let r = state
        .engine
        .update_request(&actor, &id, body.purpose, body.reason)
        .await?;
    Ok(Json(with_grant(&state, &actor, &r).await?))
}

/// The decision trace (rule 31): every policy evaluation, each step skipped, auto-decided or
/// routed to whom.
#[utoipa::path(get, path = "/v1/requests/{id}/explain", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "The decision trace", body = ExplainView),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody)))]
async fn explain_request(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ExplainView>> {
    let e = state.engine.explain(&actor, &id).await?;
    Ok(Json(convert::explanation(&e)))
}

/// What would happen to such a request: deny and warn messages, an auto-decision, each step
/// skipped or its reviewers. Nothing is created.
#[utoipa::path(post, path = "/v1/simulate", tag = "requests", request_body = SimulateBody,
    responses((status = 200, description = "What would happen; nothing is stored", body = SimulationView),
        (status = 403, description = "Naming another requester without being an admin", body = ErrorBody),
        (status = 422, description = "Unknown resource or requester, a bad duration or field, a workflow nobody but the requester could complete", body = ErrorBody),
        (status = 502, description = "The options of an `options_from` field could not be fetched to check its value", body = ErrorBody)))]
async fn simulate(
    State(state): State<AppState>,
    Auth(actor): Auth,
    body: Body<SimulateBody>,
) -> ApiResult<Json<SimulationView>> {
    let Json(body) = body?;
    let duration = body.duration.as_deref().map(span).transpose()?;
    let fields = body
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), convert::input(v)))
        .collect();
    let sim = state
        .engine
        .simulate(
            &actor,
            body.requester,
            CreateRequest {
                resource: body.resource,
                reason: body.reason,
                duration,
                fields,
                start_at: None,
                ..Default::default()
            },
        )
        .await?;
    Ok(Json(convert::simulation(&sim)))
}

/// Approve or deny the current step.
#[utoipa::path(post, path = "/v1/requests/{id}/reviews", tag = "requests", params(("id" = String, Path)),
    request_body = ReviewBody,
    responses((status = 200, description = "The request after the review", body = RequestView),
        (status = 403, description = "Reviewing one's own request, or not a reviewer of the current step", body = ErrorBody),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "The request is decided or expired, or the caller has already decided on it", body = ErrorBody),
        (status = 422, description = "An invalid comment, a duration longer than requested or outside the allowed set, a workflow scope without `part_of`, a deny with a duration or scope", body = ErrorBody)))]
async fn review_request(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<ReviewBody>,
) -> ApiResult<Json<RequestView>> {
    let Json(body) = body?;
    let decision = match body.decision.as_str() {
        "approve" => Decision::Approve,
        "deny" => Decision::Deny,
        other => {
            return Err(ApiError::invalid(format!(
                "decision must be \"approve\" or \"deny\", not {other:?}"
            )));
        }
    };
    let scope = match body.scope.as_deref() {
        None | Some("resource") => Scope::Resource,
        Some("workflow") => Scope::Workflow,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "scope must be \"resource\" or \"workflow\", not {other:?}"
            )));
        }
    };
    let duration = body.duration.as_deref().map(span).transpose()?;
    let r = state
        .engine
        .review(
            &actor,
            &id,
            ReviewInput {
                decision,
                comment: body.comment,
                duration,
                scope,
            },
        )
        .await?;
    Ok(Json(with_grant(&state, &actor, &r).await?))
}

/// Cancel a pending request (the requester, or an admin with a reason).
#[utoipa::path(post, path = "/v1/requests/{id}/cancel", tag = "requests", params(("id" = String, Path)),
    request_body = ReasonBody,
    responses((status = 200, description = "The cancelled request", body = RequestView),
        (status = 403, description = "Neither the requester, the creating application nor an admin", body = ErrorBody),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "The request is decided or its `pending_until` has passed", body = ErrorBody),
        (status = 422, description = "An admin cancelling someone's request without a reason, or an invalid reason", body = ErrorBody)))]
async fn cancel_request(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<ReasonBody>,
) -> ApiResult<Json<RequestView>> {
    let Json(body) = body?;
    let r = state.engine.cancel(&actor, &id, body.reason).await?;
    Ok(Json(with_grant(&state, &actor, &r).await?))
}

/// Close a break-glass follow-up review (rule 34): acknowledge the use, or flag it, which
/// revokes the grant if it is still live. Its reviewers only (and, once it is overdue, the
/// resource's owners and admins); never the person who broke the glass.
#[utoipa::path(post, path = "/v1/requests/{id}/follow-up", tag = "requests", params(("id" = String, Path)),
    request_body = FollowUpBody,
    responses((status = 200, description = "The request with its follow-up closed", body = RequestView),
        (status = 403, description = "The person who broke the glass, an application, or someone who is not a reviewer of the follow-up", body = ErrorBody),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "The request did not break glass, or its follow-up is already closed", body = ErrorBody),
        (status = 422, description = "An unknown verdict, a flag without a comment, or an invalid comment", body = ErrorBody)))]
async fn follow_up_request(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<FollowUpBody>,
) -> ApiResult<Json<RequestView>> {
    let Json(body) = body?;
    let verdict = match body.verdict.as_str() {
        "acknowledge" => domain::Verdict::Acknowledge,
        "flag" => domain::Verdict::Flag,
        other => {
            return Err(ApiError::invalid(format!(
                "verdict must be \"acknowledge\" or \"flag\", not {other:?}"
            )));
        }
    };
    let r = state
        .engine
        .close_follow_up(&actor, &id, verdict, body.comment)
        .await?;
    Ok(Json(with_grant(&state, &actor, &r).await?))
}

/// Add a comment (anyone involved).
#[utoipa::path(post, path = "/v1/requests/{id}/comments", tag = "requests", params(("id" = String, Path)),
    request_body = CommentBody,
    responses((status = 200, description = "The request with the comment", body = RequestView),
        (status = 403, description = "The caller is not involved in the request", body = ErrorBody),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody),
        (status = 422, description = "An empty or invalid text, or the request has 500 comments", body = ErrorBody)))]
async fn comment_request(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<CommentBody>,
) -> ApiResult<Json<RequestView>> {
    let Json(body) = body?;
    let r = state.engine.comment(&actor, &id, body.text).await?;
    Ok(Json(with_grant(&state, &actor, &r).await?))
}

/// Claim an approved action, once (issue 18): its creator gets the action exactly as it was
/// asked and shown to reviewers, recorded as `action_claimed`.
#[utoipa::path(post, path = "/v1/requests/{id}/claim", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "The approved action, exactly as asked", body = ClaimView),
        (status = 403, description = "The caller may see the request but did not create it", body = ErrorBody),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "The request is not approved, its action was claimed already, or its `claim_within` has passed", body = ErrorBody),
        (status = 422, description = "The request asks for no action", body = ErrorBody)))]
async fn claim_action(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ClaimView>> {
    let r = state.engine.claim_action(&actor, &id).await?;
    let Some(a) = r.action else {
        return Err(ApiError::invalid(format!(
            "request {id} asks for no action"
        )));
    };
    Ok(Json(ClaimView {
        request_id: r.id,
        tool: a.tool,
        arguments: a.arguments,
        digest: a.digest,
        claimed_at: a.claimed_at.map(convert::ts).unwrap_or_default(),
    }))
}

/// Assign the current step to another principal.
#[utoipa::path(post, path = "/v1/requests/{id}/assign", tag = "requests", params(("id" = String, Path)),
    request_body = AssignBody,
    responses((status = 200, description = "The request with the assignment", body = RequestView),
        (status = 403, description = "The caller may not decide the current step", body = ErrorBody),
        (status = 404, description = "No such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "The request is decided or expired, or has no step awaiting review", body = ErrorBody),
        (status = 422, description = "`to` is not a configured user or group with members, or names only the requester or people who already decided", body = ErrorBody)))]
async fn assign_request(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<AssignBody>,
) -> ApiResult<Json<RequestView>> {
    let Json(body) = body?;
    let to = Principal::parse(&body.to).map_err(|e| ApiError::invalid(e.to_string()))?;
    let r = state.engine.assign(&actor, &id, to).await?;
    Ok(Json(with_grant(&state, &actor, &r).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListGrantsQuery {
    /// Only grants in this state.
    #[param(inline, value_type = Option<proto::GrantState>)]
    state: Option<String>,
    /// Only grants to this subject.
    subject: Option<String>,
    /// Only grants of this resource.
    resource: Option<String>,
    /// 100 by default; larger values count as 500, and 0 as 1.
    // Any u32 is accepted (and clamped), so the schema says so rather than int32's range.
    #[param(format = Int64, minimum = 0, maximum = 4294967295.0)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page, to read the next one. A cursor is bound to
    /// the caller and to the filters it was given out with; any other is 400.
    #[param(schema_with = proto::schema::cursor)]
    cursor: Option<String>,
}

/// Grants the caller may see: their own, those of resources they own, all for admins; newest
/// first, a page at a time.
#[utoipa::path(get, path = "/v1/grants", tag = "grants", params(ListGrantsQuery),
    responses((status = 200, description = "The grants, newest first", body = GrantList)))]
async fn list_grants(
    State(state): State<AppState>,
    Auth(actor): Auth,
    q: Result<Query<ListGrantsQuery>, QueryRejection>,
) -> ApiResult<Json<GrantList>> {
    let Query(q) = q?;
    let st = match q.state.as_deref() {
        Some(s) => Some(
            domain::GrantState::parse(s)
                .ok_or_else(|| ApiError::malformed(format!("unknown grant state {s:?}")))?,
        ),
        None => None,
    };
    let scope = cursor::Scope::new("grants", &actor.id)
        .filter("state", q.state.as_deref())
        .filter("subject", q.subject.as_deref())
        .filter("resource", q.resource.as_deref());
    let after = q.cursor.as_deref().map(|c| scope.position(c)).transpose()?;
    let page = state
        .engine
        .list_grants(
            &actor,
            GrantQuery {
                state: st,
                subject: q.subject.clone(),
                resource: q.resource.clone(),
                limit: q.limit.unwrap_or(100),
                after,
            },
        )
        .await?;
    Ok(Json(GrantList {
        grants: page.items.iter().map(convert::grant).collect(),
        next_cursor: page.next.as_ref().map(|p| scope.position_cursor(p)),
    }))
}

/// One grant.
#[utoipa::path(get, path = "/v1/grants/{id}", tag = "grants", params(("id" = String, Path)),
    responses((status = 200, description = "The grant", body = GrantView),
        (status = 404, description = "No such grant, or the caller may not see it", body = ErrorBody)))]
async fn get_grant(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<GrantView>> {
    Ok(Json(convert::grant(
        &state.engine.grant(&actor, &id).await?,
    )))
}

/// Revoke a grant early: its subject drops it, or an owner or admin revokes it with a reason.
#[utoipa::path(post, path = "/v1/grants/{id}/revoke", tag = "grants", params(("id" = String, Path)),
    request_body = ReasonBody,
    responses((status = 200, description = "The grant, `revoking` or `revoked`", body = GrantView),
        (status = 403, description = "Neither the grant's subject, an owner nor an admin", body = ErrorBody),
        (status = 404, description = "No such grant, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "The grant has already ended", body = ErrorBody),
        (status = 422, description = "An owner or admin without a reason, or an invalid reason", body = ErrorBody)))]
async fn revoke_grant(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<ReasonBody>,
) -> ApiResult<Json<GrantView>> {
    let Json(body) = body?;
    let g = state.engine.revoke_grant(&actor, &id, body.reason).await?;
    Ok(Json(convert::grant(&g)))
}

/// Ask to extend an active grant: creates a linked request through the resource's workflow;
/// on approval the grant's expiry moves by the approved duration, without a gap.
#[utoipa::path(post, path = "/v1/grants/{id}/extend", tag = "grants", params(("id" = String, Path)),
    request_body = ExtendBody,
    responses((status = 201, description = "The extension request", body = RequestView),
        (status = 403, description = "The caller is not the grant's subject", body = ErrorBody),
        (status = 404, description = "No such grant, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "The grant is not active, or its resource is no longer configured", body = ErrorBody),
        (status = 422, description = "A bad duration, an empty or invalid reason, a field that no longer validates, a workflow nobody but the requester could complete", body = ErrorBody),
        (status = 502, description = "The options of an `options_from` field could not be fetched to check its value", body = ErrorBody)))]
async fn extend_grant(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<ExtendBody>,
) -> ApiResult<(StatusCode, Json<RequestView>)> {
    let Json(body) = body?;
    let duration = body.duration.as_deref().map(span).transpose()?;
    let req = state
        .engine
        .extend_grant(&actor, &id, duration, body.reason)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(with_grant(&state, &actor, &req).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Return events with a sequence number above this one (not with `cursor`).
    after: Option<i64>,
    /// 100 by default; larger values count as 1000, and 0 as 1.
    // Any u32 is accepted (and clamped), so the schema says so rather than int32's range.
    #[param(format = Int64, minimum = 0, maximum = 4294967295.0)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page, to read the next one (not with `after`). A
    /// cursor is bound to the caller; any other is 400.
    #[param(schema_with = proto::schema::cursor)]
    cursor: Option<String>,
}

/// The audit log in order, paged (admins only).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "A page of events", body = AuditPage),
        (status = 403, description = "The caller is not an admin", body = ErrorBody)))]
async fn audit(
    State(state): State<AppState>,
    Auth(actor): Auth,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<AuditPage>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(100);
    let scope = cursor::Scope::new("audit", &actor.id);
    let after = match (q.after, q.cursor.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::malformed("give either after or cursor, not both"));
        }
        (Some(after), None) => after,
        (None, Some(c)) => scope.seq(c)?,
        (None, None) => 0,
    };
    let page = state.engine.audit(&actor, after, limit).await?;
    let next_after = page.next;
    Ok(Json(AuditPage {
        events: page.items.iter().map(convert::event).collect(),
        next_after,
        next_cursor: next_after.map(|seq| scope.seq_cursor(seq)),
    }))
}

/// Walk the hash chain and report whether every event is intact (admins only).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "Whether the chain is intact", body = VerifyView),
        (status = 403, description = "The caller is not an admin", body = ErrorBody)))]
async fn audit_verify(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> ApiResult<Json<VerifyView>> {
    let v = state.engine.verify_audit(&actor).await?;
    Ok(Json(VerifyView {
        ok: v.ok,
        checked: v.checked,
        head: v.head,
        error: v.error,
    }))
}
