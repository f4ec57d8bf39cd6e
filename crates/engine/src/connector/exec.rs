//! The `exec` connector: runs a configured program for grant, another for revoke and,
//! optionally, one for check, with a JSON description of the grant on stdin. For grant and
//! revoke, exit status 0 is success and anything else, a failure to start, or running past the
//! timeout is a failure that the worker retries. The check program exits 0 when the access is
//! in effect and 1 when it is not.

use super::{Action, Call, Connector};
use crate::program::{self, Finished, Program};
use async_trait::async_trait;
use config::ExecConnector;
use domain::{Grant, Timestamp};

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

pub struct Exec(pub ExecConnector);

#[async_trait]
impl Connector for Exec {
    async fn call(&self, call: &Call<'_>) -> Result<(), String> {
        let argv = match call.action {
            Action::Grant => &self.0.grant_command,
            Action::Revoke => &self.0.revoke_command,
        };
        let done = self.run(argv, call.action.as_str(), call.grant).await?;
        if done.status.success() {
            return Ok(());
        }
        Err(done.failure())
    }

    async fn check(&self, grant: &Grant, _now: Timestamp) -> Result<Option<bool>, String> {
        let Some(argv) = &self.0.check_command else {
            return Ok(None);
        };
        let done = self.run(argv, "check", grant).await?;
        match done.status.code() {
            Some(0) => Ok(Some(true)),
            Some(1) => Ok(Some(false)),
            _ => Err(done.failure()),
        }
    }

    fn can_check(&self) -> bool {
        self.0.check_command.is_some()
    }
}

impl Exec {
    /// Runs one program with the grant on stdin (through the one program runner, which
    /// redacts the connector's environment from what it returns).
    async fn run(&self, argv: &[String], action: &str, g: &Grant) -> Result<Finished, String> {
        let c = &self.0;
        program::run(Program {
            argv,
            dir: &c.dir,
            env: &c.env,
            plain_env: &[],
            input: describe(action, g).to_string(),
            timeout: c.timeout,
            stdout: None,
        })
        .await
    }
}
