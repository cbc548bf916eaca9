//! Claims, lease operations, dead letters and redrive. The rules are
//! `zapinbox_core::Delivery`'s; this file only loads and saves the state.

use rusqlite::{Connection, named_params};
use zapinbox_core::{
    ClaimQuery, ClaimStep, Delivery, Error, EventId, Filter, LeaseToken, Leased, Redrive, Result,
    RetryPolicy, TenantId, Timestamp,
};

use crate::error::storage;
use crate::row::{
    EVENT_COLUMNS, FILTERED, UNSETTLED, change_delivery, filtered, millis, save_delivery,
    stored_from_row, timestamp,
};

/// Claims up to `query.limit` claimable events, the earliest available
/// first; events whose last attempt ran out are dead-lettered on the way.
pub(crate) fn claim(
    conn: &Connection,
    now: Timestamp,
    tenant: &TenantId,
    query: &ClaimQuery,
    policy: &RetryPolicy,
) -> Result<Vec<Leased>> {
    // On events_claimable: only rows available now are read, never the
    // leased or backing-off ones.
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE tenant = :tenant AND status = 0 AND visible_at <= :now AND {FILTERED}
         ORDER BY visible_at, seq LIMIT :limit"
    );
    let f = &query.filter;
    let limit = query.limit as usize;
    let mut claimed = Vec::with_capacity(limit);
    // Every row read is claimed or dead-lettered, so it is not read again;
    // dead letters do not count, so read on until the batch is full.
    while claimed.len() < limit {
        let candidates = {
            let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
            let rows = stmt
                .query_map(
                    &*filtered(
                        f,
                        &f.since.map(millis),
                        named_params! {
                            ":tenant": tenant.as_str(),
                            ":now": millis(now),
                            ":limit": (limit - claimed.len()) as i64,
                        },
                    ),
                    |row| Ok(stored_from_row(tenant, row, now, policy)),
                )
                .map_err(storage)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(storage)?
        };
        if candidates.is_empty() {
            break;
        }
        for candidate in candidates {
            let (_, mut event, mut delivery) = candidate?;
            match delivery.claim_step(now, policy) {
                ClaimStep::Skip => continue,
                ClaimStep::DeadLetter => delivery.dead_letter(),
                ClaimStep::Claim => {
                    let nonce: u64 = rand::random();
                    let (attempt, expires) =
                        delivery.claim(now, query.lease, nonce, policy, rand::random());
                    event.attempts = delivery.attempts;
                    event.leased_until = delivery.leased_until();
                    let token = LeaseToken::new(event.id, nonce);
                    save_delivery(conn, event.id, &delivery)?;
                    claimed.push(Leased::new(event, token, attempt, expires));
                    continue;
                }
            }
            save_delivery(conn, event.id, &delivery)?;
        }
    }
    Ok(claimed)
}

/// When the earliest pending event passing `filter` becomes claimable
/// (see `Leases::claimable_at`).
pub(crate) fn claimable_at(
    conn: &Connection,
    tenant: &TenantId,
    filter: &Filter,
    (now, policy): (Timestamp, &RetryPolicy),
) -> Result<Option<Timestamp>> {
    let sql = format!(
        "SELECT min(visible_at) FROM events
         WHERE tenant = :tenant AND status = 0 AND NOT {UNSETTLED} AND {FILTERED}"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let earliest: Option<i64> = stmt
        .query_row(
            &*filtered(
                filter,
                &filter.since.map(millis),
                named_params! {
                    ":tenant": tenant.as_str(),
                    ":max_attempts": policy.max_attempts,
                    ":now": millis(now),
                },
            ),
            |r| r.get(0),
        )
        .map_err(storage)?;
    Ok(earliest.map(timestamp))
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
