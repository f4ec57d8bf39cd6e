//! Rules 16 and 17: the exec connector gives access on activation and takes it back at
//! expiry, and a crash of the server process loses no revocation.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::{
    Api, ConnectorCall, TestApp, connector_calls, email, eventually, id_of, pause,
    people_and_connectors, poll_until,
};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");

fn calls_of<'a>(calls: &'a [ConnectorCall], action: &str) -> Vec<&'a ConnectorCall> {
    calls
        .iter()
        .filter(|c| c.input["action"] == action)
        .collect()
}

/// Rules 16 and 17: activation runs the connector's grant command; expiry runs its revoke
/// command, and only then is the grant `expired`.
#[tokio::test]
async fn rule_17_grant_expiry_runs_the_exec_connector_revoke() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "pg" {
          connector    = "log"
          grant        = { role = "readonly" }
          max_duration = "4h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
    )
    .await;
    let body = json!({ "resource": "pg", "reason": "x", "duration": "1h" });
    let req = app.create("alice", body).await;
    let grant_id = app.approve("bob", &req).await["grant_id"].clone();

    // Act
    let before_tick = app.grant("alice", &grant_id).await;
    app.tick().await;
    let active = app.grant("alice", &grant_id).await;
    let calls_while_active = app.connector_calls();
    app.advance(Duration::from_secs(3600)).await;
    let expired = app.grant("alice", &grant_id).await;
    let calls = app.connector_calls();

    // Assert
    assert_eq!(before_tick["state"], "activating");
    assert_eq!(active["state"], "active");
    assert_eq!(active["expires_at"], "2026-01-01T01:00:00Z");
    let [grant_call] = calls_of(&calls_while_active, "grant")[..] else {
        panic!("one grant call: {calls_while_active:?}");
    };
    assert_eq!(grant_call.command, "grant-cmd");
    assert_eq!(grant_call.input["grant_id"], grant_id);
    assert_eq!(grant_call.input["subject"], "alice@example.com");
    assert_eq!(grant_call.input["params"], json!({ "role": "readonly" }));
    assert!(calls_of(&calls_while_active, "revoke").is_empty());

    assert_eq!(expired["state"], "expired");
    assert_eq!(expired["ending"]["kind"], "expired");
    let [revoke_call] = calls_of(&calls, "revoke")[..] else {
        panic!("one revoke call: {calls:?}");
    };
    assert_eq!(revoke_call.command, "revoke-cmd");
    assert_eq!(revoke_call.input["grant_id"], grant_id);
}

// ---------------------------------------------------------------------------------------------
// The real binary, killed and restarted
// ---------------------------------------------------------------------------------------------

/// A free loopback port: bound, read, released. The server binds it a moment later.
pub async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("address").port()
}

/// `countersign serve --config <config>`, its log in `server-<n>.log` beside the config.
pub struct ServerProcess {
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    pub async fn start(config: &Path, api: &Api, n: usize) -> ServerProcess {
        let log = config.with_file_name(format!("server-{n}.log"));
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start the server");
        let server = ServerProcess { child, log };
        let ready = async || {
            let res = api.try_send(Method::GET, "/readyz", None, None).await;
            res.ok().filter(|(s, _)| *s == StatusCode::OK)
        };
        if poll_until(ready).await.is_none() {
            panic!(
                "the server did not become ready; its log:\n{}",
                server.logs()
            );
        }
        server
    }

    /// SIGKILL: no graceful shutdown, no chance to finish anything.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill the server");
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `countersign token create --config <config> --user <email>`: the token alone on stdout.
pub async fn mint_token(config: &Path, user: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "create", "--config"])
        .arg(config)
        .args(["--user", &email(user)])
        .output()
        .await
        .expect("run token create");
    assert!(out.status.success(), "token create: {out:?}");
    let token = String::from_utf8(out.stdout).expect("utf-8");
    let token = token.trim().to_owned();
    assert!(token.starts_with("cs_") && !token.contains(char::is_whitespace));
    token
}

async fn grant_state(api: &Api, id: &str) -> Option<Value> {
    let token = Some(api.token("alice"));
    let path = format!("/v1/grants/{id}");
    let (status, text) = api.try_send(Method::GET, &path, token, None).await.ok()?;
    (status == StatusCode::OK).then(|| serde_json::from_str(&text).expect("json"))
}

/// Rule 17: a server killed (SIGKILL) while a grant is active, and restarted after the grant's
/// expiry, still runs the revocation: the expiry timer and the outbox survived the crash.
#[tokio::test]
async fn rule_17_revocation_survives_a_server_crash() {
    // Arrange: a configuration file for the real binary, on a free loopback port.
    let dir = tempfile::tempdir().expect("temp dir");
    let db = crate::helpers::database(dir.path()).await;
    let port = free_port().await;
    let config = dir.path().join("countersign.hcl");
    let hcl = format!(
        r#"
server {{
  listen     = "127.0.0.1:{port}"
  public_url = "http://127.0.0.1:{port}"
  database   = "{db}"
}}
{people}
resource "shell" {{
  connector    = "log"
  max_duration = "3s"
  durations    = ["3s"]
  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["bob@example.com"] }} }} ] }}
}}
"#,
        db = db.url(),
        people = people_and_connectors(dir.path()),
    );
    std::fs::write(&config, hcl).expect("write the configuration");
    let mut api = Api::new(format!("http://127.0.0.1:{port}"));
    for user in ["alice", "bob"] {
        api.tokens
            .insert(user.into(), mint_token(&config, user).await);
    }
    let server = ServerProcess::start(&config, &api, 1).await;
    let body = json!({ "resource": "shell", "reason": "x", "duration": "3s" });
    let (created, req) = api.post("alice", "/v1/requests", body).await;
    assert_eq!(created, StatusCode::CREATED, "{req}");
    let review = format!("/v1/requests/{}/reviews", id_of(&req));
    let (_, approved) = api
        .post("bob", &review, json!({ "decision": "approve" }))
        .await;
    let grant_id = id_of(&approved["grant_id"]).to_owned();
    let active = async || {
        grant_state(&api, &grant_id)
            .await
            .filter(|g| g["state"] == "active")
    };
    eventually("the grant is active", active).await;

    // Act: kill the server, let the grant's expiry pass while it is down, start it again.
    server.kill().await;
    let revoked_before_kill = !calls_of(&connector_calls(dir.path()), "revoke").is_empty();
    // The grant was active when seen, so it ends at most 3 s after: wait past that.
    pause(Duration::from_millis(3500)).await;
    let server = ServerProcess::start(&config, &api, 2).await;

    // Assert
    let expired = async || {
        let g = grant_state(&api, &grant_id).await?;
        let revoked = !calls_of(&connector_calls(dir.path()), "revoke").is_empty();
        (g["state"] == "expired" && revoked).then_some(g)
    };
    let Some(grant) = poll_until(expired).await else {
        panic!(
            "the grant did not expire after the restart: {:?}\nserver log:\n{}",
            grant_state(&api, &grant_id).await,
            server.logs()
        );
    };
    assert_eq!(grant["ending"]["kind"], "expired");
    let calls = connector_calls(dir.path());
    assert_eq!(calls_of(&calls, "grant").len(), 1, "{calls:?}");
    let revokes = calls_of(&calls, "revoke");
    assert!(!revokes.is_empty() && revokes.iter().all(|c| c.input["grant_id"] == grant_id));
    if revoked_before_kill {
        // The machine was too slow to kill the server within the grant's 3 s; the restart
        // then proved nothing about the crash. Say so rather than fail on timing.
        eprintln!("note: the revoke ran before the kill; the crash window was missed");
    }
    server.kill().await;
}
