//! Bearer-token authentication. Every `/v1` handler takes an [`Auth`], so no endpoint can
//! forget to authenticate; what the actor may do is decided by the engine.

use std::collections::HashMap;
use std::sync::RwLock;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use domain::Actor;

use crate::AppState;
use crate::error::ApiError;

/// The authenticated caller.
pub struct Auth(pub Actor);

/// Token hash → subject. Tokens cannot be revoked yet, so a hit never goes stale; the actor
/// itself is looked up in the current configuration on every request, so a user removed from
/// the configuration loses access at once.
#[derive(Default)]
pub struct TokenCache(RwLock<HashMap<String, String>>);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthenticated("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            // The scheme name is case-insensitive (RFC 9110 §11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| ApiError::unauthenticated("expected Authorization: Bearer cs_…"))?;
        let hash = store::chain::sha256_hex(token.as_bytes());
        let cached = state
            .tokens
            .0
            .read()
            .ok()
            .and_then(|m| m.get(&hash).cloned());
        let actor = match cached {
            Some(subject) => state.engine.actor(&subject),
            None => {
                let actor = state.engine.authenticate(token).await?;
                if let (Some(a), Ok(mut m)) = (&actor, state.tokens.0.write()) {
                    m.insert(hash, a.id.clone());
                }
                actor
            }
        };
        actor
            .map(Auth)
            .ok_or_else(|| ApiError::unauthenticated("unknown or invalid token"))
    }
}
