//! Issue 14: several replicas on one database (PRODUCT.md §6). Each test runs two servers, each
//! with its own store, engine and port, on one database: two SQLite stores on one file by
//! default, two PostgreSQL replicas with `COUNTERSIGN_TEST_STORE=postgres` (CI runs both).
//! Whatever one replica commits, the other sees; two replicas deciding at once give one
//! outcome; the worker of either carries out what the other scheduled.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Replica, TestApp, id_of};

const RESOURCES: &str = r#"
resource "db" {
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com", "carol@example.com"] } } ] }
}
"#;

/// `db0` … `db19`, like `db`: one resource per round of a race, so that no round's request is
/// approved at once by an earlier round's grant (rule 5).
fn race_resources() -> String {
    (0..20)
        .map(|i| RESOURCES.replace("resource \"db\"", &format!("resource \"db{i}\"")))
        .collect()
}

/// Every request created, alternating between the replicas, is seen by both, and the audit
/// chain they wrote together verifies on either.
#[tokio::test]
async fn issue_14_requests_alternate_between_two_replicas() {
    // Arrange
    let a = TestApp::spawn(RESOURCES).await;
    let b = a.replica().await;
    let users = ["alice", "dan", "eve", "frank", "grace", "mallory"];

    // Act: creates and decisions alternate between the two.
    let mut ids = vec![];
    for (i, user) in users.iter().enumerate() {
        let body = json!({ "resource": "db", "reason": format!("r{i}") });
        let (status, req) = if i % 2 == 0 {
            a.post(user, "/v1/requests", body).await
        } else {
            b.api.post(user, "/v1/requests", body).await
        };
        assert_eq!(status, StatusCode::CREATED, "{req}");
        ids.push(req["id"].clone());
    }
    for (i, id) in ids.iter().enumerate() {
        let path = format!("/v1/requests/{}/reviews", id_of(id));
        let body = json!({ "decision": if i.is_multiple_of(3) { "deny" } else { "approve" } });
        let (status, r) = if i % 2 == 0 {
            b.api.post("bob", &path, body).await
        } else {
            a.post("bob", &path, body).await
        };
        assert_eq!(status, StatusCode::OK, "{r}");
    }

    // Assert: both replicas list every request in the same state, and the chain verifies.
    for (name, list) in [
        ("first", a.get("root", "/v1/requests?limit=50").await.1),
        ("second", b.api.get("root", "/v1/requests?limit=50").await.1),
    ] {
        let states: Vec<(&str, &str)> = list["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .map(|r| {
                (
                    r["reason"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(states.len(), users.len(), "{name}: {list}");
        for (reason, state) in states {
            let i: usize = reason[1..].parse().expect("r<i>");
            let want = if i.is_multiple_of(3) {
                "denied"
            } else {
                "approved"
            };
            assert_eq!(state, want, "{name} replica, request {reason}");
        }
    }
    for (name, v) in [
        ("first", a.get("root", "/v1/audit/verify").await),
        ("second", b.api.get("root", "/v1/audit/verify").await),
    ] {
        assert_eq!(v.0, StatusCode::OK, "{name}: {}", v.1);
        assert_eq!(v.1["ok"], true, "{name}: {}", v.1);
    }
}

/// Rule 8's "first decision wins" across replicas: bob approves on one while carol denies on
/// the other, at the same moment, twenty times over. Each request ends with exactly one
/// decision and one outcome event; the loser is told 409.
#[tokio::test]
async fn issue_14_two_reviewers_deciding_at_once_on_two_replicas_give_one_outcome() {
    // Arrange
    let a = TestApp::spawn(&race_resources()).await;
    let b = a.replica().await;

    for round in 0..20 {
        let body = json!({ "resource": format!("db{round}"), "reason": format!("race {round}") });
        let req = a.create("alice", body).await;
        assert_eq!(req["state"], "pending", "round {round}: {req}");
        let path = format!("/v1/requests/{}/reviews", id_of(&req["id"]));

        // Act
        let (approve, deny) = tokio::join!(
            a.post("bob", &path, json!({ "decision": "approve" })),
            b.api.post("carol", &path, json!({ "decision": "deny" })),
        );

        // Assert
        let statuses = [approve.0, deny.0];
        assert!(
            statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::CONFLICT),
            "round {round}: one decision must win and the other be refused: {approve:?} {deny:?}"
        );
        let seen = b
            .api
            .get("root", &format!("/v1/requests/{}", id_of(&req["id"])))
            .await
            .1;
        let winner = if approve.0 == StatusCode::OK {
            "approved"
        } else {
            "denied"
        };
        assert_eq!(seen["state"], winner, "round {round}: {seen}");
        let events = audit_of(&a, &req["id"]).await;
        let decided: Vec<&str> = events
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .filter(|k| matches!(*k, "request_approved" | "request_denied"))
            .collect();
        assert_eq!(decided.len(), 1, "round {round}: {events:?}");
    }
}

/// A grant approved through one replica is expired by the other's worker, and the first sees
/// it ended; a revoke call scheduled by one is made by the other.
#[tokio::test]
async fn issue_14_a_grant_approved_on_one_replica_expires_on_the_other() {
    // Arrange
    let a = TestApp::spawn(RESOURCES).await;
    let b = a.replica().await;
    let req = a
        .create(
            "alice",
            json!({ "resource": "db", "reason": "x", "duration": "15m" }),
        )
        .await;
    a.approve("bob", &req["id"]).await;
    let grant = a.request("alice", &req["id"]).await["grant"].clone();
    assert_eq!(a.grant("alice", &grant).await["state"], "active");

    // Act: time passes; only the second replica's worker runs.
    a.clock.advance(Duration::from_secs(16 * 60));
    tick(&b).await;

    // Assert
    let seen = a.grant("alice", &grant).await;
    assert_eq!(seen["state"], "expired", "{seen}");
}

/// A portal sign-in started on one replica is finished on the other (the identity provider's
/// callback may reach any of them), and only once.
#[tokio::test]
async fn issue_14_a_sign_in_under_way_is_taken_once_on_any_replica() {
    // Arrange
    let a = TestApp::spawn(RESOURCES).await;
    let b = a.replica().await;
    let until = domain::Timestamp::from_millis(crate::helpers::START_MS + 600_000);
    a.engine
        .start_login("cookie-hash", "{\"state\":\"s\"}".into(), until)
        .await
        .expect("start");

    // Act
    let first = b.engine.take_login("cookie-hash").await.expect("take");
    let again = a
        .engine
        .take_login("cookie-hash")
        .await
        .expect("take again");

    // Assert
    assert_eq!(first.as_deref(), Some("{\"state\":\"s\"}"));
    assert_eq!(again, None, "a sign-in can be used once");
}

/// The audit events of one request, as an admin reads them (the whole log is small here).
async fn audit_of(app: &TestApp, id: &Value) -> Vec<Value> {
    let (status, body) = app.get("root", "/v1/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["event"].clone())
        .filter(|e| e["request"] == *id)
        .collect()
}

/// Runs the second replica's due jobs until none is left.
async fn tick(r: &Replica) {
    for _ in 0..100 {
        if r.engine.run_due().await.expect("run due jobs") == 0 {
            return;
        }
    }
    panic!("jobs keep coming due on the second replica");
}
