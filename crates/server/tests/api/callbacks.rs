//! Callbacks (rules 21–26): signed outcome deliveries to a real HTTP receiver on loopback,
//! retries on the manual clock, 410, redirects, `Retry-After`, redelivery, the SSRF guard and
//! idempotency keys.
//!
//! Signatures are checked by [`verify`], written from the Standard Webhooks specification and
//! sharing no code with the server's signer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::response::IntoResponse;
use base64::Engine as _;
use hmac::Mac;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, email, eventually, id_of};

/// One POST the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the callback body is JSON")
    }
}

/// What the receiver answers next: a status and headers. `None` hangs forever.
type Reply = Option<(u16, Vec<(&'static str, String)>)>;

#[derive(Default)]
struct ReceiverState {
    got: Vec<Received>,
    /// Answers per path, used in order; when empty, 200.
    script: std::collections::HashMap<String, VecDeque<Reply>>,
}

/// A real HTTP server on loopback that records every POST and answers from a script.
#[derive(Clone)]
pub struct Receiver {
    base: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            base: format!("http://{addr}"),
            state,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        let mut s = self.state.lock().expect("lock");
        s.script.insert(format!("/{path}"), replies.into());
    }

    pub fn got(&self, path: &str) -> Vec<Received> {
        let s = self.state.lock().expect("lock");
        s.got
            .iter()
            .filter(|r| r.path == format!("/{path}"))
            .cloned()
            .collect()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let path = uri.path().to_owned();
    let reply = {
        let mut s = state.lock().expect("lock");
        s.got.push(Received {
            path: path.clone(),
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body,
        });
        s.script
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Some((200, vec![])))
    };
    match reply {
        None => std::future::pending().await,
        Some((status, headers)) => {
            let mut res = AxStatus::from_u16(status).expect("status").into_response();
            for (k, v) in headers {
                res.headers_mut()
                    .insert(k, v.parse().expect("header value"));
            }
            res
        }
    }
}

/// Standard Webhooks verification, written from the specification: the key is the base64
/// after `whsec_`; the signed content is `id.timestamp.body`; the header holds space-separated
/// `v1,<base64 HMAC-SHA256>` entries, any of which may match.
pub fn verify(secret: &str, r: &Received) -> bool {
    let Some(b64) = secret.strip_prefix("whsec_") else {
        return false;
    };
    let Ok(key) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return false;
    };
    let content = format!("{}.{}.{}", r.id, r.timestamp, r.body);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(content.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

const RESOURCES: &str = r#"
app "deployer" { roles = ["request_approval"] }
app "other"    { roles = ["request_approval"] }

resource "deploy-prod" {
  max_duration = "1h"
  pending_ttl  = "2h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;

/// A server whose outbound allow-list names the loopback receiver, with app tokens.
async fn spawn(allow: &str) -> TestApp {
    let server = format!("outbound_allow = [{allow}]");
    let mut app = TestApp::spawn_with(&server, &[], RESOURCES).await;
    app.app_tokens(&["deployer", "other"]).await;
    app
}

fn ask(callback_url: &str) -> Value {
    json!({
        "resource": "deploy-prod",
        "requester": email("carol"),
        "purpose": "Deploy **v2.3.1** to production",
        "correlation_id": "pipeline-4711",
        "request_data": { "commit": "9f77d45" },
        "callback": { "url": callback_url },
    })
}

async fn deliveries(app: &TestApp, user: &str, req: &Value) -> (StatusCode, Value) {
    app.get(user, &format!("/v1/requests/{}/deliveries", id_of(req)))
        .await
}

#[tokio::test]
async fn rule_22_the_outcome_is_posted_signed_with_the_secret_shown_once() {
    // Arrange
    let app = spawn(r#""127.0.0.1""#).await;
    let rx = Receiver::start().await;

    // Act
    let req = app.create("deployer", ask(&rx.url("ok"))).await;
    let secret = req["callback_secret"]
        .as_str()
        .expect("a callback secret")
        .to_owned();
    app.tick().await;
    let before = rx.got("ok").len();
    app.review(
        "bob",
        &req,
        json!({ "decision": "approve", "comment": "LGTM 👍" }),
    )
    .await;
    app.tick().await;

    // Assert: nothing before the outcome, then one signed POST with rule 22's fields.
    assert_eq!(before, 0);
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(
        req["portal_url"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/requests/{}", id_of(&req)))),
        "{req}"
    );
    let got = rx.got("ok");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(verify(&secret, &got[0]), "the signature does not verify");
    assert!(!verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &got[0]));
    assert_eq!(got[0].id, format!("msg_{}", id_of(&req)));
    let body = got[0].json();
    assert_eq!(body["id"], req["id"]);
    assert_eq!(body["status"], "approved");
    assert_eq!(body["comment"], "LGTM 👍");
    assert_eq!(body["actioned_by"]["id"], email("bob"));
    assert_eq!(body["correlation_id"], "pipeline-4711");
    assert_eq!(body["request_data"]["commit"], "9f77d45");

    // Polling reports the same outcome (rule 24).
    let polled = app.request("deployer", &req).await;
    assert_eq!(polled["outcome"]["status"], body["status"]);
    assert_eq!(polled["outcome"]["actioned_at"], body["actioned_at"]);
    assert_eq!(polled["outcome"]["actioned_by"], body["actioned_by"]);

    // The delivery is visible to its creator; the secret is never shown again.
    let (status, list) = deliveries(&app, "deployer", &req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["deliveries"][0]["state"], "delivered");
    assert_eq!(list["deliveries"][0]["attempts"][0]["status"], 200);
    let (_, audit) = app.get("root", "/v1/audit?limit=1000").await;
    assert!(audit.to_string().contains("callback_delivered"));
    for seen in [polled.to_string(), list.to_string(), audit.to_string()] {
        assert!(!seen.contains(&secret), "the secret leaks: {seen}");
    }
}

#[tokio::test]
async fn rule_23_a_receiver_failing_twice_gets_three_attempts_with_one_webhook_id() {
    // Arrange
    let app = spawn(r#""127.0.0.1""#).await;
    let rx = Receiver::start().await;
    rx.script("flaky", vec![Some((500, vec![])), Some((500, vec![]))]);
    let req = app.create("deployer", ask(&rx.url("flaky"))).await;
    let secret = req["callback_secret"].as_str().expect("secret").to_owned();

    // Act: deny; then let the backoff (5s base, doubling) run its course.
    app.review(
        "bob",
        &req,
        json!({ "decision": "deny", "comment": "not now" }),
    )
    .await;
    app.tick().await;
    let after_first = rx.got("flaky").len();
    app.advance(Duration::from_secs(5)).await;
    app.advance(Duration::from_secs(10)).await;
    app.advance(Duration::from_secs(60)).await;

    // Assert
    let got = rx.got("flaky");
    assert_eq!(after_first, 1);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|r| r.id == got[0].id), "one webhook-id");
    assert!(got.iter().all(|r| verify(&secret, r)));
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the same body each time"
    );
    assert_eq!(got[0].json()["status"], "denied");
    let (_, list) = deliveries(&app, "deployer", &req).await;
    let d = &list["deliveries"][0];
    assert_eq!(d["state"], "delivered");
    assert_eq!(d["attempt_count"], 3);
    let statuses: Vec<&Value> = d["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(500), &json!(200)]);
}

#[tokio::test]
async fn rule_23_410_stops_and_a_redelivery_sends_it_again() {
    // Arrange
    let app = spawn(r#""127.0.0.1""#).await;
    let rx = Receiver::start().await;
    rx.script("gone", vec![Some((410, vec![]))]);
    let req = app.create("deployer", ask(&rx.url("gone"))).await;

    // Act: the app cancels its own request (a `cancelled` callback), the receiver answers 410.
    let (status, _) = app
        .post(
            "deployer",
            &format!("/v1/requests/{}/cancel", id_of(&req)),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.tick().await;
    app.advance(Duration::from_secs(3 * 86400)).await;
    let after_gone = rx.got("gone").len();
    let (_, list) = deliveries(&app, "deployer", &req).await;
    let redeliver = format!("/v1/requests/{}/deliveries/redeliver", id_of(&req));
    let (by_reviewer, e1) = app.post("bob", &redeliver, json!({})).await;
    let (by_other_app, e2) = app.post("other", &redeliver, json!({})).await;
    let (by_creator, again) = app.post("deployer", &redeliver, json!({})).await;
    app.tick().await;

    // Assert
    assert_eq!(after_gone, 1, "410 stops for good");
    assert_eq!(list["deliveries"][0]["state"], "gone");
    assert_eq!(rx.got("gone")[0].json()["status"], "cancelled");
    assert_error(by_reviewer, &e1, StatusCode::FORBIDDEN);
    assert_error(by_other_app, &e2, StatusCode::NOT_FOUND);
    assert_eq!(by_creator, StatusCode::OK, "{again}");
    assert_eq!(again["deliveries"][0]["state"], "pending");
    let got = rx.got("gone");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, got[1].id);
    let (_, list) = deliveries(&app, "root", &req).await;
    assert_eq!(list["deliveries"][0]["state"], "delivered");
}

#[tokio::test]
async fn rule_23_a_redirect_is_a_failure_and_is_never_followed() {
    // Arrange
    let app = spawn(r#""127.0.0.1""#).await;
    let rx = Receiver::start().await;
    rx.script(
        "moved",
        vec![Some((307, vec![("location", rx.url("elsewhere"))]))],
    );
    let req = app.create("deployer", ask(&rx.url("moved"))).await;

    // Act
    app.approve("bob", &req).await;
    app.tick().await;

    // Assert
    assert_eq!(rx.got("moved").len(), 1);
    assert!(rx.got("elsewhere").is_empty(), "the redirect was followed");
    let (_, list) = deliveries(&app, "deployer", &req).await;
    let d = &list["deliveries"][0];
    assert_eq!(d["state"], "pending");
    assert_eq!(d["attempts"][0]["status"], 307);
    let error = d["attempts"][0]["error"].as_str().expect("error");
    assert!(error.contains("redirects are not followed"), "{error}");
}

#[tokio::test]
async fn rule_23_retry_after_is_honoured() {
    // Arrange: 503 with Retry-After: 120, then 200. Without Retry-After the first retry
    // would come after at most 5 seconds.
    let app = spawn(r#""127.0.0.1""#).await;
    let rx = Receiver::start().await;
    rx.script(
        "busy",
        vec![Some((503, vec![("retry-after", "120".to_owned())]))],
    );
    let req = app.create("deployer", ask(&rx.url("busy"))).await;

    // Act
    app.approve("bob", &req).await;
    app.tick().await;
    app.advance(Duration::from_secs(119)).await;
    let before = rx.got("busy").len();
    app.advance(Duration::from_secs(1)).await;

    // Assert
    assert_eq!(before, 1, "retried before Retry-After");
    assert_eq!(rx.got("busy").len(), 2);
    let (_, list) = deliveries(&app, "deployer", &req).await;
    assert_eq!(list["deliveries"][0]["state"], "delivered");
}

#[tokio::test]
async fn rule_22_expiry_is_called_back_too() {
    // Arrange
    let app = spawn(r#""127.0.0.1""#).await;
    let rx = Receiver::start().await;
    let req = app.create("deployer", ask(&rx.url("late"))).await;

    // Act: nobody decides within the 2h pending TTL.
    app.advance(Duration::from_secs(2 * 3600 + 1)).await;

    // Assert
    let got = rx.got("late");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["status"], "expired");
    assert_eq!(got[0].json()["actioned_by"], Value::Null);
    let _ = req;
}

/// Rule 26, and hardening item 6: a refused host name is not told what it resolves to.
#[tokio::test]
async fn rule_26_loopback_callbacks_are_refused_unless_allow_listed() {
    // Arrange: no allow-list.
    let app = spawn("").await;
    let rx = Receiver::start().await;
    let https = rx.url("hook").replace("http://", "https://");

    // Act
    let attempts = [
        rx.url("hook"),
        https.clone(),
        https.replace("127.0.0.1", "localhost"),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[::1]/hook".to_owned(),
        "javascript:alert(1)".to_owned(),
    ];
    let mut answers = vec![];
    for url in &attempts {
        answers.push(app.post("deployer", "/v1/requests", ask(url)).await);
    }
    let (_, list) = app.get("deployer", "/v1/requests").await;

    // Assert: each refused with a clear 422, and nothing created.
    for ((status, body), url) in answers.iter().zip(&attempts) {
        assert_error(*status, body, StatusCode::UNPROCESSABLE_ENTITY);
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("callback"), "{url}: {msg}");
    }
    assert!(answers[0].1.to_string().contains("https"));
    for (i, why) in [(1, "loopback"), (3, "metadata"), (4, "loopback")] {
        assert!(answers[i].1.to_string().contains(why), "{}", answers[i].1);
    }
    // A name is refused without saying what it resolves to (hardening item 6).
    let by_name = answers[2].1.to_string();
    assert!(by_name.contains("may not reach"), "{by_name}");
    for secret in ["127.0.0.1", "::1", "loopback"] {
        assert!(!by_name.contains(secret), "{by_name}");
    }
    assert_eq!(list["requests"], json!([]));
}

#[tokio::test]
async fn rule_26_the_address_is_checked_again_when_the_callback_is_sent() {
    // Arrange: allow-listed when the request is created…
    let app = spawn(r#""127.0.0.1""#).await;
    let rx = Receiver::start().await;
    let req = app.create("deployer", ask(&rx.url("hook"))).await;

    // …and no longer when the outcome is delivered.
    let path = app.dir.path().join("countersign.hcl");
    let src = std::fs::read_to_string(&path)
        .expect("config")
        .replace(r#"outbound_allow = ["127.0.0.1"]"#, "");
    let config = config::load_str(path.to_str().expect("utf-8"), &src).expect("config");
    app.engine.reload(config).expect("reload");

    // Act
    app.approve("bob", &req).await;
    app.tick().await;

    // Assert: a recorded failure, and nothing reached the receiver.
    assert!(rx.got("hook").is_empty());
    let (_, list) = deliveries(&app, "deployer", &req).await;
    let d = &list["deliveries"][0];
    assert_eq!(d["state"], "pending");
    let error = d["attempts"][0]["error"].as_str().expect("error");
    assert!(error.contains("https"), "{error}");
}

#[tokio::test]
async fn rule_23_a_hanging_receiver_does_not_hold_up_another() {
    // Arrange: a receiver that never answers, and one that does, with the real worker.
    let app = spawn(r#""127.0.0.1""#).await;
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    slow.script("hang", vec![None; 20]);
    let mut slow_reqs = vec![];
    for _ in 0..10 {
        slow_reqs.push(app.create("deployer", ask(&slow.url("hang"))).await);
    }
    let quick = app.create("deployer", ask(&fast.url("ok"))).await;
    for r in &slow_reqs {
        app.approve("bob", r).await;
    }
    app.approve("bob", &quick).await;

    // Act
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine::Worker::run(app.engine.clone(), stopped));

    // Assert: the healthy receiver gets its callback while the other hangs, and the hanging
    // one never has more than its share of calls.
    eventually("the healthy receiver is called back", async || {
        (fast.got("ok").len() == 1).then_some(())
    })
    .await;
    let hanging = u32::try_from(slow.got("hang").len()).expect("a count");
    assert!(
        (1..=engine::callback::PER_RECEIVER).contains(&hanging),
        "{hanging} calls to one receiver at once"
    );
    let _ = stop.send(true);
    worker.abort();
}

/// A policy that spins until the time limit, so that a creation takes a while.
const SLOW: &str = r#"
package slow

spin contains "never" if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j == -1
}
"#;

#[tokio::test]
async fn rule_25_idempotency_keys_replay_refuse_and_conflict() {
    // Arrange
    let resources = format!(
        "{RESOURCES}\n{}",
        r#"
resource "slow" {
  max_duration = "1h"
  on_request   = { bundle = "slow.rego", query = "data.slow.spin" }
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#
    );
    let mut app = TestApp::spawn_with(
        "outbound_allow = [\"127.0.0.1\"]\npolicy_timeout = \"1500ms\"",
        &[("slow.rego", SLOW)],
        &resources,
    )
    .await;
    app.app_tokens(&["deployer"]).await;
    let rx = Receiver::start().await;
    let send = |key: &str, body: &Value| {
        let api = &app.api;
        let (key, bytes) = (key.to_owned(), body.to_string().into_bytes());
        async move {
            let res = reqwest::Client::new()
                .post(format!("{}/v1/requests", api.base))
                .bearer_auth(api.token("deployer"))
                .header("idempotency-key", key)
                .header("content-type", "application/json")
                .body(bytes)
                .send()
                .await
                .expect("send");
            let replayed = res.headers().contains_key("idempotent-replayed");
            let status = res.status();
            let body: Value = res.json().await.expect("json");
            (status, body, replayed)
        }
    };

    // Act: the same key and body twice (keys in another order the second time); the same key
    // with another body; the same key from another caller is another key.
    let body = ask(&rx.url("hook"));
    let (s1, first, r1) = send("deploy-4711", &body).await;
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"callback": {{"url": "{}"}}, "request_data": {{"commit": "9f77d45"}}, "correlation_id": "pipeline-4711", "purpose": "Deploy **v2.3.1** to production", "requester": "carol@example.com", "resource": "deploy-prod"}}"#,
        rx.url("hook")
    ))
    .expect("json");
    let (s2, second, r2) = send("deploy-4711", &reordered).await;
    let mut changed = body.clone();
    changed["purpose"] = json!("Deploy v2.3.2 instead");
    let (s3, refused, _) = send("deploy-4711", &changed).await;

    // Concurrent: five at once with a fresh key, on a resource whose policy takes 1.5s.
    let slow_body = json!({ "resource": "slow", "reason": "slow", "requester": email("carol") });
    let racers = (0..5).map(|_| send("slow-1", &slow_body));
    let results = futures_join_all(racers).await;
    let (_, list) = app.get("deployer", "/v1/requests?resource=slow").await;

    // Assert
    assert_eq!((s1, r1), (StatusCode::CREATED, false), "{first}");
    assert_eq!((s2, r2), (StatusCode::CREATED, true), "{second}");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["callback_secret"], first["callback_secret"]);
    assert_eq!(second["state"], first["state"]);
    assert_error(s3, &refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.to_string().contains("different body"), "{refused}");

    let created: Vec<&Value> = results
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::CREATED)
        .map(|(_, b, _)| b)
        .collect();
    let conflicts = results
        .iter()
        .filter(|(s, b, _)| {
            *s == StatusCode::CONFLICT
                && b["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("still being created"))
        })
        .count();
    assert_eq!(created.len() + conflicts, 5, "{results:?}");
    assert!(
        conflicts >= 1,
        "no request saw the first in flight: {results:?}"
    );
    assert!(created.iter().all(|b| b["id"] == created[0]["id"]));
    assert_eq!(list["requests"].as_array().map(Vec::len), Some(1), "{list}");

    // Keys are remembered for 24 hours (`idempotency_ttl`): then the key is free again.
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let (s4, later, r4) = send("deploy-4711", &changed).await;
    assert_eq!((s4, r4), (StatusCode::CREATED, false), "{later}");
    assert_ne!(later["id"], first["id"]);
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<_> = futs.collect();
    let n = futs.len();
    let mut out: Vec<Option<F::Output>> = (0..n).map(|_| None).collect();
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut pending: Vec<usize> = (0..n).collect();
    std::future::poll_fn(|cx| {
        pending.retain(|&i| match pinned[i].as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                out[i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}
