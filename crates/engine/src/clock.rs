//! The clock, read in exactly one place. Everything else takes `now` as a parameter, and tests
//! drive a [`ManualClock`] instead of sleeping.
//!
//! Latencies for metrics are measured with [`Stopwatch`], the monotonic clock's one reader
//! (it lives in `store`, the lowest crate that measures). What it measures is only ever
//! recorded in a histogram; no decision and no stored time depends on it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use domain::Timestamp;
pub use store::metrics::Stopwatch;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one place that reads the wall clock.
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_millis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(AtomicI64::new(start.millis()))
    }
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// Waits in real time. Only the worker loop and client polling call this; the engine's
/// decisions never depend on it.
#[allow(clippy::disallowed_methods)]
pub async fn pause(d: Duration) {
    tokio::time::sleep(d).await;
}
