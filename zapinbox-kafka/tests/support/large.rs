//! Payloads larger than the broker's message size, on any broker.

use std::time::Duration;

use futures::StreamExt;
use zapinbox_core::{
    AckOutcome, Backend, ClaimQuery, Filter, Inbox, Limits, NewEvent, PullQuery, TenantId,
};
use zapinbox_kafka::{KafkaBackend, KafkaConfig};

use super::open;

pub const MB: usize = 1_000_000;

/// A JSON object of about `bytes` bytes whose text differs everywhere.
pub fn large_json(bytes: usize, seed: u64) -> String {
    let mut state = seed;
    let data: String = (0..bytes)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            // Printable ASCII without `"` and `\`.
            let c = b'#' + ((state >> 33) % 57) as u8;
            c as char
        })
        .collect();
    format!(r#"{{"seed":{seed},"data":"{data}"}}"#)
}

/// An inbox whose limits let payloads up to 64 MiB through.
pub fn large_inbox(backend: &KafkaBackend) -> Inbox {
    let limits = Limits::default()
        .with_max_payload_bytes(64 << 20)
        .with_max_batch_bytes(64 << 20);
    Inbox::builder(backend.clone()).limits(limits).build()
}

/// A 5 MB and a 50 MB payload go through ingest, pull, subscribe, claim
/// and `get` after their ack byte for byte, on a fresh topic beside
/// `kafka`'s brokers with a chunk topic of 24 partitions (librdkafka's mock
/// cluster keeps 5 MiB a partition: 50 MB needs a dozen).
pub async fn five_and_fifty_megabytes_round_trip(kafka: KafkaConfig, make: &dyn Fn(&str, i32)) {
    let topic = format!("large-{:016x}", rand::random::<u64>());
    make(&topic, 2);
    make(&format!("{topic}.chunks"), 24);
    let kafka = kafka.topic(topic);
    let backend = open(&kafka).await;
    assert_eq!(backend.capabilities().max_payload_bytes, 64 << 20);
    let inbox = large_inbox(&backend);
    for (n, size) in [5 * MB, 50 * MB].into_iter().enumerate() {
        let tenant = TenantId::new(format!("files-{n}")).expect("valid");
        let text = large_json(size, n as u64);
        let mut live = Box::pin(
            inbox
                .subscribe(&tenant, Filter::default(), None)
                .await
                .expect("subscribe"),
        );
        let small = inbox
            .ingest(&tenant, NewEvent::from_json(r#"{"small":true}"#))
            .await
            .expect("a small event");
        let stored = inbox
            .ingest(&tenant, NewEvent::from_json(text.clone()))
            .await
            .expect("a large event");

        let page = inbox.pull(&tenant, PullQuery::new()).await.expect("pull");
        assert_eq!(page.events.len(), 2);
        assert_eq!(page.events[1].id, stored.id);
        assert!(
            page.events[1].payload.as_str() == text,
            "pull, {size} bytes"
        );

        for expected in [small.id, stored.id] {
            let seen = tokio::time::timeout(Duration::from_secs(30), live.next())
                .await
                .expect("subscription in time")
                .expect("an item")
                .expect("an event");
            assert_eq!(seen.event.id, expected);
            if expected == stored.id {
                assert!(
                    seen.event.payload.as_str() == text,
                    "subscribe, {size} bytes"
                );
            }
        }

        let leased = inbox
            .claim(&tenant, ClaimQuery::new().limit(2))
            .await
            .expect("claim");
        let large = leased
            .iter()
            .find(|l| l.event.id == stored.id)
            .expect("the large event is claimed");
        assert!(large.event.payload.as_str() == text, "claim, {size} bytes");
        assert_eq!(
            inbox.ack_lease(&tenant, large.token).await.expect("ack"),
            AckOutcome::Acked
        );
        // Acked: memory let its content go, read back from the chunks.
        let got = inbox.get(&tenant, stored.id).await.expect("get");
        assert!(
            got.expect("the event").payload.as_str() == text,
            "get, {size} bytes"
        );
        let decoded: serde_json::Value = inbox
            .get(&tenant, stored.id)
            .await
            .expect("get")
            .expect("the event")
            .payload
            .decode()
            .expect("decodes");
        assert_eq!(decoded["seed"], n as u64);
    }

    // Another instance replays the log and reads the chunks itself.
    let replayed = open(&kafka).await;
    assert_eq!(
        replayed.applied_state().expect("state"),
        backend.applied_state().expect("state")
    );
}
