//! Metered usage: added up by key, read back by tenant and days.

use std::ops::RangeInclusive;

use rusqlite::{Connection, params};
use zapinbox_core::{Action, Result, TenantId, UsageRecord};

use crate::error::{corrupt, storage};

/// An absent client or topic as stored (an empty one is never valid).
const NONE: &str = "";

/// A count as stored, saturating.
fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Adds `records` to the stored counts.
pub(crate) fn add(conn: &Connection, records: &[UsageRecord]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO usage_records
                 (tenant, day, client_id, topic, action, billable, count, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (tenant, day, client_id, topic, action, billable) DO UPDATE SET
                 count = min(count, 9223372036854775807 - excluded.count) + excluded.count,
                 bytes = min(bytes, 9223372036854775807 - excluded.bytes) + excluded.bytes",
        )
        .map_err(storage)?;
    for r in records {
        let k = &r.key;
        stmt.execute(params![
            k.tenant.as_str(),
            stored(k.day),
            k.client_id.as_deref().unwrap_or(NONE),
            k.topic.as_deref().unwrap_or(NONE),
            k.action.name(),
            k.billable,
            stored(r.count),
            stored(r.bytes),
        ])
        .map_err(storage)?;
    }
    Ok(())
}

/// `tenant`'s records for `days` (one a key: the table's primary key), in
/// key order.
pub(crate) fn read(
    conn: &Connection,
    tenant: &TenantId,
    days: &RangeInclusive<u64>,
) -> Result<Vec<UsageRecord>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT day, client_id, topic, action, billable, count, bytes FROM usage_records
             WHERE tenant = ?1 AND day BETWEEN ?2 AND ?3",
        )
        .map_err(storage)?;
    let rows = stmt
        .query_map(
            params![tenant.as_str(), stored(*days.start()), stored(*days.end())],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            },
        )
        .map_err(storage)?;
    let mut records = Vec::new();
    for row in rows {
        let (day, client, topic, action, billable, count, bytes) = row.map_err(storage)?;
        let action = match action.as_str() {
            "ingest" => Action::Ingest,
            "deliver" => Action::Deliver,
            "ack" => Action::Ack,
            "delete" => Action::Delete,
            other => return Err(corrupt(format!("usage action {other:?}"))),
        };
        let some = |s: String| (s != NONE).then_some(s);
        records.push(UsageRecord::new(
            tenant.clone(),
            day.max(0) as u64,
            (some(client), some(topic)),
            action,
            billable,
            (count.max(0) as u64, bytes.max(0) as u64),
        ));
    }
    records.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(records)
}
