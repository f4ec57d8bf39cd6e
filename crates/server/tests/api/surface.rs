//! PRODUCT.md §5: the OpenAPI document describes every route; health and metrics endpoints.

use reqwest::{Method, StatusCode};

use crate::helpers::TestApp;

const ROUTES: [&str; 12] = [
    "/v1/resources",
    "/v1/requests",
    "/v1/requests/{id}",
    "/v1/requests/{id}/reviews",
    "/v1/requests/{id}/cancel",
    "/v1/requests/{id}/comments",
    "/v1/requests/{id}/assign",
    "/v1/grants",
    "/v1/grants/{id}",
    "/v1/grants/{id}/revoke",
    "/v1/audit",
    "/v1/audit/verify",
];

#[tokio::test]
async fn sec_5_openapi_document_lists_every_route() {
    // Arrange
    let app = TestApp::spawn("").await;

    // Act
    let (status, doc) = app
        .api
        .send(Method::GET, "/v1/openapi.json", None, None)
        .await;

    // Assert
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    let missing: Vec<&str> = ROUTES
        .into_iter()
        .filter(|r| !paths.contains_key(*r))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} in {:?}",
        paths.keys()
    );
}

#[tokio::test]
async fn sec_5_health_readiness_and_metrics() {
    // Arrange
    let app = TestApp::spawn("").await;

    // Act
    let (health, _) = app.api.send(Method::GET, "/healthz", None, None).await;
    let (ready, _) = app.api.send(Method::GET, "/readyz", None, None).await;
    let metrics = crate::metrics::Scrape::of(&app).await;

    // Assert
    assert_eq!(health, StatusCode::OK);
    assert_eq!(ready, StatusCode::OK);
    let healthz = [("route", "/healthz"), ("method", "GET"), ("status", "200")];
    assert_eq!(metrics.get(api::metrics::HTTP_REQUESTS, &healthz), 1.0);
}
