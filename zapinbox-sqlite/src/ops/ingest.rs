//! Storing events, with idempotency.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use zapinbox_core::{
    Clock, Error, EventId, Fingerprint, Ingested, Payload, Result, TenantId, Timestamp, ValidEvent,
};

use crate::error::{corrupt, storage};
use crate::row::millis;

/// What the writer needs of a new event: its strings, nothing else (the
/// payload's JSON tree is dropped on the caller's thread, not the writer's).
pub(crate) struct NewRow {
    source: Option<String>,
    event_type: Option<String>,
    topic: Option<String>,
    client_id: Option<String>,
    idempotency: Option<(String, Fingerprint)>,
    payload: Payload,
}

impl From<ValidEvent> for NewRow {
    fn from(event: ValidEvent) -> Self {
        NewRow {
            idempotency: event.idempotency_key.zip(event.fingerprint),
            payload: event.payload,
            source: event.source,
            event_type: event.event_type,
            topic: event.topic,
            client_id: event.client_id,
        }
    }
}

/// Stores `rows` in order. Any error leaves the batch for the writer to
/// roll back (see `writer`), so a batch is all or nothing.
pub(crate) fn ingest(
    conn: &Connection,
    clock: &Clock,
    tenant: &TenantId,
    rows: &[NewRow],
    window: Duration,
) -> Result<Vec<Ingested>> {
    rows.iter()
        .map(|row| ingest_one(conn, clock, tenant, row, window))
        .collect()
}

fn ingest_one(
    conn: &Connection,
    clock: &Clock,
    tenant: &TenantId,
    row: &NewRow,
    window: Duration,
) -> Result<Ingested> {
    let now = clock.now();
    if let Some((key, fingerprint)) = &row.idempotency {
        if let Some(original) = remembered(conn, now, tenant, key, fingerprint)? {
            return Ok(Ingested::new(original, true));
        }
    }
    let id = clock.next_id();
    conn.prepare_cached(
        "INSERT INTO events (id, tenant, source, event_type, topic, client_id, idempotency_key,
                             payload, created_at, visible_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id.to_bytes(),
            tenant.as_str(),
            row.source,
            row.event_type,
            row.topic,
            row.client_id,
            row.idempotency.as_ref().map(|(key, _)| key),
            row.payload.as_str(),
            millis(id.created_at()),
            millis(now),
        ])
    })
    .map_err(storage)?;
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
