//! `GET /inbox/stream`: the caller's pending events as server-sent
//! events, live.
//!
//! Each frame carries `id: <cursor>`, so a client that reconnects with
//! `Last-Event-ID` (browsers' `EventSource` does it by itself) resumes
//! exactly after the last event it saw: nothing missed, nothing twice.
//! A fresh connection shows the events created from the moment it
//! connects on, as ZapStream's does; `since` starts it earlier.

use std::convert::Infallible;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event as Frame, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use zapinbox_core::{Cursor, Subscribed};

use crate::App;
use crate::error::ApiError;
use crate::query::Params;
use crate::wire;

/// Opens the caller's stream. Credentials come from `?api_key=`, a bearer
/// token or `X-API-Key`; a `tenant_id` parameter (ZapStream's dashboard
/// sends one) must name the caller's own tenant.
pub(crate) async fn stream(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    let params = Params::parse(query.as_deref());
    let caller = app.shared.auth.caller(&headers, params.last("api_key"))?;
    if let Some(named) = params.last("tenant_id").filter(|t| !t.is_empty())
        && named != caller.tenant.as_str()
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "tenant_id names a tenant this key does not belong to",
        ));
    }
    let mut filter = params.filter()?;
    let resume = resume_from(&headers, &params)?;
    if resume.is_none() && filter.since.is_none() {
        filter.since = Some(app.shared.inbox.clock().now());
    }
    let inbox = &app.shared.inbox;
    let live = inbox
        .subscribe(&caller.tenant, filter, resume)
        .await
        .map_err(|e| ApiError::from_cursor_read(e, "Last-Event-ID"))?;
    let frames = frames(live).take_until(app.closing());
    let keep_alive = KeepAlive::new()
        .interval(app.shared.config.heartbeat)
        .text("heartbeat");
    let headers = [("cache-control", "no-cache"), ("x-accel-buffering", "no")];
    Ok((headers, Sse::new(frames).keep_alive(keep_alive)))
}

/// Where a reconnecting client left off: `Last-Event-ID`, or the
/// `last_event_id` parameter for clients that cannot set headers.
fn resume_from(headers: &HeaderMap, params: &Params) -> Result<Option<Cursor>, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("Invalid Last-Event-ID"))
        })
        .transpose()?;
    let Some(text) = header
        .or(params.last("last_event_id"))
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    // Checked against the tenant when the subscription starts.
    Ok(Some(Cursor::from_string(text)))
}

/// Each event as a frame, its cursor as the frame's id. An error is the
/// last frame (a subscription ends after one); the client reconnects from
/// its last id.
fn frames(
    live: impl Stream<Item = zapinbox_core::Result<Subscribed>> + Send + 'static,
) -> impl Stream<Item = Result<Frame, Infallible>> + Send + 'static {
    live.map(|item| {
        Ok(match item {
            Ok(item) => Frame::default()
                .id(item.cursor.as_str())
                .json_data(wire::Frame::new(&item.event))
                .unwrap_or_else(|e| error_frame(&e.to_string())),
            Err(e) => {
                tracing::warn!(error = %e, "a stream ended on an error");
                error_frame("The stream stopped; reconnect with Last-Event-ID")
            }
        })
    })
}

/// An unnamed frame, as ZapStream sends its errors: browsers hand named
/// ones to `onerror`, which cannot read them.
fn error_frame(message: &str) -> Frame {
    let body = serde_json::json!({ "type": "error", "message": message });
    Frame::default().data(body.to_string())
}
