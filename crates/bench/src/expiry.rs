//! `countersign-bench expiry`: how fast grants expire, with the `none` connector (approval
//! only, so that the figure is the engine's and the store's, not a connector's).
//!
//! The bench writes its own configuration and durable SQLite database into a temporary
//! directory and opens the real engine on the system clock. It seeds grants directly
//! (`Engine::seed_grants`: the same grant, audit events and expiry timer as an approved
//! request produces) with the worker stopped, then starts the real worker and watches:
//!
//! - `burst`: every grant expires at the same instant. It reports how long after that instant
//!   the last grant was recorded expired (wall clock, polled every 10 ms).
//! - `steady`: expiries spread evenly over `--seconds`. It reports the expiry lag of every
//!   grant: the time its expiry was recorded minus its `expires_at` (p50, p99, max).
//! - `hold`: seeds the grants and reports the process's resident memory with that many
//!   active grants, with the worker running.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use domain::{GrantSpec, GrantState, Span};
use engine::{Clock, SystemClock};
use store::GrantFilter;

use crate::percentile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Every grant expires at the same instant; how long until the last is recorded.
    Burst,
    /// Expiries spread evenly over `--seconds`; the lag of each.
    Steady,
    /// Hold the grants active; the resident memory and the database size.
    Hold,
}

#[derive(Debug, clap::Args)]
pub struct ExpiryArgs {
    /// What to measure: a burst of simultaneous expiries, a steady stream, or the memory
    /// held by active grants.
    #[arg(long, value_enum, default_value_t = Mode::Burst)]
    pub mode: Mode,
    /// Grants to seed.
    #[arg(long, default_value_t = 100_000)]
    pub grants: usize,
    /// `steady`: the period over which the expiries are spread.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// The database to run on: an empty one (`postgres://…`, `sqlite://…`). By default a
    /// fresh SQLite file in a temporary directory.
    #[arg(long)]
    pub database: Option<String>,
}

/// Grants written per write job while seeding.
const SEED_BATCH: usize = 5_000;

pub async fn run(args: ExpiryArgs) -> ExitCode {
    match measure(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign-bench expiry: {e}");
            ExitCode::from(3)
        }
    }
}

/// The resource of the measured grants; the seeding-speed probe uses another.
const MEASURED: &str = "r";

fn spec(i: usize, resource: &str, duration: Span) -> GrantSpec {
    GrantSpec {
        request: format!("bench-{i}"),
        subject: format!("user{}@bench.test", i % 10_000),
        resource: resource.to_owned(),
        workflow: None,
        connector: None,
        params: Default::default(),
        duration,
        start_at: None,
        extends: None,
        run: None,
    }
}

/// The process's resident memory, in MiB.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

async fn measure(args: &ExpiryArgs) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let src = format!(
        "server {{\n  database = \"{database}\"\n  expiry_notice = \"off\"\n  reconcile_interval = \"off\"\n}}\n"
    );
    let path = dir.path().join("bench.hcl");
    let config =
        config::load_str(path.to_str().unwrap_or("bench.hcl"), &src).map_err(|e| e.to_string())?;
    let clock = Arc::new(SystemClock);
    let engine = countersign::open(config, clock.clone())
        .await
        .map_err(|e| e.to_string())?;
    let n = args.grants;

    // Seeding speed decides when the expiries can be: measure it on a probe batch (on
    // another resource, expiring in an hour, outside the measurement), then place the
    // expiries comfortably after the end of seeding.
    let started = clock.now();
    let elapsed_secs = || (clock.now().millis() - started.millis()) as f64 / 1000.0;
    let hour = Span::from_secs(3600);
    let probe: Vec<_> = (0..SEED_BATCH)
        .map(|i| (spec(i, "probe", hour), clock.now()))
        .collect();
    engine.seed_grants(probe).await.map_err(|e| e.to_string())?;
    let per_grant = elapsed_secs() / SEED_BATCH as f64;
    let seed_estimate = per_grant * n as f64 * 1.5 + 3.0;
    let first_expiry = clock
        .now()
        .plus_millis((seed_estimate * 1000.0) as i64 + 2_000);
    let spread_ms = match args.mode {
        Mode::Steady => i64::try_from(args.seconds * 1000).unwrap_or(i64::MAX),
        _ => 0,
    };
    // Grant i expires at `first_expiry + i * spread / n`: it was activated one hour earlier.
    let expiry_of = |i: usize| {
        let i = i64::try_from(i).unwrap_or(0);
        let n = i64::try_from(n.max(1)).unwrap_or(1);
        first_expiry.plus_millis(spread_ms * i / n)
    };
    let mut batches = tokio::task::JoinSet::new();
    let mut i = 0;
    while i < n {
        let end = (i + SEED_BATCH).min(n);
        let batch: Vec<_> = (i..end)
            .map(|k| (spec(k, MEASURED, hour), expiry_of(k).minus(hour)))
            .collect();
        let e = engine.clone();
        batches.spawn(async move { e.seed_grants(batch).await });
        // A few batches in flight, so that the store groups them.
        if batches.len() >= 4
            && let Some(r) = batches.join_next().await
        {
            r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
        i = end;
    }
    while let Some(r) = batches.join_next().await {
        r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    let seed_secs = elapsed_secs();
    println!(
        "seeded: {n} active grants (+{SEED_BATCH} probe) in {seed_secs:.1} s ({:.0} grants/s)",
        (n + SEED_BATCH) as f64 / seed_secs
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine::Worker::run(engine.clone(), stop_rx));

    if args.mode == Mode::Hold {
        // Let the worker settle, then read the resident memory.
        engine::clock::pause(Duration::from_secs(3)).await;
        let db = std::fs::metadata(dir.path().join("bench.db"))
            .map(|m| m.len() as f64 / 1048576.0)
            .unwrap_or(0.0);
        println!(
            "active grants: {}  rss: {:.0} MiB  database: {db:.0} MiB",
            n + SEED_BATCH,
            rss_mib().unwrap_or(0.0)
        );
    } else {
        let late = clock.now() > first_expiry;
        if late {
            println!(
                "warning: seeding ended {} ms after the first expiry",
                clock.now().millis() - first_expiry.millis()
            );
        }
        // Poll until no grant is active.
        let deadline = clock.now().plus(Span::from_secs(args.seconds + 120));
        let done_at = loop {
            let left = engine
                .store()
                .list_grants(&GrantFilter {
                    state: Some(GrantState::Active),
                    subject: None,
                    resource: Some(MEASURED.into()),
                    limit: 1,
                    ..GrantFilter::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            if left.is_empty() {
                break clock.now();
            }
            if clock.now() > deadline {
                return Err("grants were still active at the deadline".into());
            }
            engine::clock::pause(Duration::from_millis(10)).await;
        };
        let expired = engine
            .store()
            .list_grants(&GrantFilter {
                state: Some(GrantState::Expired),
                subject: None,
                resource: Some(MEASURED.into()),
                limit: u32::MAX,
                ..GrantFilter::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut lags: Vec<i64> = expired
            .iter()
            .filter_map(|g| Some(g.ended_at?.millis() - g.expires_at?.millis()))
            .collect();
        lags.sort_unstable();
        let last_expiry = expiry_of(n.saturating_sub(1));
        println!(
            "mode: {:?}  grants expired: {}  all recorded {} ms after the last expires_at (polled every 10 ms)",
            args.mode,
            expired.len(),
            done_at.millis() - last_expiry.millis()
        );
        println!(
            "lag (recorded - expires_at): p50 {} ms  p99 {} ms  max {} ms",
            percentile(&lags, 50.0),
            percentile(&lags, 99.0),
            lags.last().copied().unwrap_or(0)
        );
        println!("rss: {:.0} MiB", rss_mib().unwrap_or(0.0));
    }
    let _ = stop_tx.send(true);
    let _ = worker.await;
    engine.store().close().await;
    Ok(())
}
