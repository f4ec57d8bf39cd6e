//! The store over either database: write jobs go to the [`Writer`](crate::writer) task, reads
//! to a pool.

use std::sync::Arc;

use async_trait::async_trait;
use domain::{Delivery, Grant, Request, RequestState, Run, TimerKind, Timestamp};
use tokio::sync::{Mutex, Notify, mpsc, oneshot, watch};

use crate::chain::{Head, StoredEvent};
use crate::db::{Arg, Conn, Dialect, Pool, Row, args};
use crate::writer::{Cache, DUE_CHANNEL, Msg, Source, Writer, bodies, session_row};
use crate::{
    Counts, DueJob, GrantFilter, JobFailure, JobResult, Options, RequestFilter, RunFilter,
    SessionRow, Store, StoreError, TokenRow, WriteJob,
};

/// The most due jobs [`Store::counts`] counts: a backlog larger than this is reported as this.
const MAX_BACKLOG: i64 = 100_000;

pub struct SqlStore {
    jobs: mpsc::Sender<Msg>,
    read: Pool,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// PostgreSQL: the task that hears other replicas' `NOTIFY`.
    listener: Option<tokio::task::JoinHandle<()>>,
    due: Arc<Notify>,
    holder: Arc<str>,
    /// The head of the chain as this process last committed it.
    committed: watch::Receiver<Head>,
}

impl SqlStore {
    /// Starts the writer on `source` (migrated already) and reads through `read`.
    async fn start(source: Source, read: Pool, options: &Options) -> Result<SqlStore, StoreError> {
        let (holder, metrics) = (options.holder.as_str(), options.metrics.clone());
        // The chain head row, made from the events the first time (a database written before
        // it existed); every replica that starts tries, and one row is written.
        let head = load_head(&read).await?;
        let (tx, rx) = mpsc::channel(4096);
        let due = Arc::new(Notify::new());
        let (committed_tx, committed) = watch::channel(head);
        let holder: Arc<str> = Arc::from(holder);
        let writer = tokio::spawn(
            Writer {
                source,
                holder: holder.clone(),
                committed: committed_tx,
                version: None,
                cache: Cache::default(),
                due: due.clone(),
                metrics,
            }
            .run(rx),
        );
        let listener = match &read {
            Pool::Postgres(pool) if !options.poll_only => {
                Some(tokio::spawn(listen(pool.clone(), due.clone())))
            }
            _ => None,
        };
        Ok(SqlStore {
            jobs: tx,
            read,
            writer: Mutex::new(Some(writer)),
            listener,
            due,
            holder,
            committed,
        })
    }

    /// Starts a SQLite store on a connection made by `sqlite::connect`: the writer keeps the
    /// connection.
    pub(crate) async fn start_sqlite(
        (conn, read): (Conn, Pool),
        options: &Options,
    ) -> Result<SqlStore, StoreError> {
        SqlStore::start(Source::Sqlite(Some(conn)), read, options).await
    }

    /// Starts a PostgreSQL store on a connection made by `postgres::connect`: the writer
    /// keeps a connection of the pool.
    pub(crate) async fn start_postgres(
        (conn, pool): (Conn, Pool),
        options: &Options,
    ) -> Result<SqlStore, StoreError> {
        conn.close().await;
        SqlStore::start(Source::postgres(&pool), pool, options).await
    }

    fn dialect(&self) -> Dialect {
        self.read.dialect()
    }
}

/// Makes sure the one row of `chain_head` exists (written from the events if not), on the
/// connection that ran the migrations, and returns the head.
pub(crate) async fn ensure_head(conn: &mut Conn) -> Result<(), StoreError> {
    let last = conn
        .row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            vec![],
        )
        .await?;
    let head = match last {
        Some(r) => Head {
            seq: r.int(0)?,
            hash: r.owned_text(1)?,
        },
        None => Head::default(),
    };
    conn.exec(
        "INSERT INTO chain_head (id, seq, hash, version) VALUES (1, $1, $2, 0)
         ON CONFLICT (id) DO NOTHING",
        args![head.seq, &head.hash],
    )
    .await?;
    Ok(())
}

async fn load_head(read: &Pool) -> Result<Head, StoreError> {
    let row = read
        .row("SELECT seq, hash FROM chain_head WHERE id = 1", vec![])
        .await?
        .ok_or_else(|| StoreError::Corrupt("the chain head row is missing".into()))?;
    Ok(Head {
        seq: row.int(0)?,
        hash: row.owned_text(1)?,
    })
}

/// A statement built a clause at a time: each `#` in a clause is the next numbered parameter.
struct Query {
    sql: String,
    args: Vec<Arg>,
}

impl Query {
    fn new(sql: &str) -> Query {
        Query {
            sql: sql.to_owned(),
            args: vec![],
        }
    }

    fn push(&mut self, clause: &str) {
        self.sql.push_str(clause);
    }

    fn bind(&mut self, clause: &str, v: impl Into<Arg>) {
        self.bind_all(clause, vec![v.into()]);
    }

    fn bind_opt(&mut self, clause: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.bind(clause, v);
        }
    }

    fn bind_all(&mut self, clause: &str, args: Vec<Arg>) {
        let mut args = args.into_iter();
        for (i, part) in clause.split('#').enumerate() {
            if i > 0 {
                self.args.push(args.next().unwrap_or(Arg::Text(None)));
                self.sql.push_str(&format!("${}", self.args.len()));
            }
            self.sql.push_str(part);
        }
    }

    /// The page's bounds and order over `(at, id)`: created in `[from, until)`, past `after`
    /// in the list's order, ordered and limited. `(at, id) < (x, y)` is a row-value
    /// comparison, which both databases turn into a range of the index that ends in those two
    /// columns, so a deep page costs what the first does.
    #[allow(clippy::too_many_arguments)]
    fn keyset(
        &mut self,
        at: &str,
        id: &str,
        from: Option<Timestamp>,
        until: Option<Timestamp>,
        after: Option<&(Timestamp, String)>,
        oldest_first: bool,
        limit: u32,
    ) {
        let (past, order) = if oldest_first {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        if let Some(t) = from {
            self.bind(&format!(" AND {at} >= #"), t.millis());
        }
        if let Some(t) = until {
            self.bind(&format!(" AND {at} < #"), t.millis());
        }
        if let Some((t, last)) = after {
            self.bind_all(
                &format!(" AND ({at}, {id}) {past} (#, #)"),
                args![t.millis(), last],
            );
        }
        self.bind(
            &format!(" ORDER BY {at} {order}, {id} {order} LIMIT #"),
            i64::from(limit),
        );
    }
}

/// Wakes this store's worker whenever another replica commits a job that is due now. A
/// connection lost is reconnected by `PgListener`; what was said meanwhile is not heard, and
/// the worker's polling finds it.
async fn listen(pool: sqlx::PgPool, due: Arc<Notify>) {
    let mut failures = 0u32;
    loop {
        let heard = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen(DUE_CHANNEL).await?;
            loop {
                l.recv().await?;
                due.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        if let Err(e) = heard.await {
            failures += 1;
            if failures == 1 || failures.is_power_of_two() {
                tracing::warn!(error = %e, failures, "listening for other replicas failed; polling meanwhile");
            }
        }
        // Not at once again: the database may be down.
        #[allow(clippy::disallowed_methods)] // A retry delay, not a decision.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn due_job(r: &Row) -> Result<DueJob, StoreError> {
    let kind = r.text(0)?;
    Ok(DueJob {
        kind: TimerKind::parse(kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown job kind {kind}")))?,
        key: r.owned_text(1)?,
        due_at: Timestamp::from_millis(r.int(2)?),
    })
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait]
impl Store for SqlStore {
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
        let rows = self
            .read
            .rows("SELECT body FROM requests WHERE id = $1", args![id])
            .await?;
        Ok(bodies(&rows)?.pop())
    }

    async fn list_requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        // Only the filters given go into the statement, so that an index serves them
        // (`$1 IS NULL OR state = $1` would make the database scan the table).
        let mut q;
        let (at, id) = match &f.audience {
            None => {
                q = Query::new("SELECT body FROM requests WHERE 1 = 1");
                q.bind_opt(" AND state = #", f.state.map(|s| s.as_str()));
                q.bind_opt(" AND resource = #", f.resource.as_deref());
                q.bind_opt(" AND requester = #", f.requester.as_deref());
                ("created_at", "id")
            }
            Some(person) => {
                // The person's rows of `request_people`, walked in the list's order, each
                // joined to its request: through the partial index of the rows they may
                // decide, or of the pending ones, when the list asks for those, else through
                // the table itself (its key starts with the person). The partial indexes fit
                // only where the statement names their condition as a literal. SQLite takes
                // the tables in the order written after `CROSS JOIN`, and is told the index (it
                // has no statistics to choose by); PostgreSQL chooses by its own.
                let pending = f.state == Some(RequestState::Pending);
                let hint = match self.dialect() {
                    Dialect::Postgres => "",
                    Dialect::Sqlite if f.reviewable => " INDEXED BY request_people_reviewable",
                    Dialect::Sqlite if pending => " INDEXED BY request_people_pending",
                    Dialect::Sqlite => "",
                };
                q = Query::new(&format!(
                    "SELECT r.body FROM request_people AS p{hint} CROSS JOIN requests AS r
                     WHERE r.id = p.request_id"
                ));
                q.bind(" AND p.person = #", person.as_str());
                if f.reviewable {
                    q.push(" AND p.reviewable = 1");
                }
                if pending {
                    q.push(" AND p.state = 'pending'");
                } else {
                    q.bind_opt(" AND p.state = #", f.state.map(|s| s.as_str()));
                }
                q.bind_opt(" AND p.resource = #", f.resource.as_deref());
                q.bind_opt(" AND r.requester = #", f.requester.as_deref());
                ("p.created_at", "p.request_id")
            }
        };
        q.keyset(
            at,
            id,
            f.from,
            f.until,
            f.after.as_ref(),
            f.oldest_first,
            f.limit,
        );
        bodies(&self.read.rows(&q.sql, q.args).await?)
    }

    async fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        let rows = self
            .read
            .rows("SELECT body FROM grants WHERE id = $1", args![id])
            .await?;
        Ok(bodies(&rows)?.pop())
    }

    async fn list_grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        let Some(who) = &f.audience else {
            // An admin's list: one walk of the index the filters name.
            let mut q = Query::new("SELECT body FROM grants WHERE 1 = 1");
            grant_page(&mut q, f);
            return bodies(&self.read.rows(&q.sql, q.args).await?);
        };
        // Someone else's: their own grants, and those of each resource they own, each a walk
        // of its own index (`grants_by_subject`, `grants_by_resource`) that stops at the
        // limit; the union of those few rows is ordered again and only then are the bodies
        // read.
        let mut q = Query::new("SELECT g.body FROM grants AS g JOIN (");
        let mut branches = 0;
        let mut branch = |q: &mut Query, column: &str, value: &str| {
            if branches > 0 {
                q.push(" UNION ");
            }
            branches += 1;
            q.push(&format!(
                "SELECT id, created_at FROM (SELECT id, created_at FROM grants WHERE {column} = "
            ));
            q.bind("#", value);
            grant_page(q, f);
            q.push(&format!(") AS b{branches}"));
        };
        if f.subject.as_ref().is_none_or(|s| *s == who.subject) {
            branch(&mut q, "subject", &who.subject);
        }
        for r in &who.resources {
            if f.resource.as_ref().is_none_or(|f| f == r) {
                branch(&mut q, "resource", r);
            }
        }
        if branches == 0 {
            return Ok(vec![]);
        }
        q.push(") AS k ON g.id = k.id");
        q.keyset("k.created_at", "k.id", None, None, None, false, f.limit);
        bodies(&self.read.rows(&q.sql, q.args).await?)
    }

    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let rows = self
            .read
            .rows("SELECT body FROM runs WHERE id = $1", args![id])
            .await?;
        Ok(bodies(&rows)?.pop())
    }

    async fn list_runs(&self, f: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let mut q = Query::new("SELECT body FROM runs WHERE 1 = 1");
        if let Some(r) = &f.runner {
            q.bind(" AND runner = #", r.as_str());
        }
        if let Some(s) = f.state {
            q.bind(" AND state = #", s.as_str());
        }
        q.keyset(
            "created_at",
            "id",
            None,
            None,
            f.after.as_ref(),
            false,
            f.limit,
        );
        bodies(&self.read.rows(&q.sql, q.args).await?)
    }

    async fn events(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = self
            .read
            .rows(
                "SELECT seq, at, body, prev_hash, hash FROM events
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                args![after, i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    seq: r.int(0)?,
                    at: r.int(1)?,
                    body: r.owned_text(2)?,
                    prev_hash: r.owned_text(3)?,
                    hash: r.owned_text(4)?,
                })
            })
            .collect()
    }

    async fn due_jobs(&self, now: Timestamp, limit: u32) -> Result<Vec<DueJob>, StoreError> {
        let rows = self
            .read
            .rows(
                "SELECT kind, key, due_at FROM jobs
                 WHERE due_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)
                 ORDER BY due_at LIMIT $2",
                args![now.millis(), i64::from(limit)],
            )
            .await?;
        rows.iter().map(due_job).collect()
    }

    async fn reconcile_candidates(&self, resource: &str) -> Result<Vec<Grant>, StoreError> {
        let rows = self
            .read
            .rows(
                "SELECT body FROM grants WHERE resource = $1 AND state = 'active'
                 UNION ALL
                 SELECT g.body FROM grants g
                 WHERE g.resource = $1 AND g.state IN ('expired', 'revoked', 'failed')
                   AND g.created_at = (SELECT MAX(h.created_at) FROM grants h
                                       WHERE h.subject = g.subject AND h.resource = $1)
                   AND NOT EXISTS (SELECT 1 FROM grants h
                                   WHERE h.subject = g.subject AND h.resource = $1
                                     AND h.state IN ('scheduled', 'activating', 'active', 'revoking'))",
                args![resource],
            )
            .await?;
        bodies(&rows)
    }

    async fn next_due(&self, after: Timestamp) -> Result<Option<Timestamp>, StoreError> {
        // Indexed lookups rather than one scan: there is a job row for every live grant.
        let mut out: Option<i64> = None;
        for sql in [
            "SELECT MIN(due_at) FROM jobs WHERE due_at > $1",
            "SELECT MIN(claimed_until) FROM jobs
             WHERE claimed_until IS NOT NULL AND claimed_until > $1",
            "SELECT MIN(next_at) FROM deliveries WHERE next_at IS NOT NULL AND next_at > $1",
            "SELECT MIN(claimed_until) FROM deliveries
             WHERE claimed_until IS NOT NULL AND claimed_until > $1",
        ] {
            if let Some(r) = self.read.row(sql, args![after.millis()]).await?
                && let Some(t) = r.opt_int(0)?
            {
                out = Some(out.map_or(t, |o| o.min(t)));
            }
        }
        Ok(out.map(Timestamp::from_millis))
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let row = self
            .read
            .row("SELECT subject FROM tokens WHERE hash = $1", args![hash])
            .await?;
        row.map(|r| {
            Ok(TokenRow {
                subject: r.owned_text(0)?,
            })
        })
        .transpose()
    }

    async fn session(&self, hash: &str, now: Timestamp) -> Result<Option<SessionRow>, StoreError> {
        let row = self
            .read
            .row(
                "SELECT subject, csrf, data, created_at, expires_at FROM sessions
                 WHERE hash = $1 AND expires_at > $2",
                args![hash, now.millis()],
            )
            .await?;
        row.map(|r| session_row(hash, &r)).transpose()
    }

    async fn callback_secret(&self, request: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .read
            .row(
                "SELECT secret FROM callback_secrets WHERE request_id = $1",
                args![request],
            )
            .await?;
        row.map(|r| r.owned_text(0)).transpose()
    }

    async fn slack_person(&self, account: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .read
            .row(
                "SELECT person FROM slack_links WHERE account = $1",
                args![account],
            )
            .await?;
        row.map(|r| r.owned_text(0)).transpose()
    }

    async fn slack_account(&self, person: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .read
            .row(
                "SELECT account FROM slack_links WHERE person = $1
                 ORDER BY linked_at DESC, account LIMIT 1",
                args![person],
            )
            .await?;
        row.map(|r| r.owned_text(0)).transpose()
    }

    async fn slack_messages(&self, request: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .read
            .rows(
                "SELECT channel, ts FROM slack_messages WHERE request_id = $1
                 ORDER BY posted_at, channel, ts LIMIT $2",
                args![request, i64::from(crate::MAX_SLACK_MESSAGES)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.owned_text(0)?, r.owned_text(1)?)))
            .collect()
    }

    async fn due_deliveries(
        &self,
        now: Timestamp,
        per_lane: u32,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .read
            .rows(
                "SELECT id FROM deliveries WHERE next_at <= $1
                 AND (claimed_until IS NULL OR claimed_until <= $1)
                 AND lane NOT IN (SELECT lane FROM deliveries WHERE claimed_until > $1
                                  GROUP BY lane HAVING COUNT(*) >= $2)
                 ORDER BY next_at LIMIT $3",
                args![now.millis(), i64::from(per_lane), i64::from(limit)],
            )
            .await?;
        rows.iter().map(|r| r.owned_text(0)).collect()
    }

    async fn delivery_lanes(&self, ids: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        let ids = &ids[..ids.len().min(256)];
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT id, lane FROM deliveries WHERE id IN ({})",
            crate::db::params(1, ids.len())
        );
        let rows = self
            .read
            .rows(&sql, ids.iter().map(|i| Arg::from(i.as_str())).collect())
            .await?;
        rows.iter()
            .map(|r| Ok((r.owned_text(0)?, r.owned_text(1)?)))
            .collect()
    }

    async fn deliveries(&self, request: &str) -> Result<Vec<Delivery>, StoreError> {
        let rows = self
            .read
            .rows(
                "SELECT body FROM deliveries WHERE request_id = $1 ORDER BY id",
                args![request],
            )
            .await?;
        bodies(&rows)
    }

    async fn counts(&self, now: Timestamp) -> Result<Counts, StoreError> {
        // Each count reads only the index entries of the rows it counts (`requests_by_state`,
        // `grants_by_state` and the partial `deliveries_due`), so its cost follows the rows
        // counted, not the size of the tables.
        let scalar = |sql: &'static str| async move {
            let r = self.read.row(sql, vec![]).await?;
            Ok::<i64, StoreError>(r.map(|r| r.int(0)).transpose()?.unwrap_or(0))
        };
        let pending_requests =
            scalar("SELECT COUNT(*) FROM requests WHERE state = 'pending'").await?;
        let active_grants = scalar("SELECT COUNT(*) FROM grants WHERE state = 'active'").await?;
        let pending_deliveries =
            scalar("SELECT COUNT(*) FROM deliveries WHERE next_at IS NOT NULL").await?;
        // Due and unclaimed, as `due_jobs` reads them: walked through `jobs_by_due` (there is
        // a job row for every live grant, but only the due ones are read), and at most
        // `MAX_BACKLOG` of them, so that a scrape during a storm of expiries stays cheap.
        let hint = match self.dialect() {
            Dialect::Sqlite => " INDEXED BY jobs_by_due",
            Dialect::Postgres => "",
        };
        let rows = self
            .read
            .rows(
                &format!(
                    "SELECT kind, COUNT(*), MIN(due_at) FROM (
                       SELECT kind, due_at FROM jobs{hint}
                       WHERE due_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)
                       ORDER BY due_at LIMIT $2) AS due
                     GROUP BY kind"
                ),
                args![now.millis(), MAX_BACKLOG],
            )
            .await?;
        let mut due_jobs = vec![];
        let mut oldest_due: Option<i64> = None;
        for r in &rows {
            let kind = r.text(0)?;
            let kind = TimerKind::parse(kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown job kind {kind}")))?;
            let at = r.int(2)?;
            due_jobs.push((kind, count(r.int(1)?)));
            oldest_due = Some(oldest_due.map_or(at, |o| o.min(at)));
        }
        due_jobs.sort_by_key(|(k, _)| TimerKind::ALL.iter().position(|x| x == k));
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
        self.read.row("SELECT 1", vec![]).await?;
        Ok(())
    }

    fn due_signal(&self) -> Arc<Notify> {
        self.due.clone()
    }

    fn holder(&self) -> &str {
        &self.holder
    }

    fn head(&self) -> Head {
        self.committed.borrow().clone()
    }

    async fn close(&self) {
        let _ = self.jobs.send(Msg::Close).await;
        if let Some(w) = self.writer.lock().await.take() {
            let _ = w.await;
        }
        if let Some(l) = &self.listener {
            l.abort();
        }
        self.read.close().await;
    }
}

/// A grant list's filters and its page (newest first, after the cursor, at most the limit),
/// added to a `WHERE` clause of `grants`.
fn grant_page(q: &mut Query, f: &GrantFilter) {
    q.bind_opt(" AND state = #", f.state.map(|s| s.as_str()));
    q.bind_opt(" AND subject = #", f.subject.as_deref());
    q.bind_opt(" AND resource = #", f.resource.as_deref());
    q.keyset(
        "created_at",
        "id",
        None,
        None,
        f.after.as_ref(),
        false,
        f.limit,
    );
}
