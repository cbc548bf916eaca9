//! Bounded replay: an instance opened from a snapshot and one that
//! replays the whole log reach exactly the state of the instance that
//! wrote it all, live.

use std::time::Duration;

use serde_json::json;
use zapinbox_core::raw::Metering;
use zapinbox_core::{
    Action, ClaimQuery, Inbox, NewEvent, QueueConfig, Redrive, RetryPolicy, TenantId, UsageRecord,
};
use zapinbox_kafka::{KafkaBackend, MockBroker, SideTopic};

fn config() -> QueueConfig {
    let retry = RetryPolicy::exponential(Duration::from_millis(1), Duration::from_millis(10))
        .with_max_attempts(2);
    QueueConfig::default().with_retry(retry)
}

/// Every kind of record, for a few tenants: keyed and plain ingests,
/// claims, acks by id and by lease, releases into the dead letters, a
/// redrive, deletes and usage.
async fn traffic(backend: &KafkaBackend, round: usize) {
    let inbox = Inbox::new(backend.clone());
    for t in 0..5 {
        let tenant = TenantId::new(format!("tenant-{t}")).expect("valid");
        let events = (0..40)
            .map(|n| {
                let event = NewEvent::new(json!({ "round": round, "n": n }));
                if n % 3 == 0 {
                    event.with_idempotency_key(format!("{round}-{n}"))
                } else {
                    event
                }
            })
            .collect();
        let ids: Vec<_> = inbox
            .ingest_batch(&tenant, events)
            .await
            .expect("ingest")
            .into_iter()
            .map(|i| i.id)
            .collect();
        for id in ids.iter().step_by(5) {
            inbox.ack(&tenant, *id).await.expect("ack");
        }
        inbox.delete(&tenant, ids[1]).await.expect("delete");
        let leased = inbox
            .claim(&tenant, ClaimQuery::new().limit(8))
            .await
            .expect("claim");
        for (i, lease) in leased.iter().enumerate() {
            match i % 3 {
                0 => drop(inbox.ack_lease(&tenant, lease.token).await.expect("ack")),
                1 => drop(
                    inbox
                        .release(&tenant, lease.token, None)
                        .await
                        .expect("release"),
                ),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        for lease in inbox
            .claim(&tenant, ClaimQuery::new().limit(3))
            .await
            .expect("claim")
        {
            inbox
                .release(&tenant, lease.token, None)
                .await
                .expect("dead-lettered");
        }
        if round % 2 == 1 {
            inbox.redrive(&tenant, Redrive::All).await.expect("redrive");
        }
        let who = (Some("client".to_owned()), None);
        let usage = UsageRecord::new(
            tenant.clone(),
            20_000,
            who,
            Action::Ingest,
            true,
            (40, 1000),
        );
        backend.add_usage(vec![usage]).await.expect("usage");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_the_start_and_from_a_snapshot_equals_the_live_state() {
    let broker = MockBroker::start().expect("the in-process mock Kafka cluster starts");
    broker.create_topic("replay", 4).expect("create the log");
    broker
        .create_topic("replay.snapshots", 2)
        .expect("create the snapshot topic");
    // Small records: each snapshot spans many chunks.
    let mut kafka = broker.config("replay");
    kafka.max_record_bytes = 16 * 1024;
    let live = KafkaBackend::open(kafka.clone(), config())
        .await
        .expect("open");
    assert_eq!(live.resumed_from(), &[0, 0, 0, 0]);
    traffic(&live, 0).await;
    let taken = live.snapshot().await.expect("snapshot");
    assert!(taken.iter().all(|offset| *offset > 0), "{taken:?}");
    traffic(&live, 1).await;
    let second = live
        .snapshot()
        .await
        .expect("a second snapshot, in the other slot");
    traffic(&live, 2).await;
    // Three more at one offset: two share a slot, their chunks interleaved
    // over the snapshot topic's partitions; the newest complete one wins.
    let mut last = Vec::new();
    for _ in 0..3 {
        last = live.snapshot().await.expect("snapshot");
    }
    assert!(
        last.iter().zip(&second).all(|(l, s)| l > s),
        "{last:?} {second:?}"
    );
    traffic(&live, 3).await;

    let from_snapshot = KafkaBackend::open(kafka.clone(), config())
        .await
        .expect("open");
    assert_eq!(from_snapshot.resumed_from(), &last[..]);
    let from_start = KafkaBackend::open(kafka.snapshots(SideTopic::Off), config())
        .await
        .expect("open");
    assert_eq!(from_start.resumed_from(), &[0, 0, 0, 0]);

    let state = live.applied_state().expect("state");
    assert_eq!(from_snapshot.applied_state().expect("state"), state);
    assert_eq!(from_start.applied_state().expect("state"), state);
}

/// Closing with writes in flight lets every one of them finish, stored,
/// and refuses every later call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_finishes_every_write_in_flight() {
    let broker = MockBroker::start().expect("the in-process mock Kafka cluster starts");
    broker.create_topic("closing", 2).expect("create the log");
    // A long linger keeps the writes in the producer when close begins.
    let kafka = broker
        .config("closing")
        .batched(1000, Duration::from_millis(300));
    let backend = KafkaBackend::open(kafka, config()).await.expect("open");
    let inbox = Inbox::new(backend.clone());
    let tenant = TenantId::new("closing").expect("valid");
    let writes: Vec<_> = (0..50)
        .map(|n| {
            let (inbox, tenant) = (inbox.clone(), tenant.clone());
            tokio::spawn(async move {
                inbox
                    .ingest(&tenant, NewEvent::new(json!({ "n": n })))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    zapinbox_core::Backend::close(&backend)
        .await
        .expect("close");
    for write in writes {
        write
            .await
            .expect("task")
            .expect("stored before the close ended");
    }
    let after = inbox
        .ingest(&tenant, NewEvent::new(json!({ "n": 99 })))
        .await;
    assert!(after.is_err(), "{after:?}");
}
