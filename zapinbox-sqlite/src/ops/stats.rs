//! Counting one tenant's events.

use rusqlite::{Connection, named_params};
use zapinbox_core::{Result, RetryPolicy, TenantId, TenantStats, Timestamp};

use crate::error::storage;
use crate::row::{UNSETTLED, millis, timestamp};

/// One pass over the tenant's rows (cost grows with the tenant's size).
pub(crate) fn tenant_stats(
    conn: &Connection,
    tenant: &TenantId,
    (now, policy): (Timestamp, &RetryPolicy),
) -> Result<TenantStats> {
    let pending = format!("(status = 0 AND NOT {UNSETTLED})");
    let sql = format!(
        "SELECT
             COALESCE(SUM({pending}), 0),
             COALESCE(SUM({pending} AND lease_expires_at > :now), 0),
             COALESCE(SUM(status = 2 OR {UNSETTLED}), 0),
             COALESCE(SUM(status = 1), 0),
             MIN(CASE WHEN {pending} THEN created_at END)
         FROM events WHERE tenant = :tenant"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    stmt.query_row(
        named_params! {
            ":tenant": tenant.as_str(),
            ":now": millis(now),
            ":max_attempts": policy.max_attempts,
        },
        |r| {
            let oldest: Option<i64> = r.get(4)?;
            Ok(TenantStats::new(
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
                oldest.map(|o| now.saturating_duration_since(timestamp(o))),
            ))
        },
    )
    .map_err(storage)
}
