//! The web portal over plain HTTP (issue 6), without a browser: forms posted as a browser
//! posts them, cookies carried by hand, HTML read back. The same flows in a real headless
//! Chromium, with sign-in through a real OpenID Connect provider, are in `portal_e2e.rs`.
//!
//! Everything the portal does goes through the engine's rules, so the tests here prove that
//! the portal reaches them (self-approval, one decision per person, stale pages, CSRF,
//! sessions) rather than the rules themselves, which `rules.rs` covers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, email, id_of};

/// A browser, as far as the portal can tell: cookies kept, redirects not followed.
pub struct Web {
    base: String,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
    /// Every `Set-Cookie` received, as sent.
    pub set_cookies: Vec<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub html: String,
}

impl Web {
    pub fn new(app: &TestApp) -> Web {
        Web {
            base: app.api.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: BTreeMap::new(),
            set_cookies: vec![],
        }
    }

    /// Signs in with the development sign-in, as a person would: open the sign-in page,
    /// pick the user, post the form.
    pub async fn sign_in(app: &TestApp, user: &str) -> Web {
        let mut web = Web::new(app);
        let login = web.get("/login").await;
        assert_eq!(login.status, StatusCode::OK);
        let csrf = csrf(&login.html);
        let done = web
            .post(
                "/login/dev",
                &[("csrf", &csrf), ("user", &email(user)), ("next", "/inbox")],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
        assert_eq!(done.location.as_deref(), Some("/inbox"));
        web
    }

    fn absorb(&mut self, res: &reqwest::Response) {
        for v in res.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = v.to_str().unwrap_or_default().to_owned();
            if let Some((pair, _)) = text.split_once(';')
                && let Some((k, v)) = pair.split_once('=')
            {
                if v.is_empty() {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
            self.set_cookies.push(text);
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, res: reqwest::Response) -> Page {
        self.absorb(&res);
        let status = res.status();
        let location = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Page {
            status,
            location,
            html: res.text().await.expect("body"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.finish(res).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded_body(form);
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .expect("POST");
        self.finish(res).await
    }

    /// Posts a form found on the page at `path`, with that page's CSRF token.
    pub async fn submit(&mut self, path: &str, action: &str, form: &[(&str, &str)]) -> Page {
        let page = self.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        assert!(
            page.html.contains(&format!("action=\"{action}\"")),
            "no form posting to {action} on {path}:\n{}",
            page.html
        );
        let token = csrf(&page.html);
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(form);
        self.post(action, &all).await
    }
}

fn serde_urlencoded_body(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The CSRF token in a page's forms.
pub fn csrf(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF field on the page:\n{html}"))
        + marker.len();
    html[at..].split('"').next().unwrap_or_default().to_owned()
}

/// A source of options on loopback that counts its calls: `/pokemon` answers Sym's prefetch
/// example, `/broken` answers 500.
pub struct Options {
    pub base: String,
    pub hits: Arc<AtomicUsize>,
}

impl Options {
    pub async fn start() -> Options {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new()
            .route(
                "/pokemon",
                axum::routing::get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        axum::Json(json!({ "results": [
                            { "name": "pikachu", "url": "https://pokeapi.co/api/v2/pokemon/25/" },
                            { "name": "eevee", "url": "https://pokeapi.co/api/v2/pokemon/133/" },
                        ]}))
                    }
                }),
            )
            .route(
                "/broken",
                axum::routing::get(|| async {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no")
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Options {
            base: format!("http://{addr}"),
            hits,
        }
    }
}

/// A resource with one field of every type, one of them with `options_from`, part of a
/// workflow; `carol` reviews. `grace`'s second resource is in the same workflow.
pub fn typed_resources(options_base: &str) -> String {
    format!(
        r#"
resource "deploy-db" {{
  description  = "Write access to the deploy database"
  connector    = "log"
  grant        = {{ role = "deployer" }}
  max_duration = "24h"
  durations    = ["15m", "1h", "4h", "24h"]
  part_of      = "release"

  field "ticket" {{
    type        = "string"
    required    = true
    description = "The change ticket"
  }}
  field "rows" {{ type = "int" }}
  field "emergency" {{ type = "bool" }}
  field "urgency" {{
    type           = "enum"
    allowed_values = ["Normal", "Emergency"]
    required       = true
  }}
  field "window" {{ type = "duration" }}
  field "buddy" {{ type = "user" }}
  field "pokemon" {{
    type         = "string"
    options_from = {{ url = "{options_base}/pokemon", items = "/results", value = "name" }}
  }}

  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["carol@example.com", "bob@example.com"] }} }} ] }}
}}

resource "deploy-cache" {{
  connector    = "log"
  max_duration = "24h"
  part_of      = "release"
  workflow     = {{ steps = [ {{ reviewers = {{ one_of = ["carol@example.com"] }} }} ] }}
}}

resource "broken-options" {{
  max_duration = "1h"
  field "thing" {{
    type         = "string"
    options_from = {{ url = "{options_base}/broken" }}
  }}
  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["carol@example.com"] }} }} ] }}
}}

group "oncall" {{ members = ["dan@example.com"] }}

resource "prod-shell" {{
  description  = "A shell on a production host"
  max_duration = "4h"
  owners       = ["group:oncall"]
  workflow     = {{ steps = [ {{ reviewers = {{ one_of = ["carol@example.com", "bob@example.com"] }} }} ] }}
}}

resource "self-review" {{
  max_duration = "1h"
  workflow     = {{ steps = [ {{ reviewers = {{ one_of = ["grace@example.com", "bob@example.com"] }} }} ] }}
}}
"#
    )
}

pub const ALLOW_LOOPBACK: &str = r#"  outbound_allow = ["127.0.0.1"]"#;

/// The id in `/requests/<id>?…`.
fn request_id(location: &str) -> String {
    location
        .strip_prefix("/requests/")
        .and_then(|r| r.split(['?', '#']).next())
        .unwrap_or_else(|| panic!("not a request page: {location}"))
        .to_owned()
}

/// Rules 14 and 15 through the portal: a request with typed fields and a dynamic option
/// list; the reviewer approves a shorter duration for the entire workflow; the requester sees
/// the grant.
#[tokio::test]
async fn rule_14_15_portal_request_with_typed_and_dynamic_fields_approved_shorter_for_the_workflow()
{
    // Arrange
    let options = Options::start().await;
    let app = TestApp::spawn_with(ALLOW_LOOPBACK, &[], &typed_resources(&options.base)).await;
    let mut grace = Web::sign_in(&app, "grace").await;

    // Act: the form shows the fetched options and the typed inputs.
    let form = grace.get("/catalog/deploy-db").await;
    assert_eq!(form.status, StatusCode::OK);
    for needle in [
        r#"<option value="pikachu""#,
        r#"<option value="eevee""#,
        r#"type="number" step="1" name="field.rows""#,
        r#"type="checkbox" name="field.emergency""#,
        r#"<option value="Emergency""#,
        r#"<option value="bob@example.com""#,
        r#"<option value="4h""#,
    ] {
        assert!(
            form.html.contains(needle),
            "{needle} not in the form:\n{}",
            form.html
        );
    }
    let at = |name: &str| {
        form.html
            .find(&format!("name=\"field.{name}\""))
            .unwrap_or_else(|| panic!("no field {name}"))
    };
    assert!(
        at("ticket") < at("rows") && at("rows") < at("urgency") && at("buddy") < at("pokemon"),
        "the form keeps the configuration's order"
    );
    let created = grace
        .submit(
            "/catalog/deploy-db",
            "/catalog/deploy-db",
            &[
                ("field.ticket", "CHG-1234"),
                ("field.rows", "42"),
                ("field.emergency", "true"),
                ("field.urgency", "Emergency"),
                ("field.window", "30m"),
                ("field.buddy", "bob@example.com"),
                ("field.pokemon", "eevee"),
                ("duration", "4h"),
                ("reason", "ship release 7"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.html);
    let id = request_id(created.location.as_deref().unwrap_or_default());

    // The reviewer finds it in the inbox and approves 1h for the whole workflow.
    let mut carol = Web::sign_in(&app, "carol").await;
    let inbox = carol.get("/inbox").await;
    assert!(
        inbox.html.contains(&format!("/requests/{id}")),
        "{}",
        inbox.html
    );
    let page = carol.get(&format!("/requests/{id}")).await;
    assert!(page.html.contains("id=\"approve-form\""), "{}", page.html);
    assert!(
        page.html.contains("id=\"approve-workflow\""),
        "{}",
        page.html
    );
    assert!(
        !page.html.contains(r#"<option value="24h""#),
        "a reviewer may not lengthen the duration (rule 14)"
    );
    let approved = carol
        .submit(
            &format!("/requests/{id}"),
            &format!("/requests/{id}/approve"),
            &[("duration", "1h"), ("workflow", "1"), ("comment", "go")],
        )
        .await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.html);
    app.tick().await;

    // Assert
    let req = app.request("grace", &json!(id)).await;
    assert_eq!(req["state"], "approved");
    assert_eq!(req["fields"]["rows"], 42);
    assert_eq!(req["fields"]["emergency"], true);
    assert_eq!(req["fields"]["pokemon"], "eevee");
    assert_eq!(req["fields"]["window"], "30m");
    assert_eq!(req["steps"][0]["reviews"][0]["duration"], "1h");
    assert_eq!(req["steps"][0]["reviews"][0]["scope"], "workflow");
    assert_eq!(req["grant"]["state"], "active");
    assert_eq!(req["grant"]["workflow"], "release");
    let mine = grace.get("/mine").await;
    assert!(
        mine.html.contains("whole workflow release"),
        "{}",
        mine.html
    );
    assert!(mine.html.contains(">active<"), "{}", mine.html);
    // Rule 15: the other resource of the workflow is covered at once.
    let other = app
        .create(
            "grace",
            json!({ "resource": "deploy-cache", "reason": "x" }),
        )
        .await;
    assert_eq!(other["state"], "approved", "{other}");
}

/// Dynamic options (Sym's prefetch): served by the options endpoint, cached, enforced at
/// creation, and a failing source is a clear 502.
#[tokio::test]
async fn sec_5_field_options_are_fetched_through_the_guard_cached_and_enforced() {
    // Arrange
    let options = Options::start().await;
    let app = TestApp::spawn_with(ALLOW_LOOPBACK, &[], &typed_resources(&options.base)).await;
    let path = "/v1/resources/deploy-db/fields/pokemon/options";

    // Act
    let (status, first) = app.get("grace", path).await;
    let (_, second) = app.get("grace", path).await;

    // Assert
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        first["options"],
        json!([{ "value": "pikachu", "label": "pikachu" }, { "value": "eevee", "label": "eevee" }])
    );
    assert_eq!(second, first);
    assert_eq!(
        options.hits.load(Ordering::SeqCst),
        1,
        "the second read is cached"
    );
    app.clock.advance(Duration::from_secs(61));
    app.get("grace", path).await;
    assert_eq!(
        options.hits.load(Ordering::SeqCst),
        2,
        "the cache lasts a minute"
    );

    let (status, e) = app
        .get("grace", "/v1/resources/deploy-db/fields/urgency/options")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(e["options"][1]["value"], "Emergency");
    let (status, e) = app
        .get("grace", "/v1/resources/deploy-db/fields/ticket/options")
        .await;
    assert_error(status, &e, StatusCode::NOT_FOUND);
    let (status, e) = app
        .get("grace", "/v1/resources/broken-options/fields/thing/options")
        .await;
    assert_error(status, &e, StatusCode::BAD_GATEWAY);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("answered 500"),
        "{e}"
    );

    let body = |pokemon: &str| {
        json!({ "resource": "deploy-db", "reason": "x", "duration": "1h",
                "fields": { "ticket": "T-1", "urgency": "Normal", "pokemon": pokemon } })
    };
    let (status, e) = app.post("grace", "/v1/requests", body("mewtwo")).await;
    assert_error(status, &e, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not one of its options"),
        "{e}"
    );
    let ok = app.create("grace", body("pikachu")).await;
    assert_eq!(ok["fields"]["pokemon"], "pikachu");
}

/// Rule 26 for options: a source on a private address that `outbound_allow` does not list
/// is refused when the configuration loads.
#[test]
fn rule_26_options_from_over_plain_http_needs_the_allow_list() {
    let src = typed_resources("http://127.0.0.1:9");
    let e = config::load_str("c.hcl", &src).unwrap_err().to_string();
    assert!(
        e.contains("options_from.url must use https") && e.contains("outbound_allow"),
        "{e}"
    );
}

/// Security rule: every form carries the session's CSRF token, and a POST without it, or
/// with another session's, changes nothing.
#[tokio::test]
async fn sec_7_portal_posts_without_the_sessions_csrf_token_are_refused() {
    // Arrange
    let options = Options::start().await;
    let app = TestApp::spawn_with(ALLOW_LOOPBACK, &[], &typed_resources(&options.base)).await;
    let req = app
        .create(
            "grace",
            json!({ "resource": "deploy-cache", "reason": "x" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    let mut carol = Web::sign_in(&app, "carol").await;
    let grace = Web::sign_in(&app, "grace").await;
    let mut grace = grace;
    let graces_token = csrf(&grace.get("/inbox").await.html);
    let action = format!("/requests/{id}/approve");

    // Act
    let none = carol.post(&action, &[("duration", "1h")]).await;
    let wrong = carol
        .post(&action, &[("csrf", &graces_token), ("duration", "1h")])
        .await;
    let empty = carol
        .post(&action, &[("csrf", ""), ("duration", "1h")])
        .await;
    let comment = carol
        .post(&format!("/requests/{id}/comment"), &[("comment", "hi")])
        .await;
    let mut stranger = Web::new(&app);
    let login = stranger
        .post("/login/dev", &[("user", &email("root")), ("next", "/")])
        .await;

    // Assert
    for (what, page) in [
        ("no token", &none),
        ("another session's token", &wrong),
        ("an empty token", &empty),
        ("a comment without a token", &comment),
        ("a sign-in without the pre-session token", &login),
    ] {
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{what}: {}", page.html);
        assert!(
            page.html.contains("security token"),
            "{what}: {}",
            page.html
        );
    }
    assert!(stranger.cookies.is_empty(), "no session was started");
    let seen = app.request("grace", &req).await;
    assert_eq!(seen["state"], "pending");
    assert_eq!(seen["comments"], json!([]));
}

/// Rule 9: the requester, who is also listed as a reviewer, sees the page without the
/// decision buttons, and an approval posted anyway (with a valid token) is refused.
#[tokio::test]
async fn rule_9_requester_sees_no_approve_button_and_a_forged_approval_is_refused() {
    // Arrange
    let options = Options::start().await;
    let app = TestApp::spawn_with(ALLOW_LOOPBACK, &[], &typed_resources(&options.base)).await;
    let req = app
        .create("grace", json!({ "resource": "self-review", "reason": "x" }))
        .await;
    let id = id_of(&req).to_owned();
    let mut grace = Web::sign_in(&app, "grace").await;

    // Act
    let page = grace.get(&format!("/requests/{id}")).await;
    let forged = grace
        .post(
            &format!("/requests/{id}/approve"),
            &[("csrf", &csrf(&page.html)), ("duration", "1h")],
        )
        .await;

    // Assert
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.html.contains("id=\"approve-form\""), "{}", page.html);
    assert!(!page.html.contains("id=\"deny-form\""), "{}", page.html);
    assert!(page.html.contains("someone else decides"), "{}", page.html);
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.html);
    assert!(forged.html.contains("id=\"problem\""), "{}", forged.html);
    assert!(
        forged.html.contains("id=\"requester\""),
        "the request page, not an error page"
    );
    assert_eq!(app.request("grace", &req).await["state"], "pending");
}

/// Rules 8 and 10: a deny with a comment through the portal; a reviewer on a stale page who
/// then decides gets the request as it is now, with what happened, not an error page.
#[tokio::test]
async fn rule_8_10_deny_with_a_comment_and_a_stale_page_shows_the_decision() {
    // Arrange
    let options = Options::start().await;
    let app = TestApp::spawn_with(ALLOW_LOOPBACK, &[], &typed_resources(&options.base)).await;
    let body = json!({ "resource": "deploy-db", "reason": "x", "duration": "1h",
                       "fields": { "ticket": "T-1", "urgency": "Normal" } });
    let req = app.create("grace", body).await;
    let id = id_of(&req).to_owned();
    let mut bob = Web::sign_in(&app, "bob").await;
    let mut carol = Web::sign_in(&app, "carol").await;
    let carols_page = carol.get(&format!("/requests/{id}")).await;

    // Act: bob denies; carol then approves from her stale page.
    let denied = bob
        .submit(
            &format!("/requests/{id}"),
            &format!("/requests/{id}/deny"),
            &[("comment", "not during the freeze")],
        )
        .await;
    let stale = carol
        .post(
            &format!("/requests/{id}/approve"),
            &[("csrf", &csrf(&carols_page.html)), ("duration", "1h")],
        )
        .await;

    // Assert
    assert_eq!(denied.status, StatusCode::SEE_OTHER);
    let after = bob
        .get(denied.location.as_deref().unwrap_or_default())
        .await;
    assert!(
        after.html.contains("You denied this request."),
        "{}",
        after.html
    );
    assert!(
        after.html.contains("not during the freeze"),
        "{}",
        after.html
    );
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.html);
    assert!(stale.html.contains("id=\"problem\""), "{}", stale.html);
    assert!(stale.html.contains(">denied<"), "{}", stale.html);
    assert!(
        !stale.html.contains("id=\"approve-form\""),
        "{}",
        stale.html
    );
    let seen = app.request("grace", &req).await;
    assert_eq!(seen["state"], "denied");
    assert_eq!(seen["outcome"]["comment"], "not during the freeze");
}

/// Rules 11 and 12: comments from the requester and a reviewer, in order; an assignment
/// makes the assignee eligible and is shown.
#[tokio::test]
async fn rule_11_12_comments_and_assign_through_the_portal() {
    // Arrange
    let options = Options::start().await;
    let app = TestApp::spawn_with(ALLOW_LOOPBACK, &[], &typed_resources(&options.base)).await;
    let req = app
        .create(
            "grace",
            json!({ "resource": "deploy-cache", "reason": "x" }),
        )
        .await;
    let id = id_of(&req).to_owned();
    let page = format!("/requests/{id}");
    let mut grace = Web::sign_in(&app, "grace").await;
    let mut carol = Web::sign_in(&app, "carol").await;

    // Act
    let asked = carol
        .submit(
            &page,
            &format!("{page}/comment"),
            &[("comment", "Which tables?")],
        )
        .await;
    grace
        .submit(
            &page,
            &format!("{page}/comment"),
            &[("comment", "Only sessions.")],
        )
        .await;
    let bad = carol
        .submit(
            &page,
            &format!("{page}/assign"),
            &[("to", "not a principal")],
        )
        .await;
    let assigned = carol
        .submit(
            &page,
            &format!("{page}/assign"),
            &[("to", "dan@example.com")],
        )
        .await;

    // Assert
    assert_eq!(asked.status, StatusCode::SEE_OTHER);
    assert_eq!(assigned.status, StatusCode::SEE_OTHER);
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.html);
    let html = grace.get(&page).await.html;
    let (q, a) = (
        html.find("Which tables?").expect("question"),
        html.find("Only sessions.").expect("answer"),
    );
    assert!(q < a, "comments in order");
    assert!(
        html.contains("carol@example.com assigned it to dan@example.com"),
        "{html}"
    );
    let (_, inbox) = app.get("dan", "/v1/requests?reviewable_by=me").await;
    assert_eq!(inbox["requests"][0]["id"], id.as_str(), "{inbox}");
}

/// Rule 21's `purpose` is markdown from an application: rendered, with its script and its
/// `javascript:` link made harmless.
#[tokio::test]
async fn sec_5_purpose_markdown_is_rendered_without_script_or_javascript_links() {
    // Arrange
    let options = Options::start().await;
    let app = TestApp::spawn_with(ALLOW_LOOPBACK, &[], &typed_resources(&options.base)).await;
    let req = app
        .create(
            "grace",
            json!({ "resource": "deploy-cache", "reason": "x",
                    "purpose": "Ship **release 7**.\n\n<script>window.pwned = 1</script>\n\n[details](javascript:window.pwned=2) and [runbook](https://wiki.example/r7)",
                    "reference_url": "https://ci.example/run/7" }),
        )
        .await;
    let mut carol = Web::sign_in(&app, "carol").await;

    // Act
    let html = carol.get(&format!("/requests/{}", id_of(&req))).await.html;

    // Assert
    assert!(html.contains("<strong>release 7</strong>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;window.pwned = 1&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script"), "{html}");
    assert!(
        !html.to_ascii_lowercase().contains("href=\"javascript"),
        "{html}"
    );
    assert!(
        html.contains(r#"<a href="https://wiki.example/r7">runbook</a>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"href="https://ci.example/run/7""#),
        "{html}"
    );
}

/// Security rule: session cookies are `HttpOnly` and `SameSite=Lax` (not `Secure` on plain
/// http localhost); sign-out ends the session on the server, and sessions expire.
#[tokio::test]
async fn sec_7_sessions_are_httponly_end_at_sign_out_and_expire() {
    // Arrange
    let app = TestApp::spawn_with("  session_ttl = \"1h\"", &[], "").await;
    let mut grace = Web::sign_in(&app, "grace").await;
    let session = grace
        .set_cookies
        .iter()
        .find(|c| c.starts_with("cs_session="))
        .cloned()
        .expect("a session cookie");
    let stolen = grace.cookies.clone();

    // Act
    let before = grace.get("/inbox").await;
    let out = grace.submit("/inbox", "/logout", &[]).await;
    let mut replay = Web::new(&app);
    replay.cookies = stolen;
    let after = replay.get("/inbox").await;
    let mut eve = Web::sign_in(&app, "eve").await;
    app.clock.advance(Duration::from_secs(3600));
    let expired = eve.get("/inbox").await;

    // Assert
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Lax")
            && session.contains("Path=/"),
        "{session}"
    );
    assert!(
        !session.contains("Secure"),
        "plain http on loopback: {session}"
    );
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "a signed-out session is worth nothing"
    );
    assert_eq!(after.location.as_deref(), Some("/login?next=%2Finbox"));
    assert_eq!(expired.status, StatusCode::SEE_OTHER, "the session expired");
}

/// The admin views: only admins; filters; revoke with a reason; audit verification.
#[tokio::test]
async fn sec_5_admin_views_filter_revoke_and_verify_for_admins_only() {
    // Arrange
    let options = Options::start().await;
    let app = TestApp::spawn_with(ALLOW_LOOPBACK, &[], &typed_resources(&options.base)).await;
    let a = app
        .create(
            "grace",
            json!({ "resource": "deploy-cache", "reason": "first" }),
        )
        .await;
    app.approve("carol", &a).await;
    app.tick().await;
    let b = app
        .create(
            "eve",
            json!({ "resource": "self-review", "reason": "second" }),
        )
        .await;
    let mut grace = Web::sign_in(&app, "grace").await;
    let mut root = Web::sign_in(&app, "root").await;

    // Act
    let refused = grace.get("/admin/requests").await;
    let pending = root.get("/admin/requests?state=pending").await;
    let by_grace = root
        .get("/admin/requests?requester=grace%40example.com")
        .await;
    let bad_date = root.get("/admin/requests?from=yesterday").await;
    let bad_state = root.get("/admin/grants?state=nope").await;
    let grant = app.request("grace", &a).await["grant"]["id"]
        .as_str()
        .expect("grant")
        .to_owned();
    let revoked = root
        .submit(
            "/admin/grants",
            &format!("/grants/{grant}/revoke"),
            &[("reason", "incident 42")],
        )
        .await;
    app.tick().await;
    let audit = root.get("/admin/audit?verify=1").await;
    // Dates: `a` and `b` were created on 2026-01-01; one more two days later (by then the
    // session has expired, so root signs in again).
    app.clock.advance(Duration::from_secs(2 * 86400));
    let c = app
        .create(
            "eve",
            json!({ "resource": "prod-shell", "reason": "third" }),
        )
        .await;
    let mut root = Web::sign_in(&app, "root").await;
    let first_day = root
        .get("/admin/requests?from=2026-01-01&to=2026-01-01")
        .await;
    let later = root.get("/admin/requests?from=2026-01-02").await;

    // Assert
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(pending.html.contains(id_of(&b)) && !pending.html.contains(id_of(&a)));
    assert!(by_grace.html.contains(id_of(&a)) && !by_grace.html.contains(id_of(&b)));
    assert_eq!(bad_date.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_state.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_state.html.contains("unknown state"),
        "{}",
        bad_state.html
    );
    assert!(first_day.html.contains(id_of(&a)) && first_day.html.contains(id_of(&b)));
    assert!(!first_day.html.contains(id_of(&c)), "{}", first_day.html);
    assert!(later.html.contains(id_of(&c)) && !later.html.contains(id_of(&a)));
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.html);
    let g = app.grant("grace", &json!(grant)).await;
    assert_eq!(g["state"], "revoked", "{g}");
    assert_eq!(g["ending"]["reason"], "incident 42", "{g}");
    assert!(
        audit.html.contains("The hash chain is intact"),
        "{}",
        audit.html
    );
    assert!(audit.html.contains("grant_revoked"), "{}", audit.html);
}

/// The development sign-in lets anyone act as anyone, so `serve --dev` refuses to start
/// unless the server listens on loopback only (nothing is opened or bound before).
#[tokio::test]
async fn sec_7_serve_dev_is_refused_unless_listening_on_loopback() {
    // Arrange
    let dir = tempfile::tempdir().expect("temp dir");
    let db = crate::helpers::database(dir.path()).await;
    let path = dir.path().join("c.hcl");
    std::fs::write(
        &path,
        format!(
            "server {{\n  listen = \"0.0.0.0:0\"\n  database = \"{}\"\n}}\n",
            db.url()
        ),
    )
    .expect("write");

    // Act
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--dev", "--config"])
        .arg(&path)
        .output()
        .await
        .expect("run countersign");

    // Assert
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--dev sign-in is only offered on a loopback address"),
        "{stderr}"
    );
    assert!(db.is_untouched().await, "nothing was opened");
}

/// A link to `/login/oidc` from anywhere must not end the session of someone signed in (no
/// sign-out forged by another site), and an abandoned single sign-on does not block the
/// development sign-in form.
#[tokio::test]
async fn sec_7_the_sign_in_link_does_not_end_a_session_and_an_abandoned_one_does_not_block() {
    // Arrange: an issuer that is never reached (the link must not get that far).
    let oidc = r#"
oidc {
  issuer        = "http://127.0.0.1:9"
  client_id     = "countersign"
  client_secret = "not-used"
}
"#;
    let app = TestApp::spawn_with("", &[], oidc).await;
    let mut grace = Web::sign_in(&app, "grace").await;

    // Act
    let link = grace.get("/login/oidc?next=%2Fmine").await;
    let still = grace.get("/inbox").await;
    let mut fresh = Web::new(&app);
    let login = fresh.get("/login").await;
    let pre = csrf(&login.html);
    let abandoned = fresh.get("/login/oidc").await;
    let dev = fresh
        .post(
            "/login/dev",
            &[("csrf", &pre), ("user", &email("eve")), ("next", "/mine")],
        )
        .await;

    // Assert
    assert_eq!(link.status, StatusCode::SEE_OTHER);
    assert_eq!(link.location.as_deref(), Some("/mine"));
    assert_eq!(still.status, StatusCode::OK, "the session is still there");
    assert_eq!(
        abandoned.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        abandoned.html
    );
    assert_eq!(dev.status, StatusCode::SEE_OTHER, "{}", dev.html);
    assert_eq!(dev.location.as_deref(), Some("/mine"));
}

/// Rule 19 through the portal: the requester drops an active grant from "My requests", and
/// asks to extend another; the extension is a new request through the workflow.
#[tokio::test]
async fn rule_19_drop_and_extend_from_my_grants() {
    // Arrange
    let options = Options::start().await;
    let app = TestApp::spawn_with(ALLOW_LOOPBACK, &[], &typed_resources(&options.base)).await;
    let mut grants = vec![];
    for resource in ["prod-shell", "deploy-cache"] {
        let r = app
            .create(
                "grace",
                json!({ "resource": resource, "reason": "x", "duration": "1h" }),
            )
            .await;
        app.approve("carol", &r).await;
        app.tick().await;
        let seen = app.request("grace", &r).await;
        grants.push(seen["grant"]["id"].as_str().expect("grant").to_owned());
    }
    let mut grace = Web::sign_in(&app, "grace").await;

    // Act
    let dropped = grace
        .submit("/mine", &format!("/grants/{}/drop", grants[0]), &[])
        .await;
    app.tick().await;
    let extended = grace
        .submit(
            "/mine",
            &format!("/grants/{}/extend", grants[1]),
            &[("duration", "1h"), ("reason", "the migration runs long")],
        )
        .await;

    // Assert
    assert_eq!(dropped.status, StatusCode::SEE_OTHER, "{}", dropped.html);
    let g = app.grant("grace", &json!(grants[0])).await;
    assert_eq!(g["ending"]["kind"], "dropped", "{g}");
    assert_eq!(extended.status, StatusCode::SEE_OTHER, "{}", extended.html);
    let ext = request_id(extended.location.as_deref().unwrap_or_default());
    let seen = app.request("grace", &json!(ext)).await;
    assert_eq!(seen["state"], "pending");
    assert_eq!(seen["extends"], grants[1].as_str(), "{seen}");
}

/// With the development sign-in on, the portal answers only loopback names and its public
/// URL's, so a page elsewhere that rebinds its name to 127.0.0.1 cannot use it.
#[tokio::test]
async fn sec_7_with_dev_sign_in_other_host_names_are_refused() {
    // Arrange
    let app = TestApp::spawn("").await;
    let http = reqwest::Client::new();
    let url = format!("{}/login", app.api.base);

    // Act
    let rebound = http
        .get(&url)
        .header(reqwest::header::HOST, "evil.example")
        .send()
        .await
        .expect("GET");
    let local = http
        .get(&url)
        .header(reqwest::header::HOST, "localhost")
        .send()
        .await
        .expect("GET");

    // Assert
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(local.status(), StatusCode::OK);
}

/// Rule 19: an owner of the resource (here through a group), not an admin, revokes someone's
/// grant from the request page, with a reason; the grant's subject sees no such form.
#[tokio::test]
async fn rule_19_an_owner_revokes_a_grant_from_the_request_page() {
    // Arrange
    let options = Options::start().await;
    let app = TestApp::spawn_with(ALLOW_LOOPBACK, &[], &typed_resources(&options.base)).await;
    let r = app
        .create(
            "grace",
            json!({ "resource": "prod-shell", "reason": "x", "duration": "1h" }),
        )
        .await;
    app.approve("carol", &r).await;
    app.tick().await;
    let page = format!("/requests/{}", id_of(&r));
    let mut grace = Web::sign_in(&app, "grace").await;
    let mut dan = Web::sign_in(&app, "dan").await;

    // Act
    let subjects = grace.get(&page).await;
    let grant = app.request("grace", &r).await["grant"]["id"]
        .as_str()
        .expect("grant")
        .to_owned();
    let revoked = dan
        .submit(
            &page,
            &format!("/grants/{grant}/revoke"),
            &[("reason", "host is compromised")],
        )
        .await;
    app.tick().await;

    // Assert
    assert!(
        !subjects.html.contains("id=\"revoke-form\""),
        "{}",
        subjects.html
    );
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.html);
    assert_eq!(
        revoked.location.as_deref(),
        Some(format!("{page}?done=revoked").as_str())
    );
    let g = app.grant("grace", &json!(grant)).await;
    assert_eq!(g["state"], "revoked", "{g}");
    assert_eq!(g["ending"]["reason"], "host is compromised", "{g}");
    assert_eq!(g["ending"]["by"], "dan@example.com", "{g}");
}

/// Security rule: portal pages forbid scripts, framing and sniffing, and are not cached.
#[tokio::test]
async fn sec_7_portal_pages_carry_a_strict_content_security_policy() {
    // Arrange
    let app = TestApp::spawn("").await;

    // Act
    let res = reqwest::get(format!("{}/login", app.api.base))
        .await
        .expect("GET /login");

    // Assert
    let h = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = h("content-security-policy");
    for part in [
        "default-src 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("script-src"),
        "no script is allowed at all: {csp}"
    );
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("cache-control"), "no-store");
}
