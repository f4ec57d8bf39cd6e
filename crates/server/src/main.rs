//! `countersign`: the server, the admin tool and the client, in one binary.
//!
//! The server's commands (`serve`, `check`, `policy`, `token`) read files; the client commands
//! (`request`, `review`, `grant`, `audit`, `explain`, `simulate`, from `cli`) talk to a server
//! and take the connection options themselves. The load generators are another binary,
//! `countersign-bench` (`crates/bench`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod policy_cmd;

use clap::{Parser, Subcommand};
use countersign::RunOptions;
use engine::SystemClock;

#[derive(Debug, Parser)]
#[command(
    name = "countersign",
    version,
    about = "Approval engine for just-in-time access and gated actions"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Run the server (API, worker) on the configuration's database.
    Serve {
        #[command(flatten)]
        files: ConfigFiles,
        /// Offer a development sign-in in the portal (pick any configured user). Refused
        /// unless the server listens on a loopback address.
        #[arg(long)]
        dev: bool,
    },
    /// Validate configuration files; print every error with file, line and block.
    Check {
        /// Configuration files (HCL), loaded together as `serve --config` would.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Try policy bundles: evaluate a query on sample input, run `test_` rules.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
    /// Issue bearer tokens (run against the server's configuration and database).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Move an installation's database (stop the server first).
    #[command(subcommand)]
    Store(StoreCmd),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum StoreCmd {
    /// Copy every row of one database into another, empty one (for example from SQLite to
    /// PostgreSQL), in one transaction; then check the copy's audit chain.
    Copy {
        /// The database to copy from, as `server.database` names it (`sqlite://path`).
        #[arg(long)]
        from: String,
        /// The empty database to copy into (`postgres://…`); its tables are created first.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Print a new token for a configured user or app (shown once; stored hashed).
    Create {
        #[command(flatten)]
        files: ConfigFiles,
        /// A configured user's email.
        #[arg(long, required_unless_present = "app", conflicts_with = "app")]
        user: Option<String>,
        /// A configured app's name (the token acts as `app:<name>`).
        #[arg(long)]
        app: Option<String>,
    },
}

/// The configuration of the server, for the commands that read it directly.
#[derive(Debug, clap::Args)]
struct ConfigFiles {
    /// Configuration files (HCL); repeat or separate with commas.
    #[arg(
        long,
        short,
        required = true,
        env = "COUNTERSIGN_CONFIG",
        value_delimiter = ','
    )]
    config: Vec<PathBuf>,
}

/// Loads the configuration and compiles its policies, printing every error found.
fn load(files: &[PathBuf]) -> Result<config::Config, ExitCode> {
    let config = config::load_files(files).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        eprintln!("{} error(s)", errors.0.len());
        ExitCode::from(1)
    })?;
    if let Err(errors) = engine::compile_policies(&config) {
        for e in &errors {
            eprintln!("{e}");
        }
        eprintln!("{} error(s)", errors.len());
        return Err(ExitCode::from(1));
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every HTTP client of the process (connectors, callbacks, the CLI) uses ring for TLS.
    engine::connector::install_tls_provider();
    countersign::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("countersign: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(async move {
        match cli.cmd {
            Cmd::Serve { files, dev } => serve(files.config, dev).await,
            Cmd::Check { files } => match load(&files) {
                Ok(c) => {
                    let bundles: std::collections::BTreeSet<&str> = c
                        .policy_sites
                        .iter()
                        .map(|(r, _)| r.bundle.as_str())
                        .collect();
                    println!(
                        "ok: {} resources, {} users, {} connectors, {} policy bundles",
                        c.resources.len(),
                        c.directory.users().count(),
                        c.connectors.len(),
                        bundles.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            Cmd::Token(TokenCmd::Create { files, user, app }) => {
                let cfg = match load(&files.config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let subject = match (user, app) {
                    (Some(u), _) => u,
                    (None, Some(a)) => format!("app:{a}"),
                    (None, None) => return ExitCode::from(3),
                };
                match token_create(cfg, &subject).await {
                    Ok(t) => {
                        println!("{t}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("countersign: {e}");
                        ExitCode::from(3)
                    }
                }
            }
            Cmd::Store(StoreCmd::Copy { from, to }) => match store::copy(&from, &to).await {
                Ok(report) => {
                    for (table, rows) in &report.tables {
                        println!("{table:<17} {rows:>9} rows");
                    }
                    println!(
                        "audit chain: {} events verified on the copy, head {}",
                        report.verified, report.head.hash
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("countersign: store copy: {e}");
                    ExitCode::from(3)
                }
            },
            Cmd::Policy(cmd) => policy_cmd::run(cmd),
            Cmd::Client(cmd) => cli::run(cmd).await,
        }
    })
}

async fn token_create(cfg: config::Config, user: &str) -> Result<String, String> {
    let engine = countersign::open(cfg, Arc::new(SystemClock))
        .await
        .map_err(|e| e.to_string())?;
    let token = engine.create_token(user).await.map_err(|e| e.to_string());
    engine.store().close().await;
    token
}

async fn serve(files: Vec<PathBuf>, dev: bool) -> ExitCode {
    let cfg = match load(&files) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let listen = cfg.server.listen.clone();
    if dev {
        // Checked on the configured address before anything is opened; `run` checks the
        // bound one again.
        match listen.parse::<std::net::SocketAddr>() {
            Ok(addr) => {
                if let Err(e) = web::check_dev_login(addr) {
                    eprintln!("countersign: {e}");
                    return ExitCode::from(2);
                }
            }
            Err(_) => {
                eprintln!(
                    "countersign: --dev needs server.listen to be a loopback address such as 127.0.0.1:8080, not {listen:?}"
                );
                return ExitCode::from(2);
            }
        }
    }
    if let Some(audit) = &cfg.audit {
        // A checkpoint file that cannot be written stops the server now, not every checkpoint.
        if let Err(e) = engine::checkpoint::open_file(&audit.file) {
            eprintln!("countersign: {e}");
            return ExitCode::from(3);
        }
        tracing::info!(
            key_id = %audit.signing_key.public_key().key_id(),
            public_key = %audit.signing_key.public_key().to_base64(),
            file = %audit.file.display(),
            interval = %audit.interval,
            "audit checkpoints are on"
        );
    }
    let engine = match countersign::open(cfg, Arc::new(SystemClock)).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("countersign: cannot open the database: {e}");
            return ExitCode::from(3);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("countersign: cannot listen on {listen}: {e}");
            return ExitCode::from(3);
        }
    };
    tracing::info!(%listen, "countersign is serving");
    // SIGHUP reloads the configuration; a configuration with errors is refused and the
    // running one kept.
    let reload_engine = engine.clone();
    let reloads = tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match config::load_files(&files) {
                Ok(c) => match reload_engine.reload(c) {
                    Ok(()) => {
                        tracing::info!("configuration reloaded");
                        // A sweep turned on by this configuration starts now, not at restart.
                        if let Err(e) = reload_engine.ensure_sweep().await {
                            tracing::error!(error = %e, "cannot schedule the periodic sweeps");
                        }
                    }
                    Err(errors) => {
                        for e in &errors {
                            tracing::error!(error = %e, "policy bundle refused");
                        }
                        tracing::error!(
                            "configuration reload refused; keeping the running configuration and policies"
                        );
                    }
                },
                Err(e) => {
                    tracing::error!(errors = %e, "configuration reload refused; keeping the running one")
                }
            }
        }
    });
    let shutdown = async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
    };
    let options = RunOptions {
        portal: web::PortalOptions { dev_login: dev },
        ..RunOptions::default()
    };
    let served = countersign::run(listener, engine, options, shutdown).await;
    // The store is closed: no reload may start now.
    reloads.abort();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign: {e}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The command tree as clap shows it, with `--help`, `--version`, the `help` subcommand
    /// and the global options propagated to every subcommand.
    fn built() -> clap::Command {
        let mut cmd = Cli::command();
        cmd.build();
        cmd
    }

    /// Issue 13, item 7: `--help` describes every argument and every subcommand.
    #[test]
    fn hardening_7_every_argument_and_subcommand_has_help() {
        let cmd = built();
        cmd.clone().debug_assert();
        let missing = countersign::undocumented(&cmd, "countersign");
        assert!(missing.is_empty(), "no help for: {missing:?}");
    }

    /// The long options of a command, found by the path of subcommand names to it.
    fn options(path: &[&str]) -> Vec<String> {
        let mut cmd = built();
        for name in path {
            cmd = cmd
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("no subcommand {name} in {path:?}"))
                .clone();
        }
        cmd.get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect()
    }

    /// Issue 13, item 7: the client's connection options appear where they apply, on every
    /// client command down to its leaves, and nowhere else.
    #[test]
    fn hardening_7_client_options_only_on_client_commands() {
        let conn = ["url", "token", "json"];
        let server_side: &[&[&str]] = &[
            &[],
            &["serve"],
            &["check"],
            &["policy"],
            &["policy", "eval"],
            &["policy", "test"],
            &["token"],
            &["token", "create"],
        ];
        for path in server_side {
            let opts = options(path);
            for c in conn {
                assert!(
                    !opts.iter().any(|o| o == c),
                    "countersign {} shows --{c}: {opts:?}",
                    path.join(" ")
                );
            }
        }
        let client: &[&[&str]] = &[
            &["request"],
            &["request", "create"],
            &["request", "list"],
            &["review", "approve"],
            &["review", "deny"],
            &["grant", "list"],
            &["grant", "extend"],
            &["audit"],
            &["audit", "export"],
            &["audit", "verify"],
            &["explain"],
            &["simulate"],
        ];
        for path in client {
            let opts = options(path);
            for c in conn {
                assert!(
                    opts.iter().any(|o| o == c),
                    "countersign {} lacks --{c}: {opts:?}",
                    path.join(" ")
                );
            }
        }
    }

    /// The connection options parse before or after the client command's subcommand (the
    /// environment variables are covered by the black-box tests of `tests/api/cli.rs`), and
    /// the server's commands refuse them.
    #[test]
    fn hardening_7_client_options_parse_where_written() {
        use clap::Parser;
        for args in [
            &[
                "countersign",
                "request",
                "list",
                "--json",
                "--url",
                "http://h:1",
            ][..],
            &[
                "countersign",
                "request",
                "--json",
                "--url",
                "http://h:1",
                "list",
            ][..],
            &[
                "countersign",
                "explain",
                "x",
                "--json",
                "--url",
                "http://h:1",
            ][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let super::Cmd::Client(client) = cli.cmd else {
                panic!("{args:?} is not a client command");
            };
            let conn = client.conn();
            assert!(conn.json, "{args:?}");
            assert_eq!(conn.url, "http://h:1", "{args:?}");
        }
        for args in [
            &["countersign", "--json", "check", "a.hcl"][..],
            &["countersign", "serve", "--config", "a.hcl", "--token", "t"][..],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} was accepted");
        }
    }
}
