//! The Kafka backend on librdkafka's in-process mock cluster: ingest
//! latency beside a raw idempotent producer (`acks=all`) awaiting each
//! record on the same broker, how long a new instance takes to replay the
//! history (from the log's start and from a snapshot), and the memory a
//! pending event takes in an instance.

use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use zapinbox::{Inbox, NewEvent, QueueConfig};
use zapinbox_kafka::{KafkaBackend, KafkaConfig, MockBroker, SideTopic};

use crate::Scale;
use crate::report::Row;
use crate::workloads::{
    Latencies, WARM_UP, ingest_latency, numbered_tenant, payload, payload_json,
};

const BACKEND: &str = "kafka (mock cluster)";
/// The mock broker keeps about 5 MiB a partition: spread the history.
const PARTITIONS: i32 = 128;
const TENANTS: usize = 256;
const BATCH: usize = 500;

/// `VmRSS` of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:"));
    let kib = line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    kib.unwrap_or(0)
}

/// Sequential sends of one 200-byte record, each awaited: the broker's
/// round trip with the same acks and idempotence as the backend.
pub async fn raw_latency(brokers: &str, topic: &str, ops: usize) -> Latencies {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create()
        .expect("a raw producer");
    let mut latencies = Latencies::default();
    let started = Instant::now();
    for i in 0..WARM_UP + ops {
        let body = payload_json(i);
        let record = FutureRecord::to(topic)
            .partition(0)
            .key("bench")
            .payload(&body);
        let sent = Instant::now();
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("raw send");
        if i >= WARM_UP {
            latencies.push(sent.elapsed());
        }
    }
    latencies.finish(started.elapsed())
}

/// Ingests `n` events over the tenants, four batches in flight.
async fn fill(inbox: &Inbox, n: usize) -> f64 {
    let started = Instant::now();
    let batches: Vec<usize> = (0..n).step_by(BATCH).collect();
    for group in batches.chunks(4) {
        let sends = group.iter().map(|&start| {
            let events = (start..(start + BATCH).min(n))
                .map(|i| NewEvent::new(payload(i)))
                .collect();
            let inbox = inbox.clone();
            async move {
                let tenant = numbered_tenant(start / BATCH % TENANTS);
                inbox.ingest_batch(&tenant, events).await
            }
        });
        for sent in join_all(sends).await {
            sent.expect("fill");
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn timed_open(kafka: KafkaConfig) -> (KafkaBackend, Duration) {
    let started = Instant::now();
    let backend = KafkaBackend::open(kafka, QueueConfig::default())
        .await
        .expect("open");
    (backend, started.elapsed())
}

pub async fn run(scale: Scale) -> Vec<Row> {
    let history = scale.kafka_history;
    eprintln!("kafka: ingest latency, then {history} events replayed");
    let broker = MockBroker::start().expect("the in-process mock Kafka cluster starts");
    for (topic, partitions) in [
        ("raw", 1),
        ("bench", PARTITIONS),
        ("bench.snapshots", 4 * PARTITIONS),
    ] {
        broker
            .create_topic(topic, partitions)
            .expect("create a topic");
    }
    // Fetches that wait 1 ms: the mock answers one only when its wait is
    // over, and a write waits for its record to come back.
    let kafka = broker.config("bench").fetch_wait(Duration::from_millis(1));
    let raw = raw_latency(broker.brokers(), "raw", scale.latency_ops).await;
    let live = KafkaBackend::open(kafka.clone(), QueueConfig::default())
        .await
        .expect("open");
    let inbox = Inbox::new(live.clone());
    let ours = ingest_latency(&inbox, scale.latency_ops).await;
    let workload = "ingest, 1 producer, each awaited";
    let raw_name = "raw rdkafka send, each awaited";
    let mut rows = vec![
        Row::new(BACKEND, workload, "p50 ms", ours.p50_ms()).against(raw_name, raw.p50_ms(), false),
        Row::new(BACKEND, workload, "p99 ms", ours.p99_ms()).against(raw_name, raw.p99_ms(), false),
    ];
    let rate = fill(&inbox, history).await;
    let filled = format!("fill {history} events, batches of {BATCH}, 4 in flight");
    rows.push(Row::new(BACKEND, &filled, "events/s", rate));

    let before = rss_kib();
    let (replayed, took) = timed_open(kafka.clone().snapshots(SideTopic::Off)).await;
    let grown = rss_kib().saturating_sub(before) as f64 * 1024.0;
    drop(replayed);
    let replay = format!("open, replaying {history} events from the start");
    rows.push(Row::new(BACKEND, &replay, "seconds", took.as_secs_f64()));
    let memory = format!("memory per pending event, {history} pending");
    rows.push(Row::new(
        BACKEND,
        &memory,
        "bytes (RSS growth)",
        grown / history as f64,
    ));

    let started = Instant::now();
    live.snapshot().await.expect("snapshot");
    let snapshot = format!("snapshot of {history} events");
    rows.push(Row::new(
        BACKEND,
        &snapshot,
        "seconds",
        started.elapsed().as_secs_f64(),
    ));
    let (resumed, took) = timed_open(kafka).await;
    assert!(resumed.resumed_from().iter().any(|offset| *offset > 0));
    let from_snapshot = format!("open from a snapshot of {history} events");
    rows.push(Row::new(
        BACKEND,
        &from_snapshot,
        "seconds",
        took.as_secs_f64(),
    ));
    rows
}
