//! Notifications (rules 32 and 33): which state changes someone should hear about, and who
//! hears about each on which channel. Pure: the engine hands [`route`] an event and the people
//! around it, and writes one outbox row per recipient it returns in the transaction of the
//! change (rule 32).
//!
//! A rule (`notify "NAME" { events, resources, to, via }`) names events, the resources they
//! apply to (globs), an audience and the channels to use. A channel either reaches people
//! (email: one message per person, to their user id, which is their address) or takes one
//! copy of each event (a webhook). A `via` entry may name a fixed destination instead
//! (`"security-email:secops@example.com"`), which is sent the event whoever the audience is.
//! However many rules select the same person for one event on one channel, they get one
//! message (rule 32), and the person whose action caused the event is not told of it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::effect::EventKind;
use crate::principal::{Directory, Principal};

/// What a notification is about. The names are stable: configurations and payloads use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    RequestCreated,
    StepEntered,
    Reminder,
    Escalated,
    RequestApproved,
    RequestDenied,
    RequestCancelled,
    RequestExpired,
    CommentAdded,
    Assigned,
    GrantActive,
    GrantExpiring,
    GrantEnded,
    GrantFailed,
    BreakGlass,
    /// The access a run of a runbook stopped for is in effect: its runner may resume
    /// (issue 17).
    RunReady,
    /// A run of a runbook could not complete for lack of permissions: its access was
    /// denied (issue 17).
    RunFailed,
    /// A run of a runbook waits for its runner's answer to an input step (issue 17).
    RunInput,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 18] = [
        NotifyEvent::RequestCreated,
        NotifyEvent::StepEntered,
        NotifyEvent::Reminder,
        NotifyEvent::Escalated,
        NotifyEvent::RequestApproved,
        NotifyEvent::RequestDenied,
        NotifyEvent::RequestCancelled,
        NotifyEvent::RequestExpired,
        NotifyEvent::CommentAdded,
        NotifyEvent::Assigned,
        NotifyEvent::GrantActive,
        NotifyEvent::GrantExpiring,
        NotifyEvent::GrantEnded,
        NotifyEvent::GrantFailed,
        NotifyEvent::BreakGlass,
        NotifyEvent::RunReady,
        NotifyEvent::RunFailed,
        NotifyEvent::RunInput,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::RequestCreated => "request_created",
            NotifyEvent::StepEntered => "step_entered",
            NotifyEvent::Reminder => "reminder",
            NotifyEvent::Escalated => "escalated",
            NotifyEvent::RequestApproved => "request_approved",
            NotifyEvent::RequestDenied => "request_denied",
            NotifyEvent::RequestCancelled => "request_cancelled",
            NotifyEvent::RequestExpired => "request_expired",
            NotifyEvent::CommentAdded => "comment_added",
            NotifyEvent::Assigned => "assigned",
            NotifyEvent::GrantActive => "grant_active",
            NotifyEvent::GrantExpiring => "grant_expiring",
            NotifyEvent::GrantEnded => "grant_ended",
            NotifyEvent::GrantFailed => "grant_failed",
            NotifyEvent::BreakGlass => "break_glass",
            NotifyEvent::RunReady => "run_ready",
            NotifyEvent::RunFailed => "run_failed",
            NotifyEvent::RunInput => "run_input",
        }
    }

    pub fn parse(s: &str) -> Option<NotifyEvent> {
        NotifyEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The notification an audit event gives rise to, if any. A grant ends by expiring or by
    /// being revoked (`grant_ended`); it fails when activation gave up (`grant_failed`).
    pub fn of(kind: EventKind) -> Option<NotifyEvent> {
        Some(match kind {
            EventKind::RequestCreated => NotifyEvent::RequestCreated,
            EventKind::StepEntered => NotifyEvent::StepEntered,
            EventKind::StepReminded => NotifyEvent::Reminder,
            EventKind::StepEscalated | EventKind::FollowUpOverdue => NotifyEvent::Escalated,
            EventKind::BreakGlassUsed => NotifyEvent::BreakGlass,
            EventKind::RequestApproved => NotifyEvent::RequestApproved,
            EventKind::RequestDenied => NotifyEvent::RequestDenied,
            EventKind::RequestCancelled => NotifyEvent::RequestCancelled,
            EventKind::RequestExpired => NotifyEvent::RequestExpired,
            EventKind::CommentAdded => NotifyEvent::CommentAdded,
            EventKind::RequestAssigned => NotifyEvent::Assigned,
            EventKind::GrantActivated => NotifyEvent::GrantActive,
            EventKind::GrantExpiring => NotifyEvent::GrantExpiring,
            EventKind::GrantExpired | EventKind::GrantRevoked => NotifyEvent::GrantEnded,
            EventKind::GrantFailed => NotifyEvent::GrantFailed,
            EventKind::RunReady => NotifyEvent::RunReady,
            EventKind::RunFailed => NotifyEvent::RunFailed,
            EventKind::RunWaitingForInput => NotifyEvent::RunInput,
            _ => return None,
        })
    }

    /// Whether the event is about a run of a runbook (its payload carries the run).
    pub fn is_run(self) -> bool {
        matches!(
            self,
            NotifyEvent::RunReady | NotifyEvent::RunFailed | NotifyEvent::RunInput
        )
    }

    /// Whether the event is about a grant rather than a request.
    pub fn is_grant(self) -> bool {
        matches!(
            self,
            NotifyEvent::GrantActive
                | NotifyEvent::GrantExpiring
                | NotifyEvent::GrantEnded
                | NotifyEvent::GrantFailed
        )
    }
}

/// Who a rule tells.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Audience {
    /// The people who may decide the request's current step now (for `escalated`, the people
    /// the escalation told; for `break_glass`, the follow-up's reviewers).
    Reviewers,
    Requester,
    /// The person the grant is for (the requester, for a request).
    Subject,
    /// The resource's owners, as the request recorded them.
    Owners,
    /// Every configured admin.
    Admins,
    /// A user, or every member of a group.
    Principal(Principal),
}

impl Audience {
    /// `reviewers`, `requester`, `subject`, `owners`, `admins`, or a principal
    /// (`alice@example.com`, `group:dba`). Applications are never an audience.
    pub fn parse(s: &str) -> Result<Audience, String> {
        Ok(match s {
            "reviewers" => Audience::Reviewers,
            "requester" => Audience::Requester,
            "subject" => Audience::Subject,
            "owners" => Audience::Owners,
            "admins" => Audience::Admins,
            _ => match Principal::parse(s) {
                Ok(Principal::App(_)) => {
                    return Err(format!("{s:?}: an application cannot be notified"));
                }
                Ok(p) => Audience::Principal(p),
                Err(e) => {
                    return Err(format!(
                        "{s:?} is not reviewers, requester, subject, owners, admins or a principal ({e})"
                    ));
                }
            },
        })
    }
}

/// A channel a rule sends through, and a fixed destination on it, if any
/// (`"CHANNEL"` or `"CHANNEL:destination"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    pub channel: String,
    pub destination: Option<String>,
}

impl Via {
    pub fn parse(s: &str) -> Via {
        match s.split_once(':') {
            Some((channel, dest)) => Via {
                channel: channel.to_owned(),
                destination: Some(dest.to_owned()),
            },
            None => Via {
                channel: s.to_owned(),
                destination: None,
            },
        }
    }
}

/// One `notify` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyRule {
    pub name: String,
    pub events: BTreeSet<NotifyEvent>,
    /// Globs over resource names (`*` matches any run of characters); empty matches all.
    pub resources: Vec<String>,
    pub to: Vec<Audience>,
    pub via: Vec<Via>,
}

impl NotifyRule {
    fn applies(&self, event: NotifyEvent, resource: &str) -> bool {
        self.events.contains(&event)
            && (self.resources.is_empty() || self.resources.iter().any(|g| glob(g, resource)))
    }
}

/// The rules that apply when the configuration has no `notify` block: a step's reviewers
/// hear that it waits for them (when it is entered, reminded or escalated), a break-glass
/// follow-up's reviewers that someone broke the glass (rule 34), and the
/// requester hears every outcome of their request and every turn of its grant, on each of
/// `channels` (the channels that reach people).
pub fn default_rules(channels: &[String]) -> Vec<NotifyRule> {
    if channels.is_empty() {
        return vec![];
    }
    let via: Vec<Via> = channels.iter().map(|c| Via::parse(c)).collect();
    vec![
        NotifyRule {
            name: "default: reviewers".into(),
            events: BTreeSet::from([
                NotifyEvent::StepEntered,
                NotifyEvent::Reminder,
                NotifyEvent::Escalated,
                NotifyEvent::BreakGlass,
            ]),
            resources: vec![],
            to: vec![Audience::Reviewers],
            via: via.clone(),
        },
        NotifyRule {
            name: "default: requester".into(),
            events: BTreeSet::from([
                NotifyEvent::RequestApproved,
                NotifyEvent::RequestDenied,
                NotifyEvent::RequestCancelled,
                NotifyEvent::RequestExpired,
                NotifyEvent::GrantActive,
                NotifyEvent::GrantExpiring,
                NotifyEvent::GrantEnded,
                NotifyEvent::GrantFailed,
                NotifyEvent::RunReady,
                NotifyEvent::RunFailed,
                NotifyEvent::RunInput,
            ]),
            resources: vec![],
            to: vec![Audience::Requester],
            via,
        },
    ]
}

/// How a channel delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// One message per person (email).
    People,
    /// One copy of each event, listing who it is for (a webhook).
    Event,
}

/// The people around one event, as the rules name them. The engine fills it from the request
/// (and grant) as the transaction that caused the event left them.
#[derive(Clone, Debug, Default)]
pub struct Parties {
    pub resource: String,
    pub requester: String,
    pub subject: String,
    pub reviewers: BTreeSet<String>,
    pub owners: BTreeSet<String>,
    /// Whoever caused the event, who is not told of it.
    pub actor: Option<String>,
}

/// One message to send: on `channel`, to a person or a fixed destination, or (`to: None`) the
/// one copy a channel that reaches no person takes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Recipient {
    pub channel: String,
    pub to: Option<String>,
    /// The people the message is for (for `to: None`, everyone the rules selected).
    pub people: BTreeSet<String>,
}

/// The messages one event produces under `rules`. `reach` tells how each channel delivers
/// (`None` for a channel the configuration does not have, which is skipped: `countersign
/// check` refuses such a rule). The result is ordered and has no duplicates (rule 32).
pub fn route(
    rules: &[NotifyRule],
    reach: &dyn Fn(&str) -> Option<Reach>,
    dir: &Directory,
    event: NotifyEvent,
    p: &Parties,
) -> Vec<Recipient> {
    // (channel, destination) → the people it is for.
    let mut out: std::collections::BTreeMap<(String, Option<String>), BTreeSet<String>> =
        Default::default();
    for rule in rules.iter().filter(|r| r.applies(event, &p.resource)) {
        let people = audience(rule, dir, p);
        for via in &rule.via {
            let Some(reach) = reach(&via.channel) else {
                continue;
            };
            match (&via.destination, reach) {
                (Some(dest), _) => {
                    out.entry((via.channel.clone(), Some(dest.clone())))
                        .or_default()
                        .extend(people.iter().cloned());
                }
                (None, Reach::People) => {
                    for person in &people {
                        out.entry((via.channel.clone(), Some(person.clone())))
                            .or_default()
                            .insert(person.clone());
                    }
                }
                (None, Reach::Event) => {
                    out.entry((via.channel.clone(), None))
                        .or_default()
                        .extend(people.iter().cloned());
                }
            }
        }
    }
    out.into_iter()
        .map(|((channel, to), people)| Recipient {
            channel,
            to,
            people,
        })
        .collect()
}

/// The people a rule's `to` names for this event, without the person who caused it and
/// without applications.
fn audience(rule: &NotifyRule, dir: &Directory, p: &Parties) -> BTreeSet<String> {
    let mut people = BTreeSet::new();
    for a in &rule.to {
        match a {
            Audience::Reviewers => people.extend(p.reviewers.iter().cloned()),
            Audience::Requester => {
                people.insert(p.requester.clone());
            }
            Audience::Subject => {
                people.insert(p.subject.clone());
            }
            Audience::Owners => people.extend(p.owners.iter().cloned()),
            Audience::Admins => people.extend(
                dir.users()
                    .filter(|(_, u)| u.admin)
                    .map(|(id, _)| id.clone()),
            ),
            Audience::Principal(pr) => people.extend(dir.people(pr)),
        }
    }
    people.retain(|person| {
        !person.is_empty()
            && !person.starts_with("app:")
            && p.actor.as_deref() != Some(person.as_str())
    });
    people
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (none
/// included) and every other character matches itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // The classic two-pointer match with backtracking to the last star: linear in practice,
    // O(len(p) × len(n)) at worst, and both are bounded names.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::principal::UserDef;

    fn dir() -> Directory {
        let user = |admin: bool, groups: &[&str]| UserDef {
            admin,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserDef::default()
        };
        Directory::new(
            BTreeMap::from([
                ("alice@x".to_string(), user(false, &[])),
                ("bob@x".to_string(), user(false, &["dba"])),
                ("carol@x".to_string(), user(false, &["dba"])),
                ("root@x".to_string(), user(true, &[])),
            ]),
            BTreeMap::new(),
        )
    }

    fn parties() -> Parties {
        Parties {
            resource: "prod-db".into(),
            requester: "alice@x".into(),
            subject: "alice@x".into(),
            reviewers: BTreeSet::from(["bob@x".to_string(), "carol@x".to_string()]),
            owners: BTreeSet::from(["carol@x".to_string()]),
            actor: None,
        }
    }

    fn reach(c: &str) -> Option<Reach> {
        match c {
            "mail" => Some(Reach::People),
            "siem" => Some(Reach::Event),
            _ => None,
        }
    }

    fn rule(events: &[NotifyEvent], resources: &[&str], to: &[&str], via: &[&str]) -> NotifyRule {
        NotifyRule {
            name: "r".into(),
            events: events.iter().copied().collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            to: to.iter().map(|s| Audience::parse(s).unwrap()).collect(),
            via: via.iter().map(|s| Via::parse(s)).collect(),
        }
    }

    fn sent(r: &[Recipient]) -> Vec<(String, Option<String>)> {
        r.iter()
            .map(|r| (r.channel.clone(), r.to.clone()))
            .collect()
    }

    #[test]
    fn rule_32_defaults_tell_reviewers_of_a_step_and_the_requester_of_outcomes() {
        let rules = default_rules(&["mail".to_string()]);
        let got = route(&rules, &reach, &dir(), NotifyEvent::StepEntered, &parties());
        assert_eq!(
            sent(&got),
            vec![
                ("mail".into(), Some("bob@x".into())),
                ("mail".into(), Some("carol@x".into())),
            ]
        );
        for e in [
            NotifyEvent::RequestApproved,
            NotifyEvent::RequestDenied,
            NotifyEvent::RequestExpired,
            NotifyEvent::GrantActive,
            NotifyEvent::GrantExpiring,
            NotifyEvent::GrantEnded,
        ] {
            let got = route(&rules, &reach, &dir(), e, &parties());
            assert_eq!(
                sent(&got),
                vec![("mail".into(), Some("alice@x".into()))],
                "{e:?}"
            );
        }
        // Nothing by default for a comment, and nothing at all without a channel.
        assert!(
            route(
                &rules,
                &reach,
                &dir(),
                NotifyEvent::CommentAdded,
                &parties()
            )
            .is_empty()
        );
        assert!(default_rules(&[]).is_empty());
    }

    #[test]
    fn rule_32_one_copy_per_person_per_channel_and_never_to_the_actor() {
        let rules = vec![
            rule(
                &[NotifyEvent::StepEntered],
                &[],
                &["reviewers", "owners"],
                &["mail"],
            ),
            rule(
                &[NotifyEvent::StepEntered],
                &["prod-*"],
                &["group:dba"],
                &["mail", "siem"],
            ),
        ];
        let mut p = parties();
        p.actor = Some("bob@x".into());
        let got = route(&rules, &reach, &dir(), NotifyEvent::StepEntered, &p);
        assert_eq!(
            sent(&got),
            vec![
                ("mail".into(), Some("carol@x".into())),
                ("siem".into(), None),
            ]
        );
        // The webhook's one copy lists who it is for.
        assert_eq!(got[1].people, BTreeSet::from(["carol@x".to_string()]));
    }

    #[test]
    fn rule_32_resources_globs_fixed_destinations_and_admins() {
        let rules = vec![
            rule(
                &[NotifyEvent::RequestDenied],
                &["stage-*"],
                &["requester"],
                &["mail"],
            ),
            rule(
                &[NotifyEvent::RequestDenied],
                &["*-db"],
                &["admins"],
                &["mail", "mail:audit@x", "nowhere"],
            ),
        ];
        let got = route(
            &rules,
            &reach,
            &dir(),
            NotifyEvent::RequestDenied,
            &parties(),
        );
        assert_eq!(
            sent(&got),
            vec![
                ("mail".into(), Some("audit@x".into())),
                ("mail".into(), Some("root@x".into())),
            ]
        );
    }

    #[test]
    fn audiences_and_vias_parse() {
        assert_eq!(Audience::parse("owners"), Ok(Audience::Owners));
        assert!(matches!(
            Audience::parse("group:dba"),
            Ok(Audience::Principal(Principal::Group(_)))
        ));
        assert!(Audience::parse("app:deployer").is_err());
        assert_eq!(
            Via::parse("slack:#access"),
            Via {
                channel: "slack".into(),
                destination: Some("#access".into())
            }
        );
        for e in NotifyEvent::ALL {
            assert_eq!(NotifyEvent::parse(e.as_str()), Some(e));
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.as_str())
            );
        }
    }

    #[test]
    fn globs() {
        for (p, n, m) in [
            ("*", "anything", true),
            ("prod-*", "prod-db", true),
            ("prod-*", "stage-db", false),
            ("*-db", "prod-db", true),
            ("p*d*b", "prod-db", true),
            ("prod", "prod-db", false),
            ("", "", true),
            ("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaa", false),
        ] {
            assert_eq!(glob(p, n), m, "{p} {n}");
        }
    }
}
