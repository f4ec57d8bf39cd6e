//! Application services and workers.
//!
//! Every service follows one shape: inside a store write job, load the object, apply a domain
//! transition, then persist the new state, its audit events and its effects (timers and
//! connector outbox rows) together. Nothing is acknowledged before the store's commit is
//! durable. Workers ([`worker`]) carry out due jobs one at a time and can be driven one step
//! at a time with [`Engine::run_due`].
//!
//! The engine reads the clock only through [`clock::Clock`] and does no HTTP; authentication
//! happens at the surfaces, which hand the engine a resolved [`domain::Actor`].

pub mod backoff;
pub mod callback;
pub mod checkpoint;
pub mod clock;
pub mod connector;
mod error;
mod explain;
pub mod interactions;
pub mod metrics;
pub mod notify;
pub mod options;
pub mod outbound;
pub mod present;
mod program;
mod recheck;
pub mod runs;
pub mod slack;
pub mod socket;
mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use config::Config;
use connector::Connectors;
use domain::{
    Actor, Changes, DomainError, Effect, Event, EventKind, Grant, GrantState, Input, NewRequest,
    Principal, Request, RequestState, ReviewInput, Span, TimerKind, Timestamp,
};
use policy::{Policies, PolicyError};
use store::{GrantAudience, GrantFilter, JobFailure, RequestFilter, Store, StoredEvent, Tx};
use tokens::token_hash;

pub use explain::{Explanation, Simulation, StepView};
pub use metrics::Metrics;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::EngineError;
pub use options::FieldOption;
pub use store::SessionRow;
pub use worker::Worker;

/// What a requester (or an application) submits.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub resource: String,
    pub reason: String,
    pub duration: Option<Span>,
    pub fields: BTreeMap<String, Input>,
    /// Start the grant later than approval (rule 16).
    pub start_at: Option<Timestamp>,
    /// The person an application asks for (rule 21); only applications may name one.
    pub requester: Option<String>,
    /// What an application sends with the request (rule 21); `created_by` is set here.
    pub context: domain::Context,
    /// The caller's `Idempotency-Key` and the hash of the body it came with (rule 25).
    pub idempotency: Option<IdempotencyKey>,
    /// Break the glass (rule 34): grant at once, without the workflow, and open a follow-up
    /// review.
    pub break_glass: bool,
    /// The one action asked for, on a resource of `kind = "action"` (issue 18).
    pub action: Option<domain::ActionInput>,
    /// The run of a runbook this request asks access for (issue 17): set by
    /// [`Engine::request_run_access`].
    pub run: Option<domain::RunLink>,
}

/// An `Idempotency-Key` (rule 25): the key, and a hash of the canonical body it came with.
#[derive(Clone, Debug)]
pub struct IdempotencyKey {
    pub key: String,
    pub body_hash: String,
}

/// What creating a request answered.
#[derive(Clone, Debug)]
pub struct Created {
    /// The request as it was created (for a replay, as it was first returned).
    pub request: Request,
    /// The callback secret (rule 21), given only to the creator in this answer.
    pub callback_secret: Option<String>,
    /// Whether this repeats an earlier creation with the same `Idempotency-Key`.
    pub replay: bool,
}

/// Filters of `GET /v1/requests`.
#[derive(Clone, Debug, Default)]
pub struct RequestQuery {
    pub state: Option<RequestState>,
    pub resource: Option<String>,
    pub requester: Option<String>,
    pub reviewable_by_me: bool,
    pub limit: u32,
    /// Only requests created at or after this time.
    pub created_from: Option<Timestamp>,
    /// Only requests created before this time.
    pub created_before: Option<Timestamp>,
    /// Oldest first instead of newest first (the portal's inbox).
    pub oldest_first: bool,
    /// Where the page starts: the position the previous page ended at ([`Page::next`]).
    pub after: Option<Position>,
}

/// One request for [`Engine::seed_requests`].
#[derive(Clone, Debug)]
pub struct Seed {
    pub resource: String,
    /// The request; an empty id gets a new one, made from `at` as a real request's is.
    pub new: NewRequest,
    /// When it is created (and decided).
    pub at: Timestamp,
    /// How many approvals it gets, each from the first person who may decide it then.
    pub approvals: usize,
    /// Whether its requester cancels it (if it is still pending).
    pub cancel: bool,
}

/// Filters of `GET /v1/grants`. Grants are listed newest first.
#[derive(Clone, Debug, Default)]
pub struct GrantQuery {
    pub state: Option<GrantState>,
    pub subject: Option<String>,
    pub resource: Option<String>,
    pub limit: u32,
    /// Where the page starts: the position the previous page ended at ([`Page::next`]).
    pub after: Option<Position>,
}

/// A place in a list ordered by creation: the `created_at` and id of its last item so far.
/// The next page starts after it, so items created meanwhile neither shift the pages nor
/// repeat on them (keyset paging).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub created_at: Timestamp,
    pub id: String,
}

/// One page of a list: its items, and where the next page starts (a [`Position`], or an
/// audit event's sequence number).
#[derive(Clone, Debug)]
pub struct Page<T, K = Position> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<K>,
}

impl<T, K> Page<T, K> {
    /// The first `limit` of `rows`, read with one more than the limit so as to know whether
    /// another page follows.
    fn of(mut rows: Vec<T>, limit: u32, position: impl Fn(&T) -> K) -> Page<T, K> {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(position)
        } else {
            None
        };
        Page { items: rows, next }
    }
}

/// What a configuration compiles to: the configuration, its connectors and its policies.
/// Replaced as a whole on reload.
#[derive(Clone)]
struct Live {
    config: Arc<Config>,
    connectors: Connectors,
    policies: Arc<Policies>,
    sender: Arc<callback::Sender>,
}

/// Compiles every policy bundle the configuration references (rule 28) and checks each
/// query, with the configuration location of each undefined query.
pub fn compile_policies(config: &Config) -> Result<Policies, Vec<PolicyError>> {
    let timeout = std::time::Duration::from_millis(config.server.policy_timeout_ms);
    Policies::load(
        config.policy_sites.iter().map(|(r, at)| (r, at.clone())),
        timeout,
    )
}

pub struct Engine {
    store: Arc<dyn Store>,
    live: RwLock<Live>,
    clock: Arc<dyn Clock>,
    /// Connector jobs this process is running now, so that a job is not started twice.
    in_flight: std::sync::Mutex<std::collections::HashSet<(TimerKind, String)>>,
    /// Bounds the connector calls running at once.
    calls: tokio::sync::Semaphore,
    /// Runbook actions running at once (issue 17): apart from connector calls, so that slow
    /// actions never hold up grants and revocations (rule 17).
    run_calls: tokio::sync::Semaphore,
    /// Bounds the callback deliveries running at once, and per receiver.
    delivery_slots: tokio::sync::Semaphore,
    /// Dynamic field options fetched lately.
    options: options::Cache,
    /// When each Slack channel may next be posted to (item 8's pacing).
    slack_pace: slack::Pace,
    /// What replays a stored Slack interaction (installed by the Slack endpoint).
    slack_replayer: std::sync::OnceLock<interactions::Replayer>,
    /// This server's metrics.
    metrics: Metrics,
}

fn new_id(now: Timestamp) -> String {
    let ms = u64::try_from(now.millis()).unwrap_or(0);
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    uuid::Uuid::new_v7(ts).to_string()
}

/// Writes what a transition produced: its events, its jobs, and any grant it issues. Returns
/// the id of the grant issued, if any.
///
/// Wherever a grant's expiry is scheduled, its pre-expiry notice is scheduled with it, `notice`
/// ahead (none when the grant is shorter than that). An approved extension (rule 19) moves
/// the expiry of the grant it names; if that grant is no longer active, a new grant is issued.
async fn apply(
    tx: &mut dyn Tx,
    ch: Changes,
    now: Timestamp,
    notice: Span,
) -> Result<Option<String>, EngineError> {
    let mut issued = None;
    let mut queue = vec![ch];
    while let Some(ch) = queue.pop() {
        for e in &ch.events {
            tx.append(e, now).await?;
        }
        for eff in ch.effects {
            match eff {
                Effect::Schedule { kind, key, at } => {
                    if at <= now {
                        tx.signal_due();
                    }
                    if kind == TimerKind::GrantExpiry && notice.secs() > 0 {
                        let warn_at = at.minus(notice);
                        if warn_at > now {
                            tx.schedule(TimerKind::GrantNotice, &key, warn_at).await?;
                        } else {
                            tx.unschedule(TimerKind::GrantNotice, &key, now).await?;
                        }
                    }
                    tx.schedule(kind, &key, at).await?
                }
                Effect::Unschedule { kind, key } => tx.unschedule(kind, &key, now).await?,
                // Written by `save_request`, which has the request.
                Effect::Callback => {}
                Effect::RevokeGrant { grant, by, reason } => {
                    if let Some(mut g) = tx.grant(&grant).await?
                        && let Some(gch) = g.revoke_flagged(&by, reason, now)
                    {
                        tx.put_grant(&g).await?;
                        queue.push(gch);
                    }
                }
                Effect::IssueGrant(spec) => {
                    if let Some(id) = spec.extends.clone()
                        && let Some(mut g) = tx.grant(&id).await?
                        && let Some(gch) = g.extend(&spec.request, spec.duration, now)
                    {
                        tx.put_grant(&g).await?;
                        issued = Some(g.id.clone());
                        queue.push(gch);
                        continue;
                    }
                    let (grant, gch) = Grant::issue(new_id(now), spec, now);
                    tx.put_grant(&grant).await?;
                    issued = Some(grant.id.clone());
                    queue.push(gch);
                }
            }
        }
    }
    Ok(issued)
}

/// Saves a request just created, with its callback secret and the answer its
/// `Idempotency-Key` replays (rule 25).
async fn finish_creating(
    tx: &mut dyn Tx,
    req: &mut Request,
    ch: Changes,
    secret: Option<String>,
    idem: Option<IdempotencyKey>,
    subject: String,
    (now, notice, ttl): (Timestamp, Span, Span),
) -> Result<(), EngineError> {
    if let Some(secret) = &secret {
        tx.put_callback_secret(&req.id, secret).await?;
    }
    save_request(tx, req, ch, now, notice).await?;
    if let Some(k) = idem {
        let row = store::IdempotencyRow {
            subject,
            key: k.key,
            body_hash: k.body_hash,
            request_id: req.id.clone(),
            response: serde_json::to_string(&*req).ok(),
            expires_at: now.plus(ttl),
            in_flight_until: None,
        };
        tx.put_idempotency(&row, now).await?;
    }
    Ok(())
}

/// Persists a request after a transition, with the grant it may have produced.
async fn save_request(
    tx: &mut dyn Tx,
    req: &mut Request,
    ch: Changes,
    now: Timestamp,
    notice: Span,
) -> Result<(), EngineError> {
    let callback = ch.effects.contains(&Effect::Callback);
    if let Some(grant) = apply(tx, ch, now, notice).await? {
        req.grant = Some(grant);
    }
    tx.put_request(req).await?;
    // The outcome and its callback are written together (rule 22).
    if callback && let Some(d) = callback::delivery_for(req, now) {
        tx.put_delivery(&d, None).await?;
    }
    Ok(())
}

impl Engine {
    /// Builds the engine. Policies that do not compile leave the engine with none, so that
    /// every evaluation fails closed; servers check them first ([`compile_policies`]).
    pub fn new(store: Arc<dyn Store>, config: Config, clock: Arc<dyn Clock>) -> Arc<Engine> {
        Engine::with_metrics(store, config, clock, Metrics::new())
    }

    /// Like [`Engine::new`], recording into `metrics` (whose [`Metrics::writer`] the store was
    /// opened with, so that one `/metrics` shows the engine and its store).
    pub fn with_metrics(
        store: Arc<dyn Store>,
        config: Config,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Arc<Engine> {
        let policies = compile_policies(&config).unwrap_or_else(|errors| {
            for e in &errors {
                tracing::error!(error = %e, "policy bundle refused; evaluations fail closed");
            }
            Policies::empty()
        });
        let connectors = Connectors::build(&config);
        Arc::new(Engine {
            store,
            live: RwLock::new(Live {
                sender: Arc::new(callback::Sender::new(&config)),
                config: Arc::new(config),
                connectors,
                policies: Arc::new(policies),
            }),
            clock,
            in_flight: Default::default(),
            calls: tokio::sync::Semaphore::new(worker::MAX_CALLS),
            run_calls: tokio::sync::Semaphore::new(worker::MAX_RUN_CALLS),
            delivery_slots: tokio::sync::Semaphore::new(callback::MAX_DELIVERIES),
            options: Default::default(),
            slack_pace: Default::default(),
            slack_replayer: Default::default(),
            metrics,
        })
    }

    fn live(&self) -> Live {
        self.live
            .read()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn config(&self) -> Arc<Config> {
        self.live().config
    }

    /// The connectors of the running configuration.
    pub fn connectors(&self) -> Connectors {
        self.live().connectors
    }

    /// How callbacks are sent under the running configuration.
    pub(crate) fn sender(&self) -> Arc<callback::Sender> {
        self.live().sender
    }

    /// The compiled policies of the running configuration.
    pub fn policies(&self) -> Arc<Policies> {
        self.live().policies
    }

    /// Replaces the configuration, rebuilding its connectors and compiling its policies.
    /// Policies that do not compile refuse the whole reload: the running configuration and
    /// policies stay. Pending requests keep the workflow and policies they snapshotted.
    pub fn reload(&self, config: Config) -> Result<(), Vec<PolicyError>> {
        let policies = compile_policies(&config)?;
        let connectors = Connectors::build(&config);
        let new = Live {
            sender: Arc::new(callback::Sender::new(&config)),
            config: Arc::new(config),
            connectors,
            policies: Arc::new(policies),
        };
        match self.live.write() {
            Ok(mut c) => *c = new,
            Err(p) => *p.into_inner() = new,
        }
        Ok(())
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every series of this server in the Prometheus text format, with the gauges of stored
    /// state counted now.
    pub async fn render_metrics(&self) -> String {
        self.metrics.render(self.store.as_ref(), self.now()).await
    }

    /// Runs `f` in a store transaction, passing its error through unchanged. The job's
    /// result (or its own error) waits beside it, typed, and is handed over once the store
    /// has committed (or has not).
    async fn write<T, F>(&self, f: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut dyn Tx) -> store::BoxFuture<'a, Result<T, EngineError>>
            + Send
            + 'static,
    {
        let slot: Arc<std::sync::Mutex<Option<Result<T, EngineError>>>> = Arc::default();
        let out = slot.clone();
        let config = self.config();
        let job: store::WriteJob = Box::new(move |tx| {
            Box::pin(async move {
                // The notifications of what the job changed are written with it (rule 32).
                let r = match f(tx).await {
                    Ok(v) => {
                        // Runs waiting on what the job decided move with it (issue 17).
                        let mut appended = tx.take_appended();
                        match runs::follow(tx, &appended).await {
                            Ok(()) => {
                                appended.extend(tx.take_appended());
                                notify::enqueue(tx, &config, appended).await.map(|()| v)
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                let answer = if r.is_ok() {
                    Ok(())
                } else {
                    Err(JobFailure::Refused)
                };
                *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                answer
            })
        });
        let committed = self.store.write(job).await;
        let kept = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (committed, kept) {
            (Ok(()), Some(r)) => r,
            // The store failed (the job may have succeeded, but nothing of it is durable).
            (Err(JobFailure::Store(e)), _) => Err(EngineError::Store(e)),
            (Err(JobFailure::Refused), Some(Err(e))) => Err(e),
            _ => Err(EngineError::Store(store::StoreError::Corrupt(
                "a write job ended without an answer".into(),
            ))),
        }
    }

    /// The actor a configured user acts as, if the user is (still) configured.
    pub fn actor(&self, user: &str) -> Option<Actor> {
        self.config().directory.actor(user)
    }

    /// Rule 2 (validation), rule 5 (covered by an active grant), rule 13, then step 1. With a
    /// callback (rule 21), its URL is checked (rule 26) and a secret made for it; with an
    /// `Idempotency-Key` (rule 25), a repeat gets the first answer.
    pub async fn create_request(
        &self,
        actor: &Actor,
        input: CreateRequest,
    ) -> Result<Created, EngineError> {
        let Live {
            config,
            policies,
            sender,
            ..
        } = self.live();
        if !config.resources.contains_key(&input.resource) {
            let msg = format!("unknown resource {:?}", input.resource);
            return Err(DomainError::Invalid(msg).into());
        }
        let now = self.now();
        let notice = config.server.expiry_notice;
        let ttl = config.server.idempotency_ttl;
        let (requester, context) = who_asks(&config, actor, input.requester, input.context)?;
        self.check_dynamic_fields(&config, &sender, &input.resource, &input.fields, now)
            .await?;
        let secret = match &context.callback {
            Some(cb) => {
                sender
                    .guard()
                    .check_url(&cb.url)
                    .await
                    .map_err(|e| DomainError::Invalid(format!("callback.url: {e}")))?;
                Some(callback::new_secret())
            }
            None => None,
        };
        let id = new_id(now);
        if let Some(k) = &input.idempotency {
            self.start_creating(&actor.id, k, &id, now).await?;
        }
        let new = NewRequest {
            id: id.clone(),
            requester,
            reason: input.reason,
            duration: input.duration,
            fields: input.fields,
            start_at: input.start_at,
            extends: None,
            context,
            action: input.action,
            run: input.run,
        };
        // The request is built inside the transaction, where the covering grant (rule 5) is
        // read consistently with the write.
        let name = input.resource;
        let subject = actor.id.clone();
        let idem = input.idempotency;
        let break_glass = input.break_glass;
        let secret_in = secret.clone();
        let key = idem.as_ref().map(|k| (subject.clone(), k.key.clone()));
        let created = self
            .write(move |tx| {
                Box::pin(async move {
                    if let Some(k) = &idem
                        && let Some(row) = tx.idempotency(&subject, &k.key, now).await?
                        && !(row.in_flight_until.is_some() && row.request_id == new.id)
                    {
                        if row.body_hash != k.body_hash {
                            return Err(different_body(&k.key));
                        }
                        if row.in_flight_until.is_some() {
                            // Another creation took the key over after this one's mark lapsed.
                            return Err(in_flight(&k.key));
                        }
                        let first = match row.response.as_deref().map(serde_json::from_str) {
                            Some(Ok(r)) => r,
                            _ => tx.request(&row.request_id).await?.ok_or_else(|| {
                                EngineError::NotFound(format!("request {}", row.request_id))
                            })?,
                        };
                        return Ok((first, true));
                    }
                    let res = &config.resources[&name];
                    let (mut req, ch) = if break_glass {
                        // Rule 34: no covering grant is consulted; the glass is broken.
                        Request::break_glass(new, res, &config.directory, policies.as_ref(), now)?
                    } else {
                        // Issue 18: an approved action covers no other (rule 5 does not apply).
                        let covering = match res.action {
                            Some(_) => None,
                            None => {
                                tx.active_grant_covering(
                                    &new.requester,
                                    &res.name,
                                    res.part_of.as_deref(),
                                    now,
                                )
                                .await?
                            }
                        };
                        Request::create(
                            new,
                            res,
                            &config.directory,
                            policies.as_ref(),
                            now,
                            covering.as_ref().map(|g| g.id.as_str()),
                        )?
                    };
                    finish_creating(
                        tx,
                        &mut req,
                        ch,
                        secret_in,
                        idem,
                        subject,
                        (now, notice, ttl),
                    )
                    .await?;
                    // A request for a run's access: the run waits for it (issue 17).
                    runs::link_request(tx, &req, now).await?;
                    Ok((req, false))
                })
            })
            .await;
        let (req, replay) = match (created, key) {
            (Ok(v), _) => v,
            (Err(e), None) => return Err(e),
            (Err(e), Some((subject, key))) => {
                self.end_creating(subject, key, id).await;
                return Err(e);
            }
        };
        if !replay {
            self.metrics.created(&req);
        }
        let callback_secret = match (replay, secret) {
            (false, s) => s,
            (true, _) => self.store.callback_secret(&req.id).await?,
        };
        Ok(Created {
            request: req,
            callback_secret,
            replay,
        })
    }

    /// Marks a caller's `Idempotency-Key` as being created now, in the database, so that a
    /// repeat on any replica sees it (rule 25): 422 if the key was used with another body, 409
    /// while another creation with it is in flight. A key already answered is left for the
    /// creation itself to replay. The mark names the request `id` about to be created, and
    /// lapses after [`IN_FLIGHT`] if this process dies before it is cleared.
    async fn start_creating(
        &self,
        subject: &str,
        k: &IdempotencyKey,
        id: &str,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let ttl = self.config().server.idempotency_ttl;
        let (subject, k, id) = (subject.to_owned(), k.clone(), id.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                if let Some(row) = tx.idempotency(&subject, &k.key, now).await? {
                    if row.body_hash != k.body_hash {
                        return Err(different_body(&k.key));
                    }
                    match row.in_flight_until {
                        None => return Ok(()),
                        Some(until) if until > now => return Err(in_flight(&k.key)),
                        // Its creator died: the key is free again.
                        Some(_) => {}
                    }
                }
                let mark = store::IdempotencyRow {
                    subject,
                    key: k.key,
                    body_hash: k.body_hash,
                    request_id: id,
                    response: None,
                    expires_at: now.plus(ttl),
                    in_flight_until: Some(now.plus(IN_FLIGHT)),
                };
                Ok(tx.put_idempotency(&mark, now).await?)
            })
        })
        .await
    }

    /// Clears the in-flight mark of a creation that failed, if it is still this one's.
    async fn end_creating(&self, subject: String, key: String, id: String) {
        let now = self.now();
        let r = self
            .write(move |tx| {
                Box::pin(async move {
                    if let Some(row) = tx.idempotency(&subject, &key, now).await?
                        && row.in_flight_until.is_some()
                        && row.request_id == id
                    {
                        tx.delete_idempotency(&subject, &key).await?;
                    }
                    Ok(())
                })
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "clearing an Idempotency-Key mark failed; it lapses");
        }
    }

    /// The callback deliveries of a request, for its creator or an admin (rule 23).
    pub async fn deliveries(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<Vec<domain::Delivery>, EngineError> {
        let r = self.request(actor, id).await?;
        may_manage_callbacks(actor, &r)?;
        let mut all = self.store.deliveries(id).await?;
        all.retain(|d| d.notice.is_none());
        Ok(all)
    }

    /// What was sent about a request, to whom and on which channel, with every attempt
    /// (rule 32): for anyone who may see the request. Oldest first.
    pub async fn notifications(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<Vec<domain::Delivery>, EngineError> {
        self.request(actor, id).await?;
        let mut all = self.store.deliveries(id).await?;
        all.retain(|d| d.notice.is_some());
        // By event, then in the order the router made them (`ntf_<seq>_<n>`).
        all.sort_by_key(|d| (d.notice.as_ref().map(|n| n.seq), d.id.len(), d.id.clone()));
        Ok(all)
    }

    /// Sends a notification again (rule 32), with the same id and a fresh retry window: an
    /// admin's remedy for a message that failed or was lost on the receiver's side.
    pub async fn resend_notification(
        &self,
        actor: &Actor,
        id: &str,
        notification: &str,
    ) -> Result<domain::Delivery, EngineError> {
        if !actor.admin || actor.app {
            // Applications never act on what people are told.
            self.request(actor, id).await?;
            return Err(
                DomainError::Forbidden("only an admin may resend a notification".into()).into(),
            );
        }
        let now = self.now();
        let (id, nid) = (id.to_owned(), notification.to_owned());
        let by = actor.id.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let missing =
                    || EngineError::NotFound(format!("notification {nid} of request {id}"));
                let mut d = tx
                    .delivery(&nid)
                    .await?
                    .filter(|d| d.notice.is_some() && d.request == id)
                    .ok_or_else(missing)?;
                d.redeliver(now);
                let ev = Event::request(EventKind::NotificationResent, &id, Some(&by))
                    .with("notification", &d.id);
                tx.append(&ev, now).await?;
                tx.put_delivery(&d, None).await?;
                Ok(d)
            })
        })
        .await
    }

    /// Sends a request's callback again (rule 23): a failed or stopped delivery is re-armed
    /// with the same `webhook-id` and a fresh retry window; a pending one is tried at once.
    pub async fn redeliver(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<Vec<domain::Delivery>, EngineError> {
        let now = self.now();
        let (actor, id) = (actor.clone(), id.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                let r = tx
                    .request(&id)
                    .await?
                    .filter(|r| r.visible_to(&actor))
                    .ok_or_else(|| EngineError::NotFound(format!("request {id}")))?;
                may_manage_callbacks(&actor, &r)?;
                let Some(mut d) = tx.delivery(&domain::Delivery::id_for(&id)).await? else {
                    let why = if r.context.callback.is_none() {
                        "the request has no callback"
                    } else {
                        "the request has no outcome yet, so there is nothing to deliver"
                    };
                    return Err(DomainError::Conflict(why.into()).into());
                };
                d.redeliver(now);
                let ev = Event::request(EventKind::CallbackRedelivered, &id, Some(&actor.id))
                    .with("delivery", &d.id);
                tx.append(&ev, now).await?;
                tx.put_delivery(&d, None).await?;
                Ok(vec![d])
            })
        })
        .await
    }

    /// Loads a request, applies `f` to it and saves the result, all in one transaction.
    async fn transition<F>(&self, actor: &Actor, id: &str, f: F) -> Result<Request, EngineError>
    where
        F: FnOnce(&mut Request, Timestamp) -> Result<Changes, DomainError> + Send + 'static,
    {
        let now = self.now();
        let notice = self.config().server.expiry_notice;
        let id = id.to_owned();
        let actor = actor.clone();
        let (req, before) = self
            .write(move |tx| {
                Box::pin(async move {
                    let mut req = tx
                        .request(&id)
                        .await?
                        .filter(|r| r.visible_to(&actor))
                        .ok_or_else(|| EngineError::NotFound(format!("request {id}")))?;
                    let before = req.state;
                    let ch = f(&mut req, now)?;
                    save_request(tx, &mut req, ch, now, notice).await?;
                    Ok((req, before))
                })
            })
            .await?;
        if req.state != before && req.state.is_terminal() {
            self.metrics.decided(&req.resource, req.state.as_str());
        }
        Ok(req)
    }

    pub async fn review(
        &self,
        actor: &Actor,
        id: &str,
        input: ReviewInput,
    ) -> Result<Request, EngineError> {
        let a = actor.clone();
        let Live {
            config, policies, ..
        } = self.live();
        let decision = match input.decision {
            domain::Decision::Approve => "approve",
            domain::Decision::Deny => "deny",
        };
        let req = self
            .transition(actor, id, move |r, now| {
                r.review(&a, input, (&config.directory, policies.as_ref()), now)
            })
            .await?;
        self.metrics.reviewed(&req.resource, decision);
        Ok(req)
    }

    /// Rule 34: a follow-up reviewer acknowledges a break-glass, or flags it (which revokes
    /// its grant if it is still live, in the same transaction).
    pub async fn close_follow_up(
        &self,
        actor: &Actor,
        id: &str,
        verdict: domain::Verdict,
        comment: Option<String>,
    ) -> Result<Request, EngineError> {
        let a = actor.clone();
        self.transition(actor, id, move |r, now| {
            r.close_follow_up(&a, verdict, comment, now)
        })
        .await
    }

    pub async fn cancel(
        &self,
        actor: &Actor,
        id: &str,
        reason: Option<String>,
    ) -> Result<Request, EngineError> {
        let a = actor.clone();
        self.transition(actor, id, move |r, now| r.cancel(&a, reason, now))
            .await
    }

    /// Rule 4: the creator of a pending request updates its purpose or reason.
    pub async fn update_request(
        &self,
        actor: &Actor,
        id: &str,
        purpose: Option<String>,
        reason: Option<String>,
    ) -> Result<Request, EngineError> {
        let a = actor.clone();
        self.transition(actor, id, move |r, now| r.update(&a, purpose, reason, now))
            .await
    }

    pub async fn comment(
        &self,
        actor: &Actor,
        id: &str,
        text: String,
    ) -> Result<Request, EngineError> {
        let a = actor.clone();
        self.transition(actor, id, move |r, now| r.comment(&a, text, now))
            .await
    }

    /// The creator claims an approved request's action (issue 18): once, within its
    /// `claim_within`; audited as `action_claimed`. Anyone else who can see the request is
    /// refused (403).
    pub async fn claim_action(&self, actor: &Actor, id: &str) -> Result<Request, EngineError> {
        let me = actor.id.clone();
        self.transition(actor, id, move |r, now| {
            if r.creator() != me {
                return Err(DomainError::Forbidden(
                    "only the request's creator may claim its action".into(),
                ));
            }
            r.claim_action(now).map(|(_, ch)| ch)
        })
        .await
    }

    pub async fn assign(
        &self,
        actor: &Actor,
        id: &str,
        to: Principal,
    ) -> Result<Request, EngineError> {
        let a = actor.clone();
        let config = self.config();
        self.transition(actor, id, move |r, now| {
            r.assign(&a, to, &config.directory, now)
        })
        .await
    }

    pub async fn request(&self, actor: &Actor, id: &str) -> Result<Request, EngineError> {
        self.store
            .request(id)
            .await?
            .filter(|r| r.visible_to(actor))
            .ok_or_else(|| EngineError::NotFound(format!("request {id}")))
    }

    /// Requests the actor may see, newest first.
    /// A page of the requests the caller may see (or, with `reviewable_by_me`, may decide
    /// now), newest first. For anyone but an admin the store reads only the requests
    /// `Request::audience` names the caller in (its `request_people` index), so that a page
    /// costs the same however many requests the caller cannot see.
    pub async fn list_requests(
        &self,
        actor: &Actor,
        q: RequestQuery,
    ) -> Result<Page<Request>, EngineError> {
        let limit = q.limit.clamp(1, 500);
        // An admin sees every request; so does everyone their own, since a requester is in
        // every request's audience, which spares walking the rows of all they review.
        let everything = actor.admin || q.requester.as_deref() == Some(actor.id.as_str());
        let filter = RequestFilter {
            // Only pending requests can be decided: `reviewable` rows are all pending.
            state: q.state,
            resource: q.resource,
            requester: q.requester,
            audience: (q.reviewable_by_me || !everything).then(|| actor.id.clone()),
            reviewable: q.reviewable_by_me,
            from: q.created_from,
            until: q.created_before,
            after: q.after.map(|p| (p.created_at, p.id)),
            oldest_first: q.oldest_first,
            limit: limit + 1,
        };
        let rows = self.store.list_requests(&filter).await?;
        let mut page = Page::of(rows, limit, |r| Position {
            created_at: r.created_at,
            id: r.id.clone(),
        });
        // The index holds the domain's answer as the store last wrote it; each request is
        // judged again, so that a row that outlived its person's place in the audience (the
        // store never deletes one: see `store::people`) could shorten a page but never show a
        // request.
        page.items.retain(|r| {
            if q.reviewable_by_me {
                r.awaits(&actor.id)
            } else {
                r.visible_to(actor)
            }
        });
        Ok(page)
    }

    /// Who may see a grant: its subject, the owners of its resource, admins.
    pub fn may_see_grant(&self, actor: &Actor, g: &Grant) -> bool {
        grant_visible(&self.config(), actor, g)
    }

    pub async fn grant(&self, actor: &Actor, id: &str) -> Result<Grant, EngineError> {
        self.store
            .grant(id)
            .await?
            .filter(|g| self.may_see_grant(actor, g))
            .ok_or_else(|| EngineError::NotFound(format!("grant {id}")))
    }

    /// A page of the grants the caller may see, newest first: their own and those of the
    /// resources they own now (read through indexes on subject and resource), or every grant
    /// for an admin.
    pub async fn list_grants(
        &self,
        actor: &Actor,
        q: GrantQuery,
    ) -> Result<Page<Grant>, EngineError> {
        let limit = q.limit.clamp(1, 500);
        let config = self.config();
        let audience = (!actor.admin).then(|| GrantAudience {
            subject: actor.id.clone(),
            resources: config
                .resources
                .keys()
                .filter(|r| owns(&config, actor, r))
                .cloned()
                .collect(),
        });
        let rows = self
            .store
            .list_grants(&GrantFilter {
                state: q.state,
                subject: q.subject,
                resource: q.resource,
                audience,
                after: q.after.map(|p| (p.created_at, p.id)),
                limit: limit + 1,
            })
            .await?;
        Ok(Page::of(rows, limit, |g| Position {
            created_at: g.created_at,
            id: g.id.clone(),
        }))
    }

    /// Rule 19: the subject drops a grant, or an owner or admin revokes it with a reason.
    pub async fn revoke_grant(
        &self,
        actor: &Actor,
        id: &str,
        reason: Option<String>,
    ) -> Result<Grant, EngineError> {
        let now = self.now();
        let config = self.config();
        let (actor, id) = (actor.clone(), id.to_owned());
        let g = self
            .write(move |tx| {
                Box::pin(async move {
                    let mut g = tx
                        .grant(&id)
                        .await?
                        .filter(|g| grant_visible(&config, &actor, g))
                        .ok_or_else(|| EngineError::NotFound(format!("grant {id}")))?;
                    let is_owner = owns(&config, &actor, &g.spec.resource);
                    let ch = g.revoke(&actor, is_owner, reason, now)?;
                    apply(tx, ch, now, config.server.expiry_notice).await?;
                    tx.put_grant(&g).await?;
                    Ok(g)
                })
            })
            .await?;
        Ok(g)
    }

    /// Rule 19: the subject of an active grant asks to extend it by `duration`. The extension
    /// is a new request for the same resource, with the same fields, through the resource's
    /// workflow; on approval the grant's expiry moves by the approved duration, from its
    /// current expiry, so there is no gap.
    pub async fn extend_grant(
        &self,
        actor: &Actor,
        id: &str,
        duration: Option<Span>,
        reason: String,
    ) -> Result<Request, EngineError> {
        let Live {
            config, policies, ..
        } = self.live();
        let now = self.now();
        let notice = config.server.expiry_notice;
        let (actor, id) = (actor.clone(), id.to_owned());
        let request_id = new_id(now);
        // Checked and created in one transaction: the grant cannot end in between.
        self.write(move |tx| {
            Box::pin(async move {
                let g = tx
                    .grant(&id)
                    .await?
                    .filter(|g| grant_visible(&config, &actor, g))
                    .ok_or_else(|| EngineError::NotFound(format!("grant {id}")))?;
                if g.spec.subject != actor.id {
                    return Err(DomainError::Forbidden(
                        "only the grant's subject may ask to extend it".into(),
                    )
                    .into());
                }
                if g.state != GrantState::Active {
                    let state = g.state.as_str();
                    return Err(DomainError::Conflict(format!(
                        "grant {id} is {state}, not active"
                    ))
                    .into());
                }
                let Some(res) = config.resources.get(&g.spec.resource) else {
                    let msg = format!("resource {:?} is no longer configured", g.spec.resource);
                    return Err(DomainError::Conflict(msg).into());
                };
                // The extension asks with the same fields as the request that got the grant.
                let fields = match tx.request(&g.spec.request).await? {
                    Some(r) => r
                        .fields
                        .iter()
                        .map(|(k, v)| (k.clone(), v.into()))
                        .collect(),
                    None => BTreeMap::new(),
                };
                let new = NewRequest {
                    id: request_id,
                    requester: actor.id.clone(),
                    reason,
                    duration: Some(duration.unwrap_or(g.spec.duration)),
                    fields,
                    start_at: None,
                    extends: Some(g.id.clone()),
                    context: domain::Context::default(),
                    action: None,
                    run: None,
                };
                // Rule 5 does not apply: the grant that covers the resource is the one to
                // extend.
                let (mut req, ch) =
                    Request::create(new, res, &config.directory, policies.as_ref(), now, None)?;
                save_request(tx, &mut req, ch, now, notice).await?;
                Ok(req)
            })
        })
        .await
        .inspect(|req| self.metrics.created(req))
    }

    /// A page of the audit events after sequence number `after` (at most 1000), for admins;
    /// the next page starts after the sequence number it names.
    pub async fn audit(
        &self,
        actor: &Actor,
        after: i64,
        limit: u32,
    ) -> Result<Page<StoredEvent, i64>, EngineError> {
        if !actor.admin {
            return Err(DomainError::Forbidden("only admins may read the audit log".into()).into());
        }
        let limit = limit.clamp(1, 1000);
        let rows = self.store.events(after, limit + 1).await?;
        Ok(Page::of(rows, limit, |e| e.seq))
    }

    /// Walks the whole audit chain. Returns the number of events checked and the head hash.
    pub async fn verify_audit(&self, actor: &Actor) -> Result<Verification, EngineError> {
        if !actor.admin {
            return Err(
                DomainError::Forbidden("only admins may verify the audit log".into()).into(),
            );
        }
        let mut v = store::chain::Verifier::default();
        let mut after = 0;
        loop {
            let page = self.store.events(after, 1000).await?;
            for e in &page {
                if let Err(b) = v.check(e) {
                    return Ok(Verification {
                        ok: false,
                        checked: v.checked,
                        head: None,
                        error: Some(b.to_string()),
                    });
                }
                after = e.seq;
            }
            if page.len() < 1000 {
                return Ok(Verification {
                    ok: true,
                    checked: v.checked,
                    head: Some(v.head().to_owned()),
                    error: None,
                });
            }
        }
    }

    /// Issues a bearer token for a configured user; returns the token, shown only once.
    /// A token for a configured user (`alice@example.com`) or application (`app:deployer`).
    pub async fn create_token(&self, subject: &str) -> Result<String, EngineError> {
        if self.config().directory.actor(subject).is_none() {
            return Err(
                DomainError::Invalid(format!("{subject} is not a configured user or app")).into(),
            );
        }
        let token = tokens::new_token();
        let hash = token_hash(&token);
        let now = self.now();
        let subject = subject.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                tx.put_token(&hash, &subject, now).await?;
                Ok(())
            })
        })
        .await?;
        Ok(token)
    }

    /// The choices of a resource's field: an `enum`'s allowed values, or what a field's
    /// `options_from` answers (fetched through the guard, cached for the field's `cache`).
    /// Any configured person may read them, as they may read the catalog.
    pub async fn field_options(
        &self,
        resource: &str,
        field: &str,
    ) -> Result<Vec<FieldOption>, EngineError> {
        let Live { config, sender, .. } = self.live();
        let def = config
            .resources
            .get(resource)
            .ok_or_else(|| EngineError::NotFound(format!("resource {resource:?}")))?;
        let f = def
            .fields
            .iter()
            .find(|f| f.name == field)
            .ok_or_else(|| EngineError::NotFound(format!("field {field:?} of {resource:?}")))?;
        if let domain::FieldType::Enum(values) = &f.kind {
            return Ok(values
                .iter()
                .map(|v| FieldOption {
                    value: v.clone(),
                    label: v.clone(),
                })
                .collect());
        }
        let source = config
            .field_options
            .get(resource)
            .and_then(|m| m.get(field))
            .ok_or_else(|| {
                EngineError::NotFound(format!("options of field {field:?} of {resource:?}"))
            })?;
        options::options(&self.options, sender.guard(), source, self.now())
            .await
            .map_err(EngineError::Upstream)
    }

    /// A value of a field with `options_from` must be one of its options.
    async fn check_dynamic_fields(
        &self,
        config: &Config,
        sender: &callback::Sender,
        resource: &str,
        fields: &BTreeMap<String, domain::Input>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let Some(sources) = config.field_options.get(resource) else {
            return Ok(());
        };
        for (name, source) in sources {
            let Some(domain::Input::Text(value)) = fields.get(name) else {
                // Absent, or of the wrong type: the field check reports it.
                continue;
            };
            let choices = options::options(&self.options, sender.guard(), source, now)
                .await
                .map_err(EngineError::Upstream)?;
            if !choices.iter().any(|o| &o.value == value) {
                return Err(DomainError::Invalid(format!(
                    "field {name:?}: {value:?} is not one of its options"
                ))
                .into());
            }
        }
        Ok(())
    }

    /// The portal session with this id hash, unless it has expired.
    pub async fn session(&self, hash: &str) -> Result<Option<SessionRow>, EngineError> {
        Ok(self.store.session(hash, self.now()).await?)
    }

    /// Writes a portal session; `replaces` (the session it follows, at sign-in) is ended in
    /// the same transaction, so that an id seen before sign-in is worth nothing after it.
    pub async fn save_session(
        &self,
        row: SessionRow,
        replaces: Option<String>,
    ) -> Result<(), EngineError> {
        let now = self.now();
        self.write(move |tx| {
            Box::pin(async move {
                if let Some(old) = replaces {
                    tx.delete_session(&old).await?;
                }
                tx.put_session(&row, now).await?;
                Ok(())
            })
        })
        .await
    }

    /// Keeps a portal sign-in under way (what the identity provider's callback needs, as
    /// `data`) until `expires_at`, in the database, so that the callback may reach any
    /// replica. Refused while [`MAX_LOGINS`] are under way: an anonymous visitor can make the
    /// server keep only so much.
    pub async fn start_login(
        &self,
        hash: &str,
        data: String,
        expires_at: Timestamp,
    ) -> Result<(), EngineError> {
        let now = self.now();
        let row = SessionRow {
            hash: format!("{LOGIN_PREFIX}{hash}"),
            subject: String::new(),
            csrf: String::new(),
            data,
            created_at: now,
            expires_at,
        };
        self.write(move |tx| {
            Box::pin(async move {
                if tx.count_sessions(LOGIN_PREFIX, now).await? >= MAX_LOGINS {
                    return Err(DomainError::Conflict(
                        "too many sign-ins are under way; try again in a few minutes".into(),
                    )
                    .into());
                }
                Ok(tx.put_session(&row, now).await?)
            })
        })
        .await
    }

    /// Takes a sign-in under way, once: its `data`, unless it expired or was taken already.
    pub async fn take_login(&self, hash: &str) -> Result<Option<String>, EngineError> {
        let now = self.now();
        let key = format!("{LOGIN_PREFIX}{hash}");
        self.write(move |tx| {
            Box::pin(async move { Ok(tx.take_session(&key, now).await?.map(|r| r.data)) })
        })
        .await
    }

    /// Ends a portal session (sign-out).
    pub async fn end_session(&self, hash: String) -> Result<(), EngineError> {
        self.write(move |tx| {
            Box::pin(async move {
                tx.delete_session(&hash).await?;
                Ok(())
            })
        })
        .await
    }

    /// The user a bearer token authenticates, if any.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Actor>, EngineError> {
        if !token.starts_with("cs_") || token.len() > 128 {
            return Ok(None);
        }
        let row = self.store.token(&token_hash(token)).await?;
        Ok(row.and_then(|r| self.actor(&r.subject)))
    }

    /// Runs every job due now and waits for the connector calls it started; returns how many
    /// jobs ran.
    pub async fn run_due(self: &Arc<Self>) -> Result<usize, EngineError> {
        let mut calls = tokio::task::JoinSet::new();
        worker::run_due(self, self.now(), true, &mut calls).await
    }

    /// For `countersign-bench expiry` only: issues grants directly, without requests, each
    /// activated at the time given with it, so that a benchmark can seed hundreds of
    /// thousands of active grants whose expiries fall exactly when it wants. Everything else
    /// (audit events, expiry timers, the store) is what a real grant gets. Not reachable from
    /// any API.
    pub async fn seed_grants(
        &self,
        grants: Vec<(domain::GrantSpec, Timestamp)>,
    ) -> Result<(), EngineError> {
        let notice = self.config().server.expiry_notice;
        self.write(move |tx| {
            Box::pin(async move {
                for (spec, at) in grants {
                    let (g, ch) = Grant::issue(new_id(at), spec, at);
                    apply(tx, ch, at, notice).await?;
                    tx.put_grant(&g).await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// For `countersign-bench lists` only: creates requests directly, many per transaction,
    /// each at the time given with it, then has its first eligible reviewers approve it
    /// `approvals` times and, with `cancel`, its requester cancel it. Every request is made by
    /// `Request::create` and its transitions, and gets what a real one gets (audit events,
    /// timers, the `request_people` rows, a grant if approved); only the HTTP calls and rule 5
    /// are skipped. Not reachable from any API.
    pub async fn seed_requests(&self, seeds: Vec<Seed>) -> Result<(), EngineError> {
        let Live {
            config, policies, ..
        } = self.live();
        let notice = config.server.expiry_notice;
        self.write(move |tx| {
            Box::pin(async move {
                let dir = &config.directory;
                for s in seeds {
                    let res = config
                        .resources
                        .get(&s.resource)
                        .ok_or_else(|| EngineError::NotFound(format!("resource {}", s.resource)))?;
                    let now = s.at;
                    let mut new = s.new;
                    if new.id.is_empty() {
                        new.id = new_id(now);
                    }
                    let (mut req, ch) =
                        Request::create(new, res, dir, policies.as_ref(), now, None)?;
                    apply(tx, ch, now, notice).await?;
                    for _ in 0..s.approvals {
                        let Some(actor) =
                            req.eligible_reviewers().first().and_then(|p| dir.actor(p))
                        else {
                            break;
                        };
                        let input = ReviewInput {
                            decision: domain::Decision::Approve,
                            comment: None,
                            duration: None,
                            scope: domain::Scope::Resource,
                        };
                        let ch = req.review(&actor, input, (dir, policies.as_ref()), now)?;
                        if let Some(g) = apply(tx, ch, now, notice).await? {
                            req.grant = Some(g);
                        }
                    }
                    if s.cancel
                        && req.state == RequestState::Pending
                        && let Some(actor) = dir.actor(&req.requester)
                    {
                        let ch = req.cancel(&actor, None, now)?;
                        apply(tx, ch, now, notice).await?;
                    }
                    tx.put_request(&req).await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Schedules the reconciliation sweep and the policy re-evaluation (rule 20) if they are
    /// on and not scheduled yet, and removes them if they are off.
    pub async fn ensure_sweep(&self) -> Result<(), EngineError> {
        let config = self.config();
        let server = &config.server;
        let sweeps = [
            (TimerKind::Reconcile, server.reconcile_interval),
            (TimerKind::PolicyCheck, server.policy_interval),
        ];
        let now = self.now();
        self.write(move |tx| {
            Box::pin(async move {
                for (kind, interval) in sweeps {
                    let at = tx.scheduled(kind, worker::SWEEP).await?;
                    match (at, interval.secs()) {
                        (_, 0) => tx.unschedule(kind, worker::SWEEP, now).await?,
                        (None, _) => tx.schedule(kind, worker::SWEEP, now.plus(interval)).await?,
                        (Some(_), _) => {}
                    }
                }
                Ok(())
            })
        })
        .await
    }

    /// Marks a connector job as running in this process; false if it already is.
    fn start_call(&self, job: &store::DueJob) -> bool {
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        set.insert((job.kind, job.key.clone()))
    }

    /// Marks work this process does outside the worker as running (its claim is renewed by
    /// the heartbeat, and the worker does not start it again) until [`Engine::release`].
    fn hold(&self, kind: TimerKind, key: &str) {
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        set.insert((kind, key.to_owned()));
    }

    fn release(&self, kind: TimerKind, key: &str) {
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&(kind, key.to_owned()));
    }

    fn end_call(&self, job: &store::DueJob) {
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&(job.kind, job.key.clone()));
        drop(set);
        // A revoke may be waiting for this call to end.
        self.store.due_signal().notify_one();
    }

    /// Whether this process runs connector calls, callbacks or Slack interactions, whose
    /// claims its heartbeat must renew.
    fn holding(&self) -> bool {
        let calls = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        !calls.is_empty() || self.delivery_slots.available_permits() < callback::MAX_DELIVERIES
    }
}

/// Sign-ins under way are kept beside the sessions, under this prefix (a session's own hash
/// is hex, so the two never meet).
const LOGIN_PREFIX: &str = "login:";

/// The most portal sign-ins that may be under way at once.
pub const MAX_LOGINS: u64 = 10_000;

/// How long an `Idempotency-Key` stays marked as being created when its creator dies before
/// it finishes (rule 25).
const IN_FLIGHT: domain::Span = domain::Span::from_secs(60);

fn different_body(key: &str) -> EngineError {
    DomainError::Invalid(format!(
        "Idempotency-Key {key:?} was already used with a different body"
    ))
    .into()
}

fn in_flight(key: &str) -> EngineError {
    DomainError::Conflict(format!(
        "a request with Idempotency-Key {key:?} is still being created; retry later"
    ))
    .into()
}

/// Rule 21: who a request is for and who created it. A person asks for themselves; an
/// application with the `request_approval` (or `admin`) role asks for itself or for a
/// configured person, and is recorded as the creator.
fn who_asks(
    config: &Config,
    actor: &Actor,
    requester: Option<String>,
    mut context: domain::Context,
) -> Result<(String, domain::Context), EngineError> {
    if !actor.app {
        // A person may send a purpose and a reference too: they are useful to reviewers.
        return match requester {
            Some(r) if r != actor.id => Err(DomainError::Forbidden(
                "only an application may ask on behalf of someone else".into(),
            )
            .into()),
            _ => Ok((actor.id.clone(), context)),
        };
    }
    let may = config
        .directory
        .app(&actor.id)
        .is_some_and(|a| a.request_approval || a.admin);
    if !may {
        return Err(DomainError::Forbidden(format!(
            "{} does not have the request_approval role",
            actor.id
        ))
        .into());
    }
    context.created_by = Some(actor.id.clone());
    match requester {
        None => Ok((actor.id.clone(), context)),
        Some(r) if config.directory.user(&r).is_some() => Ok((r, context)),
        Some(r) => {
            Err(DomainError::Invalid(format!("requester {r:?} is not a configured user")).into())
        }
    }
}

/// Deliveries are the creator's business, and an admin's (rule 23).
fn may_manage_callbacks(actor: &Actor, r: &Request) -> Result<(), EngineError> {
    if actor.admin || r.creator() == actor.id {
        return Ok(());
    }
    Err(DomainError::Forbidden(
        "only the request's creator or an admin may see or resend its callbacks".into(),
    )
    .into())
}

/// Whether the actor owns a resource of the running configuration.
fn owns(config: &Config, actor: &Actor, resource: &str) -> bool {
    config
        .resources
        .get(resource)
        .is_some_and(|r| r.owners.iter().any(|p| actor.is(p)))
}

/// Who may see a grant: its subject, the owners of its resource, admins.
fn grant_visible(config: &Config, actor: &Actor, g: &Grant) -> bool {
    actor.admin || g.spec.subject == actor.id || owns(config, actor, &g.spec.resource)
}

/// The result of walking the audit chain.
#[derive(Clone, Debug)]
pub struct Verification {
    pub ok: bool,
    pub checked: u64,
    pub head: Option<String>,
    pub error: Option<String>,
}

/// Tokens: random, prefixed, stored only as hashes.
mod tokens {
    use rand::RngCore;

    /// 256 random bits in hex: a one-time secret put in a URL (a Slack link).
    pub fn random_secret() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    pub fn new_token() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        format!("cs_{}", hex::encode(bytes))
    }

    /// A SHA-256 of the token. Tokens carry 256 random bits, so a fast hash is enough: there
    /// is nothing to guess.
    pub fn token_hash(token: &str) -> String {
        store::chain::sha256_hex(token.as_bytes())
    }
}
