//! Why a transition was refused. The three kinds are what callers branch on (each surface maps
//! them to its own status); the message is written for the person who asked.

/// A refused transition. Nothing changed when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The input is well formed but breaks a rule of the resource (422).
    #[error("{0}")]
    Invalid(String),
    /// The actor may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The object is not in a state that allows this (409).
    #[error("{0}")]
    Conflict(String),
}

pub(crate) fn invalid(msg: impl Into<String>) -> DomainError {
    DomainError::Invalid(msg.into())
}
pub(crate) fn forbidden(msg: impl Into<String>) -> DomainError {
    DomainError::Forbidden(msg.into())
}
pub(crate) fn conflict(msg: impl Into<String>) -> DomainError {
    DomainError::Conflict(msg.into())
}
