//! The inbox as a deterministic state machine: the whole state of a store
//! (or of one partition of a log) in memory, changed only by operations
//! whose outcome depends on nothing but the state, their arguments, the
//! time they are given and the randomness they are given.
//!
//! The in-memory backend runs it under a lock with the clock's time and
//! fresh randomness; a log-based backend applies each record to it with
//! the time and seed the record carries, so every instance that applies
//! the same log reaches the same state and gives the same answers.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cursor::Position;
use crate::event::EventParts;
use crate::{
    AckOutcome, ClaimQuery, ClaimStep, DailyUsage, DeleteOutcome, Delivery, Error, Event, EventId,
    EventStatus, Filter, Fingerprint, Ingested, LeaseToken, Leased, Order, Page, PullQuery, Purged,
    QueueConfig, Redrive, ReleaseOutcome, Result, RetryPolicy, TenantId, TenantStats, Timestamp,
    Traffic, UsageRecord, Way, utc_day,
};

/// A place in one tenant's commit order: the [`Position`] a machine gives
/// its events, as a sequence.
pub type Seq = u64;

/// When an operation happens and under which rules: everything an
/// operation of a [`Machine`] reads besides the state and its arguments
/// (the rules' clock is never read).
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The time of the operation.
    pub now: Timestamp,
    /// Retry policy, idempotency window, retention and quotas.
    pub rules: &'a QueueConfig,
}

impl<'a> Context<'a> {
    /// An operation at `now` under `rules`.
    pub fn new(now: Timestamp, rules: &'a QueueConfig) -> Self {
        Context { now, rules }
    }

    fn retry(&self) -> &'a RetryPolicy {
        &self.rules.retry
    }
}

/// Randomness from a seed (SplitMix64): lease nonces and retry jitter that
/// a replay draws again exactly.
#[derive(Clone, Copy, Debug)]
pub struct Entropy(u64);

impl Entropy {
    /// Randomness that starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Entropy(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An inbox's state and every operation on it. See the module docs.
///
/// It serializes whole (with `serde_json`): a snapshot a log-based backend
/// can resume from instead of replaying the log from its start.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(from = "Image")]
pub struct Machine {
    next_position: Seq,
    /// Quota use per tenant (`None`: everyone) and UTC day.
    #[serde(with = "usage_entries")]
    usage: HashMap<(Option<TenantId>, u64), DailyUsage>,
    /// Metered usage, summed by key.
    metered: Vec<UsageRecord>,
    tenants: HashMap<TenantId, TenantState>,
    /// Whether an acked event's content leaves memory at its ack (see
    /// [`Machine::drop_acked_content`]). A setting, not state.
    #[serde(skip)]
    drop_acked: bool,
}

#[derive(Debug, Default, Serialize)]
struct TenantState {
    events: BTreeMap<Seq, Stored>,
    /// Where each event is in `events` (rebuilt from it, not stored).
    #[serde(skip)]
    positions: HashMap<EventId, Seq>,
    keys: HashMap<String, KeyRecord>,
}

/// A machine as it serializes: the same fields, without the indexes
/// rebuilt on load.
#[derive(Deserialize)]
struct Image {
    next_position: Seq,
    #[serde(with = "usage_entries")]
    usage: HashMap<(Option<TenantId>, u64), DailyUsage>,
    metered: Vec<UsageRecord>,
    tenants: HashMap<TenantId, TenantImage>,
}

#[derive(Deserialize)]
struct TenantImage {
    events: BTreeMap<Seq, StoredImage>,
    keys: HashMap<String, KeyRecord>,
}

impl From<Image> for Machine {
    fn from(image: Image) -> Self {
        let tenants = image.tenants.into_iter().map(|(tenant, t)| {
            let events: BTreeMap<Seq, Stored> = t
                .events
                .into_iter()
                .map(|(pos, image)| (pos, image.into_stored(&tenant)))
                .collect();
            let positions = events.iter().map(|(pos, s)| (s.event.id, *pos)).collect();
            let keys = t.keys;
            let state = TenantState {
                events,
                positions,
                keys,
            };
            (tenant, state)
        });
        Machine {
            next_position: image.next_position,
            usage: image.usage,
            metered: image.metered,
            tenants: tenants.collect(),
            drop_acked: false,
        }
    }
}

/// A stored event as a snapshot keeps it: its tenant is the key it is
/// under, its creation time its id's, times in milliseconds; the shown
/// status and attempts come from its delivery.
#[derive(Serialize)]
struct StoredRef<'a> {
    id: EventId,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    /// None once the content was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a crate::Payload>,
    delivery: DeliveryImage,
}

/// [`StoredRef`], read back.
#[derive(Deserialize)]
struct StoredImage {
    id: EventId,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    payload: Option<crate::Payload>,
    delivery: DeliveryImage,
}

impl StoredImage {
    fn into_stored(self, tenant: &TenantId) -> Stored {
        let dropped = self.payload.is_none();
        let payload = self
            .payload
            .unwrap_or_else(|| crate::Payload::damaged(DROPPED));
        let mut event = Event::new(tenant.clone(), self.id, payload);
        event.source = self.source;
        event.event_type = self.event_type;
        event.topic = self.topic;
        event.client_id = self.client_id;
        event.idempotency_key = self.key;
        Stored {
            event,
            delivery: self.delivery.into(),
            dropped,
        }
    }
}

/// A [`Delivery`] as `[status, attempts, visible_at, lease, acked_at]`,
/// times in milliseconds.
#[derive(Serialize, Deserialize)]
struct DeliveryImage(u8, u32, u64, Option<(u64, u64)>, Option<u64>);

impl From<&Delivery> for DeliveryImage {
    fn from(d: &Delivery) -> Self {
        DeliveryImage(
            d.status.code(),
            d.attempts,
            d.visible_at.as_millis(),
            d.lease.map(|(nonce, expires)| (nonce, expires.as_millis())),
            d.acked_at.map(Timestamp::as_millis),
        )
    }
}

impl From<DeliveryImage> for Delivery {
    fn from(d: DeliveryImage) -> Self {
        Delivery {
            // Codes come from `EventStatus::code`; an unknown one is read
            // as pending rather than losing the event.
            status: EventStatus::from_code(d.0).unwrap_or(EventStatus::Pending),
            attempts: d.1,
            visible_at: Timestamp::from_millis(d.2),
            lease: d
                .3
                .map(|(nonce, expires)| (nonce, Timestamp::from_millis(expires))),
            acked_at: d.4.map(Timestamp::from_millis),
        }
    }
}

impl Serialize for Stored {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let e = &self.event;
        StoredRef {
            id: e.id,
            source: e.source.as_deref(),
            event_type: e.event_type.as_deref(),
            topic: e.topic.as_deref(),
            client_id: e.client_id.as_deref(),
            key: e.idempotency_key.as_deref(),
            payload: (!self.dropped).then_some(&e.payload),
            delivery: (&self.delivery).into(),
        }
        .serialize(s)
    }
}

/// Quota use as a list of entries, sorted (JSON maps take string keys only).
mod usage_entries {
    use std::collections::HashMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::{DailyUsage, TenantId};

    type Usage = HashMap<(Option<TenantId>, u64), DailyUsage>;

    pub fn serialize<S: Serializer>(usage: &Usage, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<_> = usage.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        entries.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Usage, D::Error> {
        let entries = Vec::<((Option<TenantId>, u64), DailyUsage)>::deserialize(d)?;
        Ok(entries.into_iter().collect())
    }
}

/// An event as given, and where it is in its delivery.
#[derive(Clone, Debug)]
struct Stored {
    event: Event,
    delivery: Delivery,
    /// Whether its content (payload, source, type, topic, client) was
    /// dropped after its ack.
    dropped: bool,
}

impl Stored {
    /// The event as callers see it at `now`.
    fn view(&self, now: Timestamp, policy: &RetryPolicy) -> Event {
        let delivery = self.delivery.settle(now, policy);
        let mut event = self.event.clone();
        event.status = delivery.status;
        event.attempts = delivery.attempts;
        event.leased_until = delivery.leased_until();
        event
    }

    /// Writes down what time has decided (see [`Delivery::settle`]).
    fn settle(&mut self, now: Timestamp, policy: &RetryPolicy) -> &mut Delivery {
        self.delivery = self.delivery.settle(now, policy);
        &mut self.delivery
    }

    /// Lets the content go: only the id, key and delivery stay.
    fn drop_content(&mut self) {
        let e = &mut self.event;
        e.payload = crate::Payload::damaged(DROPPED);
        (e.source, e.event_type, e.topic, e.client_id) = (None, None, None, None);
        self.dropped = true;
    }
}

/// Why an acked event read from a machine that dropped its content has no
/// payload.
const DROPPED: &str = "an acked event's content is not kept in memory";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeyRecord {
    id: EventId,
    fingerprint: Fingerprint,
    expires_at: Timestamp,
}

/// What one ingest changed, so a failed batch can be undone.
enum Undo {
    Inserted(Seq, EventId),
    Key(String, Option<KeyRecord>),
}

impl Machine {
    /// An empty inbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every acked event's content (payload, source, type, topic,
    /// client) leave memory at its ack, for a backend that can read it back
    /// from elsewhere (a log): [`Machine::get`] then gives the acked event
    /// with a damaged payload and no metadata, and
    /// [`Machine::dropped_position`] says where it was ingested.
    pub fn drop_acked_content(&mut self, drop: bool) {
        self.drop_acked = drop;
    }

    /// The position of an event whose content was dropped.
    pub fn dropped_position(&self, tenant: &TenantId, id: EventId) -> Option<Seq> {
        let t = self.tenants.get(tenant)?;
        let pos = *t.positions.get(&id)?;
        t.events.get(&pos)?.dropped.then_some(pos)
    }

    /// Makes the next event's position at least `seq`, so positions can
    /// follow an outside order (a log's offsets); they never go back.
    pub fn skip_positions_to(&mut self, seq: Seq) {
        self.next_position = self.next_position.max(seq.saturating_sub(1));
    }

    /// Stores `events` of `tenant` under the ids given, all or nothing: a
    /// repeated idempotency key answers the original (its id unused), one
    /// reused with other content is a conflict, and the day's inbound
    /// quota counts what is new or refuses all of it.
    pub fn ingest_batch(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        events: Vec<(EventId, EventParts)>,
    ) -> Result<Vec<Ingested>> {
        let mut undo = Vec::new();
        let mut out = Vec::with_capacity(events.len());
        let mut traffic = Traffic::new(Way::In, 0, 0);
        let mut stored = Ok(());
        for (id, event) in events {
            let bytes = event.payload.len() as u64;
            match self.ingest_one(cx, tenant, id, event, &mut undo) {
                Ok(ingested) => {
                    if !ingested.duplicate {
                        traffic.messages += 1;
                        traffic.bytes += bytes;
                    }
                    out.push(ingested);
                }
                Err(e) => {
                    stored = Err(e);
                    break;
                }
            }
        }
        let stored = stored.and_then(|()| self.charge(cx, tenant, traffic));
        if let Err(e) = stored {
            if let Some(t) = self.tenants.get_mut(tenant) {
                rollback(t, undo);
            }
            return Err(e);
        }
        Ok(out)
    }

    fn ingest_one(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        id: EventId,
        event: EventParts,
        undo: &mut Vec<Undo>,
    ) -> Result<Ingested> {
        // Every event of a batch takes a position, stored or not, so a
        // position also says where in its batch an event was.
        let position = self.next_position + 1;
        self.next_position = position;
        let t = self.tenants.entry(tenant.clone()).or_default();
        if let Some((key, fingerprint)) = &event.idempotency
            && let Some(rec) = t.keys.get(key).filter(|r| r.expires_at > cx.now)
        {
            if rec.fingerprint != *fingerprint {
                return Err(Error::IdempotencyConflict {
                    key: key.clone(),
                    original: rec.id,
                });
            }
            return Ok(Ingested::new(rec.id, true));
        }
        if let Some((key, fingerprint)) = &event.idempotency {
            let rec = KeyRecord {
                id,
                fingerprint: *fingerprint,
                expires_at: cx.now.saturating_add(cx.rules.idempotency_window),
            };
            undo.push(Undo::Key(key.clone(), t.keys.insert(key.clone(), rec)));
        }
        let stored = Stored {
            event: event.into_event(tenant.clone(), id),
            // Available from the operation's time, not from the id's
            // stamp: after the clock steps back, the id keeps the later time.
            delivery: Delivery::available_from(cx.now),
            dropped: false,
        };
        t.events.insert(position, stored);
        t.positions.insert(id, position);
        undo.push(Undo::Inserted(position, id));
        Ok(Ingested::new(id, false))
    }

    fn find_mut(&mut self, tenant: &TenantId, id: EventId) -> Result<&mut Stored> {
        let t = self.tenants.get_mut(tenant).ok_or(Error::NotFound { id })?;
        let pos = *t.positions.get(&id).ok_or(Error::NotFound { id })?;
        t.events.get_mut(&pos).ok_or(Error::NotFound { id })
    }

    /// Claims up to `query.limit` of `tenant`'s events: the earliest
    /// available first, then commit order; those on their last attempt
    /// whose lease ran out are dead-lettered on the way. Checked against
    /// the day's outbound quota first, and counted in it.
    pub fn claim(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        query: &ClaimQuery,
        entropy: &mut Entropy,
    ) -> Result<Vec<Leased>> {
        query.check()?;
        self.check_delivery(cx, tenant)?;
        let claimed = self.claim_in(cx, tenant, query, entropy);
        let bytes = claimed.iter().map(|l| l.event.payload.len() as u64).sum();
        self.count_delivery(
            cx,
            tenant,
            Traffic::new(Way::Out, claimed.len() as u64, bytes),
        )?;
        Ok(claimed)
    }

    fn claim_in(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        query: &ClaimQuery,
        entropy: &mut Entropy,
    ) -> Vec<Leased> {
        let (now, policy) = (cx.now, cx.retry());
        let Some(t) = self.tenants.get_mut(tenant) else {
            return Vec::new();
        };
        let mut candidates: Vec<(Timestamp, Seq)> = t
            .events
            .iter()
            .filter(|(_, s)| s.delivery.claim_step(now, policy) != ClaimStep::Skip)
            .map(|(pos, s)| (s.delivery.visible_at, *pos))
            .collect();
        candidates.sort_unstable();
        let mut claimed = Vec::new();
        for (_, pos) in candidates {
            if claimed.len() >= query.limit as usize {
                break;
            }
            let Some(stored) = t.events.get_mut(&pos) else {
                continue;
            };
            match stored.delivery.claim_step(now, policy) {
                ClaimStep::Skip => continue,
                ClaimStep::DeadLetter => stored.delivery.dead_letter(),
                ClaimStep::Claim if query.filter.matches(&stored.event) => {
                    let nonce = entropy.next_u64();
                    let (attempt, expires) =
                        stored
                            .delivery
                            .claim(now, query.lease, nonce, policy, entropy.next_f64());
                    let token = LeaseToken::new(stored.event.id, nonce);
                    claimed.push(Leased::new(
                        stored.view(now, policy),
                        token,
                        attempt,
                        expires,
                    ));
                }
                ClaimStep::Claim => continue,
            }
        }
        claimed
    }

    /// Refuses a delivery once the day's outbound quota is used up.
    pub fn check_delivery(&self, cx: Context<'_>, tenant: &TenantId) -> Result<()> {
        let quotas = &cx.rules.quotas;
        if !quotas.limits(Way::Out) {
            return Ok(());
        }
        let (mine, all) = self.usage_on(tenant, utc_day(cx.now));
        quotas.check_delivery(&mine, &all, cx.now)
    }

    /// Counts a delivery (`traffic` going out) against the day's quotas.
    pub fn count_delivery(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        traffic: Traffic,
    ) -> Result<()> {
        self.charge(cx, tenant, traffic)
    }

    /// What `tenant`, and everyone, used on `day`.
    fn usage_on(&self, tenant: &TenantId, day: u64) -> (DailyUsage, DailyUsage) {
        let of = |who: Option<TenantId>| self.usage.get(&(who, day)).copied().unwrap_or_default();
        (of(Some(tenant.clone())), of(None))
    }

    /// Counts `traffic` of `tenant` against the day's quotas, or refuses
    /// inbound traffic that does not fit (nothing counted then).
    fn charge(&mut self, cx: Context<'_>, tenant: &TenantId, traffic: Traffic) -> Result<()> {
        let quotas = &cx.rules.quotas;
        if quotas.is_off() {
            return Ok(());
        }
        let day = utc_day(cx.now);
        let (mine, all) = self.usage_on(tenant, day);
        if traffic.way == Way::In {
            quotas.check(&mine, &all, traffic, cx.now)?;
        }
        self.usage
            .insert((Some(tenant.clone()), day), mine.plus(traffic));
        self.usage.insert((None, day), all.plus(traffic));
        Ok(())
    }

    /// One page of `tenant`'s events in `status`, in commit order; cursors
    /// name `backend`.
    pub fn list(
        &self,
        cx: Context<'_>,
        tenant: &TenantId,
        query: &PullQuery,
        status: EventStatus,
        backend: &str,
    ) -> Result<Page> {
        let resolved = query.resolve(tenant, backend)?;
        let start = resolved
            .start
            .as_ref()
            .map(Position::as_sequence)
            .transpose()?;
        let Some(t) = self.tenants.get(tenant) else {
            return Ok(Page::from_positions(
                Vec::new(),
                resolved,
                tenant,
                backend,
                query.order,
            ));
        };
        let (now, policy) = (cx.now, cx.retry());
        // Only events that are listed are cloned (filters read fields that
        // settling does not change).
        let wanted = |(seq, s): (&Seq, &Stored)| {
            let listed =
                s.delivery.settle(now, policy).status == status && query.filter.matches(&s.event);
            listed.then(|| (Position::sequence(*seq), s.view(now, policy)))
        };
        let take = resolved.limit + 1;
        let rows: Vec<_> = match query.order {
            Order::Asc => {
                let from = start.map_or(Bound::Unbounded, Bound::Excluded);
                let range = t.events.range((from, Bound::Unbounded));
                range.filter_map(wanted).take(take).collect()
            }
            Order::Desc => {
                let to = start.map_or(Bound::Unbounded, Bound::Excluded);
                let range = t.events.range((Bound::Unbounded, to)).rev();
                range.filter_map(wanted).take(take).collect()
            }
        };
        Ok(Page::from_positions(
            rows,
            resolved,
            tenant,
            backend,
            query.order,
        ))
    }

    /// Runs `f` on the delivery state of the event `token` leases.
    fn with_lease<T>(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        token: LeaseToken,
        f: impl FnOnce(&mut Delivery) -> Result<T>,
    ) -> Result<T> {
        let stored = self
            .find_mut(tenant, token.event())
            .map_err(|_| Error::LeaseLost { id: token.event() })?;
        f(stored.settle(cx.now, cx.retry()))
    }

    /// When the earliest pending event matching `filter` may be claimed.
    pub fn claimable_at(
        &self,
        cx: Context<'_>,
        tenant: &TenantId,
        filter: &Filter,
    ) -> Option<Timestamp> {
        let t = self.tenants.get(tenant)?;
        t.events
            .values()
            .filter(|s| s.delivery.settle(cx.now, cx.retry()).status == EventStatus::Pending)
            .filter(|s| filter.matches(&s.event))
            .map(|s| s.delivery.visible_at)
            .min()
    }

    /// Extends the lease `token` by `by` from now.
    pub fn extend(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        token: LeaseToken,
        by: Duration,
        entropy: &mut Entropy,
    ) -> Result<Timestamp> {
        crate::check_lease(by)?;
        self.with_lease(cx, tenant, token, |d| {
            let (now, policy) = (cx.now, cx.retry());
            d.extend(
                token.event(),
                token.nonce(),
                now,
                by,
                policy,
                entropy.next_f64(),
            )
        })
    }

    /// Ends the lease `token` without an ack.
    pub fn release(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        token: LeaseToken,
        retry_after: Option<Duration>,
        entropy: &mut Entropy,
    ) -> Result<ReleaseOutcome> {
        self.with_lease(cx, tenant, token, |d| {
            let (id, nonce) = (token.event(), token.nonce());
            d.release(
                id,
                nonce,
                cx.now,
                retry_after,
                cx.retry(),
                entropy.next_f64(),
            )
        })
    }

    /// Gives the event of lease `token` back without counting the attempt.
    pub fn requeue(&mut self, cx: Context<'_>, tenant: &TenantId, token: LeaseToken) -> Result<()> {
        self.with_lease(cx, tenant, token, |d| {
            d.requeue(token.event(), token.nonce(), cx.now)
        })
    }

    /// Acks with the lease `token`.
    pub fn ack_lease(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        token: LeaseToken,
    ) -> Result<AckOutcome> {
        let outcome = self.with_lease(cx, tenant, token, |d| {
            d.ack_lease(token.event(), token.nonce(), cx.now)
        })?;
        self.acked(tenant, token.event());
        Ok(outcome)
    }

    /// Acks by id.
    pub fn ack(&mut self, cx: Context<'_>, tenant: &TenantId, id: EventId) -> Result<AckOutcome> {
        let stored = self.find_mut(tenant, id)?;
        let outcome = stored.settle(cx.now, cx.retry()).ack(cx.now);
        self.acked(tenant, id);
        Ok(outcome)
    }

    /// Drops an acked event's content, if this machine does.
    fn acked(&mut self, tenant: &TenantId, id: EventId) {
        if self.drop_acked
            && let Ok(stored) = self.find_mut(tenant, id)
            && !stored.dropped
        {
            stored.drop_content();
        }
    }

    /// Deletes an event in any state.
    pub fn delete(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        id: EventId,
    ) -> Result<DeleteOutcome> {
        let t = self.tenants.get_mut(tenant).ok_or(Error::NotFound { id })?;
        let pos = t.positions.remove(&id).ok_or(Error::NotFound { id })?;
        let stored = t.events.remove(&pos).ok_or(Error::NotFound { id })?;
        let previous = stored.delivery.settle(cx.now, cx.retry()).status;
        Ok(DeleteOutcome::new(previous))
    }

    /// Returns dead letters to the inbox; how many.
    pub fn redrive(&mut self, cx: Context<'_>, tenant: &TenantId, which: &Redrive) -> u64 {
        let (now, policy) = (cx.now, cx.retry());
        let Some(t) = self.tenants.get_mut(tenant) else {
            return 0;
        };
        let mut count = 0;
        match which {
            Redrive::All => {
                for stored in t.events.values_mut() {
                    count += u64::from(stored.settle(now, policy).redrive(now));
                }
            }
            Redrive::Ids(ids) => {
                for id in ids {
                    let Some(pos) = t.positions.get(id) else {
                        continue;
                    };
                    if let Some(stored) = t.events.get_mut(pos) {
                        count += u64::from(stored.settle(now, policy).redrive(now));
                    }
                }
            }
        }
        count
    }

    /// An event as it is now.
    pub fn get(&self, cx: Context<'_>, tenant: &TenantId, id: EventId) -> Option<Event> {
        let t = self.tenants.get(tenant)?;
        let stored = t.positions.get(&id).and_then(|pos| t.events.get(pos))?;
        Some(stored.view(cx.now, cx.retry()))
    }

    /// The event an unexpired idempotency key stored.
    pub fn find_by_key(&self, cx: Context<'_>, tenant: &TenantId, key: &str) -> Option<EventId> {
        let rec = self.tenants.get(tenant)?.keys.get(key)?;
        (rec.expires_at > cx.now).then_some(rec.id)
    }

    /// Removes up to `limit` acked events past retention and up to `limit`
    /// expired keys, oldest first: acked events by when they were acked
    /// (then commit order), keys by when they expire (then tenant and key).
    pub fn purge_expired(&mut self, cx: Context<'_>, limit: usize) -> Purged {
        let limit = limit.max(1);
        let (now, policy, retention) = (cx.now, cx.retry(), cx.rules.retention);
        let mut events: Vec<(Timestamp, Seq, TenantId)> = Vec::new();
        let mut keys: Vec<(Timestamp, TenantId, String)> = Vec::new();
        for (tenant, t) in &self.tenants {
            for (pos, stored) in &t.events {
                let d = stored.delivery.settle(now, policy);
                if let (true, Some(at)) = (d.is_expired(now, retention), d.acked_at) {
                    events.push((at, *pos, tenant.clone()));
                }
            }
            for (key, rec) in &t.keys {
                if rec.expires_at <= now {
                    keys.push((rec.expires_at, tenant.clone(), key.clone()));
                }
            }
        }
        events.sort_unstable();
        keys.sort_unstable();
        events.truncate(limit);
        keys.truncate(limit);
        for (_, pos, tenant) in &events {
            if let Some(t) = self.tenants.get_mut(tenant)
                && let Some(stored) = t.events.remove(pos)
            {
                t.positions.remove(&stored.event.id);
            }
        }
        for (_, tenant, key) in &keys {
            if let Some(t) = self.tenants.get_mut(tenant) {
                t.keys.remove(key);
            }
        }
        Purged::new(
            events.len() as u64,
            keys.len() as u64,
            events.len() >= limit || keys.len() >= limit,
        )
    }

    /// Removes dead letters of `tenant` (all, or those among the ids);
    /// how many.
    pub fn purge_dead_letters(
        &mut self,
        cx: Context<'_>,
        tenant: &TenantId,
        which: &Redrive,
    ) -> u64 {
        let (now, policy) = (cx.now, cx.retry());
        let Some(t) = self.tenants.get_mut(tenant) else {
            return 0;
        };
        let is_dead =
            |s: &Stored| s.delivery.settle(now, policy).status == EventStatus::DeadLettered;
        let doomed: Vec<Seq> = match which {
            Redrive::All => t
                .events
                .iter()
                .filter(|(_, s)| is_dead(s))
                .map(|(pos, _)| *pos)
                .collect(),
            Redrive::Ids(ids) => ids
                .iter()
                .filter_map(|id| t.positions.get(id).copied())
                .filter(|pos| t.events.get(pos).is_some_and(is_dead))
                .collect(),
        };
        let mut removed = 0;
        for pos in &doomed {
            if let Some(stored) = t.events.remove(pos) {
                t.positions.remove(&stored.event.id);
                removed += 1;
            }
        }
        removed
    }

    /// Counts of `tenant`'s events in each state now.
    pub fn tenant_stats(&self, cx: Context<'_>, tenant: &TenantId) -> TenantStats {
        let mut stats = TenantStats::default();
        let Some(t) = self.tenants.get(tenant) else {
            return stats;
        };
        let mut oldest: Option<Timestamp> = None;
        for stored in t.events.values() {
            let d = stored.delivery.settle(cx.now, cx.retry());
            match d.status {
                EventStatus::Pending => {
                    stats.pending += 1;
                    stats.leased += u64::from(d.is_leased_at(cx.now));
                    let created = stored.event.created_at;
                    oldest = Some(oldest.map_or(created, |o| o.min(created)));
                }
                EventStatus::DeadLettered => stats.dead_lettered += 1,
                EventStatus::Acked => stats.acked += 1,
            }
        }
        stats.oldest_pending_age = oldest.map(|o| cx.now.saturating_duration_since(o));
        stats
    }

    /// Adds metered usage, summed by key.
    pub fn add_usage(&mut self, records: Vec<UsageRecord>) {
        let all = std::mem::take(&mut self.metered);
        self.metered = crate::sum_usage(all.into_iter().chain(records));
    }

    /// `tenant`'s metered usage on `days`.
    pub fn usage(
        &self,
        tenant: &TenantId,
        days: &std::ops::RangeInclusive<u64>,
    ) -> Vec<UsageRecord> {
        let mine = self.metered.iter();
        let mine = mine.filter(|r| &r.key.tenant == tenant && days.contains(&r.key.day));
        mine.cloned().collect()
    }
}

fn rollback(t: &mut TenantState, undo: Vec<Undo>) {
    for step in undo.into_iter().rev() {
        match step {
            Undo::Inserted(pos, id) => {
                t.events.remove(&pos);
                t.positions.remove(&id);
            }
            Undo::Key(key, Some(old)) => {
                t.keys.insert(key, old);
            }
            Undo::Key(key, None) => {
                t.keys.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_replays_exactly_and_spreads() {
        let draw = |seed| {
            let mut e = Entropy::new(seed);
            (e.next_u64(), e.next_f64())
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7).0, draw(8).0);
        let mut e = Entropy::new(1);
        let samples: Vec<f64> = (0..1000).map(|_| e.next_f64()).collect();
        assert!(samples.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = samples.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }

    #[test]
    fn a_machine_serializes_whole_and_answers_the_same_after() {
        let rules = QueueConfig::default();
        let cx = Context::new(Timestamp::from_millis(1_000), &rules);
        let tenant = TenantId::new("t").expect("valid");
        let mut machine = Machine::new();
        let mut parts = EventParts::new(crate::Payload::from_stored(r#"{"n":1}"#));
        parts.idempotency = Some(("k".into(), Fingerprint([7; 32])));
        parts.source = Some("billing".into());
        parts.event_type = Some("invoice.paid".into());
        parts.topic = Some("payments".into());
        parts.client_id = Some("client-7".into());
        let id = EventId::generate(cx.now);
        machine
            .ingest_batch(cx, &tenant, vec![(id, parts)])
            .expect("ingest");
        let second = EventId::generate(cx.now);
        let plain = EventParts::new(crate::Payload::from_stored(r#"{"n":2}"#));
        machine
            .ingest_batch(cx, &tenant, vec![(second, plain)])
            .expect("ingest");
        let leased = machine
            .claim(
                cx,
                &tenant,
                &ClaimQuery::new().limit(1),
                &mut Entropy::new(3),
            )
            .expect("claim");
        assert_eq!(leased.len(), 1);
        let third = EventId::generate(cx.now);
        let acked = EventParts::new(crate::Payload::from_stored(r#"{"n":3}"#));
        machine
            .ingest_batch(cx, &tenant, vec![(third, acked)])
            .expect("ingest");
        machine.ack(cx, &tenant, third).expect("ack");

        let text = serde_json::to_string(&machine).expect("serialize");
        let restored: Machine = serde_json::from_str(&text).expect("deserialize");
        for each in [id, second, third] {
            assert_eq!(
                restored.get(cx, &tenant, each),
                machine.get(cx, &tenant, each)
            );
        }
        let leased_view = restored.get(cx, &tenant, id).expect("kept");
        assert!(leased_view.leased_until.is_some() && leased_view.source.is_some());
        assert_eq!(restored.find_by_key(cx, &tenant, "k"), Some(id));
        assert_eq!(
            restored.tenant_stats(cx, &tenant),
            machine.tenant_stats(cx, &tenant)
        );
        let again = serde_json::to_value(&restored).expect("serialize");
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(&text).expect("json")
        );
        let mut restored = restored;
        assert_eq!(
            restored
                .ack(cx, &tenant, second)
                .expect("ack by id finds it"),
            AckOutcome::Acked
        );
    }

    #[test]
    fn a_machine_can_let_acked_content_go_and_says_where_it_was() {
        let rules = QueueConfig::default();
        let cx = Context::new(Timestamp::from_millis(1_000), &rules);
        let tenant = TenantId::new("t").expect("valid");
        let mut machine = Machine::new();
        machine.drop_acked_content(true);
        let mut parts = EventParts::new(crate::Payload::from_stored(r#"{"n":1}"#));
        parts.source = Some("billing".into());
        let id = EventId::generate(cx.now);
        machine.skip_positions_to(7);
        machine
            .ingest_batch(cx, &tenant, vec![(id, parts)])
            .expect("ingest");
        assert_eq!(machine.dropped_position(&tenant, id), None);
        assert_eq!(
            machine.ack(cx, &tenant, id).expect("ack"),
            AckOutcome::Acked
        );
        assert_eq!(machine.dropped_position(&tenant, id), Some(7));
        let acked = machine.get(cx, &tenant, id).expect("still known");
        assert_eq!((acked.status, acked.source), (EventStatus::Acked, None));
        assert!(acked.payload.as_value().is_err());
        assert_eq!(
            machine.ack(cx, &tenant, id).expect("ack"),
            AckOutcome::AlreadyAcked
        );

        let text = serde_json::to_string(&machine).expect("serialize");
        let restored: Machine = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(restored.dropped_position(&tenant, id), Some(7));
    }

    #[test]
    fn positions_follow_an_outside_order_and_never_go_back() {
        let rules = QueueConfig::default();
        let cx = Context::new(Timestamp::from_millis(1_000), &rules);
        let tenant = TenantId::new("t").expect("valid");
        let mut machine = Machine::new();
        let event = |n: u64| {
            let payload = crate::Payload::from_stored(format!("{{\"n\":{n}}}"));
            (EventId::generate(cx.now), EventParts::new(payload))
        };
        machine.skip_positions_to(100);
        machine
            .ingest_batch(cx, &tenant, vec![event(1)])
            .expect("ingest");
        machine.skip_positions_to(50);
        machine
            .ingest_batch(cx, &tenant, vec![event(2)])
            .expect("ingest");
        let t = machine.tenants.get(&tenant).expect("tenant");
        assert_eq!(t.events.keys().copied().collect::<Vec<_>>(), vec![100, 101]);
    }
}
