//! Runs of gated runbooks (issue 17, rule 37): the steps of a runbook as a run keeps them, and
//! the run's state machine.
//!
//! A run walks its runbook's steps in order. Each completed step's output is appended to
//! [`Run::done`] (the checkpoint) in the transaction that completes it, so that the position
//! of a run is `done.len()` and a step once recorded is never run again. At an action whose
//! resource the runner holds no covering grant for, the run stops in `needs_access`; the
//! runner asks for access (an ordinary request, linked to the run and the step); when access
//! is granted the run is `ready_to_resume`, and only the runner's `resume` continues it.
//!
//! Pure: the engine reads grants and runs programs, and hands the results to these
//! transitions, which return the audit events to append.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DomainError, conflict, invalid};
use crate::{Event, EventKind, Timestamp};

/// The most values a run may be started with.
pub const MAX_INPUTS: usize = 64;
/// The largest output an action may write, in bytes of JSON.
pub const MAX_OUTPUT: usize = 256 * 1024;
/// The deepest an action's output may nest (arrays and objects), so that a run that keeps it
/// always reads back.
pub const MAX_OUTPUT_DEPTH: usize = 64;
/// The largest value an input step takes, as compact JSON, in bytes.
pub const MAX_VALUE: usize = 4096;

/// One step of a runbook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunbookStep {
    pub id: String,
    #[serde(flatten)]
    pub kind: StepKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepKind {
    /// Runs `name` from the action store `store`, with `parameters` (any JSON, in which a
    /// string `${id}` stands for an earlier step's output).
    Action {
        store: String,
        name: String,
        parameters: Value,
        /// The resource whose grant the runner must hold (the store's, when the run
        /// started); `None`: ungated.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
    },
    /// Asks the runner for a value.
    Input {
        value_type: ValueType,
        prompt: String,
        /// A list, or `${id}`: an earlier step's output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        possible_values: Option<Value>,
    },
    /// Shows the runner a message.
    Message { prompt: String },
}

impl StepKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepKind::Action { .. } => "action",
            StepKind::Input { .. } => "input",
            StepKind::Message { .. } => "message",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Enum,
    String,
    Int,
    Bool,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Enum => "enum",
            ValueType::String => "string",
            ValueType::Int => "int",
            ValueType::Bool => "bool",
        }
    }
}

/// The step a `${id}` string refers to, if the string is one.
pub fn reference(v: &Value) -> Option<&str> {
    v.as_str()?
        .strip_prefix("${")?
        .strip_suffix('}')
        .filter(|id| !id.is_empty() && !id.contains(['{', '}']))
}

/// Every `${id}` reference in a value, at any depth.
pub fn references(v: &Value) -> Vec<&str> {
    let mut out = vec![];
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        if let Some(id) = reference(v) {
            out.push(id);
        }
        match v {
            Value::Array(a) => stack.extend(a),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    out
}

/// A runbook file's version: the SHA-256 of its text, in hex. A run keeps the version it
/// started with.
pub fn version_of(source: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a run is. The names are stable: they are stored and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    WaitingForInput,
    NeedsAccess,
    WaitingForApproval,
    ReadyToResume,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 8] = [
        RunState::Running,
        RunState::WaitingForInput,
        RunState::NeedsAccess,
        RunState::WaitingForApproval,
        RunState::ReadyToResume,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::WaitingForInput => "waiting_for_input",
            RunState::NeedsAccess => "needs_access",
            RunState::WaitingForApproval => "waiting_for_approval",
            RunState::ReadyToResume => "ready_to_resume",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

/// A completed step: its output, checkpointed with the state change that recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDone {
    pub step: String,
    pub output: Value,
    pub at: Timestamp,
    /// For an action: how many times its program was started (more than 1 only when a
    /// process died while it ran: actions run at least once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The action a run stopped at for lack of access, and the request that asks for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub step: String,
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// What a request carries when it asks for access on behalf of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLink {
    pub run: String,
    pub step: String,
}

/// One run of a runbook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub runbook: String,
    /// SHA-256 of the runbook's file as the run started: the version it keeps.
    pub version: String,
    pub runner: String,
    pub state: RunState,
    /// The runbook's steps as they were when the run started.
    pub steps: Vec<RunbookStep>,
    /// The completed steps, in order: the checkpoint. The next step is `steps[done.len()]`.
    pub done: Vec<StepDone>,
    /// Values given at the start for input steps, by step id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    /// How many times the current action's program has been started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Why the run failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a running run does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Every step is done.
    Finished,
    /// Show a message (completes at once).
    Message { step: String, prompt: String },
    /// Ask for a value, from the ones offered (if any).
    Input {
        step: String,
        value_type: ValueType,
        offered: Option<Vec<Value>>,
    },
    /// Run an action with these parameters.
    Action {
        step: String,
        store: String,
        name: String,
        parameters: Value,
        resource: Option<String>,
    },
}

impl Run {
    /// A new run at its first step. `inputs` may answer input steps ahead: each must name
    /// one.
    pub fn start(
        id: String,
        runbook: &str,
        version: String,
        runner: &str,
        steps: Vec<RunbookStep>,
        inputs: BTreeMap<String, Value>,
        now: Timestamp,
    ) -> Result<(Run, Vec<Event>), DomainError> {
        if inputs.len() > MAX_INPUTS {
            return Err(invalid(format!("at most {MAX_INPUTS} inputs")));
        }
        for (k, v) in &inputs {
            let Some(step) = steps.iter().find(|s| &s.id == k) else {
                return Err(invalid(format!(
                    "inputs.{k}: the runbook has no step {k:?}"
                )));
            };
            let StepKind::Input { value_type, .. } = &step.kind else {
                return Err(invalid(format!("inputs.{k}: step {k:?} is not an input")));
            };
            // Its offered values may come from a step not run yet: they are checked when
            // the run gets there. The type is checked now.
            coerce(*value_type, v).map_err(|e| invalid(format!("inputs.{k}: {e}")))?;
        }
        let run = Run {
            id,
            runbook: runbook.to_owned(),
            version,
            runner: runner.to_owned(),
            state: RunState::Running,
            steps,
            done: vec![],
            inputs,
            blocked: None,
            attempts: 0,
            error: None,
            created_at: now,
            updated_at: now,
        };
        let ev = run
            .event(EventKind::RunStarted, Some(runner))
            .with("runbook", runbook);
        Ok((run, vec![ev]))
    }

    /// An audit event about this run.
    pub fn event(&self, kind: EventKind, actor: Option<&str>) -> Event {
        Event {
            kind,
            request: None,
            grant: None,
            actor: actor.map(str::to_owned),
            detail: BTreeMap::new(),
        }
        .with("run", &self.id)
    }

    /// The step the run is at, if any is left.
    pub fn current(&self) -> Option<&RunbookStep> {
        self.steps.get(self.done.len())
    }

    /// An earlier step's output.
    pub fn output(&self, step: &str) -> Option<&Value> {
        self.done.iter().find(|d| d.step == step).map(|d| &d.output)
    }

    /// `v` with every `${id}` replaced by that step's output.
    fn resolve(&self, v: &Value) -> Result<Value, String> {
        if let Some(id) = reference(v) {
            return self
                .output(id)
                .cloned()
                .ok_or_else(|| format!("${{{id}}} has no output yet"));
        }
        Ok(match v {
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.resolve(x))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| Ok((k.clone(), self.resolve(x)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    /// What to do at the current step of a running run. `Err` is a runbook that cannot go on
    /// (a reference to an output of the wrong shape): the run should fail with it.
    pub fn next(&self) -> Result<Next, String> {
        let Some(step) = self.current() else {
            return Ok(Next::Finished);
        };
        let id = step.id.clone();
        Ok(match &step.kind {
            StepKind::Message { prompt } => Next::Message {
                step: id,
                prompt: prompt.clone(),
            },
            StepKind::Input {
                value_type,
                possible_values,
                ..
            } => {
                let offered = match possible_values {
                    None => None,
                    Some(v) => match self.resolve(v)? {
                        Value::Array(a) => Some(a),
                        _ => {
                            return Err(format!("step {id:?}: possible_values {v} is not a list"));
                        }
                    },
                };
                Next::Input {
                    step: id,
                    value_type: *value_type,
                    offered,
                }
            }
            StepKind::Action {
                store,
                name,
                parameters,
                resource,
            } => Next::Action {
                step: id,
                store: store.clone(),
                name: name.clone(),
                parameters: self.resolve(parameters)?,
                resource: resource.clone(),
            },
        })
    }

    fn must_be(&self, states: &[RunState], doing: &str) -> Result<(), DomainError> {
        if states.contains(&self.state) {
            return Ok(());
        }
        Err(conflict(format!(
            "run {} is {}: it cannot {doing}",
            self.id,
            self.state.as_str()
        )))
    }

    fn finish_if_done(&mut self, now: Timestamp, events: &mut Vec<Event>) {
        if self.current().is_none() && self.state == RunState::Running {
            self.state = RunState::Succeeded;
            events.push(self.event(EventKind::RunSucceeded, None));
        }
        self.updated_at = now;
    }

    /// Records the current step's output (checkpoint, rule 37) and moves on.
    pub fn complete(
        &mut self,
        output: Value,
        actor: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<Event>, DomainError> {
        self.must_be(&[RunState::Running, RunState::WaitingForInput], "go on")?;
        let step = self
            .current()
            .ok_or_else(|| conflict(format!("run {} has no step left", self.id)))?
            .id
            .clone();
        let attempts = std::mem::take(&mut self.attempts);
        self.done.push(StepDone {
            step: step.clone(),
            output,
            at: now,
            attempts,
        });
        self.state = RunState::Running;
        self.blocked = None;
        let mut events = vec![
            self.event(EventKind::RunStepCompleted, actor)
                .with("step", &step),
        ];
        self.finish_if_done(now, &mut events);
        Ok(events)
    }

    /// The current input step waits for the runner, who is told (`run_waiting_for_input`).
    pub fn wait_for_input(&mut self, now: Timestamp) -> Vec<Event> {
        self.state = RunState::WaitingForInput;
        self.updated_at = now;
        let step = self.current().map(|s| s.id.clone()).unwrap_or_default();
        vec![
            self.event(EventKind::RunWaitingForInput, None)
                .with("step", step),
        ]
    }

    /// Checks the runner's answer to the current input step against its type and the values
    /// it offers; returns the value as it is recorded.
    pub fn check_answer(&self, value: &Value) -> Result<Value, DomainError> {
        let Ok(Next::Input {
            step,
            value_type,
            offered,
        }) = self.next()
        else {
            return Err(conflict(format!("run {} is not at an input step", self.id)));
        };
        let v = coerce(value_type, value).map_err(|e| invalid(format!("step {step:?}: {e}")))?;
        let Some(offered) = offered else {
            return Ok(v);
        };
        match offered.iter().find(|o| same(o, &v)) {
            // An enum records the value as it was offered (its type kept for later
            // references); a typed input records its own type.
            Some(o) if value_type == ValueType::Enum => Ok(o.clone()),
            Some(_) => Ok(v),
            None => Err(invalid(format!(
                "step {step:?}: {v} is not one of the values offered"
            ))),
        }
    }

    /// The runner answers the current input step.
    pub fn answer(&mut self, value: &Value, now: Timestamp) -> Result<Vec<Event>, DomainError> {
        self.must_be(&[RunState::WaitingForInput], "take an input")?;
        let v = self.check_answer(value)?;
        let runner = self.runner.clone();
        self.complete(v, Some(&runner), now)
    }

    /// The current action needs a grant of `resource` that the runner does not hold.
    pub fn need_access(&mut self, resource: &str, now: Timestamp) -> Vec<Event> {
        let step = self.current().map(|s| s.id.clone()).unwrap_or_default();
        self.state = RunState::NeedsAccess;
        self.blocked = Some(Blocked {
            step: step.clone(),
            resource: resource.to_owned(),
            request: None,
        });
        self.updated_at = now;
        vec![
            self.event(EventKind::RunNeedsAccess, None)
                .with("step", step)
                .with("resource", resource),
        ]
    }

    /// What a request for access on behalf of this run must carry; a conflict unless the run
    /// needs access.
    pub fn access_link(&self) -> Result<(RunLink, String), DomainError> {
        self.must_be(&[RunState::NeedsAccess], "ask for access")?;
        let b = self
            .blocked
            .as_ref()
            .ok_or_else(|| conflict(format!("run {} is not stopped at an action", self.id)))?;
        Ok((
            RunLink {
                run: self.id.clone(),
                step: b.step.clone(),
            },
            b.resource.clone(),
        ))
    }

    /// The request that asks for the access was created.
    pub fn access_requested(&mut self, request: &str, now: Timestamp) -> Vec<Event> {
        if let Some(b) = &mut self.blocked {
            b.request = Some(request.to_owned());
        }
        self.state = RunState::WaitingForApproval;
        self.updated_at = now;
        let mut e = self.event(EventKind::RunAccessRequested, Some(&self.runner.clone()));
        e.request = Some(request.to_owned());
        vec![e]
    }

    /// Whether `link` is for the action this run is stopped at.
    /// `request` is the request that carries the link: once the run recorded which request
    /// it waits for, no other moves it.
    pub fn waits_on(&self, link: &RunLink, request: &str) -> bool {
        link.run == self.id
            && matches!(
                self.state,
                RunState::NeedsAccess | RunState::WaitingForApproval
            )
            && self.blocked.as_ref().is_some_and(|b| {
                b.step == link.step && b.request.as_deref().is_none_or(|r| r == request)
            })
    }

    /// Whether the run is ready to resume on the access `request` (for `link`) gave: what a
    /// grant of that request ending before the run used it takes back.
    pub fn ready_on(&self, link: &RunLink, request: &str) -> bool {
        link.run == self.id
            && self.state == RunState::ReadyToResume
            && self
                .blocked
                .as_ref()
                .is_some_and(|b| b.step == link.step && b.request.as_deref() == Some(request))
    }

    /// The access asked for is in effect: the runner may resume.
    pub fn access_granted(&mut self, request: &str, now: Timestamp) -> Vec<Event> {
        self.state = RunState::ReadyToResume;
        self.updated_at = now;
        let mut e = self.event(EventKind::RunReady, None);
        e.request = Some(request.to_owned());
        vec![e]
    }

    /// The access was refused: the run cannot complete (with the reviewer's comment).
    pub fn access_denied(
        &mut self,
        request: &str,
        comment: Option<&str>,
        now: Timestamp,
    ) -> Vec<Event> {
        let step = self
            .blocked
            .as_ref()
            .map(|b| b.step.clone())
            .unwrap_or_default();
        let mut why = format!(
            "the workflow could not complete for lack of permissions: access for step {step:?} was denied"
        );
        if let Some(c) = comment.filter(|c| !c.trim().is_empty()) {
            why.push_str(": ");
            why.push_str(c);
        }
        self.fail(why, Some(request), now)
    }

    /// The request ended without access (cancelled, expired, or its grant failed): the run
    /// needs access again.
    pub fn access_lapsed(&mut self, why: &str, now: Timestamp) -> Vec<Event> {
        self.state = RunState::NeedsAccess;
        if let Some(b) = &mut self.blocked {
            b.request = None;
        }
        self.error = Some(why.to_owned());
        self.updated_at = now;
        let step = self
            .blocked
            .as_ref()
            .map(|b| b.step.clone())
            .unwrap_or_default();
        let resource = self
            .blocked
            .as_ref()
            .map(|b| b.resource.clone())
            .unwrap_or_default();
        vec![
            self.event(EventKind::RunNeedsAccess, None)
                .with("step", step)
                .with("resource", resource)
                .with("reason", why),
        ]
    }

    /// The runner continues a run that was stopped at an action (rule 37: only by their
    /// choice). The action's grant is checked again when the run gets there.
    pub fn resume(&mut self, now: Timestamp) -> Result<Vec<Event>, DomainError> {
        self.must_be(&[RunState::ReadyToResume, RunState::NeedsAccess], "resume")?;
        self.state = RunState::Running;
        self.error = None;
        self.updated_at = now;
        let runner = self.runner.clone();
        Ok(vec![self.event(EventKind::RunResumed, Some(&runner))])
    }

    /// The run cannot go on.
    pub fn fail(&mut self, why: String, request: Option<&str>, now: Timestamp) -> Vec<Event> {
        self.state = RunState::Failed;
        self.error = Some(why.clone());
        self.updated_at = now;
        let step = self.current().map(|s| s.id.clone()).unwrap_or_default();
        let mut e = self
            .event(EventKind::RunFailed, None)
            .with("step", step)
            .with("error", why);
        e.request = request.map(str::to_owned);
        vec![e]
    }

    /// The runner (or an admin) ends the run.
    pub fn cancel(
        &mut self,
        by: &str,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<Vec<Event>, DomainError> {
        if self.state.is_terminal() {
            return Err(conflict(format!(
                "run {} is {} already",
                self.id,
                self.state.as_str()
            )));
        }
        self.state = RunState::Cancelled;
        self.error = reason.clone();
        self.updated_at = now;
        let mut e = self.event(EventKind::RunCancelled, Some(by));
        if let Some(r) = reason {
            e = e.with("reason", r);
        }
        Ok(vec![e])
    }

    /// The idempotency key an action program is given: the same for every attempt of one
    /// step of one run.
    pub fn idempotency_key(&self, step: &str) -> String {
        format!("{}/{step}", self.id)
    }
}

/// A value as an input of this type records it: an `int` or `bool` may come as text (a
/// form, a terminal).
fn coerce(t: ValueType, v: &Value) -> Result<Value, String> {
    let size = serde_json::to_string(v).map_or(usize::MAX, |s| s.len());
    if size > MAX_VALUE {
        return Err(format!("a value is at most {MAX_VALUE} bytes"));
    }
    match (t, v) {
        (ValueType::String, Value::String(_)) => Ok(v.clone()),
        (ValueType::Enum, Value::Array(_) | Value::Object(_)) => {
            Err("an enum value is a string, number or bool".into())
        }
        (ValueType::Enum, _) => Ok(v.clone()),
        (ValueType::Int, Value::Number(n)) if n.is_i64() => Ok(v.clone()),
        (ValueType::Int, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{s:?} is not a whole number")),
        (ValueType::Bool, Value::Bool(_)) => Ok(v.clone()),
        (ValueType::Bool, Value::String(s)) => match s.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("{s:?} is not true or false")),
        },
        (t, v) => Err(format!("{v} is not a value of type {}", t.as_str())),
    }
}

/// Whether an answer is the offered value: equal, or the same text either way (an offered
/// number chosen from a form arrives as text; an `int` input offered as text is answered as a
/// number).
fn same(offered: &Value, v: &Value) -> bool {
    offered == v
        || match (offered, v) {
            (Value::String(_), Value::String(_)) => false,
            (Value::String(s), o) | (o, Value::String(s)) => s.as_str() == o.to_string().as_str(),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps() -> Vec<RunbookStep> {
        serde_json::from_value(json!([
            {"id": "sources", "type": "action", "store": "news", "name": "get_all_sources",
             "parameters": {}, "resource": "news-read"},
            {"id": "source", "type": "input", "value_type": "enum", "prompt": "Which?",
             "possible_values": "${sources}"},
            {"id": "articles", "type": "action", "store": "news", "name": "get_articles",
             "parameters": "${source}", "resource": "news-read"},
            {"id": "done", "type": "message", "prompt": "workflow executed!"}
        ]))
        .unwrap()
    }

    fn run() -> Run {
        let t = Timestamp::from_millis(1_000);
        Run::start(
            "run1".into(),
            "news",
            "v".into(),
            "alice",
            steps(),
            BTreeMap::new(),
            t,
        )
        .unwrap()
        .0
    }

    #[test]
    fn rule_37_a_run_walks_its_steps_and_checkpoints_each_output() {
        let t = Timestamp::from_millis(2_000);
        let mut r = run();
        assert!(matches!(r.next(), Ok(Next::Action { ref step, .. }) if step == "sources"));
        r.complete(json!(["BBC", "CNN"]), None, t).unwrap();
        let Ok(Next::Input { offered, .. }) = r.next() else {
            panic!("an input step")
        };
        assert_eq!(offered, Some(vec![json!("BBC"), json!("CNN")]));
        let asked = r.wait_for_input(t);
        assert_eq!(asked[0].kind, EventKind::RunWaitingForInput);
        // Rule 37's input check: only an offered value is taken.
        assert!(matches!(
            r.answer(&json!("Fox"), t),
            Err(DomainError::Invalid(_))
        ));
        r.answer(&json!("CNN"), t).unwrap();
        let Ok(Next::Action { parameters, .. }) = r.next() else {
            panic!("an action step")
        };
        assert_eq!(parameters, json!("CNN"));
        r.complete(json!({"articles": []}), None, t).unwrap();
        let events = r.complete(json!("workflow executed!"), None, t).unwrap();
        assert_eq!(r.state, RunState::Succeeded);
        assert_eq!(events.last().map(|e| e.kind), Some(EventKind::RunSucceeded));
        assert_eq!(r.done.len(), 4);
        // A finished run takes nothing more.
        assert!(r.complete(json!(1), None, t).is_err());
    }

    #[test]
    fn rule_37_a_stopped_run_resumes_only_by_its_runners_choice() {
        let t = Timestamp::from_millis(2_000);
        let mut r = run();
        r.need_access("news-read", t);
        assert_eq!(r.state, RunState::NeedsAccess);
        let (link, resource) = r.access_link().unwrap();
        assert_eq!(
            (link.step.as_str(), resource.as_str()),
            ("sources", "news-read")
        );
        r.access_requested("req1", t);
        assert!(r.waits_on(&link, "req1"));
        assert!(!r.waits_on(&link, "req2"), "only the request it waits for");
        assert!(r.resume(t).is_err(), "not while the request is pending");
        r.access_granted("req1", t);
        assert_eq!(r.state, RunState::ReadyToResume);
        r.resume(t).unwrap();
        assert_eq!(r.state, RunState::Running);
        assert_eq!(r.done.len(), 0, "the stopped step is still to run");
    }

    #[test]
    fn a_denied_run_fails_with_the_reviewers_comment() {
        let t = Timestamp::from_millis(2_000);
        let mut r = run();
        r.need_access("news-read", t);
        r.access_requested("req1", t);
        r.access_denied("req1", Some("not during the freeze"), t);
        assert_eq!(r.state, RunState::Failed);
        let e = r.error.unwrap();
        assert!(
            e.contains("lack of permissions") && e.contains("not during the freeze"),
            "{e}"
        );
    }

    #[test]
    fn inputs_given_at_the_start_must_name_input_steps_of_the_right_type() {
        let t = Timestamp::from_millis(0);
        let bad = |inputs: Value| {
            let inputs = serde_json::from_value(inputs).unwrap();
            Run::start("r".into(), "n", "v".into(), "a", steps(), inputs, t).unwrap_err()
        };
        assert!(bad(json!({"nope": "x"})).to_string().contains("no step"));
        assert!(
            bad(json!({"articles": "x"}))
                .to_string()
                .contains("not an input")
        );
        assert!(bad(json!({"source": ["x"]})).to_string().contains("enum"));
    }

    #[test]
    fn an_enum_records_the_offered_value_with_its_type() {
        let t = Timestamp::from_millis(0);
        let steps: Vec<RunbookStep> = serde_json::from_value(json!([
            {"id": "n", "type": "input", "value_type": "enum", "prompt": "How many?",
             "possible_values": [1, 2, "three"]},
            {"id": "m", "type": "input", "value_type": "int", "prompt": "And?",
             "possible_values": ["4", "5"]}
        ]))
        .unwrap();
        let (mut r, _) =
            Run::start("r".into(), "b", "v".into(), "a", steps, BTreeMap::new(), t).unwrap();
        let _ = r.wait_for_input(t);
        // Chosen from a form, as text: recorded as the number offered.
        r.answer(&json!("2"), t).unwrap();
        let _ = r.wait_for_input(t);
        // An int input offered as text takes the number, and records a number.
        r.answer(&json!(5), t).unwrap();
        assert_eq!(r.output("n"), Some(&json!(2)));
        assert_eq!(r.output("m"), Some(&json!(5)));
    }

    #[test]
    fn int_and_bool_inputs_take_text() {
        assert_eq!(coerce(ValueType::Int, &json!(" 42")), Ok(json!(42)));
        assert!(coerce(ValueType::Int, &json!("4.2")).is_err());
        assert_eq!(coerce(ValueType::Bool, &json!("true")), Ok(json!(true)));
        assert!(coerce(ValueType::String, &json!(3)).is_err());
        assert!(same(&json!(3), &json!("3")));
        assert!(same(&json!("3"), &json!(3)));
        assert!(!same(&json!("3"), &json!("03")));
    }
}
