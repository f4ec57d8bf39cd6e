//! Resolved resource definitions: what can be requested, for how long, with which fields, and
//! through which workflow. The configuration crate builds these; requests snapshot them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::principal::{Directory, Principal};
use crate::time::Span;

/// A policy reference (rule 28): a bundle path, resolved against the configuration file's
/// directory, and a rule path. Evaluating it is the policy crate's work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub bundle: String,
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<String>,
}

/// A step's reviewer constraint (rule 7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reviewers {
    OneOf(Vec<Principal>),
    AllOf(Vec<Principal>),
    Quorum { min: u32, of: Vec<Principal> },
}

impl Reviewers {
    pub fn principals(&self) -> &[Principal] {
        match self {
            Reviewers::OneOf(p) | Reviewers::AllOf(p) => p,
            Reviewers::Quorum { of, .. } => of,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDef {
    pub reviewers: Reviewers,
    #[serde(default)]
    pub skip_if: Vec<PolicyRef>,
    /// Queries whose principals join the static reviewer list (rule 30).
    #[serde(default)]
    pub reviewers_from: Vec<PolicyRef>,
    /// Reminds the step's reviewers this often while it waits (rule 33).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_every: Option<Span>,
    /// Who is told next, each this long after the step was entered (rule 33).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate: Vec<Escalation>,
    /// Whether the step may be decided from Slack; `false` keeps its decisions in the
    /// portal, where sign-in can demand stronger authentication.
    #[serde(default = "crate::resource::yes")]
    pub slack_decisions: bool,
}

pub(crate) fn yes() -> bool {
    true
}

/// One escalation of a waiting step: `after` the step was entered, `to` is told, and with
/// `add_reviewers` may decide the step too (rule 33).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub after: Span,
    pub to: Vec<Principal>,
    #[serde(default)]
    pub add_reviewers: bool,
}

/// A resource's break-glass (rule 34): access at once, without the workflow, for at most
/// `max_duration`, told at once to `notify`, and reviewed afterwards by `reviewers` within
/// `review_within`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassDef {
    pub max_duration: Span,
    /// Where the `break_glass` notification goes besides the router's rules: `CHANNEL` (every
    /// follow-up reviewer, on a channel that reaches people) or `CHANNEL:destination`.
    pub notify: Vec<String>,
    pub review_within: Span,
    pub reviewers: Vec<Principal>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Workflow {
    pub steps: Vec<StepDef>,
}

/// The type of a request field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Int,
    Bool,
    Enum(Vec<String>),
    Duration,
    User,
}

impl FieldType {
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int => "int",
            FieldType::Bool => "bool",
            FieldType::Enum(_) => "enum",
            FieldType::Duration => "duration",
            FieldType::User => "user",
        }
    }
}

/// A typed, validated field value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldValue {
    String(String),
    Int(i64),
    Bool(bool),
    Duration(Span),
    User(String),
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::String(s) | FieldValue::User(s) => f.write_str(s),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Duration(d) => write!(f, "{d}"),
        }
    }
}

/// A field value as a client sent it, before it is checked against the field's type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Text(String),
    Int(i64),
    Bool(bool),
    /// Anything else (a float, a list, an object, null), named for the error message.
    Other(&'static str),
}

impl From<&FieldValue> for Input {
    /// The input that validates back to the same value (to copy a request's fields).
    fn from(v: &FieldValue) -> Input {
        match v {
            FieldValue::String(s) | FieldValue::User(s) => Input::Text(s.clone()),
            FieldValue::Int(i) => Input::Int(*i),
            FieldValue::Bool(b) => Input::Bool(*b),
            FieldValue::Duration(d) => Input::Text(d.to_string()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDef {
    pub name: String,
    pub kind: FieldType,
    pub required: bool,
    pub default: Option<FieldValue>,
    /// Help text shown beside the field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Whether the choices come from `options_from` (the source itself lives in the
    /// configuration, since it may carry credentials).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic: bool,
}

impl FieldDef {
    /// Checks one value against this field's type.
    pub fn parse(&self, input: &Input, dir: &Directory) -> Result<FieldValue, String> {
        let name = &self.name;
        let expected = || format!("field {name:?} expects a {} value", self.kind.name());
        match (&self.kind, input) {
            (FieldType::String, Input::Text(s)) => {
                crate::limits::text(
                    &format!("field {name:?}"),
                    s,
                    crate::limits::MAX_FIELD_VALUE,
                )?;
                Ok(FieldValue::String(s.clone()))
            }
            (FieldType::Int, Input::Int(i)) => Ok(FieldValue::Int(*i)),
            (FieldType::Int, Input::Text(s)) => s
                .trim()
                .parse()
                .map(FieldValue::Int)
                .map_err(|_| expected()),
            (FieldType::Bool, Input::Bool(b)) => Ok(FieldValue::Bool(*b)),
            (FieldType::Bool, Input::Text(s)) => match s.as_str() {
                "true" => Ok(FieldValue::Bool(true)),
                "false" => Ok(FieldValue::Bool(false)),
                _ => Err(expected()),
            },
            (FieldType::Enum(allowed), Input::Text(s)) => {
                if allowed.contains(s) {
                    Ok(FieldValue::String(s.clone()))
                } else {
                    Err(format!(
                        "field {name:?} must be one of {}",
                        allowed.join(", ")
                    ))
                }
            }
            (FieldType::Duration, Input::Text(s)) => Span::parse(s)
                .map(FieldValue::Duration)
                .map_err(|e| format!("field {name:?}: {e}")),
            (FieldType::User, Input::Text(s)) => {
                if dir.user(s).is_some() {
                    Ok(FieldValue::User(s.clone()))
                } else {
                    Err(format!("field {name:?}: unknown user {s:?}"))
                }
            }
            _ => Err(expected()),
        }
    }
}

/// A resource as the engine sees it once the configuration is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceDef {
    pub name: String,
    pub description: String,
    /// `None` makes the resource approval-only: the decision is the product.
    pub connector: Option<String>,
    pub grant: BTreeMap<String, String>,
    pub max_duration: Span,
    /// A closed set of durations, sorted ascending; empty means any up to `max_duration`.
    pub durations: Vec<Span>,
    pub owners: Vec<Principal>,
    pub part_of: Option<String>,
    pub pending_ttl: Span,
    pub allow_self_approval: bool,
    pub fields: Vec<FieldDef>,
    pub workflow: Workflow,
    pub on_request: Option<PolicyRef>,
    pub policies: Vec<PolicyRef>,
    pub break_glass: Option<BreakGlassDef>,
    /// `kind = "action"` (issue 18): each request asks for one exact action, claimed once
    /// after approval; `None` for a resource that grants access.
    pub action: Option<ActionDef>,
}

/// What a resource of `kind = "action"` declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionDef {
    /// How long after approval the action may be claimed.
    pub claim_within: Span,
}

impl ResourceDef {
    /// The duration used when a requester names none: the shortest the resource allows, so
    /// that forgetting a flag never asks for more than necessary.
    pub fn default_duration(&self) -> Span {
        self.durations
            .first()
            .copied()
            .unwrap_or(self.max_duration.min(Span::from_secs(3600)))
    }

    /// Checks a duration against `max_duration` and the closed set (rule 14).
    pub fn check_duration(&self, d: Span) -> Result<(), String> {
        if d > self.max_duration {
            return Err(format!(
                "duration {d} is longer than the maximum {} for {}",
                self.max_duration, self.name
            ));
        }
        if !self.durations.is_empty() && !self.durations.contains(&d) {
            let set: Vec<String> = self.durations.iter().map(Span::to_string).collect();
            return Err(format!("duration {d} is not one of {}", set.join(", ")));
        }
        Ok(())
    }

    /// The people who own this resource (they may see its requests and revoke its grants).
    pub fn owner_people(&self, dir: &Directory) -> BTreeSet<String> {
        self.owners.iter().flat_map(|p| dir.people(p)).collect()
    }
}
