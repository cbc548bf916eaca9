//! Per-tenant request rate limits, on `governor`, reading the inbox clock.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, keyed::DashMapStateStore};
use governor::{Quota, RateLimiter};

use crate::policy::{Call, Policy};
use crate::{Clock, Error, Result, TenantId};

/// A request rate: a sustained rate plus a burst the bucket may hold.
///
/// ```
/// use zapinbox_core::RateLimit;
/// let limit = RateLimit::per_minute(60).with_burst(10);
/// ```
///
/// Serializes as `{ "period_ns": 100000000, "burst": 10 }`: one request
/// each period on average, exactly, and the burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    /// One request is let through each period, on average.
    #[serde(rename = "period_ns", with = "period_nanos")]
    period: Duration,
    burst: NonZeroU32,
}

/// A rate's period as whole nanoseconds, at least one.
mod period_nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(period: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(period.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match u64::deserialize(d)? {
            0 => Err(D::Error::custom("period_ns must be at least 1")),
            nanos => Ok(Duration::from_nanos(nanos)),
        }
    }
}

impl RateLimit {
    /// `n` requests a second, with a burst of `n` (at least 1).
    pub fn per_second(n: u32) -> Self {
        Self::spread(n, Duration::from_secs(1))
    }

    /// `n` requests a minute, with a burst of `n` (at least 1).
    pub fn per_minute(n: u32) -> Self {
        Self::spread(n, Duration::from_secs(60))
    }

    fn spread(n: u32, over: Duration) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        RateLimit {
            period: over / n.get(),
            burst: n,
        }
    }

    /// Lets up to `burst` requests pass at once (at least 1).
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        self
    }

    fn quota(self) -> Quota {
        Quota::with_period(self.period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(self.burst)
    }
}

/// Reads the inbox clock, so tests drive rate limits without sleeping.
#[derive(Clone, Debug)]
struct InboxClock(Clock);

impl GovernorClock for InboxClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(self.0.now_nanos())
    }
}

type Keyed = RateLimiter<TenantId, DashMapStateStore<TenantId>, InboxClock, NoOpMiddleware<Nanos>>;
type Direct = RateLimiter<NotKeyed, InMemoryState, InboxClock, NoOpMiddleware<Nanos>>;

/// Checks per-tenant rates: one default for every tenant, with overrides.
/// As a [`Policy`], it counts every call that brings in or hands out work,
/// one each (a batch included), and never one that finishes work
/// ([`Operation::finishes_work`](crate::Operation::finishes_work)).
pub(crate) struct TenantLimiter {
    clock: InboxClock,
    default: Option<Keyed>,
    overrides: HashMap<TenantId, Direct>,
    checks: AtomicU64,
}

/// How often the default limiter forgets tenants whose buckets are full
/// again, so idle tenants do not keep memory.
const FORGET_EVERY: u64 = 4096;

impl TenantLimiter {
    pub(crate) fn new(
        clock: Clock,
        default: Option<RateLimit>,
        overrides: HashMap<TenantId, RateLimit>,
    ) -> Self {
        let clock = InboxClock(clock);
        TenantLimiter {
            default: default
                .map(|r| RateLimiter::new(r.quota(), DashMapStateStore::default(), clock.clone())),
            overrides: overrides
                .into_iter()
                .map(|(t, r)| (t, RateLimiter::direct_with_clock(r.quota(), clock.clone())))
                .collect(),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one request from `tenant`'s bucket, or says how long to wait.
    pub(crate) fn check(&self, tenant: &TenantId) -> Result<()> {
        let outcome = match (self.overrides.get(tenant), &self.default) {
            (Some(direct), _) => direct.check(),
            (None, Some(keyed)) => {
                if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
                    keyed.retain_recent();
                }
                keyed.check_key(tenant)
            }
            (None, None) => Ok(()),
        };
        outcome.map_err(|not_until| Error::RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }
}

impl Policy for TenantLimiter {
    fn admit(&self, call: &Call<'_>) -> Result<()> {
        match call.tenant {
            Some(tenant) if !call.operation.finishes_work() => self.check(tenant),
            _ => Ok(()),
        }
    }
}
