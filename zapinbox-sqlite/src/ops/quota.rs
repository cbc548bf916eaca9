//! Daily quota use: read and counted in the transaction of the write it
//! belongs to, so processes sharing the file share the day.

use rusqlite::{Connection, OptionalExtension, params};
use zapinbox_core::{DailyUsage, Quotas, Result, TenantId, Timestamp, Traffic, Way, utc_day};

use crate::error::storage;

/// The scope of the whole inbox (a tenant id is never empty).
const EVERYONE: &str = "";

/// What `scope` used on `day`.
fn used(conn: &Connection, scope: &str, day: u64) -> Result<DailyUsage> {
    let row = conn
        .prepare_cached(
            "SELECT messages_in, bytes_in, messages_out, bytes_out FROM usage_days
             WHERE scope = ?1 AND day = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![scope, day as i64], |r| {
                Ok(DailyUsage::new(
                    r.get::<_, i64>(0)?.max(0) as u64,
                    r.get::<_, i64>(1)?.max(0) as u64,
                    r.get::<_, i64>(2)?.max(0) as u64,
                    r.get::<_, i64>(3)?.max(0) as u64,
                ))
            })
            .optional()
        })
        .map_err(storage)?;
    Ok(row.unwrap_or_default())
}

/// Refuses a delivery once the day's outbound quota is used up.
pub(crate) fn check_out(
    conn: &Connection,
    quotas: &Quotas,
    tenant: &TenantId,
    now: Timestamp,
) -> Result<()> {
    if !quotas.limits(Way::Out) {
        return Ok(());
    }
    let day = utc_day(now);
    let (mine, all) = (
        used(conn, tenant.as_str(), day)?,
        used(conn, EVERYONE, day)?,
    );
    quotas.check_delivery(&mine, &all, now)
}

/// Counts `traffic` of `tenant` for the day, refusing inbound traffic that
/// does not fit (nothing counted then). Nothing happens without quotas.
pub(crate) fn charge(
    conn: &Connection,
    quotas: &Quotas,
    tenant: &TenantId,
    traffic: Traffic,
    now: Timestamp,
) -> Result<()> {
    if quotas.is_off() || traffic.messages == 0 {
        return Ok(());
    }
    let day = utc_day(now);
    if traffic.way == Way::In {
        let (mine, all) = (
            used(conn, tenant.as_str(), day)?,
            used(conn, EVERYONE, day)?,
        );
        quotas.check(&mine, &all, traffic, now)?;
    }
    let (messages_in, bytes_in, messages_out, bytes_out) = match traffic.way {
        Way::In => (traffic.messages, traffic.bytes, 0, 0),
        Way::Out => (0, 0, traffic.messages, traffic.bytes),
    };
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO usage_days (scope, day, messages_in, bytes_in, messages_out, bytes_out)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (scope, day) DO UPDATE SET
                 messages_in = min(messages_in, 9223372036854775807 - excluded.messages_in)
                     + excluded.messages_in,
                 bytes_in = min(bytes_in, 9223372036854775807 - excluded.bytes_in)
                     + excluded.bytes_in,
                 messages_out = min(messages_out, 9223372036854775807 - excluded.messages_out)
                     + excluded.messages_out,
                 bytes_out = min(bytes_out, 9223372036854775807 - excluded.bytes_out)
                     + excluded.bytes_out",
        )
        .map_err(storage)?;
    for scope in [tenant.as_str(), EVERYONE] {
        let counts = [messages_in, bytes_in, messages_out, bytes_out]
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        stmt.execute(params![
            scope, day as i64, counts[0], counts[1], counts[2], counts[3]
        ])
        .map_err(storage)?;
    }
    Ok(())
}
