//! Countersign's configuration: HCL files in, resolved definitions out.
//!
//! Loading happens in two levels (as ripgrep turns low-level flags into high-level
//! arguments): [`raw`] structs mirror the syntax and deny unknown keys; [`resolve`] turns them
//! into a [`Config`] whose references (users, groups, connectors) are checked, durations parsed
//! and bounded, and reviewer lists expanded into domain types. Every error carries the file,
//! the line and the block it is about, and loading goes on after an error so that one run of
//! `countersign check` reports them all.
//!
//! This crate reads the configuration files and the files and environment variables they name
//! with `file()` and `env()`; it does not open databases, sockets or policy bundles (bundle
//! paths are resolved against the configuration file's directory and compiled by the engine).

mod load;
pub mod outbound;
pub mod raw;
mod resolve;
pub mod runbook;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use domain::notify::{NotifyRule, Reach};
use domain::{Directory, PolicyRef, ResourceDef, Span};

pub use load::{load_files, load_str};
pub use outbound::{Network, OutboundAllow};

/// One problem in the configuration, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    /// The block the error is about, as written: `resource "prod-db"`.
    pub block: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if !self.block.is_empty() {
            write!(f, "in {}: ", self.block)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: String,
    pub public_url: String,
    pub database: String,
    /// Connections the store keeps to its database: the read pool on SQLite, the whole pool
    /// (writer included) on PostgreSQL.
    pub database_pool: u32,
    /// PostgreSQL: workers only poll for work another replica made due (no `LISTEN`), for
    /// connection poolers in transaction mode.
    pub database_poll_only: bool,
    /// How often the reconciliation sweep asks connectors whether access matches the grants
    /// (`0s` turns it off).
    pub reconcile_interval: Span,
    /// How long before a grant expires its `grant_expiring` event is recorded.
    pub expiry_notice: Span,
    /// How often deny policies are evaluated again for active grants (rule 20; `0s` is off).
    pub policy_interval: Span,
    /// The time limit of one policy evaluation, in milliseconds.
    pub policy_timeout_ms: u64,
    /// Hosts and networks outgoing HTTP may reach over `http` or at private addresses (rule 26).
    pub outbound_allow: OutboundAllow,
    /// How callbacks are sent and retried (rules 22, 23).
    pub callbacks: CallbackSettings,
    /// How long an `Idempotency-Key` is remembered (rule 25).
    pub idempotency_ttl: Span,
    /// How long a portal session lasts after sign-in (there is no sliding renewal).
    pub session_ttl: Span,
    /// The HTTP server's timeouts and connection limit (read at start).
    pub http: HttpLimits,
}

/// How long the HTTP server waits for a client, and how many it serves at once, so that
/// clients that connect and then send nothing, or send slowly, cannot hold it open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From the connection's start, or from the first byte of a later request on a
    /// kept-alive connection, until the request's headers are complete.
    pub header_read_timeout: Duration,
    /// From the end of the headers until the whole body has arrived; also how long a
    /// response may wait for the client to read it.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for the first byte of its next request.
    pub idle_timeout: Duration,
    /// How many connections are served at once; more wait in the listen queue.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    /// Ten seconds for headers (a client sends them in one packet; slow links need a few
    /// seconds at worst); thirty for a body (at most 64 KiB, so about 2 KiB/s); 75 seconds
    /// idle (above the 60 s idle timeout of common load balancers, so that the balancer, not
    /// the server, closes a kept-alive connection first and never reuses one being closed);
    /// 512 connections (well inside the usual 1024 open-file limit, which the store, the
    /// outgoing calls and connector processes share).
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: 512,
        }
    }
}

/// The `oidc` block: sign-in with the authorization code flow and PKCE.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The issuer URL, exactly as its discovery document and ID tokens give it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Always contains `openid`.
    pub scopes: Vec<String>,
    /// The claim naming the user (`email`): it must be a configured user.
    pub email_claim: String,
    /// The claim listing the user's groups (`groups`); configured groups named there are
    /// added to the session's groups.
    pub groups_claim: String,
    /// Whether a sign-in needs `email_verified: true` (on by default; a missing claim
    /// refuses the sign-in).
    pub require_email_verified: bool,
}

impl fmt::Debug for OidcConfig {
    /// The client secret is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("email_claim", &self.email_claim)
            .field("groups_claim", &self.groups_claim)
            .field("require_email_verified", &self.require_email_verified)
            .finish_non_exhaustive()
    }
}

/// The `audit` block: the server signs the head of the audit chain at `interval` and on
/// shutdown, and appends each checkpoint to `file` (and posts it to `webhook`).
#[derive(Clone)]
pub struct AuditConfig {
    /// The Ed25519 key that signs checkpoints. Shared, since a key pair cannot be copied; its
    /// `Debug` prints only the key id.
    pub signing_key: std::sync::Arc<audit::SigningKey>,
    pub interval: Span,
    /// The append-only checkpoint file (relative paths are resolved against the
    /// configuration file's directory).
    pub file: PathBuf,
    pub webhook: Option<CheckpointWebhook>,
}

impl fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditConfig")
            .field("signing_key", &self.signing_key)
            .field("interval", &self.interval)
            .field("file", &self.file)
            .field("webhook", &self.webhook)
            .finish()
    }
}

/// Where checkpoints are posted: a Standard Webhooks signed POST through the guard against
/// server-side request forgery.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckpointWebhook {
    pub url: String,
    /// The signing secret: `whsec_<base64>` or any other text. Never printed.
    pub secret: String,
    pub timeout: Span,
}

impl fmt::Debug for CheckpointWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointWebhook")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A field's `options_from`: its choices are fetched from `url` (a GET, through the guard
/// against server-side request forgery) and kept for `cache`.
#[derive(Clone, PartialEq, Eq)]
pub struct OptionsSource {
    pub url: String,
    /// A JSON pointer to the array of items in the answer; empty for the answer itself.
    pub items: String,
    /// The key of an item's value when items are objects.
    pub value: String,
    /// The key of an item's label; the value is the label when it is missing.
    pub label: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub cache: Span,
}

impl fmt::Debug for OptionsSource {
    /// Header values (credentials, typically) are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionsSource")
            .field("url", &self.url)
            .field("items", &self.items)
            .field("value", &self.value)
            .field("label", &self.label)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("cache", &self.cache)
            .finish()
    }
}

/// How request callbacks are sent and retried (rule 23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSettings {
    /// How long one POST may take.
    pub timeout: Span,
    /// The first retry delay; each further one doubles, with jitter, up to `retry_cap`.
    pub retry_base: Span,
    pub retry_cap: Span,
    /// How long after the outcome retries go on before the delivery is marked failed.
    pub retry_for: Span,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            timeout: Span::from_secs(10),
            retry_base: Span::from_secs(5),
            retry_cap: Span::from_secs(2 * 3600),
            retry_for: Span::from_secs(3 * 86400),
        }
    }
}

/// How a connector gives and takes back access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorDef {
    /// Runs a program for grant and another for revoke, with a JSON description of the grant
    /// on stdin; exit status 0 is success.
    Exec(ExecConnector),
    /// POSTs signed JSON (Standard Webhooks) for grant, revoke and, if enabled, check.
    Webhook(WebhookConnector),
    /// `GRANT role TO user` / `REVOKE` on a PostgreSQL server.
    Postgres(PostgresConnector),
}

impl ConnectorDef {
    pub fn timeout(&self) -> Span {
        match self {
            ConnectorDef::Exec(c) => c.timeout,
            ConnectorDef::Webhook(c) => c.timeout,
            ConnectorDef::Postgres(c) => c.timeout,
        }
    }
    /// Activation attempts before the grant is marked failed (revocation never gives up).
    pub fn max_attempts(&self) -> u32 {
        match self {
            ConnectorDef::Exec(c) => c.max_attempts,
            ConnectorDef::Webhook(c) => c.max_attempts,
            ConnectorDef::Postgres(c) => c.max_attempts,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConnector {
    pub url: String,
    /// The signing key: `whsec_<base64>` as Standard Webhooks writes it, or any other text.
    pub secret: String,
    /// Whether the receiver answers `grant.check` calls (`{"in_effect": bool}`).
    pub check: bool,
    pub timeout: Span,
    pub max_attempts: u32,
}

impl fmt::Debug for WebhookConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConnector")
            .field("url", &self.url)
            .field("check", &self.check)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConnector {
    /// Connection URL of the target server; may hold a password, never printed.
    pub url: String,
    /// Template of the database user a requester maps to (see [`UserTemplate`]).
    pub user: String,
    /// End the user's open sessions on revoke (a session that ran `SET ROLE` keeps the role).
    pub terminate_sessions: bool,
    pub timeout: Span,
    pub max_attempts: u32,
}

impl fmt::Debug for PostgresConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConnector")
            .field("user", &self.user)
            .field("terminate_sessions", &self.terminate_sessions)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// A text with placeholders that names something after a user: `{email}`, `{local}` (the part
/// of the email before `@`) and `{attr.NAME}` (the user's attribute `NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserTemplate(Vec<TemplatePart>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum TemplatePart {
    Text(String),
    Email,
    Local,
    Attr(String),
}

impl UserTemplate {
    pub fn parse(text: &str) -> Result<UserTemplate, String> {
        let mut parts = vec![];
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed {{ in {text:?}"))?;
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "email" => TemplatePart::Email,
                "local" => TemplatePart::Local,
                _ => match name.strip_prefix("attr.") {
                    Some(a) if !a.is_empty() => TemplatePart::Attr(a.to_owned()),
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}} in {text:?}: use {{email}}, {{local}} or {{attr.NAME}}"
                        ));
                    }
                },
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("the template is empty".into());
        }
        Ok(UserTemplate(parts))
    }

    /// The name for `email`, or why there is none (a missing attribute).
    pub fn render(
        &self,
        email: &str,
        attributes: Option<&BTreeMap<String, String>>,
    ) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Email => out.push_str(email),
                TemplatePart::Local => out.push_str(email.split('@').next().unwrap_or(email)),
                TemplatePart::Attr(a) => out.push_str(
                    attributes
                        .and_then(|m| m.get(a))
                        .ok_or_else(|| format!("user {email} has no attribute {a:?}"))?,
                ),
            }
        }
        Ok(out)
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ExecConnector {
    pub grant_command: Vec<String>,
    pub revoke_command: Vec<String>,
    /// Optional: exit 0 when the grant is in effect, 1 when it is not.
    pub check_command: Option<Vec<String>>,
    pub timeout: Span,
    /// Activation attempts before the grant is marked failed (revocation never gives up).
    pub max_attempts: u32,
    /// Extra environment for the program; values may be secrets and are never printed.
    pub env: BTreeMap<String, String>,
    /// The directory of the configuration file, where relative commands are resolved.
    pub dir: PathBuf,
}

impl fmt::Debug for ExecConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecConnector")
            .field("grant_command", &self.grant_command)
            .field("revoke_command", &self.revoke_command)
            .field("check_command", &self.check_command)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A resolved, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub directory: Directory,
    pub connectors: BTreeMap<String, ConnectorDef>,
    pub resources: BTreeMap<String, ResourceDef>,
    /// Where dynamic field options come from, by resource and then field name.
    pub field_options: BTreeMap<String, BTreeMap<String, OptionsSource>>,
    /// The OpenID Connect issuer the portal signs people in with, if any.
    pub oidc: Option<OidcConfig>,
    /// Signed checkpoints of the audit chain, when the `audit` block turns them on.
    pub audit: Option<AuditConfig>,
    /// Every policy reference with where it is written (`file:line: in resource "x"`), so
    /// that a query the bundle does not define is reported at its line.
    pub policy_sites: Vec<(PolicyRef, String)>,
    /// Where notifications go, by name.
    pub channels: BTreeMap<String, Channel>,
    /// The notification router's rules: the `notify` blocks, or the default rules when there
    /// are none (`domain::notify::default_rules`).
    pub notify: Vec<NotifyRule>,
    /// Gated runbooks (issue 17), by name, each with its checked workflow.
    pub runbooks: BTreeMap<String, runbook::Runbook>,
    /// The action stores whose programs runbooks' action steps run, by name.
    pub action_stores: BTreeMap<String, runbook::ActionStore>,
}

/// A `channel` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    Email(EmailChannel),
    Webhook(WebhookChannel),
    Slack(SlackChannel),
}

impl Config {
    /// The Slack channel, if there is one (at most one).
    pub fn slack(&self) -> Option<(&str, &SlackChannel)> {
        self.channels.iter().find_map(|(n, c)| match c {
            Channel::Slack(s) => Some((n.as_str(), s)),
            _ => None,
        })
    }
}

impl Channel {
    /// How the channel delivers: one message per person, or one copy of each event.
    pub fn reach(&self) -> Reach {
        match self {
            // A linked person's direct messages; `slack:#channel` for a channel.
            Channel::Email(_) | Channel::Slack(_) => Reach::People,
            Channel::Webhook(_) => Reach::Event,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Email(_) => "email",
            Channel::Webhook(_) => "webhook",
            Channel::Slack(_) => "slack",
        }
    }
}

/// How an email channel secures its SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (refused if the server cannot).
    Starttls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// No TLS: only to loopback or to hosts `outbound_allow` lists.
    None,
}

#[derive(Clone, PartialEq, Eq)]
pub struct EmailChannel {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender address (`Countersign <countersign@example.com>` or a bare address).
    pub from: String,
    /// How long one message may take, connection included.
    pub timeout: Span,
}

impl fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailChannel")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct WebhookChannel {
    pub url: String,
    /// The Standard Webhooks signing key.
    pub secret: String,
    pub timeout: Span,
}

impl fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A `slack` channel: the Slack app (issue 16). Messages go through the Web API at `api_url`
/// with the bot token; Slack's requests to `/slack/events` are verified with the signing
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SlackChannel {
    /// `xoxb-…`, sent as `Authorization: Bearer`.
    pub bot_token: String,
    /// Verifies `X-Slack-Signature` (rule 35).
    pub signing_secret: String,
    /// The Web API's base URL, ending in `/` (`https://slack.com/api/`).
    pub api_url: String,
    /// Link a Slack user by the email `users.info` gives (off: a profile email is not proof).
    pub match_by_email: bool,
    /// How Slack's requests reach the server.
    pub mode: SlackMode,
    /// The least time between two messages posted to one Slack channel (Slack takes about one
    /// a second); zero does not pace.
    pub per_channel_interval: Span,
    /// How long one Web API call may take.
    pub timeout: Span,
}

/// How Slack's requests (commands, clicks, modals) reach the server.
#[derive(Clone, PartialEq, Eq)]
pub enum SlackMode {
    /// Slack POSTs them to `/slack/events`, signed.
    Http,
    /// The server opens a WebSocket to Slack (`apps.connections.open`, with this app-level
    /// token, `xapp-…`) and they come over it: no public ingress needed.
    Socket { app_token: String },
}

impl SlackChannel {
    /// The URL of one Web API method.
    pub fn method_url(&self, method: &str) -> String {
        format!("{}{method}", self.api_url)
    }
}

impl fmt::Debug for SlackChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackChannel")
            .field("api_url", &self.api_url)
            .field("match_by_email", &self.match_by_email)
            .field(
                "mode",
                &match self.mode {
                    SlackMode::Http => "http",
                    SlackMode::Socket { .. } => "socket",
                },
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
