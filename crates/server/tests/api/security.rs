//! PRODUCT.md §7 and the error statuses of §5: visibility, admin-only endpoints, and bad input
//! answered with a clear JSON error, never a 500.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, id_of};

const RESOURCES: &str = r#"
resource "db" {
  max_duration = "4h"
  durations    = ["15m", "1h", "4h"]
  owners       = ["frank@example.com"]
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
resource "form" {
  max_duration = "1h"
  field "ticket" {
    type     = "string"
    required = true
  }
  field "urgency" {
    type           = "enum"
    allowed_values = ["Normal", "Emergency"]
  }
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
resource "open" {
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;

// ---------------------------------------------------------------------------------------------
// Visibility and admin-only endpoints
// ---------------------------------------------------------------------------------------------

/// §7: an invisible object is 404, exactly like an unknown one.
#[tokio::test]
async fn sec_7_outsider_gets_404_for_an_invisible_request() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let req = app
        .create("alice", json!({ "resource": "open", "reason": "x" }))
        .await;
    let path = format!("/v1/requests/{}", id_of(&req));

    // Act
    let (status, body) = app.get("mallory", &path).await;
    let (unknown, unknown_body) = app.get("mallory", "/v1/requests/no-such-id").await;
    let (listed, list) = app.get("mallory", "/v1/requests").await;

    // Assert
    assert_error(status, &body, StatusCode::NOT_FOUND);
    assert_error(unknown, &unknown_body, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], unknown_body["error"]["code"]);
    assert_eq!(listed, StatusCode::OK);
    assert_eq!(list["requests"], json!([]));
    assert_eq!(
        app.get("bob", &path).await.0,
        StatusCode::OK,
        "the reviewer sees it"
    );
    assert_eq!(
        app.get("root", &path).await.0,
        StatusCode::OK,
        "the admin sees it"
    );
}

/// §7 and rule 19: grants are visible to their subject, the resource's owners and admins only.
#[tokio::test]
async fn sec_7_outsider_sees_no_grants() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    let grant_id = app.approve("bob", &req).await["grant_id"].clone();
    let grant_path = format!("/v1/grants/{}", id_of(&grant_id));

    // Act
    let (_, outsider) = app.get("mallory", "/v1/grants").await;
    let (one_status, one) = app.get("mallory", &grant_path).await;
    let (_, subject) = app.get("alice", "/v1/grants").await;
    let (_, owner) = app.get("frank", "/v1/grants").await;
    let (_, admin) = app.get("root", "/v1/grants").await;

    // Assert
    assert_eq!(outsider["grants"], json!([]));
    assert_error(one_status, &one, StatusCode::NOT_FOUND);
    let ids = |list: &Value| -> Vec<Value> {
        list["grants"]
            .as_array()
            .expect("grants")
            .iter()
            .map(|g| g["id"].clone())
            .collect()
    };
    let only_alices = vec![grant_id];
    assert_eq!(ids(&subject), only_alices);
    assert_eq!(ids(&owner), only_alices);
    assert_eq!(ids(&admin), only_alices);
}

/// §5 and §7: the audit log is for admins; the admin's verification walks an intact chain.
#[tokio::test]
async fn sec_7_audit_is_admin_only_and_verifies() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let req = app
        .create("alice", json!({ "resource": "db", "reason": "x" }))
        .await;
    app.approve("bob", &req).await;

    // Act
    let (user_audit, refused) = app.get("alice", "/v1/audit").await;
    let (user_verify, refused_verify) = app.get("bob", "/v1/audit/verify").await;
    let (admin_audit, page) = app.get("root", "/v1/audit").await;
    let (admin_verify, verified) = app.get("root", "/v1/audit/verify").await;

    // Assert
    assert_error(user_audit, &refused, StatusCode::FORBIDDEN);
    assert_error(user_verify, &refused_verify, StatusCode::FORBIDDEN);
    assert_eq!(admin_audit, StatusCode::OK);
    let events = page["events"].as_array().expect("events");
    assert!(!events.is_empty());
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert_eq!(admin_verify, StatusCode::OK);
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["checked"].as_u64(), Some(events.len() as u64));
}

// ---------------------------------------------------------------------------------------------
// Bad input: a status and a JSON error body, never a 500
// ---------------------------------------------------------------------------------------------

/// Creates a request as alice with `body`; returns the status and body.
async fn create_as_alice(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.post("alice", "/v1/requests", body).await
}

#[tokio::test]
async fn sec_7_malformed_json_is_400() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let body = br#"{"resource": "db", "reason": "#.to_vec();

    // Act
    let (status, err) = app
        .api
        .send(
            Method::POST,
            "/v1/requests",
            Some(app.api.token("alice")),
            Some(("application/json", body)),
        )
        .await;

    // Assert
    assert_error(status, &err, StatusCode::BAD_REQUEST);
}

/// A body that is JSON but lacks a property the wire type requires is malformed (400).
#[tokio::test]
async fn sec_7_missing_json_property_is_400() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;

    // Act
    // `resource` is the one property a create must have (a reason may come as a purpose).
    let (status, err) = create_as_alice(&app, json!({ "reason": "x" })).await;
    let (no_text, err2) = create_as_alice(&app, json!({ "resource": "db" })).await;

    // Assert
    assert_error(status, &err, StatusCode::BAD_REQUEST);
    assert_error(no_text, &err2, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Rule 2: the resource must exist.
#[tokio::test]
async fn rule_2_unknown_resource_is_422() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;

    // Act
    let (status, err) = create_as_alice(&app, json!({ "resource": "nope", "reason": "x" })).await;

    // Assert
    assert_error(status, &err, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Rule 2: a required field of the resource must be given.
#[tokio::test]
async fn rule_2_missing_required_field_is_422() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;

    // Act
    let (status, err) = create_as_alice(&app, json!({ "resource": "form", "reason": "x" })).await;

    // Assert
    assert_error(status, &err, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        err["error"]["message"]
            .as_str()
            .expect("message")
            .contains("ticket")
    );
}

/// Rule 2: an enum field takes only its allowed values.
#[tokio::test]
async fn rule_2_enum_value_outside_allowed_values_is_422() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let fields = json!({ "ticket": "INC-1", "urgency": "Whenever" });

    // Act
    let body = json!({ "resource": "form", "reason": "x", "fields": fields });
    let (status, err) = create_as_alice(&app, body).await;

    // Assert
    assert_error(status, &err, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Rule 14: no duration above the resource's maximum.
#[tokio::test]
async fn rule_14_duration_above_the_maximum_is_422() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;

    // Act
    let body = json!({ "resource": "open", "reason": "x", "duration": "2h" });
    let (status, err) = create_as_alice(&app, body).await;

    // Assert
    assert_error(status, &err, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Rule 14: with a closed set of durations, only those.
#[tokio::test]
async fn rule_14_duration_outside_the_closed_set_is_422() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;

    // Act
    let body = json!({ "resource": "db", "reason": "x", "duration": "30m" });
    let (status, err) = create_as_alice(&app, body).await;

    // Assert
    assert_error(status, &err, StatusCode::UNPROCESSABLE_ENTITY);
}

/// §7: texts are bounded (4096 characters).
#[tokio::test]
async fn sec_7_reason_over_4096_characters_is_422() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let reason = "é".repeat(4097);

    // Act
    let (status, err) = create_as_alice(&app, json!({ "resource": "db", "reason": reason })).await;

    // Assert
    assert_error(status, &err, StatusCode::UNPROCESSABLE_ENTITY);
}

/// §7: bodies are bounded (64 KiB).
#[tokio::test]
async fn sec_7_body_over_64_kib_is_413() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let reason = "x".repeat(70 * 1024);

    // Act
    let (status, err) = create_as_alice(&app, json!({ "resource": "db", "reason": reason })).await;

    // Assert
    assert_error(status, &err, StatusCode::PAYLOAD_TOO_LARGE);
}

/// §5: no token is 401.
#[tokio::test]
async fn sec_5_missing_token_is_401() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;

    // Act
    let (status, err) = app.api.send(Method::GET, "/v1/requests", None, None).await;

    // Assert
    assert_error(status, &err, StatusCode::UNAUTHORIZED);
}

/// §5: a token the server never issued is 401.
#[tokio::test]
async fn sec_5_unknown_token_is_401() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let forged = format!("cs_{}", "0".repeat(64));

    // Act
    let (status, err) = app
        .api
        .send(Method::GET, "/v1/requests", Some(&forged), None)
        .await;

    // Assert
    assert_error(status, &err, StatusCode::UNAUTHORIZED);
}

/// Rules 1 and 10: a decision on a finished request is a conflict.
#[tokio::test]
async fn rule_1_decision_on_a_finished_request_is_409() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let req = app
        .create("alice", json!({ "resource": "open", "reason": "x" }))
        .await;
    let path = format!("/v1/requests/{}/cancel", id_of(&req));
    app.post("alice", &path, json!({})).await;

    // Act
    let (status, err) = app.review("bob", &req, json!({ "decision": "deny" })).await;

    // Assert
    assert_error(status, &err, StatusCode::CONFLICT);
    assert_eq!(app.request("alice", &req).await["state"], "cancelled");
}

/// §5: an unknown endpoint is 404, with the same JSON error body.
#[tokio::test]
async fn sec_5_unknown_endpoint_is_404() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;

    // Act
    let (status, err) = app.get("alice", "/v1/nothing-here").await;

    // Assert
    assert_error(status, &err, StatusCode::NOT_FOUND);
}

/// §5: a known path with the wrong method is 405, with the same JSON error body.
#[tokio::test]
async fn sec_5_wrong_method_is_405() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let token = Some(app.api.token("alice"));

    // Act
    let (status, err) = app
        .api
        .send(Method::DELETE, "/v1/requests", token, None)
        .await;

    // Assert
    assert_error(status, &err, StatusCode::METHOD_NOT_ALLOWED);
}

/// §5: the `state` filter takes only request states.
#[tokio::test]
async fn sec_5_invalid_state_filter_is_400() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;

    // Act
    let (status, err) = app.get("alice", "/v1/requests?state=bogus").await;

    // Assert
    assert_error(status, &err, StatusCode::BAD_REQUEST);
}

/// §7: after a barrage of bad input, the server has answered no 5xx at all.
#[tokio::test]
async fn sec_7_bad_input_never_yields_a_500() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let req = app
        .create("alice", json!({ "resource": "open", "reason": "x" }))
        .await;
    let id = id_of(&req).to_owned();
    let token = Some(app.api.token("bob"));
    let bad: Vec<(Method, String, Vec<u8>)> = vec![
        (Method::POST, "/v1/requests".into(), b"[]".to_vec()),
        (Method::POST, "/v1/requests".into(), b"null".to_vec()),
        (Method::POST, "/v1/requests".into(), b"\xff\xfe".to_vec()),
        (
            Method::POST,
            "/v1/requests".into(),
            br#"{"resource":1,"reason":2}"#.to_vec(),
        ),
        (
            Method::POST,
            "/v1/requests".into(),
            br#"{"resource":"open","reason":"x","extra":1}"#.to_vec(),
        ),
        (
            Method::POST,
            "/v1/requests".into(),
            br#"{"resource":"open","reason":"x","duration":"soon"}"#.to_vec(),
        ),
        (
            Method::POST,
            "/v1/requests".into(),
            br#"{"resource":"open","reason":"x","fields":{"a":[[[[]]]]}}"#.to_vec(),
        ),
        (
            Method::POST,
            format!("/v1/requests/{id}/reviews"),
            br#"{"decision":"maybe"}"#.to_vec(),
        ),
        (
            Method::POST,
            format!("/v1/requests/{id}/reviews"),
            br#"{"decision":"approve","scope":"galaxy"}"#.to_vec(),
        ),
        (
            Method::POST,
            format!("/v1/requests/{id}/reviews"),
            br#"{"decision":"deny","duration":"5m"}"#.to_vec(),
        ),
        (
            Method::POST,
            format!("/v1/requests/{id}/assign"),
            br#"{"to":"not a principal"}"#.to_vec(),
        ),
        (
            Method::POST,
            format!("/v1/requests/{id}/comments"),
            br#"{"text":5}"#.to_vec(),
        ),
        (
            Method::POST,
            "/v1/grants/nope/revoke".into(),
            b"{}".to_vec(),
        ),
        (Method::GET, "/v1/requests?limit=-1".into(), vec![]),
        (Method::GET, "/v1/requests?reviewable_by=you".into(), vec![]),
        (Method::GET, "/v1/grants?state=bogus".into(), vec![]),
        (Method::GET, "/v1/audit?after=x".into(), vec![]),
        (Method::GET, "/v1/requests/%00".into(), vec![]),
    ];

    // Act
    let mut answers = vec![];
    let sent = bad.len();
    for (method, path, body) in bad {
        let body = (!body.is_empty()).then_some(("application/json", body));
        let (status, err) = app.api.send(method.clone(), &path, token, body).await;
        answers.push((method, path, status, err));
    }
    let metrics = crate::metrics::Scrape::of(&app).await;

    // Assert
    for (method, path, status, err) in answers {
        assert!(status.is_client_error(), "{method} {path}: {status} {err}");
        assert_error(status, &err, status);
    }
    let server_errors: Vec<_> = metrics
        .all(api::metrics::HTTP_REQUESTS)
        .filter(|(_, labels, _)| labels["status"].starts_with('5'))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    let client_errors: f64 = metrics
        .all(api::metrics::HTTP_REQUESTS)
        .filter(|(_, labels, _)| labels["status"].starts_with('4'))
        .map(|(_, _, n)| n)
        .sum();
    assert!(client_errors >= sent as f64, "{client_errors} 4xx counted");
    assert_eq!(app.request("alice", &req).await["state"], "pending");
}

/// §5: authentication is a bearer token. The scheme name is case-insensitive (RFC 9110
/// §11.1), so `bearer cs_…` is the same credential as `Bearer cs_…`.
#[tokio::test]
async fn sec_5_bearer_scheme_is_case_insensitive() {
    // Arrange
    let app = TestApp::spawn(RESOURCES).await;
    let header = format!("bearer {}", app.api.token("alice"));

    // Act
    let res = reqwest::Client::new()
        .get(format!("{}/v1/requests", app.api.base))
        .header(reqwest::header::AUTHORIZATION, header)
        .send()
        .await
        .expect("send");

    // Assert
    assert_eq!(res.status(), StatusCode::OK);
}
