//! Ingests waiting for their tenant's turn (group commit): whoever gets
//! the turn commits everything queued for the tenant, oldest first, as
//! many calls per transaction as fit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;
use zapinbox_core::raw::Fingerprint;
use zapinbox_core::{Event, Ingested, Result, TenantId};

/// Actions of one transaction left for events and keys (the sequence and
/// two quota counters take the rest of DynamoDB's 100).
const ACTIONS: usize = 97;

/// Bytes of one transaction for events: DynamoDB takes 4 MB; this leaves
/// room for every attribute but the payload (counted at 1 KB an event).
const BYTES: usize = 3_500_000;
const PER_EVENT: usize = 1024;

/// An event of a call: its id, content and key.
pub(crate) struct Pending {
    pub event: Event,
    pub key: Option<(String, Fingerprint)>,
}

/// One `ingest_batch` call, and where its answer goes.
pub(crate) struct Request {
    id: u64,
    pub events: Vec<Pending>,
    pub reply: oneshot::Sender<Result<Vec<Ingested>>>,
}

impl Request {
    /// Actions and bytes it takes in a transaction at most.
    fn cost(&self) -> (usize, usize) {
        let actions = self.events.iter().map(|p| 1 + usize::from(p.key.is_some()));
        let bytes = self
            .events
            .iter()
            .map(|p| p.event.payload.len() + PER_EVENT);
        (actions.sum(), bytes.sum())
    }
}

/// The calls waiting, by tenant.
#[derive(Default)]
pub(crate) struct Queue {
    next: AtomicU64,
    waiting: Mutex<HashMap<TenantId, Vec<Request>>>,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Vec<Request>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the call `events` makes (called under the queue's lock, so
    /// ids drawn there follow the queue's order); its number.
    pub(crate) fn push(
        &self,
        tenant: &TenantId,
        events: impl FnOnce() -> Vec<Pending>,
        reply: oneshot::Sender<Result<Vec<Ingested>>>,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut waiting = self.lock();
        let events = events();
        let request = Request { id, events, reply };
        waiting.entry(tenant.clone()).or_default().push(request);
        id
    }

    /// Takes the tenant's oldest calls that fit in one transaction (at
    /// least one, when any waits).
    pub(crate) fn take(&self, tenant: &TenantId) -> Vec<Request> {
        let mut waiting = self.lock();
        let Some(queued) = waiting.get_mut(tenant) else {
            return Vec::new();
        };
        let (mut actions, mut bytes) = (0, 0);
        let fits = queued
            .iter()
            .take_while(|r| {
                let (a, b) = r.cost();
                actions += a;
                bytes += b;
                actions <= ACTIONS && bytes <= BYTES
            })
            .count();
        let group: Vec<_> = queued.drain(..fits.max(1).min(queued.len())).collect();
        if queued.is_empty() {
            waiting.remove(tenant);
        }
        group
    }

    /// Forgets call `id` if it still waits (its caller stopped waiting
    /// before its turn came).
    pub(crate) fn remove(&self, tenant: &TenantId, id: u64) {
        let mut waiting = self.lock();
        if let Some(queued) = waiting.get_mut(tenant) {
            queued.retain(|r| r.id != id);
            if queued.is_empty() {
                waiting.remove(tenant);
            }
        }
    }
}
