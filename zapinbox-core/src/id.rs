//! Event ids: ULIDs, monotonic within a process.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

use crate::{Error, Result, Timestamp};

/// The public identity of an event: a ULID.
///
/// Ids made in one process sort in the order they were made, and the first
/// 48 bits are the millisecond the event was created. Displays as the 26
/// character Crockford base32 string. Ids are not a commit order across
/// processes: cursors use the backend's own order (see `PullQuery`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Ulid);

/// The last id made from the system clock in this process.
static LAST_ID: IdSequence = IdSequence::new();

/// Keeps ids increasing even when two are made in one millisecond or the
/// clock steps back. The system clock shares one per process; each manual
/// clock has its own.
#[derive(Debug, Default)]
pub(crate) struct IdSequence(Mutex<Option<Ulid>>);

impl IdSequence {
    pub(crate) const fn new() -> Self {
        IdSequence(Mutex::new(None))
    }

    /// A new id stamped `at`, greater than every id this sequence made.
    /// If the clock stepped back, the id continues from the last one, so its
    /// timestamp may be a little later than `at`.
    pub(crate) fn next(&self, at: Timestamp) -> EventId {
        let candidate = Ulid::from_parts(at.as_millis(), rand::random::<u128>());
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = match *last {
            Some(prev) if candidate <= prev => prev.increment().unwrap_or(candidate),
            _ => candidate,
        };
        *last = Some(id);
        EventId(id)
    }
}

impl EventId {
    /// A new id stamped `at`, greater than every id this process made
    /// before with this function (backends use [`Clock::next_id`]).
    ///
    /// [`Clock::next_id`]: crate::Clock::next_id
    pub fn generate(at: Timestamp) -> Self {
        LAST_ID.next(at)
    }

    /// When the event was created (the ULID's timestamp).
    pub fn created_at(&self) -> Timestamp {
        Timestamp::from_millis(self.0.timestamp_ms())
    }

    /// The 16 bytes of the ULID, big-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// The id whose bytes are `bytes` (as returned by [`EventId::to_bytes`]).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        EventId(Ulid::from_bytes(bytes))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

impl FromStr for EventId {
    type Err = Error;

    /// Parses exactly 26 Crockford base32 characters (either case).
    fn from_str(s: &str) -> Result<Self> {
        if s.len() != ulid::ULID_LEN {
            return Err(Error::invalid(format!(
                "event id must be {} characters, got {}",
                ulid::ULID_LEN,
                s.chars().count()
            )));
        }
        let id = Ulid::from_string(s)
            .map_err(|e| Error::invalid(format!("event id {s:?} is not a ULID: {e}")))?;
        // Above "7ZZZ…" the text does not fit in 128 bits: refuse rather
        // than let two strings name one id.
        if !id.to_string().eq_ignore_ascii_case(s) {
            return Err(Error::invalid(format!("event id {s:?} is out of range")));
        }
        Ok(EventId(id))
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
