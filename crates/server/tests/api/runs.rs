//! Gated runbooks (issue 17, rule 37) through REST: seed 000's news workflow, shipped in
//! `examples/runbooks`, run by alice with bob as the resources' reviewer. The action programs
//! append each call, with its idempotency key, to `calls.log`, so that the tests can check
//! that every action ran exactly once.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, email, eventually, id_of, pause};

/// The seed's workflow, as shipped.
pub(crate) const NEWS_YAML: &str = include_str!("../../../../examples/runbooks/runbooks/news.yaml");

pub(crate) const SOURCES: &str = r#"#!/bin/sh
cat > /dev/null
echo "get_all_sources $COUNTERSIGN_IDEMPOTENCY_KEY" >> calls.log
printf '["BBC News", "CNN", "Al Jazeera"]\n'
"#;

pub(crate) const ARTICLES: &str = r#"#!/bin/sh
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
    spawn_with_articles(ARTICLES).await
}

async fn spawn_with_articles(articles: &str) -> TestApp {
    TestApp::spawn_with(
        r#"outbound_allow = ["127.0.0.1"]"#,
        &[
            ("news.yaml", NEWS_YAML),
            ("sources.sh", SOURCES),
            ("articles.sh", articles),
        ],
        CONFIG,
    )
    .await
}

/// The action calls recorded so far, one line each.
pub(crate) fn calls(app: &TestApp) -> Vec<String> {
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

/// Bob approves an access request for the entire workflow (rule 15), which must succeed.
async fn approve_workflow(app: &TestApp, request: &Value) {
    let (status, body) = app
        .review(
            "bob",
            request,
            json!({ "decision": "approve", "scope": "workflow" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
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
/// runbook or an input that names no input step is 422. An admin's cancel withdraws the run's
/// pending access request.
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
    let asked = ask(&app, &id).await;
    let (cancelled, by_admin) = app
        .post(
            "root",
            &format!("/v1/runs/{id}/cancel"),
            json!({ "reason": "cleanup" }),
        )
        .await;
    let withdrawn = app.request("alice", &asked["request"]).await;

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
    // The cancelled run's pending access request is withdrawn with it.
    assert_eq!(withdrawn["state"], "cancelled", "{withdrawn}");
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
    approve_workflow(&app, &asked["request"]).await;

    // Act
    let covered = ask(&app, &second).await;
    let ready = run(&app, &second).await;

    // Assert
    assert_eq!(covered["request"]["state"], "approved", "{covered}");
    assert_eq!(ready["state"], "ready_to_resume", "{ready}");
}

/// Waits for a client process to end, running the test server's due jobs every 100 ms
/// meanwhile (the test server has no worker), for at most 30 s.
async fn ticking(
    app: &TestApp,
    wait: impl std::future::Future<Output = std::io::Result<std::process::Output>>,
) -> std::process::Output {
    tokio::pin!(wait);
    let mut rounds = 0;
    loop {
        tokio::select! {
            out = &mut wait => return out.expect("wait for the client"),
            () = pause(std::time::Duration::from_millis(100)) => {
                rounds += 1;
                assert!(rounds < 300, "the client did not end");
                app.tick().await;
            }
        }
    }
}

/// Runs `countersign <args>` as `user` against the test server, ticking its worker (the test
/// server has none) until the client ends; returns its exit code, stdout and stderr.
async fn cli(app: &TestApp, user: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .env("COUNTERSIGN_URL", &app.api.base)
        .env("COUNTERSIGN_TOKEN", app.api.token(user))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the client");
    let out = ticking(app, child.wait_with_output()).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 17 item 5, the CLI: `runbook list`; `run start --wait` follows the run and ends with
/// 4 when it needs its runner (access to ask for; an input when stdin is not a terminal);
/// `run access`, `run resume --wait`, `run input` and `run show` take the news workflow to
/// its end.
#[tokio::test]
async fn rule_37_the_cli_runs_the_news_workflow() {
    // Arrange
    let app = spawn().await;

    // Act
    let (listed, catalog, _) = cli(&app, "alice", &["runbook", "list"]).await;
    let (stopped, started, err) = cli(
        &app,
        "alice",
        &["run", "start", "get_news_workflow", "--wait", "--json"],
    )
    .await;
    let run: Value =
        serde_json::from_str(&started).unwrap_or_else(|e| panic!("{e}: {started} {err}"));
    let id = id_of(&run).to_owned();
    let (asked, access, _) = cli(
        &app,
        "alice",
        &["run", "access", &id, "--reason", "briefing", "--json"],
    )
    .await;
    let access: Value = serde_json::from_str(&access).expect("JSON");
    approve_workflow(&app, &access["request"]).await;
    app.tick().await;
    let (waiting, resumed, _) =
        cli(&app, "alice", &["run", "resume", &id, "--wait", "--json"]).await;
    let resumed: Value = serde_json::from_str(&resumed).expect("JSON");
    let (answered, _, _) = cli(&app, "alice", &["run", "input", &id, "CNN"]).await;
    app.tick().await;
    let (shown, text, _) = cli(&app, "alice", &["run", "show", &id]).await;
    let (others, _, refusal) = cli(&app, "mallory", &["run", "show", &id]).await;

    // Assert
    assert_eq!(listed, Some(0));
    assert!(catalog.contains("get_news_workflow"), "{catalog}");
    assert_eq!(
        (stopped, run["state"].as_str()),
        (Some(4), Some("needs_access"))
    );
    assert_eq!(asked, Some(0));
    assert_eq!(access["run"]["state"], "waiting_for_approval");
    assert_eq!(waiting, Some(4));
    assert_eq!(resumed["state"], "waiting_for_input", "{resumed}");
    assert_eq!(answered, Some(0));
    assert_eq!(shown, Some(0));
    assert!(
        text.contains("succeeded") && text.contains("workflow executed!"),
        "{text}"
    );
    assert_eq!(others, Some(3));
    assert!(refusal.contains("404"), "{refusal}");
}

/// `get_articles` that hangs on its first attempt (a `sleep` it started, whose pid it writes
/// down, until its process group is killed) and records each start with its attempt number.
const ARTICLES_HANGING_ONCE: &str = r#"#!/bin/sh
source=$(cat)
echo "get_articles $COUNTERSIGN_IDEMPOTENCY_KEY attempt $COUNTERSIGN_ATTEMPT" >> calls.log
if [ "$COUNTERSIGN_ATTEMPT" = 1 ]; then
  sleep 60 &
  echo $! > grandchild.pid
  wait
fi
printf '{"source": %s, "articles": []}\n' "$source"
"#;

/// Issue 17's crash test (rule 37, at least once): a process dies while `get_articles` runs
/// (a second replica's worker runs it and is stopped mid-action; its claim is never renewed),
/// and another one that reads the run from the database after an input wait takes it over:
/// once the claim lapses, the in-flight action runs again with the same idempotency key; the
/// steps completed before it (`get_all_sources`, the input) are not run again; the run
/// succeeds and records two attempts.
#[tokio::test]
async fn rule_37_a_run_survives_a_crash_during_an_action_and_an_input_wait() {
    // Arrange: approved for the whole workflow, the run waits for its input.
    let app = spawn_with_articles(ARTICLES_HANGING_ONCE).await;
    let id = start(&app).await;
    run(&app, &id).await;
    let asked = ask(&app, &id).await;
    approve_workflow(&app, &asked["request"]).await;
    run(&app, &id).await;
    act(&app, &id, "resume", json!({})).await;
    let waiting = run(&app, &id).await;

    // Act: a second process answers the input (the run's state came from the database), and
    // its worker starts get_articles and dies mid-action.
    let doomed = app.replica().await;
    let (status, _) = doomed
        .api
        .post(
            "alice",
            &format!("/v1/runs/{id}/input"),
            json!({ "value": "CNN" }),
        )
        .await;
    let engine = doomed.engine.clone();
    let worker = tokio::spawn(async move { engine.run_due().await });
    // Started, and its own child too.
    eventually("get_articles has started its sleep", async || {
        std::fs::read_to_string(app.dir.path().join("grandchild.pid"))
            .ok()
            .filter(|p| p.ends_with('\n'))
    })
    .await;
    worker.abort();
    let _ = worker.await;
    // Stopping the call ended what the program had started too (its process group).
    let grandchild = std::fs::read_to_string(app.dir.path().join("grandchild.pid"))
        .expect("the hanging attempt wrote its sleep's pid");
    let gone = eventually("the program's own child is gone", async || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", grandchild.trim()));
        // Gone, or a zombie waiting for its reaper.
        let alive = stat.is_ok_and(|s| !s.contains(") Z "));
        (!alive).then_some(true)
    })
    .await;
    let during = run(&app, &id).await;
    // Its claim lapses (4 s without a heartbeat); the surviving process takes the run over.
    app.advance(std::time::Duration::from_secs(5)).await;
    let done = run(&app, &id).await;

    // Assert
    assert_eq!(waiting["state"], "waiting_for_input", "{waiting}");
    assert_eq!(status, StatusCode::OK);
    assert!(gone, "the process group of the stopped call was killed");
    assert_eq!(
        during["state"], "running",
        "the claim still holds: {during}"
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        calls(&app),
        [
            format!("get_all_sources {id}/sources"),
            format!("get_articles {id}/articles attempt 1"),
            format!("get_articles {id}/articles attempt 2"),
        ]
    );
    assert_eq!(done["steps"][2]["attempts"], 2, "{done}");
}

/// Issue 17 item 5, the portal: the runbook catalog starts a run; the run's page shows the
/// action it stopped at, its resource and who can approve it, and asks for access with a
/// reason; once approved it offers Resume; the input is a select of the values offered; the
/// timeline shows each step's output and the final message. Someone else gets 404.
#[tokio::test]
async fn rule_37_the_portal_runs_the_news_workflow() {
    use crate::portal::Web;
    // Arrange
    let app = spawn().await;
    let mut web = Web::sign_in(&app, "alice").await;

    // Act
    let catalog = web.get("/runbooks").await;
    let started = web
        .submit("/runbooks", "/runbooks/get_news_workflow/start", &[])
        .await;
    let page = started.location.clone().unwrap_or_default();
    let id = page.trim_start_matches("/runs/").to_owned();
    app.tick().await;
    let stopped = web.get(&page).await;
    let asked = web
        .submit(
            &page,
            &format!("/runs/{id}/access"),
            &[("reason", "morning briefing"), ("duration", "1h")],
        )
        .await;
    let (_, run) = app.get("alice", &format!("/v1/runs/{id}")).await;
    let request = run["needs_access"]["request_id"].clone();
    approve_workflow(&app, &request).await;
    app.tick().await;
    let ready = web.get(&page).await;
    web.submit(&page, &format!("/runs/{id}/resume"), &[]).await;
    app.tick().await;
    let asking = web.get(&page).await;
    web.submit(
        &page,
        &format!("/runs/{id}/input"),
        &[("value", "Al Jazeera")],
    )
    .await;
    app.tick().await;
    let done = web.get(&page).await;
    let mut other = Web::sign_in(&app, "mallory").await;
    let hidden = other.get(&page).await;

    // Assert
    assert!(
        catalog.html.contains("get_news_workflow"),
        "{}",
        catalog.html
    );
    assert!(page.starts_with("/runs/"), "{page}");
    assert!(stopped.html.contains("Access needed"), "{}", stopped.html);
    assert!(stopped.html.contains("news.get_all_sources"));
    assert!(stopped.html.contains(&email("bob")));
    assert_eq!(asked.status, StatusCode::SEE_OTHER, "{}", asked.html);
    assert!(ready.html.contains("resume-form"), "{}", ready.html);
    assert!(
        asking.html.contains("<option value=\"Al Jazeera\">"),
        "{}",
        asking.html
    );
    assert!(done.html.contains("succeeded"), "{}", done.html);
    assert!(done.html.contains("workflow executed!"));
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(
        calls(&app),
        [
            format!("get_all_sources {id}/sources"),
            format!("get_articles {id}/articles \"Al Jazeera\""),
        ]
    );
}

/// A grant that ends before the run used it (revoked by an admin here) takes back the run's
/// readiness: the run needs access again (rule 37).
#[tokio::test]
async fn rule_37_a_grant_revoked_before_the_run_resumes_takes_the_readiness_back() {
    // Arrange
    let app = spawn().await;
    let id = start(&app).await;
    run(&app, &id).await;
    let asked = ask(&app, &id).await;
    let approved = app.approve("bob", &asked["request"]).await;
    let ready = run(&app, &id).await;
    let grant = approved["grant_id"].clone();

    // Act
    let (status, _) = app
        .post(
            "root",
            &format!("/v1/grants/{}/revoke", id_of(&grant)),
            json!({ "reason": "wrong team" }),
        )
        .await;
    let lapsed = run(&app, &id).await;

    // Assert
    assert_eq!(ready["state"], "ready_to_resume", "{ready}");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lapsed["state"], "needs_access", "{lapsed}");
    assert!(calls(&app).is_empty());
}

/// Issue 17 item 5: `run start --wait` on a terminal asks the input step there, the values
/// offered numbered; typing `2` answers with the second (CNN), and the run goes on to its end
/// (exit 0). The terminal is `script`'s pseudo-terminal (util-linux), fed what a person types.
#[tokio::test]
async fn rule_37_the_cli_asks_an_input_on_a_terminal() {
    use tokio::io::AsyncWriteExt;
    // Arrange: alice holds the whole workflow's access, from an earlier run's request.
    let app = spawn().await;
    let first = start(&app).await;
    run(&app, &first).await;
    let asked = ask(&app, &first).await;
    approve_workflow(&app, &asked["request"]).await;
    app.tick().await;
    let command = format!(
        "'{}' run start get_news_workflow --wait",
        env!("CARGO_BIN_EXE_countersign")
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("COUNTERSIGN_URL", &app.api.base)
        .env("COUNTERSIGN_TOKEN", app.api.token("alice"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start script");

    // Act: type the answer ahead (the terminal keeps it until the prompt reads it).
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"2\n").await.expect("type");
    let out = ticking(&app, child.wait_with_output()).await;
    drop(stdin);
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    let (_, list) = app.get("alice", "/v1/runs?state=succeeded").await;

    // Assert
    assert_eq!(out.status.code(), Some(0), "{screen}");
    assert!(
        screen.contains("What news channel do you wanna read?") && screen.contains("2. CNN"),
        "{screen}"
    );
    let done = &list["runs"][0];
    assert_eq!(done["steps"][1]["output"], "CNN", "{list}");
}
