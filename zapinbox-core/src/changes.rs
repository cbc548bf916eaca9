//! Change feeds: how a backend tells subscriptions that a tenant may have
//! new events, so they look again instead of polling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::TenantId;

/// A backend's change feed: per tenant, a signal that moves whenever
/// events may have been committed for it. Subscriptions wait on it and
/// then page from their cursor, so a signal too many costs one cheap read
/// and a signal is never needed for correctness beyond waking up.
///
/// A backend keeps one, calls [`ChangeFeed::notify`] after each ingest it
/// commits, and [`ChangeFeed::notify_all`] when it learns that another
/// process or instance committed something (it cannot say for whom).
#[derive(Clone, Debug, Default)]
pub struct ChangeFeed {
    tenants: Arc<Mutex<HashMap<TenantId, watch::Sender<u64>>>>,
}

impl ChangeFeed {
    /// A feed nobody watches yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes of `tenant` from now on. Also forgets the tenants nobody
    /// watches any more, so the feed holds only watched ones.
    pub fn watch(&self, tenant: &TenantId) -> Changes {
        let mut tenants = self.lock();
        tenants.retain(|_, sender| sender.receiver_count() > 0);
        let sender = tenants
            .entry(tenant.clone())
            .or_insert_with(|| watch::channel(0).0);
        Changes(sender.subscribe())
    }

    /// Events may have been committed for `tenant`.
    pub fn notify(&self, tenant: &TenantId) {
        let tenants = self.lock();
        if let Some(sender) = tenants.get(tenant) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Events may have been committed for any tenant. Also forgets the
    /// tenants nobody watches any more.
    pub fn notify_all(&self) {
        let mut tenants = self.lock();
        tenants.retain(|_, sender| sender.receiver_count() > 0);
        for sender in tenants.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The tenants someone is watching now: for a backend that must look
    /// for other instances' writes itself (by polling its storage).
    pub fn watched(&self) -> Vec<TenantId> {
        let tenants = self.lock();
        let live = tenants.iter().filter(|(_, s)| s.receiver_count() > 0);
        live.map(|(tenant, _)| tenant.clone()).collect()
    }

    /// Whether anyone watches any tenant (a backend that must poll for
    /// other processes' commits can rest otherwise).
    pub fn is_watched(&self) -> bool {
        self.lock().values().any(|s| s.receiver_count() > 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, watch::Sender<u64>>> {
        // Nothing is left half-done under this lock.
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One watcher's view of a tenant's changes ([`ChangeFeed::watch`]).
#[derive(Debug)]
pub struct Changes(watch::Receiver<u64>);

impl Changes {
    /// Marks everything so far as seen: the next [`Changes::changed`]
    /// waits for a change after this call.
    pub fn mark_seen(&mut self) {
        self.0.borrow_and_update();
    }

    /// Waits for a change not yet seen, and marks it seen. Returns false if
    /// the feed is gone (the backend was dropped): nothing will change.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watcher_wakes_for_its_tenant_and_for_all_not_for_others() {
        let feed = ChangeFeed::new();
        let (a, b) = (
            TenantId::new("a").expect("a"),
            TenantId::new("b").expect("b"),
        );
        let mut changes = feed.watch(&a);
        changes.mark_seen();
        feed.notify(&b);
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), changes.changed());
        assert!(
            quiet.await.is_err(),
            "another tenant's commit does not wake it"
        );
        feed.notify(&a);
        assert!(changes.changed().await);
        feed.notify_all();
        assert!(changes.changed().await);
        assert!(feed.is_watched());
        assert_eq!(feed.watched(), vec![a]);
        drop(changes);
        feed.notify_all();
        assert!(!feed.is_watched(), "forgotten once nobody watches");
        assert!(feed.watched().is_empty());
    }
}
