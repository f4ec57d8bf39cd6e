//! The writer: one task per store that groups the write jobs waiting at a moment into one
//! transaction, on either database.
//!
//! Grouping is what lets durability not cost throughput: while one transaction commits (and
//! waits for its fsync), the next jobs queue up, and they are all committed by the next single
//! fsync. A job's writes are held in memory until the job returns: a job that refuses has
//! written nothing and is simply dropped, and a successful one is flushed into the group's
//! transaction (a few multi-row statements). If anything fails while flushing or committing,
//! the whole group is rolled back and every job in it is told so.
//!
//! Many writers (replicas on one PostgreSQL database, or a tool beside the server on one
//! SQLite file) take turns: every group first locks the one row of `chain_head`, which holds
//! the head of the audit chain and a version that every group bumps. So transactions that
//! write are serialised, each one reads what the previous one committed, and two replicas
//! deciding the same request at once produce one outcome (the second sees the first's
//! decision). The audit chain is one total order anyway: every state change appends to it, so
//! finer locks would buy no concurrency. A writer keeps the live requests and grants it last
//! wrote, and trusts them only while the version it reads is the one it last committed.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use domain::{Delivery, Event, Grant, GrantState, Request, Run, TimerKind, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::chain::{self, Head};
use crate::db::{Arg, Conn, Dialect, Pool, Row, args, params, values_sql};
use crate::metrics::{Stopwatch, WriterMetrics};
use crate::{IdempotencyRow, JobFailure, JobResult, SessionRow, StoreError, Tx, WriteJob};

/// The most jobs committed together. Larger groups amortise the fsync further but make every
/// reply in the group wait for the slowest job.
const MAX_GROUP: usize = 512;

/// Rows per multi-row statement: SQLite allows 32766 bound parameters (PostgreSQL 65535), and
/// statements of a few hundred rows already amortise the per-statement cost.
pub(crate) const ROWS: usize = 400;

/// The most live requests a writer keeps. A request's snapshot is large (its steps, reviews
/// and fields: several KiB), so that past this the cache starts over, and its memory stays
/// bounded whatever the number of pending requests.
const REQUESTS_MAX: usize = 10_000;
/// The most live grants a writer keeps. A grant's snapshot is small (under 1 KiB), and a
/// burst of expiries reads every one of them: 100,000 keeps a burst of that size from reading
/// them back.
const GRANTS_MAX: usize = 100_000;

pub(crate) enum Msg {
    Job(WriteJob, oneshot::Sender<JobResult>),
    Close,
}

/// Where the writer's connection comes from.
pub(crate) enum Source {
    /// SQLite: one connection, kept.
    Sqlite(Option<Conn>),
    /// PostgreSQL: a connection of the pool, kept between groups (so that reads filling the
    /// pool never hold the writer up), and replaced by a fresh one after a failed group (so
    /// that a broken connection does not stay).
    Postgres {
        pool: sqlx::PgPool,
        kept: Option<Conn>,
    },
}

impl Source {
    pub(crate) fn postgres(pool: &Pool) -> Source {
        match pool {
            Pool::Postgres(p) => Source::Postgres {
                pool: p.clone(),
                kept: None,
            },
            // Not reached: a SQLite store starts with its own connection.
            Pool::Sqlite(_) => Source::Sqlite(None),
        }
    }

    async fn take(&mut self) -> Result<Conn, StoreError> {
        match self {
            Source::Sqlite(c) => c.take().ok_or(StoreError::Closed),
            Source::Postgres { pool, kept } => match kept.take() {
                Some(c) => Ok(c),
                None => Ok(Conn::postgres(pool.acquire().await?)),
            },
        }
    }

    /// Takes the connection back after a group, rolled back already if it failed.
    fn give_back(&mut self, mut conn: Conn, failed: bool) {
        conn.clear_poison();
        match self {
            Source::Sqlite(slot) => *slot = Some(conn),
            Source::Postgres { kept, .. } if !failed => *kept = Some(conn),
            Source::Postgres { .. } => {}
        }
    }

    async fn close(&mut self) {
        if let Source::Sqlite(c) = self
            && let Some(c) = c.take()
        {
            c.close().await;
        }
    }
}

pub(crate) struct Writer {
    pub(crate) source: Source,
    /// Who this store is, in the claims it takes.
    pub(crate) holder: Arc<str>,
    /// Told the head after each commit: the chain as this process wrote it, which a later
    /// change to the database cannot alter (what checkpoints sign).
    pub(crate) committed: watch::Sender<Head>,
    /// The `chain_head` version this writer last committed; the cache is current only while
    /// the database still has it.
    pub(crate) version: Option<i64>,
    pub(crate) cache: Cache,
    pub(crate) due: Arc<Notify>,
    pub(crate) metrics: WriterMetrics,
}

impl Writer {
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut closing = false;
        while !closing {
            let mut group = vec![];
            match rx.recv().await {
                Some(Msg::Job(job, reply)) => group.push((job, reply)),
                Some(Msg::Close) | None => break,
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Msg::Job(job, reply)) => group.push((job, reply)),
                    Ok(Msg::Close) => {
                        closing = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.run_group(group).await;
        }
        self.source.close().await;
    }

    async fn run_group(&mut self, group: Vec<(WriteJob, oneshot::Sender<JobResult>)>) {
        self.metrics.group_jobs.record(group.len() as f64);
        let began = Stopwatch::start();
        let mut conn = match self.source.take().await {
            Ok(c) => c,
            Err(e) => return fail_all(group, &e.to_string()),
        };
        let (mut head, version) = match begin(&mut conn).await {
            Ok(v) => v,
            Err(e) => {
                let _ = conn.exec("ROLLBACK", vec![]).await;
                self.source.give_back(conn, true);
                return fail_all(group, &e.to_string());
            }
        };
        if self.version != Some(version) {
            // Another writer committed since this one last did: what it remembers is stale.
            self.cache.clear();
        }
        let mut done = Vec::with_capacity(group.len());
        let mut failed: Option<String> = None;
        let mut due_now = false;
        // --- request_people (lists, issue 14 item 3): the requests the group wrote, whose
        // rows are rewritten once, before the commit.
        let mut people: Vec<Request> = vec![];
        // --- end of request_people.
        // The writes of the group's jobs so far, not sent yet: they go to the database in a
        // few multi-row statements when a job next reads it, or at the end of the group, so
        // that a group of jobs that only write costs a handful of round trips, not a few per
        // job (on PostgreSQL every statement is one).
        let mut unflushed = Pending::default();
        let mut broken: Option<String> = None;
        for (job, reply) in group {
            if failed.is_some() {
                done.push((reply, Err(JobFailure::Store(StoreError::Closed))));
                continue;
            }
            let saved = head.clone();
            let mut tx = BufferedTx {
                conn: &mut conn,
                head: &mut head,
                cache: &mut self.cache,
                holder: &self.holder,
                pending: Pending::default(),
                unflushed: &mut unflushed,
                broken: &mut broken,
            };
            let result = job(&mut tx).await;
            let pending = tx.pending;
            if let Some(e) = &broken {
                // Sending earlier jobs' writes failed: the group is lost, whatever this job
                // answered.
                failed = Some(e.clone());
            } else if result.is_err() {
                head = saved;
            } else {
                due_now |= pending.due_now;
                for r in &pending.requests {
                    self.cache.put_request(r);
                }
                for g in &pending.grants {
                    self.cache.put_grant(g);
                }
                people.extend(pending.requests.iter().cloned());
                unflushed.absorb(pending);
            }
            done.push((reply, result));
        }
        if failed.is_none()
            && !unflushed.is_empty()
            && let Err(e) = flush(&mut conn, &self.holder, &unflushed).await
        {
            failed = Some(e.to_string());
        }
        // --- request_people: who sees each request the group wrote, and who may decide it
        // now, written once per group in the group's transaction (a statement per job would
        // cost the writer's throughput: every statement is a round trip to the database).
        if failed.is_none()
            && let Err(e) = crate::people::write_latest(&mut conn, people).await
        {
            failed = Some(e.to_string());
        }
        // --- end of request_people.
        // On PostgreSQL a failed statement aborts the transaction, and `COMMIT` then rolls it
        // back without an error: the connection remembers that a statement failed.
        if failed.is_none() && conn.poisoned() {
            failed = Some("a statement of the group failed".into());
        }
        let committed = match failed {
            None => {
                let commit = Stopwatch::start();
                let r = finish(&mut conn, &head, version + 1, due_now).await;
                self.metrics.commit_seconds.record(commit.elapsed());
                r.map_err(|e| e.to_string())
            }
            Some(e) => Err(e),
        };
        self.metrics.transaction_seconds.record(began.elapsed());
        match committed {
            Ok(()) => {
                self.version = Some(version + 1);
                self.source.give_back(conn, false);
                if self.committed.borrow().seq != head.seq {
                    self.committed.send_replace(head);
                }
                for (reply, result) in done {
                    let _ = reply.send(result);
                }
                if due_now {
                    self.due.notify_one();
                }
            }
            Err(msg) => {
                // Nothing of this group is durable: roll back, forget what the cache learned
                // from it, and tell every job.
                tracing::error!(error = %msg, "write group failed; it is rolled back");
                self.metrics.rollbacks.increment(1);
                let _ = conn.exec("ROLLBACK", vec![]).await;
                self.source.give_back(conn, true);
                self.cache.clear();
                self.version = None;
                for (reply, _) in done {
                    let _ = reply.send(Err(JobFailure::Store(StoreError::Corrupt(format!(
                        "the write failed: {msg}"
                    )))));
                }
            }
        }
    }
}

fn fail_all(group: Vec<(WriteJob, oneshot::Sender<JobResult>)>, msg: &str) {
    tracing::error!(error = %msg, "cannot start a write group");
    for (_, reply) in group {
        let _ = reply.send(Err(JobFailure::Store(StoreError::Corrupt(msg.to_owned()))));
    }
}

/// Starts a group's transaction and takes the writers' turn: the lock on the chain head.
async fn begin(conn: &mut Conn) -> Result<(Head, i64), StoreError> {
    let lock = match conn.dialect() {
        // `IMMEDIATE` takes SQLite's write lock at once.
        Dialect::Sqlite => {
            conn.exec("BEGIN IMMEDIATE", vec![]).await?;
            "SELECT seq, hash, version FROM chain_head WHERE id = 1"
        }
        Dialect::Postgres => {
            conn.exec("BEGIN", vec![]).await?;
            "SELECT seq, hash, version FROM chain_head WHERE id = 1 FOR UPDATE"
        }
    };
    let row = conn
        .row(lock, vec![])
        .await?
        .ok_or_else(|| StoreError::Corrupt("the chain head row is missing".into()))?;
    Ok((
        Head {
            seq: row.int(0)?,
            hash: row.owned_text(1)?,
        },
        row.int(2)?,
    ))
}

/// The channel on which PostgreSQL stores tell each other that a job is due now.
pub(crate) const DUE_CHANNEL: &str = "countersign_due";

/// Records the new head and version, and commits. On PostgreSQL, a group that made a job due
/// now also tells the other replicas' workers (`NOTIFY` is delivered at the commit).
async fn finish(
    conn: &mut Conn,
    head: &Head,
    version: i64,
    due_now: bool,
) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE chain_head SET seq = $1, hash = $2, version = $3 WHERE id = 1",
        args![head.seq, &head.hash, version],
    )
    .await?;
    if due_now && conn.dialect() == Dialect::Postgres {
        conn.exec(&format!("NOTIFY {DUE_CHANNEL}"), vec![]).await?;
    }
    conn.exec("COMMIT", vec![]).await?;
    if conn.poisoned() {
        return Err(StoreError::Corrupt("the commit failed".into()));
    }
    Ok(())
}

/// Live requests and grants as this writer last wrote them. A hit spares a read for every
/// decision on a pending request. Finished objects leave the cache, and it is emptied whenever
/// a group is rolled back, another writer committed, or it grows past its bound.
#[derive(Default)]
pub(crate) struct Cache {
    requests: HashMap<String, Request>,
    grants: HashMap<String, Grant>,
}

/// Records what was just written. An entry is always replaced, never left stale; a finished
/// object leaves; at the bound the map starts over rather than refusing new entries.
fn remember<T: Clone>(map: &mut HashMap<String, T>, max: usize, id: &str, value: &T, live: bool) {
    if !live {
        map.remove(id);
        return;
    }
    if map.len() >= max && !map.contains_key(id) {
        map.clear();
        map.shrink_to(max);
    }
    map.insert(id.to_owned(), value.clone());
}

impl Cache {
    fn put_request(&mut self, r: &Request) {
        remember(
            &mut self.requests,
            REQUESTS_MAX,
            &r.id,
            r,
            !r.state.is_terminal(),
        );
    }
    fn put_grant(&mut self, g: &Grant) {
        remember(&mut self.grants, GRANTS_MAX, &g.id, g, !g.state.is_final());
    }
    fn clear(&mut self) {
        self.requests.clear();
        self.grants.clear();
    }
}

/// One job's writes, held until the job succeeds. A job that refuses has written nothing, so
/// no savepoint is needed to undo it.
#[derive(Default)]
struct Pending {
    requests: Vec<Request>,
    /// Position of each request in `requests`, once several jobs' writes are merged.
    request_at: HashMap<String, usize>,
    grants: Vec<Grant>,
    /// Position of each grant in `grants`.
    grant_at: HashMap<String, usize>,
    events: Vec<EventRow>,
    /// The events appended and not yet handed over (`take_appended`).
    appended: Vec<(i64, Timestamp, Event)>,
    jobs: Vec<JobOp>,
    tokens: Vec<(String, String, i64)>,
    secrets: Vec<(String, String)>,
    /// Slack links written: (account, person, linked_at).
    /// Slack links written (account, Some((person, linked_at))) or removed (account, None),
    /// in order.
    slack_links: Vec<(String, Option<(String, i64)>)>,
    /// Slack messages posted: (request, channel, ts, posted_at).
    slack_messages: Vec<(String, String, String, i64)>,
    /// Slack interactions stored: (key, payload, received_at).
    slack_interactions: Vec<(String, String, i64)>,
    /// Slack interactions received before this are forgotten (a few per job).
    prune_slack_interactions: Option<i64>,
    /// Runs written (last write of each wins).
    runs: Vec<Run>,
    /// Deliveries with their claim (last write of each wins).
    deliveries: Vec<(Delivery, Option<i64>)>,
    /// Position of each delivery in `deliveries`.
    delivery_at: HashMap<String, usize>,
    idempotency: Vec<IdempotencyRow>,
    /// Expired idempotency records older than this are forgotten (a few per job).
    prune_idempotency: Option<i64>,
    /// Portal sessions written or ended, in order.
    sessions: Vec<SessionOp>,
    /// Sessions that expired before this are forgotten (a few per job).
    prune_sessions: Option<i64>,
    /// This holder's live claims are extended: (now, until).
    renew: Option<(i64, i64)>,
    /// Jobs this transaction claimed or found it holds.
    held: Vec<(TimerKind, String)>,
    due_now: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.grants.is_empty()
            && self.events.is_empty()
            && self.jobs.is_empty()
            && self.tokens.is_empty()
            && self.secrets.is_empty()
            && self.slack_links.is_empty()
            && self.slack_messages.is_empty()
            && self.slack_interactions.is_empty()
            && self.prune_slack_interactions.is_none()
            && self.deliveries.is_empty()
            && self.runs.is_empty()
            && self.idempotency.is_empty()
            && self.prune_idempotency.is_none()
            && self.sessions.is_empty()
            && self.prune_sessions.is_none()
            && self.renew.is_none()
    }

    /// Adds a later job's writes to these, as if one job had made both: a later write of the
    /// same object replaces the earlier one, and operations keep their order.
    fn absorb(&mut self, later: Pending) {
        if self.is_empty() {
            *self = later;
            // A job keeps its requests unique without the index; merging needs it.
            self.request_at = (self.requests.iter().enumerate())
                .map(|(i, r)| (r.id.clone(), i))
                .collect();
            return;
        }
        for r in later.requests {
            match self.request_at.get(&r.id) {
                Some(&i) => self.requests[i] = r,
                None => {
                    self.request_at.insert(r.id.clone(), self.requests.len());
                    self.requests.push(r);
                }
            }
        }
        for g in later.grants {
            match self.grant_at.get(&g.id) {
                Some(&i) => self.grants[i] = g,
                None => {
                    self.grant_at.insert(g.id.clone(), self.grants.len());
                    self.grants.push(g);
                }
            }
        }
        self.events.extend(later.events);
        self.jobs.extend(later.jobs);
        self.tokens.extend(later.tokens);
        self.secrets.extend(later.secrets);
        self.slack_links.extend(later.slack_links);
        self.slack_messages.extend(later.slack_messages);
        self.slack_interactions.extend(later.slack_interactions);
        self.prune_slack_interactions = self
            .prune_slack_interactions
            .max(later.prune_slack_interactions);
        for (d, claimed) in later.deliveries {
            self.put_delivery(d, claimed);
        }
        for r in later.runs {
            self.put_run(r);
        }
        self.idempotency.extend(later.idempotency);
        self.prune_idempotency = self.prune_idempotency.max(later.prune_idempotency);
        self.sessions.extend(later.sessions);
        self.prune_sessions = self.prune_sessions.max(later.prune_sessions);
        self.renew = match (self.renew, later.renew) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Records a run's write, replacing this job's earlier write of it.
    fn put_run(&mut self, r: Run) {
        self.runs.retain(|p| p.id != r.id);
        self.runs.push(r);
    }

    /// Records a delivery's write, replacing this job's earlier write of it. Indexed by id: an
    /// expiry burst writes a notification per grant in one job.
    fn put_delivery(&mut self, d: Delivery, claimed_until: Option<i64>) {
        match self.delivery_at.get(&d.id) {
            Some(&i) => self.deliveries[i] = (d, claimed_until),
            None => {
                self.delivery_at.insert(d.id.clone(), self.deliveries.len());
                self.deliveries.push((d, claimed_until));
            }
        }
    }
}

enum SessionOp {
    Put(SessionRow),
    Delete(String),
}

/// An audit event row.
struct EventRow {
    seq: i64,
    at: i64,
    kind: String,
    request: Option<String>,
    grant: Option<String>,
    body: String,
    prev_hash: String,
    hash: String,
}

enum JobOp {
    Put {
        kind: TimerKind,
        key: String,
        at: i64,
        /// Set when the job is claimed by this store's holder.
        claimed_until: Option<i64>,
    },
    Delete {
        kind: TimerKind,
        key: String,
        /// Kept if claimed by someone at this time; `None` removes it whatever its claim.
        unless_claimed_at: Option<i64>,
    },
}

/// Runs `rows` through a multi-row statement, [`ROWS`] rows at a time.
pub(crate) async fn insert_rows<T>(
    conn: &mut Conn,
    rows: &[T],
    (head, width, tail): (&str, usize, &str),
    bind: impl Fn(&T, &mut Vec<Arg>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS) {
        let sql = values_sql(head, width, chunk.len(), tail);
        let mut a = Vec::with_capacity(chunk.len() * width);
        for r in chunk {
            bind(r, &mut a)?;
        }
        conn.exec(&sql, a).await?;
    }
    Ok(())
}

/// Writes a job's changes: a few multi-row statements rather than one per row, because each
/// statement costs a round trip (expiring 100,000 grants at once is hundreds of thousands of
/// rows).
async fn flush(conn: &mut Conn, holder: &str, p: &Pending) -> Result<(), StoreError> {
    insert_rows(
        conn,
        &p.requests,
        (
            "INSERT INTO requests (id, resource, requester, state, created_at, body) VALUES ",
            6,
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
        ),
        |r, a| {
            a.extend(args![
                &r.id,
                &r.resource,
                &r.requester,
                r.state.as_str(),
                r.created_at.millis(),
                to_json(r)?,
            ]);
            Ok(())
        },
    )
    .await?;
    insert_rows(
        conn,
        &p.grants,
        (
            "INSERT INTO grants (id, request_id, subject, resource, workflow, state, created_at, body) VALUES ",
            8,
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
        ),
        |g, a| {
            a.extend(args![
                &g.id,
                &g.spec.request,
                &g.spec.subject,
                &g.spec.resource,
                &g.spec.workflow,
                g.state.as_str(),
                g.created_at.millis(),
                to_json(g)?,
            ]);
            Ok(())
        },
    )
    .await?;
    insert_rows(
        conn,
        &p.events,
        (
            "INSERT INTO events (seq, at, kind, request_id, grant_id, body, prev_hash, hash) VALUES ",
            8,
            "",
        ),
        |e, a| {
            a.extend(args![
                e.seq,
                e.at,
                &e.kind,
                &e.request,
                &e.grant,
                &e.body,
                &e.prev_hash,
                &e.hash,
            ]);
            Ok(())
        },
    )
    .await?;
    // Only the last operation on a job counts (a put is a whole upsert; a delete removes it),
    // so the operations collapse to one per job and run as two kinds of statement.
    let mut last: HashMap<(TimerKind, &str), &JobOp> = HashMap::with_capacity(p.jobs.len());
    for op in &p.jobs {
        let id = match op {
            JobOp::Put { kind, key, .. } | JobOp::Delete { kind, key, .. } => (*kind, key.as_str()),
        };
        last.insert(id, op);
    }
    let mut puts = vec![];
    let mut deletes: HashMap<(TimerKind, Option<i64>), Vec<&str>> = HashMap::new();
    for op in last.into_values() {
        match op {
            JobOp::Put { .. } => puts.push(op),
            JobOp::Delete {
                kind,
                key,
                unless_claimed_at,
            } => deletes
                .entry((*kind, *unless_claimed_at))
                .or_default()
                .push(key),
        }
    }
    insert_rows(
        conn,
        &puts,
        (
            "INSERT INTO jobs (kind, key, due_at, claimed_until, claimed_by) VALUES ",
            5,
            " ON CONFLICT (kind, key) DO UPDATE SET due_at = excluded.due_at,
               claimed_until = excluded.claimed_until, claimed_by = excluded.claimed_by",
        ),
        |op, a| {
            if let JobOp::Put {
                kind,
                key,
                at,
                claimed_until,
            } = op
            {
                let by = claimed_until.map(|_| holder);
                a.extend(args![kind.as_str(), key, *at, *claimed_until, by]);
            }
            Ok(())
        },
    )
    .await?;
    for ((kind, unless_claimed_at), keys) in &deletes {
        for chunk in keys.chunks(ROWS) {
            // The claim is tested through `coalesce`, which no index serves, so that the
            // planner finds the rows by the primary key (a plan through the claim index would
            // read every job row for `claimed_until IS NULL`).
            let (sql, mut a) = match unless_claimed_at {
                Some(at) => (
                    format!(
                        "DELETE FROM jobs WHERE kind = $1 AND coalesce(claimed_until, 0) <= $2
                         AND key IN ({})",
                        params(3, chunk.len())
                    ),
                    args![kind.as_str(), *at],
                ),
                None => (
                    format!(
                        "DELETE FROM jobs WHERE kind = $1 AND key IN ({})",
                        params(2, chunk.len())
                    ),
                    args![kind.as_str()],
                ),
            };
            a.extend(chunk.iter().map(|k| Arg::from(*k)));
            conn.exec(&sql, a).await?;
        }
    }
    // A later link (or removal) of the same account replaces the earlier one, in order.
    for (account, link) in &p.slack_links {
        match link {
            Some((person, at)) => {
                conn.exec(
                    "INSERT INTO slack_links (account, person, linked_at) VALUES ($1, $2, $3)
                     ON CONFLICT (account) DO UPDATE SET person = excluded.person,
                       linked_at = excluded.linked_at",
                    args![account, person, *at],
                )
                .await?;
            }
            None => {
                conn.exec("DELETE FROM slack_links WHERE account = $1", args![account])
                    .await?;
            }
        }
    }
    for (request, channel, ts, at) in &p.slack_messages {
        conn.exec(
            "INSERT INTO slack_messages (request_id, channel, ts, posted_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            args![request, channel, ts, *at],
        )
        .await?;
    }
    if let Some(before) = p.prune_slack_interactions {
        conn.exec(
            "DELETE FROM slack_interactions WHERE key IN
               (SELECT key FROM slack_interactions WHERE received_at < $1 LIMIT 64)",
            args![before],
        )
        .await?;
    }
    for (key, payload, at) in &p.slack_interactions {
        conn.exec(
            "INSERT INTO slack_interactions (key, payload, received_at)
             VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
            args![key, payload, *at],
        )
        .await?;
    }
    for r in &p.runs {
        conn.exec(
            "INSERT INTO runs (id, runbook, runner, state, created_at, body)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
            args![
                &r.id,
                &r.runbook,
                &r.runner,
                r.state.as_str(),
                r.created_at.millis(),
                to_json(r)?,
            ],
        )
        .await?;
    }
    for (request, secret) in &p.secrets {
        conn.exec(
            "INSERT INTO callback_secrets (request_id, secret) VALUES ($1, $2)",
            args![request, secret],
        )
        .await?;
    }
    // Several rows per statement: an expiry burst writes a notification per grant.
    insert_rows(
        conn,
        &p.deliveries,
        (
            "INSERT INTO deliveries
               (id, request_id, lane, state, next_at, claimed_until, claimed_by, created_at, body)
             VALUES ",
            9,
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, next_at = excluded.next_at,
               claimed_until = excluded.claimed_until, claimed_by = excluded.claimed_by,
               body = excluded.body",
        ),
        |(d, claimed_until), a| {
            a.extend(args![
                &d.id,
                &d.request,
                d.lane(),
                d.state.as_str(),
                d.next_at.map(Timestamp::millis),
                *claimed_until,
                claimed_until.map(|_| holder),
                d.created_at.millis(),
                to_json(d)?,
            ]);
            Ok(())
        },
    )
    .await?;
    if let Some((now, until)) = p.renew {
        for table in ["jobs", "deliveries"] {
            conn.exec(
                &format!(
                    "UPDATE {table} SET claimed_until = $1
                     WHERE claimed_by = $2 AND claimed_until > $3 AND claimed_until < $1"
                ),
                args![until, holder, now],
            )
            .await?;
        }
    }
    if let Some(before) = p.prune_idempotency {
        conn.exec(
            "DELETE FROM idempotency WHERE (subject, key) IN
               (SELECT subject, key FROM idempotency WHERE expires_at <= $1 LIMIT 64)",
            args![before],
        )
        .await?;
    }
    for r in &p.idempotency {
        conn.exec(
            "INSERT INTO idempotency
               (subject, key, body_hash, request_id, response, expires_at, in_flight_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (subject, key) DO UPDATE SET body_hash = excluded.body_hash,
               request_id = excluded.request_id, response = excluded.response,
               expires_at = excluded.expires_at, in_flight_until = excluded.in_flight_until",
            args![
                &r.subject,
                &r.key,
                &r.body_hash,
                &r.request_id,
                &r.response,
                r.expires_at.millis(),
                r.in_flight_until.map(Timestamp::millis),
            ],
        )
        .await?;
    }
    if let Some(before) = p.prune_sessions {
        conn.exec(
            "DELETE FROM sessions WHERE hash IN
               (SELECT hash FROM sessions WHERE expires_at <= $1 LIMIT 64)",
            args![before],
        )
        .await?;
    }
    for op in &p.sessions {
        match op {
            SessionOp::Put(r) => {
                conn.exec(
                    "INSERT INTO sessions (hash, subject, csrf, data, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (hash) DO UPDATE SET subject = excluded.subject,
                       csrf = excluded.csrf, data = excluded.data,
                       expires_at = excluded.expires_at",
                    args![
                        &r.hash,
                        &r.subject,
                        &r.csrf,
                        &r.data,
                        r.created_at.millis(),
                        r.expires_at.millis(),
                    ],
                )
                .await?;
            }
            SessionOp::Delete(hash) => {
                conn.exec("DELETE FROM sessions WHERE hash = $1", args![hash])
                    .await?;
            }
        }
    }
    for (hash, subject, at) in &p.tokens {
        conn.exec(
            "INSERT INTO tokens (hash, subject, created_at) VALUES ($1, $2, $3)",
            args![hash, subject, *at],
        )
        .await?;
    }
    Ok(())
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The domain objects in the first column of `rows`.
pub(crate) fn bodies<T: DeserializeOwned>(rows: &[Row]) -> Result<Vec<T>, StoreError> {
    rows.iter().map(|r| from_json(r.text(0)?)).collect()
}

/// Reads the stored snapshots of many objects of `table` (`grants` or `requests`) by id, a few
/// hundred per statement.
async fn load_many<T: DeserializeOwned>(
    conn: &mut Conn,
    table: &'static str,
    ids: &[&str],
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS) {
        let sql = format!(
            "SELECT body FROM {table} WHERE id IN ({})",
            params(1, chunk.len())
        );
        let rows = conn
            .rows(&sql, chunk.iter().map(|id| Arg::from(*id)).collect())
            .await?;
        out.extend(bodies::<T>(&rows)?);
    }
    Ok(out)
}

/// The one object (by id) a statement selects the body of, if any.
async fn load<T: DeserializeOwned>(
    conn: &mut Conn,
    sql: &str,
    id: &str,
) -> Result<Option<T>, StoreError> {
    load_with(conn, sql, args![id]).await
}

pub(crate) fn session_row(hash: &str, r: &Row) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        hash: hash.to_owned(),
        subject: r.owned_text(0)?,
        csrf: r.owned_text(1)?,
        data: r.owned_text(2)?,
        created_at: Timestamp::from_millis(r.int(3)?),
        expires_at: Timestamp::from_millis(r.int(4)?),
    })
}

pub(crate) fn idempotency_row(
    subject: &str,
    key: &str,
    r: &Row,
) -> Result<IdempotencyRow, StoreError> {
    Ok(IdempotencyRow {
        subject: subject.to_owned(),
        key: key.to_owned(),
        body_hash: r.owned_text(0)?,
        request_id: r.owned_text(1)?,
        response: r.opt_owned_text(2)?,
        expires_at: Timestamp::from_millis(r.int(3)?),
        in_flight_until: r.opt_int(4)?.map(Timestamp::from_millis),
    })
}

struct BufferedTx<'c> {
    conn: &'c mut Conn,
    head: &'c mut Head,
    cache: &'c mut Cache,
    holder: &'c str,
    pending: Pending,
    /// The earlier jobs' writes of this group, not sent yet.
    unflushed: &'c mut Pending,
    /// Why sending them failed, if it did: the group is then lost.
    broken: &'c mut Option<String>,
}

impl BufferedTx<'_> {
    /// Sends the earlier jobs' writes before this job reads the database, so that it reads
    /// what they wrote. Every read of the database goes through here.
    async fn db(&mut self) -> Result<&mut Conn, StoreError> {
        if let Some(e) = self.broken {
            return Err(StoreError::Corrupt(e.clone()));
        }
        if !self.unflushed.is_empty() {
            let writes = std::mem::take(self.unflushed);
            if let Err(e) = flush(self.conn, self.holder, &writes).await {
                *self.broken = Some(e.to_string());
                return Err(e);
            }
        }
        Ok(self.conn)
    }

    /// The database as the sent writes left it, without sending the held ones: for a read
    /// that lays the held writes it concerns over what it reads.
    fn db_as_sent(&mut self) -> Result<&mut Conn, StoreError> {
        if let Some(e) = self.broken {
            return Err(StoreError::Corrupt(e.clone()));
        }
        Ok(self.conn)
    }
}

#[async_trait]
impl Tx for BufferedTx<'_> {
    async fn request(&mut self, id: &str) -> Result<Option<Request>, StoreError> {
        if let Some(r) = self.pending.requests.iter().rev().find(|r| r.id == id) {
            return Ok(Some(r.clone()));
        }
        if let Some(r) = self.cache.requests.get(id) {
            return Ok(Some(r.clone()));
        }
        load(
            self.db().await?,
            "SELECT body FROM requests WHERE id = $1",
            id,
        )
        .await
    }

    async fn put_request(&mut self, r: &Request) -> Result<(), StoreError> {
        self.pending.requests.retain(|p| p.id != r.id);
        self.pending.requests.push(r.clone());
        Ok(())
    }

    async fn grant(&mut self, id: &str) -> Result<Option<Grant>, StoreError> {
        if let Some(&i) = self.pending.grant_at.get(id) {
            return Ok(Some(self.pending.grants[i].clone()));
        }
        if let Some(g) = self.cache.grants.get(id) {
            return Ok(Some(g.clone()));
        }
        load(
            self.db().await?,
            "SELECT body FROM grants WHERE id = $1",
            id,
        )
        .await
    }

    async fn put_grant(&mut self, g: &Grant) -> Result<(), StoreError> {
        // Indexed by id: a batch of timers puts hundreds of grants in one job.
        match self.pending.grant_at.get(&g.id) {
            Some(&i) => self.pending.grants[i] = g.clone(),
            None => {
                self.pending
                    .grant_at
                    .insert(g.id.clone(), self.pending.grants.len());
                self.pending.grants.push(g.clone());
            }
        }
        Ok(())
    }

    async fn active_grant_covering(
        &mut self,
        subject: &str,
        resource: &str,
        part_of: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Grant>, StoreError> {
        // Every candidate is checked: one whose expiry timer has not run yet must not hide a
        // valid one. Rule 5 asks this of every creation, so it is answered without sending
        // the group's held writes (which would cost a few statements per creation): the
        // grants the database has, overlaid with the ones written since and not sent (the
        // earlier jobs' of the group, then this job's own), the latest write of each winning.
        let conn = self.db_as_sent()?;
        let rows = conn
            .rows(
                "SELECT body FROM grants WHERE subject = $1 AND resource = $2 AND state = 'active'
                 UNION ALL
                 SELECT body FROM grants WHERE subject = $1 AND workflow = $3 AND state = 'active'",
                args![subject, resource, part_of],
            )
            .await?;
        let mut found = bodies::<Grant>(&rows)?;
        for g in self.unflushed.grants.iter().chain(&self.pending.grants) {
            found.retain(|f| f.id != g.id);
            let matches = g.spec.resource == resource
                || (part_of.is_some() && g.spec.workflow.as_deref() == part_of);
            if g.spec.subject == subject && g.state == GrantState::Active && matches {
                found.push(g.clone());
            }
        }
        Ok(found
            .into_iter()
            .find(|g| g.covers(resource, part_of) && g.expires_at.is_some_and(|t| t > now)))
    }

    async fn warm(&mut self, grants: &[&str], requests: &[&str]) -> Result<(), StoreError> {
        // The writers take turns, so what this one reads now is current until it writes it.
        let missing: Vec<&str> = grants
            .iter()
            .copied()
            .filter(|id| !self.cache.grants.contains_key(*id))
            .collect();
        for g in load_many::<Grant>(self.db().await?, "grants", &missing).await? {
            self.cache.put_grant(&g);
        }
        let missing: Vec<&str> = requests
            .iter()
            .copied()
            .filter(|id| !self.cache.requests.contains_key(*id))
            .collect();
        for r in load_many::<Request>(self.db().await?, "requests", &missing).await? {
            self.cache.put_request(&r);
        }
        Ok(())
    }

    async fn live_grants(
        &mut self,
        subject: &str,
        resource: &str,
    ) -> Result<Vec<Grant>, StoreError> {
        let rows = self
            .db()
            .await?
            .rows(
                "SELECT body FROM grants
                 WHERE subject = $1 AND resource = $2 AND state IN ('activating', 'active')",
                args![subject, resource],
            )
            .await?;
        let mut out = bodies::<Grant>(&rows)?;
        // This job's own writes are not flushed yet, and they win.
        for p in &self.pending.grants {
            out.retain(|g| g.id != p.id);
            if p.spec.subject == subject
                && p.spec.resource == resource
                && matches!(p.state, GrantState::Activating | GrantState::Active)
            {
                out.push(p.clone());
            }
        }
        Ok(out)
    }

    async fn scheduled(
        &mut self,
        kind: TimerKind,
        key: &str,
    ) -> Result<Option<Timestamp>, StoreError> {
        for op in self.pending.jobs.iter().rev() {
            match op {
                JobOp::Put {
                    kind: k,
                    key: x,
                    at,
                    ..
                } if *k == kind && x == key => {
                    return Ok(Some(Timestamp::from_millis(*at)));
                }
                JobOp::Delete {
                    kind: k, key: x, ..
                } if *k == kind && x == key => return Ok(None),
                _ => {}
            }
        }
        let row = self
            .db()
            .await?
            .row(
                "SELECT due_at FROM jobs WHERE kind = $1 AND key = $2",
                args![kind.as_str(), key],
            )
            .await?;
        Ok(row
            .map(|r| r.int(0))
            .transpose()?
            .map(Timestamp::from_millis))
    }

    async fn append(&mut self, event: &Event, at: Timestamp) -> Result<i64, StoreError> {
        let seq = self.head.seq + 1;
        let body = to_json(event)?;
        let hash = chain::hash(&self.head.hash, seq, at.millis(), &body);
        let prev_hash = std::mem::replace(&mut self.head.hash, hash.clone());
        self.head.seq = seq;
        self.pending.events.push(EventRow {
            seq,
            at: at.millis(),
            kind: event.kind.as_str().to_owned(),
            request: event.request.clone(),
            grant: event.grant.clone(),
            body,
            prev_hash,
            hash,
        });
        self.pending.appended.push((seq, at, event.clone()));
        Ok(seq)
    }

    fn take_appended(&mut self) -> Vec<(i64, Timestamp, Event)> {
        std::mem::take(&mut self.pending.appended)
    }

    async fn schedule(
        &mut self,
        kind: TimerKind,
        key: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.pending.jobs.push(JobOp::Put {
            kind,
            key: key.to_owned(),
            at: at.millis(),
            claimed_until: None,
        });
        Ok(())
    }

    async fn schedule_held(
        &mut self,
        kind: TimerKind,
        key: &str,
        at: Timestamp,
        until: Timestamp,
    ) -> Result<(), StoreError> {
        self.pending.jobs.push(JobOp::Put {
            kind,
            key: key.to_owned(),
            at: at.millis(),
            claimed_until: Some(until.millis()),
        });
        self.pending.held.push((kind, key.to_owned()));
        Ok(())
    }

    async fn unschedule(
        &mut self,
        kind: TimerKind,
        key: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let held = self
            .pending
            .held
            .iter()
            .any(|(k, x)| *k == kind && x == key);
        self.pending.jobs.push(JobOp::Delete {
            kind,
            key: key.to_owned(),
            unless_claimed_at: (!held).then_some(now.millis()),
        });
        Ok(())
    }

    async fn claim(
        &mut self,
        kind: TimerKind,
        key: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        let row = self
            .db()
            .await?
            .row(
                "SELECT due_at FROM jobs WHERE kind = $1 AND key = $2 AND due_at <= $3
                 AND (claimed_until IS NULL OR claimed_until <= $3)",
                args![kind.as_str(), key, now.millis()],
            )
            .await?;
        let Some(row) = row else { return Ok(false) };
        self.pending.jobs.push(JobOp::Put {
            kind,
            key: key.to_owned(),
            at: row.int(0)?,
            claimed_until: Some(until.millis()),
        });
        self.pending.held.push((kind, key.to_owned()));
        Ok(true)
    }

    async fn holds(
        &mut self,
        kind: TimerKind,
        key: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        for op in self.pending.jobs.iter().rev() {
            match op {
                JobOp::Put {
                    kind: k,
                    key: x,
                    claimed_until,
                    ..
                } if *k == kind && x == key => {
                    return Ok(claimed_until.is_some_and(|u| u > now.millis()));
                }
                JobOp::Delete {
                    kind: k, key: x, ..
                } if *k == kind && x == key => {
                    return Ok(false);
                }
                _ => {}
            }
        }
        let holder = self.holder;
        let row = self
            .db()
            .await?
            .row(
                "SELECT 1 FROM jobs WHERE kind = $1 AND key = $2 AND claimed_by = $3
                 AND claimed_until > $4",
                args![kind.as_str(), key, holder, now.millis()],
            )
            .await?;
        if row.is_some() {
            self.pending.held.push((kind, key.to_owned()));
        }
        Ok(row.is_some())
    }

    async fn claimed(
        &mut self,
        kind: TimerKind,
        key: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let row = self
            .db()
            .await?
            .row(
                "SELECT 1 FROM jobs WHERE kind = $1 AND key = $2 AND claimed_until > $3",
                args![kind.as_str(), key, now.millis()],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn renew(&mut self, now: Timestamp, until: Timestamp) -> Result<(), StoreError> {
        self.pending.renew = Some((now.millis(), until.millis()));
        Ok(())
    }

    async fn put_token(
        &mut self,
        hash: &str,
        subject: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.pending
            .tokens
            .push((hash.to_owned(), subject.to_owned(), now.millis()));
        Ok(())
    }

    fn signal_due(&mut self) {
        self.pending.due_now = true;
    }

    async fn put_callback_secret(&mut self, request: &str, secret: &str) -> Result<(), StoreError> {
        self.pending
            .secrets
            .push((request.to_owned(), secret.to_owned()));
        Ok(())
    }

    async fn put_slack_link(
        &mut self,
        account: &str,
        person: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.pending
            .slack_links
            .push((account.to_owned(), Some((person.to_owned(), now.millis()))));
        Ok(())
    }

    async fn delete_slack_link(&mut self, account: &str) -> Result<(), StoreError> {
        self.pending.slack_links.push((account.to_owned(), None));
        Ok(())
    }

    async fn put_slack_message(
        &mut self,
        request: &str,
        channel: &str,
        ts: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.pending.slack_messages.push((
            request.to_owned(),
            channel.to_owned(),
            ts.to_owned(),
            now.millis(),
        ));
        Ok(())
    }

    async fn put_slack_interaction(
        &mut self,
        key: &str,
        payload: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        if self.slack_interaction(key).await?.is_some() {
            return Ok(false);
        }
        self.pending
            .slack_interactions
            .push((key.to_owned(), payload.to_owned(), now.millis()));
        self.pending.prune_slack_interactions =
            Some(now.millis().saturating_sub(crate::SLACK_INTERACTION_TTL_MS));
        Ok(true)
    }

    async fn slack_interaction(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        if let Some((_, payload, _)) = self.pending.slack_interactions.iter().find(|i| i.0 == key) {
            return Ok(Some(payload.clone()));
        }
        let row = self
            .db()
            .await?
            .row(
                "SELECT payload FROM slack_interactions WHERE key = $1",
                args![key],
            )
            .await?;
        row.map(|r| r.text(0).map(str::to_owned)).transpose()
    }

    async fn run(&mut self, id: &str) -> Result<Option<Run>, StoreError> {
        if let Some(r) = self.pending.runs.iter().find(|r| r.id == id) {
            return Ok(Some(r.clone()));
        }
        load(self.db().await?, "SELECT body FROM runs WHERE id = $1", id).await
    }

    async fn put_run(&mut self, r: &Run) -> Result<(), StoreError> {
        self.pending.put_run(r.clone());
        Ok(())
    }

    async fn delivery(&mut self, id: &str) -> Result<Option<Delivery>, StoreError> {
        if let Some(&i) = self.pending.delivery_at.get(id) {
            return Ok(Some(self.pending.deliveries[i].0.clone()));
        }
        load(
            self.db().await?,
            "SELECT body FROM deliveries WHERE id = $1",
            id,
        )
        .await
    }

    async fn put_delivery(
        &mut self,
        d: &Delivery,
        claimed_until: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.pending
            .put_delivery(d.clone(), claimed_until.map(Timestamp::millis));
        if d.next_at.is_some() && claimed_until.is_none() {
            self.pending.due_now = true;
        }
        Ok(())
    }

    async fn claim_delivery(
        &mut self,
        id: &str,
        now: Timestamp,
        until: Timestamp,
        per_lane: u32,
    ) -> Result<Option<Delivery>, StoreError> {
        let d: Option<Delivery> = load_with(
            self.db().await?,
            "SELECT body FROM deliveries WHERE id = $1 AND state = 'pending' AND next_at <= $2
             AND (claimed_until IS NULL OR claimed_until <= $2)",
            args![id, now.millis()],
        )
        .await?;
        let Some(d) = d else { return Ok(None) };
        // The receiver's live claims: in the database (those this job rewrites left out),
        // plus this job's own.
        let lane = d.lane();
        let mine: Vec<&str> = self
            .pending
            .deliveries
            .iter()
            .map(|(p, _)| p.id.as_str())
            .collect();
        let mut sql =
            String::from("SELECT COUNT(*) FROM deliveries WHERE lane = $1 AND claimed_until > $2");
        if !mine.is_empty() {
            sql.push_str(&format!(" AND id NOT IN ({})", params(3, mine.len())));
        }
        let mut a = args![&lane, now.millis()];
        a.extend(mine.iter().map(|m| Arg::from(*m)));
        let stored = match self.db().await?.row(&sql, a).await? {
            Some(r) => r.int(0)?,
            None => 0,
        };
        let pending = self
            .pending
            .deliveries
            .iter()
            .filter(|(p, claimed)| claimed.is_some_and(|u| u > now.millis()) && p.lane() == lane)
            .count();
        if stored + i64::try_from(pending).unwrap_or(i64::MAX) >= i64::from(per_lane) {
            return Ok(None);
        }
        self.pending.put_delivery(d.clone(), Some(until.millis()));
        Ok(Some(d))
    }

    async fn holds_delivery(&mut self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        if let Some(&i) = self.pending.delivery_at.get(id) {
            let claimed = self.pending.deliveries[i].1;
            return Ok(claimed.is_some_and(|u| u > now.millis()));
        }
        let holder = self.holder;
        let row = self
            .db()
            .await?
            .row(
                "SELECT 1 FROM deliveries WHERE id = $1 AND claimed_by = $2 AND claimed_until > $3",
                args![id, holder, now.millis()],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn idempotency(
        &mut self,
        subject: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRow>, StoreError> {
        if let Some(r) = self
            .pending
            .idempotency
            .iter()
            .rev()
            .find(|r| r.subject == subject && r.key == key)
        {
            return Ok((r.expires_at > now).then(|| r.clone()));
        }
        let row = self
            .db()
            .await?
            .row(
                "SELECT body_hash, request_id, response, expires_at, in_flight_until
                 FROM idempotency WHERE subject = $1 AND key = $2 AND expires_at > $3",
                args![subject, key, now.millis()],
            )
            .await?;
        row.map(|r| idempotency_row(subject, key, &r)).transpose()
    }

    async fn put_idempotency(
        &mut self,
        row: &IdempotencyRow,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.pending
            .idempotency
            .retain(|r| !(r.subject == row.subject && r.key == row.key));
        self.pending.idempotency.push(row.clone());
        self.pending.prune_idempotency = Some(now.millis());
        Ok(())
    }

    async fn delete_idempotency(&mut self, subject: &str, key: &str) -> Result<(), StoreError> {
        // Written as an already expired record, which reads never return and pruning removes.
        self.pending
            .idempotency
            .retain(|r| !(r.subject == subject && r.key == key));
        self.pending.idempotency.push(IdempotencyRow {
            subject: subject.to_owned(),
            key: key.to_owned(),
            body_hash: String::new(),
            request_id: String::new(),
            response: None,
            expires_at: Timestamp::from_millis(0),
            in_flight_until: None,
        });
        Ok(())
    }

    async fn put_session(&mut self, row: &SessionRow, now: Timestamp) -> Result<(), StoreError> {
        self.pending.sessions.push(SessionOp::Put(row.clone()));
        self.pending.prune_sessions = Some(now.millis());
        Ok(())
    }

    async fn delete_session(&mut self, hash: &str) -> Result<(), StoreError> {
        self.pending
            .sessions
            .push(SessionOp::Delete(hash.to_owned()));
        Ok(())
    }

    async fn take_session(
        &mut self,
        hash: &str,
        now: Timestamp,
    ) -> Result<Option<SessionRow>, StoreError> {
        let unsaved = self.pending.sessions.iter().rev().find_map(|op| match op {
            SessionOp::Put(r) if r.hash == hash => Some(Some(r.clone())),
            SessionOp::Delete(h) if h == hash => Some(None),
            _ => None,
        });
        let row = match unsaved {
            Some(r) => r.filter(|r| r.expires_at > now),
            None => self
                .db()
                .await?
                .row(
                    "SELECT subject, csrf, data, created_at, expires_at FROM sessions
                     WHERE hash = $1 AND expires_at > $2",
                    args![hash, now.millis()],
                )
                .await?
                .map(|r| session_row(hash, &r))
                .transpose()?,
        };
        if row.is_some() {
            self.pending
                .sessions
                .push(SessionOp::Delete(hash.to_owned()));
        }
        Ok(row)
    }

    async fn count_sessions(&mut self, prefix: &str, now: Timestamp) -> Result<u64, StoreError> {
        // By the leading characters, not a range of the key: a range would assume the
        // database orders text by bytes, and a PostgreSQL database may collate otherwise.
        let row = self
            .db()
            .await?
            .row(
                "SELECT COUNT(*) FROM sessions
                 WHERE substr(hash, 1, length($1)) = $1 AND expires_at > $2",
                args![prefix, now.millis()],
            )
            .await?;
        Ok(row
            .map(|r| r.int(0))
            .transpose()?
            .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }
}

/// The one object a statement selects the body of, if any.
async fn load_with<T: DeserializeOwned>(
    conn: &mut Conn,
    sql: &str,
    a: Vec<Arg>,
) -> Result<Option<T>, StoreError> {
    match conn.row(sql, a).await? {
        Some(r) => Ok(Some(from_json(r.text(0)?)?)),
        None => Ok(None),
    }
}
