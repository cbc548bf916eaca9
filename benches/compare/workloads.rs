//! The workloads, each on a fresh backend, 200-byte JSON payloads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::Value;
use zapinbox::{ClaimQuery, HandlerError, Inbox, NewEvent, PullQuery, TenantId, Worker};

use crate::backends::BenchBackend;
use crate::raw::{Baselines, Beside, Raw};
use crate::report::Row;
use crate::{Scale, median};

/// Unmeasured operations before a latency series.
pub const WARM_UP: usize = 50;

/// Bytes of every payload's compact JSON.
pub const PAYLOAD_BYTES: usize = 200;

/// The compact JSON of payload `n`: exactly [`PAYLOAD_BYTES`] long.
pub fn payload_json(n: usize) -> String {
    let head = format!(r#"{{"n":{n},"pad":""#);
    let pad = PAYLOAD_BYTES.saturating_sub(head.len() + 2);
    format!(r#"{head}{}"}}"#, "x".repeat(pad))
}

/// Payload `n` as a JSON value.
pub fn payload(n: usize) -> Value {
    serde_json::from_str(&payload_json(n)).expect("valid JSON")
}

/// Latencies of a sequence of operations, and their rate.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
    /// Operations a second over the whole run.
    pub per_second: f64,
}

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.samples.push(d);
    }

    pub fn finish(mut self, total: Duration) -> Self {
        self.samples.sort_unstable();
        self.per_second = self.samples.len() as f64 / total.as_secs_f64();
        self
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        let Some(last) = self.samples.len().checked_sub(1) else {
            return f64::NAN;
        };
        self.samples[((last as f64) * q).round() as usize].as_secs_f64() * 1000.0
    }

    pub fn p50_ms(&self) -> f64 {
        self.quantile_ms(0.50)
    }

    pub fn p99_ms(&self) -> f64 {
        self.quantile_ms(0.99)
    }

    pub fn max_ms(&self) -> f64 {
        self.quantile_ms(1.0)
    }
}

fn tenant() -> TenantId {
    TenantId::new("bench").expect("tenant")
}

/// Tenant `n` of the workloads that spread over several.
pub fn numbered_tenant(n: usize) -> TenantId {
    TenantId::new(format!("tenant-{n}")).expect("tenant")
}

/// Concurrent producers of the "64 producers" comparisons, each awaiting
/// its own write.
pub const PRODUCERS: usize = 64;

/// `ops` ingests into tenant 0 one after another, after [`WARM_UP`]
/// unmeasured ones; their latencies, and their rate (the warm-up left
/// out).
pub async fn ingest_latency(inbox: &Inbox, ops: usize) -> Latencies {
    let tenant = numbered_tenant(0);
    let ingest = |i| inbox.ingest(&tenant, NewEvent::new(payload(i)));
    for i in 0..WARM_UP {
        ingest(ops + i).await.expect("ingest");
    }
    let mut latencies = Latencies::default();
    let started = Instant::now();
    for i in 0..ops {
        let sent = Instant::now();
        ingest(i).await.expect("ingest");
        latencies.push(sent.elapsed());
    }
    latencies.finish(started.elapsed())
}

/// `n` events ingested by [`PRODUCERS`] tasks over 8 tenants, each
/// awaiting each ingest; events a second.
pub async fn ingest_over_tenants(inbox: &Inbox, n: usize) -> f64 {
    let started = Instant::now();
    let tasks = (0..PRODUCERS).map(|p| {
        let inbox = inbox.clone();
        tokio::spawn(async move {
            for i in (p..n).step_by(PRODUCERS) {
                let event = NewEvent::from_json(payload_json(i));
                let tenant = numbered_tenant(p % 8);
                inbox.ingest(&tenant, event).await.expect("ingest");
            }
        })
    });
    for task in join_all(tasks).await {
        task.expect("an ingest task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `n` events in `ingest_batch` calls of `batch`, four in flight over four
/// tenants; events a second.
pub async fn batches_in_flight(inbox: &Inbox, n: usize, batch: usize) -> f64 {
    let started = Instant::now();
    let tasks = (0..4).map(|t| {
        let inbox = inbox.clone();
        tokio::spawn(async move {
            for start in (t * batch..n).step_by(4 * batch) {
                let events = (start..(start + batch).min(n))
                    .map(|i| NewEvent::from_json(payload_json(i)))
                    .collect();
                let tenant = numbered_tenant(t);
                inbox.ingest_batch(&tenant, events).await.expect("batch");
            }
        })
    });
    for task in join_all(tasks).await {
        task.expect("an ingest task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A fresh inbox on `backend`, its directory, and its commit counter.
struct Fresh {
    inbox: Inbox,
    _dir: tempfile::TempDir,
    commits: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
}

impl Fresh {
    async fn open(backend: &dyn BenchBackend) -> Fresh {
        let dir = tempfile::tempdir().expect("temp dir");
        let opened = backend.open(dir.path()).await;
        Fresh {
            inbox: Inbox::new(opened.backend),
            _dir: dir,
            commits: opened.commits,
        }
    }

    fn commits(&self) -> Option<u64> {
        self.commits.as_ref().map(|c| c())
    }
}

/// Whether `workload` is selected by `ZAPINBOX_BENCH_ONLY` (a substring).
pub fn selected(workload: &str) -> bool {
    std::env::var("ZAPINBOX_BENCH_ONLY").map_or(true, |only| workload.contains(&only))
}

/// Ingests `n` events in the largest batches the backend takes (at most
/// 1 000).
async fn fill(inbox: &Inbox, n: usize) {
    let batch = inbox.limits().max_batch_events.min(1000);
    for start in (0..n).step_by(batch) {
        let events = (start..(start + batch).min(n))
            .map(|i| NewEvent::new(payload(i)))
            .collect();
        inbox.ingest_batch(&tenant(), events).await.expect("fill");
    }
}

/// `runs` runs of `ours`, each next to a run of the raw baseline `which`
/// (when `beside` is given), the baseline first in even runs and second in
/// odd ones: what each of ours gave, and the baseline's median (0 without
/// one).
async fn paired<T, F: Future<Output = T>>(
    beside: Option<(&Baselines, Scale)>,
    which: Beside,
    runs: usize,
    mut ours: impl FnMut() -> F,
) -> (Vec<T>, f64) {
    let (mut results, mut theirs) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for run in 0..runs {
        let baseline = async {
            if let Some((baselines, scale)) = beside {
                theirs.push(baselines.run(which, scale).await);
            }
        };
        if run % 2 == 0 {
            baseline.await;
            results.push(ours().await);
        } else {
            results.push(ours().await);
            baseline.await;
        }
    }
    let theirs = if theirs.is_empty() {
        0.0
    } else {
        median(theirs)
    };
    (results, theirs)
}

/// Runs every workload on `backend`; with a raw baseline, the paired ones
/// run on `baselines` beside it and their medians go into `raw`.
pub async fn run(
    backend: &dyn BenchBackend,
    scale: Scale,
    raw: &mut Raw,
    baselines: &Baselines,
) -> Vec<Row> {
    let name = backend.name();
    let baseline = backend.has_raw_baseline();
    let beside = baseline.then_some((baselines, scale));
    let row = |workload: &str, figure: &str, value: f64| Row::new(name, workload, figure, value);
    let mut rows = Vec::new();
    let single_name = "ingest, 1 producer, each awaited";
    if selected(single_name) {
        eprintln!("{name}: single ingest latency");
        if baseline {
            raw.one_per_txn = baselines.one_per_txn(scale.latency_ops).await;
        }
        let single = single_ingest(backend, scale.latency_ops).await;
        let mut r = row(single_name, "events/s", single.per_second);
        if baseline {
            r = r.against(
                "insert, 1 row per transaction",
                raw.one_per_txn.per_second,
                true,
            );
        }
        rows.push(r);
        for (figure, ours, theirs) in [
            ("p50 ms", single.p50_ms(), raw.one_per_txn.p50_ms()),
            ("p99 ms", single.p99_ms(), raw.one_per_txn.p99_ms()),
        ] {
            let mut r = row(single_name, figure, ours);
            if baseline {
                r = r.against("insert, 1 row per transaction", theirs, false);
            }
            rows.push(r);
        }
    }

    for producers in [1, 8, 64] {
        let workload = format!("ingest, {producers} concurrent producers");
        if !selected(&workload) {
            continue;
        }
        eprintln!("{name}: ingest with {producers} producers");
        // The ceiling of 64 producers runs beside them.
        let pairing = if producers == 64 { beside } else { None };
        let (mut results, theirs) = paired(pairing, Beside::SixtyFourPerTxn, scale.runs, || {
            concurrent_ingest(backend, producers, scale.throughput_events)
        })
        .await;
        if pairing.is_some() {
            raw.sixty_four_per_txn = theirs;
        }
        results.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (rate, per_commit) = results[(results.len() - 1) / 2];
        if let Some(per_commit) = per_commit {
            rows.push(row(&workload, "events per commit", per_commit));
        }
        let mut r = row(&workload, "events/s", rate);
        if baseline {
            r = if producers == 1 {
                r.against(
                    "insert, 1 row per transaction",
                    raw.one_per_txn.per_second,
                    true,
                )
            } else {
                r.against(
                    "insert, 1 000 rows per transaction",
                    raw.thousand_per_txn,
                    true,
                )
            };
        }
        rows.push(r);
        if baseline && producers == 64 {
            let ceiling = row(&workload, "events/s vs 64-row transactions", rate);
            rows.push(ceiling.against(
                "insert, 64 rows per transaction",
                raw.sixty_four_per_txn,
                true,
            ));
        }
    }

    if selected("ingest_batch of 100") && !backend.skips("ingest_batch of 100") {
        eprintln!("{name}: ingest_batch of 100");
        let (rates, theirs) = paired(beside, Beside::HundredPerTxn, scale.runs, || {
            batch_ingest(backend, scale.throughput_events)
        })
        .await;
        let mut r = row("ingest_batch of 100", "events/s", median(rates));
        if baseline {
            raw.hundred_per_txn = theirs;
            r = r.against("insert, 100 rows per transaction", theirs, true);
        }
        rows.push(r);
    }

    let pull_name = format!("pull pages of 100, {} backlog", scale.backlog);
    if selected(&pull_name) {
        eprintln!(
            "{name}: pull pages of 100 from a backlog of {}",
            scale.backlog
        );
        let (rates, theirs) = paired(beside, Beside::PagesOf100, scale.runs, || {
            pull_pages(backend, scale.backlog)
        })
        .await;
        let ours = median(rates);
        let mut r = row(&pull_name, "events/s", ours);
        if baseline {
            raw.pages_of_100 = theirs;
            r = r.against("select pages of 100, every column read", theirs, true);
        }
        rows.push(r);
        if baseline {
            // The baseline above reads from the page cache of the
            // connection that wrote the rows; a pull never can.
            let mut elsewhere = Vec::with_capacity(scale.runs);
            for _ in 0..scale.runs {
                elsewhere.push(baselines.run(Beside::PagesOf100Elsewhere, scale).await);
            }
            rows.push(
                row(&pull_name, "events/s vs a reader opened after the writes", ours).against(
                    "select pages of 100, every column read, on a connection opened after the writes",
                    median(elsewhere),
                    true,
                ),
            );
        }
    }

    for workers in [1, 8] {
        let workload = format!("claim 100 + ack each, {workers} workers");
        if !selected(&workload) {
            continue;
        }
        eprintln!("{name}: claim + ack with {workers} workers");
        let (rates, theirs) = paired(beside, Beside::ClaimAck100, scale.runs, || {
            claim_ack(backend, workers, scale.claim_events)
        })
        .await;
        let mut r = row(&workload, "events/s", median(rates));
        if baseline {
            raw.claim_ack_100 = theirs;
            r = r.against(
                "select + update claim, update ack, batches of 100",
                theirs,
                true,
            );
        }
        rows.push(r);
    }

    for handlers in [1, 8] {
        let workload = format!("Worker, {handlers} no-op handlers");
        if !selected(&workload) {
            continue;
        }
        eprintln!("{name}: {workload}");
        // One handler waits for two commits an event: fewer events.
        let n = if handlers == 1 {
            scale.claim_events / 10
        } else {
            scale.claim_events
        };
        let (which, against) = if handlers == 1 {
            (
                Beside::ClaimAck1,
                "select + update claim, update ack, one at a time",
            )
        } else {
            (
                Beside::ClaimAck100,
                "select + update claim, update ack, batches of 100",
            )
        };
        let (rates, theirs) = paired(beside, which, scale.runs, || {
            worker_run(backend, handlers, n)
        })
        .await;
        let mut r = row(&workload, "events/s", median(rates));
        if baseline {
            if handlers == 1 {
                raw.claim_ack_1 = theirs;
            }
            r = r.against(against, theirs, true);
        }
        rows.push(r);
    }

    let retry_name = "idempotent retry, same key";
    if selected(retry_name) {
        eprintln!("{name}: idempotent retries");
        let retry = retries(backend, scale.latency_ops).await;
        let mut r = row(retry_name, "p50 ms", retry.p50_ms());
        if baseline {
            r = r.against(
                "idempotency key point lookup",
                raw.key_lookup.p50_ms(),
                false,
            );
        }
        rows.push(r);
        rows.push(row(retry_name, "events/s", retry.per_second));
    }
    rows
}

async fn single_ingest(backend: &dyn BenchBackend, n: usize) -> Latencies {
    let fresh = Fresh::open(backend).await;
    let inbox = &fresh.inbox;
    let tenant = tenant();
    // Warm up first (lazy statics, allocator, the new file's first pages),
    // as the raw baseline does.
    for i in 0..WARM_UP {
        inbox
            .ingest(&tenant, NewEvent::new(payload(i)))
            .await
            .expect("warm up");
    }
    // Events are built before the clock starts: the figure is ingest's.
    let events: Vec<NewEvent> = (0..n).map(|i| NewEvent::new(payload(i))).collect();
    let mut latencies = Latencies::default();
    let started = Instant::now();
    for event in events {
        let t = Instant::now();
        inbox.ingest(&tenant, event).await.expect("ingest");
        latencies.push(t.elapsed());
    }
    let out = latencies.finish(started.elapsed());
    inbox.close().await.expect("close");
    out
}

async fn concurrent_ingest(
    backend: &dyn BenchBackend,
    producers: usize,
    total: usize,
) -> (f64, Option<f64>) {
    let fresh = Fresh::open(backend).await;
    let inbox = &fresh.inbox;
    let per = total / producers;
    // Events are built before the clock starts: the figure is ingest's.
    let prepared: Vec<Vec<NewEvent>> = (0..producers)
        .map(|p| {
            (0..per)
                .map(|i| NewEvent::new(payload(p * per + i)))
                .collect()
        })
        .collect();
    let before = fresh.commits();
    let started = Instant::now();
    let tasks: Vec<_> = prepared
        .into_iter()
        .map(|events| {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let tenant = tenant();
                for event in events {
                    inbox.ingest(&tenant, event).await.expect("ingest");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("producer");
    }
    let rate = (per * producers) as f64 / started.elapsed().as_secs_f64();
    let per_commit = before
        .zip(fresh.commits())
        .map(|(b, a)| (per * producers) as f64 / (a - b).max(1) as f64);
    inbox.close().await.expect("close");
    (rate, per_commit)
}

async fn batch_ingest(backend: &dyn BenchBackend, total: usize) -> f64 {
    let fresh = Fresh::open(backend).await;
    let inbox = &fresh.inbox;
    let prepared: Vec<Vec<NewEvent>> = (0..total / 100)
        .map(|b| {
            (0..100)
                .map(|i| NewEvent::new(payload(b * 100 + i)))
                .collect()
        })
        .collect();
    let tenant = tenant();
    let started = Instant::now();
    for events in prepared {
        inbox.ingest_batch(&tenant, events).await.expect("batch");
    }
    let rate = (total / 100 * 100) as f64 / started.elapsed().as_secs_f64();
    inbox.close().await.expect("close");
    rate
}

async fn pull_pages(backend: &dyn BenchBackend, backlog: usize) -> f64 {
    let fresh = Fresh::open(backend).await;
    let inbox = &fresh.inbox;
    fill(inbox, backlog).await;
    let started = Instant::now();
    let mut query = PullQuery::new().limit(100);
    let mut read = 0;
    loop {
        let page = inbox.pull(&tenant(), query.clone()).await.expect("pull");
        read += page.events.len();
        match page.next_cursor {
            Some(cursor) if page.has_more => query = query.after(cursor),
            _ => break,
        }
    }
    assert_eq!(read, backlog);
    let rate = read as f64 / started.elapsed().as_secs_f64();
    inbox.close().await.expect("close");
    rate
}

/// A `Worker` with `handlers` no-op handlers works through `n` pre-loaded
/// events; events a second until none is pending.
async fn worker_run(backend: &dyn BenchBackend, handlers: usize, n: usize) -> f64 {
    let fresh = Fresh::open(backend).await;
    let inbox = &fresh.inbox;
    fill(inbox, n).await;
    let started = Instant::now();
    let worker = Worker::new(inbox.clone(), tenant())
        .concurrency(handlers)
        .poll_interval(Duration::from_millis(1))
        .spawn(|_| async { Ok::<(), HandlerError>(()) });
    // Done when the worker says so: its counters are in memory, where
    // asking the storage (tenant_stats) would cost the storage a read of
    // the whole tenant on some backends, every time.
    while (worker.counters().acked as usize) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let report = worker.shutdown().await.expect("worker");
    assert_eq!(report.acked as usize, n, "{report:?}");
    let pending = inbox.tenant_stats(&tenant()).await.expect("stats").pending;
    assert_eq!(pending, 0, "every event acked");
    inbox.close().await.expect("close");
    rate
}

async fn claim_ack(backend: &dyn BenchBackend, workers: usize, n: usize) -> f64 {
    let fresh = Fresh::open(backend).await;
    let inbox = &fresh.inbox;
    fill(inbox, n).await;
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (inbox, done) = (inbox.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let tenant = tenant();
                loop {
                    let query = ClaimQuery::new().limit(100).lease(Duration::from_secs(60));
                    let leased = inbox.claim(&tenant, query).await.expect("claim");
                    if leased.is_empty() {
                        return;
                    }
                    let acks = leased.iter().map(|l| inbox.ack_lease(&tenant, l.token));
                    for acked in join_all(acks).await {
                        acked.expect("ack");
                    }
                    done.fetch_add(leased.len(), std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker");
    }
    assert_eq!(done.load(std::sync::atomic::Ordering::Relaxed), n);
    let rate = n as f64 / started.elapsed().as_secs_f64();
    inbox.close().await.expect("close");
    rate
}

async fn retries(backend: &dyn BenchBackend, n: usize) -> Latencies {
    let fresh = Fresh::open(backend).await;
    let inbox = &fresh.inbox;
    let event = NewEvent::new(payload(0)).with_idempotency_key("retry");
    let first = inbox
        .ingest(&tenant(), event.clone())
        .await
        .expect("ingest");
    let mut latencies = Latencies::default();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let again = inbox.ingest(&tenant(), event.clone()).await.expect("retry");
        assert!(again.duplicate && again.id == first.id);
        latencies.push(t.elapsed());
    }
    let out = latencies.finish(started.elapsed());
    inbox.close().await.expect("close");
    out
}
