//! Lists (PRODUCT.md §6: "Lists are paged with opaque cursors and answered from indexes";
//! issue 14, item 3): `GET /v1/requests`, `/v1/grants` and `/v1/audit` page with a
//! `next_cursor`; pages neither skip nor repeat while requests are being created; every kind
//! of caller sees exactly what the domain's rules allow (`Request::visible_to`, rule 11's
//! assignees, rule 21's creating application, rule 19's grant visibility), and
//! `reviewable_by=me` exactly what `Request::can_review` allows as steps advance (rules 6 to
//! 10); and a cursor that is malformed, altered or given out for another list is a 400 JSON
//! error.
//!
//! The expected sets are computed here from the stored snapshots, read one by one, with the
//! domain's own functions, never from a list.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use domain::{Actor, Grant, Request};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{START_MS, TestApp, USERS, assert_error, email, id_of};

/// Three shapes of workflow: one step of a group, two steps (`one_of`, then `all_of` of a
/// group and a person) with owners, and a quorum without owners. All approval-only, so that
/// approvals make grants without connector calls.
const CONFIG: &str = r#"
group "dba" { members = ["alice@example.com", "bob@example.com"] }
group "sec" { members = ["carol@example.com", "dan@example.com"] }
app "deployer" { roles = ["request_approval"] }

resource "db" {
  max_duration = "4h"
  owners       = ["group:dba"]
  workflow = { steps = [{ reviewers = { one_of = ["group:dba"] } }] }
}

resource "prod" {
  max_duration = "4h"
  owners       = ["group:sec"]
  workflow = {
    steps = [
      { reviewers = { one_of = ["eve@example.com", "frank@example.com"] } },
      { reviewers = { all_of = ["group:sec", "grace@example.com"] } },
    ]
  }
}

resource "deploy" {
  max_duration = "1h"
  workflow = {
    steps = [{ reviewers = { quorum = { min = 2, of = ["alice@example.com", "carol@example.com", "eve@example.com"] } } }]
  }
}
"#;

/// Reads every page of `path` (which has its filters, and no `limit`) as `user`, `limit` at a
/// time, following `next_cursor`; returns the ids in the order given. Checks the paging
/// contract on the way: no page larger than the limit, no id twice, and a `next_cursor` on
/// every page but the last.
async fn all_pages(app: &TestApp, user: &str, path: &str, key: &str, limit: u32) -> Vec<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut ids = vec![];
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = app.get(user, &url).await;
        assert_eq!(status, StatusCode::OK, "{user} GET {url}: {page}");
        let items = page[key].as_array().expect("a list");
        assert!(
            items.len() <= limit as usize,
            "{url}: {} items",
            items.len()
        );
        for item in items {
            let id = id_of(item).to_owned();
            assert!(seen.insert(id.clone()), "{user} {path}: {id} twice");
            ids.push(id);
        }
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert!(!items.is_empty(), "a next_cursor after an empty page");
                cursor = Some(c.to_owned());
            }
            None => return ids,
        }
    }
    panic!("{user} {path}: more than 1000 pages");
}

fn set(ids: Vec<String>) -> BTreeSet<String> {
    ids.into_iter().collect()
}

async fn stored_requests(app: &TestApp, ids: &[String]) -> Vec<Request> {
    let mut out = vec![];
    for id in ids {
        out.push(
            app.engine
                .store()
                .request(id)
                .await
                .expect("read")
                .expect("stored"),
        );
    }
    out
}

/// Every caller of the test: the configured people (`root` is the admin, `mallory` sees
/// nothing until someone assigns her a step) and the application.
fn callers() -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = USERS.iter().map(|u| (*u, email(u))).collect();
    out.push(("deployer", "app:deployer".to_owned()));
    out
}

fn actor(app: &TestApp, id: &str) -> Actor {
    app.engine
        .actor(id)
        .unwrap_or_else(|| panic!("{id} is configured"))
}

/// For every caller: the whole list, its `state` and `resource` filters, and
/// `reviewable_by=me`, each read page by page, equal the sets the domain's rules give.
async fn check_lists(app: &TestApp, ids: &[String], limit: u32) {
    let requests = stored_requests(app, ids).await;
    check_rows(app, &requests).await;
    for (user, id) in callers() {
        let who = actor(app, &id);
        let expect = |keep: &dyn Fn(&Request) -> bool| -> BTreeSet<String> {
            requests
                .iter()
                .filter(|r| keep(r))
                .map(|r| r.id.clone())
                .collect()
        };
        let visible = expect(&|r| r.visible_to(&who));
        assert_eq!(
            set(all_pages(app, user, "/v1/requests", "requests", limit).await),
            visible,
            "{user}: GET /v1/requests"
        );
        assert_eq!(
            set(all_pages(
                app,
                user,
                "/v1/requests?state=pending&resource=prod",
                "requests",
                limit
            )
            .await),
            expect(&|r| r.visible_to(&who)
                && r.state == domain::RequestState::Pending
                && r.resource == "prod"),
            "{user}: state and resource filters"
        );
        assert_eq!(
            set(all_pages(
                app,
                user,
                &format!("/v1/requests?requester={}", email("alice")),
                "requests",
                limit
            )
            .await),
            expect(&|r| r.visible_to(&who) && r.requester == email("alice")),
            "{user}: requester filter"
        );
        assert_eq!(
            set(all_pages(
                app,
                user,
                "/v1/requests?reviewable_by=me",
                "requests",
                limit
            )
            .await),
            expect(&|r| r.can_review(&who.id)),
            "{user}: reviewable_by=me"
        );
    }
}

/// The test's database opened directly, on either store, to look at and change what the
/// server cannot be asked through its API.
enum Raw {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Raw {
    async fn open(app: &TestApp) -> Raw {
        use sqlx::Connection;
        let url = app.db.url();
        if app.db.is_postgres() {
            Raw::Postgres(sqlx::PgConnection::connect(url).await.expect("open"))
        } else {
            Raw::Sqlite(sqlx::SqliteConnection::connect(url).await.expect("open"))
        }
    }

    async fn exec(&mut self, sql: &'static str) {
        match self {
            Raw::Sqlite(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
            Raw::Postgres(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
        }
        .expect(sql);
    }

    /// `(person, reviewable)` of a request's rows.
    async fn people(&mut self, request: &str) -> Vec<(String, i64)> {
        let sql =
            "SELECT person, CAST(reviewable AS BIGINT) FROM request_people WHERE request_id = $1";
        match self {
            Raw::Sqlite(c) => sqlx::query_as(sql).bind(request).fetch_all(c).await,
            Raw::Postgres(c) => sqlx::query_as(sql).bind(request).fetch_all(c).await,
        }
        .expect("read request_people")
    }

    async fn count(&mut self, sql: &'static str) -> i64 {
        match self {
            Raw::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await,
            Raw::Postgres(c) => sqlx::query_scalar(sql).fetch_one(c).await,
        }
        .expect(sql)
    }
}

/// The `request_people` rows of each request are exactly its `Request::audience` (the
/// engine judges every listed request again, so a row too many would not show in a list; it
/// is looked for here, in the database).
async fn check_rows(app: &TestApp, requests: &[Request]) {
    let mut db = Raw::open(app).await;
    for r in requests {
        let rows: std::collections::BTreeMap<String, bool> = db
            .people(&r.id)
            .await
            .into_iter()
            .map(|(p, v)| (p, v == 1))
            .collect();
        assert_eq!(rows, r.audience(), "the rows of {}", r.id);
    }
}

/// Creates `n` requests of mixed shapes: each person asks for each resource they may, some
/// through the application, some cancelled, some assigned to someone else (rule 11, which
/// adds a person), some with a step decided. Returns their ids.
async fn mixed_requests(app: &TestApp, n: usize) -> Vec<String> {
    // A small linear congruential generator: the same shapes on every run.
    let mut seed: u64 = 20_261_207;
    let mut next = move |m: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as usize) % m
    };
    // Who may ask for what (rule 13 refuses a workflow only the requester could complete).
    let askers = [
        (
            "db",
            &["carol", "dan", "eve", "frank", "grace", "alice"][..],
        ),
        ("prod", &["alice", "bob", "carol", "eve", "root"][..]),
        ("deploy", &["bob", "dan", "frank", "grace", "alice"][..]),
    ];
    let mut ids = vec![];
    for i in 0..n {
        let (resource, people) = askers[next(askers.len())];
        let requester = people[next(people.len())];
        let body = json!({ "resource": resource, "reason": format!("r{i}") });
        let req = if next(5) == 0 {
            let mut body = body;
            body["requester"] = json!(email(requester));
            app.create("deployer", body).await
        } else {
            app.create(requester, body).await
        };
        let id = id_of(&req).to_owned();
        if req["state"] == "pending" {
            match next(8) {
                0 => {
                    let (s, b) = app
                        .post(requester, &format!("/v1/requests/{id}/cancel"), json!({}))
                        .await;
                    assert_eq!(s, StatusCode::OK, "{b}");
                }
                1 | 2 => {
                    // Someone who may decide now assigns the step (rule 11).
                    let r = app
                        .engine
                        .store()
                        .request(&id)
                        .await
                        .expect("read")
                        .expect("stored");
                    if let Some(by) = r.eligible_reviewers().into_iter().next() {
                        let by = by.trim_end_matches("@example.com").to_owned();
                        let to = ["mallory", "grace", "frank"][next(3)];
                        let (s, b) = app
                            .post(
                                &by,
                                &format!("/v1/requests/{id}/assign"),
                                json!({ "to": email(to) }),
                            )
                            .await;
                        // Refused when the assignee asked or already decided: fine here.
                        assert!(
                            [
                                StatusCode::OK,
                                StatusCode::CONFLICT,
                                StatusCode::UNPROCESSABLE_ENTITY
                            ]
                            .contains(&s),
                            "{by} assigns to {to}: {b}"
                        );
                    }
                }
                _ => {}
            }
        }
        ids.push(id);
        if i % 10 == 9 {
            app.advance(Duration::from_millis(1 + next(1500) as u64))
                .await;
        }
    }
    ids
}

/// Decides the current step of about half the pending requests (approve, or now and then
/// deny), so that two-step requests move to their second step.
async fn decide_some(app: &TestApp, ids: &[String]) {
    for (i, id) in ids.iter().enumerate() {
        if i % 2 == 1 {
            continue;
        }
        let r = app
            .engine
            .store()
            .request(id)
            .await
            .expect("read")
            .expect("stored");
        let Some(by) = r.eligible_reviewers().into_iter().next() else {
            continue;
        };
        let by = by.trim_end_matches("@example.com").to_owned();
        let decision = if i % 11 == 0 { "deny" } else { "approve" };
        let (s, b) = app
            .post(
                &by,
                &format!("/v1/requests/{id}/reviews"),
                json!({ "decision": decision }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{by} {decision}s {id}: {b}");
    }
}

/// §6 and `Request::visible_to`: requester, the creating application (rule 21), owners,
/// reviewers of every step, assignees and assigners (rule 11), admins; nobody else. Then
/// §6 and `Request::can_review` (rules 6 to 10): `reviewable_by=me` follows the current step
/// as decisions move two-step requests on, and drops what a person has decided.
#[tokio::test]
async fn lists_each_caller_sees_exactly_what_the_rules_allow_as_steps_advance() {
    // Arrange
    let mut app = TestApp::spawn(CONFIG).await;
    app.app_tokens(&["deployer"]).await;
    let ids = mixed_requests(&app, 240).await;

    // Act and assert: first as created, then after decisions moved many requests on.
    check_lists(&app, &ids, 17).await;
    decide_some(&app, &ids).await;
    let prod_at_step_two = stored_requests(&app, &ids)
        .await
        .iter()
        .filter(|r| r.current_step() == Some(1))
        .count();
    assert!(
        prod_at_step_two > 5,
        "few requests reached step 2: {prod_at_step_two}"
    );
    check_lists(&app, &ids, 17).await;
}

/// Rule 19's visibility of grants, a page at a time: the subject, the owners of the
/// resource (through their groups, as configured now), admins.
#[tokio::test]
async fn lists_grants_are_paged_and_visible_to_subject_owners_and_admins() {
    // Arrange
    let mut app = TestApp::spawn(CONFIG).await;
    app.app_tokens(&["deployer"]).await;
    let ids = mixed_requests(&app, 120).await;
    decide_some(&app, &ids).await;
    decide_some(&app, &ids).await;
    let mut grants: Vec<Grant> = vec![];
    for r in stored_requests(&app, &ids).await {
        if let Some(g) = &r.grant
            && !grants.iter().any(|x| x.id == *g)
        {
            grants.push(
                app.engine
                    .store()
                    .grant(g)
                    .await
                    .expect("read")
                    .expect("stored"),
            );
        }
    }
    assert!(grants.len() > 10, "only {} grants", grants.len());

    for (user, id) in callers() {
        // Act
        let listed = set(all_pages(&app, user, "/v1/grants", "grants", 3).await);
        let own = set(all_pages(
            &app,
            user,
            &format!("/v1/grants?resource=db&subject={}", email("carol")),
            "grants",
            2,
        )
        .await);

        // Assert
        let who = actor(&app, &id);
        let visible: BTreeSet<String> = grants
            .iter()
            .filter(|g| app.engine.may_see_grant(&who, g))
            .map(|g| g.id.clone())
            .collect();
        assert_eq!(listed, visible, "{user}: GET /v1/grants");
        let filtered: BTreeSet<String> = grants
            .iter()
            .filter(|g| {
                app.engine.may_see_grant(&who, g)
                    && g.spec.resource == "db"
                    && g.spec.subject == email("carol")
            })
            .map(|g| g.id.clone())
            .collect();
        assert_eq!(
            own, filtered,
            "{user}: grants filtered by resource and subject"
        );
    }
}

/// §6: keyset pages neither skip nor repeat a request while others are being created at the
/// same time, in the same millisecond or later, whoever reads (an admin reads the requests
/// table, others their `request_people` rows); the audit log pages without a gap.
#[tokio::test]
async fn lists_cursors_page_without_gaps_or_repeats_under_concurrent_inserts() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com", "carol@example.com"] } } ] }
        }
        "#,
    )
    .await;
    let mut before = vec![];
    for i in 0..45 {
        let who = if i % 3 == 0 { "dan" } else { "alice" };
        let req = app
            .create(
                who,
                json!({ "resource": "db", "reason": format!("before {i}") }),
            )
            .await;
        before.push((who, id_of(&req).to_owned()));
        if i % 4 == 0 {
            app.advance(Duration::from_millis(1)).await;
        }
    }
    // Another client creates requests for as long as the readers read.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (base, token) = (app.api.base.clone(), app.api.token("eve").to_owned());
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut made = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = http
                    .post(format!("{base}/v1/requests"))
                    .bearer_auth(&token)
                    .json(&json!({ "resource": "db", "reason": "meanwhile" }))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(res.status(), StatusCode::CREATED);
                made += 1;
            }
            made
        })
    };

    // Act: read page by page, letting the clock move between pages.
    let mut read = vec![];
    for (user, path) in [
        ("root", "/v1/requests"),
        ("alice", "/v1/requests"),
        ("bob", "/v1/requests"),
        ("bob", "/v1/requests?reviewable_by=me"),
        ("root", "/v1/requests?state=pending"),
    ] {
        let mut ids = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!(
                    "{path}{}limit=4&cursor={c}",
                    if path.contains('?') { "&" } else { "?" }
                ),
                None => format!(
                    "{path}{}limit=4",
                    if path.contains('?') { "&" } else { "?" }
                ),
            };
            let (status, page) = app.get(user, &url).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            ids.extend(
                page["requests"]
                    .as_array()
                    .expect("present")
                    .iter()
                    .map(|r| id_of(r).to_owned()),
            );
            app.clock.advance(Duration::from_millis(1));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        read.push((user, path, ids));
    }
    let mut events = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("/v1/audit?limit=7&cursor={c}"),
            None => "/v1/audit?limit=7".to_owned(),
        };
        let (status, page) = app.get("root", &url).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        events.extend(
            page["events"]
                .as_array()
                .expect("present")
                .iter()
                .map(|e| e["seq"].as_i64().expect("present")),
        );
        assert_eq!(page["next_cursor"].is_string(), page["next_after"].is_i64());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let made = writer.await.expect("writer");

    // Assert
    assert!(made > 0, "nothing was created while reading");
    for (user, path, ids) in &read {
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{user} {path}: a request twice");
        let missing: Vec<&String> = before
            .iter()
            .filter(|(who, _)| *user != "alice" || *who == "alice")
            .map(|(_, id)| id)
            .filter(|id| !unique.contains(id))
            .collect();
        assert!(missing.is_empty(), "{user} {path}: skipped {missing:?}");
    }
    assert!(events.len() > 45);
    assert!(
        events.windows(2).all(|w| w[1] == w[0] + 1) && events[0] == 1,
        "audit pages skip or repeat: {events:?}"
    );
}

/// §6: a cursor is opaque and validated. Malformed, altered, or given out for another list,
/// another caller or other filters: 400 with a JSON error, never a 500 and never another
/// page; so is `after` together with `cursor` on the audit log. The portal refuses a bad
/// cursor with a 400 page.
#[tokio::test]
async fn lists_a_malformed_altered_or_foreign_cursor_is_a_400() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
    )
    .await;
    for i in 0..5 {
        app.create(
            "alice",
            json!({ "resource": "db", "reason": format!("r{i}") }),
        )
        .await;
    }
    let next = |page: &Value| {
        page["next_cursor"]
            .as_str()
            .expect("a next page")
            .to_owned()
    };
    let (_, alice) = app.get("alice", "/v1/requests?limit=2").await;
    let alice = next(&alice);
    let (_, pending) = app.get("alice", "/v1/requests?limit=2&state=pending").await;
    let pending = next(&pending);
    let (_, audit) = app.get("root", "/v1/audit?limit=2").await;
    let audit = next(&audit);
    let mut altered = alice.clone().into_bytes();
    let i = altered.len() / 2;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("present");

    // Act and assert
    for (user, path) in [
        ("alice", "/v1/requests?cursor=not-a-cursor".to_owned()),
        ("alice", "/v1/requests?cursor=%00%01".to_owned()),
        ("alice", "/v1/requests?cursor=".to_owned()),
        ("alice", format!("/v1/requests?cursor={}", "A".repeat(600))),
        ("alice", format!("/v1/requests?cursor={altered}")),
        // Another caller, other filters, another list, the audit log's kind of cursor.
        ("bob", format!("/v1/requests?cursor={alice}")),
        ("alice", format!("/v1/requests?cursor={pending}")),
        (
            "alice",
            format!("/v1/requests?state=denied&cursor={pending}"),
        ),
        ("alice", format!("/v1/grants?cursor={alice}")),
        ("root", format!("/v1/requests?cursor={audit}")),
        ("root", format!("/v1/audit?cursor={alice}")),
        ("root", format!("/v1/audit?after=1&cursor={audit}")),
    ] {
        let (status, body) = app.get(user, &path).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
    }
    // The same cursors work where they were given out.
    let (s1, _) = app
        .get("alice", &format!("/v1/requests?limit=2&cursor={alice}"))
        .await;
    let (s2, _) = app
        .get(
            "alice",
            &format!("/v1/requests?state=pending&cursor={pending}"),
        )
        .await;
    let (s3, _) = app.get("root", &format!("/v1/audit?cursor={audit}")).await;
    assert_eq!(
        (s1, s2, s3),
        (StatusCode::OK, StatusCode::OK, StatusCode::OK)
    );
}

/// The `request_people` rows of requests stored before the table existed are filled when the
/// store next opens (the migration leaves that chore; `Request::audience` decides the rows).
#[tokio::test]
async fn lists_rows_of_requests_stored_before_the_index_are_filled_at_open() {
    // Arrange: requests of every shape, then the index emptied as an older database has it.
    let mut app = TestApp::spawn(CONFIG).await;
    app.app_tokens(&["deployer"]).await;
    let ids = mixed_requests(&app, 60).await;
    decide_some(&app, &ids).await;
    let mut db = Raw::open(&app).await;
    for sql in [
        "DELETE FROM request_people",
        "INSERT INTO store_chores (name) VALUES ('request_people')",
    ] {
        db.exec(sql).await;
    }
    let (_, empty) = app.get("alice", "/v1/requests").await;
    assert_eq!(empty["requests"], json!([]), "the index is what lists read");

    // Act: a store opens the database (as a server starting after an upgrade does).
    let config = (*app.engine.config()).clone();
    let clock = Arc::new(engine::ManualClock::new(domain::Timestamp::from_millis(
        START_MS,
    )));
    let again = countersign::open(config, clock).await.expect("open again");
    again.store().close().await;

    // Assert
    let chore = db.count("SELECT COUNT(*) FROM store_chores").await;
    assert_eq!(chore, 0, "the chore is done");
    check_lists(&app, &ids, 50).await;
}

/// The `data-id`s of the request rows of a portal page, and its "More" link.
fn portal_rows(html: &str) -> (Vec<String>, Option<String>) {
    let ids = html
        .split("class=\"request-row\" data-id=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap_or_default().to_owned())
        .collect();
    let more = html
        .split("<a href=\"")
        .skip(1)
        .find(|s| s.contains("id=\"more\""))
        .map(|s| {
            s.split('"')
                .next()
                .unwrap_or_default()
                .replace("&#38;", "&")
                .replace("&amp;", "&")
        });
    (ids, more)
}

/// §6 in the portal: the inbox (oldest first) and the admin list page through every request
/// with their "More" links, filters kept; a bad cursor is a 400 page.
#[tokio::test]
async fn lists_portal_inbox_and_admin_pages_follow_their_cursors() {
    // Arrange: 130 requests bob may decide, 10 of them denied.
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
    )
    .await;
    let mut pending = vec![];
    for i in 0..130 {
        let req = app
            .create(
                "alice",
                json!({ "resource": "db", "reason": format!("r{i}") }),
            )
            .await;
        if i % 13 == 0 {
            let (s, _) = app.review("bob", &req, json!({ "decision": "deny" })).await;
            assert_eq!(s, StatusCode::OK);
        } else {
            pending.push(id_of(&req).to_owned());
        }
        app.advance(Duration::from_millis(3)).await;
    }
    let mut bob = crate::portal::Web::sign_in(&app, "bob").await;
    let mut root = crate::portal::Web::sign_in(&app, "root").await;

    // Act
    let mut inbox = vec![];
    let mut next = Some("/inbox".to_owned());
    while let Some(path) = next {
        assert!(inbox.len() < 1000, "the inbox's links go round");
        let page = bob.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        let (ids, more) = portal_rows(&page.html);
        inbox.extend(ids);
        next = more;
    }
    let mut listed = vec![];
    let mut next = Some("/admin/requests?state=pending&requester=alice%40example.com".to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        assert!(pages < 10, "the admin page's links go round");
        let page = root.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        let (ids, more) = portal_rows(&page.html);
        listed.extend(ids);
        if let Some(m) = &more {
            assert!(m.contains("state=pending"), "the filters are kept: {m}");
        }
        next = more;
        pages += 1;
    }
    let bad = bob.get("/inbox?cursor=bm90LWEtY3Vyc29y").await;

    // Assert
    assert_eq!(inbox, pending, "the inbox, oldest first, over two pages");
    let mut newest_first = pending.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first, "all pending requests, newest first");
    assert_eq!(pages, 2);
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

/// `countersign request list` / `grant list` as `user` with `args`: status, stdout.
async fn cli(app: &TestApp, user: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .env("COUNTERSIGN_URL", &app.api.base)
        .env("COUNTERSIGN_TOKEN", app.api.token(user))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the client");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// §6 in the CLI: `request list` and `grant list` take `--limit` and `--cursor`; the table
/// ends with the command's next `--cursor`, and `--json` carries `next_cursor`.
#[tokio::test]
async fn cli_lists_page_with_cursor() {
    // Arrange
    let app = TestApp::spawn(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
    )
    .await;
    for i in 0..5 {
        let req = app
            .create(
                "alice",
                json!({ "resource": "db", "reason": format!("r{i}") }),
            )
            .await;
        app.approve("bob", &req).await;
        app.tick().await;
        app.advance(Duration::from_secs(3600)).await;
    }

    // Act
    let (code, first) = cli(
        &app,
        "alice",
        &["request", "list", "--limit", "3", "--json"],
    )
    .await;
    let first: Value = serde_json::from_str(&first).expect("JSON");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, rest) = cli(
        &app,
        "alice",
        &[
            "request", "list", "--limit", "3", "--json", "--cursor", &cursor,
        ],
    )
    .await;
    let rest: Value = serde_json::from_str(&rest).expect("JSON");
    let (_, table) = cli(&app, "alice", &["grant", "list", "--limit", "2"]).await;
    let (bad, _) = cli(&app, "alice", &["grant", "list", "--cursor", &cursor]).await;

    // Assert
    assert_eq!(code, Some(0));
    assert_eq!(first["requests"].as_array().expect("present").len(), 3);
    assert_eq!(rest["requests"].as_array().expect("present").len(), 2);
    assert!(rest.get("next_cursor").is_none(), "the last page: {rest}");
    assert!(
        table.contains("more: repeat with --cursor "),
        "the table says how to go on: {table}"
    );
    assert_eq!(
        bad,
        Some(3),
        "a request list's cursor on the grant list is refused"
    );
}
