//! Requests, their steps and reviews: rules 1 and 3–15 of PRODUCT.md §3.
//!
//! A request snapshots the resource's workflow when it is created, with every principal
//! expanded to the people it stood for then, so that a later configuration change never lowers
//! the bar for a pending request. Each transition checks the actor, changes the request, and
//! returns the audit events and effects it implies; on error nothing changed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::effect::{Changes, Effect, Event, EventKind, TimerKind};
use crate::error::{DomainError, conflict, forbidden, invalid};
use crate::grant::GrantSpec;
use crate::policy::{self, PolicyEval, Purpose, Trace};
use crate::principal::{Actor, Directory, Principal};
use crate::resource::{Escalation, FieldValue, Input, PolicyRef, ResourceDef, Reviewers};
use crate::time::{Span, Timestamp};

/// Rule 1: `pending` moves forward to one of four terminal outcomes, never back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
    Cancelled,
    Expired,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Cancelled => "cancelled",
            RequestState::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<RequestState> {
        [
            RequestState::Pending,
            RequestState::Approved,
            RequestState::Denied,
            RequestState::Cancelled,
            RequestState::Expired,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
    pub fn is_terminal(self) -> bool {
        self != RequestState::Pending
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

/// How far an approval reaches (rule 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Resource,
    Workflow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not reached yet.
    Waiting,
    /// The current step: reviewers were notified and the engine waits for them.
    Active,
    Approved,
    Denied,
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Waiting => "waiting",
            StepStatus::Active => "active",
            StepStatus::Approved => "approved",
            StepStatus::Denied => "denied",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// One principal of a step's reviewer list, with the people it stood for at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub principal: Principal,
    pub people: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Constraint {
    OneOf,
    AllOf,
    Quorum { min: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub by: String,
    pub decision: Decision,
    pub comment: Option<String>,
    pub duration: Option<Span>,
    pub scope: Scope,
    pub at: Timestamp,
}

/// Rule 11: the assignee becomes eligible wherever the assigner was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub by: String,
    pub to: Principal,
    pub people: BTreeSet<String>,
    /// The slots of the step the assignee may now satisfy.
    pub slots: Vec<usize>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    pub constraint: Constraint,
    pub slots: Vec<Slot>,
    pub skip_if: Vec<PolicyRef>,
    pub status: StepStatus,
    pub reviews: Vec<Review>,
    pub assignments: Vec<Assignment>,
    /// Why the step was skipped (rule 6): the `skip_if` policies' reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_because: Option<String>,
    /// The resource's reminder interval for this step, as it was at creation (rule 33).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_every: Option<Span>,
    /// The resource's escalations for this step, as they were at creation (rule 33).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate: Vec<Escalation>,
    /// When the step was entered (escalations count from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entered_at: Option<Timestamp>,
    /// The escalations that happened, in order (the next one is `escalate[escalations.len()]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalations: Vec<Escalated>,
    /// Whether the step may be decided from Slack, as it was at creation.
    #[serde(default = "crate::resource::yes")]
    pub slack_decisions: bool,
}

/// An escalation that happened: who was told, and whether they may now decide (rule 33).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalated {
    pub to: Vec<Principal>,
    pub people: BTreeSet<String>,
    pub add_reviewers: bool,
    pub at: Timestamp,
}

/// The key of a step's reminder and escalation timers: `<request id>/<step number>`.
pub fn step_key(request: &str, step: usize) -> String {
    format!("{request}/{}", step + 1)
}

/// Reads a step timer's key back: the request id and the step's index.
pub fn parse_step_key(key: &str) -> Option<(&str, usize)> {
    let (id, n) = key.rsplit_once('/')?;
    let n: usize = n.parse().ok()?;
    Some((id, n.checked_sub(1)?))
}

impl StepState {
    /// Whether an escalation made this person a reviewer of the step (rule 33).
    fn escalated_to(&self, person: &str) -> bool {
        self.escalations
            .iter()
            .any(|e| e.add_reviewers && e.people.contains(person))
    }

    /// Whether `person` stands in slot `i` now. Membership at creation counts first; then
    /// assignments apply in order: the assigner hands their place over (rule 11) and the
    /// assignee takes it, so a step assigned back to its first reviewer is theirs again.
    fn in_slot(&self, i: usize, person: &str) -> bool {
        // An escalated reviewer stands in for every slot (rule 33).
        let mut holds = self.slots[i].people.contains(person) || self.escalated_to(person);
        for a in self.assignments.iter().filter(|a| a.slots.contains(&i)) {
            if a.people.contains(person) {
                holds = true;
            } else if a.by == person {
                holds = false;
            }
        }
        holds
    }

    fn slots_of(&self, person: &str) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.in_slot(i, person))
            .collect()
    }

    /// Everyone who may decide this step, before the self-approval and one-decision rules.
    pub fn candidates(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.slots.iter().flat_map(|s| s.people.clone()).collect();
        for a in &self.assignments {
            all.extend(a.people.iter().cloned());
        }
        for e in self.escalations.iter().filter(|e| e.add_reviewers) {
            all.extend(e.people.iter().cloned());
        }
        all.retain(|p| !self.slots_of(p).is_empty());
        all
    }

    /// Whether the approvals received so far satisfy the constraint (rule 7).
    fn satisfied(&self) -> bool {
        let approvers: Vec<&str> = self
            .reviews
            .iter()
            .filter(|r| r.decision == Decision::Approve)
            .map(|r| r.by.as_str())
            .collect();
        match self.constraint {
            Constraint::OneOf => approvers.iter().any(|p| !self.slots_of(p).is_empty()),
            Constraint::Quorum { min } => {
                let n = approvers
                    .iter()
                    .filter(|p| !self.slots_of(p).is_empty())
                    .count();
                n >= min as usize
            }
            Constraint::AllOf => {
                // Each principal needs its own approver: one person cannot stand for two
                // teams. This is a bipartite matching of slots to approvers.
                let edges: Vec<Vec<usize>> = (0..self.slots.len())
                    .map(|i| {
                        (0..approvers.len())
                            .filter(|&j| self.in_slot(i, approvers[j]))
                            .collect()
                    })
                    .collect();
                max_matching(&edges, approvers.len()) == self.slots.len()
            }
        }
    }
}

/// Size of a maximum matching in a bipartite graph given as `left → [right]` adjacency
/// (Kuhn's algorithm; reviewer lists are small).
fn max_matching(edges: &[Vec<usize>], n_right: usize) -> usize {
    fn augment(
        u: usize,
        edges: &[Vec<usize>],
        seen: &mut [bool],
        owner: &mut [Option<usize>],
    ) -> bool {
        for &v in &edges[u] {
            if seen[v] {
                continue;
            }
            seen[v] = true;
            if owner[v].is_none_or(|w| augment(w, edges, seen, owner)) {
                owner[v] = Some(u);
                return true;
            }
        }
        false
    }
    let mut owner = vec![None; n_right];
    (0..edges.len())
        .filter(|&u| augment(u, edges, &mut vec![false; n_right], &mut owner))
        .count()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub by: String,
    pub text: String,
    pub at: Timestamp,
}

/// Who decided a request and when (what callbacks and polling report).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub by: Option<String>,
    pub comment: Option<String>,
    pub at: Timestamp,
    /// The policy query that decided, when no person did (rule 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub resource: String,
    pub requester: String,
    pub reason: String,
    pub fields: BTreeMap<String, FieldValue>,
    pub duration: Span,
    pub state: RequestState,
    pub created_at: Timestamp,
    /// When a still-pending request expires (rule 3).
    pub pending_until: Timestamp,
    pub steps: Vec<StepState>,
    pub comments: Vec<Comment>,
    pub outcome: Option<Outcome>,
    pub grant: Option<String>,
    // Snapshot of the resource at creation.
    pub connector: Option<String>,
    pub grant_params: BTreeMap<String, String>,
    pub part_of: Option<String>,
    pub durations: Vec<Span>,
    pub allow_self_approval: bool,
    pub owners: BTreeSet<String>,
    /// When the grant should start, if not at approval (rule 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Timestamp>,
    /// The grant this request asks to extend (rule 19).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Snapshot of the resource's `on_request` hook and deny/warn policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_request: Option<PolicyRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyRef>,
    /// Messages of `warn` policies, shown to reviewers (rule 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Every policy evaluation that affected this request, in order (rule 31).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<Trace>,
    /// What an application sent with the request (rule 21).
    #[serde(default, skip_serializing_if = "Context::is_empty")]
    pub context: Context,
    /// The review that follows a break-glass grant (rule 34); `None` for every other request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<crate::follow_up::FollowUp>,
    /// The one action asked for, on a resource of `kind = "action"` (issue 18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<crate::action::Action>,
    /// The run of a runbook this request asks access for, and the step it stopped at
    /// (issue 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<crate::run::RunLink>,
}

/// What an application sends with a request (rule 21), kept as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The application that created the request, when it acts for `requester`, or is it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// What is asked, in markdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Any JSON the application wants back with the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_data: Option<Value>,
    /// Where the outcome is posted (rule 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::Callback>,
    /// What every reviewer must hold: a group, or the `admin` role (Verified Orchestration's
    /// requested credentials, rule 27). Reviewers without all of them are not asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
}

impl Context {
    pub fn is_empty(&self) -> bool {
        *self == Context::default()
    }

    /// Rule 21's bounds: sizes, and a reference URL that is an absolute http(s) URL.
    fn check(&self) -> Result<(), DomainError> {
        if let Some(p) = &self.purpose {
            crate::limits::text("purpose", p, crate::limits::MAX_PURPOSE).map_err(invalid)?;
        }
        for (what, v) in [
            ("reference_url", &self.reference_url),
            ("correlation_id", &self.correlation_id),
        ] {
            if let Some(v) = v {
                if v.chars().count() > crate::limits::MAX_REFERENCE {
                    return Err(invalid(format!(
                        "{what} is longer than {} characters",
                        crate::limits::MAX_REFERENCE
                    )));
                }
                if v.chars().any(char::is_control) {
                    return Err(invalid(format!("{what} contains control characters")));
                }
            }
        }
        if self.credentials.len() > 16
            || self
                .credentials
                .iter()
                .any(|c| c.is_empty() || c.len() > 128 || c.chars().any(char::is_control))
        {
            return Err(invalid(
                "requested credentials: at most 16, each a group or role name of 1 to 128 characters",
            ));
        }
        let callback_url = self.callback.as_ref().map(|c| &c.url);
        for (what, url) in [
            ("reference_url", self.reference_url.as_ref()),
            ("callback.url", callback_url),
        ] {
            let Some(u) = url else { continue };
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            let bad = rest.is_none_or(|r| {
                r.is_empty()
                    || r.starts_with('/')
                    || r.contains(' ')
                    || r.chars().any(char::is_control)
            });
            if bad || u.chars().count() > crate::limits::MAX_REFERENCE {
                return Err(invalid(format!(
                    "{what} is not an http:// or https:// URL of at most {} characters",
                    crate::limits::MAX_REFERENCE
                )));
            }
        }
        if let Some(d) = &self.request_data {
            let size = serde_json::to_vec(d).map_or(usize::MAX, |b| b.len());
            if size > crate::limits::MAX_REQUEST_DATA {
                return Err(invalid(format!(
                    "request_data is {size} bytes; at most {} are accepted",
                    crate::limits::MAX_REQUEST_DATA
                )));
            }
        }
        Ok(())
    }
}

/// What a requester asks for.
#[derive(Clone, Debug)]
pub struct NewRequest {
    pub id: String,
    pub requester: String,
    pub reason: String,
    pub duration: Option<Span>,
    pub fields: BTreeMap<String, Input>,
    pub start_at: Option<Timestamp>,
    pub extends: Option<String>,
    pub context: Context,
    /// The action asked for, on a resource of `kind = "action"` (issue 18).
    pub action: Option<crate::action::ActionInput>,
    /// The run this request asks access for (issue 17).
    pub run: Option<crate::run::RunLink>,
}

/// One reviewer's decision as submitted.
#[derive(Clone, Debug)]
pub struct ReviewInput {
    pub decision: Decision,
    pub comment: Option<String>,
    pub duration: Option<Span>,
    pub scope: Scope,
}

pub(crate) fn check_text(what: &str, text: &str) -> Result<(), DomainError> {
    crate::limits::text(what, text, crate::limits::MAX_TEXT).map_err(invalid)
}

impl Request {
    /// Rule 2 (validation) and rule 13: builds a pending request and enters step 1.
    ///
    /// `covered_by` names an active grant of the requester that already covers the resource
    /// (rule 5): the request is then validated and answered with it, without an approval round.
    ///
    /// Policies run in the order of rule 2: deny and warn policies, then the `on_request`
    /// hook, then step 1's `skip_if` list. Dynamic reviewers are evaluated first, with the
    /// validation, because rule 13 needs them.
    pub fn create(
        new: NewRequest,
        res: &ResourceDef,
        dir: &Directory,
        policies: &dyn PolicyEval,
        now: Timestamp,
        covered_by: Option<&str>,
    ) -> Result<(Request, Changes), DomainError> {
        let duration = new.duration.unwrap_or_else(|| res.default_duration());
        res.check_duration(duration).map_err(invalid)?;
        let mut req = Request::build(new, duration, res, dir, now)?;
        for (i, step) in res.workflow.steps.iter().enumerate() {
            for p in &step.reviewers_from {
                req.add_dynamic_reviewers(i, p, dir, policies, now);
            }
        }
        req.keep_credentialed(dir);
        if covered_by.is_none() {
            let skippable: Vec<bool> = (0..req.steps.len())
                .map(|i| req.skip_reasons(i, dir, policies, now, false).is_some())
                .collect();
            req.check_reviewable(&skippable)?;
        }

        let denial = req.evaluate_resource_policies(dir, policies, now);
        let mut ch = Changes::default();
        ch.event(req.created_event());
        if let Some(d) = denial {
            req.finish_by_policy(RequestState::Denied, d, now, &mut ch);
            return Ok((req, ch));
        }
        if let Some(grant) = covered_by {
            ch.extend(req.answer_with_grant(grant, now));
            return Ok((req, ch));
        }
        ch.effect(Effect::Schedule {
            kind: TimerKind::RequestExpiry,
            key: req.id.clone(),
            at: req.pending_until,
        });
        if let Some((decision, by)) = req.evaluate_on_request(dir, policies, now) {
            let state = match decision {
                Decision::Approve => RequestState::Approved,
                Decision::Deny => RequestState::Denied,
            };
            req.finish_by_policy(state, by, now, &mut ch);
            return Ok((req, ch));
        }
        if !req.enter_step(0, dir, policies, now, &mut ch) {
            let by = PolicyVerdict {
                policy: "skip_if".into(),
                reason: "every step was skipped by policy".into(),
                error: None,
            };
            req.finish_by_policy(RequestState::Approved, by, now, &mut ch);
        }
        Ok((req, ch))
    }

    /// Rule 2's validation of what was asked (the requester, the context, the reason, the
    /// fields, the start), and the pending request it describes, for `duration` (which the
    /// caller has checked), with the workflow's steps waiting.
    pub(crate) fn build(
        new: NewRequest,
        duration: Span,
        res: &ResourceDef,
        dir: &Directory,
        now: Timestamp,
    ) -> Result<Request, DomainError> {
        if dir.user(&new.requester).is_none() && dir.app(&new.requester).is_none() {
            return Err(forbidden(format!(
                "{} is not a configured user",
                new.requester
            )));
        }
        new.context.check()?;
        // An application may give a purpose instead of a reason: its first line stands in.
        let mut new = new;
        if new.reason.trim().is_empty()
            && let Some(line) = new
                .context
                .purpose
                .as_deref()
                .and_then(|p| p.lines().map(str::trim).find(|l| !l.is_empty()))
        {
            new.reason = line.chars().take(200).collect();
        }
        if new.reason.trim().is_empty() {
            return Err(invalid("a reason (or a purpose) is required"));
        }
        check_text("reason", &new.reason)?;
        let fields = validate_fields(&new.fields, res, dir)?;
        let action = match (&res.action, new.action.take()) {
            (Some(def), Some(input)) => Some(crate::action::Action::new(input, def.claim_within)?),
            (Some(_), None) => {
                return Err(invalid(format!(
                    "{} is an action resource: the request needs the action, {{tool, arguments}}",
                    res.name
                )));
            }
            (None, Some(_)) => {
                return Err(invalid(format!(
                    "{} grants access; only a resource of kind \"action\" takes an action",
                    res.name
                )));
            }
            (None, None) => None,
        };

        let steps: Vec<StepState> = res
            .workflow
            .steps
            .iter()
            .map(|s| {
                let (constraint, principals) = match &s.reviewers {
                    Reviewers::OneOf(p) => (Constraint::OneOf, p),
                    Reviewers::AllOf(p) => (Constraint::AllOf, p),
                    Reviewers::Quorum { min, of } => (Constraint::Quorum { min: *min }, of),
                };
                StepState {
                    constraint,
                    slots: principals
                        .iter()
                        .map(|p| Slot {
                            principal: p.clone(),
                            people: dir.people(p),
                        })
                        .collect(),
                    skip_if: s.skip_if.clone(),
                    status: StepStatus::Waiting,
                    reviews: vec![],
                    assignments: vec![],
                    skipped_because: None,
                    remind_every: s.remind_every,
                    escalate: s.escalate.clone(),
                    entered_at: None,
                    escalations: vec![],
                    slack_decisions: s.slack_decisions,
                }
            })
            .collect();

        if let Some(at) = new.start_at {
            if at.millis() < now.millis() - 60_000 {
                return Err(invalid("start_at is in the past"));
            }
            if at.millis() > now.plus(crate::limits::MAX_START_AHEAD).millis() {
                return Err(invalid(format!(
                    "start_at is more than {} ahead",
                    crate::limits::MAX_START_AHEAD
                )));
            }
        }
        Ok(Request {
            id: new.id,
            resource: res.name.clone(),
            requester: new.requester,
            reason: new.reason,
            fields,
            duration,
            state: RequestState::Pending,
            created_at: now,
            pending_until: now.plus(res.pending_ttl),
            steps,
            comments: vec![],
            outcome: None,
            grant: None,
            connector: res.connector.clone(),
            grant_params: res.grant.clone(),
            part_of: res.part_of.clone(),
            durations: res.durations.clone(),
            allow_self_approval: res.allow_self_approval,
            owners: res.owner_people(dir),
            start_at: new.start_at.filter(|t| *t > now),
            extends: new.extends,
            on_request: res.on_request.clone(),
            policies: res.policies.clone(),
            warnings: vec![],
            trace: vec![],
            context: new.context,
            follow_up: None,
            action,
            run: new.run,
        })
    }

    /// The audit event of the request's creation.
    pub(crate) fn created_event(&self) -> Event {
        // The actor is whoever acted: the application that asked for the requester, if one
        // did.
        let mut ev = Event::request(EventKind::RequestCreated, &self.id, Some(self.creator()))
            .with("resource", &self.resource)
            .with("duration", self.duration)
            .with("reason", &self.reason);
        if let Some(at) = self.start_at {
            ev = ev.with("start_at", at.millis());
        }
        if let Some(g) = &self.extends {
            ev = ev.with("extends", g);
        }
        if self.context.created_by.is_some() {
            ev = ev.with("requester", &self.requester);
        }
        if !self.warnings.is_empty() {
            ev = ev.with("warnings", self.warnings.join("\n"));
        }
        if self.follow_up.is_some() {
            ev = ev.with("break_glass", true);
        }
        ev
    }

    /// Evaluates one policy for this request and records it in the trace (rule 31). The
    /// verdict is computed from the result by `read`.
    fn evaluate<T>(
        &mut self,
        purpose: Purpose,
        step: Option<usize>,
        p: &PolicyRef,
        (dir, policies): (&Directory, &dyn PolicyEval),
        now: Timestamp,
        read: impl FnOnce(&Value) -> Result<(T, String), String>,
    ) -> Result<T, String> {
        let input = policy::input(self, dir, step, None, now);
        let ev = policies.eval(p, &input);
        let read = ev.result.as_ref().map_err(Clone::clone).and_then(read);
        let (out, verdict) = match read {
            Ok((t, verdict)) => (Ok(t), verdict),
            Err(e) => (Err(e.clone()), format!("error: {e}")),
        };
        self.trace.push(Trace {
            purpose,
            step: step.map(|i| i + 1),
            bundle: p.bundle.clone(),
            query: p.query.clone(),
            result: ev.result.as_ref().ok().cloned().unwrap_or(Value::Null),
            error: out.as_ref().err().cloned(),
            verdict,
            micros: ev.micros,
            at: now,
        });
        out
    }

    /// Rule 30: a step's reviewer query adds the principals it names to the static list.
    /// Principals the configuration does not know are ignored (they could never sign in);
    /// an error adds nobody.
    fn add_dynamic_reviewers(
        &mut self,
        i: usize,
        p: &PolicyRef,
        dir: &Directory,
        policies: &dyn PolicyEval,
        now: Timestamp,
    ) {
        let known = self.evaluate(Purpose::Reviewers, Some(i), p, (dir, policies), now, |v| {
            let names = policy::principals(v)?;
            let (known, unknown) = policy::known_principals(&names, dir);
            let mut verdict = if known.is_empty() {
                "no reviewers".to_owned()
            } else {
                let list: Vec<String> = known.iter().map(ToString::to_string).collect();
                format!("reviewers {}", list.join(", "))
            };
            if !unknown.is_empty() {
                verdict.push_str(&format!(
                    "; ignored {} (not configured)",
                    unknown.join(", ")
                ));
            }
            Ok((known, verdict))
        });
        let step = &mut self.steps[i];
        for principal in known.unwrap_or_default() {
            if step.slots.iter().all(|s| s.principal != principal) {
                step.slots.push(Slot {
                    people: dir.people(&principal),
                    principal,
                });
            }
        }
    }

    /// Rule 6: the reasons to skip step `i`, if every one of its `skip_if` policies says
    /// skip. An error says "do not skip". `record` keeps the evaluations in the trace (when
    /// the step is entered) or not (when rule 13 only asks whether the step could be skipped).
    fn skip_reasons(
        &mut self,
        i: usize,
        dir: &Directory,
        policies: &dyn PolicyEval,
        now: Timestamp,
        record: bool,
    ) -> Option<Vec<String>> {
        let refs = self.steps[i].skip_if.clone();
        if refs.is_empty() {
            return None;
        }
        let mut reasons = vec![];
        let mut skip = true;
        for p in &refs {
            let said = if record {
                self.evaluate(Purpose::SkipIf, Some(i), p, (dir, policies), now, |v| {
                    let s = policy::skip(v)?;
                    let verdict = match &s {
                        Some(r) if r.is_empty() => "skip".to_owned(),
                        Some(r) => format!("skip: {r}"),
                        None => "no skip".to_owned(),
                    };
                    Ok((s, verdict))
                })
            } else {
                let input = policy::input(self, dir, Some(i), None, now);
                policies
                    .eval(p, &input)
                    .result
                    .and_then(|v| policy::skip(&v))
            };
            match said {
                Ok(Some(r)) => reasons.push(if r.is_empty() { p.query.clone() } else { r }),
                Ok(None) | Err(_) => skip = false,
            }
            // Every policy is evaluated even after a "no", so that explain shows them all.
        }
        skip.then_some(reasons)
    }

    /// Rule 2: deny and warn policies. Warnings are kept on the request; the first deny (or a
    /// deny policy that fails) is returned.
    pub(crate) fn evaluate_resource_policies(
        &mut self,
        dir: &Directory,
        policies: &dyn PolicyEval,
        now: Timestamp,
    ) -> Option<PolicyVerdict> {
        let mut denial: Option<PolicyVerdict> = None;
        for p in self.policies.clone() {
            let warn = p.enforcement.as_deref() == Some("warn");
            let purpose = if warn { Purpose::Warn } else { Purpose::Deny };
            let said = self.evaluate(purpose, None, &p, (dir, policies), now, |v| {
                let m = policy::messages(v, &p.query)?;
                let verdict = match (m.is_empty(), warn) {
                    (true, _) => "no messages".to_owned(),
                    (false, true) => format!("warn: {}", m.join("; ")),
                    (false, false) => format!("deny: {}", m.join("; ")),
                };
                Ok((m, verdict))
            });
            match (said, warn) {
                (Ok(m), true) => self.warnings.extend(m),
                (Err(e), true) => self
                    .warnings
                    .push(format!("policy error in {}: {e}", p.query)),
                (Ok(m), false) if m.is_empty() => {}
                (Ok(m), false) => {
                    denial.get_or_insert(PolicyVerdict {
                        policy: p.query.clone(),
                        reason: m.join("; "),
                        error: None,
                    });
                }
                (Err(e), false) => {
                    denial.get_or_insert(PolicyVerdict {
                        policy: p.query.clone(),
                        reason: "policy error".into(),
                        error: Some(e),
                    });
                }
            }
        }
        denial
    }

    /// Rule 2: the `on_request` hook may decide at once; anything else, an error included,
    /// leaves the request to its reviewers.
    fn evaluate_on_request(
        &mut self,
        dir: &Directory,
        policies: &dyn PolicyEval,
        now: Timestamp,
    ) -> Option<(Decision, PolicyVerdict)> {
        let p = self.on_request.clone()?;
        let said = self.evaluate(Purpose::OnRequest, None, &p, (dir, policies), now, |v| {
            let d = policy::decision(v)?;
            let verdict = match &d {
                Some((Decision::Approve, r)) if r.is_empty() => "approve".to_owned(),
                Some((Decision::Deny, r)) if r.is_empty() => "deny".to_owned(),
                Some((Decision::Approve, r)) => format!("approve: {r}"),
                Some((Decision::Deny, r)) => format!("deny: {r}"),
                None => "continue to the reviewers".to_owned(),
            };
            Ok((d, verdict))
        });
        let (decision, reason) = said.ok().flatten()?;
        let reason = if reason.is_empty() {
            format!("decided by {}", p.query)
        } else {
            reason
        };
        Some((
            decision,
            PolicyVerdict {
                policy: p.query,
                reason,
                error: None,
            },
        ))
    }

    /// Rule 13 together with rules 9 and 10: every step must be decidable by people other
    /// than the requester, and no person can stand in two places. All the approvals the
    /// workflow needs are matched against the eligible people at once.
    fn check_reviewable(&self, skippable: &[bool]) -> Result<(), DomainError> {
        let mut needs: Vec<(usize, BTreeSet<String>)> = vec![];
        for (i, step) in self.steps.iter().enumerate() {
            if skippable[i] {
                continue;
            }
            let eligible = |people: &BTreeSet<String>| -> BTreeSet<String> {
                people
                    .iter()
                    .filter(|p| self.may_self_review(p))
                    .cloned()
                    .collect()
            };
            match step.constraint {
                Constraint::OneOf => needs.push((i, eligible(&step.candidates()))),
                Constraint::AllOf => {
                    needs.extend(step.slots.iter().map(|s| (i, eligible(&s.people))));
                }
                Constraint::Quorum { min } => {
                    let pool = eligible(&step.candidates());
                    needs.extend((0..min).map(|_| (i, pool.clone())));
                }
            }
        }
        let people: Vec<&String> = needs
            .iter()
            .flat_map(|(_, s)| s.iter())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let edges: Vec<Vec<usize>> = needs
            .iter()
            .map(|(_, s)| {
                (0..people.len())
                    .filter(|&j| s.contains(people[j]))
                    .collect()
            })
            .collect();
        if max_matching(&edges, people.len()) < needs.len() {
            // Name the first step that cannot be satisfied on its own, or the workflow.
            let step = needs.iter().find(|(_, s)| s.is_empty()).map(|(i, _)| i + 1);
            return Err(invalid(match step {
                Some(n) => format!(
                    "step {n} of {} has no eligible reviewer other than the requester",
                    self.resource
                ),
                None => format!(
                    "the workflow of {} needs more distinct reviewers than are eligible \
                     (the requester cannot review, and nobody may decide twice)",
                    self.resource
                ),
            }));
        }
        Ok(())
    }

    /// Rule 9: the requester counts as a reviewer only where the resource allows it.
    pub(crate) fn may_self_review(&self, person: &str) -> bool {
        person != self.requester || self.allow_self_approval
    }

    /// Enters step `from`, or the first step after it that its `skip_if` policies do not
    /// skip (rule 6). Returns false when every remaining step was skipped.
    fn enter_step(
        &mut self,
        from: usize,
        dir: &Directory,
        policies: &dyn PolicyEval,
        now: Timestamp,
        ch: &mut Changes,
    ) -> bool {
        let mut i = from;
        while i < self.steps.len() {
            let Some(reasons) = self.skip_reasons(i, dir, policies, now, true) else {
                break;
            };
            let why = reasons.join("; ");
            self.steps[i].status = StepStatus::Skipped;
            self.steps[i].skipped_because = Some(why.clone());
            ch.event(
                Event::request(EventKind::StepSkipped, &self.id, None)
                    .with("step", i + 1)
                    .with("reason", why),
            );
            i += 1;
        }
        if i == self.steps.len() {
            return false;
        }
        self.steps[i].status = StepStatus::Active;
        self.steps[i].entered_at = Some(now);
        // Reminders and escalations are durable timers (rule 33); one that fires after the
        // step has moved on does nothing.
        if let Some(every) = self.steps[i].remind_every {
            ch.effect(Effect::Schedule {
                kind: TimerKind::StepReminder,
                key: step_key(&self.id, i),
                at: now.plus(every),
            });
        }
        if let Some(first) = self.steps[i].escalate.first() {
            ch.effect(Effect::Schedule {
                kind: TimerKind::StepEscalation,
                key: step_key(&self.id, i),
                at: now.plus(first.after),
            });
        }
        let reviewers: Vec<String> = self.steps[i]
            .candidates()
            .into_iter()
            .filter(|p| self.may_self_review(p) && !self.has_decided(p))
            .collect();
        ch.event(
            Event::request(EventKind::StepEntered, &self.id, None)
                .with("step", i + 1)
                .with("reviewers", reviewers.join(",")),
        );
        true
    }

    /// For a simulation: evaluates the `skip_if` list of every step not reached yet, as if it
    /// were entered now, and records the evaluations. Returns, per step, the reasons it would
    /// be skipped (`None` for steps already reached or that would wait for reviewers).
    pub fn preview_skips(
        &mut self,
        dir: &Directory,
        policies: &dyn PolicyEval,
        now: Timestamp,
    ) -> Vec<Option<Vec<String>>> {
        (0..self.steps.len())
            .map(|i| {
                if self.state == RequestState::Pending
                    && self.steps[i].status == StepStatus::Waiting
                {
                    self.skip_reasons(i, dir, policies, now, true)
                } else {
                    None
                }
            })
            .collect()
    }

    /// The people who could decide step `i`, ignoring who has decided already: its
    /// candidates without the requester (rule 9).
    pub fn step_reviewers(&self, i: usize) -> BTreeSet<String> {
        self.steps[i]
            .candidates()
            .into_iter()
            .filter(|p| self.may_self_review(p))
            .collect()
    }

    /// The index of the step awaiting decisions, if the request is pending.
    pub fn current_step(&self) -> Option<usize> {
        if self.state != RequestState::Pending {
            return None;
        }
        self.steps
            .iter()
            .position(|s| s.status == StepStatus::Active)
    }

    /// Whether a person holds every credential the request asks reviewers for (rule 27).
    fn credentialed(&self, dir: &Directory, person: &str) -> bool {
        self.context
            .credentials
            .iter()
            .all(|c| dir.holds(person, c))
    }

    /// Leaves in each reviewer slot only the people who hold the requested credentials.
    fn keep_credentialed(&mut self, dir: &Directory) {
        if self.context.credentials.is_empty() {
            return;
        }
        let keep: BTreeSet<String> = self
            .steps
            .iter()
            .flat_map(|s| s.slots.iter().flat_map(|sl| sl.people.iter().cloned()))
            .filter(|p| self.credentialed(dir, p))
            .collect();
        for s in &mut self.steps {
            for sl in &mut s.slots {
                sl.people.retain(|p| keep.contains(p));
            }
        }
    }

    /// Rule 33: the reminder timer of step `step` fired. While the step still waits, its
    /// reviewers are reminded and the next reminder is set; otherwise nothing happens.
    pub fn remind(&mut self, step: usize, now: Timestamp) -> Option<Changes> {
        if self.current_step() != Some(step) {
            return None;
        }
        let every = self.steps[step].remind_every?;
        let entered = self.steps[step].entered_at?;
        let mut ch = Changes::default();
        // Reminders fall at whole intervals from the step's entry, so that they do not drift
        // with the worker's delay; a timer that fires early is set again for its time.
        let every_ms = i64::try_from(every.secs())
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000)
            .max(1);
        let periods = (now.millis() - entered.millis()) / every_ms;
        let next = entered.plus_millis(every_ms.saturating_mul(periods + 1));
        ch.effect(Effect::Schedule {
            kind: TimerKind::StepReminder,
            key: step_key(&self.id, step),
            at: next,
        });
        if periods < 1 {
            return Some(ch);
        }
        let reviewers: Vec<String> = self.eligible_reviewers().into_iter().collect();
        ch.event(
            Event::request(EventKind::StepReminded, &self.id, None)
                .with("step", step + 1)
                .with("reviewers", reviewers.join(",")),
        );
        Some(ch)
    }

    /// Rule 33: the escalation timer of step `step` fired. While the step still waits, its
    /// next escalation happens: its principals are told and, with `add_reviewers`, may decide
    /// this step from now on (never the requester, rule 9); the one after is set. A timer that
    /// fires early is set again for its time.
    pub fn escalate(&mut self, step: usize, dir: &Directory, now: Timestamp) -> Option<Changes> {
        if self.current_step() != Some(step) {
            return None;
        }
        let s = &self.steps[step];
        let n = s.escalations.len();
        let def = s.escalate.get(n)?.clone();
        let entered = s.entered_at?;
        let mut ch = Changes::default();
        let due = entered.plus(def.after);
        if now < due {
            ch.effect(Effect::Schedule {
                kind: TimerKind::StepEscalation,
                key: step_key(&self.id, step),
                at: due,
            });
            return Some(ch);
        }
        let people: BTreeSet<String> = def
            .to
            .iter()
            .flat_map(|p| dir.people(p))
            .filter(|p| self.may_self_review(p))
            .collect();
        let to: Vec<String> = def.to.iter().map(Principal::to_string).collect();
        ch.event(
            Event::request(EventKind::StepEscalated, &self.id, None)
                .with("step", step + 1)
                .with("to", to.join(","))
                .with(
                    "people",
                    people.iter().cloned().collect::<Vec<_>>().join(","),
                )
                .with("add_reviewers", def.add_reviewers),
        );
        let s = &mut self.steps[step];
        s.escalations.push(Escalated {
            to: def.to.clone(),
            people,
            add_reviewers: def.add_reviewers,
            at: now,
        });
        if let Some(next) = s.escalate.get(n + 1) {
            ch.effect(Effect::Schedule {
                kind: TimerKind::StepEscalation,
                key: step_key(&self.id, step),
                at: entered.plus(next.after),
            });
        }
        Some(ch)
    }

    /// The people the latest escalation of the current step told (rule 33), or, once an open
    /// break-glass follow-up escalated, the people it told (rule 34).
    pub fn escalated_people(&self) -> BTreeSet<String> {
        if let Some(i) = self.current_step() {
            return self.steps[i]
                .escalations
                .last()
                .map(|e| e.people.clone())
                .unwrap_or_default();
        }
        match &self.follow_up {
            Some(f) if f.escalated_at.is_some() && f.closed.is_none() => f.escalated_to.clone(),
            _ => BTreeSet::new(),
        }
    }

    /// Whether something waits for this person's decision: the current step (`can_review`)
    /// or a break-glass follow-up (rule 34). What an inbox lists.
    pub fn awaits(&self, person: &str) -> bool {
        self.can_review(person) || self.follow_up_closers().contains(person)
    }

    /// Whether this person has decided anything on this request (rule 10).
    pub fn has_decided(&self, person: &str) -> bool {
        self.steps
            .iter()
            .flat_map(|s| &s.reviews)
            .any(|r| r.by == person)
    }

    /// Whether this person may decide the current step now.
    pub fn can_review(&self, person: &str) -> bool {
        self.current_step().is_some_and(|i| {
            self.may_self_review(person)
                && !self.has_decided(person)
                && self.steps[i].candidates().contains(person)
        })
    }

    /// People who may decide the current step now.
    pub fn eligible_reviewers(&self) -> BTreeSet<String> {
        match self.current_step() {
            Some(i) => self.steps[i]
                .candidates()
                .into_iter()
                .filter(|p| self.can_review(p))
                .collect(),
            None => BTreeSet::new(),
        }
    }

    /// The people who take part in the request: the requester, the owners, everyone a step's
    /// principals stood for, and everyone who assigned a step or was assigned one. A person
    /// may be named more than once.
    fn involved(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.requester.as_str())
            .chain(self.owners.iter().map(String::as_str))
            .chain(self.steps.iter().flat_map(|s| {
                s.slots
                    .iter()
                    .flat_map(|sl| sl.people.iter().map(String::as_str))
                    .chain(s.assignments.iter().flat_map(|a| {
                        std::iter::once(a.by.as_str()).chain(a.people.iter().map(String::as_str))
                    }))
                    .chain(
                        s.escalations
                            .iter()
                            .flat_map(|e| e.people.iter().map(String::as_str)),
                    )
            }))
            .chain(self.follow_up.iter().flat_map(|f| f.people()))
    }

    /// Whether this person takes part in the request: requester, any reviewer, an owner.
    pub fn involves(&self, person: &str) -> bool {
        self.involved().any(|p| p == person)
    }

    /// Everyone who sees the request without being an admin, so `involved` and the creating
    /// application.
    fn audience_ids(&self) -> impl Iterator<Item = &str> {
        self.involved().chain(self.context.created_by.as_deref())
    }

    /// Who may see this request at all (everyone else gets "not found"): admins, the people
    /// involved, and the application that created it.
    pub fn visible_to(&self, actor: &Actor) -> bool {
        actor.admin || self.audience_ids().any(|p| p == actor.id)
    }

    /// Everyone who may see this request without being an admin, each with whether something
    /// waits for their decision now. For every actor who is not an admin, `visible_to(actor)`
    /// holds exactly when `actor.id` is a key, and its value is `awaits(&actor.id)`. The
    /// store keeps these pairs beside the request (its `request_people` rows), so that a list
    /// reads the rows its caller may see from an index instead of judging every request.
    pub fn audience(&self) -> BTreeMap<String, bool> {
        let mut reviewers = self.eligible_reviewers();
        reviewers.extend(self.follow_up_closers());
        self.audience_ids()
            .map(|p| (p.to_owned(), reviewers.contains(p)))
            .collect()
    }

    /// Who created the request: the application that did, or the requester.
    pub fn creator(&self) -> &str {
        self.context
            .created_by
            .as_deref()
            .unwrap_or(&self.requester)
    }

    /// Rule 4: the creator of a pending request updates its purpose or reason text, and
    /// nothing else.
    pub fn update(
        &mut self,
        actor: &Actor,
        purpose: Option<String>,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<Changes, DomainError> {
        if actor.id != self.creator() {
            return Err(forbidden("only the request's creator may update it"));
        }
        self.require_pending(now)?;
        if purpose.is_none() && reason.is_none() {
            return Err(invalid("nothing to update: give purpose or reason"));
        }
        let mut ev = Event::request(EventKind::RequestUpdated, &self.id, Some(&actor.id));
        if let Some(r) = reason {
            if r.trim().is_empty() {
                return Err(invalid("a reason cannot be empty"));
            }
            check_text("reason", &r)?;
            ev = ev.with("reason", &r);
            self.reason = r;
        }
        if let Some(p) = purpose {
            let next = Context {
                purpose: Some(p.clone()),
                ..Context::default()
            };
            next.check()?;
            if p.trim().is_empty() {
                return Err(invalid("a purpose cannot be empty"));
            }
            // The new text is in the audit log, so that what a reviewer read can be found.
            ev = ev.with("purpose", &p);
            self.context.purpose = Some(p);
        }
        let mut ch = Changes::default();
        ch.event(ev);
        Ok(ch)
    }

    /// Refuses decisions on a request that is finished, or whose pending TTL has run out even
    /// if the expiry timer has not recorded it yet (rule 3 must not depend on worker lag).
    fn require_pending(&self, now: Timestamp) -> Result<(), DomainError> {
        if self.state.is_terminal() {
            return Err(conflict(format!(
                "request {} is already {}",
                self.id,
                self.state.as_str()
            )));
        }
        if now >= self.pending_until {
            return Err(conflict(format!("request {} has expired", self.id)));
        }
        Ok(())
    }

    /// Rules 7–10 and 14–15: records one review on the current step.
    pub fn review(
        &mut self,
        actor: &Actor,
        input: ReviewInput,
        (dir, policies): (&Directory, &dyn PolicyEval),
        now: Timestamp,
    ) -> Result<Changes, DomainError> {
        self.require_pending(now)?;
        let person = actor.id.as_str();
        if let Some(c) = &input.comment {
            check_text("comment", c)?;
        }
        if !self.may_self_review(person) {
            return Err(forbidden("you cannot review your own request"));
        }
        if self.has_decided(person) {
            return Err(conflict(format!(
                "{person} has already decided on request {}",
                self.id
            )));
        }
        let Some(i) = self.current_step() else {
            return Err(conflict(format!(
                "request {} has no step awaiting review",
                self.id
            )));
        };
        if !self.steps[i].candidates().contains(person) {
            return Err(forbidden(format!(
                "{person} is not a reviewer of step {}",
                i + 1
            )));
        }
        if input.decision == Decision::Approve {
            if let Some(d) = input.duration {
                if d > self.duration {
                    return Err(invalid(format!(
                        "a reviewer may shorten the duration, not lengthen it: {d} is longer \
                         than the requested {}",
                        self.duration
                    )));
                }
                if !self.durations.is_empty() && !self.durations.contains(&d) {
                    let set: Vec<String> = self.durations.iter().map(Span::to_string).collect();
                    return Err(invalid(format!(
                        "duration {d} is not one of {}",
                        set.join(", ")
                    )));
                }
            }
            if input.scope == Scope::Workflow && self.part_of.is_none() {
                return Err(invalid(format!(
                    "scope \"workflow\" needs a resource that is part_of a workflow; {} is not",
                    self.resource
                )));
            }
        } else if input.duration.is_some() || input.scope == Scope::Workflow {
            return Err(invalid("duration and scope apply to approvals only"));
        }

        let mut ch = Changes::default();
        let mut ev = Event::request(EventKind::ReviewRecorded, &self.id, Some(person))
            .with("step", i + 1)
            .with(
                "decision",
                match input.decision {
                    Decision::Approve => "approve",
                    Decision::Deny => "deny",
                },
            );
        if let Some(d) = input.duration {
            ev = ev.with("duration", d);
        }
        if input.scope == Scope::Workflow {
            ev = ev.with("scope", "workflow");
        }
        if self.requester == person {
            ev = ev.with("self_approval", "true");
        }
        ch.event(ev);
        self.steps[i].reviews.push(Review {
            by: person.to_owned(),
            decision: input.decision,
            comment: input.comment.clone(),
            duration: input.duration,
            scope: input.scope,
            at: now,
        });

        match input.decision {
            // Rule 8: a deny before the step is satisfied denies the whole request.
            Decision::Deny => {
                self.steps[i].status = StepStatus::Denied;
                self.finish(
                    RequestState::Denied,
                    Some(person),
                    input.comment,
                    now,
                    &mut ch,
                );
            }
            Decision::Approve if self.steps[i].satisfied() => {
                self.steps[i].status = StepStatus::Approved;
                ch.event(
                    Event::request(EventKind::StepApproved, &self.id, None).with("step", i + 1),
                );
                if !self.enter_step(i + 1, dir, policies, now, &mut ch) {
                    self.finish(
                        RequestState::Approved,
                        Some(person),
                        input.comment,
                        now,
                        &mut ch,
                    );
                }
            }
            Decision::Approve => {}
        }
        Ok(ch)
    }

    /// The grant an approved request produces: the smallest approved duration (rule 14) and
    /// the workflow scope only if every approval chose it (rule 15), so that no reviewer's
    /// decision is widened beyond what they approved.
    fn grant_spec(&self) -> GrantSpec {
        let approvals: Vec<&Review> = self
            .steps
            .iter()
            .flat_map(|s| &s.reviews)
            .filter(|r| r.decision == Decision::Approve)
            .collect();
        let duration = approvals
            .iter()
            .filter_map(|r| r.duration)
            .fold(self.duration, Span::min);
        let workflow =
            !approvals.is_empty() && approvals.iter().all(|r| r.scope == Scope::Workflow);
        GrantSpec {
            request: self.id.clone(),
            subject: self.requester.clone(),
            resource: self.resource.clone(),
            workflow: if workflow { self.part_of.clone() } else { None },
            connector: self.connector.clone(),
            params: self.grant_params.clone(),
            duration,
            start_at: self.start_at,
            extends: self.extends.clone(),
            run: self.run.as_ref().map(|l| l.run.clone()),
        }
    }

    /// A policy decided the request (rule 2): no person is the actor.
    pub(crate) fn finish_by_policy(
        &mut self,
        state: RequestState,
        v: PolicyVerdict,
        now: Timestamp,
        ch: &mut Changes,
    ) {
        self.finish(state, None, Some(v.reason.clone()), now, ch);
        if let Some(o) = &mut self.outcome {
            o.policy = Some(v.policy.clone());
        }
        if let Some(ev) = ch.events.last_mut() {
            ev.detail.insert("policy".into(), v.policy);
            if let Some(e) = v.error {
                ev.detail.insert("error".into(), e);
            }
        }
    }

    pub(crate) fn finish(
        &mut self,
        state: RequestState,
        by: Option<&str>,
        comment: Option<String>,
        now: Timestamp,
        ch: &mut Changes,
    ) {
        self.state = state;
        self.outcome = Some(Outcome {
            by: by.map(str::to_owned),
            comment: comment.clone(),
            at: now,
            policy: None,
        });
        let kind = match state {
            RequestState::Approved => EventKind::RequestApproved,
            RequestState::Denied => EventKind::RequestDenied,
            RequestState::Cancelled => EventKind::RequestCancelled,
            RequestState::Expired | RequestState::Pending => EventKind::RequestExpired,
        };
        let mut ev = Event::request(kind, &self.id, by);
        if let Some(c) = comment {
            ev = ev.with("comment", c);
        }
        ch.event(ev);
        ch.effect(Effect::Unschedule {
            kind: TimerKind::RequestExpiry,
            key: self.id.clone(),
        });
        // An approved action is claimed, not granted: its approval covers nothing else.
        if state == RequestState::Approved && self.action.is_none() {
            ch.effect(Effect::IssueGrant(self.grant_spec()));
        }
        if self.context.callback.is_some() {
            ch.effect(Effect::Callback);
        }
    }

    /// Rule 5: the requester already holds an active grant that covers this resource; the
    /// request is answered with it at once.
    fn answer_with_grant(&mut self, grant: &str, now: Timestamp) -> Changes {
        let mut ch = Changes::default();
        for s in &mut self.steps {
            s.status = StepStatus::Skipped;
        }
        self.state = RequestState::Approved;
        self.grant = Some(grant.to_owned());
        self.outcome = Some(Outcome {
            by: None,
            comment: Some(format!("covered by active grant {grant}")),
            at: now,
            policy: None,
        });
        ch.event(
            Event::request(EventKind::RequestCoveredByGrant, &self.id, None).with("grant", grant),
        );
        ch.effect(Effect::Unschedule {
            kind: TimerKind::RequestExpiry,
            key: self.id.clone(),
        });
        if self.context.callback.is_some() {
            ch.effect(Effect::Callback);
        }
        ch
    }

    /// Rule 4: the requester may cancel; an admin may cancel any pending request with a
    /// reason.
    pub fn cancel(
        &mut self,
        actor: &Actor,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<Changes, DomainError> {
        self.require_pending(now)?;
        let reason = reason.filter(|r| !r.trim().is_empty());
        if let Some(r) = &reason {
            check_text("reason", r)?;
        }
        let creator = self.context.created_by.as_deref() == Some(actor.id.as_str());
        if actor.id != self.requester && !creator {
            if !actor.admin {
                return Err(forbidden(
                    "only the requester, the application that created it or an admin may cancel a request",
                ));
            }
            if reason.is_none() {
                return Err(invalid(
                    "an admin must give a reason to cancel someone's request",
                ));
            }
        }
        let mut ch = Changes::default();
        self.finish(
            RequestState::Cancelled,
            Some(&actor.id),
            reason,
            now,
            &mut ch,
        );
        Ok(ch)
    }

    /// Rule 3: the pending TTL ran out. Returns `None` when there is nothing to do (the
    /// request was decided meanwhile, or the timer fired early).
    pub fn expire(&mut self, now: Timestamp) -> Option<Changes> {
        if self.state != RequestState::Pending || now < self.pending_until {
            return None;
        }
        let mut ch = Changes::default();
        for s in &mut self.steps {
            if s.status == StepStatus::Active {
                s.status = StepStatus::Waiting;
            }
        }
        self.finish(
            RequestState::Expired,
            None,
            Some("not decided in time".into()),
            now,
            &mut ch,
        );
        Some(ch)
    }

    /// Rule 11: an eligible reviewer hands the current step to another principal.
    pub fn assign(
        &mut self,
        actor: &Actor,
        to: Principal,
        dir: &Directory,
        now: Timestamp,
    ) -> Result<Changes, DomainError> {
        self.require_pending(now)?;
        let Some(i) = self.current_step() else {
            return Err(conflict("the request has no step awaiting review"));
        };
        if !self.can_review(&actor.id) {
            return Err(forbidden(format!(
                "only an eligible reviewer of step {} may assign it",
                i + 1
            )));
        }
        let mut people = dir.people(&to);
        if !dir.knows(&to) || people.is_empty() {
            return Err(invalid(format!(
                "{to} is not a configured user or group with members"
            )));
        }
        people.retain(|p| self.credentialed(dir, p));
        if people.is_empty() {
            return Err(invalid(format!(
                "{to} does not hold the credentials this request asks for: {}",
                self.context.credentials.join(", ")
            )));
        }
        if people.iter().all(|p| !self.may_self_review(p)) {
            return Err(invalid("a request cannot be assigned to its requester"));
        }
        // Rule 10: nobody decides twice, so an assignee must still be able to decide.
        if people
            .iter()
            .all(|p| !self.may_self_review(p) || self.has_decided(p))
        {
            return Err(invalid(format!("{to} has already decided on this request")));
        }
        if self.steps[i].assignments.len() >= crate::limits::MAX_ASSIGNMENTS {
            return Err(invalid(format!(
                "step {} has been assigned {} times; no more assignments are accepted",
                i + 1,
                crate::limits::MAX_ASSIGNMENTS
            )));
        }
        let slots = self.steps[i].slots_of(&actor.id);
        self.steps[i].assignments.push(Assignment {
            by: actor.id.clone(),
            to: to.clone(),
            people,
            slots,
            at: now,
        });
        let mut ch = Changes::default();
        ch.event(
            Event::request(EventKind::RequestAssigned, &self.id, Some(&actor.id))
                .with("step", i + 1)
                .with("to", &to),
        );
        Ok(ch)
    }

    /// Rule 12: anyone involved may comment, in any state.
    pub fn comment(
        &mut self,
        actor: &Actor,
        text: String,
        now: Timestamp,
    ) -> Result<Changes, DomainError> {
        if !(actor.admin || self.involves(&actor.id)) {
            return Err(forbidden(
                "only people involved in a request may comment on it",
            ));
        }
        if text.trim().is_empty() {
            return Err(invalid("a comment needs text"));
        }
        check_text("comment", &text)?;
        if self.comments.len() >= crate::limits::MAX_COMMENTS {
            return Err(invalid(format!(
                "request {} already has {} comments",
                self.id,
                crate::limits::MAX_COMMENTS
            )));
        }
        self.comments.push(Comment {
            by: actor.id.clone(),
            text,
            at: now,
        });
        let mut ch = Changes::default();
        ch.event(Event::request(
            EventKind::CommentAdded,
            &self.id,
            Some(&actor.id),
        ));
        Ok(ch)
    }
}

/// A decision a policy took, and the cause when it failed closed.
pub(crate) struct PolicyVerdict {
    policy: String,
    reason: String,
    error: Option<String>,
}

pub(crate) fn validate_fields(
    given: &BTreeMap<String, Input>,
    res: &ResourceDef,
    dir: &Directory,
) -> Result<BTreeMap<String, FieldValue>, DomainError> {
    if given.len() > crate::limits::MAX_FIELDS {
        return Err(invalid(format!(
            "at most {} fields",
            crate::limits::MAX_FIELDS
        )));
    }
    if let Some(unknown) = given
        .keys()
        .find(|k| !res.fields.iter().any(|f| &f.name == *k))
    {
        return Err(invalid(format!("{} has no field {unknown:?}", res.name)));
    }
    let mut out = BTreeMap::new();
    for f in &res.fields {
        let value = match given.get(&f.name) {
            Some(input) => Some(f.parse(input, dir).map_err(invalid)?),
            None => f.default.clone(),
        };
        match value {
            Some(v) => {
                out.insert(f.name.clone(), v);
            }
            None if f.required => {
                return Err(invalid(format!("field {:?} is required", f.name)));
            }
            None => {}
        }
    }
    Ok(out)
}
