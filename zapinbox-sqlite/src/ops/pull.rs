//! Listing events of one status in commit order.

use rusqlite::{Connection, params};
use zapinbox_core::{
    EventStatus, Order, Page, Position, PullQuery, ResolvedQuery, Result, TenantId,
};

use crate::error::storage;
use crate::row::{EVENT_COLUMNS, millis, seq, stored_from_row};

/// One page of `tenant`'s events in `status` (pending for pull, dead
/// letters for their listing); reads one row past the limit to know whether
/// another page exists.
pub(crate) fn list(
    conn: &Connection,
    tenant: &TenantId,
    status: EventStatus,
    query: &PullQuery,
    resolved: ResolvedQuery,
    backend: &str,
) -> Result<Page> {
    let (bound, order) = match query.order {
        Order::Asc => ("seq > ?2", "ASC"),
        Order::Desc => ("seq < ?2", "DESC"),
    };
    let start = match (query.order, resolved.start) {
        (_, Some(pos)) => seq(pos),
        (Order::Asc, None) => 0,
        (Order::Desc, None) => i64::MAX,
    };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE tenant = ?1 AND status = ?8 AND {bound}
           AND (?3 IS NULL OR topic = ?3)
           AND (?4 IS NULL OR event_type = ?4)
           AND (?5 IS NULL OR source = ?5)
           AND (?6 IS NULL OR created_at >= ?6)
         ORDER BY seq {order} LIMIT ?7",
    );
    let f = &query.filter;
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let rows = stmt
        .query_map(
            params![
                tenant.as_str(),
                start,
                f.topic,
                f.event_type,
                f.source,
                f.since.map(millis),
                resolved.limit as i64 + 1,
                status.code(),
            ],
            |row| Ok(stored_from_row(tenant, row)),
        )
        .map_err(storage)?;
    let mut events: Vec<(Position, _)> = Vec::with_capacity(resolved.limit + 1);
    for row in rows {
        let (position, event, _) = row.map_err(storage)??;
        events.push((position, event));
    }
    Ok(Page::from_positions(
        events,
        resolved,
        tenant,
        backend,
        query.order,
    ))
}
