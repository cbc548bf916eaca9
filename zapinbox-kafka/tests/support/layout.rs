//! A topic per tenant, on any broker: each tenant's log on a topic of its
//! own that every instance follows, snapshots per topic, and offboarding.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use zapinbox_core::testkit::eventually;
use zapinbox_core::{Inbox, NewEvent, PullQuery, TenantId};
use zapinbox_kafka::{KafkaConfig, SideTopic};

use super::open;

/// A client of the brokers `kafka` names, to ask them about topics.
fn client(kafka: &KafkaConfig) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .expect("a client")
}

/// Whether `topic` exists on the brokers `kafka` names.
pub fn topic_exists(kafka: &KafkaConfig, topic: &str) -> bool {
    let metadata = client(kafka)
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    metadata.topics().iter().any(|t| t.name() == topic)
}

/// Where the tenant registry under `kafka`'s prefix ends now.
pub fn registry_end(kafka: &KafkaConfig) -> i64 {
    let registry = format!("{}._tenants", kafka.topic);
    let (_, end) = client(kafka)
        .fetch_watermarks(&registry, 0, Duration::from_secs(10))
        .expect("the registry's watermarks");
    end
}

/// How many events `tenant` has pending, as `inbox` sees it.
pub async fn pending(inbox: &Inbox, tenant: &TenantId) -> usize {
    let page = inbox.pull(tenant, PullQuery::new().limit(100)).await;
    page.expect("pull").events.len()
}

/// Two instances under `kafka`'s prefix (with a topic per tenant): a
/// tenant's first write makes its topic, the other instance follows it,
/// and a snapshot resumes each tenant's topic.
pub async fn tenants_get_topics_that_every_instance_follows(kafka: KafkaConfig) {
    let prefix = kafka.topic.clone();
    let a = open(&kafka).await;
    let b = open(&kafka).await;
    let (on_a, on_b) = (Inbox::new(a.clone()), Inbox::new(b.clone()));
    let odd = TenantId::new("team:7@acme.eu_1").expect("valid");
    let plain = TenantId::new("plain").expect("valid");
    for n in 0..3 {
        on_a.ingest(&odd, NewEvent::new(json!({ "n": n })))
            .await
            .expect("ingest");
    }
    on_b.ingest(&plain, NewEvent::new(json!({ "n": 0 })))
        .await
        .expect("ingest");
    assert!(topic_exists(
        &kafka,
        &format!("{prefix}.team_3a7_40acme_2eeu_5f1")
    ));
    assert!(topic_exists(&kafka, &format!("{prefix}.plain")));
    assert_eq!(a.partition(&odd), 0);

    let lag = Duration::from_secs(10);
    assert!(eventually(lag, || async { pending(&on_b, &odd).await == 3 }).await);
    assert!(eventually(lag, || async { pending(&on_a, &plain).await == 1 }).await);
    assert!(
        eventually(lag, || async {
            a.applied_state().expect("state") == b.applied_state().expect("state")
        })
        .await
    );

    // Snapshots resume each tenant's topic where they were taken.
    let offsets = a.snapshot().await.expect("snapshot");
    assert_eq!(offsets.len(), 2, "one lane a tenant");
    let resumed = open(&kafka).await;
    assert_eq!(resumed.resumed_from(), offsets.as_slice());
    assert_eq!(
        resumed.applied_state().expect("state"),
        a.applied_state().expect("state")
    );
    let replayed = open(&kafka.clone().snapshots(SideTopic::Off)).await;
    assert!(replayed.resumed_from().iter().all(|&offset| offset == 0));
    assert_eq!(
        replayed.applied_state().expect("state"),
        a.applied_state().expect("state")
    );
}

/// Deleting a tenant (offboarding) deletes its topic: every instance
/// forgets it, other tenants keep everything, and a later write starts
/// the tenant afresh, its old snapshot forgotten. The instances that
/// followed the old topic are closed first: librdkafka 2.12 remembers the
/// old topic's id, and tansu 0.6.0 answers a fetch by an unknown id in a
/// way that crashes it.
pub async fn offboarding_deletes_the_tenants_topic(kafka: KafkaConfig) {
    let prefix = kafka.topic.clone();
    let a = open(&kafka).await;
    let b = open(&kafka).await;
    let (on_a, on_b) = (Inbox::new(a.clone()), Inbox::new(b.clone()));
    let leaving = TenantId::new("leaving").expect("valid");
    let staying = TenantId::new("staying").expect("valid");
    for tenant in [&leaving, &staying] {
        on_a.ingest(tenant, NewEvent::new(json!({ "n": 1 })))
            .await
            .expect("ingest");
    }
    for n in 2..5 {
        on_a.ingest(&leaving, NewEvent::new(json!({ "n": n })))
            .await
            .expect("ingest");
    }
    let lag = Duration::from_secs(10);
    assert!(eventually(lag, || async { pending(&on_b, &leaving).await == 4 }).await);
    a.snapshot().await.expect("snapshot");

    let announced = registry_end(&kafka);
    let deleting = {
        let (a, leaving) = (a.clone(), leaving.clone());
        tokio::spawn(async move { a.delete_tenant(&leaving).await })
    };
    // Opened while the topic is still there, its deletion announced (the
    // topic goes a second later): it does not follow it.
    assert!(eventually(lag, || async { registry_end(&kafka) > announced }).await);
    assert!(topic_exists(&kafka, &format!("{prefix}.leaving")));
    let early = open(&kafka).await;
    let on_early = Inbox::new(early.clone());
    assert_eq!(pending(&on_early, &leaving).await, 0);
    assert_eq!(pending(&on_early, &staying).await, 1);
    deleting.await.expect("task").expect("delete the tenant");
    assert!(!topic_exists(&kafka, &format!("{prefix}.leaving")));
    assert_eq!(pending(&on_a, &leaving).await, 0);
    assert!(eventually(lag, || async { pending(&on_b, &leaving).await == 0 }).await);
    assert_eq!(pending(&on_b, &staying).await, 1);
    for inbox in [&on_a, &on_b, &on_early] {
        inbox.close().await.expect("close");
    }

    let c = open(&kafka).await;
    let on_c = Inbox::new(c.clone());
    assert_eq!(pending(&on_c, &leaving).await, 0);
    assert_eq!(pending(&on_c, &staying).await, 1);
    on_c.ingest(&leaving, NewEvent::new(json!({ "n": "again" })))
        .await
        .expect("ingest again");
    let page = on_c.pull(&leaving, PullQuery::new()).await.expect("pull");
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].payload, json!({ "n": "again" }));
    on_c.close().await.expect("close");

    // Opened later, from the snapshots: the tenant's new topic, from its
    // start, not the deleted one's state.
    let d = open(&kafka).await;
    let page = Inbox::new(d)
        .pull(&leaving, PullQuery::new())
        .await
        .expect("pull");
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].payload, json!({ "n": "again" }));
}
