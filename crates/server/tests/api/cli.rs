//! PRODUCT.md §5 (CLI): `countersign request create --wait` blocks until the outcome and exits
//! 0 on approval, 1 on denial and 2 on cancellation: the building block for CI pipelines.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{TestApp, eventually, id_of};

const RESOURCE: &str = r#"
resource "deploy" {
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;

/// `countersign request create deploy --reason x --wait --poll-seconds 1 --json` as alice,
/// against the in-process server.
fn wait_for_outcome(app: &TestApp) -> Child {
    Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["request", "create", "deploy", "--reason", "x"])
        .args(["--wait", "--poll-seconds", "1", "--json"])
        .env("COUNTERSIGN_URL", &app.api.base)
        .env("COUNTERSIGN_TOKEN", app.api.token("alice"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the client")
}

/// The id of the request the waiting client created, found as its requester sees it.
async fn pending_request(app: &TestApp) -> Value {
    let probe = async || {
        let (_, list) = app.get("alice", "/v1/requests?state=pending").await;
        list["requests"].get(0).map(|r| r["id"].clone())
    };
    eventually("the client has created its request", probe).await
}

/// The client's exit code and the request it printed last.
async fn finish(child: Child) -> (Option<i32>, Value) {
    let out: Output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the client ends after the outcome")
        .expect("wait for the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let printed = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        panic!("the client printed no JSON ({e}): {stdout}\nstderr: {stderr}")
    });
    (out.status.code(), printed)
}

#[tokio::test]
async fn cli_request_create_wait_exits_0_when_approved() {
    // Arrange
    let app = TestApp::spawn(RESOURCE).await;
    let client = wait_for_outcome(&app);
    let id = pending_request(&app).await;

    // Act
    app.approve("bob", &id).await;
    let (code, printed) = finish(client).await;

    // Assert
    assert_eq!(code, Some(0));
    assert_eq!(printed["id"], id);
    assert_eq!(printed["state"], "approved");
}

#[tokio::test]
async fn cli_request_create_wait_exits_1_when_denied() {
    // Arrange
    let app = TestApp::spawn(RESOURCE).await;
    let client = wait_for_outcome(&app);
    let id = pending_request(&app).await;

    // Act
    app.review("bob", &id, json!({ "decision": "deny" })).await;
    let (code, printed) = finish(client).await;

    // Assert
    assert_eq!(code, Some(1));
    assert_eq!(printed["state"], "denied");
}

#[tokio::test]
async fn cli_request_create_wait_exits_2_when_cancelled() {
    // Arrange
    let app = TestApp::spawn(RESOURCE).await;
    let client = wait_for_outcome(&app);
    let id = pending_request(&app).await;

    // Act
    let path = format!("/v1/requests/{}/cancel", id_of(&id));
    app.post("alice", &path, json!({ "reason": "not needed" }))
        .await;
    let (code, printed) = finish(client).await;

    // Assert
    assert_eq!(code, Some(2));
    assert_eq!(printed["state"], "cancelled");
}

/// Issue 13, item 7: a log written to a pipe or a file (stderr is not a terminal) has no ANSI
/// colour codes, so a log collector or `grep` sees plain text.
#[tokio::test]
async fn hardening_7_no_colour_codes_when_the_log_is_not_a_terminal() {
    // Arrange: a server on a free loopback port, with a durable database of its own.
    let dir = tempfile::tempdir().expect("temp dir");
    let db = crate::helpers::database(dir.path()).await;
    let config = dir.path().join("countersign.hcl");
    let hcl = format!(
        "server {{\n  listen = \"127.0.0.1:0\"\n  database = \"{}\"\n}}\n",
        db.url()
    );
    std::fs::write(&config, hcl).expect("write the configuration");

    // Act: start it with stderr on a pipe, without NO_COLOR (which would hide the bug), and
    // read its log up to the line saying it serves.
    let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut log = String::new();
    let serving = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read the log") {
            log.push_str(&line);
            log.push('\n');
            if line.contains("countersign is serving") {
                return true;
            }
        }
        false
    })
    .await;
    child.kill().await.expect("stop the server");

    // Assert
    assert_eq!(
        serving,
        Ok(true),
        "the server did not start; its log:\n{log}"
    );
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "colour codes in a piped log: {log:?}"
    );
}
