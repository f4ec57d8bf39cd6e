//! Rego policies, compiled once with regorus and evaluated in-process (PRODUCT.md rules 28–31).
//!
//! A [`Bundle`] is what one `bundle = "…"` names: a directory of `.rego` and `data.json` files
//! (data nested by directory, as OPA does), a single `.rego` file, or an OPA bundle `.tar.gz`
//! whose `.manifest` roots are honoured. [`Policies`] holds every bundle a configuration
//! references, checked against the queries that use them, and implements the domain's
//! [`PolicyEval`]: each evaluation runs on a clone of the compiled engine (cheap: modules and
//! data are shared) under a time limit, so an evaluation never blocks the engine for long and
//! never leaks state into the next one.

mod bundle;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use domain::{Evaluation, PolicyEval, PolicyRef};
use serde_json::Value;

pub use bundle::{Bundle, TestResult};

/// The default limit of one evaluation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// A problem with a bundle or a query that uses it, located where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// `file:line:column` of a Rego error, or the file of a data or manifest error, or the
    /// configuration location of a reference.
    pub at: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.at, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}

/// Every bundle a configuration uses, compiled.
#[derive(Clone, Default)]
pub struct Policies {
    bundles: BTreeMap<String, Arc<Bundle>>,
    timeout: Duration,
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("bundles", &self.bundles.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Policies {
    /// No bundles: every evaluation fails closed.
    pub fn empty() -> Policies {
        Policies {
            bundles: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Compiles every bundle the references name and checks that each query is defined.
    /// `refs` pairs each reference with where it is written (`file:line: in resource "x"`),
    /// which locates an undefined query. Every error is collected.
    pub fn load<'a>(
        refs: impl IntoIterator<Item = (&'a PolicyRef, String)>,
        timeout: Duration,
    ) -> Result<Policies, Vec<PolicyError>> {
        let mut bundles: BTreeMap<String, Option<Arc<Bundle>>> = BTreeMap::new();
        let mut errors = vec![];
        for (r, at) in refs {
            let b = bundles.entry(r.bundle.clone()).or_insert_with(|| {
                match Bundle::load(Path::new(&r.bundle), timeout) {
                    Ok(b) => Some(Arc::new(b)),
                    Err(es) => {
                        errors.extend(es);
                        None
                    }
                }
            });
            if let Some(b) = b
                && let Err(e) = b.check_query(&r.query)
            {
                errors.push(PolicyError { at, message: e });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Policies {
            bundles: bundles
                .into_iter()
                .filter_map(|(k, v)| v.map(|b| (k, b)))
                .collect(),
            timeout,
        })
    }

    pub fn bundle(&self, path: &str) -> Option<&Arc<Bundle>> {
        self.bundles.get(path)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl PolicyEval for Policies {
    fn eval(&self, policy: &PolicyRef, input: &Value) -> Evaluation {
        match self.bundles.get(&policy.bundle) {
            Some(b) => b.eval(&policy.query, input),
            None => Evaluation {
                result: Err(format!("bundle {} is not loaded", policy.bundle)),
                micros: 0,
            },
        }
    }
}
