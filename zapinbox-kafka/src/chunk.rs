//! Payloads too large for one record: split into chunks on a topic of
//! their own, written before the ingest record that names them, and put
//! back together by every instance that applies that record.
//!
//! A chunk is a slice of the payload's JSON text under the key
//! `<event id>/<index>`. The ingest record names each chunk's partition
//! and offset, the payload's length and its SHA-256, so a chunk that is
//! gone, replaced or damaged yields a damaged payload (a typed error when
//! decoded, the event still listable and deletable), never a wrong one.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zapinbox_core::{Error, EventId, Payload, Result};

use crate::backend::classify;
use crate::reader::Reader;
use crate::record::hex;

/// Where a payload's chunks are: enough to put it back together and to
/// know it is whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chunked {
    /// Bytes of JSON text.
    pub len: u64,
    /// SHA-256 of the text, hex.
    pub sha256: String,
    /// `(partition, offset)` of each chunk, in order.
    pub at: Vec<(i32, i64)>,
}

/// The chunk topic, for writing and reading chunks.
pub(crate) struct Chunks {
    topic: String,
    partitions: usize,
    reader: Arc<Reader>,
    /// Most bytes of text in one chunk.
    chunk_bytes: usize,
}

impl Chunks {
    /// Chunks on `topic` of `partitions` partitions (0: it did not exist;
    /// chunks are read, never written), each at most `chunk_bytes` of text,
    /// read back with `reader`.
    pub fn new(topic: String, partitions: usize, reader: Arc<Reader>, chunk_bytes: usize) -> Self {
        Chunks {
            topic,
            partitions,
            reader,
            chunk_bytes: chunk_bytes.max(1),
        }
    }

    /// Whether chunks can be written: the topic existed at open.
    pub fn writable(&self) -> bool {
        self.partitions > 0
    }

    /// Writes event `id`'s `payload` as chunks, spread over the topic's
    /// partitions, and says where they are once every one is stored.
    pub async fn write(
        &self,
        producer: &FutureProducer,
        id: EventId,
        payload: &Payload,
        timeout: Duration,
    ) -> Result<Chunked> {
        if !self.writable() {
            return Err(Error::permanent(format!(
                "the chunk topic {} does not exist",
                self.topic
            )));
        }
        let text = payload.as_str().as_bytes();
        let first = (u128::from_be_bytes(id.to_bytes()) % self.partitions as u128) as usize;
        let keys: Vec<String> = (0..text.len().div_ceil(self.chunk_bytes))
            .map(|index| key(id, index))
            .collect();
        let sends =
            text.chunks(self.chunk_bytes)
                .zip(&keys)
                .enumerate()
                .map(|(index, (data, key))| {
                    let partition = (first + index) % self.partitions;
                    let record = FutureRecord::to(&self.topic)
                        .key(key)
                        .payload(data)
                        .partition(partition as i32);
                    producer.send(record, timeout)
                });
        let mut at = Vec::with_capacity(keys.len());
        for sent in futures::future::join_all(sends).await {
            let stored = sent.map_err(|(e, _)| classify(e))?;
            at.push((stored.partition, stored.offset));
        }
        Ok(Chunked {
            len: text.len() as u64,
            sha256: hex(&Sha256::digest(text).into()),
            at,
        })
    }

    /// Event `id`'s payload from its chunks; a damaged payload saying why
    /// if one is gone or they do not match. Fails only when the brokers
    /// could not be asked (try again).
    pub fn assemble(&self, id: EventId, chunked: &Chunked) -> Result<Payload> {
        // The length is the record's word: trusted no further than the
        // chunks it names can hold.
        let most = chunked.at.len().saturating_mul(self.chunk_bytes);
        let mut text = Vec::with_capacity(most.min(chunked.len as usize));
        let count = chunked.at.len();
        for (index, &(partition, offset)) in chunked.at.iter().enumerate() {
            match self.reader.fetch(&self.topic, partition, offset)? {
                Some((found, data)) if found == key(id, index).as_bytes() => {
                    text.extend_from_slice(&data);
                }
                _ => {
                    return Ok(Payload::damaged(format!(
                        "chunk {index} of {count} of this payload is gone from {}/{partition} \
                         (offset {offset})",
                        self.topic
                    )));
                }
            }
        }
        let whole = text.len() as u64 == chunked.len
            && hex(&Sha256::digest(&text).into()) == chunked.sha256;
        if !whole {
            return Ok(Payload::damaged(
                "this payload's chunks do not match its length and checksum",
            ));
        }
        Ok(match String::from_utf8(text) {
            Ok(text) => Payload::from_stored(text),
            Err(_) => Payload::damaged("this payload's chunks are not UTF-8"),
        })
    }
}

/// The key of chunk `index` of event `id`'s payload.
fn key(id: EventId, index: usize) -> String {
    format!("{id}/{index}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockBroker;
    use crate::open::new_consumer;
    use zapinbox_core::Timestamp;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_that_do_not_match_their_record_give_a_damaged_payload() {
        let broker = MockBroker::start().expect("mock cluster");
        broker.create_topic("c", 3).expect("topic");
        let kafka = broker.config("c");
        let reset = [("auto.offset.reset", "error")];
        let consumer = new_consumer(&kafka, "chunk-test".into(), &reset).expect("consumer");
        let timeout = Duration::from_secs(10);
        let reader = Arc::new(Reader::new(consumer, timeout));
        let chunks = Chunks::new("c".into(), 3, reader, 10);
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.brokers())
            .create()
            .expect("producer");
        let id = EventId::generate(Timestamp::from_millis(1));
        let payload = Payload::from_stored(r#"{"text":"a payload of several chunks"}"#);
        let chunked = chunks
            .write(&producer, id, &payload, timeout)
            .await
            .expect("write");
        assert_eq!(chunked.at.len(), 4);
        let assemble = |chunked: &Chunked| chunks.assemble(id, chunked).expect("brokers answer");
        assert_eq!(assemble(&chunked), payload);

        let mut wrong_sum = chunked.clone();
        wrong_sum.sha256 = "00".repeat(32);
        let mut swapped = chunked.clone();
        swapped.at.swap(0, 1);
        let mut other_event = chunked.clone();
        other_event.at[2] = chunked.at[0];
        let mut short = chunked.clone();
        short.at.pop();
        for damaged in [wrong_sum, swapped, other_event, short] {
            let payload = assemble(&damaged);
            assert!(payload.as_value().is_err(), "{damaged:?} gave {payload:?}");
        }
    }
}
