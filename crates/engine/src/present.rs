//! The presenter: how every surface shows a request and a grant. The API and the CLI get
//! these views as JSON, the portal renders them, and notifications (email, webhooks) are
//! written from them, so a request reads the same wherever it is seen. A notification's
//! headline and lines are made here too ([`headline`], [`lines`]), for every channel.

use std::collections::{BTreeMap, BTreeSet};

use domain::notify::NotifyEvent;
use domain::request::Constraint;
use domain::{Decision, FieldValue, Grant, GrantEnd, Request, RequestState, Scope, Timestamp};
use proto::{
    ActionView, ActorRef, AssignmentView, CommentView, FollowUpView, GrantEndingView, GrantView,
    OutcomeView, RequestView, ReviewView, StepView, SummaryView,
};
use serde_json::Value;

/// A time as every surface writes it: RFC 3339 in UTC.
pub fn ts(t: Timestamp) -> String {
    crate::callback::rfc3339(t)
}

/// A field's value as a person reads it.
pub fn field_text(v: &FieldValue) -> String {
    match v {
        FieldValue::String(s) | FieldValue::User(s) => s.clone(),
        FieldValue::Int(i) => i.to_string(),
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::Duration(d) => d.to_string(),
    }
}

/// A field's value as JSON: strings, integers and booleans as they are, durations spelled.
pub fn field_value(v: &FieldValue) -> Value {
    match v {
        FieldValue::String(s) | FieldValue::User(s) => Value::String(s.clone()),
        FieldValue::Int(i) => Value::from(*i),
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Duration(d) => Value::String(d.to_string()),
    }
}

/// The portal page of a request (rule 21's `portal_url`).
pub fn portal_url(public_url: &str, id: &str) -> String {
    format!("{}/requests/{id}", public_url.trim_end_matches('/'))
}

/// A run's page in the portal.
pub fn run_url(public_url: &str, id: &str) -> String {
    format!("{}/runs/{id}", public_url.trim_end_matches('/'))
}

pub fn request(r: &Request, grant: Option<&Grant>, public_url: &str) -> RequestView {
    let eligible = r.eligible_reviewers();
    let current = r.current_step();
    RequestView {
        id: r.id.clone(),
        resource: r.resource.clone(),
        requester: r.requester.clone(),
        reason: r.reason.clone(),
        fields: r
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), field_value(v)))
            .collect::<BTreeMap<_, _>>(),
        duration: r.duration.to_string(),
        state: r.state.as_str().to_owned(),
        created_at: ts(r.created_at),
        pending_until: ts(r.pending_until),
        current_step: current.map(|i| i + 1),
        steps: r
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (constraint, min) = constraint_name(s.constraint);
                StepView {
                    index: i + 1,
                    constraint: constraint.to_owned(),
                    min,
                    status: s.status.as_str().to_owned(),
                    reviewers: s.slots.iter().map(|sl| sl.principal.to_string()).collect(),
                    eligible: if current == Some(i) {
                        eligible.iter().cloned().collect()
                    } else {
                        vec![]
                    },
                    reviews: s
                        .reviews
                        .iter()
                        .map(|rv| ReviewView {
                            by: rv.by.clone(),
                            decision: match rv.decision {
                                Decision::Approve => "approve",
                                Decision::Deny => "deny",
                            }
                            .to_owned(),
                            comment: rv.comment.clone(),
                            duration: rv.duration.map(|d| d.to_string()),
                            scope: match rv.scope {
                                Scope::Resource => "resource",
                                Scope::Workflow => "workflow",
                            }
                            .to_owned(),
                            at: ts(rv.at),
                        })
                        .collect(),
                    assignments: s
                        .assignments
                        .iter()
                        .map(|a| AssignmentView {
                            by: a.by.clone(),
                            to: a.to.to_string(),
                            at: ts(a.at),
                        })
                        .collect(),
                    skipped_because: s.skipped_because.clone(),
                }
            })
            .collect(),
        comments: r
            .comments
            .iter()
            .map(|c| CommentView {
                by: c.by.clone(),
                text: c.text.clone(),
                at: ts(c.at),
            })
            .collect(),
        outcome: r.outcome.as_ref().map(|o| OutcomeView {
            status: r.state.as_str().to_owned(),
            comment: o.comment.clone(),
            actioned_at: ts(o.at),
            actioned_by: o.by.as_ref().map(|b| ActorRef {
                id: b.clone(),
                name: b.clone(),
            }),
            policy: o.policy.clone(),
        }),
        grant_id: r.grant.clone(),
        start_at: r.start_at.map(ts),
        extends: r.extends.clone(),
        grant: grant.map(self::grant),
        warnings: r.warnings.clone(),
        created_by: r.context.created_by.clone(),
        purpose: r.context.purpose.clone(),
        reference_url: r.context.reference_url.clone(),
        correlation_id: r.context.correlation_id.clone(),
        request_data: r.context.request_data.clone(),
        reviewer_credentials: r.context.credentials.clone(),
        portal_url: portal_url(public_url, &r.id),
        callback_secret: None,
        follow_up: r.follow_up.as_ref().map(|f| FollowUpView {
            state: f.state.as_str().to_owned(),
            reviewers: f.slots.iter().map(|s| s.principal.to_string()).collect(),
            eligible: r.follow_up_closers().into_iter().collect(),
            due_at: ts(f.due),
            escalated_at: f.escalated_at.map(ts),
            closed_by: f.closed.as_ref().map(|c| c.by.clone()),
            closed_at: f.closed.as_ref().map(|c| ts(c.at)),
            comment: f.closed.as_ref().and_then(|c| c.comment.clone()),
        }),
        action: action(r),
        run: r.run.as_ref().map(|l| proto::RunRefView {
            id: l.run.clone(),
            step: l.step.clone(),
        }),
        summary: summary(r),
    }
}

/// A request's action (issue 18) as every surface shows it: the tool, the arguments (printed
/// by [`ActionView::arguments_text`]), the digest, and the claim's window.
pub fn action(r: &Request) -> Option<ActionView> {
    let a = r.action.as_ref()?;
    Some(ActionView {
        tool: a.tool.clone(),
        arguments: a.arguments.clone(),
        digest: a.digest.clone(),
        claim_within: a.claim_within.to_string(),
        claim_until: match (r.state, &r.outcome) {
            (domain::RequestState::Approved, Some(o)) => Some(ts(a.claim_until(o.at))),
            _ => None,
        },
        claimed_at: a.claimed_at.map(ts),
    })
}

/// A step's rule in words: `one of group:dba`, `every one of alice, bob`, `2 of group:sre`.
/// It takes the rule as views name it (`one_of`, `all_of`, `quorum` with its minimum), so that
/// the catalog's resources and the requests' steps read alike.
pub fn step_sentence(constraint: &str, min: Option<u32>, reviewers: &[String]) -> String {
    let who = reviewers.join(", ");
    match (constraint, min) {
        ("all_of", _) => format!("every one of {who}"),
        ("quorum", Some(n)) => format!("{n} of {who}"),
        _ => format!("one of {who}"),
    }
}

/// A step's rule as views name it.
fn constraint_name(c: Constraint) -> (&'static str, Option<u32>) {
    match c {
        Constraint::OneOf => ("one_of", None),
        Constraint::AllOf => ("all_of", None),
        Constraint::Quorum { min } => ("quorum", Some(min)),
    }
}

/// How many approvals a step needs.
fn approvals_needed(s: &domain::request::StepState) -> usize {
    match s.constraint {
        Constraint::OneOf => 1,
        Constraint::AllOf => s.slots.len(),
        Constraint::Quorum { min } => usize::try_from(min).unwrap_or(usize::MAX),
    }
}

/// The request in sentences (`proto::SummaryView`): where it stands, each step's rule, and
/// who may act on it now.
pub fn summary(r: &Request) -> SummaryView {
    let steps = r
        .steps
        .iter()
        .map(|s| {
            let who: Vec<String> = s.slots.iter().map(|sl| sl.principal.to_string()).collect();
            let (constraint, min) = constraint_name(s.constraint);
            step_sentence(constraint, min, &who)
        })
        .collect();
    let open_follow_up = r.follow_up.as_ref().filter(|f| f.closed.is_none());
    let status = match (&r.outcome, r.state, r.current_step()) {
        (_, RequestState::Pending, Some(i)) => {
            let s = &r.steps[i];
            let got = s
                .reviews
                .iter()
                .filter(|rv| rv.decision == Decision::Approve)
                .count();
            let need = approvals_needed(s);
            let noun = if need == 1 { "approval" } else { "approvals" };
            format!(
                "Pending: step {} of {}, {got} of {need} {noun}",
                i + 1,
                r.steps.len()
            )
        }
        (Some(o), state, _) if state.is_terminal() => {
            let verb = capitalised(state.as_str());
            let by =
                o.by.clone()
                    .or_else(|| o.policy.as_ref().map(|p| format!("policy {p}")));
            let mut out = match (state, by) {
                (RequestState::Expired, _) => "Expired without a decision".to_owned(),
                (_, Some(by)) => format!("{verb} by {by}"),
                (_, None) => verb,
            };
            if r.follow_up.is_some() {
                out.push_str(" (break-glass)");
            }
            if let Some(c) = &o.comment {
                out.push_str(": ");
                out.push_str(c);
            }
            out
        }
        (_, state, _) => capitalised(state.as_str()),
    };
    let status = match open_follow_up {
        Some(f) if f.escalated_at.is_some() => format!("{status}; follow-up review overdue"),
        Some(_) => format!("{status}; follow-up review open"),
        None => status,
    };
    let waiting_on = if r.state == RequestState::Pending {
        r.eligible_reviewers().into_iter().collect()
    } else {
        r.follow_up_closers().into_iter().collect()
    };
    SummaryView {
        status,
        steps,
        waiting_on,
    }
}

/// `approved` → `Approved`.
pub fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// What a person may do with a request now, as the engine would allow it: what the portal
/// and Slack offer them. The engine checks every action again when it is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Approve or deny the current step.
    pub decide: bool,
    /// They already decided this request.
    pub decided: bool,
    pub comment: bool,
    pub cancel: bool,
    /// Acknowledge or flag a break-glass follow-up (rule 34).
    pub close_follow_up: bool,
}

pub fn actions(r: &Request, viewer: &domain::Actor) -> Actions {
    let me = viewer.id.as_str();
    let pending = r.state == RequestState::Pending;
    let person = !viewer.app;
    Actions {
        decide: person && pending && r.eligible_reviewers().contains(me),
        decided: r.has_decided(me),
        comment: pending || r.involves(me) || viewer.admin,
        cancel: pending && (r.requester == me || viewer.admin),
        close_follow_up: person && r.follow_up_closers().contains(me),
    }
}

pub fn grant(g: &Grant) -> GrantView {
    GrantView {
        id: g.id.clone(),
        request_id: g.spec.request.clone(),
        subject: g.spec.subject.clone(),
        resource: g.spec.resource.clone(),
        workflow: g.spec.workflow.clone(),
        state: g.state.as_str().to_owned(),
        duration: g.spec.duration.to_string(),
        created_at: ts(g.created_at),
        start_at: g.spec.start_at.map(ts),
        activated_at: g.activated_at.map(ts),
        expires_at: g.expires_at.map(ts),
        ended_at: g.ended_at.map(ts),
        ending: g.ending.as_ref().map(|e| match e {
            GrantEnd::Expired => GrantEndingView {
                kind: "expired".into(),
                by: None,
                reason: None,
            },
            GrantEnd::Dropped => GrantEndingView {
                kind: "dropped".into(),
                by: Some(g.spec.subject.clone()),
                reason: None,
            },
            GrantEnd::ActivationFailed { error, .. } => GrantEndingView {
                kind: "activation_failed".into(),
                by: None,
                reason: Some(error.clone()),
            },
            GrantEnd::Revoked { by, reason } => GrantEndingView {
                kind: "revoked".into(),
                by: Some(by.clone()),
                reason: Some(reason.clone()),
            },
        }),
        attempts: g.attempts,
        last_error: g.last_error.clone(),
    }
}

/// One line naming what happened, for an email's subject and a chat message's first line.
/// `request` is the request the event is about, when it has one; `grant` the grant.
pub fn headline(
    event: NotifyEvent,
    request: Option<&RequestView>,
    grant: Option<&GrantView>,
    run: Option<&proto::RunView>,
) -> String {
    let resource = request
        .map(|r| r.resource.as_str())
        .or(grant.map(|g| g.resource.as_str()))
        .unwrap_or("a resource");
    let requester = request.map_or("someone", |r| r.requester.as_str());
    let until = grant
        .and_then(|g| g.expires_at.as_deref())
        .map(|t| format!(" until {t}"))
        .unwrap_or_default();
    // Worded for whoever reads it: the requester, a reviewer, an owner or an admin.
    let subject = format!("{requester}'s request for {resource}");
    let access = grant.map_or(requester, |g| g.subject.as_str());
    match event {
        NotifyEvent::RequestCreated => format!("{requester} asks for {resource}"),
        NotifyEvent::StepEntered => format!("{requester} asks for {resource}: a review is needed"),
        NotifyEvent::Reminder => format!("Reminder: {subject} still waits for a review"),
        NotifyEvent::Escalated => format!("Escalated: {subject} needs a review"),
        NotifyEvent::RequestApproved => format!("{subject} was approved"),
        NotifyEvent::RequestDenied => format!("{subject} was denied"),
        NotifyEvent::RequestCancelled => format!("{subject} was cancelled"),
        NotifyEvent::RequestExpired => format!("{subject} expired without a decision"),
        NotifyEvent::CommentAdded => format!("New comment on {subject}"),
        NotifyEvent::Assigned => format!("{subject} was assigned for review"),
        NotifyEvent::GrantActive => format!("{access}'s access to {resource} is active{until}"),
        NotifyEvent::GrantExpiring => {
            let at = grant
                .and_then(|g| g.expires_at.as_deref())
                .map(|t| format!(" at {t}"))
                .unwrap_or_else(|| " soon".into());
            format!("{access}'s access to {resource} ends{at}")
        }
        NotifyEvent::GrantEnded => format!("{access}'s access to {resource} has ended"),
        NotifyEvent::GrantFailed => format!("{access}'s access to {resource} could not be given"),
        NotifyEvent::RunReady => match request.and_then(|r| r.run.as_ref()) {
            Some(run) => format!(
                "{resource} was granted: run {} can resume at step {}",
                run.id, run.step
            ),
            None => format!("{resource} was granted: the run can resume"),
        },
        NotifyEvent::RunFailed => match request.and_then(|r| r.run.as_ref()) {
            Some(run) => format!(
                "Run {} could not complete for lack of permissions: {resource} was denied",
                run.id
            ),
            None => {
                format!("A run could not complete for lack of permissions: {resource} was denied")
            }
        },
        NotifyEvent::RunInput => match run {
            Some(r) => format!(
                "Run {} of {} waits for your answer: {}",
                r.id,
                r.runbook,
                r.input.as_ref().map_or("", |i| i.prompt.as_str())
            ),
            None => "A run waits for your answer".to_owned(),
        },
        NotifyEvent::BreakGlass => {
            format!("Break-glass: {requester} took {resource} without review")
        }
    }
}

/// The facts of a notification as label and value, in reading order: what a person needs to
/// act on it without opening the portal (the link is added by the channel).
pub fn lines(
    request: Option<&RequestView>,
    grant: Option<&GrantView>,
    run: Option<&proto::RunView>,
) -> Vec<(&'static str, String)> {
    let mut out = vec![];
    if let Some(r) = run {
        out.push(("Runbook", r.runbook.clone()));
        out.push(("Run", r.id.clone()));
        out.push(("Status", r.status.clone()));
        if let Some(i) = &r.input {
            out.push(("Asks", i.prompt.clone()));
            if let Some(v) = &i.possible_values {
                let v: Vec<String> = v
                    .iter()
                    .map(|x| match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                out.push(("Choices", v.join(", ")));
            }
        }
    }
    if let Some(r) = request {
        out.push(("Resource", r.resource.clone()));
        out.push(("Requester", r.requester.clone()));
        if let Some(app) = &r.created_by {
            out.push(("Asked through", app.clone()));
        }
        out.push(("Reason", r.reason.clone()));
        match &r.action {
            Some(a) => {
                out.push(("Action", a.tool.clone()));
                out.push(("Arguments", a.arguments_text()));
                out.push(("Digest", a.digest.clone()));
            }
            None => out.push(("Duration", r.duration.clone())),
        }
        for (k, v) in &r.fields {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push(("Field", format!("{k}: {text}")));
        }
        // Bodies written before the summary existed have none.
        if r.summary.status.is_empty() {
            out.push(("Status", r.state.clone()));
        } else {
            out.push(("Status", r.summary.status.clone()));
        }
        if !r.summary.waiting_on.is_empty() {
            out.push(("Waiting on", r.summary.waiting_on.join(", ")));
        }
        if let Some(o) = r.outcome.as_ref().filter(|_| r.summary.status.is_empty()) {
            if let Some(by) = &o.actioned_by {
                out.push(("Decided by", by.id.clone()));
            }
            if let Some(c) = &o.comment {
                out.push(("Comment", c.clone()));
            }
        }
        if let Some(c) = r.comments.last() {
            out.push(("Last comment", format!("{}: {}", c.by, c.text)));
        }
        for w in &r.warnings {
            out.push(("Warning", w.clone()));
        }
        if let Some(f) = &r.follow_up {
            let status = match (&f.closed_by, &f.escalated_at) {
                (Some(by), _) => format!("{} by {by}", f.state),
                (None, Some(_)) => format!("overdue since {}", f.due_at),
                (None, None) => format!("open, due by {}", f.due_at),
            };
            out.push(("Follow-up", status));
            out.push(("Follow-up reviewers", f.reviewers.join(", ")));
        }
    }
    if let Some(g) = grant {
        if request.is_none() {
            out.push(("Resource", g.resource.clone()));
            out.push(("For", g.subject.clone()));
        }
        out.push(("Grant", format!("{} ({})", g.id, g.state)));
        if let Some(t) = &g.expires_at {
            out.push(("Expires", t.clone()));
        }
    }
    out
}

/// The durations a reviewer may approve for, shortest first: the resource's closed set up to
/// the requested duration, or, without one, a few common spans shorter than it and the
/// requested one itself (rule 19's "shorten, never lengthen").
pub fn approve_spans(r: &Request) -> Vec<domain::Span> {
    let requested = r.duration;
    let mut spans: Vec<domain::Span> = if r.durations.is_empty() {
        [300, 900, 3600, 4 * 3600, 24 * 3600]
            .into_iter()
            .map(domain::Span::from_secs)
            .filter(|s| *s < requested)
            .chain(std::iter::once(requested))
            .collect()
    } else {
        r.durations
            .iter()
            .copied()
            .filter(|s| *s <= requested)
            .collect()
    };
    spans.sort();
    spans.dedup();
    spans
}

/// A duration as a person reads it: `15 minutes`, `4 hours`, `2 days`, or as written (`90s`).
pub fn human_span(s: domain::Span) -> String {
    let secs = s.secs();
    let unit = |n: u64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    if secs.is_multiple_of(86400) && secs > 86400 {
        unit(secs / 86400, "day")
    } else if secs.is_multiple_of(3600) && secs >= 3600 {
        unit(secs / 3600, "hour")
    } else if secs.is_multiple_of(60) && secs >= 60 {
        unit(secs / 60, "minute")
    } else {
        s.to_string()
    }
}

/// A step of a runbook as the catalog and a run's timeline show it: its type, prompt, value
/// type, action and resource.
fn step_def(s: &domain::RunbookStep) -> proto::RunbookStepView {
    use domain::run::StepKind;
    let (prompt, value_type, action, resource) = match &s.kind {
        StepKind::Action {
            store,
            name,
            resource,
            ..
        } => (
            None,
            None,
            Some(format!("{store}.{name}")),
            resource.clone(),
        ),
        StepKind::Input {
            value_type, prompt, ..
        } => (
            Some(prompt.clone()),
            Some(value_type.as_str().to_owned()),
            None,
            None,
        ),
        StepKind::Message { prompt } => (Some(prompt.clone()), None, None, None),
    };
    proto::RunbookStepView {
        id: s.id.clone(),
        kind: s.kind.as_str().to_owned(),
        prompt,
        value_type,
        action,
        resource,
    }
}

/// A runbook of the catalog.
pub fn runbook(rb: &config::runbook::Runbook) -> proto::RunbookView {
    proto::RunbookView {
        name: rb.name.clone(),
        description: rb.description.clone(),
        version: domain::run::version_of(&rb.source),
        steps: rb.steps.iter().map(step_def).collect(),
    }
}

/// A run as every surface shows it (issue 17): its timeline, what it waits for, and who can
/// approve the access it stopped for.
pub fn run(r: &domain::Run, config: &config::Config) -> proto::RunView {
    use domain::RunState;
    use domain::run::Next;
    let at = r.done.len();
    let ended = r.state.is_terminal();
    let steps = r
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let def = step_def(s);
            let done = r.done.get(i);
            proto::RunStepView {
                id: def.id,
                kind: def.kind,
                status: match (done, i == at && !ended) {
                    (Some(_), _) => "done",
                    (None, true) => "current",
                    (None, false) => "pending",
                }
                .to_owned(),
                prompt: def.prompt,
                action: def.action,
                resource: def.resource,
                output: done.map(|d| d.output.clone()),
                completed_at: done.map(|d| ts(d.at)),
                attempts: done.map(|d| d.attempts).filter(|n| *n > 0),
            }
        })
        .collect();
    let input = match (r.state, r.next()) {
        (
            RunState::WaitingForInput,
            Ok(Next::Input {
                step,
                value_type,
                offered,
            }),
        ) => Some(proto::RunInputView {
            prompt: match r.current().map(|s| &s.kind) {
                Some(domain::run::StepKind::Input { prompt, .. }) => prompt.clone(),
                _ => String::new(),
            },
            step,
            value_type: value_type.as_str().to_owned(),
            possible_values: offered,
        }),
        _ => None,
    };
    let needs_access = match (&r.blocked, r.state) {
        (
            Some(b),
            RunState::NeedsAccess | RunState::WaitingForApproval | RunState::ReadyToResume,
        ) => {
            let action = match r.current().map(|s| &s.kind) {
                Some(domain::run::StepKind::Action { store, name, .. }) => {
                    format!("{store}.{name}")
                }
                _ => String::new(),
            };
            Some(proto::NeedsAccessView {
                step: b.step.clone(),
                action,
                resource: b.resource.clone(),
                approvers: approvers(config, &b.resource, &r.runner),
                request_id: b.request.clone(),
            })
        }
        _ => None,
    };
    let here = r.current().map(|s| s.id.clone());
    let status = match r.state {
        RunState::Running => "Running".to_owned(),
        RunState::WaitingForInput => format!(
            "Waiting for {}'s answer at step {}",
            r.runner,
            here.as_deref().unwrap_or("?")
        ),
        RunState::NeedsAccess => format!(
            "Stopped at step {}: {} holds no grant of {}; ask for access to go on",
            here.as_deref().unwrap_or("?"),
            r.runner,
            r.blocked.as_ref().map_or("?", |b| b.resource.as_str())
        ),
        RunState::WaitingForApproval => format!(
            "Waiting for the approval of request {}",
            r.blocked
                .as_ref()
                .and_then(|b| b.request.as_deref())
                .unwrap_or("?")
        ),
        RunState::ReadyToResume => format!(
            "Access granted: {} may resume at step {}",
            r.runner,
            here.as_deref().unwrap_or("?")
        ),
        RunState::Succeeded => "Succeeded".to_owned(),
        RunState::Failed => format!("Failed: {}", r.error.as_deref().unwrap_or("")),
        RunState::Cancelled => "Cancelled".to_owned(),
    };
    proto::RunView {
        id: r.id.clone(),
        runbook: r.runbook.clone(),
        version: r.version.clone(),
        runner: r.runner.clone(),
        state: r.state.as_str().to_owned(),
        current_step: if ended { None } else { here },
        steps,
        input,
        needs_access,
        error: r.error.clone(),
        status,
        created_at: ts(r.created_at),
        updated_at: ts(r.updated_at),
    }
}

/// The people who could decide a resource's first step for `runner`.
fn approvers(config: &config::Config, resource: &str, runner: &str) -> Vec<String> {
    let Some(def) = config.resources.get(resource) else {
        return vec![];
    };
    let Some(step) = def.workflow.steps.first() else {
        return vec![];
    };
    step_people(def, step, &config.directory, runner)
}

/// The people who could decide `step` of `def` if `caller` asked now: its reviewers' people,
/// without the caller unless the resource allows self-approval. The catalog and a run's
/// "who can approve" both read it here.
pub fn step_people(
    def: &domain::ResourceDef,
    step: &domain::StepDef,
    dir: &domain::Directory,
    caller: &str,
) -> Vec<String> {
    let people: BTreeSet<String> = step
        .reviewers
        .principals()
        .iter()
        .flat_map(|p| dir.people(p))
        .filter(|p| def.allow_self_approval || p != caller)
        .collect();
    people.into_iter().collect()
}
