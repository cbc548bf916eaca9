//! The whole conformance suite on librdkafka's in-process mock cluster,
//! in both layouts: each rule on a topic of its own, or with a topic per
//! tenant under a prefix of its own; and every tenant rule twice at once
//! on one shared topic, and under one prefix.

mod support;

use std::sync::OnceLock;

use support::KafkaHarness;
use zapinbox_core::testkit::run_tenant_rules;
use zapinbox_kafka::{MockBroker, TenantTopics};

/// A mock cluster for the tests of each layout (each serves its clients
/// from one thread).
fn broker() -> &'static MockBroker {
    static BROKER: OnceLock<MockBroker> = OnceLock::new();
    BROKER.get_or_init(start)
}

fn per_tenant_broker() -> &'static MockBroker {
    static BROKER: OnceLock<MockBroker> = OnceLock::new();
    BROKER.get_or_init(start)
}

fn start() -> MockBroker {
    MockBroker::start().expect("the in-process mock Kafka cluster starts")
}

fn harness() -> KafkaHarness {
    let make = |topic: &str, partitions| {
        broker()
            .create_topic(topic, partitions)
            .expect("create the topic");
    };
    KafkaHarness::new(broker().config("unused"), make)
}

/// The mock cluster has no admin API: it makes a topic when a client asks
/// for it.
fn per_tenant_harness() -> KafkaHarness {
    per_tenant_harness_fetching(5)
}

/// With fetches waiting `ms` at the broker. Every instance follows every
/// tenant's topic under its prefix: a whole suite at once is dozens of
/// instances fetching a hundred topics each, and the mock cluster answers
/// them from one thread (two suites at once are more than it serves).
fn per_tenant_harness_fetching(ms: u64) -> KafkaHarness {
    let make = |topic: &str, partitions| {
        per_tenant_broker()
            .create_topic(topic, partitions)
            .expect("create the topic");
    };
    let topics = TenantTopics::default().created_by_broker();
    let config = support::fetch_wait(per_tenant_broker().config("unused"), ms);
    KafkaHarness::per_tenant(config, topics, make)
}

/// Held by each test running whole suites at once: two of them at once
/// are more clients than the mock clusters serve in time.
static WHOLE_SUITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

zapinbox_core::conformance_tests!(kafka, harness());
zapinbox_core::conformance_tests!(kafka_topic_per_tenant, per_tenant_harness());

/// Two suites at once on one topic: every rule stays inside its tenants,
/// whatever else the log holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_suites_at_once_share_one_topic() {
    let _alone = WHOLE_SUITES.lock().await;
    let shared = harness();
    futures::join!(
        run_tenant_rules(&shared, support::RULES_AT_ONCE),
        run_tenant_rules(&shared, support::RULES_AT_ONCE)
    );
}

/// The whole suite at once under one prefix, each tenant on a topic of
/// its own: every instance follows every rule's tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_suite_at_once_shares_one_prefix() {
    let _alone = WHOLE_SUITES.lock().await;
    run_tenant_rules(&per_tenant_harness_fetching(10), support::RULES_AT_ONCE).await;
}
