use serde_json::json;

use crate::testkit::{Harness, fresh_tenant, number_of, numbered, open_inbox, pull_all};
use crate::{Error, EventId, Inbox, Limits, NewEvent, PullQuery, Redrive};

/// A batch stores all its events in order, or none: one invalid event or
/// one idempotency conflict fails the whole batch. Each event gets its own
/// idempotency handling, also against earlier events of the same batch.
pub async fn batch_is_all_or_nothing(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let existing = inbox
        .ingest(&tenant, numbered(0).with_idempotency_key("k0"))
        .await
        .expect("ingest");

    let invalid = vec![numbered(1), NewEvent::new(json!([1, 2])), numbered(3)];
    let r = inbox.ingest_batch(&tenant, invalid).await;
    assert!(
        matches!(&r, Err(Error::InvalidInput(m)) if m.contains("item 1")),
        "{r:?}"
    );

    let conflicting = vec![numbered(1), numbered(99).with_idempotency_key("k0")];
    let r = inbox.ingest_batch(&tenant, conflicting).await;
    assert!(
        matches!(r, Err(Error::IdempotencyConflict { original, .. }) if original == existing.id),
        "{r:?}"
    );

    let inner_conflict = vec![
        numbered(1).with_idempotency_key("k1"),
        numbered(2).with_idempotency_key("k1"),
    ];
    let r = inbox.ingest_batch(&tenant, inner_conflict).await;
    assert!(matches!(r, Err(Error::IdempotencyConflict { .. })), "{r:?}");
    assert_eq!(
        inbox.find_by_key(&tenant, "k1").await.expect("find"),
        None,
        "rolled back"
    );

    let numbers =
        |events: Vec<crate::Event>| events.iter().filter_map(number_of).collect::<Vec<_>>();
    assert_eq!(
        numbers(pull_all(&inbox, &tenant, PullQuery::new()).await),
        vec![0]
    );

    let good = vec![
        numbered(1),
        numbered(0).with_idempotency_key("k0"),
        numbered(2).with_idempotency_key("k2"),
        numbered(2).with_idempotency_key("k2"),
        numbered(3),
    ];
    let out = inbox.ingest_batch(&tenant, good).await.expect("batch");
    let dup: Vec<bool> = out.iter().map(|i| i.duplicate).collect();
    assert_eq!(dup, vec![false, true, false, true, false]);
    assert_eq!(out[1].id, existing.id);
    assert_eq!(out[3].id, out[2].id);
    assert!(out[0].id < out[2].id && out[2].id < out[4].id);
    assert_eq!(
        numbers(pull_all(&inbox, &tenant, PullQuery::new()).await),
        vec![0, 1, 2, 3]
    );
    assert!(
        inbox
            .ingest_batch(&tenant, Vec::new())
            .await
            .expect("empty batch")
            .is_empty()
    );
}

/// One call cannot hold the backend without bound: a batch of more than
/// `Limits::max_batch_events` (default 1 000, or the backend's atomic
/// batch if smaller) events or `Limits::max_batch_bytes` (default 16 MiB)
/// of payload, and a redrive or purge naming more than `Limits::max_ids`
/// (default 1 000) ids, are `LimitExceeded` naming the limit, and nothing
/// is stored or changed.
pub async fn requests_over_the_batch_limits_are_refused(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let defaults = Limits::default();
    assert_eq!(
        (
            defaults.max_batch_events,
            defaults.max_batch_bytes,
            defaults.max_ids
        ),
        (1000, 16 * 1024 * 1024, 1000)
    );
    assert_eq!(*inbox.limits(), defaults.within(&inbox.capabilities()));
    let max = inbox.limits().max_batch_events;
    fn over<T>(r: &crate::Result<T>, name: &str, actual: u64, limit: u64) -> bool {
        let ok = matches!(r, Err(Error::LimitExceeded { what, actual: a, limit: l })
            if what.contains(name) && *a == actual && *l == limit);
        let message = r
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        ok && message.contains(name) && message.contains(&limit.to_string())
    }
    let r = inbox
        .ingest_batch(&tenant, (0..=max).map(numbered).collect())
        .await;
    assert!(
        over(&r, "max_batch_events", max as u64 + 1, max as u64),
        "{r:?}"
    );
    let full = inbox
        .ingest_batch(&tenant, (0..max).map(numbered).collect())
        .await
        .expect("a batch of exactly the limit");
    assert_eq!(full.len(), max);

    let small = Inbox::builder(inbox.backend().clone())
        .limits(Limits::default().with_max_batch_bytes(100))
        .build();
    let sized = |n: usize| NewEvent::new(json!({ "p": "x".repeat(n) }));
    // Two payloads of 50 bytes fit; a third byte-long payload does not.
    small
        .ingest_batch(&tenant, vec![sized(42), sized(42)])
        .await
        .expect("exactly 100 bytes");
    let r = small
        .ingest_batch(&tenant, vec![sized(42), sized(42), sized(1)])
        .await;
    assert!(over(&r, "max_batch_bytes", 109, 100), "{r:?}");

    let ids: Vec<EventId> = (0..1001).map(|_| inbox.clock().next_id()).collect();
    let r = inbox.redrive(&tenant, Redrive::Ids(ids.clone())).await;
    assert!(over(&r, "max_ids", 1001, 1000), "{r:?}");
    let r = inbox.purge_dead_letters(&tenant, Redrive::Ids(ids)).await;
    assert!(over(&r, "max_ids", 1001, 1000), "{r:?}");
    assert_eq!(
        pull_all(&inbox, &tenant, PullQuery::new()).await.len(),
        max + 2,
        "only the batches within the limits were stored"
    );
}
