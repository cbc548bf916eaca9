//! Writers in N processes on one file: each process runs 8 producers that
//! ingest without pause for a while; each reports its throughput, its p99
//! ingest latency, its longest stall (the longest single ingest) and its
//! errors. The target is a longest stall under 250 ms and no error.

use std::process::{Command, Stdio};
use std::time::Instant;

use zapinbox::sqlite::SqliteBackend;
use zapinbox::{Inbox, NewEvent, TenantId};

use crate::Scale;
use crate::report::Row;
use crate::workloads::{Latencies, payload};

const CHILD_ENV: &str = "ZAPINBOX_BENCH_WRITER_CHILD";
const PRODUCERS: usize = 8;

/// What a process's longest stall must stay under, in ms.
const STALL_TARGET_MS: f64 = 250.0;

/// In a child: writes to the file named in the environment until the
/// deadline given there, then prints its figures. `None` in the parent.
pub fn child_entry() -> Option<Result<(), String>> {
    let spec = std::env::var(CHILD_ENV).ok()?;
    let (path, until) = spec.split_once('|')?;
    let until_ms: u64 = until.parse().ok()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string());
    Some(runtime.and_then(|rt| rt.block_on(write_until(path.into(), until_ms))))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn write_until(path: std::path::PathBuf, until_ms: u64) -> Result<(), String> {
    let backend = SqliteBackend::open(&path)
        .await
        .map_err(|e| e.to_string())?;
    let inbox = Inbox::new(backend.clone());
    let tenant =
        TenantId::new(format!("writer-{}", std::process::id())).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let (inbox, tenant) = (inbox.clone(), tenant.clone());
        producers.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), Vec::new());
            let mut n = p * 10_000_000;
            while now_ms() < until_ms {
                let t = Instant::now();
                match inbox.ingest(&tenant, NewEvent::new(payload(n))).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(e) => errors.push(e.to_string()),
                }
                n += 1;
            }
            (latencies, errors)
        }));
    }
    let mut all = Latencies::default();
    let mut errors = Vec::new();
    for producer in producers {
        let (latencies, errs) = producer.await.map_err(|e| e.to_string())?;
        latencies.into_iter().for_each(|d| all.push(d));
        errors.extend(errs);
    }
    let all = all.finish(started.elapsed());
    println!(
        "WRITER {:.0} {:.3} {:.3} {} {:?}",
        all.per_second,
        all.p99_ms(),
        all.max_ms(),
        errors.len(),
        errors.first()
    );
    backend.close().await.map_err(|e| e.to_string())
}

/// Runs the workload with 2 and 4 writer processes.
pub fn run(scale: Scale) -> Vec<Row> {
    let mut rows = Vec::new();
    for processes in [2, 4] {
        let workload = format!("writers in {processes} processes");
        eprintln!("sqlite: {workload} for {:?}", scale.writers);
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("cannot run {workload}: {e}");
                continue;
            }
        };
        let path = dir.path().join("writers.db");
        // Started a moment from now, so every process is up by then.
        let until = now_ms() + 1_000 + scale.writers.as_millis() as u64;
        let spec = format!("{}|{until}", path.display());
        let children: Vec<_> = (0..processes)
            .filter_map(|_| {
                let exe = std::env::current_exe().ok()?;
                Command::new(exe)
                    .env(CHILD_ENV, &spec)
                    .stdout(Stdio::piped())
                    .spawn()
                    .ok()
            })
            .collect();
        let mut worst_stall = 0.0f64;
        let mut total = 0.0;
        let mut errors = 0.0;
        for (i, child) in children.into_iter().enumerate() {
            let Ok(output) = child.wait_with_output() else {
                continue;
            };
            let stdout = String::from_utf8_lossy(&output.stdout);
            let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("WRITER ")) else {
                eprintln!("{workload}: process {i} printed no figures: {stdout}");
                errors += 1.0;
                continue;
            };
            let mut parts = line.split(' ');
            let mut next = || {
                parts
                    .next()
                    .and_then(|p| p.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            let (rate, p99, stall, errs) = (next(), next(), next(), next());
            let process = format!("process {}", i + 1);
            rows.push(Row::new(
                "sqlite",
                &workload,
                &format!("{process}: events/s"),
                rate,
            ));
            rows.push(Row::new(
                "sqlite",
                &workload,
                &format!("{process}: p99 ms"),
                p99,
            ));
            rows.push(Row::new(
                "sqlite",
                &workload,
                &format!("{process}: longest stall ms"),
                stall,
            ));
            worst_stall = worst_stall.max(stall);
            total += rate;
            errors += errs;
            if errs > 0.0 {
                eprintln!("{workload}: process {i}: {line}");
            }
        }
        rows.push(Row::new(
            "sqlite",
            &workload,
            "events/s, all processes",
            total,
        ));
        rows.push(Row::new("sqlite", &workload, "errors", errors));
        rows.push(
            Row::new("sqlite", &workload, "longest stall ms", worst_stall).against(
                "target 250 ms",
                STALL_TARGET_MS,
                false,
            ),
        );
    }
    rows
}
