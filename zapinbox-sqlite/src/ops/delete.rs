//! Deleting events.

use rusqlite::{Connection, OptionalExtension, params};
use zapinbox_core::{DeleteOutcome, Error, EventId, EventStatus, Result, TenantId};

use crate::error::{corrupt, storage};

/// Removes the event whatever its state. Its idempotency key stays.
pub(crate) fn delete(conn: &Connection, tenant: &TenantId, id: EventId) -> Result<DeleteOutcome> {
    let status: Option<u8> = conn
        .prepare_cached("DELETE FROM events WHERE id = ?1 AND tenant = ?2 RETURNING status")
        .and_then(|mut stmt| {
            stmt.query_row(params![id.to_bytes(), tenant.as_str()], |r| r.get(0))
                .optional()
        })
        .map_err(storage)?;
    let status = status.ok_or(Error::NotFound { id })?;
    let previous = EventStatus::from_code(status)
        .ok_or_else(|| corrupt(format!("status {status} of {id}")))?;
    Ok(DeleteOutcome::new(previous))
}
