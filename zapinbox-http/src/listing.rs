//! `GET /inbox`, `POST /inbox/{id}/ack` and `DELETE /inbox/{id}`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use zapinbox_core::{Cursor, EventId, Order, PullQuery};

use crate::error::ApiError;
use crate::query::Params;
use crate::wire::Item;
use crate::{App, Caller};

/// ZapStream's page size bounds and default.
const MAX_LIMIT: u32 = 500;
const DEFAULT_LIMIT: u32 = 50;

/// One page of the caller's pending events, newest first unless
/// `order=asc`; `next_cursor` continues it (`null` on the last page).
pub(crate) async fn list(
    State(app): State<App>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pull = pull_query(&Params::parse(query.as_deref()))?;
    let page = app
        .shared
        .inbox
        .pull(&caller.tenant, pull)
        .await
        .map_err(|e| ApiError::from_cursor_read(e, "cursor format"))?;
    let listing = Listing {
        events: page.events.iter().map(Item::new).collect(),
        // ZapStream's clients stop at null: a cursor only while more may
        // follow (a page can end short of `limit` where the storage
        // stopped looking; follow the cursor then too).
        next_cursor: page
            .next_cursor
            .as_ref()
            .filter(|_| page.has_more)
            .map(Cursor::as_str),
    };
    Ok(Json(listing).into_response())
}

/// A page as `GET /inbox` answers it. Written straight from the events:
/// payloads go out as the JSON text they are stored as, never parsed.
#[derive(Serialize)]
struct Listing<'a> {
    events: Vec<Item<'a>>,
    next_cursor: Option<&'a str>,
}

/// The pull `params` ask for, checked as ZapStream checks them (422 with
/// `validation_errors`; a cursor that is not one of ours is 400).
pub(crate) fn pull_query(params: &Params) -> Result<PullQuery, ApiError> {
    let limit = match params.last("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_query(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let order = match params.last("order") {
        None | Some("desc") => Order::Desc,
        Some("asc") => Order::Asc,
        Some(_) => return Err(ApiError::invalid_query("order", "must be asc or desc")),
    };
    let mut pull = PullQuery::new().limit(limit).order(order);
    pull.filter = params.filter()?;
    if let Some(cursor) = params.last("cursor").filter(|c| !c.is_empty()) {
        // Checked against the tenant when the inbox reads it.
        pull = pull.after(Cursor::from_string(cursor));
    }
    Ok(pull)
}

/// Acknowledges one of the caller's events; acking again is a no-op.
pub(crate) async fn ack(
    State(app): State<App>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let (id, event) = event_id(id)?;
    app.shared.inbox.ack(&caller.tenant, event).await?;
    Ok(Json(json!({ "id": id, "status": "acknowledged" })))
}

/// Deletes one of the caller's events: it leaves the inbox for good, and
/// its idempotency key stays taken for the key's window.
pub(crate) async fn delete(
    State(app): State<App>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let (id, event) = event_id(id)?;
    app.shared.inbox.delete(&caller.tenant, event).await?;
    Ok(Json(json!({ "id": id, "status": "deleted" })))
}

/// The path's id and the event it names. An id that is not one of ours
/// (or not even UTF-8) names no event: 404, as ZapStream answers for ids
/// it does not know.
fn event_id(id: Result<Path<String>, PathRejection>) -> Result<(String, EventId), ApiError> {
    let Ok(Path(id)) = id else {
        return Err(ApiError::event_not_found());
    };
    let event = id.parse().map_err(|_| ApiError::event_not_found())?;
    Ok((id, event))
}
