//! The in-memory backend: the reference model every other backend is
//! compared against. Simple rather than fast: a [`Machine`] under a lock,
//! run with the clock's time and fresh randomness. State lives as long as
//! any handle to it, so [`MemoryBackend::reopen`] models a restart that
//! keeps everything (the durable-storage case).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::UsageRecord;
use crate::backend::{
    Acknowledge, Backend, Delete, Idempotency, InboxPull, Ingest, Leases, Metering, Retention,
    Stats,
};
use crate::changes::{ChangeFeed, Changes};
use crate::machine::{Context, Entropy, Machine};
use crate::{
    AckOutcome, Capabilities, ClaimQuery, DeleteOutcome, Error, Event, EventId, EventStatus, Fault,
    Filter, Ingested, LeaseToken, Leased, Page, PullQuery, Purged, QueueConfig, Redrive,
    ReleaseOutcome, Result, SharedWrites, TenantId, TenantStats, Timestamp, Traffic, ValidEvent,
    Way,
};

const NAME: &str = "memory";

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
    machine: Machine,
    /// Faults to answer the next calls with (see `fail_next`).
    faults: VecDeque<Fault>,
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

    /// The machine, unless a fault was injected for this call, with the
    /// context of an operation now.
    fn machine(&self) -> Result<(MachineGuard<'_>, Context<'_>)> {
        let now = self.config.clock.now();
        Ok((MachineGuard(self.lock()?), Context::new(now, &self.config)))
    }
}

/// The locked state, seen as its machine.
struct MachineGuard<'a>(MutexGuard<'a, State>);

impl std::ops::Deref for MachineGuard<'_> {
    type Target = Machine;
    fn deref(&self) -> &Machine {
        &self.0.machine
    }
}

impl std::ops::DerefMut for MachineGuard<'_> {
    fn deref_mut(&mut self) -> &mut Machine {
        &mut self.0.machine
    }
}

/// Fresh randomness for one operation.
fn entropy() -> Entropy {
    Entropy::new(rand::random())
}

#[async_trait]
impl Leases for MemoryBackend {
    async fn claim(&self, tenant: &TenantId, query: ClaimQuery) -> Result<Vec<Leased>> {
        // Checked, claimed and counted under one lock: no two claims cross
        // the outbound quota together.
        let (mut m, cx) = self.machine()?;
        m.claim(cx, tenant, &query, &mut entropy())
    }

    async fn claimable_at(&self, tenant: &TenantId, filter: &Filter) -> Result<Option<Timestamp>> {
        let (m, cx) = self.machine()?;
        Ok(m.claimable_at(cx, tenant, filter))
    }

    async fn extend(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        by: Duration,
    ) -> Result<Timestamp> {
        let (mut m, cx) = self.machine()?;
        m.extend(cx, tenant, token, by, &mut entropy())
    }

    async fn release(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        retry_after: Option<Duration>,
    ) -> Result<ReleaseOutcome> {
        let (mut m, cx) = self.machine()?;
        m.release(cx, tenant, token, retry_after, &mut entropy())
    }

    async fn requeue(&self, tenant: &TenantId, token: LeaseToken) -> Result<()> {
        let (mut m, cx) = self.machine()?;
        m.requeue(cx, tenant, token)
    }

    async fn ack_lease(&self, tenant: &TenantId, token: LeaseToken) -> Result<AckOutcome> {
        let (mut m, cx) = self.machine()?;
        m.ack_lease(cx, tenant, token)
    }

    async fn dead_letters(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        let (m, cx) = self.machine()?;
        m.list(cx, tenant, &query, EventStatus::DeadLettered, NAME)
    }

    async fn redrive(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        let (mut m, cx) = self.machine()?;
        Ok(m.redrive(cx, tenant, &which))
    }
}

#[async_trait]
impl Ingest for MemoryBackend {
    async fn ingest_batch(
        &self,
        tenant: &TenantId,
        events: Vec<ValidEvent>,
    ) -> Result<Vec<Ingested>> {
        let ingested = {
            let (mut m, cx) = self.machine()?;
            // Ids drawn under the lock: they sort in commit order.
            let clock = &self.config.clock;
            let events = events
                .into_iter()
                .map(|e| (clock.next_id(), e.into_parts()))
                .collect();
            m.ingest_batch(cx, tenant, events)?
        };
        self.feed.notify(tenant);
        Ok(ingested)
    }
}

#[async_trait]
impl InboxPull for MemoryBackend {
    async fn pull(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        let (mut m, cx) = self.machine()?;
        m.check_delivery(cx, tenant)?;
        let page = m.list(cx, tenant, &query, EventStatus::Pending, NAME)?;
        let bytes = page.events.iter().map(|e| e.payload.len() as u64).sum();
        let traffic = Traffic::new(Way::Out, page.events.len() as u64, bytes);
        m.count_delivery(cx, tenant, traffic)?;
        Ok(page)
    }

    async fn get(&self, tenant: &TenantId, id: EventId) -> Result<Option<Event>> {
        let (m, cx) = self.machine()?;
        Ok(m.get(cx, tenant, id))
    }
}

#[async_trait]
impl Acknowledge for MemoryBackend {
    async fn ack(&self, tenant: &TenantId, id: EventId) -> Result<AckOutcome> {
        let (mut m, cx) = self.machine()?;
        m.ack(cx, tenant, id)
    }
}

#[async_trait]
impl Delete for MemoryBackend {
    async fn delete(&self, tenant: &TenantId, id: EventId) -> Result<DeleteOutcome> {
        let (mut m, cx) = self.machine()?;
        m.delete(cx, tenant, id)
    }
}

#[async_trait]
impl Idempotency for MemoryBackend {
    async fn find_by_key(&self, tenant: &TenantId, key: &str) -> Result<Option<EventId>> {
        let (m, cx) = self.machine()?;
        Ok(m.find_by_key(cx, tenant, key))
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
        let (mut m, cx) = self.machine()?;
        Ok(m.purge_expired(cx, limit))
    }

    async fn purge_dead_letters(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        let (mut m, cx) = self.machine()?;
        Ok(m.purge_dead_letters(cx, tenant, &which))
    }
}

#[async_trait]
impl Stats for MemoryBackend {
    async fn tenant_stats(&self, tenant: &TenantId) -> Result<TenantStats> {
        let (m, cx) = self.machine()?;
        Ok(m.tenant_stats(cx, tenant))
    }
}

#[async_trait]
impl Metering for MemoryBackend {
    async fn add_usage(&self, records: Vec<UsageRecord>) -> Result<()> {
        let (mut m, _) = self.machine()?;
        m.add_usage(records);
        Ok(())
    }

    async fn usage(
        &self,
        tenant: &TenantId,
        days: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<UsageRecord>> {
        let (m, _) = self.machine()?;
        Ok(m.usage(tenant, &days))
    }
}
