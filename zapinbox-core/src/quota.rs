//! Daily quotas: how many messages and bytes a tenant, and the whole
//! inbox, may bring in and take out per UTC day. Backends count what comes
//! in in the same transaction as the write, so a restart does not reset a
//! day and two processes on one store share it; what goes out is checked
//! before a delivery and counted with it (a claim) or just after it (a
//! pull, which is a read, checks again when it counts: of two pulls racing
//! for the last of the quota, one is refused).

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Timestamp};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Daily quotas, per tenant and for the whole inbox (off by default).
///
/// ```
/// use zapinbox_core::{DailyLimits, QueueConfig, Quotas};
/// // The source system "Ephemeral"'s figures: 10 000 messages and 100 MB a
/// // tenant a day, 200 000 and 2 GB for everyone, each way.
/// let config = QueueConfig::default().with_quotas(Quotas::ephemeral());
/// // Or just a cap on what each tenant brings in.
/// let config = QueueConfig::default()
///     .with_quotas(Quotas::off().per_tenant(DailyLimits::none().messages_in(1_000)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Quotas {
    /// What each tenant may do a day.
    pub per_tenant: DailyLimits,
    /// What all tenants together may do a day.
    pub total: DailyLimits,
}

impl Quotas {
    /// No quota at all (the default for a library).
    pub fn off() -> Self {
        Self::default()
    }

    /// The source system "Ephemeral"'s quotas: 10 000 messages and 100 MB
    /// a tenant a day, 200 000 messages and 2 GB overall, in and out each.
    pub fn ephemeral() -> Self {
        Quotas {
            per_tenant: DailyLimits::both_ways(10_000, 100_000_000),
            total: DailyLimits::both_ways(200_000, 2_000_000_000),
        }
    }

    /// With `limits` for each tenant.
    pub fn per_tenant(mut self, limits: DailyLimits) -> Self {
        self.per_tenant = limits;
        self
    }

    /// With `limits` for all tenants together.
    pub fn total(mut self, limits: DailyLimits) -> Self {
        self.total = limits;
        self
    }

    /// Whether no quota is set.
    pub fn is_off(&self) -> bool {
        self.per_tenant == DailyLimits::none() && self.total == DailyLimits::none()
    }

    /// Whether any quota limits what goes `way`.
    pub fn limits(&self, way: Way) -> bool {
        self.per_tenant.limits(way) || self.total.limits(way)
    }

    /// Whether `traffic` fits today beside what the tenant (`tenant`) and
    /// everyone (`total`) used; `QuotaExceeded` naming the first limit it
    /// would pass, and when the day ends.
    pub fn check(
        &self,
        tenant: &DailyUsage,
        total: &DailyUsage,
        traffic: Traffic,
        now: Timestamp,
    ) -> Result<()> {
        let scopes = [
            ("tenant", &self.per_tenant, tenant),
            ("total", &self.total, total),
        ];
        for (scope, limits, used) in scopes {
            let (messages, bytes) = limits.of(traffic.way);
            let (used_messages, used_bytes) = used.of(traffic.way);
            let over = [
                ("messages", messages, used_messages, traffic.messages),
                ("bytes", bytes, used_bytes, traffic.bytes),
            ];
            for (what, limit, used, add) in over {
                if let Some(limit) = limit
                    && used.saturating_add(add) > limit
                {
                    return Err(Error::QuotaExceeded {
                        scope: format!("{scope} {what} {}", traffic.way.name()),
                        limit,
                        reset_at: next_day(now),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether another delivery may start today: refused once what the
    /// tenant (`tenant`) or everyone (`total`) took out has reached an
    /// outbound limit. The delivery that crosses it is served whole.
    pub fn check_delivery(
        &self,
        tenant: &DailyUsage,
        total: &DailyUsage,
        now: Timestamp,
    ) -> Result<()> {
        // One more message or byte would pass a limit already reached.
        self.check(tenant, total, Traffic::new(Way::Out, 1, 1), now)
    }
}

/// Limits on one scope's traffic in one UTC day; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DailyLimits {
    /// Events ingested.
    pub messages_in: Option<u64>,
    /// Payload bytes ingested.
    pub bytes_in: Option<u64>,
    /// Events delivered (pulled, claimed, streamed).
    pub messages_out: Option<u64>,
    /// Payload bytes delivered.
    pub bytes_out: Option<u64>,
}

impl DailyLimits {
    /// No limit.
    pub fn none() -> Self {
        Self::default()
    }

    /// `messages` and `bytes` a day, in and out each.
    pub fn both_ways(messages: u64, bytes: u64) -> Self {
        DailyLimits {
            messages_in: Some(messages),
            bytes_in: Some(bytes),
            messages_out: Some(messages),
            bytes_out: Some(bytes),
        }
    }

    /// At most `n` events ingested a day.
    pub fn messages_in(mut self, n: u64) -> Self {
        self.messages_in = Some(n);
        self
    }

    /// At most `n` payload bytes ingested a day.
    pub fn bytes_in(mut self, n: u64) -> Self {
        self.bytes_in = Some(n);
        self
    }

    /// At most `n` events delivered a day.
    pub fn messages_out(mut self, n: u64) -> Self {
        self.messages_out = Some(n);
        self
    }

    /// At most `n` payload bytes delivered a day.
    pub fn bytes_out(mut self, n: u64) -> Self {
        self.bytes_out = Some(n);
        self
    }

    fn of(&self, way: Way) -> (Option<u64>, Option<u64>) {
        match way {
            Way::In => (self.messages_in, self.bytes_in),
            Way::Out => (self.messages_out, self.bytes_out),
        }
    }

    /// Whether these limits bound what goes `way`.
    pub fn limits(&self, way: Way) -> bool {
        let (messages, bytes) = self.of(way);
        messages.is_some() || bytes.is_some()
    }
}

/// What one scope used on one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DailyUsage {
    /// Events ingested.
    pub messages_in: u64,
    /// Payload bytes ingested.
    pub bytes_in: u64,
    /// Events delivered.
    pub messages_out: u64,
    /// Payload bytes delivered.
    pub bytes_out: u64,
}

impl DailyUsage {
    /// A usage record.
    pub fn new(messages_in: u64, bytes_in: u64, messages_out: u64, bytes_out: u64) -> Self {
        DailyUsage {
            messages_in,
            bytes_in,
            messages_out,
            bytes_out,
        }
    }

    /// This usage with `traffic` added.
    pub fn plus(mut self, traffic: Traffic) -> Self {
        let (messages, bytes) = match traffic.way {
            Way::In => (&mut self.messages_in, &mut self.bytes_in),
            Way::Out => (&mut self.messages_out, &mut self.bytes_out),
        };
        *messages = messages.saturating_add(traffic.messages);
        *bytes = bytes.saturating_add(traffic.bytes);
        self
    }

    fn of(&self, way: Way) -> (u64, u64) {
        match way {
            Way::In => (self.messages_in, self.bytes_in),
            Way::Out => (self.messages_out, self.bytes_out),
        }
    }
}

/// Which way traffic goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Way {
    /// Ingested.
    In,
    /// Delivered.
    Out,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::In => "in",
            Way::Out => "out",
        }
    }
}

/// What one call moves: messages and payload bytes, one way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traffic {
    /// Which way.
    pub way: Way,
    /// Events.
    pub messages: u64,
    /// Payload bytes.
    pub bytes: u64,
}

impl Traffic {
    /// `messages` events of `bytes` payload bytes going `way`.
    pub fn new(way: Way, messages: u64, bytes: u64) -> Self {
        Traffic {
            way,
            messages,
            bytes,
        }
    }
}

/// The UTC day `t` falls in, as days since the Unix epoch.
pub fn utc_day(t: Timestamp) -> u64 {
    t.as_millis() / DAY_MS
}

/// The start of the UTC day after the one `t` falls in.
pub fn next_day(t: Timestamp) -> Timestamp {
    Timestamp::from_millis(utc_day(t).saturating_add(1).saturating_mul(DAY_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_limit_passed_is_named_with_the_end_of_the_day() {
        let quotas = Quotas::off()
            .per_tenant(DailyLimits::none().messages_in(10))
            .total(DailyLimits::none().bytes_in(100));
        let now = Timestamp::from_millis(DAY_MS * 3 + 5);
        let used = DailyUsage::new(9, 50, 0, 0);
        let ok = quotas.check(&used, &used, Traffic::new(Way::In, 1, 50), now);
        assert!(ok.is_ok(), "exactly at both limits: {ok:?}");
        let over = quotas.check(&used, &used, Traffic::new(Way::In, 2, 0), now);
        assert!(
            matches!(&over, Err(Error::QuotaExceeded { scope, limit: 10, reset_at })
                if scope == "tenant messages in" && reset_at.as_millis() == DAY_MS * 4),
            "{over:?}"
        );
        let bytes = quotas.check(&used, &used, Traffic::new(Way::In, 1, 51), now);
        assert!(
            matches!(&bytes, Err(Error::QuotaExceeded { scope, .. }) if scope == "total bytes in")
        );
        let out = quotas.check(&used, &used, Traffic::new(Way::Out, 1_000, 1_000), now);
        assert!(out.is_ok(), "nothing limits what goes out");
        assert!(Quotas::off().is_off() && !Quotas::ephemeral().is_off());
    }
}
