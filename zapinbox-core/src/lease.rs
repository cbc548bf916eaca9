//! Leases: how workers claim events so that no two process one at once.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Event, EventId, Filter, Result, Timestamp};

/// Proof of one claim on one event. Every claim makes a new token, so a
/// holder whose lease expired and was claimed again cannot act on the event.
///
/// Displays as `<event id>.<nonce>` and parses back from that.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseToken {
    event: EventId,
    nonce: u64,
}

impl LeaseToken {
    /// A token for a new claim on `event`.
    pub fn new(event: EventId, nonce: u64) -> Self {
        LeaseToken { event, nonce }
    }

    /// The event this lease is on.
    pub fn event(&self) -> EventId {
        self.event
    }

    /// What tells this claim apart from every other claim on the event.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:016x}", self.event, self.nonce)
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseToken({self})")
    }
}

impl FromStr for LeaseToken {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::invalid(format!("{s:?} is not a lease token"));
        let (event, nonce) = s.split_once('.').ok_or_else(invalid)?;
        if nonce.len() != 16 {
            return Err(invalid());
        }
        let nonce = u64::from_str_radix(nonce, 16).map_err(|_| invalid())?;
        Ok(LeaseToken {
            event: event.parse()?,
            nonce,
        })
    }
}

/// The largest batch one claim may take.
pub const MAX_CLAIM: u32 = 1000;

/// What to claim and for how long.
///
/// ```
/// use std::time::Duration;
/// use zapinbox_core::ClaimQuery;
/// let q = ClaimQuery::new().limit(10).lease(Duration::from_secs(60)).topic("orders");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ClaimQuery {
    /// Most events to claim, 1 to 1000. Default 10.
    pub limit: u32,
    /// How long the claim lasts unless extended. Default 30 s. Serialized
    /// as `lease_ms`.
    #[serde(rename = "lease_ms", with = "crate::serde_millis::duration")]
    pub lease: Duration,
    /// Which events.
    pub filter: Filter,
}

impl Default for ClaimQuery {
    fn default() -> Self {
        ClaimQuery {
            limit: 10,
            lease: Duration::from_secs(30),
            filter: Filter::default(),
        }
    }
}

impl ClaimQuery {
    /// Up to 10 events of any kind, for 30 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the most events to claim.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Sets the lease length.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Only events with this topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.filter.topic = Some(topic.into());
        self
    }

    /// Replaces the whole filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Checks the limit and lease; backends call this first.
    pub fn check(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_CLAIM {
            return Err(Error::invalid(format!(
                "claim limit must be 1 to {MAX_CLAIM}, got {}",
                self.limit
            )));
        }
        check_lease(self.lease)
    }
}

/// The longest lease or extension: a day.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// `x` within 0..=1; anything else (NaN included) counts as 0.
fn unit(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Checks a release delay: at most a day (a longer one would hide the
/// event beyond the reach of redrive).
pub fn check_delay(delay: Duration) -> Result<()> {
    if delay > MAX_LEASE {
        return Err(Error::invalid(format!(
            "retry delay must be at most {MAX_LEASE:?}, got {delay:?}"
        )));
    }
    Ok(())
}

/// Checks a lease or extension length: 1 ms to a day.
pub fn check_lease(lease: Duration) -> Result<()> {
    if lease < Duration::from_millis(1) || lease > MAX_LEASE {
        return Err(Error::invalid(format!(
            "lease must be 1 ms to {MAX_LEASE:?}, got {lease:?}"
        )));
    }
    Ok(())
}

/// An event claimed by a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Leased {
    /// The event (its `attempts` counts this claim).
    pub event: Event,
    /// Proof of the claim: ack, extend or release with it.
    pub token: LeaseToken,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// When the lease ends unless extended.
    pub expires_at: Timestamp,
}

impl Leased {
    /// Builds a claim result.
    pub fn new(event: Event, token: LeaseToken, attempt: u32, expires_at: Timestamp) -> Self {
        Leased {
            event,
            token,
            attempt,
            expires_at,
        }
    }
}

/// What [`Leases::release`](crate::raw::Leases::release) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseOutcome {
    /// The event is pending again and claimable from this time.
    Retry {
        /// When the event becomes claimable again.
        at: Timestamp,
    },
    /// That was the last allowed attempt: the event is dead-lettered.
    DeadLettered,
}

/// Which dead letters to return to the inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Redrive {
    /// These events, where they are dead-lettered; others are skipped.
    Ids(Vec<EventId>),
    /// Every dead letter of the tenant.
    All,
}

/// How often an event is tried and how long it waits between tries.
///
/// After an attempt fails (its lease is released without a delay, or
/// expires), the event waits `base × 2^(attempt-1)`, at most `max`, less a
/// random share of up to `jitter` of that, before it can be claimed again.
/// After `max_attempts` claims that did not end in an ack it is
/// dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Claims before an event is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// Wait after the first failed attempt. Default 1 s. Serialized as
    /// `base_ms`.
    #[serde(rename = "base_ms", with = "crate::serde_millis::duration")]
    pub base: Duration,
    /// Longest wait. Default 5 min. Serialized as `max_ms`.
    #[serde(rename = "max_ms", with = "crate::serde_millis::duration")]
    pub max: Duration,
    /// Share of each wait taken off at random (0 to 1), so retries of many
    /// events spread out. Default 0.5.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff from `base` up to `max`, 5 attempts, jitter 0.5.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        RetryPolicy {
            base,
            max,
            ..Self::default()
        }
    }

    /// Sets the number of claims before an event is dead-lettered (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Waits exactly the exponential delay, with no randomness.
    pub fn without_jitter(mut self) -> Self {
        self.jitter = 0.0;
        self
    }

    /// The wait after failed attempt `attempt` (from 1), drawing the jitter
    /// from `random` (in 0..1).
    pub fn backoff(&self, attempt: u32, random: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let cut = unit(self.jitter) * unit(random);
        full.mul_f64(1.0 - cut)
    }

    /// The wait after failed attempt `attempt`, with fresh jitter.
    pub fn next_backoff(&self, attempt: u32) -> Duration {
        self.backoff(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::exponential(S, 10 * S).without_jitter();
        let waits: Vec<_> = (1..=6).map(|a| p.backoff(a, 0.7)).collect();
        assert_eq!(waits, [S, 2 * S, 4 * S, 8 * S, 10 * S, 10 * S]);
        assert_eq!(p.backoff(0, 0.0), S, "attempt 0 waits like attempt 1");
        assert_eq!(p.backoff(u32::MAX, 0.0), 10 * S, "no overflow");
    }

    #[test]
    fn jitter_takes_off_at_most_its_share() {
        let p = RetryPolicy::exponential(4 * S, 60 * S);
        assert_eq!(p.jitter, 0.5);
        assert_eq!(p.backoff(1, 0.0), 4 * S);
        assert_eq!(p.backoff(1, 1.0), 2 * S);
        for _ in 0..1000 {
            let wait = p.next_backoff(1);
            assert!(
                wait > 2 * S - Duration::from_millis(1) && wait <= 4 * S,
                "{wait:?}"
            );
        }
    }

    #[test]
    fn odd_jitter_values_do_not_panic() {
        for jitter in [f64::NAN, f64::INFINITY, -1.0, 7.0] {
            let p = RetryPolicy {
                jitter,
                ..RetryPolicy::default()
            };
            let wait = p.backoff(3, f64::NAN);
            assert!(wait <= 4 * S, "{jitter}: {wait:?}");
        }
    }
}
