//! What needs no tenant: health with a real storage probe, Prometheus
//! metrics, the OpenAPI document, and answers for unknown routes.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::App;
use crate::error::ApiError;

const SERVICE: &str = "zapinbox";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// 200 `healthy` when the storage answered a read just now, 503
/// `unhealthy` when it did not (ZapStream never asks its storage).
pub(crate) async fn health(State(app): State<App>) -> Response {
    let (status, mut body, _) = probe(&app).await;
    body["service"] = SERVICE.into();
    body["version"] = VERSION.into();
    (status, Json(body)).into_response()
}

/// `health`, with what the storage is and how long it took to answer.
pub(crate) async fn detailed(State(app): State<App>) -> Response {
    let (status, mut body, storage) = probe(&app).await;
    let now = app.shared.inbox.clock().now();
    body["service"] = SERVICE.into();
    body["version"] = VERSION.into();
    body["timestamp"] = crate::wire::zap_time(now).into();
    body["components"] = json!({ "storage": storage });
    (status, Json(body)).into_response()
}

/// Reads from the storage: the status to answer with, the body's
/// `status`, and the storage's part. A failure's details go to the log
/// only: these routes need no key.
async fn probe(app: &App) -> (StatusCode, Value, Value) {
    let inbox = &app.shared.inbox;
    let started = Instant::now();
    let answer = inbox.probe().await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (status, word) = match &answer {
        Ok(()) => (StatusCode::OK, "healthy"),
        Err(e) => {
            tracing::warn!(error = %e, "the storage probe failed");
            (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
        }
    };
    let storage =
        json!({ "type": inbox.backend().name(), "status": word, "latency_ms": latency_ms });
    (status, json!({ "status": word }), storage)
}

/// The `metrics` facade's counters and histograms, in Prometheus text;
/// behind `METRICS_TOKEN` when one is set (the figures name tenants).
pub(crate) async fn metrics(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = &app.shared.config.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return Err(ApiError::unauthenticated("The metrics token is required"));
        }
    }
    let handle = app.shared.metrics.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED",
            "This server was started without a Prometheus recorder",
        )
    })?;
    let text = handle.render();
    let kind = [(header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    Ok((kind, text).into_response())
}

/// The OpenAPI 3.1 description of every route.
pub(crate) async fn openapi() -> Response {
    let kind = [(header::CONTENT_TYPE, "application/json")];
    (kind, include_str!("../openapi.json")).into_response()
}

/// An unknown path, in the envelope (ZapStream answers FastAPI's own
/// `{"detail": …}` here).
pub(crate) async fn not_found() -> ApiError {
    no_route()
}

pub(crate) fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "No such route")
}

/// A known path with a method it does not serve.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "Method not allowed on this route",
    )
}
