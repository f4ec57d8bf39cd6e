//! The SQLite store: WAL, `synchronous = FULL`, and one writer task that groups the write
//! jobs waiting at a moment into one transaction.
//!
//! Grouping is what lets durability not cost throughput: while one transaction commits (and
//! waits for its fsync), the next jobs queue up, and they are all committed by the next single
//! fsync. A job's writes are held in memory until the job returns: a job that refuses has
//! written nothing and is simply dropped, and a successful one is flushed into the group's
//! transaction (its events in one multi-row insert). If anything fails while flushing or
//! committing, the whole group is rolled back and every job in it is told so.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::{Delivery, Event, Grant, GrantState, Request, TimerKind, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row, SqlStr};
use tokio::sync::{Mutex, Notify, mpsc, oneshot, watch};

use crate::chain::{self, Head, StoredEvent};
use crate::metrics::{Stopwatch, WriterMetrics};
use crate::{
    Counts, DueJob, GrantFilter, IdempotencyRow, JobFailure, JobResult, RequestFilter, SessionRow,
    Store, StoreError, TokenRow, Tx, WriteJob,
};

/// The most due jobs [`Store::counts`] counts: a backlog larger than this is reported as this.
const MAX_BACKLOG: i64 = 100_000;

/// The most jobs committed together. Larger groups amortise the fsync further but make every
/// reply in the group wait for the slowest job.
const MAX_GROUP: usize = 512;

fn migrator() -> Migrator {
    let step = |version, name, sql| {
        Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            SqlStr::from_static(sql),
            false,
        )
    };
    Migrator::with_migrations(vec![
        step(
            1,
            "init",
            include_str!("../migrations/sqlite/0001_init.sql"),
        ),
        step(
            2,
            "indexes",
            include_str!("../migrations/sqlite/0002_indexes.sql"),
        ),
        step(
            3,
            "callbacks",
            include_str!("../migrations/sqlite/0003_callbacks.sql"),
        ),
        step(
            4,
            "sessions",
            include_str!("../migrations/sqlite/0004_sessions.sql"),
        ),
    ])
}

enum Msg {
    Job(WriteJob, oneshot::Sender<JobResult>),
    Close,
}

pub struct SqliteStore {
    jobs: mpsc::Sender<Msg>,
    read: SqlitePool,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    due: Arc<Notify>,
    /// The head of the chain as this process last committed it.
    committed: watch::Receiver<Head>,
}

/// Who opens the database. The server owns it; a tool (such as `token create`) only adds rows
/// and must not touch the server's job claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Tool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, runs migrations and starts the writer.
    pub async fn open(path: &str, role: Role) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, role, WriterMetrics::default()).await
    }

    /// Like [`SqliteStore::open`], with the writer recording each group into `metrics`.
    pub async fn open_with(
        path: &str,
        role: Role,
        metrics: WriterMetrics,
    ) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // 64 MiB of page cache per connection (the default is 2 MiB): expiring or
            // listing many grants otherwise re-reads the same pages from the OS.
            .pragma("cache_size", "-65536")
            // Reads through a memory map rather than a system call per page.
            .pragma("mmap_size", "268435456");
        let mut conn = SqliteConnection::connect_with(&opts).await?;
        migrator().run(&mut conn).await?;
        if role == Role::Server {
            // The server owns its SQLite database: claims left by a process that died are void.
            sqlx::query("UPDATE jobs SET claimed_until = NULL WHERE claimed_until IS NOT NULL")
                .execute(&mut conn)
                .await?;
            sqlx::query(
                "UPDATE deliveries SET claimed_until = NULL WHERE claimed_until IS NOT NULL",
            )
            .execute(&mut conn)
            .await?;
        }
        let head = load_head(&mut conn).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let (tx, rx) = mpsc::channel(4096);
        let due = Arc::new(Notify::new());
        let (committed_tx, committed) = watch::channel(head.clone());
        let writer = tokio::spawn(
            Writer {
                conn,
                head,
                committed: committed_tx,
                cache: Cache::default(),
                due: due.clone(),
                metrics,
            }
            .run(rx),
        );
        Ok(SqliteStore {
            jobs: tx,
            read,
            writer: Mutex::new(Some(writer)),
            due,
            committed,
        })
    }
}

/// The last event of the chain, as committed.
async fn load_head(conn: &mut SqliteConnection) -> Result<Head, StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(row) => Head {
            seq: row.try_get("seq")?,
            hash: row.try_get("hash")?,
        },
        None => Head::default(),
    })
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::query(sql).execute(conn).await?;
    Ok(())
}

/// Live requests and grants as the writer last wrote them. The writer is the only one that
/// writes them, so a hit is always current; it spares a read for every decision on a pending
/// request. Finished objects leave the cache, and it is emptied whenever a group is rolled
/// back or grows past its bound.
#[derive(Default)]
struct Cache {
    requests: HashMap<String, Request>,
    grants: HashMap<String, Grant>,
}

const CACHE_MAX: usize = 100_000;

/// Records what was just written. An entry is always replaced, never left stale; a finished
/// object leaves; at the bound the map starts over rather than refusing new entries.
fn remember<T: Clone>(map: &mut HashMap<String, T>, id: &str, value: &T, live: bool) {
    if !live {
        map.remove(id);
        return;
    }
    if map.len() >= CACHE_MAX && !map.contains_key(id) {
        map.clear();
    }
    map.insert(id.to_owned(), value.clone());
}

impl Cache {
    fn put_request(&mut self, r: &Request) {
        remember(&mut self.requests, &r.id, r, !r.state.is_terminal());
    }
    fn put_grant(&mut self, g: &Grant) {
        remember(&mut self.grants, &g.id, g, !g.state.is_final());
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
    grants: Vec<Grant>,
    /// Position of each grant in `grants`.
    grant_at: HashMap<String, usize>,
    events: Vec<EventRow>,
    jobs: Vec<JobOp>,
    tokens: Vec<(String, String, i64)>,
    secrets: Vec<(String, String)>,
    /// Deliveries with their claim (last write of each wins).
    deliveries: Vec<(Delivery, Option<i64>)>,
    idempotency: Vec<IdempotencyRow>,
    /// Expired idempotency records older than this are forgotten (a few per job).
    prune_idempotency: Option<i64>,
    /// Portal sessions written or ended, in order.
    sessions: Vec<SessionOp>,
    /// Sessions that expired before this are forgotten (a few per job).
    prune_sessions: Option<i64>,
    due_now: bool,
}

enum SessionOp {
    Put(SessionRow),
    Delete(String),
}

/// An audit event row: seq, at, kind, request, grant, body, prev_hash, hash.
type EventRow = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
);

enum JobOp {
    Put {
        kind: TimerKind,
        key: String,
        at: i64,
        claimed_until: Option<i64>,
    },
    Delete {
        kind: TimerKind,
        key: String,
    },
}

struct Writer {
    conn: SqliteConnection,
    head: Head,
    /// Told the head after each commit: the chain as this process wrote it, which a later
    /// change to the database cannot alter (what checkpoints sign).
    committed: watch::Sender<Head>,
    cache: Cache,
    due: Arc<Notify>,
    metrics: WriterMetrics,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
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
        let _ = self.conn.close().await;
    }

    async fn run_group(&mut self, group: Vec<(WriteJob, oneshot::Sender<JobResult>)>) {
        self.metrics.group_jobs.record(group.len() as f64);
        let began = Stopwatch::start();
        if let Err(e) = exec(&mut self.conn, "BEGIN IMMEDIATE").await {
            let msg = e.to_string();
            for (_, reply) in group {
                let _ = reply.send(Err(JobFailure::Store(StoreError::Corrupt(msg.clone()))));
            }
            return;
        }
        let mut done = Vec::with_capacity(group.len());
        let mut failed: Option<String> = None;
        let mut due_now = false;
        for (job, reply) in group {
            if failed.is_some() {
                done.push((reply, Err(JobFailure::Store(StoreError::Closed))));
                continue;
            }
            let saved = self.head.clone();
            let mut tx = SqliteTx {
                conn: &mut self.conn,
                head: &mut self.head,
                cache: &mut self.cache,
                pending: Pending::default(),
            };
            let result = job(&mut tx).await;
            let pending = tx.pending;
            if result.is_err() {
                self.head = saved;
            } else if let Err(e) = flush(&mut self.conn, &pending).await {
                failed = Some(e.to_string());
            } else {
                due_now |= pending.due_now;
                for r in &pending.requests {
                    self.cache.put_request(r);
                }
                for g in &pending.grants {
                    self.cache.put_grant(g);
                }
            }
            done.push((reply, result));
        }
        let committed = match failed {
            None => {
                let commit = Stopwatch::start();
                let r = exec(&mut self.conn, "COMMIT")
                    .await
                    .map_err(|e| e.to_string());
                self.metrics.commit_seconds.record(commit.elapsed());
                r
            }
            Some(e) => Err(e),
        };
        self.metrics.transaction_seconds.record(began.elapsed());
        match committed {
            Ok(()) => {
                if self.committed.borrow().seq != self.head.seq {
                    self.committed.send_replace(self.head.clone());
                }
                for (reply, result) in done {
                    let _ = reply.send(result);
                }
                if due_now {
                    self.due.notify_one();
                }
            }
            Err(msg) => {
                // Nothing of this group is durable: roll back, forget what the cache and the
                // chain head learned from it, and tell every job.
                tracing::error!(error = %msg, "write group failed; it is rolled back");
                self.metrics.rollbacks.increment(1);
                let _ = exec(&mut self.conn, "ROLLBACK").await;
                self.cache.clear();
                match load_head(&mut self.conn).await {
                    Ok(h) => self.head = h,
                    Err(e) => tracing::error!(error = %e, "cannot reload the audit chain head"),
                }
                for (reply, _) in done {
                    let _ = reply.send(Err(JobFailure::Store(StoreError::Corrupt(format!(
                        "the write failed: {msg}"
                    )))));
                }
            }
        }
    }
}

/// Writes one job's changes. Events go in one multi-row insert.
/// `INSERT … VALUES (…), (…), …` for `rows` rows of `width` values.
fn values_sql(head: &str, width: usize, rows: usize, tail: &str) -> String {
    let one = format!("({})", vec!["?"; width].join(", "));
    let mut sql = String::with_capacity(head.len() + rows * (one.len() + 2) + tail.len());
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&one);
    }
    sql.push_str(tail);
    sql
}

/// Rows per multi-row statement: SQLite allows 32766 bound parameters, and statements of a
/// few hundred rows already amortise the per-statement cost.
const ROWS: usize = 400;

/// Writes a job's changes: a few multi-row statements rather than one per row, because each
/// statement costs a round trip to SQLite's thread (expiring 100,000 grants at once is
/// hundreds of thousands of rows).
async fn flush(conn: &mut SqliteConnection, p: &Pending) -> Result<(), StoreError> {
    for chunk in p.requests.chunks(ROWS) {
        let sql = values_sql(
            "INSERT INTO requests (id, resource, requester, state, created_at, body) VALUES ",
            6,
            chunk.len(),
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(&r.id)
                .bind(&r.resource)
                .bind(&r.requester)
                .bind(r.state.as_str())
                .bind(r.created_at.millis())
                .bind(to_json(r)?);
        }
        q.execute(&mut *conn).await?;
    }
    for chunk in p.grants.chunks(ROWS) {
        let sql = values_sql(
            "INSERT INTO grants (id, request_id, subject, resource, workflow, state, created_at, body) VALUES ",
            8,
            chunk.len(),
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for g in chunk {
            q = q
                .bind(&g.id)
                .bind(&g.spec.request)
                .bind(&g.spec.subject)
                .bind(&g.spec.resource)
                .bind(&g.spec.workflow)
                .bind(g.state.as_str())
                .bind(g.created_at.millis())
                .bind(to_json(g)?);
        }
        q.execute(&mut *conn).await?;
    }
    for chunk in p.events.chunks(ROWS) {
        let sql = values_sql(
            "INSERT INTO events (seq, at, kind, request_id, grant_id, body, prev_hash, hash) VALUES ",
            8,
            chunk.len(),
            "",
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (seq, at, kind, request, grant, body, prev, hash) in chunk {
            q = q
                .bind(seq)
                .bind(at)
                .bind(kind)
                .bind(request)
                .bind(grant)
                .bind(body)
                .bind(prev)
                .bind(hash);
        }
        q.execute(&mut *conn).await?;
    }
    // Only the last operation on a job counts (a put is a whole upsert; a delete removes it),
    // so the operations collapse to one per job and run as two kinds of statement.
    let mut last: HashMap<(TimerKind, &str), &JobOp> = HashMap::with_capacity(p.jobs.len());
    for op in &p.jobs {
        let id = match op {
            JobOp::Put { kind, key, .. } | JobOp::Delete { kind, key } => (*kind, key.as_str()),
        };
        last.insert(id, op);
    }
    let mut puts = vec![];
    let mut deletes: HashMap<TimerKind, Vec<&str>> = HashMap::new();
    for op in last.into_values() {
        match op {
            JobOp::Put { .. } => puts.push(op),
            JobOp::Delete { kind, key } => deletes.entry(*kind).or_default().push(key),
        }
    }
    for chunk in puts.chunks(ROWS) {
        let sql = values_sql(
            "INSERT INTO jobs (kind, key, due_at, claimed_until) VALUES ",
            4,
            chunk.len(),
            " ON CONFLICT (kind, key) DO UPDATE
             SET due_at = excluded.due_at, claimed_until = excluded.claimed_until",
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for op in chunk {
            if let JobOp::Put {
                kind,
                key,
                at,
                claimed_until,
            } = op
            {
                q = q.bind(kind.as_str()).bind(key).bind(at).bind(claimed_until);
            }
        }
        q.execute(&mut *conn).await?;
    }
    for (kind, keys) in &deletes {
        for chunk in keys.chunks(ROWS) {
            let sql = format!(
                "DELETE FROM jobs WHERE kind = ? AND key IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(kind.as_str());
            for key in chunk {
                q = q.bind(*key);
            }
            q.execute(&mut *conn).await?;
        }
    }
    for (request, secret) in &p.secrets {
        sqlx::query("INSERT INTO callback_secrets (request_id, secret) VALUES (?, ?)")
            .bind(request)
            .bind(secret)
            .execute(&mut *conn)
            .await?;
    }
    for (d, claimed_until) in &p.deliveries {
        sqlx::query(
            "INSERT INTO deliveries
               (id, request_id, lane, state, next_at, claimed_until, created_at, body)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, next_at = excluded.next_at,
               claimed_until = excluded.claimed_until, body = excluded.body",
        )
        .bind(&d.id)
        .bind(&d.request)
        .bind(d.lane())
        .bind(d.state.as_str())
        .bind(d.next_at.map(Timestamp::millis))
        .bind(claimed_until)
        .bind(d.created_at.millis())
        .bind(to_json(d)?)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(before) = p.prune_idempotency {
        sqlx::query(
            "DELETE FROM idempotency WHERE (subject, key) IN
               (SELECT subject, key FROM idempotency WHERE expires_at <= ? LIMIT 64)",
        )
        .bind(before)
        .execute(&mut *conn)
        .await?;
    }
    for r in &p.idempotency {
        sqlx::query(
            "INSERT INTO idempotency (subject, key, body_hash, request_id, response, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (subject, key) DO UPDATE SET body_hash = excluded.body_hash,
               request_id = excluded.request_id, response = excluded.response,
               expires_at = excluded.expires_at",
        )
        .bind(&r.subject)
        .bind(&r.key)
        .bind(&r.body_hash)
        .bind(&r.request_id)
        .bind(&r.response)
        .bind(r.expires_at.millis())
        .execute(&mut *conn)
        .await?;
    }
    if let Some(before) = p.prune_sessions {
        sqlx::query(
            "DELETE FROM sessions WHERE hash IN
               (SELECT hash FROM sessions WHERE expires_at <= ? LIMIT 64)",
        )
        .bind(before)
        .execute(&mut *conn)
        .await?;
    }
    for op in &p.sessions {
        match op {
            SessionOp::Put(r) => {
                sqlx::query(
                    "INSERT INTO sessions (hash, subject, csrf, data, created_at, expires_at)
                     VALUES (?, ?, ?, ?, ?, ?)
                     ON CONFLICT (hash) DO UPDATE SET subject = excluded.subject,
                       csrf = excluded.csrf, data = excluded.data,
                       expires_at = excluded.expires_at",
                )
                .bind(&r.hash)
                .bind(&r.subject)
                .bind(&r.csrf)
                .bind(&r.data)
                .bind(r.created_at.millis())
                .bind(r.expires_at.millis())
                .execute(&mut *conn)
                .await?;
            }
            SessionOp::Delete(hash) => {
                sqlx::query("DELETE FROM sessions WHERE hash = ?")
                    .bind(hash)
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    for (hash, subject, at) in &p.tokens {
        sqlx::query("INSERT INTO tokens (hash, subject, created_at) VALUES (?, ?, ?)")
            .bind(hash)
            .bind(subject)
            .bind(at)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Reads the stored snapshots of many objects of `table` (`grants` or `requests`) by id, a few
/// hundred per statement.
async fn load_many<T: DeserializeOwned>(
    conn: &mut SqliteConnection,
    table: &'static str,
    ids: &[&str],
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS) {
        let sql = format!(
            "SELECT body FROM {table} WHERE id IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.push(from_json(row.try_get::<&str, _>("body")?)?);
        }
    }
    Ok(out)
}

/// Reads the stored snapshot of one object by id, through a pool or the writer's connection.
async fn load<'e, T, E>(ex: E, sql: &'static str, id: &str) -> Result<Option<T>, StoreError>
where
    T: DeserializeOwned,
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let row = sqlx::query(sql).bind(id).fetch_optional(ex).await?;
    row.map(|r| from_json(r.try_get::<&str, _>("body")?))
        .transpose()
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

struct SqliteTx<'c> {
    conn: &'c mut SqliteConnection,
    head: &'c mut Head,
    cache: &'c mut Cache,
    pending: Pending,
}

#[async_trait]
impl Tx for SqliteTx<'_> {
    async fn request(&mut self, id: &str) -> Result<Option<Request>, StoreError> {
        if let Some(r) = self.pending.requests.iter().rev().find(|r| r.id == id) {
            return Ok(Some(r.clone()));
        }
        if let Some(r) = self.cache.requests.get(id) {
            return Ok(Some(r.clone()));
        }
        load(
            &mut *self.conn,
            "SELECT body FROM requests WHERE id = ?",
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
        load(&mut *self.conn, "SELECT body FROM grants WHERE id = ?", id).await
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
        // valid one.
        let rows = sqlx::query(
            "SELECT body FROM grants WHERE subject = ?1 AND resource = ?2 AND state = 'active'
             UNION ALL
             SELECT body FROM grants WHERE subject = ?1 AND workflow = ?3 AND state = 'active'",
        )
        .bind(subject)
        .bind(resource)
        .bind(part_of)
        .fetch_all(&mut *self.conn)
        .await?;
        for row in rows {
            let g: Grant = from_json(row.try_get::<&str, _>("body")?)?;
            if g.covers(resource, part_of) && g.expires_at.is_some_and(|t| t > now) {
                return Ok(Some(g));
            }
        }
        Ok(None)
    }

    async fn warm(&mut self, grants: &[&str], requests: &[&str]) -> Result<(), StoreError> {
        // The writer is the only writer, so what it reads now is current until it writes it.
        let missing: Vec<&str> = grants
            .iter()
            .copied()
            .filter(|id| !self.cache.grants.contains_key(*id))
            .collect();
        for g in load_many::<Grant>(self.conn, "grants", &missing).await? {
            self.cache.put_grant(&g);
        }
        let missing: Vec<&str> = requests
            .iter()
            .copied()
            .filter(|id| !self.cache.requests.contains_key(*id))
            .collect();
        for r in load_many::<Request>(self.conn, "requests", &missing).await? {
            self.cache.put_request(&r);
        }
        Ok(())
    }

    async fn live_grants(
        &mut self,
        subject: &str,
        resource: &str,
    ) -> Result<Vec<Grant>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM grants
             WHERE subject = ?1 AND resource = ?2 AND state IN ('activating', 'active')",
        )
        .bind(subject)
        .bind(resource)
        .fetch_all(&mut *self.conn)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| from_json::<Grant>(r.try_get::<&str, _>("body")?))
            .collect::<Result<Vec<_>, _>>()?;
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
                JobOp::Delete { kind: k, key: x } if *k == kind && x == key => return Ok(None),
                _ => {}
            }
        }
        let at: Option<i64> =
            sqlx::query_scalar("SELECT due_at FROM jobs WHERE kind = ? AND key = ?")
                .bind(kind.as_str())
                .bind(key)
                .fetch_optional(&mut *self.conn)
                .await?;
        Ok(at.map(Timestamp::from_millis))
    }

    async fn append(&mut self, event: &Event, at: Timestamp) -> Result<i64, StoreError> {
        let seq = self.head.seq + 1;
        let body = to_json(event)?;
        let hash = chain::hash(&self.head.hash, seq, at.millis(), &body);
        let prev = std::mem::replace(&mut self.head.hash, hash.clone());
        self.head.seq = seq;
        self.pending.events.push((
            seq,
            at.millis(),
            event.kind.as_str().to_owned(),
            event.request.clone(),
            event.grant.clone(),
            body,
            prev,
            hash,
        ));
        Ok(seq)
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

    async fn unschedule(&mut self, kind: TimerKind, key: &str) -> Result<(), StoreError> {
        self.pending.jobs.push(JobOp::Delete {
            kind,
            key: key.to_owned(),
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
        let row = sqlx::query(
            "SELECT due_at FROM jobs WHERE kind = ? AND key = ? AND due_at <= ?
             AND (claimed_until IS NULL OR claimed_until <= ?)",
        )
        .bind(kind.as_str())
        .bind(key)
        .bind(now.millis())
        .bind(now.millis())
        .fetch_optional(&mut *self.conn)
        .await?;
        let Some(row) = row else { return Ok(false) };
        let due_at: i64 = row.try_get("due_at")?;
        self.pending.jobs.push(JobOp::Put {
            kind,
            key: key.to_owned(),
            at: due_at,
            claimed_until: Some(until.millis()),
        });
        Ok(true)
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

    async fn delivery(&mut self, id: &str) -> Result<Option<Delivery>, StoreError> {
        if let Some((d, _)) = self.pending.deliveries.iter().find(|(d, _)| d.id == id) {
            return Ok(Some(d.clone()));
        }
        load(
            &mut *self.conn,
            "SELECT body FROM deliveries WHERE id = ?",
            id,
        )
        .await
    }

    async fn put_delivery(
        &mut self,
        d: &Delivery,
        claimed_until: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.pending.deliveries.retain(|(p, _)| p.id != d.id);
        self.pending
            .deliveries
            .push((d.clone(), claimed_until.map(Timestamp::millis)));
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
    ) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(
            "SELECT body FROM deliveries WHERE id = ?1 AND state = 'pending' AND next_at <= ?2
             AND (claimed_until IS NULL OR claimed_until <= ?2)",
        )
        .bind(id)
        .bind(now.millis())
        .fetch_optional(&mut *self.conn)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let d: Delivery = from_json(row.try_get::<&str, _>("body")?)?;
        self.pending.deliveries.retain(|(p, _)| p.id != d.id);
        self.pending
            .deliveries
            .push((d.clone(), Some(until.millis())));
        Ok(Some(d))
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
        let row = sqlx::query(
            "SELECT body_hash, request_id, response, expires_at FROM idempotency
             WHERE subject = ? AND key = ? AND expires_at > ?",
        )
        .bind(subject)
        .bind(key)
        .bind(now.millis())
        .fetch_optional(&mut *self.conn)
        .await?;
        row.map(|r| {
            Ok(IdempotencyRow {
                subject: subject.to_owned(),
                key: key.to_owned(),
                body_hash: r.try_get("body_hash")?,
                request_id: r.try_get("request_id")?,
                response: r.try_get("response")?,
                expires_at: Timestamp::from_millis(r.try_get("expires_at")?),
            })
        })
        .transpose()
    }

    async fn put_idempotency(
        &mut self,
        row: &IdempotencyRow,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.pending.idempotency.push(row.clone());
        self.pending.prune_idempotency = Some(now.millis());
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
}

#[async_trait]
impl Store for SqliteStore {
    async fn write(&self, job: WriteJob) -> JobResult {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Msg::Job(job, reply))
            .await
            .map_err(|_| JobFailure::Store(StoreError::Closed))?;
        answer
            .await
            .map_err(|_| JobFailure::Store(StoreError::Closed))?
    }

    async fn request(&self, id: &str) -> Result<Option<Request>, StoreError> {
        load(&self.read, "SELECT body FROM requests WHERE id = ?", id).await
    }

    async fn list_requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        // Only the filters given go into the statement, so that SQLite can use an index
        // (`?1 IS NULL OR state = ?1` would make it scan the table).
        let mut sql = String::from("SELECT body FROM requests WHERE 1 = 1");
        if f.state.is_some() {
            sql.push_str(" AND state = ?");
        }
        if f.resource.is_some() {
            sql.push_str(" AND resource = ?");
        }
        if f.requester.is_some() {
            sql.push_str(" AND requester = ?");
        }
        if f.before.is_some() {
            sql.push_str(" AND (created_at < ? OR (created_at = ? AND id < ?))");
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(s) = f.state {
            q = q.bind(s.as_str());
        }
        if let Some(r) = &f.resource {
            q = q.bind(r);
        }
        if let Some(r) = &f.requester {
            q = q.bind(r);
        }
        if let Some((at, id)) = &f.before {
            q = q.bind(at.millis()).bind(at.millis()).bind(id);
        }
        let rows = q.bind(i64::from(f.limit)).fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| from_json(r.try_get::<&str, _>("body")?))
            .collect()
    }

    async fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        load(&self.read, "SELECT body FROM grants WHERE id = ?", id).await
    }

    async fn list_grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        // As for requests: only the filters given, so that an index serves them.
        let mut sql = String::from("SELECT body FROM grants WHERE 1 = 1");
        if f.state.is_some() {
            sql.push_str(" AND state = ?");
        }
        if f.subject.is_some() {
            sql.push_str(" AND subject = ?");
        }
        if f.resource.is_some() {
            sql.push_str(" AND resource = ?");
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(s) = f.state {
            q = q.bind(s.as_str());
        }
        if let Some(s) = &f.subject {
            q = q.bind(s);
        }
        if let Some(r) = &f.resource {
            q = q.bind(r);
        }
        let rows = q.bind(i64::from(f.limit)).fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| from_json(r.try_get::<&str, _>("body")?))
            .collect()
    }

    async fn events(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, body, prev_hash, hash FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    body: r.try_get("body")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    async fn due_jobs(&self, now: Timestamp, limit: u32) -> Result<Vec<DueJob>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, key, due_at FROM jobs
             WHERE due_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1)
             ORDER BY due_at LIMIT ?2",
        )
        .bind(now.millis())
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: &str = r.try_get("kind")?;
                Ok(DueJob {
                    kind: TimerKind::parse(kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown job kind {kind}")))?,
                    key: r.try_get("key")?,
                    due_at: Timestamp::from_millis(r.try_get("due_at")?),
                })
            })
            .collect()
    }

    async fn reconcile_candidates(&self, resource: &str) -> Result<Vec<Grant>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM grants WHERE resource = ?1 AND state = 'active'
             UNION ALL
             SELECT g.body FROM grants g
             WHERE g.resource = ?1 AND g.state IN ('expired', 'revoked', 'failed')
               AND g.created_at = (SELECT MAX(h.created_at) FROM grants h
                                   WHERE h.subject = g.subject AND h.resource = ?1)
               AND NOT EXISTS (SELECT 1 FROM grants h
                               WHERE h.subject = g.subject AND h.resource = ?1
                                 AND h.state IN ('scheduled', 'activating', 'active', 'revoking'))",
        )
        .bind(resource)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| from_json(r.try_get::<&str, _>("body")?))
            .collect()
    }

    async fn next_due(&self, after: Timestamp) -> Result<Option<Timestamp>, StoreError> {
        // Two indexed lookups rather than one scan: there is a job row for every live grant.
        let due: Option<i64> = sqlx::query_scalar("SELECT MIN(due_at) FROM jobs WHERE due_at > ?")
            .bind(after.millis())
            .fetch_one(&self.read)
            .await?;
        let claim: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(claimed_until) FROM jobs
             WHERE claimed_until IS NOT NULL AND claimed_until > ?",
        )
        .bind(after.millis())
        .fetch_one(&self.read)
        .await?;
        let delivery: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(t) FROM (
               SELECT MIN(next_at) AS t FROM deliveries WHERE next_at > ?1
               UNION ALL
               SELECT MIN(claimed_until) FROM deliveries
               WHERE claimed_until IS NOT NULL AND claimed_until > ?1)",
        )
        .bind(after.millis())
        .fetch_one(&self.read)
        .await?;
        Ok(due
            .into_iter()
            .chain(claim)
            .chain(delivery)
            .min()
            .map(Timestamp::from_millis))
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let row = sqlx::query("SELECT subject FROM tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            Ok(TokenRow {
                subject: r.try_get("subject")?,
            })
        })
        .transpose()
    }

    async fn session(&self, hash: &str, now: Timestamp) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query(
            "SELECT subject, csrf, data, created_at, expires_at FROM sessions
             WHERE hash = ? AND expires_at > ?",
        )
        .bind(hash)
        .bind(now.millis())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(SessionRow {
                hash: hash.to_owned(),
                subject: r.try_get("subject")?,
                csrf: r.try_get("csrf")?,
                data: r.try_get("data")?,
                created_at: Timestamp::from_millis(r.try_get("created_at")?),
                expires_at: Timestamp::from_millis(r.try_get("expires_at")?),
            })
        })
        .transpose()
    }

    async fn callback_secret(&self, request: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT secret FROM callback_secrets WHERE request_id = ?")
                .bind(request)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    async fn due_deliveries(
        &self,
        now: Timestamp,
        skip: &[String],
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let mut sql = String::from(
            "SELECT id FROM deliveries WHERE next_at <= ?
             AND (claimed_until IS NULL OR claimed_until <= ?)",
        );
        if !skip.is_empty() {
            sql.push_str(&format!(
                " AND lane NOT IN ({})",
                vec!["?"; skip.len()].join(", ")
            ));
        }
        sql.push_str(" ORDER BY next_at LIMIT ?");
        let mut q = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(now.millis())
            .bind(now.millis());
        for lane in skip {
            q = q.bind(lane);
        }
        Ok(q.bind(i64::from(limit)).fetch_all(&self.read).await?)
    }

    async fn deliveries(&self, request: &str) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query("SELECT body FROM deliveries WHERE request_id = ? ORDER BY id")
            .bind(request)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| from_json(r.try_get::<&str, _>("body")?))
            .collect()
    }

    async fn counts(&self, now: Timestamp) -> Result<Counts, StoreError> {
        // Each count reads only the index entries of the rows it counts (the covering indexes
        // `requests_by_state`, `grants_by_state` and the partial `deliveries_due`), so its cost
        // follows the rows counted, not the size of the tables.
        let pending_requests: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE state = 'pending'")
                .fetch_one(&self.read)
                .await?;
        let active_grants: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM grants WHERE state = 'active'")
                .fetch_one(&self.read)
                .await?;
        let pending_deliveries: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE next_at IS NOT NULL")
                .fetch_one(&self.read)
                .await?;
        // Due and unclaimed, as `due_jobs` reads them: walked through `jobs_by_due` (there is
        // a job row for every live grant, but only the due ones are read), and at most
        // `MAX_BACKLOG` of them, so that a scrape during a storm of expiries stays cheap.
        let rows = sqlx::query(
            "SELECT kind, COUNT(*) AS n, MIN(due_at) AS oldest FROM (
               SELECT kind, due_at FROM jobs INDEXED BY jobs_by_due
               WHERE due_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1)
               ORDER BY due_at LIMIT ?2)
             GROUP BY kind",
        )
        .bind(now.millis())
        .bind(MAX_BACKLOG)
        .fetch_all(&self.read)
        .await?;
        let mut due_jobs = vec![];
        let mut oldest_due: Option<i64> = None;
        for r in &rows {
            let kind: &str = r.try_get("kind")?;
            let kind = TimerKind::parse(kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown job kind {kind}")))?;
            let n: i64 = r.try_get("n")?;
            let at: i64 = r.try_get("oldest")?;
            due_jobs.push((kind, u64::try_from(n).unwrap_or(0)));
            oldest_due = Some(oldest_due.map_or(at, |o| o.min(at)));
        }
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Counts {
            pending_requests: count(pending_requests),
            active_grants: count(active_grants),
            pending_deliveries: count(pending_deliveries),
            due_jobs,
            oldest_due: oldest_due.map(Timestamp::from_millis),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.jobs.is_closed() {
            return Err(StoreError::Closed);
        }
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    fn due_signal(&self) -> Arc<Notify> {
        self.due.clone()
    }

    fn head(&self) -> Head {
        self.committed.borrow().clone()
    }

    async fn close(&self) {
        let _ = self.jobs.send(Msg::Close).await;
        if let Some(w) = self.writer.lock().await.take() {
            let _ = w.await;
        }
        self.read.close().await;
    }
}
