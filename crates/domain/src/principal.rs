//! Principals (users, groups, apps) and the directory that resolves a group to its members.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Who can be named in a reviewer list, an owner list or an assignment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Principal {
    /// A person, named by their email address.
    User(String),
    /// `group:<name>`: satisfied by any one of its members.
    Group(String),
    /// `app:<name>`: an application acting through the API.
    App(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid principal {0:?}: write a user's email, group:<name> or app:<name>")]
pub struct ParsePrincipalError(String);

impl Principal {
    pub fn parse(text: &str) -> Result<Principal, ParsePrincipalError> {
        let bad = || ParsePrincipalError(text.to_owned());
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 256
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@+".contains(c))
        };
        if let Some(g) = text.strip_prefix("group:") {
            return if name_ok(g) {
                Ok(Principal::Group(g.to_owned()))
            } else {
                Err(bad())
            };
        }
        if let Some(a) = text.strip_prefix("app:") {
            return if name_ok(a) {
                Ok(Principal::App(a.to_owned()))
            } else {
                Err(bad())
            };
        }
        if name_ok(text) && text.contains('@') {
            Ok(Principal::User(text.to_owned()))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(u) => f.write_str(u),
            Principal::Group(g) => write!(f, "group:{g}"),
            Principal::App(a) => write!(f, "app:{a}"),
        }
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Principal {
    type Error = ParsePrincipalError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Principal::parse(&s)
    }
}

/// A configured user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserDef {
    pub groups: BTreeSet<String>,
    pub admin: bool,
    /// Free-form attributes (`db_user = "alice_ro"`), read by connectors and policies.
    pub attributes: BTreeMap<String, String>,
}

/// A configured application (rule 21): it asks for decisions through the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppDef {
    /// `request_approval`: create requests, and read, update and cancel its own.
    pub request_approval: bool,
    /// `admin`: what an admin person may do, except reviewing.
    pub admin: bool,
}

/// The users, groups and applications of the configuration, with membership resolved both
/// ways.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    users: BTreeMap<String, UserDef>,
    members: BTreeMap<String, BTreeSet<String>>,
    apps: BTreeMap<String, AppDef>,
}

impl Directory {
    /// Builds the directory. A user's `groups` and a group's `members` are two ways of writing
    /// the same membership; both are honoured.
    pub fn new(
        users: BTreeMap<String, UserDef>,
        groups: BTreeMap<String, BTreeSet<String>>,
    ) -> Directory {
        let mut users = users;
        let mut members = groups;
        for (user, def) in &users {
            for g in &def.groups {
                members.entry(g.clone()).or_default().insert(user.clone());
            }
        }
        for (g, ms) in &members {
            for m in ms {
                if let Some(u) = users.get_mut(m) {
                    u.groups.insert(g.clone());
                }
            }
        }
        Directory {
            users,
            members,
            apps: BTreeMap::new(),
        }
    }

    /// Adds the configured applications, by name (without `app:`).
    pub fn with_apps(mut self, apps: BTreeMap<String, AppDef>) -> Directory {
        self.apps = apps;
        self
    }

    /// An application, by principal id (`app:deployer`).
    pub fn app(&self, id: &str) -> Option<&AppDef> {
        self.apps.get(id.strip_prefix("app:")?)
    }

    pub fn user(&self, email: &str) -> Option<&UserDef> {
        self.users.get(email)
    }
    pub fn users(&self) -> impl Iterator<Item = (&String, &UserDef)> {
        self.users.iter()
    }
    /// The names of the groups (without `group:`), in order.
    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.members.keys()
    }

    /// The people a principal stands for: a user is themself, a group is its members, an app
    /// is nobody (applications never review).
    pub fn people(&self, p: &Principal) -> BTreeSet<String> {
        match p {
            Principal::User(u) if self.users.contains_key(u) => BTreeSet::from([u.clone()]),
            Principal::User(_) | Principal::App(_) => BTreeSet::new(),
            Principal::Group(g) => self.members.get(g).cloned().unwrap_or_default(),
        }
    }

    /// Whether a user holds a credential: membership of the group of that name, or the
    /// `admin` role.
    pub fn holds(&self, user: &str, credential: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.groups.contains(credential) || (credential == "admin" && u.admin))
    }

    /// Whether a principal names something the configuration knows.
    pub fn knows(&self, p: &Principal) -> bool {
        match p {
            Principal::User(u) => self.users.contains_key(u),
            Principal::Group(g) => self.members.contains_key(g),
            Principal::App(_) => false,
        }
    }

    /// The acting identity of a configured user (`alice@example.com`) or application
    /// (`app:deployer`).
    pub fn actor(&self, subject: &str) -> Option<Actor> {
        if let Some(a) = self.app(subject) {
            return Some(Actor {
                id: subject.to_owned(),
                groups: BTreeSet::new(),
                admin: a.admin,
                app: true,
            });
        }
        self.users.get(subject).map(|u| Actor {
            id: subject.to_owned(),
            groups: u.groups.clone(),
            admin: u.admin,
            app: false,
        })
    }
}

/// Who is doing something, as far as the rules care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub id: String,
    pub groups: BTreeSet<String>,
    pub admin: bool,
    /// An application (`app:<name>`), never a person: it cannot review.
    pub app: bool,
}

impl Actor {
    /// Whether this actor is one of the people a principal stands for.
    pub fn is(&self, p: &Principal) -> bool {
        match p {
            Principal::User(u) => *u == self.id,
            Principal::Group(g) => self.groups.contains(g),
            Principal::App(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_round_trip() {
        for s in ["alice@example.com", "group:dba", "app:deployer"] {
            assert_eq!(Principal::parse(s).unwrap().to_string(), s);
        }
        for bad in ["alice", "group:", "app:a b", "", "group:x;drop"] {
            assert!(Principal::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn membership_is_resolved_both_ways() {
        let users = BTreeMap::from([
            (
                "a@x.io".to_owned(),
                UserDef {
                    groups: ["dba".to_owned()].into(),
                    ..UserDef::default()
                },
            ),
            ("b@x.io".to_owned(), UserDef::default()),
        ]);
        let groups = BTreeMap::from([("dba".to_owned(), BTreeSet::from(["b@x.io".to_owned()]))]);
        let d = Directory::new(users, groups);
        let dba = d.people(&Principal::Group("dba".into()));
        assert_eq!(dba.into_iter().collect::<Vec<_>>(), ["a@x.io", "b@x.io"]);
        assert!(d.actor("b@x.io").unwrap().groups.contains("dba"));
    }
}
