use crate::testkit::{Harness, fresh_tenant, number_of, numbered, open_inbox, pull_all};
use crate::{AckOutcome, Error, EventId, EventStatus, PullQuery, Timestamp};

/// Ack takes an event out of the inbox; acking again is `AlreadyAcked`.
pub async fn ack_twice_is_already_acked(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let first = numbered(1).with_source("billing").with_topic("payments");
    let a = inbox.ingest(&tenant, first).await.expect("ingest").id;
    let b = inbox.ingest(&tenant, numbered(2)).await.expect("ingest").id;
    assert_eq!(inbox.ack(&tenant, a).await.expect("ack"), AckOutcome::Acked);
    assert_eq!(
        inbox.ack(&tenant, a).await.expect("ack"),
        AckOutcome::AlreadyAcked
    );
    let pending: Vec<_> = pull_all(&inbox, &tenant, PullQuery::new())
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(pending, vec![b]);
    let acked = inbox
        .get(&tenant, a)
        .await
        .expect("get")
        .expect("acked events stay readable");
    assert_eq!(acked.status, EventStatus::Acked);
    assert_eq!(number_of(&acked), Some(1), "with their payload");
    let fields = (acked.source.as_deref(), acked.topic.as_deref());
    assert_eq!(fields, (Some("billing"), Some("payments")));

    // An event stored beside a repeated key in one batch, acked, reads
    // back as itself.
    let keyed = || numbered(7).with_idempotency_key("seven");
    inbox.ingest(&tenant, keyed()).await.expect("ingest");
    let batch = vec![keyed(), numbered(8)];
    let stored = inbox.ingest_batch(&tenant, batch).await.expect("batch");
    assert!(stored[0].duplicate && !stored[1].duplicate);
    inbox.ack(&tenant, stored[1].id).await.expect("ack");
    let eighth = inbox.get(&tenant, stored[1].id).await.expect("get");
    assert_eq!(eighth.as_ref().and_then(number_of), Some(8), "{eighth:?}");
}

/// An id that does not exist, or exists in another tenant, is `NotFound`
/// for ack and delete and absent for get; the other tenant's event is
/// untouched.
pub async fn unknown_or_foreign_id_is_not_found(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let (tenant, other) = (fresh_tenant(), fresh_tenant());
    let theirs = inbox.ingest(&other, numbered(1)).await.expect("ingest").id;
    let unknown = EventId::generate(Timestamp::from_millis(1));
    for id in [unknown, theirs] {
        let r = inbox.ack(&tenant, id).await;
        assert!(
            matches!(r, Err(Error::NotFound { id: got }) if got == id),
            "ack: {r:?}"
        );
        let r = inbox.delete(&tenant, id).await;
        assert!(
            matches!(r, Err(Error::NotFound { id: got }) if got == id),
            "delete: {r:?}"
        );
        assert_eq!(inbox.get(&tenant, id).await.expect("get"), None);
    }
    let still = inbox
        .get(&other, theirs)
        .await
        .expect("get")
        .expect("untouched");
    assert_eq!(still.status, EventStatus::Pending);
}

/// After delete, get is empty and ack and delete are `NotFound`; delete
/// works in every state.
pub async fn delete_then_everything_is_not_found(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let pending = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let acked = inbox.ingest(&tenant, numbered(2)).await.expect("ingest").id;
    inbox.ack(&tenant, acked).await.expect("ack");
    let out = inbox
        .delete(&tenant, pending)
        .await
        .expect("delete pending");
    assert_eq!(out.previous, EventStatus::Pending);
    let out = inbox.delete(&tenant, acked).await.expect("delete acked");
    assert_eq!(out.previous, EventStatus::Acked);
    for id in [pending, acked] {
        assert_eq!(inbox.get(&tenant, id).await.expect("get"), None);
        let r = inbox.ack(&tenant, id).await;
        assert!(
            matches!(r, Err(Error::NotFound { .. })),
            "ack after delete: {r:?}"
        );
        let r = inbox.delete(&tenant, id).await;
        assert!(
            matches!(r, Err(Error::NotFound { .. })),
            "delete after delete: {r:?}"
        );
    }
    assert!(pull_all(&inbox, &tenant, PullQuery::new()).await.is_empty());
}
