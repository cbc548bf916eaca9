//! Claims, lease operations, dead letters and redrive. The rules are
//! `zapinbox_core::Delivery`'s; this file only loads and saves the state.

use rusqlite::{Connection, OptionalExtension, named_params, params};
use zapinbox_core::raw::{ClaimStep, Delivery};
use zapinbox_core::{
    ClaimQuery, Error, EventId, Filter, LeaseToken, Leased, Redrive, Result, RetryPolicy, TenantId,
    Timestamp,
};

use crate::error::storage;
use crate::row::{
    EVENT_COLUMNS, UNSETTLED, change_delivery, filter_sql, filtered, millis, save_delivery,
    stored_from_row, timestamp,
};

/// The rows a claim would take at `now`, at most `want`, the earliest
/// available first. Read on a read connection: the writer only ever sees a
/// claim that found something, and never scans for one.
pub(crate) fn claim_candidates(
    conn: &Connection,
    now: Timestamp,
    tenant: &TenantId,
    filter: &Filter,
    want: usize,
) -> Result<Vec<i64>> {
    let sql = candidates_sql(filter);
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let since = filter.since.map(millis);
    let rows = stmt
        .query_map(
            &*filtered(
                filter,
                &since,
                named_params! {
                    ":tenant": tenant.as_str(),
                    ":now": millis(now),
                    ":want": want as i64,
                },
            ),
            |r| r.get(0),
        )
        .map_err(storage)?;
    rows.collect::<rusqlite::Result<_>>().map_err(storage)
}

/// A claim's candidates, on the claim index of its topic if it names one
/// (events_claimable_topic), else on the tenant's (events_claimable):
/// only rows available now are read, never the leased or backing-off ones.
/// A type or source without a topic is checked row by row.
pub(crate) fn candidates_sql(filter: &Filter) -> String {
    format!(
        "SELECT seq FROM events INDEXED BY {}
         WHERE tenant = :tenant AND status = 0 AND visible_at <= :now{}
         ORDER BY visible_at, seq LIMIT :want",
        claim_index(filter),
        filter_sql(filter)
    )
}

/// The index a claim follows: its topic's, else the tenant's.
fn claim_index(filter: &Filter) -> &'static str {
    match filter.topic {
        Some(_) => "events_claimable_topic",
        None => "events_claimable",
    }
}

/// Claims up to `query.limit` of the `candidates` (row numbers, in the
/// order to take them) that are still claimable at `now`; those whose
/// last attempt ran out are dead-lettered on the way. Returns the claims
/// and whether every candidate was used up.
pub(crate) fn claim(
    conn: &Connection,
    now: Timestamp,
    tenant: &TenantId,
    candidates: &[i64],
    query: &ClaimQuery,
    policy: &RetryPolicy,
) -> Result<(Vec<Leased>, bool)> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1 AND tenant = ?2");
    let limit = query.limit as usize;
    let mut claimed = Vec::with_capacity(limit);
    let mut used = 0;
    for &seq in candidates {
        if claimed.len() >= limit {
            break;
        }
        used += 1;
        let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
        let row = stmt
            .query_row(params![seq, tenant.as_str()], |row| {
                Ok(stored_from_row(tenant, row, now, policy))
            })
            .optional()
            .map_err(storage)?;
        // Gone since the candidates were read: deleted, say.
        let Some(row) = row else { continue };
        let (_, mut event, stored) = row?;
        let mut delivery = stored;
        match delivery.claim_step(now, policy) {
            // Taken or acked since the candidates were read.
            ClaimStep::Skip => continue,
            ClaimStep::DeadLetter => delivery.dead_letter(),
            ClaimStep::Claim => {
                let nonce: u64 = rand::random();
                let (attempt, expires) =
                    delivery.claim(now, query.lease, nonce, policy, rand::random());
                event.attempts = delivery.attempts;
                event.leased_until = delivery.leased_until();
                let token = LeaseToken::new(event.id, nonce);
                save_delivery(conn, seq, &stored, &delivery)?;
                claimed.push(Leased::new(event, token, attempt, expires));
                continue;
            }
        }
        save_delivery(conn, seq, &stored, &delivery)?;
    }
    Ok((claimed, used == candidates.len()))
}

/// When the earliest pending event passing `filter` becomes claimable
/// (see `Leases::claimable_at`): the first entry of its claim index.
pub(crate) fn claimable_at(
    conn: &Connection,
    tenant: &TenantId,
    filter: &Filter,
    (now, policy): (Timestamp, &RetryPolicy),
) -> Result<Option<Timestamp>> {
    let sql = claimable_at_sql(filter);
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let since = filter.since.map(millis);
    let earliest: Option<i64> = stmt
        .query_row(
            &*filtered(
                filter,
                &since,
                named_params! {
                    ":tenant": tenant.as_str(),
                    ":max_attempts": policy.max_attempts,
                    ":now": millis(now),
                },
            ),
            |r| r.get(0),
        )
        .optional()
        .map_err(storage)?;
    Ok(earliest.map(timestamp))
}

pub(crate) fn claimable_at_sql(filter: &Filter) -> String {
    format!(
        "SELECT visible_at FROM events INDEXED BY {}
         WHERE tenant = :tenant AND status = 0 AND NOT {UNSETTLED}{}
         ORDER BY visible_at LIMIT 1",
        claim_index(filter),
        filter_sql(filter)
    )
}

/// Runs `f` on the settled delivery state of the event `token` leases and
/// saves it if `f` succeeds.
pub(crate) fn with_lease<T>(
    conn: &Connection,
    tenant: &TenantId,
    token: LeaseToken,
    at: (Timestamp, &RetryPolicy),
    f: impl FnOnce(&mut Delivery) -> Result<T>,
) -> Result<T> {
    let id = token.event();
    change_delivery(conn, tenant, id, at, f)?.ok_or(Error::LeaseLost { id })
}

/// Returns dead letters to the inbox; how many were redriven.
pub(crate) fn redrive(
    conn: &Connection,
    (now, policy): (Timestamp, &RetryPolicy),
    tenant: &TenantId,
    which: &Redrive,
) -> Result<u64> {
    let ids = match which {
        Redrive::Ids(ids) => ids.clone(),
        Redrive::All => {
            let sql = format!(
                "SELECT id FROM events WHERE tenant = :tenant AND (status = 2 OR {UNSETTLED})"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
            let rows = stmt
                .query_map(
                    named_params! {
                        ":tenant": tenant.as_str(),
                        ":max_attempts": policy.max_attempts,
                        ":now": millis(now),
                    },
                    |r| r.get::<_, [u8; 16]>(0),
                )
                .map_err(storage)?;
            let ids = rows
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(storage)?;
            ids.into_iter().map(EventId::from_bytes).collect()
        }
    };
    let mut count = 0;
    for id in ids {
        let redriven = change_delivery(conn, tenant, id, (now, policy), |d| Ok(d.redrive(now)))?;
        count += u64::from(redriven == Some(true));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use zapinbox_core::PullQuery;

    use super::*;
    use crate::schema::query_plan as plan;

    #[test]
    fn claims_and_their_polls_read_only_what_is_claimable_without_sorting() {
        let conn = crate::schema::planned_db();
        for (filter, index) in [
            (
                PullQuery::new().filter,
                "INDEX events_claimable (tenant=? AND status=?",
            ),
            (
                PullQuery::new().topic("t").filter,
                "INDEX events_claimable_topic (tenant=? AND topic=?",
            ),
        ] {
            for sql in [candidates_sql(&filter), claimable_at_sql(&filter)] {
                let steps = plan(&conn, &sql);
                assert!(steps.contains(index), "{sql}: {steps}");
                assert!(!steps.contains("TEMP B-TREE"), "no sort: {steps}");
            }
        }
    }
}
