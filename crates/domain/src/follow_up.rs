//! Break-glass (rule 34): a person takes access at once, without the workflow, for at most the
//! resource's `break_glass.max_duration`; the configured destinations are told at once; and a
//! follow-up review opens that the break-glass reviewers must close (acknowledge, or flag,
//! which revokes the grant if it is still live) within `review_within`. If they do not, it
//! escalates once: the follow-up reviewers, the resource's owners and every admin are told, and
//! any of them may close it. The person who broke the glass can never close it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::effect::{Changes, Effect, Event, EventKind, TimerKind};
use crate::error::{DomainError, conflict, forbidden, invalid};
use crate::policy::PolicyEval;
use crate::principal::{Actor, Directory};
use crate::request::{NewRequest, Request, RequestState, Slot, StepStatus, check_text};
use crate::resource::ResourceDef;
use crate::time::Timestamp;

/// Where a follow-up review stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowUpState {
    Open,
    Acknowledged,
    Flagged,
}

impl FollowUpState {
    pub fn as_str(self) -> &'static str {
        match self {
            FollowUpState::Open => "open",
            FollowUpState::Acknowledged => "acknowledged",
            FollowUpState::Flagged => "flagged",
        }
    }
}

/// How a reviewer closes a follow-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The use was justified.
    Acknowledge,
    /// The use was not: the grant is revoked if it is still live.
    Flag,
}

/// Who closed a follow-up, and what they said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub at: Timestamp,
}

/// The review that follows a break-glass grant, as the request keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    pub state: FollowUpState,
    /// The resource's `break_glass.reviewers`, each with the people it stood for at the break.
    pub slots: Vec<Slot>,
    /// When it should be closed by (`review_within` after the break).
    pub due: Timestamp,
    /// When it escalated, having been left open past `due`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_at: Option<Timestamp>,
    /// Who the escalation told; they may close it too.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub escalated_to: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Closed>,
}

impl FollowUp {
    /// Everyone its reviewer principals stood for, and whoever its escalation told.
    pub fn people(&self) -> impl Iterator<Item = &str> {
        self.slots
            .iter()
            .flat_map(|s| s.people.iter().map(String::as_str))
            .chain(self.escalated_to.iter().map(String::as_str))
    }
}

impl Request {
    /// Rule 34: the requester breaks the glass on `res`. The request is validated as any
    /// other (rule 2, its deny policies included: break-glass bypasses the reviewers, not the
    /// guardrails) and approved at once by its requester, so that a grant is issued; its
    /// follow-up review opens, due `review_within` from now.
    ///
    /// Only a person acting for themselves may break glass: an application never decides
    /// (rule 39), and break-glass is a decision.
    pub fn break_glass(
        new: NewRequest,
        res: &ResourceDef,
        dir: &Directory,
        policies: &dyn PolicyEval,
        now: Timestamp,
    ) -> Result<(Request, Changes), DomainError> {
        let Some(bg) = &res.break_glass else {
            return Err(invalid(format!(
                "{} has no break_glass; ask through its workflow",
                res.name
            )));
        };
        if new.context.created_by.is_some() || dir.user(&new.requester).is_none() {
            return Err(forbidden(
                "only a person may break glass, for themselves; applications never decide",
            ));
        }
        if new.start_at.is_some() {
            return Err(invalid(
                "break-glass grants at once: start_at does not apply",
            ));
        }
        let duration = match new.duration {
            Some(d) if d > bg.max_duration => {
                return Err(invalid(format!(
                    "duration {d} is longer than the break-glass maximum {} for {}",
                    bg.max_duration, res.name
                )));
            }
            Some(d) => d,
            None => res.default_duration().min(bg.max_duration),
        };
        let mut req = Request::build(new, duration, res, dir, now)?;
        let slots: Vec<Slot> = bg
            .reviewers
            .iter()
            .map(|p| Slot {
                principal: p.clone(),
                people: dir.people(p),
            })
            .collect();
        let follow_up = FollowUp {
            state: FollowUpState::Open,
            slots,
            due: now.plus(bg.review_within),
            escalated_at: None,
            escalated_to: BTreeSet::new(),
            closed: None,
        };
        if follow_up.people().all(|p| p == req.requester) {
            return Err(invalid(format!(
                "nobody but {} could review this break-glass on {}: its break_glass.reviewers \
                 must name someone else",
                req.requester, res.name
            )));
        }
        for s in &mut req.steps {
            s.status = StepStatus::Skipped;
            s.skipped_because = Some("break-glass: the workflow does not apply".into());
        }
        req.follow_up = Some(follow_up);

        let denial = req.evaluate_resource_policies(dir, policies, now);
        let mut ch = Changes::default();
        ch.event(req.created_event());
        if let Some(d) = denial {
            req.follow_up = None;
            req.finish_by_policy(RequestState::Denied, d, now, &mut ch);
            return Ok((req, ch));
        }
        let due = now.plus(bg.review_within);
        let reviewers: Vec<String> = req.follow_up_closers().into_iter().collect();
        ch.event(
            Event::request(EventKind::BreakGlassUsed, &req.id, Some(&req.requester))
                .with("resource", &req.resource)
                .with("duration", req.duration)
                .with("reason", &req.reason)
                .with("review_due", due.millis())
                .with("reviewers", reviewers.join(",")),
        );
        ch.effect(Effect::Schedule {
            kind: TimerKind::FollowUpDue,
            key: req.id.clone(),
            at: due,
        });
        let by = req.requester.clone();
        req.finish(
            RequestState::Approved,
            Some(&by),
            Some("break-glass".into()),
            now,
            &mut ch,
        );
        Ok((req, ch))
    }

    /// The people who may close the follow-up now: its reviewers and whoever its escalation
    /// told, never the person who broke the glass (rule 34). Empty once it is closed.
    pub fn follow_up_closers(&self) -> BTreeSet<String> {
        match &self.follow_up {
            Some(f) if f.state == FollowUpState::Open => f
                .people()
                .filter(|p| *p != self.requester)
                .map(str::to_owned)
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Rule 34: a follow-up reviewer acknowledges the break-glass, or flags it; flagging
    /// revokes the grant if it is still live, in the same transaction.
    pub fn close_follow_up(
        &mut self,
        actor: &Actor,
        verdict: Verdict,
        comment: Option<String>,
        now: Timestamp,
    ) -> Result<Changes, DomainError> {
        let comment = comment.filter(|c| !c.trim().is_empty());
        if let Some(c) = &comment {
            check_text("comment", c)?;
        }
        let Some(f) = &self.follow_up else {
            return Err(conflict(format!(
                "request {} did not break glass: it has no follow-up review",
                self.id
            )));
        };
        if let Some(c) = &f.closed {
            return Err(conflict(format!(
                "the follow-up of request {} was already {} by {}",
                self.id,
                f.state.as_str(),
                c.by
            )));
        }
        if actor.app {
            return Err(forbidden("applications never decide"));
        }
        if actor.id == self.requester {
            return Err(forbidden(
                "you cannot close the follow-up of your own break-glass",
            ));
        }
        if !self.follow_up_closers().contains(&actor.id) {
            return Err(forbidden(format!(
                "{} is not a reviewer of this break-glass follow-up",
                actor.id
            )));
        }
        if verdict == Verdict::Flag && comment.is_none() {
            return Err(invalid(
                "flagging a break-glass needs a comment: say what was wrong",
            ));
        }
        let (state, kind) = match verdict {
            Verdict::Acknowledge => (FollowUpState::Acknowledged, EventKind::FollowUpAcknowledged),
            Verdict::Flag => (FollowUpState::Flagged, EventKind::FollowUpFlagged),
        };
        let mut ch = Changes::default();
        let mut ev = Event::request(kind, &self.id, Some(&actor.id));
        if let Some(c) = &comment {
            ev = ev.with("comment", c);
        }
        ch.event(ev);
        ch.effect(Effect::Unschedule {
            kind: TimerKind::FollowUpDue,
            key: self.id.clone(),
        });
        if verdict == Verdict::Flag
            && let Some(grant) = &self.grant
        {
            ch.effect(Effect::RevokeGrant {
                grant: grant.clone(),
                by: actor.id.clone(),
                reason: format!(
                    "break-glass flagged: {}",
                    comment.as_deref().unwrap_or_default()
                ),
            });
        }
        if let Some(f) = &mut self.follow_up {
            f.state = state;
            f.closed = Some(Closed {
                by: actor.id.clone(),
                comment,
                at: now,
            });
        }
        Ok(ch)
    }

    /// Rule 34: the follow-up's due time came. If it is still open, it escalates (once): its
    /// reviewers, the resource's owners and every admin are told, and may all close it. A
    /// timer that fires early is set again; `None` when there is nothing to do.
    pub fn follow_up_due(&mut self, dir: &Directory, now: Timestamp) -> Option<Changes> {
        let requester = self.requester.clone();
        let owners = self.owners.clone();
        let f = self.follow_up.as_mut()?;
        if f.state != FollowUpState::Open || f.escalated_at.is_some() {
            return None;
        }
        let mut ch = Changes::default();
        if now < f.due {
            ch.effect(Effect::Schedule {
                kind: TimerKind::FollowUpDue,
                key: self.id.clone(),
                at: f.due,
            });
            return Some(ch);
        }
        let admins = dir
            .users()
            .filter(|(_, u)| u.admin)
            .map(|(id, _)| id.clone());
        let people: BTreeSet<String> = f
            .people()
            .map(str::to_owned)
            .chain(owners)
            .chain(admins)
            .filter(|p| *p != requester)
            .collect();
        let principals: Vec<String> = f.slots.iter().map(|s| s.principal.to_string()).collect();
        ch.event(
            Event::request(EventKind::FollowUpOverdue, &self.id, None)
                .with("due", f.due.millis())
                .with("reviewers", principals.join(","))
                .with(
                    "people",
                    people.iter().cloned().collect::<Vec<_>>().join(","),
                ),
        );
        f.escalated_at = Some(now);
        f.escalated_to = people;
        Some(ch)
    }
}
