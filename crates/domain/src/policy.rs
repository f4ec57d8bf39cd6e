//! Policies as the rules see them (PRODUCT.md §3 rules 2, 6, 13, 20 and 28–31).
//!
//! Evaluating Rego is the policy crate's work; this module defines what the engine asks of it
//! ([`PolicyEval`]), the input document every evaluation receives (rule 29, the one JSON shape
//! this crate owns because policies depend on it), how each use reads a result, and the trace
//! kept on a request so that `explain` can say why it went where it went (rule 31).
//!
//! Every reading fails closed: a result that cannot be read is an error, and an error never
//! skips a step, never approves, never adds a reviewer and never lets a deny policy pass.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::principal::{Directory, Principal};
use crate::request::{Constraint, Decision, Request};
use crate::resource::PolicyRef;
use crate::time::Timestamp;

/// Evaluates one policy reference against an input document.
pub trait PolicyEval {
    /// The query's value (`Value::Null` when it is undefined), or why there is none: a
    /// missing bundle, a runtime error, the time limit.
    fn eval(&self, policy: &PolicyRef, input: &Value) -> Evaluation;
}

/// The outcome of one evaluation and what it cost.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub result: Result<Value, String>,
    pub micros: u64,
}

/// An evaluator for configurations without bundles: every evaluation fails (closed).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPolicies;

impl PolicyEval for NoPolicies {
    fn eval(&self, policy: &PolicyRef, _input: &Value) -> Evaluation {
        Evaluation {
            result: Err(format!("bundle {} is not loaded", policy.bundle)),
            micros: 0,
        }
    }
}

/// What a policy was evaluated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A resource policy with `enforcement = "deny"` (rule 2).
    Deny,
    /// A resource policy with `enforcement = "warn"`: messages shown to reviewers.
    Warn,
    /// The resource's `on_request` hook (rule 2).
    OnRequest,
    /// One of a step's `skip_if` policies (rule 6).
    SkipIf,
    /// A step's dynamic reviewer query (rule 30).
    Reviewers,
    /// A deny policy evaluated again for an active grant (rule 20).
    Recheck,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Deny => "deny",
            Purpose::Warn => "warn",
            Purpose::OnRequest => "on_request",
            Purpose::SkipIf => "skip_if",
            Purpose::Reviewers => "reviewers",
            Purpose::Recheck => "recheck",
        }
    }
}

/// One evaluation that affected a request, as `explain` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub purpose: Purpose,
    /// The step it was evaluated for, counted from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    pub bundle: String,
    pub query: String,
    /// The query's value: `null` when undefined, and when the evaluation failed (`error`
    /// says why).
    #[serde(default)]
    pub result: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the engine made of it, in words: `skip`, `no skip`, `deny: …`, `approve`, ….
    pub verdict: String,
    pub micros: u64,
    pub at: Timestamp,
}

/// What a resource policy says (rule 2): its messages, possibly none.
pub fn messages(v: &Value, query: &str) -> Result<Vec<String>, String> {
    let one = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Object(o) => match o.get("msg").or_else(|| o.get("message")) {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(format!("expected a message string, got {v}")),
            },
            _ => Err(format!("expected a message string, got {v}")),
        }
    };
    match v {
        Value::Null | Value::Bool(false) => Ok(vec![]),
        Value::Bool(true) => Ok(vec![format!("{query} is true")]),
        Value::String(_) | Value::Object(_) => Ok(vec![one(v)?]),
        Value::Array(items) => items.iter().map(one).collect(),
        _ => Err(format!(
            "expected a set of messages, a message or a boolean, got {v}"
        )),
    }
}

/// What a `skip_if` policy says (rule 6): `Some(reason)` to skip.
pub fn skip(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Bool(true) => Ok(Some(String::new())),
        Value::Null | Value::Bool(false) => Ok(None),
        Value::Object(o) => match o.get("skip") {
            Some(Value::Bool(true)) => Ok(Some(
                o.get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            )),
            Some(Value::Bool(false)) | None => Ok(None),
            Some(other) => Err(format!("\"skip\" must be a boolean, got {other}")),
        },
        _ => Err(format!(
            "expected true or {{\"skip\": true, \"reason\": …}}, got {v}"
        )),
    }
}

/// What an `on_request` hook says (rule 2): a decision with its reason, or nothing.
pub fn decision(v: &Value) -> Result<Option<(Decision, String)>, String> {
    let Value::Object(o) = v else {
        return Ok(None);
    };
    let reason = o
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match o.get("decision") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(d)) if d == "approve" => Ok(Some((Decision::Approve, reason))),
        Some(Value::String(d)) if d == "deny" => Ok(Some((Decision::Deny, reason))),
        Some(other) => Err(format!(
            "\"decision\" must be \"approve\" or \"deny\", got {other}"
        )),
    }
}

/// What a dynamic reviewer query says (rule 30): principals as written.
pub fn principals(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(vec![]),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                _ => Err(format!("expected principals as strings, got {i}")),
            })
            .collect(),
        _ => Err(format!("expected a set of principals, got {v}")),
    }
}

/// The input document of every evaluation (rule 29). Keys may be added, never renamed; see
/// docs/policy.md for the schema.
pub fn input(
    req: &Request,
    dir: &Directory,
    step: Option<usize>,
    grant: Option<Value>,
    now: Timestamp,
) -> Value {
    let user = dir.user(&req.requester);
    let fields: BTreeMap<&str, Value> = req
        .fields
        .iter()
        .map(|(k, v)| {
            let v = match v {
                crate::FieldValue::Int(i) => json!(i),
                crate::FieldValue::Bool(b) => json!(b),
                other => json!(other.to_string()),
            };
            (k.as_str(), v)
        })
        .collect();
    let mut doc = json!({
        "request": {
            "id": req.id,
            "requester": {
                "id": req.requester,
                "email": req.requester,
                "groups": user.map(|u| u.groups.iter().collect::<Vec<_>>()).unwrap_or_default(),
                "attributes": user.map(|u| u.attributes.clone()).unwrap_or_default(),
            },
            "resource": {
                "name": req.resource,
                "part_of": req.part_of,
                "connector": req.connector,
                "grant": req.grant_params,
            },
            "reason": req.reason,
            "fields": fields,
            "duration": req.duration.to_string(),
            "duration_seconds": req.duration.secs(),
            "created_at": req.created_at.rfc3339(),
            "start_at": req.start_at.map(Timestamp::rfc3339),
            "extends": req.extends,
            "created_by": req.context.created_by,
            "purpose": req.context.purpose,
            "reference_url": req.context.reference_url,
            "correlation_id": req.context.correlation_id,
            "request_data": req.context.request_data,
            "action": req.action.as_ref().map(|a| serde_json::json!({
                "tool": a.tool,
                "arguments": a.arguments,
                "digest": a.digest,
            })),
        },
        "now": now.rfc3339(),
        "now_ns": i128::from(now.millis()) * 1_000_000,
    });
    if let Some(i) = step {
        let s = &req.steps[i];
        let (kind, min) = match s.constraint {
            Constraint::OneOf => ("one_of", None),
            Constraint::AllOf => ("all_of", None),
            Constraint::Quorum { min } => ("quorum", Some(min)),
        };
        doc["step"] = json!({
            "index": i + 1,
            "reviewers": {
                "kind": kind,
                "min": min,
                "principals": s.slots.iter().map(|sl| sl.principal.to_string()).collect::<Vec<_>>(),
                "people": s.candidates(),
            },
        });
    }
    if let Some(g) = grant {
        doc["grant"] = g;
    }
    doc
}

/// Resolves principals a dynamic reviewer query named: known users and groups, with the
/// ones the configuration does not know listed apart (they cannot sign in to review).
pub fn known_principals(names: &[String], dir: &Directory) -> (Vec<Principal>, Vec<String>) {
    let mut known = vec![];
    let mut unknown = vec![];
    for n in names {
        match Principal::parse(n) {
            Ok(p) if dir.knows(&p) => known.push(p),
            _ => unknown.push(n.clone()),
        }
    }
    (known, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_30_skip_if_reads_true_or_an_object_and_fails_closed_otherwise() {
        assert_eq!(skip(&json!(true)), Ok(Some(String::new())));
        assert_eq!(
            skip(&json!({"skip": true, "reason": "on call"})),
            Ok(Some("on call".into()))
        );
        assert_eq!(skip(&json!({"skip": false})), Ok(None));
        assert_eq!(skip(&Value::Null), Ok(None));
        assert!(skip(&json!("yes")).is_err());
        assert!(skip(&json!({"skip": "yes"})).is_err());
    }

    #[test]
    fn rule_30_on_request_decides_only_with_a_known_decision() {
        assert_eq!(
            decision(&json!({"decision": "approve", "reason": "emergency"})),
            Ok(Some((Decision::Approve, "emergency".into())))
        );
        assert_eq!(decision(&json!({"reason": "nothing"})), Ok(None));
        assert_eq!(decision(&json!(true)), Ok(None));
        assert!(decision(&json!({"decision": "maybe"})).is_err());
    }

    #[test]
    fn rule_30_deny_and_warn_results_are_message_sets() {
        assert_eq!(messages(&json!([]), "q"), Ok(vec![]));
        assert_eq!(
            messages(&json!(["a", {"msg": "b"}]), "q"),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            messages(&json!(true), "data.x"),
            Ok(vec!["data.x is true".into()])
        );
        assert!(messages(&json!(3), "q").is_err());
        assert!(messages(&json!([3]), "q").is_err());
    }
}
