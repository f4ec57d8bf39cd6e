//! The notification router (rules 32 and 33): every state change someone should hear about
//! writes its notifications into the outbox in the transaction that makes the change, and the
//! outbox's worker (`callback::dispatch`) sends them with the same claims, retries, backoff and
//! per-receiver limit as callbacks.
//!
//! [`enqueue`] runs at the end of every write job (`Engine::write`): it takes the audit events
//! the job appended, asks the configuration's rules (`domain::notify::route`) who hears of each
//! on which channel, and writes one delivery per recipient, whose id is made of the event's
//! sequence number and the recipient's place, so that no write can send it twice. Its body is
//! the event's payload (see [`payload`]), fixed when the change happened; a channel turns it
//! into an email ([`email`]) or POSTs it as it is, signed.

use std::collections::BTreeMap;
use std::time::Duration;

use config::{Channel, Config, EmailChannel, SmtpTls};
use domain::notify::{NotifyEvent, Parties, route};
use domain::{Delivery, Event, Grant, Notice, Request};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use proto::{GrantView, RequestView};
use serde::{Deserialize, Serialize};
use store::Tx;

use crate::EngineError;
use crate::present;

/// What a notification's body holds: the Standard Webhooks payload shape (`type`,
/// `timestamp`, `data`), POSTed as it is by a webhook channel and rendered by an email
/// channel. `data.request` is the request as `GET /v1/requests/{id}` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Payload {
    #[serde(rename = "type")]
    pub kind: NotifyEvent,
    pub timestamp: String,
    pub data: PayloadData,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PayloadData {
    /// The audit event that caused it (its `seq` in `/v1/audit`).
    pub event_seq: i64,
    /// Whoever caused the event, if a person or an application did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Who the message is for.
    pub recipients: Vec<String>,
    /// The page in the portal: the request's, or the run's for a run's event.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Box<RequestView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantView>,
    /// The run of a runbook, for a run's event (issue 17), as `GET /v1/runs/{id}` shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Box<proto::RunView>>,
}

/// Writes the notifications of the events this job appended. Cheap when nothing is
/// configured: no rule names the event, so nothing is read.
pub(crate) async fn enqueue(
    tx: &mut dyn Tx,
    config: &Config,
    appended: Vec<(i64, domain::Timestamp, Event)>,
) -> Result<(), EngineError> {
    if appended.is_empty() || config.notify.is_empty() {
        return Ok(());
    }
    let reach = |c: &str| config.channels.get(c).map(Channel::reach);
    for (seq, at, event) in appended {
        let Some(kind) = NotifyEvent::of(event.kind) else {
            continue;
        };
        // Rule 36: whatever the rules say, a change brings every Slack card up to date.
        if let Some(id) = &event.request
            && config.slack().is_some()
        {
            // A comment is posted in the cards' threads as it was made.
            let body = match kind {
                NotifyEvent::CommentAdded => match tx.request(id).await? {
                    Some(r) => crate::slack::comment_body(&r),
                    None => "{}".into(),
                },
                _ => "{}".into(),
            };
            let card = format!("ntf_{seq}_card");
            if let Some(d) = crate::slack::refresh(config, card, id, kind, seq, at, body) {
                tx.put_delivery(&d, None).await?;
            }
        }
        if !config.notify.iter().any(|r| r.events.contains(&kind)) {
            continue;
        }
        let Some(about) = about(tx, config, &event, kind).await? else {
            continue;
        };
        let recipients = route(
            &config.notify,
            &reach,
            &config.directory,
            kind,
            &about.parties,
        );
        for (n, rcpt) in recipients.into_iter().enumerate() {
            let Some(channel) = config.channels.get(&rcpt.channel) else {
                continue;
            };
            let people: Vec<String> = rcpt.people.into_iter().collect();
            let body = Payload {
                kind,
                timestamp: present::ts(at),
                data: PayloadData {
                    event_seq: seq,
                    actor: event.actor.clone(),
                    recipients: people.clone(),
                    url: about.url.clone(),
                    request: about.request.clone(),
                    grant: about.grant.clone(),
                    run: about.run.clone(),
                },
            };
            let body = serde_json::to_string(&body)
                .map_err(|e| store::StoreError::Corrupt(e.to_string()))?;
            let notice = Notice {
                channel: rcpt.channel.clone(),
                event: kind,
                to: rcpt.to,
                people,
                seq,
            };
            let d = Delivery::notification(
                format!("ntf_{seq}_{n}"),
                &about.anchor,
                receiver(channel),
                notice,
                body,
                at,
            );
            tx.put_delivery(&d, None).await?;
        }
    }
    Ok(())
}

/// What a notification is about: the people around it, the page it links to, and the views
/// its payload carries. `anchor` is the request its deliveries are listed under (a run's
/// access request, or the run itself when it has none).
struct About {
    parties: Parties,
    anchor: String,
    url: String,
    request: Option<Box<RequestView>>,
    grant: Option<GrantView>,
    run: Option<Box<proto::RunView>>,
}

async fn about(
    tx: &mut dyn Tx,
    config: &Config,
    event: &Event,
    kind: NotifyEvent,
) -> Result<Option<About>, EngineError> {
    let public = &config.server.public_url;
    if kind.is_run() {
        // A run's event: its runner hears of it (as its requester). A run that failed for
        // another reason than a denied access (its action failed) is not announced: its
        // runner is watching it.
        if kind == NotifyEvent::RunFailed && event.request.is_none() {
            return Ok(None);
        }
        let Some(run) = event.detail.get("run") else {
            return Ok(None);
        };
        let Some(run) = tx.run(run).await? else {
            return Ok(None);
        };
        let request = match &event.request {
            Some(id) => tx.request(id).await?,
            None => None,
        };
        let resource = request.as_ref().map_or_else(
            || {
                run.blocked
                    .as_ref()
                    .map(|b| b.resource.clone())
                    .unwrap_or_default()
            },
            |r| r.resource.clone(),
        );
        let grant = match request.as_ref().and_then(|r| r.grant.as_deref()) {
            Some(g) => tx.grant(g).await?,
            None => None,
        };
        // The run without its steps' outputs: what it waits for, not what its actions
        // returned (which may be large, and are the runner's to read in the portal).
        let mut view = present::run(&run, config);
        for s in &mut view.steps {
            s.output = None;
        }
        return Ok(Some(About {
            parties: Parties {
                resource,
                requester: run.runner.clone(),
                subject: run.runner.clone(),
                reviewers: Default::default(),
                owners: request
                    .as_ref()
                    .map(|r| r.owners.clone())
                    .unwrap_or_default(),
                actor: event.actor.clone(),
            },
            anchor: request
                .as_ref()
                .map_or_else(|| run.id.clone(), |r| r.id.clone()),
            url: present::run_url(public, &run.id),
            request: request
                .as_ref()
                .map(|r| Box::new(present::request(r, grant.as_ref(), public))),
            grant: grant.as_ref().map(present::grant),
            run: Some(Box::new(view)),
        }));
    }
    let Some((request, grant)) = objects(tx, event, kind).await? else {
        return Ok(None);
    };
    Ok(Some(About {
        parties: Parties {
            resource: request.resource.clone(),
            requester: request.requester.clone(),
            subject: grant
                .as_ref()
                .map_or_else(|| request.requester.clone(), |g| g.spec.subject.clone()),
            // An escalation is for the people it names, who may not decide (yet); a
            // break-glass for the people who must review it afterwards (rule 34).
            reviewers: match kind {
                NotifyEvent::Escalated => request.escalated_people(),
                NotifyEvent::BreakGlass => request.follow_up_closers(),
                _ => request.eligible_reviewers(),
            },
            owners: request.owners.clone(),
            actor: event.actor.clone(),
        },
        anchor: request.id.clone(),
        url: present::portal_url(public, &request.id),
        request: Some(Box::new(present::request(&request, grant.as_ref(), public))),
        grant: grant.as_ref().map(present::grant),
        run: None,
    }))
}

/// The request an event is about, as this transaction left it, and the grant for a grant's
/// event. `None` when either is gone (nothing to tell).
async fn objects(
    tx: &mut dyn Tx,
    event: &Event,
    kind: NotifyEvent,
) -> Result<Option<(Request, Option<Grant>)>, EngineError> {
    if kind.is_grant() {
        let Some(id) = &event.grant else {
            return Ok(None);
        };
        let Some(g) = tx.grant(id).await? else {
            return Ok(None);
        };
        let Some(r) = tx.request(&g.spec.request).await? else {
            return Ok(None);
        };
        return Ok(Some((r, Some(g))));
    }
    let Some(id) = &event.request else {
        return Ok(None);
    };
    let Some(r) = tx.request(id).await? else {
        return Ok(None);
    };
    // A request's events show its grant too, once it has one.
    let g = match &r.grant {
        Some(gid) => tx.grant(gid).await?,
        None => None,
    };
    Ok(Some((r, g)))
}

/// The receiver a delivery counts against for the per-receiver limit: the webhook's URL, or
/// the mail server.
fn receiver(channel: &Channel) -> String {
    match channel {
        Channel::Webhook(w) => w.url.clone(),
        Channel::Email(e) => format!("smtp://{}:{}", e.host, e.port),
        Channel::Slack(s) => s.api_url.clone(),
    }
}

/// The mail servers of the running configuration, one per email channel, each with a small
/// pool of open connections.
pub(crate) struct Mailers {
    by_channel: BTreeMap<String, Result<Smtp, String>>,
}

/// Connections kept open to one mail server.
const SMTP_POOL: usize = 4;

/// How long an idle connection is kept: mail servers close idle clients after a while, and a
/// message sent on a closed connection would fail for nothing.
const SMTP_IDLE_MS: i64 = 60_000;

impl Mailers {
    pub(crate) fn new(config: &Config) -> Mailers {
        let by_channel = config
            .channels
            .iter()
            .filter_map(|(name, c)| match c {
                Channel::Email(e) => Some((name.clone(), Smtp::new(e))),
                Channel::Webhook(_) | Channel::Slack(_) => None,
            })
            .collect();
        Mailers { by_channel }
    }
}

/// One mail server: how to reach it, and its idle connections with when each was last used.
///
/// Connections are made here rather than by lettre's pool so that they are made with
/// `TCP_NODELAY`. lettre (0.11.23) writes a message's closing `.` in a write of its own, which
/// Nagle's algorithm holds back until the server acknowledges the body, and servers delay that
/// acknowledgement (40 ms on Linux): every message took 40 ms on a connection that carries one
/// in about a millisecond. lettre still speaks SMTP (EHLO, STARTTLS, AUTH, the transaction);
/// with implicit TLS it also makes the connection, without `TCP_NODELAY`.
struct Smtp {
    host: String,
    port: u16,
    tls: SmtpTls,
    params: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, domain::Timestamp)>>,
}

/// Why a message was not sent: what the SMTP exchange (or the server) said, or why no
/// connection could be made.
enum SmtpError {
    Smtp(lettre::transport::smtp::Error),
    Connect(std::io::Error),
}

impl From<lettre::transport::smtp::Error> for SmtpError {
    fn from(e: lettre::transport::smtp::Error) -> SmtpError {
        SmtpError::Smtp(e)
    }
}

impl SmtpError {
    /// The server's reply code, when it answered.
    fn code(&self) -> Option<u16> {
        match self {
            SmtpError::Smtp(e) => e.status().map(u16::from),
            SmtpError::Connect(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            SmtpError::Smtp(e) => crate::connector::webhook::error_chain(e),
            SmtpError::Connect(e) => format!("connecting: {e}"),
        }
    }
}

impl Smtp {
    fn new(e: &EmailChannel) -> Result<Smtp, String> {
        let params = match e.tls {
            SmtpTls::None => None,
            SmtpTls::Starttls | SmtpTls::Implicit => Some(
                TlsParameters::new(e.host.clone())
                    .map_err(|err| format!("TLS settings for {}: {err}", e.host))?,
            ),
        };
        Ok(Smtp {
            host: e.host.clone(),
            port: e.port,
            tls: e.tls,
            params,
            credentials: match (&e.username, &e.password) {
                (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
                _ => None,
            },
            hello: ClientId::default(),
            idle: std::sync::Mutex::new(vec![]),
        })
    }

    /// An idle connection used less than [`SMTP_IDLE_MS`] ago, if there is one.
    fn take_idle(&self, now: domain::Timestamp) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, used)) = idle.pop() {
            if now.millis() - used.millis() < SMTP_IDLE_MS && !conn.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, conn: AsyncSmtpConnection, now: domain::Timestamp) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < SMTP_POOL && !conn.has_broken() {
            idle.push((conn, now));
        }
    }

    /// A new connection: greeted, with STARTTLS when the channel asks for it, and signed in.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let mut conn = match (self.tls, &self.params) {
            (SmtpTls::Implicit, Some(params)) => {
                AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    None,
                    &self.hello,
                    Some(params.clone()),
                    None,
                )
                .await?
            }
            _ => {
                let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(SmtpError::Connect)?;
                stream.set_nodelay(true).map_err(SmtpError::Connect)?;
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                        .await?;
                if let (SmtpTls::Starttls, Some(params)) = (self.tls, &self.params) {
                    conn.starttls(params.clone(), &self.hello).await?;
                }
                conn
            }
        };
        if let Some(c) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, c).await?;
        }
        Ok(conn)
    }

    /// Sends one message on an idle connection if there is one, and on a new one if there is
    /// none or the idle one fails before the server answers (it may have closed it). A
    /// connection that ends well goes back to the pool.
    async fn send(&self, message: &Message, now: domain::Timestamp) -> Result<Response, SmtpError> {
        let raw = message.formatted();
        if let Some(mut conn) = self.take_idle(now) {
            match conn.send(message.envelope(), &raw).await {
                Ok(r) => {
                    self.give_back(conn, now);
                    return Ok(r);
                }
                // The server answered: that is its verdict on this message.
                Err(e) if e.status().is_some() => return Err(e.into()),
                Err(_) => {}
            }
        }
        let mut conn = self.connect().await?;
        let r = conn.send(message.envelope(), &raw).await?;
        self.give_back(conn, now);
        Ok(r)
    }
}

/// What one SMTP transaction came to: the reply code, if the server answered, and why it
/// failed, if it did.
pub(crate) struct Mailed {
    pub code: Option<u16>,
    pub error: Option<String>,
}

/// Sends a notification by email to its recipient.
pub(crate) async fn mail(
    name: &str,
    channel: &EmailChannel,
    mailers: &Mailers,
    to: &str,
    d: &Delivery,
    now: domain::Timestamp,
) -> Mailed {
    let failed = |error: String| Mailed {
        code: None,
        error: Some(error),
    };
    let server = match mailers.by_channel.get(name) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return failed(format!("channel {name:?}: {e}")),
        None => return failed(format!("channel {name:?} has no SMTP transport")),
    };
    let message = match email(channel, to, &d.id, &d.body, now) {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let limit = Duration::from_secs(channel.timeout.secs());
    // This bounds the whole transaction, connecting included, so that a server that trickles
    // its answers still cannot hold a slot for long.
    match tokio::time::timeout(limit, server.send(&message, now)).await {
        Ok(Ok(resp)) => Mailed {
            code: Some(u16::from(resp.code())),
            error: None,
        },
        Ok(Err(e)) => Mailed {
            code: e.code(),
            error: Some(format!(
                "SMTP to {}:{}: {}",
                channel.host,
                channel.port,
                e.describe()
            )),
        },
        Err(_) => failed(format!(
            "SMTP to {}:{} timed out after {}s",
            channel.host,
            channel.port,
            limit.as_secs()
        )),
    }
}

/// Builds the message of a notification: a plain-text and an HTML part saying the same, with
/// the link to the request's page.
pub fn email(
    channel: &EmailChannel,
    to: &str,
    id: &str,
    body: &str,
    now: domain::Timestamp,
) -> Result<Message, String> {
    let payload: Payload =
        serde_json::from_str(body).map_err(|e| format!("the notification's body: {e}"))?;
    let from: Mailbox = channel
        .from
        .parse()
        .map_err(|e| format!("from {:?}: {e}", channel.from))?;
    let to: Mailbox = to.parse().map_err(|e| format!("address {to:?}: {e}"))?;
    let (subject, text, html) = render(&payload);
    Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        // The engine's clock, not the machine's, like every other time Countersign writes.
        .date(
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(now.millis()).unwrap_or(0)),
        )
        // The delivery's id, so that a mail client threads or drops a repeat after a retry.
        .message_id(Some(format!("<{id}@countersign>")))
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| format!("building the message: {e}"))
}

/// The subject, plain text and HTML of a notification, from the presenter's headline and lines.
pub fn render(p: &Payload) -> (String, String, String) {
    let request = p.data.request.as_deref();
    let grant = p.data.grant.as_ref();
    let run = p.data.run.as_deref();
    let headline = present::headline(p.kind, request, grant, run);
    let lines = present::lines(request, grant, run);
    let url = &p.data.url;
    let mut text = format!("{headline}\n\n");
    for (label, value) in &lines {
        text.push_str(&format!("{label}: {value}\n"));
    }
    let open = if p.kind.is_run() {
        "Open the run"
    } else {
        "Open the request"
    };
    text.push_str(&format!("\n{open}: {url}\n"));
    let mut html = format!(
        "<!doctype html>\n<html><body>\n<p><strong>{}</strong></p>\n<table>\n",
        escape(&headline)
    );
    for (label, value) in &lines {
        html.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>\n",
            escape(label),
            escape(value)
        ));
    }
    html.push_str(&format!(
        "</table>\n<p><a href=\"{}\">{open}</a></p>\n</body></html>\n",
        escape(url)
    ));
    (format!("[Countersign] {headline}"), text, html)
}

/// HTML-escapes text for an element's content or a quoted attribute.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_32_email_parts_say_the_same_and_escape_what_people_wrote() {
        let p = Payload {
            kind: NotifyEvent::StepEntered,
            timestamp: "2026-01-01T00:00:00Z".into(),
            data: PayloadData {
                event_seq: 7,
                actor: Some("alice@x".into()),
                recipients: vec!["bob@x".into()],
                url: "http://localhost:8080/requests/r1".into(),
                request: None,
                grant: None,
                run: None,
            },
        };
        let (subject, text, html) = render(&p);
        assert_eq!(
            subject,
            "[Countersign] someone asks for a resource: a review is needed"
        );
        assert!(text.contains("http://localhost:8080/requests/r1"), "{text}");
        assert!(
            html.contains("href=\"http://localhost:8080/requests/r1\""),
            "{html}"
        );
        assert_eq!(
            escape("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
