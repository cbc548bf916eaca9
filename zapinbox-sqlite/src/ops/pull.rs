//! Listing events of one status in commit order.

use rusqlite::{Connection, named_params};
use zapinbox_core::{
    EventStatus, Order, Page, Position, PullQuery, ResolvedQuery, Result, RetryPolicy, TenantId,
    Timestamp,
};

use crate::error::storage;
use crate::row::{EVENT_COLUMNS, FILTERED, UNSETTLED, filtered, millis, seq, stored_from_row};

/// One page of `tenant`'s events in `status` as of `now` (pending for pull,
/// dead letters for their listing); reads one row past the limit to know
/// whether another page exists.
pub(crate) fn list(
    conn: &Connection,
    tenant: &TenantId,
    status: EventStatus,
    query: &PullQuery,
    resolved: ResolvedQuery,
    (now, policy): (Timestamp, &RetryPolicy),
    backend: &str,
) -> Result<Page> {
    // A pending row whose last lease ran out is a dead letter already
    // (Delivery::settle), whether or not that was written down yet.
    let in_status = match status {
        EventStatus::Pending => format!("status = 0 AND NOT {UNSETTLED}"),
        EventStatus::DeadLettered => format!("(status = 2 OR {UNSETTLED})"),
        EventStatus::Acked => "status = 1".to_owned(),
    };
    let (bound, order) = match query.order {
        Order::Asc => ("seq > :start", "ASC"),
        Order::Desc => ("seq < :start", "DESC"),
    };
    let start = match (query.order, resolved.start) {
        (_, Some(pos)) => seq(pos),
        (Order::Asc, None) => 0,
        (Order::Desc, None) => i64::MAX,
    };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE tenant = :tenant AND {in_status} AND {bound} AND {FILTERED}
         ORDER BY seq {order} LIMIT :limit",
    );
    let f = &query.filter;
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let rows = stmt
        .query_map(
            &*filtered(
                f,
                &f.since.map(millis),
                named_params! {
                    ":tenant": tenant.as_str(),
                    ":start": start,
                    ":limit": resolved.limit as i64 + 1,
                    ":max_attempts": policy.max_attempts,
                    ":now": millis(now),
                },
            ),
            |row| Ok(stored_from_row(tenant, row, now, policy)),
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
