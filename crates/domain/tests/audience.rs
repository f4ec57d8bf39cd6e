//! `Request::audience` says, as data, what `visible_to` and `awaits` say one person at a
//! time (issue 14, item 3: lists read it from an index instead of judging every request):
//! checked for everyone, through creation by an application, assignment (rule 11), decisions
//! that move a request to its next step (rules 6 to 10), an outcome, escalations (rule 33) and
//! a break-glass with its follow-up review (rule 34), whose rules are tested here too.

use std::collections::{BTreeMap, BTreeSet};

use domain::{
    Actor, AppDef, Changes, Context, Decision, Directory, DomainError, Effect, EventKind,
    FollowUpState, NewRequest, NoPolicies, Principal, Request, ResourceDef, ReviewInput, Reviewers,
    Scope, Span, StepDef, TimerKind, Timestamp, UserDef, Verdict, Workflow,
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
                    slack_decisions: true,
                },
                StepDef {
                    reviewers: Reviewers::AllOf(vec![p(&email("eli")), p(&email("ann"))]),
                    skip_if: vec![],
                    reviewers_from: vec![],
                    remind_every: None,
                    escalate: vec![],
                    slack_decisions: true,
                },
            ],
        },
        on_request: None,
        policies: vec![],
        break_glass: None,
        action: None,
    }
}

/// Fay asks for the resource, through an application when one is named.
fn fay_asks(id: &str, through: Option<&str>) -> NewRequest {
    NewRequest {
        id: id.to_owned(),
        requester: email("fay"),
        reason: "why".into(),
        duration: None,
        fields: BTreeMap::new(),
        start_at: None,
        extends: None,
        context: Context {
            created_by: through.map(str::to_owned),
            ..Context::default()
        },
        action: None,
        run: None,
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
            r.awaits(&id),
            "{when}: {id} may decide"
        );
    }
    let mut deciders = r.eligible_reviewers();
    deciders.extend(r.follow_up_closers());
    assert_eq!(
        audience
            .iter()
            .filter(|(_, may)| **may)
            .map(|(p, _)| p.clone())
            .collect::<BTreeSet<_>>(),
        deciders,
        "{when}"
    );
}

#[test]
fn lists_audience_is_visible_to_and_can_review_as_data() {
    let dir = directory();
    let res = resource();
    let now = Timestamp::from_millis(1_000);
    let new = fay_asks("r1", Some("app:ci"));
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
        let new = fay_asks(&format!("o{i}"), Some("app:ci"));
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

/// Rule 33: reminders fall at whole intervals from the step's entry (an early timer is set
/// again, a late one does not drift); an escalation tells its people, and with
/// `add_reviewers` lets them decide this step only, never the requester (rule 9); the
/// audience grows with them; once the step has moved on, neither timer does anything.
#[test]
fn rule_33_reminders_keep_their_interval_and_escalations_add_reviewers_to_one_step() {
    use domain::Escalation;
    let dir = directory();
    let p = |s: &str| Principal::parse(s).expect("principal");
    let mut res = resource();
    res.workflow.steps[0].remind_every = Some(Span::from_secs(1800));
    res.workflow.steps[0].escalate = vec![
        Escalation {
            after: Span::from_secs(3600),
            to: vec![p(&email("gus"))],
            add_reviewers: false,
        },
        Escalation {
            after: Span::from_secs(7200),
            to: vec![p(&email("fay")), p("group:own")],
            add_reviewers: true,
        },
    ];
    let t0 = Timestamp::from_millis(1_000_000);
    let at = |min: i64| Timestamp::from_millis(t0.millis() + min * 60_000);
    let new = fay_asks("r1", None);
    let (mut r, created) = Request::create(new, &res, &dir, &NoPolicies, t0, None).expect("ok");
    let timers = |ch: &Changes, kind: TimerKind| -> Vec<Timestamp> {
        ch.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Schedule { kind: k, at, .. } if *k == kind => Some(*at),
                _ => None,
            })
            .collect()
    };
    let kinds = |ch: &Changes| ch.events.iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(timers(&created, TimerKind::StepReminder), vec![at(30)]);
    assert_eq!(timers(&created, TimerKind::StepEscalation), vec![at(60)]);

    // Reminders: early → set again, no reminder; on time; late → the next stays on the grid.
    let early = r.remind(0, at(29)).expect("the step waits");
    assert!(early.events.is_empty());
    assert_eq!(timers(&early, TimerKind::StepReminder), vec![at(30)]);
    let on_time = r.remind(0, at(30)).expect("the step waits");
    assert_eq!(kinds(&on_time), vec![EventKind::StepReminded]);
    assert_eq!(timers(&on_time, TimerKind::StepReminder), vec![at(60)]);
    let late = r.remind(0, at(75)).expect("the step waits");
    assert_eq!(timers(&late, TimerKind::StepReminder), vec![at(90)]);

    // The first escalation tells gus, who may see the request but not decide.
    let mut seen = BTreeSet::new();
    check(&r, &dir, "before escalation", &mut seen);
    let first = r.escalate(0, &dir, at(60)).expect("the step waits");
    assert_eq!(kinds(&first), vec![EventKind::StepEscalated]);
    assert_eq!(timers(&first, TimerKind::StepEscalation), vec![at(120)]);
    assert_eq!(r.escalated_people(), BTreeSet::from([email("gus")]));
    assert_eq!(r.audience().get(&email("gus")), Some(&false));
    check(&r, &dir, "told gus", &mut seen);

    // The second adds dov (group own) as a reviewer of step 1; fay asked, so never her.
    let second = r.escalate(0, &dir, at(120)).expect("the step waits");
    assert!(timers(&second, TimerKind::StepEscalation).is_empty());
    assert_eq!(r.escalated_people(), BTreeSet::from([email("dov")]));
    assert!(r.can_review(&email("dov")) && r.can_review(&email("ben")));
    assert!(!r.can_review(&email("fay")));
    check(&r, &dir, "added dov", &mut seen);
    assert!(
        r.escalate(0, &dir, at(180)).is_none(),
        "no third escalation"
    );

    // Dov approves step 1; step 2 is not his, and step 1's timers do nothing any more.
    let dov = dir.actor(&email("dov")).expect("present");
    let approve = ReviewInput {
        decision: Decision::Approve,
        comment: None,
        duration: None,
        scope: Scope::Resource,
    };
    r.review(&dov, approve, (&dir, &NoPolicies), at(121))
        .expect("an escalated reviewer decides");
    assert_eq!(r.current_step(), Some(1));
    assert!(!r.can_review(&email("dov")));
    assert!(r.remind(0, at(150)).is_none());
    assert!(r.escalate(0, &dir, at(240)).is_none());
    check(&r, &dir, "step 2", &mut seen);
}

/// The resource with a break-glass: half an hour at most, reviewed by the ops group within a
/// day (rule 34).
fn glass() -> ResourceDef {
    ResourceDef {
        break_glass: Some(domain::BreakGlassDef {
            max_duration: Span::from_secs(1800),
            notify: vec![],
            review_within: Span::from_secs(86_400),
            reviewers: vec![Principal::parse("group:ops").expect("principal")],
        }),
        ..resource()
    }
}

fn event_kinds(ch: &Changes) -> Vec<EventKind> {
    ch.events.iter().map(|e| e.kind).collect()
}

/// Rule 34: break-glass grants at once, for at most its `max_duration`, without the
/// workflow; it is announced (the `break_glass_used` event the router sends) and its
/// follow-up review is due `review_within` later. What it refuses: a resource without
/// break-glass, a longer duration, an application, a follow-up only the requester could
/// review.
#[test]
fn rule_34_break_glass_grants_at_once_for_at_most_max_duration() {
    let dir = directory();
    let now = Timestamp::from_millis(1_000);
    let (r, ch) = Request::break_glass(fay_asks("g1", None), &glass(), &dir, &NoPolicies, now)
        .expect("broke");
    assert_eq!(r.state, domain::RequestState::Approved);
    assert_eq!(
        event_kinds(&ch),
        vec![
            EventKind::RequestCreated,
            EventKind::BreakGlassUsed,
            EventKind::RequestApproved
        ]
    );
    assert_eq!(
        ch.events[0].detail.get("break_glass").map(String::as_str),
        Some("true")
    );
    assert_eq!(ch.events[1].actor.as_deref(), Some(email("fay").as_str()));
    let spec = ch
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::IssueGrant(spec) => Some(spec.clone()),
            _ => None,
        })
        .expect("a grant is issued at once");
    // The resource's default is an hour; break-glass caps it at half an hour.
    assert_eq!(spec.duration, Span::from_secs(1800));
    assert!(ch.effects.contains(&Effect::Schedule {
        kind: TimerKind::FollowUpDue,
        key: "g1".into(),
        at: now.plus(Span::from_secs(86_400)),
    }));
    assert!(
        r.steps
            .iter()
            .all(|s| s.status == domain::StepStatus::Skipped)
    );
    assert_eq!(
        r.follow_up_closers(),
        BTreeSet::from([email("ben"), email("cat")])
    );

    let refused = |new: NewRequest, res: &ResourceDef| {
        Request::break_glass(new, res, &dir, &NoPolicies, now).expect_err("refused")
    };
    assert!(matches!(
        refused(fay_asks("g2", None), &resource()),
        DomainError::Invalid(m) if m.contains("has no break_glass")
    ));
    let long = NewRequest {
        duration: Some(Span::from_secs(3600)),
        ..fay_asks("g3", None)
    };
    assert!(matches!(
        refused(long, &glass()),
        DomainError::Invalid(m) if m.contains("break-glass maximum 30m")
    ));
    assert!(matches!(
        refused(fay_asks("g4", Some("app:ci")), &glass()),
        DomainError::Forbidden(_)
    ));
    // Ben is the only other member of ops here; when ben breaks the glass on a resource
    // only he reviews, nobody else could close the follow-up.
    let mut only_ben = glass();
    if let Some(bg) = &mut only_ben.break_glass {
        bg.reviewers = vec![Principal::parse(&email("ben")).expect("principal")];
    }
    let ben_asks = NewRequest {
        requester: email("ben"),
        ..fay_asks("g5", None)
    };
    assert!(matches!(
        refused(ben_asks, &only_ben),
        DomainError::Invalid(m) if m.contains("nobody but ben@x.test")
    ));
}

/// Rule 34: the follow-up can never be closed by the person who broke the glass, nor by
/// anyone who is not its reviewer, nor twice; acknowledging closes it, flagging needs a
/// comment and revokes the grant (an effect carried out in the same transaction).
#[test]
fn rule_34_follow_up_is_closed_by_someone_else_and_flagging_revokes() {
    let dir = directory();
    let now = Timestamp::from_millis(1_000);
    let actor = |p: &str| dir.actor(&email(p)).expect("present");
    let mut seen = BTreeSet::new();
    let (mut r, _) = Request::break_glass(fay_asks("g1", None), &glass(), &dir, &NoPolicies, now)
        .expect("broke");
    r.grant = Some("grant-1".into());
    check(&r, &dir, "broke the glass", &mut seen);
    assert_eq!(r.audience().get(&email("ben")), Some(&true));
    assert_eq!(r.audience().get(&email("fay")), Some(&false));

    let err = |r: &mut Request, who: &str, v: Verdict, c: Option<&str>| {
        r.close_follow_up(&actor(who), v, c.map(str::to_owned), now)
            .expect_err("refused")
    };
    assert!(matches!(
        err(&mut r, "fay", Verdict::Acknowledge, None),
        DomainError::Forbidden(m) if m.contains("your own break-glass")
    ));
    // An admin is not a follow-up reviewer until the follow-up is overdue.
    assert!(matches!(
        err(&mut r, "hal", Verdict::Acknowledge, None),
        DomainError::Forbidden(_)
    ));
    assert!(matches!(
        err(&mut r, "ben", Verdict::Flag, None),
        DomainError::Invalid(m) if m.contains("needs a comment")
    ));
    let mut flagged = r.clone();
    let ch = flagged
        .close_follow_up(
            &actor("ben"),
            Verdict::Flag,
            Some("no incident".into()),
            now,
        )
        .expect("flagged");
    assert_eq!(event_kinds(&ch), vec![EventKind::FollowUpFlagged]);
    assert!(ch.effects.contains(&Effect::RevokeGrant {
        grant: "grant-1".into(),
        by: email("ben"),
        reason: "break-glass flagged: no incident".into(),
    }));
    assert_eq!(
        flagged.follow_up.as_ref().map(|f| f.state),
        Some(FollowUpState::Flagged)
    );
    check(&flagged, &dir, "flagged", &mut seen.clone());

    let ch = r
        .close_follow_up(&actor("cat"), Verdict::Acknowledge, None, now)
        .expect("acknowledged");
    assert_eq!(event_kinds(&ch), vec![EventKind::FollowUpAcknowledged]);
    assert!(
        !ch.effects
            .iter()
            .any(|e| matches!(e, Effect::RevokeGrant { .. }))
    );
    assert!(ch.effects.contains(&Effect::Unschedule {
        kind: TimerKind::FollowUpDue,
        key: "g1".into()
    }));
    check(&r, &dir, "acknowledged", &mut seen);
    assert!(matches!(
        err(&mut r, "ben", Verdict::Flag, Some("late")),
        DomainError::Conflict(m) if m.contains("already acknowledged by cat@x.test")
    ));
    // A closed follow-up's timer does nothing.
    assert!(
        r.follow_up_due(&dir, now.plus(Span::from_secs(86_400)))
            .is_none()
    );
}

/// Rule 34: an unreviewed follow-up escalates once when it is due: its reviewers, the
/// resource's owners and every admin are told (never the requester), and may close it.
#[test]
fn rule_34_unreviewed_follow_up_escalates() {
    let dir = directory();
    let now = Timestamp::from_millis(1_000);
    let day = now.plus(Span::from_secs(86_400));
    let mut seen = BTreeSet::new();
    let (mut r, _) = Request::break_glass(fay_asks("g1", None), &glass(), &dir, &NoPolicies, now)
        .expect("broke");
    // Early: set again for its time, nothing said.
    let early = r
        .follow_up_due(&dir, day.minus(Span::from_secs(60)))
        .expect("open");
    assert!(early.events.is_empty());
    assert!(early.effects.contains(&Effect::Schedule {
        kind: TimerKind::FollowUpDue,
        key: "g1".into(),
        at: day,
    }));
    let due = r.follow_up_due(&dir, day).expect("open");
    assert_eq!(event_kinds(&due), vec![EventKind::FollowUpOverdue]);
    let told = BTreeSet::from([email("ben"), email("cat"), email("dov"), email("hal")]);
    assert_eq!(r.escalated_people(), told);
    assert_eq!(r.follow_up_closers(), told);
    check(&r, &dir, "escalated", &mut seen);
    assert!(r.follow_up_due(&dir, day).is_none(), "it escalates once");
    let dov = dir.actor(&email("dov")).expect("present");
    r.close_follow_up(&dov, Verdict::Acknowledge, None, day)
        .expect("an owner closes it once it is overdue");
    assert!(r.escalated_people().is_empty());
}
