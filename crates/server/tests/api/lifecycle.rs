//! The grant lifecycle over the API (issue 4): a connector that always fails leaves the grant
//! `failed` and tells the requester why (rules 16 and 17); extension (rule 19); a scheduled
//! start (rule 16).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, id_of};

const BROKEN: &str = r#"
connector "broken" {
  type           = "exec"
  grant_command  = ["sh", "-c", "echo 'FATAL: role \"alice\" does not exist' >&2; exit 1"]
  revoke_command = ["sh", "-c", "cat >/dev/null"]
  max_attempts   = 2
}

resource "broken-db" {
  connector    = "broken"
  max_duration = "1h"
  workflow     = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;

const PG: &str = r#"
resource "pg" {
  connector    = "log"
  grant        = { role = "readonly" }
  max_duration = "4h"
  durations    = ["30m", "1h", "2h"]
  workflow     = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;

/// Rules 16 and 17: activation that fails on every attempt marks the grant `failed`; the
/// requester sees it, with the connector's own words, on the request.
#[tokio::test]
async fn rule_16_always_failing_connector_fails_the_grant_and_tells_the_requester() {
    // Arrange
    let app = TestApp::spawn(BROKEN).await;
    let req = app
        .create("alice", json!({ "resource": "broken-db", "reason": "x" }))
        .await;
    app.approve("bob", &req).await;

    // Act
    app.tick().await;
    app.advance(Duration::from_secs(600)).await;
    let seen = app.request("alice", &req).await;

    // Assert
    assert_eq!(seen["state"], "approved");
    let grant = &seen["grant"];
    assert_eq!(grant["state"], "failed", "{seen}");
    assert_eq!(grant["ending"]["kind"], "activation_failed", "{grant}");
    for text in [&grant["last_error"], &grant["ending"]["reason"]] {
        let text = text.as_str().unwrap_or_default();
        assert!(
            text.contains("role \"alice\" does not exist"),
            "the requester is not told why: {grant}"
        );
    }
}

/// Rule 19: `POST /v1/grants/{id}/extend` creates a linked request through the workflow; once
/// approved, the grant's expiry moves from its current expiry. Only the subject may ask, only
/// for an active grant, and only for a duration the resource allows.
#[tokio::test]
async fn rule_19_extend_endpoint_moves_the_expiry_once_approved() {
    // Arrange
    let app = TestApp::spawn(PG).await;
    let req = app
        .create(
            "alice",
            json!({ "resource": "pg", "reason": "x", "duration": "1h" }),
        )
        .await;
    let grant = app.approve("bob", &req).await["grant_id"].clone();
    app.tick().await;
    let path = format!("/v1/grants/{}/extend", id_of(&grant));

    // Act
    let (by_owner_of_nothing, e1) = app
        .post(
            "carol",
            &path,
            json!({ "reason": "mine now", "duration": "1h" }),
        )
        .await;
    let (bad_duration, e2) = app
        .post(
            "alice",
            &path,
            json!({ "reason": "more", "duration": "3h" }),
        )
        .await;
    let (malformed, e3) = app
        .post(
            "alice",
            &path,
            json!({ "reason": "more", "duration": "soon" }),
        )
        .await;
    let (created, ext) = app
        .post(
            "alice",
            &path,
            json!({ "reason": "more", "duration": "30m" }),
        )
        .await;
    let before = app.grant("alice", &grant).await;
    app.approve("bob", &ext).await;
    let after = app.grant("alice", &grant).await;
    app.advance(Duration::from_secs(3600 + 600)).await;
    let still = app.grant("alice", &grant).await;
    app.advance(Duration::from_secs(1200)).await;
    let ended = app.grant("alice", &grant).await;
    let (late, e4) = app.post("alice", &path, json!({ "reason": "again" })).await;

    // Assert
    assert_error(by_owner_of_nothing, &e1, StatusCode::NOT_FOUND);
    assert_error(bad_duration, &e2, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(malformed, &e3, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(created, StatusCode::CREATED, "{ext}");
    assert_eq!(ext["extends"], grant);
    assert_eq!(ext["state"], "pending");
    assert_eq!(before["expires_at"], "2026-01-01T01:00:00Z");
    assert_eq!(after["expires_at"], "2026-01-01T01:30:00Z", "{after}");
    assert_eq!(still["state"], "active");
    assert_eq!(ended["state"], "expired");
    assert_error(late, &e4, StatusCode::CONFLICT);
    // One grant call, one revoke: an extension changes no access.
    let calls = app.connector_calls();
    let actions: Vec<&str> = calls
        .iter()
        .map(|c| c.input["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actions, ["grant", "revoke"]);
}

/// Rule 16: `start_at` schedules the grant; the connector is called, and the duration clock
/// starts, only at that time.
#[tokio::test]
async fn rule_16_start_at_schedules_the_grant() {
    // Arrange
    let app = TestApp::spawn(PG).await;
    let body = json!({ "resource": "pg", "reason": "window", "duration": "1h",
        "start_at": "2026-01-01T02:00:00Z" });

    // Act
    let (bad, e1) = app
        .post(
            "alice",
            "/v1/requests",
            json!({ "resource": "pg", "reason": "x",
            "start_at": "tomorrow" }),
        )
        .await;
    let (past, e2) = app
        .post(
            "alice",
            "/v1/requests",
            json!({ "resource": "pg", "reason": "x",
            "start_at": "2025-12-31T00:00:00Z" }),
        )
        .await;
    let req = app.create("alice", body).await;
    let grant = app.approve("bob", &req).await["grant_id"].clone();
    app.tick().await;
    let waiting = app.grant("alice", &grant).await;
    let calls_before = app.connector_calls().len();
    app.advance(Duration::from_secs(2 * 3600)).await;
    let started = app.grant("alice", &grant).await;

    // Assert
    assert_error(bad, &e1, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(past, &e2, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(req["start_at"], "2026-01-01T02:00:00Z");
    assert_eq!(waiting["state"], "scheduled");
    assert_eq!(waiting["start_at"], "2026-01-01T02:00:00Z");
    assert_eq!(calls_before, 0, "the connector ran before the start time");
    assert_eq!(started["state"], "active");
    assert_eq!(started["activated_at"], "2026-01-01T02:00:00Z");
    assert_eq!(started["expires_at"], "2026-01-01T03:00:00Z");
}
