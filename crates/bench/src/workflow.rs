//! `countersign-bench workflow`: a load generator for the approval workflow, over HTTP,
//! against a server on durable SQLite (WAL, `synchronous = FULL`).
//!
//! One workflow is: create a request → one `one_of` approval → two `all_of` approvals → the
//! grant is active. The bench writes its own configuration and database into a temporary
//! directory, starts the real server in this process on a loopback port, mints tokens, and
//! runs `--concurrency` clients for `--seconds` after a warm-up (or until `--workflows` have
//! started). It prints completed workflows per second and the p50/p99 latency of a whole
//! workflow. The four reviewers own the resources, so the last approval's response shows the
//! active grant, which the bench checks.
//!
//! Every workflow asks for a (requester, resource) pair that no earlier workflow of the run
//! used (see [`Plan`]), so none is answered by an earlier grant (rule 5) and every workflow
//! takes the full path, however long the run and however few the clients.
//!
//! Client and server share this process and the machine's cores, so the figure is a lower
//! bound of what the server alone could do.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use engine::SystemClock;
use proto::{CreateRequestBody, RequestView, ReviewBody};

use crate::instant;

#[derive(Debug, Clone, clap::Args)]
pub struct WorkflowArgs {
    /// Concurrent clients, each running workflows back to back.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// Length of the measured period, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub seconds: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub warmup: u64,
    /// Resources in the generated configuration.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub resources: u64,
    /// Stop once this many workflows (warm-up included) have started, or at the end of the
    /// measured period if that comes first.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub workflows: Option<u64>,
    /// The most workflows per second this machine could complete: it sizes the generated
    /// requesters so that no workflow meets an earlier grant. A run that goes faster stops
    /// with an error rather than measuring something else.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rate: u64,
    /// The database to run on: an empty one (`postgres://…`, `sqlite://…`). By default a
    /// fresh SQLite file in a temporary directory.
    #[arg(long)]
    pub database: Option<String>,
    /// Servers on that database, each with its own store (replicas); clients take turns
    /// among them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub replicas: u64,
    /// Notifications on: an email channel to this SMTP server (HOST:PORT on loopback,
    /// without TLS) with the default rules, so that every step's reviewers and the requester
    /// are emailed. Off by default.
    #[arg(long, value_name = "HOST:PORT")]
    pub email: Option<String>,
}

/// The generated requesters and resources of a run, and which pair each workflow uses.
///
/// Workflow `n` (the `n`th started, across all clients) asks as requester `n % requesters`
/// for resource `n / requesters`. No two workflows share a pair, so no request is answered by
/// the grant of an earlier one (rule 5), and workflows in flight at the same time have
/// different requesters. The plan holds at least as many pairs as the run can start: the
/// `--workflows` limit, or `--max-rate` workflows a second for the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    requesters: u64,
    resources: u64,
}

/// More requesters than this makes a configuration too slow to generate and load; raise
/// `--resources` instead.
const MAX_REQUESTERS: u64 = 100_000;

impl Plan {
    fn for_run(args: &WorkflowArgs) -> Result<Plan, String> {
        let most = match args.workflows {
            Some(n) => n,
            None => args
                .max_rate
                .saturating_mul(args.warmup.saturating_add(args.seconds)),
        };
        let resources = args.resources.max(1);
        let requesters = most.div_ceil(resources).max(args.concurrency).max(1);
        if requesters > MAX_REQUESTERS {
            return Err(format!(
                "{most} workflows over {resources} resources would need {requesters} requesters \
                 (at most {MAX_REQUESTERS}); raise --resources, or lower --max-rate or --workflows"
            ));
        }
        Ok(Plan {
            requesters,
            resources,
        })
    }

    /// How many workflows the plan has a fresh pair for.
    fn pairs(&self) -> u64 {
        self.requesters * self.resources
    }

    /// The (requester, resource) indices of workflow `n`, if the plan reaches that far.
    fn pair(&self, n: u64) -> Option<(u64, u64)> {
        (n < self.pairs()).then(|| (n % self.requesters, n / self.requesters))
    }
}

fn bench_config(database: &str, plan: Plan, email: Option<&str>) -> Result<String, String> {
    let mut s = format!("server {{\n  listen = \"127.0.0.1:0\"\n  database = \"{database}\"\n}}\n");
    if let Some(smtp) = email {
        s.push_str(&crate::notify::email_channel(smtp)?);
    }
    for u in ["s1a", "s1b", "s2a", "s2b"] {
        let _ = writeln!(s, "user \"{u}@bench.test\" {{}}");
    }
    for i in 0..plan.requesters {
        let _ = writeln!(s, "user \"req{i}@bench.test\" {{}}");
    }
    for r in 0..plan.resources {
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
    Ok(s)
}

#[derive(Clone)]
struct Tokens {
    requesters: Arc<Vec<String>>,
    s1: [String; 2],
    s2: [String; 2],
}

/// What one run measured.
#[derive(Debug)]
struct Report {
    plan: Plan,
    /// Latencies of the workflows that started and ended inside the measured period, in
    /// microseconds, sorted.
    latencies: Vec<u64>,
    /// The measured period, in seconds: shorter than `--seconds` when `--workflows` ended
    /// the run first.
    measured_secs: f64,
    /// Workflows that completed, warm-up included.
    completed: u64,
    errors: u64,
}

pub async fn main(args: WorkflowArgs) -> ExitCode {
    match run(args.clone()).await {
        Ok(report) => {
            let all = &report.latencies;
            let pct = |p: f64| {
                all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                    .copied()
            };
            let ms = |v: Option<u64>| {
                v.map(|us| format!("{:.1} ms", us as f64 / 1000.0))
                    .unwrap_or("-".into())
            };
            let rate = if report.measured_secs > 0.0 {
                all.len() as f64 / report.measured_secs
            } else {
                0.0
            };
            println!(
                "workflows/s: {rate:.0}  (completed {} in {:.1}s, concurrency {})",
                all.len(),
                report.measured_secs,
                args.concurrency
            );
            println!("latency p50: {}  p99: {}", ms(pct(0.50)), ms(pct(0.99)));
            println!(
                "workflows: {} completed in all, {} requesters x {} resources",
                report.completed, report.plan.requesters, report.plan.resources
            );
            println!("errors: {}", report.errors);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("countersign-bench workflow: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(args: WorkflowArgs) -> Result<Report, String> {
    let plan = Plan::for_run(&args)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let text = bench_config(&database, plan, args.email.as_deref())?;
    let cfg = config::load_str("bench.hcl", &text).map_err(|e| e.to_string())?;
    let mut engines = vec![];
    for _ in 0..args.replicas {
        engines.push(
            countersign::open(cfg.clone(), Arc::new(SystemClock))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let engine = engines[0].clone();
    // Minted all at once, so that the writer commits them in groups.
    let mut minting = tokio::task::JoinSet::new();
    for i in 0..plan.requesters {
        let engine = engine.clone();
        minting.spawn(async move {
            let token = engine.create_token(&format!("req{i}@bench.test")).await;
            (i, token.map_err(|e| e.to_string()))
        });
    }
    let mut requesters = vec![String::new(); plan.requesters as usize];
    while let Some(done) = minting.join_next().await {
        let (i, token) = done.map_err(|e| e.to_string())?;
        requesters[i as usize] = token?;
    }
    let mint = |u: &str| {
        let engine = engine.clone();
        let u = u.to_owned();
        async move { engine.create_token(&u).await.map_err(|e| e.to_string()) }
    };
    let tokens = Tokens {
        requesters: Arc::new(requesters),
        s1: [mint("s1a@bench.test").await?, mint("s1b@bench.test").await?],
        s2: [mint("s2a@bench.test").await?, mint("s2b@bench.test").await?],
    };
    drop(engine);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut bases = vec![];
    let mut servers = vec![];
    for engine in engines {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        bases.push(format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        ));
        let mut stopped = stopped.clone();
        servers.push(tokio::spawn(countersign::run(
            listener,
            engine,
            countersign::RunOptions::default(),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        )));
    }
    let bases = Arc::new(bases);

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::try_from(args.concurrency * 2).unwrap_or(usize::MAX))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let limit = args.workflows.unwrap_or(u64::MAX);
    let start = instant();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.seconds);
    let next = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicBool::new(false));
    let mut clients = vec![];
    for client in 0..args.concurrency {
        let base = bases[(client % args.replicas) as usize].clone();
        let (http, tokens) = (http.clone(), tokens.clone());
        let (next, completed, errors, exhausted) = (
            next.clone(),
            completed.clone(),
            errors.clone(),
            exhausted.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut latencies = vec![];
            while instant() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let Some((who, resource)) = plan.pair(n) else {
                    exhausted.store(true, Ordering::Relaxed);
                    break;
                };
                let t0 = instant();
                let reviewer = (n % 2) as usize;
                match workflow(&http, &base, &tokens, who as usize, reviewer, resource).await {
                    Ok(()) => {
                        completed.fetch_add(1, Ordering::Relaxed);
                        if t0 >= measure_from && instant() <= end {
                            latencies.push(t0.elapsed().as_micros() as u64)
                        }
                    }
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
    let finished = instant().min(end);
    let _ = stop.send(true);
    for server in servers {
        let _ = server.await;
    }
    if exhausted.load(Ordering::Relaxed) {
        return Err(format!(
            "the run started all {} workflows its {} requesters x {} resources allow, so the \
             next would have met an earlier grant (rule 5); raise --max-rate (now {})",
            plan.pairs(),
            plan.requesters,
            plan.resources,
            args.max_rate
        ));
    }
    all.sort_unstable();
    Ok(Report {
        plan,
        latencies: all,
        measured_secs: finished
            .saturating_duration_since(measure_from)
            .as_secs_f64(),
        completed: completed.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    })
}

async fn workflow(
    http: &reqwest::Client,
    base: &str,
    tokens: &Tokens,
    requester: usize,
    reviewer: usize,
    resource: u64,
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
        resource: format!("r{resource}"),
        reason: "bench".into(),
        duration: Some("1h".into()),
        ..Default::default()
    };
    let r = call(
        http,
        format!("{base}/v1/requests"),
        &tokens.requesters[requester],
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
    call(http, url.clone(), &tokens.s1[reviewer], &approve).await?;
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn args(concurrency: u64, resources: u64, workflows: Option<u64>) -> WorkflowArgs {
        WorkflowArgs {
            concurrency,
            seconds: 20,
            warmup: 3,
            resources,
            workflows,
            max_rate: 10_000,
            database: None,
            replicas: 1,
            email: None,
        }
    }

    /// Issue 13, item 7 (rule 5): the plan gives every workflow a pair of its own, and has
    /// enough of them for the run. Before, one client cycled through 600 resources as one
    /// requester, and from workflow 601 on every request met its own earlier grant.
    #[test]
    fn hardening_7_plan_gives_every_workflow_a_fresh_pair() {
        let plan = Plan::for_run(&args(3, 7, Some(20))).expect("plan");
        assert_eq!(
            plan,
            Plan {
                requesters: 3,
                resources: 7
            }
        );
        let pairs: HashSet<_> = (0..plan.pairs()).map(|n| plan.pair(n)).collect();
        assert_eq!(pairs.len(), 21, "every workflow has its own pair");
        assert!(pairs.iter().all(|p| p.is_some_and(|(u, r)| u < 3 && r < 7)));
        assert_eq!(plan.pair(21), None, "the plan ends where its pairs do");
        // Workflows in flight together have different requesters.
        assert_ne!(plan.pair(0).map(|p| p.0), plan.pair(1).map(|p| p.0));
    }

    /// Issue 13, item 7: the default run with one client (20 s after 3 s of warm-up, sized
    /// for 10,000 workflows a second) has room for 230,000 workflows, not 600.
    #[test]
    fn hardening_7_plan_is_sized_to_the_run() {
        let one_client = Plan::for_run(&args(1, 600, None)).expect("plan");
        assert_eq!(
            one_client,
            Plan {
                requesters: 384,
                resources: 600
            }
        );
        assert!(one_client.pairs() >= 230_000);
        let many_clients = Plan::for_run(&args(1_000, 10, Some(50))).expect("plan");
        assert_eq!(
            many_clients.requesters, 1_000,
            "at least one requester per client"
        );
        let too_big = WorkflowArgs {
            seconds: 86_400,
            ..args(1, 1, None)
        };
        let refused = Plan::for_run(&too_big).expect_err("refused");
        assert!(refused.contains("raise --resources"), "{refused}");
    }

    /// Issue 13, item 7 (rule 5), end to end: one client runs six times as many workflows as
    /// there are resources against the real server, and every one takes the full path to an
    /// active grant. Before the fix, workflow 6 met workflow 1's grant and all later ones
    /// failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hardening_7_one_client_outlasts_the_resources() {
        engine::connector::install_tls_provider();
        let run_args = WorkflowArgs {
            seconds: 600,
            warmup: 0,
            ..args(1, 5, Some(30))
        };
        let report = run(run_args).await.expect("the bench runs");
        assert_eq!(report.errors, 0);
        assert_eq!(report.completed, 30);
        assert_eq!(
            report.plan,
            Plan {
                requesters: 6,
                resources: 5
            }
        );
    }
}
