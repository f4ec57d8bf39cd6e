//! The web portal: server-rendered pages under the same origin as the API.
//!
//! [`router`] mounts the pages (sign-in, catalog and request form, my requests and grants,
//! the reviewer inbox, the request page that `portal_url` points at, and the admin views).
//! Templates are compiled into the binary by askama and the one stylesheet is embedded, so
//! there is no front-end build; the pages work without JavaScript.
//!
//! Every page goes through the same engine services as the API, with the signed-in person as
//! the actor, so the rules (self-approval, one decision per person, eligibility, terminal
//! states) are enforced in one place; the portal decides only what to *show*. Two layers wrap
//! every route: [`guard_forms`] loads the session and refuses any POST whose `csrf` field does
//! not match, before a handler sees it, and [`headers`] adds a strict Content Security Policy
//! and the other browser protections.
//!
//! This crate does not own sessions' storage (the store does) nor any rule.

// A page handler's early return is a whole page (axum's `Response`, 128 bytes); boxing it
// would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

mod markdown;
pub mod oidc;
mod pages;
mod run_pages;
pub mod session;
pub mod slack;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engine::Engine;

use crate::session::{Cookies, Current, cookie, same_secret};

/// The largest form body accepted, in bytes.
const MAX_FORM: usize = 64 * 1024;

/// How the portal is offered.
#[derive(Clone, Copy, Debug, Default)]
pub struct PortalOptions {
    /// Offer the development sign-in (pick any configured user). Only on loopback: see
    /// [`check_dev_login`].
    pub dev_login: bool,
}

/// The development sign-in lets anyone who can reach the server act as any user, so it is
/// refused unless the server listens on a loopback address only.
pub fn check_dev_login(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "--dev sign-in is only offered on a loopback address, and the server listens on \
             {addr}; set server.listen to 127.0.0.1:<port> or drop --dev"
        ))
    }
}

#[derive(Clone)]
pub(crate) struct Portal {
    engine: Arc<Engine>,
    options: PortalOptions,
    oidc: Arc<oidc::Client>,
}

impl Portal {
    fn cookies(&self) -> Cookies {
        Cookies::for_url(&self.engine.config().server.public_url)
    }
}

/// The portal's routes, to be merged with the API's.
pub fn router(engine: Arc<Engine>, options: PortalOptions) -> Router {
    let portal = Portal {
        engine,
        options,
        oidc: Arc::new(oidc::Client::new()),
    };
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login))
        .route("/login/oidc", get(pages::login_oidc))
        .route("/login/callback", get(pages::login_callback))
        .route("/login/dev", post(pages::login_dev))
        .route("/logout", post(pages::logout))
        .route("/catalog", get(pages::catalog))
        .route(
            "/catalog/{name}",
            get(pages::request_form).post(pages::create),
        )
        .route("/mine", get(pages::mine))
        .route("/inbox", get(pages::inbox))
        .route("/requests/{id}", get(pages::request_page))
        .route("/requests/{id}/approve", post(pages::approve))
        .route("/requests/{id}/deny", post(pages::deny))
        .route("/requests/{id}/comment", post(pages::comment))
        .route("/requests/{id}/assign", post(pages::assign))
        .route("/requests/{id}/cancel", post(pages::cancel))
        .route("/requests/{id}/follow-up", post(pages::follow_up))
        .route("/grants/{id}/drop", post(pages::drop_grant))
        .route("/grants/{id}/revoke", post(pages::revoke_grant))
        .route("/grants/{id}/extend", post(pages::extend_grant))
        .route("/runbooks", get(run_pages::runbooks))
        .route("/runbooks/{name}/start", post(run_pages::start))
        .route("/runs/{id}", get(run_pages::run_page))
        .route("/runs/{id}/input", post(run_pages::input))
        .route("/runs/{id}/access", post(run_pages::access))
        .route("/runs/{id}/resume", post(run_pages::resume))
        .route("/runs/{id}/cancel", post(run_pages::cancel))
        .route("/admin/requests", get(pages::admin_requests))
        .route("/admin/grants", get(pages::admin_grants))
        .route("/admin/audit", get(pages::admin_audit))
        .route(
            "/slack/link/{secret}",
            get(pages::slack_link_page).post(pages::slack_link),
        )
        .route("/static/portal.css", get(stylesheet))
        .layer(middleware::from_fn_with_state(portal.clone(), guard_forms))
        .layer(middleware::from_fn(headers))
        .with_state(portal)
}

/// Loads the session into the request, and refuses a POST whose `csrf` field does not match
/// the session's token (or, before sign-in, the `pre` cookie the sign-in page set).
async fn guard_forms(State(portal): State<Portal>, req: Request, next: Next) -> Response {
    // A form declared larger than accepted is refused before it is read (or the session is).
    if api::declared_length(req.headers()).is_some_and(|n| n > MAX_FORM as u64) {
        return too_large();
    }
    if portal.options.dev_login
        && !loopback_host(req.headers(), &portal.engine.config().server.public_url)
    {
        // With the development sign-in on, a page elsewhere whose name an attacker points at
        // 127.0.0.1 (DNS rebinding) would be same-origin with this server; refuse any name
        // but loopback's and the configured one.
        return pages::plain_error(
            StatusCode::MISDIRECTED_REQUEST,
            "This development server answers only to localhost, a loopback address or its public_url.",
        );
    }
    let cookies = portal.cookies();
    // The stylesheet needs no session: no database read for it.
    let current = if req.uri().path().starts_with("/static/") {
        Current::default()
    } else {
        Current::load(&portal.engine, req.headers(), cookies).await
    };
    let (mut parts, body) = req.into_parts();
    let body = if parts.method == Method::POST {
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(_) => return too_large(),
        };
        let sent: Option<String> = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .ok()
            .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
        // A signed-in session's forms carry its token; the forms shown before sign-in (also
        // to someone whose session names a user no longer configured) carry the `pre`
        // cookie's.
        let expected = match current.viewer(&portal.engine) {
            Some(v) => Some(v.csrf),
            None => cookie(&parts.headers, cookies.pre_name()).map(str::to_owned),
        };
        let ok = matches!((&sent, &expected), (Some(s), Some(e)) if same_secret(s, e));
        if !ok {
            tracing::info!(path = %parts.uri.path(), "form refused: missing or wrong CSRF token");
            return pages::plain_error(
                StatusCode::FORBIDDEN,
                "This form was refused: it did not carry this session's security token. \
                 Reload the page and try again.",
            );
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(current);
    next.run(Request::from_parts(parts, body)).await
}

fn too_large() -> Response {
    pages::plain_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "That form is larger than the portal accepts.",
    )
}

/// Whether the `Host` a browser sent is loopback (`localhost`, `127.x.y.z`, `[::1]`, any port)
/// or the public URL's own host and port.
fn loopback_host(headers: &axum::http::HeaderMap, public_url: &str) -> bool {
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase)
    else {
        return false;
    };
    let public = public_url.split_once("://").map(|(_, rest)| {
        rest.split('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    });
    if public.as_deref() == Some(host.as_str()) {
        return true;
    }
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Browser protections on every page: scripts only from this origin (there are none
/// inline), no framing, no referrer leaving the origin, no MIME sniffing, and no caching of
/// pages that show requests.
async fn headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/portal.css"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_dev_sign_in_only_loopback_names_are_answered() {
        let h = |host: &str| {
            let mut m = axum::http::HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(host).expect("header"));
            m
        };
        let public = "http://countersign.internal:8080";
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "countersign.internal:8080",
        ] {
            assert!(loopback_host(&h(ok), public), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "countersign.internal:9999",
            "10.0.0.1:8080",
        ] {
            assert!(!loopback_host(&h(bad), public), "{bad}");
        }
        assert!(!loopback_host(&axum::http::HeaderMap::new(), public));
    }

    #[test]
    fn dev_sign_in_is_refused_off_loopback() {
        assert!(check_dev_login("127.0.0.1:8080".parse().expect("addr")).is_ok());
        assert!(check_dev_login("[::1]:8080".parse().expect("addr")).is_ok());
        for addr in ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:8080"] {
            let e = check_dev_login(addr.parse().expect("addr")).unwrap_err();
            assert!(e.contains("loopback"), "{addr}: {e}");
        }
    }
}
