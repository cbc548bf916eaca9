//! The backend: its handle, its builder, and the inbox traits, each a
//! call into the module that does the work.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use zapinbox_core::raw::{
    Acknowledge, ChangeFeed, Changes, Delete, Idempotency, InboxPull, Ingest, Leases, Metering,
    Retention, Stats, ValidEvent,
};
use zapinbox_core::{
    AckOutcome, Backend, Capabilities, ClaimOrder, ClaimQuery, DeleteOutcome, Error, Event,
    EventId, Filter, Ingested, LeaseToken, Leased, Page, PullQuery, Purged, Purging, QueueConfig,
    Redrive, ReleaseOutcome, Result, SharedWrites, TenantId, TenantStats, Timestamp, UsageRecord,
};

use crate::capacity::CapacityLog;
use crate::item::{SEQ, SEQ_ITEM, get_n, key, tenant_pk};
use crate::queue::Queue;
use crate::table::Table;
use crate::{ingest, lease, limits, metering, read};

/// The backend's name, in cursors and errors.
pub(crate) const NAME: &str = "dynamo";

/// How many locks spread this process's ingests (and claims) over
/// tenants: enough that two busy tenants rarely share one.
const TURNS: usize = 1024;

/// The zapinbox backend on one DynamoDB table (see the crate docs).
///
/// Cheap to clone: clones share the client, the settings and the
/// capacity totals.
#[derive(Clone)]
pub struct DynamoBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DynamoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoBackend")
            .field("table", &self.inner.table.name)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DynamoBackend`]: `DynamoBackend::builder(&sdk_config)`.
#[derive(Debug)]
#[must_use]
pub struct DynamoBuilder {
    client: Client,
    table: String,
    config: QueueConfig,
    watch_every: Duration,
}

impl DynamoBuilder {
    /// Uses the table `name` (default `zapinbox`).
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// Applies `config` (clock, retries, retention, quotas).
    pub fn config(mut self, config: QueueConfig) -> Self {
        self.config = config;
        self
    }

    /// How often subscriptions look for events other instances ingested
    /// (default 100 ms): one strongly consistent read of one small item
    /// per watched tenant each time. Events ingested through this handle
    /// wake subscriptions at once.
    pub fn watch_every(mut self, every: Duration) -> Self {
        self.watch_every = every.max(Duration::from_millis(1));
        self
    }

    /// The backend. Makes no call: the table must exist (see
    /// [`DynamoBackend::ensure_table`]).
    pub fn build(self) -> DynamoBackend {
        DynamoBackend {
            inner: Arc::new(Inner {
                table: Table {
                    client: self.client,
                    name: self.table,
                    capacity: CapacityLog::default(),
                },
                config: self.config.applied(),
                feed: ChangeFeed::new(),
                ingest_turns: Turns::new(),
                queue: Queue::default(),
                claim_turns: Turns::new(),
                sequences: Mutex::new(HashMap::new()),
                watch_every: self.watch_every,
                watching: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
        }
    }
}

impl DynamoBackend {
    /// A builder on a client made from `sdk_config`: the host's usual
    /// credentials chain, region, retry and timeout settings (the SDK
    /// retries throttling and server errors with backoff by them).
    pub fn builder(sdk_config: &aws_types::SdkConfig) -> DynamoBuilder {
        Self::builder_with_client(Client::new(sdk_config))
    }

    /// A builder on a client the host made.
    pub fn builder_with_client(client: Client) -> DynamoBuilder {
        DynamoBuilder {
            client,
            table: "zapinbox".to_owned(),
            config: QueueConfig::default(),
            watch_every: Duration::from_millis(100),
        }
    }

    /// Makes the table, its four local secondary indexes and its time to
    /// live if missing, and waits until it is active. For development and
    /// tests; in production make it with your infrastructure tooling (the
    /// crate docs give its shape).
    pub async fn ensure_table(&self) -> Result<()> {
        self.inner.table.ensure().await
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.inner.table.name
    }

    /// Capacity units consumed so far by operation, shared by clones.
    pub fn capacity(&self) -> &CapacityLog {
        &self.inner.table.capacity
    }

    /// A handle on the same table and client with other settings (as
    /// another instance would be).
    pub fn reopen(&self, config: QueueConfig) -> DynamoBackend {
        DynamoBackend::builder_with_client(self.inner.table.client.clone())
            .table(self.inner.table.name.clone())
            .config(config)
            .watch_every(self.inner.watch_every)
            .build()
    }

    /// Refuses every operation once the backend is closed.
    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::permanent("the DynamoDB backend is closed"));
        }
        Ok(())
    }

    /// Runs one inbox operation `op` (refused once the backend is closed),
    /// and counts it for capacity per operation.
    async fn run<'a, T, F>(
        &'a self,
        op: &'static str,
        call: impl FnOnce(&'a Arc<Inner>) -> F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        self.check_open()?;
        let out = call(&self.inner).await;
        self.inner.table.capacity.count(op);
        out
    }
}

/// What every operation shares.
pub(crate) struct Inner {
    pub table: Table,
    pub config: QueueConfig,
    feed: ChangeFeed,
    /// One ingest transaction of a tenant at a time from this process: two
    /// would only cancel each other on the sequence item.
    pub ingest_turns: Turns,
    /// Ingests waiting for their tenant's turn.
    pub queue: Queue,
    /// One claim of a tenant at a time from this process: two would race
    /// for the same earliest events, and all but one write would lose.
    pub claim_turns: Turns,
    /// The last sequence each tenant was seen at: the next ingest expects
    /// it, and reads it again only if another instance moved it.
    sequences: Mutex<HashMap<TenantId, u64>>,
    watch_every: Duration,
    watching: AtomicBool,
    closed: AtomicBool,
}

/// Locks spread over tenants by hash: a tenant's turn for one kind of
/// write in this process.
pub(crate) struct Turns(Vec<Arc<tokio::sync::Mutex<()>>>);

impl Turns {
    fn new() -> Self {
        Turns((0..TURNS).map(|_| Arc::default()).collect())
    }

    fn of(&self, tenant: &TenantId) -> &Arc<tokio::sync::Mutex<()>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        tenant.hash(&mut hasher);
        &self.0[(hasher.finish() % TURNS as u64) as usize]
    }

    /// Waits for `tenant`'s turn.
    pub(crate) async fn take(&self, tenant: &TenantId) -> tokio::sync::MutexGuard<'_, ()> {
        self.of(tenant).lock().await
    }

    /// Waits for `tenant`'s turn, to hand to a task.
    pub(crate) async fn take_owned(&self, tenant: &TenantId) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(self.of(tenant)).lock_owned().await
    }
}

impl Inner {
    fn sequences(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, u64>> {
        self.sequences.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tenant's last sequence: as last seen, or read.
    pub(crate) async fn sequence(&self, tenant: &TenantId) -> Result<u64> {
        if let Some(seq) = self.sequences().get(tenant) {
            return Ok(*seq);
        }
        let seq = self.read_sequence("ingest", tenant).await?;
        self.sequences().insert(tenant.clone(), seq);
        Ok(seq)
    }

    async fn read_sequence(&self, op: &'static str, tenant: &TenantId) -> Result<u64> {
        let item = self
            .table
            .get(op, key(tenant_pk(tenant), SEQ_ITEM.to_owned()))
            .await?;
        sequence_of(item)
    }

    /// The tenant's last position whose transaction has fully committed.
    pub(crate) async fn committed_sequence(
        &self,
        op: &'static str,
        tenant: &TenantId,
    ) -> Result<u64> {
        let item = self
            .table
            .get_whole(op, key(tenant_pk(tenant), SEQ_ITEM.to_owned()))
            .await?;
        sequence_of(item)
    }

    /// Another writer moved the tenant's sequence: read it next time.
    pub(crate) fn forget_sequence(&self, tenant: &TenantId) {
        self.sequences().remove(tenant);
    }

    /// An ingest of `tenant` committed up to `last`.
    pub(crate) fn committed(&self, tenant: &TenantId, last: u64) {
        {
            let mut sequences = self.sequences();
            // Bounded: a process that wrote very many tenants reads some
            // sequences again.
            if sequences.len() >= 100_000 {
                sequences.clear();
            }
            sequences.insert(tenant.clone(), last);
        }
        self.feed.notify(tenant);
    }
}

/// The position a sequence item holds (0 before the first ingest).
fn sequence_of(item: Option<crate::item::Item>) -> Result<u64> {
    Ok(item
        .map(|i| get_n(&i, SEQ))
        .transpose()?
        .flatten()
        .unwrap_or(0))
}

/// Looks for other instances' ingests into watched tenants, while the
/// backend lives and is open.
async fn watch(inner: Weak<Inner>) {
    let mut seen: HashMap<TenantId, u64> = HashMap::new();
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.closed.load(Ordering::Acquire) {
            return;
        }
        let watched = strong.feed.watched();
        seen.retain(|t, _| watched.contains(t));
        for tenant in watched {
            match strong.read_sequence("watch", &tenant).await {
                Ok(seq) => {
                    // First sight too: an ingest may have landed between
                    // the subscriber's last read and this one.
                    if seen.insert(tenant.clone(), seq) != Some(seq) {
                        strong.feed.notify(&tenant);
                    }
                }
                Err(e) => tracing::debug!(%tenant, error = %e, "watching for ingests failed"),
            }
        }
        let every = strong.watch_every;
        drop(strong);
        tokio::time::sleep(every).await;
    }
}

#[async_trait]
impl Ingest for DynamoBackend {
    async fn ingest_batch(
        &self,
        tenant: &TenantId,
        events: Vec<ValidEvent>,
    ) -> Result<Vec<Ingested>> {
        self.run("ingest", |inner| {
            ingest::ingest_batch(inner, tenant, events)
        })
        .await
    }
}

#[async_trait]
impl InboxPull for DynamoBackend {
    async fn pull(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        self.run("pull", |inner| lease::pull(inner, tenant, query))
            .await
    }

    async fn get(&self, tenant: &TenantId, id: EventId) -> Result<Option<Event>> {
        self.run("get", |inner| read::get(inner, tenant, id)).await
    }
}

#[async_trait]
impl Acknowledge for DynamoBackend {
    async fn ack(&self, tenant: &TenantId, id: EventId) -> Result<AckOutcome> {
        self.run("ack", |inner| lease::ack(inner, tenant, id)).await
    }
}

#[async_trait]
impl Delete for DynamoBackend {
    async fn delete(&self, tenant: &TenantId, id: EventId) -> Result<DeleteOutcome> {
        self.run("delete", |inner| lease::delete(inner, tenant, id))
            .await
    }
}

#[async_trait]
impl Idempotency for DynamoBackend {
    async fn find_by_key(&self, tenant: &TenantId, key: &str) -> Result<Option<EventId>> {
        self.run("find_by_key", |inner| read::find_by_key(inner, tenant, key))
            .await
    }
}

#[async_trait]
impl Leases for DynamoBackend {
    async fn claim(&self, tenant: &TenantId, query: ClaimQuery) -> Result<Vec<Leased>> {
        self.run("claim", |inner| lease::claim(inner, tenant, query))
            .await
    }

    async fn claimable_at(&self, tenant: &TenantId, filter: &Filter) -> Result<Option<Timestamp>> {
        self.run("claimable_at", |inner| {
            read::claimable_at(inner, tenant, filter)
        })
        .await
    }

    async fn extend(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        by: Duration,
    ) -> Result<Timestamp> {
        self.run("extend", |inner| lease::extend(inner, tenant, token, by))
            .await
    }

    async fn release(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        retry_after: Option<Duration>,
    ) -> Result<ReleaseOutcome> {
        self.run("release", |inner| {
            lease::release(inner, tenant, token, retry_after)
        })
        .await
    }

    async fn requeue(&self, tenant: &TenantId, token: LeaseToken) -> Result<()> {
        self.run("requeue", |inner| lease::requeue(inner, tenant, token))
            .await
    }

    async fn ack_lease(&self, tenant: &TenantId, token: LeaseToken) -> Result<AckOutcome> {
        self.run("ack_lease", |inner| lease::ack_lease(inner, tenant, token))
            .await
    }

    async fn ack_leases(
        &self,
        tenant: &TenantId,
        tokens: Vec<LeaseToken>,
    ) -> Result<Vec<Result<AckOutcome>>> {
        self.run("ack_leases", |inner| async move {
            Ok(lease::ack_leases(inner, tenant, tokens).await)
        })
        .await
    }

    async fn dead_letters(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        self.run("dead_letters", |inner| {
            lease::dead_letters(inner, tenant, query)
        })
        .await
    }

    async fn redrive(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        self.run("redrive", |inner| lease::redrive(inner, tenant, which))
            .await
    }
}

#[async_trait]
impl Retention for DynamoBackend {
    /// DynamoDB's time to live removes acked events and expired keys (and
    /// reads hide them from the moment they expire): nothing to do here.
    async fn purge_expired(&self, _limit: usize) -> Result<Purged> {
        self.check_open()?;
        Ok(Purged::default())
    }

    async fn purge_dead_letters(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        self.run("purge_dead_letters", |inner| {
            lease::purge_dead_letters(inner, tenant, which)
        })
        .await
    }
}

#[async_trait]
impl Stats for DynamoBackend {
    async fn tenant_stats(&self, tenant: &TenantId) -> Result<TenantStats> {
        self.run("tenant_stats", |inner| read::tenant_stats(inner, tenant))
            .await
    }
}

#[async_trait]
impl Metering for DynamoBackend {
    async fn add_usage(&self, records: Vec<UsageRecord>) -> Result<()> {
        self.run("add_usage", |inner| metering::add_usage(inner, records))
            .await
    }

    async fn usage(
        &self,
        tenant: &TenantId,
        days: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<UsageRecord>> {
        self.run("usage", |inner| metering::usage(inner, tenant, days))
            .await
    }
}

#[async_trait]
impl Backend for DynamoBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::unlimited()
            .with_max_payload_bytes(limits::MAX_PAYLOAD_BYTES)
            .with_max_batch(limits::MAX_BATCH_EVENTS, limits::MAX_BATCH_BYTES)
            .with_claim_order(ClaimOrder::EarliestFirst)
            .with_shared_writes(SharedWrites::Immediate)
            .with_purging(Purging::Automatic)
    }

    fn retention(&self) -> Option<&dyn Retention> {
        Some(self)
    }

    fn stats(&self) -> Option<&dyn Stats> {
        Some(self)
    }

    fn metering(&self) -> Option<&dyn Metering> {
        Some(self)
    }

    fn changes(&self, tenant: &TenantId) -> Option<Changes> {
        let changes = self.inner.feed.watch(tenant);
        if !self.inner.watching.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(watch(Arc::downgrade(&self.inner)))),
                // No runtime to watch on: subscriptions poll instead.
                Err(_) => {
                    self.inner.watching.store(false, Ordering::Release);
                    return None;
                }
            }
        }
        Some(changes)
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        Ok(())
    }
}
