//! The backends the workloads run on: one factory each.

use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use zapinbox::sqlite::{Durability, SqliteBackend};
use zapinbox::{Backend, MemoryBackend, QueueConfig};
use zapinbox_kafka::{KafkaBackend, KafkaConfig, MockBroker};

/// A backend opened for one workload.
pub struct Opened {
    pub backend: Arc<dyn Backend>,
    /// Transactions committed so far, where the backend counts them.
    pub commits: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
}

/// Opens a fresh backend for one workload.
#[async_trait]
pub trait BenchBackend: Send + Sync {
    /// The name in the report.
    fn name(&self) -> &'static str;
    /// A fresh backend whose files, if any, live in `dir`.
    async fn open(&self, dir: &Path) -> Opened;
    /// Whether the raw SQLite baselines apply to it.
    fn has_raw_baseline(&self) -> bool;
    /// Whether it cannot run `workload` as the others do (a batch of 100
    /// that does not fit in one of its transactions).
    fn skips(&self, workload: &str) -> bool {
        let _ = workload;
        false
    }
    /// How big its workloads are, given the run's scale.
    fn scale(&self, scale: crate::Scale) -> crate::Scale {
        scale
    }
}

/// The environment variable naming a tansu broker to run the Kafka
/// workloads on as well (the test script sets it).
pub const TANSU_ENV: &str = "ZAPINBOX_TANSU_BROKERS";

/// Every backend this build can benchmark: SQLite, memory, Kafka on the
/// mock cluster, Kafka on tansu when one runs, and DynamoDB Local when one
/// runs.
pub fn all() -> Vec<Box<dyn BenchBackend>> {
    let mut all: Vec<Box<dyn BenchBackend>> = vec![Box::new(Sqlite), Box::new(Memory)];
    for brokers in kafka_brokers() {
        all.push(Box::new(Kafka::on(brokers)));
    }
    if let Some(endpoint) = crate::dynamo::endpoint() {
        all.push(Box::new(crate::dynamo::Dynamo { endpoint }));
    }
    all
}

/// The mock cluster, and tansu when one runs.
pub fn kafka_brokers() -> Vec<Brokers> {
    let mut brokers = vec![Brokers::mock()];
    if let Ok(addresses) = std::env::var(TANSU_ENV) {
        brokers.push(Brokers::Tansu(addresses));
    }
    brokers
}

/// A Kafka-protocol broker the workloads run on.
pub enum Brokers {
    /// librdkafka's in-process mock cluster.
    Mock(MockBroker),
    /// A tansu broker at these addresses.
    Tansu(String),
}

impl Brokers {
    pub fn mock() -> Self {
        Brokers::Mock(MockBroker::start().expect("the in-process mock Kafka cluster starts"))
    }

    /// The backend's name in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Brokers::Mock(_) => "kafka (mock cluster)",
            Brokers::Tansu(_) => "kafka (tansu)",
        }
    }

    pub fn addresses(&self) -> String {
        match self {
            Brokers::Mock(broker) => broker.brokers().to_owned(),
            Brokers::Tansu(brokers) => brokers.clone(),
        }
    }

    /// Makes `topic` with `partitions` partitions: the mock cluster's call,
    /// or the admin API (tansu makes no topic by itself).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        match self {
            Brokers::Mock(broker) => broker
                .create_topic(topic, partitions)
                .expect("create a topic"),
            Brokers::Tansu(brokers) => {
                let (topic, brokers) = (topic.to_owned(), brokers.clone());
                let created = std::thread::spawn(move || {
                    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                        .set("bootstrap.servers", &brokers)
                        .create()
                        .expect("an admin client");
                    let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
                    let options =
                        AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
                    futures::executor::block_on(admin.create_topics([&new], &options))
                })
                .join()
                .expect("the admin thread")
                .expect("CreateTopics answers");
                for result in created {
                    result.expect("the topic is created");
                }
            }
        }
    }

    /// Settings for a backend on `topic`: fetches wait 1 ms (both brokers
    /// answer a fetch only when its wait is over, and a write waits for
    /// its record to come back).
    pub fn config(&self, topic: &str) -> KafkaConfig {
        KafkaConfig::new(self.addresses())
            .topic(topic)
            .fetch_wait(Duration::from_millis(1))
    }
}

/// A topic name no earlier run or workload used.
pub fn fresh_topic(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let nanos = since.map_or(0, |d| d.as_nanos());
    format!("{prefix}-{nanos:x}-{n}")
}

/// The Kafka backend with the shared topic: a fresh topic of 8 partitions
/// (and its chunk topic) for each workload.
pub struct Kafka {
    brokers: Brokers,
}

impl Kafka {
    pub fn on(brokers: Brokers) -> Self {
        Kafka { brokers }
    }
}

#[async_trait]
impl BenchBackend for Kafka {
    fn name(&self) -> &'static str {
        self.brokers.name()
    }

    async fn open(&self, _dir: &Path) -> Opened {
        let topic = fresh_topic("bench");
        self.brokers.create_topic(&topic, 8);
        self.brokers.create_topic(&format!("{topic}.chunks"), 8);
        let backend = KafkaBackend::open(self.brokers.config(&topic), QueueConfig::default())
            .await
            .expect("open Kafka");
        Opened {
            backend: Arc::new(backend),
            commits: None,
        }
    }

    fn has_raw_baseline(&self) -> bool {
        false
    }
}

pub struct Sqlite;

#[async_trait]
impl BenchBackend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn open(&self, dir: &Path) -> Opened {
        let backend = SqliteBackend::builder(dir.join("bench.db"))
            .durability(Durability::Full)
            .config(QueueConfig::default())
            .open()
            .await
            .expect("open SQLite");
        let counter = backend.clone();
        Opened {
            backend: Arc::new(backend),
            commits: Some(Box::new(move || counter.commits())),
        }
    }

    fn has_raw_baseline(&self) -> bool {
        true
    }
}

pub struct Memory;

#[async_trait]
impl BenchBackend for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn open(&self, _dir: &Path) -> Opened {
        Opened {
            backend: Arc::new(MemoryBackend::new()),
            commits: None,
        }
    }

    fn has_raw_baseline(&self) -> bool {
        false
    }
}
