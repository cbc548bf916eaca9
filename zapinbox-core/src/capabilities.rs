//! What a backend can do and how far: declared by the backend, enforced by
//! the [`Inbox`](crate::Inbox) (its limits), read by the conformance suite
//! (claim order, purging) and by users (all of it).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A backend's limits and behaviours ([`Backend::capabilities`]).
///
/// Optional operations are not flags here: a backend offers them through
/// [`Backend::stats`] and [`Backend::retention`], and the inbox answers
/// [`Error::Unsupported`] where it does not.
///
/// [`Backend::capabilities`]: crate::Backend::capabilities
/// [`Backend::stats`]: crate::Backend::stats
/// [`Backend::retention`]: crate::Backend::retention
/// [`Error::Unsupported`]: crate::Error::Unsupported
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Largest payload the storage keeps, in bytes of JSON text. The inbox
    /// refuses larger ones with `PayloadTooLarge`, whatever its
    /// [`Limits`](crate::Limits) allow.
    pub max_payload_bytes: usize,
    /// Most events one atomic `ingest_batch` holds.
    pub max_batch_events: usize,
    /// Most payload bytes one atomic `ingest_batch` holds.
    pub max_batch_bytes: usize,
    /// Which events a claim takes.
    pub claim_order: ClaimOrder,
    /// Whether writes through another handle on the same storage (another
    /// process, another instance) are seen, and how soon.
    pub shared_writes: SharedWrites,
    /// How acked events and expired idempotency keys leave the storage
    /// (for a backend with retention).
    pub purging: Purging,
}

impl Capabilities {
    /// A backend with no limits of its own, exact claim order, writes of
    /// other handles seen at once, purging on request: what SQLite
    /// declares (the in-memory backend declares the same, but its writes
    /// are `NotShared`).
    pub fn unlimited() -> Self {
        Capabilities {
            max_payload_bytes: usize::MAX,
            max_batch_events: usize::MAX,
            max_batch_bytes: usize::MAX,
            claim_order: ClaimOrder::EarliestFirst,
            shared_writes: SharedWrites::Immediate,
            purging: Purging::OnRequest,
        }
    }

    /// With a largest payload of `bytes`.
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// With atomic batches of at most `events` events and `bytes` bytes.
    pub fn with_max_batch(mut self, events: usize, bytes: usize) -> Self {
        self.max_batch_events = events;
        self.max_batch_bytes = bytes;
        self
    }

    /// With claims taking events in `order`.
    pub fn with_claim_order(mut self, order: ClaimOrder) -> Self {
        self.claim_order = order;
        self
    }

    /// With writes of other handles seen as `shared`.
    pub fn with_shared_writes(mut self, shared: SharedWrites) -> Self {
        self.shared_writes = shared;
        self
    }

    /// With acked events leaving as `purging` says.
    pub fn with_purging(mut self, purging: Purging) -> Self {
        self.purging = purging;
        self
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::unlimited()
    }
}

/// Which events a claim takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClaimOrder {
    /// The earliest available first (by availability, then commit order):
    /// SQLite, memory.
    EarliestFirst,
    /// Claimable events, not necessarily the earliest: a store that spreads
    /// a tenant over partitions or pages claims from where it looks first.
    /// Every event is still claimed in time; no order is promised.
    Approximate,
}

/// Whether writes through another handle on the same storage are seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SharedWrites {
    /// Storage of one handle only (the in-memory backend: its clones share
    /// it, nothing else can).
    NotShared,
    /// Seen by the next read (SQLite: another process on the same file).
    Immediate,
    /// Seen within this long (a log applied by every instance, an index
    /// that is eventually consistent). Serialized in milliseconds.
    Within(#[serde(with = "crate::serde_millis::duration")] Duration),
}

/// How acked events and expired idempotency keys leave the storage, for a
/// backend with [`Retention`](crate::raw::Retention).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Purging {
    /// When `purge_expired` is called (SQLite's maintenance task calls it
    /// on its own when enabled).
    OnRequest,
    /// The storage removes them itself (a TTL, a log's retention), and
    /// reads hide what has expired meanwhile; `purge_expired` may remove
    /// nothing.
    Automatic,
}
