//! The traits a storage backend implements.
//!
//! Each trait is small, object-safe and `Send + Sync`, so `Arc<dyn Backend>`
//! works. Backends take validated events ([`ValidEvent`]) and decode cursors
//! with [`PullQuery::resolve`]; policies (rate limits, sizes) live in the
//! [`Inbox`](crate::Inbox) facade, not in backends.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    Capabilities, ClaimQuery, Clock, Error, Event, EventId, EventStatus, Filter, Ingested,
    LeaseToken, Leased, Page, PullQuery, Redrive, ReleaseOutcome, Result, RetryPolicy, TenantId,
    Timestamp, ValidEvent,
};

/// Stores new events.
#[async_trait]
pub trait Ingest: Send + Sync {
    /// Stores one event, durably before returning, or finds its idempotent
    /// original. A caller that stops waiting (drops the future) after the
    /// request reached the backend may still see it stored: retry with the
    /// same idempotency key to find out safely. By default, a batch of one.
    async fn ingest(&self, tenant: &TenantId, event: ValidEvent) -> Result<Ingested> {
        let mut ingested = self.ingest_batch(tenant, vec![event]).await?;
        ingested
            .pop()
            .ok_or_else(|| Error::permanent("ingest stored nothing"))
    }

    /// Stores many events atomically: all of them or, on error, none. Each
    /// event gets its own idempotency handling, in order.
    async fn ingest_batch(
        &self,
        tenant: &TenantId,
        events: Vec<ValidEvent>,
    ) -> Result<Vec<Ingested>>;
}

/// Reads events.
#[async_trait]
pub trait InboxPull: Send + Sync {
    /// Lists pending events of one tenant (see [`PullQuery`]).
    async fn pull(&self, tenant: &TenantId, query: PullQuery) -> Result<Page>;

    /// The event with this id in this tenant, in any state, unless deleted.
    async fn get(&self, tenant: &TenantId, id: EventId) -> Result<Option<Event>>;
}

/// Marks events delivered.
#[async_trait]
pub trait Acknowledge: Send + Sync {
    /// Marks the event delivered: it leaves the inbox. Acking twice is fine.
    async fn ack(&self, tenant: &TenantId, id: EventId) -> Result<AckOutcome>;
}

/// Removes events.
#[async_trait]
pub trait Delete: Send + Sync {
    /// Removes the event in any state. Its idempotency key stays remembered
    /// for the rest of its window.
    async fn delete(&self, tenant: &TenantId, id: EventId) -> Result<DeleteOutcome>;
}

/// Looks up idempotency keys.
#[async_trait]
pub trait Idempotency: Send + Sync {
    /// The event stored under `key` within the idempotency window, if any.
    async fn find_by_key(&self, tenant: &TenantId, key: &str) -> Result<Option<EventId>>;
}

/// Claims for workers: leases, retries, dead letters (see
/// [`Delivery`](crate::raw::Delivery) for the rules every backend applies).
#[async_trait]
pub trait Leases: Send + Sync {
    /// Claims up to `query.limit` claimable events, the earliest available
    /// first (a new event is available from its ingest, by the backend's
    /// clock; a retried one from the end of its backoff), then in commit
    /// order. It may return fewer, even none, while claimable events remain
    /// (other claims took the ones it found): claim again, or poll
    /// [`Leases::claimable_at`].
    async fn claim(&self, tenant: &TenantId, query: ClaimQuery) -> Result<Vec<Leased>>;

    /// When the earliest event that a claim with `filter` could take becomes
    /// claimable: a time at or before now means a claim now most likely
    /// finds one (an event on its last attempt is dead-lettered when its
    /// lease ends instead); `None` means no pending event matches. A read: it changes nothing,
    /// so an idle worker can poll it instead of claiming.
    async fn claimable_at(&self, tenant: &TenantId, filter: &Filter) -> Result<Option<Timestamp>>;

    /// Extends a lease to `now + by`; returns the new expiry.
    async fn extend(&self, tenant: &TenantId, token: LeaseToken, by: Duration)
    -> Result<Timestamp>;

    /// Gives the event back: claimable again after `retry_after` (or the
    /// retry policy's backoff), or dead-lettered after its last attempt.
    async fn release(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        retry_after: Option<Duration>,
    ) -> Result<ReleaseOutcome>;

    /// Gives the event back at once without counting the attempt (the work
    /// was not tried, e.g. a worker shutting down).
    async fn requeue(&self, tenant: &TenantId, token: LeaseToken) -> Result<()>;

    /// Acks with a lease: `LeaseLost` if another claim replaced it.
    async fn ack_lease(&self, tenant: &TenantId, token: LeaseToken) -> Result<AckOutcome>;

    /// Acks many leases, each as [`Leases::ack_lease`] would, and answers
    /// each. A backend that can should do them in one write (SQLite: one
    /// request to its group commit); this default acks them one by one.
    /// `Err` only when no answer can be given for any of them.
    async fn ack_leases(
        &self,
        tenant: &TenantId,
        tokens: Vec<LeaseToken>,
    ) -> Result<Vec<Result<AckOutcome>>> {
        let mut answers = Vec::with_capacity(tokens.len());
        for token in tokens {
            answers.push(self.ack_lease(tenant, token).await);
        }
        Ok(answers)
    }

    /// Lists dead-lettered events, like [`InboxPull::pull`] lists pending ones.
    async fn dead_letters(&self, tenant: &TenantId, query: PullQuery) -> Result<Page>;

    /// Returns dead letters to the inbox with attempts reset; returns how
    /// many were redriven.
    async fn redrive(&self, tenant: &TenantId, which: Redrive) -> Result<u64>;
}

/// Keeps storage bounded: removes what has outlived its retention.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Removes at most `limit` acked events older than the retention period
    /// and at most `limit` idempotency keys past their window, across all
    /// tenants. Small batches let purging interleave with normal traffic:
    /// call again while [`Purged::more`] says so.
    async fn purge_expired(&self, limit: usize) -> Result<Purged>;

    /// Deletes dead letters on purpose (they are never purged by age);
    /// returns how many.
    async fn purge_dead_letters(&self, tenant: &TenantId, which: Redrive) -> Result<u64>;
}

/// Keeps usage records ([`UsageRecord`](crate::UsageRecord)) for billing.
#[async_trait]
pub trait Metering: Send + Sync {
    /// Adds `records` to the stored counts: records with the same key
    /// ([`UsageKey`](crate::UsageKey)) add up.
    async fn add_usage(&self, records: Vec<crate::UsageRecord>) -> Result<()>;

    /// `tenant`'s records for the UTC days in `days`, summed by key, in
    /// key order.
    async fn usage(
        &self,
        tenant: &TenantId,
        days: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<crate::UsageRecord>>;
}

/// What one [`Retention::purge_expired`] call removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Purged {
    /// Acked events past retention, removed.
    pub events: u64,
    /// Idempotency keys past their window, removed.
    pub keys: u64,
    /// Whether a limit was reached: more may be waiting.
    pub more: bool,
}

impl Purged {
    /// A purge report.
    pub fn new(events: u64, keys: u64, more: bool) -> Self {
        Purged { events, keys, more }
    }
}

/// Counts of one tenant's events, for dashboards and alerts.
#[async_trait]
pub trait Stats: Send + Sync {
    /// How many events the tenant has in each state, and how old its oldest
    /// pending one is.
    async fn tenant_stats(&self, tenant: &TenantId) -> Result<TenantStats>;
}

/// One tenant's counts at a moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TenantStats {
    /// Pending events, leased ones included.
    pub pending: u64,
    /// Pending events under a live lease.
    pub leased: u64,
    /// Dead letters.
    pub dead_lettered: u64,
    /// Acked events still kept (until their retention ends).
    pub acked: u64,
    /// Age of the oldest pending event. Serialized as
    /// `oldest_pending_age_ms`.
    #[serde(
        rename = "oldest_pending_age_ms",
        with = "crate::serde_millis::option_duration"
    )]
    pub oldest_pending_age: Option<Duration>,
}

impl TenantStats {
    /// A stats record.
    pub fn new(
        pending: u64,
        leased: u64,
        dead_lettered: u64,
        acked: u64,
        oldest_pending_age: Option<Duration>,
    ) -> Self {
        TenantStats {
            pending,
            leased,
            dead_lettered,
            acked,
            oldest_pending_age,
        }
    }
}

/// A complete storage backend.
///
/// [`Retention`] and [`Stats`] are optional: a backend that has them
/// returns itself from [`Backend::retention`] and [`Backend::stats`];
/// without them the inbox answers [`Error::Unsupported`](crate::Error::Unsupported).
#[async_trait]
pub trait Backend:
    Ingest + InboxPull + Acknowledge + Delete + Idempotency + Leases + std::any::Any
{
    /// A short stable name (`memory`, `sqlite`), ASCII and at most 255
    /// bytes; cursors are bound to it.
    fn name(&self) -> &'static str;

    /// The settings the backend applies, including its clock.
    fn config(&self) -> &QueueConfig;

    /// What the backend can do and its limits, which the inbox enforces.
    /// The default: no limits of its own, exact claim order, other handles'
    /// writes seen at once, purging on request.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Purging expired events and dead letters, if the backend has it.
    fn retention(&self) -> Option<&dyn Retention> {
        None
    }

    /// Per-tenant counts, if the backend has them.
    fn stats(&self) -> Option<&dyn Stats> {
        None
    }

    /// Usage records, if the backend keeps them.
    fn metering(&self) -> Option<&dyn Metering> {
        None
    }

    /// Wakes subscriptions of `tenant` when events may have been committed
    /// for it (see [`ChangeFeed`](crate::raw::ChangeFeed)). Without one,
    /// subscriptions look again every 100 ms.
    fn changes(&self, tenant: &TenantId) -> Option<crate::raw::Changes> {
        let _ = tenant;
        None
    }

    /// Asks the storage itself whether it answers, for a health check:
    /// the cheapest request that reaches it. The default reads one page of
    /// a tenant no one uses; a backend that serves reads from memory
    /// overrides it.
    async fn probe(&self) -> Result<()> {
        let nobody = TenantId::new("zapinbox.probe")?;
        self.pull(&nobody, PullQuery::new().limit(1))
            .await
            .map(|_| ())
    }

    /// Finishes what is in flight and releases the storage. Later calls
    /// fail. Dropping every handle also releases it, without waiting.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// What [`Acknowledge::ack`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckOutcome {
    /// The event was pending (or dead-lettered) and is now acked.
    Acked,
    /// The event was already acked; nothing changed.
    AlreadyAcked,
}

/// What [`Delete::delete`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeleteOutcome {
    /// The state the event was in before it was deleted.
    pub previous: EventStatus,
}

impl DeleteOutcome {
    /// An event in state `previous` was deleted.
    pub fn new(previous: EventStatus) -> Self {
        DeleteOutcome { previous }
    }
}

/// Settings every backend applies the same way.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Where "now" comes from.
    pub clock: Clock,
    /// How long an idempotency key is remembered. Default 24 hours.
    pub idempotency_window: Duration,
    /// How often and how far apart events are retried.
    pub retry: RetryPolicy,
    /// How long an acked event is kept (readable with `get`) before it is
    /// purged. Default 7 days: long enough to look into what was delivered
    /// over a weekend and the week after, short enough that a busy inbox
    /// stays small. Dead letters are kept until redriven or purged on
    /// purpose; deleted events are gone at once.
    pub retention: Duration,
    /// Daily quotas on what comes in and goes out (default: none).
    pub quotas: crate::Quotas,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            clock: Clock::system(),
            idempotency_window: Duration::from_secs(24 * 60 * 60),
            retry: RetryPolicy::default(),
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            quotas: crate::Quotas::off(),
        }
    }
}

impl QueueConfig {
    /// The settings as a backend applies them: every rule reads "after the
    /// last attempt", so there is at least one (`RetryPolicy::max_attempts`
    /// is a public field; `with_max_attempts` already clamps).
    pub fn applied(mut self) -> Self {
        self.retry.max_attempts = self.retry.max_attempts.max(1);
        self
    }

    /// Uses `clock` for every time-based rule.
    pub fn with_clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = clock.into();
        self
    }

    /// Keeps acked events for `retention` before purging them.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Retries events by `policy`.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Enforces `quotas`, counted per UTC day by the backend.
    pub fn with_quotas(mut self, quotas: crate::Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Remembers idempotency keys for `window`.
    pub fn with_idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }
}
