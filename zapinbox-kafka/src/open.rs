//! Opening an instance: its clients, and where each lane's replay starts
//! (its newest snapshot, or the log's start) and ends.

use std::collections::{HashMap, HashSet};

use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use zapinbox_core::raw::Machine;
use zapinbox_core::{Error, Result};

use crate::backend::classify;
use crate::config::{KafkaConfig, Layout};
use crate::log::{At, Lane};
use crate::{metadata, snapshot, topics};

/// A consumer in group `group` that is assigned partitions and commits
/// nothing, with `extra` settings.
pub(crate) fn new_consumer(
    kafka: &KafkaConfig,
    group: String,
    extra: &[(&str, &str)],
) -> Result<BaseConsumer> {
    let mut settings = vec![
        ("group.id", group),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        (
            "fetch.wait.max.ms",
            kafka.fetch_wait.as_millis().to_string(),
        ),
        (
            "fetch.message.max.bytes",
            kafka.max_record_bytes.to_string(),
        ),
    ];
    settings.extend(extra.iter().map(|(key, value)| (*key, (*value).to_owned())));
    client_config(kafka, &settings).create().map_err(classify)
}

/// A client's settings: the brokers, `settings`, then the user's own
/// (which win).
pub(crate) fn client_config(kafka: &KafkaConfig, settings: &[(&str, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in settings {
        config.set(*key, value);
    }
    for (key, value) in &kafka.client {
        config.set(key, value);
    }
    config
}

/// Where opening starts: each lane's state and next offset (from its
/// newest snapshot, or empty at the log's start), and where the log ends
/// now, which opening replays up to.
pub(crate) struct Start {
    pub lanes: HashMap<At, Lane>,
    pub ends: Vec<(At, i64)>,
    /// The shared topic's partition count (0 with a topic per tenant).
    pub partitions: usize,
    /// The snapshot topic's partition count (0: no snapshot topic).
    pub snapshot_partitions: usize,
    /// The chunk topic's partition count (0: no chunk topic).
    pub chunk_partitions: usize,
    /// The slot each lane's next snapshot goes to.
    pub slots: HashMap<At, u8>,
}

/// Loads the snapshots and assigns `consumer` every lane of the log from
/// where they end (or from its start), and, with a topic per tenant, the
/// tenant `registry` from its end.
pub(crate) fn resume(
    consumer: &BaseConsumer,
    loader: &BaseConsumer,
    kafka: &KafkaConfig,
    registry: Option<&str>,
) -> Result<Start> {
    let topic = &kafka.topic;
    let mut assignment = TopicPartitionList::new();
    // The registry's end before the topics are listed: a topic made
    // meanwhile is listed, or announced after that end.
    let registry_end = match registry {
        Some(registry) => {
            let registry_partition = [At {
                topic: registry.to_owned(),
                partition: 0,
            }];
            let marks = metadata::watermarks(consumer, &registry_partition)?;
            let (_, end) = marks.first().copied().unwrap_or_default();
            assignment
                .add_partition_offset(registry, 0, Offset::Offset(end))
                .map_err(classify)?;
            Some((registry, end))
        }
        None => None,
    };
    let (partitions, logs): (usize, Vec<At>) = match &kafka.layout {
        Layout::Shared => {
            let partitions =
                metadata::partition_count(consumer.client(), topic)?.ok_or_else(|| {
                    Error::permanent(format!("topic {topic} does not exist: create it first"))
                })?;
            let logs = (0..partitions as i32).map(|partition| At {
                topic: topic.clone(),
                partition,
            });
            (partitions, logs.collect())
        }
        Layout::TopicPerTenant(_) => {
            let listed = topics::list(consumer, topic)?;
            // A topic whose deletion was announced may still be listed for
            // a moment (`delete_tenant` deletes it a second later).
            let deleted = match registry_end {
                Some((registry, end)) => {
                    topics::deleted(loader, registry, end, kafka.replay_timeout)?
                }
                None => HashSet::new(),
            };
            let logs = listed.into_iter().filter(|topic| !deleted.contains(topic));
            (
                0,
                logs.map(|topic| At {
                    topic,
                    partition: 0,
                })
                .collect(),
            )
        }
    };
    let loaded = match kafka.snapshot_topic() {
        Some(snapshots) => snapshot::load(loader, &snapshots, kafka.replay_timeout)?,
        None => None,
    };
    let (snapshot_partitions, mut snapshots) = match loaded {
        Some(loaded) => (loaded.partitions, loaded.snapshots),
        None => (0, HashMap::new()),
    };
    let chunk_partitions = match kafka.chunk_topic() {
        Some(chunks) => metadata::partition_count(consumer.client(), &chunks)?.unwrap_or(0),
        None => 0,
    };
    let mut start = Start {
        lanes: HashMap::with_capacity(logs.len()),
        ends: Vec::with_capacity(logs.len()),
        partitions,
        snapshot_partitions,
        chunk_partitions,
        slots: HashMap::with_capacity(logs.len()),
    };
    let marks = metadata::watermarks(consumer, &logs)?;
    for (at, (low, high)) in logs.into_iter().zip(marks) {
        let (machine, next, slot) = match snapshots.remove(&at) {
            Some(s) => (s.machine, s.next, 1 - s.slot.min(1)),
            None => (Machine::new(), 0, 0),
        };
        let At { topic, partition } = &at;
        if next < low {
            return Err(Error::permanent(format!(
                "records {next} to {low} of {topic}/{partition} are gone and no snapshot covers them"
            )));
        }
        if next > high {
            return Err(Error::permanent(format!(
                "the snapshot of {topic}/{partition} resumes at {next}, past the log's end {high}: \
                 was the topic recreated? Delete its snapshots"
            )));
        }
        assignment
            .add_partition_offset(topic, *partition, Offset::Offset(next))
            .map_err(classify)?;
        start.slots.insert(at.clone(), slot);
        start.lanes.insert(at.clone(), Lane::new(machine, next));
        start.ends.push((at, high));
    }
    // Incremental from the start: lanes join and leave while it runs.
    consumer.incremental_assign(&assignment).map_err(classify)?;
    Ok(start)
}
