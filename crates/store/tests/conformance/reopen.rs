//! What is committed outlives the process that wrote it (PRODUCT.md §6: an acknowledged
//! decision survives), and a store opened again continues the same audit chain.

use domain::{Decision, Event, EventKind, TimerKind};
use store::{SessionRow, TokenRow};

use crate::Db;
use crate::fixtures::{ALICE, BOB, World, apply, at, delivery, grant};
use crate::harness::{Failed, head_of, try_write, verified_chain, write};

/// Issue 14 item 1, PRODUCT.md §6: after a store is closed and opened again on the same
/// database, every committed row is there, `head()` is the last committed event, and the
/// next event continues the chain. A closed store refuses further writes.
pub async fn reopen_keeps_everything(db: &Db) {
    // Arrange: a request created and approved, its grant, a delivery, a session, a token,
    // a secret and an idempotency record.
    let store = db.open().await;
    let w = World::new();
    let (mut req, created) = w.request("req_r", ALICE, "db", at(0));
    let mut approved = req.clone();
    let decided = w
        .review(&mut approved, BOB, Decision::Approve, at(1000))
        .expect("approve");
    let (g, issued) = grant("grant_r", ALICE, "db", false, at(1000));
    let d = delivery("req_r", at(1000));
    let session = SessionRow {
        hash: "sess_r".into(),
        subject: ALICE.into(),
        csrf: "csrf_r".into(),
        data: "{}".into(),
        created_at: at(0),
        expires_at: at(3_600_000),
    };
    let idem = store::IdempotencyRow {
        subject: ALICE.into(),
        key: "key_r".into(),
        body_hash: "h".into(),
        request_id: "req_r".into(),
        response: Some("{}".into()),
        expires_at: at(86_400_000),
        in_flight_until: None,
    };
    write(&*store, {
        let req = req.clone();
        move |tx| {
            Box::pin(async move {
                tx.put_request(&req).await?;
                apply(tx, &created, at(0)).await?;
                Ok(())
            })
        }
    })
    .await;
    req = approved;
    write(&*store, {
        let (req, g, d, session, idem) = (
            req.clone(),
            g.clone(),
            d.clone(),
            session.clone(),
            idem.clone(),
        );
        move |tx| {
            Box::pin(async move {
                tx.put_request(&req).await?;
                apply(tx, &decided, at(1000)).await?;
                tx.put_grant(&g).await?;
                apply(tx, &issued, at(1000)).await?;
                tx.put_delivery(&d, None).await?;
                tx.put_session(&session, at(1000)).await?;
                tx.put_idempotency(&idem, at(1000)).await?;
                tx.put_token("tok_r", ALICE, at(1000)).await?;
                tx.put_callback_secret("req_r", "whsec_r").await?;
                Ok(())
            })
        }
    })
    .await;
    let events = verified_chain(&*store).await;
    let head = store.head();
    assert_eq!(head, head_of(&events));
    let due = store.due_jobs(at(90_000_000), 10).await.expect("due jobs");

    // Act
    store.close().await;
    let refused = try_write(&*store, |tx| {
        Box::pin(async move { Ok(tx.schedule(TimerKind::Reconcile, "sweep", at(0)).await?) })
    })
    .await;
    assert!(matches!(refused, Err(Failed::Store(_))), "{refused:?}");
    assert!(store.ping().await.is_err(), "a closed store answers ping");
    drop(store);
    let store = db.open().await;

    // Assert
    store.ping().await.expect("ping");
    assert_eq!(store.head(), head);
    assert_eq!(verified_chain(&*store).await, events);
    assert_eq!(
        store.request("req_r").await.expect("read"),
        Some(req.clone())
    );
    assert_eq!(store.grant("grant_r").await.expect("read"), Some(g.clone()));
    assert_eq!(store.deliveries("req_r").await.expect("read"), vec![d]);
    assert_eq!(
        store.session("sess_r", at(1000)).await.expect("read"),
        Some(session)
    );
    assert_eq!(
        store.token("tok_r").await.expect("read"),
        Some(TokenRow {
            subject: ALICE.into()
        })
    );
    assert_eq!(
        store.callback_secret("req_r").await.expect("read"),
        Some("whsec_r".into())
    );
    assert_eq!(
        store.due_jobs(at(90_000_000), 10).await.expect("due jobs"),
        due
    );
    let seen = write(&*store, |tx| {
        Box::pin(async move {
            Ok((
                tx.request("req_r").await?,
                tx.idempotency(ALICE, "key_r", at(2000)).await?,
                tx.scheduled(TimerKind::GrantExpiry, "grant_r").await?,
                tx.scheduled(TimerKind::RequestExpiry, "req_r").await?,
            ))
        })
    })
    .await;
    assert_eq!(seen, (Some(req), Some(idem), g.expires_at, None));

    // The chain goes on from where it was.
    let e = Event::grant(EventKind::GrantExpiring, "grant_r", None);
    let seq = write(&*store, move |tx| {
        Box::pin(async move { Ok(tx.append(&e, at(5000)).await?) })
    })
    .await;
    assert_eq!(seq, head.seq + 1);
    let after = verified_chain(&*store).await;
    assert_eq!(after.len() as i64, seq);
    assert_eq!(after[..events.len()], events[..]);
    assert_eq!(store.head(), head_of(&after));
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.head(), head_of(&after));
    store.close().await;
}
