//! Verified Orchestration compatibility (rule 27): the seed's own GraphQL documents, variables
//! and field names, end to end against the real server and a real callback receiver.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::callbacks::{Receiver, verify};
use crate::helpers::{TestApp, email};

const CONFIG: &str = r#"
app "github" { roles = ["request_approval"] }
app "other"  { roles = ["request_approval"] }

group "approvers"     { members = ["bob@example.com", "carol@example.com", "dan@example.com"] }
group "ChangeManager" { members = ["carol@example.com", "dan@example.com"] }

resource "GitHubApprovalRequest" {
  description  = "A deployment to production, approved by change management."
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["group:approvers"] } } ] }
}
"#;

/// The seed's documents, as a client sends them.
const CREATE: &str = "mutation CreateApprovalRequest($request: ApprovalRequestInput!) {
createApprovalRequest(request: $request) {
id
portalUrl
callbackSecret
}
}";
const ACTIONED: &str = "query ActionedApprovalData($approvalRequestId: ID!) {
actionedApprovalData(id: $approvalRequestId) {
status
actionedComment
actionedBy {
id
name
}
actionedAt
}
}";
const UPDATE: &str = "mutation UpdateApprovalRequest($updateApprovalRequestId: ID!, $input: UpdateApprovalRequestInput!) {
updateApprovalRequest(id: $updateApprovalRequestId, input: $input)
}";
const CANCEL: &str = "mutation CancelApprovalRequest($cancelApprovalRequestId: ID!) {
cancelApprovalRequest(id: $cancelApprovalRequestId)
}";

async fn spawn() -> TestApp {
    let mut app = TestApp::spawn_with(r#"outbound_allow = ["127.0.0.1"]"#, &[], CONFIG).await;
    app.app_tokens(&["github", "other"]).await;
    app
}

/// POSTs a GraphQL request as `who` (no token when `None`).
async fn gql(
    app: &TestApp,
    who: Option<&str>,
    query: &str,
    variables: Value,
) -> (StatusCode, Value) {
    let body = json!({ "query": query, "variables": variables });
    app.api
        .send(
            reqwest::Method::POST,
            "/graphql",
            who.map(|w| app.api.token(w)),
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
}

/// The seed's example request, with the callback pointed at `url`.
fn seed_request(url: &str) -> Value {
    json!({
        "request": {
            "callback": { "url": url },
            "purpose": "Please provide ChangeManager approval for deployment to Production of the API repository.",
            "referenceUrl": "https://github.com/AcmeSoftware/api/actions/runs/8595211647",
            "requestType": "GitHubApprovalRequest",
            "presentationRequestInput": { "requestedCredentials": [ { "type": "ChangeManager" } ] }
        }
    })
}

#[tokio::test]
async fn rule_27_the_seed_flow_create_action_callback_and_poll() {
    // Arrange
    let app = spawn().await;
    let rx = Receiver::start().await;

    // Act: create, poll while pending, a reviewer without the credential tries, one with it
    // approves, the callback goes out, poll again.
    let (status, created) = gql(&app, Some("github"), CREATE, seed_request(&rx.url("cb"))).await;
    let c = &created["data"]["createApprovalRequest"];
    let id = c["id"].as_str().expect("id").to_owned();
    let secret = c["callbackSecret"].as_str().expect("secret").to_owned();
    let vars = json!({ "approvalRequestId": id });
    let (_, pending) = gql(&app, Some("github"), ACTIONED, vars.clone()).await;
    let (not_credentialed, _) = app
        .review("bob", &json!(id), json!({ "decision": "approve" }))
        .await;
    let (approved, _) = app
        .review(
            "carol",
            &json!(id),
            json!({ "decision": "approve", "comment": "LGTM 👍" }),
        )
        .await;
    app.tick().await;
    let (_, actioned) = gql(&app, Some("github"), ACTIONED, vars).await;

    // Assert
    assert_eq!(status, StatusCode::OK, "{created}");
    assert!(created.get("errors").is_none(), "{created}");
    let portal = c["portalUrl"].as_str().expect("portalUrl");
    assert!(portal.ends_with(&format!("/requests/{id}")), "{portal}");
    assert_eq!(pending, json!({ "data": { "actionedApprovalData": null } }));
    // bob is an approver without ChangeManager: he is not asked, so he does not see it.
    assert_eq!(not_credentialed, StatusCode::NOT_FOUND);
    assert_eq!(approved, StatusCode::OK);

    let got = rx.got("cb");
    assert_eq!(got.len(), 1);
    assert!(verify(&secret, &got[0]));
    let body = got[0].json();
    assert_eq!(body["approvalRequestId"], json!(id));
    assert_eq!(body["status"], "approved");
    assert_eq!(body["actionedComment"], "LGTM 👍");
    assert_eq!(
        body["actionedBy"],
        json!({ "id": email("carol"), "name": email("carol") })
    );
    assert_eq!(body["callbackSecret"], json!(secret));

    let a = &actioned["data"]["actionedApprovalData"];
    assert_eq!(
        a,
        &json!({
            "status": "approved",
            "actionedComment": "LGTM 👍",
            "actionedBy": { "id": email("carol"), "name": email("carol") },
            "actionedAt": body["actionedAt"],
        })
    );
    // Reviewers see what was asked, as on the REST API.
    let req = app.request("carol", &json!(id)).await;
    assert_eq!(req["created_by"], "app:github");
    assert_eq!(req["reviewer_credentials"], json!(["ChangeManager"]));
    assert_eq!(
        req["reference_url"],
        "https://github.com/AcmeSoftware/api/actions/runs/8595211647"
    );
}

#[tokio::test]
async fn rule_27_update_and_cancel_only_by_the_creating_app() {
    // Arrange
    let app = spawn().await;
    let rx = Receiver::start().await;
    let (_, created) = gql(&app, Some("github"), CREATE, seed_request(&rx.url("cb"))).await;
    let id = created["data"]["createApprovalRequest"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let new_purpose = "Please provide ChangeManager approval for deployment **at 6am Friday** to Production of the API repository.";

    // Act
    let update_vars = json!({ "updateApprovalRequestId": id, "input": { "purpose": new_purpose } });
    let (_, by_other) = gql(&app, Some("other"), UPDATE, update_vars.clone()).await;
    let (_, updated) = gql(&app, Some("github"), UPDATE, update_vars).await;
    let purpose = app.request("github", &json!(id)).await["purpose"].clone();
    let cancel_vars = json!({ "cancelApprovalRequestId": id });
    let (_, cancel_by_other) = gql(&app, Some("other"), CANCEL, cancel_vars.clone()).await;
    let (_, cancelled) = gql(&app, Some("github"), CANCEL, cancel_vars.clone()).await;
    let (_, again) = gql(&app, Some("github"), CANCEL, cancel_vars).await;
    app.tick().await;

    // Assert
    assert_eq!(by_other["data"]["updateApprovalRequest"], Value::Null);
    assert_eq!(by_other["errors"][0]["extensions"]["code"], "NOT_FOUND");
    assert_eq!(
        by_other["errors"][0]["path"],
        json!(["updateApprovalRequest"])
    );
    assert_eq!(
        updated,
        json!({ "data": { "updateApprovalRequest": true } })
    );
    assert_eq!(purpose, new_purpose);
    assert_eq!(
        cancel_by_other["errors"][0]["extensions"]["code"],
        "NOT_FOUND"
    );
    assert_eq!(
        cancelled,
        json!({ "data": { "cancelApprovalRequest": true } })
    );
    assert_eq!(again["errors"][0]["extensions"]["code"], "CONFLICT");
    let got = rx.got("cb");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["status"], "cancelled");
}

#[tokio::test]
async fn rule_27_a_denial_is_rejected_and_bad_documents_get_clear_errors() {
    // Arrange
    let app = spawn().await;
    let rx = Receiver::start().await;
    let (_, created) = gql(&app, Some("github"), CREATE, seed_request(&rx.url("cb"))).await;
    let id = created["data"]["createApprovalRequest"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Act
    app.review(
        "dan",
        &json!(id),
        json!({ "decision": "deny", "comment": "not on a Friday" }),
    )
    .await;
    app.tick().await;
    let aliased = format!(
        "{{ a: actionedApprovalData(id: \"{id}\") {{ __typename s: status by: actionedBy {{ id }} }} }}"
    );
    let (ok, polled) = gql(&app, Some("github"), &aliased, json!({})).await;
    let (syntax, syntax_err) = gql(
        &app,
        Some("github"),
        "query { actionedApprovalData(id: ) }",
        json!({}),
    )
    .await;
    let (unknown, unknown_err) = gql(&app, Some("github"), "{ approvals { id } }", json!({})).await;
    let (missing_var, missing_err) = gql(&app, Some("github"), ACTIONED, json!({})).await;
    let (anon, anon_err) = gql(&app, None, ACTIONED, json!({ "approvalRequestId": id })).await;
    let no_type = json!({ "request": { "purpose": "x" } });
    let (no_type_status, no_type_err) = gql(&app, Some("github"), CREATE, no_type).await;
    let bad_cred = json!({ "request": { "requestType": "GitHubApprovalRequest", "purpose": "x",
        "presentationRequestInput": { "requestedCredentials": [ { "type": "Nobody" } ] } } });
    let (_, nobody) = gql(&app, Some("github"), CREATE, bad_cred).await;

    // Assert
    assert_eq!(rx.got("cb")[0].json()["status"], "rejected");
    assert_eq!(ok, StatusCode::OK);
    assert_eq!(
        polled,
        json!({ "data": { "a": { "__typename": "ActionedApprovalData", "s": "rejected",
            "by": { "id": email("dan") } } } })
    );
    assert_eq!(syntax, StatusCode::BAD_REQUEST);
    assert!(
        syntax_err["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1:34"),
        "{syntax_err}"
    );
    assert_eq!(unknown, StatusCode::BAD_REQUEST);
    assert_eq!(
        unknown_err["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert_eq!(missing_var, StatusCode::BAD_REQUEST, "{missing_err}");
    assert_eq!(anon, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anon_err["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    // A variable that does not fit the schema is refused before anything runs.
    assert_eq!(no_type_status, StatusCode::BAD_REQUEST, "{no_type_err}");
    assert_eq!(
        no_type_err["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert!(
        no_type_err["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("requestType")
    );
    // No reviewer holds the credential: nobody could decide, so it is refused (rule 13).
    assert_eq!(
        nobody["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{nobody}"
    );
}

/// How many requests exist, as the admin sees them.
async fn count_requests(app: &TestApp) -> usize {
    let (status, list) = app.get("root", "/v1/requests?limit=500").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["requests"].as_array().map_or(0, Vec::len)
}

/// The audit's document: 25 fragments, each spreading the next one twice, around `leaf`.
fn fan_out(op: &str, on: &str, leaf: &str) -> String {
    let mut q = format!("{op} {{ ...F0 }}\n");
    for i in 0..25 {
        q.push_str(&format!(
            "fragment F{i} on {on} {{ ...F{} ...F{} }}\n",
            i + 1,
            i + 1
        ));
    }
    q.push_str(&format!("fragment F25 on {on} {{ {leaf} }}\n"));
    q
}

/// Within five seconds, or the test fails (the audit measured 27.6 s before the bound).
async fn soon<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(5), f)
        .await
        .expect("answered within 5 s")
}

#[tokio::test]
async fn hardening_1_fragment_fan_out_is_refused_fast_and_creates_nothing() {
    // Arrange
    let app = spawn().await;
    let create = r#"createApprovalRequest(request: {requestType: "GitHubApprovalRequest", purpose: "x"}) { id }"#;

    // Act: two at once, as in the audit, and the mutation form whose leaf creates a request.
    let q1 = fan_out("query", "Query", "__typename");
    let q2 = fan_out("mutation", "Mutation", create);
    let ((s1, e1), (s2, e2)) = soon(async {
        tokio::join!(
            gql(&app, Some("github"), &q1, json!({})),
            gql(&app, Some("github"), &q2, json!({}))
        )
    })
    .await;

    // Assert
    for (status, err) in [(s1, &e1), (s2, &e2)] {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(
            err["errors"][0]["extensions"]["code"],
            "GRAPHQL_VALIDATION_FAILED"
        );
        assert!(
            err["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("once its fragments are spread"),
            "{err}"
        );
        assert!(err.get("data").is_none(), "{err}");
    }
    assert_eq!(count_requests(&app).await, 0);
}

#[tokio::test]
async fn hardening_1_an_invalid_document_executes_nothing() {
    // Arrange
    let app = spawn().await;
    let create =
        r#"createApprovalRequest(request: {requestType: "GitHubApprovalRequest", purpose: "x"})"#;
    let documents = [
        // The audit's: a valid create that selects a field the type lacks.
        format!("mutation {{ {create} {{ id nope }} }}"),
        // A valid create beside a sibling with an unknown argument.
        format!("mutation {{ {create} {{ id }} cancelApprovalRequest(id: \"x\", why: \"no\") }}"),
        // What graphql-core rejects: an unused variable, an unused fragment, String! where
        // ID! goes, conflicting aliases, a Float as an ID.
        format!("mutation M($unused: String) {{ {create} {{ id }} }}"),
        format!("mutation {{ {create} {{ id }} }} fragment U on Query {{ __typename }}"),
        "query Q($id: String!) { actionedApprovalData(id: $id) { status } }".to_owned(),
        format!("mutation {{ a: {create} {{ id }} a: cancelApprovalRequest(id: \"x\") }}"),
        "query { actionedApprovalData(id: 0.5) { status } }".to_owned(),
        // Two operations and no operationName: neither runs.
        format!("mutation A {{ {create} {{ id }} }} query B {{ __typename }}"),
    ];

    // Act
    let mut answers = vec![];
    for d in &documents {
        let vars = if d.contains("$id") {
            json!({ "id": "x" })
        } else {
            json!({})
        };
        answers.push(gql(&app, Some("github"), d, vars).await);
    }
    let (missing, missing_err) = gql(&app, Some("github"), CREATE, json!({})).await;

    // Assert
    for (d, (status, body)) in documents.iter().zip(&answers) {
        assert_eq!(*status, StatusCode::BAD_REQUEST, "{d}\n{body}");
        assert!(body.get("data").is_none(), "{d}\n{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{d}\n{body}"
        );
    }
    assert_eq!(missing, StatusCode::BAD_REQUEST, "{missing_err}");
    assert!(
        missing_err["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("$request"),
        "{missing_err}"
    );
    assert_eq!(count_requests(&app).await, 0);
}

#[tokio::test]
async fn hardening_1_introspection_and_the_sdl_served_match_the_docs() {
    // Arrange
    let app = spawn().await;
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/graphql.md"),
    )
    .expect("docs/graphql.md");

    // Act
    let (status, types) = gql(
        &app,
        Some("github"),
        "{ __schema { queryType { name } mutationType { fields { name } } } }",
        json!({}),
    )
    .await;
    let (sdl_status, sdl) = app
        .api
        .try_send(reqwest::Method::GET, "/graphql/schema.graphql", None, None)
        .await
        .expect("GET schema.graphql");

    // Assert
    assert_eq!(status, StatusCode::OK, "{types}");
    let names: Vec<&str> = types["data"]["__schema"]["mutationType"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "createApprovalRequest",
            "updateApprovalRequest",
            "cancelApprovalRequest"
        ]
    );
    assert_eq!(sdl_status, StatusCode::OK);
    assert!(sdl.contains("scalar JSON"), "{sdl}");
    // The schema in docs/graphql.md is the one served, character for character.
    let block = docs
        .split("```graphql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the first graphql block of docs/graphql.md");
    assert_eq!(
        block.trim(),
        sdl.trim(),
        "docs/graphql.md's schema is stale"
    );
}

#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (a venv with gql: bash .ci/python.sh)"]
async fn rule_27_a_real_client_loads_the_schema_by_introspection_and_runs_the_seed() {
    // Arrange
    let app = spawn().await;
    let rx = Receiver::start().await;

    // Act
    let out = crate::helpers::run_python(
        "graphql_client.py",
        &[
            &app.api.base,
            app.api.token("github"),
            app.api.token("carol"),
            &rx.url("cb"),
        ],
    )
    .await;

    // Assert
    assert!(out.trim_end().ends_with("ok"), "{out}");
    assert!(out.contains("sdl: matches introspection"), "{out}");
}
