//! Usage metering: what each tenant's clients did, per topic, action and
//! UTC day, for billing (the source systems "Module 3.1" and "Event Hub").

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{Error, TenantId};

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Events ingested.
    Ingest,
    /// Events delivered: pulled, claimed or streamed.
    Deliver,
    /// Events acked.
    Ack,
    /// Events deleted.
    Delete,
}

impl Action {
    /// Its name in records and reports.
    pub fn name(self) -> &'static str {
        match self {
            Action::Ingest => "ingest",
            Action::Deliver => "deliver",
            Action::Ack => "ack",
            Action::Delete => "delete",
        }
    }
}

/// Counted usage: how many events and payload bytes under one key (tenant,
/// day, client, topic, action, billable). Serialized flat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageRecord {
    /// What was counted.
    #[serde(flatten)]
    pub key: UsageKey,
    /// Events (or calls, for a call that failed).
    pub count: u64,
    /// Payload bytes.
    pub bytes: u64,
}

impl UsageRecord {
    /// A record of `count` events and `bytes` bytes.
    pub fn new(
        tenant: TenantId,
        day: u64,
        (client_id, topic): (Option<String>, Option<String>),
        action: Action,
        billable: bool,
        (count, bytes): (u64, u64),
    ) -> Self {
        UsageRecord {
            key: UsageKey {
                tenant,
                day,
                client_id,
                topic,
                action,
                billable,
            },
            count,
            bytes,
        }
    }

    /// Whether a call that ended in `error` is billed: the client's
    /// mistakes are, the inbox's failures are not.
    pub fn billable_error(error: &Error) -> bool {
        !matches!(error, Error::Backend { .. })
    }
}

/// What a usage record counts: its counts add up under one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageKey {
    /// Whose.
    pub tenant: TenantId,
    /// The UTC day, as days since the Unix epoch ([`utc_day`](crate::utc_day)).
    pub day: u64,
    /// The client that asked, as its events name it (`None` if unnamed).
    pub client_id: Option<String>,
    /// The events' topic (`None` without one, or where the call did not
    /// say: acks and deletes by id).
    pub topic: Option<String>,
    /// What was done.
    pub action: Action,
    /// Whether it is billed: what succeeded and what the client got wrong
    /// (invalid input, not found, conflicts, limits); not what failed on
    /// the inbox's side (storage errors).
    pub billable: bool,
}

/// Adds `records` up by key, in key order: what a backend stores, and what
/// reports read.
pub fn sum_usage(records: impl IntoIterator<Item = UsageRecord>) -> Vec<UsageRecord> {
    let mut sums: HashMap<UsageKey, UsageRecord> = HashMap::new();
    for record in records {
        sums.entry(record.key.clone())
            .and_modify(|sum| {
                sum.count = sum.count.saturating_add(record.count);
                sum.bytes = sum.bytes.saturating_add(record.bytes);
            })
            .or_insert(record);
    }
    let mut out: Vec<UsageRecord> = sums.into_values().collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}
