//! `countersign-bench slack`: the Slack app's two figures (issue 16).
//!
//! The bench opens the real server (its HTTP listener, the worker) on a durable SQLite
//! database in a temporary directory, on the system clock, with a Slack channel whose Web API
//! is a fake in this process on loopback: it answers `chat.postMessage`, `chat.update`,
//! `views.open` and `chat.postEphemeral` as Slack does, and notes when each `chat.update`
//! arrives. `--clicks` reviewers are linked to Slack accounts (through the engine's link
//! flow), and one `notify` rule posts each request's card to `--copies` channels.
//!
//! 1. Acknowledgement latency: `--clicks` signed Approve clicks at once (`/slack/events`,
//!    `block_actions`), each timed from send to Slack's answer; `--rounds` rounds.
//! 2. Decision to last update: a reviewer decides (through the API, the engine service the
//!    portal's form calls too), timed until the last of the `--copies` cards has been
//!    updated by `chat.update`; one request per round.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use engine::SystemClock;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{instant, percentile};

#[derive(Debug, clap::Args)]
pub struct SlackArgs {
    /// Button clicks sent at once, each by another linked reviewer.
    #[arg(long, default_value_t = 100)]
    pub clicks: usize,
    /// Copies of each request's card (one per Slack channel) that a decision updates.
    #[arg(long, default_value_t = 50)]
    pub copies: usize,
    /// Rounds of each measure.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

const SECRET: &str = "bench-signing-secret";

#[derive(Default)]
struct Fake {
    ts: u64,
    posted: usize,
    updates: Vec<Instant>,
}

async fn answer(
    State(fake): State<Arc<Mutex<Fake>>>,
    Path(method): Path<String>,
    body: String,
) -> axum::Json<Value> {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut f = fake.lock().unwrap_or_else(|p| p.into_inner());
    f.ts += 1;
    let ts = format!("1767225600.{:06}", f.ts);
    axum::Json(match method.as_str() {
        "chat.postMessage" => {
            // Cards only: not the outcome said in their threads.
            if body.get("thread_ts").is_none() {
                f.posted += 1;
            }
            json!({ "ok": true, "channel": body["channel"], "ts": ts })
        }
        "chat.update" => {
            f.updates.push(instant());
            json!({ "ok": true, "channel": body["channel"], "ts": body["ts"] })
        }
        "views.open" => json!({ "ok": true }),
        _ => json!({ "ok": true }),
    })
}

pub async fn run(args: SlackArgs) -> ExitCode {
    match measure(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign-bench slack: {e}");
            ExitCode::from(3)
        }
    }
}

fn sign(ts: i64, body: &str) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("v0={hex}"))
}

async fn measure(args: &SlackArgs) -> Result<(), String> {
    let fake = Arc::new(Mutex::new(Fake::default()));
    let app = axum::Router::new()
        .route("/api/{method}", axum::routing::post(answer))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let api = format!(
        "http://{}/api/",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let reviewers: Vec<String> = (1..=args.clicks.max(1))
        .map(|i| format!("r{i}@bench.test"))
        .collect();
    let users: String = reviewers
        .iter()
        .map(|r| format!("user \"{r}\" {{}}\n"))
        .collect();
    let channels: Vec<String> = (1..=args.copies)
        .map(|i| format!("\"slack:#c{i}\""))
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let src = format!(
        r#"
server {{
  database           = "sqlite://{db}"
  public_url         = "{base}"
  reconcile_interval = "off"
  policy_interval    = "off"
  outbound_allow     = ["127.0.0.1"]
}}
{requesters}
{users}
resource "deploy" {{
  max_duration = "1h"
  workflow = {{ steps = [ {{ reviewers = {{ one_of = [{list}] }} }} ] }}
}}
channel "slack" {{
  type                 = "slack"
  bot_token            = "xoxb-bench"
  signing_secret       = "{SECRET}"
  api_url              = "{api}"
  per_channel_interval = "0s"
}}
notify "cards" {{
  events = ["step_entered"]
  via    = [{channels}]
}}
"#,
        db = dir.path().join("bench.db").display(),
        list = reviewers
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", "),
        channels = channels.join(", "),
        // One requester per round: an active grant would answer a second request (rule 5).
        requesters = (0..args.rounds)
            .map(|i| format!("user \"asker{i}@bench.test\" {{}}\n"))
            .collect::<String>(),
    );
    let config = config::load_str("bench.hcl", &src).map_err(|e| e.to_string())?;
    let engine = countersign::open(config, Arc::new(SystemClock))
        .await
        .map_err(|e| e.to_string())?;
    // Each reviewer's Slack account, linked through the engine's own flow.
    for (i, r) in reviewers.iter().enumerate() {
        let actor = engine.actor(r).ok_or("a reviewer is not configured")?;
        let secret = engine
            .start_slack_link(&format!("U{i}"), r)
            .await
            .map_err(|e| e.to_string())?;
        engine
            .finish_slack_link(&actor, &secret)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut askers = vec![];
    for i in 0..args.rounds {
        askers.push(
            engine
                .create_token(&format!("asker{i}@bench.test"))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let token = askers
        .first()
        .cloned()
        .ok_or("--rounds must be at least 1")?;
    let decider = engine
        .create_token(&reviewers[0])
        .await
        .map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(countersign::run(
        listener,
        engine.clone(),
        countersign::RunOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.clicks.max(1))
        .build()
        .map_err(|e| e.to_string())?;

    let create = |asker: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let res = http
                .post(format!("{base}/v1/requests"))
                .bearer_auth(&asker)
                .json(&json!({ "resource": "deploy", "reason": "bench" }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let v: Value = res.json().await.map_err(|e| e.to_string())?;
            let id = v["id"].as_str().ok_or(format!("no id: {v}"))?.to_owned();
            Ok::<String, String>(id)
        }
    };
    let wait = |what: &'static str, done: Box<dyn Fn(&Fake) -> bool + Send>| {
        let fake = fake.clone();
        async move {
            let deadline = instant() + Duration::from_secs(120);
            loop {
                if done(&fake.lock().unwrap_or_else(|p| p.into_inner())) {
                    return Ok(());
                }
                if instant() > deadline {
                    return Err(format!("{what}: not done in 2 minutes"));
                }
                engine::clock::pause(Duration::from_millis(2)).await;
            }
        }
    };

    println!(
        "clicks: {} at once; copies: {}; rounds: {}",
        args.clicks, args.copies, args.rounds
    );
    let mut acks: Vec<f64> = vec![];
    let mut round_p99: Vec<f64> = vec![];
    let mut e2e: Vec<f64> = vec![];
    for (round, asker) in askers.iter().enumerate() {
        let id = create(asker.clone()).await?;
        let want = (round + 1) * args.copies;
        wait("the cards are posted", Box::new(move |f| f.posted >= want)).await?;

        // 1. Clicks at once.
        let now = engine.now().millis() / 1000;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..args.clicks {
            let payload = json!({
                "type": "block_actions",
                "user": { "id": format!("U{i}") },
                "trigger_id": format!("t{round}-{i}"),
                "channel": { "id": "c1" },
                "actions": [{ "action_id": "cs_approve", "value": id }],
            });
            let body = serde_urlencoded::to_string([("payload", payload.to_string())])
                .map_err(|e| e.to_string())?;
            let sig = sign(now, &body)?;
            let req = http
                .post(format!("{base}/slack/events"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", now.to_string())
                .header("x-slack-signature", sig)
                .body(body);
            set.spawn(async move {
                let t = instant();
                let res = req.send().await.map_err(|e| e.to_string())?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if !res.status().is_success() {
                    return Err(format!("a click was answered {}", res.status()));
                }
                Ok::<f64, String>(ms)
            });
        }
        let mut round_acks = vec![];
        while let Some(r) = set.join_next().await {
            round_acks.push(r.map_err(|e| e.to_string())??);
        }
        round_acks.sort_by(f64::total_cmp);
        round_p99.push(percentile(&round_acks, 99.0));
        acks.extend(round_acks);
        // Let the modals the clicks opened finish before the next measure.
        engine::clock::pause(Duration::from_millis(200)).await;

        // 2. A decision, to the last chat.update of its cards.
        let before = fake.lock().unwrap_or_else(|p| p.into_inner()).updates.len();
        let t = instant();
        let res = http
            .post(format!("{base}/v1/requests/{id}/reviews"))
            .bearer_auth(&decider)
            .json(&json!({ "decision": "approve" }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            let now = http
                .get(format!("{base}/v1/requests/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .unwrap_or_default();
            return Err(format!(
                "the decision was answered {status}: {body}; the request: {now}"
            ));
        }
        let want = before + args.copies;
        wait(
            "every copy is updated",
            Box::new(move |f| f.updates.len() >= want),
        )
        .await?;
        let last = fake
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .updates
            .get(want - 1)
            .copied()
            .ok_or("no update recorded")?;
        e2e.push(last.duration_since(t).as_secs_f64() * 1000.0);
    }
    acks.sort_by(f64::total_cmp);
    let mut sorted_p99 = round_p99.clone();
    sorted_p99.sort_by(f64::total_cmp);
    let mut sorted_e2e = e2e.clone();
    sorted_e2e.sort_by(f64::total_cmp);
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "click acknowledgement (ms): p50 {:.1}  p99 {:.1}  max {:.1}  over {} clicks; p99 per round: {}",
        percentile(&acks, 50.0),
        percentile(&acks, 99.0),
        acks.last().copied().unwrap_or_default(),
        acks.len(),
        fmt(&round_p99)
    );
    println!(
        "decision to last chat.update of {} copies (ms): median {:.1}  min {:.1}  max {:.1}; per round: {}",
        args.copies,
        percentile(&sorted_e2e, 50.0),
        sorted_e2e.first().copied().unwrap_or_default(),
        sorted_e2e.last().copied().unwrap_or_default(),
        fmt(&e2e)
    );
    let _ = stop.send(());
    let _ = server.await;
    engine.store().close().await;
    Ok(())
}
