//! Two handles on one database stand for two replicas: what one commits, the other reads,
//! inside its transactions too, and a key that must be created once is created once.

use std::sync::Arc;

use domain::{Decision, GrantState, RequestState};
use store::{IdempotencyRow, Store};

use crate::Db;
use crate::fixtures::{ALICE, BOB, World, apply, at, grant};
use crate::harness::{Seen, refuse, try_write, write};

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

/// Rule 25 and issue 14 item 1 ("idempotency keys … enforced through the database"): ten
/// jobs over two handles send the same caller's key at once, each creating its request only
/// if no record of the key exists. Exactly one request and one record are written, and that
/// record names it; no job reports success for a request that was not kept. (A losing job
/// may refuse, having seen the record, or fail on the key's uniqueness: either way it
/// committed nothing.)
pub async fn idempotency_key_has_one_creator_across_handles(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let stores: [Arc<dyn Store>; 2] = [a.clone(), b];
    let w = Arc::new(World::new());

    let mut tasks = vec![];
    for i in 0..10 {
        let store = stores[i % 2].clone();
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("req_idem_{i}");
            let (req, created) = w.request(&id, ALICE, "db", at(i as i64));
            let record = IdempotencyRow {
                subject: ALICE.into(),
                key: "same-key".into(),
                body_hash: "h".into(),
                request_id: id.clone(),
                response: None,
                expires_at: at(86_400_000),
                in_flight_until: None,
            };
            try_write(&*store, move |tx| {
                Box::pin(async move {
                    let now = at(i as i64);
                    if let Some(r) = tx.idempotency(ALICE, "same-key", now).await? {
                        return Err(refuse(format!("already created {}", r.request_id)));
                    }
                    tx.put_idempotency(&record, now).await?;
                    tx.put_request(&req).await?;
                    apply(tx, &created, now).await?;
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

    let created: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    let kept = write(&*a, |tx| {
        Box::pin(async move { Ok(tx.idempotency(ALICE, "same-key", at(100)).await?) })
    })
    .await
    .expect("the record");
    assert_eq!(&kept.request_id, created[0]);
    let requests = a
        .list_requests(&store::RequestFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        requests.iter().map(|r| &r.id).collect::<Vec<_>>(),
        vec![created[0]]
    );
}
