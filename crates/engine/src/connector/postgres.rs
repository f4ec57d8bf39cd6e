//! The `postgres` connector: role membership on a real PostgreSQL server.
//!
//! Grant runs `GRANT "<role>" TO "<user>"`, revoke `REVOKE "<role>" FROM "<user>"` and, with
//! `terminate_sessions = true`, then ends the user's open sessions; check reads
//! `pg_auth_members`. The role is the resource's `grant.role`; the user is the connector's
//! `user` template applied to the grant's subject. Both are quoted as identifiers, never
//! spliced as text. Both statements are idempotent in PostgreSQL (granting a membership that
//! exists, or revoking one that does not, only warns).
//!
//! Why terminate sessions: PostgreSQL checks membership when a session runs `SET ROLE`, not
//! on every statement afterwards. A session that switched to the role before the revoke keeps
//! the role's privileges until it resets its role or ends (tested in
//! `tests/connectors.rs::postgres_set_role_outlives_revoke_unless_sessions_end`).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use config::{PostgresConnector, UserTemplate};
use domain::{Directory, Grant, Timestamp};
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{Action, Call, Connector, truncate};

pub struct Postgres {
    def: PostgresConnector,
    template: Result<UserTemplate, String>,
    attributes: BTreeMap<String, BTreeMap<String, String>>,
    pool: Result<PgPool, String>,
}

/// `"name"` with inner quotes doubled: a safe SQL identifier for any text without NUL.
pub fn quote_ident(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('\0') {
        return Err(format!("{name:?} is not a valid PostgreSQL identifier"));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

impl Postgres {
    pub fn new(def: PostgresConnector, dir: &Directory) -> Postgres {
        let timeout = Duration::from_secs(def.timeout.secs());
        // Connections are opened on first use, so that a target that is down does not stop
        // the server from starting; calls fail (and are retried) until it is back.
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeout)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy(&def.url)
            .map_err(|e| format!("bad postgres url: {}", redact(&e.to_string(), &def.url)));
        let attributes = dir
            .users()
            .map(|(email, u)| (email.clone(), u.attributes.clone()))
            .collect();
        Postgres {
            template: UserTemplate::parse(&def.user),
            attributes,
            pool,
            def,
        }
    }

    fn target(&self, g: &Grant) -> Result<(String, String), String> {
        let role = g
            .spec
            .params
            .get("role")
            .ok_or("the resource has no grant.role")?;
        let template = self.template.as_ref().map_err(Clone::clone)?;
        let user = template.render(&g.spec.subject, self.attributes.get(&g.spec.subject))?;
        Ok((role.clone(), user))
    }

    fn pool(&self) -> Result<&PgPool, String> {
        self.pool.as_ref().map_err(Clone::clone)
    }

    fn error(&self, e: sqlx::Error) -> String {
        truncate(redact(&e.to_string(), &self.def.url), 1024)
    }
}

/// Removes the connection URL (which may hold a password) from an error text.
fn redact(text: &str, url: &str) -> String {
    if url.is_empty() {
        text.to_owned()
    } else {
        text.replace(url, "[url]")
    }
}

#[async_trait]
impl Connector for Postgres {
    async fn call(&self, call: &Call<'_>) -> Result<(), String> {
        let (role, user) = self.target(call.grant)?;
        let (role_q, user_q) = (quote_ident(&role)?, quote_ident(&user)?);
        let pool = self.pool()?;
        let sql = match call.action {
            Action::Grant => format!("GRANT {role_q} TO {user_q}"),
            Action::Revoke => format!("REVOKE {role_q} FROM {user_q}"),
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .map_err(|e| self.error(e))?;
        if call.action == Action::Revoke && self.def.terminate_sessions {
            sqlx::query(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE usename = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&user)
            .execute(pool)
            .await
            .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    async fn check(&self, grant: &Grant, _now: Timestamp) -> Result<Option<bool>, String> {
        let (role, user) = self.target(grant)?;
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_auth_members m
                 JOIN pg_roles r ON r.oid = m.roleid
                 JOIN pg_roles u ON u.oid = m.member
                 WHERE r.rolname = $1 AND u.rolname = $2)",
        )
        .bind(&role)
        .bind(&user)
        .fetch_one(self.pool()?)
        .await
        .map_err(|e| self.error(e))?;
        Ok(Some(held))
    }

    fn can_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn identifiers_are_quoted_safely() {
        assert_eq!(quote_ident("readonly").as_deref(), Ok("\"readonly\""));
        assert_eq!(
            quote_ident("x\"; DROP TABLE t; --").as_deref(),
            Ok("\"x\"\"; DROP TABLE t; --\"")
        );
        assert!(quote_ident("").is_err());
        assert!(quote_ident("a\0b").is_err());
    }
}
