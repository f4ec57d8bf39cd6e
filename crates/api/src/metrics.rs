//! Prometheus metrics in the text exposition format. A handful of counters do not need a
//! metrics framework.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    by_class: [AtomicU64; 5],
    pub requests_created: AtomicU64,
    pub reviews: AtomicU64,
}

impl Metrics {
    pub fn response(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP countersign_http_responses_total HTTP responses by status class.\n");
        out.push_str("# TYPE countersign_http_responses_total counter\n");
        for (i, c) in self.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "countersign_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "countersign_requests_created_total",
                "Requests created.",
                &self.requests_created,
            ),
            (
                "countersign_reviews_total",
                "Reviews recorded.",
                &self.reviews,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}
