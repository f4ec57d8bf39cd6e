//! Grants and their lifecycle: rules 16, 17 and 19 of PRODUCT.md §3.
//!
//! `activating → active → revoking → expired | revoked`, or `failed` when activation fails for
//! good. A grant with a connector reaches `active`, `expired` or `revoked` only when a worker
//! reports that the connector confirmed the call; an approval-only grant (no connector) moves
//! at once, because there is nothing to confirm.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::effect::{Changes, Effect, Event, EventKind, TimerKind};
use crate::error::{DomainError, conflict, forbidden, invalid};
use crate::principal::Actor;
use crate::time::{Span, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    Scheduled,
    Activating,
    Active,
    Revoking,
    Expired,
    Revoked,
    Failed,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Scheduled => "scheduled",
            GrantState::Activating => "activating",
            GrantState::Active => "active",
            GrantState::Revoking => "revoking",
            GrantState::Expired => "expired",
            GrantState::Revoked => "revoked",
            GrantState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<GrantState> {
        [
            GrantState::Scheduled,
            GrantState::Activating,
            GrantState::Active,
            GrantState::Revoking,
            GrantState::Expired,
            GrantState::Revoked,
            GrantState::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
    pub fn is_final(self) -> bool {
        matches!(
            self,
            GrantState::Expired | GrantState::Revoked | GrantState::Failed
        )
    }
}

/// Why a grant is being taken back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GrantEnd {
    /// Its time ran out.
    Expired,
    /// Its subject dropped it.
    Dropped,
    /// An owner or admin revoked it.
    Revoked { by: String, reason: String },
    /// Activation failed for good; the revoke cleans up whatever the failed calls did.
    ActivationFailed { error: String, attempts: u32 },
}

/// What an approved request asks to be granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSpec {
    pub request: String,
    pub subject: String,
    pub resource: String,
    /// `Some(workflow)` when the grant covers every resource `part_of` that workflow.
    pub workflow: Option<String>,
    pub connector: Option<String>,
    pub params: BTreeMap<String, String>,
    pub duration: Span,
    /// A start in the future: the grant waits `scheduled` until then (rule 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Timestamp>,
    /// Set when the request extends this grant rather than asking for a new one (rule 19).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// The run the request asked on behalf of (rule 37): the grant's own events then move
    /// that run on, and a grant without one is passed over without reading its request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub spec: GrantSpec,
    pub state: GrantState,
    pub created_at: Timestamp,
    pub activated_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub ending: Option<GrantEnd>,
    /// Connector calls tried for the current step of the lifecycle.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Failed repair calls in a row (drift repair backs off on this count).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repair_attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Grant {
    /// Issues the grant of an approved request. With a connector the grant call is written to
    /// the outbox first (rule 17); without one the grant is active at once.
    pub fn issue(id: String, spec: GrantSpec, now: Timestamp) -> (Grant, Changes) {
        let scheduled = spec.start_at.filter(|t| *t > now);
        let mut g = Grant {
            id,
            spec,
            state: if scheduled.is_some() {
                GrantState::Scheduled
            } else {
                GrantState::Activating
            },
            created_at: now,
            activated_at: None,
            expires_at: None,
            ended_at: None,
            ending: None,
            attempts: 0,
            last_error: None,
            repair_attempts: 0,
        };
        let mut ch = Changes::default();
        let mut ev = Event::grant(EventKind::GrantIssued, &g.id, None)
            .with("request", &g.spec.request)
            .with("subject", &g.spec.subject)
            .with("resource", &g.spec.resource)
            .with("duration", g.spec.duration);
        if let Some(w) = &g.spec.workflow {
            ev = ev.with("workflow", w);
        }
        if let Some(at) = scheduled {
            ev = ev.with("start_at", at.millis());
        }
        ch.event(ev);
        match scheduled {
            Some(at) => ch.effect(Effect::Schedule {
                kind: TimerKind::GrantStart,
                key: g.id.clone(),
                at,
            }),
            None => ch.extend(g.begin_activation(now)),
        }
        (g, ch)
    }

    /// The start timer of a scheduled grant fired. `None` when there is nothing to do.
    pub fn start(&mut self, now: Timestamp) -> Option<Changes> {
        if self.state != GrantState::Scheduled || self.spec.start_at.is_some_and(|t| now < t) {
            return None;
        }
        self.state = GrantState::Activating;
        let mut ch = Changes::default();
        ch.effect(Effect::Unschedule {
            kind: TimerKind::GrantStart,
            key: self.id.clone(),
        });
        ch.extend(self.begin_activation(now));
        Some(ch)
    }

    fn begin_activation(&mut self, now: Timestamp) -> Changes {
        let mut ch = Changes::default();
        if self.spec.connector.is_some() {
            ch.effect(Effect::Schedule {
                kind: TimerKind::ConnectorGrant,
                key: self.id.clone(),
                at: now,
            });
        } else {
            ch.extend(self.activated(now));
        }
        ch
    }

    /// Rule 19: an approved extension moves the expiry of an active grant by `by`, from its
    /// current expiry, so that there is no gap. `None` when the grant is no longer active.
    pub fn extend(&mut self, request: &str, by: Span, now: Timestamp) -> Option<Changes> {
        let until = self.expires_at?;
        if self.state != GrantState::Active || until <= now {
            return None;
        }
        let until = until.plus(by);
        self.expires_at = Some(until);
        let mut ch = Changes::default();
        ch.event(
            Event::grant(EventKind::GrantExtended, &self.id, None)
                .with("request", request)
                .with("duration", by)
                .with("expires_at", until.millis()),
        );
        ch.effect(Effect::Schedule {
            kind: TimerKind::GrantExpiry,
            key: self.id.clone(),
            at: until,
        });
        Some(ch)
    }

    /// The pre-expiry notice: recorded once, while the grant is still active.
    pub fn expiring(&self, now: Timestamp) -> Option<Changes> {
        let until = self.expires_at?;
        if self.state != GrantState::Active || until <= now {
            return None;
        }
        let mut ch = Changes::default();
        ch.event(
            Event::grant(EventKind::GrantExpiring, &self.id, None)
                .with("subject", &self.spec.subject)
                .with("expires_at", until.millis())
                .with("seconds_left", (until.millis() - now.millis()) / 1000),
        );
        Some(ch)
    }

    /// The connector confirmed the grant: the duration clock starts now (rule 16).
    pub fn activated(&mut self, now: Timestamp) -> Changes {
        let mut ch = Changes::default();
        if self.state != GrantState::Activating {
            return ch; // Revoked while activating: the revoke already follows in the outbox.
        }
        let until = now.plus(self.spec.duration);
        self.state = GrantState::Active;
        self.activated_at = Some(now);
        self.expires_at = Some(until);
        self.attempts = 0;
        self.last_error = None;
        ch.event(
            Event::grant(EventKind::GrantActivated, &self.id, None)
                .with("expires_at", until.millis()),
        );
        ch.effect(Effect::Schedule {
            kind: TimerKind::GrantExpiry,
            key: self.id.clone(),
            at: until,
        });
        ch
    }

    /// A connector call failed. `retry_at` is when to try again, or `None` when activation has
    /// failed for good (revocation is always retried: rule 17).
    pub fn call_failed(
        &mut self,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Changes {
        let mut ch = Changes::default();
        self.attempts += 1;
        self.last_error = Some(error.to_owned());
        match (self.state, retry_at) {
            (GrantState::Activating, Some(at)) => {
                ch.event(
                    Event::grant(EventKind::GrantActivationFailed, &self.id, None)
                        .with("attempt", self.attempts)
                        .with("error", error),
                );
                ch.effect(Effect::Schedule {
                    kind: TimerKind::ConnectorGrant,
                    key: self.id.clone(),
                    at,
                });
            }
            // Activation failed for good. A call that failed (or timed out) may still have
            // given access, so the connector's revoke runs before the grant is shown `failed`.
            (GrantState::Activating, None) => {
                ch.event(
                    Event::grant(EventKind::GrantActivationFailed, &self.id, None)
                        .with("attempt", self.attempts)
                        .with("error", error)
                        .with("final", true),
                );
                let attempts = self.attempts;
                ch.extend(self.start_revoke(
                    GrantEnd::ActivationFailed {
                        error: error.to_owned(),
                        attempts,
                    },
                    now,
                ));
            }
            (GrantState::Revoking, at) => {
                let at = at.unwrap_or(now.plus(Span::from_secs(60)));
                ch.event(
                    Event::grant(EventKind::GrantRevokeFailed, &self.id, None)
                        .with("attempt", self.attempts)
                        .with("error", error),
                );
                ch.effect(Effect::Schedule {
                    kind: TimerKind::ConnectorRevoke,
                    key: self.id.clone(),
                    at,
                });
            }
            _ => {}
        }
        ch
    }

    /// The expiry timer fired. `None` when there is nothing to do.
    pub fn expire(&mut self, now: Timestamp) -> Option<Changes> {
        if self.state != GrantState::Active || self.expires_at.is_none_or(|t| now < t) {
            return None;
        }
        Some(self.start_revoke(GrantEnd::Expired, now))
    }

    /// Rule 19: the subject drops their grant, or an owner or admin revokes it with a reason.
    pub fn revoke(
        &mut self,
        actor: &Actor,
        is_owner: bool,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<Changes, DomainError> {
        if !matches!(
            self.state,
            GrantState::Active | GrantState::Activating | GrantState::Scheduled
        ) {
            return Err(conflict(format!(
                "grant {} is already {}",
                self.id,
                self.state.as_str()
            )));
        }
        let reason = reason.filter(|r| !r.trim().is_empty());
        let end = if actor.id == self.spec.subject && reason.is_none() {
            GrantEnd::Dropped
        } else if actor.id == self.spec.subject || actor.admin || is_owner {
            let Some(reason) = reason else {
                return Err(invalid("a reason is required to revoke someone's grant"));
            };
            crate::limits::text("reason", &reason, crate::limits::MAX_TEXT).map_err(invalid)?;
            GrantEnd::Revoked {
                by: actor.id.clone(),
                reason,
            }
        } else {
            return Err(forbidden(
                "only the grant's subject, an owner or an admin may revoke it",
            ));
        };
        Ok(self.start_revoke(end, now))
    }

    /// Rule 34: a follow-up reviewer flagged the break-glass that issued this grant. `None`
    /// when it is no longer live (nothing to take back).
    pub fn revoke_flagged(&mut self, by: &str, reason: String, now: Timestamp) -> Option<Changes> {
        if !matches!(
            self.state,
            GrantState::Active | GrantState::Activating | GrantState::Scheduled
        ) {
            return None;
        }
        Some(self.start_revoke(
            GrantEnd::Revoked {
                by: by.to_owned(),
                reason,
            },
            now,
        ))
    }

    fn start_revoke(&mut self, end: GrantEnd, now: Timestamp) -> Changes {
        let mut ch = Changes::default();
        let actor = match &end {
            GrantEnd::Revoked { by, .. } => Some(by.clone()),
            GrantEnd::Dropped => Some(self.spec.subject.clone()),
            GrantEnd::Expired | GrantEnd::ActivationFailed { .. } => None,
        };
        let mut ev = Event::grant(EventKind::GrantRevokeStarted, &self.id, actor.as_deref());
        ev = ev.with(
            "why",
            match &end {
                GrantEnd::Expired => "expired",
                GrantEnd::Dropped => "dropped",
                GrantEnd::Revoked { .. } => "revoked",
                GrantEnd::ActivationFailed { .. } => "activation_failed",
            },
        );
        if let GrantEnd::Revoked { reason, .. } = &end {
            ev = ev.with("reason", reason);
        }
        // Only the jobs that can exist are removed: expiring many grants at once is many rows.
        let mut drop_job = |kind| {
            ch.effect(Effect::Unschedule {
                kind,
                key: self.id.clone(),
            })
        };
        drop_job(TimerKind::GrantExpiry);
        drop_job(TimerKind::GrantNotice);
        if self.spec.connector.is_some() {
            drop_job(TimerKind::ConnectorGrant);
        }
        if self.spec.start_at.is_some() {
            drop_job(TimerKind::GrantStart);
        }
        // A grant that never started gave nothing: there is nothing to take back.
        let gave_access = self.state != GrantState::Scheduled;
        self.state = GrantState::Revoking;
        self.ending = Some(end);
        self.attempts = 0;
        if self.spec.connector.is_some() && gave_access {
            ch.event(ev);
            ch.effect(Effect::Schedule {
                kind: TimerKind::ConnectorRevoke,
                key: self.id.clone(),
                at: now,
            });
        } else {
            // Nothing to call, so nothing to wait for: one event says why and that it ended.
            let mut end = self.finish_revoke(None, now);
            if let Some(last) = end.events.last_mut() {
                last.actor = ev.actor;
                for (k, v) in ev.detail {
                    last.detail.entry(k).or_insert(v);
                }
            }
            ch.extend(end);
        }
        ch
    }

    /// The connector confirmed the revoke: only now is the grant shown as ended (rule 17).
    pub fn revoke_confirmed(&mut self, now: Timestamp) -> Changes {
        self.finish_revoke(None, now)
    }

    /// Rule 18: another live grant (`kept_by`) gives the same access, so the connector's revoke
    /// is not called and this grant ends at once; the access goes when the last one ends.
    pub fn revoke_kept(&mut self, kept_by: &str, now: Timestamp) -> Changes {
        self.finish_revoke(Some(kept_by), now)
    }

    fn finish_revoke(&mut self, kept_by: Option<&str>, now: Timestamp) -> Changes {
        let mut ch = Changes::default();
        if self.state != GrantState::Revoking {
            return ch;
        }
        let (state, event) = match &self.ending {
            Some(GrantEnd::Expired) => (
                GrantState::Expired,
                Event::grant(EventKind::GrantExpired, &self.id, None),
            ),
            Some(GrantEnd::ActivationFailed { error, attempts }) => (
                GrantState::Failed,
                Event::grant(EventKind::GrantFailed, &self.id, None)
                    .with("attempts", attempts)
                    .with("error", error),
            ),
            _ => (
                GrantState::Revoked,
                Event::grant(EventKind::GrantRevoked, &self.id, None),
            ),
        };
        self.state = state;
        self.ended_at = Some(now);
        if state != GrantState::Failed {
            self.last_error = None;
        }
        ch.event(match kept_by {
            Some(other) => event.with("access_kept_by", other),
            None => event,
        });
        if self.spec.connector.is_some() {
            ch.effect(Effect::Unschedule {
                kind: TimerKind::ConnectorRevoke,
                key: self.id.clone(),
            });
        }
        ch
    }

    /// Whether this grant, while active, covers a resource (rules 5 and 15).
    pub fn covers(&self, resource: &str, part_of: Option<&str>) -> bool {
        self.state == GrantState::Active
            && (self.spec.resource == resource
                || (self.spec.workflow.is_some() && self.spec.workflow.as_deref() == part_of))
    }
}
