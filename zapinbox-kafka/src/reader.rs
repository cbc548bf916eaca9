//! Reads one record back from the log: where an acked event's content is,
//! once the applied state let it go.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use zapinbox_core::{Error, Event, Payload, Result};

use crate::backend::classify;
use crate::chunk::Chunks;
use crate::log::{At, POSITION_BITS};
use crate::record::{Op, Record};

/// Whether `e` says the offset asked for is outside the log: removed by
/// retention, with `auto.offset.reset=error`.
pub(crate) fn gone(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{AutoOffsetReset, OffsetOutOfRange};
    matches!(
        e.rdkafka_error_code(),
        Some(AutoOffsetReset | OffsetOutOfRange)
    )
}

/// A consumer that fetches single records on request.
pub(crate) struct Reader {
    consumer: Mutex<BaseConsumer>,
    timeout: Duration,
}

impl Reader {
    pub fn new(consumer: BaseConsumer, timeout: Duration) -> Self {
        Reader {
            consumer: Mutex::new(consumer),
            timeout,
        }
    }

    /// Fills `event` (acked, its content dropped from memory) with the
    /// content its ingest record at `position` of lane `at` carried (a
    /// large payload from its `chunks`); if the log no longer holds it,
    /// its payload says so.
    pub fn restore(
        &self,
        at: &At,
        position: u64,
        event: &mut Event,
        chunks: Option<&Chunks>,
    ) -> Result<()> {
        let At { topic, partition } = at;
        let offset = (position >> POSITION_BITS) as i64;
        let index = ((position & ((1 << POSITION_BITS) - 1)) as usize).saturating_sub(1);
        let found = match self.fetch(topic, *partition, offset)? {
            Some((_, bytes)) => serde_json::from_slice::<Record>(&bytes)
                .ok()
                .and_then(|r| match r.op {
                    Op::Ingest { events } => events.into_iter().nth(index),
                    _ => None,
                }),
            None => None,
        };
        match found {
            Some(mut record) if record.id == event.id => {
                record.resolve(chunks)?;
                event.payload = record.payload;
                event.source = record.source;
                event.event_type = record.event_type;
                event.topic = record.topic;
                event.client_id = record.client_id;
            }
            _ => {
                event.payload = Payload::damaged(format!(
                    "the log no longer holds this acked event (record {offset} of partition {partition})"
                ));
            }
        }
        Ok(())
    }

    /// The key and value of the record at `offset` of `partition` of
    /// `topic`, or `None` if the log no longer holds it.
    pub fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let consumer = self.consumer.lock().unwrap_or_else(|p| p.into_inner());
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(classify)?;
        consumer.assign(&assignment).map_err(classify)?;
        let deadline = Instant::now() + self.timeout;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) if message.offset() == offset => {
                    let key = message.key().unwrap_or_default().to_vec();
                    return Ok(Some((key, message.payload().unwrap_or_default().to_vec())));
                }
                // Past it: compaction or retention removed it.
                Some(Ok(message)) if message.offset() > offset => return Ok(None),
                Some(Ok(_)) | None => {}
                // Before the log's start (`auto.offset.reset=error`).
                Some(Err(e)) if gone(&e) => return Ok(None),
                Some(Err(e)) => return Err(classify(e)),
            }
        }
        Err(Error::transient(format!(
            "record {offset} of {topic}/{partition} was not fetched within {:?}",
            self.timeout
        )))
    }
}
