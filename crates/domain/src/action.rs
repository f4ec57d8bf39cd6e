//! Action approvals (issue 18): a request for one exact action, a tool and its arguments,
//! on a resource of `kind = "action"`. The request keeps the action as it was asked and its
//! digest, reviewers see both, and once approved the creator claims the action exactly once,
//! within the resource's `claim_within`. An approval of one action never covers another: no
//! grant is issued and rule 5 is not consulted.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::effect::{Changes, Event, EventKind};
use crate::error::DomainError;
use crate::request::{Request, RequestState};
use crate::time::{Span, Timestamp};

/// Longest accepted tool name, in characters.
pub const MAX_TOOL: usize = 128;
/// Largest accepted arguments, as compact JSON, in bytes.
pub const MAX_ARGUMENTS: usize = 16 * 1024;
/// Deepest accepted nesting of the arguments (arrays and objects).
pub const MAX_DEPTH: usize = 32;
/// `claim_within` when a resource names none.
pub const DEFAULT_CLAIM_WITHIN: Span = Span::from_secs(15 * 60);

/// What a creator asks to be approved: a tool and its arguments (any JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionInput {
    pub tool: String,
    pub arguments: Value,
}

/// The action of a request, as it was asked, with its digest and its claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub tool: String,
    pub arguments: Value,
    /// SHA-256, hex, of the canonical JSON of `{"arguments": …, "tool": …}`.
    pub digest: String,
    /// How long after approval the action may be claimed (snapshot of the resource's).
    pub claim_within: Span,
    /// When the creator claimed it; an action is claimed once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<Timestamp>,
}

impl Action {
    /// Checks what was asked against the bounds (a tool name of 1 to [`MAX_TOOL`] printable
    /// characters; arguments of at most [`MAX_ARGUMENTS`] bytes nested at most [`MAX_DEPTH`]
    /// deep) and keeps it with its digest.
    pub fn new(input: ActionInput, claim_within: Span) -> Result<Action, DomainError> {
        let ActionInput { tool, arguments } = input;
        if tool.trim().is_empty()
            || tool.chars().count() > MAX_TOOL
            || tool.chars().any(char::is_control)
        {
            return Err(DomainError::Invalid(format!(
                "action.tool must be 1 to {MAX_TOOL} characters without control characters"
            )));
        }
        if depth(&arguments) > MAX_DEPTH {
            return Err(DomainError::Invalid(format!(
                "action.arguments are nested more than {MAX_DEPTH} deep"
            )));
        }
        let size = arguments.to_string().len();
        if size > MAX_ARGUMENTS {
            return Err(DomainError::Invalid(format!(
                "action.arguments are {size} bytes; at most {MAX_ARGUMENTS} are accepted"
            )));
        }
        let digest = digest(&tool, &arguments);
        Ok(Action {
            tool,
            arguments,
            digest,
            claim_within,
            claimed_at: None,
        })
    }

    /// Until when an action approved at `approved_at` may be claimed.
    pub fn claim_until(&self, approved_at: Timestamp) -> Timestamp {
        approved_at.plus(self.claim_within)
    }
}

/// The digest of an action: SHA-256, in hex, of the canonical JSON of
/// `{"arguments": …, "tool": …}` (keys sorted at every level, no spaces).
pub fn digest(tool: &str, arguments: &Value) -> String {
    let doc = serde_json::json!({ "tool": tool, "arguments": arguments });
    let hash = Sha256::digest(canonical_json(&doc).as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// How deeply arrays and objects nest in `v` (a scalar is 0).
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(m) => Box::new(m.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// JSON with object keys sorted at every level and no spaces, so that two documents that
/// differ only in key order or spacing are written the same (rule 25's body hash, and an
/// action's digest).
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

impl Request {
    /// The creator claims the approved action (issue 18): once, within `claim_within` of the
    /// approval, and never once the request was cancelled, denied or expired. Who may claim
    /// (the creator only) is the engine's check.
    pub fn claim_action(&mut self, now: Timestamp) -> Result<(Action, Changes), DomainError> {
        let id = self.id.clone();
        let state = self.state;
        let approved_at = self.outcome.as_ref().map(|o| o.at);
        let Some(action) = self.action.as_mut() else {
            return Err(DomainError::Invalid(format!(
                "request {id} asks for no action"
            )));
        };
        let approved_at = match (state, approved_at) {
            (RequestState::Approved, Some(at)) => at,
            (RequestState::Pending, _) => {
                return Err(DomainError::Conflict(format!(
                    "request {id} is not approved yet"
                )));
            }
            (s, _) => {
                return Err(DomainError::Conflict(format!(
                    "request {id} is {}: its action cannot be claimed",
                    s.as_str()
                )));
            }
        };
        if let Some(at) = action.claimed_at {
            return Err(DomainError::Conflict(format!(
                "the action of request {id} was claimed already, at {}",
                at.rfc3339()
            )));
        }
        let until = action.claim_until(approved_at);
        if now > until {
            return Err(DomainError::Conflict(format!(
                "the action of request {id} could be claimed until {}; ask again",
                until.rfc3339()
            )));
        }
        action.claimed_at = Some(now);
        let claimed = action.clone();
        let mut ch = Changes::default();
        ch.event(
            Event::request(EventKind::ActionClaimed, &id, Some(self.creator()))
                .with("tool", &claimed.tool)
                .with("digest", &claimed.digest),
        );
        Ok((claimed, ch))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rule_38_the_digest_ignores_key_order_and_spacing_but_not_values() {
        let a = digest("deploy", &json!({ "env": "prod", "replicas": 3 }));
        let b = digest(
            "deploy",
            &serde_json::from_str("{ \"replicas\": 3,  \"env\": \"prod\" }").expect("JSON"),
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            digest("deploy", &json!({ "env": "prod", "replicas": 4 }))
        );
        assert_ne!(
            a,
            digest("deploy2", &json!({ "env": "prod", "replicas": 3 }))
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn arguments_are_bounded_in_size_and_depth() {
        let within = Span::from_secs(60);
        let mut deep = json!(1);
        for _ in 0..=MAX_DEPTH {
            deep = json!([deep]);
        }
        let err = Action::new(
            ActionInput {
                tool: "t".into(),
                arguments: deep,
            },
            within,
        );
        assert!(matches!(err, Err(DomainError::Invalid(m)) if m.contains("nested")));
        let big = json!({ "blob": "x".repeat(MAX_ARGUMENTS) });
        let err = Action::new(
            ActionInput {
                tool: "t".into(),
                arguments: big,
            },
            within,
        );
        assert!(matches!(err, Err(DomainError::Invalid(m)) if m.contains("bytes")));
        for tool in ["", " ", "a\u{1b}b"] {
            let err = Action::new(
                ActionInput {
                    tool: tool.into(),
                    arguments: json!({}),
                },
                within,
            );
            assert!(err.is_err(), "{tool:?}");
        }
    }
}
