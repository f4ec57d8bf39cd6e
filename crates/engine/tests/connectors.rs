//! The connector conformance suite (issue 4): one contract, run against every connector on a
//! real target — exec against real processes, webhook against a real HTTP receiver on
//! loopback, postgres against a real PostgreSQL server (`COUNTERSIGN_TEST_PG_URL`; the tests
//! say so and pass without checking anything when it is not set).
//!
//! The contract (rule 17): grant and revoke are idempotent — the same call may arrive twice
//! after a crash — and `check`, where a connector has it, tells the truth. Each target is also
//! observed independently of the connector (a file, the receiver's state, a login as the
//! database user), so a connector cannot pass by agreeing with itself.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use domain::{Grant, GrantSpec, Span, Timestamp};
use engine::connector::{Action, Call, Connector, Connectors};
use hmac::Mac;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

const NOW: Timestamp = Timestamp::from_millis(1_767_225_600_000);

fn grant(id: &str, subject: &str, params: &[(&str, &str)]) -> Grant {
    let spec = GrantSpec {
        request: format!("req-{id}"),
        subject: subject.to_owned(),
        resource: "res".to_owned(),
        workflow: None,
        connector: Some("c".to_owned()),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        duration: Span::from_secs(3600),
        start_at: None,
        extends: None,
        run: None,
    };
    Grant::issue(id.to_owned(), spec, NOW).0
}

/// Builds the one connector `c` of a configuration written in HCL.
fn connector(dir: &std::path::Path, hcl: &str) -> Arc<dyn Connector> {
    let path = dir.join("countersign.hcl");
    let config = config::load_str(path.to_str().expect("utf-8"), hcl)
        .unwrap_or_else(|e| panic!("configuration does not load:\n{e}"));
    Connectors::build(&config)
        .get("c")
        .cloned()
        .expect("connector c")
}

/// Runs the contract. `observe` looks at the target without going through the connector.
async fn conformance<F, Fut>(c: &dyn Connector, g: &Grant, mut observe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let check = async |expected: bool, when: &str| {
        if c.can_check() {
            assert_eq!(
                c.check(g, NOW).await.expect("check"),
                Some(expected),
                "check {when}"
            );
        } else {
            assert_eq!(c.check(g, NOW).await.expect("check"), None);
        }
    };
    assert!(!observe().await, "access before any grant");
    check(false, "before the grant").await;

    let call = Call::lifecycle(Action::Grant, g, NOW);
    c.call(&call).await.expect("grant");
    assert!(observe().await, "access after the grant");
    check(true, "after the grant").await;
    // A crash after the call and before its result was recorded repeats it.
    c.call(&call).await.expect("the same grant again");
    assert!(observe().await, "access after the repeated grant");

    let call = Call::lifecycle(Action::Revoke, g, NOW);
    c.call(&call).await.expect("revoke");
    assert!(!observe().await, "access after the revoke");
    check(false, "after the revoke").await;
    c.call(&call).await.expect("the same revoke again");
    assert!(!observe().await, "access after the repeated revoke");
}

// ---------------------------------------------------------------------------------------------
// exec
// ---------------------------------------------------------------------------------------------

/// Scripts that keep the access as a file named after the subject, in `$STATE`.
const EXEC: &str = r#"
connector "c" {
  type           = "exec"
  grant_command  = ["sh", "-c", "s=$(sed -n 's/.*\"subject\":\"\\([^\"]*\\)\".*/\\1/p'); touch \"$STATE/$s\""]
  revoke_command = ["sh", "-c", "s=$(sed -n 's/.*\"subject\":\"\\([^\"]*\\)\".*/\\1/p'); rm -f \"$STATE/$s\""]
  check_command  = ["sh", "-c", "s=$(sed -n 's/.*\"subject\":\"\\([^\"]*\\)\".*/\\1/p'); test -e \"$STATE/$s\""]
  env            = { STATE = "STATE_DIR" }
}
"#;

#[tokio::test]
async fn exec_connector_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let hcl = EXEC.replace("STATE_DIR", state.to_str().expect("utf-8"));
    let c = connector(dir.path(), &hcl);
    let g = grant("g-exec", "alice@example.com", &[]);
    let file = state.join("alice@example.com");
    conformance(c.as_ref(), &g, || {
        let held = file.exists();
        async move { held }
    })
    .await;
}

#[tokio::test]
async fn exec_connector_redacts_secrets_and_kills_what_it_started_on_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = connector(
        dir.path(),
        r#"
        connector "c" {
          type           = "exec"
          grant_command  = ["sh", "-c", "echo \"login failed for token $TOKEN\" >&2; exit 2"]
          revoke_command = ["sh", "-c", "(sleep 30.017; touch late) & sleep 30.017"]
          env            = { TOKEN = "hunter2-secret" }
          timeout        = "1s"
        }
        "#,
    );
    let g = grant("g-exec-2", "alice@example.com", &[]);
    let err = c
        .call(&Call::lifecycle(Action::Grant, &g, NOW))
        .await
        .expect_err("the grant program fails");
    assert!(err.contains("status 2"), "{err}");
    assert!(
        err.contains("[redacted]") && !err.contains("hunter2"),
        "{err}"
    );

    let err = c
        .call(&Call::lifecycle(Action::Revoke, &g, NOW))
        .await
        .expect_err("the revoke program runs past its timeout");
    assert!(err.contains("did not finish within 1s"), "{err}");
    // The background child was in the program's process group, which the timeout killed.
    // A killed process can take a moment to go: look again for up to five seconds.
    let survivors = || {
        let out = std::process::Command::new("sh")
            .args(["-c", "ps -eo args | grep -c '[s]leep 30.017' || true"])
            .output()
            .expect("ps");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
    };
    let mut left = survivors();
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        engine::clock::pause(std::time::Duration::from_millis(100)).await;
        left = survivors();
    }
    assert_eq!(
        left, 0,
        "processes started by the timed-out program survive"
    );
}

// ---------------------------------------------------------------------------------------------
// webhook
// ---------------------------------------------------------------------------------------------

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Receiver {
    /// Subjects whose access is in effect.
    held: BTreeSet<String>,
    /// `webhook-id` of every call received, in order.
    ids: Vec<String>,
    /// Calls whose signature did not verify.
    bad_signatures: usize,
}

type Shared = Arc<Mutex<Receiver>>;

/// Verifies a Standard Webhooks signature from first principles (not with the engine's code).
fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, ts, sig) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("secret");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    !id.is_empty() && ts.parse::<i64>().is_ok() && sig == format!("v1,{want}")
}

async fn receive(
    State(r): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let mut r = r.lock().expect("lock");
    if !verify(&headers, &body) {
        r.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json body");
    let subject = v["data"]["subject"].as_str().expect("subject").to_owned();
    let id = headers["webhook-id"].to_str().expect("id").to_owned();
    r.ids.push(id);
    match v["type"].as_str() {
        Some("grant.activate") => {
            r.held.insert(subject);
        }
        Some("grant.revoke") => {
            r.held.remove(&subject);
        }
        Some("grant.check") => {
            let in_effect = r.held.contains(&subject);
            return axum::Json(serde_json::json!({ "in_effect": in_effect })).into_response();
        }
        other => panic!("unexpected webhook type {other:?}"),
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn start_receiver() -> (String, Shared) {
    let state = Shared::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .route(
            "/moved",
            axum::routing::post(|| async {
                (StatusCode::TEMPORARY_REDIRECT, [("location", "/hook")]).into_response()
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

fn webhook_hcl(url: &str) -> String {
    format!(
        r#"
        server {{ outbound_allow = ["127.0.0.1"] }}
        connector "c" {{
          type    = "webhook"
          url     = "{url}"
          secret  = "{SECRET}"
          check   = true
          timeout = "5s"
        }}
        "#
    )
}

#[tokio::test]
async fn webhook_connector_keeps_the_contract_with_signed_calls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (base, state) = start_receiver().await;
    let c = connector(dir.path(), &webhook_hcl(&format!("{base}/hook")));
    let g = grant("g-hook", "alice@example.com", &[]);
    let s = state.clone();
    conformance(c.as_ref(), &g, || {
        let held = s.lock().expect("lock").held.contains("alice@example.com");
        async move { held }
    })
    .await;
    let r = state.lock().expect("lock");
    assert_eq!(r.bad_signatures, 0);
    // A repeated call carries the same webhook-id, so that the receiver can drop it.
    let calls: Vec<&String> = r.ids.iter().filter(|i| !i.contains("check")).collect();
    assert_eq!(
        calls,
        [
            "msg_g-hook_grant",
            "msg_g-hook_grant",
            "msg_g-hook_revoke",
            "msg_g-hook_revoke"
        ]
    );
}

#[tokio::test]
async fn webhook_connector_never_follows_a_redirect_and_reports_unreachable_receivers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (base, state) = start_receiver().await;
    let c = connector(dir.path(), &webhook_hcl(&format!("{base}/moved")));
    let g = grant("g-moved", "alice@example.com", &[]);
    let err = c
        .call(&Call::lifecycle(Action::Grant, &g, NOW))
        .await
        .expect_err("a redirect is a failure");
    assert!(err.contains("307"), "{err}");
    assert!(
        state.lock().expect("lock").ids.is_empty(),
        "the redirect was followed"
    );

    // Nothing listens on this port (bound, then closed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let url = format!("http://user:pa55word@{closed}/hook?token=s3cr3t-token");
    let c = connector(dir.path(), &webhook_hcl(&url));
    let err = c
        .call(&Call::lifecycle(Action::Grant, &g, NOW))
        .await
        .expect_err("nobody listens");
    assert!(
        err.contains(&format!("POST http://{closed}/hook failed")),
        "{err}"
    );
    for secret in [SECRET, "s3cr3t-token", "pa55word"] {
        assert!(!err.contains(secret), "the error leaks {secret}: {err}");
    }
}

/// How much an endless receiver sends at most, so that its test ends even when the connector
/// reads everything.
const ENDLESS_LIMIT: usize = 32 << 20;

/// A receiver that answers one call with 200 and a chunked body that starts with `prefix`
/// and never ends (up to [`ENDLESS_LIMIT`]); it reports how many body bytes it could send
/// before the caller hung up.
async fn start_endless_receiver(
    prefix: &'static str,
) -> (String, tokio::sync::oneshot::Receiver<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        // The request: its head, then as many bytes as it declares.
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        let body_at = loop {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "the caller hung up before its request ended");
            req.extend_from_slice(&buf[..n]);
            if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&req[..body_at]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("length"));
        while req.len() < body_at + length {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "the caller hung up before its body ended");
            req.extend_from_slice(&buf[..n]);
        }
        let mut sent = 0;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        let first = format!("{:x}\r\n{prefix}\r\n", prefix.len());
        if s.write_all(head.as_bytes()).await.is_ok() && s.write_all(first.as_bytes()).await.is_ok()
        {
            sent += prefix.len();
            let chunk = format!("{:x}\r\n{}\r\n", 1 << 16, "a".repeat(1 << 16));
            while sent < ENDLESS_LIMIT && s.write_all(chunk.as_bytes()).await.is_ok() {
                sent += 1 << 16;
            }
        }
        let _ = tx.send(sent);
    });
    (format!("http://{addr}"), rx)
}

/// Hardening item 6: a receiver that answers with a huge body cannot make the connector
/// read it all. A grant's 2xx is a success whatever its body; a check needs its answer, so a
/// huge one is an error; either way the connector stops reading after 64 KiB.
#[tokio::test]
async fn hardening_6_webhook_connector_reads_at_most_64_kib_of_an_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let g = grant("g-huge", "alice@example.com", &[]);

    let (base, sent) = start_endless_receiver("{}").await;
    let c = connector(dir.path(), &webhook_hcl(&format!("{base}/hook")));
    c.call(&Call::lifecycle(Action::Grant, &g, NOW))
        .await
        .expect("a 2xx grant is a success, whatever its body");
    let sent = sent.await.expect("the receiver ends");
    assert!(sent < ENDLESS_LIMIT, "the connector read {sent} bytes");

    let (base, sent) = start_endless_receiver(r#"{"in_effect": true, "pad": ""#).await;
    let c = connector(dir.path(), &webhook_hcl(&format!("{base}/hook")));
    let err = c.check(&g, NOW).await.expect_err("a huge check answer");
    assert!(err.contains("more than 65536 bytes"), "{err}");
    let sent = sent.await.expect("the receiver ends");
    assert!(sent < ENDLESS_LIMIT, "the connector read {sent} bytes");
}

// ---------------------------------------------------------------------------------------------
// postgres
// ---------------------------------------------------------------------------------------------

/// The server these tests use. They are `#[ignore]`d, so they run only when asked for
/// (`cargo test -- --include-ignored`, as `.ci/run` does); asked for without a server, they fail.
fn pg_url() -> String {
    match std::env::var("COUNTERSIGN_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "COUNTERSIGN_TEST_PG_URL is not set (bash .ci/postgres.sh starts a server and prints one)"
        ),
    }
}

/// A target for one test: a role that alone may read a table, and a login user without it.
/// Names carry the test's tag so that tests running at once do not meet.
struct Target {
    admin: sqlx::PgPool,
    url: String,
    role: String,
    user: String,
    table: String,
}

impl Target {
    async fn new(url: &str, tag: &str) -> Target {
        let admin = sqlx::PgPool::connect(url).await.expect("connect as admin");
        let (role, user, table) = (
            format!("cs_{tag}_ro"),
            format!("cs_{tag}_user"),
            format!("cs_{tag}_secret"),
        );
        for sql in [
            format!("DROP TABLE IF EXISTS {table}"),
            format!("DROP ROLE IF EXISTS {user}"),
            format!("DROP ROLE IF EXISTS {role}"),
            format!("CREATE ROLE {role} NOLOGIN"),
            format!("CREATE ROLE {user} LOGIN PASSWORD 'pw-{tag}'"),
            format!("CREATE TABLE {table} (x int)"),
            format!("INSERT INTO {table} VALUES (42)"),
            format!("REVOKE ALL ON {table} FROM PUBLIC"),
            format!("GRANT SELECT ON {table} TO {role}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&admin)
                .await
                .expect("set up the target");
        }
        Target {
            admin,
            url: url.to_owned(),
            role,
            user,
            table,
        }
    }

    /// A session logged in as the user.
    async fn session(&self, tag: &str) -> sqlx::PgConnection {
        PgConnectOptions::from_str(&self.url)
            .expect("url")
            .username(&self.user)
            .password(&format!("pw-{tag}"))
            .connect()
            .await
            .expect("log in as the user")
    }

    /// Whether a session of its own can read the table.
    async fn can_read(&self, tag: &str) -> bool {
        let mut s = self.session(tag).await;
        let sql = format!("SELECT x FROM {}", self.table);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut s)
            .await
            .is_ok()
    }

    fn hcl(&self, terminate: bool) -> String {
        format!(
            r#"
            user "alice@example.com" {{ attributes = {{ db_user = "{user}" }} }}
            connector "c" {{
              type               = "postgres"
              url                = "{url}"
              user               = "{{attr.db_user}}"
              terminate_sessions = {terminate}
              timeout            = "5s"
            }}
            "#,
            user = self.user,
            url = self.url,
        )
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: COUNTERSIGN_TEST_PG_URL"]
async fn postgres_connector_keeps_the_contract() {
    let url = pg_url();
    let dir = tempfile::tempdir().expect("temp dir");
    let t = Target::new(&url, "conf").await;
    let c = connector(dir.path(), &t.hcl(false));
    let g = grant("g-pg", "alice@example.com", &[("role", &t.role)]);
    conformance(c.as_ref(), &g, || t.can_read("conf")).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: COUNTERSIGN_TEST_PG_URL"]
async fn postgres_connector_quotes_identifiers_and_names_a_missing_attribute() {
    let url = pg_url();
    let dir = tempfile::tempdir().expect("temp dir");
    let t = Target::new(&url, "quote").await;
    let c = connector(dir.path(), &t.hcl(false));
    // A role name that would end the statement if it were spliced in as text.
    let evil = format!("{}\"; DROP TABLE {}; --", t.role, t.table);
    let g = grant("g-evil", "alice@example.com", &[("role", &evil)]);
    let err = c
        .call(&Call::lifecycle(Action::Grant, &g, NOW))
        .await
        .expect_err("no such role");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains("countersign@"), "the URL leaks: {err}");
    let exists: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT to_regclass('{}') IS NOT NULL",
        t.table
    )))
    .fetch_one(&t.admin)
    .await
    .expect("query");
    assert!(exists, "the injected statement ran");

    let g = grant("g-nobody", "bob@example.com", &[("role", &t.role)]);
    let err = c
        .call(&Call::lifecycle(Action::Grant, &g, NOW))
        .await
        .expect_err("bob has no db_user attribute");
    assert!(err.contains("no attribute \"db_user\""), "{err}");
}

/// What PostgreSQL does with a session that switched to the role before the revoke, and what
/// `terminate_sessions` changes: documented in docs/connectors.md.
#[tokio::test]
#[ignore = "needs PostgreSQL: COUNTERSIGN_TEST_PG_URL"]
async fn postgres_set_role_outlives_revoke_unless_sessions_end() {
    let url = pg_url();
    let dir = tempfile::tempdir().expect("temp dir");
    let t = Target::new(&url, "setrole").await;
    let read = format!("SELECT x FROM {}", t.table);
    let set_role = format!("SET ROLE {}", t.role);
    let g = grant("g-setrole", "alice@example.com", &[("role", &t.role)]);

    // Without terminate_sessions: the session that ran SET ROLE keeps reading after the revoke.
    let c = connector(dir.path(), &t.hcl(false));
    c.call(&Call::lifecycle(Action::Grant, &g, NOW))
        .await
        .expect("grant");
    let mut inherited = t.session("setrole").await;
    let mut switched = t.session("setrole").await;
    sqlx::query(sqlx::AssertSqlSafe(set_role.clone()))
        .execute(&mut switched)
        .await
        .expect("SET ROLE while a member");
    c.call(&Call::lifecycle(Action::Revoke, &g, NOW))
        .await
        .expect("revoke");
    let still: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(read.clone()))
        .fetch_one(&mut switched)
        .await
        .expect("PostgreSQL keeps the role of a session that switched to it before the revoke");
    assert_eq!(still, 42);
    assert!(
        sqlx::query(sqlx::AssertSqlSafe(read.clone()))
            .fetch_one(&mut inherited)
            .await
            .is_err(),
        "a session that only inherited the role loses it at once"
    );
    assert!(!t.can_read("setrole").await, "a new session has no access");
    drop(switched);
    drop(inherited);

    // With terminate_sessions: the revoke ends that session.
    let c = connector(dir.path(), &t.hcl(true));
    c.call(&Call::lifecycle(Action::Grant, &g, NOW))
        .await
        .expect("grant");
    let mut switched = t.session("setrole").await;
    sqlx::query(sqlx::AssertSqlSafe(set_role))
        .execute(&mut switched)
        .await
        .expect("SET ROLE while a member");
    c.call(&Call::lifecycle(Action::Revoke, &g, NOW))
        .await
        .expect("revoke");
    assert!(
        sqlx::query(sqlx::AssertSqlSafe(read))
            .fetch_one(&mut switched)
            .await
            .is_err(),
        "the switched session survived a revoke with terminate_sessions"
    );
}

/// The webhook configuration without the loopback allow-list.
fn webhook_hcl_unlisted(url: &str) -> String {
    webhook_hcl(url).replace(r#"server { outbound_allow = ["127.0.0.1"] }"#, "")
}

#[tokio::test]
async fn rule_26_webhook_connector_urls_are_guarded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("countersign.hcl");
    let (base, state) = start_receiver().await;
    // Plain http to a host that is not allow-listed is a configuration error.
    let hcl = webhook_hcl_unlisted(&format!("{base}/hook"));
    let err = config::load_str(path.to_str().expect("utf-8"), &hcl)
        .expect_err("http to loopback without an allow-list")
        .to_string();
    assert!(err.contains("must use https"), "{err}");

    // https to a loopback address is refused when the call is made, before any connection.
    let https = base.replace("http://", "https://");
    let hcl = webhook_hcl_unlisted(&format!("{https}/hook"));
    let c = connector(dir.path(), &hcl);
    let g = grant("g-guard", "alice@example.com", &[]);
    let err = c
        .call(&Call::lifecycle(Action::Grant, &g, NOW))
        .await
        .expect_err("loopback is refused");
    assert!(err.contains("loopback"), "{err}");
    assert!(state.lock().expect("lock").ids.is_empty());

    // `localhost` resolves to loopback: refused at connect time, by the resolver, without
    // saying which address it resolved to (hardening item 6).
    let by_name = https.replace("127.0.0.1", "localhost");
    let hcl = webhook_hcl_unlisted(&format!("{by_name}/hook"));
    let c = connector(dir.path(), &hcl);
    let err = c
        .call(&Call::lifecycle(Action::Grant, &g, NOW))
        .await
        .expect_err("localhost is refused");
    assert!(err.contains("may not reach"), "{err}");
    assert!(
        !err.contains("loopback") && !err.contains("127.0.0.1"),
        "{err}"
    );
    assert!(state.lock().expect("lock").ids.is_empty());
}
