//! The `request_people` index: for every request, one row per person who sees it without
//! being an admin, with whether that person may decide it now. Lists of people who are not
//! admins read these rows (through their indexes) instead of judging every request in memory,
//! so that a page costs the same with a thousand requests stored or a million.
//!
//! Who the people are is the domain's rule (`Request::audience`); this module only stores its
//! answer. The writer writes the rows of the requests a write group wrote in the group's
//! transaction, before it commits ([`write_latest`]), and [`backfill`] fills the rows of the
//! requests stored before the table existed, once, when the store opens.
//!
//! Rows are upserted, never deleted: a request's audience only grows (its requester, owners,
//! the people its steps name and the creating application are fixed when it is created;
//! assignments add people), which `crates/domain/tests/audience.rs` checks through every kind
//! of transition. An upsert touches only the rows whose state or `reviewable` changed, where
//! deleting and inserting every row would rewrite the table and its indexes on every decision.
//! Should a row ever outlive its person's place in the audience, the engine still judges each
//! listed request with `Request::visible_to` before showing it.

use domain::Request;

use crate::StoreError;
use crate::db::{Conn, Dialect, args};
use crate::writer::{bodies, insert_rows};

/// Writes the rows of the requests a write group wrote, each as its last write left it (a
/// request written by two jobs of the group appears twice).
pub(crate) async fn write_latest(
    conn: &mut Conn,
    mut requests: Vec<Request>,
) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::with_capacity(requests.len());
    requests.reverse();
    requests.retain(|r| seen.insert(r.id.clone()));
    write(conn, &requests).await
}

/// Writes the rows of these requests (each as it is now), a multi-row upsert per few hundred
/// rows (the writer's `insert_rows`), so that expiring a hundred thousand requests at once
/// stays a statement per few dozen requests.
pub(crate) async fn write(conn: &mut Conn, requests: &[Request]) -> Result<(), StoreError> {
    let rows: Vec<(&Request, String, bool)> = requests
        .iter()
        .flat_map(|r| {
            r.audience()
                .into_iter()
                .map(move |(person, reviewable)| (r, person, reviewable))
        })
        .collect();
    insert_rows(
        conn,
        &rows,
        (
            "INSERT INTO request_people
               (person, created_at, request_id, state, resource, reviewable) VALUES ",
            6,
            " ON CONFLICT (person, created_at, request_id) DO UPDATE
               SET state = excluded.state, reviewable = excluded.reviewable
               WHERE request_people.state <> excluded.state
                  OR request_people.reviewable <> excluded.reviewable",
        ),
        |(r, person, reviewable), a| {
            a.extend(args![
                person,
                r.created_at.millis(),
                &r.id,
                r.state.as_str(),
                &r.resource,
                i64::from(*reviewable),
            ]);
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// Requests read per transaction while backfilling.
const BACKFILL_BATCH: i64 = 2_000;

/// Fills `request_people` for the requests stored before it existed, if the migration that
/// made it left that chore (`store_chores`). Runs on the connection that ran the migrations,
/// before the writer starts, a batch of requests per transaction, each taking the writers'
/// turn (the chain head's lock) so that a replica already writing is not raced; rows are
/// upserted, so that replicas starting together may both run it. The chore is
/// done in Rust rather than in the migration's SQL because who sees a request is the
/// domain's rule (`Request::audience`: owners, reviewers, assignments, whether a person may
/// decide now), which SQL would have to repeat.
pub(crate) async fn backfill(conn: &mut Conn) -> Result<(), StoreError> {
    let chore = conn
        .row(
            "SELECT name FROM store_chores WHERE name = 'request_people'",
            vec![],
        )
        .await?;
    if chore.is_none() {
        return Ok(());
    }
    let mut after = String::new();
    let mut done = 0u64;
    loop {
        match batch(conn, &after).await {
            Ok((next, n)) => {
                done += n;
                match next {
                    Some(last) => after = last,
                    None => break,
                }
                if done.is_multiple_of(100_000) {
                    tracing::info!(requests = done, "filling the request_people index");
                }
            }
            Err(e) => {
                let _ = conn.exec("ROLLBACK", vec![]).await;
                conn.clear_poison();
                return Err(e);
            }
        }
    }
    if done > 0 {
        tracing::info!(requests = done, "filled the request_people index");
    }
    Ok(())
}

/// One transaction of [`backfill`]: the requests after `after` (by id). Returns the id to
/// continue after (`None` when this was the last batch, and the chore is then done) and how
/// many requests it wrote.
async fn batch(conn: &mut Conn, after: &str) -> Result<(Option<String>, u64), StoreError> {
    let lock = match conn.dialect() {
        Dialect::Sqlite => {
            conn.exec("BEGIN IMMEDIATE", vec![]).await?;
            "SELECT seq FROM chain_head WHERE id = 1"
        }
        Dialect::Postgres => {
            conn.exec("BEGIN", vec![]).await?;
            "SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE"
        }
    };
    conn.row(lock, vec![]).await?;
    // Another replica may have finished the chore meanwhile.
    let chore = conn
        .row(
            "SELECT name FROM store_chores WHERE name = 'request_people'",
            vec![],
        )
        .await?;
    let rows = if chore.is_some() {
        conn.rows(
            "SELECT body, id FROM requests WHERE id > $1 ORDER BY id LIMIT $2",
            args![after, BACKFILL_BATCH],
        )
        .await?
    } else {
        vec![]
    };
    let requests: Vec<Request> = bodies(&rows)?;
    write(conn, &requests).await?;
    let next = match rows.last() {
        Some(last) if rows.len() as i64 == BACKFILL_BATCH => Some(last.owned_text(1)?),
        _ => {
            conn.exec(
                "DELETE FROM store_chores WHERE name = 'request_people'",
                vec![],
            )
            .await?;
            None
        }
    };
    conn.exec("COMMIT", vec![]).await?;
    if conn.poisoned() {
        return Err(StoreError::Corrupt(
            "filling request_people failed to commit".into(),
        ));
    }
    Ok((next, rows.len() as u64))
}
