//! A worker process is killed with SIGKILL while its handlers run: once its
//! leases run out, another worker gets those events, and every event is
//! handled in the end.

mod harness;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use zapinbox_core::{
    EventId, EventStatus, HandlerError, Inbox, NewEvent, PullQuery, QueueConfig, RetryPolicy,
    TenantId, Worker,
};
use zapinbox_sqlite::SqliteBackend;

const CHILD_ENV: &str = "ZAPINBOX_WORKER_CRASH_DB";
const EVENTS: usize = 20;
const LEASE: Duration = Duration::from_secs(1);

fn tenant() -> TenantId {
    TenantId::new("jobs").expect("tenant")
}

fn config() -> QueueConfig {
    let retry = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
        .without_jitter();
    QueueConfig::default().with_retry(retry)
}

async fn open(path: &std::path::Path) -> Inbox {
    let backend = SqliteBackend::builder(path)
        .config(config())
        .open()
        .await
        .expect("open");
    Inbox::new(backend)
}

/// The doomed worker: reports each event it starts and never finishes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the other process's side: started by the test below with --ignored"]
async fn child_process_entry_point() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let inbox = open(std::path::Path::new(&path)).await;
    let worker = Worker::new(inbox, tenant()).concurrency(4).lease(LEASE);
    let handler = |leased: zapinbox_core::Leased| async move {
        println!("HANDLING {}", leased.event.id);
        std::future::pending::<()>().await;
        Ok::<(), HandlerError>(())
    };
    let _ = worker.run(handler, std::future::pending()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_events_go_to_another_worker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobs.db");
    let inbox = open(&path).await;
    let events = (0..EVENTS)
        .map(|n| NewEvent::new(json!({ "job": n })))
        .collect();
    let all: HashSet<EventId> = inbox
        .ingest_batch(&tenant(), events)
        .await
        .expect("ingest")
        .into_iter()
        .map(|i| i.id)
        .collect();

    let mut child = harness::child_process()
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the worker process");
    let stdout = child.stdout.take().expect("piped");
    let in_flight: Vec<EventId> = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| {
                line.split("HANDLING ")
                    .nth(1)
                    .map(|id| id.parse().expect("id"))
            })
            .take(4)
            .collect()
    })
    .await
    .expect("reader");
    assert_eq!(
        in_flight.len(),
        4,
        "the doomed worker started four handlers"
    );
    let leased_until = |id| {
        let inbox = inbox.clone();
        async move {
            inbox
                .get(&tenant(), id)
                .await
                .expect("get")
                .and_then(|e| e.leased_until)
        }
    };
    let first = leased_until(in_flight[0]).await.expect("leased");
    // Let it renew its leases before it dies.
    let renewed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let now = leased_until(in_flight[0]).await.expect("leased");
            if now > first {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the worker renews a running handler's lease");
    assert!(renewed > first);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let killed_at = Instant::now();
    let attempts: Arc<Mutex<HashMap<EventId, (u32, Duration)>>> = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let seen = Arc::clone(&attempts);
    let worker = Worker::new(inbox.clone(), tenant())
        .concurrency(4)
        .lease(LEASE)
        .poll_interval(Duration::from_millis(20));
    let run = tokio::spawn(worker.run(
        move |leased| {
            let seen = Arc::clone(&seen);
            async move {
                let at = killed_at.elapsed();
                seen.lock()
                    .map_err(|_| "poisoned")?
                    .insert(leased.event.id, (leased.attempt, at));
                Ok::<(), HandlerError>(())
            }
        },
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while attempts.lock().expect("lock").len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "every event is handled within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    let report = run.await.expect("task").expect("run");
    assert_eq!(report.acked as usize, EVENTS);

    let attempts = std::mem::take(&mut *attempts.lock().expect("lock"));
    assert_eq!(
        attempts.keys().copied().collect::<HashSet<_>>(),
        all,
        "nothing lost"
    );
    for id in &in_flight {
        let (attempt, at) = attempts[id];
        assert_eq!(
            attempt, 2,
            "the killed worker's events come back as attempt 2"
        );
        assert!(
            at >= LEASE / 2,
            "not before the killed worker's extended lease ran out ({at:?})"
        );
    }
    // Besides its four running handlers, the doomed worker had claimed up
    // to four more ahead: those come back as attempt 2 as well; every
    // other event was claimed once.
    let claimed_ahead = attempts
        .iter()
        .filter(|(id, (attempt, _))| !in_flight.contains(id) && *attempt == 2)
        .count();
    assert!(claimed_ahead <= 4, "{claimed_ahead} claimed ahead");
    for (id, (attempt, _)) in &attempts {
        if !in_flight.contains(id) {
            assert!(
                (1..=2).contains(attempt),
                "claimed once, or ahead by the killed worker: {attempt}"
            );
        }
    }
    for id in all {
        let event = inbox.get(&tenant(), id).await.expect("get").expect("kept");
        assert_eq!(event.status, EventStatus::Acked);
    }
    assert!(
        inbox
            .pull(&tenant(), PullQuery::new())
            .await
            .expect("pull")
            .events
            .is_empty()
    );
}
