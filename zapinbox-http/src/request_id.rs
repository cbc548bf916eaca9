//! `X-Request-ID` on every response, the error envelope's body written
//! with it, and each request counted and timed.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::Envelope;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client.
const MAX_CLIENT_ID: usize = 128;

/// The id of the request being served, for handlers that log it.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// Gives the request an id (the client's own, if it sent a short visible
/// one; a new ULID otherwise), answers with it, and renders an error
/// envelope left on the response.
pub(crate) async fn layer(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| is_sane(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_id);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    // A fixed set: a label per made-up method would grow without end.
    let method = match request.method().as_str() {
        known @ ("GET" | "POST" | "DELETE" | "OPTIONS" | "HEAD") => known.to_owned(),
        _ => "OTHER".to_owned(),
    };
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Some(envelope) = response.extensions_mut().remove::<Envelope>() {
        let body = envelope.render(id.to_str().unwrap_or_default());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.remove(header::CONTENT_LENGTH);
        *response.body_mut() = Body::from(body.to_string());
    }
    response.headers_mut().insert(REQUEST_ID, id);
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("zapinbox_http_requests_total", &labels).increment(1);
    metrics::histogram!("zapinbox_http_request_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

fn new_id() -> HeaderValue {
    HeaderValue::from_str(&ulid::Ulid::new().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Visible ASCII, not too long: safe to echo and to log.
fn is_sane(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_ID && id.iter().all(|b| b.is_ascii_graphic())
}
