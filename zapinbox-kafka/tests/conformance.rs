//! The whole conformance suite on librdkafka's in-process mock cluster:
//! each rule on a topic of its own, and every tenant rule twice at once on
//! one shared topic.

mod support;

use std::sync::OnceLock;

use support::KafkaHarness;
use zapinbox_core::testkit::run_tenant_rules;
use zapinbox_kafka::MockBroker;

/// One mock cluster for every test of this binary.
fn broker() -> &'static MockBroker {
    static BROKER: OnceLock<MockBroker> = OnceLock::new();
    BROKER.get_or_init(|| MockBroker::start().expect("the in-process mock Kafka cluster starts"))
}

fn harness() -> KafkaHarness {
    let make = |topic: &str, partitions| {
        broker()
            .create_topic(topic, partitions)
            .expect("create the topic");
    };
    KafkaHarness::new(broker().config("unused"), make)
}

zapinbox_core::conformance_tests!(kafka, harness());

/// Two suites at once on one topic: every rule stays inside its tenants,
/// whatever else the log holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_suites_at_once_share_one_topic() {
    let shared = harness();
    futures::join!(run_tenant_rules(&shared), run_tenant_rules(&shared));
}
