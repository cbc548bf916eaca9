//! A big tenant beside a small one: what the big tenant's worst calls cost,
//! and what they cost the small tenant, on one SQLite file.
//!
//! The big tenant holds `scale.big_tenant` pending events, one in a
//! thousand with topic `rare`; the small one holds 10. Each call of the big
//! tenant is timed alone (median of 5). Then the small tenant's ingest and
//! pull latencies are measured alone, and again while one task of the big
//! tenant polls a claim whose topic matches nothing and eight pull with
//! such a topic: the target is a p99 under 5 ms for the small tenant.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zapinbox::sqlite::SqliteBackend;
use zapinbox::{ClaimQuery, Inbox, NewEvent, Order, PullQuery, TenantId, Timestamp};

use crate::Scale;
use crate::report::Row;
use crate::workloads::{Latencies, payload};

const WORKLOAD: &str = "big tenant beside a small one";

/// What the small tenant's p99 must stay under, in ms.
const P99_TARGET_MS: f64 = 5.0;

fn row(figure: &str, value: f64) -> Row {
    Row::new("sqlite", WORKLOAD, figure, value)
}

/// Runs the workload and reports.
pub async fn run(scale: Scale) -> Vec<Row> {
    let big_size = scale.big_tenant;
    eprintln!("sqlite: {WORKLOAD} ({big_size} pending)");
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = SqliteBackend::builder(dir.path().join("neighbours.db"))
        .open()
        .await
        .expect("open");
    let inbox = Inbox::new(backend.clone());
    let big = TenantId::new("big").expect("tenant");
    let small = TenantId::new("small").expect("tenant");
    let recent = fill(&inbox, &big, big_size).await;
    for n in 0..10 {
        inbox
            .ingest(&small, NewEvent::new(payload(n)))
            .await
            .expect("ingest");
    }

    let mut rows = Vec::new();
    let calls: [(&str, Call); 6] = [
        (
            "pull, topic with no match",
            Call::Pull(PullQuery::new().topic("none")),
        ),
        (
            "pull, since = last 1 %",
            Call::Pull(PullQuery::new().since(recent)),
        ),
        (
            "pull, topic rare, descending, first page",
            Call::Pull(PullQuery::new().topic("rare").order(Order::Desc)),
        ),
        ("dead_letters with none", Call::DeadLetters),
        ("tenant_stats", Call::Stats),
        ("claim, topic with no match", Call::Claim),
    ];
    for (name, call) in &calls {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            call.run(&inbox, &big).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        rows.push(row(
            &format!("big tenant: {name}, ms"),
            crate::median(times),
        ));
    }

    let ops = scale.latency_ops;
    let (ingest_alone, pull_alone) = small_tenant(&inbox, &small, ops).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..9 {
        let (inbox, big, stop) = (inbox.clone(), big.clone(), Arc::clone(&stop));
        load.push(tokio::spawn(async move {
            let call = if task == 0 {
                Call::Claim
            } else {
                Call::Pull(PullQuery::new().topic("none"))
            };
            while !stop.load(Ordering::Relaxed) {
                call.run(&inbox, &big).await;
            }
        }));
    }
    let (ingest_loaded, pull_loaded) = small_tenant(&inbox, &small, ops).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    for (what, alone, loaded) in [
        ("ingest", &ingest_alone, &ingest_loaded),
        ("pull", &pull_alone, &pull_loaded),
    ] {
        rows.push(row(
            &format!("small tenant: {what} p50 ms, alone"),
            alone.p50_ms(),
        ));
        rows.push(row(
            &format!("small tenant: {what} p99 ms, alone"),
            alone.p99_ms(),
        ));
        rows.push(row(
            &format!("small tenant: {what} p50 ms, beside the big one's worst"),
            loaded.p50_ms(),
        ));
        rows.push(
            row(
                &format!("small tenant: {what} p99 ms, beside the big one's worst"),
                loaded.p99_ms(),
            )
            .against("target 5 ms", P99_TARGET_MS, false),
        );
    }
    backend.close().await.expect("close");
    rows
}

/// One call of the big tenant.
enum Call {
    Pull(PullQuery),
    DeadLetters,
    Stats,
    Claim,
}

impl Call {
    async fn run(&self, inbox: &Inbox, tenant: &TenantId) {
        match self {
            Call::Pull(query) => drop(inbox.pull(tenant, query.clone()).await.expect("pull")),
            Call::DeadLetters => drop(
                inbox
                    .dead_letters(tenant, PullQuery::new())
                    .await
                    .expect("dead letters"),
            ),
            Call::Stats => drop(inbox.tenant_stats(tenant).await.expect("stats")),
            Call::Claim => {
                let query = ClaimQuery::new().topic("none").limit(10);
                assert!(inbox.claim(tenant, query).await.expect("claim").is_empty());
            }
        }
    }
}

/// Fills `tenant` with `n` events, one in a thousand with topic `rare`;
/// returns the creation time of the event 99 % of the way in.
async fn fill(inbox: &Inbox, tenant: &TenantId, n: usize) -> Timestamp {
    let mut recent = Timestamp::EPOCH;
    let last_percent = n * 99 / 100;
    for start in (0..n).step_by(1000) {
        let events = (start..(start + 1000).min(n))
            .map(|i| {
                let topic = if i % 1000 == 999 { "rare" } else { "common" };
                NewEvent::new(payload(i)).with_topic(topic)
            })
            .collect();
        let stored = inbox.ingest_batch(tenant, events).await.expect("fill");
        if let Some(i) = last_percent.checked_sub(start).and_then(|k| stored.get(k)) {
            recent = i.created_at;
        }
    }
    recent
}

/// The small tenant's ingest and pull latencies over `ops` of each.
async fn small_tenant(inbox: &Inbox, tenant: &TenantId, ops: usize) -> (Latencies, Latencies) {
    let (mut ingests, mut pulls) = (Latencies::default(), Latencies::default());
    let started = Instant::now();
    for n in 0..ops {
        let t = Instant::now();
        inbox
            .ingest(tenant, NewEvent::new(payload(n)))
            .await
            .expect("ingest");
        ingests.push(t.elapsed());
        let t = Instant::now();
        let page = inbox
            .pull(tenant, PullQuery::new().limit(10))
            .await
            .expect("pull");
        pulls.push(t.elapsed());
        assert!(!page.events.is_empty());
        // Keep the small tenant small.
        inbox.ack(tenant, page.events[0].id).await.expect("ack");
    }
    let took = started.elapsed().max(Duration::from_micros(1));
    (ingests.finish(took), pulls.finish(took))
}
