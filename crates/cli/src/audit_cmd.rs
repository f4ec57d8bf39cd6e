//! `countersign audit verify --checkpoints`, `audit keygen` and `audit public-key`.
//!
//! With checkpoints, the check runs here and not on the server: this command reads every
//! event through `GET /v1/audit` (the stored bytes of each body), recomputes every hash from
//! the bodies with the `audit` crate, and checks the result against the signed checkpoint
//! lines with the public keys it is given. It trusts neither the stored hashes nor the
//! server's own verdict, needs no access to the database file or to the signing key, and can
//! run on the machine that keeps the copy of the checkpoint file.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use audit::{ChainCheck, Checkpoint, PublicKey, SigningKey};
use clap::Args;
use proto::AuditPage;
use serde::Serialize;

use crate::{Client, Failure};

/// How many events one page of `GET /v1/audit` asks for (the server's maximum).
const PAGE: u32 = 1000;
/// Findings printed in the table before the rest are counted.
const SHOWN: usize = 20;

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// A checkpoint file the server wrote (the `audit` block's `checkpoint_file`, or a copy
    /// of it): recompute the chain here and check it against every checkpoint.
    #[arg(long, value_name = "FILE")]
    pub checkpoints: Option<PathBuf>,
    /// The public key checkpoints are signed with: base64 of its 32 bytes, or the PEM text
    /// `openssl pkey -pubout` prints. Repeat it to accept checkpoints of an earlier key.
    #[arg(long, value_name = "KEY", env = "COUNTERSIGN_AUDIT_PUBLIC_KEY")]
    pub public_key: Vec<String>,
    /// A file holding a public key (PEM or base64); repeatable.
    #[arg(long, value_name = "FILE", requires = "checkpoints")]
    pub public_key_file: Vec<PathBuf>,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct VerifyReport {
    ok: bool,
    /// Events read and recomputed.
    events: u64,
    /// Checkpoints whose signature verified.
    checkpoints: usize,
    /// The verified checkpoint that covers the most events.
    newest: Option<Checkpoint>,
    findings: Vec<String>,
}

fn keys(args: &VerifyArgs) -> Result<Vec<PublicKey>, Failure> {
    let mut keys = vec![];
    for text in &args.public_key {
        keys.push(PublicKey::parse(text).map_err(|e| Failure(format!("--public-key: {e}")))?);
    }
    for path in &args.public_key_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
        keys.push(
            PublicKey::parse(&text).map_err(|e| Failure(format!("{}: {e}", path.display())))?,
        );
    }
    if keys.is_empty() {
        return Err(Failure(
            "--checkpoints needs the public key they are signed with: --public-key or --public-key-file \
             (`countersign audit public-key --key-file KEY` prints it)"
                .into(),
        ));
    }
    Ok(keys)
}

/// Every non-empty line of the checkpoint file, verified or refused, with its line number.
fn read_checkpoints(path: &Path, keys: &[PublicKey]) -> Result<Vec<audit::check::Line>, Failure> {
    let file = std::fs::File::open(path)
        .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
    let mut out = vec![];
    for (i, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        out.push((i + 1, Checkpoint::verify_line(text.trim(), keys)));
    }
    Ok(out)
}

pub(crate) async fn verify(
    c: &Client,
    json: bool,
    args: &VerifyArgs,
    path: &Path,
) -> Result<ExitCode, Failure> {
    let keys = keys(args)?;
    let mut check = ChainCheck::new(read_checkpoints(path, &keys)?);
    let mut after = 0;
    loop {
        let page: AuditPage = c
            .get(
                "/v1/audit",
                &[("after", after.to_string()), ("limit", PAGE.to_string())],
            )
            .await?;
        for e in &page.events {
            let at = audit::check::millis_of(&e.at).ok_or_else(|| {
                Failure(format!(
                    "event {}: the server sent a time this client cannot read: {:?}",
                    e.seq, e.at
                ))
            })?;
            check.feed(&audit::chain::StoredEvent {
                seq: e.seq,
                at,
                body: e.event.get().to_owned(),
                prev_hash: e.prev_hash.clone(),
                hash: e.hash.clone(),
            });
        }
        match page.next_after {
            Some(n) if n > after => after = n,
            _ => break,
        }
    }
    let report = check.finish();
    let mut findings: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    if report.checkpoints == 0 {
        findings.push(format!(
            "NO CHECKPOINT: {} has no checkpoint signed by the given key, so nothing proves the chain was not truncated or rewritten",
            path.display()
        ));
    }
    let out = VerifyReport {
        ok: findings.is_empty(),
        events: report.events,
        checkpoints: report.checkpoints,
        newest: report.newest.clone(),
        findings,
    };
    crate::print(json, &out, || {
        let mut text = String::new();
        for f in out.findings.iter().take(SHOWN) {
            text.push_str(f);
            text.push('\n');
        }
        if out.findings.len() > SHOWN {
            text.push_str(&format!(
                "… and {} more findings (--json lists them all)\n",
                out.findings.len() - SHOWN
            ));
        }
        let newest = out.newest.as_ref().map_or(String::new(), |n| {
            format!("; the newest covers {} events, signed {}", n.count, n.at)
        });
        text.push_str(&format!(
            "{}: {} events recomputed from their bodies, {} checkpoints verified{newest}\n",
            if out.ok { "ok" } else { "FAILED" },
            out.events,
            out.checkpoints,
        ));
        text
    })?;
    Ok(if out.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `audit keygen`: the private key on standard output (to go to a secret store or a file),
/// its public key and id on standard error.
pub(crate) fn keygen() -> Result<ExitCode, Failure> {
    let pem = SigningKey::generate_pem().map_err(|e| Failure(e.to_string()))?;
    let key = SigningKey::parse(&pem).map_err(|e| Failure(e.to_string()))?;
    print!("{pem}");
    eprintln!("key id:     {}", key.public_key().key_id());
    eprintln!("public key: {}", key.public_key().to_base64());
    Ok(ExitCode::SUCCESS)
}

/// `audit public-key`: the public key and id of a private key file.
pub(crate) fn public_key(json: bool, path: &Path) -> Result<ExitCode, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
    let key = SigningKey::parse(&text).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    let public = key.public_key();
    #[derive(Serialize)]
    struct Shown {
        key_id: String,
        public_key: String,
        pem: String,
    }
    let shown = Shown {
        key_id: public.key_id(),
        public_key: public.to_base64(),
        pem: public.to_pem(),
    };
    crate::print(json, &shown, || {
        format!(
            "key id:     {}\npublic key: {}\n{}",
            shown.key_id, shown.public_key, shown.pem
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
