//! Rule 20: deny policies are evaluated again for active grants, at `policy_interval`, and a
//! grant a policy now denies is revoked early with the policy's message.
//!
//! The sweep uses the policies configured now (a grant is held under today's rules, as in
//! Abbey), with the input of the request that produced the grant plus the grant itself. It
//! fails closed: a deny policy that errors revokes, and the cause is in the audit event.

use std::sync::Arc;

use domain::{Actor, GrantState, PolicyEval, Purpose, TimerKind, Timestamp, Trace, policy};
use serde_json::{Value, json};

use crate::worker::{SWEEP, SWEEP_CLAIM};
use crate::{Engine, EngineError, apply};

/// The name revocations by policy are recorded under.
pub const POLICY_ACTOR: &str = "policy";

struct Revoke {
    grant: String,
    /// The evaluation, recorded on the grant's request for `explain` (rule 31).
    trace: Trace,
    message: String,
}

pub(crate) async fn sweep(engine: &Arc<Engine>, now: Timestamp) -> Result<(), EngineError> {
    let until = now.plus(SWEEP_CLAIM);
    let claimed = engine
        .write(move |tx| {
            Box::pin(async move { Ok(tx.claim(TimerKind::PolicyCheck, SWEEP, now, until).await?) })
        })
        .await?;
    if !claimed {
        return Ok(());
    }
    let live = engine.live();
    let (config, policies) = (live.config, live.policies);
    let mut revokes = vec![];
    let mut checked = 0u64;
    for (name, res) in &config.resources {
        let deny: Vec<_> = res
            .policies
            .iter()
            .filter(|p| p.enforcement.as_deref() != Some("warn"))
            .collect();
        if deny.is_empty() {
            continue;
        }
        for g in engine.store.reconcile_candidates(name).await? {
            if g.state != GrantState::Active {
                continue;
            }
            let Some(req) = engine.store.request(&g.spec.request).await? else {
                continue;
            };
            checked += 1;
            let grant = json!({
                "id": g.id,
                "subject": g.spec.subject,
                "resource": g.spec.resource,
                "workflow": g.spec.workflow,
                "activated_at": g.activated_at.map(Timestamp::rfc3339),
                "expires_at": g.expires_at.map(Timestamp::rfc3339),
            });
            let input = policy::input(&req, &config.directory, None, Some(grant), now);
            for p in &deny {
                let ev = policies.eval(p, &input);
                let said = ev
                    .result
                    .clone()
                    .and_then(|v| policy::messages(&v, &p.query));
                let (message, error) = match said {
                    Ok(m) if m.is_empty() => continue,
                    Ok(m) => (m.join("; "), None),
                    Err(e) => ("policy error".to_owned(), Some(e)),
                };
                let verdict = match &error {
                    Some(e) => format!("error: {e}; grant {} revoked", g.id),
                    None => format!("deny: {message}; grant {} revoked", g.id),
                };
                revokes.push(Revoke {
                    grant: g.id.clone(),
                    trace: Trace {
                        purpose: Purpose::Recheck,
                        step: None,
                        bundle: p.bundle.clone(),
                        query: p.query.clone(),
                        result: ev.result.unwrap_or(Value::Null),
                        error,
                        verdict,
                        micros: ev.micros,
                        at: now,
                    },
                    message,
                });
                break;
            }
        }
    }
    tracing::info!(
        checked,
        revoked = revokes.len(),
        "policy re-evaluation done"
    );
    let interval = config.server.policy_interval;
    let notice = config.server.expiry_notice;
    let done_at = engine.now().max(now);
    engine
        .write(move |tx| {
            Box::pin(async move {
                if !tx.holds(TimerKind::PolicyCheck, SWEEP, done_at).await? {
                    crate::worker::lease_lost(TimerKind::PolicyCheck, SWEEP);
                    return Ok(());
                }
                let actor = Actor {
                    id: POLICY_ACTOR.to_owned(),
                    groups: Default::default(),
                    admin: true,
                    app: false,
                };
                for r in revokes {
                    let Some(mut g) = tx.grant(&r.grant).await? else {
                        continue;
                    };
                    // It ended or moved on since it was evaluated.
                    if g.state != GrantState::Active {
                        continue;
                    }
                    let mut ch = g.revoke(&actor, true, Some(r.message), done_at)?;
                    if let Some(ev) = ch.events.first_mut() {
                        ev.detail.insert("policy".into(), r.trace.query.clone());
                        if let Some(e) = &r.trace.error {
                            ev.detail.insert("error".into(), e.clone());
                        }
                    }
                    apply(tx, ch, done_at, notice).await?;
                    tx.put_grant(&g).await?;
                    if let Some(mut req) = tx.request(&g.spec.request).await? {
                        req.trace.push(r.trace);
                        tx.put_request(&req).await?;
                    }
                }
                if interval.secs() > 0 {
                    tx.schedule(TimerKind::PolicyCheck, SWEEP, done_at.plus(interval))
                        .await?;
                } else {
                    tx.unschedule(TimerKind::PolicyCheck, SWEEP, done_at)
                        .await?;
                }
                Ok(())
            })
        })
        .await
}
