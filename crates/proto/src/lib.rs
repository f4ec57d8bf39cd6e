//! JSON wire types shared by the API and the CLI: the only place with wire serde.
//!
//! These shapes are the public contract of `/v1`; domain types are converted to them
//! explicitly (in `api::convert`). Times are RFC 3339 strings in UTC, durations are written
//! as `30s`, `15m`, `1h30m`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub mod schema;

// The fields that hold these four stay strings (the server parses them with its own
// messages); the enums give the OpenAPI document the closed set of values.

/// A request's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
    Cancelled,
    Expired,
}

/// A grant's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    Scheduled,
    Activating,
    Active,
    Revoking,
    Expired,
    Revoked,
    Failed,
}

/// A review's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

/// How a follow-up reviewer closes a break-glass follow-up (rule 34): the use was justified,
/// or it was not (which revokes the grant if it is still live).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FollowUpVerdict {
    Acknowledge,
    Flag,
}

/// Where a break-glass follow-up review stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FollowUpState {
    Open,
    Acknowledged,
    Flagged,
}

/// What an approval covers: the resource, or every resource of its workflow (rule 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Resource,
    Workflow,
}

/// Every error: `{ "error": { "code": "...", "message": "..." } }`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `not_found` or `invalid`.
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FieldView {
    pub name: String,
    /// string, int, bool, enum, duration or user.
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_values: Vec<String>,
    /// The value used when the request gives none: a string, an integer or a boolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::field_value)]
    pub default: Option<Value>,
    /// Help text for the field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Whether its choices come from `options_from`: read them at
    /// `/v1/resources/{name}/fields/{field}/options`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic: bool,
}

/// One choice of a field.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FieldOptionView {
    pub value: String,
    pub label: String,
}

/// The choices of a field (an enum's allowed values, or what its `options_from` answers).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FieldOptionList {
    pub options: Vec<FieldOptionView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StepDefView {
    /// 1-based.
    pub index: usize,
    /// one_of, all_of or quorum.
    pub constraint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// The principals as configured.
    pub reviewers: Vec<String>,
    /// The people who could decide this step if the caller asked now.
    pub eligible: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ResourceView {
    pub name: String,
    pub description: String,
    /// True when no connector is configured: the decision itself is the product.
    pub approval_only: bool,
    pub max_duration: String,
    pub default_duration: String,
    #[serde(default)]
    pub durations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_of: Option<String>,
    pub pending_ttl: String,
    pub fields: Vec<FieldView>,
    pub steps: Vec<StepDefView>,
    /// Present when the resource allows break-glass (rule 34).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlassView>,
    /// `access` (a grant for a time) or `action` (the approval of one exact action, issue 18).
    #[serde(default = "access")]
    #[schema(pattern = "^(access|action)$")]
    pub kind: String,
    /// For an `action` resource: how long after approval the action may be claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_within: Option<String>,
}

fn access() -> String {
    "access".into()
}

/// A resource's break-glass (rule 34): access at once for at most `max_duration`, reviewed
/// afterwards by `reviewers` within `review_within`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BreakGlassView {
    pub max_duration: String,
    pub review_within: String,
    pub reviewers: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ResourceList {
    pub resources: Vec<ResourceView>,
}

/// `POST /v1/requests`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequestBody {
    pub resource: String,
    /// Why (at most 4096 characters); an application may give `purpose` instead (its first
    /// line stands in).
    #[serde(default)]
    #[schema(schema_with = schema::text)]
    pub reason: String,
    /// Defaults to the shortest duration the resource allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::span_or_null)]
    pub duration: Option<String>,
    /// Field name → a string, an integer or a boolean, as the resource's fields declare.
    #[serde(default)]
    #[schema(schema_with = schema::field_values)]
    pub fields: BTreeMap<String, Value>,
    /// Start the grant at this time (RFC 3339) rather than at approval; at most 30 days ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::time_or_null)]
    pub start_at: Option<String>,
    /// What is asked, in markdown (at most 16,384 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::purpose_or_null)]
    pub purpose: Option<String>,
    /// A link for reviewers (an http:// or https:// URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::url_or_null)]
    pub reference_url: Option<String>,
    /// The caller's own id for this request, returned with the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::reference_or_null)]
    pub correlation_id: Option<String>,
    /// Any JSON (at most 16 KiB), returned with the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_data: Option<Value>,
    /// The person an application asks for; applications only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// Where the outcome is POSTed, signed with the `callback_secret` of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackBody>,
    /// Groups (or the `admin` role) every reviewer must hold; reviewers without them are not
    /// asked (Verified Orchestration's requested credentials). At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = schema::credentials)]
    pub reviewer_credentials: Vec<String>,
    /// Break the glass (rule 34): grant at once, for at most the resource's
    /// `break_glass.max_duration`, without the workflow, and open a follow-up review. Persons
    /// only, on resources that declare `break_glass`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
    /// The one action to approve, on a resource of `kind = "action"` (issue 18); required
    /// there and refused elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionBody>,
}

/// `action` of a new request: a tool and its arguments, kept exactly as sent.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// The tool's name (1 to 128 characters).
    #[schema(min_length = 1, max_length = 128)]
    pub tool: String,
    /// Any JSON (at most 16 KiB as compact JSON, nested at most 32 deep).
    pub arguments: Value,
}

/// A request's action (issue 18), as every surface shows it to reviewers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActionView {
    pub tool: String,
    pub arguments: Value,
    /// SHA-256, hex, of the canonical JSON of `{"arguments": …, "tool": …}` (keys sorted at
    /// every level, no spaces).
    pub digest: String,
    /// How long after approval the creator may claim it.
    pub claim_within: String,
    /// Until when it may be claimed, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_until: Option<String>,
    /// When the creator claimed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<String>,
}

impl ActionView {
    /// The arguments as every surface prints them: indented JSON.
    pub fn arguments_text(&self) -> String {
        serde_json::to_string_pretty(&self.arguments).unwrap_or_default()
    }
}

/// What `POST /v1/requests/{id}/claim` answers, once: the approved action, exactly as asked.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimView {
    pub request_id: String,
    pub tool: String,
    pub arguments: Value,
    pub digest: String,
    pub claimed_at: String,
}

/// `callback` of a new request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackBody {
    /// `https://…`; plain http and private addresses only for hosts the server allow-lists.
    #[schema(schema_with = schema::url)]
    pub url: String,
}

/// One POST of a callback.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub ms: u64,
}

/// A request's outcome callback and its attempts.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// The `webhook-id` of every attempt.
    pub id: String,
    pub request_id: String,
    /// The URL without credentials or query.
    pub url: String,
    /// pending, delivered, failed (retries ran out) or gone (the receiver answered 410).
    pub state: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    pub attempt_count: u32,
    /// The latest attempts, oldest first (at most 100).
    pub attempts: Vec<AttemptView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

/// A notification about a request (rule 32): what was sent to whom, on which channel, and
/// every attempt.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationView {
    /// The `webhook-id` of a webhook's attempts, and the `Message-ID` of an email.
    pub id: String,
    pub request_id: String,
    pub channel: String,
    /// The event, as `notify` rules name it (`step_entered`, `grant_expiring`, …).
    pub event: String,
    /// The address or destination, when the channel sends one message per person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The people it is for.
    pub people: Vec<String>,
    /// pending, delivered, failed (retries ran out, or the mail server refused for good) or
    /// gone (a webhook answered 410).
    pub state: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    pub attempt_count: u32,
    /// The latest attempts, oldest first (at most 100). `status` is the HTTP status of a
    /// webhook, or the SMTP reply code of an email.
    pub attempts: Vec<AttemptView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationList {
    pub notifications: Vec<NotificationView>,
}

/// `PATCH /v1/requests/{id}`: the creator updates a pending request's text.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequestBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::nonempty_purpose_or_null)]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::nonempty_text_or_null)]
    pub reason: Option<String>,
}

/// Ask to extend an active grant (rule 19): a new request through the resource's workflow.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// How much longer; defaults to the grant's own duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::span_or_null)]
    pub duration: Option<String>,
    #[schema(schema_with = schema::nonempty_text)]
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReviewView {
    pub by: String,
    #[schema(value_type = Decision)]
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[schema(value_type = Scope)]
    pub scope: String,
    pub at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AssignmentView {
    pub by: String,
    pub to: String,
    pub at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    pub index: usize,
    pub constraint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// waiting, active, approved, denied or skipped.
    pub status: String,
    pub reviewers: Vec<String>,
    /// People who may decide this step now (empty unless it is the current step).
    pub eligible: Vec<String>,
    pub reviews: Vec<ReviewView>,
    #[serde(default)]
    pub assignments: Vec<AssignmentView>,
    /// Why the step was skipped: its `skip_if` policies' reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_because: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CommentView {
    pub by: String,
    pub text: String,
    pub at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ActorRef {
    pub id: String,
    pub name: String,
}

/// How a request ended: the same data a callback carries.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OutcomeView {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub actioned_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actioned_by: Option<ActorRef>,
    /// The policy query that decided, when no person did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestView {
    pub id: String,
    pub resource: String,
    pub requester: String,
    pub reason: String,
    /// Field name → its value (a string, an integer or a boolean).
    #[schema(schema_with = schema::field_values)]
    pub fields: BTreeMap<String, Value>,
    pub duration: String,
    #[schema(value_type = RequestState)]
    pub state: String,
    pub created_at: String,
    pub pending_until: String,
    /// 1-based index of the step awaiting review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<usize>,
    pub steps: Vec<StepView>,
    pub comments: Vec<CommentView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// When the grant starts, if later than approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// The grant this request asks to extend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// The grant, when the request produced (or was answered by) one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantView>,
    /// Messages of the resource's `warn` policies, for reviewers.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The application that created the request (for `requester`, or as it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_data: Option<Value>,
    /// Groups (or `admin`) every reviewer must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviewer_credentials: Vec<String>,
    /// The page where reviewers decide.
    pub portal_url: String,
    /// The secret callbacks are signed with: in the creation response only, to its creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_secret: Option<String>,
    /// The review that follows a break-glass (rule 34); absent for every other request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<FollowUpView>,
    /// The one action asked for (issue 18); absent for an access request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionView>,
    /// The run of a runbook this request asks access for (issue 17); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunRefView>,
    /// The request in sentences, as every surface shows it.
    #[serde(default)]
    pub summary: SummaryView,
}

/// The run a request asks access for, and the step that needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunRefView {
    /// The run's id (`GET /v1/runs/{id}`).
    pub id: String,
    /// The action step the run stopped at.
    pub step: String,
}

/// What a request says in sentences. The server's presenter writes them once; the portal,
/// the CLI, email and Slack show them as they are, so a request reads the same everywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SummaryView {
    /// Where the request stands: `Pending: step 2 of 3, 1 of 2 approvals`, `Approved by bob:
    /// looks right`, `Expired without a decision`.
    pub status: String,
    /// Each step's rule, in order: `one of group:dba`, `every one of alice, bob`, `2 of
    /// group:sre`.
    pub steps: Vec<String>,
    /// Who may act on it now: the current step's eligible reviewers, or the people who may
    /// close a break-glass follow-up.
    pub waiting_on: Vec<String>,
}

/// A break-glass follow-up review (rule 34).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FollowUpView {
    #[schema(value_type = FollowUpState)]
    pub state: String,
    /// The resource's `break_glass.reviewers`.
    pub reviewers: Vec<String>,
    /// The people who may close it now (never the person who broke the glass).
    pub eligible: Vec<String>,
    /// When it should be closed by.
    pub due_at: String,
    /// When it escalated, having been left open past `due_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One policy evaluation that affected a request.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TraceView {
    /// deny, warn, on_request, skip_if, reviewers, or recheck (rule 20, on an active grant).
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    pub bundle: String,
    pub query: String,
    /// The query's value (null when undefined); absent when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the engine made of it: skip, no skip, deny: …, approve: …, reviewers ….
    pub verdict: String,
    pub duration_us: u64,
    pub at: String,
}

/// One step of an explanation or simulation.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ExplainStep {
    pub index: usize,
    /// waiting, active, approved, denied, skipped; in a simulation also would_skip and
    /// would_wait.
    pub status: String,
    pub constraint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_because: Option<String>,
    /// Who may decide it (never the requester).
    pub reviewers: Vec<String>,
    pub reviews: Vec<String>,
    pub evaluations: Vec<TraceView>,
}

/// `GET /v1/requests/{id}/explain`: why the request was skipped, auto-decided or routed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ExplainView {
    pub request: String,
    pub resource: String,
    pub requester: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    pub warnings: Vec<String>,
    /// Deny and warn policies and `on_request`, in the order they ran.
    pub policies: Vec<TraceView>,
    pub steps: Vec<ExplainStep>,
    /// The same, in sentences.
    pub lines: Vec<String>,
}

/// `POST /v1/simulate`: what a request would do, without creating it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateBody {
    pub resource: String,
    /// Whom to simulate for; only admins may name someone other than themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    #[serde(default)]
    #[schema(schema_with = schema::text)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::span_or_null)]
    pub duration: Option<String>,
    #[serde(default)]
    #[schema(schema_with = schema::field_values)]
    pub fields: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SimulationView {
    pub resource: String,
    pub requester: String,
    /// denied, approved or pending (it would wait for reviewers).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub deny: Vec<String>,
    pub warnings: Vec<String>,
    pub policies: Vec<TraceView>,
    pub steps: Vec<ExplainStep>,
    pub lines: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestList {
    pub requests: Vec<RequestView>,
    /// Pass as `cursor` to read the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::cursor_or_null)]
    pub next_cursor: Option<String>,
}

/// `POST /v1/requests/{id}/reviews`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    #[schema(value_type = Decision)]
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::text_or_null)]
    pub comment: Option<String>,
    /// An approval may shorten the requested duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::span_or_null)]
    pub duration: Option<String>,
    /// resource (the default) or workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Scope>)]
    pub scope: Option<String>,
}

/// `POST /v1/requests/{id}/follow-up`: close a break-glass follow-up (rule 34).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowUpBody {
    #[schema(value_type = FollowUpVerdict)]
    pub verdict: String,
    /// Required to flag: what was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::text_or_null)]
    pub comment: Option<String>,
}

/// `POST /v1/requests/{id}/cancel` and `POST /v1/grants/{id}/revoke`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::text_or_null)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    #[schema(schema_with = schema::nonempty_text)]
    pub text: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// A user's email or `group:<name>`.
    #[schema(schema_with = schema::principal)]
    pub to: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantEndingView {
    /// expired, dropped, revoked or activation_failed (the reason then holds the error).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    pub id: String,
    pub request_id: String,
    pub subject: String,
    pub resource: String,
    /// Set when the grant covers every resource of this workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[schema(value_type = GrantState)]
    pub state: String,
    pub duration: String,
    pub created_at: String,
    /// When a scheduled grant starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<GrantEndingView>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantList {
    pub grants: Vec<GrantView>,
    /// Pass as `cursor` to read the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::cursor_or_null)]
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEventView {
    pub seq: i64,
    pub at: String,
    /// The event as recorded: kind, request, grant, actor, detail. These are the stored
    /// bytes, unchanged, so that a client can recompute `hash` from them.
    #[schema(value_type = Object)]
    pub event: Box<serde_json::value::RawValue>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
    /// Pass as `after` to read the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
    /// Pass as `cursor` to read the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::cursor_or_null)]
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyView {
    pub ok: bool,
    pub checked: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// `POST /graphql`: a GraphQL request over HTTP.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GraphqlRequest {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<serde_json::Map<String, Value>>,
    #[serde(
        default,
        rename = "operationName",
        skip_serializing_if = "Option::is_none"
    )]
    pub operation_name: Option<String>,
}

// ----- Gated runbooks (issue 17) -----

/// A run's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    WaitingForInput,
    NeedsAccess,
    WaitingForApproval,
    ReadyToResume,
    Succeeded,
    Failed,
    Cancelled,
}

/// A runbook of the catalog (`GET /v1/runbooks`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunbookView {
    pub name: String,
    pub description: String,
    /// SHA-256 of its file as loaded now: a run keeps the version it started with.
    pub version: String,
    pub steps: Vec<RunbookStepView>,
}

/// One step of a runbook as it is defined.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunbookStepView {
    pub id: String,
    /// `action`, `input` or `message`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(action|input|message)$")]
    pub kind: String,
    /// An input's question, or a message's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// An input's type: `enum`, `string`, `int` or `bool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// An action as `store.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The resource an action needs a grant of; absent for an ungated action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunbookList {
    pub runbooks: Vec<RunbookView>,
}

/// `POST /v1/runs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunBody {
    pub runbook: String,
    /// Answers to input steps given ahead, by step id (at most 64); each is checked when the
    /// run gets there, and asked for if it is not one of the values offered then.
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
}

/// `POST /v1/runs/{id}/input`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInputBody {
    /// The answer: one of the values offered, of the step's type (an `int` or `bool` may be
    /// given as text).
    pub value: Value,
}

/// `POST /v1/runs/{id}/access`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunAccessBody {
    #[schema(schema_with = schema::nonempty_text)]
    pub reason: String,
    /// How long the access is asked for (the resource's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::span_or_null)]
    pub duration: Option<String>,
}

/// A run of a runbook, as every surface shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub runbook: String,
    /// The version of the runbook this run runs (SHA-256 of its file when it started).
    pub version: String,
    pub runner: String,
    #[schema(value_type = RunState)]
    pub state: String,
    /// The step the run is at; absent once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// Every step, in order: the timeline.
    pub steps: Vec<RunStepView>,
    /// When the run waits for its runner's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<RunInputView>,
    /// When the run stopped at an action for lack of access (rule 37).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_access: Option<NeedsAccessView>,
    /// Why it failed, was cancelled, or needs access again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the run's state asks of its runner, in a sentence.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

/// One step of a run.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunStepView {
    pub id: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^(action|input|message)$")]
    pub kind: String,
    /// `done`, `current` or `pending`.
    #[schema(pattern = "^(done|current|pending)$")]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// What a done step produced: an action's JSON, the value given, a message's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// For a done action: how many times its program started (more than 1 only after a
    /// crash: actions run at least once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// The input step a run waits at.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunInputView {
    pub step: String,
    pub prompt: String,
    pub value_type: String,
    /// The values it takes, when it offers a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possible_values: Option<Vec<Value>>,
}

/// The action a run stopped at, the resource it needs and who can approve it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NeedsAccessView {
    pub step: String,
    /// The action as `store.name`.
    pub action: String,
    pub resource: String,
    /// The people who could decide the resource's first step for this runner (Kubiya's
    /// "resource operator").
    pub approvers: Vec<String>,
    /// The request that asks for it, once asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
    /// Pass as `cursor` to read the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::cursor_or_null)]
    pub next_cursor: Option<String>,
}

/// What `POST /v1/runs/{id}/access` answers: the run, now waiting for approval (or ready,
/// when a policy approved at once), and the request it opened.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunAccessView {
    pub run: RunView,
    pub request: RequestView,
}
