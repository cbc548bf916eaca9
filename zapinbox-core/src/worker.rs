//! `Worker`: runs a handler over claimed events, the way most users should
//! consume an inbox.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{
    AckOutcome, ClaimQuery, Error, Filter, Inbox, LeaseToken, Leased, ReleaseOutcome, Result,
    TenantId, Timestamp,
};

/// What a handler returns on failure: any error; the event is retried.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a handler over one tenant's events with bounded concurrency.
///
/// The worker claims events ahead of its handlers, so the next ones are
/// leased and ready when a handler returns: at least `concurrency`, and as
/// many as its handlers get through in a third of a lease (at most 1 000),
/// from their average time so far, claimed in batches of at least half
/// that (a claim is a write). A lease that has run a third of its
/// length is renewed before its handler starts. On shutdown the events
/// claimed ahead are requeued at once; if the process dies their leases
/// run out like the running ones'.
///
/// While nothing is claimable the worker polls
/// [`Inbox::claimable_at`], which the rate limit does not count, and claims
/// only when an event is there; a claim refused by the rate limit waits the
/// `retry_after` it was given.
///
/// Each claimed event goes to the handler under a lease that the worker
/// renews while the handler runs (once a third of it has passed, on the
/// inbox clock). `Ok` acks the event (the acks of handlers that finish
/// together are written in one request, and a handler's slot is free as
/// soon as it returns); `Err` or a panic releases it to be
/// retried after the retry policy's backoff, and after the last attempt it
/// is dead-lettered. A transient failure of the ack or release itself is
/// retried while the lease lasts. On shutdown the worker stops claiming,
/// gives running handlers a grace period to finish, then requeues what is
/// still in flight for immediate retry without counting that attempt: no
/// claimed event is ever dropped.
///
/// Dropping the future of [`Worker::run`] instead of completing its
/// `shutdown` abandons the in-flight events: their leases run out and they
/// are retried, with that attempt counted.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> zapinbox_core::Result<()> {
/// use std::time::Duration;
/// use serde_json::json;
/// use zapinbox_core::{Inbox, MemoryBackend, NewEvent, TenantId, Worker};
///
/// let inbox = Inbox::new(MemoryBackend::new());
/// let tenant = TenantId::new("acme")?;
/// inbox.ingest(&tenant, NewEvent::new(json!({ "email": "a@example.com" }))).await?;
///
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let worker = Worker::new(inbox.clone(), tenant).concurrency(8);
/// let run = tokio::spawn(worker.run(
///     |leased| async move {
///         let mail: serde_json::Value = leased.event.payload()?;
///         println!("sending to {}", mail["email"]);
///         Ok(())
///     },
///     async { let _ = stopped.await; },
/// ));
/// # tokio::time::sleep(Duration::from_millis(50)).await;
/// stop.send(()).ok();
/// let report = run.await.expect("worker task")?;
/// assert_eq!(report.acked, 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Worker {
    inbox: Inbox,
    tenant: TenantId,
    claim: ClaimQuery,
    concurrency: usize,
    poll_interval: Duration,
    shutdown_grace: Duration,
}

/// What a worker did: read while it runs from a [`WorkerHandle`], and
/// returned when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Events claimed.
    pub claimed: u64,
    /// Handled and acked.
    pub acked: u64,
    /// Failed and released for another attempt.
    pub retried: u64,
    /// Failed their last attempt and were dead-lettered.
    pub dead_lettered: u64,
    /// Still running at the end of the grace period: requeued for
    /// immediate retry, the attempt not counted.
    pub released_on_shutdown: u64,
    /// Leases lost while the handler ran (it took longer than the lease and
    /// could not extend it): another worker may have handled them too.
    pub lost: u64,
    /// Claims refused by the tenant's rate limit; after each the worker
    /// waited the `retry_after` it was given.
    pub rate_limited: u64,
}

impl WorkerReport {
    /// Claimed and not yet settled: running, claimed ahead, or handled and
    /// waiting for their ack. 0 once a stopped worker has settled every
    /// event (a batch of acks whose task failed leaves its events counted
    /// here: their leases run out and they come back).
    pub fn in_flight(&self) -> u64 {
        let settled =
            self.acked + self.retried + self.dead_lettered + self.released_on_shutdown + self.lost;
        self.claimed.saturating_sub(settled)
    }
}

/// A worker started with [`Worker::spawn`]: read its counters while it
/// runs, and shut it down. Dropping the handle also asks the worker to
/// stop (as [`WorkerHandle::shutdown`] does), without waiting for it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> zapinbox_core::Result<()> {
/// use serde_json::json;
/// use zapinbox_core::{Inbox, MemoryBackend, NewEvent, TenantId, Worker};
///
/// let inbox = Inbox::new(MemoryBackend::new());
/// let tenant = TenantId::new("acme")?;
/// inbox.ingest(&tenant, NewEvent::new(json!({ "n": 1 }))).await?;
/// let worker = Worker::new(inbox, tenant).spawn(|_leased| async { Ok(()) });
/// while worker.counters().acked < 1 {
///     tokio::task::yield_now().await;
/// }
/// let report = worker.shutdown().await?;
/// assert_eq!((report.acked, report.in_flight()), (1, 0));
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "dropping the handle stops the worker"]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    counters: watch::Receiver<WorkerReport>,
    task: tokio::task::JoinHandle<Result<WorkerReport>>,
}

impl WorkerHandle {
    /// What the worker has done so far.
    pub fn counters(&self) -> WorkerReport {
        *self.counters.borrow()
    }

    /// Asks the worker to stop (see [`Worker::run`] for what stopping
    /// does) and waits for its report.
    pub async fn shutdown(self) -> Result<WorkerReport> {
        self.stop.send_replace(true);
        self.task
            .await
            .map_err(|e| Error::permanent(format!("the worker task failed: {e}")))?
    }
}

/// Where a running worker shows its counters, if anyone looks.
struct Live(Option<watch::Sender<WorkerReport>>);

impl Live {
    fn show(&self, report: &WorkerReport) {
        if let Some(live) = &self.0 {
            live.send_replace(*report);
        }
    }
}

/// How long handlers take, on average: it sets how many events a worker
/// claims ahead of them.
#[derive(Default)]
struct Pace {
    /// Moving average of handler durations, in nanoseconds; 0 until the
    /// first handler returns.
    nanos: std::sync::atomic::AtomicU64,
}

impl Pace {
    fn record(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let old = self.nanos.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.nanos.store(new.max(1), Relaxed);
    }

    /// How many events to hold claimed ahead of `concurrency` handlers:
    /// as many as they get through in a third of a `lease`, so none waits
    /// long enough to need renewing, and at least `concurrency`.
    fn ahead(&self, concurrency: usize, lease: Duration) -> usize {
        let nanos = self.nanos.load(std::sync::atomic::Ordering::Relaxed);
        if nanos == 0 {
            return concurrency;
        }
        let per_handler = (lease / 3).as_nanos() / u128::from(nanos);
        let ahead = per_handler.saturating_mul(concurrency as u128);
        usize::try_from(ahead)
            .unwrap_or(usize::MAX)
            .clamp(concurrency, crate::MAX_CLAIM as usize)
    }
}

/// What one poll for work found.
enum Found {
    /// These events, now leased to this worker (maybe none).
    Claimed(Vec<Leased>),
    /// Nothing claimable yet.
    Nothing {
        /// When to look again.
        look_again_in: Duration,
    },
}

/// How one claimed event ended.
enum Outcome {
    /// The handler succeeded: the event waits to be acked with others.
    Handled(LeaseToken),
    Acked,
    Retried,
    DeadLettered,
    ReleasedOnShutdown,
    Lost,
}

impl WorkerReport {
    /// Counts how an event ended, or hands a handled one to `acks`.
    fn settle(&mut self, outcome: Outcome, acks: &mut Acks) {
        match outcome {
            Outcome::Handled(token) => acks.waiting.push(token),
            Outcome::Acked => self.acked += 1,
            Outcome::Retried => self.retried += 1,
            Outcome::DeadLettered => self.dead_lettered += 1,
            Outcome::ReleasedOnShutdown => self.released_on_shutdown += 1,
            Outcome::Lost => self.lost += 1,
        }
    }
}

/// Most acks written in one request.
const ACK_BATCH: usize = 256;

/// The acks of handled events, written together: while one batch is being
/// written, the next gathers, so a busy worker acks many events a write
/// and a handler's slot is free as soon as it returns.
struct Acks {
    inbox: Inbox,
    tenant: TenantId,
    waiting: Vec<LeaseToken>,
    writing: JoinSet<Vec<Outcome>>,
}

impl Acks {
    fn new(inbox: Inbox, tenant: TenantId) -> Self {
        Acks {
            inbox,
            tenant,
            waiting: Vec::new(),
            writing: JoinSet::new(),
        }
    }

    /// Starts writing what waits, unless a batch is being written and too
    /// few wait to start another.
    fn flush(&mut self) {
        // Within the inbox's limit on ids in one call.
        let batch = ACK_BATCH.min(self.inbox.limits().max_ids.max(1));
        if self.waiting.is_empty() || (!self.writing.is_empty() && self.waiting.len() < batch) {
            return;
        }
        let take = self.waiting.len().min(batch);
        let tokens: Vec<LeaseToken> = self.waiting.drain(..take).collect();
        let (inbox, tenant) = (self.inbox.clone(), self.tenant.clone());
        self.writing
            .spawn(async move { ack_all(&inbox, &tenant, tokens).await });
    }

    /// Counts the answers of one written batch.
    fn settle(
        &mut self,
        done: std::result::Result<Vec<Outcome>, tokio::task::JoinError>,
        report: &mut WorkerReport,
    ) {
        // A batch task that failed cannot say what it wrote: its leases
        // run out, and the events come back.
        for outcome in done.unwrap_or_default() {
            report.settle(outcome, self);
        }
    }

    /// Writes everything still waiting and counts every answer.
    async fn finish(&mut self, report: &mut WorkerReport) {
        loop {
            self.flush();
            match self.writing.join_next().await {
                Some(done) => self.settle(done, report),
                None if self.waiting.is_empty() => return,
                None => {}
            }
        }
    }
}

/// Acks `tokens` in one request, trying again on a transient failure (at
/// most 20 times); each answer becomes an outcome.
async fn ack_all(inbox: &Inbox, tenant: &TenantId, tokens: Vec<LeaseToken>) -> Vec<Outcome> {
    let mut tries = 0;
    loop {
        match inbox.ack_leases(tenant, tokens.clone()).await {
            Ok(answers) => {
                return answers
                    .into_iter()
                    .zip(&tokens)
                    .map(|(answer, &token)| match answer {
                        Ok(AckOutcome::Acked | AckOutcome::AlreadyAcked) => Outcome::Acked,
                        Err(e) => lost_because(token, "handled, but the ack failed", &e),
                    })
                    .collect();
            }
            Err(e) if e.is_retryable() && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10 * tries)).await;
            }
            Err(e) => {
                return tokens
                    .iter()
                    .map(|&token| lost_because(token, "handled, but the ack failed", &e))
                    .collect();
            }
        }
    }
}

impl Worker {
    /// A worker for `tenant`'s events: 4 at a time, 30 s leases, polling
    /// every 200 ms when idle, 30 s of grace on shutdown.
    pub fn new(inbox: Inbox, tenant: TenantId) -> Self {
        Worker {
            inbox,
            tenant,
            claim: ClaimQuery::new(),
            concurrency: 4,
            poll_interval: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(30),
        }
    }

    /// Runs up to `n` handlers at once (at least 1, at most 1000).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.clamp(1, crate::MAX_CLAIM as usize);
        self
    }

    /// Sets the lease each claim takes and each extension renews.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.claim.lease = lease;
        self
    }

    /// Only handles events that pass `filter`.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.claim.filter = filter;
        self
    }

    /// How often an idle worker asks [`Inbox::claimable_at`] whether there
    /// is work (default 200 ms, at least 1 ms). It sleeps less when a
    /// retried event's backoff ends sooner.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long running handlers may go on after shutdown is asked for.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Claims and handles events until `shutdown` completes, then finishes
    /// or releases what is in flight and reports. Returns an error only if
    /// the inbox fails permanently (for example, it was closed); in-flight
    /// events are released first.
    pub async fn run<H, F>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport>
    where
        H: Fn(Leased) -> F + Send + Sync + 'static,
        F: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        self.run_showing(handler, shutdown, Live(None)).await
    }

    /// Runs the worker on a task of its own until [`WorkerHandle::shutdown`]
    /// (or the handle is dropped); its counters can be read meanwhile.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    pub fn spawn<H, F>(self, handler: H) -> WorkerHandle
    where
        H: Fn(Leased) -> F + Send + Sync + 'static,
        F: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        let (stop, mut stopped) = watch::channel(false);
        let (live, counters) = watch::channel(WorkerReport::default());
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let task = tokio::spawn(self.run_showing(handler, shutdown, Live(Some(live))));
        WorkerHandle {
            stop,
            counters,
            task,
        }
    }

    async fn run_showing<H, F>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
        live: Live,
    ) -> Result<WorkerReport>
    where
        H: Fn(Leased) -> F + Send + Sync + 'static,
        F: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        crate::check_lease(self.claim.lease)?;
        let handler = Arc::new(handler);
        let (abort, aborted) = watch::channel(false);
        let mut tasks: JoinSet<Outcome> = JoinSet::new();
        let mut report = WorkerReport::default();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failure = None;
        // Idle: nothing known to be claimable, so ask (a free read) before
        // claiming (a rate-limited write).
        let mut idle = true;
        // After a claim refused by the rate limit: no claim before this.
        let mut not_before = tokio::time::Instant::now();
        let mut acks = Acks::new(self.inbox.clone(), self.tenant.clone());
        // Claimed ahead, waiting for a free handler: at most `concurrency`,
        // so the next events are there the moment a handler returns.
        let mut ahead: VecDeque<Leased> = VecDeque::new();
        let pace = Arc::new(Pace::default());
        loop {
            while tasks.len() < self.concurrency {
                let Some(leased) = ahead.pop_front() else {
                    break;
                };
                tasks.spawn(self.handle(
                    leased,
                    Arc::clone(&handler),
                    aborted.clone(),
                    Arc::clone(&pace),
                ));
            }
            let window = self.concurrency + pace.ahead(self.concurrency, self.claim.lease);
            let room = window
                .saturating_sub(tasks.len() + ahead.len())
                .min(crate::MAX_CLAIM as usize);
            let mut wait = self.poll_interval;
            let now = tokio::time::Instant::now();
            // Claim in batches: wait until half the window is free (a claim
            // of a few events each time some finish costs a write each).
            if now < not_before {
                wait = not_before - now;
            } else if room > 0
                && (tasks.is_empty() || room * 2 >= window.min(crate::MAX_CLAIM as usize))
            {
                match self.poll(idle, room).await {
                    Ok(Found::Claimed(batch)) => {
                        idle = batch.is_empty();
                        if !idle {
                            wait = Duration::ZERO;
                        }
                        report.claimed += batch.len() as u64;
                        ahead.extend(batch);
                    }
                    Ok(Found::Nothing { look_again_in }) => wait = look_again_in,
                    Err(Error::RateLimited { retry_after }) => {
                        report.rate_limited += 1;
                        tracing::debug!(?retry_after, "claim rate limited; backing off");
                        not_before = tokio::time::Instant::now() + retry_after;
                        wait = retry_after;
                    }
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, "claim failed; trying again");
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            acks.flush();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    report.settle(finished(done), &mut acks);
                }
                Some(done) = acks.writing.join_next(), if !acks.writing.is_empty() => {
                    acks.settle(done, &mut report);
                }
                () = tokio::time::sleep(wait) => {}
            }
            live.show(&report);
        }
        // Never started: back at once, the attempt not counted.
        for leased in ahead {
            let token = leased.token;
            let requeued = retrying(&self.inbox, leased.expires_at, || {
                self.inbox.requeue(&self.tenant, token)
            })
            .await;
            report.settle(
                match requeued {
                    Ok(()) => Outcome::ReleasedOnShutdown,
                    Err(e) => lost_because(token, "could not requeue on shutdown", &e),
                },
                &mut acks,
            );
        }
        live.show(&report);
        self.drain(
            &mut tasks,
            &abort,
            (&mut report, &live),
            &mut acks,
            failure.is_some(),
        )
        .await;
        acks.finish(&mut report).await;
        live.show(&report);
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Claims up to `free` events; while idle, only once the inbox says one
    /// is claimable, so an idle worker spends none of its tenant's rate
    /// limit and sleeps until a retried event's backoff ends.
    async fn poll(&self, idle: bool, free: usize) -> Result<Found> {
        if idle {
            let next = self
                .inbox
                .claimable_at(&self.tenant, &self.claim.filter)
                .await?;
            let now = self.inbox.clock().now();
            let look_again_in = match next {
                None => self.poll_interval,
                Some(at) if at > now => at.saturating_duration_since(now).min(self.poll_interval),
                Some(_) => Duration::ZERO,
            };
            if !look_again_in.is_zero() {
                return Ok(Found::Nothing { look_again_in });
            }
        }
        let query = self.claim.clone().limit(free as u32);
        self.inbox
            .claim(&self.tenant, query)
            .await
            .map(Found::Claimed)
    }

    /// Lets running handlers finish within the grace period, then releases
    /// the rest.
    async fn drain(
        &self,
        tasks: &mut JoinSet<Outcome>,
        abort: &watch::Sender<bool>,
        (report, live): (&mut WorkerReport, &Live),
        acks: &mut Acks,
        now: bool,
    ) {
        let grace = if now {
            Duration::ZERO
        } else {
            self.shutdown_grace
        };
        let deadline = tokio::time::sleep(grace);
        let mut deadline = std::pin::pin!(deadline);
        loop {
            // Handled events are acked meanwhile: their leases are no
            // longer renewed.
            acks.flush();
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(done) => report.settle(finished(done), acks),
                    None => return,
                },
                Some(done) = acks.writing.join_next(), if !acks.writing.is_empty() => {
                    acks.settle(done, report);
                }
                () = &mut deadline, if !*abort.borrow() => {
                    let _ = abort.send(true);
                }
            }
            live.show(report);
        }
    }

    /// Handles one claimed event to its end.
    fn handle<H, F>(
        &self,
        leased: Leased,
        handler: Arc<H>,
        aborted: watch::Receiver<bool>,
        pace: Arc<Pace>,
    ) -> impl Future<Output = Outcome> + Send + 'static
    where
        H: Fn(Leased) -> F + Send + Sync + 'static,
        F: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        let (inbox, tenant, lease) = (self.inbox.clone(), self.tenant.clone(), self.claim.lease);
        async move {
            let token = leased.token;
            let mut lease_ends = leased.expires_at;
            // Claimed ahead and kept waiting: renew before starting, and
            // never start work whose lease is already lost.
            if inbox.clock().now() >= lease_ends.saturating_sub(lease * 2 / 3) {
                match inbox.extend(&tenant, token, lease).await {
                    Ok(ends) => lease_ends = ends,
                    Err(e @ Error::LeaseLost { .. }) => {
                        return lost_because(
                            token,
                            "the lease ran out before the handler started",
                            &e,
                        );
                    }
                    Err(e) => {
                        tracing::warn!(event = %token.event(), error = %e, "could not extend the lease")
                    }
                }
            }
            // The whole call inside catch_unwind: a handler may panic before
            // its future is first polled.
            let started = std::time::Instant::now();
            let work = AssertUnwindSafe(async move { handler(leased).await }).catch_unwind();
            let mut work = std::pin::pin!(work);
            let mut stop = std::pin::pin!(stopped(aborted));
            let mut renew = tokio::time::interval(renew_tick(lease));
            let mut lost = false;
            let result = loop {
                tokio::select! {
                    biased;
                    result = &mut work => break result,
                    () = &mut stop => {
                        let requeued = retrying(&inbox, lease_ends, || inbox.requeue(&tenant, token)).await;
                        return match requeued {
                            Ok(()) => Outcome::ReleasedOnShutdown,
                            Err(e) => lost_because(token, "could not requeue on shutdown", &e),
                        };
                    }
                    _ = renew.tick(), if !lost => {
                        // Renew once a third of the lease has passed.
                        if inbox.clock().now() < lease_ends.saturating_sub(lease * 2 / 3) {
                            continue;
                        }
                        match inbox.extend(&tenant, token, lease).await {
                            Ok(ends) => lease_ends = ends,
                            Err(e @ Error::LeaseLost { .. }) => {
                                lost = true;
                                tracing::warn!(event = %token.event(), error = %e, "lease lost while the handler ran");
                            }
                            // Transient: the next tick tries again.
                            Err(e) => tracing::warn!(event = %token.event(), error = %e, "could not extend the lease"),
                        }
                    }
                }
            };
            pace.record(started.elapsed());
            match result {
                // Acked with others by the worker (see `Acks`).
                Ok(Ok(())) => Outcome::Handled(token),
                Ok(Err(e)) => {
                    tracing::info!(event = %token.event(), error = %e, "handler failed; retrying later");
                    release(&inbox, &tenant, token, lease_ends).await
                }
                Err(_) => {
                    tracing::error!(event = %token.event(), "handler panicked; retrying later");
                    release(&inbox, &tenant, token, lease_ends).await
                }
            }
        }
    }
}

/// How often a running handler's lease is looked at: often enough to
/// notice a third of it passing, and to follow a clock that jumps.
fn renew_tick(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(1), Duration::from_millis(250))
}

/// Runs `op`, trying again on retryable errors while the lease lasts (on
/// the inbox clock) and at most 20 times.
async fn retrying<T, Fut>(inbox: &Inbox, lease_ends: Timestamp, op: impl Fn() -> Fut) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(e) if e.is_retryable() && tries < 20 && inbox.clock().now() < lease_ends => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10 * tries)).await;
            }
            done => return done,
        }
    }
}

fn lost_because(token: LeaseToken, what: &str, e: &Error) -> Outcome {
    tracing::warn!(event = %token.event(), error = %e, "{what}");
    Outcome::Lost
}

/// Completes when the worker asks in-flight handlers to stop.
async fn stopped(mut aborted: watch::Receiver<bool>) {
    // An error means the worker is gone: stop as well.
    let _ = aborted.wait_for(|stop| *stop).await;
}

async fn release(
    inbox: &Inbox,
    tenant: &TenantId,
    token: LeaseToken,
    lease_ends: Timestamp,
) -> Outcome {
    match retrying(inbox, lease_ends, || inbox.release(tenant, token, None)).await {
        Ok(ReleaseOutcome::DeadLettered) => Outcome::DeadLettered,
        Ok(ReleaseOutcome::Retry { .. }) => Outcome::Retried,
        Err(e) => lost_because(token, "could not release the lease", &e),
    }
}

fn finished(done: std::result::Result<Outcome, tokio::task::JoinError>) -> Outcome {
    // Handler panics are caught inside the task; a JoinError means the task
    // itself was cancelled or failed, and its lease will simply run out.
    done.unwrap_or(Outcome::Lost)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{MemoryBackend, NewEvent};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_largest_concurrency_claims_within_the_claim_limit() {
        let inbox = Inbox::new(MemoryBackend::new());
        let tenant = TenantId::new("busy").expect("tenant");
        let events = (0..20).map(|n| NewEvent::new(json!({ "n": n }))).collect();
        inbox.ingest_batch(&tenant, events).await.expect("ingest");
        let (stop, stopped) = watch::channel(false);
        let worker = Worker::new(inbox.clone(), tenant.clone())
            .concurrency(crate::MAX_CLAIM as usize)
            .poll_interval(Duration::from_millis(1));
        let run = tokio::spawn(
            worker.run(|_| async { Ok::<(), HandlerError>(()) }, async move {
                let mut stopped = stopped;
                let _ = stopped.wait_for(|s| *s).await;
            }),
        );
        while inbox.tenant_stats(&tenant).await.expect("stats").pending > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.send_replace(true);
        let report = run.await.expect("task").expect("the worker runs");
        assert_eq!(report.acked, 20, "{report:?}");
    }
}
