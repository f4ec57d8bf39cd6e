//! Hardening item 3 (PRODUCT.md §7, "`audit verify` detects any edit, deletion or
//! reordering"): signed checkpoints of the audit chain. The server signs the head it
//! committed and appends it to a file outside the database (and posts it to a webhook);
//! `countersign audit verify --checkpoints` recomputes the chain from the event bodies it
//! reads over the API and checks it against them.
//!
//! The attacks are made as an attacker with write access to the database would make them
//! (on SQLite or PostgreSQL, whichever the suite runs on): turn off the triggers that keep
//! `events` append-only, then delete or rewrite rows. Each test
//! also runs `audit verify` without checkpoints, which cannot see the attack, so that the
//! difference checkpoints make is shown (and would be noticed if it went away).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use audit::SigningKey;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row, SqliteConnection};

use crate::helpers::{START_MS, TestApp, id_of};

const RESOURCE: &str = r#"
resource "db" {
  max_duration = "1h"
  workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
}

audit {
  signing_key         = file("audit-key.pem")
  checkpoint_file     = "checkpoints.jsonl"
  checkpoint_interval = "1h"
}
"#;

/// A server with `server_hcl` in its server block and `resources` (which turn checkpoints
/// on), signing with a new key; returns it with the public key.
async fn spawn_with(server_hcl: &str, resources: &str) -> (TestApp, String) {
    let pem = SigningKey::generate_pem().expect("keygen");
    let public = SigningKey::parse(&pem)
        .expect("key")
        .public_key()
        .to_base64();
    let app = TestApp::spawn_with(server_hcl, &[("audit-key.pem", &pem)], resources).await;
    (app, public)
}

async fn spawn() -> (TestApp, String) {
    spawn_with("", RESOURCE).await
}

/// Writes `n` denied requests (a few events each; a denial leaves no grant, so alice can
/// ask again).
async fn some_events(app: &TestApp, n: usize) {
    for _ in 0..n {
        let req = app
            .create("alice", json!({ "resource": "db", "reason": "x" }))
            .await;
        let (status, body) = app.review("bob", &req, json!({ "decision": "deny" })).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    }
}

/// Signs a checkpoint now; returns its count.
async fn checkpoint(app: &TestApp) -> i64 {
    app.engine
        .checkpoint()
        .await
        .expect("the checkpoint is written")
        .expect("checkpoints are on")
        .count
}

fn checkpoint_file(app: &TestApp) -> PathBuf {
    app.dir.path().join("checkpoints.jsonl")
}

/// `countersign audit verify` as the admin, with the checkpoints and key given (or not):
/// its exit code and what it printed.
async fn verify(app: &TestApp, with: Option<(&Path, &str)>) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    cmd.args(["audit", "verify"]);
    if let Some((file, key)) = with {
        cmd.arg("--checkpoints")
            .arg(file)
            .args(["--public-key", key]);
    }
    let out = cmd
        .env("COUNTERSIGN_URL", &app.api.base)
        .env("COUNTERSIGN_TOKEN", app.api.token("root"))
        .env_remove("COUNTERSIGN_AUDIT_PUBLIC_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run countersign audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The database as an attacker opens it: with the triggers that keep `events` append-only
/// turned off.
enum Tampered {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// One row of `events`: `seq`, `at`, `body`.
type EventRow = (i64, i64, String);

impl Tampered {
    async fn open(app: &TestApp) -> Tampered {
        let url = app.db.url();
        if app.db.is_postgres() {
            let mut conn = PgConnection::connect(url).await.expect("open the database");
            let sql = "ALTER TABLE events DISABLE TRIGGER USER";
            sqlx::query(sql).execute(&mut conn).await.expect(sql);
            Tampered::Postgres(conn)
        } else {
            let mut conn = SqliteConnection::connect(url)
                .await
                .expect("open the database");
            for sql in [
                "DROP TRIGGER events_no_update",
                "DROP TRIGGER events_no_delete",
            ] {
                sqlx::query(sql).execute(&mut conn).await.expect(sql);
            }
            Tampered::Sqlite(conn)
        }
    }

    /// Deletes every event after `seq`.
    async fn delete_after(&mut self, seq: i64) {
        let done = match self {
            Tampered::Sqlite(c) => sqlx::query("DELETE FROM events WHERE seq > ?")
                .bind(seq)
                .execute(c)
                .await
                .map(|r| r.rows_affected()),
            Tampered::Postgres(c) => sqlx::query("DELETE FROM events WHERE seq > $1")
                .bind(seq)
                .execute(c)
                .await
                .map(|r| r.rows_affected()),
        };
        assert!(done.expect("delete") > 0, "events were deleted");
    }

    /// Every event, in order.
    async fn events(&mut self) -> Vec<EventRow> {
        let sql = "SELECT seq, at, body FROM events ORDER BY seq";
        match self {
            Tampered::Sqlite(c) => sqlx::query(sql)
                .fetch_all(c)
                .await
                .expect("read events")
                .iter()
                .map(|r| (r.get("seq"), r.get("at"), r.get("body")))
                .collect(),
            Tampered::Postgres(c) => sqlx::query(sql)
                .fetch_all(c)
                .await
                .expect("read events")
                .iter()
                .map(|r| (r.get("seq"), r.get("at"), r.get("body")))
                .collect(),
        }
    }

    /// Replaces event `seq`'s body and hashes.
    async fn rewrite(&mut self, seq: i64, body: &str, prev_hash: &str, hash: &str) {
        let done = match self {
            Tampered::Sqlite(c) => {
                sqlx::query("UPDATE events SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?")
                    .bind(body)
                    .bind(prev_hash)
                    .bind(hash)
                    .bind(seq)
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            }
            Tampered::Postgres(c) => {
                sqlx::query("UPDATE events SET body = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
                    .bind(body)
                    .bind(prev_hash)
                    .bind(hash)
                    .bind(seq)
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            }
        };
        assert_eq!(done.expect("rewrite"), 1, "event {seq} rewritten");
    }
}

/// What a server started now on the same database and configuration finds when it compares
/// the chain with the last checkpoint (it logs it as an error).
async fn restarted(app: &TestApp) -> Option<String> {
    let config = (*app.engine.config()).clone();
    let clock = Arc::new(engine::ManualClock::new(domain::Timestamp::from_millis(
        START_MS,
    )));
    let again = countersign::open(config, clock).await.expect("open again");
    let found = again.compare_with_last_checkpoint().await;
    again.store().close().await;
    found
}

/// Item 3: deleting the newest events leaves a chain that verifies on its own; the
/// checkpoint shows it is short.
#[tokio::test]
async fn hardening_3_truncation_is_detected_by_checkpoints() {
    // Arrange
    let (app, key) = spawn().await;
    some_events(&app, 3).await;
    let count = checkpoint(&app).await;
    let file = checkpoint_file(&app);
    let (intact, intact_out) = verify(&app, Some((&file, &key))).await;
    assert_eq!(intact, 0, "{intact_out}");

    // Act: the attacker deletes the three newest events.
    Tampered::open(&app).await.delete_after(count - 3).await;
    let (plain, plain_out) = verify(&app, None).await;
    let (checked, checked_out) = verify(&app, Some((&file, &key))).await;

    // Assert
    println!("without checkpoints: exit {plain}: {plain_out}");
    println!("with checkpoints: exit {checked}: {checked_out}");
    assert_eq!(
        plain, 0,
        "the chain alone cannot show a truncation: {plain_out}"
    );
    assert_eq!(checked, 1, "{checked_out}");
    assert!(
        checked_out.contains(&format!(
            "TRUNCATED: the chain has {} events, but the checkpoint on line 1",
            count - 3
        )) && checked_out.contains(&format!("covers {count}")),
        "{checked_out}"
    );
}

/// Item 3: an event rewritten with every later hash recomputed keeps the stored chain
/// consistent; the recomputed head no longer matches what was signed.
#[tokio::test]
async fn hardening_3_a_rewrite_with_recomputed_hashes_is_detected() {
    // Arrange
    let (app, key) = spawn().await;
    some_events(&app, 2).await;
    checkpoint(&app).await;
    some_events(&app, 1).await;
    let last = checkpoint(&app).await;
    let file = checkpoint_file(&app);

    // Act: the attacker makes mallory the requester of the first request, and recomputes
    // every hash from there on, exactly as the server computes them.
    let mut db = Tampered::open(&app).await;
    let mut prev = audit::chain::GENESIS.to_owned();
    for (seq, at, mut body) in db.events().await {
        if seq == 1 {
            assert!(body.contains("alice@example.com"), "{body}");
            body = body.replace("alice@example.com", "mallory@example.com");
        }
        let hash = audit::chain::hash(&prev, seq, at, &body);
        db.rewrite(seq, &body, &prev, &hash).await;
        prev = hash;
    }
    let (plain, plain_out) = verify(&app, None).await;
    let (checked, checked_out) = verify(&app, Some((&file, &key))).await;

    // Assert
    println!("without checkpoints: exit {plain}: {plain_out}");
    println!("with checkpoints: exit {checked}: {checked_out}");
    assert_eq!(plain, 0, "the rewritten chain is consistent: {plain_out}");
    assert!(
        restarted(&app)
            .await
            .is_some_and(|w| w.contains("events were rewritten")),
        "a server started on the rewritten database says so"
    );
    assert_eq!(checked, 1, "{checked_out}");
    assert_eq!(
        checked_out.matches("REWRITTEN").count(),
        2,
        "both checkpoints see it: {checked_out}"
    );
    assert!(
        checked_out.contains(&format!("at event {last}")),
        "{checked_out}"
    );
}

/// Item 3: a checkpoint line whose fields were changed, or that another key signed, is
/// refused and reported; it proves nothing and the command fails.
#[tokio::test]
async fn hardening_3_a_checkpoint_with_a_bad_signature_is_refused() {
    // Arrange
    let (app, key) = spawn().await;
    some_events(&app, 2).await;
    let count = checkpoint(&app).await;
    let file = checkpoint_file(&app);
    let line = std::fs::read_to_string(&file).expect("read checkpoints");

    // Act: a line that claims a shorter chain, with the signature kept.
    let forged = line.replace(
        &format!("\"count\":{count}"),
        &format!("\"count\":{}", count - 1),
    );
    assert_ne!(forged, line);
    let forged_file = app.dir.path().join("forged.jsonl");
    std::fs::write(&forged_file, format!("{line}{forged}")).expect("write");
    let (code, out) = verify(&app, Some((&forged_file, &key))).await;
    // The real line, checked against another key.
    let other = SigningKey::parse(&SigningKey::generate_pem().expect("keygen"))
        .expect("key")
        .public_key()
        .to_base64();
    let (wrong_key, wrong_out) = verify(&app, Some((&file, &other))).await;

    // Assert
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("REFUSED: checkpoint on line 2: bad signature"),
        "{out}"
    );
    assert!(out.contains("1 checkpoints verified"), "{out}");
    assert_eq!(wrong_key, 1, "{wrong_out}");
    assert!(
        wrong_out.contains("REFUSED: checkpoint on line 1: signed by key ed25519:"),
        "{wrong_out}"
    );
    assert!(wrong_out.contains("NO CHECKPOINT"), "{wrong_out}");
}

/// Item 3: a chain that still holds what was signed passes, with events written after the
/// last checkpoint; `--json` says so too.
#[tokio::test]
async fn hardening_3_a_good_chain_with_good_checkpoints_passes() {
    // Arrange
    let (app, key) = spawn().await;
    some_events(&app, 1).await;
    checkpoint(&app).await;
    some_events(&app, 1).await;
    let count = checkpoint(&app).await;
    some_events(&app, 1).await;
    let file = checkpoint_file(&app);

    // Act
    let (code, out) = verify(&app, Some((&file, &key))).await;
    let json = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["audit", "verify", "--json", "--public-key", &key])
        .arg("--checkpoints")
        .arg(&file)
        .env("COUNTERSIGN_URL", &app.api.base)
        .env("COUNTERSIGN_TOKEN", app.api.token("root"))
        .output()
        .await
        .expect("run");

    // Assert
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
    assert!(out.contains("2 checkpoints verified"), "{out}");
    let report: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checkpoints"], 2);
    assert_eq!(report["newest"]["count"], count);
    assert!(report["events"].as_i64().expect("events") > count);
}

/// Item 3: the server signs the chain when it stops, after the worker, so the checkpoint
/// file covers every event written; the line says when, by which key.
#[tokio::test]
async fn hardening_3_a_checkpoint_is_written_on_shutdown() {
    // Arrange: the real `run`, with a shutdown signal this test holds.
    let pem = SigningKey::generate_pem().expect("keygen");
    let key = SigningKey::parse(&pem).expect("key");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = crate::helpers::database(dir.path()).await;
    std::fs::write(dir.path().join("audit-key.pem"), &pem).expect("key file");
    let src = format!(
        "server {{\n  database = \"{}\"\n}}\n{}\n{RESOURCE}",
        db.url(),
        crate::helpers::people_and_connectors(dir.path()),
    );
    let path = dir.path().join("countersign.hcl");
    let config = config::load_str(path.to_str().expect("utf-8"), &src).expect("config");
    let clock = Arc::new(engine::ManualClock::new(domain::Timestamp::from_millis(
        START_MS,
    )));
    let engine = countersign::open(config, clock.clone())
        .await
        .expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut api =
        crate::helpers::Api::new(format!("http://{}", listener.local_addr().expect("addr")));
    for user in ["alice", "bob"] {
        let token = engine
            .create_token(&format!("{user}@example.com"))
            .await
            .expect("token");
        api.tokens.insert(user.to_owned(), token);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = countersign::RunOptions {
        worker: false,
        ..countersign::RunOptions::default()
    };
    let server = tokio::spawn(countersign::run(listener, engine.clone(), options, async {
        let _ = stopped.await;
    }));
    let (_, req) = api
        .post(
            "alice",
            "/v1/requests",
            json!({ "resource": "db", "reason": "x" }),
        )
        .await;
    let (status, _) = api
        .post(
            "bob",
            &format!("/v1/requests/{}/reviews", id_of(&req)),
            json!({ "decision": "approve" }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let head = engine.store().head();
    assert!(head.seq > 0);
    clock.advance(std::time::Duration::from_secs(90));

    // Act
    stop.send(()).expect("stop");
    server
        .await
        .expect("join")
        .expect("the server stops cleanly");

    // Assert
    let text = std::fs::read_to_string(dir.path().join("checkpoints.jsonl"))
        .expect("the checkpoint file exists");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let cp = audit::Checkpoint::verify_line(lines[0], &[*key.public_key()]).expect("verifies");
    assert_eq!((cp.count, cp.head.as_str()), (head.seq, head.hash.as_str()));
    assert_eq!(cp.at, "2026-01-01T00:01:30.000Z");
    assert_eq!(cp.key_id, key.public_key().key_id());
}

/// Received webhook posts: headers and body.
type Posts = Arc<Mutex<Vec<(HeaderMap, String)>>>;

async fn receive(State(posts): State<Posts>, headers: HeaderMap, body: String) -> &'static str {
    posts.lock().expect("lock").push((headers, body));
    "ok"
}

/// Item 3: with a webhook configured, the same line is posted, signed with the Standard
/// Webhooks scheme, through the guard (loopback is reached only because `outbound_allow`
/// lists it).
#[tokio::test]
async fn hardening_3_the_checkpoint_is_posted_to_the_signed_webhook() {
    // Arrange
    let posts: Posts = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let receiver = axum::Router::new()
        .route("/checkpoints", axum::routing::post(receive))
        .with_state(posts.clone());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let webhook_resource = RESOURCE.replace(
        "checkpoint_interval = \"1h\"",
        &format!(
            "checkpoint_interval = \"1h\"\n  checkpoint_webhook = {{ url = \"http://{addr}/checkpoints\", secret = \"{secret}\" }}"
        ),
    );
    let (app, _) = spawn_with("outbound_allow = [\"127.0.0.1\"]", &webhook_resource).await;
    some_events(&app, 1).await;

    // Act
    let cp = app
        .engine
        .checkpoint()
        .await
        .expect("file and webhook take it")
        .expect("on");

    // Assert
    let line = std::fs::read_to_string(checkpoint_file(&app)).expect("file");
    let posts = posts.lock().expect("lock").clone();
    assert_eq!(posts.len(), 1);
    let (headers, body) = &posts[0];
    assert_eq!(format!("{body}\n"), line);
    assert_eq!(*body, cp.to_line());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let ts: i64 = header("webhook-timestamp").parse().expect("timestamp");
    assert_eq!(ts, START_MS / 1000);
    assert_eq!(
        header("webhook-signature"),
        engine::connector::webhook::sign(
            &engine::connector::webhook::secret_key(secret),
            &id,
            ts,
            body.as_bytes()
        )
    );
}
