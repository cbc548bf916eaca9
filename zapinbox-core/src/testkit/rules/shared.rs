use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;

use crate::testkit::{
    Harness, eventually, fresh_tenant, ingest_numbered, numbered, open_inbox, shared_patience,
};
use crate::{ClaimQuery, EventId, EventStatus, Filter, Inbox, ManualClock, QueueConfig, TenantId};

/// A second inbox on the same storage, on the same clock: another
/// process, or another instance on the same log.
async fn second(harness: &dyn Harness, clock: &ManualClock) -> Inbox {
    let config = QueueConfig::default().with_clock(clock.clock());
    Inbox::new(harness.open(config).await.expect("a second handle opens"))
}

async fn status(inbox: &Inbox, tenant: &TenantId, id: EventId) -> Option<EventStatus> {
    let event = inbox.get(tenant, id).await.expect("get");
    event.map(|e| e.status)
}

/// Two handles on one storage race one idempotency key, twenty times
/// over: each race stores one event, and both callers get its id.
pub async fn two_handles_race_one_key_to_one_event(harness: &dyn Harness) {
    let (a, clock) = open_inbox(harness).await;
    let b = second(harness, &clock).await;
    let tenant = fresh_tenant();
    // Each side on a task of its own, so the two really run at once.
    let ingest = |inbox: &Inbox, event: crate::NewEvent| {
        let (inbox, tenant) = (inbox.clone(), tenant.clone());
        tokio::spawn(async move { inbox.ingest(&tenant, event).await })
    };
    for n in 0..20 {
        let event = numbered(n).with_idempotency_key(format!("race-{n}"));
        let (x, y) = (ingest(&a, event.clone()), ingest(&b, event));
        let (x, y) = (x.await.expect("task"), y.await.expect("task"));
        let (x, y) = (x.expect("ingest on a"), y.expect("ingest on b"));
        assert_eq!(x.id, y.id, "race {n}: one event");
        assert!(x.duplicate != y.duplicate, "race {n}: one stored it");
    }
}

/// Two handles claiming one tenant's events at once never lease an event
/// twice, and between them claim every one.
pub async fn two_handles_never_lease_one_event_twice(harness: &dyn Harness) {
    let (a, clock) = open_inbox(harness).await;
    let b = second(harness, &clock).await;
    let tenant = fresh_tenant();
    ingest_numbered(&a, &tenant, 0..60).await;
    let patience = shared_patience(&a);
    let seen = eventually(patience, || async {
        let claimable = b.claimable_at(&tenant, &Filter::default()).await;
        claimable.expect("claimable_at").is_some()
    });
    assert!(seen.await, "b sees a's events within {patience:?}");
    let drain = |inbox: Inbox, tenant: TenantId| async move {
        let mut ids = Vec::new();
        for _ in 0..1000 {
            let query = ClaimQuery::new().limit(3);
            let leased = inbox.claim(&tenant, query).await.expect("claim");
            if leased.is_empty() {
                return ids;
            }
            ids.extend(leased.iter().map(|l| l.event.id));
        }
        panic!("claiming never ends")
    };
    let (x, y) = (
        tokio::spawn(drain(a, tenant.clone())),
        tokio::spawn(drain(b, tenant)),
    );
    let (x, y) = (x.await.expect("task"), y.await.expect("task"));
    let all: HashSet<EventId> = x.iter().chain(&y).copied().collect();
    assert_eq!(all.len(), x.len() + y.len(), "an event leased twice");
    assert_eq!(all.len(), 60, "every event claimed once");
}

/// What one handle ingests and acks, the other sees: the event, then its
/// ack, within the declared lag.
pub async fn two_handles_see_each_others_events_and_acks(harness: &dyn Harness) {
    let (a, clock) = open_inbox(harness).await;
    let b = second(harness, &clock).await;
    let tenant = fresh_tenant();
    let id = a.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let pending = eventually(shared_patience(&a), || async {
        status(&b, &tenant, id).await == Some(EventStatus::Pending)
    });
    assert!(pending.await, "b sees a's event");
    b.ack(&tenant, id).await.expect("ack on b");
    let acked = eventually(shared_patience(&a), || async {
        status(&a, &tenant, id).await == Some(EventStatus::Acked)
    });
    assert!(acked.await, "a sees b's ack");
}

/// A subscriber on one handle receives what another handle ingests.
pub async fn a_subscriber_sees_events_ingested_through_another_handle(harness: &dyn Harness) {
    let (a, clock) = open_inbox(harness).await;
    let b = second(harness, &clock).await;
    let tenant = fresh_tenant();
    let mut live = Box::pin(
        b.subscribe(&tenant, Filter::default(), None)
            .await
            .expect("subscribe"),
    );
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(a.ingest(&tenant, numbered(n)).await.expect("ingest").id);
    }
    let mut got = Vec::new();
    // The patience, and never under 10 s: where storage declares no lag,
    // room for a polling subscription's pause on a loaded machine.
    let patience = shared_patience(&a).max(Duration::from_secs(10));
    while got.len() < sent.len() {
        let item = tokio::time::timeout(patience, live.next())
            .await
            .unwrap_or_else(|_| panic!("event {} of 5 did not come", got.len()))
            .expect("the stream goes on")
            .expect("an item");
        got.push(item.event.id);
    }
    assert_eq!(got, sent);
}
