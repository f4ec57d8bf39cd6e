//! Domain → wire conversions, written out explicitly so that the domain never serialises
//! itself onto the wire.

use domain::{FieldType, Input, Principal, ResourceDef, Reviewers, Timestamp};
pub use engine::present::{field_text, field_value, grant, portal_url, request, ts};
use proto::*;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

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
                    eligible: engine::present::step_people(r, s, dir, caller),
                }
            })
            .collect(),
        break_glass: r.break_glass.as_ref().map(|b| BreakGlassView {
            max_duration: b.max_duration.to_string(),
            review_within: b.review_within.to_string(),
            reviewers: b.reviewers.iter().map(Principal::to_string).collect(),
        }),
        kind: if r.action.is_some() {
            "action"
        } else {
            "access"
        }
        .to_owned(),
        claim_within: r.action.map(|a| a.claim_within.to_string()),
    }
}

fn attempts(d: &domain::Delivery) -> Vec<AttemptView> {
    d.attempts
        .iter()
        .map(|a| AttemptView {
            at: ts(a.at),
            status: a.status,
            error: a.error.clone(),
            ms: a.ms,
        })
        .collect()
}

pub fn notification(d: &domain::Delivery) -> NotificationView {
    let n = d.notice.as_ref();
    NotificationView {
        id: d.id.clone(),
        request_id: d.request.clone(),
        channel: n.map(|n| n.channel.clone()).unwrap_or_default(),
        event: n.map(|n| n.event.as_str().to_owned()).unwrap_or_default(),
        to: n.and_then(|n| n.to.clone()),
        people: n.map(|n| n.people.clone()).unwrap_or_default(),
        state: d.state.as_str().to_owned(),
        created_at: ts(d.created_at),
        next_attempt_at: d.next_at.map(ts),
        attempt_count: d.attempt_count,
        attempts: attempts(d),
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
        attempts: attempts(d),
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
