//! The records of a tenant's log: one per operation, carrying everything
//! its outcome depends on besides the state before it (the writer's time,
//! the ids it chose, a seed for lease nonces and jitter), so every
//! instance that applies it decides the same way. Encoded as JSON: the
//! payloads already are, and the log stays readable with any Kafka tool.

use serde::{Deserialize, Serialize};
use zapinbox_core::raw::{EventParts, Fingerprint, ValidEvent};
use zapinbox_core::{
    ClaimQuery, EventId, LeaseToken, Payload, Redrive, Result, TenantId, Timestamp, UsageRecord,
};

use crate::chunk::{Chunked, Chunks};

/// The version of the record format this crate writes and reads.
pub(crate) const VERSION: u8 = 1;

/// One operation in a tenant's log.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Format version.
    pub v: u8,
    /// The writer's time, in milliseconds: the time of the operation.
    pub at: u64,
    /// The instance that wrote it, so it can answer its caller.
    pub from: u64,
    /// The writer's request number, unique within the instance.
    pub req: u64,
    /// Seed of the operation's randomness (lease nonces, retry jitter).
    pub seed: u64,
    /// The tenant, for tenant operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// What to do.
    pub op: Op,
}

/// Who wrote a record and for which request: all that is read of a record
/// that does not decode, to answer its writer.
#[derive(Debug, Deserialize)]
pub(crate) struct Origin {
    pub from: u64,
    pub req: u64,
}

impl Record {
    /// The time of the operation.
    pub fn time(&self) -> Timestamp {
        Timestamp::from_millis(self.at)
    }
}

/// What a record does. Externally tagged: payloads are raw JSON, which
/// serde cannot buffer for an internally tagged enum.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Op {
    Ingest {
        events: Vec<EventRecord>,
    },
    Claim {
        query: ClaimQuery,
    },
    Extend {
        token: LeaseToken,
        by_ms: u64,
    },
    Release {
        token: LeaseToken,
        retry_after_ms: Option<u64>,
    },
    Requeue {
        token: LeaseToken,
    },
    AckLease {
        token: LeaseToken,
    },
    /// Many leases acked in one record, each as `AckLease`.
    AckLeases {
        tokens: Vec<LeaseToken>,
    },
    Ack {
        id: EventId,
    },
    Delete {
        id: EventId,
    },
    Redrive {
        which: Redrive,
    },
    PurgeDeadLetters {
        which: Redrive,
    },
    PurgeExpired {
        limit: usize,
    },
    /// Events a pull would deliver: refused if the day's outbound quota
    /// is used up when the record is applied, counted otherwise.
    Delivered {
        messages: u64,
        bytes: u64,
    },
    Usage {
        records: Vec<UsageRecord>,
    },
}

/// A validated event as the log carries it, under the id its writer chose.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EventRecord {
    pub id: EventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The idempotency key and the hex fingerprint of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<(String, String)>,
    /// The payload, or `null` when it is in chunks.
    pub payload: Payload,
    /// Where the payload's chunks are, when it was too large for a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Chunked>,
}

impl EventRecord {
    /// `event` under `id`.
    pub fn new(id: EventId, event: ValidEvent) -> Self {
        let parts = event.into_parts();
        EventRecord {
            id,
            source: parts.source,
            event_type: parts.event_type,
            topic: parts.topic,
            client_id: parts.client_id,
            key: parts.idempotency.map(|(key, f)| (key, hex(&f.0))),
            payload: parts.payload,
            chunks: None,
        }
    }

    /// Moves the payload to `chunks` (already written there).
    pub fn chunked(&mut self, chunks: Chunked) {
        self.payload = Payload::from_stored("null");
        self.chunks = Some(chunks);
    }

    /// Puts a chunked payload back together from `chunks` (damaged if this
    /// instance has no chunk topic, a chunk is gone, or the brokers refuse
    /// to read it). Fails only when asking again may succeed: the record is
    /// unchanged then.
    pub fn resolve(&mut self, chunks: Option<&Chunks>) -> Result<()> {
        let Some(chunked) = &self.chunks else {
            return Ok(());
        };
        self.payload = match chunks.map(|c| c.assemble(self.id, chunked)) {
            Some(Ok(payload)) => payload,
            Some(Err(e)) if e.is_retryable() => return Err(e),
            Some(Err(e)) => Payload::damaged(format!("this payload's chunks cannot be read: {e}")),
            None => {
                Payload::damaged("this payload is in chunks, and this instance has no chunk topic")
            }
        };
        self.chunks = None;
        Ok(())
    }

    /// The event's id and fields, or `None` if the fingerprint is not 32
    /// bytes of hex (a record this crate did not write).
    pub fn into_parts(self) -> Option<(EventId, EventParts)> {
        let mut parts = EventParts::new(self.payload);
        parts.source = self.source;
        parts.event_type = self.event_type;
        parts.topic = self.topic;
        parts.client_id = self.client_id;
        if let Some((key, fingerprint)) = self.key {
            parts.idempotency = Some((key, Fingerprint(unhex(&fingerprint)?)));
        }
        Some((self.id, parts))
    }
}

pub(crate) fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_through_hex() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }
}
