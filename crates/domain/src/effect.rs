//! What a transition asks the world to do, and what it tells the audit log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::grant::GrantSpec;
use crate::time::Timestamp;

/// One audit log entry, before the engine gives it a sequence number and a hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub detail: BTreeMap<String, String>,
}

impl Event {
    /// An event about neither a request nor a grant (a person's Slack link).
    pub fn person(kind: EventKind, actor: &str) -> Event {
        Event {
            kind,
            request: None,
            grant: None,
            actor: Some(actor.to_owned()),
            detail: BTreeMap::new(),
        }
    }

    pub fn request(kind: EventKind, id: &str, actor: Option<&str>) -> Event {
        Event {
            kind,
            request: Some(id.to_owned()),
            grant: None,
            actor: actor.map(str::to_owned),
            detail: BTreeMap::new(),
        }
    }
    pub fn grant(kind: EventKind, id: &str, actor: Option<&str>) -> Event {
        Event {
            kind,
            request: None,
            grant: Some(id.to_owned()),
            actor: actor.map(str::to_owned),
            detail: BTreeMap::new(),
        }
    }
    pub fn with(mut self, key: &str, value: impl ToString) -> Event {
        self.detail.insert(key.to_owned(), value.to_string());
        self
    }
}

/// Every kind of audit event. The names are stable: they are stored and exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RequestCreated,
    RequestUpdated,
    RequestCoveredByGrant,
    StepEntered,
    StepSkipped,
    ReviewRecorded,
    StepApproved,
    RequestAssigned,
    CommentAdded,
    RequestApproved,
    RequestDenied,
    RequestCancelled,
    RequestExpired,
    GrantIssued,
    GrantActivated,
    GrantActivationFailed,
    GrantFailed,
    GrantRevokeStarted,
    GrantRevokeFailed,
    GrantRevoked,
    GrantExpired,
    GrantExtended,
    GrantExpiring,
    GrantDrift,
    GrantRepaired,
    GrantRepairFailed,
    CallbackDelivered,
    CallbackFailed,
    CallbackRedelivered,
    StepReminded,
    StepEscalated,
    NotificationResent,
    BreakGlassUsed,
    FollowUpAcknowledged,
    FollowUpFlagged,
    FollowUpOverdue,
    /// A Slack account was linked to a person (rule 35); `slack_user` in the detail.
    SlackLinked,
    /// A Slack account's link was removed (`/countersign unlink`).
    SlackUnlinked,
    /// The creator claimed an approved action (issue 18); `tool` and `digest` in the detail.
    ActionClaimed,
    /// A run of a runbook started (issue 17); `run` and `runbook` in the detail.
    RunStarted,
    /// A run's step completed and its output was checkpointed (rule 37); `run`, `step`.
    RunStepCompleted,
    /// A run stopped at an action whose resource its runner holds no grant for (rule 37).
    RunNeedsAccess,
    /// The runner asked for access on behalf of a run; the request is the event's.
    RunAccessRequested,
    /// A run waits for its runner's answer to an input step; `step` in the detail.
    RunWaitingForInput,
    /// The access a run waited for is in effect: its runner may resume.
    RunReady,
    /// The runner resumed a run.
    RunResumed,
    RunSucceeded,
    /// A run failed; `error` in the detail.
    RunFailed,
    RunCancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RequestCreated => "request_created",
            EventKind::RequestUpdated => "request_updated",
            EventKind::RequestCoveredByGrant => "request_covered_by_grant",
            EventKind::StepEntered => "step_entered",
            EventKind::StepSkipped => "step_skipped",
            EventKind::ReviewRecorded => "review_recorded",
            EventKind::StepApproved => "step_approved",
            EventKind::RequestAssigned => "request_assigned",
            EventKind::CommentAdded => "comment_added",
            EventKind::RequestApproved => "request_approved",
            EventKind::RequestDenied => "request_denied",
            EventKind::RequestCancelled => "request_cancelled",
            EventKind::RequestExpired => "request_expired",
            EventKind::GrantIssued => "grant_issued",
            EventKind::GrantActivated => "grant_activated",
            EventKind::GrantActivationFailed => "grant_activation_failed",
            EventKind::GrantFailed => "grant_failed",
            EventKind::GrantRevokeStarted => "grant_revoke_started",
            EventKind::GrantRevokeFailed => "grant_revoke_failed",
            EventKind::GrantRevoked => "grant_revoked",
            EventKind::GrantExpired => "grant_expired",
            EventKind::GrantExtended => "grant_extended",
            EventKind::GrantExpiring => "grant_expiring",
            EventKind::GrantDrift => "grant_drift",
            EventKind::GrantRepaired => "grant_repaired",
            EventKind::GrantRepairFailed => "grant_repair_failed",
            EventKind::CallbackDelivered => "callback_delivered",
            EventKind::CallbackFailed => "callback_failed",
            EventKind::CallbackRedelivered => "callback_redelivered",
            EventKind::StepReminded => "step_reminded",
            EventKind::StepEscalated => "step_escalated",
            EventKind::NotificationResent => "notification_resent",
            EventKind::BreakGlassUsed => "break_glass_used",
            EventKind::FollowUpAcknowledged => "follow_up_acknowledged",
            EventKind::FollowUpFlagged => "follow_up_flagged",
            EventKind::FollowUpOverdue => "follow_up_overdue",
            EventKind::SlackLinked => "slack_linked",
            EventKind::SlackUnlinked => "slack_unlinked",
            EventKind::ActionClaimed => "action_claimed",
            EventKind::RunStarted => "run_started",
            EventKind::RunStepCompleted => "run_step_completed",
            EventKind::RunNeedsAccess => "run_needs_access",
            EventKind::RunAccessRequested => "run_access_requested",
            EventKind::RunWaitingForInput => "run_waiting_for_input",
            EventKind::RunReady => "run_ready",
            EventKind::RunResumed => "run_resumed",
            EventKind::RunSucceeded => "run_succeeded",
            EventKind::RunFailed => "run_failed",
            EventKind::RunCancelled => "run_cancelled",
        }
    }
}

/// Durable work: a timer or a connector call, keyed by the id of the request or grant it is
/// about, so that scheduling the same work twice leaves one row (rule 17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// The request's pending TTL ran out (rule 3). Keyed by request id.
    RequestExpiry,
    /// The grant's expiry time came (rule 16). Keyed by grant id.
    GrantExpiry,
    /// Call the connector's grant (outbox, rule 17). Keyed by grant id.
    ConnectorGrant,
    /// Call the connector's revoke, retried until confirmed (rule 17). Keyed by grant id.
    ConnectorRevoke,
    /// A scheduled grant's start time came (rule 16). Keyed by grant id.
    GrantStart,
    /// Record that a grant expires soon (the pre-expiry notice). Keyed by grant id.
    GrantNotice,
    /// Make the target match a grant again after drift or a concurrent revoke: grant if the
    /// grant is live, revoke if it ended and nothing else holds the access. Keyed by grant id.
    Repair,
    /// The periodic reconciliation sweep. One row, keyed `sweep`.
    Reconcile,
    /// The periodic re-evaluation of deny policies for active grants (rule 20). One row,
    /// keyed `sweep`.
    PolicyCheck,
    /// Remind a waiting step's reviewers (rule 33). Keyed `<request id>/<step number>`.
    StepReminder,
    /// Escalate a waiting step (rule 33). Keyed `<request id>/<step number>`.
    StepEscalation,
    /// A break-glass follow-up review is due (rule 34). Keyed by request id.
    FollowUpDue,
    /// A Slack interaction stored before it was acknowledged (rule 35): held by the process
    /// acting on it, and replayed by another when that process dies first. Keyed by the
    /// interaction's key.
    SlackInteraction,
    /// Advance a running run of a runbook (issue 17): its next steps, and the action it is
    /// at, whose program runs under this job's claim. Keyed by run id.
    RunStep,
}

impl TimerKind {
    /// Every kind, in a fixed order.
    pub const ALL: [TimerKind; 14] = [
        TimerKind::RequestExpiry,
        TimerKind::GrantExpiry,
        TimerKind::ConnectorGrant,
        TimerKind::ConnectorRevoke,
        TimerKind::GrantStart,
        TimerKind::GrantNotice,
        TimerKind::Repair,
        TimerKind::Reconcile,
        TimerKind::PolicyCheck,
        TimerKind::StepReminder,
        TimerKind::StepEscalation,
        TimerKind::FollowUpDue,
        TimerKind::SlackInteraction,
        TimerKind::RunStep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::RequestExpiry => "request_expiry",
            TimerKind::GrantExpiry => "grant_expiry",
            TimerKind::ConnectorGrant => "connector_grant",
            TimerKind::ConnectorRevoke => "connector_revoke",
            TimerKind::GrantStart => "grant_start",
            TimerKind::GrantNotice => "grant_notice",
            TimerKind::Repair => "repair",
            TimerKind::Reconcile => "reconcile",
            TimerKind::PolicyCheck => "policy_check",
            TimerKind::StepReminder => "step_reminder",
            TimerKind::StepEscalation => "step_escalation",
            TimerKind::FollowUpDue => "follow_up_due",
            TimerKind::SlackInteraction => "slack_interaction",
            TimerKind::RunStep => "run_step",
        }
    }
    /// Whether the job calls a connector or another service (and so may take seconds), rather
    /// than being a timer that only changes state.
    pub fn calls_connector(self) -> bool {
        matches!(
            self,
            TimerKind::ConnectorGrant
                | TimerKind::ConnectorRevoke
                | TimerKind::Repair
                | TimerKind::Reconcile
                | TimerKind::PolicyCheck
                | TimerKind::SlackInteraction
                | TimerKind::RunStep
        )
    }
    pub fn parse(s: &str) -> Option<TimerKind> {
        TimerKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Something a transition asks the engine to carry out, in the same transaction as the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Write (or move) a durable job.
    Schedule {
        kind: TimerKind,
        key: String,
        at: Timestamp,
    },
    /// Remove a durable job that is no longer needed.
    Unschedule { kind: TimerKind, key: String },
    /// The request was approved: issue a grant.
    IssueGrant(GrantSpec),
    /// The request reached its outcome and has a callback: write its delivery, in this
    /// transaction (rule 22).
    Callback,
    /// A flagged break-glass (rule 34): revoke this grant if it is still live.
    RevokeGrant {
        grant: String,
        by: String,
        reason: String,
    },
}

/// The result of a transition: what to record and what to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub events: Vec<Event>,
    pub effects: Vec<Effect>,
}

impl Changes {
    pub fn event(&mut self, e: Event) {
        self.events.push(e);
    }
    pub fn effect(&mut self, e: Effect) {
        self.effects.push(e);
    }
    pub fn extend(&mut self, other: Changes) {
        self.events.extend(other.events);
        self.effects.extend(other.effects);
    }
}
