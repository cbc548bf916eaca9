use serde_json::json;

use crate::testkit::{Harness, fresh_tenant, number_of, numbered, open_inbox, pull_all};
use crate::{Error, NewEvent, PullQuery};

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
