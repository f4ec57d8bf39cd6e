//! Gated runbooks (issue 17): Kubiya's version-3 workflows, and the action stores whose
//! programs their action steps run.
//!
//! A runbook is a YAML file, read with `serde-saphyr` (a maintained YAML parser that keeps
//! every value's line), in Kubiya's format with the steps under `steps:`:
//!
//! ```yaml
//! version: 3
//! type: conversation
//! steps:
//!   - id: sources
//!     type: action
//!     store: news
//!     name: get_all_sources
//!     parameters: {}
//!   - id: source
//!     type: input
//!     value_type: enum
//!     prompt: What news channel do you wanna read?
//!     possible_values: ${sources}
//! ```
//!
//! Everything `countersign check` can know is checked here, each mistake reported at its line
//! of the YAML file: unknown keys, a step's keys for another type, a `${id}` reference to a
//! later or unknown step, an action missing from its store, duplicate ids.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use domain::{ResourceDef, Span};
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::ConfigError;
use crate::load::Loc;
use crate::raw::{RawActionStore, RawRunbook};

/// The largest runbook file read.
pub const MAX_FILE: u64 = 256 * 1024;
/// The most steps a runbook may have.
pub const MAX_STEPS: usize = 200;
/// An action's timeout when its store names none, and the longest allowed.
pub const DEFAULT_TIMEOUT: Span = Span::from_secs(30);
pub const MAX_TIMEOUT: Span = Span::from_secs(600);

/// An `action_store` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionStore {
    pub name: String,
    pub actions: BTreeMap<String, StoreAction>,
}

/// One action of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAction {
    /// The resource whose grant the runner must hold for the action to run; `None`: ungated.
    pub resource: Option<String>,
    /// The program and its arguments, run in `dir`, as the exec connector's are.
    pub command: Vec<String>,
    pub timeout: Span,
    pub description: String,
    /// The directory of the configuration file: where the program runs.
    pub dir: PathBuf,
}

/// A `runbook` block and the workflow its file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runbook {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    /// The file as read: what a run keeps, so that it runs the version it started with.
    pub source: String,
    pub steps: Vec<RunbookStep>,
}

pub use domain::run::{RunbookStep, StepKind, ValueType, reference, references};

/// The file, as the YAML says it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    version: Spanned<Value>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    steps: Spanned<Vec<Spanned<RawStep>>>,
}

/// A step with every key any type may have; which belong to its type is checked after.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    store: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    parameters: Option<Spanned<Value>>,
    value_type: Option<Spanned<String>>,
    prompt: Option<Spanned<String>>,
    possible_values: Option<Spanned<Value>>,
}

/// An error at a line of the runbook's file.
fn at(file: &std::path::Path, block: &str, line: u64, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        line: usize::try_from(line).unwrap_or(0),
        block: block.to_owned(),
        message: message.into(),
    }
}

/// Resolves the `action_store` blocks: each action's command (run in the file's directory),
/// timeout, and resource, which must exist.
pub(crate) fn stores(
    raw: Vec<(Loc, String, RawActionStore)>,
    resources: &BTreeMap<String, ResourceDef>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, ActionStore> {
    let mut out = BTreeMap::new();
    for (loc, name, store) in raw {
        if out.contains_key(&name) {
            errors.push(loc.err(None, format!("action_store {name:?} is defined twice")));
            continue;
        }
        let mut actions = BTreeMap::new();
        for (action, a) in store.action {
            let key = Some("action");
            if a.command.is_empty() || a.command[0].trim().is_empty() {
                errors.push(loc.err(key, format!("action {action:?}: command needs a program")));
                continue;
            }
            if let Some(r) = &a.resource
                && !resources.contains_key(r)
            {
                errors.push(loc.err(key, format!("action {action:?}: unknown resource {r:?}")));
            }
            let timeout = match a.timeout.as_deref().map(Span::parse) {
                None => DEFAULT_TIMEOUT,
                Some(Ok(t)) if t <= MAX_TIMEOUT && t.secs() > 0 => t,
                Some(Ok(_)) => {
                    errors.push(loc.err(
                        key,
                        format!("action {action:?}: timeout must be between 1s and {MAX_TIMEOUT}"),
                    ));
                    DEFAULT_TIMEOUT
                }
                Some(Err(e)) => {
                    errors.push(loc.err(key, format!("action {action:?}: timeout: {e}")));
                    DEFAULT_TIMEOUT
                }
            };
            actions.insert(
                action,
                StoreAction {
                    resource: a.resource,
                    command: a.command,
                    timeout,
                    description: a.description,
                    dir: loc.dir.clone(),
                },
            );
        }
        out.insert(name.clone(), ActionStore { name, actions });
    }
    out
}

/// Reads and checks one `runbook` block's file. Every mistake is reported at its line; the
/// runbook is returned only when it has none.
pub(crate) fn runbook(
    loc: &Loc,
    name: String,
    raw: RawRunbook,
    stores: &BTreeMap<String, ActionStore>,
    resources: &BTreeMap<String, ResourceDef>,
    errors: &mut Vec<ConfigError>,
) -> Option<Runbook> {
    let file = loc.dir.join(&raw.file);
    let block = format!("runbook {name:?}");
    let before = errors.len();
    // Read through a limit, whatever the file says its length is (a pipe says 0).
    let read = std::fs::File::open(&file).and_then(|f| {
        use std::io::Read;
        let mut text = String::new();
        f.take(MAX_FILE + 1).read_to_string(&mut text)?;
        Ok(text)
    });
    let source = match read {
        Ok(s) if s.len() as u64 > MAX_FILE => {
            errors.push(loc.err(
                Some("file"),
                format!("{} is larger than {MAX_FILE} bytes", file.display()),
            ));
            return None;
        }
        Ok(s) => s,
        Err(e) => {
            errors.push(loc.err(Some("file"), format!("cannot read {}: {e}", file.display())));
            return None;
        }
    };
    let doc: RawDoc = match serde_saphyr::from_str(&source) {
        Ok(d) => d,
        Err(e) => {
            let line = e.location().map_or(0, |l| l.line());
            let message = e.without_snippet().to_string();
            // The parser's message may end with its own "at line …"; the line is ours.
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            errors.push(at(&file, &block, line, message));
            return None;
        }
    };
    let line = |s: &serde_saphyr::Location| s.line();
    if doc.version.value != 3 {
        errors.push(at(
            &file,
            &block,
            line(&doc.version.referenced),
            format!("version must be 3, not {}", doc.version.value),
        ));
    }
    if doc.kind.value != "conversation" {
        errors.push(at(
            &file,
            &block,
            line(&doc.kind.referenced),
            format!("type must be conversation, not {:?}", doc.kind.value),
        ));
    }
    if doc.steps.value.is_empty() || doc.steps.value.len() > MAX_STEPS {
        errors.push(at(
            &file,
            &block,
            line(&doc.steps.referenced),
            format!("a runbook has 1 to {MAX_STEPS} steps"),
        ));
    }
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut steps = vec![];
    for step in doc.steps.value {
        let s = step.value;
        let id = s.id.value.trim().to_owned();
        let err = |l: &serde_saphyr::Location, m: String| {
            at(&file, &block, line(l), format!("step {id:?}: {m}"))
        };
        if id.is_empty() || id.chars().count() > 100 || id.contains(['{', '}']) {
            errors.push(err(
                &s.id.referenced,
                "an id is 1 to 100 characters, without braces".into(),
            ));
        }
        if seen.contains(&id) {
            errors.push(err(&s.id.referenced, "another step has this id".into()));
        }
        // A reference names an earlier step: the ones seen so far.
        let check_refs = |v: &Spanned<Value>, errors: &mut Vec<ConfigError>| {
            for r in references(&v.value) {
                if !seen.contains(r) {
                    let why = if r == id {
                        "its own output"
                    } else {
                        "a later or unknown step"
                    };
                    errors.push(err(&v.referenced, format!("${{{r}}} refers to {why}")));
                }
            }
        };
        // A key of another type of step, reported at its own line.
        let allowed: &[&str] = match s.kind.value.as_str() {
            "action" => &["store", "name", "parameters"],
            "input" => &["value_type", "prompt", "possible_values"],
            "message" => &["prompt"],
            _ => &[],
        };
        let keys = [
            ("store", s.store.as_ref().map(|v| &v.referenced)),
            ("name", s.name.as_ref().map(|v| &v.referenced)),
            ("parameters", s.parameters.as_ref().map(|v| &v.referenced)),
            ("value_type", s.value_type.as_ref().map(|v| &v.referenced)),
            ("prompt", s.prompt.as_ref().map(|v| &v.referenced)),
            (
                "possible_values",
                s.possible_values.as_ref().map(|v| &v.referenced),
            ),
        ];
        if !allowed.is_empty() {
            for (key, at) in keys {
                if let Some(l) = at.filter(|_| !allowed.contains(&key)) {
                    errors.push(err(
                        l,
                        format!("{key} is not a key of a {} step", s.kind.value),
                    ));
                }
            }
        }
        let kind = match s.kind.value.as_str() {
            "action" => {
                let (Some(store), Some(action)) = (&s.store, &s.name) else {
                    errors.push(err(
                        &s.kind.referenced,
                        "an action step needs store and name".into(),
                    ));
                    seen.insert(id);
                    continue;
                };
                let found = stores
                    .get(&store.value)
                    .map(|st| st.actions.get(&action.value));
                let resource = found.flatten().and_then(|a| a.resource.clone());
                match found {
                    None => errors.push(err(
                        &store.referenced,
                        format!("no action_store {:?}", store.value),
                    )),
                    Some(None) => errors.push(err(
                        &action.referenced,
                        format!(
                            "action_store {:?} has no action {:?}",
                            store.value, action.value
                        ),
                    )),
                    Some(Some(a)) => {
                        // Rule 15 through the runbook: "approve entire workflow" covers every
                        // action of it only if each action's resource is part of it.
                        if let Some(r) = a.resource.as_ref().and_then(|r| resources.get(r))
                            && r.part_of.as_deref() != Some(name.as_str())
                        {
                            errors.push(err(
                                &action.referenced,
                                format!(
                                    "the resource {:?} of {}.{} must say part_of = {name:?}, so that approving the entire workflow covers every action of it",
                                    r.name, store.value, action.value
                                ),
                            ));
                        }
                    }
                }
                let parameters = match &s.parameters {
                    Some(p) => {
                        check_refs(p, errors);
                        if !(p.value.is_object() || reference(&p.value).is_some()) {
                            errors.push(err(
                                &p.referenced,
                                "parameters must be an object or a ${id} reference".into(),
                            ));
                        }
                        p.value.clone()
                    }
                    None => Value::Object(Default::default()),
                };
                StepKind::Action {
                    store: store.value.clone(),
                    name: action.value.clone(),
                    parameters,
                    resource,
                }
            }
            "input" => {
                let value_type = match s.value_type.as_ref().map(|v| v.value.as_str()) {
                    Some("enum") => ValueType::Enum,
                    Some("string") => ValueType::String,
                    Some("int") => ValueType::Int,
                    Some("bool") => ValueType::Bool,
                    other => {
                        let l = s
                            .value_type
                            .as_ref()
                            .map_or(&s.kind.referenced, |v| &v.referenced);
                        errors.push(err(
                            l,
                            format!("value_type must be enum, string, int or bool, not {other:?}"),
                        ));
                        seen.insert(id);
                        continue;
                    }
                };
                if let Some(p) = &s.possible_values {
                    check_refs(p, errors);
                    if !(p.value.is_array() || reference(&p.value).is_some()) {
                        errors.push(err(
                            &p.referenced,
                            "possible_values must be a list or a ${id} reference".into(),
                        ));
                    }
                } else if value_type == ValueType::Enum {
                    errors.push(err(
                        &s.kind.referenced,
                        "an enum input needs possible_values".into(),
                    ));
                }
                StepKind::Input {
                    value_type,
                    prompt: s.prompt.map(|p| p.value).unwrap_or_default(),
                    possible_values: s.possible_values.map(|p| p.value),
                }
            }
            "message" => StepKind::Message {
                prompt: s.prompt.map(|p| p.value).unwrap_or_default(),
            },
            other => {
                errors.push(err(
                    &s.kind.referenced,
                    format!("type must be action, input or message, not {other:?}"),
                ));
                seen.insert(id);
                continue;
            }
        };
        seen.insert(id.clone());
        steps.push(RunbookStep { id, kind });
    }
    (errors.len() == before).then(|| Runbook {
        name,
        description: doc.description.unwrap_or(raw.description),
        file,
        source,
        steps,
    })
}
