//! Policies through the real server (rules 2, 6, 20, 28–31): the shipped example bundle
//! (`examples/policies`, Sym's fast track and Abbey's on-call skip) behind the API, `explain`
//! and `simulate` with their authorisation, and the `countersign` binary's `check`,
//! `policy eval|test`, `explain` and `simulate`.

use std::path::PathBuf;
use std::process::Output;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{TestApp, assert_error, id_of};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// The resource of `examples/sym-fast-track.hcl`, on the shipped bundle.
fn sym_resource() -> String {
    let bundle = examples().join("policies");
    let b = bundle.display();
    format!(
        r#"
resource "prod-aws" {{
  max_duration = "24h"
  durations    = ["15m", "1h", "4h", "8h", "24h"]
  field "urgency" {{
    type           = "enum"
    allowed_values = ["Normal", "Emergency"]
    required       = true
  }}
  on_request = {{ bundle = "{b}", query = "data.countersign.fast_track" }}
  policies = [
    {{ bundle = "{b}", query = "data.countersign.deny" }},
    {{ bundle = "{b}", query = "data.countersign.warn", enforcement = "warn" }},
  ]
  workflow = {{
    steps = [
      {{
        reviewers = {{ one_of = ["alice@example.com", "bob@example.com"] }}
        skip_if   = [{{ bundle = "{b}", query = "data.countersign.oncall" }}]
      }},
      {{
        reviewers = {{
          one_of = ["dan@example.com"]
          from   = [{{ bundle = "{b}", query = "data.countersign.oncall_leads" }}]
        }}
      }},
    ]
  }}
}}
"#
    )
}

fn ask(urgency: &str, duration: &str) -> Value {
    json!({
        "resource": "prod-aws",
        "reason": "incident 4711",
        "duration": duration,
        "fields": { "urgency": urgency },
    })
}

#[tokio::test]
async fn rule_2_seed_002_the_shipped_fast_track_approves_an_emergency_at_once() {
    // Arrange
    let app = TestApp::spawn(&sym_resource()).await;

    // Act
    let req = app.create("bob", ask("Emergency", "1h")).await;

    // Assert: decided by the policy, with its reason, and the grant issued.
    assert_eq!(req["state"], "approved", "{req}");
    assert_eq!(req["outcome"]["policy"], "data.countersign.fast_track");
    assert_eq!(
        req["outcome"]["comment"],
        "bob@example.com was fast tracked to prod-aws"
    );
    assert!(req["outcome"].get("actioned_by").is_none(), "{req}");
    assert!(req["grant_id"].is_string(), "{req}");
}

#[tokio::test]
async fn rule_6_30_on_call_requester_skips_step_1_and_on_call_leads_review_step_2() {
    // Arrange: carol is on call and grace an on-call lead (examples/policies/oncall/data.json).
    let app = TestApp::spawn(&sym_resource()).await;

    // Act
    let req = app.create("carol", ask("Normal", "8h")).await;

    // Assert
    assert_eq!(req["state"], "pending");
    assert_eq!(req["steps"][0]["status"], "skipped");
    assert_eq!(
        req["steps"][0]["skipped_because"],
        "carol@example.com is on call"
    );
    assert_eq!(req["current_step"], 2);
    assert_eq!(
        req["steps"][1]["eligible"],
        json!(["dan@example.com", "grace@example.com"])
    );
    assert_eq!(
        req["warnings"],
        json!(["asks for 8h, longer than the usual 4h"])
    );
    // The lead from data approves.
    let done = app.approve("grace", &req).await;
    assert_eq!(done["state"], "approved");
}

#[tokio::test]
async fn rule_31_explain_shows_every_evaluation_to_those_who_may_see_the_request() {
    // Arrange
    let app = TestApp::spawn(&sym_resource()).await;
    let req = app.create("carol", ask("Normal", "1h")).await;
    let path = format!("/v1/requests/{}/explain", id_of(&req));

    // Act
    let (status, e) = app.get("carol", &path).await;
    let (hidden, err) = app.get("mallory", &path).await;
    let (missing, err2) = app.get("root", "/v1/requests/nope/explain").await;

    // Assert
    assert_eq!(status, StatusCode::OK, "{e}");
    assert_eq!(
        e["lines"],
        json!([
            "deny policy data.countersign.deny: no messages",
            "warn policy data.countersign.warn: no messages",
            "on_request data.countersign.fast_track: continue to the reviewers",
            "step 1: skip_if data.countersign.oncall: skip: carol@example.com is on call",
            "step 1: skipped (carol@example.com is on call)",
            "step 2: reviewers from data.countersign.oncall_leads: reviewers grace@example.com",
            "step 2: routed to one_of dan@example.com, grace@example.com",
            "pending: waiting for reviewers",
        ])
    );
    let skip = &e["steps"][0]["evaluations"][0];
    assert_eq!(skip["purpose"], "skip_if");
    assert_eq!(skip["result"]["skip"], true);
    assert!(skip["duration_us"].is_u64());
    assert_error(hidden, &err, StatusCode::NOT_FOUND);
    assert_error(missing, &err2, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rule_31_simulate_creates_nothing_and_only_admins_simulate_for_others() {
    // Arrange
    let app = TestApp::spawn(&sym_resource()).await;
    let body = |requester: Option<&str>| {
        let mut b = json!({ "resource": "prod-aws", "fields": { "urgency": "Normal" } });
        if let Some(r) = requester {
            b["requester"] = json!(r);
        }
        b
    };

    // Act
    let (s1, own) = app.post("bob", "/v1/simulate", body(None)).await;
    let (s2, for_carol) = app
        .post("root", "/v1/simulate", body(Some("carol@example.com")))
        .await;
    let (s3, refused) = app
        .post("bob", "/v1/simulate", body(Some("carol@example.com")))
        .await;
    let (s4, unknown) = app
        .post("bob", "/v1/simulate", json!({ "resource": "nope" }))
        .await;
    let (s5, malformed) = app
        .post("bob", "/v1/simulate", json!({ "resource": 3 }))
        .await;
    let (_, list) = app.get("root", "/v1/requests").await;

    // Assert
    assert_eq!(s1, StatusCode::OK, "{own}");
    assert_eq!(own["outcome"], "pending");
    assert_eq!(own["steps"][0]["status"], "active");
    assert_eq!(own["steps"][0]["reviewers"], json!(["alice@example.com"]));
    assert_eq!(own["steps"][1]["status"], "would_wait");
    assert_eq!(s2, StatusCode::OK, "{for_carol}");
    assert_eq!(for_carol["steps"][0]["status"], "skipped");
    assert_error(s3, &refused, StatusCode::FORBIDDEN);
    assert_error(s4, &unknown, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(s5, &malformed, StatusCode::BAD_REQUEST);
    assert_eq!(list["requests"], json!([]), "a simulation stores nothing");
}

/// Runs the binary from the repository root, where `examples/` is.
async fn countersign(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_countersign"));
    cmd.args(args).current_dir(examples().join(".."));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run countersign")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn cli_policy_test_runs_the_shipped_tests_and_fails_on_a_failing_one() {
    // Act
    let ok = countersign(&["policy", "test", "examples/policies"], &[]).await;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("p.rego"),
        "package p\nallow if input.user == \"root\"\ntest_bob if allow with input as {\"user\": \"bob\"}\n",
    )
    .expect("write");
    let failing = countersign(&["policy", "test", &dir.path().display().to_string()], &[]).await;

    // Assert
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).contains("PASS: 6/6"),
        "{}",
        text(&ok.stdout)
    );
    assert_eq!(failing.status.code(), Some(1));
    let out = text(&failing.stdout);
    assert!(out.contains("data.p.test_bob: FAIL (undefined)"), "{out}");
    assert!(out.contains("FAIL: 1/1"), "{out}");
}

#[tokio::test]
async fn cli_policy_eval_prints_the_result_and_locates_bad_input() {
    // Arrange
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("in.json");
    std::fs::write(
        &input,
        r#"{"request": {"fields": {"urgency": "Emergency"}, "requester": {"email": "a@example.com"}, "resource": {"name": "db"}}}"#,
    )
    .expect("write");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\n  \"request\": \n}").expect("write");
    let input = input.display().to_string();
    let bad = bad.display().to_string();
    let q = "data.countersign.fast_track";

    // Act
    let ok = countersign(
        &[
            "policy",
            "eval",
            "--bundle",
            "examples/policies",
            "--query",
            q,
            "--input",
            &input,
        ],
        &[],
    )
    .await;
    let broken = countersign(
        &[
            "policy",
            "eval",
            "--bundle",
            "examples/policies",
            "--query",
            q,
            "--input",
            &bad,
        ],
        &[],
    )
    .await;
    let undefined = countersign(
        &[
            "policy",
            "eval",
            "--bundle",
            "examples/policies",
            "--query",
            "data.countersign.nope",
        ],
        &[],
    )
    .await;

    // Assert
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let v: Value = serde_json::from_slice(&ok.stdout).expect("JSON");
    assert_eq!(
        v,
        json!({"decision": "approve", "reason": "a@example.com was fast tracked to db"})
    );
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        text(&broken.stderr).contains("bad.json:3:1: invalid JSON"),
        "{}",
        text(&broken.stderr)
    );
    assert_eq!(undefined.status.code(), Some(1));
    assert!(
        text(&undefined.stderr).contains("not defined"),
        "{}",
        text(&undefined.stderr)
    );
}

#[tokio::test]
async fn rule_28_check_reports_rego_errors_and_undefined_queries_with_file_and_line() {
    // Arrange
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
    std::fs::write(
        dir.path().join("policies/bad.rego"),
        "package x\n\nallow if {\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("ok.rego"), "package y\nallow := true\n").expect("write");
    let hcl = r#"user "a@example.com" {}
user "b@example.com" {}
resource "one" {
  max_duration = "1h"
  policies = [{ bundle = "policies", query = "data.x.allow" }]
  workflow = { steps = [{ reviewers = { one_of = ["b@example.com"] } }] }
}
resource "two" {
  max_duration = "1h"
  on_request = { bundle = "ok.rego", query = "data.y.missing" }
  workflow = { steps = [{ reviewers = { one_of = ["b@example.com"] } }] }
}
"#;
    let file = dir.path().join("main.hcl");
    std::fs::write(&file, hcl).expect("write");

    // Act
    let out = countersign(&["check", &file.display().to_string()], &[]).await;
    let shipped = countersign(&["check", "examples/sym-fast-track.hcl"], &[]).await;
    let agents = countersign(&["check", "examples/agents/agent-gate.hcl"], &[]).await;
    let agents_tests = countersign(&["policy", "test", "examples/agents/policies"], &[]).await;

    // Assert
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("policies/bad.rego:4:1: expecting"), "{err}");
    assert!(
        err.contains("main.hcl:10: in resource \"two\": query data.y.missing is not defined"),
        "{err}"
    );
    assert_eq!(shipped.status.code(), Some(0), "{}", text(&shipped.stderr));
    assert!(text(&shipped.stdout).contains("1 policy bundles"));
    assert_eq!(agents.status.code(), Some(0), "{}", text(&agents.stderr));
    assert_eq!(
        agents_tests.status.code(),
        Some(0),
        "{}",
        text(&agents_tests.stdout)
    );
}

#[tokio::test]
async fn cli_explain_and_simulate_print_sentences() {
    // Arrange
    let app = TestApp::spawn(&sym_resource()).await;
    let req = app.create("carol", ask("Normal", "1h")).await;
    let env = [
        ("COUNTERSIGN_URL", app.api.base.as_str()),
        ("COUNTERSIGN_TOKEN", app.api.token("carol")),
    ];

    // Act
    let explained = countersign(&["explain", id_of(&req)], &env).await;
    let simulated = countersign(
        &[
            "simulate",
            "--resource",
            "prod-aws",
            "--field",
            "urgency=Emergency",
        ],
        &env,
    )
    .await;

    // Assert
    assert_eq!(
        explained.status.code(),
        Some(0),
        "{}",
        text(&explained.stderr)
    );
    let out = text(&explained.stdout);
    assert!(
        out.contains("  step 1: skipped (carol@example.com is on call)"),
        "{out}"
    );
    assert_eq!(
        simulated.status.code(),
        Some(0),
        "{}",
        text(&simulated.stderr)
    );
    let out = text(&simulated.stdout);
    assert!(out.contains("outcome   approved"), "{out}");
    assert!(
        out.contains("approved by policy data.countersign.fast_track: carol@example.com was fast tracked to prod-aws"),
        "{out}"
    );
}
