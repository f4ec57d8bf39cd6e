//! How the suite reaches a backend: a fresh database per test, the one function that opens a
//! store on it, and the helpers that run write jobs. When the store's contract changes
//! (`store::open`'s options, the shape of a write job), this is the file to adapt.

use std::sync::{Arc, Mutex};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use store::chain::{GENESIS, Head, StoredEvent, Verifier};
use store::{BoxFuture, JobFailure, Store, StoreError, Tx};

/// The variable that names a PostgreSQL server the suite may create databases on.
pub const PG_ENV: &str = "COUNTERSIGN_TEST_PG_URL";

/// Opens a store on a database URL. Every handle of the suite is opened here.
pub async fn open(url: &str) -> Arc<dyn Store> {
    store::open(url, store::Options::default())
        .await
        .unwrap_or_else(|e| panic!("cannot open a store on {}: {e}", redact(url)))
}

/// A database of its own for one test, removed when the test ends. Several store handles
/// opened on it stand for several replicas.
pub struct Db {
    url: String,
    owned: Owned,
}

enum Owned {
    /// The SQLite file lives in this directory.
    Dir(#[allow(dead_code)] tempfile::TempDir),
    /// A database created on the server of `admin` (the URL the environment gave).
    Postgres { admin: String, name: String },
}

impl Db {
    /// A fresh SQLite file in a temporary directory.
    pub async fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("conformance.db");
        Db {
            url: format!("sqlite://{}", path.to_str().expect("a UTF-8 path")),
            owned: Owned::Dir(dir),
        }
    }

    /// A fresh database `cs_conf_<random hex>` on the server `COUNTERSIGN_TEST_PG_URL` names
    /// (its role needs `CREATEDB`). Panics when the variable is not set: the test was asked
    /// for and cannot run.
    pub async fn postgres() -> Db {
        let admin = std::env::var(PG_ENV).unwrap_or_else(|_| {
            panic!(
                "{PG_ENV} is not set: the PostgreSQL half of the conformance suite needs a \
                 server (`bash .ci/postgres.sh` starts one and prints its URL)"
            )
        });
        let name = format!("cs_conf_{:016x}", rand::random::<u64>());
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", redact(&admin)));
        // A linguistic collation, as most servers are set up with (en_US.UTF-8), rather than
        // the byte order of a C locale: no statement may depend on it. ICU needs PostgreSQL 15;
        // an older server gets its default.
        let icu = format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        );
        if let Err(e) = conn.execute(AssertSqlSafe(icu)).await {
            eprintln!("no ICU collation for {name} ({e}); the server's default is used");
            conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .unwrap_or_else(|e| {
                    panic!("cannot create database {name} (does the role have CREATEDB?): {e}")
                });
        }
        let _ = conn.close().await;
        Db {
            url: with_database(&admin, &name),
            owned: Owned::Postgres { admin, name },
        }
    }

    /// A new store handle on this database: another replica.
    pub async fn open(&self) -> Arc<dyn Store> {
        open(&self.url).await
    }
}

impl Drop for Db {
    /// Drops a PostgreSQL test database, ending the sessions still on it. Runs on a thread of
    /// its own because `Drop` cannot wait on the test's runtime.
    fn drop(&mut self) {
        let Owned::Postgres { admin, name } = &self.owned else {
            return;
        };
        let (admin, db) = (admin.clone(), name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await?;
                conn.execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                )))
                .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {name}");
        }
    }
}

/// `url` with its database (the path) replaced by `name`, its query string kept.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// A URL for messages: without the user and password.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://…@{host}"),
        _ => url.to_owned(),
    }
}

/// How a write job ended without committing.
#[derive(Debug, PartialEq, Eq)]
pub enum Failed {
    /// The job refused (as the engine's domain errors do), with its reason.
    Refused(String),
    /// The store failed.
    Store(String),
}

/// Why a job of the suite stops: the store failed (`?` on a `StoreError`), or the job
/// refused with a reason.
pub enum JobError {
    Store(StoreError),
    Refused(String),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        JobError::Store(e)
    }
}

/// The job's refusal: it returns this, and nothing it wrote may remain.
pub fn refuse(why: impl Into<String>) -> JobError {
    JobError::Refused(why.into())
}

/// Runs `f` as one write job and returns what it returned, or how it failed. The store only
/// learns whether the job succeeded; its value (or its reason to refuse) waits beside it, as
/// the engine keeps them, and is handed over once the store has answered.
pub async fn try_write<T, F>(store: &dyn Store, f: F) -> Result<T, Failed>
where
    T: Send + 'static,
    F: for<'a> FnOnce(&'a mut dyn Tx) -> BoxFuture<'a, Result<T, JobError>> + Send + 'static,
{
    let slot: Arc<Mutex<Option<Result<T, String>>>> = Arc::new(Mutex::new(None));
    let kept = slot.clone();
    let job: store::WriteJob = Box::new(move |tx| {
        Box::pin(async move {
            let (outcome, answer) = match f(tx).await {
                Ok(v) => (Some(Ok(v)), Ok(())),
                Err(JobError::Refused(why)) => (Some(Err(why)), Err(JobFailure::Refused)),
                Err(JobError::Store(e)) => (None, Err(JobFailure::Store(e))),
            };
            *kept.lock().expect("the job's slot") = outcome;
            answer
        })
    });
    let answer = store.write(job).await;
    let outcome = slot.lock().expect("the job's slot").take();
    match (answer, outcome) {
        (Ok(()), Some(Ok(v))) => Ok(v),
        (Ok(()), _) => panic!("the store committed a job that did not succeed"),
        (Err(JobFailure::Refused), Some(Err(why))) => Err(Failed::Refused(why)),
        (Err(JobFailure::Refused), _) => panic!("the store says a job refused that did not"),
        (Err(JobFailure::Store(e)), _) => Err(Failed::Store(e.to_string())),
    }
}

/// Runs `f` as one write job that must commit.
pub async fn write<T, F>(store: &dyn Store, f: F) -> T
where
    T: Send + 'static,
    F: for<'a> FnOnce(&'a mut dyn Tx) -> BoxFuture<'a, Result<T, JobError>> + Send + 'static,
{
    match try_write(store, f).await {
        Ok(v) => v,
        Err(e) => panic!("a write job that should commit failed: {e:?}"),
    }
}

/// What a job observed, checked once it has returned: a job runs on the store's own tasks,
/// where a failed assertion would take the store down rather than fail the test.
#[derive(Default)]
pub struct Seen(Vec<String>);

impl Seen {
    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.0
                .push(format!("{what}:\n   got {got:?}\n  want {want:?}"));
        }
    }

    pub fn assert(self) {
        assert!(self.0.is_empty(), "inside the job:\n{}", self.0.join("\n"));
    }
}

/// Every stored audit event, in order, read a page at a time.
pub async fn all_events(store: &dyn Store) -> Vec<StoredEvent> {
    let mut out: Vec<StoredEvent> = vec![];
    loop {
        let after = out.last().map_or(0, |e| e.seq);
        let page = store.events(after, 500).await.expect("events");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Checks the whole chain with the audit crate's verifier: sequence numbers 1..=N without a
/// gap, each `prev_hash` the previous hash, each hash its contents. Returns the events.
pub async fn verified_chain(store: &dyn Store) -> Vec<StoredEvent> {
    let events = all_events(store).await;
    let mut v = Verifier::default();
    for e in &events {
        v.check(e).unwrap_or_else(|b| panic!("{b}"));
    }
    assert_eq!(v.checked as usize, events.len());
    events
}

/// The head a chain of these events ends at.
pub fn head_of(events: &[StoredEvent]) -> Head {
    events.last().map_or_else(Head::default, |e| Head {
        seq: e.seq,
        hash: e.hash.clone(),
    })
}

/// Whether `head` names a point of this chain (its start, or one of its events).
pub fn is_on_chain(head: &Head, events: &[StoredEvent]) -> bool {
    if head.seq == 0 {
        return head.hash == GENESIS;
    }
    usize::try_from(head.seq - 1)
        .ok()
        .and_then(|i| events.get(i))
        .is_some_and(|e| e.seq == head.seq && e.hash == head.hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_test_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/countersign_test", "cs_conf_1"),
            "postgres://u:p@h:5432/cs_conf_1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(redact("postgres://u:p@h:1/db"), "postgres://…@h:1/db");
    }
}
