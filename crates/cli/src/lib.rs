//! The client commands of `countersign`: they talk to a server over HTTP, reading
//! `COUNTERSIGN_URL` and `COUNTERSIGN_TOKEN`, and print a table (or JSON with `--json`).
//! The connection options belong to these commands only: each takes them (`countersign
//! request list --json`), and the server's own commands (`serve`, `check`, `policy`, `token`)
//! do not show them.
//!
//! This crate depends on the wire types only, never on the server's crates, so that a client
//! cannot accidentally decide anything itself.
//!
//! Exit codes: 0 success; with `request create --wait`, 1 denied and 2 cancelled or expired;
//! with `run start --wait`, 1 failed, 2 cancelled and 4 waiting for the runner; 3 for any
//! error (unreachable server, refused command, bad input).

mod audit_cmd;
mod run_cmd;
mod table;

pub use run_cmd::{RunCmd, RunbookCmd};

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use proto::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Connection settings of every client command. They are global within the command, so they
/// may come before or after a subcommand (`request --json list`, `request list --json`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct Conn {
    /// The server's base URL.
    #[arg(
        long,
        env = "COUNTERSIGN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// A bearer token from `countersign token create`.
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum ClientCommand {
    /// Create, list, show, cancel and comment on requests.
    Request {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: RequestCmd,
    },
    /// Approve or deny the current step of a request.
    Review {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: ReviewCmd,
    },
    /// List, show, revoke and extend grants.
    Grant {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: GrantCmd,
    },
    /// Export and verify the audit log (admins).
    Audit {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// The runbooks you may run (gated runbooks, issue 17).
    Runbook {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: RunbookCmd,
    },
    /// Start, follow, answer, ask access for, resume and cancel runs of runbooks.
    Run {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: RunCmd,
    },
    /// Show why a request was skipped, auto-decided or routed to whom (every policy
    /// evaluation, step by step).
    Explain {
        /// The request's id.
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show what would happen to a request without creating it: deny and warn messages, an
    /// auto-decision, each step skipped or its reviewers.
    Simulate {
        /// The resource to ask for.
        #[arg(long)]
        resource: String,
        /// Whom to simulate for (admins only; yourself by default).
        #[arg(long)]
        requester: Option<String>,
        /// A field value, as name=value (repeatable).
        #[arg(long = "field", value_name = "NAME=VALUE")]
        fields: Vec<String>,
        /// The requested duration, for example 15m or 1h; defaults to the resource's
        /// shortest.
        #[arg(long)]
        duration: Option<String>,
        /// The reason the request would give.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
}

impl ClientCommand {
    /// The connection settings the command was given.
    pub fn conn(&self) -> &Conn {
        match self {
            ClientCommand::Request { conn, .. }
            | ClientCommand::Review { conn, .. }
            | ClientCommand::Grant { conn, .. }
            | ClientCommand::Audit { conn, .. }
            | ClientCommand::Runbook { conn, .. }
            | ClientCommand::Run { conn, .. }
            | ClientCommand::Explain { conn, .. }
            | ClientCommand::Simulate { conn, .. } => conn,
        }
    }
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum RequestCmd {
    /// Ask for a resource.
    Create {
        /// The resource to ask for, as named in the configuration.
        resource: String,
        /// Why you ask (required unless an app gives --purpose).
        #[arg(long, default_value = "")]
        reason: String,
        /// For example 15m or 1h; defaults to the resource's shortest duration.
        #[arg(long)]
        duration: Option<String>,
        /// A field value, as name=value (repeatable).
        #[arg(long = "field", value_name = "NAME=VALUE")]
        fields: Vec<String>,
        /// Start the grant at this time (RFC 3339, e.g. 2026-12-01T09:00:00Z) rather than at
        /// approval.
        #[arg(long, value_name = "TIME")]
        start_at: Option<String>,
        /// What is asked, in markdown (its first line stands in for a missing --reason).
        #[arg(long)]
        purpose: Option<String>,
        /// A link for reviewers (http:// or https://).
        #[arg(long)]
        reference_url: Option<String>,
        /// Your own id for this request, returned with the outcome.
        #[arg(long)]
        correlation_id: Option<String>,
        /// With an app token: the person the app asks for.
        #[arg(long)]
        requester: Option<String>,
        /// Any JSON, returned with the outcome.
        #[arg(long, value_name = "JSON")]
        request_data: Option<String>,
        /// Where the server POSTs the signed outcome (https unless the server allow-lists
        /// the host); the response shows the signing secret once.
        #[arg(long, value_name = "URL")]
        callback_url: Option<String>,
        /// Makes the command safe to retry: the same key and arguments return the request
        /// created the first time (for 24 hours), e.g. a CI run id.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        /// Break the glass (if the resource allows it): access at once, for at most its
        /// break_glass.max_duration, without the workflow; its reviewers are told at once and
        /// must review it afterwards.
        #[arg(long)]
        break_glass: bool,
        /// On a resource of kind "action": the tool whose one call is to be approved.
        #[arg(long, value_name = "TOOL")]
        action: Option<String>,
        /// With --action: the call's arguments, as JSON.
        #[arg(long, value_name = "JSON", requires = "action", default_value = "{}")]
        arguments: String,
        /// Wait for the outcome: exit 0 approved, 1 denied, 2 cancelled or expired.
        #[arg(long)]
        wait: bool,
        /// How often to poll while waiting, in seconds.
        #[arg(long, default_value_t = 2)]
        poll_seconds: u64,
    },
    /// List requests you may see.
    List {
        /// Only requests in this state: pending, approved, denied, cancelled or expired.
        #[arg(long)]
        state: Option<String>,
        /// Only requests for this resource.
        #[arg(long)]
        resource: Option<String>,
        /// Only requests by this requester (an email).
        #[arg(long)]
        requester: Option<String>,
        /// Only requests you may decide now.
        #[arg(long)]
        reviewable: bool,
        /// At most this many, newest first (100 by default, at most 500).
        #[arg(long)]
        limit: Option<u32>,
        /// Start where the previous page ended: the cursor it printed (with the same
        /// filters).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one request with its steps, reviews and comments.
    Show {
        /// The request's id.
        id: String,
    },
    /// Cancel a pending request.
    Cancel {
        /// The request's id.
        id: String,
        /// Why (recorded in the audit log; required when an admin cancels a request of someone
        /// else).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Comment on a request.
    Comment {
        /// The request's id.
        id: String,
        /// The comment.
        text: String,
    },
    /// Assign the current step to another user or group.
    Assign {
        /// The request's id.
        id: String,
        /// The user (an email) or group (group:NAME) who may then decide the step.
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReviewCmd {
    /// Approve the current step.
    Approve {
        /// The request's id.
        id: String,
        /// Shorten the granted duration.
        #[arg(long)]
        duration: Option<String>,
        /// `workflow` approves every resource of the same workflow.
        #[arg(long)]
        scope: Option<String>,
        /// A comment shown with the decision.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny the request.
    Deny {
        /// The request's id.
        id: String,
        /// Why, shown to the requester.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Close a break-glass follow-up: the use was justified.
    Acknowledge {
        /// The break-glass request's id.
        id: String,
        /// A comment recorded with it.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Close a break-glass follow-up: the use was not justified. Revokes the grant if it is
    /// still live.
    Flag {
        /// The break-glass request's id.
        id: String,
        /// What was wrong (required).
        #[arg(long)]
        comment: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantCmd {
    /// List grants you may see.
    List {
        /// Only grants in this state, for example active or expired.
        #[arg(long)]
        state: Option<String>,
        /// Only grants held by this subject (an email).
        #[arg(long)]
        subject: Option<String>,
        /// Only grants of this resource.
        #[arg(long)]
        resource: Option<String>,
        /// At most this many, newest first (100 by default, at most 500).
        #[arg(long)]
        limit: Option<u32>,
        /// Start where the previous page ended: the cursor it printed (with the same
        /// filters).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one grant.
    Show {
        /// The grant's id.
        id: String,
    },
    /// Revoke a grant early (drop your own without a reason).
    Revoke {
        /// The grant's id.
        id: String,
        /// Why (recorded in the audit log; required when an owner or admin revokes someone
        /// else's grant).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Ask to extend your active grant: a new request through the resource's workflow; once
    /// approved, the expiry moves without a gap.
    Extend {
        /// The grant's id.
        id: String,
        /// How much longer, for example 1h; defaults to the grant's own duration.
        #[arg(long)]
        duration: Option<String>,
        /// Why you need longer.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Print every event as one JSON object per line.
    Export {
        /// Start after this sequence number (0: from the first event).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Check the hash chain; exits 1 on any finding. Alone, the server walks the chain. With
    /// --checkpoints, this command reads every event, recomputes every hash from the event
    /// bodies itself and checks them against the signed checkpoints, so that deleted newest
    /// events (truncation) and rewritten events are found too.
    Verify(audit_cmd::VerifyArgs),
    /// Make an Ed25519 key for signed checkpoints: the private key (PKCS#8 PEM) goes to
    /// standard output, for a secret store; its public key and id to standard error.
    Keygen,
    /// Print the public key and key id of a private key (one from `audit keygen` or from
    /// `openssl genpkey -algorithm ed25519`).
    PublicKey {
        /// The private key file (PKCS#8 PEM).
        #[arg(long, value_name = "FILE")]
        key_file: std::path::PathBuf,
    },
}

/// A failed command: what to tell the user.
#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(conn: &Conn) -> Result<Client, Failure> {
        let token = conn.token.clone().ok_or_else(|| {
            Failure("no token: set COUNTERSIGN_TOKEN (see `countersign token create`)".into())
        })?;
        if conn.url.starts_with("https://") {
            return Err(Failure(
                "this build talks plain HTTP only; put a TLS-terminating proxy in front or use http://".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client {
            http,
            base: conn.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Failure> {
        let res = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Failure(format!("cannot reach {}: {e}", self.base)))?;
        let status = res.status();
        let bytes = res.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| Failure(format!("unexpected response from the server: {e}")));
        }
        Err(Failure(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => format!(
                "{} ({}): {}",
                status.as_u16(),
                b.error.code,
                b.error.message
            ),
            Err(_) => format!("the server answered {status}"),
        }))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, Failure> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}

fn print<T: Serialize>(
    json: bool,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<(), Failure> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table());
    }
    Ok(())
}

fn opt(pairs: &[(&'static str, &Option<String>)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v.clone())))
        .collect()
}

/// Runs a client command and returns the process exit code.
pub async fn run(cmd: ClientCommand) -> ExitCode {
    let conn = cmd.conn().clone();
    match run_inner(&conn, cmd).await {
        Ok(code) => code,
        Err(Failure(msg)) => {
            eprintln!("countersign: {}", table::printable(&msg));
            ExitCode::from(3)
        }
    }
}

/// `--field name=value` arguments as the API's `fields` object.
fn field_args(
    fields: Vec<String>,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, Failure> {
    let mut map = std::collections::BTreeMap::new();
    for f in fields {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| Failure(format!("--field {f:?}: write it as name=value")))?;
        map.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
    }
    Ok(map)
}

async fn run_inner(conn: &Conn, cmd: ClientCommand) -> Result<ExitCode, Failure> {
    let json = conn.json;
    // The key commands need no server.
    match &cmd {
        ClientCommand::Audit {
            cmd: AuditCmd::Keygen,
            ..
        } => return audit_cmd::keygen(),
        ClientCommand::Audit {
            cmd: AuditCmd::PublicKey { key_file },
            ..
        } => {
            return audit_cmd::public_key(json, key_file);
        }
        _ => {}
    }
    let c = Client::new(conn)?;
    match cmd {
        ClientCommand::Runbook { cmd, .. } => run_cmd::runbooks(&c, json, cmd).await,
        ClientCommand::Run { cmd, .. } => run_cmd::runs(&c, json, cmd).await,
        ClientCommand::Explain { id, .. } => {
            let e: ExplainView = c.get(&format!("/v1/requests/{id}/explain"), &[]).await?;
            print(json, &e, || table::explanation(&e))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Simulate {
            resource,
            requester,
            fields,
            duration,
            reason,
            ..
        } => {
            let body = SimulateBody {
                resource,
                requester,
                reason,
                duration,
                fields: field_args(fields)?,
            };
            let s: SimulationView = c.post("/v1/simulate", &body).await?;
            print(json, &s, || table::simulation(&s))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Request {
            cmd:
                RequestCmd::Create {
                    resource,
                    reason,
                    duration,
                    fields,
                    start_at,
                    purpose,
                    reference_url,
                    correlation_id,
                    requester,
                    request_data,
                    callback_url,
                    idempotency_key,
                    break_glass,
                    action,
                    arguments,
                    wait,
                    poll_seconds,
                },
            ..
        } => {
            let map = field_args(fields)?;
            let action = match action {
                Some(tool) => Some(ActionBody {
                    tool,
                    arguments: serde_json::from_str(&arguments)
                        .map_err(|e| Failure(format!("--arguments is not JSON: {e}")))?,
                }),
                None => None,
            };
            let request_data = request_data
                .map(|d| serde_json::from_str(&d))
                .transpose()
                .map_err(|e| Failure(format!("--request-data is not JSON: {e}")))?;
            let body = CreateRequestBody {
                resource,
                reason,
                duration,
                fields: map,
                start_at,
                purpose,
                reference_url,
                correlation_id,
                request_data,
                requester,
                callback: callback_url.map(|url| CallbackBody { url }),
                reviewer_credentials: vec![],
                break_glass,
                action,
            };
            let mut req = c.http.post(format!("{}/v1/requests", c.base)).json(&body);
            if let Some(k) = &idempotency_key {
                req = req.header("idempotency-key", k);
            }
            let mut r: RequestView = c.send(req).await?;
            if !wait {
                print(json, &r, || table::request(&r))?;
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(secret) = &r.callback_secret {
                eprintln!(
                    "callback secret {}  (shown once: keep it to verify callbacks)",
                    table::printable(secret)
                );
            }
            eprintln!(
                "request {} is {}; waiting for the outcome…",
                table::printable(&r.id),
                table::printable(&r.state)
            );
            while r.state == "pending" {
                pause(Duration::from_secs(poll_seconds.max(1))).await;
                r = c.get(&format!("/v1/requests/{}", r.id), &[]).await?;
            }
            print(json, &r, || table::request(&r))?;
            Ok(ExitCode::from(match r.state.as_str() {
                "approved" => 0,
                "denied" => 1,
                _ => 2,
            }))
        }
        ClientCommand::Request {
            cmd:
                RequestCmd::List {
                    state,
                    resource,
                    requester,
                    reviewable,
                    limit,
                    cursor,
                },
            ..
        } => {
            let mut q = opt(&[
                ("state", &state),
                ("resource", &resource),
                ("requester", &requester),
                ("cursor", &cursor),
            ]);
            if reviewable {
                q.push(("reviewable_by", "me".into()));
            }
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            let list: RequestList = c.get("/v1/requests", &q).await?;
            print(json, &list, || {
                table::requests(&list.requests) + &table::more(list.next_cursor.as_deref())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Request {
            cmd: RequestCmd::Show { id },
            ..
        } => {
            let r: RequestView = c.get(&format!("/v1/requests/{id}"), &[]).await?;
            print(json, &r, || table::request(&r))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Request {
            cmd: RequestCmd::Cancel { id, reason },
            ..
        } => {
            let r: RequestView = c
                .post(&format!("/v1/requests/{id}/cancel"), &ReasonBody { reason })
                .await?;
            print(json, &r, || table::request(&r))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Request {
            cmd: RequestCmd::Comment { id, text },
            ..
        } => {
            let r: RequestView = c
                .post(
                    &format!("/v1/requests/{id}/comments"),
                    &CommentBody { text },
                )
                .await?;
            print(json, &r, || table::request(&r))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Request {
            cmd: RequestCmd::Assign { id, to },
            ..
        } => {
            let r: RequestView = c
                .post(&format!("/v1/requests/{id}/assign"), &AssignBody { to })
                .await?;
            print(json, &r, || table::request(&r))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Review { cmd, .. } => {
            let reviews = |id: &str| format!("/v1/requests/{id}/reviews");
            let follow_up = |id: &str| format!("/v1/requests/{id}/follow-up");
            let r: RequestView = match cmd {
                ReviewCmd::Approve {
                    id,
                    duration,
                    scope,
                    comment,
                } => {
                    let body = ReviewBody {
                        decision: "approve".into(),
                        comment,
                        duration,
                        scope,
                    };
                    c.post(&reviews(&id), &body).await?
                }
                ReviewCmd::Deny { id, comment } => {
                    let body = ReviewBody {
                        decision: "deny".into(),
                        comment,
                        duration: None,
                        scope: None,
                    };
                    c.post(&reviews(&id), &body).await?
                }
                ReviewCmd::Acknowledge { id, comment } => {
                    let body = FollowUpBody {
                        verdict: "acknowledge".into(),
                        comment,
                    };
                    c.post(&follow_up(&id), &body).await?
                }
                ReviewCmd::Flag { id, comment } => {
                    let body = FollowUpBody {
                        verdict: "flag".into(),
                        comment: Some(comment),
                    };
                    c.post(&follow_up(&id), &body).await?
                }
            };
            print(json, &r, || table::request(&r))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Grant {
            cmd:
                GrantCmd::List {
                    state,
                    subject,
                    resource,
                    limit,
                    cursor,
                },
            ..
        } => {
            let mut q = opt(&[
                ("state", &state),
                ("subject", &subject),
                ("resource", &resource),
                ("cursor", &cursor),
            ]);
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            let list: GrantList = c.get("/v1/grants", &q).await?;
            print(json, &list, || {
                table::grants(&list.grants) + &table::more(list.next_cursor.as_deref())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Grant {
            cmd: GrantCmd::Show { id },
            ..
        } => {
            let g: GrantView = c.get(&format!("/v1/grants/{id}"), &[]).await?;
            print(json, &g, || table::grants(std::slice::from_ref(&g)))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Grant {
            cmd:
                GrantCmd::Extend {
                    id,
                    duration,
                    reason,
                },
            ..
        } => {
            let body = ExtendBody { duration, reason };
            let r: RequestView = c.post(&format!("/v1/grants/{id}/extend"), &body).await?;
            print(json, &r, || table::request(&r))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Grant {
            cmd: GrantCmd::Revoke { id, reason },
            ..
        } => {
            let g: GrantView = c
                .post(&format!("/v1/grants/{id}/revoke"), &ReasonBody { reason })
                .await?;
            print(json, &g, || table::grants(std::slice::from_ref(&g)))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Audit {
            cmd: AuditCmd::Export { mut after },
            ..
        } => loop {
            let page: AuditPage = c
                .get(
                    "/v1/audit",
                    &[("after", after.to_string()), ("limit", "1000".into())],
                )
                .await?;
            for e in &page.events {
                println!("{}", serde_json::to_string(e)?);
            }
            match page.next_after {
                Some(n) => after = n,
                None => return Ok(ExitCode::SUCCESS),
            }
        },
        ClientCommand::Audit {
            cmd: AuditCmd::Keygen | AuditCmd::PublicKey { .. },
            ..
        } => Ok(ExitCode::SUCCESS),
        ClientCommand::Audit {
            cmd: AuditCmd::Verify(args),
            ..
        } => {
            if let Some(path) = &args.checkpoints {
                return audit_cmd::verify(&c, json, &args, path).await;
            }
            let v: VerifyView = c.get("/v1/audit/verify", &[]).await?;
            print(json, &v, || match (&v.head, &v.error) {
                (Some(head), _) if v.ok => format!("ok: {} events, head {head}\n", v.checked),
                (_, Some(e)) => format!("BROKEN: {}\n", table::printable(e)),
                _ => format!("ok: {} events\n", v.checked),
            })?;
            Ok(if v.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// Client-side polling waits in real time.
#[allow(clippy::disallowed_methods)]
async fn pause(d: Duration) {
    tokio::time::sleep(d).await;
}
