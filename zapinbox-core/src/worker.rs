//! `Worker`: runs a handler over claimed events, the way most users should
//! consume an inbox.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{
    AckOutcome, ClaimQuery, Error, Filter, Inbox, LeaseToken, Leased, ReleaseOutcome, Result,
    TenantId,
};

/// What a handler returns on failure: any error; the event is retried.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a handler over one tenant's events with bounded concurrency.
///
/// Each claimed event goes to the handler under a lease that the worker
/// extends while the handler runs (every third of the lease). `Ok` acks the
/// event; `Err` or a panic releases it to be retried after the retry
/// policy's backoff, and after the last attempt it is dead-lettered. On
/// shutdown the worker stops claiming, gives running handlers a grace
/// period to finish, then releases what is still in flight for immediate
/// retry: no claimed event is ever dropped.
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
///         println!("sending to {}", leased.event.payload["email"]);
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

/// What a worker did, returned when it stops.
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
    /// Still running at the end of the grace period: released for
    /// immediate retry.
    pub released_on_shutdown: u64,
    /// Leases lost while the handler ran (it took longer than the lease and
    /// could not extend it): another worker may have handled them too.
    pub lost: u64,
}

/// How one claimed event ended.
enum Outcome {
    Acked,
    Retried,
    DeadLettered,
    ReleasedOnShutdown,
    Lost,
}

impl WorkerReport {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Acked => self.acked += 1,
            Outcome::Retried => self.retried += 1,
            Outcome::DeadLettered => self.dead_lettered += 1,
            Outcome::ReleasedOnShutdown => self.released_on_shutdown += 1,
            Outcome::Lost => self.lost += 1,
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

    /// How long to wait before claiming again when nothing was claimable.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
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
        crate::check_lease(self.claim.lease)?;
        let handler = Arc::new(handler);
        let (abort, aborted) = watch::channel(false);
        let mut tasks: JoinSet<Outcome> = JoinSet::new();
        let mut report = WorkerReport::default();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failure = None;
        loop {
            let free = self.concurrency.saturating_sub(tasks.len());
            let mut claimed_any = false;
            if free > 0 {
                let query = self.claim.clone().limit(free as u32);
                match self.inbox.claim(&self.tenant, query).await {
                    Ok(batch) => {
                        claimed_any = !batch.is_empty();
                        for leased in batch {
                            report.claimed += 1;
                            tasks.spawn(self.handle(leased, Arc::clone(&handler), aborted.clone()));
                        }
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
            let wait = if claimed_any && tasks.len() < self.concurrency {
                Duration::ZERO
            } else {
                self.poll_interval
            };
            tokio::select! {
                () = &mut shutdown => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => report.count(finished(done)),
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.drain(&mut tasks, &abort, &mut report, failure.is_some())
            .await;
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Lets running handlers finish within the grace period, then releases
    /// the rest.
    async fn drain(
        &self,
        tasks: &mut JoinSet<Outcome>,
        abort: &watch::Sender<bool>,
        report: &mut WorkerReport,
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
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(done) => report.count(finished(done)),
                    None => return,
                },
                () = &mut deadline, if !*abort.borrow() => {
                    let _ = abort.send(true);
                }
            }
        }
    }

    /// Handles one claimed event to its end.
    fn handle<H, F>(
        &self,
        leased: Leased,
        handler: Arc<H>,
        aborted: watch::Receiver<bool>,
    ) -> impl Future<Output = Outcome> + Send + 'static
    where
        H: Fn(Leased) -> F + Send + Sync + 'static,
        F: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        let (inbox, tenant, lease) = (self.inbox.clone(), self.tenant.clone(), self.claim.lease);
        async move {
            let token = leased.token;
            let work = AssertUnwindSafe(handler(leased)).catch_unwind();
            let mut work = std::pin::pin!(work);
            let mut stop = std::pin::pin!(stopped(aborted));
            let mut renew = tokio::time::interval(lease / 3);
            renew.tick().await;
            let mut lost = false;
            let result = loop {
                tokio::select! {
                    result = &mut work => break result,
                    _ = renew.tick(), if !lost => {
                        if let Err(e) = inbox.extend(&tenant, token, lease).await {
                            tracing::warn!(event = %token.event(), error = %e, "could not extend the lease");
                            lost = matches!(e, Error::LeaseLost { .. });
                        }
                    }
                    () = &mut stop => {
                        return release(&inbox, &tenant, token, Some(Duration::ZERO), true).await;
                    }
                }
            };
            match result {
                Ok(Ok(())) => match inbox.ack_lease(&tenant, token).await {
                    Ok(AckOutcome::Acked | AckOutcome::AlreadyAcked) => Outcome::Acked,
                    Err(e) => {
                        tracing::warn!(event = %token.event(), error = %e, "handled, but the ack failed");
                        Outcome::Lost
                    }
                },
                Ok(Err(e)) => {
                    tracing::info!(event = %token.event(), error = %e, "handler failed; retrying later");
                    release(&inbox, &tenant, token, None, false).await
                }
                Err(_) => {
                    tracing::error!(event = %token.event(), "handler panicked; retrying later");
                    release(&inbox, &tenant, token, None, false).await
                }
            }
        }
    }
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
    retry_after: Option<Duration>,
    shutdown: bool,
) -> Outcome {
    match inbox.release(tenant, token, retry_after).await {
        Ok(ReleaseOutcome::DeadLettered) => Outcome::DeadLettered,
        Ok(ReleaseOutcome::Retry { .. }) if shutdown => Outcome::ReleasedOnShutdown,
        Ok(ReleaseOutcome::Retry { .. }) => Outcome::Retried,
        Err(e) => {
            tracing::warn!(event = %token.event(), error = %e, "could not release the lease");
            Outcome::Lost
        }
    }
}

fn finished(done: std::result::Result<Outcome, tokio::task::JoinError>) -> Outcome {
    // Handler panics are caught inside the task; a JoinError means the task
    // itself was cancelled or failed, and its lease will simply run out.
    done.unwrap_or(Outcome::Lost)
}
