//! Removing what has outlived its retention, in small batches.

use std::time::Duration;

use rusqlite::{Connection, named_params};
use zapinbox_core::{EventStatus, Purged, Redrive, Result, RetryPolicy, TenantId, Timestamp};

use crate::error::storage;
use crate::row::{UNSETTLED, change_delivery, millis};

/// Deletes at most `limit` acked events past `retention` (the rows for
/// which `Delivery::is_expired` holds) and at most `limit` idempotency keys
/// past their window, oldest first, across all tenants.
pub(crate) fn purge_expired(
    conn: &Connection,
    now: Timestamp,
    retention: Duration,
    limit: usize,
) -> Result<Purged> {
    let limit = limit.max(1);
    let cutoff = millis(now.saturating_sub(retention));
    let events = conn
        .prepare_cached(
            "DELETE FROM events WHERE seq IN (
                 SELECT seq FROM events WHERE status = 1 AND acked_at <= :cutoff
                 ORDER BY acked_at, seq LIMIT :limit)",
        )
        .and_then(|mut stmt| {
            stmt.execute(named_params! { ":cutoff": cutoff, ":limit": limit as i64 })
        })
        .map_err(storage)?;
    let keys = conn
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE (tenant, key) IN (
                 SELECT tenant, key FROM idempotency_keys WHERE expires_at <= :now
                 ORDER BY expires_at, tenant, key LIMIT :limit)",
        )
        .and_then(|mut stmt| {
            stmt.execute(named_params! { ":now": millis(now), ":limit": limit as i64 })
        })
        .map_err(storage)?;
    Ok(Purged::new(
        events as u64,
        keys as u64,
        events >= limit || keys >= limit,
    ))
}

/// Deletes `tenant`'s dead letters: these ids, or all of them (at most
/// `limit` when given); returns how many.
pub(crate) fn purge_dead_letters(
    conn: &Connection,
    (now, policy): (Timestamp, &RetryPolicy),
    tenant: &TenantId,
    which: &Redrive,
    limit: Option<usize>,
) -> Result<u64> {
    match which {
        Redrive::All => {
            let sql = format!(
                "DELETE FROM events WHERE seq IN (
                     SELECT seq FROM events WHERE tenant = :tenant AND (status = 2 OR {UNSETTLED})
                     LIMIT :limit)"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut stmt| {
                    stmt.execute(named_params! {
                        ":tenant": tenant.as_str(),
                        ":max_attempts": policy.max_attempts,
                        ":now": millis(now),
                        ":limit": limit.map_or(-1, |l| l as i64),
                    })
                })
                .map(|n| n as u64)
                .map_err(storage)
        }
        Redrive::Ids(ids) => {
            let mut count = 0;
            for id in ids {
                let dead = change_delivery(conn, tenant, *id, (now, policy), |d| {
                    Ok(d.status == EventStatus::DeadLettered)
                })?;
                if dead == Some(true) {
                    count += conn
                        .prepare_cached("DELETE FROM events WHERE id = ?1")
                        .and_then(|mut stmt| stmt.execute([id.to_bytes()]))
                        .map_err(storage)? as u64;
                }
            }
            Ok(count)
        }
    }
}
