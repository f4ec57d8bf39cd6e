//! `countersign-bench notify`: how fast notifications are delivered (rule 32) when a burst of
//! requests waits for reviewers.
//!
//! The bench opens the real engine on a durable SQLite database in a temporary directory, on
//! the system clock, with one email channel to an SMTP server on loopback and no `notify`
//! block, so the default rules apply: each new request's first step tells its two reviewers,
//! one email each. The real worker runs; `--requests` requests are created, 256 at a time,
//! as fast as the engine takes them. The SMTP server is a real one that counts what it
//! accepts (`tests/python/smtp_sink.py PORT FILE --count` writes one byte per message).
//!
//! It reports how long the burst took to create, and the notifications delivered per second
//! from the first creation to the last message accepted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use engine::{CreateRequest, SystemClock};

use crate::instant;

#[derive(Debug, clap::Args)]
pub struct NotifyArgs {
    /// Requests created in the burst (each sends two emails).
    #[arg(long, default_value_t = 10_000)]
    pub requests: usize,
    /// The SMTP server, as HOST:PORT on loopback, spoken to without TLS.
    #[arg(long, value_name = "HOST:PORT")]
    pub smtp: String,
    /// The file in which that server counts the messages it accepts, one byte each.
    #[arg(long, value_name = "FILE")]
    pub count_file: PathBuf,
}

pub async fn run(args: NotifyArgs) -> ExitCode {
    match measure(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign-bench notify: {e}");
            ExitCode::from(3)
        }
    }
}

/// The `channel` block of an email channel to `host:port` without TLS (loopback only).
pub(crate) fn email_channel(smtp: &str) -> Result<String, String> {
    let (host, port) = smtp
        .rsplit_once(':')
        .ok_or_else(|| format!("--smtp {smtp:?}: write it as HOST:PORT"))?;
    Ok(format!(
        r#"
channel "mail" {{
  type = "email"
  host = "{host}"
  port = {port}
  tls  = "none"
  from = "countersign@bench.test"
}}
"#
    ))
}

/// Messages the SMTP server has accepted so far.
fn accepted(file: &std::path::Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

async fn measure(args: &NotifyArgs) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let src = format!(
        r#"
server {{
  database           = "sqlite://{}"
  reconcile_interval = "off"
  policy_interval    = "off"
}}
user "r1@bench.test" {{}}
user "r2@bench.test" {{}}
user "someone@bench.test" {{}}
resource "deploy" {{
  max_duration = "1h"
  workflow = {{ steps = [ {{ reviewers = {{ one_of = ["r1@bench.test", "r2@bench.test"] }} }} ] }}
}}
{}"#,
        dir.path().join("bench.db").display(),
        email_channel(&args.smtp)?
    );
    let config = config::load_str("bench.hcl", &src).map_err(|e| e.to_string())?;
    let engine = countersign::open(config, Arc::new(SystemClock))
        .await
        .map_err(|e| e.to_string())?;
    let someone = engine
        .actor("someone@bench.test")
        .ok_or("the requester is not configured")?;
    let before = accepted(&args.count_file);
    let want = before + 2 * args.requests as u64;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine::Worker::run(engine.clone(), stopped));
    let first = instant();
    let mut created = 0;
    while created < args.requests {
        let n = (args.requests - created).min(256);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (engine, someone) = (engine.clone(), someone.clone());
            set.spawn(async move {
                let input = CreateRequest {
                    resource: "deploy".into(),
                    reason: "bench".into(),
                    ..Default::default()
                };
                engine
                    .create_request(&someone, input)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        created += n;
    }
    let created_in = first.elapsed();

    // Wait for every message (bounded: a stall is a failure, not a hang).
    let deadline = instant() + Duration::from_secs(900);
    let mut last_seen = (accepted(&args.count_file), instant());
    loop {
        let n = accepted(&args.count_file);
        if n != last_seen.0 {
            last_seen = (n, instant());
        }
        if n >= want {
            break;
        }
        if instant() > deadline {
            return Err(format!(
                "only {} of {} messages arrived in 15 minutes",
                n - before,
                want - before
            ));
        }
        engine::clock::pause(Duration::from_millis(10)).await;
    }
    let total = last_seen.1.duration_since(first).as_secs_f64();
    let sent = want - before;
    println!(
        "requests: {}  created in {:.2} s ({:.0}/s)",
        args.requests,
        created_in.as_secs_f64(),
        args.requests as f64 / created_in.as_secs_f64().max(1e-9)
    );
    println!(
        "notifications delivered: {sent}  in {total:.2} s  = {:.0}/s",
        sent as f64 / total.max(1e-9)
    );
    let _ = stop.send(true);
    worker.abort();
    engine.store().close().await;
    Ok(())
}
