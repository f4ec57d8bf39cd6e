//! `countersign-bench lists`: what one page of a list costs with many requests stored, for
//! each kind of caller (issue 14, item 3; PRODUCT.md §6), and the server's resident memory
//! per pending request.
//!
//! The bench writes its configuration (people, groups, resources with one or two steps,
//! applications, an admin) and opens the real engine on a database: a temporary SQLite file,
//! or the one `--database` names (SQLite or PostgreSQL). If that database holds no requests
//! yet, it seeds `--requests` of them through the store in big write jobs
//! (`Engine::seed_requests`: `Request::create` and its transitions, with their audit events,
//! timers and `request_people` rows, without HTTP). A database seeded by an earlier run with
//! the same shape is reused as it is, so that the costly seeding happens once and a fresh
//! process (whose memory holds no seeding garbage) measures.
//!
//! The shape: requesters are skewed (a few people ask for thousands of requests, most for a
//! handful); each resource has three owners and four step-1 reviewers drawn from a staff of
//! 1,000 people; every fourth resource has a second step decided by a three-person security
//! team, who therefore see a quarter of all requests; a share of those requests has its first
//! step approved, so that the team may decide them; a fifth of the requests is made by one of
//! five applications for a person.
//!
//! Then it serves the real router on a loopback port and, one call at a time, reads for each
//! kind of caller (a requester, a reviewer's inbox `reviewable_by=me`, an admin, an
//! application, a person who can see nothing) the first page and a deep page (`--depth`
//! pages in, reached by following `next_cursor`, or the last page if the list is shorter),
//! `--repeat` times each, and prints p50 and p99 per kind; then the process's resident memory
//! (VmRSS) and what that is per pending request.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use domain::{Context, NewRequest, Timestamp};
use engine::{Clock, Engine, Seed, SystemClock};

use crate::{instant, percentile};

#[derive(Debug, Clone, clap::Args)]
pub struct ListsArgs {
    /// Requests to seed (when the database holds none yet).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub requests: u64,
    /// The database: `sqlite://PATH` or `postgres://…`. A temporary SQLite file by default.
    /// One already seeded (by a run with the same --users and --resources) is reused.
    #[arg(long)]
    pub database: Option<String>,
    /// People who may ask (besides the staff, the admin and the idle people).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub users: u64,
    /// Resources in the configuration.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(4..=10_000))]
    pub resources: u64,
    /// Items per page (`limit`).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    /// How deep the deep page is, in pages.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub depth: u32,
    /// Callers of each kind.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub callers: u64,
    /// Times each caller's first and deep page are read.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub repeat: u64,
    /// Share of the seeded requests their requester cancelled (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub cancelled: f64,
}

/// Requests per write job while seeding.
const SEED_BATCH: u64 = 2_000;
/// The staff: owners come from the first half, step-1 reviewers from the second.
const STAFF: u64 = 1_000;
/// The applications that make requests for people.
const APPS: u64 = 5;

pub async fn run(args: ListsArgs) -> ExitCode {
    match measure(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign-bench lists: {e}");
            ExitCode::from(3)
        }
    }
}

fn config_text(args: &ListsArgs, database: &str) -> String {
    let mut s = format!(
        "server {{\n  listen = \"127.0.0.1:0\"\n  database = \"{database}\"\n  reconcile_interval = \"off\"\n}}\n"
    );
    let _ = writeln!(s, "user \"admin@bench.test\" {{ roles = [\"admin\"] }}");
    for i in 0..args.callers {
        let _ = writeln!(s, "user \"idle{i}@bench.test\" {{}}");
    }
    for i in 0..STAFF {
        let _ = writeln!(s, "user \"staff{i}@bench.test\" {{}}");
    }
    for i in 0..3 {
        let _ = writeln!(s, "user \"sec{i}@bench.test\" {{}}");
    }
    let _ = writeln!(
        s,
        "group \"sec\" {{ members = [\"sec0@bench.test\", \"sec1@bench.test\", \"sec2@bench.test\"] }}"
    );
    for i in 0..args.users {
        let _ = writeln!(s, "user \"u{i}@bench.test\" {{}}");
    }
    for a in 0..APPS {
        let _ = writeln!(s, "app \"ci{a}\" {{ roles = [\"request_approval\"] }}");
    }
    let staff = |k: u64| format!("\"staff{}@bench.test\"", k % STAFF);
    for r in 0..args.resources {
        let owners: Vec<String> = (0..3).map(|k| staff((r * 3 + k) % (STAFF / 2))).collect();
        let reviewers: Vec<String> = (0..4)
            .map(|k| staff(STAFF / 2 + (r * 4 + k) % (STAFF / 2)))
            .collect();
        let second = if r % 4 == 0 {
            ",\n    { reviewers = { all_of = [\"group:sec\"] } }"
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"resource "res{r}" {{
  max_duration = "4h"
  pending_ttl  = "3650d"
  owners       = [{}]
  workflow = {{ steps = [
    {{ reviewers = {{ one_of = [{}] }} }}{second}
  ] }}
}}
"#,
            owners.join(", "),
            reviewers.join(", ")
        );
    }
    s
}

/// A small deterministic generator (SplitMix64), so that every run seeds the same shape.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The requester of a seeded request: `u{users-1}` most often, then the next ones down; the
/// share of `u{users-1-k}` falls off as about `1/sqrt(k)`.
fn requester(rng: &mut Rng, users: u64) -> u64 {
    let x = rng.unit();
    let k = ((users as f64) * x * x) as u64;
    users - 1 - k.min(users - 1)
}

/// Seeds `args.requests` requests, created a millisecond apart and ending an hour ago.
/// Returns how many are still pending.
async fn seed(engine: &Arc<Engine>, args: &ListsArgs, now: Timestamp) -> Result<u64, String> {
    let mut rng = Rng(20_261_207);
    let n = args.requests;
    let first = now.millis() - 3_600_000 - i64::try_from(n).unwrap_or(i64::MAX);
    let started = instant();
    let mut pending = 0;
    let mut jobs = tokio::task::JoinSet::new();
    let mut i = 0;
    while i < n {
        let end = (i + SEED_BATCH).min(n);
        let mut batch = Vec::with_capacity((end - i) as usize);
        for k in i..end {
            let r = rng.below(args.resources);
            let who = requester(&mut rng, args.users);
            let created_by = (rng.below(5) == 0).then(|| format!("app:ci{}", rng.below(APPS)));
            let approvals = usize::from(r.is_multiple_of(4) && rng.unit() < 0.3);
            let cancel = rng.unit() < args.cancelled;
            if !cancel {
                pending += 1;
            }
            batch.push(Seed {
                resource: format!("res{r}"),
                new: NewRequest {
                    id: String::new(),
                    requester: format!("u{who}@bench.test"),
                    reason: "bench".into(),
                    duration: None,
                    fields: Default::default(),
                    start_at: None,
                    extends: None,
                    context: Context {
                        created_by,
                        ..Context::default()
                    },
                    action: None,
                    run: None,
                },
                at: Timestamp::from_millis(first + i64::try_from(k).unwrap_or(0)),
                approvals,
                cancel,
            });
        }
        let e = engine.clone();
        jobs.spawn(async move { e.seed_requests(batch).await });
        // A few jobs in flight, so that the store groups them.
        if jobs.len() >= 4
            && let Some(r) = jobs.join_next().await
        {
            r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
        i = end;
        if i % 100_000 == 0 {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "seeding: {i} requests in {secs:.0} s ({:.0}/s)",
                i as f64 / secs
            );
        }
    }
    while let Some(r) = jobs.join_next().await {
        r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded: {n} requests ({pending} pending) in {secs:.0} s ({:.0}/s)",
        n as f64 / secs
    );
    Ok(pending)
}

/// The process's resident memory, in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One kind of caller: who, and which list they read.
struct Kind {
    name: &'static str,
    /// Subjects, one token each.
    who: Vec<String>,
    query: &'static str,
}

/// The answer of one page: how long it took, how many items, the next cursor.
async fn page(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<(Duration, usize, Option<String>), String> {
    let t0 = instant();
    let res = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let bytes = res.bytes().await.map_err(|e| e.to_string())?;
    let took = t0.elapsed();
    if !status.is_success() {
        return Err(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let list: proto::RequestList = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok((took, list.requests.len(), list.next_cursor))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn measure(args: &ListsArgs) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("lists.db").display()));
    let text = config_text(args, &database);
    let cfg = config::load_str("lists.hcl", &text).map_err(|e| e.to_string())?;
    let clock = Arc::new(SystemClock);
    let engine = countersign::open(cfg, clock.clone())
        .await
        .map_err(|e| e.to_string())?;
    let admin = engine
        .actor("admin@bench.test")
        .ok_or("no admin in the configuration")?;
    let stored = engine
        .list_requests(
            &admin,
            engine::RequestQuery {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let seeded_now = stored.items.is_empty();
    if seeded_now {
        seed(&engine, args, clock.now()).await?;
    } else {
        println!("reusing the requests already in {}", redact(&database));
    }
    let pending = engine
        .store()
        .counts(clock.now())
        .await
        .map_err(|e| e.to_string())?
        .pending_requests;

    let kinds = vec![
        Kind {
            name: "requester",
            who: (0..args.callers)
                .map(|k| format!("u{}@bench.test", args.users - 1 - k))
                .collect(),
            query: "",
        },
        Kind {
            name: "reviewer",
            who: (0..args.callers)
                .map(|k| {
                    // Step-1 reviewers, and one of the security team.
                    if k == 0 {
                        "sec0@bench.test".to_owned()
                    } else {
                        format!("staff{}@bench.test", STAFF / 2 + k * 7)
                    }
                })
                .collect(),
            query: "&reviewable_by=me",
        },
        Kind {
            name: "admin",
            who: vec!["admin@bench.test".into()],
            query: "",
        },
        Kind {
            name: "app",
            who: (0..args.callers.min(APPS))
                .map(|a| format!("app:ci{a}"))
                .collect(),
            query: "",
        },
        Kind {
            name: "nobody",
            who: (0..args.callers)
                .map(|i| format!("idle{i}@bench.test"))
                .collect(),
            query: "",
        },
    ];
    let mut tokens = std::collections::HashMap::new();
    for k in &kinds {
        for w in &k.who {
            let t = engine.create_token(w).await.map_err(|e| e.to_string())?;
            tokens.insert(w.clone(), t);
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
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
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;

    println!(
        "requests: pending {pending}; page: {} items; deep page: page {} (or the last); {} reads of each page per caller",
        args.limit, args.depth, args.repeat
    );
    println!("kind       callers  depth  first p50  first p99  deep p50  deep p99  (ms)");
    for k in &kinds {
        let mut first = vec![];
        let mut deep = vec![];
        let mut depths = vec![];
        for w in &k.who {
            let token = &tokens[w];
            let url = format!("{base}/v1/requests?limit={}{}", args.limit, k.query);
            // Walk to the deep page.
            let mut cursor: Option<String> = None;
            let mut depth = 1;
            let (_, _, mut next) = page(&http, &url, token).await?;
            while depth < args.depth
                && let Some(c) = next.take()
            {
                let (_, _, n) = page(&http, &format!("{url}&cursor={c}"), token).await?;
                cursor = Some(c);
                next = n;
                depth += 1;
            }
            depths.push(depth);
            let deep_url = match &cursor {
                Some(c) => format!("{url}&cursor={c}"),
                None => url.clone(),
            };
            for _ in 0..args.repeat {
                first.push(page(&http, &url, token).await?.0);
                deep.push(page(&http, &deep_url, token).await?.0);
            }
        }
        first.sort_unstable();
        deep.sort_unstable();
        depths.sort_unstable();
        println!(
            "{:<10} {:>7}  {:>5}  {:>9}  {:>9}  {:>8}  {:>8}",
            k.name,
            k.who.len(),
            percentile(&depths, 50.0),
            ms(percentile(&first, 50.0)),
            ms(percentile(&first, 99.0)),
            ms(percentile(&deep, 50.0)),
            ms(percentile(&deep, 99.0)),
        );
    }
    let rss = rss_kib().unwrap_or(0);
    println!(
        "rss: {:.0} MiB with {pending} pending requests: {:.2} KiB per pending request{}",
        rss as f64 / 1024.0,
        rss as f64 / pending.max(1) as f64,
        if seeded_now {
            " (this process also seeded them: rerun with --database to measure a fresh one)"
        } else {
            ""
        }
    );
    let _ = stop.send(());
    let _ = server.await;
    engine.store().close().await;
    Ok(())
}

/// The database URL without a password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The skew gives the last users many requests and most users a few.
    #[test]
    fn lists_requesters_are_skewed() {
        let mut rng = Rng(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[requester(&mut rng, 1000) as usize] += 1;
        }
        assert!(counts[999] > 2_000, "{}", counts[999]);
        assert!(counts[0] < 100, "{}", counts[0]);
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://…@h/db");
    }

    /// The whole bench, small, on SQLite: it seeds, serves and measures without an error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_bench_runs_end_to_end() {
        engine::connector::install_tls_provider();
        let args = ListsArgs {
            requests: 3_000,
            database: None,
            users: 50,
            resources: 8,
            limit: 10,
            depth: 3,
            callers: 2,
            repeat: 2,
            cancelled: 0.1,
        };
        measure(&args).await.expect("the bench runs");
    }
}
