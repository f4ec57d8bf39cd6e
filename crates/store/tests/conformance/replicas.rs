//! Two handles on one database stand for two replicas: what one commits, the other reads,
//! inside its transactions too, and a key that must be created once is created once.

use std::sync::Arc;

use domain::{Decision, GrantState, RequestState};
use store::{IdempotencyRow, Store};

use crate::Db;
use crate::fixtures::{ALICE, BOB, World, apply, at, grant};
use crate::harness::{Failed, Seen, refuse, try_write, write};

/// Issue 14 item 1 (no state of a replica's own): requests and grants written through one
/// handle, then changed through another, are read in their changed form by the first, both
/// through its store reads and inside its transactions (`request`, `grant`, `live_grants`,
/// after `warm`).
pub async fn handles_see_each_others_commits(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let w = World::new();
    let (req, created) = w.request("req_v", ALICE, "db", at(0));
    let (g, _) = grant("grant_v", ALICE, "db", false, at(0));
    write(&*a, {
        let (req, g) = (req.clone(), g.clone());
        move |tx| {
            Box::pin(async move {
                tx.put_request(&req).await?;
                apply(tx, &created, at(0)).await?;
                tx.put_grant(&g).await?;
                Ok(())
            })
        }
    })
    .await;
    // The first handle reads them once, as a replica working on them would.
    write(&*a, |tx| {
        Box::pin(async move {
            tx.warm(&["grant_v"], &["req_v"]).await?;
            Ok((tx.request("req_v").await?, tx.grant("grant_v").await?))
        })
    })
    .await;

    // The second handle decides the request and ends the grant. (Its audit events are left
    // out: the chain across handles is `chain.rs`'s business; this is about the rows.)
    let mut decided = req.clone();
    w.review(&mut decided, BOB, Decision::Approve, at(1000))
        .expect("approve");
    let mut ended = g.clone();
    ended
        .expire(g.expires_at.expect("active"))
        .expect("it expires");
    write(&*b, {
        let (decided, ended) = (decided.clone(), ended.clone());
        move |tx| {
            Box::pin(async move {
                tx.put_request(&decided).await?;
                tx.put_grant(&ended).await?;
                Ok(())
            })
        }
    })
    .await;

    // The first handle sees the changes.
    assert_eq!(
        a.request("req_v").await.expect("read"),
        Some(decided.clone())
    );
    assert_eq!(a.grant("grant_v").await.expect("read"), Some(ended.clone()));
    let seen = write(&*a, move |tx| {
        Box::pin(async move {
            let mut seen = Seen::default();
            let req = tx.request("req_v").await?;
            seen.eq(
                "request's state",
                req.as_ref().map(|r| r.state),
                Some(RequestState::Approved),
            );
            seen.eq("request", req.as_ref() == Some(&decided), true);
            let g = tx.grant("grant_v").await?;
            seen.eq(
                "grant's state",
                g.as_ref().map(|g| g.state),
                Some(GrantState::Expired),
            );
            seen.eq("grant", g.as_ref() == Some(&ended), true);
            seen.eq("live grants", tx.live_grants(ALICE, "db").await?, vec![]);
            tx.warm(&["grant_v"], &["req_v"]).await?;
            seen.eq(
                "request after warm",
                tx.request("req_v").await?.map(|r| r.state),
                Some(RequestState::Approved),
            );
            seen.eq(
                "grant after warm",
                tx.grant("grant_v").await?.map(|g| g.state),
                Some(GrantState::Expired),
            );
            Ok(seen)
        })
    })
    .await;
    seen.assert();
}

/// Rule 25 and issue 14 item 1 ("idempotency keys … enforced through the database"), as the
/// engine marks a key in flight: ten jobs over two handles send one caller's key at once,
/// each marking it in flight for its own request only if no record of the key exists.
/// Exactly one marks it; every other job sees that mark and refuses (the caller's 409), none
/// fails. The request is then created and the record answered through the other handle, and
/// every later sender, on either handle, sees the answer naming it.
pub async fn idempotency_key_has_one_creator_across_handles(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let stores: [Arc<dyn Store>; 2] = [a.clone(), b.clone()];
    let w = Arc::new(World::new());
    let record = |id: &str, in_flight_until| IdempotencyRow {
        subject: ALICE.into(),
        key: "same-key".into(),
        body_hash: "h".into(),
        request_id: id.to_owned(),
        response: None,
        expires_at: at(86_400_000),
        in_flight_until,
    };

    // Act: ten marks at once.
    let mut tasks = vec![];
    for i in 0..10 {
        let store = stores[i % 2].clone();
        let id = format!("req_idem_{i}");
        let mark = record(&id, Some(at(30_000)));
        tasks.push(tokio::spawn(async move {
            try_write(&*store, move |tx| {
                Box::pin(async move {
                    let now = at(i as i64);
                    if let Some(r) = tx.idempotency(ALICE, "same-key", now).await? {
                        return Err(refuse(match r.in_flight_until {
                            Some(_) => "in flight",
                            None => "answered",
                        }));
                    }
                    tx.put_idempotency(&mark, now).await?;
                    Ok(id)
                })
            })
            .await
        }));
    }
    let mut outcomes = vec![];
    for t in tasks {
        outcomes.push(t.await.expect("task"));
    }

    // Assert: one mark, nine refusals.
    let marked: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().cloned())
        .collect();
    assert_eq!(marked.len(), 1, "{outcomes:?}");
    let winner = marked[0].clone();
    for o in &outcomes {
        if let Err(e) = o {
            assert_eq!(*e, Failed::Refused("in flight".into()));
        }
    }
    let seen = write(&*b, |tx| {
        Box::pin(async move { Ok(tx.idempotency(ALICE, "same-key", at(100)).await?) })
    })
    .await;
    assert_eq!(seen, Some(record(&winner, Some(at(30_000)))));

    // The creation commits through the other handle and answers the key.
    let (req, created) = w.request(&winner, ALICE, "db", at(200));
    let mut answered = record(&winner, None);
    answered.response = Some(format!(r#"{{"id":"{winner}"}}"#));
    let owner = if winner.ends_with(|c: char| c.to_digit(10).is_some_and(|d| d % 2 == 0)) {
        b.clone()
    } else {
        a.clone()
    };
    write(&*owner, {
        let answered = answered.clone();
        move |tx| {
            Box::pin(async move {
                tx.put_request(&req).await?;
                apply(tx, &created, at(200)).await?;
                tx.put_idempotency(&answered, at(200)).await?;
                Ok(())
            })
        }
    })
    .await;
    for s in &stores {
        let seen = write(&**s, |tx| {
            Box::pin(async move { Ok(tx.idempotency(ALICE, "same-key", at(300)).await?) })
        })
        .await;
        assert_eq!(seen.as_ref(), Some(&answered));
    }
    let requests = a
        .list_requests(&store::RequestFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        requests.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec![winner.as_str()]
    );
}

/// Issue 14 item 2 ("sign-ins under way in the database, so an OIDC callback may reach any
/// replica"): a sign-in stored through one handle is taken by exactly one of ten jobs racing
/// over two handles, and is gone afterwards.
pub async fn sign_in_taken_once_across_handles(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let row = store::SessionRow {
        hash: "login:state123".into(),
        subject: String::new(),
        csrf: "nonce".into(),
        data: r#"{"verifier":"v"}"#.into(),
        created_at: at(0),
        expires_at: at(600_000),
    };
    write(&*a, {
        let row = row.clone();
        move |tx| Box::pin(async move { Ok(tx.put_session(&row, at(0)).await?) })
    })
    .await;

    let stores: [Arc<dyn Store>; 2] = [a.clone(), b.clone()];
    let mut tasks = vec![];
    for i in 0..10 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            write(&*store, |tx| {
                Box::pin(async move { Ok(tx.take_session("login:state123", at(1000)).await?) })
            })
            .await
        }));
    }
    let mut taken = vec![];
    for t in tasks {
        taken.extend(t.await.expect("task"));
    }
    assert_eq!(taken, vec![row]);
    for s in &stores {
        assert_eq!(
            s.session("login:state123", at(1000)).await.expect("read"),
            None
        );
    }
}
