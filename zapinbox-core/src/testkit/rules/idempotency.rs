use std::time::Duration;

use serde_json::json;

use crate::testkit::{Harness, fresh_tenant, numbered, open_inbox, pull_all};
use crate::{Error, NewEvent, PullQuery};

/// The same key with the same content returns the original id; nothing is
/// stored twice.
pub async fn duplicate_key_returns_the_original(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let event = numbered(1).with_topic("t").with_idempotency_key("k-1");
    let first = inbox.ingest(&tenant, event.clone()).await.expect("ingest");
    let again = inbox.ingest(&tenant, event).await.expect("retry");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!((again.id, again.created_at), (first.id, first.created_at));
    // Key order inside the payload does not change the content.
    let reordered: serde_json::Value = serde_json::from_str(r#"{"b":2,"a":1}"#).expect("json");
    let a = inbox
        .ingest(
            &tenant,
            NewEvent::new(reordered).with_idempotency_key("k-2"),
        )
        .await
        .expect("ingest");
    let b = inbox
        .ingest(
            &tenant,
            NewEvent::new(json!({"a":1,"b":2})).with_idempotency_key("k-2"),
        )
        .await
        .expect("retry");
    assert_eq!((b.id, b.duplicate), (a.id, true));
    assert_eq!(pull_all(&inbox, &tenant, PullQuery::new()).await.len(), 2);
    let found = inbox.find_by_key(&tenant, "k-1").await.expect("find");
    assert_eq!(found, Some(first.id));
    assert_eq!(
        inbox.find_by_key(&tenant, "nope").await.expect("find"),
        None
    );
}

/// The same key with other content is a conflict naming the original.
pub async fn key_reused_with_other_content_conflicts(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let first = inbox
        .ingest(&tenant, numbered(1).with_idempotency_key("k"))
        .await
        .expect("ingest");
    for other in [
        numbered(2).with_idempotency_key("k"),
        numbered(1).with_topic("x").with_idempotency_key("k"),
        numbered(1).with_source("x").with_idempotency_key("k"),
    ] {
        let r = inbox.ingest(&tenant, other).await;
        assert!(
            matches!(&r, Err(Error::IdempotencyConflict { key, original }) if key == "k" && *original == first.id),
            "{r:?}"
        );
    }
    let events = pull_all(&inbox, &tenant, PullQuery::new()).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, first.id);
}

/// 32 concurrent ingests with one key store exactly one event.
pub async fn concurrent_retries_store_one_event(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (inbox, tenant) = (inbox.clone(), tenant.clone());
            tokio::spawn(async move {
                inbox
                    .ingest(&tenant, numbered(7).with_idempotency_key("same"))
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task").expect("ingest"));
    }
    let fresh = results.iter().filter(|r| !r.duplicate).count();
    assert_eq!(fresh, 1, "exactly one stored: {results:?}");
    assert!(results.iter().all(|r| r.id == results[0].id));
    assert_eq!(pull_all(&inbox, &tenant, PullQuery::new()).await.len(), 1);
}

/// Concurrent ingests into one tenant, some reusing one key with other
/// content, some plain: the reused key is refused for each of its
/// conflicting ingests alone, everything else is stored once (backends
/// that commit concurrent calls together must not fail a neighbour).
pub async fn a_conflicting_key_fails_only_its_own_ingest(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let first = inbox
        .ingest(&tenant, numbered(0).with_idempotency_key("taken"))
        .await
        .expect("ingest");
    let tasks: Vec<_> = (1..=24)
        .map(|n| {
            let (inbox, tenant) = (inbox.clone(), tenant.clone());
            tokio::spawn(async move {
                let event = if n % 3 == 0 {
                    numbered(n).with_idempotency_key("taken")
                } else {
                    numbered(n).with_idempotency_key(format!("own-{n}"))
                };
                (n, inbox.ingest(&tenant, event).await)
            })
        })
        .collect();
    for task in tasks {
        let (n, result) = task.await.expect("task");
        if n % 3 == 0 {
            assert!(
                matches!(&result, Err(Error::IdempotencyConflict { original, .. }) if *original == first.id),
                "{n}: {result:?}"
            );
        } else {
            assert!(!result.expect("stored").duplicate, "{n}");
        }
    }
    let stored = pull_all(&inbox, &tenant, PullQuery::new()).await;
    assert_eq!(
        stored.len(),
        1 + 16,
        "the first, and each plain ingest once"
    );
}

/// A key is scoped to its tenant.
pub async fn keys_are_per_tenant(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let (a, b) = (fresh_tenant(), fresh_tenant());
    let in_a = inbox
        .ingest(&a, numbered(1).with_idempotency_key("shared"))
        .await
        .expect("ingest");
    let in_b = inbox
        .ingest(&b, numbered(2).with_idempotency_key("shared"))
        .await
        .expect("ingest");
    assert!(!in_b.duplicate);
    assert_ne!(in_a.id, in_b.id);
    assert_eq!(
        inbox.find_by_key(&b, "shared").await.expect("find"),
        Some(in_b.id)
    );
    assert_eq!(
        inbox.find_by_key(&a, "shared").await.expect("find"),
        Some(in_a.id)
    );
}

/// After its window (24 h by default) a key no longer deduplicates.
pub async fn key_expires_after_its_window(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let event = numbered(1).with_idempotency_key("k");
    let first = inbox.ingest(&tenant, event.clone()).await.expect("ingest");
    clock.advance(Duration::from_secs(24 * 3600 - 1));
    let within = inbox.ingest(&tenant, event.clone()).await.expect("retry");
    assert_eq!((within.id, within.duplicate), (first.id, true));
    clock.advance(Duration::from_secs(1));
    assert_eq!(inbox.find_by_key(&tenant, "k").await.expect("find"), None);
    let after = inbox
        .ingest(&tenant, numbered(2).with_idempotency_key("k"))
        .await
        .expect("new event under the expired key");
    assert!(!after.duplicate);
    assert_ne!(after.id, first.id);
    assert_eq!(
        inbox.find_by_key(&tenant, "k").await.expect("find"),
        Some(after.id)
    );
    assert_eq!(pull_all(&inbox, &tenant, PullQuery::new()).await.len(), 2);
}

/// Deleting an event does not free its key: a retry within the window
/// still answers with the original id and stores nothing.
pub async fn key_outlives_a_deleted_event(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let event = numbered(1).with_idempotency_key("k");
    let first = inbox.ingest(&tenant, event.clone()).await.expect("ingest");
    inbox.delete(&tenant, first.id).await.expect("delete");
    let retry = inbox.ingest(&tenant, event).await.expect("retry");
    assert_eq!((retry.id, retry.duplicate), (first.id, true));
    assert!(pull_all(&inbox, &tenant, PullQuery::new()).await.is_empty());
    let r = inbox
        .ingest(&tenant, numbered(9).with_idempotency_key("k"))
        .await;
    assert!(
        matches!(r, Err(Error::IdempotencyConflict { original, .. }) if original == first.id),
        "{r:?}"
    );
}
