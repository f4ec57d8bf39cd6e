//! Claims on due jobs and callback deliveries: one taker at a time, across replicas, until
//! the claim runs out (issue 14 item 1, PRODUCT.md §6 "any replica can die at any moment
//! without losing or doubling work").

use std::sync::Arc;

use domain::{Attempt, Delivery, RetryPlan, Span, TimerKind, Timestamp};
use store::{DueJob, Store};

use crate::Db;
use crate::fixtures::{NO_LANE_LIMIT, at, delivery};
use crate::harness::{refuse, try_write, write};

/// Claims tried at once on one job.
const CLAIMERS: usize = 20;

async fn schedule(store: &dyn Store, kind: TimerKind, key: &str, due: Timestamp) {
    let key = key.to_owned();
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.schedule(kind, &key, due).await?) })
    })
    .await;
}

async fn claim(
    store: &dyn Store,
    kind: TimerKind,
    key: &str,
    now: Timestamp,
    until: Timestamp,
) -> bool {
    let key = key.to_owned();
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.claim(kind, &key, now, until).await?) })
    })
    .await
}

async fn claim_delivery(
    store: &dyn Store,
    id: &str,
    now: Timestamp,
    until: Timestamp,
) -> Option<Delivery> {
    claim_delivery_within(store, id, now, until, NO_LANE_LIMIT).await
}

/// Claims a delivery unless its receiver already has `per_lane` live claims.
async fn claim_delivery_within(
    store: &dyn Store,
    id: &str,
    now: Timestamp,
    until: Timestamp,
    per_lane: u32,
) -> Option<Delivery> {
    let id = id.to_owned();
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.claim_delivery(&id, now, until, per_lane).await?) })
    })
    .await
}

async fn put_delivery(store: &dyn Store, d: &Delivery, claimed_until: Option<Timestamp>) {
    let d = d.clone();
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.put_delivery(&d, claimed_until).await?) })
    })
    .await;
}

/// Issue 14 item 1 ("atomic claims"): twenty claims of one due job at the same moment,
/// spread over two handles on one database: exactly one wins.
pub async fn claim_has_one_winner_across_handles(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let stores = [a.clone(), b];
    schedule(&*a, TimerKind::ConnectorGrant, "grant_1", at(1000)).await;

    let mut tasks = vec![];
    for i in 0..CLAIMERS {
        let store: Arc<dyn Store> = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            claim(
                &*store,
                TimerKind::ConnectorGrant,
                "grant_1",
                at(1000),
                at(31_000),
            )
            .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.expect("task"));
    }
    assert_eq!(won, 1, "claims won");
    for s in &stores {
        assert_eq!(s.due_jobs(at(1000), 10).await.expect("due jobs"), vec![]);
    }
}

/// Issue 14 item 1 ("taken over when it lapses"): a claimed job cannot be claimed again,
/// from any handle, until its claim runs out; then another handle takes it over, and the
/// new claim holds in its turn.
pub async fn claim_lapses_and_is_taken_over(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let kind = TimerKind::GrantExpiry;
    schedule(&*a, kind, "grant_2", at(1000)).await;

    assert!(claim(&*a, kind, "grant_2", at(1000), at(31_000)).await);
    assert!(!claim(&*a, kind, "grant_2", at(2000), at(32_000)).await);
    assert!(!claim(&*b, kind, "grant_2", at(30_999), at(60_000)).await);
    assert!(claim(&*b, kind, "grant_2", at(31_001), at(61_000)).await);
    assert!(!claim(&*a, kind, "grant_2", at(60_000), at(90_000)).await);
    assert!(claim(&*a, kind, "grant_2", at(61_001), at(91_000)).await);
}

/// Issue 14 item 1: a job that is not due yet, was removed, or never existed cannot be
/// claimed; a removed and rescheduled one can, once due.
pub async fn claim_needs_a_due_job(db: &Db) {
    let store = db.open().await;
    let kind = TimerKind::RequestExpiry;
    schedule(&*store, kind, "later", at(5000)).await;
    assert!(!claim(&*store, kind, "later", at(4999), at(9000)).await);
    assert!(claim(&*store, kind, "later", at(5000), at(9000)).await);

    schedule(&*store, kind, "gone", at(1000)).await;
    write(&*store, |tx| {
        Box::pin(async move {
            Ok(tx
                .unschedule(TimerKind::RequestExpiry, "gone", at(1000))
                .await?)
        })
    })
    .await;
    assert!(!claim(&*store, kind, "gone", at(2000), at(9000)).await);
    assert!(!claim(&*store, kind, "never", at(2000), at(9000)).await);
    // Same key, another kind: a different job.
    assert!(!claim(&*store, TimerKind::GrantExpiry, "later", at(6000), at(9000)).await);

    schedule(&*store, kind, "gone", at(3000)).await;
    assert!(claim(&*store, kind, "gone", at(3000), at(9000)).await);
}

/// Issue 14 item 1; PRODUCT.md §6: a claim made by a job that then refuses is not kept.
pub async fn refused_claim_is_not_kept(db: &Db) {
    let store = db.open().await;
    schedule(&*store, TimerKind::Repair, "grant_3", at(1000)).await;
    let r = try_write(&*store, |tx| {
        Box::pin(async move {
            let won = tx
                .claim(TimerKind::Repair, "grant_3", at(1000), at(31_000))
                .await?;
            if won {
                Err(refuse("changed my mind"))
            } else {
                Ok(())
            }
        })
    })
    .await;
    assert!(r.is_err(), "the first claim must win: {r:?}");
    assert!(claim(&*store, TimerKind::Repair, "grant_3", at(1000), at(31_000)).await);
}

/// Issue 14 item 1: `due_jobs` lists the due, unclaimed jobs by due time and leaves out
/// claimed ones; `next_due` reports the earliest later moment a job comes due or a claim
/// (of a job or a delivery) runs out.
pub async fn claimed_jobs_leave_due_jobs_and_next_due_reports_expiry(db: &Db) {
    let store = db.open().await;
    assert_eq!(store.next_due(at(0)).await.expect("next due"), None);
    schedule(&*store, TimerKind::GrantExpiry, "x", at(1000)).await;
    schedule(&*store, TimerKind::RequestExpiry, "y", at(500)).await;
    schedule(&*store, TimerKind::GrantNotice, "z", at(9000)).await;
    let job = |kind, key: &str, ms| DueJob {
        kind,
        key: key.to_owned(),
        due_at: at(ms),
    };
    assert_eq!(
        store.due_jobs(at(1000), 10).await.expect("due jobs"),
        vec![
            job(TimerKind::RequestExpiry, "y", 500),
            job(TimerKind::GrantExpiry, "x", 1000)
        ]
    );
    assert_eq!(
        store.due_jobs(at(1000), 1).await.expect("due jobs"),
        vec![job(TimerKind::RequestExpiry, "y", 500)]
    );
    assert_eq!(
        store.next_due(at(0)).await.expect("next due"),
        Some(at(500))
    );

    assert!(claim(&*store, TimerKind::GrantExpiry, "x", at(1000), at(4000)).await);
    assert_eq!(
        store.due_jobs(at(1000), 10).await.expect("due jobs"),
        vec![job(TimerKind::RequestExpiry, "y", 500)]
    );
    assert_eq!(
        store.next_due(at(1000)).await.expect("next due"),
        Some(at(4000))
    );
    assert_eq!(
        store.due_jobs(at(4000), 10).await.expect("due jobs"),
        vec![
            job(TimerKind::RequestExpiry, "y", 500),
            job(TimerKind::GrantExpiry, "x", 1000)
        ],
        "a lapsed claim leaves the job due again"
    );
    assert_eq!(
        store.next_due(at(4000)).await.expect("next due"),
        Some(at(9000))
    );

    // A delivery's next attempt and its claim count too.
    put_delivery(&*store, &delivery("req_n", at(6000)), None).await;
    assert_eq!(
        store.next_due(at(4000)).await.expect("next due"),
        Some(at(6000))
    );
    assert!(
        claim_delivery(&*store, "msg_req_n", at(6000), at(7000))
            .await
            .is_some()
    );
    assert_eq!(
        store.next_due(at(6000)).await.expect("next due"),
        Some(at(7000))
    );
    assert_eq!(store.next_due(at(9000)).await.expect("next due"), None);
}

/// Issue 14 item 1, for callback deliveries (rule 22): twenty claims of one due delivery at
/// once over two handles give one winner; `due_deliveries` leaves it out while claimed; the
/// claim lapses and is taken over; a delivery not due yet, finished, or written as claimed
/// cannot be claimed.
pub async fn delivery_claim_has_one_winner_and_lapses(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let stores = [a.clone(), b.clone()];
    let d = delivery("req_d", at(1000));
    put_delivery(&*a, &d, None).await;
    assert_eq!(
        a.due_deliveries(at(1000), NO_LANE_LIMIT, 10)
            .await
            .expect("due"),
        vec![d.id.clone()]
    );

    let mut tasks = vec![];
    for i in 0..CLAIMERS {
        let store: Arc<dyn Store> = stores[i % 2].clone();
        let id = d.id.clone();
        tasks.push(tokio::spawn(async move {
            claim_delivery(&*store, &id, at(1000), at(31_000)).await
        }));
    }
    let mut winners = vec![];
    for t in tasks {
        winners.extend(t.await.expect("task"));
    }
    assert_eq!(
        winners,
        vec![d.clone()],
        "one claim wins, with the delivery"
    );
    for s in &stores {
        assert_eq!(
            s.due_deliveries(at(1000), NO_LANE_LIMIT, 10)
                .await
                .expect("due"),
            Vec::<String>::new()
        );
    }
    assert_eq!(
        claim_delivery(&*b, &d.id, at(30_999), at(60_000)).await,
        None
    );
    assert_eq!(
        claim_delivery(&*b, &d.id, at(31_001), at(61_000)).await,
        Some(d.clone())
    );
    assert_eq!(
        claim_delivery(&*a, &d.id, at(40_000), at(70_000)).await,
        None
    );

    // Not due yet.
    let later = delivery("req_later", at(5000));
    put_delivery(&*a, &later, None).await;
    assert_eq!(
        claim_delivery(&*a, &later.id, at(4999), at(9000)).await,
        None
    );
    // Written as claimed by its worker.
    let held = delivery("req_held", at(1000));
    put_delivery(&*a, &held, Some(at(20_000))).await;
    assert_eq!(
        claim_delivery(&*b, &held.id, at(19_999), at(30_000)).await,
        None
    );
    assert!(
        claim_delivery(&*b, &held.id, at(20_001), at(30_000))
            .await
            .is_some()
    );
    // Finished: delivered.
    let mut done = delivery("req_done", at(1000));
    done.attempted(
        Attempt {
            at: at(1000),
            status: Some(200),
            error: None,
            ms: 5,
        },
        RetryPlan {
            delay_ms: 1000,
            retry_after_ms: None,
            window: Span::from_secs(3600),
        },
    );
    put_delivery(&*a, &done, None).await;
    assert_eq!(
        claim_delivery(&*a, &done.id, at(9000), at(19_000)).await,
        None
    );
    assert_eq!(
        claim_delivery(&*a, "msg_nothing", at(9000), at(19_000)).await,
        None
    );
}

/// Issue 14 item 1 ("any replica can die at any moment"): a replica that starts (opens the
/// database) does not void the claims other replicas hold.
pub async fn opening_a_handle_keeps_other_claims(db: &Db) {
    let a = db.open().await;
    schedule(&*a, TimerKind::ConnectorRevoke, "grant_4", at(1000)).await;
    put_delivery(&*a, &delivery("req_k", at(1000)), None).await;
    assert!(
        claim(
            &*a,
            TimerKind::ConnectorRevoke,
            "grant_4",
            at(1000),
            at(31_000)
        )
        .await
    );
    assert!(
        claim_delivery(&*a, "msg_req_k", at(1000), at(31_000))
            .await
            .is_some()
    );

    let b = db.open().await;
    assert!(
        !claim(
            &*b,
            TimerKind::ConnectorRevoke,
            "grant_4",
            at(2000),
            at(32_000)
        )
        .await
    );
    assert_eq!(
        claim_delivery(&*b, "msg_req_k", at(2000), at(32_000)).await,
        None
    );
    assert_eq!(b.due_jobs(at(2000), 10).await.expect("due jobs"), vec![]);
}

async fn holds(store: &dyn Store, kind: TimerKind, key: &str, now: Timestamp) -> bool {
    let key = key.to_owned();
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.holds(kind, &key, now).await?) })
    })
    .await
}

async fn claimed(store: &dyn Store, kind: TimerKind, key: &str, now: Timestamp) -> bool {
    let key = key.to_owned();
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.claimed(kind, &key, now).await?) })
    })
    .await
}

async fn holds_delivery(store: &dyn Store, id: &str, now: Timestamp) -> bool {
    let id = id.to_owned();
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.holds_delivery(&id, now).await?) })
    })
    .await
}

async fn renew(store: &dyn Store, now: Timestamp, until: Timestamp) {
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.renew(now, until).await?) })
    })
    .await;
}

async fn unschedule(store: &dyn Store, kind: TimerKind, key: &str, now: Timestamp) {
    let key = key.to_owned();
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.unschedule(kind, &key, now).await?) })
    })
    .await;
}

async fn scheduled(store: &dyn Store, kind: TimerKind, key: &str) -> Option<Timestamp> {
    let key = key.to_owned();
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.scheduled(kind, &key).await?) })
    })
    .await
}

/// Issue 14 item 1 ("a claim names its holder and expiry"): every handle is a holder of its
/// own; a claim is held by the handle that took it and by no other, and anyone can see that
/// the job is claimed, until the claim runs out.
pub async fn claim_names_its_holder(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    assert!(!a.holder().is_empty());
    assert_ne!(a.holder(), b.holder(), "each handle is its own holder");
    let kind = TimerKind::ConnectorGrant;
    schedule(&*a, kind, "grant_h", at(1000)).await;
    assert!(!claimed(&*a, kind, "grant_h", at(1000)).await);
    assert!(!holds(&*a, kind, "grant_h", at(1000)).await);

    assert!(claim(&*a, kind, "grant_h", at(1000), at(31_000)).await);
    assert!(holds(&*a, kind, "grant_h", at(2000)).await);
    assert!(!holds(&*b, kind, "grant_h", at(2000)).await);
    assert!(claimed(&*a, kind, "grant_h", at(2000)).await);
    assert!(claimed(&*b, kind, "grant_h", at(2000)).await);

    assert!(!holds(&*a, kind, "grant_h", at(31_001)).await);
    assert!(!claimed(&*b, kind, "grant_h", at(31_001)).await);
    assert!(!claimed(&*b, kind, "grant_none", at(2000)).await);
}

/// Issue 14 item 1 ("renewed by a heartbeat"): a holder's `renew` extends every claim it
/// holds that is live (jobs and deliveries), so that no other handle can take them; a claim
/// that had already lapsed is not revived, and another holder's claims are not touched.
pub async fn renewal_extends_live_claims_of_its_holder(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let kind = TimerKind::GrantExpiry;
    for key in ["j1", "j2", "j3"] {
        schedule(&*a, kind, key, at(1000)).await;
    }
    let d = delivery("req_renew", at(1000));
    put_delivery(&*a, &d, None).await;
    assert!(claim(&*a, kind, "j1", at(1000), at(31_000)).await);
    assert!(claim(&*a, kind, "j2", at(1000), at(10_000)).await);
    assert!(
        claim_delivery(&*a, &d.id, at(1000), at(31_000))
            .await
            .is_some()
    );
    assert!(claim(&*b, kind, "j3", at(1000), at(31_000)).await);

    // Act: the heartbeat at 20 s.
    renew(&*a, at(20_000), at(60_000)).await;

    // Assert
    assert!(
        !claim(&*b, kind, "j1", at(40_000), at(70_000)).await,
        "renewed"
    );
    assert!(holds(&*a, kind, "j1", at(40_000)).await);
    assert_eq!(
        claim_delivery(&*b, &d.id, at(40_000), at(70_000)).await,
        None
    );
    assert!(holds_delivery(&*a, &d.id, at(40_000)).await);
    assert!(
        !holds(&*a, kind, "j2", at(20_000)).await,
        "lapsed before the heartbeat"
    );
    assert!(claim(&*b, kind, "j2", at(20_001), at(70_000)).await);
    assert!(
        claim(&*a, kind, "j3", at(31_001), at(70_000)).await,
        "another holder's claim is not renewed"
    );
    assert!(
        claim(&*b, kind, "j1", at(60_001), at(90_000)).await,
        "lapses in turn"
    );
    assert!(!holds(&*a, kind, "j1", at(60_001)).await);
}

/// Issue 14 item 1 ("a job's completion by a holder whose lease lapsed is refused"): once a
/// claim has lapsed and another handle has taken the job over, the first holder no longer
/// holds it, so its completion (done as the engine does it: only while it `holds` the job)
/// writes nothing; the new holder completes it. The same for a delivery.
pub async fn lapsed_holder_cannot_complete(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let kind = TimerKind::ConnectorGrant;
    schedule(&*a, kind, "grant_l", at(1000)).await;
    assert!(claim(&*a, kind, "grant_l", at(1000), at(31_000)).await);
    assert!(claim(&*b, kind, "grant_l", at(31_001), at(61_000)).await);
    assert!(!holds(&*a, kind, "grant_l", at(31_001)).await);
    assert!(holds(&*b, kind, "grant_l", at(31_001)).await);

    let complete = |store: Arc<dyn Store>, now: Timestamp| async move {
        try_write(&*store, move |tx| {
            Box::pin(async move {
                if !tx.holds(TimerKind::ConnectorGrant, "grant_l", now).await? {
                    return Err(refuse("lease lapsed"));
                }
                tx.unschedule(TimerKind::ConnectorGrant, "grant_l", now)
                    .await?;
                let e = domain::Event::grant(domain::EventKind::GrantActivated, "grant_l", None);
                Ok(tx.append(&e, now).await?)
            })
        })
        .await
    };
    assert_eq!(
        complete(a.clone(), at(35_000)).await,
        Err(crate::harness::Failed::Refused("lease lapsed".into()))
    );
    assert_eq!(scheduled(&*a, kind, "grant_l").await, Some(at(1000)));
    assert_eq!(a.events(0, 10).await.expect("events"), vec![]);
    assert_eq!(complete(b.clone(), at(36_000)).await, Ok(1));
    assert_eq!(scheduled(&*a, kind, "grant_l").await, None);

    let d = delivery("req_l", at(1000));
    put_delivery(&*a, &d, None).await;
    assert!(
        claim_delivery(&*a, &d.id, at(1000), at(31_000))
            .await
            .is_some()
    );
    assert!(holds_delivery(&*a, &d.id, at(30_000)).await);
    assert!(!holds_delivery(&*b, &d.id, at(30_000)).await);
    assert!(
        claim_delivery(&*b, &d.id, at(31_001), at(61_000))
            .await
            .is_some()
    );
    assert!(!holds_delivery(&*a, &d.id, at(31_001)).await);
    assert!(holds_delivery(&*b, &d.id, at(31_001)).await);
}

/// Issue 14 item 1 and rule 17 ("a revoke waits for a grant call claimed on any replica"):
/// removing a job that another holder has a live claim on leaves it in place (that holder
/// removes it when it records the result), and `claimed` tells the remover so; once the claim
/// lapses the job is removed. A job the removing transaction claimed, or found it holds, is
/// removed at once, and so is one nobody claimed.
pub async fn unschedule_spares_another_holders_live_claim(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let kind = TimerKind::ConnectorGrant;
    for key in ["held_by_b", "claimed_here", "held_here", "free"] {
        schedule(&*a, kind, key, at(1000)).await;
    }
    assert!(claim(&*b, kind, "held_by_b", at(1000), at(31_000)).await);
    assert!(claim(&*a, kind, "held_here", at(1000), at(31_000)).await);

    assert!(claimed(&*a, kind, "held_by_b", at(10_000)).await);
    unschedule(&*a, kind, "held_by_b", at(10_000)).await;
    assert_eq!(scheduled(&*a, kind, "held_by_b").await, Some(at(1000)));
    unschedule(&*a, kind, "held_by_b", at(31_001)).await;
    assert_eq!(
        scheduled(&*a, kind, "held_by_b").await,
        None,
        "the claim lapsed"
    );

    write(&*a, move |tx| {
        Box::pin(async move {
            let won = tx.claim(kind, "claimed_here", at(2000), at(32_000)).await?;
            tx.unschedule(kind, "claimed_here", at(2000)).await?;
            let held = tx.holds(kind, "held_here", at(2000)).await?;
            tx.unschedule(kind, "held_here", at(2000)).await?;
            tx.unschedule(kind, "free", at(2000)).await?;
            Ok(won && held)
        })
    })
    .await
    .then_some(())
    .expect("the job claims one and holds the other");
    for key in ["claimed_here", "held_here", "free"] {
        assert_eq!(scheduled(&*b, kind, key).await, None, "{key}");
    }
}

/// Issue 14 item 2 ("per-receiver callback limits counted across replicas"): with a limit of
/// two calls per receiver, two live claims on one receiver (taken through different handles)
/// stop a third, from either handle, and `due_deliveries` leaves that receiver out while
/// listing the others; a job's own claims count within it; a lapsed claim frees a place.
pub async fn per_receiver_limit_counts_across_handles(db: &Db) {
    const LIMIT: u32 = 2;
    let a = db.open().await;
    let b = db.open().await;
    // Five deliveries to one receiver, one to another.
    let busy: Vec<Delivery> = (1..=5)
        .map(|i| delivery(&format!("req_busy_{i}"), at(1000)))
        .collect();
    let mut other = delivery("req_other", at(1000));
    other.url = "https://other.example.net/outcomes".to_owned();
    assert!(busy.iter().all(|d| d.lane() == busy[0].lane()));
    assert_ne!(other.lane(), busy[0].lane());
    for d in busy.iter().chain([&other]) {
        put_delivery(&*a, d, None).await;
    }
    let ids: Vec<String> = busy.iter().map(|d| d.id.clone()).collect();

    assert!(
        claim_delivery_within(&*a, &ids[0], at(1000), at(31_000), LIMIT)
            .await
            .is_some()
    );
    assert!(
        claim_delivery_within(&*b, &ids[1], at(1000), at(21_000), LIMIT)
            .await
            .is_some()
    );
    for s in [&a, &b] {
        assert_eq!(
            claim_delivery_within(&**s, &ids[2], at(2000), at(32_000), LIMIT).await,
            None,
            "the receiver has its two calls"
        );
        assert_eq!(
            s.due_deliveries(at(2000), LIMIT, 10).await.expect("due"),
            vec![other.id.clone()]
        );
    }
    assert!(
        claim_delivery_within(&*b, &other.id, at(2000), at(32_000), LIMIT)
            .await
            .is_some(),
        "another receiver is not held back"
    );

    // The claim taken through b lapses at 21 s: one place frees up, and one job may take it
    // but not two.
    let (first, second) = write(&*b, {
        let (x, y) = (ids[2].clone(), ids[3].clone());
        move |tx| {
            Box::pin(async move {
                let first = tx.claim_delivery(&x, at(21_001), at(50_000), LIMIT).await?;
                let second = tx.claim_delivery(&y, at(21_001), at(50_000), LIMIT).await?;
                Ok((first.is_some(), second.is_some()))
            })
        }
    })
    .await;
    assert_eq!((first, second), (true, false), "a job's own claims count");
    assert_eq!(
        a.due_deliveries(at(21_001), LIMIT, 10).await.expect("due"),
        Vec::<String>::new()
    );
    let mut due = a.due_deliveries(at(31_001), LIMIT, 10).await.expect("due");
    due.sort();
    assert_eq!(
        due,
        vec![
            ids[0].clone(),
            ids[1].clone(),
            ids[3].clone(),
            ids[4].clone()
        ],
        "a's claim lapsed too: the receiver has one call running"
    );
}

/// Rule 35 (a Slack interaction is stored, then acted on by one process): a job written
/// already held (`schedule_held`) is not due to anyone while its holder renews the claim,
/// the holder sees that it holds it, and another handle takes it over once the claim lapses.
pub async fn held_job_is_taken_over_only_when_its_claim_lapses(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    let kind = TimerKind::SlackInteraction;
    write(&*a, move |tx| {
        Box::pin(async move {
            Ok(tx
                .schedule_held(kind, "trigger_1", at(1000), at(5000))
                .await?)
        })
    })
    .await;
    for s in [&a, &b] {
        assert_eq!(s.due_jobs(at(4000), 10).await.expect("due jobs"), vec![]);
    }
    let holds = write(&*a, move |tx| {
        Box::pin(async move { Ok(tx.holds(kind, "trigger_1", at(4000)).await?) })
    })
    .await;
    assert!(holds, "the writer holds the job it wrote held");
    assert!(!claim(&*b, kind, "trigger_1", at(4000), at(8000)).await);
    assert_eq!(
        b.due_jobs(at(5001), 10).await.expect("due jobs").len(),
        1,
        "due once the claim lapsed"
    );
    assert!(claim(&*b, kind, "trigger_1", at(5001), at(9000)).await);
}
