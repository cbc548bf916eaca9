//! Acknowledging events by id.

use rusqlite::Connection;
use zapinbox_core::{AckOutcome, Error, EventId, Result, RetryPolicy, TenantId, Timestamp};

use crate::row::change_delivery;

/// Marks the event acked, ending any lease; `AlreadyAcked` if it was.
pub(crate) fn ack(
    conn: &Connection,
    (now, policy): (Timestamp, &RetryPolicy),
    tenant: &TenantId,
    id: EventId,
) -> Result<AckOutcome> {
    change_delivery(conn, tenant, id, (now, policy), |d| Ok(d.ack(now)))?
        .ok_or(Error::NotFound { id })
}
