//! The harness: a real server on a loopback port, driven over HTTP.
//!
//! [`TestApp::spawn`] writes a configuration (the fixed people below, two exec connectors and
//! the test's resources) into a temporary directory, opens the engine on a SQLite file there
//! with a [`ManualClock`], serves the real router on `127.0.0.1:0` without the background
//! worker, and mints one bearer token per user. Time moves only through [`TestApp::advance`],
//! which then runs the due jobs itself, so no in-process test sleeps.
//!
//! Tests that drive a real process (the `countersign` binary as a server or a client) cannot
//! use a manual clock; they poll with [`eventually`], which waits in real time up to a
//! deadline and never asserts how long anything took.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, ManualClock};
use reqwest::{Method, StatusCode};
use serde_json::Value;

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

/// An HTTP client for one server, holding a bearer token per user.
pub struct Api {
    pub base: String,
    pub tokens: BTreeMap<String, String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Api {
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
    pub dir: tempfile::TempDir,
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
            "server {{\n  database = \"sqlite://{}\"\n{public_url}{server_hcl}\n}}\n{}\n{resources_hcl}",
            dir.path().join("cs.db").display(),
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

        let mut api = Api::new(format!("http://{addr}"));
        for user in USERS {
            let token = engine.create_token(&email(user)).await.expect("token");
            api.tokens.insert(user.to_owned(), token);
        }
        TestApp {
            api,
            engine,
            clock,
            dir,
        }
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
