//! Reading one event.

use rusqlite::{Connection, OptionalExtension, params};
use zapinbox_core::{Event, EventId, Result, RetryPolicy, TenantId, Timestamp};

use crate::error::storage;
use crate::row::{EVENT_COLUMNS, stored_from_row};

/// The event with this id in this tenant, if it exists.
pub(crate) fn get(
    conn: &Connection,
    tenant: &TenantId,
    id: EventId,
    now: Timestamp,
    policy: &RetryPolicy,
) -> Result<Option<Event>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1 AND tenant = ?2");
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let row = stmt
        .query_row(params![id.to_bytes(), tenant.as_str()], |row| {
            Ok(stored_from_row(tenant, row, now, policy))
        })
        .optional()
        .map_err(storage)?;
    row.transpose()
        .map(|found| found.map(|(_, event, _)| event))
}
