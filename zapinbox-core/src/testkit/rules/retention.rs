use std::time::Duration;

use crate::testkit::{
    Harness, assert_unsupported, exact_retries, fresh_tenant, numbered, open_inbox_with, pull_all,
};
use crate::{ClaimQuery, EventStatus, Inbox, PullQuery, Purging, QueueConfig, Redrive, TenantId};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn config() -> QueueConfig {
    exact_retries(1)
}

/// Whether the backend has retention; if not, both its operations must
/// say `Unsupported`.
async fn has_retention(inbox: &Inbox, tenant: &TenantId) -> bool {
    if inbox.backend().retention().is_some() {
        return true;
    }
    assert_unsupported(inbox.purge_expired(10).await, "purge_expired");
    let dead = inbox.purge_dead_letters(tenant, Redrive::All).await;
    assert_unsupported(dead, "purge_dead_letters");
    false
}

/// Purges what has expired: by asking, or (a backend that purges itself)
/// by letting it.
async fn purge(inbox: &Inbox) {
    let purged = inbox.purge_expired(1000).await.expect("purge");
    assert!(!purged.more, "{purged:?}");
}

/// An acked event is kept for the retention period (7 days by default),
/// then purged; pending events and dead letters are never purged by age;
/// an idempotency key is purged after its window.
pub async fn acked_events_are_purged_after_retention(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    if !has_retention(&inbox, &tenant).await {
        return;
    }
    let on_request = inbox.capabilities().purging == Purging::OnRequest;
    let early = inbox
        .ingest(&tenant, numbered(1).with_idempotency_key("k"))
        .await
        .expect("ingest")
        .id;
    let dead = inbox.ingest(&tenant, numbered(3)).await.expect("ingest").id;
    let pending = inbox.ingest(&tenant, numbered(2)).await.expect("ingest").id;
    inbox.ack(&tenant, early).await.expect("ack");
    let leased = inbox
        .claim(&tenant, ClaimQuery::new().limit(1))
        .await
        .expect("claim");
    assert_eq!(leased[0].event.id, dead);
    inbox
        .release(&tenant, leased[0].token, None)
        .await
        .expect("last attempt: dead-lettered");
    clock.advance(DAY);
    let late = inbox.ingest(&tenant, numbered(4)).await.expect("ingest").id;
    inbox.ack(&tenant, late).await.expect("ack");

    clock.advance(6 * DAY - Duration::from_millis(1));
    let purged = inbox.purge_expired(1000).await.expect("purge");
    assert_eq!(purged.events, 0, "not yet 7 days: {purged:?}");
    if on_request {
        assert!(
            purged.keys >= 1,
            "the key's 24 h window is over: {purged:?}"
        );
    }
    assert!(inbox.get(&tenant, early).await.expect("get").is_some());

    clock.advance(Duration::from_millis(1));
    let purged = inbox.purge_expired(1000).await.expect("purge");
    if on_request {
        assert!(purged.events >= 1 && !purged.more, "{purged:?}");
    }
    assert_eq!(
        inbox.get(&tenant, early).await.expect("get"),
        None,
        "purged"
    );
    let kept = inbox
        .get(&tenant, late)
        .await
        .expect("get")
        .expect("acked a day later");
    assert_eq!(kept.status, EventStatus::Acked);
    assert!(inbox.get(&tenant, pending).await.expect("get").is_some());
    let dead_event = inbox.get(&tenant, dead).await.expect("get").expect("kept");
    assert_eq!(dead_event.status, EventStatus::DeadLettered);

    clock.advance(DAY);
    purge(&inbox).await;
    assert_eq!(inbox.get(&tenant, late).await.expect("get"), None);
    assert_eq!(
        pull_all(&inbox, &tenant, PullQuery::new()).await.len(),
        1,
        "pending stays"
    );
    let again = inbox
        .ingest(&tenant, numbered(1).with_idempotency_key("k"))
        .await
        .expect("the key is free again");
    assert!(!again.duplicate);
}

/// Purging goes in batches of at most `limit`, saying when more remain;
/// what it removed is gone.
pub async fn purge_goes_in_small_batches(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    if !has_retention(&inbox, &tenant).await {
        return;
    }
    let events = (0..25).map(numbered).collect();
    let mut ids = Vec::new();
    for i in inbox.ingest_batch(&tenant, events).await.expect("ingest") {
        inbox.ack(&tenant, i.id).await.expect("ack");
        ids.push(i.id);
    }
    clock.advance(8 * DAY);
    let mut total = 0;
    let mut rounds = 0;
    loop {
        let purged = inbox.purge_expired(10).await.expect("purge");
        assert!(purged.events <= 10, "{purged:?}");
        total += purged.events;
        rounds += 1;
        if !purged.more {
            break;
        }
        assert!(rounds < 1000, "purging ends");
    }
    if inbox.capabilities().purging == Purging::OnRequest {
        assert!(total >= 25 && rounds >= 3, "{total} in {rounds} rounds");
    }
    for id in ids {
        assert_eq!(inbox.get(&tenant, id).await.expect("get"), None);
    }
}

/// Dead letters go only when purged on purpose, by id or all.
pub async fn dead_letters_are_purged_on_purpose(harness: &dyn Harness) {
    let (inbox, _) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    if !has_retention(&inbox, &tenant).await {
        return;
    }
    let mut dead = Vec::new();
    for n in 0..3 {
        dead.push(inbox.ingest(&tenant, numbered(n)).await.expect("ingest").id);
    }
    let pending = inbox.ingest(&tenant, numbered(9)).await.expect("ingest").id;
    for leased in inbox
        .claim(&tenant, ClaimQuery::new().limit(3))
        .await
        .expect("claim")
    {
        inbox
            .release(&tenant, leased.token, None)
            .await
            .expect("dead-lettered");
    }
    let one = inbox
        .purge_dead_letters(&tenant, Redrive::Ids(vec![dead[0], dead[0], pending]))
        .await
        .expect("purge");
    assert_eq!(one, 1, "only the dead letter among the ids");
    assert_eq!(inbox.get(&tenant, dead[0]).await.expect("get"), None);
    let rest = inbox
        .purge_dead_letters(&tenant, Redrive::All)
        .await
        .expect("purge");
    assert_eq!(rest, 2);
    assert!(
        inbox
            .dead_letters(&tenant, PullQuery::new())
            .await
            .expect("list")
            .events
            .is_empty()
    );
    assert!(
        inbox.get(&tenant, pending).await.expect("get").is_some(),
        "pending untouched"
    );
}

/// Stats count each state and the age of the oldest pending event.
pub async fn tenant_stats_count_each_state(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    if inbox.backend().stats().is_none() {
        assert_unsupported(inbox.tenant_stats(&tenant).await, "tenant_stats");
        return;
    }
    let empty = inbox.tenant_stats(&tenant).await.expect("stats");
    assert_eq!((empty.pending, empty.oldest_pending_age), (0, None));
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(inbox.ingest(&tenant, numbered(n)).await.expect("ingest").id);
        clock.advance(Duration::from_secs(10));
    }
    inbox.ack(&tenant, ids[0]).await.expect("ack");
    inbox.ack(&tenant, ids[1]).await.expect("ack");
    let claimed = inbox
        .claim(&tenant, ClaimQuery::new().limit(2))
        .await
        .expect("claim");
    inbox
        .release(&tenant, claimed[0].token, None)
        .await
        .expect("dead-lettered");
    let stats = inbox.tenant_stats(&tenant).await.expect("stats");
    assert_eq!(
        (
            stats.pending,
            stats.leased,
            stats.dead_lettered,
            stats.acked
        ),
        (3, 1, 1, 2),
        "{stats:?}"
    );
    assert_eq!(
        stats.oldest_pending_age,
        Some(Duration::from_secs(30)),
        "ids[3] is the oldest pending"
    );
}
