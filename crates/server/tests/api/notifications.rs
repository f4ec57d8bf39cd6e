//! Notifications (rules 32 and 33): email through a real SMTP server (Python's `aiosmtpd`, its
//! messages taken apart by Python's own `email` parser), webhooks verified with the Standard
//! Webhooks project's Python library, retries, a hanging mail server beside a webhook, what a
//! request's notification list shows, and a server killed between a change and its delivery.
//!
//! The SMTP server and the verifier are Python, so these tests need `COUNTERSIGN_TEST_PYTHON`
//! (`bash .ci/python.sh`) and are ignored without it; CI runs them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use crate::callbacks::Receiver;
use crate::connector::{ServerProcess, free_port, mint_token};
use crate::helpers::{
    Api, START_MS, TestApp, assert_error, email, eventually, id_of, people_and_connectors,
    run_python,
};

/// `tests/python/smtp_sink.py` on a free loopback port: a real SMTP server that writes every
/// message it accepts to a JSON-lines file.
pub(crate) struct Smtp {
    _child: Child,
    pub(crate) port: u16,
    out: PathBuf,
}

impl Smtp {
    pub(crate) async fn start(dir: &Path, port: u16, args: &[&str]) -> Smtp {
        let python = std::env::var("COUNTERSIGN_TEST_PYTHON").unwrap_or_else(|_| {
            panic!("COUNTERSIGN_TEST_PYTHON is not set: run `bash .ci/python.sh` and export the path it prints")
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/smtp_sink.py");
        let out = dir.join(format!("mail-{port}.jsonl"));
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(&out)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the SMTP server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        assert!(
            matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"),
            "the SMTP server did not start: {ready:?}"
        );
        Smtp {
            _child: child,
            port,
            out,
        }
    }

    /// Every message accepted so far.
    pub(crate) fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The messages to one person.
    pub(crate) fn to(&self, user: &str) -> Vec<Value> {
        let addr = email(user);
        self.messages()
            .into_iter()
            .filter(|m| m["rcpt_tos"] == json!([addr]))
            .collect()
    }
}

/// An email channel to the test's SMTP server, without TLS (loopback only).
pub(crate) fn mail_channel(port: u16) -> String {
    format!(
        r#"
channel "mail" {{
  type    = "email"
  host    = "127.0.0.1"
  port    = {port}
  tls     = "none"
  from    = "Countersign <countersign@example.com>"
  timeout = "2s"
}}
"#
    )
}

const DB_RESOURCE: &str = r#"
resource "prod-db" {
  connector    = "ok"
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com", "carol@example.com"] } } ] }
}
"#;

async fn notifications(app: &TestApp, user: &str, id: &str) -> (StatusCode, Value) {
    app.get(user, &format!("/v1/requests/{id}/notifications"))
        .await
}

/// Runs the due jobs until the SMTP server has `n` messages in all.
pub(crate) async fn mails(app: &TestApp, smtp: &Smtp, n: usize) -> Vec<Value> {
    eventually(&format!("{n} messages reach the SMTP server"), async || {
        app.tick().await;
        let got = smtp.messages();
        (got.len() >= n).then_some(got)
    })
    .await
}

#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (aiosmtpd)"]
async fn rule_32_email_tells_reviewers_of_the_step_and_the_requester_of_every_turn() {
    // Arrange: one email channel and no notify block, so the default rules apply.
    let dir = tempfile::tempdir().expect("temp dir");
    let smtp = Smtp::start(dir.path(), free_port().await, &[]).await;
    let app = TestApp::spawn(&format!("{}{DB_RESOURCE}", mail_channel(smtp.port))).await;

    // Act: alice asks; the step's reviewers are told.
    let req = app
        .create(
            "alice",
            json!({ "resource": "prod-db", "reason": "fix <b>orders</b> & more", "duration": "1h" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    let got = mails(&app, &smtp, 2).await;

    // Assert: bob and carol, one message each, both parts, with the link; not alice.
    let link = format!("{}/requests/{id}", app.api.base);
    for user in ["bob", "carol"] {
        let m = smtp.to(user);
        assert_eq!(m.len(), 1, "{user}: {got:?}");
        let m = &m[0];
        assert_eq!(m["content_type"], "multipart/alternative");
        assert!(
            m["subject"]
                .as_str()
                .unwrap()
                .contains("a review is needed"),
            "{m}"
        );
        let text = m["text"].as_str().expect("a text part");
        let html = m["html"].as_str().expect("an HTML part");
        assert!(
            text.contains(&link) && text.contains("fix <b>orders</b> & more"),
            "{text}"
        );
        assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
        // What the requester wrote is escaped in the HTML part, never markup.
        assert!(
            html.contains("fix &lt;b&gt;orders&lt;/b&gt; &amp; more"),
            "{html}"
        );
        assert_eq!(m["from"], "Countersign <countersign@example.com>");
    }
    assert!(smtp.to("alice").is_empty());

    // Act: bob approves; the grant becomes active, is about to expire, then ends.
    app.approve("bob", &req).await;
    mails(&app, &smtp, 4).await;
    app.advance(Duration::from_secs(46 * 60)).await;
    mails(&app, &smtp, 5).await;
    app.advance(Duration::from_secs(15 * 60)).await;
    let all = mails(&app, &smtp, 6).await;

    // Assert: alice heard of the approval, the active grant, its coming end and its end.
    let subjects: Vec<String> = smtp
        .to("alice")
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_owned())
        .collect();
    for want in [
        "alice@example.com's request for prod-db was approved",
        "alice@example.com's access to prod-db is active until",
        "alice@example.com's access to prod-db ends at",
        "alice@example.com's access to prod-db has ended",
    ] {
        assert!(
            subjects.iter().any(|s| s.contains(want)),
            "{want}: {subjects:?}"
        );
    }
    // Bob decided, so he is not told of the outcome he caused; nobody got two copies.
    assert_eq!(smtp.to("bob").len(), 1, "{all:?}");
    assert_eq!(all.len(), 6, "{all:?}");
    // No secret reaches a message: no token, no callback or signing secret.
    for m in &all {
        let text = m.to_string();
        assert!(!text.contains("cs_") && !text.contains("whsec_"), "{text}");
    }

    // Assert: the request's notification list says what went to whom, for whoever sees it.
    let (status, list) = notifications(&app, "alice", &id).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list["notifications"].as_array().expect("a list").clone();
    assert_eq!(list.len(), 6, "{list:?}");
    assert!(
        list.iter()
            .all(|n| n["state"] == "delivered" && n["channel"] == "mail")
    );
    let first = &list[0];
    assert_eq!(first["event"], "step_entered");
    assert_eq!(first["attempts"][0]["status"], 250);
    let (status, body) = notifications(&app, "mallory", &id).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    // The request's page in the portal shows the same list.
    let mut web = crate::portal::Web::sign_in(&app, "alice").await;
    let page = web.get(&format!("/requests/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let table = page
        .html
        .split("id=\"notification-list\"")
        .nth(1)
        .expect("the page lists the notifications");
    assert_eq!(table.matches("<tr><td>").count(), 6, "{table}");
    assert!(table.contains("<td>step_entered</td><td>mail</td><td>bob@example.com</td>"));

    // Act + assert: only an admin resends; the same message goes out again.
    let nid = first["id"].as_str().unwrap();
    let resend = format!("/v1/requests/{id}/notifications/{nid}/resend");
    let (status, body) = app.post("alice", &resend, json!({})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = app.post("root", &resend, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "pending");
    let again = mails(&app, &smtp, 7).await;
    assert_eq!(again[6]["message_id"], again[0]["message_id"]);
}

#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (aiosmtpd)"]
async fn rule_32_a_refusing_mail_server_gets_the_message_after_a_retry_once() {
    // Arrange: a server that answers the first message with 451.
    let dir = tempfile::tempdir().expect("temp dir");
    let smtp = Smtp::start(dir.path(), free_port().await, &["--refuse", "1"]).await;
    let resource = r#"
resource "one-reviewer" {
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;
    let app = TestApp::spawn(&format!("{}{resource}", mail_channel(smtp.port))).await;

    // Act
    let req = app
        .create(
            "alice",
            json!({ "resource": "one-reviewer", "reason": "x" }),
        )
        .await;
    let id = id_of(&req);
    app.tick().await;
    let (_, first) = notifications(&app, "alice", id).await;
    // The first retry comes after the backoff's first delay (`callback_retry_base`, 5 s by
    // default, with jitter).
    app.advance(Duration::from_secs(90)).await;
    let got = mails(&app, &smtp, 1).await;

    // Assert: refused once (451, retried), then delivered, and bob has exactly one message.
    let n = &first["notifications"][0];
    assert_eq!(n["state"], "pending", "{first}");
    assert_eq!(n["attempts"][0]["status"], 451, "{first}");
    assert_eq!(got.len(), 1, "{got:?}");
    let (_, after) = notifications(&app, "alice", id).await;
    let n = &after["notifications"][0];
    assert_eq!(n["state"], "delivered", "{after}");
    assert_eq!(n["attempt_count"], 2);
    app.advance(Duration::from_secs(600)).await;
    assert_eq!(smtp.messages().len(), 1, "sent twice");
}

/// Rule 32: connections to the mail server are kept and used again, and one the server has
/// closed meanwhile (here: the server restarted) is replaced at once: the next message goes
/// out on a new connection in its first attempt, not after a failed one and a backoff.
#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (aiosmtpd)"]
async fn rule_32_a_connection_the_mail_server_closed_is_replaced_within_the_attempt() {
    // Arrange: a first message leaves a connection in the pool; then the server restarts.
    let (first_dir, second_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let port = free_port().await;
    let smtp = Smtp::start(first_dir.path(), port, &[]).await;
    let resource = r#"
resource "one-reviewer" {
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;
    let app = TestApp::spawn(&format!("{}{resource}", mail_channel(port))).await;
    let ask = json!({ "resource": "one-reviewer", "reason": "x" });
    app.create("alice", ask.clone()).await;
    mails(&app, &smtp, 1).await;
    let Smtp { mut _child, .. } = smtp;
    _child.kill().await.expect("stop the SMTP server");
    let smtp = Smtp::start(second_dir.path(), port, &[]).await;

    // Act
    let req = app.create("alice", ask).await;
    let got = mails(&app, &smtp, 1).await;

    // Assert: delivered in one attempt, with no error recorded.
    assert_eq!(got.len(), 1, "{got:?}");
    let (_, list) = notifications(&app, "alice", id_of(&req)).await;
    let n = &list["notifications"][0];
    assert_eq!(n["state"], "delivered", "{list}");
    assert_eq!(n["attempt_count"], 1, "{list}");
}

#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (aiosmtpd and standardwebhooks)"]
async fn rule_32_webhook_notifications_verify_and_a_hanging_mail_server_delays_nothing_else() {
    // Arrange: a mail server that never answers DATA, a webhook receiver, and a rule that
    // sends every step to both. The clock is set to the real time, since the Standard
    // Webhooks library refuses signatures more than five minutes old.
    let dir = tempfile::tempdir().expect("temp dir");
    let smtp = Smtp::start(dir.path(), free_port().await, &["--hang"]).await;
    let hook = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hcl = format!(
        r#"{mail}
channel "siem" {{
  type   = "webhook"
  url    = "{url}"
  secret = "{secret}"
}}
notify "steps" {{
  events = ["step_entered", "request_approved"]
  to     = ["reviewers", "requester"]
  via    = ["mail", "siem"]
}}
{DB_RESOURCE}"#,
        mail = mail_channel(smtp.port),
        url = hook.url("events"),
    );
    let app = TestApp::spawn_with(r#"outbound_allow = ["127.0.0.1"]"#, &[], &hcl).await;
    let now = engine::Clock::now(&engine::clock::SystemClock).millis();
    app.clock.advance(Duration::from_millis(
        u64::try_from(now - START_MS).expect("after 2026"),
    ));

    // Act: with the real worker, alice asks and bob approves.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine::Worker::run(app.engine.clone(), stopped));
    let req = app
        .create(
            "alice",
            json!({ "resource": "prod-db", "reason": "x", "duration": "1h" }),
        )
        .await;
    app.approve("bob", &req).await;

    // Assert: the webhook gets one copy of each event while the mail server hangs.
    let got = eventually("the webhook gets both events", async || {
        let got = hook.got("events");
        (got.len() >= 2).then_some(got)
    })
    .await;
    assert_eq!(got.len(), 2, "{got:?}");
    let types: Vec<Value> = got.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(
        types,
        vec![json!("step_entered"), json!("request_approved")]
    );
    let step = got[0].json();
    // The rule names the reviewers and the requester; a step is entered by no one, so alice,
    // who asked, is among them.
    assert_eq!(
        step["data"]["recipients"],
        json!(["alice@example.com", "bob@example.com", "carol@example.com"])
    );
    // Bob approved: he is not told of what he did.
    assert_eq!(
        got[1].json()["data"]["recipients"],
        json!(["alice@example.com"])
    );
    assert_eq!(step["data"]["request"]["id"], id_of(&req));
    assert!(smtp.messages().is_empty());
    // Verified by the Standard Webhooks library, and refused once changed.
    let received: Vec<Value> = got
        .iter()
        .map(|r| json!({ "id": r.id, "timestamp": r.timestamp, "signature": r.signature, "body": r.body }))
        .collect();
    let file = dir.path().join("received.json");
    std::fs::write(&file, serde_json::to_string(&received).unwrap()).expect("write");
    let verified = run_python("verify_webhooks.py", &[secret, file.to_str().unwrap()]).await;
    assert_eq!(verified.trim(), "2");
    let _ = stop.send(true);
    worker.abort();
}

#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (aiosmtpd)"]
async fn rule_32_a_notification_is_delivered_after_the_server_is_killed_before_sending_it() {
    // Arrange: the real binary, with its mail server down, so that the step's notifications
    // are committed with the request and cannot be sent.
    let dir = tempfile::tempdir().expect("temp dir");
    let db = crate::helpers::database(dir.path()).await;
    let (port, smtp_port) = (free_port().await, free_port().await);
    let config = dir.path().join("countersign.hcl");
    let hcl = format!(
        r#"
server {{
  listen              = "127.0.0.1:{port}"
  public_url          = "http://127.0.0.1:{port}"
  database            = "{db}"
  callback_retry_base = "1s"
  callback_retry_cap  = "2s"
}}
{people}
{mail}
{DB_RESOURCE}"#,
        db = db.url(),
        people = people_and_connectors(dir.path()),
        mail = mail_channel(smtp_port),
    );
    std::fs::write(&config, hcl).expect("write the configuration");
    let mut api = Api::new(format!("http://127.0.0.1:{port}"));
    api.tokens
        .insert("alice".into(), mint_token(&config, "alice").await);
    let server = ServerProcess::start(&config, &api, 1).await;
    let body = json!({ "resource": "prod-db", "reason": "x", "duration": "1h" });
    let (created, req) = api.post("alice", "/v1/requests", body).await;
    assert_eq!(created, StatusCode::CREATED, "{req}");

    // Act: kill it (SIGKILL), start the mail server, start the server again.
    server.kill().await;
    let smtp = Smtp::start(dir.path(), smtp_port, &[]).await;
    let server = ServerProcess::start(&config, &api, 2).await;

    // Assert: both reviewers get their message, once each.
    let got = eventually(
        "the notifications are delivered after the restart",
        async || {
            let got = smtp.messages();
            (got.len() >= 2).then_some(got)
        },
    )
    .await;
    assert_eq!(smtp.to("bob").len(), 1, "{got:?}\n{}", server.logs());
    assert_eq!(smtp.to("carol").len(), 1, "{got:?}");
    server.kill().await;
}

/// The webhook events a receiver got, as (type, recipients).
fn events(hook: &Receiver) -> Vec<(String, Value)> {
    hook.got("events")
        .iter()
        .map(|r| {
            let v = r.json();
            let kind = v["type"].as_str().expect("a type").to_owned();
            (kind, v["data"]["recipients"].clone())
        })
        .collect()
}

#[tokio::test]
async fn rule_33_reminded_at_30_and_60_minutes_escalated_at_an_hour_and_the_leads_may_approve() {
    // Arrange: bob reviews; the step reminds every 30 minutes and escalates to the leads,
    // as reviewers, after an hour. Every step event goes to a webhook.
    let hook = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hcl = format!(
        r#"
group "leads" {{ members = ["dan@example.com", "eve@example.com"] }}
channel "hook" {{
  type   = "webhook"
  url    = "{url}"
  secret = "{secret}"
}}
notify "steps" {{
  events = ["step_entered", "reminder", "escalated"]
  to     = ["reviewers"]
  via    = ["hook"]
}}
resource "prod-db" {{
  max_duration = "1h"
  workflow = {{ steps = [ {{
    reviewers    = {{ one_of = ["bob@example.com"] }}
    remind_every = "30m"
    escalate     = [ {{ after = "1h", to = ["group:leads"], add_reviewers = true }} ]
  }} ] }}
}}
"#,
        url = hook.url("events"),
    );
    let app = TestApp::spawn_with(r#"outbound_allow = ["127.0.0.1"]"#, &[], &hcl).await;
    let bob = json!(["bob@example.com"]);

    // Act + assert: entered, then reminded at 30 minutes.
    let req = app
        .create("alice", json!({ "resource": "prod-db", "reason": "x" }))
        .await;
    app.tick().await;
    assert_eq!(events(&hook), vec![("step_entered".into(), bob.clone())]);
    app.advance(Duration::from_secs(29 * 60)).await;
    assert_eq!(events(&hook).len(), 1, "reminded early");
    app.advance(Duration::from_secs(60)).await;
    assert_eq!(events(&hook)[1], ("reminder".into(), bob.clone()));

    // Act + assert: at an hour, reminded again and escalated to the leads.
    app.advance(Duration::from_secs(30 * 60)).await;
    let got = events(&hook);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.contains(&("reminder".into(), bob.clone())), "{got:?}");
    let leads = json!(["dan@example.com", "eve@example.com"]);
    assert!(got.contains(&("escalated".into(), leads)), "{got:?}");
    assert!(
        hook.got("events")
            .iter()
            .all(|r| crate::callbacks::verify(secret, r))
    );

    // Assert: bob is still eligible, and so are the leads; the escalation is audited.
    let r = app.request("alice", &req).await;
    let eligible = &r["steps"][0]["eligible"];
    assert_eq!(
        eligible,
        &json!(["bob@example.com", "dan@example.com", "eve@example.com"])
    );
    let (_, audit) = app.get("root", "/v1/audit?limit=1000").await;
    let escalated: Vec<&Value> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event"]["kind"] == "step_escalated")
        .collect();
    assert_eq!(escalated.len(), 1, "{audit}");
    assert_eq!(escalated[0]["event"]["detail"]["add_reviewers"], "true");

    // Act + assert: a lead approves; no further reminder or escalation comes.
    let approved = app.approve("dan", &req).await;
    assert_eq!(approved["state"], "approved");
    let before = events(&hook).len();
    app.advance(Duration::from_secs(3 * 3600)).await;
    assert_eq!(events(&hook).len(), before);
}
