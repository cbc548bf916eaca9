//! Backend comparison benchmarks, each figure beside a raw baseline
//! measured in the same run: raw SQLite, or a raw `rdkafka` producer on the
//! same broker, or raw SDK calls on the same DynamoDB Local. Every workload
//! runs on SQLite, memory, Kafka on the mock cluster, Kafka on tansu when
//! `ZAPINBOX_TANSU_BROKERS` names one, and DynamoDB Local (at a tenth of
//! the scale) when `ZAPINBOX_DYNAMO_ENDPOINT` names one.
//!
//!     cargo bench                          # full run (about 8 minutes)
//!     ZAPINBOX_BENCH_QUICK=1 cargo bench   # smoke run, about 30 s
//!     ZAPINBOX_BENCH_ONLY="64 concurrent" cargo bench   # one workload (and its raw baseline if paired)
//!
//! The raw SQLite baselines of the SQLite backend's throughput targets run
//! beside it: each of its runs comes next to a run of its baseline (before
//! it, then after it, in turn), and the report compares their medians.
//!
//! Prints a markdown table (backend × workload × figure × ratio to its raw
//! baseline), writes it to `target/bench-report.md`, and draws ingest
//! throughput against concurrency to `target/bench-ingest.svg`.

mod backends;
mod dynamo;
mod kafka;
mod kafka_raw;
mod neighbours;
mod processes;
mod raw;
mod report;
mod rss;
mod soak;
mod subscriptions;
mod workloads;

use std::time::Duration;

use report::{Report, Row};

/// How big each workload is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Sequential ingests for the latency figures.
    pub latency_ops: usize,
    /// Events per concurrent ingest run.
    pub throughput_events: usize,
    /// Events in the backlog that pull pages walk.
    pub backlog: usize,
    /// Events claimed and acked.
    pub claim_events: usize,
    /// Pending events at the two RSS measurements.
    pub rss_points: [usize; 2],
    /// Runs of each throughput figure; the report shows the median.
    pub runs: usize,
    /// How long the soak runs.
    pub soak: Duration,
    /// Pending events of the big tenant beside a small one.
    pub big_tenant: usize,
    /// How long writers in several processes write.
    pub writers: Duration,
    /// Events of history a new Kafka instance replays.
    pub kafka_history: usize,
}

impl Scale {
    /// A tenth of the events, for a backend on a server that answers in
    /// milliseconds.
    pub fn tenth(self) -> Self {
        Scale {
            latency_ops: self.latency_ops / 10,
            throughput_events: self.throughput_events / 10,
            backlog: self.backlog / 10,
            claim_events: self.claim_events / 10,
            ..self
        }
    }
}

/// The median of `values` (the middle one, or the lower middle).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

impl Scale {
    fn quick() -> Self {
        Scale {
            latency_ops: 300,
            throughput_events: 3_000,
            backlog: 10_000,
            claim_events: 2_000,
            rss_points: [20_000, 100_000],
            runs: 1,
            soak: Duration::from_secs(6),
            big_tenant: 20_000,
            writers: Duration::from_secs(2),
            kafka_history: 20_000,
        }
    }

    fn full() -> Self {
        Scale {
            latency_ops: 2_000,
            throughput_events: 30_000,
            backlog: 100_000,
            claim_events: 20_000,
            rss_points: [100_000, 1_000_000],
            runs: 3,
            soak: Duration::from_secs(60),
            big_tenant: 1_000_000,
            writers: Duration::from_secs(10),
            kafka_history: 1_000_000,
        }
    }
}

fn main() {
    if let Some(result) = rss::child_entry() {
        // This process was started to measure memory; it printed its figures.
        std::process::exit(i32::from(result.is_err()));
    }
    if let Some(result) = subscriptions::child_entry() {
        // This process ingested for a subscription in its parent.
        if let Err(e) = &result {
            eprintln!("ingesting process failed: {e}");
        }
        std::process::exit(i32::from(result.is_err()));
    }
    if let Some(result) = processes::child_entry() {
        // This process was one of several writers; it printed its figures.
        if let Err(e) = &result {
            eprintln!("writer process failed: {e}");
        }
        std::process::exit(i32::from(result.is_err()));
    }
    // `cargo bench` passes --bench; anything else (`cargo test
    // --all-targets`) gets the smoke run.
    let quick = std::env::var_os("ZAPINBOX_BENCH_QUICK").is_some()
        || std::env::args().any(|a| a == "--quick")
        || !std::env::args().any(|a| a == "--bench");
    let scale = if quick { Scale::quick() } else { Scale::full() };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = std::time::Instant::now();
    eprintln!(
        "zapinbox benchmarks ({} mode): {scale:?}",
        if quick { "quick" } else { "full" }
    );
    let mut report = Report::new(quick);
    runtime.block_on(async {
        let mut raw = raw::measure(scale).await;
        let baselines = raw::Baselines::open().await;
        for backend in backends::all() {
            let rows = workloads::run(&*backend, backend.scale(scale), &mut raw, &baselines).await;
            report.extend(rows);
        }
        if workloads::selected("soak") {
            report.extend(soak::run(scale).await);
        }
        if workloads::selected("subscription latency") {
            report.extend(subscriptions::run(scale).await);
        }
        if workloads::selected("big tenant") {
            report.extend(neighbours::run(scale).await);
        }
        if workloads::selected("kafka") {
            report.extend(kafka::run(scale).await);
        }
        for brokers in backends::kafka_brokers() {
            if workloads::selected("kafka throughput") {
                report.extend(kafka_raw::throughput(&brokers, scale).await);
            }
        }
        if let Some(endpoint) = dynamo::endpoint()
            && workloads::selected("dynamo beside raw calls")
        {
            report.extend(dynamo::against_raw(&endpoint, scale).await);
        }
        if workloads::selected("kafka bytes on the wire") {
            report.extend(kafka_raw::wire(&backends::Brokers::mock(), scale).await);
        }
        if workloads::selected("writers in") {
            let rows = tokio::task::spawn_blocking(move || processes::run(scale))
                .await
                .expect("writer processes");
            report.extend(rows);
        }
        if std::env::var_os("ZAPINBOX_BENCH_ONLY").is_none() {
            report.extend(rss::measure(scale));
            report.extend(raw.rows());
        }
    });
    report.finish(started.elapsed().max(Duration::from_millis(1)));
    let _: &[Row] = report.rows();
}
