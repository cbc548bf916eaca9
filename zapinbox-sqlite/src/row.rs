//! Reading event rows.

use rusqlite::Row;
use zapinbox_core::{Event, EventId, EventStatus, Position, Result, TenantId, Timestamp};

use crate::error::{corrupt, storage};

/// The columns [`event_from_row`] reads, in order.
pub(crate) const EVENT_COLUMNS: &str =
    "seq, id, source, event_type, topic, payload, idempotency_key, client_id, status, attempts";

/// Reads one row selected with [`EVENT_COLUMNS`].
pub(crate) fn event_from_row(tenant: &TenantId, row: &Row<'_>) -> Result<(Position, Event)> {
    let seq: i64 = row.get(0).map_err(storage)?;
    let id: [u8; 16] = row.get(1).map_err(storage)?;
    let id = EventId::from_bytes(id);
    let payload: String = row.get(5).map_err(storage)?;
    let payload =
        serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload of {id}: {e}")))?;
    let status: u8 = row.get(8).map_err(storage)?;
    let status = EventStatus::from_code(status)
        .ok_or_else(|| corrupt(format!("status {status} of {id}")))?;
    let mut event = Event::new(tenant.clone(), id, payload);
    event.source = row.get(2).map_err(storage)?;
    event.event_type = row.get(3).map_err(storage)?;
    event.topic = row.get(4).map_err(storage)?;
    event.idempotency_key = row.get(6).map_err(storage)?;
    event.client_id = row.get(7).map_err(storage)?;
    event.status = status;
    event.attempts = row.get(9).map_err(storage)?;
    Ok((position(seq), event))
}

/// A row sequence as a cursor position.
pub(crate) fn position(seq: i64) -> Position {
    seq.max(0) as Position
}

/// A cursor position as a row sequence.
pub(crate) fn seq(position: Position) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

/// A timestamp as stored.
pub(crate) fn millis(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}
