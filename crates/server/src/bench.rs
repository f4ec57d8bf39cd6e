//! `countersign bench`: a load generator for the approval workflow, over HTTP, against a
//! server on durable SQLite (WAL, `synchronous = FULL`).
//!
//! One workflow is: create a request → one `one_of` approval → two `all_of` approvals → the
//! grant is active. The bench writes its own configuration and database into a temporary
//! directory, starts the real server in this process on a loopback port, mints tokens, and
//! runs `--concurrency` clients for `--seconds` after a warm-up. Every client is its own
//! requester and walks through many resources, so that no request is answered by an earlier
//! grant (rule 5) and every workflow takes the full path. It prints completed workflows per
//! second and the p50/p99 latency of a whole workflow. The four reviewers own the resources,
//! so the last approval's response shows the active grant, which the bench checks.
//!
//! Client and server share this process and the machine's cores, so the figure is a lower
//! bound of what the server alone could do.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engine::SystemClock;
use proto::{CreateRequestBody, RequestView, ReviewBody};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Concurrent clients, each running workflows back to back.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Length of the measured period.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Load before measuring starts.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Resources in the generated configuration (each client walks through them in turn).
    #[arg(long, default_value_t = 600)]
    pub resources: usize,
}

fn bench_config(dir: &std::path::Path, args: &BenchArgs) -> String {
    let mut s = format!(
        "server {{\n  listen = \"127.0.0.1:0\"\n  database = \"sqlite://{}\"\n}}\n",
        dir.join("bench.db").display()
    );
    for u in ["s1a", "s1b", "s2a", "s2b"] {
        let _ = writeln!(s, "user \"{u}@bench.test\" {{}}");
    }
    for i in 0..args.concurrency {
        let _ = writeln!(s, "user \"req{i}@bench.test\" {{}}");
    }
    for r in 0..args.resources {
        let _ = write!(
            s,
            r#"resource "r{r}" {{
  max_duration = "1h"
  owners       = ["s1a@bench.test", "s1b@bench.test", "s2a@bench.test", "s2b@bench.test"]
  workflow = {{ steps = [
    {{ reviewers = {{ one_of = ["s1a@bench.test", "s1b@bench.test"] }} }},
    {{ reviewers = {{ all_of = ["s2a@bench.test", "s2b@bench.test"] }} }},
  ] }}
}}
"#
        );
    }
    s
}

#[derive(Clone)]
struct Tokens {
    requesters: Arc<Vec<String>>,
    s1: [String; 2],
    s2: [String; 2],
}

/// Real time, for measuring only.
#[allow(clippy::disallowed_methods)]
pub(crate) fn instant() -> std::time::Instant {
    std::time::Instant::now()
}

pub async fn main(args: BenchArgs) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign bench: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(args: BenchArgs) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let text = bench_config(dir.path(), &args);
    let cfg = config::load_str("bench.hcl", &text).map_err(|e| e.to_string())?;
    let engine = crate::open(cfg, Arc::new(SystemClock))
        .await
        .map_err(|e| e.to_string())?;
    let mint = |u: String| {
        let engine = engine.clone();
        async move { engine.create_token(&u).await.map_err(|e| e.to_string()) }
    };
    let mut requesters = vec![];
    for i in 0..args.concurrency {
        requesters.push(mint(format!("req{i}@bench.test")).await?);
    }
    let tokens = Tokens {
        requesters: Arc::new(requesters),
        s1: [
            mint("s1a@bench.test".into()).await?,
            mint("s1b@bench.test".into()).await?,
        ],
        s2: [
            mint("s2a@bench.test".into()).await?,
            mint("s2b@bench.test".into()).await?,
        ],
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::run(
        listener,
        engine,
        crate::RunOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let start = instant();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.seconds);
    let errors = Arc::new(AtomicU64::new(0));
    let mut clients = vec![];
    for c in 0..args.concurrency {
        let (http, base, tokens, errors) =
            (http.clone(), base.clone(), tokens.clone(), errors.clone());
        let resources = args.resources;
        clients.push(tokio::spawn(async move {
            let mut latencies = vec![];
            let mut i = 0usize;
            while instant() < end {
                let t0 = instant();
                let resource = format!("r{}", i % resources);
                i += 1;
                match workflow(&http, &base, &tokens, c, resource).await {
                    Ok(()) if t0 >= measure_from && instant() <= end => {
                        latencies.push(t0.elapsed().as_micros() as u64)
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("workflow failed: {e}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut all = vec![];
    for c in clients {
        all.extend(c.await.map_err(|e| e.to_string())?);
    }
    let _ = stop.send(());
    let _ = server.await;
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
    };
    let ms = |v: Option<u64>| {
        v.map(|us| format!("{:.1} ms", us as f64 / 1000.0))
            .unwrap_or("-".into())
    };
    println!(
        "workflows/s: {:.0}  (completed {} in {}s, concurrency {})",
        all.len() as f64 / args.seconds as f64,
        all.len(),
        args.seconds,
        args.concurrency
    );
    println!("latency p50: {}  p99: {}", ms(pct(0.50)), ms(pct(0.99)));
    println!("errors: {}", errors.load(Ordering::Relaxed));
    Ok(())
}

async fn workflow(
    http: &reqwest::Client,
    base: &str,
    tokens: &Tokens,
    client: usize,
    resource: String,
) -> Result<(), String> {
    async fn call<B: serde::Serialize>(
        http: &reqwest::Client,
        url: String,
        token: &str,
        body: &B,
    ) -> Result<RequestView, String> {
        let res = http
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
    let body = CreateRequestBody {
        resource,
        reason: "bench".into(),
        duration: Some("1h".into()),
        ..Default::default()
    };
    let r = call(
        http,
        format!("{base}/v1/requests"),
        &tokens.requesters[client],
        &body,
    )
    .await?;
    let approve = ReviewBody {
        decision: "approve".into(),
        comment: None,
        duration: None,
        scope: None,
    };
    let url = format!("{base}/v1/requests/{}/reviews", r.id);
    call(http, url.clone(), &tokens.s1[client % 2], &approve).await?;
    call(http, url.clone(), &tokens.s2[0], &approve).await?;
    let done = call(http, url, &tokens.s2[1], &approve).await?;
    match done.grant.as_ref().map(|g| g.state.as_str()) {
        Some("active") if done.state == "approved" => Ok(()),
        other => Err(format!(
            "workflow ended {} with grant {other:?}",
            done.state
        )),
    }
}
