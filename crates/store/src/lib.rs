//! Persistence behind one trait.
//!
//! The engine hands the store *write jobs*: closures that load state through a [`Tx`], apply a
//! domain transition, and write the new state, its audit events and its jobs (timers and
//! connector outbox rows). A store runs every job inside a transaction, so a state change,
//! its audit event and its outbox rows are committed together or not at all, and replies to a
//! job only after its commit is durable. Reads that need no consistency with a write go
//! through the [`Store`] methods directly.
//!
//! One implementation serves both databases ([`open`] picks by the URL's scheme): SQLite, the
//! embedded default, and PostgreSQL, for several replicas on one database. Each store runs its
//! write jobs on one writer task that groups the jobs waiting at a moment into one
//! transaction, so that concurrent writers share one fsync; every group first takes the
//! writers' turn (a lock on the audit chain's head row), so that many stores on one database
//! write one after the other and each sees what the others committed (see `writer.rs`).
//! Statements are written once, in the SQL both databases accept (`db.rs`).
//!
//! Jobs are claimed with leases: a claim names its holder (the store that took it) and an
//! expiry, the holder renews its live claims with [`Tx::renew`] (a heartbeat), a claim that
//! lapsed may be taken by another holder, and a holder checks [`Tx::holds`] before it records
//! the result, so that a holder whose lease lapsed cannot complete the job.
//!
//! This crate knows the stored shape of domain objects; it does not decide anything.

pub mod chain;
mod copy;
mod db;
pub mod metrics;
mod people;
mod postgres;
mod sql;
mod sqlite;
mod writer;

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use domain::{
    Delivery, Event, Grant, GrantState, Request, RequestState, Run, RunState, TimerKind, Timestamp,
};

pub use chain::StoredEvent;
pub use copy::{CopyReport, copy};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("the store is shut down")]
    Closed,
    #[error("unsupported database URL scheme {0:?}: use sqlite://path or postgres://…")]
    BadUrl(String),
}

/// How a write job ended without committing its changes.
#[derive(Debug)]
pub enum JobFailure {
    /// The store failed; the caller's error type never saw it.
    Store(StoreError),
    /// The job itself refused (a domain rule). The job keeps its own error for its caller:
    /// the store only needs to know that nothing of it may be written.
    Refused,
}

impl From<StoreError> for JobFailure {
    fn from(e: StoreError) -> Self {
        JobFailure::Store(e)
    }
}

/// What a write job answers: done, or why not. A job hands its typed result to its caller
/// itself (the engine keeps it beside the job); the store only commits or not.
pub type JobResult = Result<(), JobFailure>;

/// A unit of work run inside a store transaction.
pub type WriteJob = Box<dyn for<'a> FnOnce(&'a mut dyn Tx) -> BoxFuture<'a, JobResult> + Send>;

/// A due job: a timer or a connector call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueJob {
    pub kind: TimerKind,
    pub key: String,
    pub due_at: Timestamp,
}

/// What the store holds now, counted for the gauges of `/metrics`. Counted at each scrape, so
/// they are right after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending_requests: u64,
    pub active_grants: u64,
    /// Callback deliveries not finished yet (due now or waiting for a retry).
    pub pending_deliveries: u64,
    /// Jobs due and not claimed, by kind; kinds with none are left out.
    pub due_jobs: Vec<(TimerKind, u64)>,
    /// When the longest-waiting of them came due.
    pub oldest_due: Option<Timestamp>,
}

/// What a token authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub subject: String,
}

/// A remembered `Idempotency-Key` (rule 25).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRow {
    /// Who sent it: keys are per caller.
    pub subject: String,
    pub key: String,
    /// SHA-256 of the canonical JSON of the body it came with.
    pub body_hash: String,
    pub request_id: String,
    /// The first response, once sent.
    pub response: Option<String>,
    pub expires_at: Timestamp,
    /// While the first request with this key is being created (rule 25's "in flight"): until
    /// when, so that a creator that died does not hold the key for ever.
    pub in_flight_until: Option<Timestamp>,
}

/// A portal session (the cookie carries the id; only its SHA-256 is stored).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub hash: String,
    /// The signed-in user.
    pub subject: String,
    /// The CSRF token every form of this session sends back.
    pub csrf: String,
    /// What the portal keeps with the session, as JSON (groups from the sign-in, or the
    /// state of a sign-in under way). The store does not read it.
    pub data: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for SessionRow {
    /// The CSRF token and the sign-in state stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRow")
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Which requests a list reads, and where its page starts. Lists are keyset pages ordered by
/// `(created_at, id)`, newest first unless `oldest_first`.
#[derive(Clone, Debug, Default)]
pub struct RequestFilter {
    pub state: Option<RequestState>,
    pub resource: Option<String>,
    pub requester: Option<String>,
    /// Only the requests this person sees without being an admin (`Request::audience`), read
    /// from the `request_people` index; `None` reads every request (an admin's list).
    pub audience: Option<String>,
    /// With `audience`: only the requests that person may decide now.
    pub reviewable: bool,
    /// Only requests created at or after this time.
    pub from: Option<Timestamp>,
    /// Only requests created before this time.
    pub until: Option<Timestamp>,
    /// Only requests past this `(created_at, id)` in the list's order: the last of the
    /// previous page.
    pub after: Option<(Timestamp, String)>,
    pub oldest_first: bool,
    pub limit: u32,
}

/// Which grants a list reads, newest first by `(created_at, id)`.
#[derive(Clone, Debug, Default)]
pub struct GrantFilter {
    pub state: Option<GrantState>,
    pub subject: Option<String>,
    pub resource: Option<String>,
    /// Only the grants someone who is not an admin may see; `None` reads every grant.
    pub audience: Option<GrantAudience>,
    /// Only grants older than this `(created_at, id)`: the last of the previous page.
    pub after: Option<(Timestamp, String)>,
    pub limit: u32,
}

/// Which runs a list reads, newest first by `(created_at, id)`.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only this person's runs; `None` reads every run (an admin's list).
    pub runner: Option<String>,
    pub state: Option<RunState>,
    /// Only runs older than this `(created_at, id)`: the last of the previous page.
    pub after: Option<(Timestamp, String)>,
    pub limit: u32,
}

/// The grants of `subject`, and those of `resources` (the resources the person owns).
#[derive(Clone, Debug, Default)]
pub struct GrantAudience {
    pub subject: String,
    pub resources: Vec<String>,
}

/// The operations available inside a write transaction.
#[async_trait]
pub trait Tx: Send {
    async fn request(&mut self, id: &str) -> Result<Option<Request>, StoreError>;
    async fn put_request(&mut self, r: &Request) -> Result<(), StoreError>;
    async fn grant(&mut self, id: &str) -> Result<Option<Grant>, StoreError>;
    async fn put_grant(&mut self, g: &Grant) -> Result<(), StoreError>;
    /// A run of a runbook (issue 17), this job's own unsaved write included.
    async fn run(&mut self, id: &str) -> Result<Option<Run>, StoreError>;
    /// Writes a run: its state and its checkpoint (rule 37) commit with the job.
    async fn put_run(&mut self, r: &Run) -> Result<(), StoreError>;
    /// An active, unexpired grant of `subject` on `resource`, or on the workflow `part_of`
    /// (rule 5).
    async fn active_grant_covering(
        &mut self,
        subject: &str,
        resource: &str,
        part_of: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Grant>, StoreError>;
    /// Reads these grants and requests ahead, in as few statements as possible, so that the
    /// reads that follow in this job are cheap. A hint: every read works without it.
    async fn warm(&mut self, grants: &[&str], requests: &[&str]) -> Result<(), StoreError>;
    /// Grants of `subject` on `resource` that hold access now or are being given it
    /// (`activating` or `active`), this job's own unsaved changes included (rule 18).
    async fn live_grants(
        &mut self,
        subject: &str,
        resource: &str,
    ) -> Result<Vec<Grant>, StoreError>;
    /// When a job is due, if it exists.
    async fn scheduled(
        &mut self,
        kind: TimerKind,
        key: &str,
    ) -> Result<Option<Timestamp>, StoreError>;
    /// Appends an audit event to the hash chain; returns its sequence number.
    async fn append(&mut self, event: &Event, at: Timestamp) -> Result<i64, StoreError>;
    /// Hands over the events this transaction appended since the last call, each with its
    /// sequence number and time, so that the notifications they cause are written in the
    /// same transaction (rule 32).
    fn take_appended(&mut self) -> Vec<(i64, Timestamp, Event)>;
    /// Writes a job, or moves it if it exists (one row per kind and key).
    async fn schedule(
        &mut self,
        kind: TimerKind,
        key: &str,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Writes a job already claimed by this store's holder until `until`: work this process
    /// starts at once, which another holder takes over (when it is due) if this one stops
    /// renewing the claim.
    async fn schedule_held(
        &mut self,
        kind: TimerKind,
        key: &str,
        at: Timestamp,
        until: Timestamp,
    ) -> Result<(), StoreError>;
    /// Removes a job, unless another holder has a live claim on it at `now`: a call is
    /// running, and a revoke must be able to see that it is (rule 17). That holder removes
    /// the job when it records the result. A job this transaction claimed, or found it
    /// [`holds`](Tx::holds), is removed whatever its claim.
    async fn unschedule(
        &mut self,
        kind: TimerKind,
        key: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Marks a due job as taken by this store's holder until `until`; false if it is gone,
    /// not due, or held by a live claim.
    async fn claim(
        &mut self,
        kind: TimerKind,
        key: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Whether this store's holder has a live claim on the job at `now`: what a holder checks
    /// before it records the job's result, so that one whose lease lapsed (and was perhaps
    /// taken over) cannot complete it.
    async fn holds(
        &mut self,
        kind: TimerKind,
        key: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Whether anyone has a live claim on the job at `now`.
    async fn claimed(
        &mut self,
        kind: TimerKind,
        key: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// The heartbeat: extends every claim of this store's holder that is live at `now` (jobs
    /// and deliveries) to `until`.
    async fn renew(&mut self, now: Timestamp, until: Timestamp) -> Result<(), StoreError>;
    async fn put_token(
        &mut self,
        hash: &str,
        subject: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Asks the store to wake the worker once this transaction commits: a job is due now.
    fn signal_due(&mut self);

    /// Keeps a request's callback secret, to sign its deliveries.
    async fn put_callback_secret(&mut self, request: &str, secret: &str) -> Result<(), StoreError>;
    /// Links a Slack account to the Countersign user it acts as (rule 35), replacing the
    /// account's earlier link.
    async fn put_slack_link(
        &mut self,
        account: &str,
        person: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Removes a Slack account's link (`/countersign unlink`): it acts as nobody.
    async fn delete_slack_link(&mut self, account: &str) -> Result<(), StoreError>;
    /// Records a message posted to Slack about a request (its channel and `ts`), so that
    /// every copy can be updated (rule 36). Recording one twice keeps one.
    async fn put_slack_message(
        &mut self,
        request: &str,
        channel: &str,
        ts: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Stores a Slack interaction under its key, unless one is stored under that key already
    /// (rule 35: Slack's second delivery of one is not acted on again). True if this call
    /// stored it. Interactions received more than [`SLACK_INTERACTION_TTL_MS`] before `now`
    /// are forgotten, a few per call.
    async fn put_slack_interaction(
        &mut self,
        key: &str,
        payload: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// A stored Slack interaction's payload, as it was received.
    async fn slack_interaction(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    async fn delivery(&mut self, id: &str) -> Result<Option<Delivery>, StoreError>;
    /// Writes a delivery; `claimed_until` marks it taken by a worker until then.
    async fn put_delivery(
        &mut self,
        d: &Delivery,
        claimed_until: Option<Timestamp>,
    ) -> Result<(), StoreError>;
    /// Takes a pending delivery that is due and not claimed, until `until`; `None` if it is
    /// not there, not due, taken, or its receiver (`lane`) already has `per_lane` live claims
    /// (by any holder: the limit is counted across replicas).
    async fn claim_delivery(
        &mut self,
        id: &str,
        now: Timestamp,
        until: Timestamp,
        per_lane: u32,
    ) -> Result<Option<Delivery>, StoreError>;
    /// Whether this store's holder has a live claim on the delivery at `now`.
    async fn holds_delivery(&mut self, id: &str, now: Timestamp) -> Result<bool, StoreError>;
    /// The live (unexpired at `now`) idempotency record of a caller's key.
    async fn idempotency(
        &mut self,
        subject: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRow>, StoreError>;
    /// Writes (or replaces) an idempotency record, and forgets a few expired ones.
    async fn put_idempotency(
        &mut self,
        row: &IdempotencyRow,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Forgets a caller's key (its first creation failed).
    async fn delete_idempotency(&mut self, subject: &str, key: &str) -> Result<(), StoreError>;
    /// Writes (or replaces) a portal session, and forgets a few expired ones.
    async fn put_session(&mut self, row: &SessionRow, now: Timestamp) -> Result<(), StoreError>;
    /// Ends a portal session (sign-out, or the id rotated at sign-in).
    async fn delete_session(&mut self, hash: &str) -> Result<(), StoreError>;
    /// Reads and ends a session in one step, if it is live at `now`: what is kept under
    /// `hash` can be taken once, whichever replica asks (a sign-in under way).
    async fn take_session(
        &mut self,
        hash: &str,
        now: Timestamp,
    ) -> Result<Option<SessionRow>, StoreError>;
    /// How many sessions whose hash starts with `prefix` are live at `now`.
    async fn count_sessions(&mut self, prefix: &str, now: Timestamp) -> Result<u64, StoreError>;
}

/// The most Slack messages of one request that are kept up to date.
pub const MAX_SLACK_MESSAGES: u32 = 200;

/// How long a stored Slack interaction is remembered: Slack redelivers within minutes, and a
/// replay after a day would act on what nobody expects any more.
pub const SLACK_INTERACTION_TTL_MS: i64 = 24 * 3600 * 1000;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Runs a job in a transaction and returns once its changes are durable (or not made).
    async fn write(&self, job: WriteJob) -> JobResult;

    async fn request(&self, id: &str) -> Result<Option<Request>, StoreError>;
    async fn list_requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError>;
    async fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError>;
    async fn list_grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError>;
    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError>;
    async fn list_runs(&self, f: &RunFilter) -> Result<Vec<Run>, StoreError>;
    /// Audit events with `seq > after`, in order.
    async fn events(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;
    async fn due_jobs(&self, now: Timestamp, limit: u32) -> Result<Vec<DueJob>, StoreError>;
    /// What the reconciliation sweep checks for one resource: its active grants, and for each
    /// subject that no longer holds any grant of it, the latest ended one.
    async fn reconcile_candidates(&self, resource: &str) -> Result<Vec<Grant>, StoreError>;
    /// The earliest time after `after` at which a job becomes due (or its claim runs out), so
    /// that a worker knows how long it may wait.
    async fn next_due(&self, after: Timestamp) -> Result<Option<Timestamp>, StoreError>;
    async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError>;
    /// The portal session with this id hash, unless it has expired by `now`.
    async fn session(&self, hash: &str, now: Timestamp) -> Result<Option<SessionRow>, StoreError>;
    async fn callback_secret(&self, request: &str) -> Result<Option<String>, StoreError>;
    /// The Countersign user a Slack account is linked to.
    async fn slack_person(&self, account: &str) -> Result<Option<String>, StoreError>;
    /// The Slack account a person linked last, if any.
    async fn slack_account(&self, person: &str) -> Result<Option<String>, StoreError>;
    /// The messages posted about a request, as `(channel, ts)`, oldest first (at most
    /// [`MAX_SLACK_MESSAGES`]).
    async fn slack_messages(&self, request: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Deliveries due at `now` and not claimed, oldest first, leaving out the receivers that
    /// already have `per_lane` live claims (across replicas).
    async fn due_deliveries(
        &self,
        now: Timestamp,
        per_lane: u32,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// The receiver (`Delivery::lane`) of each of these deliveries that exists, as
    /// `(id, lane)`: at most 256 ids are looked up.
    async fn delivery_lanes(&self, ids: &[String]) -> Result<Vec<(String, String)>, StoreError>;
    /// The deliveries of one request.
    async fn deliveries(&self, request: &str) -> Result<Vec<Delivery>, StoreError>;
    /// Pending requests, active grants, unfinished deliveries and the due-job backlog at
    /// `now`.
    async fn counts(&self, now: Timestamp) -> Result<Counts, StoreError>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Notified after a commit that scheduled a job due at once (a connector call): this
    /// store's own, and on PostgreSQL other replicas' (`LISTEN`/`NOTIFY`, unless
    /// `poll_only`). Workers poll besides.
    fn due_signal(&self) -> std::sync::Arc<tokio::sync::Notify>;
    /// Who this store is in the claims it takes (unique per opening).
    fn holder(&self) -> &str;
    /// The head of the audit chain as this store last committed it (or read it when it
    /// opened), so that what a checkpoint signs is a chain this process saw committed and not
    /// whatever the database holds now.
    fn head(&self) -> chain::Head;
    /// Stops the writer after the jobs already queued.
    async fn close(&self);
}

/// How a store is opened.
#[derive(Clone)]
pub struct Options {
    /// Connections to the database: the read pool (SQLite) or the whole pool (PostgreSQL,
    /// where the writer takes one of them for each group).
    pub pool: u32,
    /// Who this store is in the claims it takes; a fresh id when empty.
    pub holder: String,
    /// PostgreSQL: do not `LISTEN` for other replicas' wake-ups, only poll (for connection
    /// poolers in transaction mode, which cannot hold a `LISTEN`).
    pub poll_only: bool,
    pub metrics: metrics::WriterMetrics,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool: 8,
            holder: String::new(),
            poll_only: false,
            metrics: metrics::WriterMetrics::default(),
        }
    }
}

/// Opens the store a database URL names: `sqlite://path` (or `sqlite:path`) or
/// `postgres://…` (`postgresql://…`), running its migrations first.
pub async fn open(url: &str, options: Options) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    let mut options = options;
    if options.holder.is_empty() {
        options.holder = uuid::Uuid::now_v7().to_string();
    }
    let store = match backend(url)? {
        Backend::Sqlite(path) => {
            sql::SqlStore::start_sqlite(sqlite::connect(path, options.pool).await?, &options)
                .await?
        }
        Backend::Postgres => {
            sql::SqlStore::start_postgres(postgres::connect(url, options.pool).await?, &options)
                .await?
        }
    };
    Ok(std::sync::Arc::new(store))
}

enum Backend<'a> {
    Sqlite(&'a str),
    Postgres,
}

fn backend(url: &str) -> Result<Backend<'_>, StoreError> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return Ok(Backend::Sqlite(path));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Backend::Postgres);
    }
    // Only the scheme: the rest of a URL may hold a password.
    Err(StoreError::BadUrl(
        url.split("://").next().unwrap_or_default().to_owned(),
    ))
}

/// Connects to the database a URL names and runs its migrations, without starting a writer.
async fn connect(url: &str, pool: u32) -> Result<(db::Conn, db::Pool), StoreError> {
    match backend(url)? {
        Backend::Sqlite(path) => sqlite::connect(path, pool).await,
        Backend::Postgres => postgres::connect(url, pool).await,
    }
}
