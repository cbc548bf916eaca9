//! Deleting events.

use rusqlite::{Connection, OptionalExtension, params};
use zapinbox_core::{DeleteOutcome, Error, EventId, Result, RetryPolicy, TenantId, Timestamp};

use crate::error::storage;
use crate::row::{DELIVERY_COLUMNS, delivery_at};

/// Removes the event whatever its state, reporting the state it was in at
/// `now`. Its idempotency key stays.
pub(crate) fn delete(
    conn: &Connection,
    (now, policy): (Timestamp, &RetryPolicy),
    tenant: &TenantId,
    id: EventId,
) -> Result<DeleteOutcome> {
    let sql =
        format!("DELETE FROM events WHERE id = ?1 AND tenant = ?2 RETURNING {DELIVERY_COLUMNS}");
    let delivery = conn
        .prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_row(params![id.to_bytes(), tenant.as_str()], |row| {
                Ok(delivery_at(row, 0, id))
            })
            .optional()
        })
        .map_err(storage)?
        .transpose()?
        .ok_or(Error::NotFound { id })?;
    Ok(DeleteOutcome::new(delivery.settle(now, policy).status))
}
