//! Behaviour tested as data: every test is a configuration, a script of commands and the audit
//! transcript the script produces, compared with `expect!` (run with `UPDATE_EXPECT=1` to
//! regenerate, then read the diff). Each test names the rule of PRODUCT.md §3 it proves.
//!
//! The engine runs for real: a SQLite store in a temporary directory, the exec connector
//! running real processes, and a manual clock starting at 2026-01-01T00:00:00Z.
//!
//! Script commands, one per line (`#` starts a comment line). A user is written by the local
//! part of their address (`alice` is `alice@example.com`); requests are named `R1`, `R2`… and
//! grants `G1`, `G2`… in the order they appear; commands about a request default to the latest
//! one created.
//!
//! ```text
//! request <user> <resource> [<duration>] [start=<duration>] [field=value…] [reason…]
//! approve <user> [R<n>] [duration=<d>] [scope=workflow] [comment…]
//! deny    <user> [R<n>] [comment…]
//! cancel  <user> [R<n>] [reason…]
//! comment <user> [R<n>] <text…>
//! assign  <user> [R<n>] <principal>        (a user's local part, or group:<name>)
//! revoke  <user> G<n> [reason…]
//! drop    <user> G<n>
//! extend  <user> G<n> [<duration>] [reason…]   (ask to extend a grant: a new request)
//! advance <duration>                        (move the clock, then run due jobs until none)
//! tick                                      (run due jobs until none)
//! state   R<n> | G<n>                       (show the stored state)
//! touch   <file>                            (create a file in the configuration directory)
//! rm      <file>                            (remove one)
//! exists  <file>                            (whether it is there)
//! ```
//!
//! The transcript echoes each command after `> ` and then either the error it got (`error:
//! <kind>: <message>`) or the audit events it wrote, one per line: kind, subject, `by <actor>`,
//! then the event's details (timestamps shown relative to the start, `+1h`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use domain::{Decision, DomainError, Event, EventKind, Input, Principal, ReviewInput, Scope, Span};
use engine::{CreateRequest, Engine, EngineError, ManualClock};
use expect_test::{Expect, expect};
use store::Store;

/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000;

/// The people and connectors every scenario shares; each test adds its resources.
const COMMON: &str = r#"
user "alice@example.com"   {}
user "bob@example.com"     {}
user "carol@example.com"   {}
user "dan@example.com"     { groups = ["security"] }
user "sam@example.com"     { groups = ["security"] }
user "eve@example.com"     { groups = ["leads"] }
user "hank@example.com"    { groups = ["security", "leads"] }
user "frank@example.com"   {}
user "grace@example.com"   {}
user "mallory@example.com" {}
user "root@example.com"    { roles = ["admin"] }

connector "ok" {
  type           = "exec"
  grant_command  = ["sh", "-c", "cat >/dev/null"]
  revoke_command = ["sh", "-c", "cat >/dev/null"]
}

connector "flaky" {
  type           = "exec"
  grant_command  = ["sh", "-c", "echo connection refused >&2; exit 3"]
  revoke_command = ["sh", "-c", "cat >/dev/null"]
  max_attempts   = 3
}

# Keeps the access as a file `held-<subject>` and can tell whether it is there.
connector "files" {
  type           = "exec"
  grant_command  = ["sh", "-c", "s=$(sed -n 's/.*\"subject\":\"\\([^@]*\\)@.*/\\1/p'); touch held-$s"]
  revoke_command = ["sh", "-c", "s=$(sed -n 's/.*\"subject\":\"\\([^@]*\\)@.*/\\1/p'); rm -f held-$s"]
  check_command  = ["sh", "-c", "s=$(sed -n 's/.*\"subject\":\"\\([^@]*\\)@.*/\\1/p'); test -e held-$s"]
}

# Fails its first two grant calls, then succeeds.
connector "twice" {
  type           = "exec"
  grant_command  = ["sh", "-c", "cat >/dev/null; n=$(cat tries 2>/dev/null || echo 0); n=$((n+1)); echo $n >tries; [ $n -gt 2 ] || { echo try $n: timeout talking to target >&2; exit 1; }"]
  revoke_command = ["sh", "-c", "cat >/dev/null"]
}

connector "stuck" {
  type           = "exec"
  grant_command  = ["sh", "-c", "cat >/dev/null"]
  revoke_command = ["sh", "-c", "cat >/dev/null; test -e revoke-works || { echo permission denied >&2; exit 3; }"]
}
"#;

async fn check(config_hcl: &str, script: &str, expect: Expect) {
    check_files(&[], config_hcl, script, expect).await
}

/// Like [`check`], with files (policy bundles) written into the configuration's directory
/// first.
async fn check_files(files: &[(&str, &str)], config_hcl: &str, script: &str, expect: Expect) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    // Named as a file in the temporary directory: exec connectors run there (`touch`). A bare
    // relative name would leave the connectors' directory empty, and spawning would fail.
    let path = dir.path().join("countersign.hcl");
    let src = format!("{COMMON}\n{config_hcl}");
    let config = match config::load_str(path.to_str().expect("utf-8 path"), &src) {
        Ok(c) => c,
        Err(e) => panic!("the scenario's configuration does not load:\n{e}"),
    };
    let db = dir.path().join("countersign.db");
    let url = format!("sqlite://{}", db.to_str().expect("utf-8 path"));
    let store: Arc<dyn Store> = store::open(&url, store::Options::default())
        .await
        .expect("open store");
    let clock = Arc::new(ManualClock::new(domain::Timestamp::from_millis(START)));
    let engine = Engine::new(store.clone(), config, clock.clone());
    engine.ensure_sweep().await.expect("schedule the sweep");
    let mut run = Run {
        engine,
        clock,
        dir: dir.path().to_owned(),
        config: (path.to_string_lossy().into_owned(), src),
        names: BTreeMap::new(),
        requests: 0,
        grants: 0,
        latest: None,
        seen: 0,
        out: String::new(),
    };
    for line in script.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        run.step(line).await;
    }
    store.close().await;
    expect.assert_eq(&run.out);
}

struct Run {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    dir: PathBuf,
    /// The configuration's path and text, for `reload`.
    config: (String, String),
    /// Request and grant ids → `R1`, `G1`…
    names: BTreeMap<String, String>,
    requests: usize,
    grants: usize,
    latest: Option<String>,
    /// The sequence number of the last audit event shown.
    seen: i64,
    out: String,
}

fn email(user: &str) -> String {
    format!("{user}@example.com")
}

fn short(text: &str) -> String {
    text.replace("@example.com", "")
}

/// A time relative to the start of the scenario: `+1h30m`.
fn relative(ms: i64) -> String {
    let sign = if ms < START { '-' } else { '+' };
    let d = (ms - START).unsigned_abs();
    if d.is_multiple_of(1000) {
        format!("{sign}{}", Span::from_secs(d / 1000))
    } else {
        format!("{sign}{d}ms")
    }
}

fn looks_like_span(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit()) && Span::parse(word).is_ok()
}

fn error_line(e: &EngineError) -> String {
    let kind = match e {
        EngineError::NotFound(_) => "not_found",
        EngineError::Domain(DomainError::Invalid(_)) => "invalid",
        EngineError::Domain(DomainError::Forbidden(_)) => "forbidden",
        EngineError::Domain(DomainError::Conflict(_)) => "conflict",
        EngineError::Upstream(_) => "upstream",
        EngineError::Store(_) => "store",
    };
    format!("{kind}: {e}")
}

impl Run {
    fn name(&mut self, id: &str, prefix: char) -> String {
        if let Some(n) = self.names.get(id) {
            return n.clone();
        }
        let n = if prefix == 'R' {
            self.requests += 1;
            format!("R{}", self.requests)
        } else {
            self.grants += 1;
            format!("G{}", self.grants)
        };
        self.names.insert(id.to_owned(), n.clone());
        n
    }

    fn id(&self, name: &str) -> String {
        self.names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("the script names {name}, which does not exist yet"))
    }

    /// Replaces ids by names, addresses by local parts and the scenario's directory by `.`.
    fn clean(&self, text: &str) -> String {
        let mut text = text.replace(self.dir.to_string_lossy().as_ref(), ".");
        for (id, name) in &self.names {
            text = text.replace(id.as_str(), name);
        }
        short(&text)
    }

    fn actor(&self, user: &str) -> domain::Actor {
        self.engine
            .actor(&email(user))
            .unwrap_or_else(|| panic!("{user} is not a configured user"))
    }

    /// An optional `R<n>` at the front of `words`, else the latest request.
    fn target(&self, words: &mut &[&str]) -> String {
        if let Some(w) = words.first()
            && w.starts_with('R')
            && w[1..].parse::<u32>().is_ok()
        {
            *words = &words[1..];
            return self.id(w);
        }
        self.latest
            .clone()
            .expect("the script has no request to act on yet")
    }

    async fn step(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut echo = format!("> {line}");
        let result = self.command(&words).await;
        if words[0] == "advance" {
            write!(echo, " (now {})", relative(self.engine.now().millis())).ok();
        }
        self.out.push_str(&echo);
        self.out.push('\n');
        let shown = self.events().await;
        match result {
            Ok(Some(text)) => {
                let text = self.clean(&text);
                writeln!(self.out, "  {text}").ok();
            }
            Ok(None) if shown == 0 => self.out.push_str("  (no events)\n"),
            Ok(None) => {}
            Err(e) => {
                let line = self.clean(&error_line(&e));
                writeln!(self.out, "  error: {line}").ok();
            }
        }
    }

    /// Prints the audit events written since the last call; returns how many.
    async fn events(&mut self) -> usize {
        let mut shown = 0;
        loop {
            let page = self
                .engine
                .store()
                .events(self.seen, 1000)
                .await
                .expect("read events");
            for stored in &page {
                self.seen = stored.seq;
                let e: Event = serde_json::from_str(&stored.body).expect("event body");
                let line = self.event_line(&e);
                writeln!(self.out, "  {line}").ok();
                shown += 1;
            }
            if page.len() < 1000 {
                return shown;
            }
        }
    }

    fn event_line(&mut self, e: &Event) -> String {
        let mut s = e.kind.as_str().to_owned();
        if let Some(r) = &e.request {
            let n = self.name(r, 'R');
            write!(s, " {n}").ok();
        }
        if let Some(g) = &e.grant {
            let n = self.name(g, 'G');
            write!(s, " {n}").ok();
        }
        if let Some(a) = &e.actor {
            write!(s, " by {}", short(a)).ok();
        }
        for (k, v) in &e.detail {
            // The reason a request gives is free text; it proves nothing here.
            if k == "reason" && e.kind == EventKind::RequestCreated {
                continue;
            }
            let v = match (k.as_str(), v.parse::<i64>()) {
                ("expires_at" | "start_at", Ok(ms)) => relative(ms),
                _ => self.clean(v),
            };
            if v.contains(char::is_whitespace) {
                write!(s, " {k}='{v}'").ok();
            } else {
                write!(s, " {k}={v}").ok();
            }
        }
        s
    }

    async fn settle(&self) -> Result<(), EngineError> {
        for _ in 0..100 {
            if self.engine.run_due().await? == 0 {
                return Ok(());
            }
        }
        panic!("jobs keep coming due: the worker does not settle");
    }

    async fn command(&mut self, words: &[&str]) -> Result<Option<String>, EngineError> {
        let (cmd, args) = words.split_first().expect("a command");
        match *cmd {
            "request" => {
                let [user, resource, rest @ ..] = args else {
                    panic!("request <user> <resource> …");
                };
                let mut rest = rest;
                let mut duration = None;
                if let Some(first) = rest.first().filter(|w| looks_like_span(w)) {
                    duration = Some(Span::parse(first).expect("span"));
                    rest = &rest[1..];
                }
                let mut fields = BTreeMap::new();
                let mut reason = vec![];
                let mut start_at = None;
                for w in rest {
                    if let Some(d) = w.strip_prefix("start=") {
                        let d = Span::parse(d).expect("span");
                        start_at = Some(self.engine.now().plus(d));
                        continue;
                    }
                    match w.split_once('=') {
                        Some((k, v)) => {
                            fields.insert(k.to_owned(), Input::Text(v.to_owned()));
                        }
                        None => reason.push(*w),
                    }
                }
                let reason = if reason.is_empty() {
                    "testing".to_owned()
                } else {
                    reason.join(" ")
                };
                let input = CreateRequest {
                    resource: (*resource).to_owned(),
                    reason,
                    duration,
                    fields,
                    start_at,
                    ..Default::default()
                };
                let req = self
                    .engine
                    .create_request(&self.actor(user), input)
                    .await?
                    .request;
                self.name(&req.id, 'R');
                self.latest = Some(req.id);
                Ok(None)
            }
            "approve" | "deny" => {
                let [user, rest @ ..] = args else {
                    panic!("{cmd} <user> …");
                };
                let mut rest = rest;
                let id = self.target(&mut rest);
                let mut input = ReviewInput {
                    decision: if *cmd == "approve" {
                        Decision::Approve
                    } else {
                        Decision::Deny
                    },
                    comment: None,
                    duration: None,
                    scope: Scope::Resource,
                };
                let mut comment = vec![];
                for w in rest {
                    if let Some(d) = w.strip_prefix("duration=") {
                        input.duration = Some(Span::parse(d).expect("span"));
                    } else if let Some(s) = w.strip_prefix("scope=") {
                        input.scope = match s {
                            "workflow" => Scope::Workflow,
                            _ => Scope::Resource,
                        };
                    } else {
                        comment.push(*w);
                    }
                }
                if !comment.is_empty() {
                    input.comment = Some(comment.join(" "));
                }
                self.engine.review(&self.actor(user), &id, input).await?;
                Ok(None)
            }
            "cancel" => {
                let [user, rest @ ..] = args else {
                    panic!("cancel <user> …");
                };
                let mut rest = rest;
                let id = self.target(&mut rest);
                let reason = (!rest.is_empty()).then(|| rest.join(" "));
                self.engine.cancel(&self.actor(user), &id, reason).await?;
                Ok(None)
            }
            "comment" => {
                let [user, rest @ ..] = args else {
                    panic!("comment <user> …");
                };
                let mut rest = rest;
                let id = self.target(&mut rest);
                self.engine
                    .comment(&self.actor(user), &id, rest.join(" "))
                    .await?;
                Ok(None)
            }
            "assign" => {
                let [user, rest @ ..] = args else {
                    panic!("assign <user> …");
                };
                let mut rest = rest;
                let id = self.target(&mut rest);
                let [to] = rest else {
                    panic!("assign <user> [R<n>] <principal>");
                };
                let to = if to.contains(':') {
                    (*to).to_owned()
                } else {
                    email(to)
                };
                let to = Principal::parse(&to).expect("principal");
                self.engine.assign(&self.actor(user), &id, to).await?;
                Ok(None)
            }
            "revoke" | "drop" => {
                let [user, grant, rest @ ..] = args else {
                    panic!("{cmd} <user> G<n> …");
                };
                let id = self.id(grant);
                let reason = (!rest.is_empty()).then(|| rest.join(" "));
                self.engine
                    .revoke_grant(&self.actor(user), &id, reason)
                    .await?;
                Ok(None)
            }
            "extend" => {
                let [user, grant, rest @ ..] = args else {
                    panic!("extend <user> G<n> [<duration>] [reason…]");
                };
                let mut rest = rest;
                let mut duration = None;
                if let Some(first) = rest.first().filter(|w| looks_like_span(w)) {
                    duration = Some(Span::parse(first).expect("span"));
                    rest = &rest[1..];
                }
                let id = self.id(grant);
                let req = self
                    .engine
                    .extend_grant(&self.actor(user), &id, duration, rest.join(" "))
                    .await?;
                self.name(&req.id, 'R');
                self.latest = Some(req.id);
                Ok(None)
            }
            "advance" => {
                let [d] = args else {
                    panic!("advance <duration>");
                };
                let d = Span::parse(d).expect("span");
                self.clock.advance(Duration::from_secs(d.secs()));
                self.settle().await?;
                Ok(None)
            }
            "tick" => {
                self.settle().await?;
                Ok(None)
            }
            "state" => {
                let [name] = args else {
                    panic!("state R<n> | G<n>");
                };
                let id = self.id(name);
                let store = self.engine.store();
                if name.starts_with('R') {
                    let r = store.request(&id).await?.expect("request");
                    let mut s = format!("{name} {}", r.state.as_str());
                    if let Some(i) = r.current_step() {
                        write!(s, " step={}", i + 1).ok();
                    }
                    if let Some(g) = &r.grant {
                        write!(s, " grant={g}").ok();
                    }
                    Ok(Some(s))
                } else {
                    let g = store.grant(&id).await?.expect("grant");
                    let mut s = format!("{name} {}", g.state.as_str());
                    if let Some(t) = g.expires_at {
                        write!(s, " expires_at={}", relative(t.millis())).ok();
                    }
                    if g.attempts > 0 {
                        write!(s, " attempts={}", g.attempts).ok();
                    }
                    if let Some(e) = &g.last_error {
                        write!(s, " last_error='{e}'").ok();
                    }
                    Ok(Some(s))
                }
            }
            "write" => {
                let [file, text @ ..] = args else {
                    panic!("write <file> <text…>");
                };
                let text = text.join(" ").replace("\\n", "\n");
                std::fs::write(self.dir.join(file), text).expect("write");
                Ok(Some(format!("wrote {file}")))
            }
            "reload" => {
                let config = config::load_str(&self.config.0, &self.config.1).expect("config");
                Ok(Some(match self.engine.reload(config) {
                    Ok(()) => "reloaded".to_owned(),
                    Err(errors) => {
                        let dir = self.dir.to_string_lossy().into_owned();
                        let list: Vec<String> = errors
                            .iter()
                            .map(|e| e.to_string().replace(&dir, "."))
                            .collect();
                        format!("reload refused: {}", list.join("; "))
                    }
                }))
            }
            "explain" => {
                let [name] = args else {
                    panic!("explain R<n>");
                };
                let id = self.id(name);
                let e = self.engine.explain(&self.actor("root"), &id).await?;
                Ok(Some(e.lines.join("\n  ")))
            }
            "simulate" => {
                let [user, resource, rest @ ..] = args else {
                    panic!("simulate <user> <resource> [field=value…]");
                };
                let fields = rest
                    .iter()
                    .filter_map(|w| w.split_once('='))
                    .map(|(k, v)| (k.to_owned(), Input::Text(v.to_owned())))
                    .collect();
                let input = CreateRequest {
                    resource: (*resource).to_owned(),
                    reason: "what if".into(),
                    duration: None,
                    fields,
                    start_at: None,
                    ..Default::default()
                };
                let s = self
                    .engine
                    .simulate(&self.actor("root"), Some(email(user)), input)
                    .await?;
                Ok(Some(format!(
                    "outcome {}\n  {}",
                    s.explanation.state,
                    s.explanation.lines.join("\n  ")
                )))
            }
            "touch" => {
                let [file] = args else {
                    panic!("touch <file>");
                };
                std::fs::write(self.dir.join(file), "").expect("touch");
                Ok(Some(format!("created {file}")))
            }
            "rm" => {
                let [file] = args else { panic!("rm <file>") };
                std::fs::remove_file(self.dir.join(file)).expect("rm");
                Ok(Some(format!("removed {file}")))
            }
            "exists" => {
                let [file] = args else {
                    panic!("exists <file>")
                };
                let there = self.dir.join(file).exists();
                Ok(Some(format!(
                    "{file} {}",
                    if there { "exists" } else { "absent" }
                )))
            }
            other => panic!("unknown script command {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// The three-step example of PRODUCT.md §4 (Abbey's workflow): one of three, then both of two,
/// then one more; an exec connector gives the access and takes it back when it expires.
#[tokio::test]
async fn seed_001_three_step_workflow_from_request_to_expiry() {
    check(
        r#"
        resource "prod-db-read" {
          connector    = "ok"
          grant        = { role = "readonly" }
          max_duration = "24h"
          durations    = ["5m", "15m", "1h", "4h", "24h"]
          field "ticket" {
            type     = "string"
            required = true
          }
          workflow = {
            steps = [
              { reviewers = { one_of = ["alice@example.com", "bob@example.com", "carol@example.com"] } },
              { reviewers = { all_of = ["dan@example.com", "eve@example.com"] } },
              { reviewers = { one_of = ["frank@example.com"] } },
            ]
          }
        }
        "#,
        r#"
        request grace prod-db-read 1h
        request grace prod-db-read 1h ticket=INC-42 investigating slow queries
        approve carol
        approve dan
        approve frank
        approve eve
        approve frank
        state R1
        state G1
        tick
        advance 59m
        advance 1m
        state G1
        "#,
        expect![[r#"
            > request grace prod-db-read 1h
              error: invalid: field "ticket" is required
            > request grace prod-db-read 1h ticket=INC-42 investigating slow queries
              request_created R1 by grace duration=1h resource=prod-db-read
              step_entered R1 reviewers=alice,bob,carol step=1
            > approve carol
              review_recorded R1 by carol decision=approve step=1
              step_approved R1 step=1
              step_entered R1 reviewers=dan,eve step=2
            > approve dan
              review_recorded R1 by dan decision=approve step=2
            > approve frank
              error: forbidden: frank is not a reviewer of step 2
            > approve eve
              review_recorded R1 by eve decision=approve step=2
              step_approved R1 step=2
              step_entered R1 reviewers=frank step=3
            > approve frank
              review_recorded R1 by frank decision=approve step=3
              step_approved R1 step=3
              request_approved R1 by frank
              grant_issued G1 duration=1h request=R1 resource=prod-db-read subject=grace
            > state R1
              R1 approved grant=G1
            > state G1
              G1 activating
            > tick
              grant_activated G1 expires_at=+1h
            > advance 59m (now +59m)
              grant_expiring G1 expires_at=+1h seconds_left=60 subject=grace
            > advance 1m (now +1h)
              grant_revoke_started G1 why=expired
              grant_expired G1
            > state G1
              G1 expired expires_at=+1h
        "#]],
    )
    .await;
}

/// Rule 1: the four outcomes are terminal; nothing moves a request back or decides it twice.
#[tokio::test]
async fn rule_1_terminal_states_are_final() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com", "carol@example.com"] } } ] }
        }
        "#,
        r#"
        request alice db
        deny bob not during the freeze
        approve carol
        deny carol
        cancel alice
        state R1
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob,carol step=1
            > deny bob not during the freeze
              review_recorded R1 by bob decision=deny step=1
              request_denied R1 by bob comment='not during the freeze'
            > approve carol
              error: conflict: request R1 is already denied
            > deny carol
              error: conflict: request R1 is already denied
            > cancel alice
              error: conflict: request R1 is already denied
            > state R1
              R1 denied
        "#]],
    )
    .await;
}

/// Rule 3: a request not decided within the resource's `pending_ttl` expires.
#[tokio::test]
async fn rule_3_pending_request_expires_after_pending_ttl() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          pending_ttl  = "2h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
        r#"
        request alice db
        advance 1h59m
        advance 1m
        approve bob
        state R1
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob step=1
            > advance 1h59m (now +1h59m)
              (no events)
            > advance 1m (now +2h)
              request_expired R1 comment='not decided in time'
            > approve bob
              error: conflict: request R1 is already expired
            > state R1
              R1 expired
        "#]],
    )
    .await;
}

/// Rule 4: the requester cancels; an admin cancels anyone's request, with a reason; nobody
/// else may (a reviewer is refused, an uninvolved user does not even see the request).
#[tokio::test]
async fn rule_4_requester_or_admin_with_reason_may_cancel() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
        r#"
        request alice db
        cancel alice R1 changed my mind
        request alice db
        cancel bob R2 please resubmit
        cancel mallory R2 mine now
        cancel root R2
        cancel root R2 duplicate of R1
        approve bob R2
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob step=1
            > cancel alice R1 changed my mind
              request_cancelled R1 by alice comment='changed my mind'
            > request alice db
              request_created R2 by alice duration=1h resource=db
              step_entered R2 reviewers=bob step=1
            > cancel bob R2 please resubmit
              error: forbidden: only the requester, the application that created it or an admin may cancel a request
            > cancel mallory R2 mine now
              error: not_found: request R2 not found
            > cancel root R2
              error: invalid: an admin must give a reason to cancel someone's request
            > cancel root R2 duplicate of R1
              request_cancelled R2 by root comment='duplicate of R1'
            > approve bob R2
              error: conflict: request R2 is already cancelled
        "#]],
    )
    .await;
}

/// Rule 5: while the requester holds an active grant for the resource, a new request is
/// answered with it; once it has expired, a new request goes through the workflow again.
/// Other requesters are never covered by someone else's grant.
#[tokio::test]
async fn rule_5_active_grant_answers_a_new_request() {
    check(
        r#"
        resource "db" {
          max_duration = "4h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com", "carol@example.com"] } } ] }
        }
        "#,
        r#"
        request alice db 1h
        approve bob
        advance 30m
        request alice db 1h
        state R2
        request carol db 1h
        advance 30m
        request alice db 1h
        "#,
        expect![[r#"
            > request alice db 1h
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob,carol step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=db subject=alice
              grant_activated G1 expires_at=+1h
            > advance 30m (now +30m)
              (no events)
            > request alice db 1h
              request_created R2 by alice duration=1h resource=db
              request_covered_by_grant R2 grant=G1
            > state R2
              R2 approved grant=G1
            > request carol db 1h
              request_created R3 by carol duration=1h resource=db
              step_entered R3 reviewers=bob step=1
            > advance 30m (now +1h)
              grant_expired G1 why=expired
            > request alice db 1h
              request_created R4 by alice duration=1h resource=db
              step_entered R4 reviewers=bob,carol step=1
        "#]],
    )
    .await;
}

/// Rule 7, `one_of`: one approval from any listed principal, a group through any member.
#[tokio::test]
async fn rule_7_one_of_needs_one_approval() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          owners       = ["frank@example.com"]
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com", "group:security"] } } ] }
        }
        "#,
        r#"
        request alice db
        approve frank
        approve mallory
        approve sam
        request carol db
        approve bob
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob,dan,hank,sam step=1
            > approve frank
              error: forbidden: frank is not a reviewer of step 1
            > approve mallory
              error: not_found: request R1 not found
            > approve sam
              review_recorded R1 by sam decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by sam
              grant_issued G1 duration=1h request=R1 resource=db subject=alice
              grant_activated G1 expires_at=+1h
            > request carol db
              request_created R2 by carol duration=1h resource=db
              step_entered R2 reviewers=bob,dan,hank,sam step=1
            > approve bob
              review_recorded R2 by bob decision=approve step=1
              step_approved R2 step=1
              request_approved R2 by bob
              grant_issued G2 duration=1h request=R2 resource=db subject=carol
              grant_activated G2 expires_at=+1h
        "#]],
    )
    .await;
}

/// Rule 7, `all_of` with groups: one approver from each team. One person in both teams
/// counts once, and two people of the same team do not make up for the other.
#[tokio::test]
async fn rule_7_all_of_needs_one_approver_per_group() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { all_of = ["group:security", "group:leads"] } } ] }
        }
        "#,
        r#"
        request alice db
        approve hank
        approve hank
        approve eve
        request carol db
        approve dan
        approve sam
        approve eve
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=dan,eve,hank,sam step=1
            > approve hank
              review_recorded R1 by hank decision=approve step=1
            > approve hank
              error: conflict: hank has already decided on request R1
            > approve eve
              review_recorded R1 by eve decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by eve
              grant_issued G1 duration=1h request=R1 resource=db subject=alice
              grant_activated G1 expires_at=+1h
            > request carol db
              request_created R2 by carol duration=1h resource=db
              step_entered R2 reviewers=dan,eve,hank,sam step=1
            > approve dan
              review_recorded R2 by dan decision=approve step=1
            > approve sam
              review_recorded R2 by sam decision=approve step=1
            > approve eve
              review_recorded R2 by eve decision=approve step=1
              step_approved R2 step=1
              request_approved R2 by eve
              grant_issued G2 duration=1h request=R2 resource=db subject=carol
              grant_activated G2 expires_at=+1h
        "#]],
    )
    .await;
}

/// Rule 7, `quorum`: N approvals from distinct people among the principals.
#[tokio::test]
async fn rule_7_quorum_needs_n_distinct_approvers() {
    check(
        r#"
        resource "deploy" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { quorum = { min = 2, of = ["group:security", "bob@example.com"] } } } ] }
        }
        "#,
        r#"
        request alice deploy
        approve dan
        approve dan
        approve sam
        request carol deploy
        approve bob
        approve hank
        "#,
        expect![[r#"
            > request alice deploy
              request_created R1 by alice duration=1h resource=deploy
              step_entered R1 reviewers=bob,dan,hank,sam step=1
            > approve dan
              review_recorded R1 by dan decision=approve step=1
            > approve dan
              error: conflict: dan has already decided on request R1
            > approve sam
              review_recorded R1 by sam decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by sam
              grant_issued G1 duration=1h request=R1 resource=deploy subject=alice
              grant_activated G1 expires_at=+1h
            > request carol deploy
              request_created R2 by carol duration=1h resource=deploy
              step_entered R2 reviewers=bob,dan,hank,sam step=1
            > approve bob
              review_recorded R2 by bob decision=approve step=1
            > approve hank
              review_recorded R2 by hank decision=approve step=1
              step_approved R2 step=1
              request_approved R2 by hank
              grant_issued G2 duration=1h request=R2 resource=deploy subject=carol
              grant_activated G2 expires_at=+1h
        "#]],
    )
    .await;
}

/// Rule 8: a deny on the current step before it is satisfied denies the whole request, even
/// after another approval on the same step, and on a later step after earlier ones passed.
#[tokio::test]
async fn rule_8_deny_bubbles_up() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = {
            steps = [
              { reviewers = { all_of = ["dan@example.com", "eve@example.com"] } },
              { reviewers = { one_of = ["frank@example.com"] } },
            ]
          }
        }
        "#,
        r#"
        request alice db
        approve dan
        deny eve too risky
        state R1
        request alice db
        approve dan
        approve eve
        deny frank not this week
        state R2
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=dan,eve step=1
            > approve dan
              review_recorded R1 by dan decision=approve step=1
            > deny eve too risky
              review_recorded R1 by eve decision=deny step=1
              request_denied R1 by eve comment='too risky'
            > state R1
              R1 denied
            > request alice db
              request_created R2 by alice duration=1h resource=db
              step_entered R2 reviewers=dan,eve step=1
            > approve dan
              review_recorded R2 by dan decision=approve step=1
            > approve eve
              review_recorded R2 by eve decision=approve step=1
              step_approved R2 step=1
              step_entered R2 reviewers=frank step=2
            > deny frank not this week
              review_recorded R2 by frank decision=deny step=2
              request_denied R2 by frank comment='not this week'
            > state R2
              R2 denied
        "#]],
    )
    .await;
}

/// Rule 9: the requester never reviews their own request, named directly or through a group,
/// unless the resource sets `allow_self_approval`, which the audit log records.
#[tokio::test]
async fn rule_9_no_self_approval_unless_allowed() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["alice@example.com", "bob@example.com"] } } ] }
        }
        resource "ops" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["group:security"] } } ] }
        }
        resource "sandbox" {
          max_duration        = "1h"
          allow_self_approval = true
          workflow = { steps = [ { reviewers = { one_of = ["alice@example.com", "bob@example.com"] } } ] }
        }
        "#,
        r#"
        request alice db
        approve alice
        request dan ops
        approve dan
        request alice sandbox
        approve alice
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob step=1
            > approve alice
              error: forbidden: you cannot review your own request
            > request dan ops
              request_created R2 by dan duration=1h resource=ops
              step_entered R2 reviewers=hank,sam step=1
            > approve dan
              error: forbidden: you cannot review your own request
            > request alice sandbox
              request_created R3 by alice duration=1h resource=sandbox
              step_entered R3 reviewers=alice,bob step=1
            > approve alice
              review_recorded R3 by alice decision=approve self_approval=true step=1
              step_approved R3 step=1
              request_approved R3 by alice
              grant_issued G1 duration=1h request=R3 resource=sandbox subject=alice
              grant_activated G1 expires_at=+1h
        "#]],
    )
    .await;
}

/// Rule 10: one decision per person per request, across steps.
#[tokio::test]
async fn rule_10_one_decision_per_person_per_request() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = {
            steps = [
              { reviewers = { one_of = ["bob@example.com", "carol@example.com"] } },
              { reviewers = { one_of = ["bob@example.com", "frank@example.com"] } },
            ]
          }
        }
        "#,
        r#"
        request alice db
        approve bob
        approve bob
        deny bob
        approve frank
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob,carol step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              step_entered R1 reviewers=frank step=2
            > approve bob
              error: conflict: bob has already decided on request R1
            > deny bob
              error: conflict: bob has already decided on request R1
            > approve frank
              review_recorded R1 by frank decision=approve step=2
              step_approved R1 step=2
              request_approved R1 by frank
              grant_issued G1 duration=1h request=R1 resource=db subject=alice
              grant_activated G1 expires_at=+1h
        "#]],
    )
    .await;
}

/// Rule 11: an eligible reviewer assigns the step; the assignee becomes eligible for it (in
/// an `all_of`, for the assigner's place), and the assignment is audited.
#[tokio::test]
async fn rule_11_assign_makes_the_assignee_eligible() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        resource "pair" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { all_of = ["dan@example.com", "eve@example.com"] } } ] }
        }
        "#,
        r#"
        request alice db
        approve grace
        assign alice grace
        assign bob alice
        assign bob grace
        approve grace
        request alice pair
        assign dan group:engineering
        assign dan grace
        approve grace
        approve eve
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob step=1
            > approve grace
              error: not_found: request R1 not found
            > assign alice grace
              error: forbidden: only an eligible reviewer of step 1 may assign it
            > assign bob alice
              error: invalid: a request cannot be assigned to its requester
            > assign bob grace
              request_assigned R1 by bob step=1 to=grace
            > approve grace
              review_recorded R1 by grace decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by grace
              grant_issued G1 duration=1h request=R1 resource=db subject=alice
              grant_activated G1 expires_at=+1h
            > request alice pair
              request_created R2 by alice duration=1h resource=pair
              step_entered R2 reviewers=dan,eve step=1
            > assign dan group:engineering
              error: invalid: group:engineering is not a configured user or group with members
            > assign dan grace
              request_assigned R2 by dan step=1 to=grace
            > approve grace
              review_recorded R2 by grace decision=approve step=1
            > approve eve
              review_recorded R2 by eve decision=approve step=1
              step_approved R2 step=1
              request_approved R2 by eve
              grant_issued G2 duration=1h request=R2 resource=pair subject=alice
              grant_activated G2 expires_at=+1h
        "#]],
    )
    .await;
}

/// Rule 12: anyone involved (requester, reviewers, admin) may comment, in any state; an
/// uninvolved user does not see the request at all (§7: invisible objects are not found).
#[tokio::test]
async fn rule_12_involved_people_comment() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
        r#"
        request alice db
        comment alice please, the incident is INC-7
        comment bob looking now
        comment root approved by the incident commander
        comment mallory hi
        comment bob
        deny bob use the read replica
        comment alice ok, thanks
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob step=1
            > comment alice please, the incident is INC-7
              comment_added R1 by alice
            > comment bob looking now
              comment_added R1 by bob
            > comment root approved by the incident commander
              comment_added R1 by root
            > comment mallory hi
              error: not_found: request R1 not found
            > comment bob
              error: invalid: a comment needs text
            > deny bob use the read replica
              review_recorded R1 by bob decision=deny step=1
              request_denied R1 by bob comment='use the read replica'
            > comment alice ok, thanks
              comment_added R1 by alice
        "#]],
    )
    .await;
}

/// Rule 13: a request whose workflow nobody but the requester can decide (or that needs more
/// distinct people than there are) is refused at creation, with a clear error.
#[tokio::test]
async fn rule_13_no_eligible_reviewer_fails_creation() {
    check(
        r#"
        resource "solo" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { one_of = ["alice@example.com"] } } ] }
        }
        resource "twice" {
          max_duration = "1h"
          workflow = {
            steps = [
              { reviewers = { one_of = ["bob@example.com"] } },
              { reviewers = { one_of = ["bob@example.com"] } },
            ]
          }
        }
        "#,
        r#"
        request alice solo
        request bob solo
        request alice twice
        "#,
        expect![[r#"
            > request alice solo
              error: invalid: step 1 of solo has no eligible reviewer other than the requester
            > request bob solo
              request_created R1 by bob duration=1h resource=solo
              step_entered R1 reviewers=alice step=1
            > request alice twice
              error: invalid: the workflow of twice needs more distinct reviewers than are eligible (the requester cannot review, and nobody may decide twice)
        "#]],
    )
    .await;
}

/// Rule 14: durations come from the closed set and stay under `max_duration`; reviewers may
/// shorten, never lengthen; the grant gets the smallest approved duration.
#[tokio::test]
async fn rule_14_reviewers_shorten_and_the_grant_gets_the_smallest() {
    check(
        r#"
        resource "db" {
          max_duration = "4h"
          durations    = ["5m", "15m", "1h", "4h"]
          workflow = {
            steps = [
              { reviewers = { one_of = ["bob@example.com"] } },
              { reviewers = { one_of = ["carol@example.com"] } },
            ]
          }
        }
        "#,
        r#"
        request alice db 2h
        request alice db 8h
        request alice db 1h
        approve bob duration=4h
        approve bob duration=30m
        approve bob duration=15m
        approve carol duration=1h
        advance 15m
        # Without a duration, the shortest of the set.
        request dan db
        "#,
        expect![[r#"
            > request alice db 2h
              error: invalid: duration 2h is not one of 5m, 15m, 1h, 4h
            > request alice db 8h
              error: invalid: duration 8h is longer than the maximum 4h for db
            > request alice db 1h
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob step=1
            > approve bob duration=4h
              error: invalid: a reviewer may shorten the duration, not lengthen it: 4h is longer than the requested 1h
            > approve bob duration=30m
              error: invalid: duration 30m is not one of 5m, 15m, 1h, 4h
            > approve bob duration=15m
              review_recorded R1 by bob decision=approve duration=15m step=1
              step_approved R1 step=1
              step_entered R1 reviewers=carol step=2
            > approve carol duration=1h
              review_recorded R1 by carol decision=approve duration=1h step=2
              step_approved R1 step=2
              request_approved R1 by carol
              grant_issued G1 duration=15m request=R1 resource=db subject=alice
              grant_activated G1 expires_at=+15m
            > advance 15m (now +15m)
              grant_expired G1 why=expired
            > request dan db
              request_created R2 by dan duration=5m resource=db
              step_entered R2 reviewers=bob step=1
        "#]],
    )
    .await;
}

/// Rule 15: an approval with `scope = "workflow"` grants every resource `part_of` the same
/// workflow, and later requests for any of them by the same requester are answered by it.
#[tokio::test]
async fn rule_15_workflow_scope_covers_sibling_resources() {
    check(
        r#"
        resource "db-read" {
          max_duration = "4h"
          part_of      = "prod-db"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        resource "db-write" {
          max_duration = "4h"
          part_of      = "prod-db"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        resource "cache" {
          max_duration = "4h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
        r#"
        # Approved for the resource only: the sibling needs its own approval.
        request alice db-read 1h
        approve bob
        request alice db-write 1h
        cancel alice
        advance 1h
        # Approved for the whole workflow.
        request alice db-read 1h
        approve bob scope=workflow
        request alice db-write 1h
        request carol db-write 1h
        request alice cache 1h
        approve bob scope=workflow
        advance 1h
        request alice db-write 1h
        "#,
        expect![[r#"
            > request alice db-read 1h
              request_created R1 by alice duration=1h resource=db-read
              step_entered R1 reviewers=bob step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=db-read subject=alice
              grant_activated G1 expires_at=+1h
            > request alice db-write 1h
              request_created R2 by alice duration=1h resource=db-write
              step_entered R2 reviewers=bob step=1
            > cancel alice
              request_cancelled R2 by alice
            > advance 1h (now +1h)
              grant_expired G1 why=expired
            > request alice db-read 1h
              request_created R3 by alice duration=1h resource=db-read
              step_entered R3 reviewers=bob step=1
            > approve bob scope=workflow
              review_recorded R3 by bob decision=approve scope=workflow step=1
              step_approved R3 step=1
              request_approved R3 by bob
              grant_issued G2 duration=1h request=R3 resource=db-read subject=alice workflow=prod-db
              grant_activated G2 expires_at=+2h
            > request alice db-write 1h
              request_created R4 by alice duration=1h resource=db-write
              request_covered_by_grant R4 grant=G2
            > request carol db-write 1h
              request_created R5 by carol duration=1h resource=db-write
              step_entered R5 reviewers=bob step=1
            > request alice cache 1h
              request_created R6 by alice duration=1h resource=cache
              step_entered R6 reviewers=bob step=1
            > approve bob scope=workflow
              error: invalid: scope "workflow" needs a resource that is part_of a workflow; cache is not
            > advance 1h (now +2h)
              grant_expired G2 why=expired
            > request alice db-write 1h
              request_created R7 by alice duration=1h resource=db-write
              step_entered R7 reviewers=bob step=1
        "#]],
    )
    .await;
}

/// Rules 16 and 17: a connector's grant is written to the outbox and activated when the
/// connector confirms; the duration clock starts then, not at approval. At expiry the revoke
/// call runs and only its confirmation makes the grant `expired`.
#[tokio::test]
async fn rule_16_exec_connector_activates_then_expires() {
    check(
        r#"
        resource "pg" {
          connector    = "ok"
          grant        = { role = "readonly" }
          max_duration = "4h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
        r#"
        request alice pg 1h
        approve bob
        state G1
        # The worker comes round ten minutes late: the hour starts at activation.
        advance 10m
        state G1
        advance 59m
        advance 1m
        state G1
        "#,
        expect![[r#"
            > request alice pg 1h
              request_created R1 by alice duration=1h resource=pg
              step_entered R1 reviewers=bob step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=pg subject=alice
            > state G1
              G1 activating
            > advance 10m (now +10m)
              grant_activated G1 expires_at=+1h10m
            > state G1
              G1 active expires_at=+1h10m
            > advance 59m (now +1h9m)
              grant_expiring G1 expires_at=+1h10m seconds_left=60 subject=alice
            > advance 1m (now +1h10m)
              grant_revoke_started G1 why=expired
              grant_expired G1
            > state G1
              G1 expired expires_at=+1h10m
        "#]],
    )
    .await;
}

/// Rule 16: an activation that keeps failing is retried with backoff up to the connector's
/// `max_attempts`, then the grant is `failed`.
#[tokio::test]
async fn rule_16_failing_activation_retries_then_fails() {
    check(
        r#"
        resource "pg" {
          connector    = "flaky"
          max_duration = "4h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
        r#"
        request alice pg 1h
        approve bob
        tick
        state G1
        advance 5m
        advance 5m
        state G1
        advance 5m
        request alice pg 1h
        "#,
        expect![[r#"
            > request alice pg 1h
              request_created R1 by alice duration=1h resource=pg
              step_entered R1 reviewers=bob step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=pg subject=alice
            > tick
              grant_activation_failed G1 attempt=1 error='"sh" exited with status 3: connection refused'
            > state G1
              G1 activating attempts=1 last_error='"sh" exited with status 3: connection refused'
            > advance 5m (now +5m)
              grant_activation_failed G1 attempt=2 error='"sh" exited with status 3: connection refused'
            > advance 5m (now +10m)
              grant_activation_failed G1 attempt=3 error='"sh" exited with status 3: connection refused' final=true
              grant_revoke_started G1 why=activation_failed
              grant_failed G1 attempts=3 error='"sh" exited with status 3: connection refused'
            > state G1
              G1 failed last_error='"sh" exited with status 3: connection refused'
            > advance 5m (now +15m)
              (no events)
            > request alice pg 1h
              request_created R2 by alice duration=1h resource=pg
              step_entered R2 reviewers=bob step=1
        "#]],
    )
    .await;
}

/// Rule 17: revocation is retried until the connector confirms it; until then the grant is
/// shown as `revoking`, not `expired`.
#[tokio::test]
async fn rule_17_revocation_is_retried_until_confirmed() {
    check(
        r#"
        resource "pg" {
          connector    = "stuck"
          max_duration = "4h"
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
        r#"
        request alice pg 1h
        approve bob
        tick
        advance 1h
        state G1
        advance 5m
        advance 5m
        state G1
        touch revoke-works
        advance 5m
        state G1
        "#,
        expect![[r#"
            > request alice pg 1h
              request_created R1 by alice duration=1h resource=pg
              step_entered R1 reviewers=bob step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=pg subject=alice
            > tick
              grant_activated G1 expires_at=+1h
            > advance 1h (now +1h)
              grant_revoke_started G1 why=expired
              grant_revoke_failed G1 attempt=1 error='"sh" exited with status 3: permission denied'
            > state G1
              G1 revoking expires_at=+1h attempts=1 last_error='"sh" exited with status 3: permission denied'
            > advance 5m (now +1h5m)
              grant_revoke_failed G1 attempt=2 error='"sh" exited with status 3: permission denied'
            > advance 5m (now +1h10m)
              grant_revoke_failed G1 attempt=3 error='"sh" exited with status 3: permission denied'
            > state G1
              G1 revoking expires_at=+1h attempts=3 last_error='"sh" exited with status 3: permission denied'
            > touch revoke-works
              created revoke-works
            > advance 5m (now +1h15m)
              grant_expired G1
            > state G1
              G1 expired expires_at=+1h attempts=3
        "#]],
    )
    .await;
}

/// Rule 19: the subject drops their own grant; an owner or admin revokes any grant, with a
/// reason; anyone else does not see the grant.
#[tokio::test]
async fn rule_19_drop_and_revoke_grants() {
    check(
        r#"
        resource "db" {
          max_duration = "4h"
          owners       = ["frank@example.com"]
          workflow = { steps = [ { reviewers = { one_of = ["bob@example.com"] } } ] }
        }
        "#,
        r#"
        request alice db 1h
        approve bob
        revoke mallory G1 mine now
        revoke bob G1 I approved it
        drop alice G1
        drop alice G1
        request alice db 1h
        approve bob
        revoke frank G2
        revoke frank G2 no longer needed
        request alice db 1h
        approve bob
        revoke root G3 security incident INC-9
        "#,
        expect![[r#"
            > request alice db 1h
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=db subject=alice
              grant_activated G1 expires_at=+1h
            > revoke mallory G1 mine now
              error: not_found: grant G1 not found
            > revoke bob G1 I approved it
              error: not_found: grant G1 not found
            > drop alice G1
              grant_revoked G1 by alice why=dropped
            > drop alice G1
              error: conflict: grant G1 is already revoked
            > request alice db 1h
              request_created R2 by alice duration=1h resource=db
              step_entered R2 reviewers=bob step=1
            > approve bob
              review_recorded R2 by bob decision=approve step=1
              step_approved R2 step=1
              request_approved R2 by bob
              grant_issued G2 duration=1h request=R2 resource=db subject=alice
              grant_activated G2 expires_at=+1h
            > revoke frank G2
              error: invalid: a reason is required to revoke someone's grant
            > revoke frank G2 no longer needed
              grant_revoked G2 by frank reason='no longer needed' why=revoked
            > request alice db 1h
              request_created R3 by alice duration=1h resource=db
              step_entered R3 reviewers=bob step=1
            > approve bob
              review_recorded R3 by bob decision=approve step=1
              step_approved R3 step=1
              request_approved R3 by bob
              grant_issued G3 duration=1h request=R3 resource=db subject=alice
              grant_activated G3 expires_at=+1h
            > revoke root G3 security incident INC-9
              grant_revoked G3 by root reason='security incident INC-9' why=revoked
        "#]],
    )
    .await;
}

/// Rule 11 with rule 7: assigning hands the assigner's place over. The assigner can no longer
/// decide, so an assignment never adds a vote to a quorum.
#[tokio::test]
async fn rule_11_assigning_hands_over_the_vote() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { quorum = { min = 2, of = ["dan@example.com", "sam@example.com", "bob@example.com"] } } } ] }
        }
        "#,
        r#"
        request alice db
        assign dan grace
        approve dan
        approve grace
        approve sam
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=bob,dan,sam step=1
            > assign dan grace
              request_assigned R1 by dan step=1 to=grace
            > approve dan
              error: forbidden: dan is not a reviewer of step 1
            > approve grace
              review_recorded R1 by grace decision=approve step=1
            > approve sam
              review_recorded R1 by sam decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by sam
              grant_issued G1 duration=1h request=R1 resource=db subject=alice
              grant_activated G1 expires_at=+1h
        "#]],
    )
    .await;
}

/// Rule 11: a step assigned back to the reviewer who assigned it is theirs again, and the
/// person it was handed to no longer holds it.
#[tokio::test]
async fn rule_11_assigning_back_returns_the_place() {
    check(
        r#"
        resource "db" {
          max_duration = "1h"
          workflow = { steps = [ { reviewers = { all_of = ["dan@example.com", "eve@example.com"] } } ] }
        }
        "#,
        r#"
        request alice db
        assign dan carol
        assign carol dan
        approve carol
        approve dan
        approve eve
        "#,
        expect![[r#"
            > request alice db
              request_created R1 by alice duration=1h resource=db
              step_entered R1 reviewers=dan,eve step=1
            > assign dan carol
              request_assigned R1 by dan step=1 to=carol
            > assign carol dan
              request_assigned R1 by carol step=1 to=dan
            > approve carol
              error: forbidden: carol is not a reviewer of step 1
            > approve dan
              review_recorded R1 by dan decision=approve step=1
            > approve eve
              review_recorded R1 by eve decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by eve
              grant_issued G1 duration=1h request=R1 resource=db subject=alice
              grant_activated G1 expires_at=+1h
        "#]],
    )
    .await;
}

/// A resource on the `files` connector, reviewed by bob.
const FILES_DB: &str = r#"
resource "files-db" {
  connector    = "files"
  max_duration = "4h"
  workflow     = { steps = [{ reviewers = { one_of = ["bob@example.com"] } }] }
}
"#;

/// Rule 18: two grants of the same resource to the same subject overlap; when the first
/// ends, the connector's revoke is not called (the access stays) until the second ends.
#[tokio::test]
async fn rule_18_overlapping_grants_keep_access_until_the_last_ends() {
    check(
        FILES_DB,
        r#"
        # Two requests made before either is granted (rule 5 answers later ones with the grant).
        request alice files-db 1h first
        request alice files-db 2h second
        # One at a time: two calls due at the same instant may run in either order.
        approve bob R1
        tick
        approve bob R2
        tick
        exists held-alice
        advance 1h
        state G1
        exists held-alice
        advance 1h
        state G2
        exists held-alice
        "#,
        expect![[r#"
            > request alice files-db 1h first
              request_created R1 by alice duration=1h resource=files-db
              step_entered R1 reviewers=bob step=1
            > request alice files-db 2h second
              request_created R2 by alice duration=2h resource=files-db
              step_entered R2 reviewers=bob step=1
            > approve bob R1
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=files-db subject=alice
            > tick
              grant_activated G1 expires_at=+1h
            > approve bob R2
              review_recorded R2 by bob decision=approve step=1
              step_approved R2 step=1
              request_approved R2 by bob
              grant_issued G2 duration=2h request=R2 resource=files-db subject=alice
            > tick
              grant_activated G2 expires_at=+2h
            > exists held-alice
              held-alice exists
            > advance 1h (now +1h)
              grant_revoke_started G1 why=expired
              grant_expired G1 access_kept_by=G2
            > state G1
              G1 expired expires_at=+1h
            > exists held-alice
              held-alice exists
            > advance 1h (now +2h)
              grant_revoke_started G2 why=expired
              grant_expired G2
            > state G2
              G2 expired expires_at=+2h
            > exists held-alice
              held-alice absent
        "#]],
    )
    .await;
}

/// Rule 19: an extension is a new request through the workflow; once approved, the expiry
/// moves from the current expiry (no gap), and the pre-expiry notice moves with it.
#[tokio::test]
async fn rule_19_extension_moves_the_expiry_without_a_gap() {
    check(
        &format!("server {{\n expiry_notice = \"10m\"\n}}\n{FILES_DB}"),
        r#"
        request alice files-db 1h
        approve bob
        tick
        advance 45m
        # Only the grant's subject may ask; bob reviews it but may not even see the grant.
        extend bob G1 1h
        extend alice G1 1h need another hour
        state R2
        advance 5m
        approve bob R2
        state G1
        advance 20m
        exists held-alice
        advance 1h
        state G1
        exists held-alice
        extend alice G1 1h too late
        "#,
        expect![[r#"
            > request alice files-db 1h
              request_created R1 by alice duration=1h resource=files-db
              step_entered R1 reviewers=bob step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=files-db subject=alice
            > tick
              grant_activated G1 expires_at=+1h
            > advance 45m (now +45m)
              (no events)
            > extend bob G1 1h
              error: not_found: grant G1 not found
            > extend alice G1 1h need another hour
              request_created R2 by alice duration=1h extends=G1 resource=files-db
              step_entered R2 reviewers=bob step=1
            > state R2
              R2 pending step=1
            > advance 5m (now +50m)
              grant_expiring G1 expires_at=+1h seconds_left=600 subject=alice
            > approve bob R2
              review_recorded R2 by bob decision=approve step=1
              step_approved R2 step=1
              request_approved R2 by bob
              grant_extended G1 duration=1h expires_at=+2h request=R2
            > state G1
              G1 active expires_at=+2h
            > advance 20m (now +1h10m)
              (no events)
            > exists held-alice
              held-alice exists
            > advance 1h (now +2h10m)
              grant_revoke_started G1 why=expired
              grant_expired G1
            > state G1
              G1 expired expires_at=+2h
            > exists held-alice
              held-alice absent
            > extend alice G1 1h too late
              error: conflict: grant G1 is expired, not active
        "#]],
    )
    .await;
}

/// Rule 16: a grant may start later than its approval; the duration clock starts when it is
/// active. A scheduled grant that is revoked ends without a connector call.
#[tokio::test]
async fn rule_16_scheduled_grant_starts_at_its_start_time() {
    check(
        FILES_DB,
        r#"
        request alice files-db 1h start=2h maintenance window
        approve bob
        state G1
        advance 1h
        exists held-alice
        advance 1h
        state G1
        exists held-alice
        advance 1h
        exists held-alice
        request carol files-db 1h start=1h
        approve bob
        revoke root G2 window cancelled
        state G2
        request carol files-db 1h start=31d
        "#,
        expect![[r#"
            > request alice files-db 1h start=2h maintenance window
              request_created R1 by alice duration=1h resource=files-db start_at=+2h
              step_entered R1 reviewers=bob step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=files-db start_at=+2h subject=alice
            > state G1
              G1 scheduled
            > advance 1h (now +1h)
              (no events)
            > exists held-alice
              held-alice absent
            > advance 1h (now +2h)
              grant_activated G1 expires_at=+3h
            > state G1
              G1 active expires_at=+3h
            > exists held-alice
              held-alice exists
            > advance 1h (now +3h)
              grant_revoke_started G1 why=expired
              grant_expired G1
            > exists held-alice
              held-alice absent
            > request carol files-db 1h start=1h
              request_created R2 by carol duration=1h resource=files-db start_at=+4h
              step_entered R2 reviewers=bob step=1
            > approve bob
              review_recorded R2 by bob decision=approve step=1
              step_approved R2 step=1
              request_approved R2 by bob
              grant_issued G2 duration=1h request=R2 resource=files-db start_at=+4h subject=carol
            > revoke root G2 window cancelled
              grant_revoked G2 by root reason='window cancelled' why=revoked
            > state G2
              G2 revoked
            > request carol files-db 1h start=31d
              error: invalid: start_at is more than 30d ahead
        "#]],
    )
    .await;
}

/// Rule 17: a connector that fails twice and then succeeds gives the access on the third
/// try; the failures are in the grant's history with the connector's own words.
#[tokio::test]
async fn rule_17_connector_that_fails_twice_then_succeeds() {
    check(
        r#"
        resource "twice-db" {
          connector    = "twice"
          max_duration = "1h"
          workflow     = { steps = [{ reviewers = { one_of = ["bob@example.com"] } }] }
        }
        "#,
        r#"
        request alice twice-db 1h
        approve bob
        tick
        state G1
        advance 10m
        state G1
        advance 10m
        state G1
        "#,
        expect![[r#"
            > request alice twice-db 1h
              request_created R1 by alice duration=1h resource=twice-db
              step_entered R1 reviewers=bob step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=twice-db subject=alice
            > tick
              grant_activation_failed G1 attempt=1 error='"sh" exited with status 1: try 1: timeout talking to target'
            > state G1
              G1 activating attempts=1 last_error='"sh" exited with status 1: try 1: timeout talking to target'
            > advance 10m (now +10m)
              grant_activation_failed G1 attempt=2 error='"sh" exited with status 1: try 2: timeout talking to target'
            > state G1
              G1 activating attempts=2 last_error='"sh" exited with status 1: try 2: timeout talking to target'
            > advance 10m (now +20m)
              grant_activated G1 expires_at=+1h20m
            > state G1
              G1 active expires_at=+1h20m
        "#]],
    )
    .await;
}

/// Reconciliation: access removed by hand under an active grant is recorded as drift and
/// given back; access left after the grant ended is recorded and taken away again.
#[tokio::test]
async fn reconciliation_repairs_drift_both_ways() {
    check(
        &format!(
            "server {{\n reconcile_interval = \"1m\"\n expiry_notice = \"0s\"\n}}\n{FILES_DB}"
        ),
        r#"
        request alice files-db 1h
        approve bob
        tick
        rm held-alice
        advance 1m
        exists held-alice
        advance 1h
        exists held-alice
        touch held-alice
        advance 1m
        exists held-alice
        advance 1m
        "#,
        expect![[r#"
            > request alice files-db 1h
              request_created R1 by alice duration=1h resource=files-db
              step_entered R1 reviewers=bob step=1
            > approve bob
              review_recorded R1 by bob decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by bob
              grant_issued G1 duration=1h request=R1 resource=files-db subject=alice
            > tick
              grant_activated G1 expires_at=+1h
            > rm held-alice
              removed held-alice
            > advance 1m (now +1m)
              grant_drift G1 drift=missing resource=files-db state=active subject=alice
              grant_repaired G1 action=grant
            > exists held-alice
              held-alice exists
            > advance 1h (now +1h1m)
              grant_revoke_started G1 why=expired
              grant_expired G1
            > exists held-alice
              held-alice absent
            > touch held-alice
              created held-alice
            > advance 1m (now +1h2m)
              grant_drift G1 drift=lingering resource=files-db state=expired subject=alice
              grant_repaired G1 action=revoke
            > exists held-alice
              held-alice absent
            > advance 1m (now +1h3m)
              (no events)
        "#]],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Policies (rules 2, 6, 13, 20, 28–31)
// ---------------------------------------------------------------------------------------------

const ABBEY_POLICIES: &str = r#"
package countersign

# carol is on call this week.
oncall := {"skip": true, "reason": "carol is on call"} if {
	input.request.requester.email == "carol@example.com"
}

# A second skip_if that never says skip.
business_hours := false
"#;

/// Rule 6 with seed 001 (Abbey): a `skip_if` that passes skips step 1, whose reviewers are
/// never asked, and the request goes straight to dan and eve. With two policies of which only
/// one says skip, the step is not skipped. Rule 31: explain says why.
#[tokio::test]
async fn rule_6_seed_001_skip_if_skips_a_step_only_when_every_policy_says_skip() {
    let workflow = |skip_if: &str| {
        format!(
            r#"
  max_duration = "24h"
  workflow = {{
    steps = [
      {{
        reviewers = {{ one_of = ["alice@example.com", "bob@example.com", "frank@example.com"] }}
        skip_if   = [{skip_if}]
      }},
      {{ reviewers = {{ all_of = ["dan@example.com", "eve@example.com"] }} }},
      {{ reviewers = {{ one_of = ["hank@example.com"] }} }},
    ]
  }}"#
        )
    };
    let oncall = r#"{ bundle = "policies/", query = "data.countersign.oncall" }"#;
    let hours = r#"{ bundle = "policies/", query = "data.countersign.business_hours" }"#;
    let config = format!(
        "resource \"db\" {{{}\n}}\nresource \"db-two\" {{{}\n}}\n",
        workflow(oncall),
        workflow(&format!("{oncall}, {hours}"))
    );
    check_files(
        &[("policies/abbey.rego", ABBEY_POLICIES)],
        &config,
        r#"
        request carol db
        approve alice
        approve dan
        approve eve
        approve hank
        explain R1
        # Two skip_if policies, one says no: step 1 waits for its reviewers.
        request carol db-two
        explain R2
        # Not on call: no skip.
        request bob db
        state R3
        # What would happen, without a request: the later steps are previewed too.
        simulate carol db
        simulate bob db-two
        "#,
        expect![[r#"
            > request carol db
              request_created R1 by carol duration=1h resource=db
              step_skipped R1 reason='carol is on call' step=1
              step_entered R1 reviewers=dan,eve step=2
            > approve alice
              error: forbidden: alice is not a reviewer of step 2
            > approve dan
              review_recorded R1 by dan decision=approve step=2
            > approve eve
              review_recorded R1 by eve decision=approve step=2
              step_approved R1 step=2
              step_entered R1 reviewers=hank step=3
            > approve hank
              review_recorded R1 by hank decision=approve step=3
              step_approved R1 step=3
              request_approved R1 by hank
              grant_issued G1 duration=1h request=R1 resource=db subject=carol
              grant_activated G1 expires_at=+1h
            > explain R1
              step 1: skip_if data.countersign.oncall: skip: carol is on call
              step 1: skipped (carol is on call)
              step 2: approved (dan approve, eve approve)
              step 3: approved (hank approve)
              approved by hank
            > request carol db-two
              request_created R2 by carol duration=1h resource=db-two
              step_entered R2 reviewers=alice,bob,frank step=1
            > explain R2
              step 1: skip_if data.countersign.oncall: skip: carol is on call
              step 1: skip_if data.countersign.business_hours: no skip
              step 1: routed to one_of alice, bob, frank
              step 2: not reached
              step 3: not reached
              pending: waiting for reviewers
            > request bob db
              request_created R3 by bob duration=1h resource=db
              step_entered R3 reviewers=alice,frank step=1
            > state R3
              R3 pending step=1
            > simulate carol db
              outcome approved
              step 1: not needed (the request was answered without it)
              step 2: not needed (the request was answered without it)
              step 3: not needed (the request was answered without it)
              approved: covered by active grant G1
            > simulate bob db-two
              outcome pending
              step 1: skip_if data.countersign.oncall: no skip
              step 1: skip_if data.countersign.business_hours: no skip
              step 1: routed to one_of alice, frank
              step 2: would go to all_of dan, eve
              step 3: would go to one_of hank
              pending: waiting for reviewers
        "#]],
    )
    .await;
}

const SYM_POLICIES: &str = r#"
package countersign

fast_track := {"decision": "approve", "reason": reason} if {
	input.request.fields.urgency == "Emergency"
	reason := sprintf("%s was fast tracked", [input.request.requester.email])
}

deny contains "mallory may not touch production" if {
	input.request.requester.email == "mallory@example.com"
}

warn contains msg if {
	input.request.duration_seconds > 4 * 3600
	msg := sprintf("asks for %s, more than 4h", [input.request.duration])
}
"#;

const SYM_RESOURCE: &str = r#"
resource "aws" {
  max_duration = "24h"
  field "urgency" {
    type           = "enum"
    allowed_values = ["Normal", "Emergency"]
    required       = true
  }
  on_request = { bundle = "policies/sym.rego", query = "data.countersign.fast_track" }
  policies = [
    { bundle = "policies/sym.rego", query = "data.countersign.deny" },
    { bundle = "policies/sym.rego", query = "data.countersign.warn", enforcement = "warn" },
  ]
  workflow = { steps = [{ reviewers = { one_of = ["alice@example.com"] } }] }
}
"#;

/// Rule 2 with seeds 002 and 004 (Sym's `on_request` fast track): an emergency is approved
/// at once by the policy, with its reason; a deny policy denies before the hook runs, with
/// its message; a warn policy's message is kept for reviewers and decides nothing.
#[tokio::test]
async fn rule_2_seed_002_fast_track_deny_and_warn_policies() {
    check_files(
        &[("policies/sym.rego", SYM_POLICIES)],
        SYM_RESOURCE,
        r#"
        request bob aws urgency=Emergency
        state R1
        request carol aws urgency=Normal
        state R2
        request mallory aws urgency=Emergency
        state R3
        request dan aws 8h urgency=Normal
        explain R4
        simulate mallory aws urgency=Normal
        simulate eve aws urgency=Normal
        simulate eve aws urgency=Emergency
        "#,
        expect![[r#"
            > request bob aws urgency=Emergency
              request_created R1 by bob duration=1h resource=aws
              request_approved R1 comment='bob was fast tracked' policy=data.countersign.fast_track
              grant_issued G1 duration=1h request=R1 resource=aws subject=bob
              grant_activated G1 expires_at=+1h
            > state R1
              R1 approved grant=G1
            > request carol aws urgency=Normal
              request_created R2 by carol duration=1h resource=aws
              step_entered R2 reviewers=alice step=1
            > state R2
              R2 pending step=1
            > request mallory aws urgency=Emergency
              request_created R3 by mallory duration=1h resource=aws
              request_denied R3 comment='mallory may not touch production' policy=data.countersign.deny
            > state R3
              R3 denied
            > request dan aws 8h urgency=Normal
              request_created R4 by dan duration=8h resource=aws warnings='asks for 8h, more than 4h'
              step_entered R4 reviewers=alice step=1
            > explain R4
              deny policy data.countersign.deny: no messages
              warn policy data.countersign.warn: warn: asks for 8h, more than 4h
              on_request data.countersign.fast_track: continue to the reviewers
              step 1: routed to one_of alice
              pending: waiting for reviewers
            > simulate mallory aws urgency=Normal
              outcome denied
              deny policy data.countersign.deny: deny: mallory may not touch production
              warn policy data.countersign.warn: no messages
              step 1: not reached
              denied by policy data.countersign.deny: mallory may not touch production
            > simulate eve aws urgency=Normal
              outcome pending
              deny policy data.countersign.deny: no messages
              warn policy data.countersign.warn: no messages
              on_request data.countersign.fast_track: continue to the reviewers
              step 1: routed to one_of alice
              pending: waiting for reviewers
            > simulate eve aws urgency=Emergency
              outcome approved
              deny policy data.countersign.deny: no messages
              warn policy data.countersign.warn: no messages
              on_request data.countersign.fast_track: approve: eve was fast tracked
              step 1: not reached
              approved by policy data.countersign.fast_track: eve was fast tracked
        "#]],
    )
    .await;
}

/// Rule 30: a step takes reviewers from a query over `data.json` (nested by directory), added
/// to its static list. Principals the configuration does not know are ignored, and said so.
/// Rule 13 counts dynamic reviewers: a step whose only reviewers come from data fails when the
/// data names nobody else than the requester.
#[tokio::test]
async fn rule_30_dynamic_reviewers_come_from_data_json() {
    check_files(
        &[
            ("bundle/oncall/data.json", r#"{"leads": ["grace@example.com", "nobody@example.com", "group:security"], "solo": ["bob@example.com"]}"#),
            ("bundle/empty.rego", "package empty\n"),
        ],
        r#"
resource "db" {
  max_duration = "1h"
  workflow = { steps = [{
    reviewers = {
      one_of = ["alice@example.com"]
      from   = [{ bundle = "bundle", query = "data.oncall.leads" }]
    }
  }] }
}
resource "solo" {
  max_duration = "1h"
  workflow = { steps = [{
    reviewers = {
      all_of = []
      from   = [{ bundle = "bundle", query = "data.oncall.solo" }]
    }
  }] }
}
"#,
        r#"
        request bob db
        explain R1
        approve grace
        request bob solo
        request carol solo
        approve bob
        "#,
        expect![[r#"
            > request bob db
              request_created R1 by bob duration=1h resource=db
              step_entered R1 reviewers=alice,dan,grace,hank,sam step=1
            > explain R1
              step 1: reviewers from data.oncall.leads: reviewers grace, group:security; ignored nobody (not configured)
              step 1: routed to one_of alice, dan, grace, hank, sam
              pending: waiting for reviewers
            > approve grace
              review_recorded R1 by grace decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by grace
              grant_issued G1 duration=1h request=R1 resource=db subject=bob
              grant_activated G1 expires_at=+1h
            > request bob solo
              error: invalid: step 1 of solo has no eligible reviewer other than the requester
            > request carol solo
              request_created R2 by carol duration=1h resource=solo
              step_entered R2 reviewers=bob step=1
            > approve bob
              review_recorded R2 by bob decision=approve step=1
              step_approved R2 step=1
              request_approved R2 by bob
              grant_issued G2 duration=1h request=R2 resource=solo subject=carol
              grant_activated G2 expires_at=+1h
        "#]],
    )
    .await;
}

const FAILING_POLICIES: &str = r#"
package bad

# A runtime error: division by zero.
boom := 1 / count([])

skip_boom := {"skip": true, "n": boom}

# Ten billion iterations: stopped by the time limit.
spin contains "never" if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j == -1
}

# Not a decision a hook can take.
odd := {"decision": "maybe"}
"#;

/// Failing closed: an error or a timeout never grants anything. A failing `skip_if` does not
/// skip, a failing `on_request` (an error, or a decision it cannot take) leaves the request
/// to humans, a failing deny policy denies with "policy error" and the cause in the audit
/// event, and a policy that loops is stopped by the time limit and treated the same.
#[tokio::test]
async fn rules_2_6_policies_that_error_or_loop_fail_closed() {
    check_files(
        &[("bad.rego", FAILING_POLICIES)],
        r#"
server { policy_timeout = "30ms" }
resource "hooked" {
  max_duration = "1h"
  on_request   = { bundle = "bad.rego", query = "data.bad.boom" }
  workflow = { steps = [{
    reviewers = { one_of = ["alice@example.com"] }
    skip_if   = [{ bundle = "bad.rego", query = "data.bad.skip_boom" }]
  }] }
}
resource "odd" {
  max_duration = "1h"
  on_request   = { bundle = "bad.rego", query = "data.bad.odd" }
  workflow = { steps = [{ reviewers = { one_of = ["alice@example.com"] } }] }
}
resource "denied-by-error" {
  max_duration = "1h"
  policies = [{ bundle = "bad.rego", query = "data.bad.boom" }]
  workflow = { steps = [{ reviewers = { one_of = ["alice@example.com"] } }] }
}
resource "denied-by-loop" {
  max_duration = "1h"
  policies = [{ bundle = "bad.rego", query = "data.bad.spin" }]
  workflow = { steps = [{ reviewers = { one_of = ["alice@example.com"] } }] }
}
"#,
        r#"
        request bob hooked
        explain R1
        request bob odd
        explain R2
        request bob denied-by-error
        request bob denied-by-loop
        "#,
        expect![[r#"
            > request bob hooked
              request_created R1 by bob duration=1h resource=hooked
              step_entered R1 reviewers=alice step=1
            > explain R1
              on_request data.bad.boom: error: divide by zero (at ./bad.rego:5:11)
              step 1: skip_if data.bad.skip_boom: error: divide by zero (at ./bad.rego:5:11)
              step 1: routed to one_of alice
              pending: waiting for reviewers
            > request bob odd
              request_created R2 by bob duration=1h resource=odd
              step_entered R2 reviewers=alice step=1
            > explain R2
              on_request data.bad.odd: error: "decision" must be "approve" or "deny", got "maybe"
              step 1: routed to one_of alice
              pending: waiting for reviewers
            > request bob denied-by-error
              request_created R3 by bob duration=1h resource=denied-by-error
              request_denied R3 comment='policy error' error='divide by zero (at ./bad.rego:5:11)' policy=data.bad.boom
            > request bob denied-by-loop
              request_created R4 by bob duration=1h resource=denied-by-loop
              request_denied R4 comment='policy error' error='evaluation stopped at the time limit of 30ms' policy=data.bad.spin
        "#]],
    )
    .await;
}

const SUSPENSION: &str = r#"
package countersign

deny contains msg if {
	input.request.requester.email in data.suspended
	msg := sprintf("%s is suspended", [input.request.requester.email])
}
"#;

/// Rule 20: deny policies are evaluated again for active grants every `policy_interval`; a
/// grant the policy now denies is revoked early with its message. Rule 28: a reload whose
/// bundle does not compile is refused with the file and line, and the running policies stay.
#[tokio::test]
async fn rule_20_active_grants_are_revoked_when_a_deny_policy_turns() {
    check_files(
        &[
            ("policies/p.rego", SUSPENSION),
            ("policies/data.json", r#"{"suspended": []}"#),
        ],
        r#"
server { policy_interval = "10m" }
resource "db" {
  connector    = "ok"
  max_duration = "4h"
  policies     = [{ bundle = "policies", query = "data.countersign.deny" }]
  workflow     = { steps = [{ reviewers = { one_of = ["alice@example.com"] } }] }
}
"#,
        r#"
        request bob db 4h
        approve alice
        tick
        write policies/data.json {"suspended": ["bob@example.com"]}
        # Bundles are compiled at start and on reload only.
        advance 10m
        state G1
        reload
        advance 10m
        state G1
        explain R1
        request bob db
        write policies/p.rego package countersign\ndeny contains "x" if {\n
        reload
        request carol db
        request bob db
        "#,
        expect![[r#"
            > request bob db 4h
              request_created R1 by bob duration=4h resource=db
              step_entered R1 reviewers=alice step=1
            > approve alice
              review_recorded R1 by alice decision=approve step=1
              step_approved R1 step=1
              request_approved R1 by alice
              grant_issued G1 duration=4h request=R1 resource=db subject=bob
            > tick
              grant_activated G1 expires_at=+4h
            > write policies/data.json {"suspended": ["bob@example.com"]}
              wrote policies/data.json
            > advance 10m (now +10m)
              (no events)
            > state G1
              G1 active expires_at=+4h
            > reload
              reloaded
            > advance 10m (now +20m)
              grant_revoke_started G1 by policy policy=data.countersign.deny reason='bob is suspended' why=revoked
              grant_revoked G1
            > state G1
              G1 revoked expires_at=+4h
            > explain R1
              deny policy data.countersign.deny: no messages
              re-evaluation of data.countersign.deny: deny: bob is suspended; grant G1 revoked
              step 1: approved (alice approve)
              approved by alice
            > request bob db
              request_created R2 by bob duration=1h resource=db
              request_denied R2 comment='bob is suspended' policy=data.countersign.deny
            > write policies/p.rego package countersign\ndeny contains "x" if {\n
              wrote policies/p.rego
            > reload
              reload refused: ./policies/p.rego:3:1: expecting expression
            > request carol db
              request_created R3 by carol duration=1h resource=db
              step_entered R3 reviewers=alice step=1
            > request bob db
              request_created R4 by bob duration=1h resource=db
              request_denied R4 comment='bob is suspended' policy=data.countersign.deny
        "#]],
    )
    .await;
}
