//! The metrics of one server: every series of `/metrics` but the HTTP ones is named and
//! described here, and recorded through the typed methods of [`Metrics`].
//!
//! Each engine owns its own recorder (a `PrometheusRecorder` built by [`Metrics::new`]) rather
//! than installing the process-wide one that the `metrics` macros use: tests run many servers
//! in one process, and with a recorder per server each `/metrics` shows only that server's
//! activity, so a test can check exact values. The API registers its HTTP series on the same
//! recorder ([`Metrics::recorder`]), and the SQLite writer records into the handles of
//! [`Metrics::writer`].
//!
//! Services record after their write job returned, that is after the commit: a counter never
//! counts a transition that was rolled back. Counters and histograms start at zero with the
//! process. The gauges that describe stored state (pending requests, active grants, the
//! callback queue, the due-job backlog) are not kept up to date by transitions: [`Metrics::render`]
//! counts them in the store at each scrape, so they are right after a restart, whatever
//! happened while the server was down.
//!
//! Latencies are measured with [`crate::clock::Stopwatch`]; nothing here reads the wall clock,
//! and no metric feeds a decision.

use std::time::Duration;

use domain::{Request, TimerKind, Timestamp};
use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use store::Store;
use store::metrics::WriterMetrics;

pub const REQUESTS_CREATED: &str = "countersign_requests_created_total";
pub const REQUESTS_DECIDED: &str = "countersign_requests_decided_total";
pub const REVIEWS: &str = "countersign_reviews_total";
pub const REQUESTS_PENDING: &str = "countersign_requests_pending";
pub const GRANTS_ACTIVE: &str = "countersign_grants_active";
pub const GRANT_EXPIRY_LAG: &str = "countersign_grant_expiry_lag_seconds";
pub const CONNECTOR_CALLS: &str = "countersign_connector_calls_total";
pub const CONNECTOR_CALL_DURATION: &str = "countersign_connector_call_duration_seconds";
pub const CALLBACK_DELIVERIES: &str = "countersign_callback_deliveries_total";
pub const CALLBACK_DELIVERY_DURATION: &str = "countersign_callback_delivery_duration_seconds";
pub const CALLBACK_QUEUE: &str = "countersign_callback_queue_depth";
pub const JOBS_DUE: &str = "countersign_jobs_due";
pub const JOBS_OLDEST_DUE_AGE: &str = "countersign_jobs_oldest_due_age_seconds";
pub const STORE_GROUP_JOBS: &str = "countersign_store_group_jobs";
pub const STORE_COMMIT_DURATION: &str = "countersign_store_commit_duration_seconds";
pub const STORE_TRANSACTION_DURATION: &str = "countersign_store_transaction_duration_seconds";
pub const STORE_ROLLBACKS: &str = "countersign_store_rollbacks_total";
pub const SCRAPE_ERRORS: &str = "countersign_metrics_scrape_errors_total";

/// Buckets of every latency histogram, in seconds: a millisecond to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of the group size: powers of two up to the writer's largest group (512).
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Buckets of the expiry lag, in seconds: ten milliseconds to an hour.
const LAG_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// What every handle is registered with; the Prometheus recorder ignores it.
static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// How a connector call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    Ok,
    Error,
    /// No answer within the connector's timeout.
    Timeout,
}

impl CallResult {
    fn as_str(self) -> &'static str {
        match self {
            CallResult::Ok => "ok",
            CallResult::Error => "error",
            CallResult::Timeout => "timeout",
        }
    }
}

/// What happened in a write job that is recorded once the job committed: a batch of timers
/// expires requests and grants inside one transaction.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// Requests that reached their outcome, as (resource, outcome).
    pub decided: Vec<(String, &'static str)>,
    /// For each grant whose expiry was recorded, the time since its `expires_at`.
    pub expiry_lag_ms: Vec<i64>,
}

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pending_requests: Gauge,
    active_grants: Gauge,
    callback_queue: Gauge,
    jobs_due: Vec<(TimerKind, Gauge)>,
    oldest_due_age: Gauge,
    expiry_lag: Histogram,
    scrape_errors: Counter,
    /// One scrape at a time counts the store; a scrape that arrives meanwhile waits for it.
    scraping: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A new recorder, with every series that has no label registered (so that it shows as 0
    /// before anything happens) and every family described.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(STORE_GROUP_JOBS.into()), GROUP_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(GRANT_EXPIRY_LAG.into()), LAG_BUCKETS)
            })
            .expect("the bucket lists are not empty")
            .build_recorder();
        describe(&recorder);
        let gauge =
            |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &META);
        let jobs_due = TimerKind::ALL
            .into_iter()
            .map(|k| {
                let key = Key::from_parts(JOBS_DUE, vec![Label::new("kind", k.as_str())]);
                (k, recorder.register_gauge(&key, &META))
            })
            .collect();
        let m = Metrics {
            handle: recorder.handle(),
            pending_requests: gauge(REQUESTS_PENDING),
            active_grants: gauge(GRANTS_ACTIVE),
            callback_queue: gauge(CALLBACK_QUEUE),
            jobs_due,
            oldest_due_age: gauge(JOBS_OLDEST_DUE_AGE),
            expiry_lag: recorder
                .register_histogram(&Key::from_static_name(GRANT_EXPIRY_LAG), &META),
            scrape_errors: recorder.register_counter(&Key::from_static_name(SCRAPE_ERRORS), &META),
            recorder,
            scraping: tokio::sync::Mutex::new(()),
        };
        // Every result of a callback attempt, so that a rate over them never starts from a gap.
        for result in ["delivered", "retry", "failed", "gone"] {
            let _ = m.counter(CALLBACK_DELIVERIES, vec![Label::new("result", result)]);
        }
        let _ = m.histogram(CALLBACK_DELIVERY_DURATION, vec![]);
        m
    }

    /// The recorder, for the series another crate owns (the API's HTTP series).
    pub fn recorder(&self) -> &dyn Recorder {
        &self.recorder
    }

    /// The handles the SQLite writer records each group into.
    pub fn writer(&self) -> WriterMetrics {
        WriterMetrics {
            group_jobs: self.histogram(STORE_GROUP_JOBS, vec![]),
            commit_seconds: self.histogram(STORE_COMMIT_DURATION, vec![]),
            transaction_seconds: self.histogram(STORE_TRANSACTION_DURATION, vec![]),
            rollbacks: self.counter(STORE_ROLLBACKS, vec![]),
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &META)
    }

    /// A request was created (not a replay of an `Idempotency-Key`). A request decided at
    /// creation (by a policy, or answered by a covering grant under rule 5) is counted as
    /// decided too.
    pub(crate) fn created(&self, r: &Request) {
        self.counter(
            REQUESTS_CREATED,
            vec![Label::new("resource", r.resource.clone())],
        )
        .increment(1);
        if r.state.is_terminal() {
            self.decided(&r.resource, r.state.as_str());
        }
    }

    /// A request reached its outcome: `approved`, `denied`, `cancelled` or `expired`.
    pub(crate) fn decided(&self, resource: &str, outcome: &'static str) {
        let labels = vec![
            Label::new("resource", resource.to_owned()),
            Label::new("outcome", outcome),
        ];
        self.counter(REQUESTS_DECIDED, labels).increment(1);
    }

    /// A reviewer approved or denied a step.
    pub(crate) fn reviewed(&self, resource: &str, decision: &'static str) {
        let labels = vec![
            Label::new("resource", resource.to_owned()),
            Label::new("decision", decision),
        ];
        self.counter(REVIEWS, labels).increment(1);
    }

    /// Records what a committed write job observed.
    pub(crate) fn record(&self, o: Observed) {
        for (resource, outcome) in o.decided {
            self.decided(&resource, outcome);
        }
        for ms in o.expiry_lag_ms {
            self.expiry_lag.record(ms.max(0) as f64 / 1000.0);
        }
    }

    /// One connector call (`grant`, `revoke` or `check`) and how long it took.
    pub(crate) fn connector_call(
        &self,
        connector: &str,
        action: &'static str,
        result: CallResult,
        took: Duration,
    ) {
        let c = Label::new("connector", connector.to_owned());
        let a = Label::new("action", action);
        let r = Label::new("result", result.as_str());
        self.counter(CONNECTOR_CALLS, vec![c.clone(), a.clone(), r])
            .increment(1);
        self.histogram(CONNECTOR_CALL_DURATION, vec![c, a])
            .record(took);
    }

    /// One callback attempt: `delivered`, `retry` (it failed and will be tried again),
    /// `failed` (retries ran out) or `gone` (the receiver answered 410), and how long the POST
    /// took.
    pub(crate) fn delivery(&self, result: &'static str, took: Duration) {
        self.counter(CALLBACK_DELIVERIES, vec![Label::new("result", result)])
            .increment(1);
        self.histogram(CALLBACK_DELIVERY_DURATION, vec![])
            .record(took);
    }

    /// Counts the stored state into the gauges, then renders every series in the Prometheus
    /// text format. If the store cannot be read, the gauges keep their last values and
    /// `countersign_metrics_scrape_errors_total` goes up.
    pub async fn render(&self, store: &dyn Store, now: Timestamp) -> String {
        let _one = self.scraping.lock().await;
        match store.counts(now).await {
            Ok(c) => {
                self.pending_requests.set(c.pending_requests as f64);
                self.active_grants.set(c.active_grants as f64);
                self.callback_queue.set(c.pending_deliveries as f64);
                for (kind, gauge) in &self.jobs_due {
                    let n = c
                        .due_jobs
                        .iter()
                        .find(|(k, _)| k == kind)
                        .map_or(0, |(_, n)| *n);
                    gauge.set(n as f64);
                }
                let age_ms = c
                    .oldest_due
                    .map_or(0, |at| (now.millis() - at.millis()).max(0));
                self.oldest_due_age.set(age_ms as f64 / 1000.0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: the store's counts cannot be read");
                self.scrape_errors.increment(1);
            }
        }
        self.handle.render()
    }

    /// Moves the histograms' samples into their buckets, so that they do not pile up in
    /// memory between scrapes. The server runs it every few seconds.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// The help text and unit of every family this module owns.
fn describe(r: &PrometheusRecorder) {
    let counters: [(&'static str, &'static str); 6] = [
        (REQUESTS_CREATED, "Requests created, by resource."),
        (
            REQUESTS_DECIDED,
            "Requests that reached their outcome, by resource and outcome (approved, denied, cancelled, expired).",
        ),
        (
            REVIEWS,
            "Reviews recorded, by resource and decision (approve, deny).",
        ),
        (
            CONNECTOR_CALLS,
            "Connector calls, by connector, action (grant, revoke, check) and result (ok, error, timeout).",
        ),
        (
            CALLBACK_DELIVERIES,
            "Callback delivery attempts, by result (delivered, retry, failed, gone).",
        ),
        (
            STORE_ROLLBACKS,
            "Write groups rolled back because a flush or the commit failed.",
        ),
    ];
    for (name, help) in counters {
        r.describe_counter(name.into(), None, SharedString::from(help));
    }
    r.describe_counter(
        SCRAPE_ERRORS.into(),
        None,
        "Scrapes whose counts of stored state could not be read (the gauges kept their last values).".into(),
    );
    let gauges: [(&'static str, &'static str); 5] = [
        (
            REQUESTS_PENDING,
            "Pending requests, counted in the store at each scrape.",
        ),
        (
            GRANTS_ACTIVE,
            "Active grants, counted in the store at each scrape.",
        ),
        (
            CALLBACK_QUEUE,
            "Callback deliveries not finished yet (due now or waiting for a retry), counted at each scrape.",
        ),
        (
            JOBS_DUE,
            "Durable jobs due and not claimed, by kind, counted at each scrape (at most 100000).",
        ),
        (
            JOBS_OLDEST_DUE_AGE,
            "How long the longest-waiting due job has been due, in seconds (0 when none is).",
        ),
    ];
    for (name, help) in gauges {
        r.describe_gauge(name.into(), None, SharedString::from(help));
    }
    let histograms: [(&'static str, &'static str); 6] = [
        (
            GRANT_EXPIRY_LAG,
            "Time from a grant's expires_at to the moment its expiry was recorded, in seconds.",
        ),
        (
            CONNECTOR_CALL_DURATION,
            "How long connector calls took, by connector and action, in seconds.",
        ),
        (
            CALLBACK_DELIVERY_DURATION,
            "How long callback POSTs took, in seconds.",
        ),
        (
            STORE_GROUP_JOBS,
            "Write jobs per group committed in one SQLite transaction.",
        ),
        (
            STORE_COMMIT_DURATION,
            "How long a group's COMMIT (its fsync) took, in seconds.",
        ),
        (
            STORE_TRANSACTION_DURATION,
            "How long a group's transaction took from BEGIN to the commit, in seconds.",
        ),
    ];
    for (name, help) in histograms {
        r.describe_histogram(name.into(), None, SharedString::from(help));
    }
}
