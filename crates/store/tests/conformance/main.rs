//! The store conformance suite (issue 14 item 1): one contract, checked against every backend.
//!
//! Each check is an `async fn(&Db)`: it opens one or more store handles on a fresh database
//! (several handles on one database stand for several replicas), drives them only through the
//! `store::Store` and `store::Tx` traits, and asserts what the contract promises. The macro
//! at the bottom runs every check twice:
//!
//! - `sqlite::<check>` on a new SQLite file, always;
//! - `postgres::<check>` on a new database `cs_conf_<hex>` created on the server
//!   `COUNTERSIGN_TEST_PG_URL` names (its role needs `CREATEDB`) and dropped afterwards.
//!   These are `#[ignore]`d so that a plain `cargo test` needs no server, and fail rather
//!   than skip when run with `--include-ignored` and no server is named.
//!
//! ```text
//! cargo test -p countersign-store --test conformance
//! export COUNTERSIGN_TEST_PG_URL=$(bash .ci/postgres.sh /tmp/pg 54329 | tail -n1)
//! cargo test -p countersign-store --test conformance -- --include-ignored
//! ```
//!
//! Every time is fixed (`fixtures::at`); no check reads a clock or sleeps.

mod atomic;
mod chain;
mod claims;
mod fixtures;
mod harness;
mod reopen;
mod replicas;
mod rows;

pub use harness::Db;

/// Instantiates each check once per backend.
macro_rules! conformance {
    ($($module:ident :: $check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let db = crate::Db::sqlite().await;
                    crate::$module::$check(&db).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs PostgreSQL (COUNTERSIGN_TEST_PG_URL)"]
                async fn $check() {
                    let db = crate::Db::postgres().await;
                    crate::$module::$check(&db).await;
                }
            )*
        }
    };
}

conformance! {
    atomic::job_writes_commit_together,
    atomic::refused_job_leaves_nothing,
    atomic::tx_reads_its_own_writes,
    atomic::later_jobs_of_a_group_read_earlier_writes,
    chain::chain_gapless_under_concurrent_jobs,
    chain::chain_gapless_across_two_handles,
    chain::one_outcome_under_concurrent_decisions,
    chain::one_outcome_across_two_handles,
    claims::claim_has_one_winner_across_handles,
    claims::claim_lapses_and_is_taken_over,
    claims::claim_needs_a_due_job,
    claims::refused_claim_is_not_kept,
    claims::claimed_jobs_leave_due_jobs_and_next_due_reports_expiry,
    claims::delivery_claim_has_one_winner_and_lapses,
    claims::opening_a_handle_keeps_other_claims,
    claims::claim_names_its_holder,
    claims::renewal_extends_live_claims_of_its_holder,
    claims::lapsed_holder_cannot_complete,
    claims::unschedule_spares_another_holders_live_claim,
    claims::per_receiver_limit_counts_across_handles,
    claims::held_job_is_taken_over_only_when_its_claim_lapses,
    rows::idempotency_keys_per_caller,
    rows::sessions_tokens_and_secrets,
    rows::deliveries_of_a_request,
    rows::reconcile_candidates,
    rows::counts,
    rows::list_requests_filters_and_pages,
    rows::list_grants_filters,
    rows::slack_links_and_messages,
    rows::slack_interactions_are_stored_once,
    rows::runs_checkpoint_and_list,
    rows::reads_with_nul_find_nothing,
    replicas::handles_see_each_others_commits,
    replicas::idempotency_key_has_one_creator_across_handles,
    replicas::sign_in_taken_once_across_handles,
    reopen::reopen_keeps_everything,
}
