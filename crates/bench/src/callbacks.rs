//! `countersign-bench callbacks`: how fast outcome callbacks are delivered (rules 22, 23), and
//! whether a failing receiver holds up a healthy one.
//!
//! The bench opens the real engine on a durable SQLite database in a temporary directory, on
//! the system clock, with two real HTTP receivers on loopback: `healthy` answers 204 at once;
//! `failing` answers 500 to half of its calls and never answers a tenth of them (the
//! callback timeout ends those). An application creates `--outcomes` requests with a callback
//! to the healthy receiver (and, with `--with-failing`, as many to the failing one), with the
//! worker stopped. Then the real worker starts and every request is cancelled, 64 at a time;
//! each cancellation is an outcome whose delivery is written in the same transaction.
//!
//! It reports the deliveries per second to the healthy receiver (from the first outcome to
//! the last delivery) and the latency of each healthy delivery: the time its first POST
//! arrived minus the time its cancellation was sent (p50, p99, max).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::{CreateRequest, SystemClock};

use crate::instant;
use crate::percentile;

#[derive(Debug, clap::Args)]
pub struct CallbackArgs {
    /// Outcomes delivered to the healthy receiver.
    #[arg(long, default_value_t = 10_000)]
    pub outcomes: usize,
    /// Also deliver as many outcomes to a receiver that fails half the time and hangs on a
    /// tenth of its calls.
    #[arg(long)]
    pub with_failing: bool,
    /// The callback timeout, which ends the hanging calls.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
}

pub async fn run(args: CallbackArgs) -> ExitCode {
    match measure(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign-bench callbacks: {e}");
            ExitCode::from(3)
        }
    }
}

/// When each webhook-id first arrived.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// A receiver on loopback. `failing` answers 500 to every second call and hangs on every
/// tenth.
async fn receiver(failing: bool) -> Result<(String, Arrivals), String> {
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let (seen, calls) = (seen.clone(), calls.clone());
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if failing {
                    if n % 10 == 0 {
                        std::future::pending::<()>().await;
                    }
                    if n % 2 == 0 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                }
                let mut m = seen.lock().unwrap_or_else(|p| p.into_inner());
                m.entry(id).or_insert_with(instant);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/hook"), arrivals))
}

async fn measure(args: &CallbackArgs) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let src = format!(
        r#"
server {{
  database           = "sqlite://{}"
  reconcile_interval = "off"
  policy_interval    = "off"
  outbound_allow     = ["127.0.0.1"]
  callback_timeout   = "{}"
}}
user "approver@bench.test" {{}}
user "someone@bench.test" {{}}
app "bench" {{ roles = ["request_approval"] }}
resource "deploy" {{
  max_duration = "1h"
  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["approver@bench.test"] }} }} ] }}
}}
"#,
        dir.path().join("bench.db").display(),
        args.timeout
    );
    let path = dir.path().join("bench.hcl");
    let config =
        config::load_str(path.to_str().unwrap_or("bench.hcl"), &src).map_err(|e| e.to_string())?;
    let engine = countersign::open(config, Arc::new(SystemClock))
        .await
        .map_err(|e| e.to_string())?;
    let app = engine
        .actor("app:bench")
        .ok_or("the bench app is not configured")?;
    let (healthy_url, healthy) = receiver(false).await?;
    let (failing_url, _) = receiver(true).await?;

    // Create every request with the worker stopped, alternating receivers.
    let mut targets = vec![];
    for _ in 0..args.outcomes {
        targets.push((true, healthy_url.clone()));
        if args.with_failing {
            targets.push((false, failing_url.clone()));
        }
    }
    let mut ids = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(256) {
        let mut set = tokio::task::JoinSet::new();
        for (is_healthy, url) in chunk.iter().cloned() {
            let (engine, app) = (engine.clone(), app.clone());
            set.spawn(async move {
                let input = CreateRequest {
                    resource: "deploy".into(),
                    reason: "bench".into(),
                    requester: Some("someone@bench.test".into()),
                    context: domain::Context {
                        callback: Some(domain::Callback {
                            url,
                            format: domain::CallbackFormat::Rest,
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                engine
                    .create_request(&app, input)
                    .await
                    .map(|c| (is_healthy, c.request.id))
                    .map_err(|e| e.to_string())
            });
        }
        while let Some(r) = set.join_next().await {
            ids.push(r.map_err(|e| e.to_string())??);
        }
    }
    eprintln!("created {} requests", ids.len());

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine::Worker::run(engine.clone(), stopped));

    // Cancel everything, 64 at a time; note when each healthy outcome was asked for.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let first = instant();
    for chunk in ids.chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for (is_healthy, id) in chunk.iter().cloned() {
            let (engine, app, sent) = (engine.clone(), app.clone(), sent.clone());
            set.spawn(async move {
                let at = instant();
                engine
                    .cancel(&app, &id, Some("bench".into()))
                    .await
                    .map_err(|e| e.to_string())?;
                if is_healthy {
                    let mut m = sent.lock().unwrap_or_else(|p| p.into_inner());
                    m.insert(domain::Delivery::id_for(&id), at);
                }
                Ok::<(), String>(())
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
    }
    let cancelled_in = first.elapsed();

    // Wait for every healthy delivery (bounded: a stall is a failure, not a hang).
    let deadline = instant() + Duration::from_secs(600);
    loop {
        let n = healthy.lock().unwrap_or_else(|p| p.into_inner()).len();
        if n >= args.outcomes {
            break;
        }
        if instant() > deadline {
            return Err(format!(
                "only {n} of {} deliveries arrived in 10 minutes",
                args.outcomes
            ));
        }
        engine::clock::pause(Duration::from_millis(20)).await;
    }
    let arrivals = healthy.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let last = arrivals.values().max().copied().unwrap_or(first);
    let mut lat: Vec<f64> = arrivals
        .iter()
        .filter_map(|(id, at)| {
            sent.get(id)
                .map(|s| at.saturating_duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let total = last.duration_since(first).as_secs_f64();
    println!(
        "outcomes: {}  failing receiver: {}  timeout: {}",
        args.outcomes,
        if args.with_failing { "yes" } else { "no" },
        args.timeout
    );
    println!(
        "cancelled in {:.2} s; healthy deliveries: {}  in {:.2} s  = {:.0}/s",
        cancelled_in.as_secs_f64(),
        arrivals.len(),
        total,
        arrivals.len() as f64 / total.max(1e-9)
    );
    println!(
        "healthy latency: p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or_default()
    );
    let _ = stop.send(true);
    worker.abort();
    engine.store().close().await;
    Ok(())
}
