//! How events, idempotency keys and counters are laid out as items of the
//! one table: every attribute name and sort-key shape lives here.
//!
//! Everything of a tenant sits under one partition key, `T#<tenant>`:
//!
//! | sort key | item |
//! |---|---|
//! | `#seq` | the tenant's commit sequence (the last position given) |
//! | `E#<event id>` | an event, its delivery state and its index keys |
//! | `K#<SHA-256 of the key>` | an idempotency key: the event it stored, until when |
//! | `Q#<day>` | what the tenant took in and out that UTC day (quotas) |
//! | `U#<day>#<key>` | metered usage records |
//!
//! Day totals over every tenant live under `#total` (sort key `Q#<day>`).
//! An event carries the sort keys of the local secondary indexes it is
//! in: `pq` while pending (commit order), `rq` while pending (when it may
//! be claimed, then commit order), `dq` while dead-lettered, `dz` while on
//! its last attempt's lease (when that runs out). An index holds only the
//! events that carry its key, so each query reads only what it asks for.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};
use zapinbox_core::raw::Delivery;
use zapinbox_core::{
    Error, Event, EventId, EventStatus, Payload, QueueConfig, Result, TenantId, Timestamp,
};

/// An item as the SDK gives it.
pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) const PK: &str = "pk";
pub(crate) const SK: &str = "sk";
/// Commit position of an event; the last one given, on the `#seq` item.
pub(crate) const SEQ: &str = "seq";
const PAYLOAD: &str = "pay";
const SOURCE: &str = "src";
const TYPE: &str = "typ";
const TOPIC: &str = "top";
const CLIENT: &str = "cli";
const KEY: &str = "key";
const CREATED: &str = "at";
const STATUS: &str = "st";
const ATTEMPTS: &str = "att";
const VISIBLE: &str = "vis";
const NONCE: &str = "ln";
const LEASE_END: &str = "lx";
const ACKED: &str = "ackd";
/// Bumped by every change of an event's delivery: writes are conditional
/// on the version they read.
pub(crate) const VERSION: &str = "ver";
/// DynamoDB's time to live, in seconds since the epoch.
pub(crate) const TTL: &str = "ttl";
/// An idempotency key's event, fingerprint and end of window (ms).
pub(crate) const KEY_EVENT: &str = "id";
pub(crate) const KEY_FINGERPRINT: &str = "fp";
pub(crate) const KEY_EXPIRES: &str = "exp";

/// The local secondary indexes: name and sort-key attribute.
pub(crate) const PENDING: &str = "pq";
pub(crate) const READY: &str = "rq";
pub(crate) const DEAD: &str = "dq";
pub(crate) const LAST_LEASE: &str = "dz";

/// The attributes the indexes copy (everything but the payload and the
/// idempotency key): enough to decide and write a claim, and to filter.
pub(crate) const DELIVERY_ATTRIBUTES: [&str; 13] = [
    SEQ, SOURCE, TYPE, TOPIC, CLIENT, CREATED, STATUS, ATTEMPTS, VISIBLE, NONCE, LEASE_END, ACKED,
    VERSION,
];

/// The sort key of the tenant's sequence item.
pub(crate) const SEQ_ITEM: &str = "#seq";
/// The partition key of totals over every tenant.
pub(crate) const TOTAL_PK: &str = "#total";

pub(crate) fn tenant_pk(tenant: &TenantId) -> String {
    format!("T#{}", tenant.as_str())
}

pub(crate) fn event_sk(id: EventId) -> String {
    format!("E#{id}")
}

/// An idempotency key's sort key: its SHA-256, so that any key the inbox
/// accepts (256 characters, up to 1 KB of UTF-8) fits DynamoDB's 1 KB
/// sort keys.
pub(crate) fn key_sk(key: &str) -> String {
    format!("K#{}", hex(&Sha256::digest(key.as_bytes())))
}

/// Bytes as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A number in a sort key: fixed width, so text order is number order.
pub(crate) fn padded(n: u64) -> String {
    format!("{n:020}")
}

pub(crate) fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

pub(crate) fn n(number: u64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

/// The key of one item.
pub(crate) fn key(pk: String, sk: String) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

fn damaged(what: &str) -> Error {
    Error::permanent(format!("stored item is damaged: {what}"))
}

pub(crate) fn get_n(item: &Item, name: &str) -> Result<Option<u64>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(text)) => text.parse().map(Some).map_err(|_| damaged(name)),
        Some(_) => Err(damaged(name)),
    }
}

pub(crate) fn need_n(item: &Item, name: &str) -> Result<u64> {
    get_n(item, name)?.ok_or_else(|| damaged(name))
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(text)) => Ok(Some(text)),
        Some(_) => Err(damaged(name)),
    }
}

/// An event as first stored: content, position and a fresh delivery.
pub(crate) struct NewItem<'a> {
    pub tenant: &'a TenantId,
    pub event: &'a Event,
    pub seq: u64,
    pub delivery: Delivery,
    pub config: &'a QueueConfig,
}

impl NewItem<'_> {
    pub(crate) fn into_item(self) -> Item {
        let e = self.event;
        let mut item = key(tenant_pk(self.tenant), event_sk(e.id));
        item.insert(SEQ.into(), n(self.seq));
        item.insert(PAYLOAD.into(), s(e.payload.as_str()));
        item.insert(CREATED.into(), n(e.created_at.as_millis()));
        item.insert(VERSION.into(), n(0));
        let fields = [
            (SOURCE, &e.source),
            (TYPE, &e.event_type),
            (TOPIC, &e.topic),
            (CLIENT, &e.client_id),
            (KEY, &e.idempotency_key),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                item.insert(name.into(), s(value.as_str()));
            }
        }
        let state = DeliveryState::of(self.delivery, self.seq, self.config);
        for (name, value) in state.set {
            item.insert(name.into(), value);
        }
        item
    }
}

/// An event read back: its position, version and delivery as stored.
#[derive(Clone, Debug)]
pub(crate) struct StoredEvent {
    pub event: Event,
    pub seq: u64,
    pub version: u64,
    pub delivery: Delivery,
}

impl StoredEvent {
    /// Reads an event item (whole, or as a claim index copies it: then the
    /// payload is missing and left empty).
    pub(crate) fn from_item(tenant: &TenantId, item: &Item) -> Result<Self> {
        let sk = get_s(item, SK)?.ok_or_else(|| damaged(SK))?;
        let id: EventId = sk
            .strip_prefix("E#")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| damaged(SK))?;
        let payload = Payload::from_stored(get_s(item, PAYLOAD)?.unwrap_or_default());
        let mut event = Event::new(tenant.clone(), id, payload);
        let text = |name| get_s(item, name).map(|v| v.map(str::to_owned));
        event.source = text(SOURCE)?;
        event.event_type = text(TYPE)?;
        event.topic = text(TOPIC)?;
        event.client_id = text(CLIENT)?;
        event.idempotency_key = text(KEY)?;
        event.created_at = Timestamp::from_millis(need_n(item, CREATED)?);
        let code = u8::try_from(need_n(item, STATUS)?).map_err(|_| damaged(STATUS))?;
        let status = EventStatus::from_code(code).ok_or_else(|| damaged(STATUS))?;
        let lease = match (get_n(item, NONCE)?, get_n(item, LEASE_END)?) {
            (Some(nonce), Some(end)) => Some((nonce, Timestamp::from_millis(end))),
            _ => None,
        };
        let delivery = Delivery {
            status,
            attempts: u32::try_from(need_n(item, ATTEMPTS)?).map_err(|_| damaged(ATTEMPTS))?,
            visible_at: Timestamp::from_millis(need_n(item, VISIBLE)?),
            lease,
            acked_at: get_n(item, ACKED)?.map(Timestamp::from_millis),
        };
        Ok(StoredEvent {
            event,
            seq: need_n(item, SEQ)?,
            version: need_n(item, VERSION)?,
            delivery,
        })
    }

    /// Its delivery as of `now` (see [`Delivery::settle`]), or `None` once
    /// it is an acked event past its retention: gone, for reads and
    /// changes alike (DynamoDB's time to live removes it within days).
    pub(crate) fn delivery_now(&self, now: Timestamp, config: &QueueConfig) -> Option<Delivery> {
        let d = self.delivery.settle(now, &config.retry);
        (!d.is_expired(now, config.retention)).then_some(d)
    }

    /// The event as callers see it with `delivery` (settled by the caller).
    pub(crate) fn view(&self, delivery: Delivery) -> Event {
        let mut event = self.event.clone();
        event.status = delivery.status;
        event.attempts = delivery.attempts;
        event.leased_until = delivery.leased_until();
        event
    }
}

/// The attributes that say an event's delivery state, and the index keys
/// that follow from it: what to set and what to remove.
pub(crate) struct DeliveryState {
    pub set: Vec<(&'static str, AttributeValue)>,
    pub remove: Vec<&'static str>,
}

impl DeliveryState {
    pub(crate) fn of(d: Delivery, seq: u64, config: &QueueConfig) -> Self {
        let max_attempts = config.retry.max_attempts;
        let mut set = vec![
            (STATUS, n(u64::from(d.status.code()))),
            (ATTEMPTS, n(u64::from(d.attempts))),
            (VISIBLE, n(d.visible_at.as_millis())),
        ];
        let mut remove = Vec::new();
        let mut put = |name, value: Option<AttributeValue>| match value {
            Some(value) => set.push((name, value)),
            None => remove.push(name),
        };
        put(NONCE, d.lease.map(|(nonce, _)| n(nonce)));
        put(LEASE_END, d.lease.map(|(_, end)| n(end.as_millis())));
        put(ACKED, d.acked_at.map(|at| n(at.as_millis())));
        // DynamoDB deletes an acked event within days of this; reads hide
        // it from then on.
        let gone = d.acked_at.map(|at| at.saturating_add(config.retention));
        put(TTL, gone.map(|at| n(at.as_millis() / 1000)));
        let pending = d.status == EventStatus::Pending;
        let position = padded(seq);
        put(PENDING, pending.then(|| s(position.clone())));
        let ready = format!("{}{position}", padded(d.visible_at.as_millis()));
        put(READY, pending.then(|| s(ready)));
        let dead = d.status == EventStatus::DeadLettered;
        put(DEAD, dead.then(|| s(position.clone())));
        // On its last attempt, the lease's end is when it dies.
        let last = match d.lease {
            Some((_, end)) if pending && d.attempts >= max_attempts => {
                Some(s(format!("{}{position}", padded(end.as_millis()))))
            }
            _ => None,
        };
        put(LAST_LEASE, last);
        DeliveryState { set, remove }
    }
}

/// A ready-index bound: everything claimable at `now` sorts before it.
pub(crate) fn ready_until(now: Timestamp) -> String {
    padded(now.as_millis().saturating_add(1))
}
