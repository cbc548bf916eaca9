//! Looking up idempotency keys.

use rusqlite::{Connection, OptionalExtension, params};
use zapinbox_core::{EventId, Result, TenantId, Timestamp};

use crate::error::storage;
use crate::row::millis;

/// The event stored under `key` if the key is still in its window.
pub(crate) fn find_by_key(
    conn: &Connection,
    now: Timestamp,
    tenant: &TenantId,
    key: &str,
) -> Result<Option<EventId>> {
    conn.prepare_cached(
        "SELECT event_id FROM idempotency_keys WHERE tenant = ?1 AND key = ?2 AND expires_at > ?3",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![tenant.as_str(), key, millis(now)], |r| {
            r.get::<_, [u8; 16]>(0)
        })
        .optional()
    })
    .map(|id| id.map(EventId::from_bytes))
    .map_err(storage)
}
