//! Payloads larger than the broker's message size on librdkafka's mock
//! cluster: split into chunks on the chunk topic and put back together,
//! byte for byte, wherever an event is read; a chunk gone from the log
//! damages its own event's payload (a typed error) and nothing else.

mod support;

use support::large::{MB, large_inbox, large_json};
use support::open;
use zapinbox_core::{DeleteOutcome, Error, EventStatus, NewEvent, PullQuery, TenantId};
use zapinbox_kafka::MockBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_and_fifty_megabytes_round_trip_through_every_read() {
    let broker = MockBroker::start().expect("the in-process mock Kafka cluster starts");
    let make = |topic: &str, partitions| {
        broker
            .create_topic(topic, partitions)
            .expect("create a topic");
    };
    support::large::five_and_fifty_megabytes_round_trip(broker.config("unused"), &make).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_gone_from_the_log_damages_only_its_own_event() {
    let broker = MockBroker::start().expect("the in-process mock Kafka cluster starts");
    broker.create_topic("gone", 1).expect("create the log");
    // One partition of the mock's 5 MiB: a second large payload pushes the
    // first one's chunks out of the log.
    broker
        .create_topic("gone.chunks", 1)
        .expect("create chunks");
    let kafka = broker.config("gone");
    let backend = open(&kafka).await;
    let inbox = large_inbox(&backend);
    let tenant = TenantId::new("files").expect("valid");
    let first = large_json(3 * MB, 1);
    let second = large_json(4 * MB, 2);
    let lost = inbox
        .ingest(&tenant, NewEvent::from_json(first))
        .await
        .expect("ingest");
    let small = inbox
        .ingest(&tenant, NewEvent::from_json(r#"{"small":true}"#))
        .await
        .expect("ingest");
    let kept = inbox
        .ingest(&tenant, NewEvent::from_json(second.clone()))
        .await
        .expect("ingest");

    // An instance opened now finds the first payload's chunks gone.
    let later = open(&kafka).await;
    let later_inbox = large_inbox(&later);
    let page = later_inbox
        .pull(&tenant, PullQuery::new())
        .await
        .expect("the damaged event still lists");
    let ids: Vec<_> = page.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![lost.id, small.id, kept.id]);
    let damaged = page.events[0].payload.as_value();
    assert!(
        matches!(&damaged, Err(Error::Decode { reason }) if reason.contains("gone")),
        "{damaged:?}"
    );
    assert_eq!(page.events[1].payload, serde_json::json!({ "small": true }));
    assert!(page.events[2].payload.as_str() == second);
    assert_eq!(
        later_inbox.delete(&tenant, lost.id).await.expect("delete"),
        DeleteOutcome::new(EventStatus::Pending)
    );
    let left = later_inbox
        .pull(&tenant, PullQuery::new())
        .await
        .expect("pull");
    assert_eq!(left.events.len(), 2);
}
