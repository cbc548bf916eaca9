//! `POST /events`: one event in, with an optional idempotency key.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use zapinbox_core::NewEvent;

use crate::error::ApiError;
use crate::wire::zap_time;
use crate::{App, Caller};

/// The idempotency key header, as ZapStream names it.
const IDEMPOTENCY_KEY: &str = "x-idempotency-key";

/// Room in a request for the envelope around a payload at the cap: its
/// metadata strings and JSON punctuation.
const BODY_ROOM: usize = 64 * 1024;

/// The largest body read at all. Bigger ones are refused (413) before
/// they are read in full; ZapStream reads 20 MB bodies to refuse them.
pub(crate) fn body_limit(max_payload_bytes: usize) -> usize {
    max_payload_bytes.saturating_add(BODY_ROOM)
}

/// ZapStream's request body. Other keys are ignored, as ZapStream does.
#[derive(Deserialize)]
struct EventBody<'a> {
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    source: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    topic: Option<String>,
}

/// Stores one event: 200 with its id, 409 if its idempotency key was used
/// before (`existing_event_id` names the event), 422 for a body that is
/// not a JSON object with an object `payload`, 400 for a payload over the
/// cap, 413 for a body far over it.
pub(crate) async fn create(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let limit = body_limit(app.shared.config.max_payload_bytes);
    let bytes = to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("The request body is over {limit} bytes"),
            )
        } else {
            ApiError::bad_request(format!("The request body could not be read: {e}"))
        }
    })?;
    let key = idempotency_key(&headers)?;
    let mut event = parse(&bytes)?;
    if let Some(key) = &key {
        event = event.with_idempotency_key(key.clone());
    }
    if let Some(client) = caller.client_id {
        event = event.with_client_id(client);
    }
    let inbox = &app.shared.inbox;
    let stored = inbox.ingest(&caller.tenant, event).await?;
    if stored.duplicate {
        // ZapStream answers every reuse of a key with 409, whatever the
        // body: its clients rely on it. The first event's id comes along.
        return Err(ApiError::idempotency_conflict(stored.id));
    }
    Ok(Json(json!({
        "id": stored.id.to_string(),
        "received_at": zap_time(stored.id.created_at()),
        "status": "accepted",
    })))
}

/// The event a body describes, checked as far as its shape goes (the
/// inbox checks the payload itself: an object, its depth, its size, no
/// lone surrogates).
fn parse(bytes: &[u8]) -> Result<NewEvent, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::invalid_body(
            "The body must be a JSON object with a payload object",
        ));
    }
    let body: EventBody = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_body(format!("Invalid JSON body: {e}")))?;
    let payload = body
        .payload
        .filter(|p| p.get().starts_with('{'))
        .ok_or_else(|| ApiError::invalid_body("payload is required and must be a JSON object"))?;
    let mut event = NewEvent::from_json(payload.get());
    // ZapStream takes "" for each; the inbox keeps no empty strings.
    if let Some(source) = body.source.filter(|s| !s.is_empty()) {
        event = event.with_source(source);
    }
    if let Some(event_type) = body.event_type.filter(|s| !s.is_empty()) {
        event = event.with_type(event_type);
    }
    if let Some(topic) = body.topic.filter(|s| !s.is_empty()) {
        event = event.with_topic(topic);
    }
    Ok(event)
}

/// The `X-Idempotency-Key` header; empty is none, as ZapStream has it.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::invalid_body("X-Idempotency-Key must be visible ASCII text"))?;
    Ok(Some(key.to_owned()).filter(|k| !k.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_with_an_object_payload_pass() {
        assert!(parse(br#" {"payload":{}}"#).is_ok());
        assert!(parse(br#"{"payload":{"a":1},"topic":"","extra":[1]}"#).is_ok());
        for bad in [
            &b"[{\"payload\":{}}]"[..],
            b"\"x\"",
            b"42",
            b"null",
            b"",
            b"{",
            b"{\"payload\":{}} trailing",
            b"{\"payload\":[]}",
            b"{\"payload\":\"x\"}",
            b"{\"payload\":null}",
            b"{}",
            b"{\"payload\":{},\"topic\":5}",
            b"{\"payload\":{},\"source\":\"\\ud800\"}",
            b"{\"payload\":{},\"topic\":\"\xff\"}",
        ] {
            let refused = parse(bad).map(|_| ()).map_err(|e| e.status().as_u16());
            assert_eq!(refused, Err(422), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
