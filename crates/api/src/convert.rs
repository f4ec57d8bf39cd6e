//! Domain → wire conversions, written out explicitly so that the domain never serialises
//! itself onto the wire.

use std::collections::BTreeMap;

use domain::{
    Decision, FieldType, FieldValue, Grant, GrantEnd, Input, Principal, Request, ResourceDef,
    Reviewers, Scope, Timestamp,
};
use proto::*;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

pub fn ts(t: Timestamp) -> String {
    engine::callback::rfc3339(t)
}

/// Parses an RFC 3339 time sent by a client.
pub fn parse_ts(text: &str) -> Option<Timestamp> {
    let t = time::OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .ok()
        .map(Timestamp::from_millis)
}

pub fn input(v: &Value) -> Input {
    match v {
        Value::String(s) => Input::Text(s.clone()),
        Value::Bool(b) => Input::Bool(*b),
        Value::Number(n) => n.as_i64().map(Input::Int).unwrap_or(Input::Other("number")),
        Value::Null => Input::Other("null"),
        Value::Array(_) => Input::Other("array"),
        Value::Object(_) => Input::Other("object"),
    }
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

fn field_value(v: &FieldValue) -> Value {
    match v {
        FieldValue::String(s) | FieldValue::User(s) => Value::String(s.clone()),
        FieldValue::Int(i) => Value::from(*i),
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Duration(d) => Value::String(d.to_string()),
    }
}

fn reviewers(r: &Reviewers) -> (String, Option<u32>) {
    match r {
        Reviewers::OneOf(_) => ("one_of".into(), None),
        Reviewers::AllOf(_) => ("all_of".into(), None),
        Reviewers::Quorum { min, .. } => ("quorum".into(), Some(*min)),
    }
}

pub fn resource(r: &ResourceDef, dir: &domain::Directory, caller: &str) -> ResourceView {
    ResourceView {
        name: r.name.clone(),
        description: r.description.clone(),
        approval_only: r.connector.is_none(),
        max_duration: r.max_duration.to_string(),
        default_duration: r.default_duration().to_string(),
        durations: r.durations.iter().map(ToString::to_string).collect(),
        part_of: r.part_of.clone(),
        pending_ttl: r.pending_ttl.to_string(),
        fields: r
            .fields
            .iter()
            .map(|f| FieldView {
                name: f.name.clone(),
                kind: f.kind.name().to_owned(),
                required: f.required,
                allowed_values: match &f.kind {
                    FieldType::Enum(v) => v.clone(),
                    _ => vec![],
                },
                default: f.default.as_ref().map(field_value),
                description: f.description.clone(),
                dynamic: f.dynamic,
            })
            .collect(),
        steps: r
            .workflow
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (constraint, min) = reviewers(&s.reviewers);
                let people: std::collections::BTreeSet<String> = s
                    .reviewers
                    .principals()
                    .iter()
                    .flat_map(|p| dir.people(p))
                    .filter(|p| r.allow_self_approval || p != caller)
                    .collect();
                StepDefView {
                    index: i + 1,
                    constraint,
                    min,
                    reviewers: s
                        .reviewers
                        .principals()
                        .iter()
                        .map(Principal::to_string)
                        .collect(),
                    eligible: people.into_iter().collect(),
                }
            })
            .collect(),
    }
}

/// The portal page of a request (rule 21's `portal_url`).
pub fn portal_url(public_url: &str, id: &str) -> String {
    format!("{}/requests/{id}", public_url.trim_end_matches('/'))
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
                let (constraint, min) = match s.constraint {
                    domain::request::Constraint::OneOf => ("one_of".to_owned(), None),
                    domain::request::Constraint::AllOf => ("all_of".to_owned(), None),
                    domain::request::Constraint::Quorum { min } => ("quorum".to_owned(), Some(min)),
                };
                StepView {
                    index: i + 1,
                    constraint,
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
    }
}

pub fn delivery(d: &domain::Delivery) -> DeliveryView {
    DeliveryView {
        id: d.id.clone(),
        request_id: d.request.clone(),
        url: engine::outbound::shown(&d.url),
        state: d.state.as_str().to_owned(),
        created_at: ts(d.created_at),
        next_attempt_at: d.next_at.map(ts),
        attempt_count: d.attempt_count,
        attempts: d
            .attempts
            .iter()
            .map(|a| AttemptView {
                at: ts(a.at),
                status: a.status,
                error: a.error.clone(),
                ms: a.ms,
            })
            .collect(),
    }
}

pub fn trace(t: &domain::Trace) -> TraceView {
    TraceView {
        purpose: t.purpose.as_str().to_owned(),
        step: t.step,
        bundle: t.bundle.clone(),
        query: t.query.clone(),
        result: t.error.is_none().then(|| t.result.clone()),
        error: t.error.clone(),
        verdict: t.verdict.clone(),
        duration_us: t.micros,
        at: ts(t.at),
    }
}

fn explain_steps(steps: &[engine::StepView]) -> Vec<ExplainStep> {
    steps
        .iter()
        .map(|s| ExplainStep {
            index: s.index,
            status: s.status.clone(),
            constraint: s.constraint.clone(),
            skipped_because: s.skipped_because.clone(),
            reviewers: s.reviewers.clone(),
            reviews: s.reviews.clone(),
            evaluations: s.evaluations.iter().map(trace).collect(),
        })
        .collect()
}

pub fn explanation(e: &engine::Explanation) -> ExplainView {
    ExplainView {
        request: e.request.clone(),
        resource: e.resource.clone(),
        requester: e.requester.clone(),
        state: e.state.clone(),
        decided_by: e.decided_by.clone(),
        outcome: e.outcome.clone(),
        warnings: e.warnings.clone(),
        policies: e.policies.iter().map(trace).collect(),
        steps: explain_steps(&e.steps),
        lines: e.lines.clone(),
    }
}

pub fn simulation(s: &engine::Simulation) -> SimulationView {
    let e = explanation(&s.explanation);
    SimulationView {
        resource: e.resource,
        requester: e.requester,
        outcome: e.state,
        decided_by: e.decided_by,
        reason: e.outcome,
        deny: s.deny.clone(),
        warnings: e.warnings,
        policies: e.policies,
        steps: e.steps,
        lines: e.lines,
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

pub fn event(e: &store::StoredEvent) -> AuditEventView {
    AuditEventView {
        seq: e.seq,
        at: ts(Timestamp::from_millis(e.at)),
        // The stored bytes as they are (the hash covers them); a body that is not JSON (only
        // a damaged database has one) is sent as a JSON string, whose hash will not match.
        event: serde_json::value::RawValue::from_string(e.body.clone()).unwrap_or_else(|_| {
            serde_json::value::to_raw_value(&e.body)
                .unwrap_or_else(|_| unreachable!("a string always serialises"))
        }),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    }
}
