//! Timestamps and the clock every time-based rule reads.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::EventId;
use crate::id::IdSequence;

/// A point in time: whole milliseconds since the Unix epoch, UTC.
///
/// Displays, parses and serializes as RFC 3339 with milliseconds
/// (`2026-11-24T01:45:05.123Z`), as HTTP clients expect; deserializing also
/// takes epoch milliseconds (a number). [`Timestamp::as_millis`] and
/// [`serde_millis::timestamp`](crate::serde_millis::timestamp) give the
/// milliseconds.
///
/// ```
/// use zapinbox_core::Timestamp;
/// let t: Timestamp = "2026-11-24T01:45:05.123Z".parse()?;
/// assert_eq!(t.as_millis(), 1_795_484_705_123);
/// assert_eq!(serde_json::to_string(&t)?, r#""2026-11-24T01:45:05.123Z""#);
/// assert_eq!(serde_json::from_str::<Timestamp>("1795484705123")?, t);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This timestamp moved `by` into the future, saturating.
    pub fn saturating_add(self, by: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(by)))
    }

    /// This timestamp moved `by` into the past, saturating at the epoch.
    pub fn saturating_sub(self, by: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(by)))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp(duration_millis(
            t.duration_since(UNIX_EPOCH).unwrap_or_default(),
        ))
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        t.to_system_time()
    }
}

impl std::str::FromStr for Timestamp {
    type Err = crate::Error;

    /// Parses RFC 3339 in UTC (`2026-11-24T01:45:05.123Z`).
    fn from_str(s: &str) -> crate::Result<Self> {
        humantime::parse_rfc3339(s)
            .map(Timestamp::from)
            .map_err(|e| crate::Error::invalid(format!("{s:?} is not an RFC 3339 UTC time: {e}")))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 > LAST_RFC3339_MS {
            // No RFC 3339 date is that late: the number says it exactly.
            return s.serialize_u64(self.0);
        }
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Millis(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Millis(ms) => Ok(Timestamp(ms)),
            Either::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The last millisecond of the year 9999: RFC 3339 has no later dates.
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > LAST_RFC3339_MS {
            return write!(f, "{}ms since the epoch", self.0);
        }
        humantime::format_rfc3339_millis(self.to_system_time()).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_serialize_as_rfc_3339_and_read_back_either_way() {
        for ms in [0, 1_500, 1_795_484_705_123, LAST_RFC3339_MS, u64::MAX] {
            let t = Timestamp::from_millis(ms);
            let json = serde_json::to_string(&t).expect("serialize");
            let back: Timestamp = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, t, "{json}");
            let millis: Timestamp = serde_json::from_str(&ms.to_string()).expect("millis");
            assert_eq!(millis, t);
        }
        assert_eq!(
            serde_json::to_string(&Timestamp::from_millis(1_500)).expect("json"),
            r#""1970-01-01T00:00:01.500Z""#
        );
        let bad = serde_json::from_str::<Timestamp>(r#""yesterday""#);
        assert!(bad.is_err());
    }

    #[test]
    fn every_timestamp_displays() {
        assert_eq!(
            Timestamp::from_millis(1_500).to_string(),
            "1970-01-01T00:00:01.500Z"
        );
        assert_eq!(
            Timestamp::from_millis(LAST_RFC3339_MS).to_string(),
            "9999-12-31T23:59:59.999Z"
        );
        assert!(
            Timestamp::from_millis(u64::MAX)
                .to_string()
                .ends_with("ms since the epoch")
        );
    }
}

fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The source of "now" for every time-based rule: id timestamps, idempotency
/// windows, lease expiry, rate limits.
///
/// [`Clock::system`] reads the wall clock. [`ManualClock`] stands still until
/// a test moves it, so rules about time are tested without sleeping.
#[derive(Clone, Default)]
pub struct Clock(Option<ManualClock>);

impl Clock {
    /// The system wall clock.
    pub fn system() -> Self {
        Clock(None)
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.now_nanos() / 1_000_000)
    }

    /// The current time in nanoseconds since the epoch (for rate limiting).
    pub fn now_nanos(&self) -> u64 {
        match &self.0 {
            Some(manual) => manual.nanos.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }

    /// A new event id stamped now, greater than every id this clock made
    /// before (for the system clock: every id of this process).
    pub fn next_id(&self) -> EventId {
        match &self.0 {
            Some(manual) => manual.ids.next(self.now()),
            None => EventId::generate(self.now()),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(_) => write!(f, "Clock::manual({})", self.now()),
            None => f.write_str("Clock::system"),
        }
    }
}

/// A clock that stands still until it is told to move; clones share the time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
    ids: Arc<IdSequence>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            nanos: Arc::new(AtomicU64::new(start.0.saturating_mul(1_000_000))),
            ids: Arc::default(),
        }
    }

    /// Moves the clock `by` into the future.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `at`, which may be earlier than now: a wall clock
    /// stepped back by time synchronisation. Ids made after it still sort
    /// after earlier ones.
    pub fn set(&self, at: Timestamp) {
        self.nanos
            .store(at.0.saturating_mul(1_000_000), Ordering::SeqCst);
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.nanos.load(Ordering::SeqCst) / 1_000_000)
    }

    /// A [`Clock`] that reads this manual clock.
    pub fn clock(&self) -> Clock {
        Clock(Some(self.clone()))
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        Clock(Some(manual))
    }
}
