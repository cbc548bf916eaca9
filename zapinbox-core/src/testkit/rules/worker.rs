use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::testkit::{
    Harness, exact_retries, fresh_tenant, ingest_numbered, number_of, numbered, open_inbox_with,
    pull_all,
};
use crate::{
    ClaimQuery, EventStatus, Filter, HandlerError, PullQuery, QueueConfig, Worker, WorkerReport,
};

/// Real time a worker rule may take before it counts as hung.
const PATIENCE: Duration = Duration::from_secs(30);

fn config() -> QueueConfig {
    exact_retries(3)
}

/// Completes when `flag` turns true.
async fn until(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// Three workers of four handlers each share one tenant's 200 events:
/// each event is handled and acked exactly once.
pub async fn workers_handle_every_event_once(harness: &dyn Harness) {
    let (inbox, _) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    ingest_numbered(&inbox, &tenant, 0..200).await;
    let handled: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let (done_tx, done) = watch::channel(false);
    let done_tx = Arc::new(done_tx);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let worker = Worker::new(inbox.clone(), tenant.clone())
                .concurrency(4)
                .poll_interval(Duration::from_millis(5));
            let (handled, done_tx) = (Arc::clone(&handled), Arc::clone(&done_tx));
            let handler = move |leased: crate::Leased| {
                let (handled, done_tx) = (Arc::clone(&handled), Arc::clone(&done_tx));
                async move {
                    tokio::task::yield_now().await;
                    let n = number_of(&leased.event).ok_or("no number")?;
                    let mut seen = handled.lock().map_err(|_| "poisoned")?;
                    *seen.entry(n).or_default() += 1;
                    if seen.len() == 200 {
                        done_tx.send_replace(true);
                    }
                    Ok::<(), HandlerError>(())
                }
            };
            tokio::spawn(worker.run(handler, until(done.clone())))
        })
        .collect();
    let mut total = WorkerReport::default();
    for run in runs {
        let report = tokio::time::timeout(PATIENCE, run)
            .await
            .expect("the workers finish")
            .expect("task")
            .expect("run");
        total.claimed += report.claimed;
        total.acked += report.acked;
        assert_eq!((report.retried, report.lost), (0, 0), "{report:?}");
    }
    let handled = std::mem::take(&mut *handled.lock().expect("lock"));
    assert_eq!(handled.len(), 200);
    assert!(
        handled.values().all(|n| *n == 1),
        "every event handled once"
    );
    assert_eq!((total.claimed, total.acked), (200, 200));
    assert!(pull_all(&inbox, &tenant, PullQuery::new()).await.is_empty());
}

/// A handler that fails makes the worker release with backoff; after the
/// last attempt the event is dead-lettered; the other events are acked.
pub async fn worker_retries_then_dead_letters(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    for n in 0..5 {
        inbox.ingest(&tenant, numbered(n)).await.expect("ingest");
    }
    let calls: Arc<Mutex<HashMap<u64, Vec<u32>>>> = Arc::default();
    let (stop_tx, stop) = watch::channel(false);
    let worker = Worker::new(inbox.clone(), tenant.clone())
        .concurrency(2)
        .poll_interval(Duration::from_millis(5));
    let seen = Arc::clone(&calls);
    let run = tokio::spawn(worker.run(
        move |leased| {
            let seen = Arc::clone(&seen);
            async move {
                let n = number_of(&leased.event).ok_or("no number")?;
                seen.lock()
                    .map_err(|_| "poisoned")?
                    .entry(n)
                    .or_default()
                    .push(leased.attempt);
                if n == 3 {
                    return Err::<(), HandlerError>("cannot handle event 3".into());
                }
                Ok(())
            }
        },
        until(stop),
    ));
    // Move time on, without sleeping through backoffs, until event 3 is dead.
    let dead = tokio::time::timeout(PATIENCE, async {
        loop {
            let page = inbox
                .dead_letters(&tenant, PullQuery::new())
                .await
                .expect("list");
            if !page.events.is_empty() {
                return page.events;
            }
            // To the end of event 3's backoff, once the other four are
            // acked and while it waits unleased: never while a claim, ack
            // or release is on its way, so no lease runs out on the driven
            // clock however slow the storage is. The event is read again
            // after `claimable_at`: a claim committed between the two reads
            // would make `at` its lease's end, and it shows as one more
            // attempt.
            let waiting = || async {
                let left = pull_all(&inbox, &tenant, PullQuery::new()).await;
                match left.as_slice() {
                    [only] if !only.is_leased_at(clock.now()) => Some(only.attempts),
                    _ => None,
                }
            };
            if let Some(attempts) = waiting().await
                && let Some(at) = inbox
                    .claimable_at(&tenant, &Filter::default())
                    .await
                    .expect("claimable_at")
                && at > clock.now()
                && waiting().await == Some(attempts)
            {
                clock.set(at);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("event 3 is dead-lettered in time");
    stop_tx.send_replace(true);
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("stops")
        .expect("task")
        .expect("run");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (number_of(&dead[0]), dead[0].status, dead[0].attempts),
        (Some(3), EventStatus::DeadLettered, 3)
    );
    let calls = std::mem::take(&mut *calls.lock().expect("lock"));
    assert_eq!(
        calls.get(&3),
        Some(&vec![1, 2, 3]),
        "three attempts, in order"
    );
    assert!(
        (0..5)
            .filter(|n| *n != 3)
            .all(|n| calls.get(&n) == Some(&vec![1]))
    );
    assert_eq!(
        (report.acked, report.retried, report.dead_lettered),
        (4, 2, 1),
        "{report:?}"
    );
    assert!(pull_all(&inbox, &tenant, PullQuery::new()).await.is_empty());
}

/// On shutdown a handler that finishes within the grace period is acked;
/// one that does not is requeued for immediate retry without counting the
/// attempt; nothing is dropped.
pub async fn worker_shutdown_finishes_or_releases(harness: &dyn Harness) {
    let (inbox, _) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let quick = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let stuck = inbox.ingest(&tenant, numbered(2)).await.expect("ingest").id;
    let (started_tx, mut started) = watch::channel(0u32);
    let (stop_tx, stop) = watch::channel(false);
    let stop_seen = stop.clone();
    let worker = Worker::new(inbox.clone(), tenant.clone())
        .concurrency(2)
        .poll_interval(Duration::from_millis(5))
        .shutdown_grace(Duration::from_millis(300));
    let run = tokio::spawn(worker.run(
        move |leased| {
            let started_tx = started_tx.clone();
            let stop_seen = stop_seen.clone();
            async move {
                started_tx.send_modify(|n| *n += 1);
                // Both wait for shutdown; event 1 then finishes, 2 never does.
                until(stop_seen).await;
                if number_of(&leased.event) == Some(2) {
                    std::future::pending::<()>().await;
                }
                Ok::<(), HandlerError>(())
            }
        },
        until(stop),
    ));
    tokio::time::timeout(PATIENCE, started.wait_for(|n| *n == 2))
        .await
        .expect("both handlers start")
        .expect("watch");
    stop_tx.send_replace(true);
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("stops")
        .expect("task")
        .expect("run");
    assert_eq!(
        (report.acked, report.released_on_shutdown),
        (1, 1),
        "{report:?}"
    );
    let done = inbox.get(&tenant, quick).await.expect("get").expect("kept");
    assert_eq!(done.status, EventStatus::Acked);
    let back = inbox
        .claim(&tenant, ClaimQuery::new())
        .await
        .expect("claim");
    assert_eq!(back.len(), 1, "requeued for immediate retry");
    assert_eq!(
        (back[0].event.id, back[0].attempt),
        (stuck, 1),
        "the attempt did not count"
    );
}

/// A handler that runs longer than its lease keeps the event: the worker
/// renews the lease on the inbox clock, so no other claim gets it.
pub async fn worker_renews_the_lease_while_the_handler_runs(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let id = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let (started_tx, mut started) = watch::channel(false);
    let (finish_tx, finish) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let worker = Worker::new(inbox.clone(), tenant.clone())
        .lease(Duration::from_secs(30))
        .poll_interval(Duration::from_millis(5));
    let run = tokio::spawn(worker.run(
        move |_| {
            let (started_tx, finish) = (started_tx.clone(), finish.clone());
            async move {
                started_tx.send_replace(true);
                until(finish).await;
                Ok::<(), HandlerError>(())
            }
        },
        until(stop),
    ));
    tokio::time::timeout(PATIENCE, started.wait_for(|s| *s))
        .await
        .expect("the handler starts")
        .expect("watch");
    // Four leases' worth of inbox time passes while the handler runs, five
    // seconds at a time; before each step the worker has renewed the lease
    // far enough (it renews once a third has passed, on the inbox clock).
    let step = Duration::from_secs(5);
    for _ in 0..24 {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let event = inbox.get(&tenant, id).await.expect("get").expect("kept");
                if event
                    .leased_until
                    .is_some_and(|until| until > clock.now().saturating_add(step))
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the worker renews the lease in time");
        clock.advance(step);
    }
    let event = inbox.get(&tenant, id).await.expect("get").expect("kept");
    assert!(event.is_leased_at(clock.now()), "still leased: {event:?}");
    assert!(
        inbox
            .claim(&tenant, ClaimQuery::new())
            .await
            .expect("claim")
            .is_empty()
    );
    finish_tx.send_replace(true);
    tokio::time::timeout(PATIENCE, async {
        while inbox.get(&tenant, id).await.expect("get").map(|e| e.status)
            != Some(EventStatus::Acked)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("acked");
    stop_tx.send_replace(true);
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("stops")
        .expect("task")
        .expect("run");
    assert_eq!(
        (report.acked, report.lost, report.claimed),
        (1, 0, 1),
        "{report:?}"
    );
}

/// An idle worker spends none of its tenant's rate limit (it polls
/// `claimable_at`, not `claim`), so other callers keep their whole budget;
/// a claim refused by the limit makes the worker wait the `retry_after` it
/// was given instead of trying again at every poll.
pub async fn idle_worker_spares_the_rate_limit_and_backs_off(harness: &dyn Harness) {
    let (open, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let inbox = crate::Inbox::builder(open.backend().clone())
        .rate_limit(crate::RateLimit::per_minute(2))
        .build();
    let (stop, stopped) = watch::channel(false);
    let worker = Worker::new(inbox.clone(), tenant.clone()).poll_interval(Duration::from_millis(2));
    let run = tokio::spawn(worker.run(
        |_| async { Ok::<(), HandlerError>(()) },
        until(stopped.clone()),
    ));
    // About a hundred idle polls, then the whole budget is still there.
    tokio::time::sleep(Duration::from_millis(250)).await;
    for _ in 0..2 {
        inbox
            .pull(&tenant, PullQuery::new())
            .await
            .expect("the idle worker left the whole budget");
    }
    // Work arrives past the limit (the unlimited inbox): the worker's
    // claim is refused once, then it waits about 30 s (the clock stands
    // still), far past the end of this test.
    for n in 0..2 {
        open.ingest(&tenant, numbered(n)).await.expect("ingest");
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    stop.send_replace(true);
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("the worker stops")
        .expect("task")
        .expect("worker");
    assert_eq!(
        (report.claimed, report.rate_limited),
        (0, 1),
        "one refused claim, then a wait: {report:?}"
    );
    clock.advance(Duration::from_secs(60));
    let (stop, stopped) = watch::channel(false);
    let worker = Worker::new(inbox.clone(), tenant.clone()).poll_interval(Duration::from_millis(2));
    let run = tokio::spawn(worker.run(|_| async { Ok::<(), HandlerError>(()) }, until(stopped)));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !open
        .pull(&tenant, PullQuery::new())
        .await
        .expect("pull")
        .events
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker catches up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send_replace(true);
    let report = run.await.expect("task").expect("worker");
    assert_eq!(report.acked, 2, "{report:?}");
}

/// A spawned worker shows its counters while it runs (claimed, in flight,
/// acked), and `shutdown` returns the same totals.
pub async fn worker_handle_shows_live_counters(harness: &dyn Harness) {
    let (inbox, _) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    for n in 0..3 {
        inbox.ingest(&tenant, numbered(n)).await.expect("ingest");
    }
    let (release_tx, release) = watch::channel(false);
    let worker = Worker::new(inbox.clone(), tenant.clone())
        .concurrency(3)
        .poll_interval(Duration::from_millis(5))
        .spawn(move |_| {
            let release = release.clone();
            async move {
                until(release).await;
                Ok::<(), HandlerError>(())
            }
        });
    let running = eventually(&worker, "all three claimed", |r| r.claimed == 3).await;
    assert_eq!((running.in_flight(), running.acked), (3, 0), "{running:?}");
    release_tx.send_replace(true);
    let done = eventually(&worker, "all three acked", |r| r.acked == 3).await;
    assert_eq!(done.in_flight(), 0);
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(
        (report.claimed, report.acked, report.in_flight()),
        (3, 3, 0)
    );
}

/// The worker's counters once `done` holds of them (within [`PATIENCE`]).
async fn eventually(
    worker: &crate::WorkerHandle,
    what: &str,
    done: impl Fn(&WorkerReport) -> bool,
) -> WorkerReport {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = worker.counters();
        if done(&now) {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {now:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
