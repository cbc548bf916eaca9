use serde_json::json;

use crate::testkit::{Harness, fresh_tenant, numbered, open_inbox, pull_all};
use crate::{EventStatus, NewEvent, PullQuery};

/// Every field of an ingested event reads back as it was given.
pub async fn ingest_then_get_round_trips(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let payload =
        json!({ "order": 42, "items": [1, 2.5, "three", null, true], "nested": { "a": {} } });
    let sent = NewEvent::new(payload.clone())
        .with_source("billing")
        .with_type("invoice.paid")
        .with_topic("payments")
        .with_client_id("client-7")
        .with_idempotency_key("invoice-42");
    let ingested = inbox.ingest(&tenant, sent).await.expect("ingest");
    assert!(!ingested.duplicate);
    assert_eq!(ingested.created_at, clock.now());
    assert_eq!(ingested.id.created_at(), clock.now());

    let got = inbox.get(&tenant, ingested.id).await.expect("get");
    let got = got.expect("the event is stored");
    assert_eq!(got.id, ingested.id);
    assert_eq!(got.tenant, tenant);
    assert_eq!(got.payload, payload);
    assert_eq!(got.source.as_deref(), Some("billing"));
    assert_eq!(got.event_type.as_deref(), Some("invoice.paid"));
    assert_eq!(got.topic.as_deref(), Some("payments"));
    assert_eq!(got.client_id.as_deref(), Some("client-7"));
    assert_eq!(got.idempotency_key.as_deref(), Some("invoice-42"));
    assert_eq!(got.created_at, ingested.created_at);
    assert_eq!(got.status, EventStatus::Pending);
    assert_eq!(got.attempts, 0);

    let bare = inbox
        .ingest(&tenant, NewEvent::new(json!({})))
        .await
        .expect("ingest");
    let bare = inbox
        .get(&tenant, bare.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(bare.payload, json!({}));
    assert_eq!(
        (bare.source, bare.event_type, bare.topic),
        (None, None, None)
    );
    assert_eq!((bare.client_id, bare.idempotency_key), (None, None));
}

/// Ids increase in ingest order, and pull lists events in that order.
pub async fn ids_sort_in_ingest_order(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let mut ids = Vec::new();
    for n in 0..40 {
        if n % 10 == 0 {
            clock.advance(std::time::Duration::from_millis(1));
        }
        ids.push(inbox.ingest(&tenant, numbered(n)).await.expect("ingest").id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert!(texts.windows(2).all(|w| w[0] < w[1]), "id strings sort too");
    let listed: Vec<_> = pull_all(&inbox, &tenant, PullQuery::new().limit(7))
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, ids);
}
