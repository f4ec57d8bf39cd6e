//! Opening a SQLite database: WAL, `synchronous = FULL`, one connection for the writer and a
//! small pool for reads.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use crate::StoreError;
use crate::db::{Conn, Pool};
use crate::sql::ensure_head;

fn migrator() -> Migrator {
    let step = crate::db::migration;
    Migrator::with_migrations(vec![
        step(
            1,
            "init",
            include_str!("../migrations/sqlite/0001_init.sql"),
        ),
        step(
            2,
            "indexes",
            include_str!("../migrations/sqlite/0002_indexes.sql"),
        ),
        step(
            3,
            "callbacks",
            include_str!("../migrations/sqlite/0003_callbacks.sql"),
        ),
        step(
            4,
            "sessions",
            include_str!("../migrations/sqlite/0004_sessions.sql"),
        ),
        step(
            5,
            "replicas",
            include_str!("../migrations/sqlite/0005_replicas.sql"),
        ),
        step(
            6,
            "lists",
            include_str!("../migrations/sqlite/0006_lists.sql"),
        ),
        step(
            7,
            "slack",
            include_str!("../migrations/sqlite/0007_slack.sql"),
        ),
        step(
            8,
            "slack_interactions",
            include_str!("../migrations/sqlite/0008_slack_interactions.sql"),
        ),
        step(
            9,
            "runs",
            include_str!("../migrations/sqlite/0009_runs.sql"),
        ),
    ])
}

/// Opens the database file at `path` (creating it if needed) and runs its migrations: the
/// writer's connection and a pool of `pool` connections for reads.
pub(crate) async fn connect(path: &str, pool: u32) -> Result<(Conn, Pool), StoreError> {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        // 64 MiB of page cache per connection (the default is 2 MiB): expiring or listing
        // many grants otherwise re-reads the same pages from the OS.
        .pragma("cache_size", "-65536")
        // Reads through a memory map rather than a system call per page.
        .pragma("mmap_size", "268435456");
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    migrator().run(&mut conn).await?;
    let mut conn = Conn::sqlite(conn);
    ensure_head(&mut conn).await?;
    crate::people::backfill(&mut conn).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(pool.clamp(1, 64))
        .connect_with(opts)
        .await?;
    Ok((conn, Pool::Sqlite(read)))
}
