//! The `Inbox` facade: one backend, wrapped in the policies every backend
//! shares (validation, size limits, rate limits).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tracing::instrument;

use std::time::Duration;

use crate::Action;
use crate::policy::{Call, Operation, Policy};
use crate::rate_limit::TenantLimiter;

use crate::{
    AckOutcome, Backend, ClaimQuery, Clock, DeleteOutcome, Event, EventId, Filter, Ingested,
    LeaseToken, Leased, Limits, NewEvent, Page, PullQuery, Purged, RateLimit, Redrive,
    ReleaseOutcome, Result, TenantId, TenantStats, Timestamp,
};

/// An event inbox on any backend.
///
/// A call has its input checked against the [`Limits`], passes the inbox's
/// [`Policy`]s in order (the rate limit first, if set), then reaches the
/// backend: a rejected call changes nothing stored. Cheap to clone; clones share
/// the backend, the policies and the rate limiters.
///
/// # What the rate limit counts
///
/// Calls that bring in or hand out work are limited: `ingest`,
/// `ingest_batch` (one call, however many events), `pull`, `get`,
/// `find_by_key`, `claim`, `dead_letters`, `redrive`, `purge_dead_letters`
/// and `tenant_stats`. Calls that finish work the caller already holds are
/// never refused, so a busy tenant's events do not go round again: `ack`, `ack_leases`,
/// `delete`, `extend`, `release`, `requeue` and `ack_lease`; nor is
/// `claimable_at`, the cheap read an idle [`Worker`](crate::Worker) polls
/// instead of claiming (see [`Operation::finishes_work`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> zapinbox_core::Result<()> {
/// use serde_json::json;
/// use zapinbox_core::{Inbox, MemoryBackend, NewEvent, PullQuery, TenantId};
///
/// let inbox = Inbox::new(MemoryBackend::new());
/// let tenant = TenantId::new("acme")?;
/// let first = inbox.ingest(&tenant, NewEvent::new(json!({ "n": 1 })).with_topic("orders")).await?;
/// let page = inbox.pull(&tenant, PullQuery::new().topic("orders")).await?;
/// assert_eq!(page.events[0].id, first.id);
/// inbox.ack(&tenant, first.id).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Inbox {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    limits: Limits,
    /// Run in order before every call (see [`Policy`]).
    policies: Vec<Arc<dyn Policy>>,
    /// Live subscriptions per tenant.
    subscriptions: Arc<crate::subscription::Slots>,
    /// Usage metering, if on.
    meter: Option<crate::metering::Meter>,
}

/// Anything that can serve as an inbox's backend: a backend value, an
/// `Arc` of one, or an `Arc<dyn Backend>`.
pub trait IntoBackend {
    /// Shares the backend as a trait object.
    fn into_backend(self) -> Arc<dyn Backend>;
}

impl<B: Backend> IntoBackend for B {
    fn into_backend(self) -> Arc<dyn Backend> {
        Arc::new(self)
    }
}

impl<B: Backend> IntoBackend for Arc<B> {
    fn into_backend(self) -> Arc<dyn Backend> {
        self
    }
}

impl IntoBackend for Arc<dyn Backend> {
    fn into_backend(self) -> Arc<dyn Backend> {
        self
    }
}

/// Configures an [`Inbox`].
pub struct InboxBuilder {
    backend: Arc<dyn Backend>,
    limits: Limits,
    rate_limit: Option<RateLimit>,
    tenant_rate_limits: HashMap<TenantId, RateLimit>,
    policies: Vec<Arc<dyn Policy>>,
    max_subscriptions: usize,
    metering: bool,
}

impl InboxBuilder {
    /// Sets the limits on what one request may carry (default:
    /// [`Limits::default`]: 512 KiB and 64 levels a payload, 1 000 events
    /// and 16 MiB a batch).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Limits every tenant to `limit` calls (default: unlimited). Each
    /// limited call costs one, a batch included; calls that finish work
    /// are never limited (see [`Inbox`]).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Gives `tenant` its own rate instead of the default.
    pub fn tenant_rate_limit(mut self, tenant: TenantId, limit: RateLimit) -> Self {
        self.tenant_rate_limits.insert(tenant, limit);
        self
    }

    /// Meters every ingest, delivery (pull, claim, subscription), ack and
    /// delete per tenant, client, topic, action and UTC day (default: off),
    /// written in the background in batches to a backend that keeps usage
    /// ([`Inbox::usage`] reads it).
    pub fn metering(mut self, on: bool) -> Self {
        self.metering = on;
        self
    }

    /// Lets each tenant hold at most `n` live subscriptions at once
    /// (default [`DEFAULT_SUBSCRIPTIONS_PER_TENANT`](crate::DEFAULT_SUBSCRIPTIONS_PER_TENANT), 2).
    pub fn max_subscriptions(mut self, n: usize) -> Self {
        self.max_subscriptions = n;
        self
    }

    /// Adds a policy, run after the rate limit and the policies added
    /// before it (see [`Policy`]).
    pub fn policy(mut self, policy: impl Policy) -> Self {
        self.policies.push(Arc::new(policy));
        self
    }

    /// Builds the inbox. Its limits are the ones set here, lowered to the
    /// backend's [`Capabilities`](crate::Capabilities) where those are
    /// smaller; its policies run in the order [`Policy`] documents.
    pub fn build(self) -> Inbox {
        let clock = self.backend.config().clock.clone();
        let limits = self.limits.within(&self.backend.capabilities());
        let mut policies: Vec<Arc<dyn Policy>> = Vec::new();
        if self.rate_limit.is_some() || !self.tenant_rate_limits.is_empty() {
            let rate = TenantLimiter::new(clock, self.rate_limit, self.tenant_rate_limits);
            policies.push(Arc::new(rate));
        }
        policies.extend(self.policies);
        Inbox {
            inner: Arc::new(Inner {
                backend: self.backend,
                limits,
                policies,
                subscriptions: crate::subscription::Slots::new(self.max_subscriptions),
                meter: self.metering.then(crate::metering::Meter::default),
            }),
        }
    }
}

impl Inbox {
    /// An inbox on `backend` with default policies.
    pub fn new(backend: impl IntoBackend) -> Self {
        Self::builder(backend).build()
    }

    /// Starts configuring an inbox on `backend`.
    pub fn builder(backend: impl IntoBackend) -> InboxBuilder {
        InboxBuilder {
            backend: backend.into_backend(),
            limits: Limits::default(),
            rate_limit: None,
            tenant_rate_limits: HashMap::new(),
            policies: Vec::new(),
            max_subscriptions: crate::DEFAULT_SUBSCRIPTIONS_PER_TENANT,
            metering: false,
        }
    }

    /// The backend underneath.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The backend as its concrete type, for what only it offers (say,
    /// `SqliteBackend::backup_to`): `None` if it is of another type.
    ///
    /// ```
    /// use zapinbox_core::{Inbox, MemoryBackend};
    /// let inbox = Inbox::new(MemoryBackend::new());
    /// assert!(inbox.backend_as::<MemoryBackend>().is_some());
    /// ```
    pub fn backend_as<B: Backend>(&self) -> Option<&B> {
        let any: &dyn std::any::Any = self.inner.backend.as_ref();
        any.downcast_ref::<B>()
    }

    /// The clock every rule reads (the backend's).
    pub fn clock(&self) -> &Clock {
        &self.inner.backend.config().clock
    }

    /// Whether the storage answers just now (see [`Backend::probe`]): for
    /// health checks. Passes no policy and meters nothing.
    pub async fn probe(&self) -> Result<()> {
        self.inner.backend.probe().await
    }

    /// Closes the backend: what is in flight finishes (metered usage is
    /// written first), later calls fail.
    pub async fn close(&self) -> Result<()> {
        self.flush_usage().await;
        self.inner.backend.close().await
    }

    /// The size limits in force: those set on the builder, lowered to the
    /// backend's capabilities.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// What the backend can do and its limits.
    pub fn capabilities(&self) -> crate::Capabilities {
        self.inner.backend.capabilities()
    }

    /// Stores `event` for `tenant`. Returns once the event is durable (as the
    /// backend defines it). If the caller stops waiting, the event may still
    /// be stored: retry with the same idempotency key to find out safely. With an idempotency key already used within its
    /// window: the original id with `duplicate: true` if the content is the
    /// same, [`Error::IdempotencyConflict`](crate::Error::IdempotencyConflict)
    /// if it differs.
    #[instrument(skip_all, fields(tenant = %tenant, op = "ingest"))]
    pub async fn ingest(&self, tenant: &TenantId, event: NewEvent) -> Result<Ingested> {
        let event = event
            .validate(&self.inner.limits)
            .inspect_err(crate::telemetry::refused)?;
        let call = Call::new(Operation::Ingest, tenant).carrying(1, event.payload().len());
        self.admit(&call)?;
        // Only metering needs these after the event is gone.
        let metered = self.meter().is_some();
        let owned = |field: Option<&str>| field.filter(|_| metered).map(str::to_owned);
        let (client, topic) = (owned(event.client_id()), owned(event.topic()));
        let bytes = event.payload().len() as u64;
        let started = std::time::Instant::now();
        let ingested = self.inner.backend.ingest(tenant, event).await;
        let outcome = ingested.as_ref().map(std::slice::from_ref);
        crate::telemetry::ingested(self.backend().name(), tenant, started.elapsed(), outcome, 1);
        let who = (client.as_deref(), topic.as_deref());
        self.meter_call(tenant, who, Action::Ingest, &ingested, |_| (1, bytes));
        ingested
    }

    /// Stores `events` atomically: if any is invalid or conflicts with an
    /// idempotency key, nothing is stored. A batch holds at most
    /// [`Limits::max_batch_events`] events and [`Limits::max_batch_bytes`]
    /// bytes of payload ([`Error::LimitExceeded`](crate::Error::LimitExceeded)).
    #[instrument(skip_all, fields(tenant = %tenant, op = "ingest_batch", count = events.len()))]
    pub async fn ingest_batch(
        &self,
        tenant: &TenantId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Ingested>> {
        let (valid, bytes) = self
            .validate_batch(events)
            .inspect_err(crate::telemetry::refused)?;
        let call = Call::new(Operation::IngestBatch, tenant).carrying(valid.len(), bytes);
        self.admit(&call)?;
        let (count, started) = (valid.len(), std::time::Instant::now());
        // Only metering needs the events' clients and topics afterwards.
        let seen = self.meter().map(|_| {
            let owned = |field: Option<&str>| field.map(str::to_owned);
            let sized = |v: &crate::ValidEvent| {
                let bytes = v.payload().len() as u64;
                (owned(v.client_id()), owned(v.topic()), bytes)
            };
            valid.iter().map(sized).collect::<Vec<_>>()
        });
        let ingested = self.inner.backend.ingest_batch(tenant, valid).await;
        let outcome = ingested.as_deref();
        crate::telemetry::ingested(
            self.backend().name(),
            tenant,
            started.elapsed(),
            outcome,
            count,
        );
        match (&ingested, seen) {
            (_, None) => {}
            (Ok(_), Some(seen)) => {
                let parts = seen
                    .iter()
                    .map(|(c, t, b)| ((c.as_deref(), t.as_deref()), *b));
                self.meter_parts(tenant, Action::Ingest, parts);
            }
            (Err(_), Some(_)) => {
                self.meter_call(tenant, (None, None), Action::Ingest, &ingested, |_| (0, 0))
            }
        }
        ingested
    }

    /// One page of pending events (see [`PullQuery`]).
    #[instrument(skip_all, fields(tenant = %tenant, op = "pull"))]
    pub async fn pull(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        self.admit(&Call::new(Operation::Pull, tenant))?;
        let page = self.inner.backend.pull(tenant, query).await;
        match &page {
            Ok(page) => self.meter_events(tenant, Action::Deliver, &page.events),
            Err(e) => {
                crate::telemetry::refused(e);
                self.meter_call(tenant, (None, None), Action::Deliver, &page, |_| (0, 0));
            }
        }
        page
    }

    /// Every pending event matching `query`, page after page, in its
    /// order: each page is one [`Inbox::pull`] (rate limited as one), the
    /// next asked for only when the stream is read that far. Ends after
    /// the last page, or after yielding the first error.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> zapinbox_core::Result<()> {
    /// use futures::TryStreamExt;
    /// use serde_json::json;
    /// use zapinbox_core::{Inbox, MemoryBackend, NewEvent, PullQuery, TenantId};
    ///
    /// let inbox = Inbox::new(MemoryBackend::new());
    /// let tenant = TenantId::new("acme")?;
    /// for n in 0..5 {
    ///     inbox.ingest(&tenant, NewEvent::new(json!({ "n": n }))).await?;
    /// }
    /// let all: Vec<_> = inbox.stream_pending(&tenant, PullQuery::new().limit(2)).try_collect().await?;
    /// assert_eq!(all.len(), 5);
    /// # Ok(()) }
    /// ```
    pub fn stream_pending(
        &self,
        tenant: &TenantId,
        query: PullQuery,
    ) -> impl futures::Stream<Item = Result<Event>> + Send + use<> {
        let paging = Paging {
            inbox: self.clone(),
            tenant: tenant.clone(),
            next: Some(query),
            buffered: std::collections::VecDeque::new(),
        };
        futures::stream::unfold(paging, |mut paging| async move {
            loop {
                if let Some(event) = paging.buffered.pop_front() {
                    return Some((Ok(event), paging));
                }
                let query = paging.next.take()?;
                match paging.inbox.pull(&paging.tenant, query.clone()).await {
                    Ok(page) => {
                        paging.buffered.extend(page.events);
                        paging.next = match page.next_cursor {
                            Some(cursor) if page.has_more => Some(query.after(cursor)),
                            _ => None,
                        };
                    }
                    Err(e) => return Some((Err(e), paging)),
                }
            }
        })
    }

    /// The event with this id, in any state, unless deleted.
    #[instrument(skip_all, fields(tenant = %tenant, op = "get"))]
    pub async fn get(&self, tenant: &TenantId, id: EventId) -> Result<Option<Event>> {
        self.admit(&Call::new(Operation::Get, tenant))?;
        self.inner.backend.get(tenant, id).await
    }

    /// Marks the event delivered. Acking twice answers `AlreadyAcked`. Not
    /// rate limited.
    #[instrument(skip_all, fields(tenant = %tenant, op = "ack"))]
    pub async fn ack(&self, tenant: &TenantId, id: EventId) -> Result<AckOutcome> {
        self.admit(&Call::new(Operation::Ack, tenant))?;
        let done = self.inner.backend.ack(tenant, id).await;
        self.meter_call(tenant, (None, None), Action::Ack, &done, |_| (1, 0));
        done
    }

    /// Removes the event, whatever its state. Not rate limited.
    #[instrument(skip_all, fields(tenant = %tenant, op = "delete"))]
    pub async fn delete(&self, tenant: &TenantId, id: EventId) -> Result<DeleteOutcome> {
        self.admit(&Call::new(Operation::Delete, tenant))?;
        let done = self.inner.backend.delete(tenant, id).await;
        self.meter_call(tenant, (None, None), Action::Delete, &done, |_| (1, 0));
        done
    }

    /// The event stored under an idempotency key within its window.
    #[instrument(skip_all, fields(tenant = %tenant, op = "find_by_key"))]
    pub async fn find_by_key(&self, tenant: &TenantId, key: &str) -> Result<Option<EventId>> {
        self.inner
            .limits
            .check_idempotency_key(key)
            .inspect_err(crate::telemetry::refused)?;
        self.admit(&Call::new(Operation::FindByKey, tenant))?;
        self.inner.backend.find_by_key(tenant, key).await
    }
}

/// Workers: claims, leases, dead letters. Calls that finish work already
/// claimed (`extend`, `release`, `requeue`, `ack_lease`) are not rate
/// limited: a busy tenant's acks must not fail and send its events round
/// again.
impl Inbox {
    /// Claims up to `query.limit` events for `query.lease`: no other claim
    /// gets them until the lease ends. The earliest available first (a new
    /// event is available from its ingest, a retried one from the end of
    /// its backoff), then in commit order.
    #[instrument(skip_all, fields(tenant = %tenant, op = "claim"))]
    pub async fn claim(&self, tenant: &TenantId, query: ClaimQuery) -> Result<Vec<Leased>> {
        self.admit(&Call::new(Operation::Claim, tenant))?;
        let claimed = self.inner.backend.claim(tenant, query).await;
        match &claimed {
            Ok(leased) => {
                self.meter_events(tenant, Action::Deliver, leased.iter().map(|l| &l.event))
            }
            Err(e) => {
                crate::telemetry::refused(e);
                self.meter_call(tenant, (None, None), Action::Deliver, &claimed, |_| (0, 0));
            }
        }
        claimed
    }

    /// When the earliest event a claim with `filter` could take becomes
    /// claimable (at or before now: a claim most likely finds one now; an
    /// event on its last attempt is dead-lettered when its lease ends
    /// instead), or `None` if no pending event matches. A cheap read, not rate limited: poll this
    /// while idle, and claim when it says so.
    #[instrument(skip_all, fields(tenant = %tenant, op = "claimable_at"))]
    pub async fn claimable_at(
        &self,
        tenant: &TenantId,
        filter: &Filter,
    ) -> Result<Option<Timestamp>> {
        self.admit(&Call::new(Operation::ClaimableAt, tenant))?;
        self.inner.backend.claimable_at(tenant, filter).await
    }

    /// Extends a lease to `now + by`; returns the new expiry. `LeaseLost` if
    /// the event was claimed by someone else, acked, deleted or
    /// dead-lettered.
    #[instrument(skip_all, fields(tenant = %tenant, op = "extend"))]
    pub async fn extend(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        by: Duration,
    ) -> Result<Timestamp> {
        self.admit(&Call::new(Operation::Extend, tenant))?;
        let extended = self.inner.backend.extend(tenant, token, by).await;
        crate::telemetry::lease_outcome("extend", &extended);
        extended
    }

    /// Gives a claimed event back (a nack): claimable again after
    /// `retry_after`, or after the retry policy's backoff when `None`;
    /// dead-lettered if that was its last attempt.
    #[instrument(skip_all, fields(tenant = %tenant, op = "release"))]
    pub async fn release(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        retry_after: Option<Duration>,
    ) -> Result<ReleaseOutcome> {
        self.admit(&Call::new(Operation::Release, tenant))?;
        let released = self.inner.backend.release(tenant, token, retry_after).await;
        crate::telemetry::lease_outcome("release", &released);
        released
    }

    /// Gives a claimed event back at once without counting the attempt:
    /// for work that was not tried, such as a worker shutting down.
    #[instrument(skip_all, fields(tenant = %tenant, op = "requeue"))]
    pub async fn requeue(&self, tenant: &TenantId, token: LeaseToken) -> Result<()> {
        self.admit(&Call::new(Operation::Requeue, tenant))?;
        let requeued = self.inner.backend.requeue(tenant, token).await;
        crate::telemetry::lease_outcome("requeue", &requeued);
        requeued
    }

    /// Acks a claimed event. `LeaseLost` if the lease ran out and another
    /// worker claimed the event since: its result must not count.
    #[instrument(skip_all, fields(tenant = %tenant, op = "ack_lease"))]
    pub async fn ack_lease(&self, tenant: &TenantId, token: LeaseToken) -> Result<AckOutcome> {
        self.admit(&Call::new(Operation::AckLease, tenant))?;
        let done = self.inner.backend.ack_lease(tenant, token).await;
        crate::telemetry::lease_outcome("ack_lease", &done);
        self.meter_call(tenant, (None, None), Action::Ack, &done, |_| (1, 0));
        done
    }

    /// Acks many claimed events at once, each as [`Inbox::ack_lease`] would,
    /// answering each: how a worker settles the work of many handlers in
    /// one write. At most [`Limits::max_ids`] tokens. Not rate limited.
    #[instrument(skip_all, fields(tenant = %tenant, op = "ack_leases", count = tokens.len()))]
    pub async fn ack_leases(
        &self,
        tenant: &TenantId,
        tokens: Vec<LeaseToken>,
    ) -> Result<Vec<Result<AckOutcome>>> {
        self.check_id_count(tokens.len())?;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.admit(&Call::new(Operation::AckLeases, tenant).carrying(tokens.len(), 0))?;
        let done = self.inner.backend.ack_leases(tenant, tokens).await;
        let acked = |answers: &Vec<Result<AckOutcome>>| {
            (answers.iter().filter(|a| a.is_ok()).count() as u64, 0)
        };
        self.meter_call(tenant, (None, None), Action::Ack, &done, acked);
        done
    }

    /// Lists dead-lettered events (filters, order and cursors as in pull).
    #[instrument(skip_all, fields(tenant = %tenant, op = "dead_letters"))]
    pub async fn dead_letters(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        self.admit(&Call::new(Operation::DeadLetters, tenant))?;
        self.inner.backend.dead_letters(tenant, query).await
    }

    /// Returns dead letters to the inbox with attempts reset; returns how
    /// many were redriven.
    #[instrument(skip_all, fields(tenant = %tenant, op = "redrive"))]
    pub async fn redrive(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        let ids = self.check_ids(&which)?;
        self.admit(&Call::new(Operation::Redrive, tenant).carrying(ids, 0))?;
        self.inner.backend.redrive(tenant, which).await
    }
}

/// Upkeep: retention and counts.
impl Inbox {
    /// Removes at most `limit` acked events past retention and `limit`
    /// expired idempotency keys, across all tenants (not rate limited).
    /// Backends with a maintenance task of their own (SQLite) call this
    /// for you.
    #[instrument(skip_all, fields(op = "purge_expired", limit))]
    pub async fn purge_expired(&self, limit: usize) -> Result<Purged> {
        self.admit(&Call::across_tenants(Operation::PurgeExpired))?;
        self.retention("purge_expired")?.purge_expired(limit).await
    }

    /// Deletes dead letters on purpose; returns how many.
    #[instrument(skip_all, fields(tenant = %tenant, op = "purge_dead_letters"))]
    pub async fn purge_dead_letters(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        let ids = self.check_ids(&which)?;
        self.admit(&Call::new(Operation::PurgeDeadLetters, tenant).carrying(ids, 0))?;
        let retention = self.retention("purge_dead_letters")?;
        retention.purge_dead_letters(tenant, which).await
    }

    /// Counts of the tenant's events in each state.
    #[instrument(skip_all, fields(tenant = %tenant, op = "tenant_stats"))]
    pub async fn tenant_stats(&self, tenant: &TenantId) -> Result<TenantStats> {
        self.admit(&Call::new(Operation::TenantStats, tenant))?;
        let stats = self
            .inner
            .backend
            .stats()
            .ok_or_else(|| self.unsupported("tenant_stats"))?;
        let stats = stats.tenant_stats(tenant).await?;
        tracing::debug!(
            pending = stats.pending,
            leased = stats.leased,
            dead_lettered = stats.dead_lettered,
            oldest_pending_age = ?stats.oldest_pending_age,
            "tenant stats"
        );
        Ok(stats)
    }
}

impl Inbox {
    fn retention(&self, operation: &'static str) -> Result<&dyn crate::Retention> {
        self.inner
            .backend
            .retention()
            .ok_or_else(|| self.unsupported(operation))
    }

    fn unsupported(&self, operation: &'static str) -> crate::Error {
        let refused = crate::Error::Unsupported {
            operation,
            backend: self.inner.backend.name(),
        };
        crate::telemetry::refused(&refused);
        refused
    }

    /// Lets a subscription of `tenant` through the policies.
    pub(crate) fn admit_subscription(&self, tenant: &TenantId) -> Result<()> {
        self.admit(&Call::new(Operation::Subscribe, tenant))
    }

    /// The usage meter, if metering is on.
    pub(crate) fn meter(&self) -> Option<&crate::metering::Meter> {
        self.inner.meter.as_ref()
    }

    /// Where the tenant's live subscriptions are counted.
    pub(crate) fn slots(&self) -> &Arc<crate::subscription::Slots> {
        &self.inner.subscriptions
    }

    /// Runs every policy on `call`; the first refusal wins.
    fn admit(&self, call: &Call<'_>) -> Result<()> {
        let admitted = self.inner.policies.iter().try_for_each(|p| p.admit(call));
        if let Err(e) = &admitted {
            crate::telemetry::refused(e);
        }
        admitted
    }

    /// Checks the number of ids named, and returns it (0 for all).
    fn check_ids(&self, which: &Redrive) -> Result<usize> {
        match which {
            Redrive::Ids(ids) => self.check_id_count(ids.len()).map(|()| ids.len()),
            Redrive::All => Ok(0),
        }
    }

    /// Refuses more ids or tokens in one call than `Limits::max_ids`.
    fn check_id_count(&self, ids: usize) -> Result<()> {
        Limits::check_count("ids (Limits::max_ids)", ids, self.inner.limits.max_ids)
            .inspect_err(crate::telemetry::refused)
    }
}

impl Inbox {
    /// Checks a batch against the limits; returns its events validated and
    /// their payload bytes.
    fn validate_batch(&self, events: Vec<NewEvent>) -> Result<(Vec<crate::ValidEvent>, usize)> {
        let limits = &self.inner.limits;
        Limits::check_count(
            "batch events (Limits::max_batch_events)",
            events.len(),
            limits.max_batch_events,
        )?;
        let mut valid = Vec::with_capacity(events.len());
        let mut bytes = 0usize;
        for (i, event) in events.into_iter().enumerate() {
            let event = event.validate(limits).map_err(|e| at_index(i, e))?;
            bytes = bytes.saturating_add(event.payload().len());
            Limits::check_count(
                "batch payload bytes (Limits::max_batch_bytes)",
                bytes,
                limits.max_batch_bytes,
            )?;
            valid.push(event);
        }
        Ok((valid, bytes))
    }
}

/// Where [`Inbox::stream_pending`] is: the page it holds and the query of
/// the next one (`None` after the last page or an error).
struct Paging {
    inbox: Inbox,
    tenant: TenantId,
    next: Option<PullQuery>,
    buffered: std::collections::VecDeque<Event>,
}

/// Names the batch item an error is about.
fn at_index(index: usize, err: crate::Error) -> crate::Error {
    match err {
        crate::Error::InvalidInput(msg) => {
            crate::Error::InvalidInput(format!("batch item {index}: {msg}"))
        }
        other => other,
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("backend", &self.inner.backend.name())
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}
