//! Portal sessions and CSRF.
//!
//! A session id is 32 random bytes in a cookie; the store keeps only its SHA-256, with the
//! user, the session's CSRF token and an absolute expiry (`server.session_ttl`). The cookie is
//! `HttpOnly`, `SameSite=Lax`, and on an `https` public URL it is `__Host-` prefixed and
//! `Secure`; on plain `http` (localhost during development) neither, since browsers refuse
//! both there. Signing in always makes a new id and ends the one before (no fixation);
//! signing out deletes the row, so the old cookie is worth nothing even if replayed.
//!
//! Every POST to the portal carries a `csrf` form field, checked in [`crate::guard_forms`]
//! before any handler runs: against the session's token, or, before sign-in (the dev sign-in
//! form), against a random `pre` cookie the sign-in page set (double submit).
//!
//! A single sign-on under way is not a session: its state, nonce and PKCE verifier are kept
//! by the engine in the database (beside the sessions, keyed by the hash of a `login` cookie,
//! see [`start_login`]), so that the identity provider's callback may reach any replica, and
//! are taken out (once) by the callback. At most `engine::MAX_LOGINS` wait at a time, each
//! for ten minutes.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::{Actor, Timestamp};
use engine::{Engine, EngineError, SessionRow};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a sign-in may take at the identity provider.
pub const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;

/// Cookie names and attributes, decided by the public URL's scheme.
#[derive(Clone, Copy, Debug)]
pub struct Cookies {
    pub secure: bool,
}

impl Cookies {
    pub fn for_url(public_url: &str) -> Cookies {
        Cookies {
            secure: public_url
                .get(..8)
                .is_some_and(|p| p.eq_ignore_ascii_case("https://")),
        }
    }

    pub fn session_name(self) -> &'static str {
        if self.secure {
            "__Host-cs_session"
        } else {
            "cs_session"
        }
    }

    pub fn pre_name(self) -> &'static str {
        if self.secure {
            "__Host-cs_pre"
        } else {
            "cs_pre"
        }
    }

    pub fn login_name(self) -> &'static str {
        if self.secure {
            "__Host-cs_login"
        } else {
            "cs_login"
        }
    }

    /// A `Set-Cookie` value; `max_age_secs` 0 clears the cookie.
    pub fn set(self, name: &str, value: &str, max_age_secs: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}")
    }
}

/// Reads one cookie from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// 32 random bytes, URL-safe base64.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash(id: &str) -> String {
    hex(&Sha256::digest(id.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the portal keeps with a session, stored as JSON in the session row.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SessionData {
    /// How the user signed in: `oidc` or `dev`.
    #[serde(default)]
    pub via: String,
    /// Configured groups the identity provider's groups claim named.
    #[serde(default)]
    pub groups: BTreeSet<String>,
}

/// What the callback of a sign-in must match: the `state` sent, the `nonce` the ID token
/// must carry, the PKCE verifier, and where to go afterwards.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub next: String,
}

/// Keeps a sign-in for [`LOGIN_TTL_MS`]; returns the `login` cookie's value.
pub async fn start_login(engine: &Engine, login: &PendingLogin) -> Result<String, EngineError> {
    let id = random_token();
    // Four strings: serialising them cannot fail.
    let data = serde_json::to_string(login).unwrap_or_default();
    let until = Timestamp::from_millis(engine.now().millis() + LOGIN_TTL_MS);
    engine.start_login(&hash(&id), data, until).await?;
    Ok(id)
}

/// Takes the sign-in a `login` cookie names, if it has not expired: it can be used once.
pub async fn take_login(engine: &Engine, id: &str) -> Option<PendingLogin> {
    if id.is_empty() || id.len() > 128 {
        return None;
    }
    match engine.take_login(&hash(id)).await {
        Ok(data) => data.and_then(|d| serde_json::from_str(&d).ok()),
        Err(e) => {
            tracing::error!(error = %e, "reading a sign-in under way failed");
            None
        }
    }
}

/// The signed-in person looking at a page. (No `Debug`: it holds the CSRF token.)
#[derive(Clone)]
pub struct Viewer {
    pub actor: Actor,
    pub csrf: String,
    pub hash: String,
    pub via: String,
}

/// The session of this request, if its cookie names a live one.
#[derive(Clone, Debug, Default)]
pub struct Current {
    pub row: Option<SessionRow>,
}

impl Current {
    pub async fn load(engine: &Engine, headers: &HeaderMap, cookies: Cookies) -> Current {
        let Some(id) = cookie(headers, cookies.session_name()) else {
            return Current::default();
        };
        if id.is_empty() || id.len() > 128 {
            return Current::default();
        }
        match engine.session(&hash(id)).await {
            Ok(row) => Current { row },
            Err(e) => {
                tracing::error!(error = %e, "reading a portal session failed");
                Current::default()
            }
        }
    }

    /// The signed-in user, if the session has one who is still configured.
    pub fn viewer(&self, engine: &Engine) -> Option<Viewer> {
        let row = self.row.as_ref()?;
        let subject = row.subject.as_str();
        let data: SessionData = serde_json::from_str(&row.data).unwrap_or_default();
        let config = engine.config();
        let mut actor = config.directory.actor(subject)?;
        if actor.app {
            return None;
        }
        for g in data.groups {
            if config.directory.knows(&domain::Principal::Group(g.clone())) {
                actor.groups.insert(g);
            }
        }
        Some(Viewer {
            actor,
            csrf: row.csrf.clone(),
            hash: row.hash.clone(),
            via: data.via,
        })
    }
}

/// Starts a signed-in session for `user`, ending `replaces`; returns the `Set-Cookie`.
pub async fn sign_in(
    engine: &Arc<Engine>,
    cookies: Cookies,
    user: &str,
    data: SessionData,
    replaces: Option<String>,
) -> Result<String, engine::EngineError> {
    let id = random_token();
    let now = engine.now();
    let ttl = engine.config().server.session_ttl;
    let ttl_ms = i64::try_from(ttl.secs()).unwrap_or(i64::MAX / 1000) * 1000;
    let row = SessionRow {
        hash: hash(&id),
        subject: user.to_owned(),
        csrf: random_token(),
        data: serde_json::to_string(&data).unwrap_or_else(|_| "{}".into()),
        created_at: now,
        expires_at: Timestamp::from_millis(now.millis().saturating_add(ttl_ms)),
    };
    engine.save_session(row, replaces).await?;
    Ok(cookies.set(cookies.session_name(), &id, ttl_ms / 1000))
}

/// A local path to go to after sign-in: it must start with one `/` (not `//`, which a
/// browser reads as another host, nor `/\`).
pub fn local_path(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 512
        && !next.chars().any(|c| c.is_control());
    if ok { next.to_owned() } else { "/".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_host_prefixed_and_secure_on_https_only() {
        let c = Cookies::for_url("https://countersign.example.com");
        assert_eq!(c.session_name(), "__Host-cs_session");
        let set = c.set(c.session_name(), "abc", 60);
        assert_eq!(
            set,
            "__Host-cs_session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let c = Cookies::for_url("http://localhost:8080");
        assert_eq!(
            c.set(c.session_name(), "abc", 60),
            "cs_session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
        );
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path("/requests/1?x=2"), "/requests/1?x=2");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "",
            "x",
        ] {
            assert_eq!(local_path(bad), "/", "{bad}");
        }
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", ""));
    }
}
