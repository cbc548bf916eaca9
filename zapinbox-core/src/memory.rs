//! The in-memory backend: the reference model every other backend is
//! compared against. Simple rather than fast; state lives as long as any
//! handle to it, so [`MemoryBackend::reopen`] models a restart that keeps
//! everything (the durable-storage case).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::UsageRecord;
use crate::backend::{
    Acknowledge, Backend, Delete, Idempotency, InboxPull, Ingest, Leases, Metering, Retention,
    Stats,
};
use crate::changes::{ChangeFeed, Changes};
use crate::cursor::Position;
use crate::{
    AckOutcome, Capabilities, ClaimQuery, ClaimStep, DailyUsage, DeleteOutcome, Delivery, Error,
    Event, EventId, EventStatus, Fault, Filter, Fingerprint, Ingested, LeaseToken, Leased, Order,
    Page, PullQuery, Purged, QueueConfig, Redrive, ReleaseOutcome, Result, RetryPolicy,
    SharedWrites, TenantId, TenantStats, Timestamp, Traffic, ValidEvent, Way, check_lease, utc_day,
};

const NAME: &str = "memory";

/// A place in one tenant's commit order (its [`Position`] is this
/// number as a sequence).
type Seq = u64;

/// An inbox held in process memory. Nothing survives the process.
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    config: QueueConfig,
    declared: Declared,
    state: Arc<Mutex<State>>,
    /// Wakes subscriptions after each ingest; shared by every handle.
    feed: ChangeFeed,
}

/// What the backend says it can do: all of it, unless told otherwise to
/// stand in for a narrower backend.
#[derive(Clone, Debug)]
struct Declared {
    capabilities: Capabilities,
    /// Whether it offers retention and stats.
    optional: bool,
}

impl Default for Declared {
    fn default() -> Self {
        Declared {
            capabilities: Capabilities::unlimited().with_shared_writes(SharedWrites::NotShared),
            optional: true,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    next_position: Seq,
    /// Faults to answer the next calls with (see `fail_next`).
    faults: std::collections::VecDeque<Fault>,
    /// Quota use per tenant (`None`: everyone) and UTC day.
    usage: HashMap<(Option<TenantId>, u64), DailyUsage>,
    /// Metered usage, summed by key.
    metered: Vec<UsageRecord>,
    tenants: HashMap<TenantId, TenantState>,
}

impl State {
    /// What `tenant`, and everyone, used on `day`.
    fn usage_on(&self, tenant: &TenantId, day: u64) -> (DailyUsage, DailyUsage) {
        let of = |who: Option<TenantId>| self.usage.get(&(who, day)).copied().unwrap_or_default();
        (of(Some(tenant.clone())), of(None))
    }
}

#[derive(Debug, Default)]
struct TenantState {
    events: BTreeMap<Seq, Stored>,
    positions: HashMap<EventId, Seq>,
    keys: HashMap<String, KeyRecord>,
}

/// An event as given, and where it is in its delivery.
#[derive(Clone, Debug)]
struct Stored {
    event: Event,
    delivery: Delivery,
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
}

#[derive(Clone, Debug)]
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

impl MemoryBackend {
    /// An empty in-memory inbox with default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty in-memory inbox with these settings.
    pub fn with_config(config: QueueConfig) -> Self {
        MemoryBackend {
            config: config.applied(),
            ..Self::default()
        }
    }

    /// A new handle on the same state with `config`: models reopening durable
    /// storage after a restart.
    pub fn reopen(&self, config: QueueConfig) -> Self {
        MemoryBackend {
            config: config.applied(),
            declared: self.declared.clone(),
            state: Arc::clone(&self.state),
            feed: self.feed.clone(),
        }
    }

    /// Declares `capabilities` instead of its own, so an inbox enforces
    /// them: to test code that must cope with a narrower backend.
    pub fn declaring(mut self, capabilities: Capabilities) -> Self {
        self.declared.capabilities = capabilities;
        self
    }

    /// Offers none of [`Retention`], [`Stats`] and [`Metering`], as a
    /// backend without them: the inbox answers `Unsupported`.
    pub fn without_optional_operations(mut self) -> Self {
        self.declared.optional = false;
        self
    }

    /// Makes the next call that reaches the storage fail with `fault`,
    /// changing nothing: to test how code copes with a failing backend.
    pub fn fail_next(&self, fault: Fault) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.faults.push_back(fault);
    }

    /// The storage, unless a fault was injected for this call.
    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        // A panic while holding the lock cannot leave half an operation
        // behind (every mutation completes or is undone before returning).
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.faults.pop_front() {
            None => Ok(state),
            Some(fault) => {
                let message = format!("injected {fault:?} storage fault");
                Err(if fault.retryable() {
                    Error::transient(message)
                } else {
                    Error::permanent(message)
                })
            }
        }
    }

    fn ingest_one(
        &self,
        state: &mut State,
        tenant: &TenantId,
        event: ValidEvent,
        now: Timestamp,
        undo: &mut Vec<Undo>,
    ) -> Result<Ingested> {
        let t = state.tenants.entry(tenant.clone()).or_default();
        let idempotency = event.idempotency().map(|(k, f)| (k.to_owned(), *f));
        if let Some((key, fingerprint)) = &idempotency
            && let Some(rec) = t.keys.get(key).filter(|r| r.expires_at > now)
        {
            if rec.fingerprint != *fingerprint {
                return Err(Error::IdempotencyConflict {
                    key: key.clone(),
                    original: rec.id,
                });
            }
            return Ok(Ingested::new(rec.id, true));
        }
        let id = self.config.clock.next_id();
        let position = state.next_position + 1;
        state.next_position = position;
        if let Some((key, fingerprint)) = idempotency {
            let rec = KeyRecord {
                id,
                fingerprint,
                expires_at: now.saturating_add(self.config.idempotency_window),
            };
            undo.push(Undo::Key(key.clone(), t.keys.insert(key, rec)));
        }
        let stored = Stored {
            event: event.into_event(tenant.clone(), id),
            // Available from now on this clock, not from the id's stamp:
            // after the clock steps back, the id keeps the later time.
            delivery: Delivery::available_from(now),
        };
        t.events.insert(position, stored);
        t.positions.insert(id, position);
        undo.push(Undo::Inserted(position, id));
        Ok(Ingested::new(id, false))
    }

    fn find_mut<'a>(
        state: &'a mut State,
        tenant: &TenantId,
        id: EventId,
    ) -> Result<&'a mut Stored> {
        let t = state
            .tenants
            .get_mut(tenant)
            .ok_or(Error::NotFound { id })?;
        let pos = *t.positions.get(&id).ok_or(Error::NotFound { id })?;
        t.events.get_mut(&pos).ok_or(Error::NotFound { id })
    }
}

impl MemoryBackend {
    /// Claims up to `query.limit` of `tenant`'s events: the earliest
    /// available first, then commit order; those on their last attempt
    /// whose lease ran out are dead-lettered on the way.
    fn claim_in(
        state: &mut State,
        tenant: &TenantId,
        query: &ClaimQuery,
        now: Timestamp,
        policy: &RetryPolicy,
    ) -> Vec<Leased> {
        let Some(t) = state.tenants.get_mut(tenant) else {
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
                    let nonce = rand::random();
                    let (attempt, expires) =
                        stored
                            .delivery
                            .claim(now, query.lease, nonce, policy, rand::random());
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
    fn check_out(&self, state: &State, tenant: &TenantId, now: Timestamp) -> Result<()> {
        let quotas = &self.config.quotas;
        if !quotas.limits(Way::Out) {
            return Ok(());
        }
        let (mine, all) = state.usage_on(tenant, utc_day(now));
        quotas.check_delivery(&mine, &all, now)
    }

    /// Counts `traffic` of `tenant` against the day's quotas, or refuses it
    /// if it does not fit (nothing counted then).
    fn charge(
        &self,
        state: &mut State,
        tenant: &TenantId,
        traffic: Traffic,
        now: Timestamp,
    ) -> Result<()> {
        let quotas = &self.config.quotas;
        if quotas.is_off() {
            return Ok(());
        }
        let day = utc_day(now);
        let (mine, all) = state.usage_on(tenant, day);
        if traffic.way == Way::In {
            quotas.check(&mine, &all, traffic, now)?;
        }
        state
            .usage
            .insert((Some(tenant.clone()), day), mine.plus(traffic));
        state.usage.insert((None, day), all.plus(traffic));
        Ok(())
    }

    /// One page of `tenant`'s events in `status`, in commit order.
    fn list(&self, tenant: &TenantId, query: PullQuery, status: EventStatus) -> Result<Page> {
        let resolved = query.resolve(tenant, NAME)?;
        let start = resolved
            .start
            .as_ref()
            .map(Position::as_sequence)
            .transpose()?;
        let state = self.lock()?;
        let Some(t) = state.tenants.get(tenant) else {
            return Ok(Page::from_positions(
                Vec::new(),
                resolved,
                tenant,
                NAME,
                query.order,
            ));
        };
        let now = self.config.clock.now();
        let policy = &self.config.retry;
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
            NAME,
            query.order,
        ))
    }

    /// Runs `f` on the delivery state of the event `token` leases.
    fn with_lease<T>(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        f: impl FnOnce(&mut Delivery, Timestamp, &RetryPolicy) -> Result<T>,
    ) -> Result<T> {
        let now = self.config.clock.now();
        let mut state = self.lock()?;
        let stored = Self::find_mut(&mut state, tenant, token.event())
            .map_err(|_| Error::LeaseLost { id: token.event() })?;
        f(
            stored.settle(now, &self.config.retry),
            now,
            &self.config.retry,
        )
    }
}

#[async_trait]
impl Leases for MemoryBackend {
    async fn claim(&self, tenant: &TenantId, query: ClaimQuery) -> Result<Vec<Leased>> {
        query.check()?;
        let now = self.config.clock.now();
        let policy = &self.config.retry;
        // Checked, claimed and counted under one lock: no two claims cross
        // the outbound quota together.
        let mut state = self.lock()?;
        self.check_out(&state, tenant, now)?;
        let claimed = Self::claim_in(&mut state, tenant, &query, now, policy);
        let bytes = claimed.iter().map(|l| l.event.payload.len() as u64).sum();
        let traffic = Traffic::new(Way::Out, claimed.len() as u64, bytes);
        self.charge(&mut state, tenant, traffic, now)?;
        Ok(claimed)
    }

    async fn claimable_at(&self, tenant: &TenantId, filter: &Filter) -> Result<Option<Timestamp>> {
        let now = self.config.clock.now();
        let policy = &self.config.retry;
        let state = self.lock()?;
        let Some(t) = state.tenants.get(tenant) else {
            return Ok(None);
        };
        Ok(t.events
            .values()
            .filter(|s| s.delivery.settle(now, policy).status == EventStatus::Pending)
            .filter(|s| filter.matches(&s.event))
            .map(|s| s.delivery.visible_at)
            .min())
    }

    async fn extend(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        by: Duration,
    ) -> Result<Timestamp> {
        check_lease(by)?;
        self.with_lease(tenant, token, |d, now, policy| {
            d.extend(
                token.event(),
                token.nonce(),
                now,
                by,
                policy,
                rand::random(),
            )
        })
    }

    async fn release(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        retry_after: Option<Duration>,
    ) -> Result<ReleaseOutcome> {
        self.with_lease(tenant, token, |d, now, policy| {
            d.release(
                token.event(),
                token.nonce(),
                now,
                retry_after,
                policy,
                rand::random(),
            )
        })
    }

    async fn requeue(&self, tenant: &TenantId, token: LeaseToken) -> Result<()> {
        self.with_lease(tenant, token, |d, now, _| {
            d.requeue(token.event(), token.nonce(), now)
        })
    }

    async fn ack_lease(&self, tenant: &TenantId, token: LeaseToken) -> Result<AckOutcome> {
        self.with_lease(tenant, token, |d, now, _| {
            d.ack_lease(token.event(), token.nonce(), now)
        })
    }

    async fn dead_letters(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        self.list(tenant, query, EventStatus::DeadLettered)
    }

    async fn redrive(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        let now = self.config.clock.now();
        let policy = &self.config.retry;
        let mut state = self.lock()?;
        let Some(t) = state.tenants.get_mut(tenant) else {
            return Ok(0);
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
                    let Some(pos) = t.positions.get(&id) else {
                        continue;
                    };
                    if let Some(stored) = t.events.get_mut(pos) {
                        count += u64::from(stored.settle(now, policy).redrive(now));
                    }
                }
            }
        }
        Ok(count)
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

#[async_trait]
impl Ingest for MemoryBackend {
    async fn ingest(&self, tenant: &TenantId, event: ValidEvent) -> Result<Ingested> {
        let mut ingested = self.ingest_batch(tenant, vec![event]).await?;
        ingested
            .pop()
            .ok_or_else(|| Error::permanent("ingest stored nothing"))
    }

    async fn ingest_batch(
        &self,
        tenant: &TenantId,
        events: Vec<ValidEvent>,
    ) -> Result<Vec<Ingested>> {
        let now = self.config.clock.now();
        let mut state = self.lock()?;
        let mut undo = Vec::new();
        let mut out = Vec::with_capacity(events.len());
        let mut traffic = Traffic::new(Way::In, 0, 0);
        let mut stored = Ok(());
        for event in events {
            let bytes = event.payload().len() as u64;
            match self.ingest_one(&mut state, tenant, event, now, &mut undo) {
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
        // The day's quota counts what is new, or refuses all of it.
        let stored = stored.and_then(|()| self.charge(&mut state, tenant, traffic, now));
        if let Err(e) = stored {
            if let Some(t) = state.tenants.get_mut(tenant) {
                rollback(t, undo);
            }
            return Err(e);
        }
        drop(state);
        self.feed.notify(tenant);
        Ok(out)
    }
}

#[async_trait]
impl InboxPull for MemoryBackend {
    async fn pull(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        let now = self.config.clock.now();
        if self.config.quotas.is_off() {
            return self.list(tenant, query, EventStatus::Pending);
        }
        self.check_out(&*self.lock()?, tenant, now)?;
        let page = self.list(tenant, query, EventStatus::Pending)?;
        let bytes = page.events.iter().map(|e| e.payload.len() as u64).sum();
        let traffic = Traffic::new(Way::Out, page.events.len() as u64, bytes);
        self.charge(&mut *self.lock()?, tenant, traffic, now)?;
        Ok(page)
    }

    async fn get(&self, tenant: &TenantId, id: EventId) -> Result<Option<Event>> {
        let now = self.config.clock.now();
        let state = self.lock()?;
        Ok(state
            .tenants
            .get(tenant)
            .and_then(|t| t.positions.get(&id).and_then(|pos| t.events.get(pos)))
            .map(|s| s.view(now, &self.config.retry)))
    }
}

#[async_trait]
impl Acknowledge for MemoryBackend {
    async fn ack(&self, tenant: &TenantId, id: EventId) -> Result<AckOutcome> {
        let now = self.config.clock.now();
        let mut state = self.lock()?;
        let stored = Self::find_mut(&mut state, tenant, id)?;
        Ok(stored.settle(now, &self.config.retry).ack(now))
    }
}

#[async_trait]
impl Delete for MemoryBackend {
    async fn delete(&self, tenant: &TenantId, id: EventId) -> Result<DeleteOutcome> {
        let mut state = self.lock()?;
        let t = state
            .tenants
            .get_mut(tenant)
            .ok_or(Error::NotFound { id })?;
        let pos = t.positions.remove(&id).ok_or(Error::NotFound { id })?;
        let stored = t.events.remove(&pos).ok_or(Error::NotFound { id })?;
        let now = self.config.clock.now();
        Ok(DeleteOutcome::new(
            stored.delivery.settle(now, &self.config.retry).status,
        ))
    }
}

#[async_trait]
impl Idempotency for MemoryBackend {
    async fn find_by_key(&self, tenant: &TenantId, key: &str) -> Result<Option<EventId>> {
        let now = self.config.clock.now();
        let state = self.lock()?;
        Ok(state
            .tenants
            .get(tenant)
            .and_then(|t| t.keys.get(key))
            .filter(|rec| rec.expires_at > now)
            .map(|rec| rec.id))
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn config(&self) -> &QueueConfig {
        &self.config
    }

    fn capabilities(&self) -> Capabilities {
        self.declared.capabilities.clone()
    }

    fn retention(&self) -> Option<&dyn Retention> {
        self.declared.optional.then_some(self as &dyn Retention)
    }

    fn stats(&self) -> Option<&dyn Stats> {
        self.declared.optional.then_some(self as &dyn Stats)
    }

    fn metering(&self) -> Option<&dyn Metering> {
        self.declared.optional.then_some(self as &dyn Metering)
    }

    fn changes(&self, tenant: &TenantId) -> Option<Changes> {
        Some(self.feed.watch(tenant))
    }
}

#[async_trait]
impl Retention for MemoryBackend {
    /// Oldest first, as SQLite does: acked events by when they were acked
    /// (then commit order), keys by when they expire (then tenant and key).
    async fn purge_expired(&self, limit: usize) -> Result<Purged> {
        let limit = limit.max(1);
        let now = self.config.clock.now();
        let (retention, policy) = (self.config.retention, &self.config.retry);
        let mut state = self.lock()?;
        let mut events: Vec<(Timestamp, Seq, TenantId)> = Vec::new();
        let mut keys: Vec<(Timestamp, TenantId, String)> = Vec::new();
        for (tenant, t) in &state.tenants {
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
            if let Some(t) = state.tenants.get_mut(tenant)
                && let Some(stored) = t.events.remove(pos)
            {
                t.positions.remove(&stored.event.id);
            }
        }
        for (_, tenant, key) in &keys {
            if let Some(t) = state.tenants.get_mut(tenant) {
                t.keys.remove(key);
            }
        }
        Ok(Purged::new(
            events.len() as u64,
            keys.len() as u64,
            events.len() >= limit || keys.len() >= limit,
        ))
    }

    async fn purge_dead_letters(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        let now = self.config.clock.now();
        let policy = &self.config.retry;
        let mut state = self.lock()?;
        let Some(t) = state.tenants.get_mut(tenant) else {
            return Ok(0);
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
        Ok(removed)
    }
}

#[async_trait]
impl Stats for MemoryBackend {
    async fn tenant_stats(&self, tenant: &TenantId) -> Result<TenantStats> {
        let now = self.config.clock.now();
        let state = self.lock()?;
        let mut stats = TenantStats::default();
        let Some(t) = state.tenants.get(tenant) else {
            return Ok(stats);
        };
        let mut oldest: Option<Timestamp> = None;
        for stored in t.events.values() {
            let d = stored.delivery.settle(now, &self.config.retry);
            match d.status {
                EventStatus::Pending => {
                    stats.pending += 1;
                    stats.leased += u64::from(d.is_leased_at(now));
                    let created = stored.event.created_at;
                    oldest = Some(oldest.map_or(created, |o| o.min(created)));
                }
                EventStatus::DeadLettered => stats.dead_lettered += 1,
                EventStatus::Acked => stats.acked += 1,
            }
        }
        stats.oldest_pending_age = oldest.map(|o| now.saturating_duration_since(o));
        Ok(stats)
    }
}

#[async_trait]
impl Metering for MemoryBackend {
    async fn add_usage(&self, records: Vec<UsageRecord>) -> Result<()> {
        let mut state = self.lock()?;
        let all = std::mem::take(&mut state.metered);
        state.metered = crate::sum_usage(all.into_iter().chain(records));
        Ok(())
    }

    async fn usage(
        &self,
        tenant: &TenantId,
        days: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<UsageRecord>> {
        let state = self.lock()?;
        let mine = state.metered.iter();
        let mine = mine.filter(|r| &r.key.tenant == tenant && days.contains(&r.key.day));
        Ok(mine.cloned().collect())
    }
}
