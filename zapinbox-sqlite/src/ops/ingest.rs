//! Storing events, with idempotency.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use zapinbox_core::{Clock, Error, EventId, Ingested, Result, TenantId, Timestamp, ValidEvent};

use crate::error::{corrupt, storage};
use crate::row::millis;

/// Stores `events` in order; the caller's savepoint makes it all or nothing.
pub(crate) fn ingest(
    conn: &Connection,
    clock: &Clock,
    tenant: &TenantId,
    events: &[ValidEvent],
    window: Duration,
) -> Result<Vec<Ingested>> {
    events
        .iter()
        .map(|event| ingest_one(conn, clock, tenant, event, window))
        .collect()
}

fn ingest_one(
    conn: &Connection,
    clock: &Clock,
    tenant: &TenantId,
    event: &ValidEvent,
    window: Duration,
) -> Result<Ingested> {
    let now = clock.now();
    if let Some(key) = event.idempotency_key() {
        if let Some(original) = remembered(conn, now, tenant, key, event)? {
            return Ok(Ingested::new(original, true));
        }
    }
    let id = clock.next_id();
    let e = event.event();
    conn.prepare_cached(
        "INSERT INTO events (id, tenant, source, event_type, topic, client_id, idempotency_key,
                             payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id.to_bytes(),
            tenant.as_str(),
            e.source,
            e.event_type,
            e.topic,
            e.client_id,
            e.idempotency_key,
            event.payload_json(),
            millis(id.created_at()),
        ])
    })
    .map_err(storage)?;
    if let Some(key) = event.idempotency_key() {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO idempotency_keys (tenant, key, event_id, fingerprint, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                tenant.as_str(),
                key,
                id.to_bytes(),
                &event.fingerprint().0[..],
                millis(now.saturating_add(window)),
            ])
        })
        .map_err(storage)?;
    }
    Ok(Ingested::new(id, false))
}

/// The original event under `key` if the key is still in its window: a
/// duplicate when the content matches, a conflict when it does not.
fn remembered(
    conn: &Connection,
    now: Timestamp,
    tenant: &TenantId,
    key: &str,
    event: &ValidEvent,
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
    let Some((id, fingerprint)) = found else {
        return Ok(None);
    };
    let original = EventId::from_bytes(id);
    if fingerprint.len() != 32 {
        return Err(corrupt(format!("fingerprint of key {key:?}")));
    }
    if fingerprint[..] != event.fingerprint().0[..] {
        return Err(Error::IdempotencyConflict {
            key: key.to_owned(),
            original,
        });
    }
    Ok(Some(original))
}
