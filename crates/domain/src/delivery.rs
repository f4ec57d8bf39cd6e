//! The outbox (rules 22, 23 and 32): an application's callback with a request's outcome, or a
//! notification to a person or a channel, and the state of its delivery, as pure transitions.
//! The engine makes the call (an HTTP POST, or an SMTP transaction) and hands the answer to
//! [`Delivery::attempted`], which decides whether the delivery is done, waits for a retry, or
//! has failed for good.

use serde::{Deserialize, Serialize};

use crate::notify::NotifyEvent;
use crate::time::{Span, Timestamp};

/// Where and how a request's outcome is posted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub url: String,
    #[serde(default, skip_serializing_if = "CallbackFormat::is_default")]
    pub format: CallbackFormat,
}

/// The body a callback carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackFormat {
    /// Rule 22's fields in snake case (`id`, `status`, `actioned_by`, …).
    #[default]
    Rest,
    /// Verified Orchestration's `ActionedApprovalData` (`approvalRequestId`, `status`,
    /// `actionedBy`, …, `callbackSecret`), for requests created through `/graphql` (rule 27).
    Graphql,
}

impl CallbackFormat {
    fn is_default(&self) -> bool {
        *self == CallbackFormat::Rest
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answer came back.
    Delivered,
    /// Retries ran out of time; it can be sent again by hand.
    Failed,
    /// The receiver answered 410 Gone: nothing more is sent unless asked again.
    Gone,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Gone => "gone",
        }
    }
}

/// One POST and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: Timestamp,
    /// The HTTP status, when an answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, when it did (no connection, timeout, refused address, non-2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub ms: u64,
}

/// How the next attempt is timed after a failure.
#[derive(Clone, Copy, Debug)]
pub struct RetryPlan {
    /// The backoff delay for this failure (exponential with jitter, chosen by the caller).
    pub delay_ms: u64,
    /// What the receiver asked for with `Retry-After`, honoured on 429 and 503.
    pub retry_after_ms: Option<u64>,
    /// How long after the delivery was (re)armed retries go on.
    pub window: Span,
}

/// What an answer means for a delivery.
enum Verdict {
    Delivered,
    /// The receiver asked for nothing more (410).
    Gone,
    /// Refused for good.
    Failed,
    /// Tried again later: after this many milliseconds if the receiver said, else the backoff.
    Retry(Option<u64>),
}

/// Attempts kept on a delivery; older ones are counted but dropped.
pub const MAX_ATTEMPTS_KEPT: usize = 100;

/// One outcome's callback. Its id is the `webhook-id` of every attempt, so a receiver can
/// drop repeats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub request: String,
    pub url: String,
    #[serde(default)]
    pub format: CallbackFormat,
    /// The JSON body, fixed when the outcome was reached (the secret a `graphql` body carries
    /// is added when it is sent).
    pub body: String,
    pub state: DeliveryState,
    pub created_at: Timestamp,
    /// When retries started counting: the outcome, or the last redelivery.
    pub armed_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<Timestamp>,
    /// Every attempt ever made, including those dropped from `attempts`.
    pub attempt_count: u32,
    pub attempts: Vec<Attempt>,
    /// Set on a notification (rule 32); a callback has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Notice>,
}

/// What makes a delivery a notification: the channel it goes through, the event, and who it
/// is for. Its `url` names the receiver that shares the per-receiver limit: the webhook's URL,
/// or `smtp://host:port` of the mail server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub channel: String,
    pub event: NotifyEvent,
    /// The address or destination it is sent to; none for a channel that takes one copy of
    /// each event (a webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The people it is for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub people: Vec<String>,
    /// The audit event that caused it.
    pub seq: i64,
}

impl Delivery {
    pub fn new(request: &str, callback: &Callback, body: String, now: Timestamp) -> Delivery {
        Delivery {
            id: Delivery::id_for(request),
            request: request.to_owned(),
            url: callback.url.clone(),
            format: callback.format,
            body,
            state: DeliveryState::Pending,
            created_at: now,
            armed_at: now,
            next_at: Some(now),
            attempt_count: 0,
            attempts: vec![],
            notice: None,
        }
    }

    /// A notification of `request`'s event: `id` is unique per event, channel and recipient,
    /// so that writing it twice cannot send it twice.
    pub fn notification(
        id: String,
        request: &str,
        receiver: String,
        notice: Notice,
        body: String,
        now: Timestamp,
    ) -> Delivery {
        Delivery {
            id,
            request: request.to_owned(),
            url: receiver,
            format: CallbackFormat::Rest,
            body,
            state: DeliveryState::Pending,
            created_at: now,
            armed_at: now,
            next_at: Some(now),
            attempt_count: 0,
            attempts: vec![],
            notice: Some(notice),
        }
    }

    /// The id of a request's outcome delivery: a request has one outcome, so one delivery.
    pub fn id_for(request: &str) -> String {
        format!("msg_{request}")
    }

    /// Records an attempt (rule 23): a 2xx delivers; 410 stops for good; anything else (a 3xx
    /// included: redirects are never followed) is retried after the backoff delay, or after
    /// `Retry-After` on 429 and 503, unless that falls past the retry window, which fails the
    /// delivery.
    pub fn attempted(&mut self, a: Attempt, plan: RetryPlan) {
        let verdict = match a.status {
            Some(s) if (200..300).contains(&s) => Verdict::Delivered,
            Some(410) => Verdict::Gone,
            Some(429 | 503) => Verdict::Retry(plan.retry_after_ms),
            _ => Verdict::Retry(None),
        };
        self.settle(a, verdict, plan);
    }

    /// Records an SMTP transaction's answer: a 2xx reply delivers; a permanent (5xx) reply
    /// fails at once, since sending the same message again would be refused again; anything
    /// else (a 4xx reply, no connection, a timeout) is retried after the backoff delay.
    pub fn mailed(&mut self, a: Attempt, plan: RetryPlan) {
        let verdict = match a.status {
            Some(s) if (200..300).contains(&s) => Verdict::Delivered,
            Some(s) if (500..600).contains(&s) => Verdict::Failed,
            _ => Verdict::Retry(None),
        };
        self.settle(a, verdict, plan);
    }

    /// Counts an attempt and keeps it, dropping the oldest past [`MAX_ATTEMPTS_KEPT`].
    fn record(&mut self, a: Attempt) {
        self.attempt_count = self.attempt_count.saturating_add(1);
        self.attempts.push(a);
        if self.attempts.len() > MAX_ATTEMPTS_KEPT {
            self.attempts.remove(0);
        }
    }

    fn settle(&mut self, a: Attempt, verdict: Verdict, plan: RetryPlan) {
        let at = a.at;
        self.record(a);
        let (state, next) = match verdict {
            Verdict::Delivered => (DeliveryState::Delivered, None),
            Verdict::Gone => (DeliveryState::Gone, None),
            Verdict::Failed => (DeliveryState::Failed, None),
            Verdict::Retry(after) => {
                let wait = after.unwrap_or(plan.delay_ms);
                let next = at.plus_millis(i64::try_from(wait).unwrap_or(i64::MAX));
                if next > self.armed_at.plus(plan.window) {
                    (DeliveryState::Failed, None)
                } else {
                    (DeliveryState::Pending, Some(next))
                }
            }
        };
        self.state = state;
        self.next_at = next;
    }

    /// The receiver, as `scheme://host:port` in lower case: deliveries to one receiver share
    /// a bounded number of concurrent calls, so that a slow one cannot hold up the others.
    pub fn lane(&self) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("", &self.url));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            hostport.to_ascii_lowercase()
        )
    }

    /// Records an attempt that can never succeed (its channel is gone from the configuration,
    /// or is now of another kind): the delivery fails at once rather than retrying for days.
    pub fn give_up(&mut self, a: Attempt) {
        self.record(a);
        self.state = DeliveryState::Failed;
        self.next_at = None;
    }

    /// Waits, without an attempt, until `at`: the channel asked its destination be paced
    /// (Slack takes about one message a second per channel).
    pub fn defer(&mut self, at: Timestamp) {
        if self.state == DeliveryState::Pending {
            self.next_at = Some(at);
        }
    }

    /// Sends it again now, with the same id and body, and a fresh retry window.
    pub fn redeliver(&mut self, now: Timestamp) {
        self.state = DeliveryState::Pending;
        self.armed_at = now;
        self.next_at = Some(now);
    }

    /// Failures since the last success or redelivery, for the backoff.
    pub fn failures_in_a_row(&self) -> u32 {
        let n = self
            .attempts
            .iter()
            .rev()
            .take_while(|a| {
                a.at >= self.armed_at && !a.status.is_some_and(|s| (200..300).contains(&s))
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_767_225_600_000);

    fn delivery() -> Delivery {
        let cb = Callback {
            url: "https://app.example.com/cb".into(),
            format: CallbackFormat::Rest,
        };
        Delivery::new("r1", &cb, "{}".into(), T0)
    }

    fn attempt(at_s: i64, status: Option<u16>) -> Attempt {
        Attempt {
            at: T0.plus_millis(at_s * 1000),
            status,
            error: None,
            ms: 5,
        }
    }

    fn plan(delay_s: u64, retry_after_s: Option<u64>) -> RetryPlan {
        RetryPlan {
            delay_ms: delay_s * 1000,
            retry_after_ms: retry_after_s.map(|s| s * 1000),
            window: Span::from_secs(3 * 86400),
        }
    }

    /// Rule 23 as a table: the answer, a Retry-After, and what happens next.
    #[test]
    fn rule_23_answers_decide_what_happens_next() {
        /// The answer, its Retry-After (s), the state after, the next attempt (s from now).
        type Row = (Option<u16>, Option<u64>, DeliveryState, Option<i64>);
        let table: [Row; 9] = [
            (Some(200), None, DeliveryState::Delivered, None),
            (Some(204), None, DeliveryState::Delivered, None),
            (Some(410), None, DeliveryState::Gone, None),
            (Some(500), None, DeliveryState::Pending, Some(10)),
            (Some(302), None, DeliveryState::Pending, Some(10)),
            (None, None, DeliveryState::Pending, Some(10)),
            (Some(503), Some(120), DeliveryState::Pending, Some(120)),
            (Some(429), Some(60), DeliveryState::Pending, Some(60)),
            // Retry-After counts only on 429 and 503.
            (Some(500), Some(120), DeliveryState::Pending, Some(10)),
        ];
        for (status, retry_after, state, next_s) in table {
            let mut d = delivery();
            d.attempted(attempt(0, status), plan(10, retry_after));
            assert_eq!(d.state, state, "{status:?} {retry_after:?}");
            assert_eq!(
                d.next_at,
                next_s.map(|s| T0.plus_millis(s * 1000)),
                "{status:?} {retry_after:?}"
            );
            assert_eq!(d.attempt_count, 1);
        }
    }

    /// Rule 32: an email's SMTP reply: 2xx delivers, 5xx fails at once (the same message
    /// would be refused again), anything else waits for the backoff; a delivery whose channel
    /// is gone fails at once.
    #[test]
    fn rule_32_smtp_replies_decide_what_happens_next() {
        for (code, state, next_s) in [
            (Some(250), DeliveryState::Delivered, None),
            (Some(550), DeliveryState::Failed, None),
            (Some(451), DeliveryState::Pending, Some(10)),
            (None, DeliveryState::Pending, Some(10)),
        ] {
            let mut d = delivery();
            d.mailed(attempt(0, code), plan(10, Some(120)));
            assert_eq!(d.state, state, "{code:?}");
            assert_eq!(
                d.next_at,
                next_s.map(|s| T0.plus_millis(s * 1000)),
                "{code:?}"
            );
            assert_eq!(d.attempt_count, 1);
        }
        let mut d = delivery();
        d.give_up(attempt(0, None));
        assert_eq!(
            (d.state, d.next_at, d.attempt_count),
            (DeliveryState::Failed, None, 1)
        );
    }

    #[test]
    fn rule_23_retries_stop_at_the_window_and_redelivery_rearms() {
        let mut d = delivery();
        let day = 86400;
        d.attempted(attempt(2 * day, Some(500)), plan(day as u64 / 2, None));
        assert_eq!(d.state, DeliveryState::Pending);
        // The next retry would fall after three days: the delivery fails.
        d.attempted(attempt(3 * day - 10, Some(500)), plan(60, None));
        assert_eq!(d.state, DeliveryState::Failed);
        assert_eq!(d.next_at, None);
        assert_eq!(d.failures_in_a_row(), 2);
        d.redeliver(T0.plus_millis(4 * day * 1000));
        assert_eq!(d.state, DeliveryState::Pending);
        assert_eq!(d.failures_in_a_row(), 0);
        assert_eq!(d.id, "msg_r1");
        assert_eq!(d.lane(), "https://app.example.com");
        d.attempted(attempt(4 * day + 1, Some(200)), plan(60, None));
        assert_eq!(d.state, DeliveryState::Delivered);
        assert_eq!(d.attempt_count, 3);
    }
}
