//! Listing pending events or dead letters in commit order, at a cost that
//! follows what a page returns, not the size of the tenant's backlog.

use rusqlite::{Connection, ToSql, named_params};
use zapinbox_core::raw::ResolvedQuery;
use zapinbox_core::{
    Event, Filter, Order, Page, PullQuery, Result, RetryPolicy, TenantId, Timestamp,
};

use crate::error::storage;
use crate::row::{
    EVENT_COLUMNS, FilterField, UNSETTLED, filter_fields, filter_sql, filtered, millis, position,
    seq, stored_from_row,
};

/// Most index entries one page looks at when rows are checked one by one:
/// when more than one of topic, type and source are asked for (an index
/// serves one of them), for a dense `since`, and while more than this many
/// pending rows are unsettled. Past it the page ends early, with a cursor
/// and `has_more`, so no page holds a reader for long, whatever the filter.
pub(crate) const SCAN_BUDGET: i64 = 4096;

/// Which events a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listing {
    /// Pending events (pull).
    Pending,
    /// Dead letters, including pending events whose last lease ran out
    /// (`Delivery::settle`), written down or not.
    DeadLetters,
}

/// Where a page may look, in commit order.
struct Window {
    order: Order,
    /// Exclusive start.
    start: i64,
    /// The lowest row that can pass `since`.
    floor: Option<i64>,
    /// Where the scan budget ran out: the last row to look at.
    end: Option<i64>,
}

impl Window {
    fn sql(&self) -> String {
        let mut sql = String::from(match self.order {
            Order::Asc => " AND seq > :start",
            Order::Desc => " AND seq < :start",
        });
        if self.floor.is_some() {
            sql.push_str(" AND seq >= :floor");
        }
        if self.end.is_some() {
            sql.push_str(match self.order {
                Order::Asc => " AND seq <= :end",
                Order::Desc => " AND seq >= :end",
            });
        }
        sql
    }

    fn params(&self) -> Vec<(&'static str, &dyn ToSql)> {
        let mut params: Vec<(&str, &dyn ToSql)> = vec![(":start", &self.start)];
        if let Some(floor) = &self.floor {
            params.push((":floor", floor));
        }
        if let Some(end) = &self.end {
            params.push((":end", end));
        }
        params
    }

    fn order_sql(&self) -> &'static str {
        match self.order {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        }
    }
}

/// One page of `tenant`'s events as of `now`; reads one row past the limit
/// to know whether another page exists.
pub(crate) fn list(
    conn: &Connection,
    tenant: &TenantId,
    listing: Listing,
    query: &PullQuery,
    resolved: ResolvedQuery,
    at: (Timestamp, &RetryPolicy),
    backend: &str,
) -> Result<Page> {
    // Every statement of the page reads one snapshot: a row that moves
    // between the two sets of dead letters is seen once.
    let _snapshot = conn.unchecked_transaction().map_err(storage)?;
    let start = match (query.order, &resolved.start) {
        (_, Some(pos)) => seq(pos)?,
        (Order::Asc, None) => 0,
        (Order::Desc, None) => i64::MAX,
    };
    let mut window = Window {
        order: query.order,
        start,
        floor: None,
        end: None,
    };
    let page = |rows: Vec<(i64, Event)>, scanned_to: Option<i64>| {
        let rows = rows
            .into_iter()
            .map(|(seq, e)| (position(seq), e))
            .collect();
        let scanned_to = scanned_to.map(position);
        Page::from_scan(
            rows,
            resolved.clone(),
            scanned_to,
            tenant,
            backend,
            query.order,
        )
    };
    let limit = resolved.limit as i64 + 1;
    let f = &query.filter;
    let rows = match listing {
        Listing::Pending => {
            let mut dense = false;
            if let Some(since) = f.since {
                match since_floor(conn, tenant, since)? {
                    // Ascending, the floor is the start if it is later:
                    // given two lower bounds, SQLite would range over one
                    // and check the other row by row.
                    Floor::At(floor) if query.order == Order::Asc => {
                        window.start = window.start.max(floor - 1);
                    }
                    Floor::At(floor) => window.floor = Some(floor),
                    Floor::Dense => dense = true,
                    Floor::Nothing => return Ok(page(Vec::new(), None)),
                }
            }
            // Rows are checked one by one for all but one field, for a
            // `since` too dense to find its floor, and for being unsettled
            // (skipped, being dead letters): bound the work when any of
            // them may be many.
            if indexed_fields(f) > 1 || dense || many_at_last_attempt(conn, tenant, at.1)? {
                window.end = scan_end(conn, tenant, f, &window)?;
            }
            let status = format!("status = 0 AND NOT {UNSETTLED}");
            let index = pending_index(f);
            select(conn, tenant, (&status, index), f, &window, limit, at)?
        }
        Listing::DeadLetters => {
            // Two small sets, each on its own index: written-down dead
            // letters, and pending rows whose last lease has run out.
            let dead = ("status = 2", "events_by_tenant_status");
            let mut rows = select(conn, tenant, dead, f, &window, limit, at)?;
            let unsettled = format!("status = 0 AND {UNSETTLED}");
            let last_attempts = (unsettled.as_str(), "events_pending_attempts");
            rows.extend(select(conn, tenant, last_attempts, f, &window, limit, at)?);
            match query.order {
                Order::Asc => rows.sort_unstable_by_key(|(pos, _)| *pos),
                Order::Desc => rows.sort_unstable_by_key(|(pos, _)| std::cmp::Reverse(*pos)),
            }
            rows.truncate(limit as usize);
            rows
        }
    };
    Ok(page(rows, window.end))
}

/// The index a pending listing follows: its topic's, type's or source's
/// (in that order of preference), else the tenant's.
fn pending_index(filter: &Filter) -> &'static str {
    index_of(followed(&filter_fields(filter, &None)))
}

/// The field whose index a pending listing follows: the first of topic,
/// type and source that is set.
fn followed<'f, 'a>(fields: &'f [FilterField<'a>]) -> Option<&'f FilterField<'a>> {
    fields.iter().find(|f| f.pending_index.is_some())
}

/// The index of pending rows that serves `field`, or the tenant's.
fn index_of(field: Option<&FilterField<'_>>) -> &'static str {
    field
        .and_then(|f| f.pending_index)
        .unwrap_or("events_by_tenant_status")
}

/// The statement of a listing: rows of `tenant` in `status` (SQL),
/// following `index`, passing `filter`, inside `window`, in its order.
fn listing_sql((status, index): (&str, &str), filter: &Filter, window: &Window) -> String {
    // The index is named, not left to the planner: without statistics it
    // would take the tenant's index for every filter.
    format!(
        "SELECT {EVENT_COLUMNS} FROM events INDEXED BY {index}
         WHERE tenant = :tenant AND {status}{}{}
         ORDER BY seq {} LIMIT :limit",
        window.sql(),
        filter_sql(filter),
        window.order_sql(),
    )
}

/// Up to `limit` rows of `tenant` in `status` (SQL, with the index to
/// follow) passing `filter` inside `window`, in its order.
fn select(
    conn: &Connection,
    tenant: &TenantId,
    (status, index): (&str, &str),
    filter: &Filter,
    window: &Window,
    limit: i64,
    (now, policy): (Timestamp, &RetryPolicy),
) -> Result<Vec<(i64, Event)>> {
    let sql = listing_sql((status, index), filter, window);
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let since = filter.since.map(millis);
    let (now_ms, tenant_str) = (millis(now), tenant.as_str());
    let mut rest: Vec<(&str, &dyn ToSql)> = vec![(":tenant", &tenant_str), (":limit", &limit)];
    if status.contains(UNSETTLED) {
        rest.push((":max_attempts", &policy.max_attempts));
        rest.push((":now", &now_ms));
    }
    rest.extend(window.params());
    let params = filtered(filter, &since, &rest);
    let rows = stmt
        .query_map(&*params, |row| {
            Ok(stored_from_row(tenant, row, now, policy))
        })
        .map_err(storage)?;
    let mut events = Vec::new();
    for row in rows {
        let (seq, event, _) = row.map_err(storage)??;
        events.push((seq, event));
    }
    Ok(events)
}

/// How many of topic, type and source `filter` asks for: one has an
/// index to follow; more leave the rest to be checked row by row.
fn indexed_fields(filter: &Filter) -> usize {
    let fields = filter_fields(filter, &None);
    fields.iter().filter(|f| f.pending_index.is_some()).count()
}

/// Whether more than [`SCAN_BUDGET`] of `tenant`'s pending rows may be
/// unsettled (their last lease ran out): a pending listing skips each of
/// them row by row. Counted on the attempts index alone, so at most that
/// many entries are read: rows at their last attempt, leased or not (the
/// lease's end is not in the index). Usually there are few (the next
/// claim writes unsettled rows down as dead letters).
fn many_at_last_attempt(
    conn: &Connection,
    tenant: &TenantId,
    policy: &RetryPolicy,
) -> Result<bool> {
    let at_last_attempt: i64 = conn
        .prepare_cached(AT_LAST_ATTEMPT)
        .and_then(|mut stmt| {
            stmt.query_row(
                named_params! {
                    ":tenant": tenant.as_str(),
                    ":max_attempts": policy.max_attempts,
                    ":cap": SCAN_BUDGET + 1,
                },
                |r| r.get(0),
            )
        })
        .map_err(storage)?;
    Ok(at_last_attempt > SCAN_BUDGET)
}

/// Pending rows at their last attempt, up to `:cap`, from the index alone
/// (`:max_attempts` first: see `UNSETTLED`).
const AT_LAST_ATTEMPT: &str = "SELECT count(*) FROM (
         SELECT 1 FROM events INDEXED BY events_pending_attempts
         WHERE tenant = :tenant AND status = 0
           AND attempts >= :max_attempts AND attempts > 0
         LIMIT :cap)";

/// Most entries of the creation index read to find where a `since`
/// listing starts: they are small and read in order (about 1 ms for
/// 10 000).
const SINCE_BUDGET: i64 = 65_536;

/// Where a listing with `since` can start.
enum Floor {
    /// Nothing pending is that recent.
    Nothing,
    /// The lowest pending row created at or after `since`.
    At(i64),
    /// More than [`SINCE_BUDGET`] rows are that recent: the listing finds
    /// them as it goes, looking at most [`SCAN_BUDGET`] rows a page.
    Dense,
}

/// Where a listing of `tenant`'s pending events with `since` can start,
/// found on the creation index reading at most [`SINCE_BUDGET`] entries.
fn since_floor(conn: &Connection, tenant: &TenantId, since: Timestamp) -> Result<Floor> {
    let (recent, lowest): (i64, Option<i64>) = conn
        .prepare_cached(SINCE_FLOOR)
        .and_then(|mut stmt| {
            stmt.query_row(
                named_params! {
                    ":tenant": tenant.as_str(),
                    ":since": millis(since),
                    ":cap": SINCE_BUDGET + 1,
                },
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .map_err(storage)?;
    Ok(match lowest {
        None => Floor::Nothing,
        Some(_) if recent > SINCE_BUDGET => Floor::Dense,
        Some(lowest) => Floor::At(lowest),
    })
}

pub(crate) const SINCE_FLOOR: &str = "SELECT count(*), min(seq) FROM (
         SELECT seq FROM events INDEXED BY events_pending_created
         WHERE tenant = :tenant AND status = 0 AND created_at >= :since
         LIMIT :cap)";

/// Where a page of `filter` must stop looking: the pending row
/// [`SCAN_BUDGET`] entries into the index the listing follows (its first
/// field's, else the tenant's), or `None` if fewer remain.
fn scan_end(
    conn: &Connection,
    tenant: &TenantId,
    filter: &Filter,
    window: &Window,
) -> Result<Option<i64>> {
    let fields = filter_fields(filter, &None);
    let field = followed(&fields);
    let bounds = Window {
        end: None,
        ..*window
    };
    let sql = format!(
        "SELECT seq FROM events INDEXED BY {}
         WHERE tenant = :tenant AND status = 0{}{}
         ORDER BY seq {} LIMIT 1 OFFSET :budget",
        index_of(field),
        field.map_or("", |f| f.term),
        bounds.sql(),
        bounds.order_sql(),
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let tenant_str = tenant.as_str();
    let mut params: Vec<(&str, &dyn ToSql)> =
        vec![(":tenant", &tenant_str), (":budget", &SCAN_BUDGET)];
    if let Some(f) = field {
        params.push((f.param, f.value));
    }
    params.extend(bounds.params());
    use rusqlite::OptionalExtension;
    stmt.query_row(&*params, |r| r.get(0))
        .optional()
        .map_err(storage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::query_plan as plan;

    /// The statement a pending listing runs.
    fn pending_sql(filter: &Filter, order: Order, floor: bool) -> String {
        let window = Window {
            order,
            start: 0,
            floor: floor.then_some(0),
            end: None,
        };
        let status = format!("status = 0 AND NOT {UNSETTLED}");
        listing_sql((&status, pending_index(filter)), filter, &window)
    }

    use crate::schema::planned_db as db;

    #[test]
    fn a_listing_is_prepared_once_whatever_it_binds() {
        use rusqlite::StatementStatus;
        let conn = db();
        let filter = PullQuery::new().topic("t").filter;
        let sql = pending_sql(&filter, Order::Asc, false);
        let mut stmt = conn.prepare(&sql).expect("prepare");
        for start in 0..5i64 {
            let mut rows = stmt
                .query(named_params! {
                    ":tenant": "a", ":start": start, ":topic": "t", ":limit": 10,
                    ":max_attempts": 3, ":now": start,
                })
                .expect("query");
            while rows.next().expect("row").is_some() {}
        }
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
    }

    #[test]
    fn each_filter_reads_its_own_index_in_commit_order_both_ways() {
        let conn = db();
        let cases = [
            (PullQuery::new(), "events_by_tenant_status"),
            (PullQuery::new().topic("t"), "events_pending_topic"),
            (PullQuery::new().event_type("t"), "events_pending_type"),
            (PullQuery::new().source("s"), "events_pending_source"),
        ]
        .map(|(query, index)| (query.filter, index));
        for (filter, index) in cases {
            for order in [Order::Asc, Order::Desc] {
                let steps = plan(&conn, &pending_sql(&filter, order, false));
                assert!(steps.contains(index), "{filter:?} {order:?}: {steps}");
                assert!(!steps.contains("TEMP B-TREE"), "no sort: {steps}");
            }
        }
    }

    #[test]
    fn since_finds_its_floor_on_the_creation_index() {
        let conn = db();
        let floor = plan(&conn, SINCE_FLOOR);
        assert!(
            floor.contains("COVERING INDEX events_pending_created"),
            "{floor}"
        );
        let filter = PullQuery::new().since(Timestamp::EPOCH).filter;
        // Ascending, the floor becomes the start; descending, it bounds the
        // range from below, so neither walks the rows older than `since`.
        for (order, floor, range) in [
            (Order::Asc, false, "(tenant=? AND status=? AND seq>?)"),
            (
                Order::Desc,
                true,
                "(tenant=? AND status=? AND seq>? AND seq<?)",
            ),
        ] {
            let steps = plan(&conn, &pending_sql(&filter, order, floor));
            assert!(steps.contains(range), "{order:?}: {steps}");
            assert!(!steps.contains("TEMP B-TREE"), "no sort: {steps}");
        }
    }

    #[test]
    fn dead_letters_read_only_dead_letters_and_last_attempts() {
        let conn = db();
        let window = Window {
            order: Order::Asc,
            start: 0,
            floor: None,
            end: None,
        };
        let all = Filter::default();
        let dead = listing_sql(("status = 2", "events_by_tenant_status"), &all, &window);
        let dead = plan(&conn, &dead);
        assert!(
            dead.contains("events_by_tenant_status (tenant=? AND status=? AND seq>?)"),
            "{dead}"
        );
        let unsettled = format!("status = 0 AND {UNSETTLED}");
        let last = listing_sql((&unsettled, "events_pending_attempts"), &all, &window);
        let steps = plan(&conn, &last);
        assert!(
            steps.contains("events_pending_attempts (tenant=? AND attempts>?)"),
            "{steps}"
        );
        assert_eq!(index_seeks(&conn, &last), ["SeekGE"], "{last}");
    }

    #[test]
    fn pages_count_last_attempts_on_the_index_alone_from_the_last_attempts_on() {
        let conn = db();
        let steps = plan(&conn, AT_LAST_ATTEMPT);
        assert!(steps.contains("COVERING INDEX"), "no table reads: {steps}");
        assert_eq!(index_seeks(&conn, AT_LAST_ATTEMPT), ["SeekGE"]);
    }

    #[test]
    fn unsettled_counts_start_at_the_last_attempts() {
        let conn = db();
        let sql = crate::ops::stats::unsettled_count();
        assert_eq!(index_seeks(&conn, &sql), ["SeekGE"], "{sql}");
    }

    /// How `sql` enters its index: `SeekGE` for `attempts >= :max_attempts`,
    /// `SeekGT` for `attempts > 0` (which would walk every claimed row).
    fn index_seeks(conn: &Connection, sql: &str) -> Vec<String> {
        crate::schema::opcodes(conn, sql)
            .into_iter()
            .filter(|op| op == "SeekGE" || op == "SeekGT")
            .collect()
    }
}
