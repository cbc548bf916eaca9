//! A topic per tenant on librdkafka's mock cluster (which makes topics
//! when a client asks for them, and cannot delete them).

mod support;

use zapinbox_core::TenantId;
use zapinbox_core::{Error, Inbox, NewEvent};
use zapinbox_kafka::{MockBroker, TenantTopics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_get_topics_that_every_instance_follows() {
    let broker = MockBroker::start().expect("the in-process mock Kafka cluster starts");
    broker
        .create_topic("tenants._snapshots", 4)
        .expect("create");
    let kafka = broker
        .config("tenants")
        .topic_per_tenant(TenantTopics::default().created_by_broker());
    support::layout::tenants_get_topics_that_every_instance_follows(kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_needs_a_topic_per_tenant() {
    let broker = MockBroker::start().expect("the in-process mock Kafka cluster starts");
    broker.create_topic("shared", 2).expect("create");
    let backend = support::open(&broker.config("shared")).await;
    let tenant = TenantId::new("acme").expect("valid");
    Inbox::new(backend.clone())
        .ingest(&tenant, NewEvent::from_json("{}"))
        .await
        .expect("ingest");
    let refused = backend.delete_tenant(&tenant).await;
    assert!(
        matches!(refused, Err(Error::Unsupported { .. })),
        "{refused:?}"
    );
}
