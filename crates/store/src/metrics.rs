//! What the store reports about its writer, and the one monotonic clock of the workspace.
//!
//! The SQLite writer records, for every group of write jobs, how many jobs the group held, how
//! long its `COMMIT` took (the fsync the whole group shares) and how long the transaction
//! took from `BEGIN` to the replies. The handles come from the owner of the server's metrics
//! (`engine::metrics`); a store opened without them records into no-op handles. This module
//! names no metric and renders nothing.
//!
//! [`Stopwatch`] is the one place that reads the monotonic clock. It measures latencies for
//! metrics and nothing else: no decision, stored time or audit event depends on it (those take
//! `now` from `engine::Clock`). It lives here because the store is the lowest crate that
//! measures; the engine re-exports it as `engine::clock::Stopwatch`.

use std::time::{Duration, Instant};

use metrics::{Counter, Histogram};

/// The handles the SQLite writer records into.
#[derive(Clone)]
pub struct WriterMetrics {
    /// Write jobs per group, committed or rolled back.
    pub group_jobs: Histogram,
    /// How long a group's `COMMIT` took, in seconds.
    pub commit_seconds: Histogram,
    /// How long a group's transaction took, from `BEGIN` to the commit, in seconds.
    pub transaction_seconds: Histogram,
    /// Groups rolled back (a flush or the commit failed).
    pub rollbacks: Counter,
}

impl Default for WriterMetrics {
    /// Records nothing.
    fn default() -> Self {
        WriterMetrics {
            group_jobs: Histogram::noop(),
            commit_seconds: Histogram::noop(),
            transaction_seconds: Histogram::noop(),
            rollbacks: Counter::noop(),
        }
    }
}

/// Measures how long something took, on the monotonic clock. For metrics only.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts measuring now.
    #[allow(clippy::disallowed_methods)] // The one monotonic clock read: it measures, never decides.
    pub fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }

    /// The time since [`Stopwatch::start`].
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}
