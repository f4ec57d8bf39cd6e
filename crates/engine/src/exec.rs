//! The `exec` connector: runs a configured program for grant and another for revoke, with a
//! JSON description of the grant on stdin. Exit status 0 is success; anything else, a failure
//! to start, or running past the timeout is a failure that the worker retries.

use std::process::Stdio;
use std::time::Duration;

use config::ExecConnector;
use domain::Grant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Grant,
    Revoke,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Grant => "grant",
            Action::Revoke => "revoke",
        }
    }
}

/// The document a connector program reads on stdin. `grant_id` is the idempotency key: the
/// same call may be repeated after a crash.
pub fn describe(action: Action, g: &Grant) -> serde_json::Value {
    serde_json::json!({
        "action": action.as_str(),
        "grant_id": g.id,
        "request_id": g.spec.request,
        "subject": g.spec.subject,
        "resource": g.spec.resource,
        "workflow": g.spec.workflow,
        "params": g.spec.params,
        "duration_seconds": g.spec.duration.secs(),
        "expires_at_ms": g.expires_at.map(|t| t.millis()),
    })
}

const MAX_STDERR: usize = 2048;

/// Variables passed through from the server's environment to connector programs.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Runs the program for `action`. The error text is safe to record: values of the
/// connector's environment (which may be secrets) are redacted from it.
pub async fn call(c: &ExecConnector, action: Action, g: &Grant) -> Result<(), String> {
    let argv = match action {
        Action::Grant => &c.grant_command,
        Action::Revoke => &c.revoke_command,
    };
    let (program, args) = argv.split_first().ok_or("the connector has no command")?;
    // The program sees only its own configured environment and a few harmless variables,
    // never the server's: that holds the secrets of every other connector.
    let inherited = INHERITED
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (*k, v)));
    let mut child = Command::new(program)
        .args(args)
        .current_dir(&c.dir)
        .env_clear()
        .envs(inherited)
        .envs(&c.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let input = describe(action, g).to_string();
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let run = async {
        // A program that does not read its stdin must not make us fail: ignore broken pipes.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        let mut err = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut err).await;
        let status = child.wait().await;
        (status, err)
    };
    let limit = Duration::from_secs(c.timeout.secs());
    let (status, err) = tokio::time::timeout(limit, run)
        .await
        .map_err(|_| format!("{program:?} did not finish within {}", c.timeout))?;
    let status = status.map_err(|e| format!("waiting for {program:?}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&err).trim().to_owned();
    for secret in c.env.values().filter(|v| v.len() >= 4) {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    if text.len() > MAX_STDERR {
        let mut cut = MAX_STDERR;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    Err(match status.code() {
        Some(code) => format!("{program:?} exited with status {code}: {text}"),
        None => format!("{program:?} was killed by a signal: {text}"),
    })
}
