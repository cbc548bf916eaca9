//! The dashboard: three static files built into the binary (no build
//! step), and ZapStream's JSON index for clients that are not browsers.

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/style.css");

/// The page runs only its own script and style, talks only to this
/// server, and is never framed (it holds a key and acts on a click).
const GUARDS: [(header::HeaderName, &str); 3] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// The dashboard for a browser (one that accepts HTML); ZapStream's index
/// of routes for anything else.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return (GUARDS, [(header::VARY, "Accept")], Html(INDEX)).into_response();
    }
    Json(json!({
        "message": "zapinbox: ZapStream's API",
        "version": env!("CARGO_PKG_VERSION"),
        "docs": "/openapi.json",
        "health": "/health",
        "events": "/events",
        "inbox": "/inbox",
        "dashboard": "/",
    }))
    .into_response()
}

/// The dashboard's script and style sheet.
pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (kind, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "style.css" => ("text/css; charset=utf-8", STYLE),
        _ => return Err(crate::health::no_route()),
    };
    Ok(([(header::CONTENT_TYPE, kind)], GUARDS, body).into_response())
}
