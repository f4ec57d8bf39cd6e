//! The worker: carries out due jobs (timers, the connector outbox, repairs and the
//! reconciliation sweep).
//!
//! [`run_due`] is one step: it reads the jobs due at `now`. Timers only change state, so they
//! are run in batches, one write job per batch, submitted together so that the store commits
//! them in few transactions (100,000 grants expiring in the same second are not 100,000
//! fsyncs). Connector calls take real time, so each runs in its own task, at most
//! [`MAX_CALLS`] at once: a slow connector never holds up expiry or other connectors.
//!
//! A connector call is claimed in one transaction, made outside any transaction, and its
//! result recorded in a second one; a crash in between leaves the claim to run out and the
//! call to be repeated, never lost (rule 17). Tests drive [`run_due`] with a manual clock; it then
//! makes the calls itself, one after the other in due order, so that transcripts are reproducible.

use std::sync::Arc;
use std::time::Duration;

use domain::{Event, EventKind, Grant, GrantState, Span, TimerKind, Timestamp};
use store::DueJob;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::Stopwatch;
use crate::connector::{Action, Call, Connector, Connectors};
use crate::metrics::{CallResult, Observed};
use crate::{Engine, EngineError, apply, save_request};

/// Connector calls running at once.
pub(crate) const MAX_CALLS: usize = 32;
/// How many runbook actions (`run_step` jobs) one worker runs at once, beside its
/// [`MAX_CALLS`] connector calls.
pub(crate) const MAX_RUN_CALLS: usize = 16;
/// Jobs read per page.
const PAGE: u32 = 4096;
/// Timers run in one write job.
const TIMER_BATCH: usize = 512;
/// Retry delays for connector calls: from one second up to five minutes.
const RETRY_BASE_MS: u64 = 1_000;
const RETRY_CAP_MS: u64 = 300_000;
/// How long a claim on a connector call or a callback lasts unless renewed. The holder's
/// heartbeat renews its live claims every [`HEARTBEAT`]; when a holder dies, its calls are
/// taken over by another replica this long after its last heartbeat (rule 17 keeps that safe:
/// connector calls are idempotent by grant id, callbacks by `webhook-id`).
pub(crate) const LEASE: Span = Span::from_secs(4);
/// How often a worker renews its claims.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long one reconciliation sweep may hold its claim.
pub(crate) const SWEEP_CLAIM: Span = Span::from_secs(600);
/// The key of the one reconciliation job.
pub(crate) const SWEEP: &str = "sweep";

/// How long a stopping worker waits for the calls it started to finish (a connector's
/// timeout is at most a few minutes; this is the usual grace a service manager gives). A call
/// still running then is aborted: its claim lapses and another replica makes it again.
const DRAIN: Duration = Duration::from_secs(30);

/// Runs the jobs due at `now`. Connector calls and callbacks are started in `calls`, which the
/// caller owns; with `wait_for_calls` they are made one after the other before this returns.
pub(crate) async fn run_due(
    engine: &Arc<Engine>,
    now: Timestamp,
    wait_for_calls: bool,
    calls: &mut JoinSet<()>,
) -> Result<usize, EngineError> {
    let mut ran = 0;
    loop {
        let jobs = engine.store.due_jobs(now, PAGE).await?;
        let n = jobs.len();
        let (calling, timers): (Vec<DueJob>, Vec<DueJob>) =
            jobs.into_iter().partition(|j| j.kind.calls_connector());
        for job in calling {
            if !engine.start_call(&job) {
                continue; // Already running in this process.
            }
            ran += 1;
            let e = engine.clone();
            let call = async move {
                let slots = if job.kind == TimerKind::RunStep {
                    &e.run_calls
                } else {
                    &e.calls
                };
                let permit = slots.acquire().await;
                let r = run_call(&e, &job, e.now().max(now)).await;
                drop(permit);
                e.end_call(&job);
                if let Err(err) = r {
                    tracing::warn!(kind = job.kind.as_str(), key = %job.key, error = %err, "job failed");
                }
            };
            // Driven step by step (tests), calls run one after the other in due order, so
            // that what they record comes in a reproducible order.
            if wait_for_calls {
                call.await;
            } else {
                calls.spawn(call);
            }
        }
        let mut writes = JoinSet::new();
        for batch in timers.chunks(TIMER_BATCH) {
            let (e, batch) = (engine.clone(), batch.to_vec());
            writes.spawn(async move { run_timers(&e, batch, now).await });
        }
        let mut progress = false;
        while let Some(r) = writes.join_next().await {
            match r {
                Ok(Ok(k)) => {
                    ran += k;
                    progress = true;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "timer batch failed"),
                Err(e) => tracing::error!(error = %e, "timer batch panicked"),
            }
        }
        // A full page that made no progress (the store is failing, or only calls already
        // running were due) is not read again at once: the loop waits instead of spinning.
        if n < PAGE as usize || !progress {
            break;
        }
    }
    match crate::callback::dispatch(engine, now, wait_for_calls, calls).await {
        Ok(n) => ran += n,
        Err(e) => tracing::warn!(error = %e, "callback dispatch failed"),
    }
    Ok(ran)
}

/// Runs a batch of timers in one transaction. Returns how many ran.
async fn run_timers(
    engine: &Arc<Engine>,
    batch: Vec<DueJob>,
    now: Timestamp,
) -> Result<usize, EngineError> {
    let config = engine.config();
    let notice = config.server.expiry_notice;
    let clock = engine.clock.clone();
    let (ran, observed) = engine
        .write(move |tx| {
            Box::pin(async move {
                // What a timer records is stamped with the time its transaction runs (the
                // page of due jobs may have been read a little earlier).
                let now = clock.now().max(now);
                let (requests, grants): (Vec<&str>, Vec<&str>) = batch
                    .iter()
                    .filter(|j| {
                        !matches!(j.kind, TimerKind::StepReminder | TimerKind::StepEscalation)
                    })
                    .map(|j| {
                        let of_request =
                            matches!(j.kind, TimerKind::RequestExpiry | TimerKind::FollowUpDue);
                        (of_request, j.key.as_str())
                    })
                    .fold((vec![], vec![]), |(mut r, mut g), (is_request, key)| {
                        if is_request {
                            r.push(key)
                        } else {
                            g.push(key)
                        }
                        (r, g)
                    });
                tx.warm(&grants, &requests).await?;
                let mut observed = Observed::default();
                for job in &batch {
                    timer(tx, job, now, notice, &config.directory, &mut observed).await?;
                }
                Ok((batch.len(), observed))
            })
        })
        .await?;
    engine.metrics.record(observed);
    Ok(ran)
}

/// Runs one timer; notes in `seen` what the metrics record once the batch committed.
async fn timer(
    tx: &mut dyn store::Tx,
    job: &DueJob,
    now: Timestamp,
    notice: Span,
    dir: &domain::Directory,
    seen: &mut Observed,
) -> Result<(), EngineError> {
    let key = job.key.as_str();
    match job.kind {
        TimerKind::RequestExpiry => match tx.request(key).await? {
            Some(mut r) => match r.expire(now) {
                Some(ch) => {
                    save_request(tx, &mut r, ch, now, notice).await?;
                    if r.state.is_terminal() {
                        seen.decided.push((r.resource.clone(), r.state.as_str()));
                    }
                }
                // Fired early (the clock moved back?): wait for the deadline.
                None if !r.state.is_terminal() => {
                    tx.schedule(TimerKind::RequestExpiry, key, r.pending_until)
                        .await?
                }
                None => tx.unschedule(TimerKind::RequestExpiry, key, now).await?,
            },
            None => tx.unschedule(TimerKind::RequestExpiry, key, now).await?,
        },
        TimerKind::GrantExpiry => {
            let Some(mut g) = tx.grant(key).await? else {
                return Ok(tx.unschedule(TimerKind::GrantExpiry, key, now).await?);
            };
            match g.expire(now) {
                Some(ch) => {
                    apply(tx, ch, now, notice).await?;
                    tx.put_grant(&g).await?;
                    if let Some(at) = g.expires_at {
                        seen.expiry_lag_ms.push(now.millis() - at.millis());
                    }
                }
                None => match g.expires_at {
                    Some(at) if g.state == GrantState::Active => {
                        tx.schedule(TimerKind::GrantExpiry, key, at).await?
                    }
                    _ => tx.unschedule(TimerKind::GrantExpiry, key, now).await?,
                },
            }
        }
        TimerKind::GrantStart => {
            let Some(mut g) = tx.grant(key).await? else {
                return Ok(tx.unschedule(TimerKind::GrantStart, key, now).await?);
            };
            match g.start(now) {
                Some(ch) => {
                    apply(tx, ch, now, notice).await?;
                    tx.put_grant(&g).await?;
                }
                None => match g.spec.start_at {
                    Some(at) if g.state == GrantState::Scheduled => {
                        tx.schedule(TimerKind::GrantStart, key, at).await?
                    }
                    _ => tx.unschedule(TimerKind::GrantStart, key, now).await?,
                },
            }
        }
        TimerKind::GrantNotice => {
            if let Some(g) = tx.grant(key).await?
                && let Some(ch) = g.expiring(now)
            {
                apply(tx, ch, now, notice).await?;
            }
            tx.unschedule(TimerKind::GrantNotice, key, now).await?;
        }
        TimerKind::StepReminder | TimerKind::StepEscalation => {
            // Rule 33: a step's reminder or escalation; nothing once the step has moved on.
            let step = domain::parse_step_key(key);
            let req = match step {
                Some((id, _)) => tx.request(id).await?,
                None => None,
            };
            let changed = match (step, req) {
                (Some((_, i)), Some(mut r)) => {
                    let ch = if job.kind == TimerKind::StepReminder {
                        r.remind(i, now)
                    } else {
                        r.escalate(i, dir, now)
                    };
                    match ch {
                        Some(ch) => {
                            // The transition sets the next timer, if there is one.
                            tx.unschedule(job.kind, key, now).await?;
                            save_request(tx, &mut r, ch, now, notice).await?;
                            true
                        }
                        None => false,
                    }
                }
                _ => false,
            };
            if !changed {
                tx.unschedule(job.kind, key, now).await?;
            }
        }
        TimerKind::FollowUpDue => {
            // Rule 34: an open break-glass follow-up escalates once; nothing once it is closed.
            let changed = match tx.request(key).await? {
                Some(mut r) => match r.follow_up_due(dir, now) {
                    Some(ch) => {
                        tx.unschedule(job.kind, key, now).await?;
                        save_request(tx, &mut r, ch, now, notice).await?;
                        true
                    }
                    None => false,
                },
                None => false,
            };
            if !changed {
                tx.unschedule(job.kind, key, now).await?;
            }
        }
        TimerKind::ConnectorGrant
        | TimerKind::ConnectorRevoke
        | TimerKind::Repair
        | TimerKind::Reconcile
        | TimerKind::PolicyCheck
        | TimerKind::SlackInteraction
        | TimerKind::RunStep => {}
    }
    Ok(())
}

async fn run_call(engine: &Arc<Engine>, job: &DueJob, now: Timestamp) -> Result<(), EngineError> {
    match job.kind {
        TimerKind::ConnectorGrant => lifecycle_call(engine, job, Action::Grant, now).await,
        TimerKind::ConnectorRevoke => lifecycle_call(engine, job, Action::Revoke, now).await,
        TimerKind::Repair => repair(engine, job, now).await,
        TimerKind::Reconcile => reconcile(engine, now).await,
        TimerKind::PolicyCheck => crate::recheck::sweep(engine, now).await,
        TimerKind::SlackInteraction => crate::interactions::replay(engine, &job.key, now).await,
        TimerKind::RunStep => crate::runs::advance(engine, &job.key, now).await,
        _ => Ok(()),
    }
}

/// A connector as a call needs it: the connector itself, how long a call may take, and how
/// many activation attempts it gets.
struct Target {
    connector: Option<Arc<dyn Connector>>,
    timeout: Span,
    max_attempts: u32,
}

impl Target {
    fn of(config: &config::Config, connectors: &Connectors, g: &Grant) -> Target {
        let name = g.spec.connector.as_deref().unwrap_or_default();
        let (timeout, max_attempts) = config
            .connectors
            .get(name)
            .map_or((Span::from_secs(30), 5), |d| {
                (d.timeout(), d.max_attempts())
            });
        Target {
            connector: connectors.get(name).cloned(),
            timeout,
            max_attempts,
        }
    }
}

/// Makes one call, bounded by the connector's timeout (plus a margin for the connector's
/// own, more precise, timeout to fire first), and records it in the metrics.
async fn make_call(engine: &Engine, target: &Target, call: &Call<'_>) -> Result<(), String> {
    let timeout = target.timeout;
    let name = call.grant.spec.connector.as_deref().unwrap_or_default();
    let Some(c) = &target.connector else {
        let took = Duration::ZERO;
        engine
            .metrics
            .connector_call(name, call.action.as_str(), CallResult::Error, took);
        return Err(format!("connector {name:?} is not configured"));
    };
    let limit = Duration::from_secs(timeout.secs() + 5);
    let watch = Stopwatch::start();
    let (result, out) = match tokio::time::timeout(limit, c.call(call)).await {
        Ok(Ok(())) => (CallResult::Ok, Ok(())),
        Ok(Err(e)) => (CallResult::Error, Err(e)),
        Err(_) => (
            CallResult::Timeout,
            Err(format!("the call did not finish within {timeout}")),
        ),
    };
    engine
        .metrics
        .connector_call(name, call.action.as_str(), result, watch.elapsed());
    out
}

/// After a revoke took access away, every other live grant of the same subject and resource
/// is re-applied: its grant call may have run before the revoke (rule 18).
async fn regrant_others(
    tx: &mut dyn store::Tx,
    g: &Grant,
    at: Timestamp,
) -> Result<(), EngineError> {
    for other in tx.live_grants(&g.spec.subject, &g.spec.resource).await? {
        if other.id != g.id {
            tx.schedule(TimerKind::Repair, &other.id, at).await?;
            tx.signal_due();
        }
    }
    Ok(())
}

/// Whether a grant call for `grant` (its activation, or a repair that grants) is claimed by
/// anyone at `now`.
async fn granting(
    tx: &mut dyn store::Tx,
    grant: &str,
    now: Timestamp,
) -> Result<bool, EngineError> {
    Ok(tx.claimed(TimerKind::ConnectorGrant, grant, now).await?
        || tx.claimed(TimerKind::Repair, grant, now).await?)
}

/// What a holder does with a result once its lease lapsed: nothing. Another holder may have
/// taken the job over (and made the call again); the job stays for it.
pub(crate) fn lease_lost(kind: TimerKind, key: &str) {
    tracing::warn!(
        kind = kind.as_str(),
        key,
        "the claim lapsed before the result was recorded; the job is left to its new holder"
    );
}

/// A grant's own activation or revocation call (the outbox of rule 17).
async fn lifecycle_call(
    engine: &Arc<Engine>,
    job: &DueJob,
    action: Action,
    now: Timestamp,
) -> Result<(), EngineError> {
    let (config, connectors) = (engine.config(), engine.connectors());
    let notice = config.server.expiry_notice;
    let waits_for = match action {
        Action::Grant => GrantState::Activating,
        Action::Revoke => GrantState::Revoking,
    };

    // Claim the call so that no other worker makes it while this one does. A revoke whose
    // access another live grant still gives ends without a call (rule 18).
    let (kind, key) = (job.kind, job.key.clone());
    let claimed = engine
        .write(move |tx| {
            Box::pin(async move {
                let Some(mut g) = tx.grant(&key).await? else {
                    tx.unschedule(kind, &key, now).await?;
                    return Ok(None);
                };
                if g.state != waits_for {
                    tx.unschedule(kind, &key, now).await?;
                    return Ok(None);
                }
                // Another holder (a replica that read the job as due at the same moment) has
                // claimed this call: it decides. Deciding here too could end the grant as "access
                // kept" while that holder makes the revoke call.
                if tx.claimed(kind, &key, now).await? {
                    return Ok(None);
                }
                // A revoke waits while a grant call for the same grant still runs, on any
                // replica: finishing first, it would be undone by the grant call landing after it.
                if action == Action::Revoke && granting(tx, &key, now).await? {
                    return Ok(None);
                }
                if action == Action::Revoke {
                    let others = tx.live_grants(&g.spec.subject, &g.spec.resource).await?;
                    if let Some(o) = others.iter().find(|o| o.id != g.id) {
                        let ch = g.revoke_kept(&o.id, now);
                        apply(tx, ch, now, notice).await?;
                        tx.put_grant(&g).await?;
                        return Ok(None);
                    }
                }
                let target = Target::of(&config, &connectors, &g);
                Ok(tx
                    .claim(kind, &key, now, now.plus(LEASE))
                    .await?
                    .then_some((g, target)))
            })
        })
        .await?;
    let Some((grant, target)) = claimed else {
        return Ok(());
    };
    let max_attempts = target.max_attempts;

    let result = make_call(engine, &target, &Call::lifecycle(action, &grant, now)).await;
    // The call took real time: record its result at the time it ended.
    let done_at = engine.now().max(now);
    let fraction: f64 = rand::random();
    let key = job.key.clone();
    engine
        .write(move |tx| {
            Box::pin(async move {
                if !tx.holds(kind, &key, done_at).await? {
                    lease_lost(kind, &key);
                    return Ok(());
                }
                let Some(mut g) = tx.grant(&key).await? else {
                    return Ok(tx.unschedule(kind, &key, done_at).await?);
                };
                let ch = match (&result, action) {
                    (Ok(()), Action::Grant) => g.activated(done_at),
                    (Ok(()), Action::Revoke) => {
                        regrant_others(tx, &g, done_at).await?;
                        g.revoke_confirmed(done_at)
                    }
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
                apply(tx, ch, done_at, notice).await?;
                // The job stays only while the grant still waits for this call (a failure
                // rescheduled it); otherwise it is done, or the grant moved on meanwhile.
                if g.state != waits_for {
                    tx.unschedule(kind, &key, done_at).await?;
                }
                tx.put_grant(&g).await?;
                Ok(())
            })
        })
        .await
}

/// Makes the target match a grant again: grant while the grant is live, revoke once it has
/// ended and no other grant gives the same access. Retried with backoff until it succeeds or
/// there is nothing left to repair.
async fn repair(engine: &Arc<Engine>, job: &DueJob, now: Timestamp) -> Result<(), EngineError> {
    let key = job.key.clone();
    let (config, connectors) = (engine.config(), engine.connectors());
    let notice = config.server.expiry_notice;
    let claimed = engine
        .write(move |tx| {
            Box::pin(async move {
                let Some(g) = tx.grant(&key).await? else {
                    tx.unschedule(TimerKind::Repair, &key, now).await?;
                    return Ok(None);
                };
                let action = match g.state {
                    GrantState::Activating | GrantState::Active => Action::Grant,
                    s if s.is_final() => {
                        if tx.claimed(TimerKind::ConnectorGrant, &key, now).await? {
                            return Ok(None);
                        }
                        let others = tx.live_grants(&g.spec.subject, &g.spec.resource).await?;
                        if others.iter().any(|o| o.id != g.id) {
                            tx.unschedule(TimerKind::Repair, &key, now).await?;
                            return Ok(None);
                        }
                        Action::Revoke
                    }
                    // Scheduled or revoking: the grant's own jobs take care of it.
                    _ => {
                        tx.unschedule(TimerKind::Repair, &key, now).await?;
                        return Ok(None);
                    }
                };
                let target = Target::of(&config, &connectors, &g);
                let claimed = tx
                    .claim(TimerKind::Repair, &key, now, now.plus(LEASE))
                    .await?;
                Ok(claimed.then_some((g, action, target)))
            })
        })
        .await?;
    let Some((grant, action, target)) = claimed else {
        return Ok(());
    };
    let call = Call {
        action,
        grant: &grant,
        id: format!(
            "msg_{}_{}_repair_{}",
            grant.id,
            action.as_str(),
            now.millis()
        ),
        now,
    };
    let result = make_call(engine, &target, &call).await;
    let done_at = engine.now().max(now);
    let fraction: f64 = rand::random();
    let key = job.key.clone();
    engine
        .write(move |tx| {
            Box::pin(async move {
                if !tx.holds(TimerKind::Repair, &key, done_at).await? {
                    lease_lost(TimerKind::Repair, &key);
                    return Ok(());
                }
                let Some(mut g) = tx.grant(&key).await? else {
                    return Ok(tx.unschedule(TimerKind::Repair, &key, done_at).await?);
                };
                let mut ch = domain::Changes::default();
                match &result {
                    Ok(()) => {
                        if action == Action::Revoke {
                            regrant_others(tx, &g, done_at).await?;
                        }
                        g.repair_attempts = 0;
                        ch.event(
                            Event::grant(EventKind::GrantRepaired, &g.id, None)
                                .with("action", action.as_str()),
                        );
                        tx.unschedule(TimerKind::Repair, &key, done_at).await?;
                    }
                    Err(e) => {
                        g.repair_attempts += 1;
                        let delay = crate::backoff::retry_delay_ms(
                            g.repair_attempts,
                            RETRY_BASE_MS,
                            RETRY_CAP_MS,
                            fraction,
                        );
                        ch.event(
                            Event::grant(EventKind::GrantRepairFailed, &g.id, None)
                                .with("action", action.as_str())
                                .with("attempt", g.repair_attempts)
                                .with("error", e),
                        );
                        let at = done_at.plus_millis(i64::try_from(delay).unwrap_or(i64::MAX));
                        tx.schedule(TimerKind::Repair, &key, at).await?;
                    }
                }
                apply(tx, ch, done_at, notice).await?;
                tx.put_grant(&g).await?;
                Ok(())
            })
        })
        .await
}

/// What one check found wrong.
struct Drift {
    grant: String,
    /// The state the grant was in when checked: the drift is recorded only if it still is.
    state: GrantState,
    /// `missing` (an active grant whose access is gone) or `lingering` (access left after the
    /// grant ended).
    kind: &'static str,
}

/// The reconciliation sweep: asks every connector that can tell whether each grant's access
/// matches its state, records drift and schedules its repair, then schedules the next sweep.
async fn reconcile(engine: &Arc<Engine>, now: Timestamp) -> Result<(), EngineError> {
    let until = now.plus(SWEEP_CLAIM);
    let claimed = engine
        .write(move |tx| {
            Box::pin(async move { Ok(tx.claim(TimerKind::Reconcile, SWEEP, now, until).await?) })
        })
        .await?;
    if !claimed {
        return Ok(());
    }
    let config = engine.config();
    let connectors = engine.connectors();
    let mut drift = vec![];
    let (mut checked, mut failed) = (0u64, 0u64);
    for (name, res) in &config.resources {
        let Some(cname) = res.connector.as_deref() else {
            continue;
        };
        let Some(c) = connectors.get(cname).filter(|c| c.can_check()) else {
            continue;
        };
        let timeout = config
            .connectors
            .get(cname)
            .map_or(Span::from_secs(30), |d| d.timeout());
        for g in engine.store.reconcile_candidates(name).await? {
            let limit = Duration::from_secs(timeout.secs() + 5);
            // Signed with the time of the check itself: a long sweep's later checks must not
            // look stale to a receiver that bounds the timestamp.
            let watch = Stopwatch::start();
            let (result, answer) =
                match tokio::time::timeout(limit, c.check(&g, engine.now())).await {
                    Ok(Ok(v)) => (CallResult::Ok, Ok(v)),
                    Ok(Err(e)) => (CallResult::Error, Err(e)),
                    Err(_) => (
                        CallResult::Timeout,
                        Err(format!("check did not finish within {timeout}")),
                    ),
                };
            engine
                .metrics
                .connector_call(cname, "check", result, watch.elapsed());
            checked += 1;
            let in_effect = match answer {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    failed += 1;
                    tracing::warn!(grant = %g.id, connector = cname, error = %e, "check failed");
                    continue;
                }
            };
            let should = g.state == GrantState::Active;
            if in_effect != should {
                drift.push(Drift {
                    grant: g.id.clone(),
                    state: g.state,
                    kind: if should { "missing" } else { "lingering" },
                });
            }
        }
    }
    tracing::info!(
        checked,
        failed,
        drift = drift.len(),
        "reconciliation sweep done"
    );
    let interval = config.server.reconcile_interval;
    let notice = config.server.expiry_notice;
    let done_at = engine.now().max(now);
    engine
        .write(move |tx| {
            Box::pin(async move {
                if !tx.holds(TimerKind::Reconcile, SWEEP, done_at).await? {
                    lease_lost(TimerKind::Reconcile, SWEEP);
                    return Ok(());
                }
                for d in drift {
                    let Some(g) = tx.grant(&d.grant).await? else {
                        continue;
                    };
                    // The grant moved on since it was checked: what was seen is stale.
                    if g.state != d.state {
                        continue;
                    }
                    let others = tx.live_grants(&g.spec.subject, &g.spec.resource).await?;
                    if d.kind == "lingering" && !others.is_empty() {
                        continue;
                    }
                    let mut ch = domain::Changes::default();
                    ch.event(
                        Event::grant(EventKind::GrantDrift, &g.id, None)
                            .with("drift", d.kind)
                            .with("state", g.state.as_str())
                            .with("subject", &g.spec.subject)
                            .with("resource", &g.spec.resource),
                    );
                    apply(tx, ch, done_at, notice).await?;
                    tx.schedule(TimerKind::Repair, &g.id, done_at).await?;
                    tx.signal_due();
                }
                if interval.secs() > 0 {
                    tx.schedule(TimerKind::Reconcile, SWEEP, done_at.plus(interval))
                        .await?;
                } else {
                    tx.unschedule(TimerKind::Reconcile, SWEEP, done_at).await?;
                }
                Ok(())
            })
        })
        .await
}

/// The loop the server runs: due jobs now, then wait until the next is due, new work is
/// signalled, or a second passes.
pub struct Worker;

impl Worker {
    /// Runs until `shutdown` turns true, then stops taking work, waits up to [`DRAIN`] for the
    /// connector calls and callbacks it started (renewing their claims meanwhile), and
    /// returns. Every task it spawned has ended by then.
    pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = engine.ensure_sweep().await {
            tracing::error!(error = %e, "cannot schedule the periodic sweeps");
        }
        let due = engine.store.due_signal();
        let (beat_stop, beat_rx) = watch::channel(false);
        let beat = tokio::spawn(heartbeat(engine.clone(), beat_rx));
        let mut calls = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = engine.now();
            if let Err(e) = run_due(&engine, now, false, &mut calls).await {
                tracing::error!(error = %e, "worker step failed");
            }
            reap(&mut calls);
            // Jobs already due are running (or failing): wait for the next one to come due,
            // a signal, or a second.
            let wait = match engine.store.next_due(now).await {
                Ok(Some(at)) => {
                    let ms = (at.millis() - engine.now().millis()).clamp(5, 1_000);
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
        drain(&mut calls).await;
        let _ = beat_stop.send(true);
        if let Err(e) = beat.await {
            tracing::error!(error = %e, "the heartbeat task panicked");
        }
    }
}

/// Collects the calls that have finished, so that the set holds only running ones.
fn reap(calls: &mut JoinSet<()>) {
    while let Some(r) = calls.try_join_next() {
        if let Err(e) = r {
            tracing::error!(error = %e, "a connector call or callback task panicked");
        }
    }
}

/// Waits up to [`DRAIN`] for the running calls, then aborts the rest.
async fn drain(calls: &mut JoinSet<()>) {
    if calls.is_empty() {
        return;
    }
    tracing::info!(running = calls.len(), "waiting for running calls to finish");
    let all = async {
        while let Some(r) = calls.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "a connector call or callback task panicked");
            }
        }
    };
    if tokio::time::timeout(DRAIN, all).await.is_err() {
        tracing::warn!(
            aborted = calls.len(),
            "calls still running at shutdown are aborted; their claims lapse and they are made again"
        );
        calls.shutdown().await;
    }
}

/// Renews this worker's claims every [`HEARTBEAT`] while it holds any (connector calls or
/// callbacks running), so that they lapse only when the process is gone or stuck.
async fn heartbeat(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = crate::clock::pause(HEARTBEAT) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if !engine.holding() {
            continue;
        }
        let now = engine.now();
        let renewed = engine
            .write(move |tx| Box::pin(async move { Ok(tx.renew(now, now.plus(LEASE)).await?) }))
            .await;
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "renewing this worker's claims failed");
        }
    }
}
