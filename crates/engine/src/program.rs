//! Running a configured program: the exec connector's grant, revoke and check programs, and
//! the programs of runbooks' actions (issue 17) all run through [`run`], so that they share
//! one set of rules: a cleared environment with a few harmless variables and the program's
//! own, JSON on stdin, its own process group killed at the timeout, stderr captured, bounded
//! and with secrets redacted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use domain::Span;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::connector::truncate;

/// Variables passed through from the server's environment to the programs it runs.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// The most stderr text kept, after redaction.
const MAX_STDERR: usize = 2048;

/// One program to run.
pub(crate) struct Program<'a> {
    /// The program and its arguments.
    pub argv: &'a [String],
    /// Where it runs (the configuration file's directory).
    pub dir: &'a Path,
    /// Its own environment, on top of [`INHERITED`]; values are secrets (redacted from its
    /// stderr) unless shorter than 4 characters.
    pub env: &'a BTreeMap<String, String>,
    /// Variables that are not secrets (an idempotency key).
    pub plain_env: &'a [(&'a str, String)],
    /// What it reads on stdin.
    pub input: String,
    pub timeout: Span,
    /// Capture at most this many bytes of stdout (a larger output is an error); `None`
    /// discards stdout.
    pub stdout: Option<usize>,
}

/// How a program ended.
pub(crate) struct Finished {
    pub program: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// Bounded, with the program's secrets redacted: safe to record.
    pub stderr: String,
}

impl Finished {
    /// What a failed run says: its status and its stderr.
    pub fn failure(&self) -> String {
        match self.status.code() {
            Some(code) => format!(
                "{:?} exited with status {code}: {}",
                self.program, self.stderr
            ),
            None => format!("{:?} was killed by a signal: {}", self.program, self.stderr),
        }
    }
}

/// Runs a program to its end or its timeout. `Err` when it could not start, ran past its
/// timeout (its process group is killed), or wrote more stdout than allowed.
pub(crate) async fn run(p: Program<'_>) -> Result<Finished, String> {
    let (program, args) = p.argv.split_first().ok_or("no command is configured")?;
    // The program sees only its own configured environment and a few harmless variables,
    // never the server's: that holds the secrets of every connector.
    let inherited = INHERITED
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (*k, v)));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(p.dir)
        .env_clear()
        .envs(inherited)
        .envs(p.env)
        .envs(p.plain_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(if p.stdout.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so that a timeout ends whatever it started too.
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let pid = child.id();
    // Whatever ends this call early (a shutdown's abort, a cancelled task) ends what the
    // program started too, not only the program.
    let mut group = Group(pid);
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let stdout = child.stdout.take();
    let limit = p.stdout.unwrap_or(0);
    let input = p.input;
    let work = async {
        // A program that does not read its stdin must not make us fail: ignore broken pipes.
        let feed = async {
            let _ = stdin.write_all(input.as_bytes()).await;
            drop(stdin);
        };
        let out = async {
            match stdout {
                Some(mut s) => Some(read_bounded(&mut s, limit).await),
                None => None,
            }
        };
        let err = read_bounded(&mut stderr, 64 * 1024);
        let ((), out, err) = tokio::join!(feed, out, err);
        let status = child.wait().await;
        (status, out, err)
    };
    let limit_time = Duration::from_secs(p.timeout.secs());
    let Ok((status, out, err)) = tokio::time::timeout(limit_time, work).await else {
        group.0 = None;
        kill_group(pid).await;
        return Err(format!("{program:?} did not finish within {}", p.timeout));
    };
    group.0 = None;
    let status = status.map_err(|e| format!("waiting for {program:?}: {e}"))?;
    let mut text = String::from_utf8_lossy(&err.0).trim().to_owned();
    for secret in p.env.values().filter(|v| v.len() >= 4) {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    let stderr = truncate(text, MAX_STDERR);
    let stdout = match out {
        Some((_, true)) => {
            return Err(format!(
                "{program:?} wrote more than {limit} bytes on stdout"
            ));
        }
        Some((bytes, false)) => bytes,
        None => vec![],
    };
    Ok(Finished {
        program: program.clone(),
        status,
        stdout,
        stderr,
    })
}

/// Reads at most `limit` bytes and drains the rest, so that a chatty program never blocks on
/// a full pipe; true when there was more.
async fn read_bounded(r: &mut (impl AsyncRead + Unpin), limit: usize) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let _ = (&mut *r).take(limit as u64).read_to_end(&mut buf).await;
    let more = tokio::io::copy(r, &mut tokio::io::sink())
        .await
        .unwrap_or(0);
    (buf, more > 0)
}

/// The process group of a running program, killed if the call is dropped before it ends.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0 {
            // A drop cannot wait asynchronously; `kill` returns at once.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
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
