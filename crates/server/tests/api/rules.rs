//! PRODUCT.md §3, rule by rule, over HTTP against the real router.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, id_of};

/// One step, any of bob or carol approves. Approval-only: the grant is active at approval.
const ONE_STEP: &str = r#"
resource "db" {
  max_duration = "4h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com", "carol@example.com"] } } ] }
}
"#;

/// The three-step example of PRODUCT.md §4 (seed 001): one of three, then both of two, then
/// frank; an exec connector gives the access.
#[tokio::test]
async fn seed_001_three_step_workflow_from_request_to_active_grant() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "prod-db-read" {
          connector    = "log"
          grant        = { role = "readonly" }
          max_duration = "24h"
          durations    = ["5m", "15m", "1h", "4h", "24h"]
          workflow = {
            steps = [
              { reviewers = { one_of = ["alice@example.com", "bob@example.com", "carol@example.com"] } },
              { reviewers = { all_of = ["dan@example.com", "eve@example.com"] } },
              { reviewers = { one_of = ["frank@example.com"] } },
            ]
          }
        }
        "#,
    )
    .await;
    let body =
        json!({ "resource": "prod-db-read", "reason": "INC-42 slow queries", "duration": "1h" });

    // Act
    let req = app.create("grace", body).await;
    let after_step_1 = app.approve("carol", &req).await;
    let (too_early, _) = app
        .review("frank", &req, json!({ "decision": "approve" }))
        .await;
    let after_dan = app.approve("dan", &req).await;
    let after_step_2 = app.approve("eve", &req).await;
    let approved = app.approve("frank", &req).await;
    app.tick().await;

    // Assert
    assert_eq!(req["state"], "pending");
    assert_eq!(req["current_step"], 1);
    assert_eq!(after_step_1["current_step"], 2);
    assert_eq!(
        too_early,
        StatusCode::FORBIDDEN,
        "frank reviews step 3, not step 2"
    );
    assert_eq!(after_dan["current_step"], 2, "all_of waits for eve");
    // Rule 36's one truth: the server's sentences, shown as they are by every surface.
    assert_eq!(
        req["summary"],
        json!({
            "status": "Pending: step 1 of 3, 0 of 1 approval",
            "steps": [
                "one of alice@example.com, bob@example.com, carol@example.com",
                "every one of dan@example.com, eve@example.com",
                "one of frank@example.com",
            ],
            "waiting_on": ["alice@example.com", "bob@example.com", "carol@example.com"],
        })
    );
    assert_eq!(
        after_dan["summary"]["status"],
        "Pending: step 2 of 3, 1 of 2 approvals"
    );
    assert_eq!(
        after_dan["summary"]["waiting_on"],
        json!(["eve@example.com"])
    );
    assert_eq!(after_step_2["current_step"], 3);
    assert_eq!(approved["state"], "approved");
    assert_eq!(
        approved["summary"]["status"],
        "Approved by frank@example.com"
    );
    let grant = app.grant("grace", &approved["grant_id"]).await;
    assert_eq!(grant["state"], "active");
    assert_eq!(grant["subject"], "grace@example.com");
    assert_eq!(grant["expires_at"], "2026-01-01T01:00:00Z");
    let steps: Vec<_> = app.request("grace", &req).await["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["status"].clone())
        .collect();
    assert_eq!(steps, ["approved", "approved", "approved"]);
}

/// Rule 8: a deny on the current step, before it is satisfied, denies the whole request.
#[tokio::test]
async fn rule_8_deny_inside_all_of_denies_the_request() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { all_of = ["bob@example.com", "carol@example.com"] } } ] }
        }
        "#,
    )
    .await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    app.approve("bob", &req).await;

    // Act
    let deny = json!({ "decision": "deny", "comment": "not during the freeze" });
    let (status, denied) = app.review("carol", &req, deny).await;

    // Assert
    assert_eq!(status, StatusCode::OK);
    assert_eq!(denied["state"], "denied");
    assert_eq!(denied["outcome"]["comment"], "not during the freeze");
    assert_eq!(denied["outcome"]["actioned_by"]["id"], "carol@example.com");
    assert_eq!(
        denied["summary"]["status"],
        "Denied by carol@example.com: not during the freeze"
    );
    assert_eq!(denied["summary"]["waiting_on"], json!([]));
    assert!(denied.get("grant_id").is_none(), "no grant: {denied}");
}

/// Rule 7: a quorum step needs `min` approvals from distinct people.
#[tokio::test]
async fn rule_7_quorum_needs_min_distinct_approvals() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { quorum = { min = 2, of = ["bob@example.com", "carol@example.com", "dan@example.com"] } } } ] }
        }
        "#,
    )
    .await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;

    // Act
    let after_one = app.approve("bob", &req).await;
    let after_two = app.approve("dan", &req).await;

    // Assert
    assert_eq!(after_one["state"], "pending");
    assert_eq!(after_two["state"], "approved");
}

/// Rule 9: the requester never counts as a reviewer of their own request (403).
#[tokio::test]
async fn rule_9_requester_cannot_approve_own_request() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["alice@example.com", "bob@example.com"] } } ] }
        }
        "#,
    )
    .await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;

    // Act
    let (status, body) = app
        .review("alice", &req, json!({ "decision": "approve" }))
        .await;

    // Assert
    assert_error(status, &body, StatusCode::FORBIDDEN);
    assert_eq!(app.request("alice", &req).await["state"], "pending");
}

/// Rule 10: one decision per person per request; a second review is 409.
#[tokio::test]
async fn rule_10_a_person_cannot_decide_twice() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { quorum = { min = 2, of = ["bob@example.com", "carol@example.com"] } } } ] }
        }
        "#,
    )
    .await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    app.approve("bob", &req).await;

    // Act
    let (status, body) = app
        .review("bob", &req, json!({ "decision": "approve" }))
        .await;

    // Assert
    assert_error(status, &body, StatusCode::CONFLICT);
    assert_eq!(app.request("alice", &req).await["state"], "pending");
}

/// Rule 10: a person who approved step 1 cannot approve step 2 of the same request (409).
#[tokio::test]
async fn rule_10_an_approver_of_step_1_cannot_approve_step_2() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [
            { reviewers = { one_of = ["bob@example.com"] } },
            { reviewers = { one_of = ["bob@example.com", "carol@example.com"] } },
          ] }
        }
        "#,
    )
    .await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    app.approve("bob", &req).await;

    // Act
    let (status, body) = app
        .review("bob", &req, json!({ "decision": "approve" }))
        .await;

    // Assert
    assert_error(status, &body, StatusCode::CONFLICT);
    assert_eq!(app.request("alice", &req).await["current_step"], 2);
}

/// Rule 11: a reviewer assigns the current step; the assignee may then approve it.
#[tokio::test]
async fn rule_11_assignee_can_approve_after_assign() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
    )
    .await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    let (before, _) = app
        .review("grace", &req, json!({ "decision": "approve" }))
        .await;

    // Act
    let path = format!("/v1/requests/{}/assign", id_of(&req));
    let (status, assigned) = app
        .post("bob", &path, json!({ "to": "grace@example.com" }))
        .await;
    let approved = app.approve("grace", &req).await;

    // Assert
    assert_eq!(
        before,
        StatusCode::NOT_FOUND,
        "grace is not involved before"
    );
    assert_eq!(status, StatusCode::OK, "{assigned}");
    assert_eq!(
        assigned["steps"][0]["assignments"][0]["to"],
        "grace@example.com"
    );
    assert_eq!(approved["state"], "approved");
    assert_eq!(
        approved["outcome"]["actioned_by"]["id"],
        "grace@example.com"
    );
}

/// Rule 12: anyone involved may comment; comments are shown in order.
#[tokio::test]
async fn rule_12_comments_are_shown_in_order() {
    // Arrange
    let app = TestApp::spawn(ONE_STEP).await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    let path = format!("/v1/requests/{}/comments", id_of(&req));

    // Act
    let (s1, _) = app
        .post("bob", &path, json!({ "text": "which table?" }))
        .await;
    let (s2, _) = app.post("alice", &path, json!({ "text": "orders" })).await;
    let (s3, _) = app
        .post("root", &path, json!({ "text": "fine by me" }))
        .await;
    let (s4, outsider) = app
        .post("mallory", &path, json!({ "text": "me too" }))
        .await;

    // Assert
    assert_eq!([s1, s2, s3], [StatusCode::OK; 3]);
    assert_error(s4, &outsider, StatusCode::NOT_FOUND);
    let shown: Vec<(String, String)> = app.request("alice", &req).await["comments"]
        .as_array()
        .expect("comments")
        .iter()
        .map(|c| {
            (
                c["by"].as_str().unwrap().into(),
                c["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("bob@example.com", "which table?"),
        ("alice@example.com", "orders"),
        ("root@example.com", "fine by me"),
    ]
    .map(|(b, t)| (b.to_owned(), t.to_owned()));
    assert_eq!(shown, expected);
}

/// Rule 4: the requester may cancel their own pending request.
#[tokio::test]
async fn rule_4_requester_cancels_own_request() {
    // Arrange
    let app = TestApp::spawn(ONE_STEP).await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    let path = format!("/v1/requests/{}/cancel", id_of(&req));

    // Act
    let (by_reviewer, refused) = app.post("bob", &path, json!({ "reason": "no" })).await;
    let (status, cancelled) = app.post("alice", &path, json!({})).await;

    // Assert
    assert_error(by_reviewer, &refused, StatusCode::FORBIDDEN);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(
        cancelled["outcome"]["actioned_by"]["id"],
        "alice@example.com"
    );
}

/// Rule 4: an admin may cancel anyone's pending request, with a reason (422 without).
#[tokio::test]
async fn rule_4_admin_cancels_with_a_reason_only() {
    // Arrange
    let app = TestApp::spawn(ONE_STEP).await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    let path = format!("/v1/requests/{}/cancel", id_of(&req));

    // Act
    let (without, refused) = app.post("root", &path, json!({})).await;
    let (with, cancelled) = app
        .post("root", &path, json!({ "reason": "duplicate" }))
        .await;

    // Assert
    assert_error(without, &refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(with, StatusCode::OK);
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["outcome"]["comment"], "duplicate");
    assert_eq!(
        cancelled["outcome"]["actioned_by"]["id"],
        "root@example.com"
    );
}

/// Rule 3: a request not decided within `pending_ttl` becomes `expired`.
#[tokio::test]
async fn rule_3_pending_request_expires_after_pending_ttl() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          pending_ttl  = "30s"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
    )
    .await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;

    // Act
    app.advance(Duration::from_secs(31)).await;

    // Assert
    assert_eq!(req["pending_until"], "2026-01-01T00:00:30Z");
    let expired = app.request("alice", &req).await;
    assert_eq!(expired["state"], "expired");
    let (status, body) = app
        .review("bob", &req, json!({ "decision": "approve" }))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT);
}

/// Rule 14: a reviewer may shorten the duration; the grant gets the shortest.
#[tokio::test]
async fn rule_14_reviewer_shortens_the_duration_of_the_grant() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "4h"
          durations    = ["15m", "1h", "4h"]
          workflow = { steps = [
            { reviewers = { one_of = ["bob@example.com"] } },
            { reviewers = { one_of = ["carol@example.com"] } },
          ] }
        }
        "#,
    )
    .await;
    let body = json!({ "resource": "db", "reason": "x", "duration": "1h" });
    let req = app.create("alice", body).await;

    // Act
    let shorten = json!({ "decision": "approve", "duration": "15m" });
    let (s1, _) = app.review("bob", &req, shorten).await;
    let approved = app.approve("carol", &req).await;

    // Assert
    assert_eq!(s1, StatusCode::OK);
    assert_eq!(approved["state"], "approved");
    let grant = app.grant("alice", &approved["grant_id"]).await;
    assert_eq!(grant["duration"], "15m");
    assert_eq!(grant["expires_at"], "2026-01-01T00:15:00Z");
}

/// Rule 14: a reviewer may not lengthen the duration (422).
#[tokio::test]
async fn rule_14_reviewer_cannot_lengthen_the_duration() {
    // Arrange
    let app = TestApp::spawn(ONE_STEP).await;
    let body = json!({ "resource": "db", "reason": "x", "duration": "1h" });
    let req = app.create("alice", body).await;

    // Act
    let longer = json!({ "decision": "approve", "duration": "4h" });
    let (status, refused) = app.review("bob", &req, longer).await;

    // Assert
    assert_error(status, &refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.request("alice", &req).await["state"], "pending");
}

/// Rules 15 and 5: an approval with `scope = "workflow"` covers a sibling resource of the
/// same `part_of`; the requester's next request for it is answered with the same grant.
#[tokio::test]
async fn rule_15_workflow_scope_covers_a_sibling_resource() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db-read" {
          max_duration = "4h"
          part_of      = "prod-db"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        resource "db-write" {
          max_duration = "4h"
          part_of      = "prod-db"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
    )
    .await;
    let first = app
        .create(
            "alice",
            json!({ "resource": "db-read", "reason": "x", "duration": "1h" }),
        )
        .await;
    let whole = json!({ "decision": "approve", "scope": "workflow" });
    let (_, approved) = app.review("bob", &first, whole).await;

    // Act
    let body = json!({ "resource": "db-write", "reason": "x", "duration": "1h" });
    let sibling = app.create("alice", body.clone()).await;
    let someone_else = app.create("carol", body).await;

    // Assert: the reviewer is not an owner, so their view names the grant without showing
    // it; the requester sees it whole.
    assert!(approved["grant"].is_null());
    assert_eq!(
        app.request("alice", &first).await["grant"]["workflow"],
        "prod-db"
    );
    assert_eq!(sibling["state"], "approved");
    assert_eq!(sibling["grant_id"], approved["grant_id"]);
    assert_eq!(sibling["grant"]["state"], "active");
    assert_eq!(
        someone_else["state"], "pending",
        "the grant is alice's only"
    );
}

/// Rule 15: without `scope = "workflow"` the sibling needs its own approval.
#[tokio::test]
async fn rule_15_resource_scope_does_not_cover_a_sibling() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db-read" {
          max_duration = "4h"
          part_of      = "prod-db"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        resource "db-write" {
          max_duration = "4h"
          part_of      = "prod-db"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
    )
    .await;
    let first = app
        .create("alice", json!({ "resource": "db-read", "reason": "x" }))
        .await;
    app.approve("bob", &first).await;

    // Act
    let sibling = app
        .create("alice", json!({ "resource": "db-write", "reason": "x" }))
        .await;

    // Assert
    assert_eq!(sibling["state"], "pending");
}

// ---------------------------------------------------------------------------------------------
// Bugs found: these tests state the rule and fail on the current code
// ---------------------------------------------------------------------------------------------

/// Rule 3: once `pending_ttl` has passed the request is no longer decidable, even if the expiry
/// timer has not run yet (the worker is late: busy with a slow connector call, or restarting).
#[tokio::test]
async fn rule_3_a_review_after_pending_ttl_is_refused_before_the_timer_runs() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          pending_ttl  = "30s"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
    )
    .await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    app.clock.advance(Duration::from_secs(31)); // the worker has not run yet

    // Act
    let (status, body) = app
        .review("bob", &req, json!({ "decision": "approve" }))
        .await;
    app.tick().await;

    // Assert
    assert_error(status, &body, StatusCode::CONFLICT);
    let after = app.request("alice", &req).await;
    assert_eq!(after["state"], "expired");
    assert!(after.get("grant_id").is_none(), "{after}");
}

/// Rules 10 and 11: the assignee "becomes eligible for that step"; someone who already decided
/// on the request cannot (rule 10), so such an assignment must be refused, as an assignment
/// to the requester is. Accepted, it hands the assigner's place to nobody and the step can
/// no longer be decided by anyone.
#[tokio::test]
async fn rule_11_assigning_to_someone_who_already_decided_is_refused() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [
            { reviewers = { one_of = ["bob@example.com"] } },
            { reviewers = { one_of = ["dan@example.com"] } },
          ] }
        }
        "#,
    )
    .await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    app.approve("bob", &req).await;

    // Act
    let path = format!("/v1/requests/{}/assign", id_of(&req));
    let (status, body) = app
        .post("dan", &path, json!({ "to": "bob@example.com" }))
        .await;

    // Assert
    assert!(status.is_client_error(), "assignment accepted: {body}");
    assert_error(status, &body, status);
    let step_2 = &app.request("alice", &req).await["steps"][1];
    assert_eq!(step_2["eligible"], json!(["dan@example.com"]));
}
