//! The whole conformance suite on tansu, a standalone Kafka-compatible
//! broker, which the test script builds, starts on 127.0.0.1 and stops
//! (`ZAPINBOX_TANSU_BROKERS` names it). Without it these tests fail,
//! saying how to get one.

mod support;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use support::KafkaHarness;
use zapinbox_kafka::{KafkaConfig, TenantTopics};

const BROKERS_ENV: &str = "ZAPINBOX_TANSU_BROKERS";

fn brokers() -> String {
    std::env::var(BROKERS_ENV).unwrap_or_else(|_| {
        panic!(
            "{BROKERS_ENV} is not set: these tests need a tansu broker. \
             ./scripts/test.sh builds and starts one (scripts/tansu.sh)"
        )
    })
}

/// Creates `topic` with the admin API (tansu creates no topic by
/// itself), on a thread of its own: harnesses are made inside tests'
/// runtimes.
fn make_topic(topic: &str, partitions: i32) {
    let (topic, brokers) = (topic.to_owned(), brokers());
    let created = std::thread::spawn(move || {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("an admin client");
        let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        futures::executor::block_on(admin.create_topics([&new], &options))
    })
    .join()
    .expect("the admin thread")
    .expect("CreateTopics answers");
    for result in created {
        result.unwrap_or_else(|(topic, e)| panic!("tansu refused to create {topic}: {e}"));
    }
}

fn harness() -> KafkaHarness {
    // tansu, like the mock cluster, answers a fetch only when its wait is
    // over, and each write waits for its record to come back.
    let config = support::fetch_wait(KafkaConfig::new(brokers()), 5);
    KafkaHarness::new(config, make_topic)
}

/// A topic per tenant, made with the admin API.
fn per_tenant_harness() -> KafkaHarness {
    let config = support::fetch_wait(KafkaConfig::new(brokers()), 5);
    KafkaHarness::per_tenant(config, TenantTopics::default(), make_topic)
}

/// A fresh prefix for a topic per tenant.
fn per_tenant_config() -> KafkaConfig {
    let prefix = format!("layout-{:016x}", rand::random::<u64>());
    support::fetch_wait(KafkaConfig::new(brokers()), 5)
        .topic(prefix)
        .topic_per_tenant(TenantTopics::default())
}

zapinbox_core::conformance_tests!(tansu, harness());
zapinbox_core::conformance_tests!(tansu_topic_per_tenant, per_tenant_harness());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_get_topics_that_every_instance_follows() {
    let kafka = per_tenant_config();
    make_topic(&format!("{}._snapshots", kafka.topic), 4);
    support::layout::tenants_get_topics_that_every_instance_follows(kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_deletes_the_tenants_topic() {
    let kafka = per_tenant_config();
    make_topic(&format!("{}._snapshots", kafka.topic), 4);
    support::layout::offboarding_deletes_the_tenants_topic(kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_and_fifty_megabytes_round_trip_through_every_read() {
    let kafka = support::fetch_wait(KafkaConfig::new(brokers()), 5);
    support::large::five_and_fifty_megabytes_round_trip(kafka, &make_topic).await;
}

/// The whole suite at once under one prefix, each tenant on a topic of
/// its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_suite_at_once_shares_one_prefix() {
    zapinbox_core::testkit::run_tenant_rules(&per_tenant_harness(), support::RULES_AT_ONCE).await;
}

/// Two suites at once on one topic of a standalone broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_suites_at_once_share_one_topic() {
    let shared = harness();
    futures::join!(
        zapinbox_core::testkit::run_tenant_rules(&shared, support::RULES_AT_ONCE),
        zapinbox_core::testkit::run_tenant_rules(&shared, support::RULES_AT_ONCE)
    );
}
