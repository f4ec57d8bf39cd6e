//! Syntax-shaped structs: what the HCL says, before any reference is checked. Every struct
//! denies unknown keys so that a typo is an error, not a silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub database: Option<String>,
    /// Connections the store keeps to its database.
    pub database_pool: Option<u32>,
    /// PostgreSQL behind a pooler that cannot `LISTEN`: workers only poll.
    pub database_poll_only: Option<bool>,
    pub reconcile_interval: Option<String>,
    pub expiry_notice: Option<String>,
    pub policy_interval: Option<String>,
    pub policy_timeout: Option<String>,
    /// Hosts and networks that outgoing HTTP may reach over plain http or at private
    /// addresses (rule 26).
    #[serde(default)]
    pub outbound_allow: Vec<String>,
    pub callback_timeout: Option<String>,
    pub callback_retry_base: Option<String>,
    pub callback_retry_cap: Option<String>,
    pub callback_retry_for: Option<String>,
    pub idempotency_ttl: Option<String>,
    /// How long a portal session lasts after sign-in.
    pub session_ttl: Option<String>,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Option<String>,
    /// How long a client may take to send a request's body.
    pub body_timeout: Option<String>,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Option<String>,
    /// How many client connections are served at once.
    pub max_connections: Option<u64>,
}

/// The `oidc` block: the issuer the portal signs people in with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Option<Vec<String>>,
    pub email_claim: Option<String>,
    pub groups_claim: Option<String>,
    /// Refuse a sign-in whose `email_verified` claim is not `true` (the default).
    pub require_email_verified: Option<bool>,
}

/// The `audit` block: signed checkpoints of the audit chain, kept outside the database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// The Ed25519 private key (PKCS#8 PEM or its base64 DER), through `env()` or `file()`.
    pub signing_key: Option<String>,
    pub checkpoint_interval: Option<String>,
    pub checkpoint_file: Option<String>,
    pub checkpoint_webhook: Option<RawCheckpointWebhook>,
}

/// Where checkpoints are posted, signed as Standard Webhooks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheckpointWebhook {
    pub url: String,
    pub secret: String,
    pub timeout: Option<String>,
}

/// A field's `options_from`: where its choices come from (Sym's prefetch).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOptionsFrom {
    pub url: String,
    /// A JSON pointer to the array in the answer (`/results`); the answer itself by default.
    pub items: Option<String>,
    /// The key of each item's value, when items are objects (`value` by default).
    pub value: Option<String>,
    /// The key of each item's label (the value by default).
    pub label: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long an answer is reused (`1m` by default).
    pub cache: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnector {
    #[serde(rename = "type")]
    pub kind: String,
    pub grant_command: Option<Vec<String>>,
    pub revoke_command: Option<Vec<String>>,
    pub check_command: Option<Vec<String>>,
    pub url: Option<String>,
    pub secret: Option<String>,
    #[serde(default)]
    pub check: bool,
    pub user: Option<String>,
    #[serde(default)]
    pub terminate_sessions: bool,
    pub timeout: Option<String>,
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyRef {
    pub bundle: String,
    pub query: String,
    pub enforcement: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuorum {
    pub min: u32,
    pub of: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReviewers {
    pub one_of: Option<Vec<String>>,
    pub all_of: Option<Vec<String>>,
    pub quorum: Option<RawQuorum>,
    /// Dynamic reviewers: queries whose principals join the list.
    #[serde(default)]
    pub from: Vec<RawPolicyRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub reviewers: RawReviewers,
    #[serde(default)]
    pub skip_if: Vec<RawPolicyRef>,
    /// Remind the step's reviewers this often while it waits.
    pub remind_every: Option<String>,
    /// Who is told next, after each timeout.
    #[serde(default)]
    pub escalate: Vec<RawEscalate>,
    /// `false`: this step is decided in the portal only (overrides the resource's).
    pub slack_decisions: Option<bool>,
}

/// One escalation of a step: `{ after = "1h", to = ["group:leads"], add_reviewers = true }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalate {
    pub after: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub add_reviewers: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkflow {
    pub steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    #[serde(rename = "type")]
    pub kind: String,
    pub allowed_values: Option<Vec<String>>,
    #[serde(default)]
    pub required: bool,
    pub default: Option<hcl::Value>,
    pub description: Option<String>,
    pub options_from: Option<RawOptionsFrom>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    #[serde(default)]
    pub description: String,
    /// `"access"` (the default) or `"action"` (issue 18).
    pub kind: Option<String>,
    /// For `kind = "action"`: how long after approval the action may be claimed.
    pub claim_within: Option<String>,
    pub connector: Option<String>,
    #[serde(default)]
    pub grant: BTreeMap<String, hcl::Value>,
    /// Required for an access resource; an action resource has none.
    pub max_duration: Option<String>,
    pub durations: Option<Vec<String>>,
    #[serde(default)]
    pub owners: Vec<String>,
    pub part_of: Option<String>,
    pub pending_ttl: Option<String>,
    #[serde(default)]
    pub allow_self_approval: bool,
    #[serde(default)]
    pub field: hcl::Map<String, RawField>,
    pub on_request: Option<RawPolicyRef>,
    #[serde(default)]
    pub policies: Vec<RawPolicyRef>,
    pub workflow: RawWorkflow,
    pub break_glass: Option<RawBreakGlass>,
    /// `false`: the resource's requests are decided in the portal only, never from Slack.
    pub slack_decisions: Option<bool>,
}

/// `break_glass = { max_duration, notify, review_within, reviewers }` (rule 34).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreakGlass {
    pub max_duration: String,
    #[serde(default)]
    pub notify: Vec<String>,
    pub review_within: String,
    pub reviewers: Vec<String>,
}

/// A `channel "NAME"` block: where notifications go (email or a signed webhook).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    #[serde(rename = "type")]
    pub kind: String,
    // email
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Option<String>,
    // webhook
    pub url: Option<String>,
    pub secret: Option<String>,
    pub timeout: Option<String>,
    // slack
    pub bot_token: Option<String>,
    pub signing_secret: Option<String>,
    pub mode: Option<String>,
    pub app_token: Option<String>,
    pub api_url: Option<String>,
    pub match_by_email: Option<bool>,
    pub per_channel_interval: Option<String>,
}

/// A `notify "NAME"` block: a routing rule of the notification router.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub events: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub to: Vec<String>,
    pub via: Vec<String>,
}

/// `runbook "name" { file = "runbooks/news.yaml" }` (issue 17): a Kubiya version-3 workflow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRunbook {
    pub file: String,
    #[serde(default)]
    pub description: String,
}

/// `action_store "news" { action "get_all_sources" { … } }` (issue 17).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActionStore {
    #[serde(default)]
    pub action: hcl::Map<String, RawStoreAction>,
}

/// One action of a store: the program it runs, and the resource whose grant it needs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreAction {
    pub resource: Option<String>,
    pub command: Vec<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub description: String,
}
