//! The harness: a real server on a loopback port, driven over HTTP.
//!
//! [`TestApp::spawn`] writes a configuration (the fixed people below, two exec connectors and
//! the test's resources) into a temporary directory, opens the engine on a database of its own
//! ([`database`]: a SQLite file there, or a fresh PostgreSQL database) with a [`ManualClock`], serves the real router on `127.0.0.1:0` without the background
//! worker, and mints one bearer token per user. Time moves only through [`TestApp::advance`],
//! which then runs the due jobs itself, so no in-process test sleeps.
//!
//! Tests that drive a real process (the `countersign` binary as a server or a client) cannot
//! use a manual clock; they poll with [`eventually`], which waits in real time up to a
//! deadline and never asserts how long anything took.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engine::{Engine, ManualClock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

/// 2026-01-01T00:00:00Z, where every manual clock starts.
pub const START_MS: i64 = 1_767_225_600_000;

/// How often and how long [`eventually`] polls a real process.
const POLL: Duration = Duration::from_millis(150);
const DEADLINE: Duration = Duration::from_secs(20);

/// Every user the configuration knows, by local part. `mallory` is involved in nothing;
/// `root` is the one admin.
pub const USERS: [&str; 9] = [
    "alice", "bob", "carol", "dan", "eve", "frank", "grace", "mallory", "root",
];

/// `alice` → `alice@example.com`.
pub fn email(user: &str) -> String {
    format!("{user}@example.com")
}

/// The people and connectors every configuration shares. `log` appends each call it gets to
/// `calls.log` in `dir`, one line per call: which command ran (`grant-cmd` or `revoke-cmd`),
/// then the JSON document the connector received on stdin. `ok` does nothing and succeeds.
pub fn people_and_connectors(dir: &Path) -> String {
    let log = dir.join("calls.log");
    let log = log.display();
    let mut hcl = String::new();
    for user in USERS {
        let roles = if user == "root" {
            r#"roles = ["admin"]"#
        } else {
            ""
        };
        hcl.push_str(&format!("user \"{}\" {{ {roles} }}\n", email(user)));
    }
    hcl.push_str(&format!(
        r#"
connector "log" {{
  type           = "exec"
  grant_command  = ["sh", "-c", "{{ printf 'grant-cmd '; cat; echo; }} >> '{log}'"]
  revoke_command = ["sh", "-c", "{{ printf 'revoke-cmd '; cat; echo; }} >> '{log}'"]
}}

connector "ok" {{
  type           = "exec"
  grant_command  = ["sh", "-c", "cat >/dev/null"]
  revoke_command = ["sh", "-c", "cat >/dev/null"]
}}
"#
    ));
    hcl
}

/// One call the `log` connector received.
#[derive(Debug)]
pub struct ConnectorCall {
    /// `grant-cmd` or `revoke-cmd`: which configured command ran.
    pub command: String,
    /// What it read on stdin.
    pub input: Value,
}

/// The calls the `log` connector of the configuration in `dir` has received, in order.
pub fn connector_calls(dir: &Path) -> Vec<ConnectorCall> {
    let text = std::fs::read_to_string(dir.join("calls.log")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (command, json) = line.split_once(' ').expect("`<command> <json>`");
            ConnectorCall {
                command: command.to_owned(),
                input: serde_json::from_str(json).expect("the connector's stdin is JSON"),
            }
        })
        .collect()
}

/// The database of one test's server. Every test that opens a store or writes a
/// `database = …` setting takes it from [`database`], so that the whole suite runs on either
/// backend:
///
/// - by default, or with `COUNTERSIGN_TEST_STORE=sqlite`, a SQLite file `cs.db` in the
///   test's temporary directory;
/// - with `COUNTERSIGN_TEST_STORE=postgres`, a database `cs_api_<random hex>` created for the
///   test on the server `COUNTERSIGN_TEST_PG_URL` names (its role needs `CREATEDB`;
///   `.ci/postgres.sh` makes one), dropped again `WITH (FORCE)` when this value is dropped.
pub struct TestDatabase {
    url: String,
    backend: Backend,
}

enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres {
        /// The URL the database was created through, to drop it again.
        admin: String,
        name: String,
    },
}

/// A database of its own for the test whose temporary directory is `dir` (see
/// [`TestDatabase`]). Panics when `COUNTERSIGN_TEST_STORE` asks for PostgreSQL and no server is
/// named, or names a store that does not exist: a run asked for on PostgreSQL must not
/// quietly run on SQLite.
pub async fn database(dir: &Path) -> TestDatabase {
    let store = std::env::var("COUNTERSIGN_TEST_STORE").unwrap_or_default();
    match store.as_str() {
        "" | "sqlite" => sqlite_database(dir),
        "postgres" => postgres_database().await,
        other => panic!("COUNTERSIGN_TEST_STORE={other}: expected `sqlite` or `postgres`"),
    }
}

/// A SQLite file `cs.db` in `dir`, whichever store the suite runs on.
pub fn sqlite_database(dir: &Path) -> TestDatabase {
    let path = dir.join("cs.db");
    TestDatabase {
        url: format!("sqlite://{}", path.display()),
        backend: Backend::Sqlite(path),
    }
}

/// A new PostgreSQL database on the server `COUNTERSIGN_TEST_PG_URL` names, whichever store
/// the suite runs on; panics without the variable.
pub async fn postgres_database() -> TestDatabase {
    let admin = match std::env::var("COUNTERSIGN_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "COUNTERSIGN_TEST_PG_URL is not set: the PostgreSQL tests (and every test under \
             COUNTERSIGN_TEST_STORE=postgres) need a server whose role may CREATE DATABASE \
             (bash .ci/postgres.sh starts one and prints its URL)"
        ),
    };
    let name = format!("cs_api_{:016x}", random_u64());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connect to COUNTERSIGN_TEST_PG_URL: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} (does the role have CREATEDB?): {e}"));
    let _ = conn.close().await;
    TestDatabase {
        url: with_database(&admin, &name),
        backend: Backend::Postgres { admin, name },
    }
}

impl TestDatabase {
    /// The URL for the configuration's `database` setting.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// Whether nothing has been created in the database yet: no SQLite file, or no table in
    /// the PostgreSQL database outside the system schemas.
    pub async fn is_untouched(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(path) => !path.exists(),
            Backend::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect to the test's database");
                let tables: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM information_schema.tables \
                     WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
                )
                .fetch_one(&mut conn)
                .await
                .expect("count the tables");
                let _ = conn.close().await;
                tables == 0
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Backend::Postgres { admin, name } = &self.backend else {
            return;
        };
        // Drop is synchronous and may run on a single-threaded runtime: drop the database
        // from a thread with a runtime of its own. WITH (FORCE) ends the sessions the test's
        // server still holds. A failure only leaves a database behind on a throwaway server.
        let admin = admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("note: the test database {name} was not dropped: {e}");
        }
    }
}

/// `url` with its database name replaced by `name` (the query string, such as `sslmode`,
/// kept).
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, format!("?{q}")),
        None => (rest, String::new()),
    };
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    format!("{scheme}://{authority}/{name}{query}")
}

/// A random number for a database name: a counter (distinct within this run) hashed with
/// the process's random hash keys (distinct across runs, with overwhelming likelihood).
fn random_u64() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// An HTTP client for one server, holding a bearer token per user.
pub struct Api {
    pub base: String,
    pub tokens: BTreeMap<String, String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Api {
        // reqwest is built without a TLS provider; the engine installs one when it opens, but
        // a test that drives only a server process opens no engine.
        engine::connector::install_tls_provider();
        Api {
            base,
            tokens: BTreeMap::new(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
        }
    }

    pub fn token(&self, user: &str) -> &str {
        self.tokens
            .get(user)
            .unwrap_or_else(|| panic!("no token for {user}"))
    }

    /// Sends a request, or returns the transport error (a server that is down).
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(StatusCode, String), reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some((content_type, bytes)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let res = req.send().await?;
        let status = res.status();
        Ok((status, res.text().await?))
    }

    /// Sends a request; the body that comes back must be JSON.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        let (status, text) = self
            .try_send(method.clone(), path, token, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let json = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path} answered {status}, not JSON ({e}): {text}")
        });
        (status, json)
    }

    pub async fn post(&self, user: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let bytes = serde_json::to_vec(&body).expect("json");
        self.send(
            Method::POST,
            path,
            Some(self.token(user)),
            Some(("application/json", bytes)),
        )
        .await
    }

    pub async fn get(&self, user: &str, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, Some(self.token(user)), None)
            .await
    }
}

/// A server in this process, on a manual clock.
pub struct TestApp {
    pub api: Api,
    pub engine: Arc<Engine>,
    pub clock: Arc<ManualClock>,
    /// Dropped before `dir`, which holds its SQLite file.
    pub db: TestDatabase,
    pub dir: tempfile::TempDir,
}

/// Serves `engine` on `listener` in the background, without its worker (tests move the
/// manual clock and run due jobs themselves), with the portal's development sign-in.
fn serve(listener: tokio::net::TcpListener, engine: &Arc<Engine>) {
    let options = countersign::RunOptions {
        worker: false,
        portal: web::PortalOptions { dev_login: true },
    };
    tokio::spawn(countersign::run(
        listener,
        engine.clone(),
        options,
        std::future::pending(),
    ));
}

/// A second server on a [`TestApp`]'s database (see [`TestApp::replica`]).
pub struct Replica {
    pub api: Api,
    pub engine: Arc<Engine>,
}

impl TestApp {
    /// Serves a configuration made of the shared people and connectors plus `resources_hcl`.
    pub async fn spawn(resources_hcl: &str) -> TestApp {
        TestApp::spawn_with("", &[], resources_hcl).await
    }

    /// Like [`TestApp::spawn`], with more `server` block settings and files (policy bundles)
    /// written next to the configuration.
    pub async fn spawn_with(
        server_hcl: &str,
        files: &[(&str, &str)],
        resources_hcl: &str,
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        TestApp::spawn_on(listener, server_hcl, files, resources_hcl).await
    }

    /// Like [`TestApp::spawn_with`], on a listener bound beforehand (so that a peer, such as
    /// an identity provider, can be told the server's address before it starts).
    pub async fn spawn_on(
        listener: tokio::net::TcpListener,
        server_hcl: &str,
        files: &[(&str, &str)],
        resources_hcl: &str,
    ) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = database(dir.path()).await;
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write a file");
        }
        let addr = listener.local_addr().expect("local address");
        // The portal's links and its sign-in's redirect address are built from public_url.
        let public_url = if server_hcl.contains("public_url") {
            String::new()
        } else {
            format!("  public_url = \"http://{addr}\"\n")
        };
        let src = format!(
            "server {{\n  database = \"{}\"\n{public_url}{server_hcl}\n}}\n{}\n{resources_hcl}",
            db.url(),
            people_and_connectors(dir.path()),
        );
        // A file in the temporary directory, so that exec connectors run there.
        let path = dir.path().join("countersign.hcl");
        std::fs::write(&path, &src).expect("write the configuration");
        let config = config::load_str(path.to_str().expect("utf-8 path"), &src)
            .unwrap_or_else(|e| panic!("the test's configuration does not load:\n{e}"));
        let clock = Arc::new(ManualClock::new(domain::Timestamp::from_millis(START_MS)));
        let engine = countersign::open(config, clock.clone())
            .await
            .expect("open the engine");

        serve(listener, &engine);

        let mut api = Api::new(format!("http://{addr}"));
        for user in USERS {
            let token = engine.create_token(&email(user)).await.expect("token");
            api.tokens.insert(user.to_owned(), token);
        }
        TestApp {
            api,
            engine,
            clock,
            db,
            dir,
        }
    }

    /// Another server on this one's database, configuration and manual clock: a second
    /// replica (PRODUCT.md §6), with its own store, engine and port, and the same tokens.
    pub async fn replica(&self) -> Replica {
        let path = self.dir.path().join("countersign.hcl");
        let src = std::fs::read_to_string(&path).expect("read the configuration");
        let config = config::load_str(path.to_str().expect("utf-8 path"), &src)
            .unwrap_or_else(|e| panic!("the test's configuration does not load:\n{e}"));
        let engine = countersign::open(config, self.clock.clone())
            .await
            .expect("open the second replica");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        serve(listener, &engine);
        let mut api = Api::new(format!("http://{addr}"));
        api.tokens = self.api.tokens.clone();
        Replica { api, engine }
    }

    /// Mints a token for each configured app and keeps it under the app's name, so that
    /// `api.token(name)` acts as `app:<name>`.
    pub async fn app_tokens(&mut self, names: &[&str]) {
        for name in names {
            let token = self
                .engine
                .create_token(&format!("app:{name}"))
                .await
                .expect("app token");
            self.api.tokens.insert((*name).to_owned(), token);
        }
    }

    pub async fn post(&self, user: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.api.post(user, path, body).await
    }

    pub async fn get(&self, user: &str, path: &str) -> (StatusCode, Value) {
        self.api.get(user, path).await
    }

    /// Creates a request, which must succeed; returns it.
    pub async fn create(&self, user: &str, body: Value) -> Value {
        let (status, req) = self.post(user, "/v1/requests", body).await;
        assert_eq!(status, StatusCode::CREATED, "create request: {req}");
        req
    }

    /// Posts a review of request `id`.
    pub async fn review(&self, user: &str, id: &Value, body: Value) -> (StatusCode, Value) {
        self.post(user, &format!("/v1/requests/{}/reviews", id_of(id)), body)
            .await
    }

    /// Approves request `id`, which must succeed; returns the request.
    pub async fn approve(&self, user: &str, id: &Value) -> Value {
        let (status, req) = self
            .review(user, id, serde_json::json!({ "decision": "approve" }))
            .await;
        assert_eq!(status, StatusCode::OK, "{user} approves: {req}");
        req
    }

    /// The request as `user` sees it (200 expected).
    pub async fn request(&self, user: &str, id: &Value) -> Value {
        let (status, req) = self.get(user, &format!("/v1/requests/{}", id_of(id))).await;
        assert_eq!(status, StatusCode::OK, "get request: {req}");
        req
    }

    /// The grant as `user` sees it (200 expected).
    pub async fn grant(&self, user: &str, id: &Value) -> Value {
        let (status, g) = self.get(user, &format!("/v1/grants/{}", id_of(id))).await;
        assert_eq!(status, StatusCode::OK, "get grant: {g}");
        g
    }

    /// Moves the clock, then runs due jobs until none is left.
    pub async fn advance(&self, d: Duration) {
        self.clock.advance(d);
        self.tick().await;
    }

    /// Runs due jobs (timers, connector calls) until none is left.
    pub async fn tick(&self) {
        for _ in 0..100 {
            if self.engine.run_due().await.expect("run due jobs") == 0 {
                return;
            }
        }
        panic!("jobs keep coming due: the worker does not settle");
    }

    pub fn connector_calls(&self) -> Vec<ConnectorCall> {
        connector_calls(self.dir.path())
    }
}

/// An id given as a JSON string, or an object with an `id`.
pub fn id_of(v: &Value) -> &str {
    v.as_str()
        .or_else(|| v["id"].as_str())
        .unwrap_or_else(|| panic!("no id in {v}"))
}

/// Asserts `status` is `expected` and the body is `{"error": {"code": .., "message": ..}}`.
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "body: {body}");
    let code = body["error"]["code"].as_str();
    let message = body["error"]["message"].as_str();
    assert!(
        code.is_some_and(|c| !c.is_empty()) && message.is_some_and(|m| !m.is_empty()),
        "not an error body: {body}"
    );
}

/// Waits in real time. Only the tests that drive a real process (which no manual clock can
/// move) call this; the thread sleeps on the blocking pool, so the runtime keeps serving.
pub async fn pause(d: Duration) {
    tokio::task::spawn_blocking(move || std::thread::sleep(d))
        .await
        .expect("sleep");
}

/// Polls `probe` until it returns `Some`, for at most [`DEADLINE`]; `None` if it never does.
/// For eventual consistency of a real process, not a timing assertion.
pub async fn poll_until<T>(mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let polls = DEADLINE.as_millis() / POLL.as_millis();
    for _ in 0..polls {
        if let Some(v) = probe().await {
            return Some(v);
        }
        pause(POLL).await;
    }
    None
}

/// [`poll_until`], which must succeed.
pub async fn eventually<T>(what: &str, probe: impl AsyncFnMut() -> Option<T>) -> T {
    poll_until(probe)
        .await
        .unwrap_or_else(|| panic!("{what}: not reached within {DEADLINE:?}"))
}

/// Runs `tests/python/<script>` with the Python of the virtual environment that
/// `.ci/python.sh` prepares (`COUNTERSIGN_TEST_PYTHON`), with `args`, and returns its standard
/// output; a non-zero exit fails the test with what the script printed. Tests that call this
/// are `#[ignore = "needs COUNTERSIGN_TEST_PYTHON …"]`: asked for without the variable, they fail.
pub async fn run_python(script: &str, args: &[&str]) -> String {
    let python = std::env::var("COUNTERSIGN_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("COUNTERSIGN_TEST_PYTHON is not set: run `bash .ci/python.sh` and export the path it prints")
    });
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python")
        .join(script);
    let out = tokio::process::Command::new(&python)
        .arg(&path)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .unwrap_or_else(|_| panic!("{script} ran for more than 10 minutes"))
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The kinds of the audit events of one request, in order.
pub async fn audit_kinds(app: &TestApp, id: &Value) -> Vec<String> {
    let (_, audit) = app.get("root", "/v1/audit?limit=1000").await;
    audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event"]["request"] == json!(id_of(id)))
        .map(|e| e["event"]["kind"].as_str().expect("kind").to_owned())
        .collect()
}
