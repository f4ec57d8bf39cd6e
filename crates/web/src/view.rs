//! What the templates show: domain values turned into display strings, computed in Rust so
//! that templates stay loops and conditions.

use domain::{Grant, Request, Timestamp};

/// A moment shown both ways: relative to now, and exactly (UTC).
#[derive(Clone, Debug)]
pub struct When {
    pub exact: String,
    pub relative: String,
    pub iso: String,
}

impl When {
    pub fn new(t: Timestamp, now: Timestamp) -> When {
        let iso = api::convert::ts(t);
        let exact = iso.replacen('T', " ", 1).replace('Z', " UTC");
        When {
            exact,
            relative: relative(t.millis() - now.millis()),
            iso,
        }
    }
}

/// `in 5 min`, `3 h ago`, `just now`.
pub fn relative(delta_ms: i64) -> String {
    let secs = delta_ms.abs() / 1000;
    let amount = if secs < 45 {
        return "just now".into();
    } else if secs < 90 * 60 {
        format!("{} min", (secs + 30) / 60)
    } else if secs < 36 * 3600 {
        format!("{} h", (secs + 1800) / 3600)
    } else {
        format!("{} d", (secs + 43200) / 86400)
    };
    if delta_ms > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// The CSS class of a state badge.
pub fn badge(state: &str) -> &'static str {
    match state {
        "pending"
        | "scheduled"
        | "activating"
        | "running"
        | "waiting_for_input"
        | "waiting_for_approval"
        | "needs_access"
        | "ready_to_resume" => "badge wait",
        "approved" | "active" | "delivered" | "succeeded" => "badge ok",
        "denied" | "failed" => "badge bad",
        _ => "badge off",
    }
}

/// One row of a request list.
#[derive(Clone, Debug)]
pub struct RequestRow {
    pub id: String,
    pub resource: String,
    pub requester: String,
    pub reason: String,
    pub state: String,
    pub badge: &'static str,
    pub duration: String,
    pub created: When,
    pub pending_until: When,
    pub waiting_on: String,
}

impl RequestRow {
    pub fn new(r: &Request, now: Timestamp) -> RequestRow {
        let mut waiting: Vec<String> = r.eligible_reviewers().into_iter().collect();
        if waiting.len() > 3 {
            let more = waiting.len() - 3;
            waiting.truncate(3);
            waiting.push(format!("{more} more"));
        }
        RequestRow {
            id: r.id.clone(),
            resource: r.resource.clone(),
            requester: r.requester.clone(),
            reason: short(&r.reason, 120),
            state: r.state.as_str().to_owned(),
            badge: badge(r.state.as_str()),
            duration: r.duration.to_string(),
            created: When::new(r.created_at, now),
            pending_until: When::new(r.pending_until, now),
            waiting_on: waiting.join(", "),
        }
    }
}

/// One row of a grant list.
#[derive(Clone, Debug)]
pub struct GrantRow {
    pub id: String,
    pub request_id: String,
    pub subject: String,
    pub resource: String,
    pub workflow: String,
    pub state: String,
    pub badge: &'static str,
    pub duration: String,
    pub expires: Option<When>,
    pub active: bool,
}

impl GrantRow {
    pub fn new(g: &Grant, now: Timestamp) -> GrantRow {
        GrantRow {
            id: g.id.clone(),
            request_id: g.spec.request.clone(),
            subject: g.spec.subject.clone(),
            resource: g.spec.resource.clone(),
            workflow: g.spec.workflow.clone().unwrap_or_default(),
            state: g.state.as_str().to_owned(),
            badge: badge(g.state.as_str()),
            duration: g.spec.duration.to_string(),
            expires: g.expires_at.map(|t| When::new(t, now)),
            active: g.state == domain::GrantState::Active,
        }
    }
}

/// A choice in a `<select>`.
#[derive(Clone, Debug)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// The durations a reviewer may approve for (`engine::present::approve_spans`), the
/// requested one selected.
pub fn approve_durations(r: &Request) -> Vec<Choice> {
    engine::present::approve_spans(r)
        .into_iter()
        .map(|s| Choice {
            value: s.to_string(),
            label: human_span(s),
            selected: s == r.duration,
        })
        .collect()
}

pub use engine::present::human_span;

/// At most `n` characters, with an ellipsis when cut.
pub fn short(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(n).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::Span;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(10_000), "just now");
        assert_eq!(relative(5 * 60_000), "in 5 min");
        assert_eq!(relative(-3 * 3_600_000), "3 h ago");
        assert_eq!(relative(-3 * 86_400_000), "3 d ago");
    }

    #[test]
    fn spans_are_written_for_people() {
        assert_eq!(human_span(Span::from_secs(300)), "5 minutes");
        assert_eq!(human_span(Span::from_secs(3600)), "1 hour");
        assert_eq!(human_span(Span::from_secs(86400)), "24 hours");
        assert_eq!(human_span(Span::from_secs(2 * 86400)), "2 days");
    }
}
