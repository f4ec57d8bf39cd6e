//! The SQLite store: WAL, `synchronous = FULL`, and one writer task that groups the write
//! jobs waiting at a moment into one transaction.
//!
//! Grouping is what lets durability not cost throughput: while one transaction commits (and
//! waits for its fsync), the next jobs queue up, and they are all committed by the next single
//! fsync. Each job runs inside its own savepoint, so a job that refuses (or fails) is rolled
//! back alone while the rest of its group commits. A reply is sent only after the commit
//! returned, so an acknowledged decision survives a crash or power loss.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use domain::{Event, Grant, Request, TimerKind, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, SqlStr};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::chain::{self, GENESIS, StoredEvent};
use crate::{
    DueJob, GrantFilter, JobFailure, JobResult, RequestFilter, Store, StoreError, TokenRow, Tx,
    WriteJob,
};

/// The most jobs committed together. Larger groups amortise the fsync further but make every
/// reply in the group wait for the slowest job.
const MAX_GROUP: usize = 512;

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("init"),
        MigrationType::Simple,
        SqlStr::from_static(include_str!("../migrations/sqlite/0001_init.sql")),
        false,
    )])
}

enum Msg {
    Job(WriteJob, oneshot::Sender<JobResult>),
    Close,
}

pub struct SqliteStore {
    jobs: mpsc::Sender<Msg>,
    read: SqlitePool,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The end of the hash chain as the writer knows it.
#[derive(Clone)]
struct Head {
    seq: i64,
    hash: String,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, runs migrations and starts the writer.
    pub async fn open(path: &str) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let mut conn = SqliteConnection::connect_with(&opts).await?;
        migrator().run(&mut conn).await?;
        // One process owns a SQLite database: claims left by a process that died are void.
        sqlx::query("UPDATE jobs SET claimed_until = NULL WHERE claimed_until IS NOT NULL")
            .execute(&mut conn)
            .await?;
        let head = match sqlx::query("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut conn)
            .await?
        {
            Some(row) => Head {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
            },
            None => Head {
                seq: 0,
                hash: GENESIS.to_owned(),
            },
        };
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let (tx, rx) = mpsc::channel(4096);
        let writer = tokio::spawn(writer(conn, rx, head));
        Ok(SqliteStore {
            jobs: tx,
            read,
            writer: Mutex::new(Some(writer)),
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
        None => Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        },
    })
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::query(sql).execute(conn).await?;
    Ok(())
}

async fn writer(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>, mut head: Head) {
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
        run_group(&mut conn, &mut head, group).await;
    }
    let _ = conn.close().await;
}

async fn run_group(
    conn: &mut SqliteConnection,
    head: &mut Head,
    group: Vec<(WriteJob, oneshot::Sender<JobResult>)>,
) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE").await {
        let msg = e.to_string();
        for (_, reply) in group {
            let _ = reply.send(Err(JobFailure::Store(StoreError::Corrupt(msg.clone()))));
        }
        return;
    }
    let mut done = Vec::with_capacity(group.len());
    for (job, reply) in group {
        let saved = head.clone();
        let result = match exec(conn, "SAVEPOINT job").await {
            Err(e) => Err(JobFailure::Store(e)),
            Ok(()) => {
                let mut tx = SqliteTx {
                    conn: &mut *conn,
                    head: &mut *head,
                };
                let result = job(&mut tx).await;
                let end = if result.is_ok() {
                    exec(conn, "RELEASE job").await
                } else {
                    match exec(conn, "ROLLBACK TO job").await {
                        Ok(()) => exec(conn, "RELEASE job").await,
                        Err(e) => Err(e),
                    }
                };
                if result.is_err() {
                    *head = saved;
                }
                match end {
                    Ok(()) => result,
                    Err(e) => Err(JobFailure::Store(e)),
                }
            }
        };
        done.push((reply, result));
    }
    match exec(conn, "COMMIT").await {
        Ok(()) => {
            for (reply, result) in done {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "commit failed; the group is rolled back");
            let _ = exec(conn, "ROLLBACK").await;
            match load_head(conn).await {
                Ok(h) => *head = h,
                Err(e) => tracing::error!(error = %e, "cannot reload the audit chain head"),
            }
            let msg = e.to_string();
            for (reply, _) in done {
                let _ = reply.send(Err(JobFailure::Store(StoreError::Corrupt(format!(
                    "commit failed: {msg}"
                )))));
            }
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

struct SqliteTx<'c> {
    conn: &'c mut SqliteConnection,
    head: &'c mut Head,
}

#[async_trait]
impl Tx for SqliteTx<'_> {
    async fn request(&mut self, id: &str) -> Result<Option<Request>, StoreError> {
        let row = sqlx::query("SELECT body FROM requests WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *self.conn)
            .await?;
        row.map(|r| from_json(r.try_get::<&str, _>("body")?))
            .transpose()
    }

    async fn put_request(&mut self, r: &Request) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO requests (id, resource, requester, state, created_at, body)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
        )
        .bind(&r.id)
        .bind(&r.resource)
        .bind(&r.requester)
        .bind(r.state.as_str())
        .bind(r.created_at.millis())
        .bind(to_json(r)?)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    async fn grant(&mut self, id: &str) -> Result<Option<Grant>, StoreError> {
        let row = sqlx::query("SELECT body FROM grants WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *self.conn)
            .await?;
        row.map(|r| from_json(r.try_get::<&str, _>("body")?))
            .transpose()
    }

    async fn put_grant(&mut self, g: &Grant) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO grants (id, request_id, subject, resource, workflow, state, created_at, body)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
        )
        .bind(&g.id)
        .bind(&g.spec.request)
        .bind(&g.spec.subject)
        .bind(&g.spec.resource)
        .bind(&g.spec.workflow)
        .bind(g.state.as_str())
        .bind(g.created_at.millis())
        .bind(to_json(g)?)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    async fn active_grant_covering(
        &mut self,
        subject: &str,
        resource: &str,
        part_of: Option<&str>,
    ) -> Result<Option<Grant>, StoreError> {
        let row = sqlx::query(
            "SELECT body FROM grants WHERE subject = ? AND state = 'active'
             AND (resource = ? OR (workflow IS NOT NULL AND workflow = ?))
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(subject)
        .bind(resource)
        .bind(part_of)
        .fetch_optional(&mut *self.conn)
        .await?;
        row.map(|r| from_json(r.try_get::<&str, _>("body")?))
            .transpose()
    }

    async fn append(&mut self, event: &Event, at: Timestamp) -> Result<i64, StoreError> {
        let seq = self.head.seq + 1;
        let body = to_json(event)?;
        let hash = chain::hash(&self.head.hash, seq, at.millis(), &body);
        sqlx::query(
            "INSERT INTO events (seq, at, kind, request_id, grant_id, body, prev_hash, hash)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(seq)
        .bind(at.millis())
        .bind(event.kind.as_str())
        .bind(&event.request)
        .bind(&event.grant)
        .bind(&body)
        .bind(&self.head.hash)
        .bind(&hash)
        .execute(&mut *self.conn)
        .await?;
        *self.head = Head { seq, hash };
        Ok(seq)
    }

    async fn schedule(
        &mut self,
        kind: TimerKind,
        key: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO jobs (kind, key, due_at, claimed_until) VALUES (?, ?, ?, NULL)
             ON CONFLICT (kind, key) DO UPDATE SET due_at = excluded.due_at, claimed_until = NULL",
        )
        .bind(kind.as_str())
        .bind(key)
        .bind(at.millis())
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    async fn unschedule(&mut self, kind: TimerKind, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM jobs WHERE kind = ? AND key = ?")
            .bind(kind.as_str())
            .bind(key)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    async fn claim(
        &mut self,
        kind: TimerKind,
        key: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET claimed_until = ? WHERE kind = ? AND key = ? AND due_at <= ?
             AND (claimed_until IS NULL OR claimed_until <= ?)",
        )
        .bind(until.millis())
        .bind(kind.as_str())
        .bind(key)
        .bind(now.millis())
        .bind(now.millis())
        .execute(&mut *self.conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn put_token(
        &mut self,
        hash: &str,
        subject: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tokens (hash, subject, created_at) VALUES (?, ?, ?)")
            .bind(hash)
            .bind(subject)
            .bind(now.millis())
            .execute(&mut *self.conn)
            .await?;
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
        let row = sqlx::query("SELECT body FROM requests WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| from_json(r.try_get::<&str, _>("body")?))
            .transpose()
    }

    async fn list_requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let (before_at, before_id) = match &f.before {
            Some((at, id)) => (Some(at.millis()), Some(id.as_str())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT body FROM requests
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR resource = ?2)
               AND (?3 IS NULL OR requester = ?3)
               AND (?4 IS NULL OR created_at < ?4 OR (created_at = ?4 AND id < ?5))
             ORDER BY created_at DESC, id DESC LIMIT ?6",
        )
        .bind(f.state.map(|s| s.as_str()))
        .bind(f.resource.as_deref())
        .bind(f.requester.as_deref())
        .bind(before_at)
        .bind(before_id)
        .bind(i64::from(f.limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| from_json(r.try_get::<&str, _>("body")?))
            .collect()
    }

    async fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        let row = sqlx::query("SELECT body FROM grants WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| from_json(r.try_get::<&str, _>("body")?))
            .transpose()
    }

    async fn list_grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM grants
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR subject = ?2)
               AND (?3 IS NULL OR resource = ?3)
             ORDER BY created_at DESC, id DESC LIMIT ?4",
        )
        .bind(f.state.map(|s| s.as_str()))
        .bind(f.subject.as_deref())
        .bind(f.resource.as_deref())
        .bind(i64::from(f.limit))
        .fetch_all(&self.read)
        .await?;
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

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT MIN(MAX(due_at, COALESCE(claimed_until, 0))) FROM jobs")
                .fetch_one(&self.read)
                .await?;
        Ok(at.map(Timestamp::from_millis))
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

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn close(&self) {
        let _ = self.jobs.send(Msg::Close).await;
        if let Some(w) = self.writer.lock().await.take() {
            let _ = w.await;
        }
        self.read.close().await;
    }
}
