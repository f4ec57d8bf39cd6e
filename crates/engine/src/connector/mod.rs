//! Connectors: what gives and takes back access on a real system.
//!
//! The contract ([`Connector`]) has three calls. `grant` and `revoke` must be idempotent and
//! are keyed by the grant id: the worker records every call in the outbox before it runs and
//! repeats it after a crash or a failure (rule 17), so the same call may arrive twice. `check`
//! answers whether a grant's access is in effect, where the target can tell; the
//! reconciliation sweep uses it to find drift.
//!
//! Every connector gets the same [`Call`]: the grant, the action and a stable message id. Its
//! error text is recorded in the grant's history, so it must never hold a secret.

mod exec;
mod postgres;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use config::{Config, ConnectorDef};
use domain::{Grant, Timestamp};

pub use exec::describe;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Grant,
    Revoke,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Grant => "grant",
            Action::Revoke => "revoke",
        }
    }
}

/// One call to a connector.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    pub action: Action,
    pub grant: &'a Grant,
    /// Stable across retries of the same call, different for a repair: receivers may use it
    /// to drop duplicates.
    pub id: String,
    pub now: Timestamp,
}

impl<'a> Call<'a> {
    /// The call of the grant's own lifecycle (activation or revocation).
    pub fn lifecycle(action: Action, grant: &'a Grant, now: Timestamp) -> Call<'a> {
        Call {
            action,
            grant,
            id: format!("msg_{}_{}", grant.id, action.as_str()),
            now,
        }
    }
}

#[async_trait]
pub trait Connector: Send + Sync {
    /// Gives or takes back the grant's access. Idempotent.
    async fn call(&self, call: &Call<'_>) -> Result<(), String>;
    /// Whether the grant's access is in effect; `Ok(None)` when the target cannot tell.
    async fn check(&self, grant: &Grant, now: Timestamp) -> Result<Option<bool>, String>;
    /// Whether [`Connector::check`] can answer at all.
    fn can_check(&self) -> bool;
}

/// The connectors of a configuration, built once per (re)load.
#[derive(Clone, Default)]
pub struct Connectors(BTreeMap<String, Arc<dyn Connector>>);

impl Connectors {
    pub fn build(config: &Config) -> Connectors {
        install_tls_provider();
        let mut out = BTreeMap::new();
        let guard = crate::outbound::Guard::new(config.server.outbound_allow.clone());
        for (name, def) in &config.connectors {
            let c: Arc<dyn Connector> = match def {
                ConnectorDef::Exec(c) => Arc::new(exec::Exec(c.clone())),
                ConnectorDef::Webhook(c) => {
                    Arc::new(webhook::Webhook::new(c.clone(), guard.clone()))
                }
                ConnectorDef::Postgres(c) => {
                    Arc::new(postgres::Postgres::new(c.clone(), &config.directory))
                }
            };
            out.insert(name.clone(), c);
        }
        Connectors(out)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Connector>> {
        self.0.get(name)
    }
}

/// Makes *ring* the process's TLS provider (reqwest and sqlx are built without one). Calling
/// it again does nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Cuts an error text to `max` bytes on a character boundary.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
