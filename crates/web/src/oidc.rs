//! OpenID Connect sign-in: the authorization code flow with PKCE (RFC 7636), as a relying
//! party of the configured issuer.
//!
//! The issuer's discovery document and keys are fetched on first use and kept for an hour
//! (keys are fetched again at once when an ID token names a key not seen yet). The code is
//! exchanged with `client_secret_basic` and the PKCE verifier; the ID token's signature
//! (RS256, PS256 or ES256, verified with `ring`, the process's one crypto provider), issuer,
//! audience, expiry, `iat` and `nbf` (with a minute of clock difference) and nonce are checked
//! before any claim is believed. When the ID token carries no email, or no `email_verified`
//! while it is required (providers may keep claims for the userinfo endpoint), the userinfo
//! endpoint is asked with the access token, and its `sub` must be the ID token's. A sign-in
//! needs `email_verified: true` unless the configuration turns `require_email_verified` off.
//!
//! The issuer is configuration, not user input, so these calls do not go through the
//! SSRF guard; the configuration requires `https` unless the issuer is on loopback or listed
//! in `outbound_allow`. Redirects are not followed.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use config::OidcConfig;
use domain::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::session::PendingLogin;

/// How long discovery and keys are reused.
const CACHE_MS: i64 = 3600 * 1000;
/// Clock difference tolerated on `exp`, `iat` and `nbf`.
const SKEW_MS: i64 = 60 * 1000;
/// The largest answer read from the issuer.
const MAX_ANSWER: usize = 256 * 1024;

/// What sign-in learned about the person.
#[derive(Clone, Debug)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    pub groups: Vec<String>,
}

#[derive(Clone, Debug)]
struct Provider {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    jwks: Value,
    fetched: Timestamp,
}

/// The relying party: an HTTP client and what it learned from the issuer.
pub struct Client {
    http: Result<reqwest::Client, String>,
    cache: Mutex<Option<Provider>>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        engine::connector::install_tls_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"));
        Client {
            http,
            cache: Mutex::new(None),
        }
    }

    fn http(&self) -> Result<&reqwest::Client, String> {
        self.http.as_ref().map_err(Clone::clone)
    }

    async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, String> {
        let mut req = self.http()?.get(url).header("accept", "application/json");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let res = req
            .send()
            .await
            .map_err(|e| format!("GET {}: {}", without_query(url), e.without_url()))?;
        read_json(res, url).await
    }

    /// The issuer's endpoints and keys, from the cache or fetched now.
    async fn provider(
        &self,
        cfg: &OidcConfig,
        now: Timestamp,
        fresh: bool,
    ) -> Result<Provider, String> {
        if !fresh
            && let Some(p) = self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            && same_issuer(&p.issuer, &cfg.issuer)
            && now.millis() - p.fetched.millis() < CACHE_MS
        {
            return Ok(p.clone());
        }
        let base = cfg.issuer.trim_end_matches('/');
        let doc = self
            .get_json(&format!("{base}/.well-known/openid-configuration"), None)
            .await?;
        let field = |k: &str| doc[k].as_str().map(str::to_owned);
        let issuer = field("issuer").ok_or("the discovery document has no issuer")?;
        if !same_issuer(&issuer, &cfg.issuer) {
            return Err(format!(
                "the discovery document names issuer {issuer:?}, not the configured {:?}",
                cfg.issuer
            ));
        }
        let need = |k: &str| field(k).ok_or_else(|| format!("the discovery document has no {k}"));
        let jwks_uri = need("jwks_uri")?;
        let jwks = self.get_json(&jwks_uri, None).await?;
        let p = Provider {
            issuer,
            authorization_endpoint: need("authorization_endpoint")?,
            token_endpoint: need("token_endpoint")?,
            userinfo_endpoint: field("userinfo_endpoint"),
            jwks,
            fetched: now,
        };
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(p.clone());
        Ok(p)
    }

    /// Where to send the browser: the authorization endpoint with the state, nonce and the
    /// PKCE challenge (S256) of this sign-in.
    pub async fn authorize_url(
        &self,
        cfg: &OidcConfig,
        redirect_uri: &str,
        login: &PendingLogin,
        now: Timestamp,
    ) -> Result<String, String> {
        let p = self.provider(cfg, now, false).await?;
        let scope = cfg.scopes.join(" ");
        let challenge = pkce_challenge(&login.verifier);
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", cfg.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", scope.as_str()),
            ("state", login.state.as_str()),
            ("nonce", login.nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .map_err(|e| e.to_string())?;
        let sep = if p.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!("{}{sep}{query}", p.authorization_endpoint))
    }

    /// Exchanges the code and verifies what comes back.
    pub async fn finish(
        &self,
        cfg: &OidcConfig,
        redirect_uri: &str,
        code: &str,
        login: &PendingLogin,
        now: Timestamp,
    ) -> Result<Claims, String> {
        let mut p = self.provider(cfg, now, false).await?;
        let body = serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", login.verifier.as_str()),
        ])
        .map_err(|e| e.to_string())?;
        // client_secret_basic: both parts form-encoded first (RFC 6749, section 2.3.1).
        let user = serde_urlencoded::to_string([("", cfg.client_id.as_str())]).unwrap_or_default();
        let pass =
            serde_urlencoded::to_string([("", cfg.client_secret.as_str())]).unwrap_or_default();
        let basic = STANDARD.encode(format!("{}:{}", &user[1..], &pass[1..]));
        let res = self
            .http()?
            .post(&p.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header("authorization", format!("Basic {basic}"))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("the token request failed: {}", e.without_url()))?;
        let tokens = read_json(res, &p.token_endpoint).await?;
        let id_token = tokens["id_token"]
            .as_str()
            .ok_or("the token answer has no id_token")?;
        let claims = match verify_id_token(id_token, &p.jwks, cfg, &login.nonce, now) {
            Err(e) if e.starts_with("no key") => {
                // The issuer may have rotated its keys since they were fetched.
                p = self.provider(cfg, now, true).await?;
                verify_id_token(id_token, &p.jwks, cfg, &login.nonce, now)?
            }
            other => other?,
        };
        let sub = claims["sub"]
            .as_str()
            .ok_or("the ID token has no sub")?
            .to_owned();
        let mut source = claims;
        // Claims the ID token leaves out (providers may keep them for userinfo) are asked of
        // the userinfo endpoint; what the signed ID token says wins.
        let missing = source[&cfg.email_claim].as_str().is_none()
            || (cfg.require_email_verified && source.get("email_verified").is_none());
        if missing
            && let (Some(url), Some(access)) =
                (&p.userinfo_endpoint, tokens["access_token"].as_str())
        {
            let info = self.get_json(url, Some(access)).await?;
            if info["sub"].as_str() != Some(sub.as_str()) {
                return Err("the userinfo answer is about another subject".into());
            }
            if let (Value::Object(have), Value::Object(more)) = (&mut source, info) {
                for (k, v) in more {
                    have.entry(k).or_insert(v);
                }
            }
        }
        let email = source[&cfg.email_claim]
            .as_str()
            .ok_or_else(|| {
                format!(
                    "neither the ID token nor userinfo has a {:?} claim",
                    cfg.email_claim
                )
            })?
            .to_owned();
        check_email_verified(&source, &email, cfg)?;
        let groups = match &source[&cfg.groups_claim] {
            Value::Array(a) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => vec![],
        };
        Ok(Claims { sub, email, groups })
    }
}

/// `email_verified` must be `true` when the configuration requires it (the default): a
/// missing claim refuses the sign-in, since nothing then says the person controls the
/// address. `false` refuses it always. The string `"true"`, which some providers send, counts.
pub fn check_email_verified(claims: &Value, email: &str, cfg: &OidcConfig) -> Result<(), String> {
    match &claims["email_verified"] {
        Value::Bool(true) => Ok(()),
        Value::String(s) if s == "true" => Ok(()),
        Value::Bool(false) => Err(format!("the issuer says {email} is not verified")),
        Value::String(s) if s == "false" => Err(format!("the issuer says {email} is not verified")),
        Value::Null if !cfg.require_email_verified => Ok(()),
        Value::Null => Err(format!(
            "the issuer does not say that {email} is verified (no email_verified claim); \
             the oidc block's require_email_verified = false accepts such sign-ins"
        )),
        other => Err(format!(
            "the email_verified claim is not true or false: {other}"
        )),
    }
}

/// A NumericDate claim (RFC 7519: seconds, possibly with a fraction) in milliseconds.
fn numeric_date(claims: &Value, name: &str) -> Result<Option<i64>, String> {
    match &claims[name] {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(|s| s.saturating_mul(1000))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| (f * 1000.0) as i64)
            })
            .map(Some)
            .ok_or_else(|| format!("the ID token's {name} is not a time")),
        _ => Err(format!("the ID token's {name} is not a time")),
    }
}

fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

async fn read_json(mut res: reqwest::Response, url: &str) -> Result<Value, String> {
    let status = res.status();
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| format!("reading {}: {}", without_query(url), e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!(
                "{} answered more than {MAX_ANSWER} bytes",
                without_query(url)
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        // An OAuth error body says `error` and maybe `error_description`; nothing secret.
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let why = v["error"].as_str().unwrap_or("");
        return Err(format!(
            "{} answered {} {why}",
            without_query(url),
            status.as_u16()
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| format!("{} did not answer JSON: {e}", without_query(url)))
}

/// `BASE64URL(SHA256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn b64(part: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| "the ID token is not base64url".to_owned())
}

/// Verifies an ID token's signature against the issuer's keys, then its issuer, audience,
/// expiry, issue time, not-before time and nonce; returns its claims.
pub fn verify_id_token(
    token: &str,
    jwks: &Value,
    cfg: &OidcConfig,
    nonce: &str,
    now: Timestamp,
) -> Result<Value, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the ID token is not a signed JWT".into());
    };
    let header: Value =
        serde_json::from_slice(&b64(h)?).map_err(|_| "the ID token's header is not JSON")?;
    let alg = header["alg"].as_str().unwrap_or("");
    let kid = header["kid"].as_str();
    let signature = b64(s)?;
    let signed = format!("{h}.{c}");
    let keys = jwks["keys"].as_array().cloned().unwrap_or_default();
    let candidates: Vec<&Value> = keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k["kid"].as_str() == Some(kid)))
        .filter(|k| k["use"].as_str().is_none_or(|u| u == "sig"))
        .filter(|k| k["alg"].as_str().is_none_or(|a| a == alg))
        .collect();
    if candidates.is_empty() {
        return Err(format!(
            "no key of the issuer matches the ID token (kid {kid:?})"
        ));
    }
    let ok = candidates
        .iter()
        .any(|k| verify_with(k, alg, signed.as_bytes(), &signature).unwrap_or(false));
    if !ok {
        return Err(format!("the ID token's {alg} signature does not verify"));
    }
    let claims: Value =
        serde_json::from_slice(&b64(c)?).map_err(|_| "the ID token's claims are not JSON")?;
    let iss = claims["iss"].as_str().unwrap_or("");
    if !same_issuer(iss, &cfg.issuer) {
        return Err(format!("the ID token was issued by {iss:?}"));
    }
    let for_us = match &claims["aud"] {
        Value::String(a) => *a == cfg.client_id,
        Value::Array(a) => {
            a.iter().any(|x| x.as_str() == Some(cfg.client_id.as_str()))
                && (a.len() == 1 || claims["azp"].as_str() == Some(cfg.client_id.as_str()))
        }
        _ => false,
    };
    if !for_us {
        return Err("the ID token is meant for another client".into());
    }
    let exp = numeric_date(&claims, "exp")?.ok_or("the ID token has no exp")?;
    if exp.saturating_add(SKEW_MS) <= now.millis() {
        return Err("the ID token has expired".into());
    }
    // `iat` is required (OpenID Connect Core, section 2); one from the future, beyond the
    // tolerated clock difference, means a wrong clock or a forged token.
    let iat = numeric_date(&claims, "iat")?.ok_or("the ID token has no iat")?;
    if iat > now.millis().saturating_add(SKEW_MS) {
        return Err("the ID token was issued in the future (iat); check the clocks".into());
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")?
        && nbf > now.millis().saturating_add(SKEW_MS)
    {
        return Err("the ID token is not valid yet (nbf)".into());
    }
    let got = claims["nonce"].as_str().unwrap_or("");
    if !crate::session::same_secret(got, nonce) {
        return Err("the ID token's nonce is not this sign-in's".into());
    }
    Ok(claims)
}

fn verify_with(key: &Value, alg: &str, msg: &[u8], sig: &[u8]) -> Result<bool, String> {
    use ring::signature;
    let field = |k: &str| -> Result<Vec<u8>, String> {
        b64(key[k]
            .as_str()
            .ok_or_else(|| format!("the key has no {k}"))?)
    };
    match (alg, key["kty"].as_str()) {
        ("RS256" | "PS256", Some("RSA")) => {
            let (n, e) = (field("n")?, field("e")?);
            let params: &signature::RsaParameters = if alg == "RS256" {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else {
                &signature::RSA_PSS_2048_8192_SHA256
            };
            Ok(signature::RsaPublicKeyComponents { n: &n, e: &e }
                .verify(params, msg, sig)
                .is_ok())
        }
        ("ES256", Some("EC")) if key["crv"].as_str() == Some("P-256") => {
            let mut point = vec![4u8];
            point.extend(field("x")?);
            point.extend(field("y")?);
            Ok(
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
                    .verify(msg, sig)
                    .is_ok(),
            )
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    fn cfg() -> OidcConfig {
        OidcConfig {
            issuer: "https://id.example".into(),
            client_id: "countersign".into(),
            client_secret: "s".into(),
            scopes: vec!["openid".into()],
            email_claim: "email".into(),
            groups_claim: "groups".into(),
            require_email_verified: true,
        }
    }

    /// A real ES256 key, its JWKS, and a signer of claims.
    fn key() -> (EcdsaKeyPair, Value) {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let public = pair.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        }]});
        (pair, jwks)
    }

    fn sign(pair: &EcdsaKeyPair, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k1"}"#);
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = pair
            .sign(&SystemRandom::new(), format!("{h}.{c}").as_bytes())
            .expect("sign");
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    const NOW: i64 = 1_767_225_600_000;

    fn claims() -> Value {
        serde_json::json!({
            "iss": "https://id.example", "aud": "countersign", "sub": "u1",
            "exp": NOW / 1000 + 300, "iat": NOW / 1000 - 5, "nonce": "n-123",
            "email": "alice@example.com", "email_verified": true,
        })
    }

    #[test]
    fn a_good_id_token_verifies() {
        let (pair, jwks) = key();
        let got = verify_id_token(
            &sign(&pair, &claims()),
            &jwks,
            &cfg(),
            "n-123",
            Timestamp::from_millis(NOW),
        )
        .expect("verifies");
        assert_eq!(got["email"], "alice@example.com");
    }

    #[test]
    fn a_tampered_or_misdirected_id_token_is_refused() {
        let (pair, jwks) = key();
        let now = Timestamp::from_millis(NOW);
        let good = sign(&pair, &claims());

        // The payload swapped for another, the signature kept.
        let mut forged = claims();
        forged["email"] = "root@example.com".into();
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(forged.to_string()),
            parts[2]
        );
        let e = verify_id_token(&tampered, &jwks, &cfg(), "n-123", now).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");

        // Signed by another key.
        let (other, _) = key();
        let e = verify_id_token(&sign(&other, &claims()), &jwks, &cfg(), "n-123", now).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");

        // `alg: none` is never accepted.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#),
            parts[1]
        );
        assert!(verify_id_token(&none, &jwks, &cfg(), "n-123", now).is_err());

        let e = verify_id_token(&good, &jwks, &cfg(), "another-nonce", now).unwrap_err();
        assert!(e.contains("nonce"), "{e}");

        for (key, value, why) in [
            ("iss", Value::from("https://evil.example"), "issued by"),
            ("aud", Value::from("someone-else"), "another client"),
            ("exp", Value::from(NOW / 1000 - 3600), "expired"),
            ("exp", Value::from("soon"), "not a time"),
            ("iat", Value::Null, "no iat"),
            ("iat", Value::from(NOW / 1000 + 120), "issued in the future"),
            ("nbf", Value::from(NOW / 1000 + 120), "not valid yet"),
        ] {
            let mut c = claims();
            c[key] = value;
            let e = verify_id_token(&sign(&pair, &c), &jwks, &cfg(), "n-123", now).unwrap_err();
            assert!(e.contains(why), "{key}: {e}");
        }
    }

    /// Item 6: `iat` and `nbf` are checked with a minute of clock difference either way.
    #[test]
    fn hardening_6_iat_and_nbf_allow_a_minute_of_clock_difference() {
        let (pair, jwks) = key();
        let now = Timestamp::from_millis(NOW);
        let mut c = claims();
        c["iat"] = Value::from(NOW / 1000 + 50);
        c["nbf"] = Value::from(NOW / 1000 + 50);
        verify_id_token(&sign(&pair, &c), &jwks, &cfg(), "n-123", now).expect("within a minute");
        c["iat"] = Value::from((NOW as f64) / 1000.0 - 0.5);
        c["nbf"] = Value::from(NOW / 1000 - 10);
        verify_id_token(&sign(&pair, &c), &jwks, &cfg(), "n-123", now).expect("fractions");
    }

    /// Item 6: `require_email_verified` (on by default) refuses a sign-in whose issuer does
    /// not say the email is verified; `false` is refused whatever the setting.
    #[test]
    fn hardening_6_email_verified_is_required_by_default() {
        let email = "alice@example.com";
        let strict = cfg();
        let lax = OidcConfig {
            require_email_verified: false,
            ..cfg()
        };
        let with = |v: Value| {
            let mut c = claims();
            c["email_verified"] = v;
            c
        };
        for (verified, strict_ok, lax_ok) in [
            (Value::Bool(true), true, true),
            (Value::from("true"), true, true),
            (Value::Null, false, true),
            (Value::Bool(false), false, false),
            (Value::from("false"), false, false),
            (Value::from(1), false, false),
        ] {
            let c = with(verified.clone());
            assert_eq!(
                check_email_verified(&c, email, &strict).is_ok(),
                strict_ok,
                "strict, {verified}"
            );
            assert_eq!(
                check_email_verified(&c, email, &lax).is_ok(),
                lax_ok,
                "lax, {verified}"
            );
        }
        let e = check_email_verified(&with(Value::Null), email, &strict).unwrap_err();
        assert!(e.contains("require_email_verified"), "{e}");
    }

    #[test]
    fn the_pkce_challenge_is_s256_of_the_verifier() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
