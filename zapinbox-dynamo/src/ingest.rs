//! Ingest: one transaction stores the events of every call queued for a
//! tenant, their idempotency keys, the tenant's new sequence and the day's
//! quota counts, or nothing.
//!
//! The sequence item makes the tenant's commit order: every ingest
//! transaction moves it from the value it read to that plus its new
//! events, so two transactions of one tenant never commit in parallel and
//! positions are given in commit order; a page lists positions only up to
//! the sequence as `TransactGetItems` reads it, so a reader never passes
//! a transaction halfway through (DESIGN §9, second trap; see `read.rs`).
//! It also bounds a tenant's ingest rate: one transaction at a time per
//! tenant (see the crate docs for figures).

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::oneshot;
use zapinbox_core::raw::{Delivery, Fingerprint, ValidEvent};
use zapinbox_core::{Error, EventId, Ingested, Result, TenantId, Timestamp, Traffic, Way};

use crate::backend::Inner;
use crate::error::backoff;
use crate::item::{
    Item, KEY_EVENT, KEY_EXPIRES, KEY_FINGERPRINT, NewItem, SEQ, SEQ_ITEM, TTL, get_n, get_s, key,
    key_sk, n, s, tenant_pk,
};
use crate::queue::{Pending, Request};
use crate::quota::Today;
use crate::table::{Change, Write};

const OP: &str = "ingest";

/// Most times a group is tried again after another writer of the tenant
/// committed first.
const MAX_TRIES: u32 = 200;

/// What became of one event in this try.
#[derive(Clone, Copy)]
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

/// Takes a call out of the queue if its caller stops waiting before its
/// turn comes.
struct Unqueue<'a> {
    inner: &'a Inner,
    tenant: &'a TenantId,
    id: u64,
}

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        self.inner.queue.remove(self.tenant, self.id);
    }
}

/// Stores `events` of `tenant`, all or nothing. Calls for one tenant
/// queue, and whoever gets the tenant's turn commits everything queued,
/// as many calls per transaction as fit (group commit): each call is
/// answered after the transaction that holds it.
pub(crate) async fn ingest_batch(
    inner: &Arc<Inner>,
    tenant: &TenantId,
    events: Vec<ValidEvent>,
) -> Result<Vec<Ingested>> {
    let clock = &inner.config.clock;
    let (reply, mut answer) = oneshot::channel();
    // Ids drawn in queue order: positions follow ids within a process.
    let pending = || {
        let pending = events.into_iter().map(|e| {
            let parts = e.into_parts();
            let key = parts.idempotency.clone();
            Pending {
                event: parts.into_event(tenant.clone(), clock.next_id()),
                key,
            }
        });
        pending.collect()
    };
    let id = inner.queue.push(tenant, pending, reply);
    let unqueue = Unqueue { inner, tenant, id };
    let turn = inner.ingest_turns.take_owned(tenant).await;
    // Its turn came: from here the call is committed (by this task or
    // the one it spawns) even if its caller stops waiting.
    std::mem::forget(unqueue);
    if let Ok(result) = answer.try_recv() {
        // An earlier turn committed it.
        return result;
    }
    // A task of its own, holding the turn, drains the tenant's queue: a
    // caller that stops waiting does not stop the transactions that answer
    // the others, and this caller is answered as soon as its own committed,
    // not when the queue runs dry.
    let (inner, tenant) = (Arc::clone(inner), tenant.clone());
    drop(tokio::spawn(async move {
        let _turn = turn;
        loop {
            let group = inner.queue.take(&tenant);
            if group.is_empty() {
                return;
            }
            commit(&inner, &tenant, group).await;
        }
    }));
    answer
        .await
        .map_err(|_| Error::permanent("the ingest task ended without an answer"))?
}

/// Commits `group` in one transaction and answers each call: with its
/// ids, or with its own error (a reused key, the quota), or with the
/// storage's error. When the storage refuses a group for good, each call
/// is tried alone, so only the one whose content it refuses hears of it.
async fn commit(inner: &Inner, tenant: &TenantId, group: Vec<Request>) {
    match attempt(inner, tenant, &group).await {
        Ok(answers) => {
            for (request, answer) in group.into_iter().zip(answers) {
                let _ = request.reply.send(answer);
            }
        }
        Err(e) if group.len() > 1 && !e.is_retryable() => {
            for request in group {
                let alone = attempt(inner, tenant, std::slice::from_ref(&request)).await;
                let answer = alone.and_then(|mut answers| {
                    answers
                        .pop()
                        .unwrap_or_else(|| Err(Error::permanent("a call went unanswered")))
                });
                let _ = request.reply.send(answer);
            }
        }
        Err(e) => {
            for request in group {
                let _ = request.reply.send(Err(copy(&e)));
            }
        }
    }
}

/// Tries `group` until it commits or fails; each call's answer.
async fn attempt(
    inner: &Inner,
    tenant: &TenantId,
    group: &[Request],
) -> Result<Vec<Result<Vec<Ingested>>>> {
    let mut found: HashMap<String, Found> = HashMap::new();
    for attempt in 0..MAX_TRIES {
        match try_commit(inner, tenant, group, &mut found).await? {
            Tried::Committed(answers) => return Ok(answers),
            // Another instance moved the sequence, or a transaction was in
            // the way: give it room (a key found in the table needs none).
            Tried::Again { conflict } if conflict || attempt > 0 => backoff(attempt).await,
            Tried::Again { .. } => {}
        }
    }
    Err(Error::transient(format!(
        "tenant {tenant}: {MAX_TRIES} ingest transactions in a row lost to other writers"
    )))
}

/// What one try did.
enum Tried {
    /// Committed: each request's answer, in order. A refusal stands only
    /// once the transaction it was decided beside committed (it may rest
    /// on a key an earlier request of the group took).
    Committed(Vec<Result<Vec<Ingested>>>),
    /// Not stored; try again (after a pause if another transaction was in
    /// the way).
    Again { conflict: bool },
}

/// One try: decides every request in order on what is known (keys found
/// in the table, keys and quota taken by earlier requests of the group),
/// and writes the requests that pass in one transaction.
async fn try_commit(
    inner: &Inner,
    tenant: &TenantId,
    group: &[Request],
    found: &mut HashMap<String, Found>,
) -> Result<Tried> {
    let now = inner.config.clock.now();
    let seq = inner.sequence(tenant).await?;
    let today = Today::read(&inner.table, OP, &inner.config.quotas, tenant, Way::In, now).await?;
    let mut next = seq;
    // Keys taken by earlier requests of the group.
    let mut keys: HashMap<String, (EventId, Fingerprint)> = HashMap::new();
    let mut traffic = Traffic::new(Way::In, 0, 0);
    let mut decisions = Vec::with_capacity(group.len());
    for request in group {
        let decided = decide(&request.events, found, &keys, next, now).and_then(|f| {
            let mine = traffic_of(&request.events, &f);
            if let Some(today) = &today {
                today.check(&inner.config.quotas, sum(traffic, mine))?;
            }
            traffic = sum(traffic, mine);
            Ok(f)
        });
        if let Ok(fates) = &decided {
            for (p, fate) in request.events.iter().zip(fates) {
                if let Fate::New(at) = fate {
                    next = next.max(*at);
                    if let Some((key, fingerprint)) = &p.key {
                        keys.insert(key.clone(), (p.event.id, *fingerprint));
                    }
                }
            }
        }
        decisions.push(decided);
    }
    let answer = |decisions: Vec<Result<Vec<Fate>>>| {
        let answers = group.iter().zip(decisions).map(|(request, decided)| {
            let fates = decided?;
            let events = request.events.iter().zip(fates);
            Ok(events
                .map(|(p, fate)| match fate {
                    Fate::New(_) => Ingested::new(p.event.id, false),
                    Fate::Duplicate(id) => Ingested::new(id, true),
                })
                .collect())
        });
        Tried::Committed(answers.collect())
    };
    if next == seq {
        // Nothing new: every event a duplicate, or every request refused.
        return Ok(answer(decisions));
    }
    let mut writes = vec![sequence_write(tenant, seq, next)];
    // Which key each key action takes.
    let mut keyed: Vec<(usize, String)> = Vec::new();
    for (request, decided) in group.iter().zip(&decisions) {
        let Ok(fates) = decided else { continue };
        for (p, fate) in request.events.iter().zip(fates) {
            let Fate::New(at) = fate else { continue };
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
                keyed.push((writes.len(), key.clone()));
                writes.push(key_write(inner, tenant, key, p.event.id, fingerprint, now));
            }
        }
    }
    writes.extend(today.iter().flat_map(|t| t.counts(traffic)));
    let cancelled = match inner.table.transact(OP, writes).await? {
        Ok(()) => {
            inner.committed(tenant, next);
            return Ok(answer(decisions));
        }
        Err(cancelled) => cancelled,
    };
    let mut conflict = false;
    for (i, (code, old)) in cancelled.reasons.iter().enumerate() {
        match code.as_deref() {
            None | Some("None") => {}
            Some("ConditionalCheckFailed") => {
                if i == 0 {
                    inner.forget_sequence(tenant);
                    conflict = true;
                }
                if let Some((_, key)) = keyed.iter().find(|(at, _)| *at == i)
                    && let Some(old) = old
                {
                    found.insert(key.clone(), read_key(old)?);
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
    Ok(Tried::Again { conflict })
}

fn sum(a: Traffic, b: Traffic) -> Traffic {
    Traffic::new(
        Way::In,
        a.messages.saturating_add(b.messages),
        a.bytes.saturating_add(b.bytes),
    )
}

/// What the new events of a request bring in.
fn traffic_of(events: &[Pending], fates: &[Fate]) -> Traffic {
    let new = events
        .iter()
        .zip(fates)
        .filter(|(_, f)| matches!(f, Fate::New(_)));
    let (messages, bytes) = new.fold((0, 0), |(m, b), (p, _)| {
        (m + 1, b + p.event.payload.len() as u64)
    });
    Traffic::new(Way::In, messages, bytes)
}

/// The storage's error, once for each request it failed.
fn copy(error: &Error) -> Error {
    match error {
        Error::Backend { retryable, source } => Error::Backend {
            retryable: *retryable,
            source: source.to_string().into(),
        },
        other => Error::permanent(other.to_string()),
    }
}

/// Decides each event's fate: positions after `seq` for new ones, the
/// original for a repeated key (in the table, earlier in the group, or
/// earlier in the request), a conflict for a key reused with other
/// content.
fn decide(
    events: &[Pending],
    found: &HashMap<String, Found>,
    group: &HashMap<String, (EventId, Fingerprint)>,
    seq: u64,
    now: Timestamp,
) -> Result<Vec<Fate>> {
    let mut next = seq;
    let mut mine: HashMap<&str, (EventId, Fingerprint)> = HashMap::new();
    let mut fates = Vec::with_capacity(events.len());
    for p in events {
        if let Some((key, fingerprint)) = &p.key {
            let earlier = mine
                .get(key.as_str())
                .or_else(|| group.get(key))
                .copied()
                .or_else(|| {
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
            mine.insert(key, (p.event.id, *fingerprint));
        }
        next = next
            .checked_add(1)
            .ok_or_else(|| Error::permanent("the tenant's sequence item is damaged: at its end"))?;
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
    Write::Update(Change {
        key: key(tenant_pk(tenant), SEQ_ITEM.to_owned()),
        expression: format!("SET {SEQ} = :last"),
        condition: Some(condition),
        names: HashMap::new(),
        values,
    })
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
