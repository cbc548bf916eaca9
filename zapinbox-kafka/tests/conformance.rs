//! The whole conformance suite on librdkafka's in-process mock cluster:
//! each rule on a topic of its own, and every tenant rule twice at once on
//! one shared topic.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use zapinbox_core::testkit::{Harness, run_tenant_rules};
use zapinbox_core::{Backend, QueueConfig, Result};
use zapinbox_kafka::{KafkaBackend, MockBroker};

/// One mock cluster for every test of this binary.
fn broker() -> &'static MockBroker {
    static BROKER: OnceLock<MockBroker> = OnceLock::new();
    BROKER.get_or_init(|| MockBroker::start().expect("the in-process mock Kafka cluster starts"))
}

/// Backends on one topic: a second `open` is another instance (or a
/// restart) replaying the same log.
struct KafkaHarness {
    topic: String,
}

impl KafkaHarness {
    /// A fresh topic of 4 partitions.
    fn new() -> Self {
        let topic = format!("conformance-{:016x}", rand::random::<u64>());
        broker().create_topic(&topic, 4).expect("create the topic");
        KafkaHarness { topic }
    }
}

#[async_trait]
impl Harness for KafkaHarness {
    async fn open(&self, config: QueueConfig) -> Result<Arc<dyn Backend>> {
        let kafka = broker().config(&self.topic);
        Ok(Arc::new(KafkaBackend::open(kafka, config).await?))
    }
}

zapinbox_core::conformance_tests!(kafka, KafkaHarness::new());

/// Two suites at once on one topic: every rule stays inside its tenants,
/// whatever else the log holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_suites_at_once_share_one_topic() {
    let shared = KafkaHarness::new();
    futures::join!(run_tenant_rules(&shared), run_tenant_rules(&shared));
}
