//! Peak memory with a growing backlog, measured in a child process so the
//! other workloads do not count.

use std::process::Command;

use zapinbox::sqlite::SqliteBackend;
use zapinbox::{ClaimQuery, Inbox, NewEvent, PullQuery, TenantId};

use crate::Scale;
use crate::report::Row;
use crate::workloads::payload;

const CHILD_ENV: &str = "ZAPINBOX_BENCH_RSS_CHILD";

/// In the child: fills a SQLite inbox to each point, reads from it, and
/// prints its peak RSS. `None` in the parent.
pub fn child_entry() -> Option<Result<(), String>> {
    let points = std::env::var(CHILD_ENV).ok()?;
    let points: Vec<usize> = points.split(',').filter_map(|p| p.parse().ok()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string());
    Some(runtime.and_then(|rt| rt.block_on(fill_and_measure(&points))))
}

async fn fill_and_measure(points: &[usize]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let backend = SqliteBackend::open(dir.path().join("rss.db"))
        .await
        .map_err(|e| e.to_string())?;
    let inbox = Inbox::new(backend);
    let tenant = TenantId::new("rss").map_err(|e| e.to_string())?;
    let mut filled = 0;
    for &point in points {
        while filled < point {
            let end = (filled + 1000).min(point);
            let events = (filled..end).map(|i| NewEvent::new(payload(i))).collect();
            inbox
                .ingest_batch(&tenant, events)
                .await
                .map_err(|e| e.to_string())?;
            filled = end;
        }
        // Touch the backlog the way a consumer does: the newest page, a claim.
        let query = PullQuery::new().order(zapinbox::Order::Desc).limit(100);
        inbox
            .pull(&tenant, query)
            .await
            .map_err(|e| e.to_string())?;
        inbox
            .claim(&tenant, ClaimQuery::new().limit(100))
            .await
            .map_err(|e| e.to_string())?;
        println!("RSS {point} {}", peak_rss_kib().unwrap_or(0));
    }
    inbox.close().await.map_err(|e| e.to_string())
}

/// `VmHWM` of this process: its peak resident set, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the child and reads its figures.
pub fn measure(scale: Scale) -> Vec<Row> {
    eprintln!("sqlite: peak RSS at {:?} pending events", scale.rss_points);
    let points = scale.rss_points.map(|p| p.to_string()).join(",");
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot measure RSS: {e}");
            return Vec::new();
        }
    };
    let output = match Command::new(exe).env(CHILD_ENV, points).output() {
        Ok(output) => output,
        Err(e) => {
            eprintln!("cannot measure RSS: {e}");
            return Vec::new();
        }
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.strip_prefix("RSS ")?.split(' ');
            let pending: usize = parts.next()?.parse().ok()?;
            let kib: f64 = parts.next()?.parse().ok()?;
            Some(Row::new(
                "sqlite",
                &format!("peak RSS, {pending} pending"),
                "MiB",
                kib / 1024.0,
            ))
        })
        .collect()
}
