//! The audit log's hash chain, which lives in the `audit` crate so that the CLI can recompute
//! it without depending on the store.

pub use audit::chain::*;
