//! Acknowledging events.

use rusqlite::{Connection, OptionalExtension, params};
use zapinbox_core::{AckOutcome, Error, EventId, EventStatus, Result, TenantId, Timestamp};

use crate::error::storage;
use crate::row::millis;

/// Marks the event acked (ending any lease); `AlreadyAcked` if it was.
pub(crate) fn ack(
    conn: &Connection,
    now: Timestamp,
    tenant: &TenantId,
    id: EventId,
) -> Result<AckOutcome> {
    let status: Option<u8> = conn
        .prepare_cached("SELECT status FROM events WHERE id = ?1 AND tenant = ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![id.to_bytes(), tenant.as_str()], |r| r.get(0))
                .optional()
        })
        .map_err(storage)?;
    match status.map(EventStatus::from_code) {
        None => Err(Error::NotFound { id }),
        Some(Some(EventStatus::Acked)) => Ok(AckOutcome::AlreadyAcked),
        Some(_) => {
            conn.prepare_cached(
                "UPDATE events SET status = ?1, acked_at = ?2, lease_token = NULL,
                                   lease_expires_at = NULL
                 WHERE id = ?3",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    EventStatus::Acked.code(),
                    millis(now),
                    id.to_bytes()
                ])
            })
            .map_err(storage)?;
            Ok(AckOutcome::Acked)
        }
    }
}
