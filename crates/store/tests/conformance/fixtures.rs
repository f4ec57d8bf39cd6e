//! Domain objects for the checks, made by the domain crate's own constructors and transitions
//! (`Request::create`, `Request::review`, `Grant::issue`, …), so that what the suite stores is
//! what the engine stores. Times are fixed: nothing here reads a clock.

use std::collections::{BTreeMap, BTreeSet};

use domain::{
    Actor, Callback, CallbackFormat, Changes, Decision, Delivery, Directory, DomainError, Effect,
    Event, Grant, GrantSpec, NewRequest, NoPolicies, Principal, Request, ResourceDef, ReviewInput,
    Reviewers, Scope, Span, StepDef, Timestamp, UserDef, Workflow,
};
use store::{StoreError, StoredEvent, Tx};

/// 2026-01-01T00:00:00Z: every time of the suite is an offset from it.
const T0: i64 = 1_767_225_600_000;

/// `ms` milliseconds after the suite's epoch.
pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

pub const ALICE: &str = "alice@example.com";
pub const BOB: &str = "bob@example.com";
pub const CAROL: &str = "carol@example.com";
pub const DAVE: &str = "dave@example.com";

/// A per-receiver limit of callback calls that no check reaches, for the checks that are not
/// about it.
pub const NO_LANE_LIMIT: u32 = 1000;

/// How many extra reviewers (`r0@example.com`, …) every resource's one step has.
pub const REVIEWERS: usize = 24;

pub fn reviewer(i: usize) -> String {
    format!("r{i}@example.com")
}

/// The configuration the requests are made against: four people, the extra reviewers, and
/// the resources `db`, `web` and `vault`, each with one step that any one of bob and the
/// extra reviewers decides.
pub struct World {
    pub dir: Directory,
    resources: BTreeMap<String, ResourceDef>,
}

impl World {
    pub fn new() -> World {
        let mut users = BTreeMap::new();
        for u in [ALICE, BOB, CAROL, DAVE] {
            users.insert(u.to_owned(), UserDef::default());
        }
        for i in 0..REVIEWERS {
            users.insert(reviewer(i), UserDef::default());
        }
        let dir = Directory::new(users, BTreeMap::new());
        let mut step: Vec<Principal> = vec![Principal::User(BOB.into())];
        step.extend((0..REVIEWERS).map(|i| Principal::User(reviewer(i))));
        let resources = ["db", "web", "vault"]
            .into_iter()
            .map(|name| {
                let def = ResourceDef {
                    name: name.into(),
                    description: format!("the {name} resource"),
                    connector: None,
                    grant: BTreeMap::new(),
                    max_duration: Span::from_secs(86_400),
                    durations: vec![],
                    owners: vec![],
                    part_of: None,
                    pending_ttl: Span::from_secs(86_400),
                    allow_self_approval: false,
                    fields: vec![],
                    workflow: Workflow {
                        steps: vec![StepDef {
                            reviewers: Reviewers::OneOf(step.clone()),
                            skip_if: vec![],
                            reviewers_from: vec![],
                            remind_every: None,
                            escalate: vec![],
                            slack_decisions: true,
                        }],
                    },
                    on_request: None,
                    policies: vec![],
                    break_glass: None,
                    action: None,
                };
                (name.to_owned(), def)
            })
            .collect();
        World { dir, resources }
    }

    /// A pending request, as `Request::create` makes it at `now`, with its changes (the
    /// `request_created` and `step_entered` events, the expiry timer).
    pub fn request(
        &self,
        id: &str,
        requester: &str,
        resource: &str,
        now: Timestamp,
    ) -> (Request, Changes) {
        let new = NewRequest {
            id: id.to_owned(),
            requester: requester.to_owned(),
            reason: format!("conformance check {id}"),
            duration: None,
            fields: BTreeMap::new(),
            start_at: None,
            extends: None,
            context: Default::default(),
            action: None,
            run: None,
        };
        Request::create(
            new,
            &self.resources[resource],
            &self.dir,
            &NoPolicies,
            now,
            None,
        )
        .unwrap_or_else(|e| panic!("cannot create request {id}: {e}"))
    }

    pub fn actor(&self, who: &str) -> Actor {
        self.dir
            .actor(who)
            .unwrap_or_else(|| panic!("{who} is not configured"))
    }

    /// `who` decides on `req` (the domain refuses when it is no longer pending).
    pub fn review(
        &self,
        req: &mut Request,
        who: &str,
        decision: Decision,
        now: Timestamp,
    ) -> Result<Changes, DomainError> {
        let input = ReviewInput {
            decision,
            comment: None,
            duration: None,
            scope: Scope::Resource,
        };
        req.review(&self.actor(who), input, (&self.dir, &NoPolicies), now)
    }
}

/// A grant as `Grant::issue` makes it at `now`: active at once without a connector,
/// `activating` (with its connector call scheduled) with one.
pub fn grant(
    id: &str,
    subject: &str,
    resource: &str,
    connector: bool,
    now: Timestamp,
) -> (Grant, Changes) {
    let spec = GrantSpec {
        request: format!("req_of_{id}"),
        subject: subject.to_owned(),
        resource: resource.to_owned(),
        workflow: None,
        connector: connector.then(|| "conn".to_owned()),
        params: BTreeMap::new(),
        duration: Span::from_secs(3600),
        start_at: None,
        extends: None,
        run: None,
    };
    Grant::issue(id.to_owned(), spec, now)
}

/// An approval-only grant issued at `issued` and expired an hour later.
pub fn expired_grant(id: &str, subject: &str, resource: &str, issued: Timestamp) -> Grant {
    let (mut g, _) = grant(id, subject, resource, false, issued);
    let end = g.expires_at.expect("an active grant expires");
    g.expire(end).expect("it expires");
    g
}

/// An approval-only grant issued at `issued` and dropped by its subject a second later.
pub fn revoked_grant(id: &str, subject: &str, resource: &str, issued: Timestamp) -> Grant {
    let (mut g, _) = grant(id, subject, resource, false, issued);
    let subject = Actor {
        id: subject.to_owned(),
        groups: BTreeSet::new(),
        admin: false,
        app: false,
    };
    g.revoke(&subject, false, None, issued.plus_millis(1000))
        .expect("the subject may drop it");
    g
}

/// A callback delivery of `request`'s outcome, due at `now`.
pub fn delivery(request: &str, now: Timestamp) -> Delivery {
    let cb = Callback {
        url: format!("https://hooks.example.com/{request}"),
        format: CallbackFormat::Rest,
    };
    Delivery::new(request, &cb, format!(r#"{{"id":"{request}"}}"#), now)
}

/// Writes what a transition asked for, as the engine does: its events appended in order and
/// its timers scheduled or removed. Returns the events' sequence numbers.
pub async fn apply(tx: &mut dyn Tx, ch: &Changes, now: Timestamp) -> Result<Vec<i64>, StoreError> {
    let mut seqs = vec![];
    for e in &ch.events {
        seqs.push(tx.append(e, now).await?);
    }
    for effect in &ch.effects {
        match effect {
            Effect::Schedule { kind, key, at } => tx.schedule(*kind, key, *at).await?,
            Effect::Unschedule { kind, key } => tx.unschedule(*kind, key, now).await?,
            Effect::IssueGrant(_) | Effect::Callback | Effect::RevokeGrant { .. } => {}
        }
    }
    Ok(seqs)
}

/// The audit event a stored event holds.
pub fn event_of(e: &StoredEvent) -> Event {
    serde_json::from_str(&e.body)
        .unwrap_or_else(|err| panic!("event {} is not an event: {err}", e.seq))
}
