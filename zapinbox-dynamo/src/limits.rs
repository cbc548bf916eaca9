//! DynamoDB's limits, declared as the backend's capabilities so the inbox
//! refuses what would not fit with a typed error before any call.

/// DynamoDB keeps items of at most 400 KB, attribute names and values
/// together. An event's other attributes (ids, keys, metadata up to the
/// inbox's field limits) take at most a few KB; the payload gets the rest,
/// with room to spare.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 384 * 1024;

/// A transaction holds at most 100 actions: the sequence item, two quota
/// counters, and for each event its item and its idempotency key.
pub(crate) const MAX_BATCH_EVENTS: usize = (100 - 3) / 2;

/// A transaction carries at most 4 MB: the payloads, with room for
/// everything else.
pub(crate) const MAX_BATCH_BYTES: usize = 3_500_000;
