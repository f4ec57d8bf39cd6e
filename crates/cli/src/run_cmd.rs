//! `countersign runbook` and `countersign run` (issue 17): the runbook catalog, and runs
//! started, followed, answered, given access, resumed and cancelled from a terminal.
//!
//! `run start --wait` and `run resume --wait` follow the run until it ends or needs its
//! runner: an input step is asked on the terminal (when stdin is one); anything else that
//! waits for the runner (access to ask for, a run ready to resume) ends the command, printing
//! the run and what it waits for. Exit codes: 0 succeeded, 1 failed, 2 cancelled, 4 waiting for the
//! runner; 3 for any error.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use proto::*;

use crate::table::printable;
use crate::{Client, Failure, opt, pause, print};

#[derive(Debug, Subcommand)]
pub enum RunbookCmd {
    /// The runbooks you may run, with their steps.
    List,
}

#[derive(Debug, Subcommand)]
pub enum RunCmd {
    /// Start a run of a runbook.
    Start {
        /// The runbook, as named in the configuration.
        runbook: String,
        /// An answer given ahead to an input step, as step=value (repeatable).
        #[arg(long = "input", value_name = "STEP=VALUE")]
        inputs: Vec<String>,
        /// Follow the run: ask its inputs here, and end when it ends or needs you.
        #[arg(long)]
        wait: bool,
        /// Seconds between polls with --wait.
        #[arg(long, default_value_t = 1)]
        poll_seconds: u64,
    },
    /// Show a run: its steps, outputs, and what it waits for.
    Show {
        /// The run's id.
        id: String,
    },
    /// Your runs, newest first.
    List {
        /// Only runs in this state (running, waiting_for_input, needs_access, …).
        #[arg(long)]
        state: Option<String>,
        /// Every person's runs (admins).
        #[arg(long)]
        all: bool,
        /// How many to list (50 by default, at most 200).
        #[arg(long)]
        limit: Option<u32>,
        /// The cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Answer the input step a run waits at.
    Input {
        /// The run's id.
        id: String,
        /// The answer: one of the values offered (an int or bool as text).
        value: String,
    },
    /// Ask for the access a run stopped for.
    Access {
        /// The run's id.
        id: String,
        /// Why you need it.
        #[arg(long)]
        reason: String,
        /// For example 15m or 1h; defaults to the resource's shortest duration.
        #[arg(long)]
        duration: Option<String>,
    },
    /// Resume a run whose access was granted.
    Resume {
        /// The run's id.
        id: String,
        /// Follow the run, as `start --wait` does.
        #[arg(long)]
        wait: bool,
        /// Seconds between polls with --wait.
        #[arg(long, default_value_t = 1)]
        poll_seconds: u64,
    },
    /// Cancel a run.
    Cancel {
        /// The run's id.
        id: String,
        /// Why (shown on the run).
        #[arg(long)]
        reason: Option<String>,
    },
}

pub(crate) async fn runbooks(c: &Client, json: bool, cmd: RunbookCmd) -> Result<ExitCode, Failure> {
    match cmd {
        RunbookCmd::List => {
            let list: RunbookList = c.get("/v1/runbooks", &[]).await?;
            print(json, &list, || runbook_table(&list.runbooks))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn runs(c: &Client, json: bool, cmd: RunCmd) -> Result<ExitCode, Failure> {
    let path = |id: &str, what: &str| format!("/v1/runs/{id}/{what}");
    let r: RunView = match cmd {
        RunCmd::Start {
            runbook,
            inputs,
            wait,
            poll_seconds,
        } => {
            let mut map = std::collections::BTreeMap::new();
            for i in inputs {
                let (k, v) = i
                    .split_once('=')
                    .ok_or_else(|| Failure(format!("--input {i:?}: write it as step=value")))?;
                map.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
            }
            let r: RunView = c
                .post(
                    "/v1/runs",
                    &CreateRunBody {
                        runbook,
                        inputs: map,
                    },
                )
                .await?;
            if wait {
                return follow(c, json, r, poll_seconds).await;
            }
            r
        }
        RunCmd::Show { id } => c.get(&format!("/v1/runs/{id}"), &[]).await?,
        RunCmd::List {
            state,
            all,
            limit,
            cursor,
        } => {
            let mut q = opt(&[("state", &state), ("cursor", &cursor)]);
            if all {
                q.push(("all", "true".into()));
            }
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            let list: RunList = c.get("/v1/runs", &q).await?;
            print(json, &list, || {
                run_table(&list.runs) + &crate::table::more(list.next_cursor.as_deref())
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        RunCmd::Input { id, value } => {
            c.post(
                &path(&id, "input"),
                &RunInputBody {
                    value: serde_json::Value::String(value),
                },
            )
            .await?
        }
        RunCmd::Access {
            id,
            reason,
            duration,
        } => {
            let a: RunAccessView = c
                .post(&path(&id, "access"), &RunAccessBody { reason, duration })
                .await?;
            print(json, &a, || {
                format!(
                    "request {} asks for {}\n",
                    printable(&a.request.id),
                    printable(&a.request.resource)
                ) + &run_text(&a.run)
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        RunCmd::Resume {
            id,
            wait,
            poll_seconds,
        } => {
            let r: RunView = c.post(&path(&id, "resume"), &serde_json::json!({})).await?;
            if wait {
                return follow(c, json, r, poll_seconds).await;
            }
            r
        }
        RunCmd::Cancel { id, reason } => {
            c.post(&path(&id, "cancel"), &ReasonBody { reason }).await?
        }
    };
    print(json, &r, || run_text(&r))?;
    Ok(ExitCode::SUCCESS)
}

/// Follows a run until it ends or waits for its runner, answering its inputs on a terminal.
async fn follow(
    c: &Client,
    json: bool,
    mut r: RunView,
    poll_seconds: u64,
) -> Result<ExitCode, Failure> {
    let mut shown = 0;
    loop {
        // What completed since the last look, as it happens.
        if !json {
            for s in r.steps.iter().filter(|s| s.status == "done").skip(shown) {
                eprintln!("{}", step_line(s));
            }
        }
        shown = r.steps.iter().filter(|s| s.status == "done").count();
        match r.state.as_str() {
            "running" | "waiting_for_approval" => {
                pause(Duration::from_secs(poll_seconds.max(1))).await;
                r = c.get(&format!("/v1/runs/{}", r.id), &[]).await?;
            }
            "waiting_for_input" if std::io::stdin().is_terminal() => {
                let Some(input) = &r.input else {
                    return Err(Failure(
                        "the run waits for an input it does not show".into(),
                    ));
                };
                let value = ask(input)?;
                r = c
                    .post(
                        &format!("/v1/runs/{}/input", r.id),
                        &RunInputBody {
                            value: serde_json::Value::String(value),
                        },
                    )
                    .await?;
            }
            state => {
                print(json, &r, || run_text(&r))?;
                return Ok(ExitCode::from(match state {
                    "succeeded" => 0,
                    "failed" => 1,
                    "cancelled" => 2,
                    _ => 4,
                }));
            }
        }
    }
}

/// Asks an input step's question on the terminal: the offered values numbered, a number or
/// the value itself taken as the answer.
fn ask(input: &RunInputView) -> Result<String, Failure> {
    let offered: Vec<String> = input
        .possible_values
        .iter()
        .flatten()
        .map(value_text)
        .collect();
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{}", printable(&input.prompt));
    for (i, v) in offered.iter().enumerate() {
        let _ = writeln!(err, "  {}. {}", i + 1, printable(v));
    }
    let _ = write!(err, "> ");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim().to_owned();
    if line.is_empty() {
        return Err(Failure("no answer given".into()));
    }
    Ok(match line.parse::<usize>() {
        Ok(n) if n >= 1 && n <= offered.len() && !offered.contains(&line) => offered[n - 1].clone(),
        _ => line,
    })
}

/// A value as a person reads it: a string without its quotes.
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn step_line(s: &RunStepView) -> String {
    let what = s
        .action
        .as_deref()
        .or(s.prompt.as_deref())
        .unwrap_or_default();
    let output = s.output.as_ref().map(value_text).unwrap_or_default();
    format!(
        "{:<7} {:<8} {}  {}",
        printable(&s.status),
        printable(&s.kind),
        printable(&s.id),
        printable(&if output.is_empty() {
            what.to_owned()
        } else {
            format!("{what} → {output}")
        })
    )
}

/// `run show`: the run, its timeline and what it waits for.
pub fn run_text(r: &RunView) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<9} {}\n", printable(v)));
    line("run", &r.id);
    line(
        "runbook",
        &format!("{} (version {})", r.runbook, short(&r.version)),
    );
    line("runner", &r.runner);
    line("state", &r.state);
    line("status", &r.status);
    if let Some(a) = &r.needs_access {
        line("action", &a.action);
        line("resource", &a.resource);
        line("approvers", &a.approvers.join(", "));
        if let Some(req) = &a.request_id {
            line("request", req);
        }
    }
    if let Some(i) = &r.input {
        line("asks", &i.prompt);
        if let Some(v) = &i.possible_values {
            let v: Vec<String> = v.iter().map(value_text).collect();
            line("choices", &v.join(", "));
        }
    }
    out.push_str("steps\n");
    for s in &r.steps {
        out.push_str("  ");
        out.push_str(&step_line(s));
        out.push('\n');
    }
    out
}

fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

fn run_table(list: &[RunView]) -> String {
    let mut rows = vec![
        ["ID", "RUNBOOK", "RUNNER", "STATE", "STEP", "CREATED"]
            .map(String::from)
            .to_vec(),
    ];
    for r in list {
        rows.push(vec![
            r.id.clone(),
            r.runbook.clone(),
            r.runner.clone(),
            r.state.clone(),
            r.current_step.clone().unwrap_or_else(|| "-".into()),
            r.created_at.clone(),
        ]);
    }
    crate::table::columns(&rows)
}

fn runbook_table(list: &[RunbookView]) -> String {
    let mut rows = vec![["NAME", "STEPS", "DESCRIPTION"].map(String::from).to_vec()];
    for b in list {
        rows.push(vec![
            b.name.clone(),
            b.steps.len().to_string(),
            b.description.clone(),
        ]);
    }
    crate::table::columns(&rows)
}
