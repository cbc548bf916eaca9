//! Producer settings and cursors of the Kafka backend: every compression
//! codec and batched writes keep every event, and a cursor from an offset
//! starts where it says.

use std::time::Duration;

use serde_json::json;
use zapinbox_core::{Inbox, NewEvent, PullQuery, QueueConfig, TenantId};
use zapinbox_kafka::{Compression, KafkaBackend, KafkaConfig, MockBroker};

fn tenant() -> TenantId {
    TenantId::new("options").expect("valid")
}

async fn open(kafka: KafkaConfig) -> (KafkaBackend, Inbox) {
    let backend = KafkaBackend::open(kafka, QueueConfig::default())
        .await
        .expect("open");
    (backend.clone(), Inbox::new(backend))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_is_accepted_and_batched_writes_keep_every_event() {
    let broker = MockBroker::start().expect("the in-process mock Kafka cluster starts");
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for codec in codecs {
        let topic = format!("codec-{}", codec.name());
        broker.create_topic(&topic, 2).expect("create the topic");
        let kafka = broker
            .config(&topic)
            .compression(codec)
            .batched(100, Duration::from_millis(20));
        let (live, inbox) = open(kafka.clone()).await;
        let writes: Vec<_> = (0..200)
            .map(|n| {
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    let event = NewEvent::new(json!({ "n": n, "text": "x".repeat(n % 50) }));
                    inbox.ingest(&tenant(), event).await
                })
            })
            .collect();
        for write in writes {
            write.await.expect("task").expect("ingest");
        }
        let page = inbox
            .pull(&tenant(), PullQuery::new().limit(1000))
            .await
            .expect("pull");
        assert_eq!(page.events.len(), 200, "{codec:?}");
        let (replayed, _) = open(kafka).await;
        assert_eq!(
            replayed.applied_state().expect("state"),
            live.applied_state().expect("state"),
            "{codec:?}: a replay reads what was written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_an_offset_starts_there() {
    let broker = MockBroker::start().expect("the in-process mock Kafka cluster starts");
    broker.create_topic("offsets", 1).expect("create the topic");
    let (backend, inbox) = open(broker.config("offsets")).await;
    assert_eq!(backend.partition(&tenant()), 0);
    // One record each, at offsets 0 to 4 of the only partition.
    let mut ids = Vec::new();
    for n in 0..5 {
        let event = NewEvent::new(json!({ "n": n }));
        ids.push(inbox.ingest(&tenant(), event).await.expect("ingest").id);
    }
    let from = |offset| PullQuery::new().after(backend.cursor_from_offset(&tenant(), offset));
    let page = inbox.pull(&tenant(), from(2)).await.expect("pull");
    let got: Vec<_> = page.events.iter().map(|e| e.id).collect();
    assert_eq!(got, ids[2..]);
    let all = inbox.pull(&tenant(), from(0)).await.expect("pull");
    assert_eq!(all.events.len(), 5);
    let later = inbox.pull(&tenant(), from(99)).await.expect("pull");
    assert!(later.events.is_empty());
    // A cursor from another tenant's partition offset is that tenant's.
    let other = TenantId::new("someone-else").expect("valid");
    let foreign = PullQuery::new().after(backend.cursor_from_offset(&other, 0));
    assert!(inbox.pull(&tenant(), foreign).await.is_err());
}
