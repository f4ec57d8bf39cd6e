//! Many writers at once: the audit chain stays one gapless, verifiable chain, and two
//! decisions on one request give one outcome, on one store handle and across two (two
//! replicas on one database).

use std::sync::Arc;

use domain::{Decision, Event, EventKind, RequestState};
use store::Store;

use crate::Db;
use crate::fixtures::{ALICE, REVIEWERS, World, apply, at, event_of, reviewer};
use crate::harness::{Failed, head_of, is_on_chain, refuse, try_write, verified_chain, write};

/// Write jobs sent at once.
const TASKS: usize = 200;

/// Issue 14 item 1 ("the audit chain appended correctly under concurrent transactions"):
/// 200 write jobs sent at once through one handle, each appending one to three events, leave
/// a chain numbered 1..=N without a gap that the audit verifier accepts, each job's events
/// consecutive and stored as written, and `head()` at its last event.
pub async fn chain_gapless_under_concurrent_jobs(db: &Db) {
    let store = db.open().await;
    concurrent_appends(std::slice::from_ref(&store)).await;
    let events = verified_chain(&*store).await;
    assert_eq!(store.head(), head_of(&events));
}

/// Issue 14 item 1, two replicas: the same 200 jobs spread over two handles on one database
/// still make one gapless chain that verifies. Each handle's `head()` is a point of that
/// chain, and the handle that wrote last reports the last event.
pub async fn chain_gapless_across_two_handles(db: &Db) {
    let a = db.open().await;
    let b = db.open().await;
    concurrent_appends(&[a.clone(), b.clone()]).await;
    for (name, last) in [("a", &a), ("b", &b)] {
        let seq = append_one(&**last, &format!("last_{name}")).await;
        let events = verified_chain(&**last).await;
        assert_eq!(seq, events.len() as i64);
        assert_eq!(last.head(), head_of(&events), "handle {name} wrote last");
        for h in [&a, &b] {
            assert!(is_on_chain(&h.head(), &events), "{:?}", h.head());
        }
    }
}

async fn append_one(store: &dyn Store, tag: &str) -> i64 {
    let e = Event::request(EventKind::CommentAdded, tag, None);
    write(store, move |tx| {
        Box::pin(async move { Ok(tx.append(&e, at(999_999)).await?) })
    })
    .await
}

/// Sends `TASKS` jobs at once, task `i` through `stores[i % len]`, appending `i % 3 + 1`
/// events; then checks the chain holds exactly those events, each job's in one run.
async fn concurrent_appends(stores: &[Arc<dyn Store>]) {
    let mut tasks = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let store = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let events: Vec<Event> = (0..i % 3 + 1)
                .map(|n| {
                    Event::request(EventKind::CommentAdded, &format!("req_{i}"), None)
                        .with("task", i)
                        .with("n", n)
                })
                .collect();
            let written = events.clone();
            let seqs = try_write(&*store, move |tx| {
                Box::pin(async move {
                    let mut seqs = vec![];
                    for e in &events {
                        seqs.push(tx.append(e, at(i as i64)).await?);
                    }
                    Ok(seqs)
                })
            })
            .await;
            (seqs, written)
        }));
    }
    let mut jobs = vec![];
    let mut failed = vec![];
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.expect("task") {
            (Ok(seqs), written) => jobs.push((seqs, written)),
            (Err(e), _) => failed.push(format!("job {i}: {e:?}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {TASKS} jobs failed; the first: {}",
        failed.len(),
        failed[0]
    );

    let events = verified_chain(&*stores[0]).await;
    let total: usize = jobs.iter().map(|(s, _)| s.len()).sum();
    assert_eq!(events.len(), total, "every committed event, and no other");
    for (i, (seqs, written)) in jobs.iter().enumerate() {
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "job {i}'s events are not consecutive: {seqs:?}"
        );
        for (seq, e) in seqs.iter().zip(written) {
            let stored = &events[usize::try_from(*seq - 1).expect("seq ≥ 1")];
            assert_eq!(stored.seq, *seq);
            assert_eq!(event_of(stored), *e, "event {seq} of job {i}");
            assert_eq!(stored.at, at(i as i64).millis());
        }
    }
}

/// Rounds of the race, one request each.
const ROUNDS: usize = 4;

/// Issue 14 item 1 ("two replicas deciding at once produce exactly one outcome"): twenty
/// reviewers decide one pending request at once, each job reading it and deciding only while
/// it is still pending. Exactly one job commits; every other one sees the decided request
/// and refuses. The request holds one review and the log one review and one outcome. Four
/// rounds, one request each.
pub async fn one_outcome_under_concurrent_decisions(db: &Db) {
    let store = db.open().await;
    let w = Arc::new(World::new());
    for round in 0..ROUNDS {
        decide_at_once(&w, std::slice::from_ref(&store), round).await;
    }
}

/// Issue 14 item 1, two replicas: the same race with the reviewers spread over two handles
/// on one database, each round's request created through the handles in turn.
pub async fn one_outcome_across_two_handles(db: &Db) {
    let stores = [db.open().await, db.open().await];
    let w = Arc::new(World::new());
    for round in 0..ROUNDS {
        decide_at_once(&w, &stores, round).await;
    }
}

async fn decide_at_once(w: &Arc<World>, stores: &[Arc<dyn Store>], round: usize) {
    // Arrange: a pending request, created (and so known) through one handle; every handle
    // has read it once.
    const DECIDERS: usize = 20;
    const { assert!(DECIDERS <= REVIEWERS) };
    let id = format!("req_race_{round}");
    let (req, created) = w.request(&id, ALICE, "db", at(0));
    write(&*stores[round % stores.len()], move |tx| {
        Box::pin(async move {
            tx.put_request(&req).await?;
            apply(tx, &created, at(0)).await?;
            Ok(())
        })
    })
    .await;
    for s in stores {
        let id = id.clone();
        let seen = write(&**s, move |tx| {
            Box::pin(async move { Ok(tx.request(&id).await?) })
        })
        .await;
        assert_eq!(seen.map(|r| r.state), Some(RequestState::Pending));
    }

    // Act: reviewer i approves when i is even and denies when it is odd.
    let mut tasks = vec![];
    for i in 0..DECIDERS {
        let store = stores[i % stores.len()].clone();
        let w = w.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let now = at(1000 + i as i64);
            try_write(&*store, move |tx| {
                Box::pin(async move {
                    let Some(mut req) = tx.request(&id).await? else {
                        return Err(refuse("no such request"));
                    };
                    if req.state != RequestState::Pending {
                        return Err(refuse("already decided"));
                    }
                    let decision = if i % 2 == 0 {
                        Decision::Approve
                    } else {
                        Decision::Deny
                    };
                    let ch = match w.review(&mut req, &reviewer(i), decision, now) {
                        Ok(ch) => ch,
                        Err(e) => return Err(refuse(e.to_string())),
                    };
                    tx.put_request(&req).await?;
                    apply(tx, &ch, now).await?;
                    Ok((reviewer(i), decision))
                })
            })
            .await
        }));
    }
    let mut outcomes = vec![];
    for t in tasks {
        outcomes.push(t.await.expect("task"));
    }

    // Assert
    let winners: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let (who, decision) = winners[0].clone();
    for o in &outcomes {
        if let Err(e) = o {
            assert!(
                matches!(e, Failed::Refused(_)),
                "a losing job must see the decided request and refuse, not fail: {e:?}"
            );
        }
    }
    let stored = stores[0]
        .request(&id)
        .await
        .expect("read")
        .expect("the request");
    let want = match decision {
        Decision::Approve => RequestState::Approved,
        Decision::Deny => RequestState::Denied,
    };
    assert_eq!(stored.state, want);
    let reviews: Vec<_> = stored.steps.iter().flat_map(|s| &s.reviews).collect();
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(reviews[0].by, who);

    let events: Vec<Event> = verified_chain(&*stores[0])
        .await
        .iter()
        .map(event_of)
        .filter(|e| e.request.as_deref() == Some(id.as_str()))
        .collect();
    let count = |kind: EventKind| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count(EventKind::ReviewRecorded), 1);
    assert_eq!(
        count(EventKind::RequestApproved) + count(EventKind::RequestDenied),
        1
    );
    let review = events
        .iter()
        .find(|e| e.kind == EventKind::ReviewRecorded)
        .expect("the review");
    assert_eq!(review.actor.as_deref(), Some(who.as_str()));
}
