//! Loading one bundle: files in, a compiled regorus engine out.

use std::collections::HashMap;
use std::io::Read;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use domain::Evaluation;
use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::{Map, Value};

use crate::PolicyError;

/// The most a bundle may hold, uncompressed, so that a stray archive cannot exhaust memory.
const MAX_BUNDLE_BYTES: u64 = 64 << 20;
/// How deep a directory bundle is walked.
const MAX_DEPTH: usize = 32;

/// One compiled bundle.
#[derive(Clone)]
pub struct Bundle {
    path: String,
    engine: regorus::Engine,
    /// The merged data document, also answered directly for queries that name data.
    data: Value,
    /// `(module name, package, source)` of each `.rego` file.
    modules: Vec<(String, String, String)>,
    pub revision: Option<String>,
    declared: Arc<RwLock<HashMap<String, bool>>>,
    limit: Duration,
}

/// The outcome of one `test_` rule.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// `data.package.test_name`.
    pub name: String,
    pub passed: bool,
    /// Why it did not pass: a runtime error or the value it had instead of `true`.
    pub detail: Option<String>,
    pub micros: u64,
}

/// A file of the bundle: its path inside the bundle (`/`-separated, no leading slash), the
/// name regorus reports it under, and its bytes.
struct Entry {
    rel: String,
    shown: String,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Manifest {
    roots: Option<Vec<String>>,
    revision: Option<String>,
    rego_v0: bool,
}

impl Bundle {
    /// Loads and compiles a bundle. Every problem found is returned, located.
    pub fn load(path: &Path, timeout: Duration) -> Result<Bundle, Vec<PolicyError>> {
        let shown = path.display().to_string();
        let at = |m: String| {
            vec![PolicyError {
                at: shown.clone(),
                message: m,
            }]
        };
        let meta =
            std::fs::metadata(path).map_err(|e| at(format!("cannot read the bundle: {e}")))?;
        let name = path.to_string_lossy();
        let entries = if meta.is_dir() {
            let mut out = vec![];
            let mut total = 0;
            walk(path, path, 0, &mut out, &mut total).map_err(at)?;
            out
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            read_tarball(path).map_err(at)?
        } else if name.ends_with(".rego") {
            let bytes = std::fs::read(path).map_err(|e| at(format!("cannot read: {e}")))?;
            vec![Entry {
                rel: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                shown: shown.clone(),
                bytes,
            }]
        } else {
            return Err(at(
                "a bundle is a directory, a .rego file or an OPA bundle .tar.gz".into(),
            ));
        };
        Bundle::compile(shown, entries, timeout)
    }

    fn compile(
        path: String,
        entries: Vec<Entry>,
        timeout: Duration,
    ) -> Result<Bundle, Vec<PolicyError>> {
        let mut errors = vec![];
        let mut manifest = Manifest::default();
        if let Some(m) = entries.iter().find(|e| e.rel == ".manifest") {
            match read_manifest(&m.bytes) {
                Ok(m) => manifest = m,
                Err(e) => errors.push(PolicyError {
                    at: m.shown.clone(),
                    message: e,
                }),
            }
        }
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(manifest.rego_v0);
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: timeout,
            check_interval: NonZeroU32::MIN.saturating_add(63),
        });
        let mut data = Value::Object(Map::new());
        let mut modules = vec![];
        for e in &entries {
            let file_name = e.rel.rsplit('/').next().unwrap_or(&e.rel);
            let located = |message: String| PolicyError {
                at: e.shown.clone(),
                message,
            };
            if e.rel.ends_with(".rego") {
                let Ok(text) = String::from_utf8(e.bytes.clone()) else {
                    errors.push(located("not UTF-8 text".into()));
                    continue;
                };
                match engine.add_policy(e.shown.clone(), text.clone()) {
                    Ok(package) => {
                        if let Err(m) = check_root(&manifest, &package_path(&package)) {
                            errors.push(located(format!("package {package} {m}")));
                        }
                        modules.push((e.shown.clone(), package, text));
                    }
                    Err(err) => errors.push(rego_error(&err.to_string(), &e.shown)),
                }
            } else if file_name == "data.json" {
                let doc: Value = match serde_json::from_slice(&e.bytes) {
                    Ok(v) => v,
                    Err(err) => {
                        errors.push(PolicyError {
                            at: format!("{}:{}:{}", e.shown, err.line(), err.column()),
                            message: format!("invalid JSON: {err}"),
                        });
                        continue;
                    }
                };
                let prefix: Vec<&str> = e
                    .rel
                    .strip_suffix("data.json")
                    .unwrap_or_default()
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Err(m) = data_roots(&manifest, &prefix, &doc) {
                    errors.push(located(m));
                }
                if let Err(m) = merge_at(&mut data, &prefix, doc) {
                    errors.push(located(m));
                }
            } else if file_name == "data.yaml" || file_name == "data.yml" {
                errors.push(located(
                    "YAML data is not supported; write it as data.json".into(),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if let Err(e) = engine.add_data(regorus::Value::from(data.clone())) {
            return Err(vec![PolicyError {
                at: path,
                message: format!("data: {e}"),
            }]);
        }
        // Analysis (scheduling, imports, functions) runs once here, so that its errors are
        // reported at load and every evaluation starts from a prepared engine: a clone of an
        // unprepared engine would redo the analysis on each evaluation.
        if let Err(e) = engine.eval_query("true".to_owned(), false) {
            return Err(vec![rego_error(&e.to_string(), &path)]);
        }
        Ok(Bundle {
            path,
            engine,
            data,
            modules,
            revision: manifest.revision,
            declared: Arc::default(),
            limit: timeout,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether `query` names a rule of this bundle or a value of its data.
    pub fn check_query(&self, query: &str) -> Result<(), String> {
        let Some(rest) = query.strip_prefix("data.") else {
            return Err(format!(
                "query {query:?} must be a rule path starting with \"data.\""
            ));
        };
        if self.modules.iter().any(|(_, p, _)| p == query) {
            return Err(format!(
                "query {query} names a package of {}; name a rule inside it",
                self.path
            ));
        }
        if self.declared(query) || self.data_at(rest).is_some() {
            Ok(())
        } else {
            Err(format!(
                "query {query} is not defined in bundle {} (no rule or data at that path)",
                self.path
            ))
        }
    }

    /// Whether a module declares a rule at `query` or below it (answers are cached: queries
    /// repeat on every evaluation).
    fn declared(&self, query: &str) -> bool {
        if let Some(known) = self
            .declared
            .read()
            .ok()
            .and_then(|m| m.get(query).copied())
        {
            return known;
        }
        let found = self.modules.iter().any(|(file, package, _)| {
            query
                .strip_prefix(package.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|rest| {
                    self.engine
                        .has_declared_rule_rooted_at(file, rest)
                        .unwrap_or(false)
                })
        });
        if let Ok(mut m) = self.declared.write()
            && m.len() < 10_000
        {
            m.insert(query.to_owned(), found);
        }
        found
    }

    fn data_at(&self, dotted: &str) -> Option<&Value> {
        dotted
            .split('.')
            .try_fold(&self.data, |v, k| v.as_object()?.get(k))
    }

    /// Evaluates `query` with `input`; undefined is `null`.
    pub fn eval(&self, query: &str, input: &Value) -> Evaluation {
        let started = started();
        let result = self.eval_inner(query, Some(input));
        Evaluation {
            result,
            micros: elapsed_micros(started),
        }
    }

    fn eval_inner(&self, query: &str, input: Option<&Value>) -> Result<Value, String> {
        if !self.declared(query) {
            // A query that names data (dynamic reviewers kept in data.json).
            let rest = query.strip_prefix("data.").unwrap_or(query);
            return self
                .data_at(rest)
                .cloned()
                .ok_or_else(|| format!("query {query} is not defined in bundle {}", self.path));
        }
        let mut engine = self.engine.clone();
        if let Some(i) = input {
            engine.set_input(regorus::Value::from(i.clone()));
        }
        let v = engine.eval_rule(query.to_owned()).map_err(|e| {
            let text = e.to_string();
            if text.contains("exceeded time limit") {
                format!(
                    "evaluation stopped at the time limit of {}ms",
                    self.limit.as_millis()
                )
            } else {
                one_line(&text)
            }
        })?;
        if v == regorus::Value::Undefined {
            return Ok(Value::Null);
        }
        serde_json::to_value(&v).map_err(|e| format!("result is not JSON: {e}"))
    }

    /// The bundle's `test_` rules, as `data.package.test_name`, in file order.
    pub fn tests(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for (file, package, text) in &self.modules {
            for line in text.lines() {
                let Some(rest) = line.trim_start().strip_prefix("test_") else {
                    continue;
                };
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let path = format!("{package}.test_{name}");
                let selector = format!("test_{name}");
                if !out.contains(&path)
                    && self
                        .engine
                        .has_declared_rule_rooted_at(file, &selector)
                        .unwrap_or(false)
                {
                    out.push(path);
                }
            }
        }
        out
    }

    /// Runs every `test_` rule, as `opa test` does: a test passes when it is `true`.
    pub fn run_tests(&self) -> Vec<TestResult> {
        self.tests()
            .into_iter()
            .map(|name| {
                let started = started();
                let r = self.eval_inner(&name, None);
                let micros = elapsed_micros(started);
                let (passed, detail) = match r {
                    Ok(Value::Bool(true)) => (true, None),
                    Ok(Value::Null) => (false, Some("undefined".to_owned())),
                    Ok(other) => (false, Some(format!("evaluated to {other}"))),
                    Err(e) => (false, Some(e)),
                };
                TestResult {
                    name,
                    passed,
                    detail,
                    micros,
                }
            })
            .collect()
    }
}

/// Measuring how long a policy took is not engine time; it never decides anything.
#[allow(clippy::disallowed_methods)]
fn started() -> std::time::Instant {
    std::time::Instant::now()
}

fn elapsed_micros(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<Entry>,
    total: &mut u64,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{} is nested too deeply", dir.display()));
    }
    let mut items: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    items.sort();
    for p in items {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_manifest = depth == 0 && name == ".manifest";
        if name.starts_with('.') && !is_manifest {
            continue;
        }
        let meta =
            std::fs::metadata(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        if meta.is_dir() {
            walk(root, &p, depth + 1, out, total)?;
            continue;
        }
        if !(is_manifest || name.ends_with(".rego") || name.starts_with("data.")) {
            continue;
        }
        *total += meta.len();
        if *total > MAX_BUNDLE_BYTES {
            return Err(format!(
                "the bundle is larger than {MAX_BUNDLE_BYTES} bytes"
            ));
        }
        let bytes = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let rel = p
            .strip_prefix(root)
            .unwrap_or(&p)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        out.push(Entry {
            rel,
            shown: p.display().to_string(),
            bytes,
        });
    }
    Ok(())
}

/// Reads an OPA bundle archive in memory; nothing is written to disk.
fn read_tarball(path: &Path) -> Result<Vec<Entry>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let gz = flate2::read::GzDecoder::new(file);
    let mut archive = tar::Archive::new(gz);
    let mut out = vec![];
    let mut total = 0;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar.gz archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt archive: {e}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let rel = {
            let p = entry.path().map_err(|e| format!("corrupt archive: {e}"))?;
            let text = p.to_string_lossy().into_owned();
            text.trim_start_matches("./")
                .trim_start_matches('/')
                .to_owned()
        };
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        if !(rel == ".manifest" || name.ends_with(".rego") || name.starts_with("data.")) {
            continue;
        }
        total += entry.size();
        if total > MAX_BUNDLE_BYTES {
            return Err(format!(
                "the bundle is larger than {MAX_BUNDLE_BYTES} bytes"
            ));
        }
        let mut bytes = vec![];
        (&mut entry)
            .take(MAX_BUNDLE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("corrupt archive at {rel}: {e}"))?;
        out.push(Entry {
            shown: format!("{}/{rel}", path.display()),
            rel,
            bytes,
        });
    }
    Ok(out)
}

fn read_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let roots = match v.get("roots") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|r| {
                    r.as_str()
                        .map(|s| s.trim_matches('/').to_owned())
                        .ok_or_else(|| format!("roots must be strings, got {r}"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(other) => return Err(format!("roots must be a list, got {other}")),
    };
    let rego_v0 = match v.get("rego_version") {
        None => false,
        Some(Value::Number(n)) if n.as_u64() == Some(0) => true,
        Some(Value::Number(n)) if n.as_u64() == Some(1) => false,
        Some(other) => return Err(format!("rego_version must be 0 or 1, got {other}")),
    };
    Ok(Manifest {
        roots,
        revision: v.get("revision").and_then(Value::as_str).map(str::to_owned),
        rego_v0,
    })
}

/// `data.a.b` as `["a", "b"]`.
fn package_path(package: &str) -> Vec<String> {
    package
        .strip_prefix("data.")
        .unwrap_or(package)
        .split('.')
        .map(str::to_owned)
        .collect()
}

/// Whether a path lies under one of the manifest's roots (every path does without roots).
fn check_root(m: &Manifest, path: &[String]) -> Result<(), String> {
    let Some(roots) = &m.roots else {
        return Ok(());
    };
    let inside = roots.iter().any(|r| {
        r.is_empty() || {
            let parts: Vec<&str> = r.split('/').collect();
            parts.len() <= path.len() && parts.iter().zip(path).all(|(a, b)| a == b)
        }
    });
    if inside {
        Ok(())
    } else {
        Err(format!(
            "is outside the bundle's roots [{}] (.manifest)",
            roots.join(", ")
        ))
    }
}

/// Every top-level key a data file adds must lie under a root.
fn data_roots(m: &Manifest, prefix: &[&str], doc: &Value) -> Result<(), String> {
    let base: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
    let keys: Vec<Vec<String>> = match doc.as_object() {
        Some(o) if !o.is_empty() => o
            .keys()
            .map(|k| base.iter().cloned().chain([k.clone()]).collect())
            .collect(),
        _ => vec![base],
    };
    for k in keys {
        check_root(m, &k).map_err(|e| format!("data at {} {e}", k.join(".")))?;
    }
    Ok(())
}

fn merge_at(data: &mut Value, prefix: &[&str], doc: Value) -> Result<(), String> {
    let mut at = data;
    for k in prefix {
        let Value::Object(o) = at else {
            return Err(format!("data at {} is not an object", prefix.join(".")));
        };
        at = o
            .entry((*k).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    merge(at, doc, &prefix.join("."))
}

fn merge(into: &mut Value, doc: Value, path: &str) -> Result<(), String> {
    match (into, doc) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v, &sub)?,
                    None => {
                        a.insert(k, v);
                    }
                }
            }
            Ok(())
        }
        (slot @ Value::Object(_), v) if slot.as_object().is_some_and(Map::is_empty) => {
            *slot = v;
            Ok(())
        }
        _ => Err(format!("data at {path} is defined twice")),
    }
}

/// A regorus error as one located line: `file:line:col: message`.
fn rego_error(text: &str, file: &str) -> PolicyError {
    let at = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("--> "))
        .map(str::to_owned)
        .unwrap_or_else(|| file.to_owned());
    let message = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.trim())
        .to_owned();
    PolicyError { at, message }
}

/// The `error: …` line of a regorus message (its source excerpt dropped), or the whole text.
fn one_line(text: &str) -> String {
    let msg = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned);
    match (
        msg,
        text.lines().find_map(|l| l.trim().strip_prefix("--> ")),
    ) {
        (Some(m), Some(at)) => format!("{m} (at {at})"),
        (Some(m), None) => m,
        (None, _) => text.trim().to_owned(),
    }
}
