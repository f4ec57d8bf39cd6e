//! The worker: carries out due jobs (timers and the connector outbox).
//!
//! [`run_due`] is one step: it reads the jobs due at `now` and runs each, so tests drive it
//! with a manual clock. [`Worker`] is the thin loop the server runs. A connector call is
//! claimed in one transaction, made outside any transaction, and its result recorded in a
//! second one; a crash in between leaves the claim to run out and the call to be repeated,
//! never lost (rule 17).

use std::sync::Arc;
use std::time::Duration;

use domain::{GrantState, Span, TimerKind, Timestamp};
use store::DueJob;
use tokio::sync::watch;

use crate::exec::{self, Action};
use crate::{Engine, EngineError, apply, save_request};

/// Retry delays for connector calls: from one second up to five minutes.
const RETRY_BASE_MS: u64 = 1_000;
const RETRY_CAP_MS: u64 = 300_000;
/// How long past its timeout a claimed connector call may run before it is tried again.
const CLAIM_MARGIN: Span = Span::from_secs(30);

pub(crate) async fn run_due(engine: &Engine, now: Timestamp) -> Result<usize, EngineError> {
    let mut ran = 0;
    loop {
        let jobs = engine.store.due_jobs(now, 256).await?;
        let n = jobs.len();
        let mut progress = false;
        for job in jobs {
            match run_job(engine, &job, now).await {
                Ok(()) => progress = true,
                Err(e) => {
                    tracing::warn!(kind = job.kind.as_str(), key = %job.key, error = %e, "job failed")
                }
            }
            ran += 1;
        }
        // A full page that made no progress (the store is failing) is not read again at once:
        // the loop waits and tries later instead of spinning.
        if n < 256 || !progress {
            return Ok(ran);
        }
    }
}

async fn run_job(engine: &Engine, job: &DueJob, now: Timestamp) -> Result<(), EngineError> {
    let key = job.key.clone();
    match job.kind {
        TimerKind::RequestExpiry => {
            engine
                .write(move |tx| {
                    Box::pin(async move {
                        match tx.request(&key).await? {
                            Some(mut r) => match r.expire(now) {
                                Some(ch) => save_request(tx, &mut r, ch, now).await?,
                                // Fired early (the clock moved back?): wait for the deadline.
                                None if !r.state.is_terminal() => {
                                    tx.schedule(TimerKind::RequestExpiry, &key, r.pending_until)
                                        .await?
                                }
                                None => tx.unschedule(TimerKind::RequestExpiry, &key).await?,
                            },
                            None => tx.unschedule(TimerKind::RequestExpiry, &key).await?,
                        }
                        Ok(())
                    })
                })
                .await
        }
        TimerKind::GrantExpiry => {
            engine
                .write(move |tx| {
                    Box::pin(async move {
                        let Some(mut g) = tx.grant(&key).await? else {
                            return Ok(tx.unschedule(TimerKind::GrantExpiry, &key).await?);
                        };
                        match g.expire(now) {
                            Some(ch) => {
                                apply(tx, ch, now).await?;
                                tx.put_grant(&g).await?;
                            }
                            None => match g.expires_at {
                                Some(at) if g.state == GrantState::Active => {
                                    tx.schedule(TimerKind::GrantExpiry, &key, at).await?
                                }
                                _ => tx.unschedule(TimerKind::GrantExpiry, &key).await?,
                            },
                        }
                        Ok(())
                    })
                })
                .await
        }
        TimerKind::ConnectorGrant => connector_call(engine, job, Action::Grant, now).await,
        TimerKind::ConnectorRevoke => connector_call(engine, job, Action::Revoke, now).await,
    }
}

async fn connector_call(
    engine: &Engine,
    job: &DueJob,
    action: Action,
    now: Timestamp,
) -> Result<(), EngineError> {
    let config = engine.config();
    let Some(grant) = engine.store.grant(&job.key).await? else {
        let (kind, key) = (job.kind, job.key.clone());
        return engine
            .write(move |tx| Box::pin(async move { Ok(tx.unschedule(kind, &key).await?) }))
            .await;
    };
    let connector = grant
        .spec
        .connector
        .as_ref()
        .and_then(|c| config.connectors.get(c));
    let (timeout, max_attempts) = match connector {
        Some(config::ConnectorDef::Exec(c)) => (c.timeout, c.max_attempts),
        None => (Span::from_secs(30), 5),
    };

    // Claim the call so that no other worker makes it while this one does.
    let (kind, key) = (job.kind, job.key.clone());
    let until = now.plus(timeout).plus(CLAIM_MARGIN);
    let claimed = engine
        .write(move |tx| Box::pin(async move { Ok(tx.claim(kind, &key, now, until).await?) }))
        .await?;
    if !claimed {
        return Ok(());
    }

    let result = match connector {
        Some(config::ConnectorDef::Exec(c)) => exec::call(c, action, &grant).await,
        None => Err(format!(
            "connector {:?} is not configured",
            grant.spec.connector.as_deref().unwrap_or_default()
        )),
    };
    // The call took real time: record its result at the time it ended.
    let done_at = engine.now().max(now);
    let fraction: f64 = rand::random();
    let key = job.key.clone();
    engine
        .write(move |tx| {
            Box::pin(async move {
                let Some(mut g) = tx.grant(&key).await? else {
                    return Ok(tx.unschedule(kind, &key).await?);
                };
                let waits_for = match action {
                    Action::Grant => GrantState::Activating,
                    Action::Revoke => GrantState::Revoking,
                };
                let ch = match (&result, action) {
                    (Ok(()), Action::Grant) => g.activated(done_at),
                    (Ok(()), Action::Revoke) => g.revoke_confirmed(done_at),
                    // The grant moved on while this call ran (revoked while activating): its
                    // failure says nothing about the phase the grant is in now.
                    (Err(_), _) if g.state != waits_for => domain::Changes::default(),
                    (Err(e), _) => {
                        let attempt = g.attempts + 1;
                        let give_up = action == Action::Grant && attempt >= max_attempts;
                        let delay = crate::backoff::retry_delay_ms(
                            attempt,
                            RETRY_BASE_MS,
                            RETRY_CAP_MS,
                            fraction,
                        );
                        let retry_at = (!give_up)
                            .then(|| done_at.plus_millis(i64::try_from(delay).unwrap_or(i64::MAX)));
                        g.call_failed(e, retry_at, done_at)
                    }
                };
                apply(tx, ch, done_at).await?;
                // The job stays only while the grant still waits for this call (a failure
                // rescheduled it); otherwise it is done, or the grant moved on meanwhile.
                if g.state != waits_for {
                    tx.unschedule(kind, &key).await?;
                }
                tx.put_grant(&g).await?;
                Ok(())
            })
        })
        .await
}

/// The loop the server runs: due jobs now, then wait until the next is due, new work is
/// signalled, or a second passes.
pub struct Worker;

impl Worker {
    pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
        let due = engine.store.due_signal();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = run_due(&engine, engine.now()).await {
                tracing::error!(error = %e, "worker step failed");
            }
            let wait = match engine.store.next_due().await {
                Ok(Some(at)) => {
                    let ms = (at.millis() - engine.now().millis()).clamp(10, 1_000);
                    Duration::from_millis(u64::try_from(ms).unwrap_or(1_000))
                }
                _ => Duration::from_secs(1),
            };
            tokio::select! {
                _ = crate::clock::pause(wait) => {}
                _ = due.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
