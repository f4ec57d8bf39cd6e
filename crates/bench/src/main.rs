//! `countersign-bench`: the load generators behind docs/benchmarks.md, in a binary of their
//! own so that the product's command list (`countersign --help`) holds only what an operator
//! or a user runs.
//!
//! Each command builds the real server or engine in this process from the `countersign`
//! library, on a durable SQLite database in a temporary directory, and measures it:
//! `workflow` (complete approval workflows over HTTP), `expiry` (grants expiring), `policy`
//! (one policy decision), `callbacks` (outcome callbacks delivered), `lists` (list pages
//! with many requests stored), `notify` (notifications emailed through a local SMTP
//! server) and `slack` (the Slack app's click acknowledgement and card updates). This crate is not a
//! default member of the workspace: `cargo build` builds the product alone, and
//! `cargo build --release -p countersign-bench` builds this binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod callbacks;
mod expiry;
mod lists;
mod notify;
mod policy;
mod slack;
mod workflow;

#[derive(Debug, Parser)]
#[command(
    name = "countersign-bench",
    version,
    about = "Load generators for Countersign (see docs/benchmarks.md)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Measure throughput and latency of the approval workflow over HTTP.
    Workflow(workflow::WorkflowArgs),
    /// Measure how fast grants expire (approval-only grants on durable SQLite).
    Expiry(expiry::ExpiryArgs),
    /// Measure the cost of one policy decision (fast-track hook, OPA's RBAC example).
    Policy(policy::PolicyBenchArgs),
    /// Measure callback delivery: throughput, and a healthy receiver's latency beside a
    /// failing one.
    Callbacks(callbacks::CallbackArgs),
    /// Measure list pages (first and deep) for every kind of caller with many requests
    /// stored, and the resident memory per pending request.
    Lists(lists::ListsArgs),
    /// Measure notification delivery: a burst of requests whose reviewers are emailed through
    /// a local SMTP server.
    Notify(notify::NotifyArgs),
    /// Measure the Slack app: the acknowledgement of many button clicks at once, and a
    /// decision's time to the last update of its cards (against a fake Slack on loopback).
    Slack(slack::SlackArgs),
}

/// Real time, for measuring only: no measured figure feeds a decision of the engine.
#[allow(clippy::disallowed_methods)]
pub(crate) fn instant() -> std::time::Instant {
    std::time::Instant::now()
}

/// The nearest-rank percentile `p` (0–100) of sorted samples.
pub(crate) fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every HTTP client of the process (the load generator, callbacks) uses ring for TLS.
    engine::connector::install_tls_provider();
    countersign::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("countersign-bench: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(async move {
        match cli.cmd {
            Cmd::Workflow(args) => workflow::main(args).await,
            Cmd::Expiry(args) => expiry::run(args).await,
            Cmd::Policy(args) => policy::run(args),
            Cmd::Callbacks(args) => callbacks::run(args).await,
            Cmd::Lists(args) => lists::run(args).await,
            Cmd::Notify(args) => notify::run(args).await,
            Cmd::Slack(args) => slack::run(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Issue 13, item 7: every argument and subcommand of `countersign-bench` says what it is.
    #[test]
    fn hardening_7_every_bench_argument_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        let missing = countersign::undocumented(&cmd, "countersign-bench");
        assert!(missing.is_empty(), "no help for: {missing:?}");
    }
}
