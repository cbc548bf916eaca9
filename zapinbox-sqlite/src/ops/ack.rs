//! Acknowledging events by id.

use rusqlite::Connection;
use zapinbox_core::{AckOutcome, Error, EventId, Result, TenantId, Timestamp};

use crate::row::{load_delivery, save_delivery};

/// Marks the event acked, ending any lease; `AlreadyAcked` if it was.
pub(crate) fn ack(
    conn: &Connection,
    now: Timestamp,
    tenant: &TenantId,
    id: EventId,
) -> Result<AckOutcome> {
    let mut delivery = load_delivery(conn, tenant, id)?.ok_or(Error::NotFound { id })?;
    let outcome = delivery.ack(now);
    if outcome == AckOutcome::Acked {
        save_delivery(conn, id, &delivery)?;
    }
    Ok(outcome)
}
