//! `SqliteBackend`: opening, closing, and the backend traits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use zapinbox_core::raw::{
    Acknowledge, ChangeFeed, Changes, Delete, EventParts, Idempotency, InboxPull, Ingest, Leases,
    Metering, Retention, Stats, ValidEvent, check_lease,
};
use zapinbox_core::{
    AckOutcome, Backend, Capabilities, ClaimQuery, DeleteOutcome, Error, Event, EventId, Filter,
    Ingested, LeaseToken, Leased, Page, PullQuery, Purged, QueueConfig, Redrive, ReleaseOutcome,
    Result, TenantId, TenantStats, Timestamp, Traffic, UsageRecord, Way,
};

use tokio::sync::watch;

use crate::backup;
use crate::busy;
use crate::connection::{self, ConnectionOptions, ConnectionSettings, Durability, Role};
use crate::error::in_step;
use crate::maintenance::{
    self, CheckpointRecord, MaintenanceLog, MaintenanceOptions, PurgeRecord, SharedLog,
};
use crate::ops;
use crate::ops::pull::Listing;
use crate::pool::{ReadPool, Work};
use crate::rules::{self, SharedRules};
use crate::schema;
use crate::writer::Writer;

const NAME: &str = "sqlite";

/// Most read-then-claim rounds one claim makes (see `Leases::claim`).
const CLAIM_ROUNDS: usize = 4;

const DEFAULT_MAINTENANCE: MaintenanceOptions = MaintenanceOptions {
    interval: Duration::from_secs(1),
    purge_batch: 500,
    wal_limit: 64 * 1024 * 1024,
};

/// A database's sizes and what maintenance last did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DatabaseStats {
    /// Size of the database file.
    pub file_bytes: u64,
    /// Size of the WAL file.
    pub wal_bytes: u64,
    /// Bytes of pages in use.
    pub used_bytes: u64,
    /// Bytes of free pages not yet given back to the file system.
    pub free_bytes: u64,
    /// Transactions committed since open.
    pub commits: u64,
    /// Group commits rolled back and run again, since open: without a
    /// request that failed after writing (a storage failure or a bug), or
    /// with one insert per new event after inserting several together
    /// failed. Conflicts and refusals never cause one.
    pub replays: u64,
    /// The last maintenance purge that removed anything.
    pub last_purge: Option<PurgeRecord>,
    /// The last checkpoint maintenance ran.
    pub last_checkpoint: Option<CheckpointRecord>,
}

/// An inbox in one SQLite file.
///
/// Writes go to one writer thread that commits everything queued in one
/// transaction (group commit); each caller is answered after its own commit.
/// Reads use a small pool of read-only connections. Several processes may
/// open the same file: SQLite serialises their writers, and a write waits up
/// to the busy timeout for another process's transaction.
///
/// Cheap to clone: clones share the writer and the pool. Dropping the last
/// clone stops the writer thread; [`SqliteBackend::close`] also waits for it.
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    path: PathBuf,
    config: QueueConfig,
    writer: Arc<Writer>,
    readers: Arc<ReadPool>,
    maintenance: Option<MaintenanceOptions>,
    log: SharedLog,
    stop_maintenance: watch::Sender<bool>,
    maintenance_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    busy_timeout: Duration,
    purge_batch: usize,
    /// Wakes subscriptions; fed by this backend's ingests and, once
    /// someone subscribes, by a thread watching other processes' commits.
    feed: ChangeFeed,
    /// Whether that thread was started.
    watching: std::sync::Once,
}

/// Configures and opens a [`SqliteBackend`].
#[derive(Clone, Debug)]
pub struct SqliteBuilder {
    path: PathBuf,
    config: QueueConfig,
    durability: Durability,
    busy_timeout: Duration,
    read_connections: usize,
    maintenance_interval: Option<Duration>,
    purge_batch: usize,
    wal_limit: u64,
    shared_rules: SharedRules,
}

impl SqliteBuilder {
    /// What to do when the file's shared rules (retention, idempotency
    /// window, `max_attempts`, stored by the first open) differ from this
    /// builder's: refuse to open (the default), adopt the file's, or
    /// replace them (see [`SharedRules`]).
    pub fn shared_rules(mut self, mode: SharedRules) -> Self {
        self.shared_rules = mode;
        self
    }

    /// How often the maintenance task runs (default every second, at least
    /// every 10 ms), or `None` to run none: then call `purge_expired`
    /// yourself.
    pub fn maintenance_interval(mut self, every: Option<Duration>) -> Self {
        self.maintenance_interval = every.map(|d| d.max(Duration::from_millis(10)));
        self
    }

    /// Rows each purge step removes at most, in maintenance and in
    /// `purge_dead_letters` (default 500): smaller steps delay other writes
    /// less.
    pub fn purge_batch(mut self, rows: usize) -> Self {
        self.purge_batch = rows.max(1);
        self
    }

    /// WAL size above which maintenance checkpoints and truncates it, and
    /// to which SQLite trims it after a checkpoint (default 64 MiB).
    pub fn wal_size_limit(mut self, bytes: u64) -> Self {
        self.wal_limit = bytes;
        self
    }

    /// Sets how hard each commit works to survive a crash (default
    /// [`Durability::Full`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long a write waits for another process's transaction before it
    /// fails with a retryable error (default 5 s; at most 24 days, which
    /// SQLite counts in milliseconds in 32 bits). Opening waits as long
    /// for other processes opening or migrating the file, and a read as
    /// long for a process recovering the file after a crash.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout.min(LONGEST_BUSY_TIMEOUT);
        self
    }

    /// How many read connections to keep (default 4, at least 1).
    pub fn read_connections(mut self, n: usize) -> Self {
        self.read_connections = n.max(1);
        self
    }

    /// Sets the clock, retry policy, retention and idempotency window.
    /// Retention, the window and `max_attempts` are shared by every process
    /// on the file (see [`SqliteBuilder::shared_rules`]).
    pub fn config(mut self, config: QueueConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens (creating if needed) and migrates the database, and starts
    /// the maintenance task.
    pub async fn open(self) -> Result<SqliteBackend> {
        let backend = tokio::task::spawn_blocking(move || self.open_blocking())
            .await
            .map_err(|e| Error::permanent(format!("open task failed: {e}")))??;
        if let Some(options) = backend.inner.maintenance {
            let stop = backend.inner.stop_maintenance.subscribe();
            let task = maintenance::spawn(Arc::downgrade(&backend.inner), options, stop);
            *backend
                .inner
                .maintenance_task
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        Ok(backend)
    }

    fn open_blocking(self) -> Result<SqliteBackend> {
        connection::refuse_in_memory(&self.path)?;
        let options = ConnectionOptions {
            durability: self.durability,
            busy_timeout: self.busy_timeout,
            wal_limit: self.wal_limit,
        };
        // The busy handler does not cover every step of opening: switching
        // a rollback-journal file to WAL answers "database is locked" at
        // once while another process reads it. Each step is retried as a
        // whole until the busy timeout has passed.
        let deadline = Instant::now() + self.busy_timeout;
        let waiters = busy::Waiters::open(&self.path)?;
        let alone = waiters.open_alone(&self.path, deadline)?;
        let (write_conn, config) = until_not_busy(deadline, || {
            // Opening and migrating wait for the write lock in fair turns,
            // as the writer thread does, through a side-file description of
            // their own: a shared lock on `waiters`' would turn the
            // exclusive one `alone` holds into a shared one.
            let left = deadline.saturating_duration_since(Instant::now());
            let _turns = busy::TurnsForNow::begin(left, busy::Waiters::open(&self.path)?);
            let mut conn = connection::open(&self.path, Role::Writer, options)?;
            let mut config = self.config.clone().applied();
            schema::migrate(&mut conn)?;
            rules::settle(&mut conn, &mut config, self.shared_rules)?;
            Ok((conn, config))
        })
        .map_err(in_step("opening the write connection and migrating"))?;
        drop(alone);
        let readers = (0..self.read_connections)
            .map(|_| {
                until_not_busy(deadline, || {
                    connection::open(&self.path, Role::Reader, options)
                })
                .map_err(in_step("opening a read connection"))
            })
            .collect::<Result<Vec<_>>>()?;
        let writer = Writer::spawn(
            write_conn,
            config.clock.clone(),
            Some((self.busy_timeout, waiters)),
        )?;
        tracing::debug!(path = %self.path.display(), durability = ?self.durability, "opened SQLite inbox");
        Ok(SqliteBackend {
            inner: Arc::new(Inner {
                path: self.path,
                config,
                writer,
                readers: ReadPool::new(readers),
                maintenance: self
                    .maintenance_interval
                    .map(|interval| MaintenanceOptions {
                        interval,
                        purge_batch: self.purge_batch,
                        wal_limit: self.wal_limit,
                    }),
                maintenance_task: std::sync::Mutex::new(None),
                log: SharedLog::default(),
                stop_maintenance: watch::channel(false).0,
                busy_timeout: self.busy_timeout,
                purge_batch: self.purge_batch,
                feed: ChangeFeed::new(),
                watching: std::sync::Once::new(),
            }),
        })
    }
}

/// The longest busy timeout SQLite takes: `i32::MAX` milliseconds.
const LONGEST_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// Runs `step` until it succeeds, fails for another reason than a busy
/// database, or `deadline` passes; waits 1 to 10 ms between tries, at
/// random so that racing processes spread out.
fn until_not_busy<T>(deadline: Instant, mut step: impl FnMut() -> Result<T>) -> Result<T> {
    loop {
        match step() {
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                let pause = Duration::from_micros(rand::random_range(1_000..10_000));
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            }
            done => return done,
        }
    }
}

impl SqliteBackend {
    /// Opens the inbox at `path` with default settings, creating the file if
    /// needed.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteBackend> {
        Self::builder(path).open().await
    }

    /// Starts configuring an inbox at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteBuilder {
        SqliteBuilder {
            path: path.as_ref().to_path_buf(),
            config: QueueConfig::default(),
            durability: Durability::default(),
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            maintenance_interval: Some(DEFAULT_MAINTENANCE.interval),
            purge_batch: DEFAULT_MAINTENANCE.purge_batch,
            wal_limit: DEFAULT_MAINTENANCE.wal_limit,
            shared_rules: SharedRules::default(),
        }
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        SqliteBackend { inner }
    }

    pub(crate) fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    pub(crate) fn clock_now(&self) -> Timestamp {
        self.inner.config.clock.now()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.writer.is_closed()
    }

    pub(crate) fn log(&self, change: impl FnOnce(&mut MaintenanceLog)) {
        change(&mut self.inner.log.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The database's sizes and what maintenance last did.
    pub async fn stats(&self) -> Result<DatabaseStats> {
        let (pages, free, page_size) = self
            .inner
            .readers
            .read(Work::Bounded, |conn| {
                let pragma = |name: &str| -> Result<u64> {
                    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                        .map(|v| v.max(0) as u64)
                        .map_err(crate::error::storage)
                };
                Ok((
                    pragma("page_count")?,
                    pragma("freelist_count")?,
                    pragma("page_size")?,
                ))
            })
            .await?;
        let log = *self.inner.log.lock().unwrap_or_else(|p| p.into_inner());
        let stats = DatabaseStats {
            file_bytes: std::fs::metadata(&self.inner.path).map_or(0, |m| m.len()),
            wal_bytes: maintenance::wal_bytes(&self.inner.path),
            free_bytes: free * page_size,
            used_bytes: pages.saturating_sub(free) * page_size,
            commits: self.commits(),
            replays: self.inner.writer.replays(),
            last_purge: log.last_purge,
            last_checkpoint: log.last_checkpoint,
        };
        tracing::debug!(?stats, "SQLite inbox stats");
        Ok(stats)
    }

    /// Copies the WAL into the database file and truncates it now (the
    /// maintenance task does this by itself when the WAL passes its limit).
    /// `busy` in the answer means a reader's snapshot kept it from
    /// finishing; the next checkpoint catches up.
    pub async fn checkpoint(&self) -> Result<CheckpointRecord> {
        let now = self.clock_now();
        let busy = self.inner.busy_timeout;
        let record = self
            .inner
            .writer
            .direct(move |conn, _| maintenance::checkpoint(conn, now, busy))
            .await?;
        self.log(|log| log.last_checkpoint = Some(record));
        Ok(record)
    }

    /// Writes a consistent copy of the database to `path` with SQLite's
    /// online backup API while traffic goes on. The copy holds every event
    /// committed before the backup started, and opens as an inbox with the
    /// same shared rules (open it with [`SharedRules::Adopt`] to take them
    /// without restating them).
    pub async fn backup_to(&self, path: impl AsRef<Path>) -> Result<()> {
        let source = self.inner.path.clone();
        let target = path.as_ref().to_path_buf();
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same(&source, &target) {
            return Err(Error::invalid(
                "a backup cannot overwrite the database it copies",
            ));
        }
        let busy = self.inner.busy_timeout;
        tokio::task::spawn_blocking(move || backup::copy(&source, &target, busy))
            .await
            .map_err(|e| Error::permanent(format!("backup task failed: {e}")))?
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The settings each connection reports, read back from SQLite: the
    /// writer first, then every read connection.
    pub async fn connection_settings(&self) -> Result<Vec<ConnectionSettings>> {
        let writer = self
            .inner
            .writer
            .write(|conn, _| connection::read_settings(conn, Role::Writer))
            .await?;
        let readers = self
            .inner
            .readers
            .read_each(|conn| connection::read_settings(conn, Role::Reader))
            .await?;
        Ok(std::iter::once(writer).chain(readers).collect())
    }

    /// Makes the next write transaction fail as SQLite would on `fault`
    /// (busy for a transient or throttled fault, corrupt for a permanent
    /// one), before it writes anything: for tests of how callers and the
    /// error classification cope.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: zapinbox_core::Fault) {
        self.inner.writer.inject(fault);
    }

    /// Transactions the writer has committed since open. Under concurrent
    /// writes this grows slower than the number of writes: that is group
    /// commit at work.
    pub fn commits(&self) -> u64 {
        self.inner.writer.commits()
    }

    /// Stops maintenance, commits what was queued before this call, stops
    /// the writer thread and waits for it. Later writes and listings (pull,
    /// dead letters) through any clone fail, so subscriptions end.
    pub async fn close(&self) -> Result<()> {
        self.inner.stop_maintenance.send_replace(true);
        let task = self
            .inner
            .maintenance_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            // Finishes the round in progress, if any, then stops.
            let _ = task.await;
        }
        if !self.is_closed() {
            // Leave the planner good statistics for the next open.
            let _ = self
                .inner
                .writer
                .direct(|conn, _| maintenance::optimize(conn))
                .await;
        }
        let closed = self.inner.writer.close().await;
        // Subscriptions waiting for news look again, fail, and end.
        self.inner.feed.notify_all();
        closed
    }
}

impl SqliteBackend {
    async fn list(&self, tenant: &TenantId, query: PullQuery, listing: Listing) -> Result<Page> {
        // Reads could go on after close; like writes, they fail.
        if self.is_closed() {
            return Err(crate::writer::closed());
        }
        let resolved = query.resolve(tenant, NAME)?;
        let owned = tenant.clone();
        let (now, policy) = (self.inner.config.clock.now(), self.inner.config.retry);
        // A dead-letter page sorts the tenant's unsettled events and checks
        // other filters row by row; a pending page reads what it returns.
        let work = match listing {
            Listing::Pending => Work::Bounded,
            Listing::DeadLetters => Work::MayScan,
        };
        self.inner
            .readers
            .read_for(tenant, work, move |conn| {
                let at = (now, &policy);
                ops::pull::list(conn, &owned, listing, &query, resolved, at, NAME)
            })
            .await
    }

    /// Refuses a delivery once the day's outbound quota is used up.
    async fn check_out(&self, tenant: &TenantId) -> Result<()> {
        let quotas = self.inner.config.quotas;
        if !quotas.limits(Way::Out) {
            return Ok(());
        }
        let (owned, now) = (tenant.clone(), self.inner.config.clock.now());
        self.inner
            .readers
            .read_for(tenant, Work::Bounded, move |conn| {
                ops::quota::check_out(conn, &quotas, &owned, now)
            })
            .await
    }

    /// Runs a lease operation on the writer with `now` and the retry policy.
    async fn lease_op<T: Send + 'static>(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        f: impl Fn(
            &mut zapinbox_core::raw::Delivery,
            Timestamp,
            &zapinbox_core::RetryPolicy,
        ) -> Result<T>
        + Send
        + 'static,
    ) -> Result<T> {
        let tenant = tenant.clone();
        let policy = self.inner.config.retry;
        self.inner
            .writer
            .write(move |conn, clock| {
                let now = clock.now();
                ops::lease::with_lease(conn, &tenant, token, (now, &policy), |d| f(d, now, &policy))
            })
            .await
    }
}

#[async_trait]
impl Leases for SqliteBackend {
    /// Candidates are read on a read connection, then claimed by the
    /// writer, which checks each again: a claim that finds nothing never
    /// reaches the writer, and the writer never scans for one.
    async fn claim(&self, tenant: &TenantId, query: ClaimQuery) -> Result<Vec<Leased>> {
        query.check()?;
        let limit = query.limit as usize;
        let (policy, quotas) = (self.inner.config.retry, self.inner.config.quotas);
        self.check_out(tenant).await?;
        let mut claimed = Vec::with_capacity(limit);
        // Another claim may take candidates between the read and the
        // write, and some may turn out to be dead letters: look again a
        // few times while more may be there.
        for _ in 0..CLAIM_ROUNDS {
            let want = (limit - claimed.len()) * 2;
            let now = self.inner.config.clock.now();
            let (reader_tenant, filter) = (tenant.clone(), query.filter.clone());
            let candidates = self
                .inner
                .readers
                .read_for(tenant, Work::MayScan, move |conn| {
                    ops::lease::claim_candidates(conn, now, &reader_tenant, &filter, want)
                })
                .await?;
            if candidates.is_empty() {
                break;
            }
            let last_of_them = candidates.len() < want;
            let round = query.clone().limit((limit - claimed.len()) as u32);
            let tenant = tenant.clone();
            let round = self
                .inner
                .writer
                .write(move |conn, clock| {
                    let now = clock.now();
                    // Checked again in the claim's transaction: no two
                    // claims cross the outbound quota together.
                    ops::quota::check_out(conn, &quotas, &tenant, now)?;
                    let (got, used_up) =
                        ops::lease::claim(conn, now, &tenant, &candidates, &round, &policy)?;
                    let bytes = got.iter().map(|l| l.event.payload.len() as u64).sum();
                    let traffic = Traffic::new(Way::Out, got.len() as u64, bytes);
                    ops::quota::charge(conn, &quotas, &tenant, traffic, now)?;
                    Ok((got, used_up))
                })
                .await;
            let (got, used_up) = match round {
                Ok(round) => round,
                // The quota ran out after an earlier round: what that round
                // claimed is leased, so it is returned.
                Err(Error::QuotaExceeded { .. }) if !claimed.is_empty() => break,
                Err(e) => return Err(e),
            };
            claimed.extend(got);
            if claimed.len() >= limit || last_of_them || !used_up {
                break;
            }
        }
        Ok(claimed)
    }

    async fn claimable_at(&self, tenant: &TenantId, filter: &Filter) -> Result<Option<Timestamp>> {
        let (owned, filter) = (tenant.clone(), filter.clone());
        let (now, policy) = (self.inner.config.clock.now(), self.inner.config.retry);
        self.inner
            .readers
            .read_for(tenant, Work::MayScan, move |conn| {
                ops::lease::claimable_at(conn, &owned, &filter, (now, &policy))
            })
            .await
    }

    async fn extend(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        by: Duration,
    ) -> Result<Timestamp> {
        check_lease(by)?;
        self.lease_op(tenant, token, move |d, now, policy| {
            d.extend(
                token.event(),
                token.nonce(),
                now,
                by,
                policy,
                rand::random(),
            )
        })
        .await
    }

    async fn release(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        retry_after: Option<Duration>,
    ) -> Result<ReleaseOutcome> {
        self.lease_op(tenant, token, move |d, now, policy| {
            d.release(
                token.event(),
                token.nonce(),
                now,
                retry_after,
                policy,
                rand::random(),
            )
        })
        .await
    }

    async fn requeue(&self, tenant: &TenantId, token: LeaseToken) -> Result<()> {
        self.lease_op(tenant, token, move |d, now, _| {
            d.requeue(token.event(), token.nonce(), now)
        })
        .await
    }

    async fn ack_lease(&self, tenant: &TenantId, token: LeaseToken) -> Result<AckOutcome> {
        self.lease_op(tenant, token, move |d, now, _| {
            d.ack_lease(token.event(), token.nonce(), now)
        })
        .await
    }

    async fn ack_leases(
        &self,
        tenant: &TenantId,
        tokens: Vec<LeaseToken>,
    ) -> Result<Vec<Result<AckOutcome>>> {
        let tenant = tenant.clone();
        let policy = self.inner.config.retry;
        self.inner
            .writer
            .write(move |conn, clock| {
                let now = clock.now();
                let mut answers = Vec::with_capacity(tokens.len());
                for &token in &tokens {
                    let answer =
                        ops::lease::with_lease(conn, &tenant, token, (now, &policy), |d| {
                            d.ack_lease(token.event(), token.nonce(), now)
                        });
                    // A storage failure fails the whole request, so the
                    // writer rolls it back and the caller can retry it.
                    if let Err(e @ Error::Backend { .. }) = answer {
                        return Err(e);
                    }
                    answers.push(answer);
                }
                Ok(answers)
            })
            .await
    }

    async fn dead_letters(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        self.list(tenant, query, Listing::DeadLetters).await
    }

    async fn redrive(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        let tenant = tenant.clone();
        let policy = self.inner.config.retry;
        self.inner
            .writer
            .write(move |conn, clock| {
                ops::lease::redrive(conn, (clock.now(), &policy), &tenant, &which)
            })
            .await
    }
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Stores `events` in the next group commit and tells subscribers;
    /// `answer` makes the caller's answer on the writer thread, so what it
    /// drops there is freed where it was allocated. It runs inside the
    /// request: an error from it would roll the batch back and replay the
    /// rest without this request, like any failure after writing.
    async fn store<T: Send + 'static>(
        &self,
        tenant: &TenantId,
        events: Vec<ValidEvent>,
        answer: fn(Vec<Ingested>) -> Result<T>,
    ) -> Result<T> {
        let (window, quotas) = (
            self.inner.config.idempotency_window,
            self.inner.config.quotas,
        );
        // Only strings go to the writer thread.
        let events: Arc<[EventParts]> = events.into_iter().map(ValidEvent::into_parts).collect();
        let owned = tenant.clone();
        let answered = self
            .inner
            .writer
            .append(move |conn, clock| {
                ops::ingest::ingest(conn, clock, &owned, &events, (window, &quotas))
                    .and_then(answer)
            })
            .await?;
        self.inner.feed.notify(tenant);
        Ok(answered)
    }
}

#[async_trait]
impl Ingest for SqliteBackend {
    async fn ingest(&self, tenant: &TenantId, event: ValidEvent) -> Result<Ingested> {
        self.store(tenant, vec![event], |mut ingested| {
            ingested
                .pop()
                .ok_or_else(|| Error::permanent("ingest stored nothing"))
        })
        .await
    }

    async fn ingest_batch(
        &self,
        tenant: &TenantId,
        events: Vec<ValidEvent>,
    ) -> Result<Vec<Ingested>> {
        self.store(tenant, events, Ok).await
    }
}

#[async_trait]
impl InboxPull for SqliteBackend {
    async fn pull(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        let quotas = self.inner.config.quotas;
        self.check_out(tenant).await?;
        let page = self.list(tenant, query, Listing::Pending).await?;
        if quotas.limits(Way::Out) && !page.events.is_empty() {
            // A read has no transaction to count in: the count follows it,
            // checked again in its own transaction, so of two pulls racing
            // for the last of the quota one is refused.
            let bytes = page.events.iter().map(|e| e.payload.len() as u64).sum();
            let traffic = Traffic::new(Way::Out, page.events.len() as u64, bytes);
            let owned = tenant.clone();
            self.inner
                .writer
                .write(move |conn, clock| {
                    let now = clock.now();
                    ops::quota::check_out(conn, &quotas, &owned, now)?;
                    ops::quota::charge(conn, &quotas, &owned, traffic, now)
                })
                .await?;
        }
        Ok(page)
    }

    async fn get(&self, tenant: &TenantId, id: EventId) -> Result<Option<Event>> {
        let owned = tenant.clone();
        let (now, policy) = (self.inner.config.clock.now(), self.inner.config.retry);
        self.inner
            .readers
            .read_for(tenant, Work::Bounded, move |conn| {
                ops::get::get(conn, &owned, id, now, &policy)
            })
            .await
    }
}

#[async_trait]
impl Acknowledge for SqliteBackend {
    async fn ack(&self, tenant: &TenantId, id: EventId) -> Result<AckOutcome> {
        let tenant = tenant.clone();
        let policy = self.inner.config.retry;
        self.inner
            .writer
            .write(move |conn, clock| ops::ack::ack(conn, (clock.now(), &policy), &tenant, id))
            .await
    }
}

#[async_trait]
impl Delete for SqliteBackend {
    async fn delete(&self, tenant: &TenantId, id: EventId) -> Result<DeleteOutcome> {
        let tenant = tenant.clone();
        let policy = self.inner.config.retry;
        self.inner
            .writer
            .write(move |conn, clock| {
                ops::delete::delete(conn, (clock.now(), &policy), &tenant, id)
            })
            .await
    }
}

#[async_trait]
impl Idempotency for SqliteBackend {
    async fn find_by_key(&self, tenant: &TenantId, key: &str) -> Result<Option<EventId>> {
        let (owned, key) = (tenant.clone(), key.to_owned());
        let now = self.inner.config.clock.now();
        self.inner
            .readers
            .read_for(tenant, Work::Bounded, move |conn| {
                ops::keys::find_by_key(conn, now, &owned, &key)
            })
            .await
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    async fn close(&self) -> Result<()> {
        SqliteBackend::close(self).await
    }

    /// No limits of its own (the inbox's `Limits` bound requests), claims
    /// the earliest available first, sees other processes' commits on the
    /// next read, purges on request (its maintenance task asks).
    fn capabilities(&self) -> Capabilities {
        Capabilities::unlimited()
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

    /// This process's ingests wake their tenant's subscriptions at once;
    /// commits through other connections to the file (other processes)
    /// wake every subscription within `changes::POLL` (20 ms), read by a
    /// task started with the first subscription. Outside a Tokio runtime
    /// there is no feed, and subscriptions look again every 100 ms.
    fn changes(&self, tenant: &TenantId) -> Option<Changes> {
        let inner = &self.inner;
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        inner.watching.call_once(|| {
            crate::changes::watch_other_processes(
                &runtime,
                Arc::clone(&inner.writer),
                inner.feed.clone(),
                inner.stop_maintenance.subscribe(),
            );
        });
        Some(inner.feed.watch(tenant))
    }
}

#[async_trait]
impl Retention for SqliteBackend {
    async fn purge_expired(&self, limit: usize) -> Result<Purged> {
        let retention = self.inner.config.retention;
        self.inner
            .writer
            .write(move |conn, clock| {
                ops::purge::purge_expired(conn, clock.now(), retention, limit)
            })
            .await
    }

    async fn purge_dead_letters(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        // All dead letters go in batches, each its own write, so a large
        // backlog does not hold the writer.
        let batch = match which {
            Redrive::All => Some(self.inner.purge_batch),
            Redrive::Ids(_) => None,
        };
        let mut total = 0;
        loop {
            let (tenant, which) = (tenant.clone(), which.clone());
            let policy = self.inner.config.retry;
            let removed = self
                .inner
                .writer
                .write(move |conn, clock| {
                    let at = (clock.now(), &policy);
                    ops::purge::purge_dead_letters(conn, at, &tenant, &which, batch)
                })
                .await?;
            total += removed;
            if batch.is_none_or(|limit| removed < limit as u64) {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl Stats for SqliteBackend {
    async fn tenant_stats(&self, tenant: &TenantId) -> Result<TenantStats> {
        let owned = tenant.clone();
        let (now, policy) = (self.inner.config.clock.now(), self.inner.config.retry);
        self.inner
            .readers
            .read_for(tenant, Work::MayScan, move |conn| {
                ops::stats::tenant_stats(conn, &owned, (now, &policy))
            })
            .await
    }
}

#[async_trait]
impl Metering for SqliteBackend {
    async fn add_usage(&self, records: Vec<UsageRecord>) -> Result<()> {
        self.inner
            .writer
            .write(move |conn, _| ops::usage::add(conn, &records))
            .await
    }

    async fn usage(
        &self,
        tenant: &TenantId,
        days: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<UsageRecord>> {
        let owned = tenant.clone();
        self.inner
            .readers
            .read_for(tenant, Work::MayScan, move |conn| {
                ops::usage::read(conn, &owned, &days)
            })
            .await
    }
}
