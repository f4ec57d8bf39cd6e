//! The engine's one error type. Surfaces map it to their own status codes.

use domain::DomainError;
use store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The object does not exist or the actor may not see it (404).
    #[error("{0} not found")]
    NotFound(String),
    /// A rule refused the change (422, 403 or 409 by kind).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A server this one depends on (a field's `options_from`) failed; the message says
    /// which and how, without credentials (502).
    #[error("{0}")]
    Upstream(String),
    /// The store failed; the details go to the log, not to the client (500).
    #[error("storage failure")]
    Store(#[from] StoreError),
}
