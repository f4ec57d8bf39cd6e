//! The portal end to end, in a real headless Chromium, with sign-in through a real OpenID
//! Connect provider (issue 6). `#[ignore]`d, so plain `cargo test` lists it as ignored;
//! `.ci/run` installs Chromium, ChromeDriver and the provider (`.ci/browser.sh`) and runs it
//! with `--include-ignored`.
//!
//! One test, because one story: the requester signs in, asks with typed fields and a dynamic
//! option, a reviewer in another browser approves a shorter duration for the whole workflow,
//! the requester sees the grant; then a denial with a comment, a comment thread, an
//! assignment, a purpose whose script and `javascript:` link stay inert, a form stripped of
//! its CSRF token, and a requester who is also a reviewer and forges an approval. With
//! `COUNTERSIGN_SCREENSHOTS=<dir>` it saves screenshots of the main pages there (the README's
//! come from `docs/screenshots/`).

use std::path::PathBuf;

use engine::Clock as _;

use serde_json::json;

use crate::browser::{Browser, Driver, Provider, Tools};
use crate::helpers::{TestApp, id_of};
use crate::portal::{ALLOW_LOOPBACK, Options, typed_resources};

const CLIENT_ID: &str = "countersign-e2e";
const CLIENT_SECRET: &str = "e2e-client-secret-not-used-anywhere-else";

/// Signs in through the provider's own login and consent pages.
async fn sign_in(b: &Browser, base: &str, user: &str) {
    b.goto(&format!("{base}/catalog")).await;
    b.click("#sso").await;
    b.type_into("input[name=login]", user).await;
    b.type_into("input[name=password]", "any password").await;
    b.click("button[type=submit]").await;
    // The consent page, then back to Countersign.
    b.find("input[name=prompt][value=consent]").await;
    b.click("button[type=submit]").await;
    // Email addresses are compared without regard to case; the configured spelling shows.
    let configured = user.to_ascii_lowercase();
    b.wait_text(&configured).await;
    assert_eq!(b.text("#signed-in-as").await, configured);
}

#[tokio::test]
#[ignore = "needs headless Chromium, ChromeDriver and the OIDC provider: bash .ci/browser.sh"]
async fn sec_5_portal_end_to_end_in_headless_chromium_with_oidc_sign_in() {
    let tools = Tools::from_env();
    let shots = std::env::var("COUNTERSIGN_SCREENSHOTS")
        .ok()
        .map(PathBuf::from);
    let shot_dir = tempfile::tempdir().expect("temp dir");
    let shots = shots.unwrap_or_else(|| shot_dir.path().to_owned());
    std::fs::create_dir_all(&shots).expect("screenshot dir");

    // Arrange: the server's address first, so that the provider knows where to send people
    // back; then the provider; then the server with the provider as its issuer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let provider = Provider::start(
        &tools,
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("{base}/login/callback"),
        json!({ "Carol@Example.com": { "groups": ["release-managers"] } }),
    )
    .await;
    let options = Options::start().await;
    let oidc = format!(
        r#"
oidc {{
  issuer        = "{}"
  client_id     = "{CLIENT_ID}"
  client_secret = "{CLIENT_SECRET}"
  scopes        = ["openid", "email", "groups"]
}}
group "release-managers" {{ members = [] }}
"#,
        provider.issuer
    );
    let resources = format!("{}{oidc}", typed_resources(&options.base));
    let app = TestApp::spawn_on(listener, ALLOW_LOOPBACK, &[], &resources).await;
    // The provider stamps its ID tokens with the real time, and the portal refuses one issued
    // in its future (iat, hardening item 6), so this server's clock starts at the real time.
    let behind = engine::SystemClock.now().millis() - app.clock.now().millis();
    app.clock.advance(std::time::Duration::from_millis(
        u64::try_from(behind).unwrap_or(0),
    ));
    let driver = Driver::start(&tools).await;
    let grace = driver.browser("grace").await;
    let carol = driver.browser("carol").await;

    // Sign-in: an unauthenticated page sends the browser to the sign-in page.
    grace.goto(&format!("{base}/inbox")).await;
    grace.find("#sso").await;
    grace.screenshot(&shots, "sign-in").await;
    sign_in(&grace, &base, "grace@example.com").await;
    grace.screenshot(&shots, "catalog").await;

    // The request form: typed fields and the dynamic option list from the options source.
    grace.goto(&format!("{base}/catalog/deploy-db")).await;
    grace.type_into("#field-ticket", "CHG-1234").await;
    grace.type_into("#field-rows", "42").await;
    grace.click("input[name='field.emergency']").await;
    grace.click("#field-urgency option[value=Emergency]").await;
    grace.type_into("#field-window", "30m").await;
    grace
        .click("#field-buddy option[value='bob@example.com']")
        .await;
    grace.click("#field-pokemon option[value=eevee]").await;
    grace.click("#duration option[value='4h']").await;
    grace.type_into("#reason", "Ship release 7").await;
    grace.screenshot(&shots, "request-form").await;
    grace.click("#request-form button[type=submit]").await;
    grace.wait_text("Your request was created.").await;
    let url = grace.url().await;
    let id = url
        .split("/requests/")
        .nth(1)
        .and_then(|r| r.split(['?', '#']).next())
        .expect("the request page")
        .to_owned();
    assert_eq!(grace.text("[data-field=pokemon]").await, "eevee");
    assert_eq!(grace.text("[data-field=rows]").await, "42");
    assert_eq!(grace.text("[data-field=emergency]").await, "true");
    assert!(
        grace.find_now("#approve-form").await.is_none(),
        "no decision for the requester"
    );

    // A second person, in another browser, approves 1h for the entire workflow.
    sign_in(&carol, &base, "Carol@Example.com").await;
    carol.goto(&format!("{base}/inbox")).await;
    carol.find(&format!("tr[data-id='{id}']")).await;
    carol.screenshot(&shots, "inbox").await;
    carol.click(&format!("tr[data-id='{id}'] a")).await;
    carol.find("#approve-form").await;
    carol.screenshot(&shots, "request-page").await;
    carol.click("#approve-duration option[value='1h']").await;
    carol.click("#approve-workflow").await;
    carol.click("#approve").await;
    carol.wait_text("You approved this request.").await;
    app.tick().await;

    // The requester sees the grant.
    grace.goto(&format!("{base}/mine")).await;
    grace.wait_text("whole workflow release").await;
    let row = grace.text("#my-grants tr.grant-row").await;
    assert!(row.contains("active") && row.contains("1h"), "{row}");
    grace.screenshot(&shots, "my-requests").await;
    let seen = app.request("grace", &json!(id)).await;
    assert_eq!(
        seen["steps"][0]["reviews"][0]["scope"], "workflow",
        "{seen}"
    );
    assert_eq!(seen["grant"]["duration"], "1h", "{seen}");

    // A comment thread, then a denial with a comment, then an assignment. (The release
    // workflow's resources are covered by the grant now, so these ask for another.)
    let second = app
        .create(
            "grace",
            json!({ "resource": "prod-shell", "reason": "hotfix", "duration": "15m" }),
        )
        .await;
    let page = format!("{base}/requests/{}", id_of(&second));
    carol.goto(&page).await;
    carol
        .type_into("#comment-form textarea", "Which tables?")
        .await;
    carol.click("#comment-form button").await;
    carol.wait_text("Your comment was added.").await;
    grace.goto(&page).await;
    grace
        .type_into("#comment-form textarea", "Only sessions.")
        .await;
    grace.click("#comment-form button").await;
    grace.wait_text("Only sessions.").await;
    let thread = grace.text(".comments").await;
    assert!(
        thread.find("Which tables?") < thread.find("Only sessions."),
        "{thread}"
    );
    carol.goto(&page).await;
    carol
        .type_into("#deny-form textarea", "Not during the freeze")
        .await;
    carol.click("#deny").await;
    carol.wait_text("You denied this request.").await;
    assert_eq!(carol.text("#state").await, "denied");
    assert!(
        carol
            .text(".review")
            .await
            .contains("Not during the freeze")
    );

    let third = app
        .create(
            "grace",
            json!({ "resource": "prod-shell", "reason": "look at logs" }),
        )
        .await;
    carol
        .goto(&format!("{base}/requests/{}", id_of(&third)))
        .await;
    carol.type_into("#assign-to", "dan@example.com").await;
    carol.click("#assign").await;
    carol.wait_text("The step was assigned.").await;
    carol
        .wait_text("carol@example.com assigned it to dan@example.com")
        .await;

    // Markdown from an application: the script never runs, the javascript: link is text.
    let md = app
        .create(
            "grace",
            json!({ "resource": "prod-shell", "reason": "md",
                    "purpose": "Deploy **now**\n\n<script>window.pwned = 1</script>\n\n[click me](javascript:window.pwned=2)" }),
        )
        .await;
    carol.goto(&format!("{base}/requests/{}", id_of(&md))).await;
    carol.wait_text("<script>window.pwned = 1</script>").await;
    let links = carol
        .script("return Array.from(document.querySelectorAll('#purpose a')).map(a => a.href)")
        .await;
    assert_eq!(links, json!([]), "no link survives");
    assert_eq!(carol.text("#purpose strong").await, "now");
    assert_eq!(
        carol.script("return window.pwned === undefined").await,
        json!(true)
    );

    // A form stripped of its CSRF token is refused, and nothing changes.
    carol
        .script("document.querySelector('#comment-form input[name=csrf]').remove(); return true")
        .await;
    carol.type_into("#comment-form textarea", "sneaky").await;
    carol.click("#comment-form button").await;
    carol.wait_text("security token").await;
    assert_eq!(app.request("grace", &md).await["comments"], json!([]));

    // A requester who is also a reviewer sees no approve button, and a forged post is
    // refused by the engine (rule 9).
    let own = app
        .create(
            "grace",
            json!({ "resource": "self-review", "reason": "mine" }),
        )
        .await;
    grace
        .goto(&format!("{base}/requests/{}", id_of(&own)))
        .await;
    grace.wait_text("someone else decides").await;
    assert!(grace.find_now("#approve").await.is_none());
    grace
        .script(&format!(
            "const f = document.createElement('form'); f.method = 'post'; \
             f.action = '/requests/{}/approve'; \
             for (const [k, v] of [['csrf', document.querySelector('input[name=csrf]').value], ['duration', '1h']]) {{ \
               const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }} \
             document.body.appendChild(f); f.submit(); return true",
            id_of(&own)
        ))
        .await;
    grace.wait_text("you cannot review your own request").await;
    assert_eq!(app.request("grace", &own).await["state"], "pending");

    // An admin's views.
    let root = driver.browser("root").await;
    sign_in(&root, &base, "root@example.com").await;
    root.goto(&format!("{base}/admin/requests")).await;
    root.find("tr.request-row").await;
    root.screenshot(&shots, "admin-requests").await;
    root.goto(&format!("{base}/admin/audit")).await;
    root.click("#verify").await;
    root.wait_text("The hash chain is intact").await;
    root.screenshot(&shots, "audit").await;

    grace.close().await;
    carol.close().await;
    root.close().await;
}
