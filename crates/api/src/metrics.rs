//! The HTTP series of `/metrics` and the layer that records them; `GET /metrics` itself.
//!
//! [`measure`] wraps a whole router (the API and the portal) in a middleware that counts every
//! response by route, method and status and times it. The route is the matched route template
//! (`/v1/requests/{id}`), never the path that was asked for, so ids cannot grow the number of
//! series; a request that matched no route counts as `unmatched`, and a method outside the
//! standard ones as `other`. The series live on the engine's recorder
//! (`engine::Metrics::recorder`), so one scrape shows them with the engine's and the store's.
//!
//! This module only records; what the series mean is documented in docs/operations.md.

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use engine::Engine;
use engine::clock::Stopwatch;
use metrics::{Key, Label, Metadata};

pub const HTTP_REQUESTS: &str = "countersign_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "countersign_http_request_duration_seconds";

static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Wraps `router` so that every response it gives is counted and timed on `engine`'s
/// recorder. Applied once, to everything the server serves.
pub fn measure(router: Router, engine: Arc<Engine>) -> Router {
    let r = engine.metrics().recorder();
    r.describe_counter(
        HTTP_REQUESTS.into(),
        None,
        "HTTP responses, by route template, method and status.".into(),
    );
    r.describe_histogram(
        HTTP_REQUEST_DURATION.into(),
        None,
        "Time to answer HTTP requests (until the response headers), by route template and method, in seconds.".into(),
    );
    router.layer(middleware::from_fn_with_state(engine, record))
}

async fn record(State(engine): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = method_label(req.method());
    let watch = Stopwatch::start();
    let res = next.run(req).await;
    let took = watch.elapsed();
    let r = engine.metrics().recorder();
    let route = Label::new("route", route);
    let method = Label::new("method", method);
    let status = Label::new("status", res.status().as_str().to_owned());
    r.register_counter(
        &Key::from_parts(HTTP_REQUESTS, vec![route.clone(), method.clone(), status]),
        &META,
    )
    .increment(1);
    r.register_histogram(
        &Key::from_parts(HTTP_REQUEST_DURATION, vec![route, method]),
        &META,
    )
    .record(took);
    res
}

/// The method as a label: one of the standard methods, or `other`, so that a client cannot
/// add series by inventing methods.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`: every series in the Prometheus text format (version 0.0.4).
pub(crate) async fn text(State(state): State<crate::AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.engine.render_metrics().await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").expect("a token")),
            "other"
        );
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
