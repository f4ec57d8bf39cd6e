//! Black-box tests of the real server: the `countersign` library's `open` and `run` serving the
//! real router on a loopback port (on a manual clock, driven over HTTP), and the `countersign`
//! binary itself as a server killed and restarted, and as a CI client waiting for an outcome.
//!
//! Each test is arrange / act / assert and names the rule of PRODUCT.md it proves (`rule_N_…`
//! for §3, `sec_5_…` and `sec_7_…` for the API and security sections, `cli_…` for the CLI).
//!
//! Each test's server has a database of its own (`helpers::database`): a SQLite file by
//! default, a fresh PostgreSQL database with `COUNTERSIGN_TEST_STORE=postgres` and
//! `COUNTERSIGN_TEST_PG_URL`. The same tests run on both stores.

mod actions;
mod apps;
mod break_glass;
mod browser;
mod callbacks;
mod checkpoints;
mod cli;
mod connections;
mod connector;
mod copy;
mod graphql;
mod helpers;
mod lifecycle;
mod lists;
mod metrics;
mod notifications;
mod openapi;
mod policies;
mod portal;
mod portal_e2e;
mod replicas;
mod rules;
mod runs;
mod security;
mod slack;
mod surface;
