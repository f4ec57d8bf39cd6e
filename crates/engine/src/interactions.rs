//! Slack's interactions, stored before they are acknowledged (issue 16 item 2, rule 35).
//!
//! Every click, slash command and modal submission is written to `slack_interactions` under
//! its key ([`key`]) before Slack gets its answer, together with a job held by this process
//! ([`TimerKind::SlackInteraction`]). A second delivery of the same key (Slack retrying, or
//! redelivering a Socket Mode envelope, to this replica or another) finds it stored and is
//! acknowledged without being acted on again. When this process has acted, it removes the
//! job. If it dies first, its claim lapses (no heartbeat renews it) and any replica's worker
//! replays the interaction from its stored payload ([`replay`]), through the [`Replayer`] the
//! Slack endpoint installed: a decision or a request is then made, and the person is told in
//! Slack what happened.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use domain::{TimerKind, Timestamp};
use serde_json::Value;

use crate::worker::LEASE;
use crate::{Engine, EngineError};

/// How long an interaction's first claim lasts: longer than handling one takes (a few Slack
/// calls, each within the channel's timeout), so that a process without a running worker
/// (whose heartbeat renews claims) keeps it while it acts. A process that dies first is
/// replayed this long after it stored the interaction.
pub const FIRST_CLAIM: domain::Span = domain::Span::from_secs(60);

/// Acts on a stored interaction again, after the process that stored it died before acting:
/// `(engine, stored)`, where `stored` is what [`Engine::slack_store`] was given.
pub type Replayer =
    Arc<dyn Fn(Arc<Engine>, Value) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The key an interaction is stored under: Slack's `trigger_id`, which is the same in every
/// delivery of one interaction and new for every click, command and submission; for a
/// payload without one, a hash of the payload.
pub fn key(payload: &Value) -> String {
    match payload["trigger_id"].as_str() {
        Some(t) if !t.is_empty() && t.len() <= 200 => format!("trigger:{t}"),
        _ => format!(
            "sha256:{}",
            store::chain::sha256_hex(payload.to_string().as_bytes())
        ),
    }
}

impl Engine {
    /// Installs what replays an interaction whose process died before acting on it. Without
    /// one (no Slack endpoint in this process), a stored interaction is dropped when due.
    pub fn set_slack_replayer(&self, replayer: Replayer) {
        // The first one installed stays: there is one Slack endpoint per engine.
        let _ = self.slack_replayer.set(replayer);
    }

    /// Stores an interaction before it is acknowledged, held by this process (rule 35) for as
    /// long as the returned [`Held`] lives: meanwhile the heartbeat renews the claim and this
    /// process's worker leaves it alone. [`Held::acted`] records it acted on; a `Held` dropped
    /// without it (the handler was cancelled, or panicked) lets the claim lapse, and the
    /// interaction is replayed. `None` if one with this key was stored already: a
    /// redelivery, acknowledged and not acted on again.
    pub async fn slack_store(
        self: &Arc<Self>,
        key: &str,
        stored: &Value,
    ) -> Result<Option<Held>, EngineError> {
        let now = self.now();
        let (owned, payload) = (key.to_owned(), stored.to_string());
        let stored = self
            .write(move |tx| {
                Box::pin(async move {
                    if !tx.put_slack_interaction(&owned, &payload, now).await? {
                        return Ok(false);
                    }
                    let until = now.plus(FIRST_CLAIM);
                    tx.schedule_held(TimerKind::SlackInteraction, &owned, now, until)
                        .await?;
                    Ok(true)
                })
            })
            .await?;
        if !stored {
            return Ok(None);
        }
        self.hold(TimerKind::SlackInteraction, key);
        Ok(Some(Held {
            engine: self.clone(),
            key: key.to_owned(),
        }))
    }

    /// Records that a stored interaction was acted on: nobody replays it. The job is removed
    /// unless another process holds a live claim on it (this one's lapsed and it was taken
    /// over: that one finishes it).
    pub async fn slack_acted(&self, key: &str) -> Result<(), EngineError> {
        let now = self.now();
        let owned = key.to_owned();
        let done = self
            .write(move |tx| {
                Box::pin(async move {
                    let kind = TimerKind::SlackInteraction;
                    // Held by this process, the job is removed whatever its claim; otherwise
                    // only when nobody holds a live claim on it.
                    tx.holds(kind, &owned, now).await?;
                    tx.unschedule(kind, &owned, now).await?;
                    Ok(())
                })
            })
            .await;
        self.release(TimerKind::SlackInteraction, key);
        done
    }
}

/// A stored interaction this process is handling (see [`Engine::slack_store`]).
pub struct Held {
    engine: Arc<Engine>,
    key: String,
}

impl Held {
    /// Records that the interaction was acted on: nobody replays it.
    pub async fn acted(self) {
        if let Err(e) = self.engine.slack_acted(&self.key).await {
            tracing::warn!(error = %e, "a Slack interaction acted on could not be marked so");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.engine.release(TimerKind::SlackInteraction, &self.key);
    }
}

/// The worker's part: an interaction stored by a process that died before acting on it
/// (its claim lapsed) is claimed and replayed here.
pub(crate) async fn replay(
    engine: &Arc<Engine>,
    key: &str,
    now: Timestamp,
) -> Result<(), EngineError> {
    let owned = key.to_owned();
    let stored = engine
        .write(move |tx| {
            Box::pin(async move {
                let kind = TimerKind::SlackInteraction;
                if !tx.claim(kind, &owned, now, now.plus(LEASE)).await? {
                    return Ok(None);
                }
                match tx.slack_interaction(&owned).await? {
                    Some(p) => Ok(Some(p)),
                    None => {
                        // Forgotten (older than a day): nothing left to act on.
                        tx.unschedule(kind, &owned, now).await?;
                        Ok(None)
                    }
                }
            })
        })
        .await?;
    let Some(stored) = stored else {
        return Ok(());
    };
    match (
        engine.slack_replayer.get().cloned(),
        serde_json::from_str::<Value>(&stored),
    ) {
        (Some(replayer), Ok(v)) => {
            tracing::info!(
                key,
                "replaying a Slack interaction its process did not act on"
            );
            replayer(engine.clone(), v).await;
        }
        (None, _) => {
            tracing::warn!(
                key,
                "a stored Slack interaction was dropped: Slack is not served here"
            );
        }
        (_, Err(e)) => tracing::error!(key, error = %e, "a stored Slack interaction is not JSON"),
    }
    engine.slack_acted(key).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::key;

    #[test]
    fn an_interaction_is_keyed_by_its_trigger_or_else_by_its_content() {
        assert_eq!(key(&json!({ "trigger_id": "1.2.abc" })), "trigger:1.2.abc");
        let a = key(&json!({ "type": "view_submission", "view": { "id": "V1" } }));
        let b = key(&json!({ "type": "view_submission", "view": { "id": "V2" } }));
        assert!(a.starts_with("sha256:") && a != b, "{a} {b}");
        let long = "t".repeat(201);
        assert!(key(&json!({ "trigger_id": long })).starts_with("sha256:"));
    }
}
