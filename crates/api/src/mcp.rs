//! The agent gate (issue 18): an MCP server at `/mcp`, over the Streamable HTTP transport of
//! the MCP specification, served by `rmcp`, the official Rust SDK.
//!
//! An agent authenticates with the same bearer tokens as `/v1` (an application's or a
//! person's), asks for access or for the approval of one exact action, follows the request
//! (`get_request` waits up to a minute for the outcome), claims an approved action once, and
//! may cancel what it asked. That is all it can do: no tool decides, comments, assigns or
//! revokes, whatever the token's roles, and the acting identity is the token's, never an
//! argument. The server is stateless (no MCP session is kept), so any replica answers any
//! call.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use domain::Actor;
use rmcp::ErrorData;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, CreateTaskResult,
    DetailedTask, GetTaskParams, GetTaskResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Task, TaskPayload, TaskStatus, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::{ApiError, AppState, Auth, convert};

/// The longest `get_request` waits for an outcome.
pub const MAX_WAIT_SECS: u64 = 60;
/// How often a waiting `get_request` looks at the request again.
const POLL: Duration = Duration::from_millis(500);
/// `get_request` calls that may wait at once in this process; beyond them a call answers at
/// once with the request as it is.
const MAX_WAITERS: usize = 256;

/// What the server tells an agent when it connects.
const INSTRUCTIONS: &str = "Countersign gates risky actions behind a human's approval. \
Before you run an action that needs approval, call request_action_approval with the exact \
tool and arguments you will run, then call get_request with wait_seconds (up to 60) until its \
state is no longer pending: tell the user you are waiting for a person, and do not run the \
action meanwhile. When it is approved, call claim_approval once and run exactly the action it \
returns. If it is denied, cancelled or expired, do not run it; tell the user why. You can \
never approve anything yourself.";

/// `/mcp`, behind bearer-token authentication.
pub fn router(state: AppState) -> Router<AppState> {
    let waiters = Arc::new(Semaphore::new(MAX_WAITERS));
    let config = state.engine.config();
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = authority(&config.server.public_url) {
        hosts.push(host);
    }
    let gate = state.clone();
    let service = StreamableHttpService::new(
        move || {
            Ok(Gate {
                state: gate.clone(),
                waiters: waiters.clone(),
            })
        },
        Arc::new(NeverSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_allowed_hosts(hosts)
            .with_max_request_body_bytes(crate::MAX_BODY),
    );
    Router::new()
        .route_service("/mcp", service)
        .route_layer(middleware::from_fn_with_state(state, authenticate))
}

/// The host (and port) of a URL, as a `Host` header names it.
fn authority(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| host.to_owned())
}

/// Every request to `/mcp` carries a bearer token, as `/v1` does; its actor rides in the
/// request's extensions, where each tool call finds it (rmcp hands the HTTP request's parts
/// to the handler).
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    match Auth::from_request_parts(&mut parts, &state).await {
        Ok(Auth(actor)) => {
            parts.extensions.insert(actor);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => {
            let mut res = e.into_response();
            res.headers_mut().insert(
                WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            res
        }
    }
}

/// One MCP server instance (one per HTTP request: the server keeps no session).
#[derive(Clone)]
struct Gate {
    state: AppState,
    waiters: Arc<Semaphore>,
}

impl rmcp::ServerHandler for Gate {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new(
            "countersign",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    /// `tasks/get` of the Tasks extension: a request the caller made, followed as a task.
    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let actor = Gate::actor(&context)?;
        Ok(GetTaskResult::new(
            self.task_of(&actor, &request.task_id).await?,
        ))
    }

    /// `tasks/cancel`: withdraws the pending request the task follows (a decided one is left
    /// as it is; cancellation is cooperative).
    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let actor = Gate::actor(&context)?;
        let r = self.own(&actor, &request.task_id).await.map_err(|_| {
            ErrorData::invalid_params(format!("no task {:?}", request.task_id), None)
        })?;
        if r.state == domain::RequestState::Pending {
            self.state
                .engine
                .cancel(
                    &actor,
                    &r.id,
                    Some("cancelled through MCP tasks/cancel".into()),
                )
                .await
                .map_err(|e| ErrorData::invalid_request(ApiError::from(e).message, None))?;
        }
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let actor = Gate::actor(&context)?;
        let args = Value::Object(request.arguments.unwrap_or_default());
        // A client that follows tasks (the MCP Tasks extension) gets a pending request as a
        // task, which completes when a person decides; any other waits with get_request.
        let as_task = context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        let name = request.name.clone();
        let done = match request.name.as_ref() {
            "list_resources" => {
                parse::<NoArgs>(args)?;
                Ok(self.list_resources(&actor))
            }
            "request_access" => self.request_access(&actor, parse(args)?).await,
            "request_action_approval" => self.request_action(&actor, parse(args)?).await,
            "get_request" if as_task => {
                let a: GetArgs = parse(args)?;
                self.get_request(
                    &actor,
                    GetArgs {
                        wait_seconds: 0,
                        ..a
                    },
                )
                .await
            }
            "get_request" => {
                let a: GetArgs = parse(args)?;
                tokio::select! {
                    done = self.get_request(&actor, a) => done,
                    _ = context.ct.cancelled() => {
                        Err(ApiError::new(axum::http::StatusCode::CONFLICT, "cancelled", "the call was cancelled"))
                    }
                }
            }
            "claim_approval" => self.claim(&actor, parse(args)?).await,
            "cancel_request" => self.cancel(&actor, parse(args)?).await,
            other => {
                return Err(ErrorData::invalid_params(
                    format!(
                        "no tool {other:?}: this server offers {}",
                        tools()
                            .iter()
                            .map(|t| t.name.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None,
                ));
            }
        };
        let follows = matches!(
            name.as_ref(),
            "request_access" | "request_action_approval" | "get_request"
        );
        if let (true, true, Ok(v)) = (as_task, follows, &done)
            && v["state"] == "pending"
        {
            return Ok(CallToolResponse::Task(CreateTaskResult::new(task(
                v,
                TaskStatus::Working,
            ))));
        }
        Ok(match done {
            Ok(v) => CallToolResult::structured(v),
            Err(e) => CallToolResult::structured_error(json!({
                "error": { "code": e.code, "message": e.message, "status": e.status.as_u16() }
            })),
        }
        .into())
    }
}

impl Gate {
    /// The actor of a call, which the authentication layer put in the HTTP request.
    fn actor(context: &RequestContext<RoleServer>) -> Result<Actor, ErrorData> {
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Actor>())
            .cloned()
            .ok_or_else(|| ErrorData::invalid_request("not authenticated", None))
    }

    /// The task of a request the caller made: working while it is pending, completed with
    /// what `get_request` answers once it is decided. "No such task" for any other id.
    async fn task_of(&self, actor: &Actor, id: &str) -> Result<DetailedTask, ErrorData> {
        let no_task = || ErrorData::invalid_params(format!("no task {id:?}"), None);
        let r = self.own(actor, id).await.map_err(|_| no_task())?;
        let view = crate::routes::with_grant(&self.state, actor, &r)
            .await
            .map_err(|e| ErrorData::internal_error(e.message, None))?;
        let v = status(&view);
        match r.state {
            domain::RequestState::Pending => {
                return Ok(DetailedTask::new(
                    task(&v, TaskStatus::Working),
                    TaskPayload::Working,
                ));
            }
            domain::RequestState::Cancelled => {
                return Ok(DetailedTask::new(
                    task(&v, TaskStatus::Cancelled),
                    TaskPayload::Cancelled,
                ));
            }
            // Approved, denied or expired: the call completed with that outcome.
            _ => {}
        }
        let result = match serde_json::to_value(CallToolResult::structured(v.clone())) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(ErrorData::internal_error(
                    "the result is not an object",
                    None,
                ));
            }
        };
        Ok(DetailedTask::new(
            task(&v, TaskStatus::Completed),
            TaskPayload::Completed { result },
        ))
    }
}

/// A task's metadata from what `get_request` answers: its id is the request's.
fn task(v: &Value, status: TaskStatus) -> Task {
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let updated = v["decided_at"]
        .as_str()
        .map_or_else(|| text("created_at"), str::to_owned);
    Task::new(text("id"), status, text("created_at"), updated)
        .with_status_message(text("status"))
        .with_poll_interval_ms(TASK_POLL_MS)
}

/// How often a client following a request as a task is asked to look again.
const TASK_POLL_MS: u64 = 2_000;

/// A tool's arguments, or the protocol's "invalid params" error naming what is wrong.
fn parse<T: serde::de::DeserializeOwned>(args: Value) -> Result<T, ErrorData> {
    serde_json::from_value(args).map_err(|e| ErrorData::invalid_params(e.to_string(), None))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessArgs {
    resource: String,
    reason: String,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    fields: std::collections::BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionArgs {
    resource: String,
    tool: String,
    arguments: Value,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    id: String,
    #[serde(default)]
    wait_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdArgs {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelArgs {
    id: String,
    #[serde(default)]
    reason: Option<String>,
}

type Done = Result<Value, ApiError>;

impl Gate {
    fn list_resources(&self, actor: &Actor) -> Value {
        let config = self.state.engine.config();
        let resources: Vec<proto::ResourceView> = config
            .resources
            .values()
            .map(|r| convert::resource(r, &config.directory, &actor.id))
            .collect();
        json!({ "resources": resources })
    }

    async fn create(&self, actor: &Actor, body: proto::CreateRequestBody) -> Done {
        let created =
            crate::routes::create(&self.state, actor, body, None, domain::CallbackFormat::Rest)
                .await?;
        Ok(status(
            &crate::routes::with_grant(&self.state, actor, &created.request).await?,
        ))
    }

    async fn request_access(&self, actor: &Actor, a: AccessArgs) -> Done {
        let body = proto::CreateRequestBody {
            resource: a.resource,
            reason: a.reason,
            duration: a.duration,
            fields: a.fields,
            ..Default::default()
        };
        self.create(actor, body).await
    }

    async fn request_action(&self, actor: &Actor, a: ActionArgs) -> Done {
        let body = proto::CreateRequestBody {
            resource: a.resource,
            reason: a.reason,
            action: Some(proto::ActionBody {
                tool: a.tool,
                arguments: a.arguments,
            }),
            ..Default::default()
        };
        self.create(actor, body).await
    }

    /// A request the caller created, as it is now; with `wait_seconds`, once it is no longer
    /// pending or when the wait runs out, whichever comes first.
    async fn get_request(&self, actor: &Actor, a: GetArgs) -> Done {
        if a.wait_seconds > MAX_WAIT_SECS {
            return Err(ApiError::invalid(format!(
                "wait_seconds is at most {MAX_WAIT_SECS}"
            )));
        }
        let mut r = self.own(actor, &a.id).await?;
        let permit = match a.wait_seconds {
            0 => None,
            _ => self.waiters.clone().try_acquire_owned().ok(),
        };
        if permit.is_some() {
            let wait = async {
                while r.state == domain::RequestState::Pending {
                    engine::clock::pause(POLL).await;
                    r = self.own(actor, &a.id).await?;
                }
                Ok::<(), ApiError>(())
            };
            tokio::select! {
                done = wait => done?,
                _ = engine::clock::pause(Duration::from_secs(a.wait_seconds)) => {}
            }
            r = self.own(actor, &a.id).await?;
        }
        Ok(status(
            &crate::routes::with_grant(&self.state, actor, &r).await?,
        ))
    }

    /// A request the caller created; any other is "not found", even one they may review.
    async fn own(&self, actor: &Actor, id: &str) -> Result<domain::Request, ApiError> {
        let r = self.state.engine.request(actor, id).await?;
        if r.creator() != actor.id {
            return Err(ApiError::not_found(format!("request {id} not found")));
        }
        Ok(r)
    }

    async fn claim(&self, actor: &Actor, a: IdArgs) -> Done {
        self.own(actor, &a.id).await?;
        let r = self.state.engine.claim_action(actor, &a.id).await?;
        let Some(action) = r.action else {
            return Err(ApiError::invalid(format!(
                "request {} asks for no action",
                a.id
            )));
        };
        Ok(json!({
            "request_id": r.id,
            "tool": action.tool,
            "arguments": action.arguments,
            "digest": action.digest,
            "claimed_at": action.claimed_at.map(convert::ts),
        }))
    }

    async fn cancel(&self, actor: &Actor, a: CancelArgs) -> Done {
        self.own(actor, &a.id).await?;
        let r = self.state.engine.cancel(actor, &a.id, a.reason).await?;
        Ok(status(&convert::request(
            &r,
            None,
            &self.state.engine.config().server.public_url,
        )))
    }
}

/// What an agent needs to know of a request: where it stands, who decided and why, and
/// what to do next.
fn status(r: &proto::RequestView) -> Value {
    let next = match r.state.as_str() {
        "pending" => {
            "Wait: call get_request with wait_seconds until the state changes. Do not run the action meanwhile."
        }
        "approved" if r.action.as_ref().is_some_and(|a| a.claimed_at.is_none()) => {
            "Approved: call claim_approval once, then run exactly the action it returns."
        }
        "approved" => "Approved.",
        _ => "Not approved: do not run it; tell the user why.",
    };
    json!({
        "id": r.id,
        "resource": r.resource,
        "state": r.state,
        "created_at": r.created_at,
        "decided_at": r.outcome.as_ref().map(|o| &o.actioned_at),
        "status": r.summary.status,
        "waiting_on": r.summary.waiting_on,
        "decided_by": r.outcome.as_ref().and_then(|o| o.actioned_by.as_ref()).map(|a| &a.id),
        "comment": r.outcome.as_ref().and_then(|o| o.comment.clone()),
        "action": r.action.as_ref().map(|a| json!({
            "tool": a.tool,
            "digest": a.digest,
            "claim_until": a.claim_until,
            "claimed_at": a.claimed_at,
        })),
        "grant": r.grant.as_ref().map(|g| json!({
            "id": g.id, "state": g.state, "expires_at": g.expires_at,
        })),
        "portal_url": r.portal_url,
        "next": next,
    })
}

/// The tools, with their JSON Schemas (every object closed: an unknown argument is refused).
fn tools() -> Vec<Tool> {
    let schema = |properties: Value, required: &[&str]| -> Arc<Map<String, Value>> {
        let mut m = Map::new();
        m.insert("type".into(), json!("object"));
        m.insert("properties".into(), properties);
        m.insert("required".into(), json!(required));
        m.insert("additionalProperties".into(), json!(false));
        Arc::new(m)
    };
    let id = json!({ "type": "string", "description": "The request's id" });
    let read_only = |t: Tool| t.annotate(ToolAnnotations::new().read_only(true));
    vec![
        read_only(Tool::new(
            "list_resources",
            "What you may ask for: each resource's name, kind (access, or action for the \
             approval of one exact action), durations, fields and who reviews it.",
            schema(json!({}), &[]),
        )),
        Tool::new(
            "request_access",
            "Ask for access to a resource of kind access, for a time. A person reviews it; \
             then call get_request with wait_seconds to learn the outcome.",
            schema(
                json!({
                    "resource": { "type": "string" },
                    "reason": { "type": "string", "description": "Why, for the reviewers" },
                    "duration": { "type": "string", "description": "e.g. 15m or 1h; the resource's shortest by default" },
                    "fields": { "type": "object", "description": "The resource's fields, by name" },
                }),
                &["resource", "reason"],
            ),
        ),
        Tool::new(
            "request_action_approval",
            "Ask a person to approve one exact action before you run it: the tool and the \
             arguments you will run, on a resource of kind action. Reviewers see exactly \
             these. Then wait with get_request, and run the action only after \
             claim_approval returns it.",
            schema(
                json!({
                    "resource": { "type": "string" },
                    "tool": { "type": "string", "description": "The tool you will call" },
                    "arguments": { "description": "Its arguments, exactly as you will pass them (any JSON, at most 16 KiB)" },
                    "reason": { "type": "string", "description": "Why, for the reviewers" },
                }),
                &["resource", "tool", "arguments", "reason"],
            ),
        ),
        read_only(Tool::new(
            "get_request",
            "Where a request you made stands: its state (pending, approved, denied, \
             cancelled, expired), who decided and their comment. With wait_seconds (at most \
             60) it waits for the outcome. While it is pending, wait: tell the user a person \
             is deciding, and call it again.",
            schema(
                json!({
                    "id": id,
                    "wait_seconds": { "type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS },
                }),
                &["id"],
            ),
        )),
        Tool::new(
            "claim_approval",
            "Take the approved action of a request you made, once: it returns the tool and \
             arguments that were approved. Run exactly those. A second claim fails, and so \
             does one after the claim window.",
            schema(json!({ "id": id }), &["id"]),
        ),
        Tool::new(
            "cancel_request",
            "Withdraw a pending request you made.",
            schema(json!({ "id": id, "reason": { "type": "string" } }), &["id"]),
        ),
    ]
}
