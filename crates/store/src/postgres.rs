//! Opening a PostgreSQL database, for several replicas on one database: a pool of connections
//! shared by reads and the writer (which takes one per group), and migrations run under
//! PostgreSQL's advisory lock, so that of replicas starting together one migrates and the
//! others wait for it.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::StoreError;
use crate::db::{Conn, Pool};
use crate::sql::ensure_head;

fn migrator() -> Migrator {
    let step = crate::db::migration;
    let mut m = Migrator::with_migrations(vec![
        step(
            1,
            "init",
            include_str!("../migrations/postgres/0001_init.sql"),
        ),
        step(
            2,
            "lists",
            include_str!("../migrations/postgres/0002_lists.sql"),
        ),
        step(
            3,
            "slack",
            include_str!("../migrations/postgres/0003_slack.sql"),
        ),
        step(
            4,
            "slack_interactions",
            include_str!("../migrations/postgres/0004_slack_interactions.sql"),
        ),
        step(
            5,
            "runs",
            include_str!("../migrations/postgres/0005_runs.sql"),
        ),
    ]);
    // `pg_advisory_lock` around the migrations (sqlx's default, said here because replicas
    // rely on it).
    m.set_locking(true);
    m
}

/// Connects to the database `url` names (`sslmode` and the other libpq parameters are read
/// from it) and runs its migrations: a connection and the pool it came from.
pub(crate) async fn connect(url: &str, pool: u32) -> Result<(Conn, Pool), StoreError> {
    let connect = PgConnectOptions::from_str(url)?.application_name("countersign");
    let pool = PgPoolOptions::new()
        .max_connections(pool.clamp(3, 256))
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect)
        .await?;
    let mut first = pool.acquire().await?;
    migrator().run(&mut *first).await?;
    let mut conn = Conn::postgres(first);
    ensure_head(&mut conn).await?;
    crate::people::backfill(&mut conn).await?;
    Ok((conn, Pool::Postgres(pool)))
}
