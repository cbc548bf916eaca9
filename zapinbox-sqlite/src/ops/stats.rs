//! Counting one tenant's events without walking them.

use rusqlite::{Connection, OptionalExtension, named_params};
use zapinbox_core::{Result, RetryPolicy, TenantId, TenantStats, Timestamp};

use crate::error::storage;
use crate::row::{UNSETTLED, millis, timestamp};

/// The counts by stored status, kept by triggers in the same transaction
/// as every write (schema v5).
pub(crate) const COUNTS: &str =
    "SELECT pending, acked, dead_lettered FROM tenant_counts WHERE tenant = :tenant";

/// Pending rows whose last lease has run out: dead letters as of `now`
/// (`Delivery::settle`), few, on the index of pending rows by attempts.
pub(crate) fn unsettled_count() -> String {
    format!(
        "SELECT count(*) FROM events INDEXED BY events_pending_attempts
         WHERE tenant = :tenant AND status = 0 AND {UNSETTLED}"
    )
}

/// Pending rows under a lease running at `now`, on the index of leases.
pub(crate) const LEASED: &str = "SELECT count(*) FROM events INDEXED BY events_leased
     WHERE tenant = :tenant AND status = 0 AND lease_expires_at > :now";

/// The oldest pending event's creation, first on the creation index.
pub(crate) fn oldest_pending() -> String {
    format!(
        "SELECT created_at FROM events INDEXED BY events_pending_created
         WHERE tenant = :tenant AND status = 0 AND NOT {UNSETTLED}
         ORDER BY created_at LIMIT 1"
    )
}

/// The tenant's counts at `now`: the stored ones, with pending rows whose
/// last lease ran out moved to the dead letters. Each query costs what it
/// counts or less, never the tenant's backlog.
pub(crate) fn tenant_stats(
    conn: &Connection,
    tenant: &TenantId,
    (now, policy): (Timestamp, &RetryPolicy),
) -> Result<TenantStats> {
    // One snapshot for every count: a row changing state between two of
    // them would be counted twice or not at all.
    let _snapshot = conn.unchecked_transaction().map_err(storage)?;
    let t = tenant.as_str();
    let (pending, acked, dead): (i64, i64, i64) = conn
        .prepare_cached(COUNTS)
        .and_then(|mut stmt| {
            stmt.query_row(named_params! { ":tenant": t }, |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(storage)?
        .unwrap_or_default();
    let settle = named_params! {
        ":tenant": t,
        ":now": millis(now),
        ":max_attempts": policy.max_attempts,
    };
    let count = |sql: &str, params: &[(&str, &dyn rusqlite::ToSql)]| -> Result<i64> {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_row(params, |r| r.get(0)))
            .map_err(storage)
    };
    let unsettled = count(&unsettled_count(), settle)?;
    let leased = count(LEASED, named_params! { ":tenant": t, ":now": millis(now) })?;
    let oldest: Option<i64> = conn
        .prepare_cached(&oldest_pending())
        .and_then(|mut stmt| stmt.query_row(settle, |r| r.get(0)).optional())
        .map_err(storage)?;
    let whole = |n: i64| n.max(0) as u64;
    Ok(TenantStats::new(
        whole(pending - unsettled),
        whole(leased),
        whole(dead + unsettled),
        whole(acked),
        oldest.map(|o| now.saturating_duration_since(timestamp(o))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sql: &str) -> String {
        crate::schema::query_plan(&crate::schema::planned_db(), sql)
    }

    #[test]
    fn every_count_reads_an_index_not_the_tenant() {
        for (sql, index) in [
            (COUNTS.to_owned(), "tenant_counts"),
            (unsettled_count(), "events_pending_attempts"),
            (LEASED.to_owned(), "events_leased"),
            (oldest_pending(), "events_pending_created"),
        ] {
            let plan = plan(&sql);
            assert!(plan.contains(index), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
    }
}
