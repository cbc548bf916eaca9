//! Ingest: one transaction stores a batch's events, their idempotency
//! keys, the tenant's new sequence and the day's quota counts, or nothing.
//!
//! The sequence item makes the tenant's commit order: every ingest
//! transaction moves it from the value it read to that plus its new
//! events, so two transactions of one tenant never commit in parallel and
//! a reader that has seen position `p` has seen every event at or before
//! `p` (DESIGN §9, second trap). It also bounds a tenant's ingest rate:
//! one writer at a time per tenant (see the crate docs for figures).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use zapinbox_core::raw::{Delivery, Fingerprint, ValidEvent};
use zapinbox_core::{Error, Event, EventId, Ingested, Result, TenantId, Timestamp, Traffic, Way};

use crate::backend::Inner;
use crate::item::{
    Item, KEY_EVENT, KEY_EXPIRES, KEY_FINGERPRINT, NewItem, SEQ, SEQ_ITEM, TTL, get_n, get_s, key,
    key_sk, n, s, tenant_pk,
};
use crate::quota::Today;
use crate::table::Write;

const OP: &str = "ingest";

/// Most times a batch is tried again after another writer of the tenant
/// committed first.
const MAX_TRIES: u32 = 200;

/// An event of the batch: its id, content and key.
struct Pending {
    event: Event,
    key: Option<(String, Fingerprint)>,
}

/// What became of one event of the batch in this try.
enum Fate {
    /// Stored now, at this position.
    New(u64),
    /// Its key already stored this event.
    Duplicate(EventId),
}

/// A key found in the table on an earlier try: the event it stored.
#[derive(Clone, Copy)]
struct Found {
    id: EventId,
    fingerprint: Fingerprint,
    expires: Timestamp,
}

pub(crate) async fn ingest_batch(
    inner: &Inner,
    tenant: &TenantId,
    events: Vec<ValidEvent>,
) -> Result<Vec<Ingested>> {
    let clock = &inner.config.clock;
    let batch: Vec<Pending> = events
        .into_iter()
        .map(|e| {
            let id = clock.next_id();
            let parts = e.into_parts();
            let key = parts.idempotency.clone();
            Pending {
                event: parts.into_event(tenant.clone(), id),
                key,
            }
        })
        .collect();
    // One transaction of this tenant at a time from this process: they
    // would only cancel each other on the sequence item.
    let _turn = inner.turn(tenant).await;
    let mut found: HashMap<String, Found> = HashMap::new();
    for attempt in 0..MAX_TRIES {
        let now = clock.now();
        let seq = inner.sequence(tenant).await?;
        let fates = decide(&batch, &found, seq, now)?;
        let fresh: Vec<(&Pending, u64)> = batch
            .iter()
            .zip(&fates)
            .filter_map(|(p, f)| match f {
                Fate::New(at) => Some((p, *at)),
                Fate::Duplicate(_) => None,
            })
            .collect();
        let answer = || {
            batch
                .iter()
                .zip(&fates)
                .map(|(p, f)| match f {
                    Fate::New(_) => Ingested::new(p.event.id, false),
                    Fate::Duplicate(id) => Ingested::new(*id, true),
                })
                .collect::<Vec<_>>()
        };
        if fresh.is_empty() {
            return Ok(answer());
        }
        let today =
            Today::read(&inner.table, OP, &inner.config.quotas, tenant, Way::In, now).await?;
        let bytes = fresh
            .iter()
            .map(|(p, _)| p.event.payload.len() as u64)
            .sum();
        let traffic = Traffic::new(Way::In, fresh.len() as u64, bytes);
        if let Some(today) = &today {
            today.check(&inner.config.quotas, traffic)?;
        }
        let last = seq + fresh.len() as u64;
        let mut writes = vec![sequence_write(tenant, seq, last)];
        let mut keyed: Vec<(usize, &str)> = Vec::new();
        for (p, at) in &fresh {
            writes.push(Write::Put {
                item: NewItem {
                    tenant,
                    event: &p.event,
                    seq: *at,
                    delivery: Delivery::available_from(now),
                    config: &inner.config,
                }
                .into_item(),
                condition: Some("attribute_not_exists(sk)".into()),
                values: Item::new(),
                want_old: false,
            });
            if let Some((key, fingerprint)) = &p.key {
                keyed.push((writes.len(), key));
                writes.push(key_write(inner, tenant, key, p.event.id, fingerprint, now));
            }
        }
        let counted = today.iter().flat_map(|t| t.counts(traffic));
        writes.extend(counted);
        match inner.table.transact(OP, writes).await? {
            Ok(()) => {
                inner.committed(tenant, last);
                return Ok(answer());
            }
            Err(cancelled) => {
                let mut conflict = false;
                for (i, (code, old)) in cancelled.reasons.iter().enumerate() {
                    match code.as_deref() {
                        None | Some("None") => {}
                        Some("ConditionalCheckFailed") => {
                            if i == 0 {
                                inner.forget_sequence(tenant);
                            }
                            if let Some((_, key)) = keyed.iter().find(|(at, _)| *at == i)
                                && let Some(old) = old
                            {
                                found.insert((*key).to_owned(), read_key(old)?);
                            }
                        }
                        Some(code) if crate::error::retryable_code(code) => conflict = true,
                        Some(code) => {
                            return Err(Error::permanent(format!(
                                "DynamoDB refused the ingest transaction: {code}"
                            )));
                        }
                    }
                }
                if conflict {
                    backoff(attempt).await;
                }
            }
        }
    }
    Err(Error::transient(format!(
        "tenant {tenant}: {MAX_TRIES} ingest transactions in a row lost to other writers"
    )))
}

/// Decides each event's fate: positions after `seq` for new ones, the
/// original for a repeated key (in the table or earlier in the batch), a
/// conflict for a key reused with other content.
fn decide(
    batch: &[Pending],
    found: &HashMap<String, Found>,
    seq: u64,
    now: Timestamp,
) -> Result<Vec<Fate>> {
    let mut next = seq;
    let mut in_batch: HashMap<&str, (EventId, Fingerprint)> = HashMap::new();
    let mut fates = Vec::with_capacity(batch.len());
    for p in batch {
        if let Some((key, fingerprint)) = &p.key {
            let earlier = in_batch.get(key.as_str()).copied().or_else(|| {
                let f = found.get(key).filter(|f| f.expires > now)?;
                Some((f.id, f.fingerprint))
            });
            if let Some((original, stored)) = earlier {
                if stored != *fingerprint {
                    return Err(Error::IdempotencyConflict {
                        key: key.clone(),
                        original,
                    });
                }
                fates.push(Fate::Duplicate(original));
                continue;
            }
            in_batch.insert(key, (p.event.id, *fingerprint));
        }
        next += 1;
        fates.push(Fate::New(next));
    }
    Ok(fates)
}

/// Moves the tenant's sequence from `seq` (as read) to `last`.
fn sequence_write(tenant: &TenantId, seq: u64, last: u64) -> Write {
    let mut values = HashMap::from([(":last".to_owned(), n(last))]);
    let condition = if seq == 0 {
        format!("attribute_not_exists({SEQ})")
    } else {
        values.insert(":seq".into(), n(seq));
        format!("{SEQ} = :seq")
    };
    Write::Update {
        key: key(tenant_pk(tenant), SEQ_ITEM.to_owned()),
        expression: format!("SET {SEQ} = :last"),
        condition: Some(condition),
        names: HashMap::new(),
        values,
    }
}

/// Takes `key` for event `id`, unless it is taken and its window still
/// open: then the transaction fails and says by whom.
fn key_write(
    inner: &Inner,
    tenant: &TenantId,
    key_name: &str,
    id: EventId,
    fingerprint: &Fingerprint,
    now: Timestamp,
) -> Write {
    let expires = now.saturating_add(inner.config.idempotency_window);
    let mut item = key(tenant_pk(tenant), key_sk(key_name));
    item.insert(KEY_EVENT.into(), s(id.to_string()));
    item.insert(
        KEY_FINGERPRINT.into(),
        AttributeValue::B(Blob::new(fingerprint.0.to_vec())),
    );
    item.insert(KEY_EXPIRES.into(), n(expires.as_millis()));
    item.insert(TTL.into(), n(expires.as_millis() / 1000 + 1));
    Write::Put {
        item,
        condition: Some(format!("attribute_not_exists(sk) OR {KEY_EXPIRES} <= :now")),
        values: HashMap::from([(":now".to_owned(), n(now.as_millis()))]),
        want_old: true,
    }
}

/// Reads a key item found in the way.
fn read_key(item: &Item) -> Result<Found> {
    let damaged = || Error::permanent("stored idempotency key is damaged");
    let id = get_s(item, KEY_EVENT)?
        .and_then(|id| id.parse().ok())
        .ok_or_else(damaged)?;
    let fingerprint = match item.get(KEY_FINGERPRINT) {
        Some(AttributeValue::B(blob)) => {
            let bytes: [u8; 32] = blob.as_ref().try_into().map_err(|_| damaged())?;
            Fingerprint(bytes)
        }
        _ => return Err(damaged()),
    };
    let expires = Timestamp::from_millis(get_n(item, KEY_EXPIRES)?.ok_or_else(damaged)?);
    Ok(Found {
        id,
        fingerprint,
        expires,
    })
}

/// Waits a little longer after each conflict, with jitter, so writers on
/// other instances take turns.
pub(crate) async fn backoff(attempt: u32) {
    let base = 2u64.saturating_pow(attempt.min(6));
    let ms = base + rand::random_range(0..=base);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
