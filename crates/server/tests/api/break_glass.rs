//! Break-glass (rule 34) through the API: access at once without the workflow, told at once
//! (by email through a real SMTP server, and to a signed webhook), a follow-up review that the
//! person who used it can never close, flagging that revokes, and an unreviewed follow-up
//! that escalates on the manual clock.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::callbacks::Receiver;
use crate::connector::free_port;
use crate::helpers::{TestApp, assert_error, audit_kinds, id_of};
use crate::notifications::{Smtp, mail_channel, mails};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// prod-db: reviewed by bob in the normal way; break-glass for half an hour, reviewed by the
/// `ops` group (bob and carol) within a day, and announced to `notify`. Dan owns it.
fn resource(notify: &str) -> String {
    format!(
        r#"
group "ops" {{ members = ["bob@example.com", "carol@example.com"] }}
app "deployer" {{ roles = ["request_approval"] }}
resource "prod-db" {{
  connector    = "log"
  max_duration = "4h"
  owners       = ["dan@example.com"]
  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["bob@example.com"] }} }} ] }}
  break_glass = {{
    max_duration  = "30m"
    notify        = {notify}
    review_within = "24h"
    reviewers     = ["group:ops"]
  }}
}}
resource "staging-db" {{
  max_duration = "1h"
  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["bob@example.com"] }} }} ] }}
}}
"#
    )
}

async fn break_glass(app: &TestApp, user: &str, reason: &str) -> Value {
    app.create(
        user,
        json!({ "resource": "prod-db", "reason": reason, "break_glass": true }),
    )
    .await
}

async fn close(app: &TestApp, user: &str, id: &Value, body: Value) -> (StatusCode, Value) {
    app.post(user, &format!("/v1/requests/{}/follow-up", id_of(id)), body)
        .await
}

/// The ids of the requests `user` may decide now (the inbox).
async fn inbox(app: &TestApp, user: &str) -> Vec<String> {
    let (status, list) = app.get(user, "/v1/requests?reviewable_by=me").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (aiosmtpd)"]
async fn rule_34_break_glass_grants_at_once_mails_at_once_and_someone_else_closes_the_follow_up() {
    // Arrange: one email channel, the default rules, and secops as a fixed destination.
    let dir = tempfile::tempdir().expect("temp dir");
    let smtp = Smtp::start(dir.path(), free_port().await, &[]).await;
    let hcl = format!(
        "{}{}",
        mail_channel(smtp.port),
        resource(r#"["mail:secops@example.com"]"#)
    );
    let app = TestApp::spawn(&hcl).await;

    // Act: alice breaks the glass, without saying for how long.
    let req = break_glass(&app, "alice", "orders are down, INC-7").await;

    // Assert: approved at once by alice herself, for the break-glass maximum, the workflow
    // skipped, and the follow-up open for ops.
    assert_eq!(req["state"], "approved", "{req}");
    assert_eq!(req["duration"], "30m");
    assert_eq!(req["outcome"]["actioned_by"]["id"], "alice@example.com");
    assert_eq!(req["steps"][0]["status"], "skipped");
    let follow_up = &req["follow_up"];
    assert_eq!(follow_up["state"], "open");
    assert_eq!(follow_up["reviewers"], json!(["group:ops"]));
    assert_eq!(
        follow_up["eligible"],
        json!(["bob@example.com", "carol@example.com"])
    );
    assert_eq!(follow_up["due_at"], "2026-01-02T00:00:00Z");
    app.tick().await;
    let grant = app.grant("alice", &req["grant_id"]).await;
    assert_eq!(grant["state"], "active", "{grant}");

    // Assert: the reviewers and secops are told at once, with the link; alice hears that her
    // grant is active.
    let got = mails(&app, &smtp, 4).await;
    let subject = "[Countersign] Break-glass: alice@example.com took prod-db without review";
    for to in ["bob", "carol", "secops"] {
        let m = smtp.to(to);
        assert_eq!(m.len(), 1, "{to}: {got:?}");
        assert_eq!(m[0]["subject"], subject, "{to}");
        let text = m[0]["text"].as_str().expect("a text part");
        assert!(text.contains("orders are down, INC-7"), "{text}");
        assert!(
            text.contains(&format!("/requests/{}", id_of(&req))),
            "{text}"
        );
        assert!(
            m[0]["html"]
                .as_str()
                .is_some_and(|h| h.contains("Follow-up"))
        );
    }
    let alice = smtp.to("alice");
    assert_eq!(alice.len(), 1, "{got:?}");
    assert!(
        alice[0]["subject"]
            .as_str()
            .is_some_and(|s| s.ends_with("access to prod-db is active until 2026-01-01T00:30:00Z")),
        "{alice:?}"
    );

    // Act + assert: the follow-up waits in bob's inbox; alice can never close it, mallory
    // cannot see it, a flag needs a comment, and an unknown verdict is refused.
    assert_eq!(inbox(&app, "bob").await, vec![id_of(&req).to_owned()]);
    assert!(inbox(&app, "alice").await.is_empty());
    let (status, body) = close(&app, "alice", &req, json!({ "verdict": "acknowledge" })).await;
    assert_error(status, &body, StatusCode::FORBIDDEN);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("your own break-glass")),
        "{body}"
    );
    let (status, body) = close(&app, "mallory", &req, json!({ "verdict": "acknowledge" })).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = close(&app, "bob", &req, json!({ "verdict": "flag" })).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = close(&app, "bob", &req, json!({ "verdict": "approve" })).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);

    // Act: bob acknowledges.
    let (status, closed) = close(
        &app,
        "bob",
        &req,
        json!({ "verdict": "acknowledge", "comment": "INC-7 is real" }),
    )
    .await;

    // Assert: closed by bob, out of every inbox, the grant untouched; carol is too late; all
    // of it is in the audit log.
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["follow_up"]["state"], "acknowledged");
    assert_eq!(closed["follow_up"]["closed_by"], "bob@example.com");
    assert_eq!(closed["follow_up"]["comment"], "INC-7 is real");
    assert!(inbox(&app, "bob").await.is_empty());
    assert!(inbox(&app, "carol").await.is_empty());
    let (status, body) = close(
        &app,
        "carol",
        &req,
        json!({ "verdict": "flag", "comment": "no" }),
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT);
    assert_eq!(
        app.grant("alice", &req["grant_id"]).await["state"],
        "active"
    );
    let kinds = audit_kinds(&app, &req).await;
    assert_eq!(
        kinds,
        vec![
            "request_created",
            "break_glass_used",
            "request_approved",
            "follow_up_acknowledged"
        ]
    );
    // The due time passes quietly: the reviewers hear nothing more (alice hears her grant
    // end).
    app.advance(Duration::from_secs(25 * 3600)).await;
    mails(&app, &smtp, 5).await;
    for to in ["bob", "carol", "secops"] {
        assert_eq!(smtp.to(to).len(), 1, "{to}");
    }
}

#[tokio::test]
async fn rule_34_flagging_revokes_and_an_unreviewed_follow_up_escalates() {
    // Arrange: the break-glass goes to a signed webhook, and so do escalations.
    let hook = Receiver::start().await;
    let hcl = format!(
        r#"
channel "hook" {{
  type   = "webhook"
  url    = "{url}"
  secret = "{SECRET}"
}}
notify "escalations" {{
  events = ["escalated"]
  to     = ["reviewers"]
  via    = ["hook"]
}}
{res}"#,
        url = hook.url("events"),
        res = resource(r#"["hook"]"#),
    );
    let mut app = TestApp::spawn_with(r#"outbound_allow = ["127.0.0.1"]"#, &[], &hcl).await;
    app.app_tokens(&["deployer"]).await;

    // Act + assert: what break-glass refuses.
    let refused = [
        (
            "alice",
            json!({ "resource": "staging-db", "reason": "x", "break_glass": true }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "alice",
            json!({ "resource": "prod-db", "reason": "x", "duration": "1h", "break_glass": true }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "deployer",
            json!({ "resource": "prod-db", "reason": "x", "requester": "alice@example.com", "break_glass": true }),
            StatusCode::FORBIDDEN,
        ),
        (
            "deployer",
            json!({ "resource": "prod-db", "reason": "x", "break_glass": true }),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (who, body, expected) in refused {
        let (status, got) = app.post(who, "/v1/requests", body.clone()).await;
        assert_error(status, &got, expected);
    }

    // Act: alice breaks the glass (the webhook fails once); carol flags it.
    hook.script("events", vec![Some((500, vec![]))]);
    let first = break_glass(&app, "alice", "first").await;
    app.tick().await;
    // Security: the failure is shown to whoever sees the request, naming the channel, never
    // its URL (a chat tool's webhook URL is a secret).
    let (_, sent) = app
        .get(
            "alice",
            &format!("/v1/requests/{}/notifications", id_of(&first)),
        )
        .await;
    let error = sent["notifications"][0]["attempts"][0]["error"]
        .as_str()
        .expect("the failed attempt's error")
        .to_owned();
    assert_eq!(
        error,
        "POST the \"hook\" webhook answered 500 Internal Server Error"
    );
    assert!(!sent.to_string().contains(&hook.url("events")), "{sent}");
    app.advance(Duration::from_secs(90)).await;
    let (status, flagged) = close(
        &app,
        "carol",
        &first,
        json!({ "verdict": "flag", "comment": "no incident was open" }),
    )
    .await;

    // Assert: the grant is revoked, by carol, through the connector.
    assert_eq!(status, StatusCode::OK, "{flagged}");
    assert_eq!(flagged["follow_up"]["state"], "flagged");
    app.tick().await;
    let grant = app.grant("alice", &first["grant_id"]).await;
    assert_eq!(grant["state"], "revoked", "{grant}");
    assert_eq!(grant["ending"]["by"], "carol@example.com");
    assert_eq!(
        grant["ending"]["reason"],
        "break-glass flagged: no incident was open"
    );
    let revokes = app
        .connector_calls()
        .iter()
        .filter(|c| c.command == "revoke-cmd")
        .count();
    assert_eq!(revokes, 1, "{:?}", app.connector_calls());

    // Act: alice breaks the glass again.
    let second = break_glass(&app, "alice", "second").await;
    app.tick().await;
    assert_eq!(
        app.grant("alice", &second["grant_id"]).await["state"],
        "active"
    );

    // Assert: each break-glass reached the webhook, signed, for ops (the first twice: its
    // first attempt was answered 500, and the retry has the same webhook-id).
    let got = hook.got("events");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].id, got[1].id);
    let types: Vec<(Value, Value)> = got[1..]
        .iter()
        .map(|r| {
            (
                r.json()["type"].clone(),
                r.json()["data"]["recipients"].clone(),
            )
        })
        .collect();
    let ops = json!(["bob@example.com", "carol@example.com"]);
    assert_eq!(
        types,
        vec![
            (json!("break_glass"), ops.clone()),
            (json!("break_glass"), ops)
        ]
    );
    assert!(got.iter().all(|r| crate::callbacks::verify(SECRET, r)));

    // Act: a day passes without a review of the second.
    app.advance(Duration::from_secs(24 * 3600)).await;

    // Assert: it escalated once, to ops, the owner and the admin (never alice), who may now
    // close it; the flagged one did not.
    let escalations: Vec<Value> = hook
        .got("events")
        .iter()
        .map(|r| r.json())
        .filter(|v| v["type"] == "escalated")
        .collect();
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    assert_eq!(escalations[0]["data"]["request"]["id"], id_of(&second));
    assert_eq!(
        escalations[0]["data"]["recipients"],
        json!([
            "bob@example.com",
            "carol@example.com",
            "dan@example.com",
            "root@example.com"
        ])
    );
    let r = app.request("alice", &second).await;
    assert_eq!(r["follow_up"]["escalated_at"], "2026-01-02T00:01:30Z");
    assert!(
        inbox(&app, "root")
            .await
            .contains(&id_of(&second).to_owned())
    );
    app.advance(Duration::from_secs(24 * 3600)).await;
    assert_eq!(
        hook.got("events")
            .iter()
            .filter(|r| r.json()["type"] == "escalated")
            .count(),
        1,
        "it escalates once"
    );
    let (status, body) = close(&app, "alice", &second, json!({ "verdict": "acknowledge" })).await;
    assert_error(status, &body, StatusCode::FORBIDDEN);
    let (status, closed) = close(&app, "root", &second, json!({ "verdict": "acknowledge" })).await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["follow_up"]["closed_by"], "root@example.com");
    assert_eq!(
        audit_kinds(&app, &second).await,
        vec![
            "request_created",
            "break_glass_used",
            "request_approved",
            "follow_up_overdue",
            "follow_up_acknowledged"
        ]
    );
}

/// Runs the `countersign` client as `user` against the test server; returns its exit code,
/// standard output and standard error.
async fn cli(app: &TestApp, user: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .env("COUNTERSIGN_URL", &app.api.base)
        .env("COUNTERSIGN_TOKEN", app.api.token(user))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run the client");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rule 34 in the CLI: `request create --break-glass` grants at once, the table shows the
/// follow-up, the requester's `review acknowledge` is refused, and a reviewer's `review flag`
/// closes it.
#[tokio::test]
async fn rule_34_cli_breaks_glass_and_a_reviewer_flags_it() {
    let app = TestApp::spawn(&resource("[]")).await;
    let (code, out, err) = cli(
        &app,
        "alice",
        &[
            "request",
            "create",
            "prod-db",
            "--reason",
            "INC-9",
            "--break-glass",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let req: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(req["state"], "approved");
    let id = id_of(&req).to_owned();

    let (code, out, _) = cli(&app, "bob", &["request", "show", &id]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("follow-up open, due by 2026-01-02T00:00:00Z [group:ops]"),
        "{out}"
    );
    let (code, _, err) = cli(&app, "alice", &["review", "acknowledge", &id]).await;
    assert_eq!(code, Some(3));
    assert!(err.contains("your own break-glass"), "{err}");
    let (code, out, err) = cli(
        &app,
        "carol",
        &["review", "flag", &id, "--comment", "no incident"],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("follow-up flagged by carol@example.com"),
        "{out}"
    );
}

/// Rule 34 in the portal: the request form offers break-glass only where the resource has
/// it; the requester's page shows the follow-up without its form, a reviewer's page with it,
/// and the reviewer acknowledges it there (with the page's CSRF token).
#[tokio::test]
async fn rule_34_portal_breaks_glass_and_a_reviewer_acknowledges_it() {
    use crate::portal::Web;
    let app = TestApp::spawn(&resource("[]")).await;
    let mut alice = Web::sign_in(&app, "alice").await;
    let mut bob = Web::sign_in(&app, "bob").await;

    let form = alice.get("/catalog/prod-db").await;
    assert!(form.html.contains("id=\"break-glass\""), "{}", form.html);
    assert!(form.html.contains("at most 30 minutes"), "{}", form.html);
    let staging = alice.get("/catalog/staging-db").await;
    assert!(!staging.html.contains("id=\"break-glass\""));

    let created = alice
        .submit(
            "/catalog/prod-db",
            "/catalog/prod-db",
            &[
                ("reason", "INC-9"),
                ("duration", "1h"),
                ("break_glass", "true"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.html);
    let location = created.location.expect("a redirect");
    let page = location.split('?').next().expect("a path").to_owned();
    let id = page.trim_start_matches("/requests/").to_owned();
    // The form's duration (the resource's default, an hour) is capped at the break-glass
    // maximum.
    let r = app.request("alice", &json!(id)).await;
    assert_eq!(
        (&r["state"], &r["duration"]),
        (&json!("approved"), &json!("30m"))
    );
    let (_, resources) = app.get("alice", "/v1/resources").await;
    let prod = resources["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "prod-db")
        .expect("prod-db")
        .clone();
    assert_eq!(
        prod["break_glass"],
        json!({ "max_duration": "30m", "review_within": "1d", "reviewers": ["group:ops"] })
    );

    let mine = alice.get(&page).await;
    assert!(mine.html.contains("id=\"follow-up\""), "{}", mine.html);
    assert!(!mine.html.contains("id=\"follow-up-form\""));
    let inbox = bob.get("/inbox").await;
    assert!(inbox.html.contains(&id), "{}", inbox.html);
    let done = bob
        .submit(
            &page,
            &format!("{page}/follow-up"),
            &[("verdict", "acknowledge"), ("comment", "seen")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    assert_eq!(
        done.location.as_deref(),
        Some(format!("{page}?done=acknowledged").as_str())
    );
    let after = bob.get(&page).await;
    assert!(
        after.html.contains("Acknowledged by bob@example.com"),
        "{}",
        after.html
    );
    assert!(!after.html.contains("id=\"follow-up-form\""));
}
