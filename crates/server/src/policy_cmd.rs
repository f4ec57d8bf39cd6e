//! `countersign policy eval|test`: try policies on sample input before shipping them
//! (rule 31). Both work on a bundle on disk, with no server and no configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use policy::{Bundle, DEFAULT_TIMEOUT};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCmd {
    /// Evaluate one query of a bundle against an input document and print the result.
    Eval {
        /// A directory, a .rego file or an OPA bundle .tar.gz.
        #[arg(long)]
        bundle: PathBuf,
        /// A rule path, such as data.countersign.fast_track.
        #[arg(long)]
        query: String,
        /// A JSON file holding the input document (see docs/policy.md).
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// Run the bundle's `test_` rules, as `opa test` does; exits 1 if one fails.
    Test {
        /// A directory, a .rego file or an OPA bundle .tar.gz.
        bundle: PathBuf,
        /// Print passing tests too.
        #[arg(long, short)]
        verbose: bool,
    },
}

fn load(path: &Path) -> Result<Bundle, ExitCode> {
    Bundle::load(path, DEFAULT_TIMEOUT).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        eprintln!("{} error(s)", errors.len());
        ExitCode::from(1)
    })
}

pub fn run(cmd: PolicyCmd) -> ExitCode {
    match cmd {
        PolicyCmd::Eval {
            bundle,
            query,
            input,
        } => {
            let b = match load(&bundle) {
                Ok(b) => b,
                Err(code) => return code,
            };
            if let Err(e) = b.check_query(&query) {
                eprintln!("countersign: {e}");
                return ExitCode::from(1);
            }
            let input = match input {
                None => serde_json::Value::Object(Default::default()),
                Some(p) => match std::fs::read(&p) {
                    Err(e) => {
                        eprintln!("countersign: cannot read {}: {e}", p.display());
                        return ExitCode::from(1);
                    }
                    Ok(bytes) => match serde_json::from_slice(&bytes) {
                        Ok(v) => v,
                        Err(e) => {
                            eprintln!(
                                "{}:{}:{}: invalid JSON: {e}",
                                p.display(),
                                e.line(),
                                e.column()
                            );
                            return ExitCode::from(1);
                        }
                    },
                },
            };
            let out = b.eval(&query, &input);
            match out.result {
                Ok(v) => {
                    let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("countersign: {query}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        PolicyCmd::Test { bundle, verbose } => {
            let b = match load(&bundle) {
                Ok(b) => b,
                Err(code) => return code,
            };
            let results = b.run_tests();
            if results.is_empty() {
                eprintln!("countersign: no test_ rules found in {}", bundle.display());
                return ExitCode::from(1);
            }
            let failed = results.iter().filter(|r| !r.passed).count();
            for r in &results {
                match (&r.detail, r.passed) {
                    (_, true) if verbose => println!("{}: PASS ({}µs)", r.name, r.micros),
                    (_, true) => {}
                    (Some(d), false) => println!("{}: FAIL ({d})", r.name),
                    (None, false) => println!("{}: FAIL", r.name),
                }
            }
            println!("{}", "-".repeat(60));
            println!("PASS: {}/{}", results.len() - failed, results.len());
            if failed > 0 {
                println!("FAIL: {failed}/{}", results.len());
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
