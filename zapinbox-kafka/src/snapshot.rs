//! Snapshots bound replay: each partition's state at an offset, split into
//! chunks on a topic of their own (compacted on a real broker). Opening
//! resumes each partition from its newest complete snapshot and replays
//! only the records after it.
//!
//! A chunk is a header (magic, partition, next offset, snapshot id, index,
//! count, slot, when it was written, the log's topic) and a slice of the
//! state's JSON. Opening takes each lane's newest complete snapshot by the
//! time it was written (one instance writes snapshots). Its key,
//! `<topic>/<partition>/<slot>/<index>`, alternates between two slots, so
//! a compacted topic always keeps the last complete snapshot whole even
//! when writing the next one stops halfway.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use zapinbox_core::raw::Machine;
use zapinbox_core::{Error, Result};

use crate::log::At;
use crate::metadata::{in_parallel, partition_count, watermarks};

const MAGIC: &[u8; 4] = b"ZIS2";
/// The header's size before the topic's name.
const HEADER: usize = 43;

/// One partition's state, the offset of the first record after it, and
/// the slot it was written to.
pub(crate) struct Snapshot {
    pub next: i64,
    pub machine: Machine,
    pub slot: u8,
}

/// What the snapshot topic holds.
pub(crate) struct Loaded {
    /// Its partition count.
    pub partitions: usize,
    /// The newest complete snapshot of each log partition.
    pub snapshots: HashMap<At, Snapshot>,
}

/// A chunk's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub at: At,
    pub next: i64,
    pub id: u64,
    pub index: u32,
    pub count: u32,
    pub slot: u8,
    /// When the snapshot was written, in milliseconds since the epoch.
    pub written: u64,
}

impl Header {
    fn encode(&self, data: &[u8]) -> Vec<u8> {
        let topic = self.at.topic.as_bytes();
        let mut out = Vec::with_capacity(HEADER + topic.len() + data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.at.partition.to_be_bytes());
        out.extend_from_slice(&self.next.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.push(self.slot);
        out.extend_from_slice(&self.written.to_be_bytes());
        // Topic names are at most 249 bytes.
        out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        out.extend_from_slice(topic);
        out.extend_from_slice(data);
        out
    }

    fn decode(bytes: &[u8]) -> Option<(Header, &[u8])> {
        let head = bytes.get(..HEADER)?;
        if &head[..4] != MAGIC {
            return None;
        }
        let topic_len = usize::from(u16::from_be_bytes(head.get(41..43)?.try_into().ok()?));
        let topic = std::str::from_utf8(bytes.get(HEADER..HEADER + topic_len)?).ok()?;
        let data = bytes.get(HEADER + topic_len..)?;
        let u32_at = |i: usize| Some(u32::from_be_bytes(head.get(i..i + 4)?.try_into().ok()?));
        let u64_at = |i: usize| Some(u64::from_be_bytes(head.get(i..i + 8)?.try_into().ok()?));
        let header = Header {
            at: At {
                topic: topic.to_owned(),
                partition: i32::try_from(u32_at(4)?).ok()?,
            },
            next: i64::from_be_bytes(head.get(8..16)?.try_into().ok()?),
            id: u64_at(16)?,
            index: u32_at(24)?,
            count: u32_at(28)?,
            slot: *head.get(32)?,
            written: u64_at(33)?,
        };
        (header.index < header.count).then_some((header, data))
    }
}

/// The records that carry a snapshot of lane `at` (`state`, taken just
/// before offset `next`), each at most `max_bytes`: (key, value).
pub(crate) fn chunks(
    at: &At,
    next: i64,
    slot: u8,
    state: &[u8],
    max_bytes: usize,
) -> Vec<(String, Vec<u8>)> {
    let size = max_bytes
        .saturating_sub(HEADER + at.topic.len() + 64)
        .max(1024);
    let pieces: Vec<&[u8]> = state.chunks(size).collect();
    let id: u64 = rand::random();
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let written = since.map_or(0, |d| d.as_millis() as u64);
    let count = pieces.len().max(1) as u32;
    let pieces = if pieces.is_empty() {
        vec![&[][..]]
    } else {
        pieces
    };
    pieces
        .into_iter()
        .enumerate()
        .map(|(index, data)| {
            let header = Header {
                at: at.clone(),
                next,
                id,
                index: index as u32,
                count,
                slot,
                written,
            };
            let key = format!("{}/{}/{slot}/{index}", at.topic, at.partition);
            (key, header.encode(data))
        })
        .collect()
}

/// A snapshot being put together from its chunks.
#[derive(Default)]
struct Assembly {
    next: i64,
    written: u64,
    count: u32,
    parts: BTreeMap<u32, Vec<u8>>,
}

/// Reads the snapshot topic `topic` to its end. `None` if the topic does
/// not exist (snapshots are off).
pub(crate) fn load(
    consumer: &BaseConsumer,
    topic: &str,
    within: Duration,
) -> Result<Option<Loaded>> {
    let Some(count) = partition_count(consumer.client(), topic)? else {
        return Ok(None);
    };
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    let partitions: Vec<At> = (0..count as i32)
        .map(|partition| At {
            topic: topic.to_owned(),
            partition,
        })
        .collect();
    for (p, (low, high)) in (0..count as i32).zip(watermarks(consumer, &partitions)?) {
        if high > low {
            ends.insert(p, high);
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(crate::backend::classify)?;
        }
    }
    let mut assemblies: HashMap<(At, u8, u64), Assembly> = HashMap::new();
    if !ends.is_empty() {
        consumer
            .assign(&assignment)
            .map_err(crate::backend::classify)?;
        let deadline = std::time::Instant::now() + within;
        while !ends.is_empty() {
            if std::time::Instant::now() > deadline {
                return Err(Error::transient(format!(
                    "snapshots on {topic} were not read within {within:?}"
                )));
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.map_err(crate::backend::classify)?;
            if ends.get(&message.partition()) <= Some(&(message.offset() + 1)) {
                ends.remove(&message.partition());
            }
            let Some((header, data)) = message.payload().and_then(Header::decode) else {
                continue;
            };
            // Chunks of several snapshots arrive interleaved: each is put
            // together on its own, and the newest complete one wins.
            let key = (header.at, header.slot, header.id);
            let assembly = assemblies.entry(key).or_insert_with(|| Assembly {
                next: header.next,
                written: header.written,
                count: header.count,
                parts: BTreeMap::new(),
            });
            assembly.parts.insert(header.index, data.to_vec());
        }
        consumer.unassign().map_err(crate::backend::classify)?;
    }
    // The newest complete snapshot of each lane: the last written (an
    // offboarded tenant's empty one after its old ones), then the furthest.
    let mut newest: HashMap<At, (u64, i64, u8, Vec<u8>)> = HashMap::new();
    for ((at, slot, _), assembly) in assemblies {
        let complete = assembly.parts.len() == assembly.count as usize;
        let order = (assembly.written, assembly.next);
        let newer = newest
            .get(&at)
            .is_none_or(|(written, next, ..)| (*written, *next) < order);
        if complete && newer {
            let state = assembly.parts.into_values().flatten().collect();
            newest.insert(at, (assembly.written, assembly.next, slot, state));
        }
    }
    let newest: HashMap<At, (i64, u8, Vec<u8>)> = newest
        .into_iter()
        .map(|(at, (_, next, slot, state))| (at, (next, slot, state)))
        .collect();
    let decode = |(at, (next, slot, state)): (At, (i64, u8, Vec<u8>))| {
        let machine = serde_json::from_slice(&state)
            .map_err(|e| Error::permanent(format!("a snapshot on {topic} does not decode: {e}")))?;
        let snapshot = Snapshot {
            next,
            machine,
            slot,
        };
        Ok((at, snapshot))
    };
    let snapshots = in_parallel(newest.into_iter().collect(), decode)
        .into_iter()
        .collect::<Result<_>>()?;
    Ok(Some(Loaded {
        partitions: count,
        snapshots,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_carry_their_header_and_slice() {
        let state = vec![7u8; 5000];
        let at = At {
            topic: "inbox.acme".into(),
            partition: 3,
        };
        let records = chunks(&at, 42, 1, &state, 2048);
        assert!(records.len() >= 3);
        let mut whole = Vec::new();
        for (i, (key, value)) in records.iter().enumerate() {
            assert_eq!(key, &format!("inbox.acme/3/1/{i}"));
            let (header, data) = Header::decode(value).expect("decodes");
            assert_eq!(header.at, at);
            assert_eq!((header.next, header.index), (42, i as u32));
            assert_eq!(header.slot, 1);
            assert_eq!(header.count as usize, records.len());
            whole.extend_from_slice(data);
        }
        assert_eq!(whole, state);
        assert_eq!(Header::decode(b"short"), None);
        assert_eq!(Header::decode(&[0u8; 40]), None);
        assert_eq!(Header::decode(&records[0].1[..HEADER - 1]), None);
        assert_eq!(Header::decode(&records[0].1[..HEADER + 3]), None);
    }
}
