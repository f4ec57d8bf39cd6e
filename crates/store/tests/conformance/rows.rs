//! The smaller rows and the reads over them: idempotency keys, sessions, tokens, callback
//! secrets and deliveries; the reconciliation candidates, the counts behind `/metrics`, and
//! the filtered, paged lists of requests and grants.

use domain::{
    Attempt, Decision, Delivery, Grant, GrantState, Request, RequestState, RetryPlan, Span,
    TimerKind,
};
use store::{Counts, GrantFilter, IdempotencyRow, RequestFilter, SessionRow, Store, TokenRow};

use crate::Db;
use crate::fixtures::{
    ALICE, BOB, CAROL, DAVE, NO_LANE_LIMIT, World, at, delivery, expired_grant, grant,
    revoked_grant,
};
use crate::harness::{Seen, try_write, write};

async fn put_requests(store: &dyn Store, reqs: Vec<Request>) {
    write(store, move |tx| {
        Box::pin(async move {
            for r in &reqs {
                tx.put_request(r).await?;
            }
            Ok(())
        })
    })
    .await;
}

async fn put_grants(store: &dyn Store, grants: Vec<Grant>) {
    write(store, move |tx| {
        Box::pin(async move {
            for g in &grants {
                tx.put_grant(g).await?;
            }
            Ok(())
        })
    })
    .await;
}

async fn put_deliveries(store: &dyn Store, ds: Vec<Delivery>) {
    write(store, move |tx| {
        Box::pin(async move {
            for d in &ds {
                tx.put_delivery(d, None).await?;
            }
            Ok(())
        })
    })
    .await;
}

fn idem(subject: &str, key: &str, request: &str, expires: i64) -> IdempotencyRow {
    IdempotencyRow {
        subject: subject.to_owned(),
        key: key.to_owned(),
        body_hash: format!("{subject}/{key}"),
        request_id: request.to_owned(),
        response: None,
        expires_at: at(expires),
        in_flight_until: None,
    }
}

/// Rule 25 (`Idempotency-Key`), issue 14 item 1: a key is per caller (the same key sent by
/// two callers names two records), a record is not returned once expired, writing it again
/// replaces it (as when the first response is stored), its in-flight mark is kept, and
/// `delete_idempotency` forgets one caller's key (inside the job too).
pub async fn idempotency_keys_per_caller(db: &Db) {
    let store = db.open().await;
    let alice = idem(ALICE, "k1", "req_alice", 10_000);
    let bob = idem(BOB, "k1", "req_bob", 20_000);
    let (a, b) = (alice.clone(), bob.clone());
    write(&*store, move |tx| {
        Box::pin(async move {
            tx.put_idempotency(&a, at(0)).await?;
            tx.put_idempotency(&b, at(0)).await?;
            Ok(())
        })
    })
    .await;

    let mut answered = alice.clone();
    answered.response = Some(r#"{"id":"req_alice"}"#.to_owned());
    let seen = write(&*store, {
        let (alice, bob, answered) = (alice.clone(), bob.clone(), answered.clone());
        move |tx| {
            Box::pin(async move {
                let mut seen = Seen::default();
                seen.eq(
                    "alice's key",
                    tx.idempotency(ALICE, "k1", at(0)).await?,
                    Some(alice),
                );
                seen.eq(
                    "bob's key",
                    tx.idempotency(BOB, "k1", at(0)).await?,
                    Some(bob.clone()),
                );
                seen.eq(
                    "carol's key",
                    tx.idempotency(CAROL, "k1", at(0)).await?,
                    None,
                );
                seen.eq(
                    "another key",
                    tx.idempotency(ALICE, "k2", at(0)).await?,
                    None,
                );
                seen.eq(
                    "alice's key once expired",
                    tx.idempotency(ALICE, "k1", at(10_000)).await?,
                    None,
                );
                seen.eq(
                    "bob's key at alice's expiry",
                    tx.idempotency(BOB, "k1", at(10_000)).await?,
                    Some(bob),
                );
                tx.put_idempotency(&answered, at(1)).await?;
                Ok(seen)
            })
        }
    })
    .await;
    seen.assert();
    let later = write(&*store, |tx| {
        Box::pin(async move {
            Ok((
                tx.idempotency(ALICE, "k1", at(2)).await?,
                tx.idempotency(BOB, "k1", at(2)).await?,
            ))
        })
    })
    .await;
    assert_eq!(later, (Some(answered), Some(bob.clone())));

    // A creation under way is marked in flight; a creation that failed forgets its key.
    let mut marked = idem(CAROL, "k1", "req_carol", 10_000);
    marked.in_flight_until = Some(at(30));
    let seen = write(&*store, {
        let marked = marked.clone();
        move |tx| {
            Box::pin(async move {
                tx.put_idempotency(&marked, at(0)).await?;
                Ok(tx.idempotency(CAROL, "k1", at(40)).await?)
            })
        }
    })
    .await;
    assert_eq!(seen.as_ref(), Some(&marked), "read back in the job");
    let seen = write(&*store, |tx| {
        Box::pin(async move {
            let before = tx.idempotency(CAROL, "k1", at(40)).await?;
            tx.delete_idempotency(CAROL, "k1").await?;
            Ok((before, tx.idempotency(CAROL, "k1", at(40)).await?))
        })
    })
    .await;
    assert_eq!(seen, (Some(marked), None));
    let later = write(&*store, |tx| {
        Box::pin(async move {
            Ok((
                tx.idempotency(CAROL, "k1", at(40)).await?,
                tx.idempotency(BOB, "k1", at(40)).await?,
            ))
        })
    })
    .await;
    assert_eq!(later, (None, Some(bob)), "only carol's key is forgotten");
}

/// Portal sessions (issue 14 item 2 keeps them in the database for every replica), tokens
/// and callback secrets (rule 22): each read back by its key; a session not once expired,
/// replaced when written again, gone once deleted; sign-ins under way (`login:` sessions)
/// counted by prefix while live, and taken once.
pub async fn sessions_tokens_and_secrets(db: &Db) {
    let store = db.open().await;
    let session = |hash: &str, data: &str| SessionRow {
        hash: hash.to_owned(),
        subject: ALICE.to_owned(),
        csrf: format!("csrf_{hash}"),
        data: data.to_owned(),
        created_at: at(0),
        expires_at: at(3_600_000),
    };
    let (s1, s2) = (session("s1", "{}"), session("s2", r#"{"groups":["ops"]}"#));
    write(&*store, {
        let (s1, s2) = (s1.clone(), s2.clone());
        move |tx| {
            Box::pin(async move {
                tx.put_session(&s1, at(0)).await?;
                tx.put_session(&s2, at(0)).await?;
                tx.put_token("tok_1", ALICE, at(0)).await?;
                tx.put_token("tok_2", "app:deployer", at(0)).await?;
                tx.put_callback_secret("req_1", "whsec_1").await?;
                Ok(())
            })
        }
    })
    .await;

    assert_eq!(
        store.session("s1", at(0)).await.expect("read"),
        Some(s1.clone())
    );
    assert_eq!(
        store.session("s1", at(3_599_999)).await.expect("read"),
        Some(s1.clone())
    );
    assert_eq!(
        store.session("s1", at(3_600_000)).await.expect("read"),
        None
    );
    assert_eq!(store.session("nope", at(0)).await.expect("read"), None);
    let token = |s: &str| Some(TokenRow { subject: s.into() });
    assert_eq!(store.token("tok_1").await.expect("read"), token(ALICE));
    assert_eq!(
        store.token("tok_2").await.expect("read"),
        token("app:deployer")
    );
    assert_eq!(store.token("tok_3").await.expect("read"), None);
    assert_eq!(
        store.callback_secret("req_1").await.expect("read"),
        Some("whsec_1".to_owned())
    );
    assert_eq!(store.callback_secret("req_2").await.expect("read"), None);

    let mut signed_in = s1.clone();
    signed_in.data = r#"{"groups":["admins"]}"#.to_owned();
    signed_in.expires_at = at(7_200_000);
    write(&*store, {
        let signed_in = signed_in.clone();
        move |tx| {
            Box::pin(async move {
                tx.put_session(&signed_in, at(10)).await?;
                tx.delete_session("s2").await?;
                Ok(())
            })
        }
    })
    .await;
    assert_eq!(
        store.session("s1", at(3_600_000)).await.expect("read"),
        Some(signed_in)
    );
    assert_eq!(store.session("s2", at(0)).await.expect("read"), None);

    // Sign-ins under way: counted by prefix while live, taken once.
    let login = |hash: &str, expires: i64| SessionRow {
        expires_at: at(expires),
        ..session(hash, "{}")
    };
    write(&*store, {
        let rows = vec![
            login("login:a", 600_000),
            login("login:Zz", 600_000),
            login("login:zzz", 600_000),
            login("login:old", 100),
            login("login", 600_000),
            login("loginx", 600_000),
            login("logo:a", 600_000),
        ];
        move |tx| {
            Box::pin(async move {
                for r in &rows {
                    tx.put_session(r, at(0)).await?;
                }
                Ok(())
            })
        }
    })
    .await;
    let (counted, taken, again, expired) = write(&*store, |tx| {
        Box::pin(async move {
            let counted = tx.count_sessions("login:", at(1000)).await?;
            let taken = tx.take_session("login:a", at(1000)).await?;
            let again = tx.take_session("login:a", at(1000)).await?;
            let expired = tx.take_session("login:old", at(1000)).await?;
            Ok((counted, taken, again, expired))
        })
    })
    .await;
    assert_eq!(
        counted, 3,
        "login:a, login:Zz and login:zzz are live sign-ins"
    );
    assert_eq!(taken, Some(login("login:a", 600_000)));
    assert_eq!((again, expired), (None, None));
    assert_eq!(
        store.session("login:a", at(1000)).await.expect("read"),
        None
    );
    let later = write(&*store, |tx| {
        Box::pin(async move { Ok(tx.count_sessions("login:", at(1000)).await?) })
    })
    .await;
    assert_eq!(later, 2);
}

/// Rule 22: `deliveries(request)` returns that request's delivery as last written, and
/// nothing for a request without one; `delivery_lanes` names the receiver of each delivery
/// that exists.
pub async fn deliveries_of_a_request(db: &Db) {
    let store = db.open().await;
    let a = delivery("req_a", at(0));
    let mut b = delivery("req_b", at(0));
    b.url = "https://other.example.net/outcomes".to_owned();
    put_deliveries(&*store, vec![a.clone(), b.clone()]).await;
    assert_eq!(
        store.deliveries("req_a").await.expect("read"),
        vec![a.clone()]
    );
    assert_eq!(
        store.deliveries("req_b").await.expect("read"),
        vec![b.clone()]
    );
    assert_eq!(store.deliveries("req_c").await.expect("read"), vec![]);
    // Each delivery's receiver, for ids that exist (the worker's backlog of a busy receiver).
    let mut lanes = store
        .delivery_lanes(&[b.id.clone(), "nope".into(), a.id.clone()])
        .await
        .expect("lanes");
    lanes.sort();
    let mut want = vec![(a.id.clone(), a.lane()), (b.id.clone(), b.lane())];
    want.sort();
    assert_eq!(lanes, want);
    assert_ne!(a.lane(), b.lane());

    let mut retried = a;
    retried.attempted(
        Attempt {
            at: at(100),
            status: Some(503),
            error: Some("503 Service Unavailable".into()),
            ms: 12,
        },
        RetryPlan {
            delay_ms: 5000,
            retry_after_ms: None,
            window: Span::from_secs(3600),
        },
    );
    put_deliveries(&*store, vec![retried.clone()]).await;
    assert_eq!(
        store.deliveries("req_a").await.expect("read"),
        vec![retried.clone()]
    );
    assert_eq!(
        store
            .due_deliveries(at(100), NO_LANE_LIMIT, 10)
            .await
            .expect("due"),
        vec!["msg_req_b".to_owned()]
    );
    assert_eq!(
        store
            .due_deliveries(at(5100), NO_LANE_LIMIT, 10)
            .await
            .expect("due"),
        vec!["msg_req_b".to_owned(), "msg_req_a".to_owned()],
        "oldest first"
    );
    assert_eq!(
        store
            .due_deliveries(at(5100), NO_LANE_LIMIT, 1)
            .await
            .expect("due"),
        vec!["msg_req_b".to_owned()],
        "at most the limit"
    );
}

/// The reconciliation sweep's input: a resource's active grants, and for each subject that
/// holds no live grant of it any more, only the latest ended one.
pub async fn reconcile_candidates(db: &Db) {
    let store = db.open().await;
    let (alice_active, _) = grant("g_alice_active", ALICE, "db", false, at(3000));
    let (carol_activating, _) = grant("g_carol_activating", CAROL, "db", true, at(4000));
    let bob_latest = expired_grant("g_bob_latest", BOB, "db", at(2000));
    put_grants(
        &*store,
        vec![
            expired_grant("g_alice_old", ALICE, "db", at(0)),
            alice_active.clone(),
            revoked_grant("g_bob_old", BOB, "db", at(1000)),
            bob_latest.clone(),
            revoked_grant("g_carol_old", CAROL, "db", at(0)),
            carol_activating,
            expired_grant("g_dave_web", DAVE, "web", at(0)),
        ],
    )
    .await;

    let mut got = store.reconcile_candidates("db").await.expect("read");
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, vec![alice_active, bob_latest]);
    let web = store.reconcile_candidates("web").await.expect("read");
    assert_eq!(
        web.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        ["g_dave_web"]
    );
    assert_eq!(
        store.reconcile_candidates("vault").await.expect("read"),
        vec![]
    );
}

/// The gauges of `/metrics`: pending requests, active grants, unfinished deliveries, and the
/// due, unclaimed jobs by kind with the oldest due time.
pub async fn counts(db: &Db) {
    let store = db.open().await;
    assert_eq!(
        store.counts(at(0)).await.expect("counts"),
        Counts::default()
    );

    let w = World::new();
    let mut reqs: Vec<Request> = ["req_1", "req_2", "req_3", "req_4"]
        .iter()
        .map(|id| w.request(id, ALICE, "db", at(0)).0)
        .collect();
    w.review(&mut reqs[3], BOB, Decision::Approve, at(10))
        .expect("approve");
    put_requests(&*store, reqs).await;
    put_grants(
        &*store,
        vec![
            grant("g1", ALICE, "db", false, at(0)).0,
            grant("g2", CAROL, "db", false, at(0)).0,
            grant("g3", CAROL, "web", true, at(0)).0,
            expired_grant("g4", DAVE, "db", at(0)),
        ],
    )
    .await;
    let plan = RetryPlan {
        delay_ms: 60_000,
        retry_after_ms: None,
        window: Span::from_secs(3600),
    };
    let mut delivered = delivery("req_x", at(0));
    delivered.attempted(
        Attempt {
            at: at(0),
            status: Some(204),
            error: None,
            ms: 3,
        },
        plan,
    );
    let mut retrying = delivery("req_y", at(0));
    retrying.attempted(
        Attempt {
            at: at(0),
            status: Some(500),
            error: Some("500".into()),
            ms: 3,
        },
        plan,
    );
    put_deliveries(&*store, vec![delivery("req_z", at(0)), delivered, retrying]).await;
    write(&*store, |tx| {
        Box::pin(async move {
            tx.schedule(TimerKind::RequestExpiry, "a", at(100)).await?;
            tx.schedule(TimerKind::RequestExpiry, "b", at(200)).await?;
            tx.schedule(TimerKind::GrantExpiry, "c", at(300)).await?;
            tx.schedule(TimerKind::GrantNotice, "d", at(10_000)).await?;
            tx.schedule(TimerKind::Repair, "e", at(50)).await?;
            Ok(())
        })
    })
    .await;
    let claimed = write(&*store, |tx| {
        Box::pin(async move { Ok(tx.claim(TimerKind::Repair, "e", at(50), at(5000)).await?) })
    })
    .await;
    assert!(claimed);

    let mut counts = store.counts(at(1000)).await.expect("counts");
    counts.due_jobs.sort_by_key(|(k, _)| k.as_str());
    assert_eq!(
        counts,
        Counts {
            pending_requests: 3,
            active_grants: 2,
            pending_deliveries: 2,
            due_jobs: vec![(TimerKind::GrantExpiry, 1), (TimerKind::RequestExpiry, 2)],
            oldest_due: Some(at(100)),
        }
    );
}

/// Issue 14 item 3 (lists answered from the store): `list_requests` filters by state,
/// resource and requester, newest first (ties by id), and `after` pages through them
/// without a duplicate or a gap.
pub async fn list_requests_filters_and_pages(db: &Db) {
    let store = db.open().await;
    let w = World::new();
    let requesters = [ALICE, CAROL, DAVE];
    let mut all: Vec<Request> = (0..30)
        .map(|i: i64| {
            let id = format!("req_{i:02}");
            let resource = if i % 2 == 0 { "db" } else { "web" };
            // Three requests share each creation time.
            let (mut r, _) = w.request(
                &id,
                requesters[(i % 3) as usize],
                resource,
                at(i / 3 * 1000),
            );
            if i % 4 == 0 {
                w.review(&mut r, BOB, Decision::Approve, at(50_000))
                    .expect("approve");
            }
            r
        })
        .collect();
    // Written out of order, over several jobs.
    let mut shuffled = all.clone();
    shuffled.sort_by_key(|r| {
        let b = r.id.as_bytes();
        (u32::from(b[4]) * 31 + u32::from(b[5]) * 7) % 11
    });
    for chunk in shuffled.chunks(8) {
        put_requests(&*store, chunk.to_vec()).await;
    }
    all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));

    let filters: Vec<(&str, RequestFilter)> = vec![
        ("none", RequestFilter::default()),
        (
            "approved",
            RequestFilter {
                state: Some(RequestState::Approved),
                ..Default::default()
            },
        ),
        (
            "web",
            RequestFilter {
                resource: Some("web".into()),
                ..Default::default()
            },
        ),
        (
            "carol's",
            RequestFilter {
                requester: Some(CAROL.into()),
                ..Default::default()
            },
        ),
        (
            "alice's pending on db",
            RequestFilter {
                state: Some(RequestState::Pending),
                resource: Some("db".into()),
                requester: Some(ALICE.into()),
                ..Default::default()
            },
        ),
    ];
    for (name, f) in filters {
        let want: Vec<Request> = all
            .iter()
            .filter(|r| f.state.is_none_or(|s| r.state == s))
            .filter(|r| f.resource.as_ref().is_none_or(|x| r.resource == *x))
            .filter(|r| f.requester.as_ref().is_none_or(|x| r.requester == *x))
            .cloned()
            .collect();
        assert!(!want.is_empty(), "{name}: the data must hold some");
        let got = store
            .list_requests(&RequestFilter {
                limit: 100,
                ..f.clone()
            })
            .await
            .expect("list");
        assert_eq!(ids(&got), ids(&want), "{name}");
        assert_eq!(got, want, "{name}: the stored snapshots");

        // The same, three at a time.
        let mut paged: Vec<Request> = vec![];
        loop {
            let page = store
                .list_requests(&RequestFilter {
                    limit: 3,
                    after: paged.last().map(|r| (r.created_at, r.id.clone())),
                    ..f.clone()
                })
                .await
                .expect("list");
            assert!(page.len() <= 3);
            if page.is_empty() {
                break;
            }
            paged.extend(page);
            assert!(paged.len() <= want.len(), "{name}: paging does not end");
        }
        assert_eq!(ids(&paged), ids(&want), "{name}, paged");
    }
    let first = store
        .list_requests(&RequestFilter {
            limit: 5,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(ids(&first), ids(&all[..5]));
}

fn ids(rs: &[Request]) -> Vec<&str> {
    rs.iter().map(|r| r.id.as_str()).collect()
}

/// `list_grants` filters by state, subject and resource, newest first (ties by id), and
/// stops at its limit.
pub async fn list_grants_filters(db: &Db) {
    let store = db.open().await;
    let subjects = [ALICE, CAROL];
    let resources = ["db", "web", "vault"];
    let mut all: Vec<Grant> = (0..12)
        .map(|i: i64| {
            let id = format!("g_{i:02}");
            let (s, r) = (subjects[(i % 2) as usize], resources[(i % 3) as usize]);
            let issued = at(i / 2 * 1000);
            if i % 4 == 0 {
                expired_grant(&id, s, r, issued)
            } else {
                grant(&id, s, r, false, issued).0
            }
        })
        .collect();
    let mut shuffled = all.clone();
    shuffled.reverse();
    put_grants(&*store, shuffled).await;
    all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));

    let filters: Vec<(&str, GrantFilter)> = vec![
        ("none", GrantFilter::default()),
        (
            "expired",
            GrantFilter {
                state: Some(GrantState::Expired),
                ..Default::default()
            },
        ),
        (
            "carol's",
            GrantFilter {
                subject: Some(CAROL.into()),
                ..Default::default()
            },
        ),
        (
            "alice's active on db",
            GrantFilter {
                state: Some(GrantState::Active),
                subject: Some(ALICE.into()),
                resource: Some("db".into()),
                ..Default::default()
            },
        ),
    ];
    for (name, f) in filters {
        let want: Vec<&Grant> = all
            .iter()
            .filter(|g| f.state.is_none_or(|s| g.state == s))
            .filter(|g| f.subject.as_ref().is_none_or(|x| g.spec.subject == *x))
            .filter(|g| f.resource.as_ref().is_none_or(|x| g.spec.resource == *x))
            .collect();
        assert!(!want.is_empty(), "{name}: the data must hold some");
        let got = store
            .list_grants(&GrantFilter {
                limit: 100,
                ..f.clone()
            })
            .await
            .expect("list");
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "{name}");
        let two = store
            .list_grants(&GrantFilter { limit: 2, ..f })
            .await
            .expect("list");
        assert_eq!(
            two.iter().collect::<Vec<_>>(),
            want[..want.len().min(2)],
            "{name}, 2"
        );
    }
}

/// PRODUCT.md §7 (bad input is a clear answer, never a 500): a read by an id or a filter
/// holding a NUL character finds nothing, as on SQLite, through the store and inside a job,
/// and the job still commits what it wrote.
pub async fn reads_with_nul_find_nothing(db: &Db) {
    let store = db.open().await;
    let w = World::new();
    let (req, _) = w.request("req_nul", ALICE, "db", at(0));
    put_requests(&*store, vec![req.clone()]).await;
    let bad = "req_nul\0";

    assert_eq!(store.request(bad).await.expect("read"), None);
    assert_eq!(store.grant(bad).await.expect("read"), None);
    assert_eq!(store.token(bad).await.expect("read"), None);
    assert_eq!(store.session(bad, at(0)).await.expect("read"), None);
    assert_eq!(store.callback_secret(bad).await.expect("read"), None);
    assert_eq!(store.deliveries(bad).await.expect("read"), vec![]);
    assert_eq!(store.reconcile_candidates(bad).await.expect("read"), vec![]);
    let none = store
        .list_requests(&RequestFilter {
            requester: Some(format!("{ALICE}\0")),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(none, vec![]);
    let none = store
        .list_grants(&GrantFilter {
            subject: Some("\0".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(none, vec![]);

    // Inside jobs, with other jobs sent at the same moment (which a store may commit
    // together): each finds nothing and commits, and so do the others.
    let mut tasks = vec![];
    for i in 0..8 {
        let store = store.clone();
        let (g, _) = grant(&format!("grant_nul_{i}"), ALICE, "db", false, at(0));
        tasks.push(tokio::spawn(async move {
            try_write(&*store, move |tx| {
                Box::pin(async move {
                    tx.put_grant(&g).await?;
                    if i % 2 == 1 {
                        return Ok(None);
                    }
                    Ok(Some((
                        tx.request(bad).await?,
                        tx.grant("grant_nul\0").await?,
                        tx.live_grants(ALICE, "db\0").await?,
                        tx.scheduled(TimerKind::GrantExpiry, bad).await?,
                        tx.delivery(bad).await?,
                        tx.idempotency(ALICE, bad, at(0)).await?,
                    )))
                })
            })
            .await
        }));
    }
    let mut wrong = vec![];
    for (i, t) in tasks.into_iter().enumerate() {
        let seen = t.await.expect("task");
        let want = (i % 2 == 0).then_some((None, None, vec![], None, None, None));
        let kept = store.grant(&format!("grant_nul_{i}")).await.expect("read");
        if seen != Ok(want) || kept.is_none() {
            let role = ["reads with NUL", "reads nothing"][i % 2];
            wrong.push(format!("job {i} ({role}): {seen:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The Slack app's rows (rules 35 and 36): an account acts as one person, linking it again
/// moves it, and unlinking it leaves it acting as nobody; a person's latest link is the account their DMs go to; a message recorded twice
/// is kept once.
pub async fn slack_links_and_messages(db: &Db) {
    let store = db.open().await;
    write(&*store, |tx| {
        Box::pin(async move {
            tx.put_slack_link("U1", ALICE, at(0)).await?;
            tx.put_slack_link("U2", BOB, at(1)).await?;
            // U1 linked again, by carol: the account now acts as carol.
            tx.put_slack_link("U1", CAROL, at(2)).await?;
            tx.put_slack_link("U3", CAROL, at(3)).await?;
            // U4 linked, then unlinked in the same job: it acts as nobody.
            tx.put_slack_link("U4", DAVE, at(3)).await?;
            tx.delete_slack_link("U4").await?;
            tx.put_slack_message("req_1", "C1", "1700000000.000100", at(0))
                .await?;
            tx.put_slack_message("req_1", "D2", "1700000000.000200", at(1))
                .await?;
            tx.put_slack_message("req_1", "C1", "1700000000.000100", at(2))
                .await?;
            tx.put_slack_message("req_2", "C1", "1700000000.000300", at(2))
                .await?;
            Ok(())
        })
    })
    .await;

    let mut seen = Seen::default();
    seen.eq(
        "U1 acts as",
        store.slack_person("U1").await.expect("read"),
        Some(CAROL.to_owned()),
    );
    seen.eq(
        "U2 acts as",
        store.slack_person("U2").await.expect("read"),
        Some(BOB.to_owned()),
    );
    seen.eq(
        "an unknown account",
        store.slack_person("U9").await.expect("read"),
        None,
    );
    seen.eq(
        "an unlinked account",
        store.slack_person("U4").await.expect("read"),
        None,
    );
    seen.eq(
        "dave, whose only link was removed",
        store.slack_account(DAVE).await.expect("read"),
        None,
    );
    seen.eq(
        "alice's account (moved to carol)",
        store.slack_account(ALICE).await.expect("read"),
        None,
    );
    seen.eq(
        "carol's latest account",
        store.slack_account(CAROL).await.expect("read"),
        Some("U3".to_owned()),
    );
    seen.eq(
        "req_1's messages",
        store.slack_messages("req_1").await.expect("read"),
        vec![
            ("C1".to_owned(), "1700000000.000100".to_owned()),
            ("D2".to_owned(), "1700000000.000200".to_owned()),
        ],
    );
    seen.eq(
        "a request with none",
        store.slack_messages("req_9").await.expect("read"),
        vec![],
    );
    seen.assert();
}

/// Rule 35: a Slack interaction is stored once under its key. The first store of a key wins,
/// within a job, across jobs and across handles racing; its payload reads back as received;
/// one received more than a day earlier is forgotten.
pub async fn slack_interactions_are_stored_once(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let firsts = write(&*a, |tx| {
        Box::pin(async move {
            let one = tx.put_slack_interaction("T1", "{\"n\":1}", at(0)).await?;
            let again = tx.put_slack_interaction("T1", "{\"n\":2}", at(1)).await?;
            Ok((one, again))
        })
    })
    .await;
    assert_eq!(firsts, (true, false), "within one job");
    let mut tasks = vec![];
    for i in 0..10 {
        let store = [a.clone(), b.clone()][i % 2].clone();
        tasks.push(tokio::spawn(async move {
            write(&*store, move |tx| {
                Box::pin(async move {
                    Ok(tx
                        .put_slack_interaction("T2", &format!("{{\"n\":{i}}}"), at(10))
                        .await?)
                })
            })
            .await
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += usize::from(t.await.expect("task"));
    }
    assert_eq!(stored, 1, "one of ten racing stores of T2 stored it");
    let read = |store: std::sync::Arc<dyn Store>, key: &'static str| async move {
        write(&*store, move |tx| {
            Box::pin(async move { Ok(tx.slack_interaction(key).await?) })
        })
        .await
    };
    let mut seen = Seen::default();
    seen.eq(
        "T1 as first received",
        read(b.clone(), "T1").await,
        Some("{\"n\":1}".to_owned()),
    );
    seen.eq(
        "T1 stored again from the other handle",
        write(&*b, |tx| {
            Box::pin(async move { Ok(tx.put_slack_interaction("T1", "{}", at(20)).await?) })
        })
        .await,
        false,
    );
    seen.eq("an unknown key", read(a.clone(), "T9").await, None);
    // A day and a bit later, a new interaction: T1 and T2 are forgotten.
    let later = at(store::SLACK_INTERACTION_TTL_MS + 11);
    write(&*a, move |tx| {
        Box::pin(async move { Ok(tx.put_slack_interaction("T3", "{}", later).await?) })
    })
    .await;
    seen.eq("T1 after a day", read(a.clone(), "T1").await, None);
    seen.eq("T2 after a day", read(b.clone(), "T2").await, None);
    seen.eq("T3", read(b.clone(), "T3").await, Some("{}".to_owned()));
    seen.assert();
}

/// Issue 17 (rule 37): a run and its checkpoint are written with the job and read back whole,
/// within the job and after; a later write replaces it; lists are the runner's own, filtered
/// by state and paged newest first.
pub async fn runs_checkpoint_and_list(db: &Db) {
    use domain::run::{Run, RunState};
    let store = db.open().await;
    let steps: Vec<domain::RunbookStep> = serde_json::from_value(serde_json::json!([
        {"id": "hello", "type": "message", "prompt": "hi"},
        {"id": "name", "type": "input", "value_type": "string", "prompt": "who?"}
    ]))
    .expect("steps");
    let mut runs = vec![];
    for (i, runner) in ["ann", "ann", "ben"].into_iter().enumerate() {
        let (r, _) = Run::start(
            format!("run{i}"),
            "book",
            "v1".into(),
            runner,
            steps.clone(),
            Default::default(),
            at(i as i64),
        )
        .expect("start");
        runs.push(r);
    }
    let first = runs[0].clone();
    let within = write(&*store, move |tx| {
        Box::pin(async move {
            for r in &runs {
                tx.put_run(r).await?;
            }
            Ok(tx.run("run0").await?)
        })
    })
    .await;
    let mut done = first.clone();
    done.complete(serde_json::json!("hi"), None, at(5))
        .expect("complete");
    let _ = done.wait_for_input(at(5));
    let written = done.clone();
    write(&*store, move |tx| {
        Box::pin(async move { Ok(tx.put_run(&written).await?) })
    })
    .await;
    let ann =
        |state: Option<RunState>, after: Option<(domain::Timestamp, String)>| store::RunFilter {
            runner: Some("ann".into()),
            state,
            after,
            limit: 10,
        };
    let ids = |v: Vec<Run>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let mut seen = Seen::default();
    seen.eq("read within the job", within, Some(first));
    seen.eq(
        "read after, with its checkpoint",
        store.run("run0").await.expect("run"),
        Some(done),
    );
    seen.eq(
        "ann's, newest first",
        ids(store.list_runs(&ann(None, None)).await.expect("list")),
        vec!["run1".to_owned(), "run0".to_owned()],
    );
    seen.eq(
        "ann's waiting for input",
        ids(store
            .list_runs(&ann(Some(RunState::WaitingForInput), None))
            .await
            .expect("list")),
        vec!["run0".to_owned()],
    );
    seen.eq(
        "after run1",
        ids(store
            .list_runs(&ann(None, Some((at(1), "run1".into()))))
            .await
            .expect("list")),
        vec!["run0".to_owned()],
    );
    seen.eq(
        "everyone's",
        store
            .list_runs(&store::RunFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("list")
            .len(),
        3,
    );
    seen.eq("no such run", store.run("nope").await.expect("run"), None);
    seen.assert();
}
