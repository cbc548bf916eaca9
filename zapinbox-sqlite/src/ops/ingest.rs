//! Storing events, with idempotency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use zapinbox_core::raw::{EventParts, Fingerprint};
use zapinbox_core::{
    Clock, Error, EventId, Ingested, Quotas, Result, TenantId, Timestamp, Traffic, Way,
};

use crate::error::{corrupt, storage};
use crate::row::millis;
use crate::writer::WriteConn;

/// Stores `rows` in order, all or none. Every idempotency key is checked
/// before the first row is written, so a duplicate is answered and a
/// conflict refused without writing: only a storage failure can fail the
/// request after it wrote, which makes the writer roll back and replay its
/// batch (see `writer`). The new events join the tenant's counts: the
/// first count of a tenant in a transaction at once, later ones just
/// before it commits (see `counts`); in a transaction, they are inserted
/// with those of the requests after this one (see `inserts`).
pub(crate) fn ingest(
    conn: &WriteConn,
    clock: &Clock,
    tenant: &TenantId,
    rows: &Arc<[EventParts]>,
    (window, quotas): (Duration, &Quotas),
) -> Result<Vec<Ingested>> {
    let now = clock.now();
    let plan = plan(conn, clock, now, tenant, rows)?;
    // What is new counts against the day's quota, checked before writing.
    let mut traffic = Traffic::new(Way::In, 0, 0);
    for (row, step) in rows.iter().zip(&plan) {
        if let Step::Store(_) = step {
            traffic.messages += 1;
            traffic.bytes += row.payload.len() as u64;
        }
    }
    crate::ops::quota::charge(conn, quotas, tenant, traffic, now)?;
    let expires = now.saturating_add(window);
    let mut stored = 0;
    let ingested = rows
        .iter()
        .zip(plan)
        .enumerate()
        .map(|(index, (row, step))| match step {
            Step::Store(id) => {
                // Claimable from the writer's `now`: the id's timestamp may
                // be later, when the id sequence carried on past a clock
                // that stepped back.
                conn.inserts.insert(conn, tenant, rows, index, (id, now))?;
                remember(conn, expires, tenant, row, id)?;
                stored += 1;
                Ok(Ingested::new(id, false))
            }
            Step::Duplicate(id) => Ok(Ingested::new(id, true)),
        })
        .collect::<Result<Vec<_>>>()?;
    if stored > 0 {
        conn.pending.add(conn, tenant, stored)?;
    }
    Ok(ingested)
}

/// What ingest does with one row.
enum Step {
    /// Stores it under this new id.
    Store(EventId),
    /// Answers with the event stored before under its key.
    Duplicate(EventId),
}

/// Decides every row before anything is written: a key seen in the window
/// or earlier in the batch is a duplicate with the same content, a
/// conflict with other content.
fn plan(
    conn: &Connection,
    clock: &Clock,
    now: Timestamp,
    tenant: &TenantId,
    rows: &[EventParts],
) -> Result<Vec<Step>> {
    let mut in_batch: HashMap<&str, (EventId, &Fingerprint)> = HashMap::new();
    let mut plan = Vec::with_capacity(rows.len());
    for row in rows {
        let Some((key, fingerprint)) = &row.idempotency else {
            plan.push(Step::Store(clock.next_id()));
            continue;
        };
        if let Some(&(original, first)) = in_batch.get(key.as_str()) {
            if first != fingerprint {
                return Err(Error::IdempotencyConflict {
                    key: key.clone(),
                    original,
                });
            }
            plan.push(Step::Duplicate(original));
        } else if let Some(original) = remembered(conn, now, tenant, key, fingerprint)? {
            plan.push(Step::Duplicate(original));
        } else {
            let id = clock.next_id();
            in_batch.insert(key, (id, fingerprint));
            plan.push(Step::Store(id));
        }
    }
    Ok(plan)
}

/// Keeps the key of a new event, if it has one, for the window.
fn remember(
    conn: &Connection,
    expires: Timestamp,
    tenant: &TenantId,
    row: &EventParts,
    id: EventId,
) -> Result<()> {
    if let Some((key, fingerprint)) = &row.idempotency {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO idempotency_keys (tenant, key, event_id, fingerprint, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                tenant.as_str(),
                key,
                id.to_bytes(),
                &fingerprint.0[..],
                millis(expires),
            ])
        })
        .map_err(storage)?;
    }
    Ok(())
}

/// The original event under `key` if the key is still in its window: a
/// duplicate when the content matches, a conflict when it does not.
fn remembered(
    conn: &Connection,
    now: Timestamp,
    tenant: &TenantId,
    key: &str,
    fingerprint: &Fingerprint,
) -> Result<Option<EventId>> {
    let found: Option<([u8; 16], Vec<u8>)> = conn
        .prepare_cached(
            "SELECT event_id, fingerprint FROM idempotency_keys
             WHERE tenant = ?1 AND key = ?2 AND expires_at > ?3",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![tenant.as_str(), key, millis(now)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(storage)?;
    let Some((id, stored)) = found else {
        return Ok(None);
    };
    let original = EventId::from_bytes(id);
    if stored.len() != 32 {
        return Err(corrupt(format!("fingerprint of key {key:?}")));
    }
    if stored[..] != fingerprint.0[..] {
        return Err(Error::IdempotencyConflict {
            key: key.to_owned(),
            original,
        });
    }
    Ok(Some(original))
}
