//! The Slack app (issue 16; rules 35 and 36) against a fake Slack started by each test: a
//! real HTTP server on loopback that answers the Web API methods the app calls as Slack
//! documents them (`{"ok": true, …}`, or `{"ok": false, "error": …}`, or 429 with
//! `Retry-After`) and records every call. The tests play Slack's side too: they sign their
//! requests to `/slack/events` with the signing secret, as Slack does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, email, eventually, id_of, run_python};
use crate::portal::{Web, csrf};

/// Slack's own example secret (its request-verification guide).
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT_TOKEN: &str = "xoxb-test-token";

/// One Web API call the app made.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub auth: String,
    pub body: Value,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Call>,
    next_ts: u64,
    /// Scripted answers per method, used in order: (status, Retry-After, body).
    script: BTreeMap<String, VecDeque<(u16, Option<u64>, Value)>>,
    /// users.info's emails, by Slack user id.
    emails: BTreeMap<String, String>,
    /// What apps.connections.open answers: the fake Socket Mode server's URL.
    socket_url: Option<String>,
}

/// A fake Slack Web API on loopback.
#[derive(Clone)]
pub struct FakeSlack {
    pub base: String,
    state: Arc<Mutex<FakeState>>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = axum::Router::new()
            .route("/api/{method}", axum::routing::post(answer))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeSlack {
            base: format!("http://{addr}/api/"),
            state,
        }
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        let s = self.state.lock().expect("lock");
        s.calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    pub fn all_calls(&self) -> Vec<Call> {
        self.state.lock().expect("lock").calls.clone()
    }

    fn script(&self, method: &str, status: u16, retry_after: Option<u64>, body: Value) {
        let mut s = self.state.lock().expect("lock");
        s.script
            .entry(method.to_owned())
            .or_default()
            .push_back((status, retry_after, body));
    }
}

async fn answer(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut s = state.lock().expect("lock");
    s.calls.push(Call {
        method: method.clone(),
        auth: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: body.clone(),
    });
    if let Some((status, retry_after, reply)) =
        s.script.get_mut(&method).and_then(VecDeque::pop_front)
    {
        let mut res = (
            axum::http::StatusCode::from_u16(status).expect("status"),
            axum::Json(reply),
        )
            .into_response();
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("header"));
        }
        return res;
    }
    s.next_ts += 1;
    let ts = format!("1767225600.{:06}", s.next_ts);
    // A DM is posted to a user id and lands in the DM channel (D…).
    let channel = body["channel"]
        .as_str()
        .map(|c| match c.strip_prefix('U') {
            Some(rest) => format!("D{rest}"),
            None => c.to_owned(),
        })
        .unwrap_or_default();
    let reply = match method.as_str() {
        "chat.postMessage" => json!({ "ok": true, "channel": channel, "ts": ts }),
        "chat.update" => json!({ "ok": true, "channel": channel, "ts": body["ts"] }),
        "chat.postEphemeral" => json!({ "ok": true, "message_ts": ts }),
        "views.open" => json!({ "ok": true, "view": { "id": "V1" } }),
        "apps.connections.open" => match &s.socket_url {
            Some(url) => json!({ "ok": true, "url": url }),
            None => json!({ "ok": false, "error": "not_allowed_token_type" }),
        },
        "users.lookupByEmail" => {
            let email = body["email"].as_str().unwrap_or_default();
            match s.emails.iter().find(|(_, e)| e.as_str() == email) {
                Some((id, _)) => json!({ "ok": true, "user": { "id": id } }),
                None => json!({ "ok": false, "error": "users_not_found" }),
            }
        }
        "users.info" => {
            let user = body["user"].as_str().unwrap_or_default();
            match s.emails.get(user) {
                Some(e) => json!({ "ok": true, "user": { "id": user, "profile": { "email": e } } }),
                None => json!({ "ok": false, "error": "user_not_found" }),
            }
        }
        _ => json!({ "ok": false, "error": "unknown_method" }),
    };
    axum::Json(reply).into_response()
}

/// The Slack user id the tests give a person: `U` and their name in capitals.
pub fn slack_id(user: &str) -> String {
    format!("U{}", user.to_uppercase())
}

/// The channel block of the fake, and the server settings it needs. Posts are not paced
/// (the manual clock stands still between a test's steps) unless `extra` sets
/// `per_channel_interval`.
pub fn slack_channel(fake: &FakeSlack, extra: &str) -> String {
    let pace = if extra.contains("per_channel_interval") {
        ""
    } else {
        "per_channel_interval = \"0s\""
    };
    format!(
        r#"
channel "slack" {{
  type           = "slack"
  bot_token      = "{BOT_TOKEN}"
  signing_secret = "{SIGNING_SECRET}"
  api_url        = "{}"
  timeout        = "2s"
  {pace}
  {extra}
}}
"#,
        fake.base
    )
}

const SERVER: &str = r#"outbound_allow = ["127.0.0.1"]"#;

/// The seed-001 workflow, part of a workflow, with cards to reviewers (DMs) and to
/// `#access`, and the requester told of outcomes.
const SEED_001: &str = r#"
resource "prod-db-read" {
  connector    = "log"
  grant        = { role = "readonly" }
  description  = "Read-only access to the production database"
  max_duration = "24h"
  durations    = ["5m", "15m", "1h", "4h", "24h"]
  part_of      = "incident-response"
  pending_ttl  = "2h"
  workflow = {
    steps = [
      { reviewers = { one_of = ["alice@example.com", "bob@example.com", "carol@example.com"] } },
      { reviewers = { all_of = ["dan@example.com", "eve@example.com"] } },
      { reviewers = { one_of = ["frank@example.com"] } },
    ]
  }
}

notify "cards" {
  events = ["step_entered"]
  to     = ["reviewers"]
  via    = ["slack", "slack:#access"]
}

notify "requester" {
  events = ["request_approved", "request_denied", "request_expired", "grant_expiring"]
  to     = ["requester"]
  via    = ["slack"]
}
"#;

async fn spawn(fake: &FakeSlack, extra: &str) -> TestApp {
    TestApp::spawn_with(
        SERVER,
        &[],
        &format!("{}\n{SEED_001}", slack_channel(fake, extra)),
    )
    .await
}

/// Slack's side: signs and POSTs bodies to `/slack/events`.
pub struct Slack {
    base: String,
    http: reqwest::Client,
}

/// A new trigger id, as Slack gives every click, command and submission its own.
pub fn trigger(who: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("trigger-{who}-{n}")
}

pub fn sign(secret: &str, ts: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

impl Slack {
    pub fn new(app: &TestApp) -> Slack {
        Slack {
            base: app.api.base.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// POSTs `body` signed at `ts` with `secret`.
    pub async fn raw(&self, body: &str, ts: i64, secret: &str) -> (StatusCode, String) {
        let res = self
            .http
            .post(format!("{}/slack/events", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sign(secret, ts, body))
            .body(body.to_owned())
            .send()
            .await
            .expect("POST /slack/events");
        let status = res.status();
        (status, res.text().await.expect("body"))
    }

    /// A correctly signed POST, timed by the server's clock.
    pub async fn send(&self, app: &TestApp, body: &str) -> (StatusCode, String) {
        let now = app.engine.now().millis() / 1000;
        self.raw(body, now, SIGNING_SECRET).await
    }

    pub async fn command(&self, app: &TestApp, user: &str, text: &str) -> Value {
        let body = serde_urlencoded::to_string([
            ("command", "/countersign"),
            ("text", text),
            ("user_id", &slack_id(user)),
            ("team_id", "T1"),
            ("trigger_id", &trigger(user)),
        ])
        .expect("form");
        let (status, text) = self.send(app, &body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        // Empty when a modal follows.
        if text.is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&text).expect("JSON")
    }

    pub async fn payload(&self, app: &TestApp, payload: &Value) -> (StatusCode, String) {
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form");
        self.send(app, &body).await
    }

    /// A click on a card's button.
    pub async fn click(&self, app: &TestApp, user: &str, action: &str, request: &str) {
        let p = json!({
            "type": "block_actions",
            "user": { "id": slack_id(user) },
            "trigger_id": trigger(user),
            "channel": { "id": "C_ACCESS" },
            "actions": [{ "action_id": action, "value": request }],
        });
        let (status, text) = self.payload(app, &p).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }

    /// A modal submitted: the decision. Returns the status and Slack's JSON answer (empty
    /// when the modal closes).
    pub async fn submit(
        &self,
        app: &TestApp,
        user: &str,
        callback: &str,
        request: &str,
        values: Value,
    ) -> (StatusCode, Value) {
        let p = json!({
            "type": "view_submission",
            "user": { "id": slack_id(user) },
            "trigger_id": trigger(user),
            "view": { "callback_id": callback, "private_metadata": request,
                      "state": { "values": values } },
        });
        let (status, text) = self.payload(app, &p).await;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }
}

/// The approve modal's values: a duration, and "approve entire workflow" if `workflow`.
fn approve_values(duration: &str, workflow: bool, comment: &str) -> Value {
    let picked: Vec<Value> = if workflow {
        vec![json!({ "value": "workflow" })]
    } else {
        vec![]
    };
    json!({
        "duration": { "duration": { "type": "static_select",
                                    "selected_option": { "value": duration } } },
        "scope": { "scope": { "type": "checkboxes", "selected_options": picked } },
        "comment": { "comment": { "type": "plain_text_input", "value": comment } },
    })
}

/// Links `user`'s Slack account the way a person does (rule 35): `/countersign link` in
/// Slack, then the URL it answers with, opened signed in to the portal, and its button.
pub async fn link(app: &TestApp, slack: &Slack, user: &str) -> Value {
    let answer = slack.command(app, user, "link").await;
    assert_eq!(answer["response_type"], "ephemeral", "{answer}");
    let text = answer["text"].as_str().expect("text");
    let start = text.find("/slack/link/").expect("a link URL");
    let path: String = text[start..]
        .chars()
        .take_while(|c| *c != '|' && *c != '>')
        .collect();
    let mut web = Web::sign_in(app, user).await;
    let page = web.get(&path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.html.contains(&slack_id(user)), "{}", page.html);
    let token = csrf(&page.html);
    let done = web.post(&path, &[("csrf", &token)]).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.html);
    assert!(done.html.contains("id=\"linked\""), "{}", done.html);
    json!({ "path": path, "done": done.html })
}

/// The latest version of every updated copy of a card, by (channel, ts).
fn cards(fake: &FakeSlack) -> BTreeMap<(String, String), Value> {
    fake.calls("chat.update")
        .into_iter()
        .map(|c| {
            let key = (
                c.body["channel"].as_str().unwrap_or_default().to_owned(),
                c.body["ts"].as_str().unwrap_or_default().to_owned(),
            );
            (key, c.body)
        })
        .collect()
}

/// Whether a card (or message) has a button with this action id.
fn has_button(card: &Value, action: &str) -> bool {
    card["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["elements"].as_array().into_iter().flatten())
        .any(|e| e["action_id"] == action)
}

fn text_of(card: &Value) -> String {
    card.to_string()
}

/// The card posts (not thread replies, not plain messages) made so far, by channel.
fn card_posts(fake: &FakeSlack) -> Vec<(String, Value)> {
    fake.calls("chat.postMessage")
        .into_iter()
        .filter(|c| c.body.get("thread_ts").is_none() && has_button(&c.body, "cs_view"))
        .filter(|c| text_of(&c.body).contains("asks for"))
        .map(|c| {
            (
                c.body["channel"].as_str().unwrap_or_default().to_owned(),
                c.body,
            )
        })
        .collect()
}

/// Rule 35: a request whose signature or timestamp is wrong is refused before anything is
/// read, and changes nothing; an unlinked Slack user is refused; `match_by_email` is off by
/// default (Slack is not even asked for the user's email).
#[tokio::test]
async fn rule_35_bad_signatures_old_timestamps_and_unlinked_users_change_nothing() {
    // Arrange
    let fake = FakeSlack::start().await;
    let app = spawn(&fake, "").await;
    let slack = Slack::new(&app);
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-db-read", "reason": "INC-42", "duration": "4h" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    let approve = json!({
        "type": "view_submission",
        "user": { "id": slack_id("carol") },
        "view": { "callback_id": "cs_approve_modal", "private_metadata": id,
                  "state": { "values": approve_values("1h", false, "") } },
    });
    let body = serde_urlencoded::to_string([("payload", approve.to_string())]).expect("form");
    let now = app.engine.now().millis() / 1000;

    // Act
    let (wrong_secret, _) = slack.raw(&body, now, "another-secret").await;
    let (old, _) = slack.raw(&body, now - 301, SIGNING_SECRET).await;
    let (future, _) = slack.raw(&body, now + 301, SIGNING_SECRET).await;
    let unsigned = reqwest::Client::new()
        .post(format!("{}/slack/events", app.api.base))
        .body(body.clone())
        .send()
        .await
        .expect("POST")
        .status();
    let (unlinked, answer) = slack
        .submit(
            &app,
            "carol",
            "cs_approve_modal",
            &id,
            approve_values("1h", false, ""),
        )
        .await;
    slack.click(&app, "carol", "cs_approve", &id).await;

    // Assert
    assert_eq!(wrong_secret, StatusCode::UNAUTHORIZED);
    assert_eq!(old, StatusCode::UNAUTHORIZED);
    assert_eq!(future, StatusCode::UNAUTHORIZED);
    assert_eq!(unsigned, StatusCode::UNAUTHORIZED);
    assert_eq!(unlinked, StatusCode::OK);
    assert_eq!(answer["response_action"], "errors", "{answer}");
    assert!(
        answer["errors"]["comment"]
            .as_str()
            .is_some_and(|m| m.contains("not linked")),
        "{answer}"
    );
    let told = eventually("the unlinked clicker is told", async || {
        let e = fake.calls("chat.postEphemeral");
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(told[0].body["user"], slack_id("carol"));
    assert!(
        text_of(&told[0].body).contains("not linked"),
        "{:?}",
        told[0]
    );
    assert!(
        fake.calls("views.open").is_empty(),
        "no modal for an unlinked user"
    );
    assert!(
        fake.calls("users.info").is_empty(),
        "match_by_email is off by default: Slack is not asked for an email"
    );
    assert!(told[0].auth == format!("Bearer {BOT_TOKEN}"));
    let now_req = app.request("grace", &req).await;
    assert_eq!(now_req["state"], "pending");
    assert_eq!(
        now_req["steps"][0]["reviews"],
        json!([]),
        "nothing was recorded"
    );
}

/// Rule 35: the link flow end to end: `/countersign link` answers only to its user with a
/// one-time URL; the portal page names the Slack account and links it on a button (with
/// the session's CSRF token); the URL works once; the link is audited; `/countersign unlink`
/// removes it (audited), after which the account acts as nobody.
#[tokio::test]
async fn rule_35_linking_a_slack_account_through_the_portal() {
    // Arrange
    let fake = FakeSlack::start().await;
    let app = spawn(&fake, "").await;
    let slack = Slack::new(&app);

    // Act
    let first = link(&app, &slack, "carol").await;
    let path = first["path"].as_str().expect("path").to_owned();
    let mut again = Web::sign_in(&app, "mallory").await;
    let reused = again.get(&path).await;
    let help = slack.command(&app, "carol", "help").await;
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-db-read", "reason": "INC-42", "duration": "1h" }),
        )
        .await;
    let unlinked = slack.command(&app, "carol", "unlink").await;
    let (_, refused) = slack
        .submit(
            &app,
            "carol",
            "cs_approve_modal",
            id_of(&req),
            approve_values("1h", false, ""),
        )
        .await;
    let again = slack.command(&app, "carol", "unlink").await;

    // Assert
    assert_eq!(
        reused.status,
        StatusCode::NOT_FOUND,
        "a link URL works once: {}",
        reused.html
    );
    assert!(
        help["text"]
            .as_str()
            .is_some_and(|t| t.contains("/countersign link"))
    );
    assert_eq!(
        unlinked["text"],
        "Your Slack account no longer acts as carol@example.com in Countersign."
    );
    assert!(text_of(&refused).contains("not linked"), "{refused}");
    assert_eq!(app.request("grace", &req).await["state"], "pending");
    assert!(text_of(&again).contains("is not linked"), "{again}");
    let (_, audit) = app.get("root", "/v1/audit?limit=500").await;
    let linked: Vec<&Value> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["kind"] == "slack_linked")
        .collect();
    assert_eq!(linked.len(), 1, "{audit}");
    assert_eq!(linked[0]["actor"], email("carol"));
    assert_eq!(linked[0]["detail"]["slack_user"], slack_id("carol"));
    let removed: Vec<&Value> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["kind"] == "slack_unlinked")
        .collect();
    assert_eq!(removed.len(), 1, "{audit}");
    assert_eq!(removed[0]["actor"], email("carol"));
}

/// Seed 001 decided entirely from Slack (rules 35 and 36): three linked reviewers' approve
/// modals, the first narrowing the duration and the last approving the entire workflow;
/// every copy of the card updated after each step and at the end, with the outcome said in
/// each thread; the requester's DM; self-approval refused.
#[tokio::test]
async fn rule_36_seed_001_decided_from_slack_updates_every_copy_of_the_card() {
    // Arrange
    let fake = FakeSlack::start().await;
    let app = spawn(&fake, "").await;
    let slack = Slack::new(&app);
    for user in ["carol", "dan", "eve", "frank", "grace"] {
        link(&app, &slack, user).await;
    }
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-db-read", "reason": "INC-42 slow queries", "duration": "4h" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    app.tick().await;
    let step_1_cards = card_posts(&fake);

    // Act
    // grace, the requester, cannot approve her own request from Slack.
    let (own, own_answer) = slack
        .submit(
            &app,
            "grace",
            "cs_approve_modal",
            &id,
            approve_values("1h", false, ""),
        )
        .await;
    slack.click(&app, "carol", "cs_approve", &id).await;
    let modal = eventually("carol's approve modal opens", async || {
        fake.calls("views.open").into_iter().next()
    })
    .await;
    let (s1, a1) = slack
        .submit(
            &app,
            "carol",
            "cs_approve_modal",
            &id,
            approve_values("1h", false, "ok"),
        )
        .await;
    app.tick().await;
    let after_step_1 = cards(&fake);
    for user in ["dan", "eve"] {
        let (s, a) = slack
            .submit(
                &app,
                user,
                "cs_approve_modal",
                &id,
                approve_values("1h", false, ""),
            )
            .await;
        assert_eq!((s, a), (StatusCode::OK, Value::Null), "{user} approves");
    }
    app.tick().await;
    let (s3, a3) = slack
        .submit(
            &app,
            "frank",
            "cs_approve_modal",
            &id,
            approve_values("1h", true, ""),
        )
        .await;
    app.tick().await;

    // Assert
    assert_eq!(own, StatusCode::OK);
    assert!(
        own_answer["errors"]["comment"]
            .as_str()
            .is_some_and(|m| m.contains("your own request")),
        "self-approval refused: {own_answer}"
    );
    // Step 1's card went to carol (the one linked reviewer of step 1) and to #access; alice
    // and bob have no link, so their DMs failed without retrying.
    let channels: Vec<&str> = step_1_cards.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(channels, ["UCAROL", "access"], "{step_1_cards:?}");
    let first = &step_1_cards[0].1;
    assert!(has_button(first, "cs_approve") && has_button(first, "cs_deny"));
    assert!(text_of(first).contains("Pending: step 1 of 3, 0 of 1 approval"));
    assert!(text_of(first).contains("Read-only access to the production database"));
    assert!(
        modal.body["trigger_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("trigger-carol-")),
        "{}",
        modal.body
    );
    assert_eq!(modal.body["view"]["callback_id"], "cs_approve_modal");
    let options: Vec<&str> = modal.body["view"]["blocks"][1]["element"]["options"]
        .as_array()
        .expect("duration options")
        .iter()
        .map(|o| o["value"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(options, ["5m", "15m", "1h", "4h"], "up to the requested 4h");
    assert!(text_of(&modal.body).contains("Approve entire workflow"));
    assert_eq!((s1, a1), (StatusCode::OK, Value::Null));
    // After step 1, step 1's copies (carol's DM and #access) show step 2, buttons kept.
    let updated: Vec<&str> = after_step_1.keys().map(|(c, _)| c.as_str()).collect();
    assert!(
        updated.contains(&"DCAROL") && updated.contains(&"access"),
        "{updated:?}"
    );
    for card in after_step_1.values() {
        assert!(
            text_of(card).contains("Pending: step 2 of 3, 0 of 2 approvals"),
            "{card}"
        );
        assert!(has_button(card, "cs_approve"));
    }
    assert_eq!((s3, a3), (StatusCode::OK, Value::Null));
    let done = app.request("grace", &req).await;
    assert_eq!(done["state"], "approved", "{done}");
    assert_eq!(done["steps"][0]["reviews"][0]["duration"], "1h");
    assert_eq!(done["steps"][2]["reviews"][0]["scope"], "workflow");
    assert_eq!(done["steps"][0]["reviews"][0]["by"], email("carol"));
    // Every copy ever posted (step 1's, step 2's, step 3's) now shows the outcome without
    // the decision buttons, and its thread says so.
    let posts = card_posts(&fake);
    let last = cards(&fake);
    let mut posted: Vec<&str> = posts.iter().map(|(c, _)| c.as_str()).collect();
    posted.sort_unstable();
    assert_eq!(
        posted,
        [
            "UCAROL", "UDAN", "UEVE", "UFRANK", "access", "access", "access"
        ],
        "a card per step to its linked reviewers and to #access"
    );
    assert_eq!(last.len(), 7, "every copy was updated: {:?}", last.keys());
    for ((channel, _), card) in &last {
        assert!(
            text_of(card).contains("Approved by frank@example.com"),
            "{channel}: {card}"
        );
        assert!(!has_button(card, "cs_approve"), "{channel}: {card}");
    }
    let replies: Vec<Call> = fake
        .calls("chat.postMessage")
        .into_iter()
        .filter(|c| c.body.get("thread_ts").is_some())
        .collect();
    assert_eq!(replies.len(), last.len(), "one thread reply per copy");
    // The requester's DM says it was approved.
    let dm = fake
        .calls("chat.postMessage")
        .into_iter()
        .find(|c| c.body["channel"] == slack_id("grace"))
        .expect("grace's DM");
    assert!(text_of(&dm.body).contains("was approved"), "{:?}", dm.body);
}

/// Rule 36: a decision made in the portal updates the Slack card, and so does a request that
/// expires; the requester hears of both by DM, the denial with its comment.
#[tokio::test]
async fn rule_36_a_portal_decision_and_an_expiry_update_the_card() {
    // Arrange
    let fake = FakeSlack::start().await;
    let app = spawn(&fake, "").await;
    let slack = Slack::new(&app);
    for user in ["carol", "grace"] {
        link(&app, &slack, user).await;
    }
    let ask = json!({ "resource": "prod-db-read", "reason": "INC-42", "duration": "1h" });
    let denied = app.create("grace", ask.clone()).await;
    let expiring = app.create("grace", ask).await;
    app.tick().await;

    // Act
    let mut web = Web::sign_in(&app, "bob").await;
    let page = web.get(&format!("/requests/{}", id_of(&denied))).await;
    let token = csrf(&page.html);
    let done = web
        .post(
            &format!("/requests/{}/deny", id_of(&denied)),
            &[("csrf", &token), ("comment", "use the replica")],
        )
        .await;
    app.tick().await;
    app.advance(Duration::from_secs(2 * 3600)).await;

    // Assert
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    let last = cards(&fake);
    let shown = |id: &Value| -> Vec<Value> {
        last.values()
            .filter(|c| text_of(c).contains(id_of(id)))
            .cloned()
            .collect()
    };
    let denied_cards = shown(&denied);
    let expired_cards = shown(&expiring);
    assert_eq!(denied_cards.len(), 2, "carol's DM and #access: {last:?}");
    assert_eq!(expired_cards.len(), 2, "carol's DM and #access: {last:?}");
    for c in &denied_cards {
        assert!(
            text_of(c).contains("Denied by bob@example.com: use the replica"),
            "{c}"
        );
        assert!(
            !has_button(c, "cs_approve") && has_button(c, "cs_view"),
            "{c}"
        );
    }
    for c in &expired_cards {
        assert!(text_of(c).contains("Expired without a decision"), "{c}");
        assert!(!has_button(c, "cs_approve"), "{c}");
    }
    let dms: Vec<String> = fake
        .calls("chat.postMessage")
        .into_iter()
        .filter(|c| c.body["channel"] == slack_id("grace"))
        .map(|c| text_of(&c.body))
        .collect();
    assert_eq!(dms.len(), 2, "{dms:?}");
    assert!(
        dms.iter()
            .any(|d| d.contains("was denied") && d.contains("use the replica"))
    );
    assert!(dms.iter().any(|d| d.contains("expired without a decision")));
}

/// Slack's limits (item 8): a 429 with `Retry-After: 2` is honoured on the manual clock and
/// nothing is lost; `channel_not_found` fails at once and is not retried.
#[tokio::test]
async fn slack_rate_limit_is_honoured_and_a_missing_channel_is_not_retried() {
    // Arrange
    let fake = FakeSlack::start().await;
    let app = spawn(&fake, "").await;
    let slack = Slack::new(&app);
    link(&app, &slack, "carol").await;
    fake.script(
        "chat.postMessage",
        429,
        Some(2),
        json!({ "ok": false, "error": "ratelimited" }),
    );
    fake.script(
        "chat.postMessage",
        200,
        None,
        json!({ "ok": false, "error": "channel_not_found" }),
    );
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-db-read", "reason": "INC-42", "duration": "1h" }),
        )
        .await;

    // Act
    app.tick().await;
    let first = fake.calls("chat.postMessage").len();
    app.advance(Duration::from_secs(1)).await;
    let after_1s = fake.calls("chat.postMessage").len();
    app.advance(Duration::from_secs(1)).await;
    let after_2s = fake.calls("chat.postMessage").len();
    app.advance(Duration::from_secs(3600)).await;
    let (_, list) = app
        .get(
            "root",
            &format!("/v1/requests/{}/notifications", id_of(&req)),
        )
        .await;

    // Assert
    assert_eq!(
        first, 2,
        "both copies tried: one was rate limited, one refused"
    );
    assert_eq!(after_1s, 2, "nothing is sent before Retry-After");
    assert_eq!(after_2s, 3, "the rate-limited copy is sent after 2 s");
    let items = list["notifications"].as_array().expect("notifications");
    let slack: Vec<&Value> = items
        .iter()
        .filter(|n| n["channel"] == "slack" && n["to"].is_string())
        .collect();
    // alice's and bob's DMs (no link), carol's DM and #access.
    assert_eq!(slack.len(), 4, "{list}");
    let delivered: Vec<&&Value> = slack.iter().filter(|n| n["state"] == "delivered").collect();
    assert_eq!(delivered.len(), 1, "{list}");
    assert_eq!(
        delivered[0]["attempt_count"], 2,
        "sent on its second attempt"
    );
    let refused: Vec<&&Value> = slack
        .iter()
        .filter(|n| text_of(n).contains("channel_not_found"))
        .collect();
    assert_eq!(refused.len(), 1, "{list}");
    assert_eq!(refused[0]["state"], "failed");
    assert_eq!(refused[0]["attempt_count"], 1, "not retried");
    let unlinked = slack
        .iter()
        .filter(|n| text_of(n).contains("has not linked a Slack account"))
        .count();
    assert_eq!(unlinked, 2, "{list}");
}

/// Rule 35 with `match_by_email = true`: an unlinked Slack user acts as the configured user
/// whose email `users.info` gives; one whose email is unknown is refused.
#[tokio::test]
async fn rule_35_match_by_email_acts_as_the_user_with_that_email() {
    // Arrange
    let fake = FakeSlack::start().await;
    let app = spawn(&fake, "match_by_email = true").await;
    let slack = Slack::new(&app);
    {
        let mut s = fake.state.lock().expect("lock");
        s.emails.insert(slack_id("carol"), email("carol"));
        s.emails
            .insert(slack_id("stranger"), "stranger@elsewhere.example".into());
    }
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-db-read", "reason": "INC-42", "duration": "1h" }),
        )
        .await;
    let id = id_of(&req).to_owned();

    // Act
    let (_, stranger) = slack
        .submit(&app, "stranger", "cs_deny_modal", &id, json!({}))
        .await;
    let (status, answer) = slack
        .submit(
            &app,
            "carol",
            "cs_deny_modal",
            &id,
            json!({ "comment": { "comment": { "type": "plain_text_input", "value": "not now" } } }),
        )
        .await;

    // Assert
    assert_eq!(stranger["response_action"], "errors", "{stranger}");
    assert_eq!((status, answer), (StatusCode::OK, Value::Null));
    let r = app.request("grace", &req).await;
    assert_eq!(r["state"], "denied");
    assert_eq!(r["outcome"]["actioned_by"]["id"], email("carol"));
    assert_eq!(r["outcome"]["comment"], "not now");
    assert_eq!(fake.calls("users.info").len(), 2);
    // Her card reached her by her email too, without a link; alice and bob, whom Slack does
    // not know, were not reached.
    app.tick().await;
    let dms: Vec<String> = card_posts(&fake).into_iter().map(|(c, _)| c).collect();
    assert!(dms.contains(&slack_id("carol")), "{dms:?}");
    let looked_up = fake.calls("users.lookupByEmail");
    assert_eq!(
        looked_up.len(),
        4,
        "alice, bob and carol for the card, grace for the denial"
    );
}

/// Every Block Kit message and modal the app sent in a whole flow (cards pending and
/// decided, thread replies, DMs, both modals, ephemeral refusals) is checked with the model
/// classes of Slack's Python SDK (`tests/python/check_slack.py`).
#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (bash .ci/python.sh) for slack_sdk"]
async fn slack_payloads_pass_slack_sdks_models() {
    // Arrange
    let fake = FakeSlack::start().await;
    let options = crate::portal::Options::start().await;
    let resources = format!(
        "{}\n{SEED_001}\n{}",
        slack_channel(&fake, ""),
        crate::portal::typed_resources(&options.base)
    );
    let app = TestApp::spawn_with(SERVER, &[], &resources).await;
    let slack = Slack::new(&app);
    for user in ["carol", "grace"] {
        link(&app, &slack, user).await;
    }
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-db-read", "reason": "INC-42 <!channel> & co", "duration": "4h" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    app.tick().await;
    slack.click(&app, "carol", "cs_approve", &id).await;
    slack.click(&app, "carol", "cs_deny", &id).await;
    slack.click(&app, "carol", "cs_assign", &id).await;
    slack.click(&app, "carol", "cs_comment", &id).await;
    slack.click(&app, "grace", "cs_approve", &id).await;
    eventually("four modals and a refusal", async || {
        (fake.calls("views.open").len() == 4 && !fake.calls("chat.postEphemeral").is_empty())
            .then_some(())
    })
    .await;
    slack
        .submit(
            &app,
            "carol",
            "cs_comment_modal",
            &id,
            json!({ "comment": { "comment": { "type": "plain_text_input", "value": "why <!here>?" } } }),
        )
        .await;
    slack
        .submit(
            &app,
            "carol",
            "cs_approve_modal",
            &id,
            approve_values("1h", true, "ok"),
        )
        .await;
    for user in ["dan", "eve", "frank"] {
        app.approve(user, &req).await;
    }
    app.tick().await;
    // The grant's expiry DM (Extend, Drop with its confirmation), its extend modal, and the
    // catalog and request modals of `/countersign` (every field type).
    app.advance(Duration::from_secs(50 * 60)).await;
    let grant = app.request("grace", &req).await["grant_id"]
        .as_str()
        .expect("grant")
        .to_owned();
    slack.click(&app, "grace", "cs_extend", &grant).await;
    slack.command(&app, "grace", "request").await;
    eventually("the extend and catalog modals", async || {
        (fake.calls("views.open").len() == 6).then_some(())
    })
    .await;
    let (_, next) = slack
        .submit(
            &app,
            "grace",
            "cs_pick_modal",
            "",
            json!({ "resource": { "resource": { "type": "static_select",
                                                "selected_option": { "value": "deploy-db" } } } }),
        )
        .await;

    // Act
    let mut items = vec![];
    for (n, c) in fake.all_calls().into_iter().enumerate() {
        let (kind, payload) = match c.method.as_str() {
            "views.open" => ("view", c.body["view"].clone()),
            "chat.postMessage" | "chat.update" if c.body.get("blocks").is_some() => {
                let mut p = c.body.clone();
                for k in ["channel", "ts", "unfurl_links"] {
                    p.as_object_mut().expect("object").remove(k);
                }
                ("message", p)
            }
            _ => continue,
        };
        items
            .push(json!({ "what": format!("{n} {}", c.method), "kind": kind, "payload": payload }));
    }
    items.push(json!({ "what": "the request modal", "kind": "view", "payload": next["view"] }));
    let has = |what: &str| items.iter().any(|i| i.to_string().contains(what));
    assert!(
        has("cs_extend") && has("cs_drop") && has("cs_extend_modal"),
        "{items:?}"
    );
    assert!(has("cs_pick_modal") && has("external_select") && has("number_input"));
    let path = app.dir.path().join("slack-payloads.json");
    std::fs::write(&path, serde_json::to_string(&items).expect("JSON")).expect("write");
    let out = run_python("check_slack.py", &[path.to_str().expect("path")]).await;

    // Assert
    assert!(items.len() >= 10, "{items:?}");
    assert!(!out.contains("FAIL"), "{out}");
}

/// Item 7: a step with `slack_decisions = false` shows "Review in portal" instead of Approve
/// and Deny, and a decision or an assignment sent from Slack anyway is refused and changes
/// nothing; the resource's other steps are decided from Slack as usual.
#[tokio::test]
async fn slack_decisions_false_keeps_a_step_in_the_portal() {
    // Arrange
    let fake = FakeSlack::start().await;
    let resources = format!(
        r#"{}
resource "prod-root" {{
  max_duration = "1h"
  workflow = {{
    steps = [
      {{ reviewers = {{ one_of = ["carol@example.com"] }} }},
      {{ reviewers = {{ one_of = ["dan@example.com"] }}, slack_decisions = false }},
    ]
  }}
}}
notify "cards" {{
  events = ["step_entered"]
  to     = ["reviewers"]
  via    = ["slack"]
}}
"#,
        slack_channel(&fake, "")
    );
    let app = TestApp::spawn_with(SERVER, &[], &resources).await;
    let slack = Slack::new(&app);
    for user in ["carol", "dan"] {
        link(&app, &slack, user).await;
    }
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-root", "reason": "rotate keys" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    app.tick().await;

    // Act
    let (s1, a1) = slack
        .submit(
            &app,
            "carol",
            "cs_approve_modal",
            &id,
            approve_values("1h", false, ""),
        )
        .await;
    app.tick().await;
    slack.click(&app, "dan", "cs_approve", &id).await;
    let (s2, a2) = slack
        .submit(
            &app,
            "dan",
            "cs_approve_modal",
            &id,
            approve_values("1h", false, ""),
        )
        .await;

    // Assert
    assert_eq!((s1, a1), (StatusCode::OK, Value::Null), "step 1 from Slack");
    let posts = card_posts(&fake);
    let dan_card = &posts
        .iter()
        .find(|(c, _)| c == &slack_id("dan"))
        .expect("dan's card")
        .1;
    assert!(!has_button(dan_card, "cs_approve"), "{dan_card}");
    assert!(text_of(dan_card).contains("Review in portal"), "{dan_card}");
    assert_eq!(s2, StatusCode::OK);
    assert!(
        a2["errors"]["comment"]
            .as_str()
            .is_some_and(|m| m.contains("portal only")),
        "{a2}"
    );
    slack.click(&app, "dan", "cs_assign", &id).await;
    let told = eventually("dan is told to use the portal, twice", async || {
        let t = fake.calls("chat.postEphemeral");
        (t.len() == 2).then_some(t)
    })
    .await;
    assert!(
        told.iter()
            .all(|t| text_of(&t.body).contains("portal only"))
    );
    assert!(fake.calls("views.open").is_empty());
    let r = app.request("grace", &req).await;
    assert_eq!(r["state"], "pending");
    assert_eq!(r["current_step"], 2);
    let approved = app.approve("dan", &req).await;
    assert_eq!(
        approved["state"], "approved",
        "the portal and the API still decide"
    );
}

/// Item 4: Assign and Comment from the card. A reviewer assigns the step to a linked Slack
/// user, who may then decide (rule 11); a comment made in Slack is recorded on the request,
/// and every comment, from Slack or elsewhere, is posted in each card's thread.
#[tokio::test]
async fn slack_assign_and_comment_from_the_card() {
    // Arrange
    let fake = FakeSlack::start().await;
    let app = spawn(&fake, "").await;
    let slack = Slack::new(&app);
    for user in ["carol", "mallory"] {
        link(&app, &slack, user).await;
    }
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-db-read", "reason": "INC-42", "duration": "1h" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    app.tick().await;
    let assign_to = |who: &str| json!({ "assignee": { "assignee": { "type": "users_select", "selected_user": who } } });

    // Act
    slack.click(&app, "carol", "cs_assign", &id).await;
    slack.click(&app, "carol", "cs_comment", &id).await;
    let modals = eventually("the assign and comment modals open", async || {
        let v = fake.calls("views.open");
        (v.len() == 2).then_some(v)
    })
    .await;
    let (_, unlinked) = slack
        .submit(&app, "carol", "cs_assign_modal", &id, assign_to("UNOBODY"))
        .await;
    let (s1, a1) = slack
        .submit(
            &app,
            "carol",
            "cs_assign_modal",
            &id,
            assign_to(&slack_id("mallory")),
        )
        .await;
    let (s2, a2) = slack
        .submit(
            &app,
            "carol",
            "cs_comment_modal",
            &id,
            json!({ "comment": { "comment": { "type": "plain_text_input", "value": "which table?" } } }),
        )
        .await;
    let (status, _) = app
        .post(
            "grace",
            &format!("/v1/requests/{id}/comments"),
            json!({ "text": "orders <and> & invoices" }),
        )
        .await;
    app.tick().await;

    // Assert
    let callbacks: Vec<&str> = modals
        .iter()
        .map(|m| m.body["view"]["callback_id"].as_str().unwrap_or_default())
        .collect();
    assert!(callbacks.contains(&"cs_assign_modal") && callbacks.contains(&"cs_comment_modal"));
    assert!(
        unlinked["errors"]["assignee"]
            .as_str()
            .is_some_and(|m| m.contains("not linked")),
        "{unlinked}"
    );
    assert_eq!((s1, a1), (StatusCode::OK, Value::Null));
    assert_eq!((s2, a2), (StatusCode::OK, Value::Null));
    assert_eq!(status, StatusCode::OK);
    let r = app.request("grace", &req).await;
    assert_eq!(r["comments"][0]["by"], email("carol"));
    assert_eq!(r["comments"][0]["text"], "which table?");
    assert!(
        r["summary"]["waiting_on"]
            .as_array()
            .expect("waiting_on")
            .contains(&json!(email("mallory"))),
        "{r}"
    );
    let in_threads: Vec<String> = fake
        .calls("chat.postMessage")
        .into_iter()
        .filter(|c| c.body.get("thread_ts").is_some())
        .map(|c| c.body["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    // Two copies (carol's DM and #access), two comments each.
    assert_eq!(
        in_threads
            .iter()
            .filter(|t| *t == "*carol@example.com*: which table?")
            .count(),
        2,
        "{in_threads:?}"
    );
    assert_eq!(
        in_threads
            .iter()
            .filter(|t| *t == "*grace@example.com*: orders &lt;and&gt; &amp; invoices")
            .count(),
        2,
        "{in_threads:?}"
    );
    // mallory, assigned, now decides from Slack.
    let (s3, a3) = slack
        .submit(
            &app,
            "mallory",
            "cs_approve_modal",
            &id,
            approve_values("1h", false, ""),
        )
        .await;
    assert_eq!((s3, a3), (StatusCode::OK, Value::Null));
    assert_eq!(app.request("grace", &req).await["current_step"], 2);
}

/// Item 6: a request from `/countersign`: the catalog, then the resource's modal with an
/// enum as a static select, an `options_from` field as an external select whose options come
/// from the same source as the portal's, and the duration from the closed set; a value the
/// source does not offer is refused under its field.
#[tokio::test]
async fn slack_request_from_the_slash_command_modal() {
    // Arrange
    let fake = FakeSlack::start().await;
    let options = crate::portal::Options::start().await;
    let resources = format!(
        "{}\n{}",
        slack_channel(&fake, ""),
        crate::portal::typed_resources(&options.base)
    );
    let app = TestApp::spawn_with(SERVER, &[], &resources).await;
    let slack = Slack::new(&app);
    link(&app, &slack, "grace").await;
    let values = |pokemon: &str| {
        json!({
            "field.ticket": { "value": { "type": "plain_text_input", "value": "CHG-7" } },
            "field.urgency": { "value": { "type": "static_select",
                                          "selected_option": { "value": "Emergency" } } },
            "field.emergency": { "value": { "type": "checkboxes",
                                            "selected_options": [{ "value": "true" }] } },
            "field.rows": { "value": { "type": "number_input", "value": "42" } },
            "field.pokemon": { "value": { "type": "external_select",
                                          "selected_option": { "value": pokemon } } },
            "duration": { "duration": { "type": "static_select",
                                        "selected_option": { "value": "4h" } } },
            "reason": { "reason": { "type": "plain_text_input", "value": "release 2.3" } },
        })
    };

    // Act
    let unlinked = slack.command(&app, "mallory", "").await;
    let (status, _) = slack
        .send(
            &app,
            &serde_urlencoded::to_string([
                ("command", "/countersign"),
                ("text", ""),
                ("user_id", &slack_id("grace")),
                ("trigger_id", "trigger-request"),
            ])
            .expect("form"),
        )
        .await;
    let catalog = eventually("the catalog modal opens", async || {
        fake.calls("views.open").into_iter().next()
    })
    .await;
    let (_, next) = slack
        .submit(
            &app,
            "grace",
            "cs_pick_modal",
            "",
            json!({ "resource": { "resource": { "type": "static_select",
                                                "selected_option": { "value": "deploy-db" } } } }),
        )
        .await;
    let suggest = json!({
        "type": "block_suggestion",
        "user": { "id": slack_id("grace") },
        "block_id": "field.pokemon",
        "action_id": "value",
        "value": "EE",
        "view": { "callback_id": "cs_request_modal", "private_metadata": "deploy-db" },
    });
    let (_, offered) = slack.payload(&app, &suggest).await;
    let submit = |v: Value| {
        json!({
            "type": "view_submission",
            "user": { "id": slack_id("grace") },
            "view": { "callback_id": "cs_request_modal", "private_metadata": "deploy-db",
                      "state": { "values": v } },
        })
    };
    let (_, refused) = slack.payload(&app, &submit(values("mew"))).await;
    let (created, answer) = slack.payload(&app, &submit(values("eevee"))).await;

    // Assert
    assert!(text_of(&unlinked).contains("not linked"), "{unlinked}");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(catalog.body["trigger_id"], "trigger-request");
    assert_eq!(catalog.body["view"]["callback_id"], "cs_pick_modal");
    assert!(text_of(&catalog.body).contains("deploy-db"));
    assert_eq!(next["response_action"], "update", "{next}");
    let modal = &next["view"];
    assert_eq!(modal["callback_id"], "cs_request_modal");
    let element = |block: &str| -> Value {
        modal["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .find(|b| b["block_id"] == block)
            .map(|b| b["element"].clone())
            .unwrap_or_else(|| panic!("no block {block}: {modal}"))
    };
    assert_eq!(element("field.urgency")["type"], "static_select");
    assert_eq!(element("field.pokemon")["type"], "external_select");
    assert_eq!(element("duration")["type"], "static_select");
    assert_eq!(
        element("duration")["options"]
            .as_array()
            .expect("options")
            .len(),
        4
    );
    let offered: Value = serde_json::from_str(&offered).expect("JSON");
    assert_eq!(
        offered["options"],
        json!([{ "text": { "type": "plain_text", "text": "eevee" }, "value": "eevee" }])
    );
    let refused: Value = serde_json::from_str(&refused).expect("JSON");
    assert_eq!(refused["response_action"], "errors", "{refused}");
    assert!(refused["errors"]["field.pokemon"].is_string(), "{refused}");
    assert_eq!(created, StatusCode::OK);
    assert_eq!(answer, "", "the modal closes");
    let (_, mine) = app.get("grace", "/v1/requests?resource=deploy-db").await;
    let req = &mine["requests"][0];
    assert_eq!(req["fields"]["pokemon"], "eevee", "{mine}");
    assert_eq!(req["fields"]["urgency"], "Emergency");
    assert_eq!(req["fields"]["emergency"], true);
    assert_eq!(req["fields"]["rows"], 42);
    assert_eq!(req["duration"], "4h");
    assert_eq!(req["reason"], "release 2.3");
    assert_eq!(
        mine["requests"].as_array().expect("list").len(),
        1,
        "one request"
    );
}

/// Item 6: the requester's DM before the grant ends has Extend and Drop, which go through the
/// engine's extend (a new request, for the reviewers) and drop.
#[tokio::test]
async fn slack_requester_extends_and_drops_from_the_expiry_dm() {
    // Arrange
    let fake = FakeSlack::start().await;
    let resources = format!(
        r#"{}
resource "db" {{
  connector    = "log"
  max_duration = "4h"
  durations    = ["1h", "4h"]
  workflow     = {{ steps = [ {{ reviewers = {{ one_of = ["carol@example.com"] }} }} ] }}
}}
notify "requester" {{
  events = ["grant_expiring"]
  to     = ["requester"]
  via    = ["slack"]
}}
"#,
        slack_channel(&fake, "")
    );
    let app = TestApp::spawn_with(
        &format!("{SERVER}\nexpiry_notice = \"15m\""),
        &[],
        &resources,
    )
    .await;
    let slack = Slack::new(&app);
    link(&app, &slack, "grace").await;
    let ask = json!({ "resource": "db", "reason": "INC-1", "duration": "1h" });
    let first = app.create("grace", ask).await;
    app.approve("carol", &first).await;
    app.tick().await;

    // Act
    app.advance(Duration::from_secs(46 * 60)).await;
    let dm = fake
        .calls("chat.postMessage")
        .into_iter()
        .find(|c| c.body["channel"] == slack_id("grace"))
        .expect("the expiry DM");
    let grant = app.request("grace", &first).await["grant_id"]
        .as_str()
        .expect("grant")
        .to_owned();
    slack.click(&app, "grace", "cs_extend", &grant).await;
    let modal = eventually("the extend modal", async || {
        fake.calls("views.open").into_iter().next()
    })
    .await;
    let (status, answer) = slack
        .submit(
            &app,
            "grace",
            "cs_extend_modal",
            &grant,
            json!({
                "duration": { "duration": { "type": "static_select",
                                            "selected_option": { "value": "1h" } } },
                "reason": { "reason": { "type": "plain_text_input", "value": "still on it" } },
            }),
        )
        .await;
    slack.click(&app, "mallory", "cs_drop", &grant).await;
    slack.click(&app, "grace", "cs_drop", &grant).await;
    let told = eventually("both drops answered", async || {
        let t = fake.calls("chat.postEphemeral");
        (t.len() == 2).then_some(t)
    })
    .await;
    app.tick().await;

    // Assert
    assert!(has_button(&dm.body, "cs_extend") && has_button(&dm.body, "cs_drop"));
    assert_eq!(modal.body["view"]["callback_id"], "cs_extend_modal");
    assert_eq!((status, answer), (StatusCode::OK, Value::Null));
    let (_, list) = app.get("grace", "/v1/requests?resource=db").await;
    let extension = list["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .find(|r| r["extends"] == grant)
        .expect("an extension request");
    assert_eq!(extension["state"], "pending");
    assert_eq!(extension["reason"], "still on it");
    // The two clicks are answered as each is handled: find each person's answer by who it
    // is for, not by the order they came in.
    let said_to = |who: &str| {
        told.iter()
            .find(|t| t.body["user"] == slack_id(who))
            .map(|t| text_of(&t.body))
            .unwrap_or_default()
    };
    assert!(said_to("mallory").contains("not linked"), "{told:?}");
    assert!(said_to("grace").contains("was dropped"), "{told:?}");
    let g = app.grant("grace", &json!(grant)).await;
    assert!(
        ["revoked", "revoking"].contains(&g["state"].as_str().unwrap_or_default()),
        "{g}"
    );
}

/// One Socket Mode connection the app opened to the fake: what the test sends it, and what
/// the app acknowledged.
struct SocketConn {
    to_app: tokio::sync::mpsc::UnboundedSender<String>,
    acks: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl SocketConn {
    fn send(&self, v: Value) {
        self.to_app
            .send(v.to_string())
            .expect("the connection is open");
    }

    /// Sends an envelope and waits for its acknowledgement.
    async fn envelope(&mut self, id: &str, kind: &str, payload: Value) -> Value {
        self.send(json!({ "envelope_id": id, "type": kind, "payload": payload,
                          "accepts_response_payload": true }));
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
            .await
            .expect("acknowledged in time")
            .expect("an acknowledgement")
    }
}

/// A fake of Slack's Socket Mode WebSocket server on loopback: each connection the app opens
/// is greeted with `hello` and handed to the test.
struct FakeSocket {
    url: String,
    conns: tokio::sync::mpsc::UnboundedReceiver<SocketConn>,
}

impl FakeSocket {
    async fn start() -> FakeSocket {
        use futures_util::{SinkExt, StreamExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (conn_tx, conns) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    continue;
                };
                let (mut sink, mut stream) = ws.split();
                let (to_app, mut outbox) = tokio::sync::mpsc::unbounded_channel::<String>();
                let (ack_tx, acks) = tokio::sync::mpsc::unbounded_channel();
                let hello = json!({ "type": "hello", "num_connections": 1 }).to_string();
                if sink
                    .send(tokio_tungstenite::tungstenite::Message::Text(hello.into()))
                    .await
                    .is_err()
                {
                    continue;
                }
                tokio::spawn(async move {
                    while let Some(text) = outbox.recv().await {
                        let close = text == "close";
                        let msg = if close {
                            tokio_tungstenite::tungstenite::Message::Close(None)
                        } else {
                            tokio_tungstenite::tungstenite::Message::Text(text.into())
                        };
                        if sink.send(msg).await.is_err() || close {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some(Ok(m)) = stream.next().await {
                        if let tokio_tungstenite::tungstenite::Message::Text(t) = m
                            && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                        {
                            let _ = ack_tx.send(v);
                        }
                    }
                });
                if conn_tx.send(SocketConn { to_app, acks }).is_err() {
                    return;
                }
            }
        });
        FakeSocket {
            url: format!("ws://{addr}/link"),
            conns,
        }
    }

    async fn next(&mut self) -> SocketConn {
        tokio::time::timeout(Duration::from_secs(10), self.conns.recv())
            .await
            .expect("the app connects in time")
            .expect("a connection")
    }
}

/// Item 2, Socket Mode: the app opens its connection with the app-level token, links an
/// account and approves over the WebSocket (each envelope acknowledged, a modal's answer in
/// the acknowledgement), ignores an envelope Slack delivers twice, and reconnects when Slack
/// says `disconnect`; `/slack/events` takes nothing in this mode.
#[tokio::test]
async fn slack_socket_mode_approves_over_the_websocket_and_reconnects() {
    // Arrange
    let fake = FakeSlack::start().await;
    let mut socket = FakeSocket::start().await;
    fake.state.lock().expect("lock").socket_url = Some(socket.url.clone());
    let app = spawn(
        &fake,
        r#"mode = "socket"
  app_token = "xapp-1-test""#,
    )
    .await;
    let slack = Slack::new(&app);
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-db-read", "reason": "INC-42", "duration": "4h" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    let mut conn = socket.next().await;
    let approve = |user: &str| {
        json!({
            "type": "view_submission",
            "user": { "id": slack_id(user) },
            "view": { "callback_id": "cs_approve_modal", "private_metadata": id,
                      "state": { "values": approve_values("1h", false, "") } },
        })
    };
    let comment = json!({
        "type": "view_submission",
        "user": { "id": slack_id("carol") },
        "view": { "callback_id": "cs_comment_modal", "private_metadata": id,
                  "state": { "values": { "comment": { "comment": {
                      "type": "plain_text_input", "value": "on it" } } } } },
    });

    // Act
    let body = serde_urlencoded::to_string([
        ("command", "/countersign"),
        ("text", "help"),
        ("user_id", "UCAROL"),
    ])
    .expect("form");
    let (over_http, _) = slack.send(&app, &body).await;
    let linked = conn
        .envelope(
            "env-1",
            "slash_commands",
            json!({ "command": "/countersign", "text": "link", "user_id": slack_id("carol"),
                    "trigger_id": "t1" }),
        )
        .await;
    let text = linked["payload"]["text"]
        .as_str()
        .expect("the link answer")
        .to_owned();
    let start = text.find("/slack/link/").expect("a link URL");
    let path: String = text[start..].chars().take_while(|c| *c != '|').collect();
    let mut web = Web::sign_in(&app, "carol").await;
    let page = web.get(&path).await;
    let token = csrf(&page.html);
    web.post(&path, &[("csrf", &token)]).await;
    let approved = conn
        .envelope("env-2", "interactive", approve("carol"))
        .await;
    let first = conn.envelope("env-3", "interactive", comment.clone()).await;
    let again = conn.envelope("env-3", "interactive", comment).await;
    conn.send(json!({ "type": "disconnect", "reason": "refresh_requested" }));
    let mut conn2 = socket.next().await;
    let unlinked = conn2.envelope("env-4", "interactive", approve("dan")).await;

    // Assert
    assert_eq!(
        over_http,
        StatusCode::NOT_FOUND,
        "no HTTP requests in Socket Mode"
    );
    assert_eq!(linked["envelope_id"], "env-1");
    assert_eq!(linked["payload"]["response_type"], "ephemeral");
    assert_eq!(
        approved,
        json!({ "envelope_id": "env-2" }),
        "acknowledged, modal closed"
    );
    assert_eq!(first, json!({ "envelope_id": "env-3" }));
    assert_eq!(
        again,
        json!({ "envelope_id": "env-3" }),
        "acknowledged again"
    );
    assert_eq!(unlinked["envelope_id"], "env-4");
    assert_eq!(
        unlinked["payload"]["response_action"], "errors",
        "{unlinked}"
    );
    let r = app.request("grace", &req).await;
    assert_eq!(r["current_step"], 2, "carol's approval over the WebSocket");
    assert_eq!(r["steps"][0]["reviews"][0]["duration"], "1h");
    assert_eq!(
        r["comments"].as_array().expect("comments").len(),
        1,
        "an envelope delivered twice is acted on once: {r}"
    );
    let opens = fake.calls("apps.connections.open");
    assert_eq!(opens.len(), 2, "reconnected after disconnect");
    assert!(opens.iter().all(|c| c.auth == "Bearer xapp-1-test"));
}

/// Item 8: posts to one Slack channel are paced at Slack's one message a second (the
/// default `per_channel_interval`), on the manual clock: a burst of three cards to `#access`
/// goes out one a second, none lost and no attempt counted for the waits; DMs to other
/// channels are not held back by it.
#[tokio::test]
async fn slack_posts_to_one_channel_are_paced_at_one_a_second() {
    // Arrange
    let fake = FakeSlack::start().await;
    let app = spawn(&fake, "per_channel_interval = \"1s\"").await;
    let slack = Slack::new(&app);
    link(&app, &slack, "carol").await;
    let ask = json!({ "resource": "prod-db-read", "reason": "INC-42", "duration": "1h" });
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(app.create("grace", ask.clone()).await);
    }
    let to = |channel: &str| {
        card_posts(&fake)
            .into_iter()
            .filter(|(c, _)| c == channel)
            .count()
    };

    // Act
    app.tick().await;
    let at_once = (to("access"), to("UCAROL"));
    app.advance(Duration::from_millis(1000)).await;
    let after_1s = to("access");
    app.advance(Duration::from_millis(1000)).await;
    let after_2s = to("access");
    app.advance(Duration::from_secs(10)).await;
    let (_, list) = app
        .get(
            "root",
            &format!("/v1/requests/{}/notifications", id_of(&ids[2])),
        )
        .await;

    // Assert
    assert_eq!(
        at_once,
        (1, 1),
        "one card to #access, and carol's DM, at once"
    );
    assert_eq!(after_1s, 2);
    assert_eq!(after_2s, 3);
    assert_eq!(to("access"), 3, "none lost, none twice");
    let access = list["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .find(|n| n["to"] == "#access")
        .cloned()
        .expect("the #access card");
    assert_eq!(access["state"], "delivered", "{access}");
    assert_eq!(
        access["attempt_count"], 1,
        "waiting is not an attempt: {access}"
    );
}

/// The request modal's values for prod-db-read: a reason and a duration.
fn request_values(reason: &str) -> Value {
    json!({
        "reason": { "reason": { "type": "plain_text_input", "value": reason } },
        "duration": { "duration": { "type": "static_select",
                                    "selected_option": { "value": "1h" } } },
    })
}

/// Item 2, rule 35 ("store it, acknowledge, then act, and ignore Slack's retries of one
/// already stored"): a click, a comment and a request delivered twice by Slack (the same
/// trigger id) are acted on once; a request modal whose submission came again with a new
/// trigger (its first answer was lost) still makes one request.
#[tokio::test]
async fn rule_35_an_interaction_delivered_twice_is_acted_on_once() {
    // Arrange
    let fake = FakeSlack::start().await;
    let app = spawn(&fake, "").await;
    let slack = Slack::new(&app);
    for user in ["carol", "grace"] {
        link(&app, &slack, user).await;
    }
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-db-read", "reason": "INC-42", "duration": "1h" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    let click = json!({
        "type": "block_actions",
        "user": { "id": slack_id("carol") },
        "trigger_id": "trigger-click-once",
        "channel": { "id": "C_ACCESS" },
        "actions": [{ "action_id": "cs_comment", "value": id }],
    });
    let comment = json!({
        "type": "view_submission",
        "user": { "id": slack_id("carol") },
        "trigger_id": "trigger-comment-once",
        "view": { "id": "V_COMMENT", "callback_id": "cs_comment_modal", "private_metadata": id,
                  "state": { "values": { "comment": { "comment": {
                      "type": "plain_text_input", "value": "which table?" } } } } },
    });
    let request = |trigger: &str| {
        json!({
            "type": "view_submission",
            "user": { "id": slack_id("grace") },
            "trigger_id": trigger,
            "view": { "id": "V_REQUEST", "callback_id": "cs_request_modal",
                      "private_metadata": "prod-db-read",
                      "state": { "values": request_values("INC-43") } },
        })
    };
    let count = async || {
        let (_, list) = app.get("grace", "/v1/requests?resource=prod-db-read").await;
        list["requests"].as_array().map_or(0, Vec::len)
    };
    let before = count().await;

    // Act
    let mut answers = vec![];
    for p in [&click, &click, &comment, &comment] {
        answers.push(slack.payload(&app, p).await);
    }
    answers.push(slack.payload(&app, &request("trigger-request-1")).await);
    answers.push(slack.payload(&app, &request("trigger-request-1")).await);
    answers.push(slack.payload(&app, &request("trigger-request-2")).await);
    eventually("the comment modal opens", async || {
        (!fake.calls("views.open").is_empty()).then_some(())
    })
    .await;
    app.tick().await;

    // Assert
    for (status, body) in &answers {
        assert_eq!(
            (*status, body.as_str()),
            (StatusCode::OK, ""),
            "{answers:?}"
        );
    }
    assert_eq!(
        fake.calls("views.open").len(),
        1,
        "a click delivered twice opens one modal"
    );
    let r = app.request("grace", &req).await;
    assert_eq!(
        r["comments"].as_array().map(Vec::len),
        Some(1),
        "a submission delivered twice comments once: {r}"
    );
    assert_eq!(
        count().await,
        before + 1,
        "one request from one modal, however often it came"
    );
}

/// Item 2, rule 35: an interaction stored by a process that died before acting on it (another
/// replica here, which stores it and is never heard of again: the row and its held job, whose
/// claim nobody renews) is replayed by this server's worker once the claim lapses, and not
/// before: the decision submitted is recorded and its author told
/// in their DM; a click, whose modal can no longer be opened, is answered with a request to
/// click again; Slack's redelivery afterwards changes nothing.
#[tokio::test]
async fn rule_35_an_interaction_its_process_did_not_act_on_is_replayed() {
    // Arrange
    let fake = FakeSlack::start().await;
    let app = spawn(&fake, "").await;
    let slack = Slack::new(&app);
    link(&app, &slack, "carol").await;
    let req = app
        .create(
            "grace",
            json!({ "resource": "prod-db-read", "reason": "INC-42", "duration": "4h" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    app.tick().await;
    let approve = json!({
        "type": "view_submission",
        "user": { "id": slack_id("carol") },
        "trigger_id": "trigger-approve-lost",
        "view": { "id": "V_APPROVE", "callback_id": "cs_approve_modal", "private_metadata": id,
                  "state": { "values": approve_values("1h", false, "replayed") } },
    });
    let click = json!({
        "type": "block_actions",
        "user": { "id": slack_id("carol") },
        "trigger_id": "trigger-click-lost",
        "channel": { "id": "C_ACCESS" },
        "actions": [{ "action_id": "cs_deny", "value": id }],
    });
    // What the endpoint of the other replica stores before it answers; that replica then
    // "dies": nothing acts.
    let dying = app.replica().await;
    for p in [&approve, &click] {
        let key = engine::interactions::key(p);
        let stored = json!({ "kind": "interactive", "payload": p });
        let held = dying
            .engine
            .slack_store(&key, &stored)
            .await
            .expect("store");
        assert!(held.is_some(), "stored");
    }

    // Act
    app.advance(Duration::from_secs(59)).await;
    let before_lapse = app.request("grace", &req).await;
    app.advance(Duration::from_secs(2)).await;
    let after = app.request("grace", &req).await;
    let (status, again) = slack.payload(&app, &approve).await;
    app.tick().await;

    // Assert
    assert_eq!(
        before_lapse["current_step"], 1,
        "not replayed while its holder's claim is live"
    );
    assert_eq!(after["current_step"], 2, "replayed: {after}");
    let review = &after["steps"][0]["reviews"][0];
    assert_eq!(review["by"], email("carol"));
    assert_eq!(review["duration"], "1h");
    assert_eq!(review["comment"], "replayed");
    let dm = fake
        .calls("chat.postMessage")
        .into_iter()
        .find(|c| {
            c.body["channel"] == slack_id("carol") && text_of(&c.body).contains("interrupted")
        })
        .expect("carol is told in her DM");
    assert!(text_of(&dm.body).contains("was recorded"), "{:?}", dm.body);
    let told: Vec<Call> = fake.calls("chat.postEphemeral");
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].body["channel"], "C_ACCESS");
    assert!(
        text_of(&told[0].body).contains("ask again"),
        "{:?}",
        told[0].body
    );
    assert!(
        fake.calls("views.open").is_empty(),
        "no modal from a stale trigger"
    );
    assert_eq!((status, again), (StatusCode::OK, String::new()));
    let last = app.request("grace", &req).await;
    assert_eq!(
        last["steps"][0]["reviews"].as_array().map(Vec::len),
        Some(1),
        "the redelivery was not acted on: {last}"
    );
}

/// Issue 18 item 1 in Slack: the card of an action request shows the exact action (the tool,
/// the arguments in a code block, escaped, and the digest) instead of a duration, through
/// the same presenter as the other surfaces. A backtick cannot close the code block, and an
/// action too long to show whole is not shown in part: its card says so and offers only
/// Review in portal.
#[tokio::test]
async fn issue_18_an_action_requests_card_shows_the_action_and_its_digest() {
    // Arrange
    let fake = FakeSlack::start().await;
    let config = format!(
        r#"{}
resource "deploy-action" {{
  kind     = "action"
  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["bob@example.com"] }} }} ] }}
}}
notify "cards" {{
  events = ["step_entered"]
  to     = ["reviewers"]
  via    = ["slack:#access"]
}}
"#,
        slack_channel(&fake, "")
    );
    let app = TestApp::spawn_with(SERVER, &[], &config).await;

    // Act
    let req = app
        .create(
            "grace",
            json!({ "resource": "deploy-action", "reason": "hotfix",
                    "action": { "tool": "deploy", "arguments": {
                        "note": "<!channel> *now* ``` *bold* ```" } } }),
        )
        .await;
    app.tick().await;
    let padded = format!("{}rm -rf /", " ".repeat(3000));
    app.create(
        "grace",
        json!({ "resource": "deploy-action", "reason": "long",
                "action": { "tool": "run", "arguments": { "a": padded } } }),
    )
    .await;
    app.tick().await;

    // Assert
    let posts = card_posts(&fake);
    assert_eq!(posts.len(), 2, "{posts:?}");
    let catalog = engine::slack::pick_modal(&app.engine.config()).to_string();
    assert!(
        !catalog.contains("deploy-action"),
        "an action resource is not offered in Slack's catalog: {catalog}"
    );
    let long = text_of(&posts[1].1);
    assert!(long.contains("too long to show here"), "{long}");
    assert!(!long.contains("rm -rf"), "no part of it: {long}");
    assert!(!has_button(&posts[1].1, "cs_approve"), "{long}");
    assert!(long.contains("Review in portal"), "{long}");
    assert!(
        !text_of(&posts[0].1).contains("``` *bold*"),
        "no way out of the code"
    );
    assert!(
        text_of(&posts[0].1).contains("\u{2cb}\u{2cb}\u{2cb} *bold*"),
        "{}",
        text_of(&posts[0].1)
    );
    let text = text_of(&posts[0].1);
    let digest = req["action"]["digest"].as_str().expect("digest");
    assert!(text.contains("*Action:* `deploy`"), "{text}");
    assert!(text.contains(&format!("*Digest:* `{digest}`")), "{text}");
    assert!(text.contains("&lt;!channel&gt;"), "escaped: {text}");
    assert!(!text.contains("*Duration:*"), "{text}");
}

/// Issue 17 in Slack: the news runbook (alice runs it, linked, as is bob, its reviewer),
/// stopped at its first action and approved for the whole workflow, with the runner told of
/// `run_ready` and `run_input` in Slack. Returns the fake, the app, Slack's side and the run.
async fn news_run_ready_in_slack() -> (FakeSlack, TestApp, Slack, String) {
    use crate::runs::{ARTICLES, NEWS_YAML, SOURCES};
    let fake = FakeSlack::start().await;
    let resources = format!(
        r#"{}
resource "news-sources" {{
  max_duration = "4h"
  part_of      = "get_news_workflow"
  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["bob@example.com"] }} }} ] }}
}}
resource "news-articles" {{
  max_duration = "4h"
  part_of      = "get_news_workflow"
  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["bob@example.com"] }} }} ] }}
}}
action_store "news" {{
  action "get_all_sources" {{
    resource = "news-sources"
    command  = ["sh", "sources.sh"]
  }}
  action "get_articles" {{
    resource = "news-articles"
    command  = ["sh", "articles.sh"]
  }}
}}
runbook "get_news_workflow" {{
  file = "news.yaml"
}}
notify "runs" {{
  events = ["run_ready", "run_input"]
  to     = ["requester"]
  via    = ["slack"]
}}
"#,
        slack_channel(&fake, "")
    );
    let app = TestApp::spawn_with(
        SERVER,
        &[
            ("news.yaml", NEWS_YAML),
            ("sources.sh", SOURCES),
            ("articles.sh", ARTICLES),
        ],
        &resources,
    )
    .await;
    let slack = Slack::new(&app);
    link(&app, &slack, "alice").await;
    link(&app, &slack, "bob").await;
    let (_, run) = app
        .post(
            "alice",
            "/v1/runs",
            json!({ "runbook": "get_news_workflow" }),
        )
        .await;
    let id = id_of(&run).to_owned();
    app.tick().await;
    let (_, asked) = app
        .post(
            "alice",
            &format!("/v1/runs/{id}/access"),
            json!({ "reason": "briefing" }),
        )
        .await;
    app.review(
        "bob",
        &asked["request"],
        json!({ "decision": "approve", "scope": "workflow" }),
    )
    .await;
    app.tick().await;
    (fake, app, slack, id)
}

/// Issue 17 item 5, Slack: when a run's access is in effect, its runner's DM carries Resume
/// and Not now (rule 37: the run goes on only by their choice). Not now leaves it ready;
/// Resume continues it (to its input step); someone unlinked, someone else, and a Resume of
/// another stop are refused. The input step is then answered from the select of the next DM
/// (a choice for another step is refused), and the run succeeds.
#[tokio::test]
async fn issue_17_the_runner_resumes_and_answers_a_run_from_slack() {
    use crate::runs::calls;
    // Arrange
    let (fake, app, slack, id) = news_run_ready_in_slack().await;

    // Act
    let dm = eventually("the runner's DM", async || {
        app.tick().await;
        fake.calls("chat.postMessage")
            .into_iter()
            .find(|c| c.body["channel"] == slack_id("alice"))
    })
    .await;
    slack.click(&app, "alice", "cs_not_now", &id).await;
    let told_later = eventually("Not now answered", async || {
        fake.calls("chat.postEphemeral").into_iter().next()
    })
    .await;
    let (_, still) = app.get("alice", &format!("/v1/runs/{id}")).await;
    let stop = format!("{id}/sources");
    slack.click(&app, "mallory", "cs_resume", &stop).await;
    slack.click(&app, "bob", "cs_resume", &stop).await;
    slack
        .click(&app, "alice", "cs_resume", &format!("{id}/articles"))
        .await;
    let (_, not_yet) = app.get("alice", &format!("/v1/runs/{id}")).await;
    slack.click(&app, "alice", "cs_resume", &stop).await;
    let told = eventually("every resume answered", async || {
        let t = fake.calls("chat.postEphemeral");
        (t.len() == 5).then_some(t)
    })
    .await;
    app.tick().await;
    let (_, resumed) = app.get("alice", &format!("/v1/runs/{id}")).await;
    // The input step, answered from the select of the runner's DM.
    let asked = eventually("the input's DM", async || {
        app.tick().await;
        fake.calls("chat.postMessage").into_iter().find(|c| {
            c.body["channel"] == slack_id("alice")
                && c.body["blocks"]
                    .as_array()
                    .is_some_and(|b| b.iter().any(|b| b["block_id"] == format!("{id}/source")))
        })
    })
    .await;
    let choose = |who: &str, step: &str, value: &str| {
        json!({
            "type": "block_actions",
            "user": { "id": slack_id(who) },
            "trigger_id": crate::slack::trigger(who),
            "channel": { "id": "D_ALICE" },
            "actions": [{ "type": "static_select", "action_id": "cs_run_input",
                          "block_id": format!("{id}/{step}"),
                          "selected_option": { "value": value } }],
        })
    };
    let (stale, _) = slack
        .payload(&app, &choose("alice", "sources", "CNN"))
        .await;
    let (chosen, _) = slack.payload(&app, &choose("alice", "source", "CNN")).await;
    let answered = eventually("the choice answered", async || {
        let t = fake.calls("chat.postEphemeral");
        t.iter()
            .map(|t| text_of(&t.body))
            .find(|t| t.contains("answered"))
    })
    .await;
    app.tick().await;
    let (_, finished) = app.get("alice", &format!("/v1/runs/{id}")).await;

    // Assert
    assert!(
        has_button(&dm.body, "cs_resume") && has_button(&dm.body, "cs_not_now"),
        "{:?}",
        dm.body
    );
    assert!(
        text_of(&told_later.body).contains("stays ready"),
        "{:?}",
        told_later.body
    );
    assert_eq!(still["state"], "ready_to_resume", "{still}");
    let said: Vec<String> = told.iter().map(|t| text_of(&t.body)).collect();
    assert!(
        said.iter().any(|t| t.contains("not linked")),
        "mallory: {said:?}"
    );
    assert!(
        said.iter().any(|t| t.contains("not found")),
        "bob: {said:?}"
    );
    assert!(
        said.iter()
            .any(|t| t.contains("not waiting to resume at step articles")),
        "a button of another stop: {said:?}"
    );
    assert_eq!(not_yet["state"], "ready_to_resume", "{not_yet}");
    assert!(
        said.iter().any(|t| t.contains("resumed")),
        "alice: {said:?}"
    );
    assert_eq!(resumed["state"], "waiting_for_input", "{resumed}");
    let select = asked.body["blocks"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["block_id"] == format!("{id}/source")))
        .expect("the select's block")["elements"][0]
        .clone();
    assert_eq!(select["action_id"], "cs_run_input");
    let offered: Vec<&str> = select["options"]
        .as_array()
        .expect("options")
        .iter()
        .filter_map(|o| o["value"].as_str())
        .collect();
    assert_eq!(offered, ["BBC News", "CNN", "Al Jazeera"]);
    assert_eq!((stale, chosen), (StatusCode::OK, StatusCode::OK));
    assert!(answered.contains("Step source"), "{answered}");
    assert_eq!(finished["state"], "succeeded", "{finished}");
    assert_eq!(
        calls(&app),
        [
            format!("get_all_sources {id}/sources"),
            format!("get_articles {id}/articles \"CNN\""),
        ]
    );
}

/// Issue 17's Slack messages (the runner's `run_ready` DM with Resume and Not now, and the
/// `run_input` DM with its select) pass `slack_sdk`'s Block Kit models.
#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (slack_sdk)"]
async fn issue_17_run_messages_pass_slack_sdks_models() {
    // Arrange
    let (fake, app, _slack, id) = news_run_ready_in_slack().await;
    app.post("alice", &format!("/v1/runs/{id}/resume"), json!({}))
        .await;

    // Act
    let dms = eventually("the run_ready and run_input DMs", async || {
        app.tick().await;
        let dms: Vec<Value> = fake
            .calls("chat.postMessage")
            .into_iter()
            .filter(|c| c.body["channel"] == slack_id("alice"))
            .map(|c| c.body)
            .collect();
        (dms.len() == 2).then_some(dms)
    })
    .await;
    let items: Vec<Value> = dms
        .into_iter()
        .enumerate()
        .map(|(n, mut p)| {
            for k in ["channel", "unfurl_links"] {
                p.as_object_mut().expect("object").remove(k);
            }
            json!({ "what": format!("run DM {n}"), "kind": "message", "payload": p })
        })
        .collect();
    let path = app.dir.path().join("slack-run-payloads.json");
    std::fs::write(&path, serde_json::to_string(&items).expect("JSON")).expect("write");
    let out = run_python("check_slack.py", &[path.to_str().expect("path")]).await;

    // Assert
    let text = serde_json::to_string(&items).expect("JSON");
    assert!(
        text.contains("cs_resume") && text.contains("cs_not_now") && text.contains("cs_run_input"),
        "{text}"
    );
    assert!(!out.contains("FAIL"), "{out}");
}
