//! Runs of gated runbooks (issue 17, rule 37).
//!
//! A run advances on the worker, as a durable job (`TimerKind::RunStep`, keyed by run id)
//! that any replica may take: [`advance`] walks the steps that need nothing (messages, inputs
//! given at the start), stops at an input step or at an action whose resource the runner
//! holds no covering grant for, and otherwise claims the job and runs the action's program.
//! The program's output is recorded only by the holder of that claim, in the transaction that
//! moves the run on (the checkpoint): a completed step is never run again. A process that
//! dies while an action runs loses its claim, and another worker runs the action again with
//! the same `COUNTERSIGN_IDEMPOTENCY_KEY` (at least once).
//!
//! The access a stopped run asks for is an ordinary request, linked to the run and the step
//! (`Request::run`). [`follow`] runs at the end of every write job: when the request's grant
//! is in effect the run becomes `ready_to_resume`, when it is denied the run fails, when it
//! is cancelled or expires the run needs access again; each is an audit event, which the
//! notification router tells the runner of.

use std::collections::BTreeMap;
use std::sync::Arc;

use domain::run::{MAX_OUTPUT, MAX_OUTPUT_DEPTH, Next, version_of};
use domain::{Actor, DomainError, Event, EventKind, Run, RunState, Span, TimerKind, Timestamp};
use serde_json::Value;
use store::{RunFilter, Tx};

use crate::program::{self, Program};
use crate::worker::LEASE;
use crate::{CreateRequest, Created, Engine, EngineError, Page, Position, new_id};

/// The most steps one pass of the worker walks before it lets other work in.
const MAX_STEPS_PER_PASS: usize = 64;

/// The most runs a list returns.
pub const MAX_RUN_PAGE: u32 = 200;

fn not_found(id: &str) -> EngineError {
    EngineError::NotFound(format!("run {id}"))
}

async fn append_all(tx: &mut dyn Tx, events: Vec<Event>, at: Timestamp) -> Result<(), EngineError> {
    for e in events {
        tx.append(&e, at).await?;
    }
    Ok(())
}

impl Engine {
    /// Starts a run of `runbook` for the caller: the run keeps the runbook's steps as they
    /// are now (its version), and the worker takes it from its first step.
    pub async fn start_run(
        &self,
        actor: &Actor,
        runbook: &str,
        inputs: BTreeMap<String, Value>,
    ) -> Result<Run, EngineError> {
        if actor.app {
            return Err(DomainError::Forbidden(
                "a run is started by a person: its actions run with that person's grants".into(),
            )
            .into());
        }
        let config = self.config();
        let book = config
            .runbooks
            .get(runbook)
            .ok_or_else(|| DomainError::Invalid(format!("unknown runbook {runbook:?}")))?;
        let now = self.now();
        let (run, events) = Run::start(
            new_id(now),
            &book.name,
            version_of(&book.source),
            &actor.id,
            book.steps.clone(),
            inputs,
            now,
        )?;
        self.write(move |tx| {
            Box::pin(async move {
                append_all(tx, events, now).await?;
                tx.put_run(&run).await?;
                tx.schedule(TimerKind::RunStep, &run.id, now).await?;
                tx.signal_due();
                Ok(run)
            })
        })
        .await
    }

    /// A run, if the caller may see it: its runner, or an admin.
    pub async fn run(&self, actor: &Actor, id: &str) -> Result<Run, EngineError> {
        self.store
            .run(id)
            .await?
            .filter(|r| r.runner == actor.id || actor.admin)
            .ok_or_else(|| not_found(id))
    }

    /// A page of runs, newest first: the caller's own, or everyone's for an admin who asks
    /// for `all`.
    pub async fn list_runs(
        &self,
        actor: &Actor,
        all: bool,
        state: Option<RunState>,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Page<Run>, EngineError> {
        let limit = limit.clamp(1, MAX_RUN_PAGE);
        let f = RunFilter {
            runner: (!(all && actor.admin)).then(|| actor.id.clone()),
            state,
            after: after.map(|p| (p.created_at, p.id)),
            limit: limit + 1,
        };
        let rows = self.store.list_runs(&f).await?;
        Ok(Page::of(rows, limit, |r| Position {
            created_at: r.created_at,
            id: r.id.clone(),
        }))
    }

    /// Changes a run the caller is the runner of (anyone else gets 404, as if it did not
    /// exist).
    async fn change_run<F>(&self, actor: &Actor, id: &str, f: F) -> Result<Run, EngineError>
    where
        F: FnOnce(&mut Run, Timestamp) -> Result<Vec<Event>, DomainError> + Send + 'static,
    {
        let now = self.now();
        let (me, id) = (actor.id.clone(), id.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                let mut run = tx
                    .run(&id)
                    .await?
                    .filter(|r| r.runner == me)
                    .ok_or_else(|| not_found(&id))?;
                let events = f(&mut run, now)?;
                append_all(tx, events, now).await?;
                tx.put_run(&run).await?;
                if run.state == RunState::Running {
                    tx.schedule(TimerKind::RunStep, &run.id, now).await?;
                    tx.signal_due();
                } else {
                    tx.unschedule(TimerKind::RunStep, &run.id, now).await?;
                }
                Ok(run)
            })
        })
        .await
    }

    /// The runner answers the input step the run waits at (422 for a value it does not
    /// take). With `step`, only if the run waits at that step (409 otherwise): an answer
    /// from a page or a message shown earlier never answers a later step.
    pub async fn answer_run(
        &self,
        actor: &Actor,
        id: &str,
        step: Option<String>,
        value: Value,
    ) -> Result<Run, EngineError> {
        self.change_run(actor, id, move |run, now| {
            if let Some(step) = &step
                && run.current().map(|s| &s.id) != Some(step)
            {
                return Err(DomainError::Conflict(format!(
                    "run {} does not wait for step {step:?}",
                    run.id
                )));
            }
            run.answer(&value, now)
        })
        .await
    }

    /// The runner resumes a run stopped at an action (rule 37: only by their choice).
    pub async fn resume_run(&self, actor: &Actor, id: &str) -> Result<Run, EngineError> {
        self.change_run(actor, id, |run, now| run.resume(now)).await
    }

    /// The runner, or an admin, cancels a run. The access request the run waits on, if it is
    /// still pending, is withdrawn in the same transaction, so that nobody is asked to review
    /// it and no grant comes of it.
    pub async fn cancel_run(
        &self,
        actor: &Actor,
        id: &str,
        reason: Option<String>,
    ) -> Result<Run, EngineError> {
        if let Some(r) = &reason
            && r.chars().count() > domain::limits::MAX_TEXT
        {
            let max = domain::limits::MAX_TEXT;
            return Err(DomainError::Invalid(format!("reason: at most {max} characters")).into());
        }
        let now = self.now();
        let notice = self.config().server.expiry_notice;
        let (actor, id) = (actor.clone(), id.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                let mut run = tx
                    .run(&id)
                    .await?
                    .filter(|r| r.runner == actor.id || actor.admin)
                    .ok_or_else(|| not_found(&id))?;
                let events = run.cancel(&actor.id, reason, now)?;
                append_all(tx, events, now).await?;
                tx.put_run(&run).await?;
                tx.unschedule(TimerKind::RunStep, &run.id, now).await?;
                let pending = match run.blocked.as_ref().and_then(|b| b.request.as_deref()) {
                    Some(r) => tx
                        .request(r)
                        .await?
                        .filter(|r| r.state == domain::RequestState::Pending),
                    None => None,
                };
                if let Some(mut req) = pending {
                    let why = format!("run {} was cancelled", run.id);
                    // The runner is its requester; an admin gives the reason above.
                    if let Ok(ch) = req.cancel(&actor, Some(why), now) {
                        crate::save_request(tx, &mut req, ch, now, notice).await?;
                    }
                }
                Ok(run)
            })
        })
        .await
    }

    /// The runner asks for the access the run stopped for: an ordinary request for the
    /// action's resource, through its workflow, linked to the run and the step. The run
    /// waits for its approval.
    pub async fn request_run_access(
        &self,
        actor: &Actor,
        id: &str,
        reason: String,
        duration: Option<Span>,
    ) -> Result<(Run, Created), EngineError> {
        let run = self
            .store
            .run(id)
            .await?
            .filter(|r| r.runner == actor.id)
            .ok_or_else(|| not_found(id))?;
        let (link, resource) = run.access_link()?;
        let step = link.step.clone();
        let created = self
            .create_request(
                actor,
                CreateRequest {
                    resource,
                    reason,
                    duration,
                    context: domain::Context {
                        purpose: Some(format!(
                            "Runbook `{}`, run `{}`: step `{step}` needs this access.",
                            run.runbook, run.id
                        )),
                        ..Default::default()
                    },
                    run: Some(link),
                    ..Default::default()
                },
            )
            .await?;
        let run = self.run(actor, id).await?;
        Ok((run, created))
    }
}

/// Called inside the transaction that creates a request linked to a run: the run now waits
/// for that request. Refused (nothing is created) unless the run still needs that access.
pub(crate) async fn link_request(
    tx: &mut dyn Tx,
    request: &domain::Request,
    now: Timestamp,
) -> Result<(), EngineError> {
    let Some(link) = &request.run else {
        return Ok(());
    };
    let mut run = tx
        .run(&link.run)
        .await?
        .filter(|r| r.runner == request.requester)
        .ok_or_else(|| not_found(&link.run))?;
    let (want, _) = run.access_link()?;
    if want != *link {
        return Err(DomainError::Conflict(format!(
            "run {} is not stopped at step {:?}",
            run.id, link.step
        ))
        .into());
    }
    let events = run.access_requested(&request.id, now);
    append_all(tx, events, now).await?;
    tx.put_run(&run).await?;
    Ok(())
}

/// Moves the runs whose access requests this job decided (see the module's docs). Runs at the
/// end of every write job, on the events it appended; the events it appends itself are
/// notified with them (rule 32).
pub(crate) async fn follow(
    tx: &mut dyn Tx,
    appended: &[(i64, Timestamp, Event)],
) -> Result<(), EngineError> {
    for (_, at, event) in appended {
        let at = *at;
        let kind = event.kind;
        if !matches!(
            kind,
            EventKind::RequestApproved
                | EventKind::RequestCoveredByGrant
                | EventKind::GrantActivated
                | EventKind::RequestDenied
                | EventKind::RequestCancelled
                | EventKind::RequestExpired
                | EventKind::GrantFailed
                | EventKind::GrantRevoked
                | EventKind::GrantExpired
        ) {
            continue;
        }
        let request_id = match (&event.request, &event.grant) {
            (Some(r), _) => r.clone(),
            // An ending grant that serves no run is passed over without reading its request
            // (a burst of expiries reads none). An activation's events, one per grant, read
            // it whatever the grant says: a grant issued before grants carried their run
            // (`GrantSpec::run`) may still be activating for one.
            (None, Some(g)) => match tx.grant(g).await? {
                Some(g)
                    if g.spec.run.is_some()
                        || matches!(kind, EventKind::GrantActivated | EventKind::GrantFailed) =>
                {
                    g.spec.request.clone()
                }
                _ => continue,
            },
            (None, None) => continue,
        };
        let Some(request) = tx.request(&request_id).await? else {
            continue;
        };
        let Some(link) = &request.run else {
            continue;
        };
        // A run that cannot be read must not refuse the decision that names it.
        let mut run = match tx.run(&link.run).await {
            Ok(Some(run)) => run,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(run = %link.run, error = %e, "a run waiting for a decision cannot be read");
                continue;
            }
        };
        let ended = matches!(
            kind,
            EventKind::GrantFailed | EventKind::GrantRevoked | EventKind::GrantExpired
        );
        // A grant that ended is about this run only if it was its request's own grant, and
        // it takes back a readiness the run has not used yet.
        if ended && event.grant.is_some() && event.grant != request.grant {
            continue;
        }
        if !(run.waits_on(link, &request.id) || (ended && run.ready_on(link, &request.id))) {
            continue;
        }
        let events = match kind {
            EventKind::RequestApproved
            | EventKind::RequestCoveredByGrant
            | EventKind::GrantActivated => {
                // Ready once a grant that covers the action is in effect: the request's own
                // (which a connector may still be activating), or the one that answered it.
                let grant = match (&event.grant, &request.grant) {
                    (Some(g), _) | (None, Some(g)) => tx.grant(g).await?,
                    (None, None) => None,
                };
                let live = grant.is_some_and(|g| {
                    g.covers(&request.resource, request.part_of.as_deref())
                        && g.expires_at.is_none_or(|t| t > at)
                });
                if !live {
                    continue;
                }
                run.access_granted(&request.id, at)
            }
            EventKind::RequestDenied => {
                let comment = request.outcome.as_ref().and_then(|o| o.comment.clone());
                run.access_denied(&request.id, comment.as_deref(), at)
            }
            EventKind::RequestCancelled => {
                run.access_lapsed("the request for access was cancelled", at)
            }
            EventKind::RequestExpired => {
                run.access_lapsed("the request for access expired undecided", at)
            }
            EventKind::GrantFailed => {
                run.access_lapsed("the access was approved but could not be given", at)
            }
            _ => run.access_lapsed("the access granted ended before the run used it", at),
        };
        append_all(tx, events, at).await?;
        tx.put_run(&run).await?;
    }
    Ok(())
}

/// An action ready to run under this holder's claim.
struct Work {
    step: String,
    parameters: Value,
    action: config::runbook::StoreAction,
    key: String,
    run: String,
    runner: String,
    attempt: u32,
}

/// The worker's job for a run: walks its steps until it waits, ends, or has run its actions
/// (see the module's docs).
pub(crate) async fn advance(
    engine: &Arc<Engine>,
    id: &str,
    now: Timestamp,
) -> Result<(), EngineError> {
    for _ in 0..MAX_STEPS_PER_PASS {
        let now = engine.now().max(now);
        let config = engine.config();
        let key = id.to_owned();
        let work = engine
            .write(move |tx| {
                Box::pin(async move {
                    let kind = TimerKind::RunStep;
                    let Some(mut run) = tx.run(&key).await? else {
                        tx.unschedule(kind, &key, now).await?;
                        return Ok(None);
                    };
                    // Another holder is running this run's action: it records the result.
                    if tx.claimed(kind, &key, now).await? {
                        return Ok(None);
                    }
                    let work = match walk(tx, &config, &mut run, now).await? {
                        None => {
                            tx.unschedule(kind, &key, now).await?;
                            None
                        }
                        Some(mut w) if tx.claim(kind, &key, now, now.plus(LEASE)).await? => {
                            run.attempts += 1;
                            w.attempt = run.attempts;
                            Some(w)
                        }
                        // Taken by another holder since it was read as due.
                        Some(_) => None,
                    };
                    // What the walk checkpointed commits whether or not an action runs.
                    tx.put_run(&run).await?;
                    Ok(work)
                })
            })
            .await?;
        let Some(work) = work else {
            return Ok(());
        };
        let result = run_action(&work).await;
        let done_at = engine.now().max(now);
        let moved_on = engine
            .write(move |tx| {
                Box::pin(async move {
                    let kind = TimerKind::RunStep;
                    if !tx.holds(kind, &work.run, done_at).await? {
                        tracing::warn!(run = %work.run, step = %work.step,
                            "a run's action outlived its claim: another worker runs it");
                        return Ok(false);
                    }
                    let Some(mut run) = tx.run(&work.run).await? else {
                        tx.unschedule(kind, &work.run, done_at).await?;
                        return Ok(false);
                    };
                    // Cancelled while the action ran: its result is not recorded.
                    if run.state != RunState::Running
                        || run.current().map(|s| s.id.as_str()) != Some(work.step.as_str())
                    {
                        tx.unschedule(kind, &work.run, done_at).await?;
                        return Ok(false);
                    }
                    let events = match result {
                        Ok(output) => run.complete(output, None, done_at)?,
                        Err(e) => run.fail(format!("step {:?}: {e}", work.step), None, done_at),
                    };
                    append_all(tx, events, done_at).await?;
                    tx.put_run(&run).await?;
                    let going = run.state == RunState::Running;
                    if going {
                        // Releases the claim: the next pass (here, or any worker) claims anew.
                        tx.schedule(kind, &work.run, done_at).await?;
                    } else {
                        tx.unschedule(kind, &work.run, done_at).await?;
                    }
                    Ok(going)
                })
            })
            .await?;
        if !moved_on {
            return Ok(());
        }
    }
    Ok(())
}

/// Walks a running run's steps that need nothing from anyone, in this transaction. Returns
/// the action to run, or `None` when the run waits, stopped or ended.
async fn walk(
    tx: &mut dyn Tx,
    config: &config::Config,
    run: &mut Run,
    now: Timestamp,
) -> Result<Option<Work>, EngineError> {
    while run.state == RunState::Running {
        let next = match run.next() {
            Ok(n) => n,
            Err(why) => {
                let events = run.fail(why, None, now);
                append_all(tx, events, now).await?;
                return Ok(None);
            }
        };
        let events = match next {
            Next::Finished => return Ok(None),
            Next::Message { prompt, .. } => run.complete(Value::String(prompt), None, now)?,
            Next::Input { step, .. } => {
                let given = run.inputs.get(&step).cloned();
                match given.map(|v| run.check_answer(&v)) {
                    Some(Ok(v)) => {
                        let runner = run.runner.clone();
                        run.complete(v, Some(&runner), now)?
                    }
                    // Not given, or not one of the values offered now: the runner is asked.
                    _ => {
                        let events = run.wait_for_input(now);
                        append_all(tx, events, now).await?;
                        return Ok(None);
                    }
                }
            }
            Next::Action {
                step,
                store,
                name,
                parameters,
                resource,
            } => {
                let Some(action) = config
                    .action_stores
                    .get(&store)
                    .and_then(|s| s.actions.get(&name))
                else {
                    let why = format!(
                        "step {step:?}: action_store {store:?} has no action {name:?} any more"
                    );
                    let events = run.fail(why, None, now);
                    append_all(tx, events, now).await?;
                    return Ok(None);
                };
                // The gate the run started with, and the action's gate now if it changed
                // since: a run never gets past a gate the configuration has now.
                let mut gates = vec![];
                gates.extend(resource);
                gates.extend(action.resource.clone().filter(|r| !gates.contains(r)));
                for resource in &gates {
                    let part_of = config
                        .resources
                        .get(resource)
                        .and_then(|r| r.part_of.as_deref());
                    let held = tx
                        .active_grant_covering(&run.runner, resource, part_of, now)
                        .await?;
                    if held.is_none() {
                        let events = run.need_access(resource, now);
                        append_all(tx, events, now).await?;
                        return Ok(None);
                    }
                }
                return Ok(Some(Work {
                    key: run.idempotency_key(&step),
                    step,
                    parameters,
                    action: action.clone(),
                    run: run.id.clone(),
                    runner: run.runner.clone(),
                    attempt: 0,
                }));
            }
        };
        append_all(tx, events, now).await?;
    }
    Ok(None)
}

/// Runs an action's program: the parameters as JSON on stdin, its JSON on stdout is the
/// step's output.
async fn run_action(w: &Work) -> Result<Value, String> {
    let plain = [
        ("COUNTERSIGN_IDEMPOTENCY_KEY", w.key.clone()),
        ("COUNTERSIGN_RUN_ID", w.run.clone()),
        ("COUNTERSIGN_STEP_ID", w.step.clone()),
        ("COUNTERSIGN_RUNNER", w.runner.clone()),
        ("COUNTERSIGN_ATTEMPT", w.attempt.to_string()),
    ];
    let no_env = BTreeMap::new();
    let done = program::run(Program {
        argv: &w.action.command,
        dir: &w.action.dir,
        env: &no_env,
        plain_env: &plain,
        input: w.parameters.to_string(),
        timeout: w.action.timeout,
        stdout: Some(MAX_OUTPUT),
    })
    .await?;
    if !done.status.success() {
        return Err(done.failure());
    }
    let text = String::from_utf8_lossy(&done.stdout);
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let output: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{:?} wrote output that is not JSON: {e}", done.program))?;
    if domain::action::depth(&output) > MAX_OUTPUT_DEPTH {
        return Err(format!(
            "{:?} wrote output nested more than {MAX_OUTPUT_DEPTH} deep",
            done.program
        ));
    }
    Ok(output)
}
