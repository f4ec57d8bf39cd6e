//! The `countersign` server as a library: [`open`] builds the engine from a configuration,
//! [`run`] serves HTTP on a listener until `shutdown` resolves, with the worker running beside
//! it. `main.rs` only parses arguments and calls these; tests call them directly with a port-0
//! listener and a manual clock, and the load generators of `crates/bench` do the same on the
//! system clock.

mod http;

use std::future::Future;
use std::sync::Arc;

use config::Config;
use engine::{Clock, Engine, Worker};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Opens the store the configuration names (running its migrations) and builds the engine.
/// A server and a tool beside it (`token create`) open it alike: each store is its own holder
/// of claims, and writers on one database take turns.
pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Engine>, store::StoreError> {
    // One recorder per server, shared by the store's writer, the engine and the API.
    let metrics = engine::Metrics::new();
    let options = store::Options {
        pool: config.server.database_pool,
        holder: String::new(),
        poll_only: config.server.database_poll_only,
        metrics: metrics.writer(),
    };
    let store = store::open(&config.server.database, options).await?;
    Ok(Engine::with_metrics(store, config, clock, metrics))
}

#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Run the background worker (timers, connector calls). Tests that drive a manual clock
    /// turn it off and call `Engine::run_due` themselves.
    pub worker: bool,
    /// How the web portal is offered (the development sign-in).
    pub portal: web::PortalOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            worker: true,
            portal: web::PortalOptions::default(),
        }
    }
}

/// Serves the API and the portal on `listener` until `shutdown` resolves, under the `server`
/// block's timeouts and connection limit (read here, at start). On shutdown it stops
/// accepting, lets the requests being served finish, then stops the worker, waits for it,
/// has the checkpoint loop sign the chain one last time (when the configuration has an
/// `audit` block), and closes the store after the writes already queued.
pub async fn run(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if options.portal.dev_login {
        let addr = listener.local_addr()?;
        web::check_dev_login(addr)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = options
        .worker
        .then(|| tokio::spawn(Worker::run(engine.clone(), stop_rx.clone())));
    let upkeep = tokio::spawn(metrics_upkeep(engine.clone(), stop_rx.clone()));
    // Told to stop only once the worker has stopped, so that its last checkpoint covers every
    // event written.
    let (checkpoint_stop, checkpoint_rx) = watch::channel(false);
    let checkpoints = tokio::spawn(engine::checkpoint::run(engine.clone(), checkpoint_rx));
    // Slack's Socket Mode, when the configuration asks for it.
    let socket = engine
        .config()
        .slack()
        .is_some_and(|(_, s)| matches!(s.mode, config::SlackMode::Socket { .. }))
        .then(|| tokio::spawn(web::slack::run_socket(engine.clone(), stop_rx.clone())));
    let app = api::app(api::AppState::new(engine.clone()))
        .merge(web::router(engine.clone(), options.portal))
        .merge(web::slack::router(engine.clone()));
    let app = api::metrics::measure(app, engine.clone());
    let limits = engine.config().server.http;
    http::serve(listener, app, limits, shutdown).await;
    let _ = stop_tx.send(true);
    if let Some(w) = worker {
        let _ = w.await;
    }
    let _ = upkeep.await;
    if let Some(s) = socket {
        let _ = s.await;
    }
    let _ = checkpoint_stop.send(true);
    let _ = checkpoints.await;
    engine.store().close().await;
    Ok(())
}

/// Every few seconds, moves the samples of the metrics' histograms into their buckets, so that
/// a server nobody scrapes does not hold them in memory.
async fn metrics_upkeep(engine: Arc<Engine>, mut stop: watch::Receiver<bool>) {
    loop {
        engine.metrics().upkeep();
        tokio::select! {
            _ = engine::clock::pause(std::time::Duration::from_secs(5)) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() {
                return;
            },
        }
    }
}

/// Every argument and subcommand of a built clap command tree that has no help line, named
/// by its path (`countersign request create resource`). Both binaries' tests check that it is
/// empty (issue 13, item 7).
#[doc(hidden)]
pub fn undocumented(cmd: &clap::Command, path: &str) -> Vec<String> {
    let mut missing = vec![];
    for arg in cmd.get_arguments() {
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            missing.push(format!("{path} {}", arg.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            missing.push(sub_path.clone());
        }
        missing.extend(undocumented(sub, &sub_path));
    }
    missing
}

/// Logs to standard error at the level `RUST_LOG` names (`info` by default), in colour only
/// for a person at a terminal: a log file or a collector gets plain text. Both binaries call it.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // PostgreSQL's notices ("relation … already exists, skipping" from the
                // migrations of a replica that starts second) are not the operator's news.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
