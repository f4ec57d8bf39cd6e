//! A write job is one transaction: all of it commits, or none of it (PRODUCT.md §6), and it
//! reads its own writes before they commit.

use domain::{GrantState, RequestState, TimerKind};
use store::{IdempotencyRow, SessionRow, TokenRow};

use crate::Db;
use crate::fixtures::{ALICE, World, apply, at, delivery, event_of, grant, revoked_grant};
use crate::harness::{Failed, Seen, head_of, refuse, try_write, verified_chain, write};

fn idempotency(subject: &str, key: &str, request: &str, expires: i64) -> IdempotencyRow {
    IdempotencyRow {
        subject: subject.to_owned(),
        key: key.to_owned(),
        body_hash: format!("hash_of_{key}"),
        request_id: request.to_owned(),
        response: None,
        expires_at: at(expires),
        in_flight_until: None,
    }
}

fn session(hash: &str, subject: &str, expires: i64) -> SessionRow {
    SessionRow {
        hash: hash.to_owned(),
        subject: subject.to_owned(),
        csrf: format!("csrf_{hash}"),
        data: r#"{"groups":[]}"#.to_owned(),
        created_at: at(0),
        expires_at: at(expires),
    }
}

/// Issue 14 item 1; PRODUCT.md §6 "Every state change and its audit event and outbox rows are
/// written in one transaction": a job's request, grant, events, jobs, delivery, idempotency
/// record, session, token and callback secret are all there once it returns, through the
/// store's reads and through a later transaction.
pub async fn job_writes_commit_together(db: &Db) {
    // Arrange
    let store = db.open().await;
    let w = World::new();
    let now = at(0);
    let (req, created) = w.request("req_a", ALICE, "db", now);
    let (g, issued) = grant("grant_a", ALICE, "db", false, now);
    let d = delivery("req_a", now);
    let idem = idempotency(ALICE, "key_a", "req_a", 86_400_000);
    let sess = session("sess_a", ALICE, 3_600_000);

    // Act
    let seqs = write(&*store, {
        let (req, g, d, idem, sess) = (
            req.clone(),
            g.clone(),
            d.clone(),
            idem.clone(),
            sess.clone(),
        );
        let (created, issued) = (created.clone(), issued.clone());
        move |tx| {
            Box::pin(async move {
                tx.put_request(&req).await?;
                let mut seqs = apply(tx, &created, now).await?;
                tx.put_grant(&g).await?;
                seqs.extend(apply(tx, &issued, now).await?);
                tx.put_delivery(&d, None).await?;
                tx.put_idempotency(&idem, now).await?;
                tx.put_session(&sess, now).await?;
                tx.put_token("token_hash_a", ALICE, now).await?;
                tx.put_callback_secret("req_a", "secret_a").await?;
                Ok(seqs)
            })
        }
    })
    .await;

    // Assert: through the store's reads.
    assert_eq!(
        store.request("req_a").await.expect("read"),
        Some(req.clone())
    );
    assert_eq!(store.grant("grant_a").await.expect("read"), Some(g.clone()));
    let events = verified_chain(&*store).await;
    let written: Vec<_> = created
        .events
        .iter()
        .chain(&issued.events)
        .cloned()
        .collect();
    assert_eq!(seqs, (1..=written.len() as i64).collect::<Vec<_>>());
    assert_eq!(events.iter().map(event_of).collect::<Vec<_>>(), written);
    assert!(events.iter().all(|e| e.at == now.millis()));
    assert_eq!(store.head(), head_of(&events));
    let due = store.due_jobs(at(90_000_000), 100).await.expect("due jobs");
    let keys: Vec<_> = due
        .iter()
        .map(|j| (j.kind, j.key.as_str(), j.due_at))
        .collect();
    assert_eq!(
        keys,
        vec![
            (
                TimerKind::GrantExpiry,
                "grant_a",
                g.expires_at.expect("active")
            ),
            (TimerKind::RequestExpiry, "req_a", req.pending_until),
        ]
    );
    assert_eq!(
        store.deliveries("req_a").await.expect("read"),
        vec![d.clone()]
    );
    assert_eq!(
        store.token("token_hash_a").await.expect("read"),
        Some(TokenRow {
            subject: ALICE.into()
        })
    );
    assert_eq!(
        store.session("sess_a", now).await.expect("read"),
        Some(sess)
    );
    assert_eq!(
        store.callback_secret("req_a").await.expect("read"),
        Some("secret_a".to_owned())
    );

    // Assert: through a later transaction.
    let seen = write(&*store, move |tx| {
        Box::pin(async move {
            Ok((
                tx.request("req_a").await?,
                tx.grant("grant_a").await?,
                tx.scheduled(TimerKind::RequestExpiry, "req_a").await?,
                tx.delivery(&domain::Delivery::id_for("req_a")).await?,
                tx.idempotency(ALICE, "key_a", now).await?,
            ))
        })
    })
    .await;
    assert_eq!(
        seen,
        (
            Some(req.clone()),
            Some(g),
            Some(req.pending_until),
            Some(d),
            Some(idem)
        )
    );
}

/// Issue 14 item 1; PRODUCT.md §6: a job that refuses leaves nothing at all (no request,
/// grant, event, job, delivery, idempotency record, session, token or secret), and does not
/// take a place in the audit chain, while the jobs that succeed beside it commit.
pub async fn refused_job_leaves_nothing(db: &Db) {
    // Arrange
    let store = db.open().await;
    let w = std::sync::Arc::new(World::new());
    let now = at(0);

    // Act: one refusing job among ten that succeed, all sent at once.
    let mut tasks = vec![];
    for i in 0..11 {
        let store = store.clone();
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("req_{i}");
            let (req, created) = w.request(&id, ALICE, "db", now);
            let refuses = i == 5;
            try_write(&*store, move |tx| {
                Box::pin(async move {
                    tx.put_request(&req).await?;
                    let seqs = apply(tx, &created, now).await?;
                    if refuses {
                        let (g, issued) = grant("grant_refused", ALICE, "db", true, now);
                        tx.put_grant(&g).await?;
                        apply(tx, &issued, now).await?;
                        tx.put_delivery(&delivery(&req.id, now), None).await?;
                        tx.put_idempotency(&idempotency(ALICE, "key_r", &req.id, 9_000_000), now)
                            .await?;
                        tx.put_session(&session("sess_r", ALICE, 9_000_000), now)
                            .await?;
                        tx.put_token("token_r", ALICE, now).await?;
                        tx.put_callback_secret(&req.id, "secret_r").await?;
                        tx.signal_due();
                        return Err(refuse("the domain said no"));
                    }
                    Ok(seqs)
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
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 5 {
            assert_eq!(*outcome, Err(Failed::Refused("the domain said no".into())));
        } else {
            assert!(outcome.is_ok(), "job {i}: {outcome:?}");
        }
    }
    assert_eq!(store.request("req_5").await.expect("read"), None);
    assert_eq!(store.grant("grant_refused").await.expect("read"), None);
    assert_eq!(store.deliveries("req_5").await.expect("read"), vec![]);
    assert_eq!(store.token("token_r").await.expect("read"), None);
    assert_eq!(store.session("sess_r", now).await.expect("read"), None);
    assert_eq!(store.callback_secret("req_5").await.expect("read"), None);
    let later = write(&*store, move |tx| {
        Box::pin(async move {
            Ok((
                tx.request("req_5").await?,
                tx.grant("grant_refused").await?,
                tx.scheduled(TimerKind::RequestExpiry, "req_5").await?,
                tx.scheduled(TimerKind::ConnectorGrant, "grant_refused")
                    .await?,
                tx.idempotency(ALICE, "key_r", now).await?,
            ))
        })
    })
    .await;
    assert_eq!(later, (None, None, None, None, None));

    let events = verified_chain(&*store).await;
    assert!(
        events
            .iter()
            .map(event_of)
            .all(|e| e.request.as_deref() != Some("req_5") && e.grant.is_none()),
        "an event of the refused job was stored"
    );
    let per_request = w.request("req_x", ALICE, "db", now).1.events.len();
    assert_eq!(events.len(), 10 * per_request);
    let mut seqs: Vec<i64> = outcomes
        .into_iter()
        .flat_map(Result::unwrap_or_default)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    for i in (0..11).filter(|i| *i != 5) {
        let r = store.request(&format!("req_{i}")).await.expect("read");
        assert_eq!(r.map(|r| r.state), Some(RequestState::Pending), "req_{i}");
    }
    assert_eq!(store.head(), head_of(&events));
    let jobs = store.due_jobs(at(90_000_000), 100).await.expect("due jobs");
    assert_eq!(jobs.len(), 10);
    assert!(jobs.iter().all(|j| j.key != "req_5"));
}

/// Issue 14 item 1 (rule 18 needs it): a transaction reads what it wrote before it commits:
/// requests, grants, deliveries and idempotency records; `scheduled` after `schedule` and
/// `unschedule`; `live_grants` with this job's own grant while `activating` and `active`,
/// and without one it has just moved to `expired`.
pub async fn tx_reads_its_own_writes(db: &Db) {
    // Arrange: a committed active grant and a committed timer.
    let store = db.open().await;
    let w = World::new();
    let (old, _) = grant("grant_old", ALICE, "db", false, at(0));
    let mut old_expired = old.clone();
    old_expired
        .expire(old.expires_at.expect("active"))
        .expect("it expires");
    write(&*store, {
        let old = old.clone();
        move |tx| {
            Box::pin(async move {
                tx.put_grant(&old).await?;
                tx.schedule(TimerKind::RequestExpiry, "req_pre", at(500))
                    .await?;
                Ok(())
            })
        }
    })
    .await;

    // Act: one job writes and reads back; what it reads is noted and checked after it.
    let (req, _) = w.request("req_own", ALICE, "db", at(1000));
    let (checked, seen) = write(&*store, move |tx| {
        Box::pin(async move {
            let mut seen = Seen::default();
            tx.put_request(&req).await?;
            seen.eq("request", tx.request("req_own").await?, Some(req.clone()));

            let (mut new, _) = grant("grant_new", ALICE, "db", true, at(1000));
            seen.eq("new grant's state", new.state, GrantState::Activating);
            tx.put_grant(&new).await?;
            seen.eq("grant", tx.grant("grant_new").await?, Some(new.clone()));
            let mut live = tx.live_grants(ALICE, "db").await?;
            live.sort_by(|a, b| a.id.cmp(&b.id));
            seen.eq(
                "live grants with one activating",
                live,
                vec![new.clone(), old.clone()],
            );

            new.activated(at(2000));
            tx.put_grant(&new).await?;
            seen.eq("old grant's state", old_expired.state, GrantState::Expired);
            tx.put_grant(&old_expired).await?;
            seen.eq(
                "live grants after one expired",
                tx.live_grants(ALICE, "db").await?,
                vec![new.clone()],
            );
            seen.eq(
                "live grants elsewhere",
                tx.live_grants(ALICE, "web").await?,
                vec![],
            );

            seen.eq(
                "a committed timer",
                tx.scheduled(TimerKind::RequestExpiry, "req_pre").await?,
                Some(at(500)),
            );
            tx.unschedule(TimerKind::RequestExpiry, "req_pre", at(1000))
                .await?;
            seen.eq(
                "the timer once unscheduled",
                tx.scheduled(TimerKind::RequestExpiry, "req_pre").await?,
                None,
            );
            tx.schedule(TimerKind::RequestExpiry, "req_pre", at(700))
                .await?;
            seen.eq(
                "the timer scheduled again",
                tx.scheduled(TimerKind::RequestExpiry, "req_pre").await?,
                Some(at(700)),
            );
            tx.schedule(TimerKind::GrantExpiry, "grant_new", at(9000))
                .await?;
            tx.schedule(TimerKind::GrantExpiry, "grant_new", at(8000))
                .await?;
            seen.eq(
                "a new timer moved",
                tx.scheduled(TimerKind::GrantExpiry, "grant_new").await?,
                Some(at(8000)),
            );

            let d = delivery("req_own", at(1000));
            tx.put_delivery(&d, None).await?;
            seen.eq("delivery", tx.delivery(&d.id).await?, Some(d.clone()));
            let idem = idempotency(ALICE, "key_own", "req_own", 5000);
            tx.put_idempotency(&idem, at(1000)).await?;
            seen.eq(
                "idempotency record",
                tx.idempotency(ALICE, "key_own", at(1000)).await?,
                Some(idem),
            );
            seen.eq(
                "idempotency record once expired",
                tx.idempotency(ALICE, "key_own", at(5000)).await?,
                None,
            );
            Ok((new, seen))
        })
    })
    .await;
    seen.assert();

    // Assert: what the job saw is what it committed.
    let later = write(&*store, move |tx| {
        Box::pin(async move {
            Ok((
                tx.live_grants(ALICE, "db").await?,
                tx.scheduled(TimerKind::RequestExpiry, "req_pre").await?,
                tx.scheduled(TimerKind::GrantExpiry, "grant_new").await?,
            ))
        })
    })
    .await;
    assert_eq!(later, (vec![checked], Some(at(700)), Some(at(8000))));
    assert_eq!(
        store
            .grant("grant_old")
            .await
            .expect("read")
            .map(|g| g.state),
        Some(GrantState::Expired)
    );
}

/// Issue 14 item 1: jobs grouped into one transaction see each other's writes. The writer may
/// hold a job's writes back until the next read (so that a group of writes costs a few round
/// trips), and every read must still see every earlier job's writes: here each `B` job is
/// queued right behind its `A` job, often in the same group, and reads what `A` wrote through
/// reads that cannot be answered from a cache.
pub async fn later_jobs_of_a_group_read_earlier_writes(db: &Db) {
    // Arrange
    let store = db.open().await;
    let now = at(0);
    let pairs = 60;
    // Each pair's subject holds a grant already committed, which its `A` ends.
    for i in 0..pairs {
        let (old, _) = grant(&format!("old_{i}"), &format!("s{i}"), "res", false, now);
        write(&*store, move |tx| {
            Box::pin(async move { Ok(tx.put_grant(&old).await?) })
        })
        .await;
    }

    // Act: pairs of jobs, each `A` queued before its `B`, all pairs at once.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..pairs {
        let store = store.clone();
        set.spawn(async move {
            let key = format!("k{i}");
            let req = format!("req_{i}");
            let a = {
                let (key, req) = (key.clone(), req.clone());
                write(&*store, move |tx| {
                    Box::pin(async move {
                        tx.put_delivery(&delivery(&req, now), None).await?;
                        tx.put_idempotency(&idempotency(ALICE, &key, &req, 86_400_000), now)
                            .await?;
                        tx.schedule(TimerKind::GrantExpiry, &key, at(60_000))
                            .await?;
                        let subject = format!("s{i}");
                        let (new, _) = grant(&format!("new_{i}"), &subject, "res", false, now);
                        tx.put_grant(&new).await?;
                        let old = revoked_grant(&format!("old_{i}"), &subject, "res", now);
                        tx.put_grant(&old).await?;
                        // Rule 5 through the job's own unsent writes.
                        let own = tx
                            .active_grant_covering(&subject, "res", None, now)
                            .await?
                            .map(|g| g.id);
                        Ok(own)
                    })
                })
            };
            let b = {
                let (key, req) = (key.clone(), req.clone());
                write(&*store, move |tx| {
                    Box::pin(async move {
                        // Rule 5's question first (the other reads send the held writes),
                        // answered through the earlier job's unsent writes: the new grant
                        // covers, the ended one no longer does.
                        let covering = tx
                            .active_grant_covering(&format!("s{i}"), "res", None, now)
                            .await?
                            .map(|g| g.id);
                        let d = tx.delivery(&domain::Delivery::id_for(&req)).await?;
                        let k = tx.idempotency(ALICE, &key, now).await?;
                        let j = tx.scheduled(TimerKind::GrantExpiry, &key).await?;
                        Ok((d.is_some(), k.is_some(), j, covering))
                    })
                })
            };
            // `join!` polls `a` first, so its job is queued before `b`'s.
            let (own, seen) = tokio::join!(a, b);
            (i, own, seen)
        });
    }

    // Assert
    while let Some(seen) = set.join_next().await {
        let (i, own, seen) = seen.expect("the pair ran");
        assert_eq!(
            own,
            Some(format!("new_{i}")),
            "rule 5 in the job that wrote the grants"
        );
        let (delivery, key, job, covering) = seen;
        assert_eq!(
            covering,
            Some(format!("new_{i}")),
            "rule 5 in a later job of the group"
        );
        assert!(
            delivery,
            "a later job did not see an earlier job's delivery"
        );
        assert!(
            key,
            "a later job did not see an earlier job's idempotency key"
        );
        assert_eq!(
            job,
            Some(at(60_000)),
            "a later job did not see an earlier job's timer"
        );
    }
}
