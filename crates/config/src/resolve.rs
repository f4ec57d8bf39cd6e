//! Raw structs → a checked [`Config`]: references resolved, durations parsed and bounded,
//! reviewer lists turned into domain types.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use domain::notify::{Audience, NotifyEvent, NotifyRule, Reach, Via};
use domain::{
    ActionDef, AppDef, BreakGlassDef, Directory, Escalation, FieldDef, FieldType, Input, PolicyRef,
    Principal, ResourceDef, Reviewers, Span, StepDef, UserDef, Workflow,
};

use crate::load::{Loc, RawConfig};
use crate::raw::*;
use crate::{
    AuditConfig, CallbackSettings, Channel, CheckpointWebhook, Config, ConfigError, ConnectorDef,
    EmailChannel, ExecConnector, HttpLimits, OidcConfig, OptionsSource, OutboundAllow,
    PostgresConnector, ServerConfig, SlackChannel, SlackMode, SmtpTls, UserTemplate,
    WebhookChannel, WebhookConnector,
};

const DEFAULT_PENDING_TTL: u64 = 24 * 3600;
const DEFAULT_CONNECTOR_TIMEOUT: u64 = 30;
const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_RECONCILE_SECS: u64 = 300;
const DEFAULT_EXPIRY_NOTICE_SECS: u64 = 900;
const DEFAULT_POLICY_INTERVAL_SECS: u64 = 300;
/// Connections to the database when `database_pool` is not set.
const DEFAULT_DATABASE_POOL: u32 = 8;
const DEFAULT_POLICY_TIMEOUT_MS: u64 = 100;
const MAX_POLICY_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;
const DEFAULT_SESSION_TTL_SECS: u64 = 12 * 3600;
/// The shortest HTTP timeout accepted (tests use a few hundred milliseconds).
const MIN_HTTP_TIMEOUT_MS: u64 = 100;
const MAX_CONNECTIONS: u64 = 1_000_000;
const DEFAULT_CHECKPOINT_SECS: u64 = 300;
const DEFAULT_CHECKPOINT_WEBHOOK_TIMEOUT_SECS: u64 = 10;

pub(crate) fn resolve(raw: RawConfig, errors: &mut Vec<ConfigError>) -> Config {
    let defaults = RawServer::default();
    let (sloc, s) = match raw.server {
        Some((loc, s)) => (Some(loc), s),
        None => (None, defaults),
    };
    let listen = s.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    // `off` (or `0s`) turns the setting off.
    let mut server_span = |key: &str, text: Option<String>, default: u64| match (&sloc, text) {
        (_, Some(t)) if matches!(t.as_str(), "off" | "0" | "0s") => Span::from_secs(0),
        (Some(loc), Some(t)) => {
            span(loc, key, Some(&t), errors).unwrap_or(Span::from_secs(default))
        }
        _ => Span::from_secs(default),
    };
    let reconcile_interval = server_span(
        "reconcile_interval",
        s.reconcile_interval,
        DEFAULT_RECONCILE_SECS,
    );
    let expiry_notice = server_span("expiry_notice", s.expiry_notice, DEFAULT_EXPIRY_NOTICE_SECS);
    let policy_interval = server_span(
        "policy_interval",
        s.policy_interval,
        DEFAULT_POLICY_INTERVAL_SECS,
    );
    let d = CallbackSettings::default();
    let callbacks = CallbackSettings {
        timeout: server_span("callback_timeout", s.callback_timeout, d.timeout.secs()),
        retry_base: server_span(
            "callback_retry_base",
            s.callback_retry_base,
            d.retry_base.secs(),
        ),
        retry_cap: server_span(
            "callback_retry_cap",
            s.callback_retry_cap,
            d.retry_cap.secs(),
        ),
        retry_for: server_span(
            "callback_retry_for",
            s.callback_retry_for,
            d.retry_for.secs(),
        ),
    };
    let idempotency_ttl = server_span(
        "idempotency_ttl",
        s.idempotency_ttl,
        DEFAULT_IDEMPOTENCY_TTL_SECS,
    );
    let session_ttl = server_span("session_ttl", s.session_ttl, DEFAULT_SESSION_TTL_SECS);
    let policy_timeout_ms = match (&sloc, s.policy_timeout) {
        (Some(loc), Some(t)) => match millis(&t) {
            Ok(ms) if (1..=MAX_POLICY_TIMEOUT_MS).contains(&ms) => ms,
            Ok(_) => {
                errors.push(loc.err(
                    Some("policy_timeout"),
                    format!("policy_timeout must be between 1ms and {MAX_POLICY_TIMEOUT_MS}ms"),
                ));
                DEFAULT_POLICY_TIMEOUT_MS
            }
            Err(e) => {
                errors.push(loc.err(Some("policy_timeout"), e));
                DEFAULT_POLICY_TIMEOUT_MS
            }
        },
        _ => DEFAULT_POLICY_TIMEOUT_MS,
    };
    let http = http_limits(
        sloc.as_ref(),
        [s.header_read_timeout, s.body_timeout, s.idle_timeout],
        s.max_connections,
        errors,
    );
    let outbound_allow = match OutboundAllow::parse(&s.outbound_allow) {
        Ok(a) => a,
        Err(e) => {
            if let Some(loc) = &sloc {
                errors.push(loc.err(Some("outbound_allow"), e));
            }
            OutboundAllow::default()
        }
    };
    let database_pool = s.database_pool.unwrap_or(DEFAULT_DATABASE_POOL);
    if let Some(loc) = &sloc
        && !(1..=256).contains(&database_pool)
    {
        errors.push(loc.err(
            Some("database_pool"),
            "database_pool must be between 1 and 256",
        ));
    }
    if let Some(loc) = &sloc {
        let bounds = [
            ("callback_timeout", callbacks.timeout, 1, 300),
            ("callback_retry_base", callbacks.retry_base, 1, 3600),
            (
                "callback_retry_cap",
                callbacks.retry_cap,
                callbacks.retry_base.secs().max(1),
                7 * 86400,
            ),
            ("callback_retry_for", callbacks.retry_for, 0, 30 * 86400),
            ("idempotency_ttl", idempotency_ttl, 60, 30 * 86400),
            ("session_ttl", session_ttl, 300, 30 * 86400),
        ];
        for (key, v, min, max) in bounds {
            if !(min..=max).contains(&v.secs()) {
                errors.push(loc.err(
                    Some(key),
                    format!(
                        "{key} must be between {} and {}",
                        Span::from_secs(min),
                        Span::from_secs(max)
                    ),
                ));
            }
        }
    }
    let server = ServerConfig {
        public_url: s.public_url.unwrap_or_else(|| format!("http://{listen}")),
        listen,
        database: s
            .database
            .unwrap_or_else(|| "sqlite://countersign.db".into()),
        database_pool,
        database_poll_only: s.database_poll_only.unwrap_or(false),
        reconcile_interval,
        expiry_notice,
        policy_interval,
        policy_timeout_ms,
        outbound_allow,
        callbacks,
        idempotency_ttl,
        session_ttl,
        http,
    };
    let oidc = raw
        .oidc
        .and_then(|(loc, o)| oidc(&loc, o, &server.outbound_allow, errors));
    let audit = raw
        .audit
        .and_then(|(loc, a)| audit(&loc, a, &server.outbound_allow, errors));

    // Users and groups first: everything else refers to them.
    let mut users = BTreeMap::new();
    for (loc, name, u) in raw.users {
        if !matches!(Principal::parse(&name), Ok(Principal::User(_))) {
            errors.push(loc.err(None, format!("{name:?} is not an email address")));
            continue;
        }
        if users.contains_key(&name) {
            errors.push(loc.err(None, format!("user {name:?} is defined twice")));
            continue;
        }
        let mut def = UserDef::default();
        for g in u.groups {
            if !valid_name(&g) {
                errors.push(loc.err(Some("groups"), format!("invalid group name {g:?}")));
            }
            def.groups.insert(g);
        }
        for r in u.roles {
            match r.as_str() {
                "admin" => def.admin = true,
                other => errors.push(loc.err(
                    Some("roles"),
                    format!("unknown role {other:?}; the one role is admin"),
                )),
            }
        }
        for (k, v) in u.attributes {
            if !valid_name(&k) {
                errors.push(loc.err(Some("attributes"), format!("invalid attribute name {k:?}")));
            }
            def.attributes.insert(k, v);
        }
        users.insert(name, def);
    }
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (loc, name, g) in raw.groups {
        if !valid_name(&name) {
            errors.push(loc.err(None, format!("invalid group name {name:?}")));
            continue;
        }
        if groups.contains_key(&name) {
            errors.push(loc.err(None, format!("group {name:?} is defined twice")));
            continue;
        }
        for m in &g.members {
            if !users.contains_key(m) {
                errors.push(loc.err(
                    Some("members"),
                    format!("unknown user {m:?}: declare it with a user block"),
                ));
            }
        }
        groups.insert(name, g.members.into_iter().collect());
    }
    let mut apps = BTreeMap::new();
    for (loc, name, a) in raw.apps {
        if !valid_name(&name) {
            errors.push(loc.err(None, format!("invalid app name {name:?}")));
            continue;
        }
        if apps.contains_key(&name) {
            errors.push(loc.err(None, format!("app {name:?} is defined twice")));
            continue;
        }
        let mut def = AppDef::default();
        for r in a.roles {
            match r.as_str() {
                "request_approval" => def.request_approval = true,
                "admin" => def.admin = true,
                other => errors.push(loc.err(
                    Some("roles"),
                    format!("unknown app role {other:?}; use request_approval or admin"),
                )),
            }
        }
        apps.insert(name, def);
    }
    let directory = Directory::new(users, groups).with_apps(apps);

    let mut connectors = BTreeMap::new();
    let mut approval_only = BTreeSet::new();
    for (loc, name, c) in raw.connectors {
        if connectors.contains_key(&name) || approval_only.contains(&name) {
            errors.push(loc.err(None, format!("connector {name:?} is defined twice")));
            continue;
        }
        match c.kind.as_str() {
            "none" => {
                approval_only.insert(name);
            }
            "exec" | "webhook" | "postgres" => {
                if let Some(def) = connector(&loc, c, &server.outbound_allow, errors) {
                    connectors.insert(name, def);
                }
            }
            other => errors.push(loc.err(
                Some("type"),
                format!("connector type {other:?} is not supported; supported types: exec, webhook, postgres, none"),
            )),
        }
    }

    let mut resources = BTreeMap::new();
    let mut policy_sites = vec![];
    let mut field_options = BTreeMap::new();
    let mut resource_locs = BTreeMap::new();
    for (loc, name, r) in raw.resources {
        if resources.contains_key(&name) {
            errors.push(loc.err(None, format!("resource {name:?} is defined twice")));
            continue;
        }
        if !valid_name(&name) {
            errors.push(loc.err(None, format!("invalid resource name {name:?}")));
            continue;
        }
        let before = errors.len();
        let known = Known {
            dir: &directory,
            connectors: &connectors,
            approval_only: &approval_only,
            allow: &server.outbound_allow,
        };
        let mut options = BTreeMap::new();
        let res = resource(
            &loc,
            name.clone(),
            r,
            &known,
            &mut policy_sites,
            &mut options,
            errors,
        );
        if errors.len() == before {
            if !options.is_empty() {
                field_options.insert(name.clone(), options);
            }
            resource_locs.insert(name.clone(), loc.clone());
            resources.insert(name, res);
        }
    }

    let mut channels = BTreeMap::new();
    for (loc, name, c) in raw.channels {
        if !valid_name(&name) {
            errors.push(loc.err(None, format!("invalid channel name {name:?}")));
            continue;
        }
        if channels.contains_key(&name) {
            errors.push(loc.err(None, format!("channel {name:?} is defined twice")));
            continue;
        }
        if let Some(ch) = channel(&loc, c, &server.outbound_allow, errors) {
            // Slack's requests come to one endpoint, verified with one signing secret.
            if matches!(ch, Channel::Slack(_))
                && let Some(other) = channels
                    .iter()
                    .find_map(|(n, c)| matches!(c, Channel::Slack(_)).then_some(n))
            {
                errors.push(loc.err(
                    Some("type"),
                    format!(
                        "channel {other:?} is already the slack channel; one Slack app per server"
                    ),
                ));
                continue;
            }
            channels.insert(name, ch);
        }
    }
    let mut notify = notify_rules(raw.notify, &channels, &directory, errors);
    notify.extend(break_glass_rules(
        &resources,
        &resource_locs,
        &channels,
        errors,
    ));
    // Gated runbooks (issue 17): the action stores, then each runbook's file.
    let action_stores = crate::runbook::stores(raw.action_stores, &resources, errors);
    let mut runbooks = BTreeMap::new();
    for (loc, name, r) in raw.runbooks {
        if runbooks.contains_key(&name) || !valid_name(&name) {
            errors.push(loc.err(
                None,
                format!("runbook {name:?} is defined twice or badly named"),
            ));
            continue;
        }
        if let Some(rb) =
            crate::runbook::runbook(&loc, name.clone(), r, &action_stores, &resources, errors)
        {
            runbooks.insert(name, rb);
        }
    }

    Config {
        server,
        directory,
        connectors,
        resources,
        field_options,
        oidc,
        audit,
        policy_sites,
        channels,
        notify,
        runbooks,
        action_stores,
    }
}

const DEFAULT_CHANNEL_TIMEOUT_SECS: u64 = 10;

/// A `channel` block: every key is checked against the type, as a connector's are.
fn channel(
    loc: &Loc,
    c: RawChannel,
    allow: &OutboundAllow,
    errors: &mut Vec<ConfigError>,
) -> Option<Channel> {
    let before = errors.len();
    let kind = c.kind.clone();
    let mut only = |key: &str, set: bool, of: &str| {
        if set && kind != of {
            errors.push(loc.err(
                Some(key),
                format!("{key} does not apply to a {kind} channel"),
            ));
        }
    };
    only("host", c.host.is_some(), "email");
    only("port", c.port.is_some(), "email");
    only("tls", c.tls.is_some(), "email");
    only("username", c.username.is_some(), "email");
    only("password", c.password.is_some(), "email");
    only("from", c.from.is_some(), "email");
    only("url", c.url.is_some(), "webhook");
    only("secret", c.secret.is_some(), "webhook");
    only("bot_token", c.bot_token.is_some(), "slack");
    only("signing_secret", c.signing_secret.is_some(), "slack");
    only("mode", c.mode.is_some(), "slack");
    only("app_token", c.app_token.is_some(), "slack");
    only("api_url", c.api_url.is_some(), "slack");
    only("match_by_email", c.match_by_email.is_some(), "slack");
    only(
        "per_channel_interval",
        c.per_channel_interval.is_some(),
        "slack",
    );
    let timeout = span(loc, "timeout", c.timeout.as_deref(), errors)
        .unwrap_or(Span::from_secs(DEFAULT_CHANNEL_TIMEOUT_SECS));
    if timeout.secs() == 0 || timeout.secs() > 300 {
        errors.push(loc.err(Some("timeout"), "timeout must be between 1s and 5m"));
    }
    let ch = match c.kind.as_str() {
        "email" => {
            let host = c.host.unwrap_or_default();
            if host.is_empty() {
                errors.push(loc.err(
                    Some("host"),
                    "an email channel needs host = \"smtp.example.com\"",
                ));
            }
            let tls = match c.tls.as_deref().unwrap_or("starttls") {
                "starttls" => SmtpTls::Starttls,
                "implicit" => SmtpTls::Implicit,
                "none" => SmtpTls::None,
                other => {
                    errors.push(loc.err(
                        Some("tls"),
                        format!("tls {other:?} is not one of starttls, implicit, none"),
                    ));
                    SmtpTls::Starttls
                }
            };
            // Credentials and messages in clear text only where nobody else listens.
            if tls == SmtpTls::None && !host.is_empty() && !http_allowed(&host, allow) {
                errors.push(loc.err(
                    Some("tls"),
                    format!(
                        "tls = \"none\" is allowed only to loopback or to hosts listed in the server's outbound_allow, and {host:?} is not"
                    ),
                ));
            }
            let port = c.port.unwrap_or(match tls {
                SmtpTls::Starttls => 587,
                SmtpTls::Implicit => 465,
                SmtpTls::None => 25,
            });
            if port == 0 {
                errors.push(loc.err(Some("port"), "port must be between 1 and 65535"));
            }
            if c.username.is_some() != c.password.is_some() {
                errors.push(loc.err(
                    Some(if c.username.is_some() {
                        "password"
                    } else {
                        "username"
                    }),
                    "username and password go together (read the password with env() or file())",
                ));
            }
            let from = match c.from {
                Some(f) if email_address(&f) => f,
                Some(f) => {
                    errors.push(loc.err(
                        Some("from"),
                        format!("from {f:?} is not an address (\"name@example.com\" or \"Name <name@example.com>\")"),
                    ));
                    String::new()
                }
                None => {
                    errors.push(loc.err(
                        Some("from"),
                        "an email channel needs from = \"countersign@example.com\"",
                    ));
                    String::new()
                }
            };
            Channel::Email(EmailChannel {
                host,
                port,
                tls,
                username: c.username,
                password: c.password,
                from,
                timeout,
            })
        }
        "webhook" => Channel::Webhook(WebhookChannel {
            url: signed_url(loc, c.url, allow, "a webhook channel", errors),
            secret: signing_secret(loc, c.secret, "a webhook channel", errors),
            timeout,
        }),
        "slack" => {
            let bot_token = errors_needed(
                loc,
                "bot_token",
                c.bot_token,
                "env(\"SLACK_BOT_TOKEN\")",
                errors,
            );
            let mode = match (c.mode.as_deref().unwrap_or("http"), c.app_token) {
                ("http", None) => SlackMode::Http,
                ("http", Some(_)) => {
                    errors.push(loc.err(
                        Some("app_token"),
                        "app_token is for mode = \"socket\"; in HTTP mode Slack signs its requests with the signing_secret",
                    ));
                    SlackMode::Http
                }
                ("socket", Some(t)) if t.starts_with("xapp-") => SlackMode::Socket { app_token: t },
                ("socket", _) => {
                    errors.push(loc.err(
                        Some("app_token"),
                        "mode = \"socket\" needs app_token = env(\"SLACK_APP_TOKEN\"), an app-level token (xapp-…) with connections:write",
                    ));
                    SlackMode::Http
                }
                (other, _) => {
                    errors.push(loc.err(
                        Some("mode"),
                        format!("mode {other:?} is not one of http, socket"),
                    ));
                    SlackMode::Http
                }
            };
            // Socket Mode's messages come over a connection the server opened with the app
            // token, and are not signed; HTTP mode's must be.
            let signing_secret = match (&mode, c.signing_secret) {
                (SlackMode::Socket { .. }, s) => s.unwrap_or_default(),
                (SlackMode::Http, s) => errors_needed(
                    loc,
                    "signing_secret",
                    s,
                    "env(\"SLACK_SIGNING_SECRET\")",
                    errors,
                ),
            };
            let api_url = c.api_url.unwrap_or_else(|| "https://slack.com/api/".into());
            match crate::outbound::url_host(&api_url) {
                Some((scheme, _)) if scheme == "https" => {}
                Some((scheme, host)) if scheme == "http" && allow.host(&host) => {}
                _ => errors.push(loc.err(
                    Some("api_url"),
                    "api_url must use https (plain http only to hosts listed in the server's outbound_allow)",
                )),
            }
            Channel::Slack(SlackChannel {
                bot_token,
                signing_secret,
                api_url: if api_url.ends_with('/') {
                    api_url
                } else {
                    format!("{api_url}/")
                },
                match_by_email: c.match_by_email.unwrap_or(false),
                mode,
                per_channel_interval: {
                    // "0s" turns pacing off (a duration is otherwise longer than zero).
                    let every = match c.per_channel_interval.as_deref() {
                        Some("0s") => Some(Span::from_secs(0)),
                        other => span(loc, "per_channel_interval", other, errors),
                    }
                    .unwrap_or(Span::from_secs(1));
                    if every.secs() > 60 {
                        errors.push(loc.err(
                            Some("per_channel_interval"),
                            "per_channel_interval must be at most 1m",
                        ));
                    }
                    every
                },
                timeout,
            })
        }
        other => {
            errors.push(loc.err(
                Some("type"),
                format!("channel type {other:?} is not supported; supported types: email, webhook, slack"),
            ));
            return None;
        }
    };
    (errors.len() == before).then_some(ch)
}

/// Whether `s` is an address a message can be sent to or from: `local@domain`, or
/// `Name <local@domain>`, without spaces or control characters in the address.
fn email_address(s: &str) -> bool {
    let addr = match (s.rfind('<'), s.ends_with('>')) {
        (Some(i), true) => &s[i + 1..s.len() - 1],
        _ => s,
    };
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && addr.len() <= 254
        && !addr
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        && !s.chars().any(char::is_control)
}

/// The `notify` blocks, checked against the channels and the directory; with none, the
/// default rules over every channel that reaches people.
fn notify_rules(
    raw: Vec<(Loc, String, RawNotify)>,
    channels: &BTreeMap<String, Channel>,
    dir: &Directory,
    errors: &mut Vec<ConfigError>,
) -> Vec<NotifyRule> {
    if raw.is_empty() {
        let reaching: Vec<String> = channels
            .iter()
            .filter(|(_, c)| c.reach() == Reach::People)
            .map(|(n, _)| n.clone())
            .collect();
        return domain::notify::default_rules(&reaching);
    }
    let mut names = BTreeSet::new();
    let mut rules = vec![];
    for (loc, name, n) in raw {
        if !names.insert(name.clone()) {
            errors.push(loc.err(None, format!("notify {name:?} is defined twice")));
            continue;
        }
        let mut events = BTreeSet::new();
        for e in &n.events {
            match NotifyEvent::parse(e) {
                Some(ev) => {
                    events.insert(ev);
                }
                None => errors.push(loc.err(
                    Some("events"),
                    format!(
                        "unknown event {e:?}; events: {}",
                        NotifyEvent::ALL.map(NotifyEvent::as_str).join(", ")
                    ),
                )),
            }
        }
        if n.events.is_empty() {
            errors.push(loc.err(Some("events"), "events must name at least one event"));
        }
        for g in &n.resources {
            if g.is_empty() || g.len() > 128 {
                errors.push(loc.err(
                    Some("resources"),
                    format!("{g:?} is not a resource name or glob"),
                ));
            }
        }
        let mut to = vec![];
        for t in &n.to {
            match Audience::parse(t) {
                Ok(Audience::Principal(p)) if !dir.knows(&p) => errors.push(loc.err(
                    Some("to"),
                    format!("unknown principal {t:?}: declare it with a user or group block"),
                )),
                Ok(a) => to.push(a),
                Err(e) => errors.push(loc.err(Some("to"), e)),
            }
        }
        let mut via = vec![];
        for v in &n.via {
            match check_via(v, channels) {
                Ok(parsed) => via.push(parsed),
                Err(e) => errors.push(loc.err(Some("via"), e)),
            }
        }
        if n.via.is_empty() {
            errors.push(loc.err(Some("via"), "via must name at least one channel"));
        }
        // Without an audience, a via without a destination would send nothing.
        let fixed = !via.is_empty() && via.iter().all(|v| v.destination.is_some());
        if to.is_empty() && !fixed && n.to.is_empty() {
            errors.push(loc.err(
                Some("to"),
                "to must name an audience (reviewers, requester, subject, owners, admins or principals), unless every via names a destination",
            ));
        }
        rules.push(NotifyRule {
            name,
            events,
            resources: n.resources,
            to,
            via,
        });
    }
    rules
}

/// One `via` entry (`CHANNEL` or `CHANNEL:destination`), checked against the channels.
fn check_via(v: &str, channels: &BTreeMap<String, Channel>) -> Result<Via, String> {
    let parsed = Via::parse(v);
    match (channels.get(&parsed.channel), &parsed.destination) {
        (None, _) => Err(format!(
            "unknown channel {:?}: declare it with a channel block",
            parsed.channel
        )),
        (Some(Channel::Email(_)), Some(d)) if !email_address(d) || d.contains('<') => Err(format!(
            "{v:?}: the destination of an email channel is an address"
        )),
        (Some(Channel::Webhook(_)), Some(_)) => Err(format!(
            "{v:?}: a webhook channel takes no destination (its url is the destination)"
        )),
        (Some(Channel::Slack(_)), Some(d)) if !slack_destination(d) => Err(format!(
            "{v:?}: the destination of a slack channel is #channel-name, a channel id (C…, G…, D…) or @ a member id (@U…, @W…)"
        )),
        _ => Ok(parsed),
    }
}

/// A required text key of a slack channel.
fn errors_needed(
    loc: &Loc,
    key: &str,
    value: Option<String>,
    hint: &str,
    errors: &mut Vec<ConfigError>,
) -> String {
    match value {
        Some(v) if !v.trim().is_empty() => v,
        _ => {
            errors.push(loc.err(
                Some(key),
                format!("a slack channel needs {key} = {hint} (read it with env() or file())"),
            ));
            String::new()
        }
    }
}

/// A fixed Slack destination: `#name`, a channel id, or `@` and a member id.
fn slack_destination(d: &str) -> bool {
    let id =
        |s: &str| !s.is_empty() && s.len() <= 80 && s.chars().all(|c| c.is_ascii_alphanumeric());
    match d.strip_prefix('#') {
        Some(name) => {
            !name.is_empty()
                && name.len() <= 80
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        }
        None => match d.strip_prefix('@') {
            Some(member) => id(member) && member.starts_with(['U', 'W']),
            None => id(d) && d.starts_with(['C', 'G', 'D']),
        },
    }
}

/// Rule 34: each resource's `break_glass.notify` is one more rule of the router, sending its
/// `break_glass` event to the follow-up's reviewers (on a channel that reaches people) or to
/// the destination given.
fn break_glass_rules(
    resources: &BTreeMap<String, ResourceDef>,
    locs: &BTreeMap<String, Loc>,
    channels: &BTreeMap<String, Channel>,
    errors: &mut Vec<ConfigError>,
) -> Vec<NotifyRule> {
    let mut rules = vec![];
    for (name, r) in resources {
        let (Some(bg), Some(loc)) = (&r.break_glass, locs.get(name)) else {
            continue;
        };
        let mut via = vec![];
        for v in &bg.notify {
            match check_via(v, channels) {
                Ok(parsed) => via.push(parsed),
                Err(e) => {
                    errors.push(loc.err(Some("break_glass"), format!("break_glass.notify: {e}")))
                }
            }
        }
        if !via.is_empty() {
            rules.push(NotifyRule {
                name: format!("break_glass: {name}"),
                events: BTreeSet::from([NotifyEvent::BreakGlass]),
                resources: vec![name.clone()],
                to: vec![Audience::Reviewers],
                via,
            });
        }
    }
    rules
}

/// The shortest `break_glass.review_within`: a minute, as for step timers.
const MIN_REVIEW_WITHIN_SECS: u64 = 60;

/// A resource's `break_glass` (rule 34): a maximum no longer than the resource's own, a
/// review deadline of at least a minute, and reviewers who are known people or groups. Its
/// `notify` entries are checked against the channels once those are read.
fn break_glass(
    loc: &Loc,
    b: RawBreakGlass,
    max_duration: Span,
    dir: &Directory,
    errors: &mut Vec<ConfigError>,
) -> Option<BreakGlassDef> {
    let key = "break_glass";
    let max = span(loc, key, Some(&b.max_duration), errors)?;
    if max > max_duration {
        errors.push(loc.err(
            Some(key),
            format!(
                "break_glass.max_duration {max} is longer than the resource's max_duration {max_duration}"
            ),
        ));
    }
    let within = span(loc, key, Some(&b.review_within), errors)?;
    if within.secs() < MIN_REVIEW_WITHIN_SECS {
        errors.push(loc.err(Some(key), "break_glass.review_within must be at least 1m"));
    }
    if b.reviewers.is_empty() {
        errors.push(loc.err(
            Some(key),
            "break_glass.reviewers must name at least one user or group",
        ));
    }
    let reviewers = principals(loc, key, &b.reviewers, dir, errors);
    Some(BreakGlassDef {
        max_duration: max,
        notify: b.notify,
        review_within: within,
        reviewers,
    })
}

/// Plain `http` is accepted for loopback hosts (a provider on the same machine) and for
/// hosts that `outbound_allow` lists; anything else must be `https`.
fn http_allowed(host: &str, allow: &OutboundAllow) -> bool {
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback || allow.host(host)
}

fn oidc(
    loc: &Loc,
    o: RawOidc,
    allow: &OutboundAllow,
    errors: &mut Vec<ConfigError>,
) -> Option<OidcConfig> {
    let before = errors.len();
    match crate::outbound::url_host(&o.issuer) {
        Some((scheme, _)) if scheme == "https" => {}
        Some((scheme, host)) if scheme == "http" && http_allowed(&host, allow) => {}
        Some((scheme, host)) if scheme == "http" => errors.push(loc.err(
            Some("issuer"),
            format!(
                "issuer must use https: plain http is allowed only on loopback and to hosts listed in the server's outbound_allow, and {host:?} is neither"
            ),
        )),
        _ => errors.push(loc.err(Some("issuer"), "issuer must start with https://")),
    }
    if o.issuer.contains(['?', '#']) {
        errors.push(loc.err(Some("issuer"), "issuer may not have a query or a fragment"));
    }
    for (key, v) in [
        ("client_id", &o.client_id),
        ("client_secret", &o.client_secret),
    ] {
        if v.trim().is_empty() {
            errors.push(loc.err(Some(key), format!("{key} may not be empty")));
        }
    }
    let mut scopes = o
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    if let Some(bad) = scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    }) {
        errors.push(loc.err(
            Some("scopes"),
            format!("scope {bad:?} is not a valid scope token"),
        ));
    }
    (errors.len() == before).then(|| OidcConfig {
        issuer: o.issuer.trim_end_matches('/').to_owned(),
        client_id: o.client_id,
        client_secret: o.client_secret,
        scopes,
        email_claim: o.email_claim.unwrap_or_else(|| "email".into()),
        groups_claim: o.groups_claim.unwrap_or_else(|| "groups".into()),
        require_email_verified: o.require_email_verified.unwrap_or(true),
    })
}

/// The `audit` block: a signing key that reads as an Ed25519 PKCS#8 key, a checkpoint file,
/// an interval between 1s and a day, and an optional webhook under the same URL rules as
/// `options_from` (the guard checks the address again at every post).
fn audit(
    loc: &Loc,
    a: RawAudit,
    allow: &OutboundAllow,
    errors: &mut Vec<ConfigError>,
) -> Option<AuditConfig> {
    let before = errors.len();
    let signing_key = match a.signing_key.as_deref().map(audit::SigningKey::parse) {
        Some(Ok(k)) => Some(std::sync::Arc::new(k)),
        Some(Err(e)) => {
            errors.push(loc.err(Some("signing_key"), format!("signing_key: {e}")));
            None
        }
        None => {
            errors.push(loc.err(
                None,
                "signing_key is required: the Ed25519 key that signs checkpoints, through \
                 env(\"…\") or file(\"…\") (make one with `countersign audit keygen`)",
            ));
            None
        }
    };
    let file = match a.checkpoint_file.as_deref().map(str::trim) {
        Some(f) if !f.is_empty() => Some(loc.dir.join(f)),
        Some(_) => {
            errors.push(loc.err(Some("checkpoint_file"), "checkpoint_file may not be empty"));
            None
        }
        None => {
            errors.push(loc.err(
                None,
                "checkpoint_file is required: the append-only file checkpoints are written to, \
                 outside the database",
            ));
            None
        }
    };
    let interval = span(
        loc,
        "checkpoint_interval",
        a.checkpoint_interval.as_deref(),
        errors,
    )
    .unwrap_or(Span::from_secs(DEFAULT_CHECKPOINT_SECS));
    if !(1..=86_400).contains(&interval.secs()) {
        errors.push(loc.err(
            Some("checkpoint_interval"),
            "checkpoint_interval must be between 1s and 24h",
        ));
    }
    let webhook = a.checkpoint_webhook.map(|w| {
        let at = "checkpoint_webhook";
        match crate::outbound::url_host(&w.url) {
            Some((scheme, _)) if scheme == "https" => {}
            Some((scheme, host)) if scheme == "http" && allow.host(&host) => {}
            Some((scheme, host)) if scheme == "http" => errors.push(loc.err(
                Some(at),
                format!(
                    "{at}.url must use https: plain http is allowed only to hosts listed in the server's outbound_allow, and {host:?} is not"
                ),
            )),
            _ => errors.push(loc.err(Some(at), format!("{at}.url must start with https://"))),
        }
        if w.secret.trim().is_empty() {
            errors.push(loc.err(Some(at), format!("{at}.secret may not be empty")));
        }
        let timeout = span(loc, at, w.timeout.as_deref(), errors)
            .unwrap_or(Span::from_secs(DEFAULT_CHECKPOINT_WEBHOOK_TIMEOUT_SECS));
        if !(1..=60).contains(&timeout.secs()) {
            errors.push(loc.err(
                Some(at),
                format!("{at}.timeout must be between 1s and 1m"),
            ));
        }
        CheckpointWebhook {
            url: w.url,
            secret: w.secret,
            timeout,
        }
    });
    if errors.len() != before {
        return None;
    }
    Some(AuditConfig {
        signing_key: signing_key?,
        interval,
        file: file?,
        webhook,
    })
}

/// A field's `options_from`, checked: an absolute http(s) URL (plain http only where
/// `outbound_allow` allows it; the guard checks the address again at every fetch), a JSON
/// pointer, and a cache time of at most an hour.
fn options_source(
    loc: &Loc,
    field: &str,
    o: RawOptionsFrom,
    allow: &OutboundAllow,
    errors: &mut Vec<ConfigError>,
) -> Option<OptionsSource> {
    let before = errors.len();
    let at = format!("field {field:?}: options_from");
    match crate::outbound::url_host(&o.url) {
        Some((scheme, _)) if scheme == "https" => {}
        Some((scheme, host)) if scheme == "http" && allow.host(&host) => {}
        Some((scheme, host)) if scheme == "http" => errors.push(loc.err(
            Some("field"),
            format!(
                "{at}.url must use https: plain http is allowed only to hosts listed in the server's outbound_allow, and {host:?} is not"
            ),
        )),
        _ => errors.push(loc.err(
            Some("field"),
            format!("{at}.url must start with https:// or http://"),
        )),
    }
    let items = o.items.unwrap_or_default();
    if !items.is_empty() && !items.starts_with('/') {
        errors.push(loc.err(
            Some("field"),
            format!("{at}.items must be a JSON pointer such as \"/results\""),
        ));
    }
    let cache = match o.cache.as_deref() {
        None => Span::from_secs(60),
        Some(t) => match Span::parse(t) {
            Ok(s) if s.secs() <= 3600 => s,
            Ok(_) => {
                errors.push(loc.err(Some("field"), format!("{at}.cache may be at most 1h")));
                Span::from_secs(60)
            }
            Err(e) => {
                errors.push(loc.err(Some("field"), format!("{at}.cache: {e}")));
                Span::from_secs(60)
            }
        },
    };
    (errors.len() == before).then(|| OptionsSource {
        url: o.url,
        items,
        value: o.value.unwrap_or_else(|| "value".into()),
        label: o.label,
        headers: o.headers,
        cache,
    })
}

/// A time limit written as `250ms` or as a span (`2s`).
fn millis(text: &str) -> Result<u64, String> {
    match text.trim().strip_suffix("ms") {
        Some(n) => n
            .trim()
            .parse()
            .map_err(|_| format!("invalid duration {text:?} (write it as 100ms or 1s)")),
        None => Span::parse(text)
            .map(|s| s.secs().saturating_mul(1000))
            .map_err(|e| e.to_string()),
    }
}

/// The `server` block's HTTP timeouts and connection limit, each bounded: a guard that can be
/// turned off, or set to hours, is no guard.
fn http_limits(
    loc: Option<&Loc>,
    [header_read, body, idle]: [Option<String>; 3],
    max_connections: Option<u64>,
    errors: &mut Vec<ConfigError>,
) -> HttpLimits {
    let d = HttpLimits::default();
    let Some(loc) = loc else {
        return d;
    };
    let mut timeout = |key: &str, text: &Option<String>, default: Duration, max_ms: u64| {
        let Some(text) = text else {
            return default;
        };
        match millis(text) {
            Ok(ms) if (MIN_HTTP_TIMEOUT_MS..=max_ms).contains(&ms) => Duration::from_millis(ms),
            Ok(_) => {
                errors.push(loc.err(
                    Some(key),
                    format!(
                        "{key} must be between {MIN_HTTP_TIMEOUT_MS}ms and {}",
                        Span::from_secs(max_ms / 1000)
                    ),
                ));
                default
            }
            Err(e) => {
                errors.push(loc.err(Some(key), format!("{key}: {e}")));
                default
            }
        }
    };
    let header_read_timeout = timeout(
        "header_read_timeout",
        &header_read,
        d.header_read_timeout,
        300_000,
    );
    let body_timeout = timeout("body_timeout", &body, d.body_timeout, 600_000);
    let idle_timeout = timeout("idle_timeout", &idle, d.idle_timeout, 3_600_000);
    let max_connections = match max_connections {
        None => d.max_connections,
        Some(n) if (1..=MAX_CONNECTIONS).contains(&n) => {
            usize::try_from(n).unwrap_or(d.max_connections)
        }
        Some(_) => {
            errors.push(loc.err(
                Some("max_connections"),
                format!("max_connections must be between 1 and {MAX_CONNECTIONS}"),
            ));
            d.max_connections
        }
    };
    HttpLimits {
        header_read_timeout,
        body_timeout,
        idle_timeout,
        max_connections,
    }
}

/// A connector of a type that calls something (`exec`, `webhook`, `postgres`).
fn connector(
    loc: &Loc,
    c: RawConnector,
    allow: &OutboundAllow,
    errors: &mut Vec<ConfigError>,
) -> Option<ConnectorDef> {
    let before = errors.len();
    let timeout = span(loc, "timeout", c.timeout.as_deref(), errors)
        .unwrap_or(Span::from_secs(DEFAULT_CONNECTOR_TIMEOUT));
    if timeout.secs() == 0 || timeout.secs() > 600 {
        errors.push(loc.err(Some("timeout"), "timeout must be between 1s and 10m"));
    }
    let max_attempts = c.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if max_attempts == 0 {
        errors.push(loc.err(Some("max_attempts"), "max_attempts must be at least 1"));
    }
    // Every key is checked against the type, so that a key meant for another type is an
    // error rather than a setting that silently does nothing.
    let kind = c.kind.clone();
    let mut only = |key: &str, set: bool, types: &[&str]| {
        if set && !types.contains(&kind.as_str()) {
            errors.push(loc.err(
                Some(key),
                format!("{key} does not apply to a {kind} connector"),
            ));
        }
    };
    only("grant_command", c.grant_command.is_some(), &["exec"]);
    only("revoke_command", c.revoke_command.is_some(), &["exec"]);
    only("check_command", c.check_command.is_some(), &["exec"]);
    only("env", !c.env.is_empty(), &["exec"]);
    only("url", c.url.is_some(), &["webhook", "postgres"]);
    only("secret", c.secret.is_some(), &["webhook"]);
    only("check", c.check, &["webhook"]);
    only("user", c.user.is_some(), &["postgres"]);
    only("terminate_sessions", c.terminate_sessions, &["postgres"]);

    let def = match c.kind.as_str() {
        "exec" => {
            let cmd = |v: Option<Vec<String>>, key: &str, errors: &mut Vec<ConfigError>| match v {
                Some(v) if !v.is_empty() && !v[0].is_empty() => v,
                _ => {
                    errors.push(loc.err(
                        Some(key),
                        format!("an exec connector needs {key} = [\"program\", \"arg\", …]"),
                    ));
                    vec![]
                }
            };
            let grant_command = cmd(c.grant_command, "grant_command", errors);
            let revoke_command = cmd(c.revoke_command, "revoke_command", errors);
            let check_command = c
                .check_command
                .map(|v| cmd(Some(v), "check_command", errors));
            ConnectorDef::Exec(ExecConnector {
                grant_command,
                revoke_command,
                check_command,
                timeout,
                max_attempts,
                env: c.env,
                dir: loc.dir.clone(),
            })
        }
        "webhook" => {
            let url = signed_url(loc, c.url, allow, "a webhook connector", errors);
            let secret = signing_secret(loc, c.secret, "a webhook connector", errors);
            ConnectorDef::Webhook(WebhookConnector {
                url,
                secret,
                check: c.check,
                timeout,
                max_attempts,
            })
        }
        "postgres" => {
            let url = match c.url {
                Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => u,
                _ => {
                    errors.push(loc.err(
                        Some("url"),
                        "a postgres connector needs url = \"postgres://…\" (read it with env())",
                    ));
                    String::new()
                }
            };
            let user = c.user.unwrap_or_else(|| "{local}".into());
            if let Err(e) = UserTemplate::parse(&user) {
                errors.push(loc.err(Some("user"), e));
            }
            ConnectorDef::Postgres(PostgresConnector {
                url,
                user,
                terminate_sessions: c.terminate_sessions,
                timeout,
                max_attempts,
            })
        }
        _ => return None,
    };
    (errors.len() == before).then_some(def)
}

/// The `url` of something Countersign POSTs signed JSON to (a webhook connector or channel):
/// `https`, or plain `http` to a host `outbound_allow` lists.
fn signed_url(
    loc: &Loc,
    url: Option<String>,
    allow: &OutboundAllow,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> String {
    match url {
        Some(u) => match crate::outbound::url_host(&u) {
            Some((scheme, _)) if scheme == "https" => u,
            Some((scheme, host)) if scheme == "http" && allow.host(&host) => u,
            Some((scheme, host)) if scheme == "http" => {
                errors.push(loc.err(
                    Some("url"),
                    format!(
                        "url must use https: plain http is allowed only to hosts listed in the server's outbound_allow, and {host:?} is not"
                    ),
                ));
                String::new()
            }
            _ => {
                errors.push(loc.err(Some("url"), "url must start with https:// or http://"));
                String::new()
            }
        },
        None => {
            errors.push(loc.err(Some("url"), format!("{what} needs a url")));
            String::new()
        }
    }
}

/// The key a webhook connector or channel signs with (Standard Webhooks).
fn signing_secret(
    loc: &Loc,
    secret: Option<String>,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> String {
    match secret {
        Some(s) if s.len() >= 16 => s,
        Some(_) => {
            errors.push(loc.err(
                Some("secret"),
                "secret is too short: use at least 16 characters (read it with env() or file())",
            ));
            String::new()
        }
        None => {
            errors.push(loc.err(
                Some("secret"),
                format!("{what} needs a secret to sign its calls: secret = env(\"NAME\")"),
            ));
            String::new()
        }
    }
}

/// The shortest reminder interval and escalation delay: a minute.
const MIN_STEP_TIMER_SECS: u64 = 60;

/// A step's `remind_every` and `escalate` (rule 33): at least a minute each, escalations in
/// increasing order of `after` (each counts from the step's entry), every principal known.
fn step_timers(
    loc: &Loc,
    i: usize,
    remind_every: Option<&str>,
    escalate: Vec<RawEscalate>,
    dir: &Directory,
    errors: &mut Vec<ConfigError>,
) -> (Option<Span>, Vec<Escalation>) {
    let at = format!("workflow.steps[{i}]");
    let long_enough = |key: &str, text: &str, errors: &mut Vec<ConfigError>| {
        let s = span(loc, "workflow", Some(text), errors)?;
        if s.secs() < MIN_STEP_TIMER_SECS {
            errors.push(loc.err(Some("workflow"), format!("{at}.{key} must be at least 1m")));
            return None;
        }
        Some(s)
    };
    let remind = remind_every.and_then(|t| long_enough("remind_every", t, errors));
    let mut out = vec![];
    let mut last = 0;
    for (n, e) in escalate.into_iter().enumerate() {
        let Some(after) = long_enough(&format!("escalate[{n}].after"), &e.after, errors) else {
            continue;
        };
        if after.secs() <= last {
            errors.push(loc.err(
                Some("workflow"),
                format!("{at}.escalate[{n}].after must be later than the escalation before it (each counts from the step's entry)"),
            ));
        }
        last = after.secs();
        if e.to.is_empty() {
            errors.push(loc.err(
                Some("workflow"),
                format!("{at}.escalate[{n}].to must name at least one user or group"),
            ));
        }
        let to = principals(loc, "workflow", &e.to, dir, errors);
        out.push(Escalation {
            after,
            to,
            add_reviewers: e.add_reviewers,
        });
    }
    (remind, out)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn span(loc: &Loc, key: &str, text: Option<&str>, errors: &mut Vec<ConfigError>) -> Option<Span> {
    let text = text?;
    match Span::parse(text) {
        Ok(s) => Some(s),
        Err(e) => {
            errors.push(loc.err(Some(key), format!("{key}: {e}")));
            None
        }
    }
}

fn principals(
    loc: &Loc,
    key: &str,
    list: &[String],
    dir: &Directory,
    errors: &mut Vec<ConfigError>,
) -> Vec<Principal> {
    let mut out = vec![];
    for p in list {
        match Principal::parse(p) {
            Ok(Principal::App(_)) => errors.push(loc.err(
                Some(key),
                format!("{p:?}: applications cannot review or own resources"),
            )),
            Ok(pr) if !dir.knows(&pr) => errors.push(loc.err(
                Some(key),
                format!(
                    "unknown {}: {p:?}",
                    if matches!(pr, Principal::Group(_)) {
                        "group"
                    } else {
                        "user"
                    }
                ),
            )),
            Ok(pr) => out.push(pr),
            Err(e) => errors.push(loc.err(Some(key), e.to_string())),
        }
    }
    out
}

/// A policy reference, its bundle path resolved against the file's directory, recorded with
/// where it is written.
fn policy(
    p: RawPolicyRef,
    loc: &Loc,
    key: &str,
    sites: &mut Vec<(PolicyRef, String)>,
    errors: &mut Vec<ConfigError>,
) -> PolicyRef {
    if let Some(e) = &p.enforcement {
        if key != "policies" {
            errors.push(loc.err(
                Some(key),
                format!("enforcement applies to resource policies only, not to {key}"),
            ));
        } else if e != "deny" && e != "warn" {
            errors.push(loc.err(
                Some(key),
                format!("enforcement must be \"deny\" or \"warn\", not {e:?}"),
            ));
        }
    }
    if p.bundle.trim().is_empty() {
        errors.push(loc.err(Some(key), "bundle must name a directory, .rego or .tar.gz"));
    }
    let bundle = if std::path::Path::new(&p.bundle).is_absolute() {
        p.bundle
    } else {
        loc.dir.join(&p.bundle).to_string_lossy().into_owned()
    };
    let r = PolicyRef {
        bundle,
        query: p.query,
        enforcement: p.enforcement,
    };
    let site = loc.err(Some(key), String::new());
    let at = format!("{}:{}: in {}", site.file.display(), site.line, site.block);
    sites.push((r.clone(), at));
    r
}

/// What a resource may refer to: people, connectors, and the names of approval-only ones.
struct Known<'a> {
    dir: &'a Directory,
    connectors: &'a BTreeMap<String, ConnectorDef>,
    approval_only: &'a BTreeSet<String>,
    allow: &'a OutboundAllow,
}

fn resource(
    loc: &Loc,
    name: String,
    r: RawResource,
    known: &Known<'_>,
    sites: &mut Vec<(PolicyRef, String)>,
    options: &mut BTreeMap<String, OptionsSource>,
    errors: &mut Vec<ConfigError>,
) -> ResourceDef {
    let Known {
        dir,
        connectors,
        approval_only,
        allow,
    } = *known;
    let action = action_kind(loc, &r, errors);
    let connector = match r.connector {
        Some(c) if connectors.contains_key(&c) => Some(c),
        Some(c) if approval_only.contains(&c) => None,
        Some(c) => {
            errors.push(loc.err(Some("connector"), format!("unknown connector {c:?}")));
            None
        }
        None => None,
    };
    let max_duration = match (&action, &r.max_duration) {
        // An action resource's requests ask for their claim window.
        (Some(a), _) => a.claim_within,
        (None, Some(m)) => {
            span(loc, "max_duration", Some(m), errors).unwrap_or(Span::from_secs(3600))
        }
        (None, None) => {
            errors.push(loc.err(
                None,
                "max_duration is required (how long a grant of this resource may last)",
            ));
            Span::from_secs(3600)
        }
    };
    let mut durations = vec![];
    for d in r.durations.unwrap_or_default() {
        if let Some(s) = span(loc, "durations", Some(&d), errors) {
            if s > max_duration {
                errors.push(loc.err(
                    Some("durations"),
                    format!("duration {s} is longer than max_duration {max_duration}"),
                ));
            }
            durations.push(s);
        }
    }
    durations.sort();
    durations.dedup();
    let pending_ttl = span(loc, "pending_ttl", r.pending_ttl.as_deref(), errors)
        .unwrap_or(Span::from_secs(DEFAULT_PENDING_TTL));
    let owners = principals(loc, "owners", &r.owners, dir, errors);
    if let Some(p) = &r.part_of
        && !valid_name(p)
    {
        errors.push(loc.err(Some("part_of"), format!("invalid workflow name {p:?}")));
    }

    let mut grant = BTreeMap::new();
    for (k, v) in r.grant {
        let text = match v {
            hcl::Value::String(s) => s,
            hcl::Value::Number(n) => n.to_string(),
            hcl::Value::Bool(b) => b.to_string(),
            _ => {
                errors.push(loc.err(
                    Some("grant"),
                    format!("grant.{k}: expected a string, number or bool"),
                ));
                continue;
            }
        };
        grant.insert(k, text);
    }
    if let Some(ConnectorDef::Postgres(_)) = connector.as_ref().and_then(|c| connectors.get(c))
        && !grant.contains_key("role")
    {
        errors.push(loc.err(
            Some("grant"),
            "a resource on a postgres connector needs grant = { role = \"<role to grant>\" }",
        ));
    }

    let mut fields = vec![];
    for (fname, f) in r.field {
        let kind = match (f.kind.as_str(), f.allowed_values) {
            ("enum", Some(v)) if !v.is_empty() => FieldType::Enum(v),
            ("enum", _) => {
                errors.push(loc.err(
                    Some("field"),
                    format!("field {fname:?}: an enum needs allowed_values"),
                ));
                continue;
            }
            (_, Some(_)) => {
                errors.push(loc.err(
                    Some("field"),
                    format!("field {fname:?}: allowed_values is for enum fields"),
                ));
                continue;
            }
            ("string", None) => FieldType::String,
            ("int", None) => FieldType::Int,
            ("bool", None) => FieldType::Bool,
            ("duration", None) => FieldType::Duration,
            ("user", None) => FieldType::User,
            (other, None) => {
                errors.push(loc.err(
                    Some("field"),
                    format!("field {fname:?}: unknown type {other:?}; use string, int, bool, enum, duration or user"),
                ));
                continue;
            }
        };
        let dynamic = match f.options_from {
            Some(o) if matches!(kind, FieldType::String) => {
                if let Some(src) = options_source(loc, &fname, o, allow, errors) {
                    options.insert(fname.clone(), src);
                }
                true
            }
            Some(_) => {
                errors.push(loc.err(
                    Some("field"),
                    format!("field {fname:?}: options_from is for string fields"),
                ));
                continue;
            }
            None => false,
        };
        let mut def = FieldDef {
            name: fname.clone(),
            kind,
            required: f.required,
            default: None,
            description: f.description.unwrap_or_default(),
            dynamic,
        };
        if let Some(v) = f.default {
            let input = match v {
                hcl::Value::String(s) => Input::Text(s),
                hcl::Value::Bool(b) => Input::Bool(b),
                hcl::Value::Number(n) => match n.as_i64() {
                    Some(i) => Input::Int(i),
                    None => Input::Other("number"),
                },
                _ => Input::Other("value"),
            };
            match def.parse(&input, dir) {
                Ok(v) => def.default = Some(v),
                Err(e) => errors.push(loc.err(Some("field"), format!("default: {e}"))),
            }
        }
        fields.push(def);
    }

    if r.workflow.steps.is_empty() {
        errors.push(loc.err(Some("workflow"), "workflow.steps needs at least one step"));
    }
    let mut steps = vec![];
    let slack_decisions = r.slack_decisions;
    for (i, s) in r.workflow.steps.into_iter().enumerate() {
        let at = format!("workflow.steps[{i}].reviewers");
        let rv = s.reviewers;
        let n = [
            rv.one_of.is_some(),
            rv.all_of.is_some(),
            rv.quorum.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n != 1 {
            errors.push(loc.err(
                Some("workflow"),
                format!("{at}: write exactly one of one_of, all_of or quorum"),
            ));
            continue;
        }
        let dynamic = !rv.from.is_empty();
        let check_list = |list: &[String], errors: &mut Vec<ConfigError>| {
            if list.is_empty() && !dynamic {
                errors.push(loc.err(
                    Some("workflow"),
                    format!("{at}: the reviewer list is empty"),
                ));
            }
            principals(loc, "workflow", list, dir, errors)
        };
        let reviewers = if let Some(l) = rv.one_of {
            Reviewers::OneOf(check_list(&l, errors))
        } else if let Some(l) = rv.all_of {
            Reviewers::AllOf(check_list(&l, errors))
        } else if let Some(q) = rv.quorum {
            let of = check_list(&q.of, errors);
            let people: BTreeSet<String> = of.iter().flat_map(|p| dir.people(p)).collect();
            if q.min == 0 || (!dynamic && q.min as usize > people.len()) {
                errors.push(loc.err(
                    Some("workflow"),
                    format!(
                        "{at}: quorum.min must be between 1 and the {} people it names",
                        people.len()
                    ),
                ));
            }
            Reviewers::Quorum { min: q.min, of }
        } else {
            continue;
        };
        let skip_if = s
            .skip_if
            .into_iter()
            .map(|p| policy(p, loc, "workflow", sites, errors))
            .collect();
        let reviewers_from = rv
            .from
            .into_iter()
            .map(|p| policy(p, loc, "workflow", sites, errors))
            .collect();
        let (remind_every, escalate) =
            step_timers(loc, i, s.remind_every.as_deref(), s.escalate, dir, errors);
        steps.push(StepDef {
            reviewers,
            skip_if,
            reviewers_from,
            remind_every,
            escalate,
            slack_decisions: s.slack_decisions.or(slack_decisions).unwrap_or(true),
        });
    }

    ResourceDef {
        name,
        description: r.description,
        connector,
        grant,
        max_duration,
        durations,
        owners,
        part_of: r.part_of,
        pending_ttl,
        allow_self_approval: r.allow_self_approval,
        fields,
        workflow: Workflow { steps },
        on_request: r
            .on_request
            .map(|p| policy(p, loc, "on_request", sites, errors)),
        policies: r
            .policies
            .into_iter()
            .map(|p| policy(p, loc, "policies", sites, errors))
            .collect(),
        break_glass: r
            .break_glass
            .and_then(|b| break_glass(loc, b, max_duration, dir, errors)),
        action,
    }
}

/// The shortest and longest `claim_within`.
const CLAIM_WITHIN: (Span, Span) = (Span::from_secs(60), Span::from_secs(24 * 3600));

/// A resource's `kind` (issue 18): `"access"` (the default) grants access through a
/// connector for a time; `"action"` approves one exact action, which its creator claims once
/// within `claim_within`, and so takes none of what describes a grant.
fn action_kind(loc: &Loc, r: &RawResource, errors: &mut Vec<ConfigError>) -> Option<ActionDef> {
    match r.kind.as_deref() {
        None | Some("access") => {
            if r.claim_within.is_some() {
                errors.push(loc.err(
                    Some("claim_within"),
                    "claim_within is for resources of kind = \"action\"",
                ));
            }
            None
        }
        Some("action") => {
            let given = [
                ("connector", r.connector.is_some()),
                ("grant", !r.grant.is_empty()),
                ("max_duration", r.max_duration.is_some()),
                ("durations", r.durations.is_some()),
                ("part_of", r.part_of.is_some()),
                ("break_glass", r.break_glass.is_some()),
            ];
            for (key, _) in given.into_iter().filter(|(_, set)| *set) {
                errors.push(loc.err(
                    Some(key),
                    format!(
                        "{key}: a resource of kind = \"action\" takes none; each request approves one action, claimed once within claim_within"
                    ),
                ));
            }
            let within = span(loc, "claim_within", r.claim_within.as_deref(), errors)
                .unwrap_or(domain::action::DEFAULT_CLAIM_WITHIN);
            if within < CLAIM_WITHIN.0 || within > CLAIM_WITHIN.1 {
                errors.push(loc.err(
                    Some("claim_within"),
                    format!(
                        "claim_within must be between {} and {}",
                        CLAIM_WITHIN.0, CLAIM_WITHIN.1
                    ),
                ));
            }
            Some(ActionDef {
                claim_within: within,
            })
        }
        Some(other) => {
            errors.push(loc.err(
                Some("kind"),
                format!("kind: unknown kind {other:?}; use \"access\" or \"action\""),
            ));
            None
        }
    }
}
