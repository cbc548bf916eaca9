//! The inbox's usage meter: every ingest, delivery, ack and delete counted
//! per tenant, client, topic, action and UTC day, written in the
//! background in batches.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::OnceLock;

use crate::emitter::{BufferedEmitter, Emit, EmitterConfig, Target};
use crate::{Action, Error, Event, Inbox, Result, TenantId, UsageRecord, utc_day};

/// The meter of an inbox built with metering on; its emitter starts with
/// the first record (inside the runtime that runs the calls).
#[derive(Default)]
pub(crate) struct Meter {
    emitter: OnceLock<BufferedEmitter>,
}

impl Inbox {
    /// Adds usage records to the backend's counts (for a host's own
    /// usage). `Unsupported` if the backend keeps none.
    pub async fn record_usage(&self, records: Vec<UsageRecord>) -> Result<()> {
        let metering = self.metering_backend("record_usage")?;
        metering.add_usage(crate::sum_usage(records)).await
    }

    /// `tenant`'s usage records for the UTC days in `days`
    /// ([`utc_day`](crate::utc_day)), summed by client, topic, action and
    /// billable, in that order. With metering on
    /// ([`InboxBuilder::metering`](crate::InboxBuilder::metering)) the
    /// inbox's own records written so far are included: it flushes first.
    pub async fn usage(
        &self,
        tenant: &TenantId,
        days: RangeInclusive<u64>,
    ) -> Result<Vec<UsageRecord>> {
        self.flush_usage().await;
        self.metering_backend("usage")?.usage(tenant, days).await
    }

    /// Writes the usage the inbox has metered so far.
    pub async fn flush_usage(&self) {
        if let Some(emitter) = self.meter().and_then(|m| m.emitter.get()) {
            emitter.flush().await;
        }
    }

    fn metering_backend(&self, operation: &'static str) -> Result<&dyn crate::raw::Metering> {
        self.backend().metering().ok_or(Error::Unsupported {
            operation,
            backend: self.backend().name(),
        })
    }

    /// Counts events `action` moved for `tenant`, by client and topic.
    pub(crate) fn meter_events<'a>(
        &self,
        tenant: &TenantId,
        action: Action,
        events: impl IntoIterator<Item = &'a Event>,
    ) {
        let parts = events.into_iter().map(|e| {
            let who = (e.client_id.as_deref(), e.topic.as_deref());
            (who, e.payload.len() as u64)
        });
        self.meter_parts(tenant, action, parts);
    }

    /// Counts events `action` moved for `tenant`, each given by its client,
    /// topic and payload bytes.
    pub(crate) fn meter_parts<'a>(
        &self,
        tenant: &TenantId,
        action: Action,
        events: impl IntoIterator<Item = ((Option<&'a str>, Option<&'a str>), u64)>,
    ) {
        if self.meter().is_none() {
            return;
        }
        let mut by: HashMap<(Option<String>, Option<String>), (u64, u64)> = HashMap::new();
        for ((client, topic), bytes) in events {
            let who = (client.map(str::to_owned), topic.map(str::to_owned));
            let sum = by.entry(who).or_default();
            sum.0 += 1;
            sum.1 += bytes;
        }
        for (who, counts) in by {
            self.meter_one(tenant, who, action, true, counts);
        }
    }

    /// Counts one call's outcome: `Ok` with `counts` (events, bytes), or
    /// its error, once, billable as [`UsageRecord::billable_error`] says.
    pub(crate) fn meter_call<T>(
        &self,
        tenant: &TenantId,
        who: (Option<&str>, Option<&str>),
        action: Action,
        outcome: &Result<T>,
        counts: impl FnOnce(&T) -> (u64, u64),
    ) {
        if self.meter().is_none() {
            return;
        }
        let who = (who.0.map(str::to_owned), who.1.map(str::to_owned));
        match outcome {
            Ok(value) => self.meter_one(tenant, who, action, true, counts(value)),
            Err(e) => self.meter_one(tenant, who, action, UsageRecord::billable_error(e), (1, 0)),
        }
    }

    fn meter_one(
        &self,
        tenant: &TenantId,
        who: (Option<String>, Option<String>),
        action: Action,
        billable: bool,
        counts: (u64, u64),
    ) {
        let Some(meter) = self.meter() else { return };
        if counts.0 == 0 {
            return;
        }
        let day = utc_day(self.clock().now());
        let record = UsageRecord::new(tenant.clone(), day, who, action, billable, counts);
        let emitter = meter.emitter.get_or_init(|| {
            BufferedEmitter::to(
                Target::Backend(self.backend().clone()),
                EmitterConfig::default(),
            )
        });
        emitter.emit(Emit::Usage(record));
    }
}
