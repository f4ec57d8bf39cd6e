//! PRODUCT.md §5 `GET /metrics` (issue 13, item 5): the series move as requests are created,
//! reviewed, activated and expired on the manual clock, with exact values; callback deliveries
//! and their queue; HTTP requests labelled by route template, never by path; and the whole
//! output read by real parsers, prometheus_client's (`COUNTERSIGN_TEST_PYTHON`) and
//! `promtool check metrics` (`COUNTERSIGN_TEST_PROMTOOL`).
//!
//! Each server has its own recorder, so every value below is this test's server's alone.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::metrics as m;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::callbacks::Receiver;
use crate::helpers::{TestApp, email, id_of, run_python};

/// One sample: its name, its labels and its value.
type Sample = (String, BTreeMap<String, String>, f64);

/// One answer of `GET /metrics`, read line by line.
pub struct Scrape {
    pub text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Scrapes `app` (no token needed) and reads every sample line.
    pub async fn of(app: &TestApp) -> Scrape {
        let (status, text) = app
            .api
            .try_send(Method::GET, "/metrics", None, None)
            .await
            .expect("GET /metrics");
        assert_eq!(status, StatusCode::OK, "{text}");
        Scrape::parse(text)
    }

    pub fn parse(text: String) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| sample(l).unwrap_or_else(|| panic!("not a sample line: {l:?}")))
            .collect();
        Scrape { text, samples }
    }

    /// The value of the sample `name` with exactly these labels, if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }

    /// [`Scrape::value`], which must exist.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{}", self.text))
    }

    /// Every sample named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |(n, _, _)| n == name)
    }
}

/// Reads `name{k="v",…} value` (the exposition has no timestamps).
fn sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let (name, labels) = match head.split_once('{') {
        None => (head, BTreeMap::new()),
        Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)?),
    };
    Some((name.to_owned(), labels, value.parse().ok()?))
}

/// Reads `k="v",…` with the text format's escapes.
fn labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return Some(out);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key, value);
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

#[test]
fn the_sample_reader_reads_labels_and_escapes() {
    let (name, labels, value) =
        sample(r#"x_bucket{route="/a/{id}",q="say \"hi\", ok",le="+Inf"} 3"#).expect("a sample");
    assert_eq!(name, "x_bucket");
    assert_eq!(labels["route"], "/a/{id}");
    assert_eq!(labels["q"], "say \"hi\", ok");
    assert_eq!(labels["le"], "+Inf");
    assert_eq!(value, 3.0);
    assert_eq!(sample("up 1").map(|s| s.2), Some(1.0));
    assert_eq!(sample("bad{x=1} 2"), None);
}

const DB: &str = r#"
resource "db" {
  connector    = "ok"
  max_duration = "4h"
  durations    = ["1h"]
  pending_ttl  = "30m"
  workflow     = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;

const CALLBACKS: &str = r#"
app "deployer" { roles = ["request_approval"] }

resource "deploy" {
  max_duration = "1h"
  workflow     = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}
"#;

fn ask_db() -> Value {
    json!({ "resource": "db", "reason": "x", "duration": "1h" })
}

fn deny() -> Value {
    json!({ "decision": "deny", "comment": "not now" })
}

/// §5 `/metrics` (issue 13, item 5): creation, a denial, an approval, an activation seven
/// seconds late, a request that expires, and a grant whose expiry is recorded thirty seconds
/// after its `expires_at`, each seen in the series with exact values. Pending requests and
/// active grants are counted in the store at each scrape.
#[tokio::test]
async fn sec_5_metrics_follow_requests_through_review_activation_and_expiry() {
    // Arrange
    let app = TestApp::spawn(DB).await;
    let start = Scrape::of(&app).await;
    let approved = app.create("alice", ask_db()).await;
    let denied = app.create("carol", ask_db()).await;
    app.create("dan", ask_db()).await;
    let created = Scrape::of(&app).await;

    // Act
    let (status, body) = app.review("bob", &denied, deny()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.approve("bob", &approved).await;
    app.clock.advance(Duration::from_secs(7));
    let waiting = Scrape::of(&app).await;
    app.tick().await;
    let active = Scrape::of(&app).await;
    // dan's request expires (pending_ttl 30m); the grant (activated at +7s for 1h) not yet.
    app.advance(Duration::from_secs(30 * 60)).await;
    let expired = Scrape::of(&app).await;
    app.advance(Duration::from_secs(30 * 60 + 30)).await;
    let ended = Scrape::of(&app).await;

    // Assert
    let db = [("resource", "db")];
    let outcome = |o| [("resource", "db"), ("outcome", o)];
    let decision = |d| [("resource", "db"), ("decision", d)];
    let calls = |action, result| [("connector", "ok"), ("action", action), ("result", result)];
    let due = |kind| [("kind", kind)];

    assert_eq!(start.value(m::REQUESTS_CREATED, &db), None);
    assert_eq!(start.get(m::REQUESTS_PENDING, &[]), 0.0);
    assert_eq!(start.get(m::GRANTS_ACTIVE, &[]), 0.0);
    for kind in domain::TimerKind::ALL {
        assert_eq!(start.get(m::JOBS_DUE, &due(kind.as_str())), 0.0, "{kind:?}");
    }
    assert_eq!(start.get(m::JOBS_OLDEST_DUE_AGE, &[]), 0.0);

    assert_eq!(created.get(m::REQUESTS_CREATED, &db), 3.0);
    assert_eq!(created.get(m::REQUESTS_PENDING, &[]), 1.0 + 2.0);

    assert_eq!(waiting.get(m::REQUESTS_DECIDED, &outcome("denied")), 1.0);
    assert_eq!(waiting.get(m::REQUESTS_DECIDED, &outcome("approved")), 1.0);
    assert_eq!(waiting.get(m::REVIEWS, &decision("deny")), 1.0);
    assert_eq!(waiting.get(m::REVIEWS, &decision("approve")), 1.0);
    assert_eq!(waiting.get(m::REQUESTS_PENDING, &[]), 1.0);
    assert_eq!(waiting.get(m::GRANTS_ACTIVE, &[]), 0.0);
    assert_eq!(waiting.get(m::JOBS_DUE, &due("connector_grant")), 1.0);
    assert_eq!(waiting.get(m::JOBS_OLDEST_DUE_AGE, &[]), 7.0);

    assert_eq!(active.get(m::GRANTS_ACTIVE, &[]), 1.0);
    assert_eq!(active.get(m::CONNECTOR_CALLS, &calls("grant", "ok")), 1.0);
    let took = format!("{}_count", m::CONNECTOR_CALL_DURATION);
    let grant_call = [("connector", "ok"), ("action", "grant")];
    assert_eq!(active.get(&took, &grant_call), 1.0);
    assert_eq!(active.get(m::JOBS_DUE, &due("connector_grant")), 0.0);
    assert_eq!(active.get(m::JOBS_OLDEST_DUE_AGE, &[]), 0.0);

    assert_eq!(expired.get(m::REQUESTS_DECIDED, &outcome("expired")), 1.0);
    assert_eq!(expired.get(m::REQUESTS_PENDING, &[]), 0.0);
    assert_eq!(expired.get(m::GRANTS_ACTIVE, &[]), 1.0);
    let lag = |suffix: &str| format!("{}_{suffix}", m::GRANT_EXPIRY_LAG);
    assert_eq!(expired.get(&lag("count"), &[]), 0.0);

    assert_eq!(ended.get(m::GRANTS_ACTIVE, &[]), 0.0);
    assert_eq!(ended.get(m::CONNECTOR_CALLS, &calls("revoke", "ok")), 1.0);
    assert_eq!(ended.get(&lag("count"), &[]), 1.0);
    assert_eq!(ended.get(&lag("sum"), &[]), 30.0);
    assert_eq!(ended.get(&lag("bucket"), &[("le", "10")]), 0.0);
    assert_eq!(ended.get(&lag("bucket"), &[("le", "30")]), 1.0);
    assert_eq!(ended.get(m::REQUESTS_CREATED, &db), 3.0);

    // Every group the writer ran was committed, and its commit timed.
    let groups = ended.get(&format!("{}_count", m::STORE_GROUP_JOBS), &[]);
    let jobs = ended.get(&format!("{}_sum", m::STORE_GROUP_JOBS), &[]);
    let commits = ended.get(&format!("{}_count", m::STORE_COMMIT_DURATION), &[]);
    let transactions = ended.get(&format!("{}_count", m::STORE_TRANSACTION_DURATION), &[]);
    assert!(
        groups > 0.0 && jobs >= groups,
        "{groups} groups, {jobs} jobs"
    );
    assert_eq!(commits, groups);
    assert_eq!(transactions, groups);
    assert_eq!(ended.get(m::STORE_ROLLBACKS, &[]), 0.0);

    // HTTP requests by route template and status; this scrape is not counted yet.
    let http = api::metrics::HTTP_REQUESTS;
    let route = |r, method, status| [("route", r), ("method", method), ("status", status)];
    assert_eq!(ended.get(http, &route("/v1/requests", "POST", "201")), 3.0);
    let reviews = "/v1/requests/{id}/reviews";
    assert_eq!(ended.get(http, &route(reviews, "POST", "200")), 2.0);
    assert_eq!(ended.get(http, &route("/metrics", "GET", "200")), 5.0);
}

/// §5 `/metrics` (issue 13, item 5): callback attempts by result, with their latency, and the
/// queue of deliveries not finished yet.
#[tokio::test]
async fn sec_5_metrics_count_callback_deliveries_and_their_queue() {
    // Arrange
    let mut app = TestApp::spawn_with(r#"outbound_allow = ["127.0.0.1"]"#, &[], CALLBACKS).await;
    app.app_tokens(&["deployer"]).await;
    let rx = Receiver::start().await;
    rx.script("flaky", vec![Some((500, vec![]))]);
    rx.script("gone", vec![Some((410, vec![]))]);
    let ask = |path: &str| {
        json!({
            "resource": "deploy",
            "requester": email("carol"),
            "purpose": "ship it",
            "callback": { "url": rx.url(path) },
        })
    };
    let flaky = app.create("deployer", ask("flaky")).await;
    let gone = app.create("deployer", ask("gone")).await;
    app.review("bob", &flaky, deny()).await;
    app.review("bob", &gone, deny()).await;

    // Act
    let queued = Scrape::of(&app).await;
    app.tick().await;
    let first = Scrape::of(&app).await;
    app.advance(Duration::from_secs(60)).await;
    let last = Scrape::of(&app).await;

    // Assert
    let result = |r| [("result", r)];
    let took = format!("{}_count", m::CALLBACK_DELIVERY_DURATION);
    assert_eq!(queued.get(m::CALLBACK_QUEUE, &[]), 2.0);
    for r in ["delivered", "retry", "failed", "gone"] {
        assert_eq!(queued.get(m::CALLBACK_DELIVERIES, &result(r)), 0.0, "{r}");
    }
    assert_eq!(first.get(m::CALLBACK_QUEUE, &[]), 1.0);
    assert_eq!(first.get(m::CALLBACK_DELIVERIES, &result("retry")), 1.0);
    assert_eq!(first.get(m::CALLBACK_DELIVERIES, &result("gone")), 1.0);
    assert_eq!(first.get(&took, &[]), 2.0);
    assert_eq!(last.get(m::CALLBACK_QUEUE, &[]), 0.0);
    assert_eq!(last.get(m::CALLBACK_DELIVERIES, &result("delivered")), 1.0);
    assert_eq!(last.get(m::CALLBACK_DELIVERIES, &result("retry")), 1.0);
    assert_eq!(last.get(m::CALLBACK_DELIVERIES, &result("failed")), 0.0);
    assert_eq!(last.get(&took, &[]), 3.0);
    assert_eq!(rx.got("flaky").len(), 2);
}

/// §5 `/metrics` (issue 13, item 5): HTTP series carry the matched route template, never the
/// path that was asked for, so ids cannot multiply the series; what matched no route is
/// `unmatched`, an invented method is `other`, and the portal is counted too.
#[tokio::test]
async fn sec_5_metrics_label_http_requests_by_route_template() {
    // Arrange
    let app = TestApp::spawn(DB).await;
    let req = app.create("alice", ask_db()).await;
    let id = id_of(&req).to_owned();

    // Act
    app.request("alice", &req).await;
    let (missing, _) = app.get("alice", "/v1/requests/no-such-request").await;
    let (unrouted, _) = app
        .api
        .try_send(Method::GET, &format!("/nowhere/{id}"), None, None)
        .await
        .expect("GET");
    let (_, _) = app
        .api
        .try_send(Method::GET, "/static/portal.css", None, None)
        .await
        .expect("GET the stylesheet");
    let brew = Method::from_bytes(b"BREW").expect("a method token");
    app.api
        .try_send(brew, "/healthz", None, None)
        .await
        .expect("BREW");
    let scrape = Scrape::of(&app).await;

    // Assert
    let http = api::metrics::HTTP_REQUESTS;
    let route = |r, status| [("route", r), ("method", "GET"), ("status", status)];
    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert_eq!(unrouted, StatusCode::NOT_FOUND);
    assert_eq!(scrape.get(http, &route("/v1/requests/{id}", "200")), 1.0);
    assert_eq!(scrape.get(http, &route("/v1/requests/{id}", "404")), 1.0);
    assert_eq!(scrape.get(http, &route("unmatched", "404")), 1.0);
    assert_eq!(scrape.get(http, &route("/static/portal.css", "200")), 1.0);
    let other: Vec<_> = scrape
        .all(http)
        .filter(|(_, l, _)| l.get("method").map(String::as_str) == Some("other"))
        .collect();
    assert_eq!(other.len(), 1, "{other:?}");
    let took = format!("{}_count", api::metrics::HTTP_REQUEST_DURATION);
    let by_id = [("route", "/v1/requests/{id}"), ("method", "GET")];
    assert_eq!(scrape.get(&took, &by_id), 2.0);
    assert!(
        !scrape.text.contains(&id) && !scrape.text.contains("no-such-request"),
        "an id became a label:\n{}",
        scrape.text
    );
}

/// Every family `/metrics` must show, with its type.
fn families() -> Vec<(&'static str, &'static str)> {
    vec![
        (m::REQUESTS_CREATED, "counter"),
        (m::REQUESTS_DECIDED, "counter"),
        (m::REVIEWS, "counter"),
        (m::REQUESTS_PENDING, "gauge"),
        (m::GRANTS_ACTIVE, "gauge"),
        (m::GRANT_EXPIRY_LAG, "histogram"),
        (m::CONNECTOR_CALLS, "counter"),
        (m::CONNECTOR_CALL_DURATION, "histogram"),
        (m::CALLBACK_DELIVERIES, "counter"),
        (m::CALLBACK_DELIVERY_DURATION, "histogram"),
        (m::CALLBACK_QUEUE, "gauge"),
        (m::JOBS_DUE, "gauge"),
        (m::JOBS_OLDEST_DUE_AGE, "gauge"),
        (m::STORE_GROUP_JOBS, "histogram"),
        (m::STORE_COMMIT_DURATION, "histogram"),
        (m::STORE_TRANSACTION_DURATION, "histogram"),
        (m::STORE_ROLLBACKS, "counter"),
        (m::SCRAPE_ERRORS, "counter"),
        (api::metrics::HTTP_REQUESTS, "counter"),
        (api::metrics::HTTP_REQUEST_DURATION, "histogram"),
    ]
}

/// A server that has done a bit of everything (a request approved, activated and expired, a
/// callback delivered, HTTP requests), and its scrape.
async fn busy_scrape() -> (TestApp, Scrape) {
    let mut app = TestApp::spawn_with(
        r#"outbound_allow = ["127.0.0.1"]"#,
        &[],
        &format!("{DB}\n{CALLBACKS}"),
    )
    .await;
    app.app_tokens(&["deployer"]).await;
    let rx = Receiver::start().await;
    let req = app.create("alice", ask_db()).await;
    app.approve("bob", &req).await;
    let cb = json!({
        "resource": "deploy",
        "requester": email("carol"),
        "purpose": "ship it",
        "callback": { "url": rx.url("ok") },
    });
    let other = app.create("deployer", cb).await;
    app.review("bob", &other, deny()).await;
    app.get("alice", "/v1/requests/nope").await;
    app.tick().await;
    app.advance(Duration::from_secs(3600 + 5)).await;
    let scrape = Scrape::of(&app).await;
    (app, scrape)
}

/// §5 `/metrics` (issue 13, item 5): the whole output of a busy server parses with the
/// Prometheus project's Python parser (`prometheus_client.parser`), every family has a type
/// and help text, and every histogram is well formed.
#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PYTHON (bash .ci/python.sh), with prometheus-client"]
async fn sec_5_metrics_output_parses_with_prometheus_client() {
    // Arrange
    let (app, scrape) = busy_scrape().await;
    let file = app.dir.path().join("scrape.txt");
    std::fs::write(&file, &scrape.text).expect("write the scrape");
    let expected: Vec<String> = families()
        .into_iter()
        .map(|(name, kind)| format!("{name}={kind}"))
        .collect();
    let mut args = vec![file.to_str().expect("utf-8 path")];
    args.extend(expected.iter().map(String::as_str));

    // Act
    let out = run_python("check_metrics.py", &args).await;

    // Assert
    assert!(out.contains("ok: "), "{out}");
}

/// §5 `/metrics` (issue 13, item 5): `promtool check metrics`, Prometheus's own linter, finds
/// nothing to say about the output of a busy server.
#[tokio::test]
#[ignore = "needs COUNTERSIGN_TEST_PROMTOOL (bash .ci/promtool.sh)"]
async fn sec_5_metrics_output_passes_promtool_check_metrics() {
    // Arrange
    let promtool = std::env::var("COUNTERSIGN_TEST_PROMTOOL").unwrap_or_else(|_| {
        panic!("COUNTERSIGN_TEST_PROMTOOL is not set: run `bash .ci/promtool.sh` and export the path it prints")
    });
    let (_app, scrape) = busy_scrape().await;

    // Act
    let mut child = tokio::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {promtool}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, scrape.text.as_bytes())
        .await
        .expect("write to promtool");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool ran");

    // Assert
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {}\n{said}", out.status);
    assert!(said.trim().is_empty(), "promtool found problems:\n{said}");
    for (name, _) in families() {
        assert!(
            scrape.text.contains(&format!("# TYPE {name} ")),
            "{name} is missing"
        );
    }
}
