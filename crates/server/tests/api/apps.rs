//! Applications as requesters (rules 4, 21 and 24): app tokens and roles, a request made for a
//! person, reviewers seeing both, polling, update and cancel of the app's own requests only,
//! and the bounds on what an app sends.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, email, id_of};

const CONFIG: &str = r#"
app "deployer" { roles = ["request_approval"] }
app "ci-bot"   { roles = ["request_approval"] }
app "auditor"  { roles = [] }

resource "deploy-prod" {
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;

/// The test server, with a token for each app under its name.
async fn spawn() -> TestApp {
    let mut app = TestApp::spawn(CONFIG).await;
    app.app_tokens(&["deployer", "ci-bot", "auditor"]).await;
    app
}

/// `PATCH path` with a JSON body, as `user`.
async fn patch(app: &TestApp, user: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let bytes = body.to_string().into_bytes();
    app.api
        .send(
            reqwest::Method::PATCH,
            path,
            Some(app.api.token(user)),
            Some(("application/json", bytes)),
        )
        .await
}

fn ask_for(requester: Option<&str>) -> Value {
    let mut body = json!({
        "resource": "deploy-prod",
        "purpose": "Deploy **v2.3.1** to production\n\nChangelog: fixes the login bug.",
        "reference_url": "https://ci.example.com/pipelines/4711",
        "correlation_id": "pipeline-4711",
        "request_data": { "commit": "9f77d45", "stages": ["build", "test"] },
    });
    if let Some(r) = requester {
        body["requester"] = json!(email(r));
    }
    body
}

#[tokio::test]
async fn rule_21_an_app_asks_for_a_person_and_reviewers_see_both() {
    // Arrange
    let app = spawn().await;

    // Act
    let req = app.create("deployer", ask_for(Some("carol"))).await;
    let seen_by_reviewer = app.request("bob", &req).await;
    let approved = app.approve("bob", &req).await;
    let polled = app.request("deployer", &req).await;

    // Assert: both identities, the app's data kept as sent, the purpose's first line as the
    // reason, and the outcome readable by polling (rule 24).
    assert_eq!(req["requester"], "carol@example.com");
    assert_eq!(req["created_by"], "app:deployer");
    assert_eq!(req["reason"], "Deploy **v2.3.1** to production");
    assert_eq!(seen_by_reviewer["created_by"], "app:deployer");
    assert_eq!(seen_by_reviewer["requester"], "carol@example.com");
    assert_eq!(seen_by_reviewer["correlation_id"], "pipeline-4711");
    assert_eq!(seen_by_reviewer["request_data"]["commit"], "9f77d45");
    assert_eq!(approved["state"], "approved");
    assert_eq!(polled["outcome"]["status"], "approved");
    assert_eq!(polled["outcome"]["actioned_by"]["id"], "bob@example.com");
    assert_eq!(
        polled["reference_url"],
        "https://ci.example.com/pipelines/4711"
    );
    // The audit log names who acted: the app, asking for carol.
    let created = audit_event(&app, "request_created").await;
    assert_eq!(created["actor"], "app:deployer");
    assert_eq!(created["detail"]["requester"], "carol@example.com");
}

/// The first audit event of `kind`.
async fn audit_event(app: &TestApp, kind: &str) -> Value {
    let (_, page) = app.get("root", "/v1/audit").await;
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].clone())
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {page}"))
}

#[tokio::test]
async fn rule_21_an_app_may_ask_as_itself() {
    // Arrange
    let app = spawn().await;

    // Act
    let req = app.create("deployer", ask_for(None)).await;

    // Assert
    assert_eq!(req["requester"], "app:deployer");
    assert_eq!(req["created_by"], "app:deployer");
    assert_eq!(req["current_step"], 1);
}

#[tokio::test]
async fn rule_4_an_app_reads_updates_and_cancels_only_its_own_requests() {
    // Arrange
    let app = spawn().await;
    let req = app.create("deployer", ask_for(Some("carol"))).await;
    let path = format!("/v1/requests/{}", id_of(&req));
    let new_purpose = json!({ "purpose": "Deploy v2.3.2 instead" });

    // Act: another app tries everything; the creator updates, then cancels.
    let (s_get, e_get) = app.get("ci-bot", &path).await;
    let (s_patch, e_patch) = patch(&app, "ci-bot", &path, &new_purpose).await;
    let (s_cancel, e_cancel) = app
        .post("ci-bot", &format!("{path}/cancel"), json!({}))
        .await;
    let (_, others_list) = app.get("ci-bot", "/v1/requests").await;
    let (s_upd, updated) = patch(&app, "deployer", &path, &new_purpose).await;
    let (s_own, cancelled) = app
        .post(
            "deployer",
            &format!("{path}/cancel"),
            json!({ "reason": "superseded" }),
        )
        .await;
    let (s_late, late) = patch(&app, "deployer", &path, &new_purpose).await;

    // Assert
    assert_error(s_get, &e_get, StatusCode::NOT_FOUND);
    assert_error(s_patch, &e_patch, StatusCode::NOT_FOUND);
    assert_error(s_cancel, &e_cancel, StatusCode::NOT_FOUND);
    assert_eq!(others_list["requests"], json!([]));
    assert_eq!(s_upd, StatusCode::OK, "{updated}");
    assert_eq!(updated["purpose"], "Deploy v2.3.2 instead");
    let logged = audit_event(&app, "request_updated").await;
    assert_eq!(logged["actor"], "app:deployer");
    assert_eq!(logged["detail"]["purpose"], "Deploy v2.3.2 instead");
    assert_eq!(s_own, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["outcome"]["actioned_by"]["id"], "app:deployer");
    // Update after the outcome: a conflict.
    assert_error(s_late, &late, StatusCode::CONFLICT);
}

#[tokio::test]
async fn rule_4_only_the_creator_updates_and_reviewers_cannot() {
    // Arrange: carol asks herself; bob reviews.
    let app = spawn().await;
    let req = app
        .create(
            "carol",
            json!({ "resource": "deploy-prod", "reason": "hotfix" }),
        )
        .await;
    let path = format!("/v1/requests/{}", id_of(&req));

    // Act
    let (s_bob, e_bob) = patch(&app, "bob", &path, &json!({ "reason": "mine now" })).await;
    let (s_empty, e_empty) = patch(&app, "carol", &path, &json!({})).await;
    let (s_unknown, e_unknown) = patch(&app, "carol", &path, &json!({ "resource": "x" })).await;
    let (s_ok, ok) = patch(
        &app,
        "carol",
        &path,
        &json!({ "reason": "hotfix for INC-42" }),
    )
    .await;

    // Assert
    assert_error(s_bob, &e_bob, StatusCode::FORBIDDEN);
    assert_error(s_empty, &e_empty, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(s_unknown, &e_unknown, StatusCode::BAD_REQUEST);
    assert_eq!(s_ok, StatusCode::OK, "{ok}");
    assert_eq!(ok["reason"], "hotfix for INC-42");
}

#[tokio::test]
async fn sec_7_app_and_person_tokens_keep_to_their_kind() {
    // Arrange
    let app = spawn().await;
    let req = app.create("deployer", ask_for(Some("carol"))).await;

    // Act
    let (s_review, e_review) = app
        .review("deployer", &req, json!({ "decision": "approve" }))
        .await;
    let (s_behalf, e_behalf) = app
        .post(
            "alice",
            "/v1/requests",
            json!({ "resource": "deploy-prod", "reason": "x", "requester": email("carol") }),
        )
        .await;
    let (s_role, e_role) = app.post("auditor", "/v1/requests", ask_for(None)).await;
    let (s_who, e_who) = app
        .post("deployer", "/v1/requests", ask_for(Some("nobody")))
        .await;
    let mut bad_url = ask_for(None);
    bad_url["reference_url"] = json!("javascript:alert(1)");
    let (s_url, e_url) = app.post("deployer", "/v1/requests", bad_url).await;
    let mut big = ask_for(None);
    big["request_data"] = json!({ "blob": "x".repeat(20_000) });
    let (s_big, e_big) = app.post("deployer", "/v1/requests", big).await;
    let mut no_text = ask_for(None);
    no_text.as_object_mut().expect("object").remove("purpose");
    let (s_text, e_text) = app.post("deployer", "/v1/requests", no_text).await;
    let unknown_app = app.engine.create_token("app:nope").await;

    // Assert
    assert_error(s_review, &e_review, StatusCode::FORBIDDEN);
    assert_error(s_behalf, &e_behalf, StatusCode::FORBIDDEN);
    assert_error(s_role, &e_role, StatusCode::FORBIDDEN);
    assert_error(s_who, &e_who, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(s_url, &e_url, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(s_big, &e_big, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(s_text, &e_text, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown_app.is_err());
}

#[tokio::test]
async fn cli_token_create_app_prints_a_token_that_acts_as_the_app() {
    // Arrange: a configuration with an app, on a database of its own.
    let dir = tempfile::tempdir().expect("tmp");
    let db = crate::helpers::database(dir.path()).await;
    let hcl = format!(
        "server {{\n  database = \"{}\"\n}}\nuser \"bob@example.com\" {{}}\n{CONFIG}",
        db.url()
    );
    let file = dir.path().join("countersign.hcl");
    std::fs::write(&file, &hcl).expect("write");
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
        cmd.args(["token", "create", "--config"])
            .arg(&file)
            .args(args);
        cmd.output()
    };

    // Act
    let ok = run(&["--app", "deployer"]).await.expect("run");
    let unknown = run(&["--app", "nope"]).await.expect("run");

    // Assert
    assert!(ok.status.success(), "{ok:?}");
    let token = String::from_utf8(ok.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(token.starts_with("cs_"), "{token}");
    assert_eq!(unknown.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("app:nope is not a configured"));
    let config = config::load_str(file.to_str().expect("utf-8"), &hcl).expect("config");
    let clock = Arc::new(engine::ManualClock::new(domain::Timestamp::from_millis(0)));
    let engine = countersign::open(config, clock).await.expect("open");
    let actor = engine
        .authenticate(&token)
        .await
        .expect("auth")
        .expect("known");
    assert_eq!(actor.id, "app:deployer");
    assert!(actor.app);
    engine.store().close().await;
}
