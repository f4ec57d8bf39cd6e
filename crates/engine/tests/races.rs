//! Races between connector calls that run at the same time (issue 4, rule 17).
//!
//! Connector calls run concurrently, each in its own task. A grant revoked while its grant call
//! is still running must not end with access: the revoke waits for that call, so it cannot
//! finish first and be undone by the grant call landing after it.

use std::sync::Arc;
use std::time::Duration;

use domain::{Decision, GrantState, ReviewInput, Scope, Timestamp};
use engine::{CreateRequest, Engine, ManualClock};

const CONFIG: &str = r#"
user "alice@example.com" {}
user "bob@example.com" { roles = ["admin"] }

# The grant call takes a second to land; the revoke is immediate.
connector "slow" {
  type           = "exec"
  grant_command  = ["sh", "-c", "cat >/dev/null; sleep 1; touch held"]
  revoke_command = ["sh", "-c", "cat >/dev/null; rm -f held"]
}

resource "db" {
  connector    = "slow"
  max_duration = "1h"
  workflow     = { steps = [{ reviewers = { one_of = ["bob@example.com"] } }] }
}
"#;

/// An engine on a fresh database, with alice's request for `db` approved by bob: its grant
/// is waiting for the (one-second) grant call. Returns the directory the call runs in.
async fn approved() -> (tempfile::TempDir, Arc<Engine>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("countersign.hcl");
    let config = config::load_str(path.to_str().expect("utf-8"), CONFIG).expect("config");
    let url = format!("sqlite://{}", dir.path().join("cs.db").display());
    let store = store::open(&url, store::Options::default())
        .await
        .expect("store");
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_767_225_600_000)));
    let engine = Engine::new(store, config, clock);
    let alice = engine.actor("alice@example.com").expect("alice");
    let bob = engine.actor("bob@example.com").expect("bob");
    let req = engine
        .create_request(
            &alice,
            CreateRequest {
                resource: "db".into(),
                reason: "x".into(),
                ..Default::default()
            },
        )
        .await
        .expect("create")
        .request;
    let approved = engine
        .review(
            &bob,
            &req.id,
            ReviewInput {
                decision: Decision::Approve,
                comment: None,
                duration: None,
                scope: Scope::Resource,
            },
        )
        .await
        .expect("approve");
    let grant = approved.grant.expect("a grant");
    (dir, engine, grant)
}

#[tokio::test]
async fn rule_17_revoke_during_activation_never_leaves_access() {
    // Arrange
    let (dir, engine, grant) = approved().await;
    let bob = engine.actor("bob@example.com").expect("bob");

    // Act: the grant call starts; while it runs, the grant is revoked and the worker runs
    // again (and would make the revoke call at once if nothing held it back).
    let first = tokio::spawn({
        let e = engine.clone();
        async move { e.run_due().await }
    });
    engine::clock::pause(Duration::from_millis(300)).await;
    engine
        .revoke_grant(&bob, &grant, Some("changed my mind".into()))
        .await
        .expect("revoke while activating");
    engine.run_due().await.expect("worker runs beside the call");
    first.await.expect("join").expect("first run");
    engine.run_due().await.expect("the held-back revoke runs");

    // Assert
    let g = engine.grant(&bob, &grant).await.expect("grant");
    assert_eq!(g.state, GrantState::Revoked);
    assert!(
        !dir.path().join("held").exists(),
        "the grant call landed after the revoke: access outlives a revoked grant"
    );
}

/// Issue 14, item 4: the worker owns every task it spawns. Told to stop while a grant call is
/// running, it waits for the call and records its result before it returns, rather than
/// leaving a detached task to write after the store is closed.
#[tokio::test]
async fn issue_14_4_a_stopping_worker_drains_its_running_calls() {
    // Arrange
    let (dir, engine, grant) = approved().await;
    let bob = engine.actor("bob@example.com").expect("bob");

    // Act: the worker starts the (one-second) grant call, and is told to stop meanwhile.
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine::Worker::run(engine.clone(), stop_rx));
    engine::clock::pause(Duration::from_millis(300)).await;
    let during = engine.grant(&bob, &grant).await.expect("grant").state;
    stop.send(true).expect("stop the worker");
    worker.await.expect("the worker ends");

    // Assert: the call was running when the worker was told to stop, and its result was
    // recorded before the worker returned.
    assert_eq!(during, GrantState::Activating);
    let after = engine.grant(&bob, &grant).await.expect("grant");
    assert_eq!(after.state, GrantState::Active);
    assert!(dir.path().join("held").exists());
}
