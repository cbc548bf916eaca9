//! Subscription latency: from an ingest's return to its event arriving on
//! a subscription, with the ingest in this process and in another process
//! on the same file. Targets: p99 under 10 ms in-process, under 250 ms
//! across processes.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use zapinbox::sqlite::SqliteBackend;
use zapinbox::{Filter, Inbox, NewEvent, TenantId};

use crate::Scale;
use crate::report::Row;
use crate::workloads::{Latencies, payload};

const CHILD_ENV: &str = "ZAPINBOX_BENCH_SUBSCRIBE_CHILD";
const WORKLOAD: &str = "subscription latency";

/// Microseconds since the epoch: the clock both processes share.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn tenant() -> TenantId {
    TenantId::new("subscribed").expect("tenant")
}

/// Ingests `n` events a millisecond apart and returns when each ingest
/// returned (µs); with `print`, also prints each as `INGESTED <i> <µs>`
/// for a parent process to read.
async fn ingest(inbox: &Inbox, n: usize, print: bool) -> Vec<u64> {
    let mut returned = Vec::with_capacity(n);
    for i in 0..n {
        inbox
            .ingest(&tenant(), NewEvent::new(payload(i)))
            .await
            .expect("ingest");
        let at = now_us();
        if print {
            println!("INGESTED {i} {at}");
        }
        returned.push(at);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    returned
}

/// In a child: ingests into the file named in the environment, printing
/// when each ingest returned. `None` in the parent.
pub fn child_entry() -> Option<Result<(), String>> {
    let spec = std::env::var(CHILD_ENV).ok()?;
    let (path, n) = spec.split_once('|')?;
    let n: usize = n.parse().ok()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string());
    Some(runtime.and_then(|rt| {
        rt.block_on(async {
            let backend = SqliteBackend::open(path).await.map_err(|e| e.to_string())?;
            ingest(&Inbox::new(backend.clone()), n, true).await;
            backend.close().await.map_err(|e| e.to_string())
        })
    }))
}

/// Arrival times (µs) of the first `n` events on a fresh subscription of
/// `inbox`, in order, gathered by a task started before anything is
/// ingested.
async fn arrivals(inbox: &Inbox, n: usize) -> tokio::task::JoinHandle<Vec<u64>> {
    let mut live = Box::pin(
        inbox
            .subscribe(&tenant(), Filter::default(), None)
            .await
            .expect("subscribe"),
    );
    tokio::spawn(async move {
        let mut at = Vec::with_capacity(n);
        while at.len() < n {
            match tokio::time::timeout(Duration::from_secs(30), live.next()).await {
                Ok(Some(Ok(_))) => at.push(now_us()),
                _ => break,
            }
        }
        at
    })
}

fn latencies(returned: &[u64], arrived: &[u64]) -> Latencies {
    assert_eq!(arrived.len(), returned.len(), "every event arrived");
    let mut l = Latencies::default();
    for (r, a) in returned.iter().zip(arrived) {
        l.push(Duration::from_micros(a.saturating_sub(*r)));
    }
    l.finish(Duration::from_secs(1))
}

fn rows(place: &str, l: &Latencies, target_ms: f64) -> Vec<Row> {
    vec![
        Row::new("sqlite", WORKLOAD, &format!("{place}: p50 ms"), l.p50_ms()),
        Row::new("sqlite", WORKLOAD, &format!("{place}: p99 ms"), l.p99_ms()).against(
            &format!("target {target_ms} ms"),
            target_ms,
            false,
        ),
    ]
}

pub async fn run(scale: Scale) -> Vec<Row> {
    let n = scale.latency_ops / 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("subscribe.db");
    let backend = SqliteBackend::open(&path).await.expect("open");
    let inbox = Inbox::new(backend.clone());
    let mut out = Vec::new();

    eprintln!("sqlite: {WORKLOAD}, in-process, {n} events");
    let arrived = arrivals(&inbox, n).await;
    let returned = ingest(&inbox, n, false).await;
    let arrived = arrived.await.expect("subscriber");
    out.extend(rows("in-process", &latencies(&returned, &arrived), 10.0));

    eprintln!("sqlite: {WORKLOAD}, across processes, {n} events");
    let fresh = dir.path().join("across.db");
    let backend2 = SqliteBackend::open(&fresh).await.expect("open");
    let inbox2 = Inbox::new(backend2.clone());
    let arrived = arrivals(&inbox2, n).await;
    let child = Command::new(std::env::current_exe().expect("bench binary"))
        .env(CHILD_ENV, format!("{}|{n}", fresh.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("the other process");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let returned: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("INGESTED "))
        .filter_map(|l| l.split(' ').nth(1)?.parse().ok())
        .collect();
    let arrived = arrived.await.expect("subscriber");
    out.extend(rows(
        "across processes",
        &latencies(&returned, &arrived),
        250.0,
    ));
    backend.close().await.expect("close");
    backend2.close().await.expect("close");
    out
}
