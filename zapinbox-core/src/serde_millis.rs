//! Serde helpers: durations as whole milliseconds (`"lease_ms": 30000`),
//! which HTTP clients read more easily than `{ "secs", "nanos" }`, and
//! timestamps as epoch milliseconds where a format wants numbers.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use zapinbox_core::Timestamp;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Row {
//!     #[serde(with = "zapinbox_core::serde_millis::timestamp")]
//!     at: Timestamp,
//! }
//! let json = serde_json::to_string(&Row { at: Timestamp::from_millis(1500) })?;
//! assert_eq!(json, r#"{"at":1500}"#);
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// A [`Duration`] as whole milliseconds.
pub mod duration {
    use super::*;

    /// Serializes `d` as milliseconds (saturating at `u64::MAX`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// An `Option<Duration>` as whole milliseconds or `null`.
pub mod option_duration {
    use super::*;

    /// Serializes `d` as milliseconds, or `None` as null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads milliseconds or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|ms| ms.map(Duration::from_millis))
    }
}

/// A [`Timestamp`](crate::Timestamp) as epoch milliseconds rather than its
/// default RFC 3339 string.
pub mod timestamp {
    use super::*;
    use crate::Timestamp;

    /// Serializes `t` as milliseconds since the Unix epoch.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.as_millis())
    }

    /// Reads milliseconds since the Unix epoch.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        u64::deserialize(d).map(Timestamp::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::{
        ClaimQuery, Event, EventId, LeaseToken, Leased, Limits, Payload, PullQuery, RateLimit,
        RetryPolicy, TenantId, TenantStats, Timestamp,
    };

    #[test]
    fn value_types_read_as_an_http_client_writes_them() {
        let claim: ClaimQuery = serde_json::from_value(
            json!({ "limit": 5, "lease_ms": 60_000, "filter": { "topic": "t" } }),
        )
        .expect("claim query");
        assert_eq!(
            claim,
            ClaimQuery::new()
                .limit(5)
                .lease(Duration::from_secs(60))
                .topic("t")
        );
        let pull: PullQuery = serde_json::from_value(json!({})).expect("every field defaults");
        assert_eq!(pull, PullQuery::new());
        let pull: PullQuery =
            serde_json::from_value(json!({ "order": "desc", "limit": 7 })).expect("pull query");
        assert_eq!(pull, PullQuery::new().order(crate::Order::Desc).limit(7));
        let retry: RetryPolicy =
            serde_json::from_value(json!({ "max_attempts": 3, "base_ms": 250 })).expect("retry");
        assert_eq!(
            (retry.max_attempts, retry.base),
            (3, Duration::from_millis(250))
        );
        let limits: Limits =
            serde_json::from_value(json!({ "max_payload_bytes": 1024 })).expect("limits");
        assert_eq!(limits, Limits::default().with_max_payload_bytes(1024));
        let rates = [
            RateLimit::per_second(10).with_burst(3),
            RateLimit::per_second(3),
            RateLimit::per_second(2000),
        ];
        for rate in rates {
            let text = serde_json::to_value(rate).expect("rate");
            assert_eq!(
                serde_json::from_value::<RateLimit>(text).expect("rate"),
                rate
            );
        }
        let text = serde_json::to_value(rates[0]).expect("rate");
        assert_eq!(text, json!({ "period_ns": 100_000_000, "burst": 3 }));
        let zero = serde_json::from_value::<RateLimit>(json!({ "period_ns": 0, "burst": 1 }));
        assert!(
            zero.is_err(),
            "no period of zero, which would mean no limit"
        );
    }

    #[test]
    fn stats_and_leased_events_write_milliseconds_and_rfc_3339() {
        let stats = TenantStats::new(3, 1, 0, 2, Some(Duration::from_millis(1500)));
        let value = serde_json::to_value(stats).expect("stats");
        assert_eq!(value["oldest_pending_age_ms"], json!(1500));
        assert_eq!(
            serde_json::from_value::<TenantStats>(value).expect("back"),
            stats
        );

        let at = Timestamp::from_millis(1_500);
        let tenant = TenantId::new("t").expect("tenant");
        let id = EventId::generate(at);
        let event = Event::new(tenant, id, Payload::from_stored(r#"{"n":1}"#));
        let leased = Leased::new(event, LeaseToken::new(id, 7), 1, at);
        let value = serde_json::to_value(&leased).expect("leased");
        assert_eq!(value["expires_at"], json!("1970-01-01T00:00:01.500Z"));
        assert_eq!(
            serde_json::from_value::<Leased>(value).expect("back"),
            leased
        );
    }
}
