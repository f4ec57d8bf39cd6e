//! `Request::audience` says, as data, what `visible_to` and `can_review` say one person at a
//! time (issue 14, item 3: lists read it from an index instead of judging every request):
//! checked for everyone, through creation by an application, assignment (rule 11), decisions
//! that move a request to its next step (rules 6 to 10) and an outcome.

use std::collections::{BTreeMap, BTreeSet};

use domain::{
    Actor, AppDef, Context, Decision, Directory, NewRequest, NoPolicies, Principal, Request,
    ResourceDef, ReviewInput, Reviewers, Scope, Span, StepDef, Timestamp, UserDef, Workflow,
};

const PEOPLE: [&str; 8] = ["ann", "ben", "cat", "dov", "eli", "fay", "gus", "hal"];

fn email(p: &str) -> String {
    format!("{p}@x.test")
}

fn directory() -> Directory {
    let users = PEOPLE
        .iter()
        .map(|p| {
            let def = UserDef {
                groups: BTreeSet::new(),
                admin: *p == "hal",
                attributes: BTreeMap::new(),
            };
            (email(p), def)
        })
        .collect();
    let groups = BTreeMap::from([
        (
            "ops".to_owned(),
            BTreeSet::from([email("ben"), email("cat")]),
        ),
        ("own".to_owned(), BTreeSet::from([email("dov")])),
    ]);
    Directory::new(users, groups).with_apps(BTreeMap::from([(
        "ci".to_owned(),
        AppDef {
            request_approval: true,
            admin: false,
        },
    )]))
}

fn resource() -> ResourceDef {
    let p = |s: &str| Principal::parse(s).expect("principal");
    ResourceDef {
        name: "db".into(),
        description: String::new(),
        connector: None,
        grant: BTreeMap::new(),
        max_duration: Span::from_secs(3600),
        durations: vec![],
        owners: vec![p("group:own")],
        part_of: None,
        pending_ttl: Span::from_secs(86_400),
        allow_self_approval: false,
        fields: vec![],
        workflow: Workflow {
            steps: vec![
                StepDef {
                    reviewers: Reviewers::OneOf(vec![p("group:ops")]),
                    skip_if: vec![],
                    reviewers_from: vec![],
                    remind_every: None,
                    escalate: vec![],
                },
                StepDef {
                    reviewers: Reviewers::AllOf(vec![p(&email("eli")), p(&email("ann"))]),
                    skip_if: vec![],
                    reviewers_from: vec![],
                    remind_every: None,
                    escalate: vec![],
                },
            ],
        },
        on_request: None,
        policies: vec![],
    }
}

/// Everyone (and the application), as non-admins and as themselves; and the audience only
/// grows (the store upserts its rows and never deletes one).
fn check(r: &Request, dir: &Directory, when: &str, before: &mut BTreeSet<String>) {
    let audience = r.audience();
    let now: BTreeSet<String> = audience.keys().cloned().collect();
    assert!(
        now.is_superset(before),
        "{when}: the audience lost {:?}",
        before.difference(&now)
    );
    *before = now;
    let everyone = PEOPLE
        .iter()
        .map(|p| email(p))
        .chain(["app:ci".to_owned(), "app:other".to_owned()]);
    for id in everyone {
        let actor = dir.actor(&id).unwrap_or(Actor {
            id: id.clone(),
            groups: BTreeSet::new(),
            admin: false,
            app: true,
        });
        let plain = Actor {
            admin: false,
            ..actor.clone()
        };
        assert_eq!(
            audience.contains_key(&id),
            r.visible_to(&plain),
            "{when}: {id} in the audience"
        );
        assert_eq!(
            audience.get(&id).copied().unwrap_or(false),
            r.can_review(&id),
            "{when}: {id} may decide"
        );
    }
    assert_eq!(
        audience
            .iter()
            .filter(|(_, may)| **may)
            .map(|(p, _)| p.clone())
            .collect::<BTreeSet<_>>(),
        r.eligible_reviewers(),
        "{when}"
    );
}

#[test]
fn lists_audience_is_visible_to_and_can_review_as_data() {
    let dir = directory();
    let res = resource();
    let now = Timestamp::from_millis(1_000);
    let new = NewRequest {
        id: "r1".into(),
        requester: email("fay"),
        reason: "why".into(),
        duration: None,
        fields: BTreeMap::new(),
        start_at: None,
        extends: None,
        context: Context {
            created_by: Some("app:ci".into()),
            ..Context::default()
        },
    };
    let (mut r, _) = Request::create(new, &res, &dir, &NoPolicies, now, None).expect("created");
    let mut seen = BTreeSet::new();
    check(&r, &dir, "created", &mut seen);
    assert!(r.audience().contains_key("app:ci"));

    // Rule 11: ben hands step 1 to gus, who joins the audience and may decide.
    let ben = dir.actor(&email("ben")).expect("present");
    r.assign(
        &ben,
        Principal::parse(&email("gus")).expect("present"),
        &dir,
        now,
    )
    .expect("assigned");
    check(&r, &dir, "assigned", &mut seen);
    assert_eq!(r.audience().get(&email("gus")), Some(&true));

    let approve = || ReviewInput {
        decision: Decision::Approve,
        comment: None,
        duration: None,
        scope: Scope::Resource,
    };
    let gus = dir.actor(&email("gus")).expect("present");
    r.review(&gus, approve(), (&dir, &NoPolicies), now)
        .expect("step 1");
    check(&r, &dir, "at step 2", &mut seen);
    assert_eq!(r.audience().get(&email("cat")), Some(&false));
    assert_eq!(r.audience().get(&email("eli")), Some(&true));

    let eli = dir.actor(&email("eli")).expect("present");
    r.review(&eli, approve(), (&dir, &NoPolicies), now)
        .expect("half of step 2");
    check(&r, &dir, "half of step 2", &mut seen);
    let ann = dir.actor(&email("ann")).expect("present");
    r.review(&ann, approve(), (&dir, &NoPolicies), now)
        .expect("approved");
    check(&r, &dir, "approved", &mut seen);
    assert!(r.audience().values().all(|may| !may));

    // The other outcomes: denied, cancelled by the app that created it, expired; and a step
    // assigned on and back (the first assigner keeps their place in the audience).
    for (i, end) in ["deny", "cancel", "expire", "assign back"]
        .iter()
        .enumerate()
    {
        let new = NewRequest {
            id: format!("o{i}"),
            requester: email("fay"),
            reason: "why".into(),
            duration: None,
            fields: BTreeMap::new(),
            start_at: None,
            extends: None,
            context: Context {
                created_by: Some("app:ci".into()),
                ..Context::default()
            },
        };
        let (mut r, _) = Request::create(new, &res, &dir, &NoPolicies, now, None).expect("created");
        let mut seen = BTreeSet::new();
        check(&r, &dir, end, &mut seen);
        match *end {
            "deny" => {
                let input = ReviewInput {
                    decision: Decision::Deny,
                    ..approve()
                };
                r.review(&ben, input, (&dir, &NoPolicies), now)
                    .expect("denied");
            }
            "cancel" => {
                let app = dir.actor("app:ci").expect("present");
                r.cancel(&app, None, now).expect("cancelled");
            }
            "expire" => {
                r.expire(Timestamp::from_millis(now.millis() + 86_400_001))
                    .expect("expired");
            }
            _ => {
                r.assign(
                    &ben,
                    Principal::parse(&email("gus")).expect("present"),
                    &dir,
                    now,
                )
                .expect("assigned");
                check(&r, &dir, "assigned on", &mut seen);
                r.assign(
                    &gus,
                    Principal::parse(&email("ben")).expect("present"),
                    &dir,
                    now,
                )
                .expect("assigned back");
            }
        }
        check(&r, &dir, end, &mut seen);
    }
}
