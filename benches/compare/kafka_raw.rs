//! The Kafka backend beside a raw `rdkafka` producer on the same broker,
//! with the same acks, idempotence, batching and compression: ingest
//! throughput, and the bytes a record takes on the wire with each codec.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use zapinbox::{Inbox, NewEvent, QueueConfig, TenantId};
use zapinbox_kafka::{Compression, KafkaBackend};

use crate::backends::{Brokers, fresh_topic};
use crate::report::Row;
use crate::workloads::{
    PRODUCERS, batches_in_flight, ingest_latency, ingest_over_tenants, numbered_tenant,
    payload_json,
};
use crate::{Scale, kafka};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The backend's producer settings (see `KafkaBackend::open`), with
/// `codec` and `linger_ms`.
fn producer_config(brokers: &str, codec: Compression, linger_ms: u64) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("compression.type", codec.name())
        .set("message.max.bytes", "1000000");
    config
}

/// `n` records of 200 bytes from [`PRODUCERS`] tasks, each awaiting each
/// send; records a second.
/// Each task writes to the partition of the tenant its ingests go to
/// (`partitions[task % 8]`).
async fn raw_concurrent(
    producer: &FutureProducer,
    topic: &str,
    n: usize,
    partitions: &[i32],
) -> f64 {
    let started = Instant::now();
    let tasks = (0..PRODUCERS).map(|p| {
        let (producer, topic) = (producer.clone(), topic.to_owned());
        let partition = partitions[p % 8];
        tokio::spawn(async move {
            for i in (p..n).step_by(PRODUCERS) {
                let body = payload_json(i);
                let key = format!("tenant-{}", p % 8);
                let record = FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&body)
                    .partition(partition);
                producer
                    .send(record, TIMEOUT)
                    .await
                    .map_err(|(e, _)| e)
                    .expect("send");
            }
        })
    });
    for task in join_all(tasks).await {
        task.expect("a producer task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Batches of 100 records of 200 bytes, each batch awaited whole, four
/// batches in flight, each to the partition of the tenant its
/// `ingest_batch` goes to; records a second.
async fn raw_batches(producer: &FutureProducer, topic: &str, n: usize, partitions: &[i32]) -> f64 {
    let started = Instant::now();
    let tasks = (0..4).map(|t| {
        let (producer, topic) = (producer.clone(), topic.to_owned());
        let partition = partitions[t];
        tokio::spawn(async move {
            for start in (t * 100..n).step_by(400) {
                let bodies: Vec<String> = (start..(start + 100).min(n)).map(payload_json).collect();
                let sends = bodies.iter().map(|body| {
                    let record = FutureRecord::to(&topic)
                        .key("tenant")
                        .payload(body)
                        .partition(partition);
                    producer.send(record, TIMEOUT)
                });
                for sent in join_all(sends).await {
                    sent.map_err(|(e, _)| e).expect("send");
                }
            }
        })
    });
    for task in join_all(tasks).await {
        task.expect("a producer task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Ingest throughput on `brokers`, ours and raw, in the same run. Ours
/// twice: with fetches waiting 1 ms, and 0 ms. Both brokers here answer a
/// fetch only when its wait is over, and a write waits for its own record
/// to come back; a Kafka broker answers as soon as records arrive, which
/// 0 ms comes closest to (an idle instance then fetches without pause).
pub async fn throughput(brokers: &Brokers, scale: Scale) -> Vec<Row> {
    let name = brokers.name();
    let n = scale.throughput_events;
    eprintln!("{name}: ingest throughput beside a raw producer");
    let raw_topic = fresh_topic("raw");
    brokers.create_topic(&raw_topic, 8);
    // Started and connected before timing, as the backend's producer is.
    let producer: FutureProducer = producer_config(&brokers.addresses(), Compression::None, 1)
        .create()
        .expect("a raw producer");
    // The partitions the backend puts the tenants in (both topics have 8).
    let partitions: Vec<i32> = {
        let topic = fresh_topic("partitions");
        brokers.create_topic(&topic, 8);
        let backend = KafkaBackend::open(brokers.config(&topic), QueueConfig::default())
            .await
            .expect("open");
        (0..8)
            .map(|t| backend.partition(&numbered_tenant(t)))
            .collect()
    };
    raw_concurrent(&producer, &raw_topic, PRODUCERS, &partitions).await;
    let raw = raw_concurrent(&producer, &raw_topic, n, &partitions).await;
    let raw_batched = raw_batches(&producer, &raw_topic, n, &partitions).await;
    let raw_single = kafka::raw_latency(&brokers.addresses(), &raw_topic, scale.latency_ops).await;
    let mut rows = Vec::new();
    for fetch_wait in [1, 0] {
        let topic = fresh_topic("throughput");
        brokers.create_topic(&topic, 8);
        let kafka = brokers
            .config(&topic)
            .fetch_wait(Duration::from_millis(fetch_wait));
        let backend = KafkaBackend::open(kafka, QueueConfig::default())
            .await
            .expect("open");
        let inbox = Inbox::new(backend);
        // A write waits for its record to be stored, then for it to come
        // back: the difference from a raw send is the way back.
        let single = ingest_latency(&inbox, scale.latency_ops).await;
        let latency = format!("ingest, 1 producer, each awaited, fetch wait {fetch_wait} ms");
        rows.push(Row::new(name, &latency, "p50 ms", single.p50_ms()).against(
            "raw rdkafka send, each awaited",
            raw_single.p50_ms(),
            false,
        ));
        let ours = ingest_over_tenants(&inbox, n).await;
        let ours_batched = batches_in_flight(&inbox, n, 100).await;
        let workload = format!(
            "ingest, {PRODUCERS} concurrent producers, each awaited, fetch wait {fetch_wait} ms"
        );
        let batched = format!("ingest_batch of 100, 4 in flight, fetch wait {fetch_wait} ms");
        rows.push(Row::new(name, &workload, "events/s", ours).against(
            "raw rdkafka, 64 concurrent sends, each awaited",
            raw,
            true,
        ));
        rows.push(Row::new(name, &batched, "events/s", ours_batched).against(
            "raw rdkafka, 100 sends awaited together, 4 in flight",
            raw_batched,
            true,
        ));
    }
    rows
}

/// Keeps the newest statistics librdkafka emitted.
#[derive(Clone, Default)]
struct Latest(Arc<Mutex<Option<Statistics>>>);

impl ClientContext for Latest {
    fn stats(&self, statistics: Statistics) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(statistics);
    }
}

impl Latest {
    /// Bytes sent to every broker so far.
    fn sent(&self) -> u64 {
        let latest = self.0.lock().unwrap_or_else(|p| p.into_inner());
        latest
            .as_ref()
            .map_or(0, |s| s.brokers.values().map(|b| b.txbytes).sum())
    }
}

/// Bytes a producer with the backend's settings and `codec` sends to
/// write `records` (all in flight at once, batched as they come), per
/// record: request framing and batch headers included.
async fn wire_bytes(brokers: &str, topic: &str, codec: Compression, records: &[Vec<u8>]) -> f64 {
    let stats = Latest::default();
    let producer: FutureProducer<Latest> = producer_config(brokers, codec, 5)
        .set("statistics.interval.ms", "50")
        .create_with_context(stats.clone())
        .expect("a producer with statistics");
    // Connected and counted before the records go.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = stats.sent();
    let sends = records.iter().map(|record| {
        let record = FutureRecord::<(), _>::to(topic)
            .partition(0)
            .payload(record);
        producer.send(record, TIMEOUT)
    });
    for sent in join_all(sends).await {
        sent.map_err(|(e, _)| e).expect("send");
    }
    producer.flush(TIMEOUT).expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    (stats.sent() - before) as f64 / records.len() as f64
}

/// An order as JSON of about `bytes` bytes: a realistic mix of repeated
/// keys and varying values.
fn order_json(n: usize, bytes: usize) -> String {
    let mut items = Vec::new();
    let mut text = String::new();
    for i in 0.. {
        items.push(format!(
            r#"{{"sku":"SKU-{:05}","qty":{},"price_cents":{},"warehouse":"{}"}}"#,
            (n * 31 + i * 7) % 99_991,
            1 + (n + i) % 5,
            199 + (n * 13 + i * 17) % 9_800,
            ["ams-1", "fra-2", "dub-1"][(n + i) % 3]
        ));
        text = format!(
            r#"{{"order":{n},"customer":"cust-{}","currency":"EUR","created":"2026-11-{:02}T10:{:02}:00Z","items":[{}]}}"#,
            n % 997,
            1 + n % 28,
            n % 60,
            items.join(",")
        );
        if text.len() >= bytes {
            break;
        }
    }
    text
}

/// Every record of `topic`'s partitions as the brokers hold them.
fn read_back(brokers: &str, topic: &str, partitions: i32, expected: usize) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "zapinbox-bench-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("a partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::with_capacity(expected);
    let deadline = Instant::now() + TIMEOUT;
    while records.len() < expected && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("a record");
            records.push(message.payload().unwrap_or_default().to_vec());
        }
    }
    assert_eq!(records.len(), expected, "every record read back");
    records
}

/// Bytes on the wire per event against payload size, with each codec:
/// the backend's ingest records beside the bare payloads, sent the same
/// way (on the mock cluster: bytes are the same on any broker).
pub async fn wire(brokers: &Brokers, scale: Scale) -> Vec<Row> {
    let name = brokers.name();
    let events = (scale.latency_ops * 2).min(1000);
    let addresses = brokers.addresses();
    let mut rows = Vec::new();
    for size in [200, 2_000, 20_000] {
        eprintln!("{name}: bytes on the wire, {size}-byte payloads");
        let payloads: Vec<String> = (0..events).map(|n| order_json(n, size)).collect();
        // Spread over partitions: the mock cluster keeps 5 MiB of each.
        let topic = fresh_topic("wire");
        brokers.create_topic(&topic, 8);
        let backend = KafkaBackend::open(brokers.config(&topic), QueueConfig::default())
            .await
            .expect("open");
        let inbox = Inbox::new(backend.clone());
        let tenants: Vec<TenantId> = (0..8).map(numbered_tenant).collect();
        for chunk in payloads.chunks(PRODUCERS) {
            let ingests = chunk
                .iter()
                .enumerate()
                .map(|(n, p)| inbox.ingest(&tenants[n % 8], NewEvent::from_json(p.clone())));
            for ingested in join_all(ingests).await {
                ingested.expect("ingest");
            }
        }
        let ours = read_back(&addresses, &topic, 8, events);
        let raw: Vec<Vec<u8>> = payloads.iter().map(|p| p.clone().into_bytes()).collect();
        let sink = fresh_topic("wire-sink");
        brokers.create_topic(&sink, 1);
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let ours = wire_bytes(&addresses, &sink, codec, &ours).await;
            let bare = wire_bytes(&addresses, &sink, codec, &raw).await;
            let workload = format!("bytes on the wire per event, {size}-byte JSON payloads");
            let figure = format!("bytes, {}", codec.name());
            rows.push(Row::new(name, &workload, &figure, ours).against(
                "the bare payload as a record",
                bare,
                false,
            ));
        }
    }
    rows
}
