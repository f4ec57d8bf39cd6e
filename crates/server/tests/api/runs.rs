//! Gated runbooks (issue 17, rule 37) through REST: seed 000's news workflow, shipped in
//! `examples/runbooks`, run by alice with bob as the resources' reviewer. The action programs
//! append each call, with its idempotency key, to `calls.log`, so that the tests can check
//! that every action ran exactly once.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, email, id_of};

/// The seed's workflow, as shipped.
const NEWS_YAML: &str = include_str!("../../../../examples/runbooks/runbooks/news.yaml");

const SOURCES: &str = r#"#!/bin/sh
cat > /dev/null
echo "get_all_sources $COUNTERSIGN_IDEMPOTENCY_KEY" >> calls.log
printf '["BBC News", "CNN", "Al Jazeera"]\n'
"#;

const ARTICLES: &str = r#"#!/bin/sh
source=$(cat)
echo "get_articles $COUNTERSIGN_IDEMPOTENCY_KEY $source" >> calls.log
printf '{"source": %s, "articles": ["Markets calm", "Rain expected"]}\n' "$source"
"#;

/// The shipped configuration's resources and store, with bob as the reviewer, and a webhook
/// rule that tells the runner of `run_ready` and `run_failed` (its deliveries are listed).
const CONFIG: &str = r#"
resource "news-sources" {
  max_duration = "4h"
  part_of      = "get_news_workflow"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
resource "news-articles" {
  max_duration = "4h"
  part_of      = "get_news_workflow"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
action_store "news" {
  action "get_all_sources" {
    resource = "news-sources"
    command  = ["sh", "sources.sh"]
  }
  action "get_articles" {
    resource = "news-articles"
    command  = ["sh", "articles.sh"]
  }
}
runbook "get_news_workflow" {
  file = "news.yaml"
}
channel "hook" {
  type   = "webhook"
  url    = "http://127.0.0.1:9/runs"
  secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
}
notify "runs" {
  events = ["run_ready", "run_failed"]
  to     = ["requester"]
  via    = ["hook"]
}
"#;

async fn spawn() -> TestApp {
    TestApp::spawn_with(
        r#"outbound_allow = ["127.0.0.1"]"#,
        &[
            ("news.yaml", NEWS_YAML),
            ("sources.sh", SOURCES),
            ("articles.sh", ARTICLES),
        ],
        CONFIG,
    )
    .await
}

/// The action calls recorded so far, one line each.
fn calls(app: &TestApp) -> Vec<String> {
    std::fs::read_to_string(app.dir.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn start(app: &TestApp) -> String {
    let (status, run) = app
        .post(
            "alice",
            "/v1/runs",
            json!({ "runbook": "get_news_workflow" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["state"], "running", "{run}");
    id_of(&run).to_owned()
}

async fn run(app: &TestApp, id: &str) -> Value {
    app.tick().await;
    let (status, run) = app.get("alice", &format!("/v1/runs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    run
}

async fn ask(app: &TestApp, id: &str) -> Value {
    let (status, asked) = app
        .post(
            "alice",
            &format!("/v1/runs/{id}/access"),
            json!({ "reason": "morning news briefing", "duration": "1h" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    asked
}

async fn act(app: &TestApp, id: &str, what: &str, body: Value) -> (StatusCode, Value) {
    app.post("alice", &format!("/v1/runs/{id}/{what}"), body)
        .await
}

/// Issue 17's end-to-end test: the run stops in `needs_access` at `get_all_sources`, showing
/// the action, its resource and who can approve it; the access is asked for and approved for
/// the entire workflow (rule 15); the run waits for its runner's choice (rule 37) and
/// resumes; the input offers the sources the first action returned and refuses another;
/// `get_articles` runs with the chosen one without asking again; the message is shown; the
/// run succeeds, and each action ran exactly once, with its run-and-step idempotency key.
#[tokio::test]
async fn rule_37_the_seeds_news_workflow_runs_end_to_end_with_approve_entire_workflow() {
    // Arrange
    let app = spawn().await;
    let id = start(&app).await;

    // Act: the run gets to the first action and stops.
    let stopped = run(&app, &id).await;
    let asked = ask(&app, &id).await;
    let request = asked["request"].clone();
    let (status, _) = app
        .review(
            "bob",
            &request,
            json!({ "decision": "approve", "scope": "workflow", "comment": "go ahead" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ready = run(&app, &id).await;
    let calls_before_resume = calls(&app);
    let (status, resumed) = act(&app, &id, "resume", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    let waiting = run(&app, &id).await;
    let (refused, refusal) = act(&app, &id, "input", json!({ "value": "Fox News" })).await;
    let (status, answered) = act(&app, &id, "input", json!({ "value": "CNN" })).await;
    assert_eq!(status, StatusCode::OK, "{answered}");
    let done = run(&app, &id).await;

    // Assert: stopped at the action, with who can approve it.
    assert_eq!(stopped["state"], "needs_access", "{stopped}");
    let needs = &stopped["needs_access"];
    assert_eq!(needs["step"], "sources");
    assert_eq!(needs["action"], "news.get_all_sources");
    assert_eq!(needs["resource"], "news-sources");
    assert_eq!(needs["approvers"], json!([email("bob")]));
    // The request is an ordinary one, linked to the run and the step.
    assert_eq!(asked["run"]["state"], "waiting_for_approval");
    assert_eq!(request["resource"], "news-sources");
    assert_eq!(request["run"], json!({ "id": id, "step": "sources" }));
    // Approved: ready, and nothing ran before the runner chose to resume (rule 37).
    assert_eq!(ready["state"], "ready_to_resume", "{ready}");
    assert!(calls_before_resume.is_empty(), "{calls_before_resume:?}");
    // The input offers what the first action returned, and takes only that.
    assert_eq!(waiting["state"], "waiting_for_input", "{waiting}");
    assert_eq!(
        waiting["input"]["possible_values"],
        json!(["BBC News", "CNN", "Al Jazeera"])
    );
    assert_error(refused, &refusal, StatusCode::UNPROCESSABLE_ENTITY);
    // Done, without asking again: approve entire workflow covered get_articles too.
    assert_eq!(done["state"], "succeeded", "{done}");
    let outputs: Vec<&Value> = done["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| &s["output"])
        .collect();
    assert_eq!(outputs[1], &json!("CNN"));
    assert_eq!(outputs[2]["source"], "CNN");
    assert_eq!(outputs[3], &json!("workflow executed!"));
    assert_eq!(
        calls(&app),
        [
            format!("get_all_sources {id}/sources"),
            format!("get_articles {id}/articles \"CNN\""),
        ]
    );
    // The runner was told when the run could resume.
    let (_, told) = app
        .get(
            "alice",
            &format!("/v1/requests/{}/notifications", id_of(&request)),
        )
        .await;
    let ready_told = told["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .find(|n| n["event"] == "run_ready")
        .unwrap_or_else(|| panic!("a run_ready notification: {told}"));
    assert_eq!(ready_told["people"], json!([email("alice")]));
}

/// Approved for the first action's resource only: the second action, on another resource of
/// the workflow, stops the run in `needs_access` again (rule 37).
#[tokio::test]
async fn rule_37_approved_for_one_action_only_the_next_stops_again() {
    // Arrange
    let app = spawn().await;
    let id = start(&app).await;
    run(&app, &id).await;
    let asked = ask(&app, &id).await;

    // Act
    app.approve("bob", &asked["request"]).await;
    run(&app, &id).await;
    act(&app, &id, "resume", json!({})).await;
    run(&app, &id).await;
    act(&app, &id, "input", json!({ "value": "BBC News" })).await;
    let stopped = run(&app, &id).await;

    // Assert
    assert_eq!(stopped["state"], "needs_access", "{stopped}");
    assert_eq!(stopped["needs_access"]["step"], "articles");
    assert_eq!(stopped["needs_access"]["resource"], "news-articles");
    assert_eq!(calls(&app), [format!("get_all_sources {id}/sources")]);
}

/// Denied: the run fails with the reviewer's comment, and the runner is told that the
/// workflow could not complete for lack of permissions.
#[tokio::test]
async fn rule_37_a_denied_run_fails_and_its_runner_is_told_why() {
    // Arrange
    let app = spawn().await;
    let id = start(&app).await;
    run(&app, &id).await;
    let asked = ask(&app, &id).await;

    // Act
    let (status, _) = app
        .review(
            "bob",
            &asked["request"],
            json!({ "decision": "deny", "comment": "not during the freeze" }),
        )
        .await;
    let failed = run(&app, &id).await;
    let (resume, resumed) = act(&app, &id, "resume", json!({})).await;

    // Assert
    assert_eq!(status, StatusCode::OK);
    assert_eq!(failed["state"], "failed", "{failed}");
    let error = failed["error"].as_str().expect("an error");
    assert!(
        error.contains("lack of permissions") && error.contains("not during the freeze"),
        "{error}"
    );
    assert_error(resume, &resumed, StatusCode::CONFLICT);
    assert!(calls(&app).is_empty());
    let (_, told) = app
        .get(
            "alice",
            &format!("/v1/requests/{}/notifications", id_of(&asked["request"])),
        )
        .await;
    assert!(
        told["notifications"]
            .as_array()
            .expect("notifications")
            .iter()
            .any(|n| n["event"] == "run_failed" && n["people"] == json!([email("alice")])),
        "{told}"
    );
}

/// Only the runner answers, asks access for, resumes or cancels a run: anyone else gets 404
/// (an admin may read and cancel it); a value outside `possible_values` is 422; an unknown
/// runbook or an input that names no input step is 422.
#[tokio::test]
async fn rule_37_only_the_runner_acts_on_a_run() {
    // Arrange
    let app = spawn().await;
    let id = start(&app).await;
    run(&app, &id).await;

    // Act
    let mut others = vec![];
    for (what, body) in [
        ("input", json!({ "value": "CNN" })),
        ("access", json!({ "reason": "mine now" })),
        ("resume", json!({})),
        ("cancel", json!({})),
    ] {
        others.push(
            app.post("mallory", &format!("/v1/runs/{id}/{what}"), body)
                .await,
        );
    }
    let (read, _) = app.get("mallory", &format!("/v1/runs/{id}")).await;
    let (listed, list) = app.get("mallory", "/v1/runs").await;
    let (admin_reads, _) = app.get("root", &format!("/v1/runs/{id}")).await;
    let (not_waiting, conflict) = act(&app, &id, "input", json!({ "value": "CNN" })).await;
    let (unknown, unknown_body) = app
        .post("alice", "/v1/runs", json!({ "runbook": "nope" }))
        .await;
    let (bad_input, bad_input_body) = app
        .post(
            "alice",
            "/v1/runs",
            json!({ "runbook": "get_news_workflow", "inputs": { "articles": "x" } }),
        )
        .await;
    let (cancelled, by_admin) = app
        .post(
            "root",
            &format!("/v1/runs/{id}/cancel"),
            json!({ "reason": "cleanup" }),
        )
        .await;

    // Assert
    for (status, body) in others {
        assert_error(status, &body, StatusCode::NOT_FOUND);
    }
    assert_eq!(read, StatusCode::NOT_FOUND);
    assert_eq!(listed, StatusCode::OK);
    assert_eq!(list["runs"], json!([]));
    assert_eq!(admin_reads, StatusCode::OK);
    assert_error(not_waiting, &conflict, StatusCode::CONFLICT);
    assert_error(unknown, &unknown_body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(bad_input, &bad_input_body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(cancelled, StatusCode::OK, "{by_admin}");
    assert_eq!(by_admin["state"], "cancelled");
}

/// Two runs stopped at the same action; the first one's access is approved for the entire
/// workflow. The second one's request is then answered by that grant at once (rule 5), and
/// the run is ready to resume rather than waiting for an approval that will never come.
#[tokio::test]
async fn rule_37_a_request_answered_by_an_existing_grant_makes_the_run_ready() {
    // Arrange
    let app = spawn().await;
    let first = start(&app).await;
    let second = start(&app).await;
    run(&app, &first).await;
    run(&app, &second).await;
    let asked = ask(&app, &first).await;
    let (status, _) = app
        .review(
            "bob",
            &asked["request"],
            json!({ "decision": "approve", "scope": "workflow" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Act
    let covered = ask(&app, &second).await;
    let ready = run(&app, &second).await;

    // Assert
    assert_eq!(covered["request"]["state"], "approved", "{covered}");
    assert_eq!(ready["state"], "ready_to_resume", "{ready}");
}
