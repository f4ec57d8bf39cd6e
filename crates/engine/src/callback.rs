//! Callbacks (rules 21–23): the outbox of outcome deliveries and the worker that sends them.
//!
//! When a request with a callback reaches its outcome, the transition that decided it also
//! writes a [`Delivery`] (see `save_request`), so a decision is never acknowledged without its
//! callback. The worker takes due deliveries in batches: each is claimed in a transaction,
//! POSTed outside any transaction, and its answer recorded in a second one, which also claims
//! the receiver's next due delivery, if one waits. A crash between the two leaves the claim to
//! run out and the POST to be repeated with the same `webhook-id`, so the receiver can drop
//! the repeat.
//!
//! Receivers are isolated from each other: at most [`PER_RECEIVER`] calls run at once for one
//! receiver (scheme, host and port) and at most [`MAX_DELIVERIES`] in all, and the worker
//! leaves busy receivers out when it reads due deliveries, so a receiver that hangs until the
//! timeout takes only its own slots.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use domain::{
    Attempt, CallbackFormat, Delivery, DeliveryState, Event, EventKind, Request, RetryPlan,
    Timestamp,
};
use rand::RngCore;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::clock::Stopwatch;
use crate::connector::webhook::{error_chain, secret_key, sign};
use crate::outbound::{Guard, shown};
use crate::{Engine, EngineError};

/// Calls running at once to one receiver.
pub const PER_RECEIVER: u32 = 4;
/// Calls running at once in all.
pub const MAX_DELIVERIES: usize = 64;

/// A new callback secret, in Standard Webhooks' `whsec_<base64>` form (24 random bytes), so
/// that the receiver can hand it to any Standard Webhooks library as it is.
pub(crate) fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// The outcome as callbacks and polling report it (rules 22, 24): `status`, `comment`,
/// `actioned_at` and `actioned_by`, or in Verified Orchestration's names (rule 27), where a
/// denial is `rejected`.
pub fn outcome_body(r: &Request, format: CallbackFormat) -> Value {
    let outcome = r.outcome.as_ref();
    let by = outcome
        .and_then(|o| o.by.as_ref())
        .map(|b| json!({"id": b, "name": b}));
    let comment = outcome.and_then(|o| o.comment.clone());
    let at = outcome.map(|o| rfc3339(o.at));
    let ctx = &r.context;
    match format {
        CallbackFormat::Rest => json!({
            "id": r.id,
            "status": r.state.as_str(),
            "comment": comment,
            "actioned_at": at,
            "actioned_by": by,
            "policy": outcome.and_then(|o| o.policy.clone()),
            "resource": r.resource,
            "requester": r.requester,
            "grant_id": r.grant,
            "correlation_id": ctx.correlation_id,
            "request_data": ctx.request_data,
        }),
        CallbackFormat::Graphql => json!({
            "approvalRequestId": r.id,
            "status": vo_status(r),
            "actionedComment": comment,
            "actionedAt": at,
            "actionedBy": by,
            "correlationId": ctx.correlation_id,
            "requestData": ctx.request_data,
        }),
    }
}

/// A time as every surface writes it: RFC 3339 in UTC, fractions only when there are some.
pub fn rfc3339(t: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.millis()) * 1_000_000)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.millis().to_string())
}

/// Verified Orchestration's status names: `rejected` for a denial.
fn vo_status(r: &Request) -> &'static str {
    match r.state {
        domain::RequestState::Denied => "rejected",
        s => s.as_str(),
    }
}

/// The delivery a request's outcome produces, if it has a callback.
pub(crate) fn delivery_for(r: &Request, now: Timestamp) -> Option<Delivery> {
    let cb = r.context.callback.as_ref()?;
    let body = outcome_body(r, cb.format).to_string();
    Some(Delivery::new(&r.id, cb, body, now))
}

/// The clients deliveries go out with, built for each configuration: HTTP for callbacks and
/// webhook channels, SMTP for email channels.
pub(crate) struct Sender {
    guard: Guard,
    http: Result<reqwest::Client, String>,
    mailers: crate::notify::Mailers,
}

impl Sender {
    pub(crate) fn new(config: &config::Config) -> Sender {
        let guard = Guard::new(config.server.outbound_allow.clone());
        let timeout = Duration::from_secs(config.server.callbacks.timeout.secs());
        Sender {
            http: guard.client(timeout),
            guard,
            mailers: crate::notify::Mailers::new(config),
        }
    }

    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }

    pub(crate) fn http(&self) -> &Result<reqwest::Client, String> {
        &self.http
    }
}

/// What one POST came to.
struct Answer {
    status: Option<u16>,
    error: Option<String>,
    /// `Retry-After`, in milliseconds from now.
    retry_after_ms: Option<u64>,
}

/// Due deliveries the worker read but could not claim yet because their receiver had all its
/// slots: each slot of that receiver takes the next one when it records an attempt.
type Backlog = Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;

/// Starts the deliveries due at `now`, as many as there are free slots. Driven step by step
/// (`wait`), it sends them one after the other. Returns how many it started.
///
/// A receiver gets at most [`PER_RECEIVER`] claims at once. The due deliveries beyond those
/// wait in its backlog: a slot that records an attempt claims the next of them in the same
/// transaction and sends it, so that a busy receiver costs one commit per message rather than
/// two, and does not wait for the worker's next round.
pub(crate) async fn dispatch(
    engine: &Arc<Engine>,
    now: Timestamp,
    wait: bool,
    calls: &mut JoinSet<()>,
) -> Result<usize, EngineError> {
    let free = engine.delivery_slots.available_permits();
    if free == 0 {
        return Ok(0);
    }
    let limit = u32::try_from(free.min(256)).unwrap_or(256);
    let ids = engine
        .store
        .due_deliveries(now, PER_RECEIVER, limit)
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    // Renewed by the worker's heartbeat while the call runs (`worker::LEASE`).
    let until = now.plus(crate::worker::LEASE);
    let (claimed, unclaimed): (Vec<Delivery>, Vec<String>) = engine
        .write(move |tx| {
            Box::pin(async move {
                let mut out = vec![];
                let mut left = vec![];
                for id in ids {
                    match tx.claim_delivery(&id, now, until, PER_RECEIVER).await? {
                        Some(d) => out.push(d),
                        None => left.push(id),
                    }
                }
                Ok((out, left))
            })
        })
        .await?;
    // What could not be claimed waits for the claimed deliveries of its receiver; ids of
    // receivers with nothing claimed here are read again next round.
    let mut backlogs: std::collections::HashMap<String, Backlog> = Default::default();
    for d in &claimed {
        backlogs.entry(d.lane()).or_default();
    }
    if !unclaimed.is_empty() {
        let lanes = engine.store.delivery_lanes(&unclaimed).await?;
        for (id, lane) in lanes {
            if let Some(b) = backlogs.get(&lane) {
                b.lock().unwrap_or_else(|p| p.into_inner()).push_back(id);
            }
        }
    }
    let mut started = 0;
    for d in claimed {
        started += 1;
        let e = engine.clone();
        let backlog = backlogs.get(&d.lane()).cloned().unwrap_or_default();
        let job = async move {
            let permit = e.delivery_slots.acquire().await;
            let mut next = Some(d);
            while let Some(d) = next.take() {
                match deliver(&e, d, now, &backlog).await {
                    Ok(n) => next = n,
                    Err(err) => {
                        tracing::warn!(error = %err, "recording a callback attempt failed");
                    }
                }
            }
            drop(permit);
            e.store.due_signal().notify_one();
        };
        if wait {
            job.await;
        } else {
            calls.spawn(job);
        }
    }
    Ok(started)
}

/// Sends one delivery and records what came of it: a callback is POSTed with its request's
/// secret; a notification goes through its channel (a signed POST, or an email). In the
/// transaction that records the attempt, claims the next delivery of `backlog` that is still
/// due and unclaimed, and returns it.
async fn deliver(
    engine: &Arc<Engine>,
    d: Delivery,
    now: Timestamp,
    backlog: &Backlog,
) -> Result<Option<Delivery>, EngineError> {
    let sender = engine.sender();
    let config = engine.config();
    let started = engine.now().max(now);
    let watch = Stopwatch::start();
    let mut mailed = false;
    let mut hopeless = false;
    let mut posted = None;
    let mut deferred = None;
    let answer = match &d.notice {
        None => match engine.store.callback_secret(&d.request).await? {
            Some(secret) => post(&sender, &d.url, &d, &secret, started, None).await,
            None => Answer {
                status: None,
                error: Some("the request's callback secret is missing".into()),
                retry_after_ms: None,
            },
        },
        // A webhook takes one copy of an event (no `to`); an email goes to one address.
        Some(n) => match (config.channels.get(&n.channel), &n.to) {
            (Some(config::Channel::Webhook(w)), None) => {
                let timeout = Duration::from_secs(w.timeout.secs());
                let mut a = post(&sender, &w.url, &d, &w.secret, started, Some(timeout)).await;
                // Everyone who sees the request sees its notifications' errors; a webhook's
                // URL is the operator's, and often holds a secret in its path (chat tools'
                // incoming webhooks do), so the errors name the channel instead.
                let named = format!("the {:?} webhook", n.channel);
                a.error = a.error.map(|e| e.replace(&shown(&w.url), &named));
                a
            }
            (Some(config::Channel::Email(e)), Some(to)) => {
                mailed = true;
                let m = crate::notify::mail(&n.channel, e, &sender.mailers, to, &d, started).await;
                Answer {
                    status: m.code,
                    error: m.error,
                    retry_after_ms: None,
                }
            }
            (Some(config::Channel::Slack(s)), _) => {
                let sent = crate::slack::deliver(engine, s, &d, n, started).await;
                hopeless = sent.reply.hopeless;
                posted = sent.posted;
                deferred = sent.deferred;
                Answer {
                    status: sent.reply.status,
                    error: sent.reply.error,
                    retry_after_ms: sent.reply.retry_after_ms,
                }
            }
            (channel, _) => {
                hopeless = true;
                let why = match channel {
                    None => "is not in the configuration any more",
                    Some(_) => "is now of another type",
                };
                Answer {
                    status: None,
                    error: Some(format!("channel {:?} {why}", n.channel)),
                    retry_after_ms: None,
                }
            }
        },
    };
    let took = watch.elapsed();
    let done = engine.now().max(started);
    let attempt = Attempt {
        at: done,
        status: answer.status,
        error: answer.error,
        ms: u64::try_from(done.millis() - started.millis()).unwrap_or(0),
    };
    let settings = engine.config().server.callbacks.clone();
    let fraction: f64 = rand::random();
    let id = d.id.clone();
    let backlog = backlog.clone();
    let until = done.plus(crate::worker::LEASE);
    let (recorded, next) = engine
        .write(move |tx| {
            Box::pin(async move {
                let tried = Tried {
                    attempt,
                    retry_after_ms: answer.retry_after_ms,
                    hopeless,
                    mailed,
                    fraction,
                    posted,
                    deferred,
                };
                let state = record(tx, &id, done, tried, &settings).await?;
                // The receiver's next message, claimed as this one's claim ends.
                let mut next = None;
                loop {
                    let candidate = backlog
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pop_front();
                    let Some(c) = candidate else { break };
                    if let Some(n) = tx.claim_delivery(&c, done, until, PER_RECEIVER).await? {
                        next = Some(n);
                        break;
                    }
                }
                Ok((state, next))
            })
        })
        .await?;
    if let Some(state) = recorded {
        let result = match state {
            DeliveryState::Pending => "retry",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Gone => "gone",
        };
        engine.metrics.delivery(result, took);
    }
    Ok(next)
}

/// One attempt at a delivery, as it is recorded.
struct Tried {
    attempt: Attempt,
    retry_after_ms: Option<u64>,
    /// The channel cannot deliver it any more: it fails at once.
    hopeless: bool,
    /// An email, judged by its SMTP reply rather than an HTTP status.
    mailed: bool,
    /// The random fraction of the backoff's jitter.
    fraction: f64,
    /// A Slack card was posted: its channel, `ts` and the status it showed.
    posted: Option<(String, String, String)>,
    /// Not sent, paced until then: no attempt to record.
    deferred: Option<Timestamp>,
}

/// Records one attempt at delivery `id` in `tx`, if this holder's claim on it still holds;
/// returns the delivery's state after it.
async fn record(
    tx: &mut dyn store::Tx,
    id: &str,
    done: Timestamp,
    tried: Tried,
    settings: &config::CallbackSettings,
) -> Result<Option<DeliveryState>, EngineError> {
    if !tx.holds_delivery(id, done).await? {
        // Taken over (and perhaps sent again, with the same `webhook-id`) by another holder
        // after this one's claim lapsed: the attempt is its to record.
        tracing::warn!(delivery = %id, "the claim lapsed before the attempt was recorded");
        return Ok(None);
    }
    let Some(mut d) = tx.delivery(id).await? else {
        return Ok(None);
    };
    if d.state != DeliveryState::Pending {
        // Sent again by hand, or finished elsewhere, meanwhile.
        tx.put_delivery(&d, None).await?;
        return Ok(None);
    }
    if let Some(at) = tried.deferred {
        d.defer(at);
        tx.put_delivery(&d, None).await?;
        return Ok(None);
    }
    let delay_ms = crate::backoff::retry_delay_ms(
        d.failures_in_a_row() + 1,
        settings.retry_base.secs() * 1000,
        settings.retry_cap.secs() * 1000,
        tried.fraction,
    );
    let plan = RetryPlan {
        delay_ms,
        retry_after_ms: tried.retry_after_ms,
        window: settings.retry_for,
    };
    if tried.hopeless {
        d.give_up(tried.attempt);
    } else if tried.mailed {
        d.mailed(tried.attempt, plan);
    } else {
        d.attempted(tried.attempt, plan);
    }
    // A callback's end is audited; a notification's shows in its list (auditing every message
    // would double the chain's growth for no decision).
    let kind = match d.state {
        _ if d.notice.is_some() => None,
        DeliveryState::Delivered => Some(EventKind::CallbackDelivered),
        DeliveryState::Failed | DeliveryState::Gone => Some(EventKind::CallbackFailed),
        DeliveryState::Pending => None,
    };
    if let Some(kind) = kind {
        let ev = Event::request(kind, &d.request, None)
            .with("delivery", &d.id)
            .with("state", d.state.as_str())
            .with("attempts", d.attempt_count);
        tx.append(&ev, done).await?;
    }
    if let (Some((channel, ts, shown)), Some(n)) = (&tried.posted, &d.notice) {
        // Rule 36: the copy is recorded with the attempt, and if the request changed while
        // it was being posted (its refresh may have run before this record), one more
        // refresh brings it up to date.
        tx.put_slack_message(&d.request, channel, ts, done).await?;
        if let Some(r) = tx.request(&d.request).await?
            && crate::present::summary(&r).status != *shown
        {
            let id = format!("{}_{ts}", d.id);
            let refresh = Delivery::notification(
                id,
                &d.request,
                d.url.clone(),
                domain::Notice {
                    channel: n.channel.clone(),
                    // An ended request's refresh also says the outcome in the thread.
                    event: crate::slack::refresh_event(&r),
                    to: None,
                    people: vec![],
                    seq: n.seq,
                },
                "{}".into(),
                done,
            );
            tx.put_delivery(&refresh, None).await?;
        }
    }
    tx.put_delivery(&d, None).await?;
    Ok(Some(d.state))
}

/// One signed POST of `d` to `url` (rule 22): Standard Webhooks headers over the exact bytes
/// sent, within `timeout` when the receiver has its own.
async fn post(
    sender: &Sender,
    url: &str,
    d: &Delivery,
    secret: &str,
    now: Timestamp,
    timeout: Option<Duration>,
) -> Answer {
    let failed = |error: String| Answer {
        status: None,
        error: Some(error),
        retry_after_ms: None,
    };
    let http = match &sender.http {
        Ok(h) => h,
        Err(e) => return failed(e.clone()),
    };
    if let Err(e) = sender.guard.check_literal(url) {
        return failed(e);
    }
    let body = match d.format {
        CallbackFormat::Rest => d.body.clone(),
        // Verified Orchestration's body carries the secret itself (rule 27).
        CallbackFormat::Graphql => match serde_json::from_str::<Value>(&d.body) {
            Ok(Value::Object(mut m)) => {
                m.insert("callbackSecret".into(), Value::String(secret.to_owned()));
                Value::Object(m).to_string()
            }
            _ => d.body.clone(),
        },
    };
    let ts = now.millis().div_euclid(1000);
    let signature = sign(&secret_key(secret), &d.id, ts, body.as_bytes());
    let mut req = http.post(url);
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    let res = req
        .header("content-type", "application/json")
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match res {
        Ok(resp) => {
            let status = resp.status();
            let retry_after_ms = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after_ms(v, now));
            let error = (!status.is_success()).then(|| {
                let mut e = format!("POST {} answered {status}", shown(url));
                if status.is_redirection() {
                    e.push_str(" (redirects are not followed)");
                }
                e
            });
            Answer {
                status: Some(status.as_u16()),
                error,
                retry_after_ms,
            }
        }
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(error_chain)
                .unwrap_or_default();
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "failed"
            };
            failed(format!("POST {} {what}: {cause}", shown(url)))
        }
    }
}

/// The longest `Retry-After` honoured: a day.
const MAX_RETRY_AFTER_MS: u64 = 86_400_000;

/// Reads `Retry-After`: a number of seconds, or an HTTP date.
pub fn retry_after_ms(value: &str, now: Timestamp) -> Option<u64> {
    let v = value.trim();
    let ms = if let Ok(secs) = v.parse::<u64>() {
        secs.saturating_mul(1000)
    } else {
        let at =
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
        let at_ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
        u64::try_from(at_ms - now.millis()).unwrap_or(0)
    };
    Some(ms.min(MAX_RETRY_AFTER_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_23_retry_after_is_seconds_or_an_http_date() {
        // 2026-01-01T00:00:00Z
        let now = Timestamp::from_millis(1_767_225_600_000);
        assert_eq!(retry_after_ms("120", now), Some(120_000));
        assert_eq!(
            retry_after_ms("Thu, 01 Jan 2026 00:02:00 GMT", now),
            Some(120_000)
        );
        // A date in the past means now.
        assert_eq!(
            retry_after_ms("Wed, 31 Dec 2025 23:00:00 GMT", now),
            Some(0)
        );
        assert_eq!(retry_after_ms("9999999", now), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(retry_after_ms("soon", now), None);
    }

    #[test]
    fn secrets_are_standard_webhooks_keys() {
        let s = new_secret();
        assert!(s.starts_with("whsec_"), "{s}");
        assert_eq!(secret_key(&s).len(), 24);
        assert_ne!(s, new_secret());
    }
}
