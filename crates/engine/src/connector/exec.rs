//! The `exec` connector: runs a configured program for grant, another for revoke and,
//! optionally, one for check, with a JSON description of the grant on stdin. For grant and
//! revoke, exit status 0 is success and anything else, a failure to start, or running past the
//! timeout is a failure that the worker retries. The check program exits 0 when the access is
//! in effect and 1 when it is not.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use config::ExecConnector;
use domain::{Grant, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{Action, Call, Connector, truncate};

/// The document a connector program reads on stdin (and a webhook receives as `data`).
/// `grant_id` is the idempotency key: the same call may be repeated after a crash.
pub fn describe(action: &str, g: &Grant) -> serde_json::Value {
    serde_json::json!({
        "action": action,
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

pub struct Exec(pub ExecConnector);

#[async_trait]
impl Connector for Exec {
    async fn call(&self, call: &Call<'_>) -> Result<(), String> {
        let argv = match call.action {
            Action::Grant => &self.0.grant_command,
            Action::Revoke => &self.0.revoke_command,
        };
        let (program, status, stderr) = self.run(argv, call.action.as_str(), call.grant).await?;
        if status.success() {
            return Ok(());
        }
        Err(failure(program, status, stderr))
    }

    async fn check(&self, grant: &Grant, _now: Timestamp) -> Result<Option<bool>, String> {
        let Some(argv) = &self.0.check_command else {
            return Ok(None);
        };
        let (program, status, stderr) = self.run(argv, "check", grant).await?;
        match status.code() {
            Some(0) => Ok(Some(true)),
            Some(1) => Ok(Some(false)),
            _ => Err(failure(program, status, stderr)),
        }
    }

    fn can_check(&self) -> bool {
        self.0.check_command.is_some()
    }
}

impl Exec {
    /// Runs one program with the grant on stdin. The stderr text returned is safe to record:
    /// values of the connector's environment (which may be secrets) are redacted from it.
    async fn run<'a>(
        &self,
        argv: &'a [String],
        action: &str,
        g: &Grant,
    ) -> Result<(&'a str, ExitStatus, String), String> {
        let c = &self.0;
        let (program, args) = argv.split_first().ok_or("the connector has no command")?;
        // The program sees only its own configured environment and a few harmless variables,
        // never the server's: that holds the secrets of every other connector.
        let inherited = INHERITED
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (*k, v)));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&c.dir)
            .env_clear()
            .envs(inherited)
            .envs(&c.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Its own process group, so that a timeout ends whatever it started too.
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {program:?}: {e}"))?;
        let pid = child.id();
        let input = describe(action, g).to_string();
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let run = async {
            // A program that does not read its stdin must not make us fail: ignore broken pipes.
            let _ = stdin.write_all(input.as_bytes()).await;
            drop(stdin);
            let mut err = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut err).await;
            // Whatever else it writes is drained, so that a chatty program never blocks on a
            // full pipe.
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            let status = child.wait().await;
            (status, err)
        };
        let limit = Duration::from_secs(c.timeout.secs());
        let Ok((status, err)) = tokio::time::timeout(limit, run).await else {
            kill_group(pid).await;
            return Err(format!("{program:?} did not finish within {}", c.timeout));
        };
        let status = status.map_err(|e| format!("waiting for {program:?}: {e}"))?;
        let mut text = String::from_utf8_lossy(&err).trim().to_owned();
        for secret in c.env.values().filter(|v| v.len() >= 4) {
            text = text.replace(secret.as_str(), "[redacted]");
        }
        Ok((program, status, truncate(text, MAX_STDERR)))
    }
}

fn failure(program: &str, status: ExitStatus, stderr: String) -> String {
    match status.code() {
        Some(code) => format!("{program:?} exited with status {code}: {stderr}"),
        None => format!("{program:?} was killed by a signal: {stderr}"),
    }
}

/// Ends the process group of a program that ran past its timeout (the program itself is
/// killed when its handle is dropped; this reaches what it started).
async fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        // `kill -KILL -<pgid>`: no libc binding needed for one signal.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}
