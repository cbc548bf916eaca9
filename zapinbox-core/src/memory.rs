//! The in-memory backend: the reference model every other backend is
//! compared against. Simple rather than fast; state lives as long as any
//! handle to it, so [`MemoryBackend::reopen`] models a restart that keeps
//! everything (the durable-storage case).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::backend::{Acknowledge, Backend, Delete, Idempotency, InboxPull, Ingest};
use crate::cursor::Position;
use crate::{
    AckOutcome, DeleteOutcome, Error, Event, EventId, EventStatus, Fingerprint, Ingested, Order,
    Page, PullQuery, QueueConfig, Result, TenantId, Timestamp, ValidEvent,
};

const NAME: &str = "memory";

/// An inbox held in process memory. Nothing survives the process.
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    config: QueueConfig,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    next_position: Position,
    tenants: HashMap<TenantId, TenantState>,
}

#[derive(Debug, Default)]
struct TenantState {
    events: BTreeMap<Position, Event>,
    positions: HashMap<EventId, Position>,
    keys: HashMap<String, KeyRecord>,
}

#[derive(Clone, Debug)]
struct KeyRecord {
    id: EventId,
    fingerprint: Fingerprint,
    expires_at: Timestamp,
}

/// What one ingest changed, so a failed batch can be undone.
enum Undo {
    Inserted(Position, EventId),
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
            config,
            state: Arc::default(),
        }
    }

    /// A new handle on the same state with `config`: models reopening durable
    /// storage after a restart.
    pub fn reopen(&self, config: QueueConfig) -> Self {
        MemoryBackend {
            config,
            state: Arc::clone(&self.state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave half an operation
        // behind (every mutation completes or is undone before returning).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
        let key = event.idempotency_key().map(str::to_owned);
        if let Some(key) = &key {
            if let Some(rec) = t.keys.get(key).filter(|r| r.expires_at > now) {
                if rec.fingerprint != *event.fingerprint() {
                    return Err(Error::IdempotencyConflict {
                        key: key.clone(),
                        original: rec.id,
                    });
                }
                return Ok(Ingested {
                    id: rec.id,
                    created_at: rec.id.created_at(),
                    duplicate: true,
                });
            }
        }
        let id = self.config.clock.next_id();
        let position = state.next_position + 1;
        state.next_position = position;
        if let Some(key) = key {
            let rec = KeyRecord {
                id,
                fingerprint: *event.fingerprint(),
                expires_at: now.saturating_add(self.config.idempotency_window),
            };
            undo.push(Undo::Key(key.clone(), t.keys.insert(key, rec)));
        }
        t.events
            .insert(position, event.into_event(tenant.clone(), id));
        t.positions.insert(id, position);
        undo.push(Undo::Inserted(position, id));
        Ok(Ingested {
            id,
            created_at: id.created_at(),
            duplicate: false,
        })
    }

    fn find_mut<'a>(state: &'a mut State, tenant: &TenantId, id: EventId) -> Result<&'a mut Event> {
        let t = state
            .tenants
            .get_mut(tenant)
            .ok_or(Error::NotFound { id })?;
        let pos = *t.positions.get(&id).ok_or(Error::NotFound { id })?;
        t.events.get_mut(&pos).ok_or(Error::NotFound { id })
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
        let now = self.config.clock.now();
        self.ingest_one(&mut self.lock(), tenant, event, now, &mut Vec::new())
    }

    async fn ingest_batch(
        &self,
        tenant: &TenantId,
        events: Vec<ValidEvent>,
    ) -> Result<Vec<Ingested>> {
        let now = self.config.clock.now();
        let mut state = self.lock();
        let mut undo = Vec::new();
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            match self.ingest_one(&mut state, tenant, event, now, &mut undo) {
                Ok(ingested) => out.push(ingested),
                Err(e) => {
                    if let Some(t) = state.tenants.get_mut(tenant) {
                        rollback(t, undo);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl InboxPull for MemoryBackend {
    async fn pull(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        let resolved = query.resolve(tenant, NAME)?;
        let state = self.lock();
        let Some(t) = state.tenants.get(tenant) else {
            return Ok(Page {
                events: Vec::new(),
                next_cursor: None,
            });
        };
        let wanted = |(pos, e): (&Position, &Event)| {
            (e.status == EventStatus::Pending && query.filter.matches(e)).then(|| (*pos, e.clone()))
        };
        let take = resolved.limit + 1;
        let rows: Vec<_> = match (query.order, resolved.start) {
            (Order::Asc, start) => {
                let from = start.map_or(Bound::Unbounded, Bound::Excluded);
                t.events
                    .range((from, Bound::Unbounded))
                    .filter_map(wanted)
                    .take(take)
                    .collect()
            }
            (Order::Desc, start) => {
                let to = start.map_or(Bound::Unbounded, Bound::Excluded);
                t.events
                    .range((Bound::Unbounded, to))
                    .rev()
                    .filter_map(wanted)
                    .take(take)
                    .collect()
            }
        };
        Ok(Page::from_positions(
            rows,
            resolved.limit,
            tenant,
            NAME,
            query.order,
        ))
    }

    async fn get(&self, tenant: &TenantId, id: EventId) -> Result<Option<Event>> {
        let state = self.lock();
        Ok(state
            .tenants
            .get(tenant)
            .and_then(|t| t.positions.get(&id).and_then(|pos| t.events.get(pos)))
            .cloned())
    }
}

#[async_trait]
impl Acknowledge for MemoryBackend {
    async fn ack(&self, tenant: &TenantId, id: EventId) -> Result<AckOutcome> {
        let mut state = self.lock();
        let event = Self::find_mut(&mut state, tenant, id)?;
        if event.status == EventStatus::Acked {
            return Ok(AckOutcome::AlreadyAcked);
        }
        event.status = EventStatus::Acked;
        Ok(AckOutcome::Acked)
    }
}

#[async_trait]
impl Delete for MemoryBackend {
    async fn delete(&self, tenant: &TenantId, id: EventId) -> Result<DeleteOutcome> {
        let mut state = self.lock();
        let t = state
            .tenants
            .get_mut(tenant)
            .ok_or(Error::NotFound { id })?;
        let pos = t.positions.remove(&id).ok_or(Error::NotFound { id })?;
        let event = t.events.remove(&pos).ok_or(Error::NotFound { id })?;
        Ok(DeleteOutcome {
            previous: event.status,
        })
    }
}

#[async_trait]
impl Idempotency for MemoryBackend {
    async fn find_by_key(&self, tenant: &TenantId, key: &str) -> Result<Option<EventId>> {
        let now = self.config.clock.now();
        let state = self.lock();
        Ok(state
            .tenants
            .get(tenant)
            .and_then(|t| t.keys.get(key))
            .filter(|rec| rec.expires_at > now)
            .map(|rec| rec.id))
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn config(&self) -> &QueueConfig {
        &self.config
    }
}
