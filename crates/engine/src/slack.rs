//! The Slack app (issue 16): Slack is one more channel of the notification router. This module
//! holds what is Slack's own: the Web API client ([`call`]), the request's card and the
//! modals in Block Kit (written from the presenter, [`crate::present`]), the delivery of a
//! Slack notification ([`deliver`]), the check of Slack's signed requests
//! ([`verify_signature`], rule 35) and the links between Slack accounts and Countersign users.
//!
//! Every card posted about a request is recorded (`slack_messages`), and every change of the
//! request writes one "card refresh" into the outbox ([`refresh`]), which renders the request
//! as it is now and updates every copy (rule 36). A refresh renders the present, never the
//! past, so refreshes that run out of order still leave every copy current.

use std::time::Duration;

use config::{Config, SlackChannel};
use domain::notify::NotifyEvent;
use domain::{Delivery, Notice, Request, RequestState, Timestamp};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::callback::Sender;
use crate::{Engine, EngineError, present};

/// Sessions-table prefix of a link under way (`/countersign link`).
pub(crate) const LINK_PREFIX: &str = "slack-link:";

/// How long a link URL stays valid.
pub const LINK_TTL_MS: i64 = 10 * 60 * 1000;

/// The most links that may be under way at once.
const MAX_LINKS: u64 = 10_000;

/// How far a request's timestamp may be from now (Slack's own advice: five minutes).
pub const MAX_SKEW_SECS: i64 = 300;

/// The largest request body `/slack/events` reads (Slack's payloads are far smaller).
pub const MAX_BODY: usize = 64 * 1024;

/// Block Kit's limits that a card could reach: text in a section, and a button's value.
const MAX_SECTION: usize = 2900;

/// Action ids of the card's buttons and callback ids of the modals.
pub const APPROVE: &str = "cs_approve";
pub const DENY: &str = "cs_deny";
pub const VIEW: &str = "cs_view";
pub const ASSIGN: &str = "cs_assign";
pub const COMMENT: &str = "cs_comment";
pub const APPROVE_MODAL: &str = "cs_approve_modal";
pub const DENY_MODAL: &str = "cs_deny_modal";
pub const ASSIGN_MODAL: &str = "cs_assign_modal";
pub const COMMENT_MODAL: &str = "cs_comment_modal";
pub const EXTEND: &str = "cs_extend";
pub const DROP: &str = "cs_drop";
pub const EXTEND_MODAL: &str = "cs_extend_modal";
/// The runner's buttons on `run_ready` (issue 17): resume the run, or leave it for later.
pub const RESUME: &str = "cs_resume";
pub const NOT_NOW: &str = "cs_not_now";
/// The runner's select of an input step's values (issue 17).
pub const RUN_INPUT: &str = "cs_run_input";
pub const PICK_MODAL: &str = "cs_pick_modal";
pub const REQUEST_MODAL: &str = "cs_request_modal";

/// The most options a static select may hold (Block Kit's limit).
const MAX_SELECT: usize = 100;

/// Why a signed request was refused (rule 35).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Malformed,
    Stale,
    BadSignature,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Missing => "X-Slack-Request-Timestamp and X-Slack-Signature are required",
            Refused::Malformed => "X-Slack-Request-Timestamp is not a number of seconds",
            Refused::Stale => "the request's timestamp is more than five minutes from now",
            Refused::BadSignature => "the request's signature is wrong",
        })
    }
}

/// Rule 35: checks Slack's `v0` signature, HMAC-SHA256 with the signing secret over
/// `v0:<timestamp>:<body>`, in constant time, and that the timestamp is within
/// [`MAX_SKEW_SECS`] of `now`. Nothing of the body is read before this passes.
pub fn verify_signature(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> Result<(), Refused> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(Refused::Missing);
    };
    let secs: i64 = ts.trim().parse().map_err(|_| Refused::Malformed)?;
    if (now.millis().div_euclid(1000) - secs).abs() > MAX_SKEW_SECS {
        return Err(Refused::Stale);
    }
    let Some(hex_sig) = sig.strip_prefix("v0=") else {
        return Err(Refused::BadSignature);
    };
    let given = hex::decode(hex_sig).map_err(|_| Refused::BadSignature)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| Refused::BadSignature)?;
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| Refused::BadSignature)
}

/// What one Web API call came to.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub status: Option<u16>,
    /// The answer's JSON when Slack said `ok: true`.
    pub body: Option<Value>,
    pub error: Option<String>,
    pub retry_after_ms: Option<u64>,
    /// Slack refused in a way that retrying cannot fix (`channel_not_found`,
    /// `not_in_channel`, `invalid_auth`, …): shown to admins, not retried.
    pub hopeless: bool,
}

impl Reply {
    /// Nothing to send, or everything sent: a success.
    fn done() -> Reply {
        Reply {
            status: Some(200),
            ..Reply::default()
        }
    }

    /// A failure worth retrying (the store could not be read).
    fn failed(error: impl ToString) -> Reply {
        Reply {
            error: Some(error.to_string()),
            ..Reply::default()
        }
    }

    /// A failure that retrying cannot fix.
    fn hopeless(error: impl ToString) -> Reply {
        Reply {
            error: Some(error.to_string()),
            hopeless: true,
            ..Reply::default()
        }
    }

    /// Of several calls for one delivery, the answer that decides it: a failure that may yet
    /// pass is tried again with the rest; a copy that can never be reached (its channel
    /// archived, the bot removed) does not hold the others back, and fails the delivery only
    /// when nothing else did.
    fn keep_worst(&mut self, reply: Reply) {
        if reply.error.is_some() && (!reply.hopeless || self.error.is_none()) {
            *self = reply;
        }
    }
}

/// Slack's errors worth retrying; every other `ok: false` is final.
const TRANSIENT: &[&str] = &[
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// One Web API method, POSTed as JSON with the bot token, through the outbound guard and
/// within the channel's timeout.
pub(crate) async fn call(
    sender: &Sender,
    ch: &SlackChannel,
    method: &str,
    body: &Value,
    now: Timestamp,
) -> Reply {
    call_with(sender, ch, &ch.bot_token, method, body, now).await
}

/// [`call`] with another token (Socket Mode's app-level token opens its connections).
pub(crate) async fn call_with(
    sender: &Sender,
    ch: &SlackChannel,
    token: &str,
    method: &str,
    body: &Value,
    now: Timestamp,
) -> Reply {
    let failed = |error: String| Reply {
        error: Some(error),
        ..Reply::default()
    };
    let http = match sender.http() {
        Ok(h) => h,
        Err(e) => return failed(e.clone()),
    };
    let url = ch.method_url(method);
    if let Err(e) = sender.guard().check_literal(&url) {
        return failed(format!("{method}: {e}"));
    }
    let res = http
        .post(&url)
        .timeout(Duration::from_secs(ch.timeout.secs()))
        .bearer_auth(token)
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string())
        .send()
        .await;
    let resp = match res {
        Ok(r) => r,
        Err(e) => {
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "failed"
            };
            // The error would name the URL; the method is enough (and holds no secret).
            return failed(format!("Slack {method} {what}"));
        }
    };
    let status = resp.status().as_u16();
    let retry_after_ms = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::callback::retry_after_ms(v, now));
    let text = match resp.text().await {
        Ok(t) => t,
        Err(_) => {
            return Reply {
                status: Some(status),
                error: Some(format!("Slack {method}: the answer could not be read")),
                retry_after_ms,
                ..Reply::default()
            };
        }
    };
    if status == 429 || status >= 500 {
        return Reply {
            status: Some(status),
            error: Some(format!("Slack {method} answered {status}")),
            retry_after_ms,
            ..Reply::default()
        };
    }
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if v["ok"] == Value::Bool(true) {
        return Reply {
            status: Some(200),
            body: Some(v),
            ..Reply::default()
        };
    }
    let error = v["error"].as_str().unwrap_or("no error given").to_owned();
    Reply {
        // Slack answered 200 with `ok: false`: an attempt that failed, with no HTTP error to
        // show (the error text says Slack's reason).
        status: (status != 200).then_some(status),
        hopeless: !TRANSIENT.contains(&error.as_str()),
        error: Some(format!("Slack {method}: {error}")),
        retry_after_ms,
        ..Reply::default()
    }
}

/// Escapes text for Slack's mrkdwn: `&`, `<` and `>` (so that no text a person typed becomes
/// a link or a mention such as `<!channel>`), and cut to `max` characters.
pub fn escape(text: &str, max: usize) -> String {
    let cut: String = if text.chars().count() > max {
        let mut s: String = text.chars().take(max).collect();
        s.push('…');
        s
    } else {
        text.to_owned()
    };
    cut.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Markdown (a request's purpose, written by an application, so untrusted) as Slack's
/// mrkdwn: emphasis, code, lists, quotes and links kept; every text escaped (so nothing
/// becomes a mention or a link by itself); a link only to `http(s)`, its URL stripped of the
/// characters that end Slack's link syntax; images as their alt text; raw HTML as text.
pub fn mrkdwn(markdown: &str, max: usize) -> String {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut out = String::new();
    let mut links: Vec<Option<String>> = vec![];
    let mut lists: Vec<Option<u64>> = vec![];
    for ev in Parser::new(markdown) {
        match ev {
            Event::Text(t) | Event::Html(t) | Event::InlineHtml(t) => {
                out.push_str(&escape(&t, usize::MAX));
            }
            Event::Code(t) => {
                out.push('`');
                out.push_str(&escape(&t.replace('`', "'"), usize::MAX));
                out.push('`');
            }
            Event::SoftBreak | Event::HardBreak => out.push('\n'),
            Event::Rule => out.push_str("\n———\n"),
            Event::Start(Tag::Strong) | Event::End(TagEnd::Strong) => out.push('*'),
            Event::Start(Tag::Emphasis) | Event::End(TagEnd::Emphasis) => out.push('_'),
            Event::Start(Tag::Strikethrough) | Event::End(TagEnd::Strikethrough) => out.push('~'),
            Event::Start(Tag::Heading { .. }) => out.push('*'),
            Event::End(TagEnd::Heading(_)) => out.push_str("*\n"),
            Event::Start(Tag::BlockQuote(_)) => out.push_str("> "),
            Event::Start(Tag::CodeBlock(_)) => out.push_str("```\n"),
            Event::End(TagEnd::CodeBlock) => out.push_str("```\n"),
            Event::End(TagEnd::Paragraph) => out.push('\n'),
            Event::Start(Tag::List(first)) => lists.push(first),
            Event::End(TagEnd::List(_)) => {
                lists.pop();
            }
            Event::Start(Tag::Item) => {
                let marker = match lists.last_mut() {
                    Some(Some(n)) => {
                        let m = format!("{n}. ");
                        *n += 1;
                        m
                    }
                    _ => "• ".to_owned(),
                };
                out.push_str(&"    ".repeat(lists.len().saturating_sub(1)));
                out.push_str(&marker);
            }
            Event::End(TagEnd::Item) if !out.ends_with('\n') => out.push('\n'),
            Event::Start(Tag::Link { dest_url, .. }) => {
                let safe = (dest_url.starts_with("https://") || dest_url.starts_with("http://"))
                    .then(|| {
                        dest_url
                            .chars()
                            .filter(|c| !matches!(c, '<' | '>' | '|') && !c.is_control())
                            .collect::<String>()
                    });
                if safe.is_some() {
                    out.push('<');
                    out.push_str(safe.as_deref().unwrap_or_default());
                    out.push('|');
                }
                links.push(safe);
            }
            Event::End(TagEnd::Link) => {
                let linked = links.pop().flatten().is_some();
                if linked {
                    out.push('>');
                }
            }
            _ => {}
        }
    }
    let text = out.trim_end().to_owned();
    if text.chars().count() > max {
        let mut s: String = text.chars().take(max).collect();
        s.push('…');
        s
    } else {
        text
    }
}

/// The events whose Slack message is the request's card (with its buttons while it waits);
/// every other event is a plain message.
fn is_card(event: NotifyEvent) -> bool {
    matches!(
        event,
        NotifyEvent::RequestCreated
            | NotifyEvent::StepEntered
            | NotifyEvent::Reminder
            | NotifyEvent::Escalated
            | NotifyEvent::Assigned
            | NotifyEvent::BreakGlass
    )
}

/// The events after which every posted card is brought up to date; the request's end is
/// also said in each card's thread.
fn changes_card(event: NotifyEvent) -> bool {
    matches!(
        event,
        NotifyEvent::StepEntered
            | NotifyEvent::Escalated
            | NotifyEvent::Assigned
            | NotifyEvent::RequestApproved
            | NotifyEvent::RequestDenied
            | NotifyEvent::RequestCancelled
            | NotifyEvent::RequestExpired
    )
}

/// The event a refresh of `r` as it is now stands for: its outcome once it has ended (so the
/// thread says it), a step's entry while it waits.
pub(crate) fn refresh_event(r: &Request) -> NotifyEvent {
    match r.state {
        RequestState::Approved => NotifyEvent::RequestApproved,
        RequestState::Denied => NotifyEvent::RequestDenied,
        RequestState::Cancelled => NotifyEvent::RequestCancelled,
        RequestState::Expired => NotifyEvent::RequestExpired,
        RequestState::Pending => NotifyEvent::StepEntered,
    }
}

fn ends_request(event: NotifyEvent) -> bool {
    matches!(
        event,
        NotifyEvent::RequestApproved
            | NotifyEvent::RequestDenied
            | NotifyEvent::RequestCancelled
            | NotifyEvent::RequestExpired
    )
}

/// The card refresh an event causes, if the configuration has a Slack channel and the event
/// changes what a card shows: one delivery per event, sent to no one in particular (`to:
/// None`), that updates every recorded copy.
pub(crate) fn refresh(
    config: &Config,
    id: String,
    request: &str,
    event: NotifyEvent,
    seq: i64,
    at: Timestamp,
    body: String,
) -> Option<Delivery> {
    let (name, ch) = config.slack()?;
    if !changes_card(event) && event != NotifyEvent::CommentAdded {
        return None;
    }
    let notice = Notice {
        channel: name.to_owned(),
        event,
        to: None,
        people: vec![],
        seq,
    };
    Some(Delivery::notification(
        id,
        request,
        ch.api_url.clone(),
        notice,
        body,
        at,
    ))
}

/// The body of a comment's thread post: who wrote what, as the comment was made.
pub(crate) fn comment_body(r: &Request) -> String {
    r.comments
        .last()
        .map(|c| json!({ "by": c.by, "text": c.text }).to_string())
        .unwrap_or_else(|| "{}".into())
}

/// Whether the request's current step keeps its decisions in the portal (item 7: the
/// resource's or step's `slack_decisions = false`).
pub fn portal_only(r: &Request) -> bool {
    r.current_step()
        .and_then(|i| r.steps.get(i))
        .is_some_and(|s| !s.slack_decisions)
        || action_block(r).is_some_and(|(_, whole)| !whole)
}

/// An action (issue 18) as Slack shows it: the tool, the arguments in a code block and the
/// digest, and whether the arguments are shown whole. Slack's mrkdwn has no escape for a
/// backtick, so each one in the tool or the arguments is shown as `ˋ` (U+02CB): nothing can
/// close the code and be read as formatting. Arguments too long to show whole are not shown:
/// such a request is decided in the portal only, where the whole action is shown.
fn action_block(r: &Request) -> Option<(String, bool)> {
    let a = present::action(r)?;
    let code = |t: &str| escape(t, usize::MAX).replace('`', "\u{2cb}");
    let (tool, arguments) = (code(&a.tool), code(&a.arguments_text()));
    let text = format!(
        "*Action:* `{tool}`\n```{arguments}```\n*Digest:* `{}`",
        a.digest
    );
    // Whole, or not at all: the section is never cut (`cut`) in the middle of an action.
    if text.chars().count() <= MAX_SECTION {
        return Some((text, true));
    }
    let short = format!(
        "*Action:* `{}`\n_The action is too long to show here ({} characters): decide in the portal, which shows it whole._\n*Digest:* `{}`",
        code(&cut_to(&a.tool, 60)),
        a.arguments_text().chars().count(),
        a.digest
    );
    Some((short, false))
}

/// The request's card: who asks for what and why, its fields, warnings and why these
/// reviewers, where it stands (the presenter's sentences), and, while it waits, the buttons.
pub fn card(r: &Request, config: &Config) -> Value {
    let url = present::portal_url(&config.server.public_url, &r.id);
    let summary = present::summary(r);
    let description = config
        .resources
        .get(&r.resource)
        .map(|d| d.description.clone())
        .unwrap_or_default();
    let mut head = format!(
        "*{}* asks for *{}*",
        escape(&r.requester, 200),
        escape(&r.resource, 200)
    );
    if let Some(app) = &r.context.created_by {
        head.push_str(&format!(" (through {})", escape(app, 200)));
    }
    if !description.is_empty() {
        head.push('\n');
        head.push_str(&escape(&description, 500));
    }
    // Issue 18: the exact action, as the reviewer approves it, in a section of its own.
    let action = action_block(r);
    let mut facts = match &action {
        Some(_) => vec![],
        None => vec![format!("*Duration:* {}", present::human_span(r.duration))],
    };
    facts.push(format!("*Reason:* {}", escape(&r.reason, 1000)));
    for (k, v) in &r.fields {
        facts.push(format!(
            "*{}:* {}",
            escape(k, 100),
            escape(&present::field_text(v), 300)
        ));
    }
    if let Some(p) = &r.context.purpose {
        facts.push(format!("*Purpose:* {}", mrkdwn(p, 1500)));
    }
    if let Some(link) = &r.context.reference_url {
        // Only http(s) links become links; Slack's `<url|text>` with the text escaped.
        if link.starts_with("https://") || link.starts_with("http://") {
            let safe: String = link
                .chars()
                .filter(|c| !matches!(c, '<' | '>' | '|') && !c.is_control())
                .collect();
            facts.push(format!("*Reference:* <{safe}|{}>", escape(link, 200)));
        }
    }
    let mut blocks =
        vec![json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(&head) } })];
    if let Some((text, _)) = action {
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(&text) } }));
    }
    blocks.push(
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(&facts.join("\n")) } }),
    );
    for w in r.warnings.iter().take(5) {
        blocks.push(json!({ "type": "context", "elements": [
            { "type": "mrkdwn", "text": format!(":warning: {}", escape(w, 1000)) }
        ] }));
    }
    let why = crate::Engine::explain_loaded(r).lines;
    if !why.is_empty() && r.state == RequestState::Pending {
        let text: Vec<String> = why.iter().take(8).map(|l| escape(l, 300)).collect();
        blocks.push(json!({ "type": "context", "elements": [
            { "type": "mrkdwn", "text": cut(&format!("*Why these reviewers:* {}", text.join("; "))) }
        ] }));
    }
    let mut status = format!("*{}*", escape(&summary.status, 1500));
    if !summary.waiting_on.is_empty() {
        status.push_str(&format!(
            "\nWaiting on: {}",
            escape(&summary.waiting_on.join(", "), 1000)
        ));
    }
    blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(&status) } }));
    let view = json!({ "type": "button", "action_id": VIEW,
        "text": { "type": "plain_text", "text": "View" }, "url": url });
    let elements = if r.state == RequestState::Pending && portal_only(r) {
        vec![
            json!({ "type": "button", "action_id": VIEW, "style": "primary",
            "text": { "type": "plain_text", "text": "Review in portal" }, "url": url }),
        ]
    } else if r.state == RequestState::Pending {
        vec![
            json!({ "type": "button", "action_id": APPROVE, "style": "primary", "value": r.id,
                "text": { "type": "plain_text", "text": "Approve" } }),
            json!({ "type": "button", "action_id": DENY, "style": "danger", "value": r.id,
                "text": { "type": "plain_text", "text": "Deny" } }),
            json!({ "type": "button", "action_id": ASSIGN, "value": r.id,
                "text": { "type": "plain_text", "text": "Assign" } }),
            json!({ "type": "button", "action_id": COMMENT, "value": r.id,
                "text": { "type": "plain_text", "text": "Comment" } }),
            view,
        ]
    } else {
        vec![
            json!({ "type": "button", "action_id": COMMENT, "value": r.id,
                "text": { "type": "plain_text", "text": "Comment" } }),
            view,
        ]
    };
    blocks.push(json!({ "type": "actions", "block_id": "cs_actions", "elements": elements }));
    json!({
        "text": format!("{} asks for {}: {}", r.requester, r.resource, summary.status),
        "blocks": blocks,
    })
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_SECTION {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(MAX_SECTION).collect();
        s.push('…');
        s
    }
}

/// A plain message (every event that is not a card): the presenter's headline and lines.
fn message(payload: &crate::notify::Payload) -> Value {
    let request = payload.data.request.as_deref();
    let grant = payload.data.grant.as_ref();
    let run = payload.data.run.as_deref();
    let headline = present::headline(payload.kind, request, grant, run);
    let lines: Vec<String> = present::lines(request, grant, run)
        .into_iter()
        .map(|(k, v)| format!("*{k}:* {}", escape(&v, 500)))
        .collect();
    let mut buttons = vec![];
    // The requester's grant is about to end: extend it or drop it from here (rule 19).
    if let (NotifyEvent::GrantExpiring, Some(g)) = (payload.kind, grant) {
        buttons.push(
            json!({ "type": "button", "action_id": EXTEND, "value": g.id,
            "style": "primary", "text": { "type": "plain_text", "text": "Extend" } }),
        );
        buttons.push(json!({ "type": "button", "action_id": DROP, "value": g.id,
            "style": "danger", "text": { "type": "plain_text", "text": "Drop" },
            "confirm": {
                "title": { "type": "plain_text", "text": "Drop this access?" },
                "text": { "type": "plain_text", "text": "The access ends now." },
                "confirm": { "type": "plain_text", "text": "Drop" },
                "deny": { "type": "plain_text", "text": "Keep" } } }));
    }
    // The run's access is in effect: its runner resumes it from here, or not now (rule 37:
    // it goes on only by their choice).
    if let (NotifyEvent::RunReady, Some(run)) = (payload.kind, request.and_then(|r| r.run.as_ref()))
    {
        // The value names the stop too: a click on an old message never resumes the run
        // from a later one.
        buttons.push(json!({ "type": "button", "action_id": RESUME,
            "value": format!("{}/{}", run.id, run.step),
            "style": "primary", "text": { "type": "plain_text", "text": "Resume" } }));
        buttons.push(
            json!({ "type": "button", "action_id": NOT_NOW, "value": run.id,
            "text": { "type": "plain_text", "text": "Not now" } }),
        );
    }
    buttons.push(
        json!({ "type": "button", "action_id": VIEW, "url": payload.data.url,
        "text": { "type": "plain_text", "text": "View" } }),
    );
    let mut blocks = vec![
        json!({ "type": "section", "text": { "type": "mrkdwn",
            "text": cut(&format!("*{}*", escape(&headline, 500))) } }),
        json!({ "type": "section", "text": { "type": "mrkdwn",
            "text": cut(&lines.join("\n")) } }),
    ];
    blocks.extend(run.and_then(input_select));
    blocks.push(json!({ "type": "actions", "elements": buttons }));
    json!({ "text": headline, "blocks": blocks })
}

/// A run's input step as a select (issue 17), when it offers values Slack can show: at most
/// [`MAX_SELECT`] of them, each 1 to 150 characters as text (Block Kit's limits on an
/// option). The block's id names the run and the step, so that a choice made on an
/// old message never answers a later step. Otherwise the runner answers in the portal.
fn input_select(run: &proto::RunView) -> Option<Value> {
    let input = run.input.as_ref()?;
    let values = input.possible_values.as_ref()?;
    if values.is_empty() || values.len() > MAX_SELECT {
        return None;
    }
    let options = values
        .iter()
        .map(|v| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (!text.is_empty() && text.chars().count() <= 150).then(|| {
                json!({ "text": { "type": "plain_text", "text": short(&text, 75) },
                        "value": text })
            })
        })
        .collect::<Option<Vec<Value>>>()?;
    Some(json!({
        "type": "actions",
        "block_id": format!("{}/{}", run.id, input.step),
        "elements": [{
            "type": "static_select",
            "action_id": RUN_INPUT,
            "placeholder": { "type": "plain_text", "text": "Answer" },
            "options": options,
        }],
    }))
}

/// At most `max` characters, with an ellipsis when cut (Block Kit's limit on a text).
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s.push('…');
    s
}

/// The approve modal: the duration from the closed set up to the requested one (required),
/// "Approve entire workflow" when the resource is part of one, and a comment.
pub fn approve_modal(r: &Request) -> Value {
    let options: Vec<Value> = present::approve_spans(r)
        .into_iter()
        .map(|s| {
            json!({ "text": { "type": "plain_text", "text": present::human_span(s) },
                    "value": s.to_string() })
        })
        .collect();
    let initial = options
        .iter()
        .find(|o| o["value"] == r.duration.to_string())
        .cloned();
    let mut select = json!({ "type": "static_select", "action_id": "duration",
        "options": options });
    if let Some(i) = initial {
        select["initial_option"] = i;
    }
    let mut blocks = vec![
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(&format!(
            "*{}* asks for *{}* for {}: {}",
            escape(&r.requester, 200), escape(&r.resource, 200),
            present::human_span(r.duration), escape(&r.reason, 1000))) } }),
    ];
    // Issue 18: the action being approved, whole (a longer one is decided in the portal).
    if let Some((text, _)) = action_block(r) {
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(&text) } }));
    }
    blocks.push(json!({ "type": "input", "block_id": "duration", "label":
        { "type": "plain_text", "text": "Duration" }, "element": select }));
    if let Some(w) = &r.part_of {
        blocks.push(json!({ "type": "input", "block_id": "scope", "optional": true,
            "label": { "type": "plain_text", "text": "Workflow" },
            "element": { "type": "checkboxes", "action_id": "scope", "options": [
                { "text": { "type": "plain_text", "text": "Approve entire workflow" },
                  "description": { "type": "plain_text", "text": cut(&format!("Every resource of {w}")) },
                  "value": "workflow" }
            ] } }));
    }
    blocks.push(comment_input(true));
    modal(
        APPROVE_MODAL,
        &r.id,
        "Approve request",
        "Approve",
        Value::from(blocks),
    )
}

/// The deny modal: a comment for the requester.
pub fn deny_modal(r: &Request) -> Value {
    modal(
        DENY_MODAL,
        &r.id,
        "Deny request",
        "Deny",
        json!([
            { "type": "section", "text": { "type": "mrkdwn", "text": cut(&format!(
                "*{}* asks for *{}*: {}",
                escape(&r.requester, 200), escape(&r.resource, 200), escape(&r.reason, 1000))) } },
            comment_input(true),
        ]),
    )
}

fn option(text: &str, value: &str) -> Value {
    json!({ "text": { "type": "plain_text", "text": cut_to(text, 75) }, "value": cut_to(value, 150) })
}

fn cut_to(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

fn plain(text: &str) -> Value {
    json!({ "type": "plain_text", "text": cut_to(text, 2000) })
}

/// The extend modal of a grant about to end: a duration (rule 19) and a reason.
pub fn extend_modal(g: &domain::Grant, config: &Config) -> Value {
    let spans: Vec<domain::Span> = match config.resources.get(&g.spec.resource) {
        Some(d) if !d.durations.is_empty() => d.durations.clone(),
        Some(d) => [900, 3600, 4 * 3600, 24 * 3600]
            .into_iter()
            .map(domain::Span::from_secs)
            .filter(|s| *s <= d.max_duration)
            .collect(),
        None => vec![],
    };
    // Never an empty select (Slack refuses one): at least the grant's own duration.
    let spans = if spans.is_empty() {
        vec![g.spec.duration]
    } else {
        spans
    };
    let options: Vec<Value> = spans
        .iter()
        .take(MAX_SELECT)
        .map(|s| option(&present::human_span(*s), &s.to_string()))
        .collect();
    modal(
        EXTEND_MODAL,
        &g.id,
        "Extend access",
        "Ask",
        json!([
            { "type": "section", "text": { "type": "mrkdwn", "text": cut(&format!(
                "Extend your access to *{}*. An extension is a new request, reviewed like the first.",
                escape(&g.spec.resource, 200))) } },
            { "type": "input", "block_id": "duration", "label": plain("For"),
              "element": { "type": "static_select", "action_id": "duration", "options": options } },
            { "type": "input", "block_id": "reason", "label": plain("Reason"),
              "element": { "type": "plain_text_input", "action_id": "reason", "multiline": true,
                           "max_length": 2000 } },
        ]),
    )
}

/// The first modal of `/countersign`: what the person may ask for (the catalog).
pub fn pick_modal(config: &Config) -> Value {
    let options: Vec<Value> = config
        .resources
        .values()
        // An action resource (issue 18) is asked by the program that will run the action.
        .filter(|r| r.action.is_none())
        .take(MAX_SELECT)
        .map(|r| {
            let mut o = option(&r.name, &r.name);
            if !r.description.is_empty() {
                o["description"] = plain(&cut_to(&r.description, 75));
            }
            o
        })
        .collect();
    modal(
        PICK_MODAL,
        "",
        "Request access",
        "Next",
        json!([
            { "type": "input", "block_id": "resource", "label": plain("Resource"),
              "element": { "type": "static_select", "action_id": "resource", "options": options } },
        ]),
    )
}

/// The request modal of one resource: its typed fields (an enum as a static select, a field
/// with `options_from` as an external select served by the same options code as the
/// portal), the duration from its closed set, and the reason.
pub fn request_modal(r: &domain::ResourceDef, config: &Config) -> Value {
    let mut blocks = vec![
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(&format!(
        "*{}*\n{}", escape(&r.name, 200), escape(&r.description, 1000))) } }),
    ];
    for f in &r.fields {
        let element = match &f.kind {
            domain::FieldType::Enum(values) => json!({ "type": "static_select",
                "options": values.iter().take(MAX_SELECT).map(|v| option(v, v)).collect::<Vec<_>>() }),
            domain::FieldType::User if config.directory.users().count() <= MAX_SELECT => {
                json!({ "type": "static_select", "options": config.directory.users()
                    .map(|(u, _)| option(u, u)).collect::<Vec<_>>() })
            }
            domain::FieldType::String if f.dynamic => {
                json!({ "type": "external_select", "min_query_length": 0 })
            }
            domain::FieldType::Bool => json!({ "type": "checkboxes",
                "options": [option("Yes", "true")] }),
            domain::FieldType::Int => {
                json!({ "type": "number_input", "is_decimal_allowed": false })
            }
            _ => json!({ "type": "plain_text_input", "max_length": 2000 }),
        };
        let mut element = element;
        element["action_id"] = Value::String("value".into());
        let mut block = json!({ "type": "input", "block_id": format!("field.{}", f.name),
            "label": plain(&f.name), "optional": !f.required || f.kind == domain::FieldType::Bool,
            "element": element });
        if !f.description.is_empty() {
            block["hint"] = plain(&f.description);
        }
        blocks.push(block);
    }
    let default = r.default_duration();
    let duration = if r.durations.is_empty() {
        json!({ "type": "plain_text_input", "action_id": "duration",
                "initial_value": default.to_string(), "max_length": 20 })
    } else {
        let options: Vec<Value> = r
            .durations
            .iter()
            .take(MAX_SELECT)
            .map(|s| option(&present::human_span(*s), &s.to_string()))
            .collect();
        let initial = options
            .iter()
            .find(|o| o["value"] == default.to_string())
            .cloned();
        let mut e = json!({ "type": "static_select", "action_id": "duration", "options": options });
        if let Some(i) = initial {
            e["initial_option"] = i;
        }
        e
    };
    blocks.push(
        json!({ "type": "input", "block_id": "duration", "label": plain("Duration"),
        "hint": plain(&format!("At most {}", present::human_span(r.max_duration))),
        "element": duration }),
    );
    blocks.push(
        json!({ "type": "input", "block_id": "reason", "label": plain("Reason"),
        "element": { "type": "plain_text_input", "action_id": "reason", "multiline": true,
                     "max_length": 2000 } }),
    );
    modal(
        REQUEST_MODAL,
        &r.name,
        "Request access",
        "Request",
        Value::from(blocks),
    )
}

/// The assign modal (rule 11): a Slack user picker; the person picked must have linked their
/// Slack account.
pub fn assign_modal(r: &Request) -> Value {
    modal(
        ASSIGN_MODAL,
        &r.id,
        "Assign request",
        "Assign",
        json!([
            { "type": "input", "block_id": "assignee",
              "label": { "type": "plain_text", "text": "Assign the current step to" },
              "element": { "type": "users_select", "action_id": "assignee" } },
        ]),
    )
}

/// The comment modal (Kubiya's Contact): the comment is recorded on the request and posted
/// in every card's thread.
pub fn comment_modal(r: &Request) -> Value {
    modal(
        COMMENT_MODAL,
        &r.id,
        "Comment",
        "Comment",
        json!([comment_input(false)]),
    )
}

/// A modal view: its callback, what it carries (`private_metadata`: the request or grant it
/// is about), its title and submit button, and its blocks.
fn modal(callback: &str, metadata: &str, title: &str, submit: &str, blocks: Value) -> Value {
    let mut view = json!({
        "type": "modal",
        "callback_id": callback,
        "title": plain(title),
        "submit": plain(submit),
        "close": plain("Cancel"),
        "blocks": blocks,
    });
    if !metadata.is_empty() {
        view["private_metadata"] = Value::String(metadata.to_owned());
    }
    view
}

fn comment_input(optional: bool) -> Value {
    json!({ "type": "input", "block_id": "comment", "optional": optional,
        "label": { "type": "plain_text", "text": "Comment" },
        "element": { "type": "plain_text_input", "action_id": "comment", "multiline": true,
            "max_length": 2000 } })
}

/// What the delivery of one Slack notification came to, for `callback::record`.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    pub reply: Reply,
    /// The card posted: its channel and `ts`, and the status it showed.
    pub posted: Option<(String, String, String)>,
    /// Not sent: its channel was posted to less than `per_channel_interval` ago; try again
    /// then, without counting an attempt.
    pub deferred: Option<Timestamp>,
}

impl From<Reply> for Sent {
    fn from(reply: Reply) -> Sent {
        Sent {
            reply,
            posted: None,
            deferred: None,
        }
    }
}

/// When each Slack channel may next be posted to, in this process (item 8). Replicas pace
/// themselves each; Slack's 429s, honoured with `Retry-After`, cover the rest.
#[derive(Default)]
pub(crate) struct Pace {
    next: std::sync::Mutex<std::collections::HashMap<String, Timestamp>>,
}

/// Channels whose pace is remembered at most; past it the turns that have passed are
/// forgotten, and if that is not enough, all of them.
const PACED: usize = 10_000;

impl Pace {
    /// Takes `channel`'s turn at `now` if it is free (`Ok`), or says when it will be.
    fn take(&self, channel: &str, now: Timestamp, every: domain::Span) -> Result<(), Timestamp> {
        if every.secs() == 0 {
            return Ok(());
        }
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = next.get(channel)
            && *at > now
        {
            return Err(*at);
        }
        if next.len() >= PACED {
            next.retain(|_, at| *at > now);
            if next.len() >= PACED {
                next.clear();
            }
        }
        next.insert(channel.to_owned(), now.plus(every));
        Ok(())
    }
}

/// Delivers one Slack notification: a card refresh (`to: None`) updates every recorded copy
/// of the request's card; anything else is posted to its destination (a linked person's
/// DMs, or a channel), as the request's card or as a plain message.
pub(crate) async fn deliver(
    engine: &Engine,
    ch: &SlackChannel,
    d: &Delivery,
    n: &Notice,
    now: Timestamp,
) -> Sent {
    let sender = engine.sender();
    let config = engine.config();
    let Some(to) = &n.to else {
        if n.event == NotifyEvent::CommentAdded {
            return comment_in_threads(engine, &sender, ch, d, now).await;
        }
        return update_copies(engine, &sender, &config, ch, &d.request, n.event, now).await;
    };
    let hopeless = |why: String| Sent::from(Reply::hopeless(why));
    let channel = if let Some(name) = to.strip_prefix('#') {
        name.to_owned()
    } else if let Some(member) = to.strip_prefix('@') {
        member.to_owned()
    } else if !to.contains('@') {
        to.clone()
    } else {
        match engine.store.slack_account(to).await {
            Ok(Some(account)) => account,
            Ok(None) if ch.match_by_email => {
                // Slack's account with this person's email (users:read.email).
                let found = call(
                    &sender,
                    ch,
                    "users.lookupByEmail",
                    &json!({ "email": to }),
                    now,
                )
                .await;
                match found.body.as_ref().and_then(|b| b["user"]["id"].as_str()) {
                    Some(id) => id.to_owned(),
                    None if found.error.is_none()
                        || found
                            .error
                            .as_deref()
                            .is_some_and(|e| e.ends_with("users_not_found")) =>
                    {
                        return hopeless(format!(
                            "{to} has not linked a Slack account, and Slack knows no user with that email"
                        ));
                    }
                    None => return found.into(),
                }
            }
            Ok(None) => {
                return hopeless(format!(
                    "{to} has not linked a Slack account (/countersign link)"
                ));
            }
            Err(e) => return Reply::failed(e).into(),
        }
    };
    let card_of = if is_card(n.event) {
        // The card shows the request as it is now, not as the event left it.
        match engine.store.request(&d.request).await {
            Ok(Some(r)) => Some(r),
            _ => None,
        }
    } else {
        None
    };
    let (mut body, status) = match &card_of {
        Some(r) => (card(r, &config), present::summary(r).status),
        None => match serde_json::from_str::<crate::notify::Payload>(&d.body) {
            Ok(p) => (message(&p), String::new()),
            Err(e) => return hopeless(format!("the notification's body is unreadable: {e}")),
        },
    };
    if let Err(at) = engine
        .slack_pace
        .take(&channel, now, ch.per_channel_interval)
    {
        return Sent {
            deferred: Some(at),
            ..Sent::default()
        };
    }
    body["channel"] = Value::String(channel);
    body["unfurl_links"] = Value::Bool(false);
    let reply = call(&sender, ch, "chat.postMessage", &body, now).await;
    let posted = match (&card_of, &reply.body) {
        (Some(_), Some(b)) => match (b["channel"].as_str(), b["ts"].as_str()) {
            (Some(c), Some(ts)) => Some((c.to_owned(), ts.to_owned(), status)),
            _ => None,
        },
        _ => None,
    };
    Sent {
        reply,
        posted,
        deferred: None,
    }
}

/// Posts a comment in the thread of every copy of the request's card.
async fn comment_in_threads(
    engine: &Engine,
    sender: &Sender,
    ch: &SlackChannel,
    d: &Delivery,
    now: Timestamp,
) -> Sent {
    let comment: Value = serde_json::from_str(&d.body).unwrap_or(Value::Null);
    let (Some(by), Some(text)) = (comment["by"].as_str(), comment["text"].as_str()) else {
        return Reply::done().into();
    };
    let copies = match engine.store.slack_messages(&d.request).await {
        Ok(c) => c,
        Err(e) => return Reply::failed(e).into(),
    };
    let said = format!("*{}*: {}", escape(by, 200), escape(text, 2900));
    let mut worst = Reply::done();
    for (channel, ts) in &copies {
        let post = json!({ "channel": channel, "thread_ts": ts, "text": said });
        worst.keep_worst(call(sender, ch, "chat.postMessage", &post, now).await);
    }
    worst.into()
}

/// Updates every recorded copy of the request's card to show it as it is now; when the event
/// ended the request, also says so in each card's thread.
async fn update_copies(
    engine: &Engine,
    sender: &Sender,
    config: &Config,
    ch: &SlackChannel,
    request: &str,
    event: NotifyEvent,
    now: Timestamp,
) -> Sent {
    let copies = match engine.store.slack_messages(request).await {
        Ok(c) => c,
        Err(e) => return Reply::failed(e).into(),
    };
    if copies.is_empty() {
        return Reply::done().into();
    }
    let r = match engine.store.request(request).await {
        Ok(Some(r)) => r,
        Ok(None) => return Reply::hopeless("the request is gone").into(),
        Err(e) => return Reply::failed(e).into(),
    };
    let body = card(&r, config);
    let status = present::summary(&r).status;
    let mut worst = Reply::done();
    for (channel, ts) in &copies {
        let mut update = body.clone();
        update["channel"] = Value::String(channel.clone());
        update["ts"] = Value::String(ts.clone());
        let mut reply = call(sender, ch, "chat.update", &update, now).await;
        if reply.error.is_none() && ends_request(event) && r.state.is_terminal() {
            let said = json!({ "channel": channel, "thread_ts": ts,
                "text": escape(&status, 2000) });
            reply = call(sender, ch, "chat.postMessage", &said, now).await;
        }
        worst.keep_worst(reply);
    }
    worst.into()
}

/// The Countersign user a Slack account acts as (rule 35): its link, or, with
/// `match_by_email`, the user whose email `users.info` gives. `None` for an unlinked or
/// unknown account, and for an application.
pub async fn actor_of(
    engine: &Engine,
    account: &str,
) -> Result<Option<domain::Actor>, EngineError> {
    let config = engine.config();
    let Some((_, ch)) = config.slack() else {
        return Ok(None);
    };
    let person = match engine.store.slack_person(account).await? {
        Some(p) => Some(p),
        None if ch.match_by_email => {
            let reply = call(
                &engine.sender(),
                ch,
                "users.info",
                &json!({ "user": account }),
                engine.now(),
            )
            .await;
            reply
                .body
                .as_ref()
                .and_then(|b| b["user"]["profile"]["email"].as_str())
                .map(str::to_owned)
        }
        None => None,
    };
    Ok(person
        .and_then(|p| config.directory.actor(&p))
        .filter(|a| !a.app))
}

/// Opens a modal (`views.open`) for the click that `trigger_id` names.
pub async fn open_modal(engine: &Engine, trigger_id: &str, view: Value) -> Result<(), String> {
    let config = engine.config();
    let Some((_, ch)) = config.slack() else {
        return Err("no slack channel is configured".into());
    };
    let reply = call(
        &engine.sender(),
        ch,
        "views.open",
        &json!({ "trigger_id": trigger_id, "view": view }),
        engine.now(),
    )
    .await;
    match reply.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Says something to one person only, in a channel (Slack's `chat.postEphemeral`).
pub async fn tell(engine: &Engine, channel: &str, user: &str, text: &str) -> Result<(), String> {
    let body = json!({ "channel": channel, "user": user, "text": escape(text, 2000) });
    say(engine, "chat.postEphemeral", &body).await
}

/// Says something to one person in their DM with the app (where nobody else sees it), as
/// Slack's `chat.postMessage` to a user id does.
pub async fn dm(engine: &Engine, user: &str, text: &str) -> Result<(), String> {
    let body = json!({ "channel": user, "text": escape(text, 2000) });
    say(engine, "chat.postMessage", &body).await
}

async fn say(engine: &Engine, method: &str, body: &Value) -> Result<(), String> {
    let config = engine.config();
    let Some((_, ch)) = config.slack() else {
        return Err("no slack channel is configured".into());
    };
    let reply = call(&engine.sender(), ch, method, body, engine.now()).await;
    match reply.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Engine {
    /// Starts linking a Slack account (`/countersign link`): a one-time secret, valid for
    /// [`LINK_TTL_MS`], kept in the database (any replica may finish it). Returns the secret
    /// for the portal URL.
    pub async fn start_slack_link(&self, account: &str, name: &str) -> Result<String, EngineError> {
        let now = self.now();
        let secret = crate::tokens::random_secret();
        let row = store::SessionRow {
            hash: format!(
                "{LINK_PREFIX}{}",
                store::chain::sha256_hex(secret.as_bytes())
            ),
            subject: String::new(),
            csrf: String::new(),
            data: json!({ "account": account, "name": name }).to_string(),
            created_at: now,
            expires_at: now.plus(domain::Span::from_secs(
                u64::try_from(LINK_TTL_MS / 1000).unwrap_or(600),
            )),
        };
        self.write(move |tx| {
            Box::pin(async move {
                if tx.count_sessions(LINK_PREFIX, now).await? >= MAX_LINKS {
                    return Err(domain::DomainError::Conflict(
                        "too many Slack links are under way; try again in a few minutes".into(),
                    )
                    .into());
                }
                Ok(tx.put_session(&row, now).await?)
            })
        })
        .await?;
        Ok(secret)
    }

    /// The Slack account (its id and the name Slack gave with the command) a link secret
    /// names, without taking it (the portal's confirmation page), if it is still valid.
    pub async fn slack_link_account(
        &self,
        secret: &str,
    ) -> Result<Option<(String, String)>, EngineError> {
        let hash = format!(
            "{LINK_PREFIX}{}",
            store::chain::sha256_hex(secret.as_bytes())
        );
        Ok(self.session(&hash).await?.map(|r| link_data(&r.data)))
    }

    /// Finishes a link (rule 35): takes the secret once and links its Slack account to the
    /// signed-in person, audited as `slack_linked`. Returns the account.
    pub async fn finish_slack_link(
        &self,
        actor: &domain::Actor,
        secret: &str,
    ) -> Result<String, EngineError> {
        if actor.app {
            return Err(domain::DomainError::Forbidden(
                "an application cannot link a Slack account".into(),
            )
            .into());
        }
        let now = self.now();
        let hash = format!(
            "{LINK_PREFIX}{}",
            store::chain::sha256_hex(secret.as_bytes())
        );
        let person = actor.id.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let Some(row) = tx.take_session(&hash, now).await? else {
                    return Err(domain::DomainError::Invalid(
                        "this link has expired or was used already; type /countersign link in Slack again"
                            .into(),
                    )
                    .into());
                };
                let (account, _) = link_data(&row.data);
                tx.put_slack_link(&account, &person, now).await?;
                let ev = domain::Event::person(domain::EventKind::SlackLinked, &person)
                    .with("slack_user", &account);
                tx.append(&ev, now).await?;
                Ok(account)
            })
        })
        .await
    }
}

impl Engine {
    /// Removes a Slack account's link (`/countersign unlink`), audited as `slack_unlinked`
    /// by the person it acted as. Returns that person, or `None` if it was not linked.
    pub async fn unlink_slack(&self, account: &str) -> Result<Option<String>, EngineError> {
        let Some(person) = self.store.slack_person(account).await? else {
            return Ok(None);
        };
        let now = self.now();
        let account = account.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                tx.delete_slack_link(&account).await?;
                let ev = domain::Event::person(domain::EventKind::SlackUnlinked, &person)
                    .with("slack_user", &account);
                tx.append(&ev, now).await?;
                Ok(Some(person))
            })
        })
        .await
    }
}

/// A link under way's account id and name.
fn link_data(data: &str) -> (String, String) {
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    (field("account"), field("name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule 35, against the example of Slack's request-verification guide.
    #[test]
    fn rule_35_slack_signature_matches_slacks_published_example() {
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let now = Timestamp::from_millis(1_531_420_618_000);
        assert_eq!(
            verify_signature(secret, Some("1531420618"), Some(sig), body, now),
            Ok(())
        );
        let mut other = body.to_vec();
        other[6] = b'X';
        assert_eq!(
            verify_signature(secret, Some("1531420618"), Some(sig), &other, now),
            Err(Refused::BadSignature),
            "one byte of the body changed"
        );
        assert_eq!(
            verify_signature("another secret", Some("1531420618"), Some(sig), body, now),
            Err(Refused::BadSignature)
        );
        let later = Timestamp::from_millis(1_531_420_618_000 + 301_000);
        assert_eq!(
            verify_signature(secret, Some("1531420618"), Some(sig), body, later),
            Err(Refused::Stale),
            "five minutes and a second later"
        );
        assert_eq!(
            verify_signature(secret, None, Some(sig), body, now),
            Err(Refused::Missing)
        );
        assert_eq!(
            verify_signature(secret, Some("soon"), Some(sig), body, now),
            Err(Refused::Malformed)
        );
        assert_eq!(
            verify_signature(secret, Some("1531420618"), Some("v1=00"), body, now),
            Err(Refused::BadSignature)
        );
    }

    /// Item 4: the purpose's markdown as mrkdwn, with nothing an application wrote turned
    /// into a mention, a link elsewhere than http(s), or broken link syntax.
    #[test]
    fn purpose_markdown_becomes_safe_mrkdwn() {
        let md = "Deploy **v2.3.1** to _prod_ (`make ship`)\n\n\
                  - see [the change](https://example.com/c?a=1|x>y)\n\
                  - not [this](javascript:alert(1))\n\n\
                  <!channel> <script>x</script> & more";
        assert_eq!(
            mrkdwn(md, 2000),
            "Deploy *v2.3.1* to _prod_ (`make ship`)\n\
             • see <https://example.com/c?a=1xy|the change>\n\
             • not this\n\
             &lt;!channel&gt; &lt;script&gt;x&lt;/script&gt; &amp; more"
        );
    }

    #[test]
    fn rule_35_text_cannot_become_a_mention_or_a_link() {
        assert_eq!(
            escape("<!channel> & <https://evil|click>", 100),
            "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
        );
        assert_eq!(escape("abcdef", 3), "abc…");
    }
}
