//! The conformance harness on a Kafka-protocol broker: a fresh topic per
//! harness, made by whatever the broker offers (the mock cluster's call,
//! or the admin API). Each test binary uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zapinbox_core::testkit::Harness;
use zapinbox_core::{Backend, QueueConfig, Result};
use zapinbox_kafka::{KafkaBackend, KafkaConfig, TenantTopics};

pub mod large;
pub mod layout;

/// Makes a topic with a number of partitions on the broker under test.
pub type MakeTopic = fn(&str, i32);

/// How many tenant rules share a store at once. Each Kafka instance holds
/// a dozen librdkafka threads and several broker connections: all rules
/// at once, twice, peaked at 2 060 threads in one process, and on these
/// 2-core machines, beside anything else running, a broker then missed
/// metadata and apply timeouts (10 s, 30 s).
pub const RULES_AT_ONCE: usize = 12;

/// Backends on one topic: a second `open` is another instance (or a
/// restart) replaying the same log.
pub struct KafkaHarness {
    config: KafkaConfig,
}

impl KafkaHarness {
    /// A fresh topic of 4 partitions, made by `make`, on the brokers
    /// `config` names.
    pub fn new(config: KafkaConfig, make: MakeTopic) -> Self {
        let topic = format!("conformance-{:016x}", rand::random::<u64>());
        make(&topic, 4);
        make(&format!("{topic}.chunks"), 4);
        KafkaHarness {
            config: config.topic(topic),
        }
    }

    /// A topic per tenant under a fresh prefix, made as `topics` says,
    /// with a chunk topic made by `make`.
    pub fn per_tenant(config: KafkaConfig, topics: TenantTopics, make: MakeTopic) -> Self {
        let prefix = format!("per-tenant-{:016x}", rand::random::<u64>());
        make(&format!("{prefix}._chunks"), 4);
        KafkaHarness {
            config: config.topic(prefix).topic_per_tenant(topics),
        }
    }
}

#[async_trait]
impl Harness for KafkaHarness {
    async fn open(&self, config: QueueConfig) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(
            KafkaBackend::open(self.config.clone(), config).await?,
        ))
    }
}

/// A backend on `kafka` with the default rules.
pub async fn open(kafka: &KafkaConfig) -> KafkaBackend {
    KafkaBackend::open(kafka.clone(), QueueConfig::default())
        .await
        .expect("open")
}

/// Fetches that wait `ms` at the broker.
pub fn fetch_wait(config: KafkaConfig, ms: u64) -> KafkaConfig {
    config.fetch_wait(Duration::from_millis(ms))
}
