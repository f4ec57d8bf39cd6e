//! The audit log's hash chain and its signed checkpoints, as pure functions.
//!
//! [`chain`] is the hash every event carries and the [`chain::Verifier`] that recomputes it;
//! [`key`] reads and makes the Ed25519 keys that sign checkpoints (with `ring`);
//! [`checkpoint`] is the signed line `(event count, head hash, time)` the server writes outside
//! the database; [`check`] checks a chain against those lines and says what is wrong.
//!
//! Both the server (which appends to the chain and signs checkpoints) and the CLI (which
//! recomputes the chain from the events the API returns) use this crate, so it does no IO,
//! reads no clock and depends on no other crate of the workspace.

pub mod chain;
pub mod check;
pub mod checkpoint;
pub mod key;

pub use check::{ChainCheck, Finding, Report};
pub use checkpoint::{Checkpoint, Refused};
pub use key::{KeyError, PublicKey, SigningKey};
