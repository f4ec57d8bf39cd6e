//! Action approvals (issue 18) through REST: a resource of `kind = "action"`, a request that
//! carries one exact action (a tool and its arguments) and its digest, reviewers who see it,
//! and the single claim by its creator within `claim_within`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, audit_kinds, email, id_of};

const CONFIG: &str = r#"
app "agent"   { roles = ["request_approval"] }
app "other"   { roles = ["request_approval"] }

resource "deploy-action" {
  kind         = "action"
  description  = "One deploy an agent wants to run"
  claim_within = "15m"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com", "grace@example.com"] } } ] }
}

resource "shell" {
  kind     = "action"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}

resource "db-read" {
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;

async fn spawn() -> TestApp {
    let mut app = TestApp::spawn(CONFIG).await;
    app.app_tokens(&["agent", "other"]).await;
    app
}

fn deploy(arguments: Value) -> Value {
    json!({
        "resource": "deploy-action",
        "requester": email("grace"),
        "reason": "ship the hotfix",
        "action": { "tool": "deploy", "arguments": arguments },
    })
}

async fn claim(app: &TestApp, who: &str, id: &Value) -> (StatusCode, Value) {
    app.post(who, &format!("/v1/requests/{}/claim", id_of(id)), json!({}))
        .await
}

/// Issue 18 item 1: the action is kept exactly as asked, with the SHA-256 of its canonical
/// JSON; the reviewer sees both; once approved, the creator claims it once (the same
/// arguments back, `action_claimed` in the audit log) and a second claim is refused. No
/// grant is issued, and the approval does not cover the next action (rule 5 does not apply).
#[tokio::test]
async fn rule_38_an_approved_action_is_claimed_once_by_its_creator() {
    // Arrange
    let app = spawn().await;
    let arguments = json!({ "service": "api", "version": "2.3.1", "canary": { "percent": 5 } });

    // Act
    let req = app.create("agent", deploy(arguments.clone())).await;
    let seen = app.request("bob", &req).await;
    let approved = app.approve("bob", &req).await;
    let (first, claimed) = claim(&app, "agent", &req).await;
    let (second, again) = claim(&app, "agent", &req).await;
    let next = app
        .create("agent", deploy(json!({ "service": "web" })))
        .await;

    // Assert
    let action = &seen["action"];
    assert_eq!(action["tool"], "deploy");
    assert_eq!(action["arguments"], arguments);
    assert_eq!(action["claim_within"], "15m");
    // The digest of {"arguments": …, "tool": "deploy"} with keys sorted, no spaces.
    let canonical = r#"{"arguments":{"canary":{"percent":5},"service":"api","version":"2.3.1"},"tool":"deploy"}"#;
    assert_eq!(action["digest"], sha256_hex(canonical));
    assert_eq!(approved["state"], "approved");
    assert!(approved["action"]["claim_until"].is_string(), "{approved}");
    assert!(approved.get("grant_id").is_none(), "no grant: {approved}");
    assert_eq!(first, StatusCode::OK, "{claimed}");
    assert_eq!(claimed["arguments"], arguments);
    assert_eq!(claimed["tool"], "deploy");
    assert_eq!(claimed["digest"], action["digest"]);
    assert_error(second, &again, StatusCode::CONFLICT);
    assert!(
        again["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("claimed already")),
        "{again}"
    );
    assert_eq!(next["state"], "pending", "rule 5 does not apply: {next}");
    let kinds = audit_kinds(&app, &req).await;
    assert!(kinds.contains(&"action_claimed".to_owned()), "{kinds:?}");
    assert!(!kinds.contains(&"grant_issued".to_owned()), "{kinds:?}");
    let shown = app.request("bob", &req).await;
    assert!(shown["action"]["claimed_at"].is_string(), "{shown}");
}

/// Issue 18 item 1: a denied action, a pending one, and one whose `claim_within` has passed
/// cannot be claimed (409); nor can a cancelled one.
#[tokio::test]
async fn rule_38_denied_pending_cancelled_and_late_actions_cannot_be_claimed() {
    // Arrange
    let app = spawn().await;
    let denied = app.create("agent", deploy(json!({ "n": 1 }))).await;
    let pending = app.create("agent", deploy(json!({ "n": 2 }))).await;
    let late = app.create("agent", deploy(json!({ "n": 3 }))).await;
    let cancelled = app.create("agent", deploy(json!({ "n": 4 }))).await;

    // Act
    let (status, _) = app
        .review(
            "bob",
            &denied,
            json!({ "decision": "deny", "comment": "not today" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.approve("bob", &late).await;
    let (cancel, body) = app
        .post(
            "agent",
            &format!("/v1/requests/{}/cancel", id_of(&cancelled)),
            json!({ "reason": "not needed" }),
        )
        .await;
    assert_eq!(cancel, StatusCode::OK, "{body}");
    app.advance(Duration::from_secs(15 * 60 + 1)).await;
    let answers = [
        claim(&app, "agent", &denied).await,
        claim(&app, "agent", &pending).await,
        claim(&app, "agent", &late).await,
        claim(&app, "agent", &cancelled).await,
    ];

    // Assert
    for (status, body) in &answers {
        assert_error(*status, body, StatusCode::CONFLICT);
    }
    assert!(
        answers[2].1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("could be claimed until")),
        "{}",
        answers[2].1
    );
}

/// Issue 18 item 3 and rule 9 through an app: the person an app names as requester cannot
/// approve the action; another app cannot see it (404); a reviewer who can see it cannot
/// claim it (403); an app cannot review it.
#[tokio::test]
async fn rule_39_only_the_creator_claims_and_the_named_requester_cannot_approve() {
    // Arrange
    let app = spawn().await;
    let req = app.create("agent", deploy(json!({}))).await;

    // Act
    let (own, own_body) = app
        .review("grace", &req, json!({ "decision": "approve" }))
        .await;
    let (by_app, by_app_body) = app
        .review("agent", &req, json!({ "decision": "approve" }))
        .await;
    app.approve("bob", &req).await;
    let (other, other_body) = claim(&app, "other", &req).await;
    let (reviewer, reviewer_body) = claim(&app, "bob", &req).await;
    let (requester, requester_body) = claim(&app, "grace", &req).await;
    let (creator, _) = claim(&app, "agent", &req).await;

    // Assert
    assert_error(own, &own_body, StatusCode::FORBIDDEN);
    assert!(
        by_app == StatusCode::FORBIDDEN || by_app == StatusCode::NOT_FOUND,
        "{by_app} {by_app_body}"
    );
    assert_error(other, &other_body, StatusCode::NOT_FOUND);
    assert_error(reviewer, &reviewer_body, StatusCode::FORBIDDEN);
    assert_error(requester, &requester_body, StatusCode::FORBIDDEN);
    assert_eq!(creator, StatusCode::OK);
}

/// Issue 18's bad input: an oversized or too deeply nested `arguments`, an unknown field of
/// `action`, an action on a resource that grants access, a missing action on an action
/// resource, a claim of a request without an action; each a clear error, nothing created.
/// The action cannot be changed afterwards: PATCH refuses `action`.
#[tokio::test]
async fn issue_18_bad_actions_are_refused_and_the_action_cannot_be_changed() {
    // Arrange
    let app = spawn().await;
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let big = json!({ "blob": "x".repeat(17 * 1024) });
    let unknown = json!({
        "resource": "deploy-action",
        "requester": email("grace"),
        "reason": "r",
        "action": { "tool": "deploy", "arguments": {}, "approved": true },
    });
    let on_access = json!({
        "resource": "db-read", "reason": "r",
        "action": { "tool": "deploy", "arguments": {} },
    });
    let missing = json!({ "resource": "shell", "reason": "r" });
    let access = app
        .create("carol", json!({ "resource": "db-read", "reason": "r" }))
        .await;
    let count = async || {
        let (_, list) = app.get("root", "/v1/requests?limit=100").await;
        list["requests"].as_array().map_or(0, Vec::len)
    };
    let before = count().await;

    // Act
    let mut refused = vec![];
    for body in [deploy(deep), deploy(big), unknown, on_access, missing] {
        refused.push(app.post("agent", "/v1/requests", body).await);
    }
    let made = app.create("agent", deploy(json!({ "n": 1 }))).await;
    let patched = app
        .api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/requests/{}", id_of(&made)),
            Some(app.api.token("agent")),
            Some((
                "application/json",
                json!({ "action": { "tool": "rm", "arguments": {} } })
                    .to_string()
                    .into_bytes(),
            )),
        )
        .await;
    let (no_action, no_action_body) = claim(&app, "carol", &access).await;

    // Assert
    let statuses: Vec<StatusCode> = refused.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::BAD_REQUEST,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::UNPROCESSABLE_ENTITY,
        ],
        "{refused:?}"
    );
    for (status, body) in &refused {
        assert_error(*status, body, *status);
    }
    let message = |i: usize| {
        refused[i].1["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(message(0).contains("nested"), "{}", message(0));
    assert!(message(1).contains("bytes"), "{}", message(1));
    assert!(message(3).contains("grants access"), "{}", message(3));
    assert!(message(4).contains("needs the action"), "{}", message(4));
    assert_eq!(count().await, before + 1, "only the good request was made");
    assert!(patched.0.is_client_error(), "{:?}", patched);
    assert_eq!(
        app.request("agent", &made).await["action"]["tool"],
        "deploy"
    );
    assert_error(no_action, &no_action_body, StatusCode::UNPROCESSABLE_ENTITY);
}

/// The digest of issue 18 as a client computes it: SHA-256, hex.
fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Issue 18 item 1 ("reviewers see the exact action on every surface"): the portal's
/// request page and the CLI's `request show` print the tool, the arguments and the digest,
/// from the one presenter; a person can ask for an action from the CLI
/// (`--action`/`--arguments`) and claim nothing but their own.
#[tokio::test]
async fn issue_18_the_action_and_its_digest_are_shown_in_the_portal_and_the_cli() {
    // Arrange
    let app = spawn().await;
    let cli = async |user: &str, args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(args)
            .env("COUNTERSIGN_URL", &app.api.base)
            .env("COUNTERSIGN_TOKEN", app.api.token(user))
            .env("NO_COLOR", "1")
            .output()
            .await
            .expect("run the client")
    };

    // Act
    let created = cli(
        "carol",
        &[
            "request",
            "create",
            "shell",
            "--reason",
            "rotate logs",
            "--action",
            "run",
            "--arguments",
            r#"{"cmd": "logrotate <conf>", "dry_run": false}"#,
            "--json",
        ],
    )
    .await;
    let req: Value = serde_json::from_slice(&created.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&created.stderr)));
    let digest = req["action"]["digest"].as_str().expect("digest").to_owned();
    let shown = cli("bob", &["request", "show", id_of(&req)]).await;
    let mut web = crate::portal::Web::sign_in(&app, "bob").await;
    let page = web.get(&format!("/requests/{}", id_of(&req))).await;
    let bad = cli(
        "carol",
        &[
            "request",
            "create",
            "shell",
            "--reason",
            "x",
            "--action",
            "run",
            "--arguments",
            "{not json",
        ],
    )
    .await;

    // Assert
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert_eq!(req["action"]["arguments"]["cmd"], "logrotate <conf>");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("action    run"), "{text}");
    assert!(text.contains(r#""cmd": "logrotate <conf>""#), "{text}");
    assert!(text.contains(&format!("digest    {digest}")), "{text}");
    assert!(text.contains("claim     within 15m of approval"), "{text}");
    assert!(
        page.html
            .contains(&format!("id=\"action-digest\">{digest}<")),
        "{}",
        page.html
    );
    assert!(
        page.html.contains("id=\"action-tool\">run<"),
        "{}",
        page.html
    );
    assert!(
        page.html.contains("logrotate &#60;conf&#62;"),
        "escaped: {}",
        page.html
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--arguments is not JSON"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// Issue 18 item 4 (and rule 2's `on_request` on `input.request.action`): the shipped agent
/// gate policy, `examples/agents/policies`, approves a read-only tool at once, denies a
/// delete, and sends anything else to people; the approved one is claimed at once.
#[tokio::test]
async fn issue_18_the_shipped_agent_policy_approves_harmless_actions_and_routes_the_rest() {
    // Arrange
    let bundle =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents/policies");
    let config = format!(
        r#"
app "coding-agent" {{ roles = ["request_approval"] }}
resource "agent-actions" {{
  kind         = "action"
  claim_within = "10m"
  on_request   = {{ bundle = "{}", query = "data.agents.gate" }}
  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["bob@example.com"] }} }} ] }}
}}
"#,
        bundle.display()
    );
    let mut app = TestApp::spawn(&config).await;
    app.app_tokens(&["coding-agent"]).await;
    let ask = |tool: &str| {
        json!({ "resource": "agent-actions", "reason": "the agent's next step",
                "action": { "tool": tool, "arguments": { "path": "src/main.rs" } } })
    };

    // Act
    let read = app.create("coding-agent", ask("read_file")).await;
    let delete = app.create("coding-agent", ask("delete_branch")).await;
    let deploy = app.create("coding-agent", ask("deploy")).await;
    let (claimed, body) = claim(&app, "coding-agent", &read).await;

    // Assert
    assert_eq!(read["state"], "approved", "{read}");
    assert_eq!(read["outcome"]["comment"], "read_file is read-only");
    assert_eq!(delete["state"], "denied", "{delete}");
    assert_eq!(deploy["state"], "pending", "{deploy}");
    assert_eq!(claimed, StatusCode::OK, "{body}");
    assert_eq!(body["arguments"]["path"], "src/main.rs");
}

/// Issue 18 items 2 and 3, with the official MCP Python SDK as the agent's client
/// (`tests/python/mcp_agent.py`): initialize; the six tools, none of which can approve, deny,
/// assign or revoke; `request_action_approval`; a human approves through the API while
/// `get_request` waits, and it returns approved; `claim_approval` returns the exact arguments
/// once; a denied action cannot be claimed; `cancel_request`; an unknown argument, an
/// unknown tool, nested or oversized arguments, a malformed message and a missing token get
/// clear errors; another app can neither read nor claim; and, once the server's clock passed
/// `claim_within`, a claim fails. Nothing but the four good requests was created.
#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (bash .ci/python.sh) for the MCP Python SDK"]
async fn rule_38_an_agent_asks_waits_and_claims_through_the_official_mcp_client() {
    // Arrange
    let app = spawn().await;
    let base = app.api.base.clone();

    // Act
    let out = crate::helpers::run_python(
        "mcp_agent.py",
        &[
            "main",
            &base,
            app.api.token("agent"),
            app.api.token("bob"),
            app.api.token("other"),
        ],
    )
    .await;
    let ids: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    app.advance(Duration::from_secs(15 * 60 + 1)).await;
    let late = crate::helpers::run_python(
        "mcp_agent.py",
        &[
            "late",
            &base,
            app.api.token("agent"),
            ids["late"].as_str().expect("late id"),
        ],
    )
    .await;

    // Assert
    assert!(late.contains("late_refused"), "{late}");
    let (_, list) = app.get("root", "/v1/requests?limit=100").await;
    let made: Vec<&Value> = list["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter(|r| r["created_by"] == "app:agent" || r["requester"] == "app:agent")
        .collect();
    assert_eq!(made.len(), 4, "only the four good requests: {made:?}");
    let kinds = audit_kinds(&app, &ids["first"]).await;
    assert!(kinds.contains(&"action_claimed".to_owned()), "{kinds:?}");
}

/// Issue 18 item 4: the shipped permission-prompt tool for Claude Code
/// (`examples/agents/permission_prompt.py`, on `examples/agents/gate.py`), run as Claude Code
/// runs it (an MCP server over stdio, called with the official MCP Python SDK by
/// `tests/python/check_permission_prompt.py`): a call a person approves is allowed with exactly
/// the approved input; one a person denies is denied with the reason.
#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (bash .ci/python.sh) for the MCP Python SDK"]
async fn issue_18_the_shipped_permission_prompt_tool_allows_only_what_a_person_approved() {
    // Arrange
    let app = spawn().await;
    let python = std::env::var("COUNTERSIGN_TEST_PYTHON").expect("COUNTERSIGN_TEST_PYTHON");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python/check_permission_prompt.py");
    let child = tokio::process::Command::new(python)
        .arg(script)
        .args([app.api.base.as_str(), app.api.token("agent")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the checker");

    // Act: decide each call as it arrives, as a person would.
    for (command, decision) in [("make deploy", "approve"), ("rm -rf /", "deny")] {
        let id = crate::helpers::eventually("the agent's call is asked", async || {
            let (_, list) = app.get("bob", "/v1/requests?state=pending").await;
            list["requests"].as_array()?.iter().find_map(|r| {
                (r["action"]["arguments"]["command"] == command).then(|| r["id"].clone())
            })
        })
        .await;
        let (status, body) = app
            .review(
                "bob",
                &id,
                json!({ "decision": decision, "comment": "checked" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the checker ends")
        .expect("the checker ran");

    // Assert
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 18 item 2 ("where the client supports MCP tasks, the request can also be followed as
/// a task"), with the official Rust SDK's client (rmcp) declaring the Tasks extension: a
/// pending action request comes back as a task, `tasks/get` says it is working until a
/// person approves it and then completed with the outcome, `tasks/cancel` withdraws a
/// pending one, and another app's request is no task of the caller's.
#[tokio::test]
async fn issue_18_a_client_with_tasks_follows_an_action_request_as_a_task() {
    use rmcp::model::{
        CallToolRequestParams, CallToolResponse, CancelTaskParams, GetTaskParams, TaskPayload,
        TaskStatus,
    };

    // Arrange
    let app = spawn().await;
    let agent = mcp_client(&app, "agent", true).await;
    let other = mcp_client(&app, "other", true).await;
    let ask = |tool: &str| {
        let mut p = CallToolRequestParams::new("request_action_approval");
        p.arguments = json!({ "resource": "deploy-action", "tool": tool,
                              "arguments": { "service": "api" }, "reason": "hotfix" })
        .as_object()
        .cloned();
        p
    };

    // Act
    let first = agent
        .peer()
        .call_tool_once(ask("deploy"))
        .await
        .expect("call");
    let CallToolResponse::Task(first) = first else {
        panic!("not a task: {first:?}")
    };
    let id = first.task.task_id.clone();
    let working = agent
        .peer()
        .get_task(GetTaskParams::new(&id))
        .await
        .expect("tasks/get");
    app.approve("bob", &json!(id)).await;
    let completed = agent
        .peer()
        .get_task(GetTaskParams::new(&id))
        .await
        .expect("tasks/get");
    let second = agent
        .peer()
        .call_tool_once(ask("rollback"))
        .await
        .expect("call");
    let CallToolResponse::Task(second) = second else {
        panic!("not a task: {second:?}")
    };
    agent
        .peer()
        .cancel_task(CancelTaskParams::new(&second.task.task_id))
        .await
        .expect("tasks/cancel");
    let withdrawn = agent
        .peer()
        .get_task(GetTaskParams::new(&second.task.task_id))
        .await
        .expect("tasks/get");
    let foreign = other.peer().get_task(GetTaskParams::new(&id)).await;

    // Assert
    assert_eq!(first.task.status, TaskStatus::Working);
    assert_eq!(working.task.status(), TaskStatus::Working);
    assert_eq!(completed.task.status(), TaskStatus::Completed);
    let TaskPayload::Completed { result } = &completed.task.payload else {
        panic!("no result: {completed:?}")
    };
    assert_eq!(
        result["structuredContent"]["state"], "approved",
        "{result:?}"
    );
    assert_eq!(result["structuredContent"]["decided_by"], email("bob"));
    let cancelled = app.request("agent", &json!(second.task.task_id)).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(withdrawn.task.status(), TaskStatus::Cancelled);
    assert!(foreign.is_err(), "{foreign:?}");
    agent.cancel().await.expect("close");
    other.cancel().await.expect("close");
}

/// Issue 18 item 3, through `/mcp` with the official Rust SDK's client: a reviewer's token
/// reads, claims and cancels nothing it did not create (each "not found", though `/v1` shows
/// the reviewer the request), and no tool decides whatever the token's roles: an admin's
/// token calling `approve_request` gets the protocol's invalid-params error.
#[tokio::test]
async fn rule_39_through_mcp_a_caller_reaches_only_what_it_created() {
    use rmcp::model::CallToolRequestParams;

    // Arrange
    let app = spawn().await;
    let req = app.create("agent", deploy(json!({ "n": 1 }))).await;
    let id = id_of(&req).to_owned();
    let call = |name: &'static str, args: Value| {
        let mut p = CallToolRequestParams::new(name);
        p.arguments = args.as_object().cloned();
        p
    };
    let bob = mcp_client(&app, "bob", false).await;
    let root = mcp_client(&app, "root", false).await;

    // Act
    let mut refused = vec![];
    for (tool, args) in [
        ("get_request", json!({ "id": id })),
        ("claim_approval", json!({ "id": id })),
        ("cancel_request", json!({ "id": id })),
    ] {
        let r = bob.peer().call_tool(call(tool, args)).await.expect("call");
        refused.push((tool, r));
    }
    let decide = root
        .peer()
        .call_tool(call("approve_request", json!({ "id": id })))
        .await;

    // Assert
    for (tool, r) in &refused {
        assert_eq!(r.is_error, Some(true), "{tool}: {r:?}");
        let v = r.structured_content.clone().unwrap_or_default();
        assert_eq!(v["error"]["status"], 404, "{tool}: {v}");
    }
    assert!(decide.is_err(), "{decide:?}");
    let after = app.request("bob", &req).await;
    assert_eq!(after["state"], "pending", "nothing changed: {after}");
    bob.cancel().await.expect("close");
    root.cancel().await.expect("close");
}

/// A client of `/mcp` from the official Rust SDK (rmcp), as `user`'s token, on protocol
/// version 2026-07-28, whose clients send their capabilities with every request (the server
/// keeps no session); with `tasks`, declaring the MCP Tasks extension.
async fn mcp_client(
    app: &TestApp,
    user: &str,
    tasks: bool,
) -> rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig> {
    use rmcp::ClientServiceExt;
    use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
    use rmcp::service::ClientLifecycleMode;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.api.base))
            .auth_header(app.api.token(user)),
    );
    let capabilities = if tasks {
        ClientCapabilities::builder().enable_tasks().build()
    } else {
        ClientCapabilities::default()
    };
    ClientConfig::new(capabilities, Implementation::new("countersign-test", "1"))
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("connect to /mcp")
}
