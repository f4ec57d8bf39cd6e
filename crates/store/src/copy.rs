//! `countersign store copy`: moves an installation from one database to another (SQLite to
//! PostgreSQL, or back), every table row for row, so that the audit chain is the same chain
//! (same sequence numbers, bodies and hashes) and verifies on the copy.
//!
//! The destination must be empty (freshly migrated). The copy is one transaction on the
//! destination: it lands whole or not at all. Claims are not copied: a job or delivery that
//! was being run is due again on the copy. The source should not be written meanwhile (stop
//! the server first); the copy reads it page by page.

use crate::db::{Arg, Conn, Pool, Row, Val, args, values_sql};
use crate::{StoreError, connect};

/// A column's type, so that a null is bound with the right type on PostgreSQL.
#[derive(Clone, Copy)]
enum Ty {
    Int,
    Text,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Ty)],
    /// The primary key's columns, by which the source is read in pages.
    key: &'static [&'static str],
    /// Columns written as null whatever the source holds (claims).
    cleared: &'static [&'static str],
}

use Ty::{Int, Text};

const TABLES: &[Table] = &[
    Table {
        name: "requests",
        columns: &[
            ("id", Text),
            ("resource", Text),
            ("requester", Text),
            ("state", Text),
            ("created_at", Int),
            ("body", Text),
        ],
        key: &["id"],
        cleared: &[],
    },
    // Who sees each request (lists, issue 14 item 3): copied rather than filled again when
    // the copy first opens.
    Table {
        name: "request_people",
        columns: &[
            ("person", Text),
            ("created_at", Int),
            ("request_id", Text),
            ("state", Text),
            ("resource", Text),
            ("reviewable", Int),
        ],
        key: &["person", "created_at", "request_id"],
        cleared: &[],
    },
    Table {
        name: "grants",
        columns: &[
            ("id", Text),
            ("request_id", Text),
            ("subject", Text),
            ("resource", Text),
            ("workflow", Text),
            ("state", Text),
            ("created_at", Int),
            ("body", Text),
        ],
        key: &["id"],
        cleared: &[],
    },
    Table {
        name: "events",
        columns: &[
            ("seq", Int),
            ("at", Int),
            ("kind", Text),
            ("request_id", Text),
            ("grant_id", Text),
            ("body", Text),
            ("prev_hash", Text),
            ("hash", Text),
        ],
        key: &["seq"],
        cleared: &[],
    },
    Table {
        name: "jobs",
        columns: &[
            ("kind", Text),
            ("key", Text),
            ("due_at", Int),
            ("claimed_until", Int),
            ("claimed_by", Text),
        ],
        key: &["kind", "key"],
        cleared: &["claimed_until", "claimed_by"],
    },
    Table {
        name: "tokens",
        columns: &[("hash", Text), ("subject", Text), ("created_at", Int)],
        key: &["hash"],
        cleared: &[],
    },
    Table {
        name: "slack_links",
        columns: &[("account", Text), ("person", Text), ("linked_at", Int)],
        key: &["account"],
        cleared: &[],
    },
    Table {
        name: "slack_messages",
        columns: &[
            ("request_id", Text),
            ("channel", Text),
            ("ts", Text),
            ("posted_at", Int),
        ],
        key: &["request_id", "channel", "ts"],
        cleared: &[],
    },
    Table {
        name: "slack_interactions",
        columns: &[("key", Text), ("payload", Text), ("received_at", Int)],
        key: &["key"],
        cleared: &[],
    },
    Table {
        name: "runs",
        columns: &[
            ("id", Text),
            ("runbook", Text),
            ("runner", Text),
            ("state", Text),
            ("created_at", Int),
            ("body", Text),
        ],
        key: &["id"],
        cleared: &[],
    },
    Table {
        name: "callback_secrets",
        columns: &[("request_id", Text), ("secret", Text)],
        key: &["request_id"],
        cleared: &[],
    },
    Table {
        name: "deliveries",
        columns: &[
            ("id", Text),
            ("request_id", Text),
            ("lane", Text),
            ("state", Text),
            ("next_at", Int),
            ("claimed_until", Int),
            ("claimed_by", Text),
            ("created_at", Int),
            ("body", Text),
        ],
        key: &["id"],
        cleared: &["claimed_until", "claimed_by"],
    },
    Table {
        name: "idempotency",
        columns: &[
            ("subject", Text),
            ("key", Text),
            ("body_hash", Text),
            ("request_id", Text),
            ("response", Text),
            ("expires_at", Int),
            ("in_flight_until", Int),
        ],
        key: &["subject", "key"],
        cleared: &["in_flight_until"],
    },
    Table {
        name: "sessions",
        columns: &[
            ("hash", Text),
            ("subject", Text),
            ("csrf", Text),
            ("data", Text),
            ("created_at", Int),
            ("expires_at", Int),
        ],
        key: &["hash"],
        cleared: &[],
    },
];

/// Rows read from the source per page (and written per statement: 9 columns × 500 rows stays
/// under SQLite's 32,766 parameters).
const PAGE: usize = 500;

/// What a copy moved: rows per table, in copy order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64)>,
    /// The head of the audit chain on the copy.
    pub head: crate::chain::Head,
    /// Events of the copy whose hash chain was checked after the commit, read back from the
    /// destination.
    pub verified: u64,
}

/// Copies every row of the database `from` into the empty database `to`.
pub async fn copy(from: &str, to: &str) -> Result<CopyReport, StoreError> {
    let (_, source) = connect(from, 2).await?;
    let (mut dest, dest_pool) = connect(to, 2).await?;
    let mut result = copy_all(&source, &mut dest).await;
    dest.close().await;
    if let Ok(report) = &mut result {
        report.verified = verify(&dest_pool, &report.head).await?;
    }
    source.close().await;
    dest_pool.close().await;
    result
}

/// Walks the copy's audit chain from the first event and checks that it ends at `head`.
async fn verify(pool: &Pool, head: &crate::chain::Head) -> Result<u64, StoreError> {
    let mut v = crate::chain::Verifier::default();
    let mut after = 0i64;
    loop {
        let rows = pool
            .rows(
                "SELECT seq, at, body, prev_hash, hash FROM events WHERE seq > $1
                 ORDER BY seq LIMIT $2",
                args![after, PAGE as i64],
            )
            .await?;
        for r in &rows {
            let e = crate::chain::StoredEvent {
                seq: r.int(0)?,
                at: r.int(1)?,
                body: r.owned_text(2)?,
                prev_hash: r.owned_text(3)?,
                hash: r.owned_text(4)?,
            };
            v.check(&e).map_err(|b| {
                StoreError::Corrupt(format!(
                    "the copy's audit chain breaks at event {}: {}",
                    b.seq, b.why
                ))
            })?;
            after = e.seq;
        }
        if rows.len() < PAGE {
            break;
        }
    }
    if after != head.seq || v.head() != head.hash {
        return Err(StoreError::Corrupt(format!(
            "the copy's audit chain ends at event {after}, not at the recorded head {}",
            head.seq
        )));
    }
    Ok(v.checked)
}

async fn copy_all(source: &Pool, dest: &mut Conn) -> Result<CopyReport, StoreError> {
    for t in TABLES {
        let any = dest
            .row(&format!("SELECT 1 FROM {} LIMIT 1", t.name), vec![])
            .await?;
        if any.is_some() {
            return Err(StoreError::Corrupt(format!(
                "the destination already holds data (table {}); copy into an empty database",
                t.name
            )));
        }
    }
    dest.exec("BEGIN", vec![]).await?;
    let copied = copy_tables(source, dest).await;
    match copied {
        Ok(report) if !dest.poisoned() => {
            dest.exec("COMMIT", vec![]).await?;
            Ok(report)
        }
        Ok(_) => {
            let _ = dest.exec("ROLLBACK", vec![]).await;
            Err(StoreError::Corrupt("a statement of the copy failed".into()))
        }
        Err(e) => {
            let _ = dest.exec("ROLLBACK", vec![]).await;
            Err(e)
        }
    }
}

async fn copy_tables(source: &Pool, dest: &mut Conn) -> Result<CopyReport, StoreError> {
    let mut report = CopyReport::default();
    for t in TABLES {
        report
            .tables
            .push((t.name, copy_table(source, dest, t).await?));
    }
    // The chain head the source recorded (its events are copied as they are).
    let head = source
        .row("SELECT seq, hash FROM chain_head WHERE id = 1", vec![])
        .await?
        .ok_or_else(|| StoreError::Corrupt("the source has no chain head".into()))?;
    report.head = crate::chain::Head {
        seq: head.int(0)?,
        hash: head.owned_text(1)?,
    };
    dest.exec(
        "UPDATE chain_head SET seq = $1, hash = $2, version = version + 1 WHERE id = 1",
        args![report.head.seq, &report.head.hash],
    )
    .await?;
    Ok(report)
}

async fn copy_table(source: &Pool, dest: &mut Conn, t: &Table) -> Result<u64, StoreError> {
    let cols: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
    let list = cols.join(", ");
    let keys = t.key.join(", ");
    let key_at: Vec<usize> = t
        .key
        .iter()
        .map(|k| cols.iter().position(|c| c == k).unwrap_or(0))
        .collect();
    let insert = format!("INSERT INTO {} ({list}) VALUES ", t.name);
    let mut after: Option<Vec<Arg>> = None;
    let mut n = 0u64;
    loop {
        let (sql, a) = match &after {
            None => (
                format!("SELECT {list} FROM {} ORDER BY {keys} LIMIT $1", t.name),
                args![PAGE as i64],
            ),
            Some(last) => {
                let marks = crate::db::params(1, last.len());
                let mut a = last.clone();
                a.push(Arg::from(PAGE as i64));
                (
                    format!(
                        "SELECT {list} FROM {} WHERE ({keys}) > ({marks})
                         ORDER BY {keys} LIMIT ${}",
                        t.name,
                        last.len() + 1
                    ),
                    a,
                )
            }
        };
        let rows = source.rows(&sql, a).await?;
        if rows.is_empty() {
            return Ok(n);
        }
        let mut values = Vec::with_capacity(rows.len() * cols.len());
        for r in &rows {
            for (i, (name, ty)) in t.columns.iter().enumerate() {
                values.push(if t.cleared.contains(name) {
                    null(*ty)
                } else {
                    arg(r, i, *ty)?
                });
            }
        }
        dest.exec(&values_sql(&insert, cols.len(), rows.len(), ""), values)
            .await?;
        n += rows.len() as u64;
        let last = rows.last().ok_or(StoreError::Closed)?;
        after = Some(
            key_at
                .iter()
                .zip(t.key)
                .map(|(&i, k)| {
                    let ty = t
                        .columns
                        .iter()
                        .find(|(c, _)| c == k)
                        .map_or(Text, |(_, ty)| *ty);
                    arg(last, i, ty)
                })
                .collect::<Result<_, _>>()?,
        );
        if rows.len() < PAGE {
            return Ok(n);
        }
    }
}

fn null(ty: Ty) -> Arg {
    match ty {
        Int => Arg::Int(None),
        Text => Arg::Text(None),
    }
}

fn arg(r: &Row, i: usize, ty: Ty) -> Result<Arg, StoreError> {
    Ok(match (ty, r.val(i)?) {
        (_, Val::Null) => null(ty),
        (Int, Val::Int(v)) => Arg::Int(Some(*v)),
        (Text, Val::Text(v)) => Arg::Text(Some(v.clone())),
        _ => {
            return Err(StoreError::Corrupt(format!(
                "column {i} does not hold the type it should"
            )));
        }
    })
}
