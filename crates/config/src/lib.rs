//! Countersign's configuration: HCL files in, resolved definitions out.
//!
//! Loading happens in two levels (as ripgrep turns low-level flags into high-level
//! arguments): [`raw`] structs mirror the syntax and deny unknown keys; [`resolve`] turns them
//! into a [`Config`] whose references (users, groups, connectors) are checked, durations parsed
//! and bounded, and reviewer lists expanded into domain types. Every error carries the file,
//! the line and the block it is about, and loading goes on after an error so that one run of
//! `countersign check` reports them all.
//!
//! This crate reads the configuration files and the files and environment variables they name
//! with `file()` and `env()`; it does not open databases, sockets or policy bundles.

mod load;
pub mod raw;
mod resolve;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use domain::{Directory, ResourceDef, Span};

pub use load::{load_files, load_str};

/// One problem in the configuration, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    /// The block the error is about, as written: `resource "prod-db"`.
    pub block: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if !self.block.is_empty() {
            write!(f, "in {}: ", self.block)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: String,
    pub public_url: String,
    pub database: String,
}

/// How a connector gives and takes back access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorDef {
    /// Runs a program for grant and another for revoke, with a JSON description of the grant
    /// on stdin; exit status 0 is success.
    Exec(ExecConnector),
}

#[derive(Clone, PartialEq, Eq)]
pub struct ExecConnector {
    pub grant_command: Vec<String>,
    pub revoke_command: Vec<String>,
    pub timeout: Span,
    /// Activation attempts before the grant is marked failed (revocation never gives up).
    pub max_attempts: u32,
    /// Extra environment for the program; values may be secrets and are never printed.
    pub env: BTreeMap<String, String>,
    /// The directory of the configuration file, where relative commands are resolved.
    pub dir: PathBuf,
}

impl fmt::Debug for ExecConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecConnector")
            .field("grant_command", &self.grant_command)
            .field("revoke_command", &self.revoke_command)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A resolved, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub directory: Directory,
    pub connectors: BTreeMap<String, ConnectorDef>,
    pub resources: BTreeMap<String, ResourceDef>,
}
