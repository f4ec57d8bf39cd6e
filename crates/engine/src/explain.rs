//! Rule 31: why a request went where it went (`explain`), and what would happen to a request
//! that is not made (`simulate`).

use domain::request::Constraint;
use domain::{
    Actor, Decision, DomainError, NewRequest, Purpose, Request, RequestState, StepStatus, Trace,
    policy,
};

use crate::{CreateRequest, Engine, EngineError, new_id};

/// One step as explain and simulate show it.
#[derive(Clone, Debug)]
pub struct StepView {
    /// Counted from 1.
    pub index: usize,
    /// `waiting`, `active`, `approved`, `denied`, `skipped`; a simulation says `would_skip`
    /// or `would_wait` for steps not reached yet.
    pub status: String,
    /// `one_of`, `all_of` or `quorum of N`.
    pub constraint: String,
    pub skipped_because: Option<String>,
    /// Who may decide it (the requester excluded, rule 9), static and dynamic reviewers.
    pub reviewers: Vec<String>,
    /// Decisions taken on it: `bob@example.com approve`.
    pub reviews: Vec<String>,
    /// The policy evaluations made for it: `skip_if` and dynamic reviewers.
    pub evaluations: Vec<Trace>,
}

/// The decision trace of a request (`GET /v1/requests/{id}/explain`), or of one that was
/// only simulated.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub request: String,
    pub resource: String,
    pub requester: String,
    pub state: String,
    /// A person, or `policy <query>`.
    pub decided_by: Option<String>,
    /// The outcome's comment: a reviewer's, or a policy's reason.
    pub outcome: Option<String>,
    pub warnings: Vec<String>,
    /// Evaluations of the resource's deny and warn policies and of `on_request`.
    pub policies: Vec<Trace>,
    pub steps: Vec<StepView>,
    /// The same, in sentences.
    pub lines: Vec<String>,
}

/// What would happen to a request (`POST /v1/simulate`). Nothing is stored.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// The explanation of the request as it would be created; its `state` is `denied`,
    /// `approved` or `pending` (it would wait for reviewers).
    pub explanation: Explanation,
    /// Messages of deny policies that would deny it (`policy error: …` for one that fails).
    pub deny: Vec<String>,
}

fn constraint(c: Constraint) -> String {
    match c {
        Constraint::OneOf => "one_of".into(),
        Constraint::AllOf => "all_of".into(),
        Constraint::Quorum { min } => format!("quorum of {min}"),
    }
}

fn decided_by(req: &Request) -> Option<String> {
    let o = req.outcome.as_ref()?;
    match (&o.by, &o.policy) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(q)) => Some(format!("policy {q}")),
        (None, None) => None,
    }
}

fn trace_line(t: &Trace) -> String {
    let what = match t.purpose {
        Purpose::Deny => "deny policy",
        Purpose::Warn => "warn policy",
        Purpose::OnRequest => "on_request",
        Purpose::SkipIf => "skip_if",
        Purpose::Reviewers => "reviewers from",
        Purpose::Recheck => "re-evaluation of",
    };
    format!("{what} {}: {}", t.query, t.verdict)
}

/// Steps and sentences, shared by explain and simulate. `previews` holds, for a simulation,
/// the reasons each step not reached yet would be skipped.
fn describe(
    req: &Request,
    previews: Option<&[Option<Vec<String>>]>,
) -> (Vec<StepView>, Vec<String>) {
    let mut lines: Vec<String> = req
        .trace
        .iter()
        .filter(|t| t.step.is_none())
        .map(trace_line)
        .collect();
    let mut steps = vec![];
    for (i, s) in req.steps.iter().enumerate() {
        let evaluations: Vec<Trace> = req
            .trace
            .iter()
            .filter(|t| t.step == Some(i + 1))
            .cloned()
            .collect();
        for t in &evaluations {
            lines.push(format!("step {}: {}", i + 1, trace_line(t)));
        }
        let reviewers: Vec<String> = req.step_reviewers(i).into_iter().collect();
        let preview = previews.and_then(|p| p[i].clone());
        let mut st = s.status.as_str().to_owned();
        let mut skipped_because = s.skipped_because.clone();
        let who = if reviewers.is_empty() {
            "nobody".to_owned()
        } else {
            reviewers.join(", ")
        };
        let reviews: Vec<String> = s
            .reviews
            .iter()
            .map(|r| {
                let d = match r.decision {
                    Decision::Approve => "approve",
                    Decision::Deny => "deny",
                };
                format!("{} {d}", r.by)
            })
            .collect();
        let c = constraint(s.constraint);
        let line = match s.status {
            StepStatus::Skipped
                if req.state == RequestState::Approved && s.skipped_because.is_none() =>
            {
                format!(
                    "step {}: not needed (the request was answered without it)",
                    i + 1
                )
            }
            StepStatus::Skipped => format!(
                "step {}: skipped ({})",
                i + 1,
                s.skipped_because.as_deref().unwrap_or("policy")
            ),
            StepStatus::Active => format!("step {}: routed to {c} {who}", i + 1),
            StepStatus::Approved => format!("step {}: approved ({})", i + 1, reviews.join(", ")),
            StepStatus::Denied => format!("step {}: denied ({})", i + 1, reviews.join(", ")),
            StepStatus::Waiting if previews.is_some() && req.state == RequestState::Pending => {
                match &preview {
                    Some(r) => {
                        st = "would_skip".into();
                        skipped_because = Some(r.join("; "));
                        format!("step {}: would be skipped ({})", i + 1, r.join("; "))
                    }
                    None => {
                        st = "would_wait".into();
                        format!("step {}: would go to {c} {who}", i + 1)
                    }
                }
            }
            StepStatus::Waiting => format!("step {}: not reached", i + 1),
        };
        lines.push(line);
        steps.push(StepView {
            index: i + 1,
            status: st,
            constraint: c,
            skipped_because,
            reviewers,
            reviews,
            evaluations,
        });
    }
    let end = match (&req.state, decided_by(req)) {
        (RequestState::Pending, _) => "pending: waiting for reviewers".to_owned(),
        (s, Some(by)) => format!(
            "{} by {by}{}",
            s.as_str(),
            req.outcome
                .as_ref()
                .and_then(|o| o.comment.as_deref())
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ),
        (s, None) => format!(
            "{}{}",
            s.as_str(),
            req.outcome
                .as_ref()
                .and_then(|o| o.comment.as_deref())
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ),
    };
    lines.push(end);
    (steps, lines)
}

/// The explanation of a request. `previews` holds, for a simulation, the reasons each step
/// not reached yet would be skipped.
fn explain(req: &Request, previews: Option<&[Option<Vec<String>>]>) -> Explanation {
    let (steps, lines) = describe(req, previews);
    Explanation {
        request: req.id.clone(),
        resource: req.resource.clone(),
        requester: req.requester.clone(),
        state: req.state.as_str().to_owned(),
        decided_by: decided_by(req),
        outcome: req.outcome.as_ref().and_then(|o| o.comment.clone()),
        warnings: req.warnings.clone(),
        policies: req
            .trace
            .iter()
            .filter(|t| t.step.is_none())
            .cloned()
            .collect(),
        steps,
        lines,
    }
}

impl Engine {
    /// Rule 31: the decision trace of a request the actor may see.
    pub async fn explain(&self, actor: &Actor, id: &str) -> Result<Explanation, EngineError> {
        Ok(explain(&self.request(actor, id).await?, None))
    }

    /// The explanation of a request the caller has already loaded (and may see).
    pub fn explain_loaded(req: &Request) -> Explanation {
        explain(req, None)
    }

    /// What would happen if `requester` (the actor unless an admin names someone) asked for
    /// this: policies, auto-decision, each step skipped or its reviewers. Nothing is stored.
    pub async fn simulate(
        &self,
        actor: &Actor,
        requester: Option<String>,
        input: CreateRequest,
    ) -> Result<Simulation, EngineError> {
        let requester = requester.unwrap_or_else(|| actor.id.clone());
        if requester != actor.id && !actor.admin {
            return Err(DomainError::Forbidden(
                "only admins may simulate a request for someone else".into(),
            )
            .into());
        }
        let live = self.live();
        let (config, policies) = (live.config, live.policies);
        let Some(res) = config.resources.get(&input.resource) else {
            let msg = format!("unknown resource {:?}", input.resource);
            return Err(DomainError::Invalid(msg).into());
        };
        if config.directory.user(&requester).is_none() {
            return Err(
                DomainError::Invalid(format!("{requester} is not a configured user")).into(),
            );
        }
        let now = self.now();
        // Read in a transaction, where the store answers it (nothing is written).
        let (who, name, part_of) = (requester.clone(), res.name.clone(), res.part_of.clone());
        let is_action = res.action.is_some();
        let covering = self
            .write(move |tx| {
                Box::pin(async move {
                    // Issue 18: an approved action covers no other (rule 5 does not apply).
                    if is_action {
                        return Ok(None);
                    }
                    Ok(tx
                        .active_grant_covering(&who, &name, part_of.as_deref(), now)
                        .await?)
                })
            })
            .await?;
        let new = NewRequest {
            id: new_id(now),
            requester: requester.clone(),
            reason: if input.reason.trim().is_empty() {
                "simulation".into()
            } else {
                input.reason
            },
            duration: input.duration,
            fields: input.fields,
            start_at: input.start_at,
            extends: None,
            context: input.context,
            action: input.action,
            run: None,
        };
        let (mut req, _changes) = Request::create(
            new,
            res,
            &config.directory,
            policies.as_ref(),
            now,
            covering.as_ref().map(|g| g.id.as_str()),
        )?;
        let previews = req.preview_skips(&config.directory, policies.as_ref(), now);
        let deny = req
            .trace
            .iter()
            .filter(|t| t.purpose == Purpose::Deny)
            .flat_map(|t| match &t.error {
                Some(e) => vec![format!("policy error: {e}")],
                None => policy::messages(&t.result, &t.query).unwrap_or_default(),
            })
            .collect();
        Ok(Simulation {
            explanation: explain(&req, Some(&previews)),
            deny,
        })
    }
}
