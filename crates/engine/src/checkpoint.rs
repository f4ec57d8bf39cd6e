//! Signed checkpoints of the audit chain (hardening item 3).
//!
//! Someone who can write the database can delete the newest events, or rewrite one and
//! recompute every later hash, and the chain still verifies. So, when the configuration has
//! an `audit` block, the server signs the head of the chain as it committed it (count and
//! hash, kept by the store's writer, never read back from the database) with the configured
//! Ed25519 key, and keeps the signature outside the database: one JSON line appended to the
//! checkpoint file and fsynced, and the same line posted to the optional webhook, signed with
//! the Standard Webhooks scheme and sent through the guard. `countersign audit verify
//! --checkpoints` then checks the chain against those lines (`audit::check`).
//!
//! [`run`] is the loop the server owns: a checkpoint every `checkpoint_interval` when the
//! chain moved, and one when it stops (after the worker stopped, so that it covers every
//! event written). A failed sink is logged and tried again at the next checkpoint, which
//! covers everything the lost one did. Signing and the line format are pure functions in the
//! `audit` crate; this module only reads the head, the clock and the configuration, and does
//! the IO.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use audit::Checkpoint;
use audit::chain::Head;
use config::{AuditConfig, CheckpointWebhook};
use tokio::sync::watch;

use crate::Engine;
use crate::connector::webhook::{post_signed, secret_key};
use crate::outbound::{Guard, shown};

/// How often the loop looks at the configuration again while checkpoints are off (a reload
/// may turn them on).
const IDLE: Duration = Duration::from_secs(60);

/// A sink that did not take a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot append to the checkpoint file {path}: {error}")]
    File { path: PathBuf, error: String },
    #[error("the checkpoint webhook {url} did not take the checkpoint: {error}")]
    Webhook { url: String, error: String },
}

/// Opens the checkpoint file for appending, creating it (and making its directory entry
/// durable) if needed. `serve` calls it before it starts, so that a wrong path stops the
/// server rather than every checkpoint.
pub fn open_file(path: &Path) -> Result<std::fs::File, CheckpointError> {
    let fail = |e: std::io::Error| CheckpointError::File {
        path: path.to_owned(),
        error: e.to_string(),
    };
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(fail)?;
    if !existed && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
    }
    Ok(file)
}

/// Appends one line and waits until it is on disk.
fn append(path: &Path, line: &str) -> Result<(), CheckpointError> {
    let mut file = open_file(path)?;
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| CheckpointError::File {
            path: path.to_owned(),
            error: e.to_string(),
        })
}

/// Posts the line, signed as Standard Webhooks: `webhook-id` names the checkpoint, so a
/// receiver can drop a repeat.
async fn post(
    guard: &Guard,
    hook: &CheckpointWebhook,
    cp: &Checkpoint,
    line: &str,
    now_secs: i64,
) -> Result<(), CheckpointError> {
    let fail = |error: String| CheckpointError::Webhook {
        url: shown(&hook.url),
        error,
    };
    guard.check_literal(&hook.url).map_err(fail)?;
    let http = guard
        .client(Duration::from_secs(hook.timeout.secs()))
        .map_err(fail)?;
    let id = format!("ckpt_{}_{}", cp.count, &cp.head[..cp.head.len().min(16)]);
    let res = post_signed(
        &http,
        &hook.url,
        &secret_key(&hook.secret),
        &id,
        now_secs,
        line.to_owned(),
    )
    .await
    .map_err(|e| fail(format!("POST {e}")))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(fail(format!("it answered {}", res.status())))
    }
}

impl Engine {
    /// Signs the head of the chain as this process committed it, at the engine's time, and
    /// writes the checkpoint to every sink of the running configuration. `Ok(None)` when
    /// the configuration has no `audit` block. The file is written first; a webhook failure
    /// is returned after the file has the line.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let config = self.config();
        let Some(audit) = config.audit.as_ref() else {
            return Ok(None);
        };
        let head = self.store.head();
        self.checkpoint_head(audit, &head).await.map(Some)
    }

    async fn checkpoint_head(
        &self,
        audit: &AuditConfig,
        head: &Head,
    ) -> Result<Checkpoint, CheckpointError> {
        let now = self.now();
        let cp = Checkpoint::sign(&audit.signing_key, head, &now.rfc3339());
        let line = cp.to_line();
        let path = audit.file.clone();
        let written = line.clone();
        tokio::task::spawn_blocking(move || append(&path, &written))
            .await
            .map_err(|e| CheckpointError::File {
                path: audit.file.clone(),
                error: e.to_string(),
            })??;
        if let Some(hook) = &audit.webhook {
            let sender = self.sender();
            post(
                sender.guard(),
                hook,
                &cp,
                &line,
                now.millis().div_euclid(1000),
            )
            .await?;
        }
        Ok(cp)
    }
}

/// The last line of the checkpoint file, read from its end (at most `MAX_LINE` bytes).
fn last_line(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let take = len.min(audit::checkpoint::MAX_LINE as u64 + 1);
    file.seek(SeekFrom::Start(len - take))?;
    let mut tail = Vec::new();
    file.take(take).read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    Ok(text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned()))
}

impl Engine {
    /// Compares the database with the newest line of the checkpoint file, when this key
    /// signed it: a chain shorter than it, or a different stored hash at its count, means the
    /// database was changed while the server was away. Cheap (one line, one event), so the
    /// server does it when it starts; `audit verify --checkpoints` is the full check. `None`
    /// when nothing is wrong or there is nothing to compare with.
    pub async fn compare_with_last_checkpoint(&self) -> Option<String> {
        let config = self.config();
        let audit = config.audit.as_ref()?;
        let path = audit.file.clone();
        let line = tokio::task::spawn_blocking(move || last_line(&path))
            .await
            .ok()?
            .ok()??;
        let cp = Checkpoint::verify_line(&line, &[*audit.signing_key.public_key()]).ok()?;
        let head = self.store.head();
        if cp.count > head.seq {
            return Some(format!(
                "the audit chain has {} events, but the last checkpoint (signed {}) covers {}: events were deleted; run `countersign audit verify --checkpoints`",
                head.seq, cp.at, cp.count
            ));
        }
        if cp.count == 0 {
            return None;
        }
        let stored = self.store.events(cp.count - 1, 1).await.ok()?;
        match stored.first() {
            Some(e) if e.seq == cp.count && e.hash == cp.head => None,
            _ => Some(format!(
                "the audit chain's event {} is not the one the last checkpoint (signed {}) covers: events were rewritten; run `countersign audit verify --checkpoints`",
                cp.count, cp.at
            )),
        }
    }
}

/// The checkpoint loop the server runs beside the worker until `shutdown` turns true; then
/// one last checkpoint if the chain moved since the last one this process wrote.
pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    // The head of the last checkpoint this process wrote. The first one is written at the
    // first interval even if nothing moved, since the last process may have died before its
    // shutdown checkpoint; later ones only when the chain moved.
    let mut last: Option<Head> = None;
    let mut first = true;
    if let Some(wrong) = engine.compare_with_last_checkpoint().await {
        tracing::error!("{wrong}");
    }
    loop {
        let stopping = *shutdown.borrow();
        let config = engine.config();
        if let Some(audit) = config.audit.as_ref() {
            let head = engine.store.head();
            if !first && last.as_ref() != Some(&head) {
                match engine.checkpoint_head(audit, &head).await {
                    Ok(cp) => {
                        tracing::info!(count = cp.count, head = %cp.head, "audit checkpoint signed");
                        last = Some(head);
                    }
                    Err(e) => tracing::error!(error = %e, "audit checkpoint not written"),
                }
            }
        }
        first = false;
        if stopping {
            return;
        }
        let wait = config
            .audit
            .as_ref()
            .map_or(IDLE, |a| Duration::from_secs(a.interval.secs().max(1)));
        tokio::select! {
            _ = crate::clock::pause(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}
