//! Parsing: HCL text → evaluated values → raw structs, with locations kept for every block and
//! attribute so that later errors can name a line.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hcl::Value;
use hcl::edit::{Span as _, parser, structure};
use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use serde::de::{DeserializeOwned, IntoDeserializer};

use crate::raw::*;
use crate::{Config, ConfigError, ConfigErrors};

/// Where a block stands, and the line of each of its attributes.
#[derive(Debug, Clone)]
pub(crate) struct Loc {
    pub file: PathBuf,
    pub line: usize,
    pub block: String,
    pub dir: PathBuf,
    pub attrs: BTreeMap<String, usize>,
}

impl Loc {
    /// An error on the block, or on one of its attributes if `attr` names one.
    pub fn err(&self, attr: Option<&str>, message: impl Into<String>) -> ConfigError {
        let line = attr
            .and_then(|a| self.attrs.get(a))
            .copied()
            .unwrap_or(self.line);
        ConfigError {
            file: self.file.clone(),
            line,
            block: self.block.clone(),
            message: message.into(),
        }
    }
}

#[derive(Default)]
pub(crate) struct RawConfig {
    pub server: Option<(Loc, RawServer)>,
    pub oidc: Option<(Loc, RawOidc)>,
    pub audit: Option<(Loc, RawAudit)>,
    pub users: Vec<(Loc, String, RawUser)>,
    pub groups: Vec<(Loc, String, RawGroup)>,
    pub apps: Vec<(Loc, String, RawApp)>,
    pub connectors: Vec<(Loc, String, RawConnector)>,
    pub resources: Vec<(Loc, String, RawResource)>,
    pub channels: Vec<(Loc, String, RawChannel)>,
    pub notify: Vec<(Loc, String, RawNotify)>,
    pub runbooks: Vec<(Loc, String, RawRunbook)>,
    pub action_stores: Vec<(Loc, String, RawActionStore)>,
}

thread_local! {
    /// The directory of the file being evaluated, for `file("relative/path")`. HCL functions
    /// are plain function pointers, so the base directory cannot be captured.
    static BASE_DIR: RefCell<PathBuf> = RefCell::new(PathBuf::from("."));
}

fn env_fn(args: FuncArgs) -> Result<Value, String> {
    let name = args[0].as_str().unwrap_or_default();
    std::env::var(name)
        .map(Value::from)
        .map_err(|_| format!("environment variable {name:?} is not set"))
}

fn file_fn(args: FuncArgs) -> Result<Value, String> {
    let p = args[0].as_str().unwrap_or_default();
    let path = BASE_DIR.with(|d| d.borrow().join(p));
    std::fs::read_to_string(&path)
        .map(|s| Value::from(s.trim_end_matches(['\n', '\r']).to_owned()))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn context() -> Context<'static> {
    let mut ctx = Context::new();
    ctx.declare_func(
        "env",
        FuncDef::builder().param(ParamType::String).build(env_fn),
    );
    ctx.declare_func(
        "file",
        FuncDef::builder().param(ParamType::String).build(file_fn),
    );
    ctx
}

fn line_of(src: &str, byte: usize) -> usize {
    src[..byte.min(src.len())].matches('\n').count() + 1
}

/// Loads and resolves configuration files. Every problem found is returned, not just the
/// first.
pub fn load_files(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let mut raw = RawConfig::default();
    let mut errors = vec![];
    for path in paths {
        match std::fs::read_to_string(path) {
            Ok(src) => parse_into(path, &src, &mut raw, &mut errors),
            Err(e) => errors.push(ConfigError {
                file: path.clone(),
                line: 0,
                block: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if paths.is_empty() {
        errors.push(ConfigError {
            file: PathBuf::from("-"),
            line: 0,
            block: String::new(),
            message: "no configuration file given".into(),
        });
    }
    finish(raw, errors)
}

/// Loads configuration from text, as if it were the file `name` (tests and examples).
pub fn load_str(name: &str, src: &str) -> Result<Config, ConfigErrors> {
    let mut raw = RawConfig::default();
    let mut errors = vec![];
    parse_into(Path::new(name), src, &mut raw, &mut errors);
    finish(raw, errors)
}

fn finish(raw: RawConfig, mut errors: Vec<ConfigError>) -> Result<Config, ConfigErrors> {
    let config = crate::resolve::resolve(raw, &mut errors);
    if errors.is_empty() {
        Ok(config)
    } else {
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        errors.dedup();
        Err(ConfigErrors(errors))
    }
}

fn parse_into(path: &Path, src: &str, raw: &mut RawConfig, errors: &mut Vec<ConfigError>) {
    // `file()` paths and exec commands are relative to the file's directory.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let body = match parser::parse_body(src) {
        Ok(b) => b,
        Err(e) => {
            errors.push(ConfigError {
                file: path.to_owned(),
                line: e.location().line(),
                block: String::new(),
                message: format!("syntax error: {}", e.message()),
            });
            return;
        }
    };
    BASE_DIR.with(|d| *d.borrow_mut() = dir.clone());
    let ctx = context();
    for st in body.iter() {
        let line = line_of(src, st.span().map_or(0, |s| s.start));
        let block = match st {
            structure::Structure::Block(b) => b,
            structure::Structure::Attribute(a) => {
                errors.push(ConfigError {
                    file: path.to_owned(),
                    line,
                    block: String::new(),
                    message: format!(
                        "unexpected top-level attribute {:?}; settings go inside a block",
                        a.key.as_str()
                    ),
                });
                continue;
            }
        };
        let kind = block.ident.as_str();
        let labels: Vec<String> = block.labels.iter().map(|l| l.as_str().to_owned()).collect();
        let title = std::iter::once(kind.to_owned())
            .chain(labels.iter().map(|l| format!("{l:?}")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut loc = Loc {
            file: path.to_owned(),
            line,
            block: title,
            dir: dir.clone(),
            attrs: BTreeMap::new(),
        };
        let want_labels = if matches!(kind, "server" | "oidc" | "audit") {
            0
        } else {
            1
        };
        if ![
            "server",
            "oidc",
            "audit",
            "user",
            "group",
            "app",
            "connector",
            "resource",
            "channel",
            "notify",
            "runbook",
            "action_store",
        ]
        .contains(&kind)
        {
            errors.push(loc.err(
                None,
                format!(
                    "unknown block type {kind:?}; expected server, oidc, audit, user, group, \
                     app, connector, resource, channel, notify, runbook or action_store"
                ),
            ));
            continue;
        }
        if labels.len() != want_labels {
            errors.push(loc.err(
                None,
                if want_labels == 0 {
                    format!("a {kind} block takes no label")
                } else {
                    format!("a {kind} block takes exactly one label: {kind} \"name\" {{ … }}")
                },
            ));
            continue;
        }
        let Some(value) = evaluate(src, block, &ctx, &mut loc, errors) else {
            continue;
        };
        let name = labels.into_iter().next().unwrap_or_default();
        match kind {
            "server" => {
                if let Some(v) = typed(value, &loc, errors) {
                    if raw.server.is_some() {
                        errors.push(loc.err(None, "only one server block is allowed"));
                    } else {
                        raw.server = Some((loc, v));
                    }
                }
            }
            "oidc" => {
                if let Some(v) = typed(value, &loc, errors) {
                    if raw.oidc.is_some() {
                        errors.push(loc.err(None, "only one oidc block is allowed"));
                    } else {
                        raw.oidc = Some((loc, v));
                    }
                }
            }
            "audit" => {
                if let Some(v) = typed(value, &loc, errors) {
                    if raw.audit.is_some() {
                        errors.push(loc.err(None, "only one audit block is allowed"));
                    } else {
                        raw.audit = Some((loc, v));
                    }
                }
            }
            "user" => {
                if let Some(v) = typed(value, &loc, errors) {
                    raw.users.push((loc, name, v));
                }
            }
            "group" => {
                if let Some(v) = typed(value, &loc, errors) {
                    raw.groups.push((loc, name, v));
                }
            }
            "app" => {
                if let Some(v) = typed(value, &loc, errors) {
                    raw.apps.push((loc, name, v));
                }
            }
            "connector" => {
                if let Some(v) = typed(value, &loc, errors) {
                    raw.connectors.push((loc, name, v));
                }
            }
            "channel" => {
                if let Some(v) = typed(value, &loc, errors) {
                    raw.channels.push((loc, name, v));
                }
            }
            "notify" => {
                if let Some(v) = typed(value, &loc, errors) {
                    raw.notify.push((loc, name, v));
                }
            }
            "runbook" => {
                if let Some(v) = typed(value, &loc, errors) {
                    raw.runbooks.push((loc, name, v));
                }
            }
            "action_store" => {
                if let Some(v) = typed(value, &loc, errors) {
                    raw.action_stores.push((loc, name, v));
                }
            }
            _ => {
                if let Some(v) = typed(value, &loc, errors) {
                    raw.resources.push((loc, name, v));
                }
            }
        }
    }
}

/// Evaluates a block's body (functions such as `env()` run here), recording the line of each
/// attribute. Evaluation errors are reported on the attribute's line.
fn evaluate(
    src: &str,
    block: &structure::Block,
    ctx: &Context<'_>,
    loc: &mut Loc,
    errors: &mut Vec<ConfigError>,
) -> Option<Value> {
    let mut evaluated = vec![];
    let mut ok = true;
    for st in block.body.iter() {
        let line = line_of(src, st.span().map_or(0, |s| s.start));
        let key = match st {
            structure::Structure::Attribute(a) => a.key.as_str().to_owned(),
            structure::Structure::Block(b) => b.ident.as_str().to_owned(),
        };
        loc.attrs.entry(key.clone()).or_insert(line);
        let hst: hcl::Structure = st.clone().into();
        match hst.evaluate(ctx) {
            Ok(v) => evaluated.push(v),
            Err(e) => {
                ok = false;
                errors.push(loc.err(Some(&key), format!("{key}: {e}")));
            }
        }
    }
    if !ok {
        return None;
    }
    match hcl::from_body::<Value>(hcl::Body::from_iter(evaluated)) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(loc.err(None, e.to_string()));
            None
        }
    }
}

/// Deserialises an evaluated block into its raw struct. Going through `Value` keeps types
/// strict (a number is not silently a string), and the path names the failing key.
fn typed<T: DeserializeOwned>(value: Value, loc: &Loc, errors: &mut Vec<ConfigError>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.into_deserializer()) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            let first = path.split(['.', '[']).next().unwrap_or("").to_owned();
            let message = if path == "." || path.is_empty() {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            };
            errors.push(loc.err(Some(&first), message));
            None
        }
    }
}
