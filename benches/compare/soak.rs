//! A soak: producers, workers and a paging reader run without pause while
//! maintenance purges what the workers ack. Reports sizes over time,
//! throughput at the start against the end, and ingest latency before any
//! purge against while purges run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zapinbox::sqlite::SqliteBackend;
use zapinbox::{ClaimQuery, Inbox, NewEvent, PullQuery, QueueConfig, TenantId};

use crate::Scale;
use crate::report::Row;
use crate::workloads::payload;

/// Acked events are purged this long after their ack.
const RETENTION: Duration = Duration::from_secs(2);

fn tenant() -> TenantId {
    TenantId::new("soak").expect("tenant")
}

/// Runs the soak for `scale.soak` and reports.
pub async fn run(scale: Scale) -> Vec<Row> {
    eprintln!("sqlite: soak for {:?}", scale.soak);
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = SqliteBackend::builder(dir.path().join("soak.db"))
        .config(QueueConfig::default().with_retention(RETENTION))
        .maintenance_interval(Some(Duration::from_millis(200)))
        .wal_size_limit(4 * 1024 * 1024)
        .open()
        .await
        .expect("open");
    let inbox = Inbox::new(backend.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    // (seconds since start, latency) of every ingest.
    let ingests: Arc<Mutex<Vec<(f64, Duration)>>> = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..4 {
        let (inbox, stop, ingests) = (inbox.clone(), Arc::clone(&stop), Arc::clone(&ingests));
        tasks.push(tokio::spawn(async move {
            let tenant = tenant();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let event = NewEvent::new(payload(p * 10_000_000 + n));
                let t = Instant::now();
                inbox.ingest(&tenant, event).await.expect("ingest");
                let at = started.elapsed().as_secs_f64();
                ingests.lock().expect("lock").push((at, t.elapsed()));
                n += 1;
            }
        }));
    }
    for _ in 0..2 {
        let (inbox, stop) = (inbox.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let tenant = tenant();
            while !stop.load(Ordering::Relaxed) {
                let query = ClaimQuery::new().limit(100).lease(Duration::from_secs(60));
                let leased = inbox.claim(&tenant, query).await.expect("claim");
                let acks = leased.iter().map(|l| inbox.ack_lease(&tenant, l.token));
                for acked in futures::future::join_all(acks).await {
                    acked.expect("ack");
                }
                if leased.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    {
        let (inbox, stop) = (inbox.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let tenant = tenant();
            while !stop.load(Ordering::Relaxed) {
                let mut query = PullQuery::new().limit(100);
                loop {
                    let page = inbox.pull(&tenant, query.clone()).await.expect("pull");
                    match page.next_cursor {
                        Some(c) if page.has_more => query = query.after(c),
                        _ => break,
                    }
                }
            }
        }));
    }
    let mut sizes = Vec::new();
    let ticks = scale.soak.as_secs().max(2);
    for _ in 0..ticks {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats = backend.stats().await.expect("stats");
        sizes.push((stats.file_bytes, stats.wal_bytes));
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("task");
    }
    let stats = backend.stats().await.expect("stats");
    let left = inbox.tenant_stats(&tenant()).await.expect("stats");
    backend.close().await.expect("close");
    let total = started.elapsed().as_secs_f64();

    let ingests = std::mem::take(&mut *ingests.lock().expect("lock"));
    let rate = |from: f64, to: f64| {
        ingests
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .count() as f64
            / (to - from)
    };
    let tenth = total / 10.0;
    let (start, end) = (rate(0.0, tenth), rate(total - tenth, total));
    let p99 = |pred: &dyn Fn(f64) -> bool| {
        let mut l: Vec<Duration> = ingests
            .iter()
            .filter(|(at, _)| pred(*at))
            .map(|(_, d)| *d)
            .collect();
        l.sort_unstable();
        l.get(l.len() * 99 / 100)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    // Nothing is older than the retention before it has passed once.
    let before = p99(&|at| at < RETENTION.as_secs_f64());
    let during = p99(&|at| at > RETENTION.as_secs_f64() + 1.0);
    let row =
        |workload: &str, figure: &str, value: f64| Row::new("sqlite", workload, figure, value);
    let mut rows = vec![
        row("soak: ingest, first tenth of the run", "events/s", start),
        row("soak: ingest, last tenth of the run", "events/s", end)
            .against_self("soak: ingest, first tenth of the run", start),
        row("soak: ingest p99, before any purge", "ms", before),
        row("soak: ingest p99, while purges run", "ms", during),
    ];
    for (i, (file, wal)) in sizes.iter().enumerate() {
        if (i + 1) % (ticks as usize / 4).max(1) == 0 || i + 1 == sizes.len() {
            rows.push(row(
                &format!("soak: file at {} s", i + 1),
                "KiB",
                *file as f64 / 1024.0,
            ));
            rows.push(row(
                &format!("soak: WAL at {} s", i + 1),
                "KiB",
                *wal as f64 / 1024.0,
            ));
        }
    }
    rows.push(row(
        "soak: pending at the end (workers keep up)",
        "events",
        left.pending as f64,
    ));
    if let Some(purge) = stats.last_purge {
        rows.push(row(
            "soak: last maintenance purge",
            "events",
            purge.events as f64,
        ));
    }
    rows
}
