//! The two databases behind one small interface, so that the store's logic (the writer, its
//! transactions and every read) is written once.
//!
//! Statements are written with numbered parameters (`$1`, `$2`, …), which both PostgreSQL and
//! SQLite accept, and bind [`Arg`]s; rows come back as [`Row`]s of [`Val`]s. The store keeps
//! domain objects as JSON text with a few indexed columns beside them, so integers and text
//! are all it ever binds or reads. Where the dialects differ (a lock, an index hint), the
//! caller asks [`Dialect`].

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Column, Row as _, TypeInfo, ValueRef};

use crate::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound parameter.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}
impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Self {
        Arg::Text(v.clone())
    }
}

/// `[a.into(), b.into(), …]` as a `Vec<Arg>`.
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$($crate::db::Arg::from($a)),*] };
}
pub(crate) use args;

/// A value read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Text(String),
}

/// One row, its columns in the order the statement selects them.
#[derive(Debug)]
pub(crate) struct Row(Vec<Val>);

impl Row {
    pub(crate) fn val(&self, i: usize) -> Result<&Val, StoreError> {
        self.at(i)
    }

    fn at(&self, i: usize) -> Result<&Val, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} missing")))
    }

    pub(crate) fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is null")))
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.at(i)? {
            Val::Null => Ok(None),
            Val::Int(v) => Ok(Some(*v)),
            Val::Text(_) => Err(StoreError::Corrupt(format!("column {i} is not a number"))),
        }
    }

    pub(crate) fn text(&self, i: usize) -> Result<&str, StoreError> {
        self.opt_text(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is null")))
    }

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<&str>, StoreError> {
        match self.at(i)? {
            Val::Null => Ok(None),
            Val::Text(v) => Ok(Some(v)),
            Val::Int(_) => Err(StoreError::Corrupt(format!("column {i} is not text"))),
        }
    }

    pub(crate) fn owned_text(&self, i: usize) -> Result<String, StoreError> {
        self.text(i).map(str::to_owned)
    }

    pub(crate) fn opt_owned_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.opt_text(i).map(|v| v.map(str::to_owned))
    }
}

fn sqlite_row(row: &SqliteRow) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(row.columns().len());
    for i in 0..row.columns().len() {
        let raw = row.try_get_raw(i)?;
        // SQLite's type is the value's own storage class.
        let v = if raw.is_null() {
            Val::Null
        } else if raw.type_info().name() == "INTEGER" {
            Val::Int(row.try_get(i)?)
        } else {
            Val::Text(row.try_get(i)?)
        };
        out.push(v);
    }
    Ok(Row(out))
}

fn pg_row(row: &PgRow) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(row.columns().len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = match col.type_info().name() {
            "INT8" => row.try_get::<Option<i64>, _>(i)?.map(Val::Int),
            "INT4" => row
                .try_get::<Option<i32>, _>(i)?
                .map(|v| Val::Int(v.into())),
            "INT2" => row
                .try_get::<Option<i16>, _>(i)?
                .map(|v| Val::Int(v.into())),
            "BOOL" => row
                .try_get::<Option<bool>, _>(i)?
                .map(|v| Val::Int(v.into())),
            _ => row.try_get::<Option<String>, _>(i)?.map(Val::Text),
        };
        out.push(v.unwrap_or(Val::Null));
    }
    Ok(Row(out))
}

/// A query of `$sql` with `$args` bound, for whichever database it is run on.
macro_rules! bound {
    ($sql:expr, $args:expr) => {{
        let mut q = sqlx::query(AssertSqlSafe($sql));
        for a in $args {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
            };
        }
        q
    }};
}

/// A pool of connections for reads (and, on PostgreSQL, for the writer's connection).
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    pub(crate) async fn rows(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, StoreError> {
        if self.dialect() == Dialect::Postgres && matches_nothing(&args) {
            return Ok(vec![]);
        }
        match self {
            Pool::Sqlite(p) => bound!(sqlite_sql(sql), args)
                .fetch_all(p)
                .await?
                .iter()
                .map(sqlite_row)
                .collect(),
            Pool::Postgres(p) => bound!(sql.to_owned(), args)
                .fetch_all(p)
                .await?
                .iter()
                .map(pg_row)
                .collect(),
        }
    }

    pub(crate) async fn row(&self, sql: &str, args: Vec<Arg>) -> Result<Option<Row>, StoreError> {
        Ok(self.rows(sql, args).await?.into_iter().next())
    }

    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// The writer's own connection. It remembers whether a statement failed since the last
/// [`Conn::clear_poison`]: PostgreSQL then refuses everything until `ROLLBACK`, and answers
/// `COMMIT` with a rollback rather than an error.
#[derive(Debug)]
pub(crate) struct Conn {
    inner: Inner,
    poisoned: bool,
}

#[derive(Debug)]
enum Inner {
    Sqlite(SqliteConnection),
    Postgres(PoolConnection<sqlx::Postgres>),
}

impl Conn {
    pub(crate) fn sqlite(c: SqliteConnection) -> Conn {
        Conn {
            inner: Inner::Sqlite(c),
            poisoned: false,
        }
    }

    pub(crate) fn postgres(c: PoolConnection<sqlx::Postgres>) -> Conn {
        Conn {
            inner: Inner::Postgres(c),
            poisoned: false,
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::Sqlite(_) => Dialect::Sqlite,
            Inner::Postgres(_) => Dialect::Postgres,
        }
    }

    pub(crate) fn poisoned(&self) -> bool {
        self.poisoned
    }

    pub(crate) fn clear_poison(&mut self) {
        self.poisoned = false;
    }

    pub(crate) async fn rows(&mut self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, StoreError> {
        if self.dialect() == Dialect::Postgres && matches_nothing(&args) {
            return Ok(vec![]);
        }
        let r = match &mut self.inner {
            Inner::Sqlite(c) => bound!(sqlite_sql(sql), args)
                .fetch_all(&mut *c)
                .await
                .map_err(StoreError::from)
                .and_then(|rows| rows.iter().map(sqlite_row).collect()),
            Inner::Postgres(c) => bound!(sql.to_owned(), args)
                .fetch_all(&mut **c)
                .await
                .map_err(StoreError::from)
                .and_then(|rows| rows.iter().map(pg_row).collect()),
        };
        self.poisoned |= r.is_err();
        r
    }

    pub(crate) async fn row(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.rows(sql, args).await?.into_iter().next())
    }

    /// Runs a statement; returns the rows it changed.
    pub(crate) async fn exec(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
        let r = match &mut self.inner {
            Inner::Sqlite(c) => bound!(sqlite_sql(sql), args)
                .execute(&mut *c)
                .await
                .map(|d| d.rows_affected()),
            Inner::Postgres(c) => bound!(sql.to_owned(), args)
                .execute(&mut **c)
                .await
                .map(|d| d.rows_affected()),
        };
        self.poisoned |= r.is_err();
        Ok(r?)
    }

    pub(crate) async fn close(self) {
        use sqlx::Connection;
        match self.inner {
            Inner::Sqlite(c) => {
                let _ = c.close().await;
            }
            // Back to its pool, which is closed with the store.
            Inner::Postgres(c) => drop(c),
        }
    }
}

/// A statement as SQLite is best given it: with anonymous `?` parameters when its `$1`, `$2`,
/// … appear once each and in order (every multi-row statement), numbered ones otherwise. For
/// each bound value sqlx asks SQLite the parameter's name, which SQLite finds by walking its
/// list of named parameters: with `$N` names a statement of thousands of parameters costs
/// quadratic time to bind (half the time of a burst of expiries went there); anonymous
/// parameters have no names to walk.
fn sqlite_sql(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut next = 1u64;
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if end > start {
                if sql[start..end].parse::<u64>().ok() != Some(next) {
                    return sql.to_owned();
                }
                next += 1;
                out.push_str(&sql[last..i]);
                out.push('?');
                last = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&sql[last..]);
    out
}

/// Whether a read's parameters hold a NUL character. PostgreSQL's text cannot hold one (it
/// refuses the parameter), so nothing stored can equal such a value: a read that looks for it
/// finds nothing, as it does on SQLite, instead of failing. Only reads: every read of the
/// store compares text parameters for equality (ids, names, filters) or with values it read
/// itself, and writes refuse control characters before they get here (`domain::limits`).
fn matches_nothing(args: &[Arg]) -> bool {
    args.iter()
        .any(|a| matches!(a, Arg::Text(Some(t)) if t.contains('\0')))
}

/// One embedded migration, for either database's list.
pub(crate) fn migration(
    version: i64,
    name: &'static str,
    sql: &'static str,
) -> sqlx::migrate::Migration {
    sqlx::migrate::Migration::new(
        version,
        std::borrow::Cow::Borrowed(name),
        sqlx::migrate::MigrationType::Simple,
        sqlx::SqlStr::from_static(sql),
        false,
    )
}

/// `$first, $first+1, …` for `n` parameters, comma-separated.
pub(crate) fn params(first: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 5);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('$');
        s.push_str(&(first + i).to_string());
    }
    s
}

/// `head (…), (…), … tail` for `rows` rows of `width` parameters, numbered from `$1`.
pub(crate) fn values_sql(head: &str, width: usize, rows: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + rows * width * 5 + tail.len());
    sql.push_str(head);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&params(1 + r * width, width));
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_gets_anonymous_parameters_only_when_they_come_in_order() {
        assert_eq!(
            sqlite_sql("INSERT INTO t VALUES ($1, $2), ($3, $4)"),
            "INSERT INTO t VALUES (?, ?), (?, ?)"
        );
        let reused = "SELECT 1 WHERE a <= $1 AND (b IS NULL OR b <= $1) LIMIT $2";
        assert_eq!(sqlite_sql(reused), reused);
        let swapped = "SELECT 1 WHERE a = $2 AND b = $1";
        assert_eq!(sqlite_sql(swapped), swapped);
        assert_eq!(sqlite_sql("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn values_are_numbered_across_rows() {
        assert_eq!(
            values_sql(
                "INSERT INTO t (a, b) VALUES ",
                2,
                2,
                " ON CONFLICT DO NOTHING"
            ),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(params(3, 3), "$3, $4, $5");
    }
}
