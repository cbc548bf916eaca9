//! Writers of one file take turns, two processes writing without pause as
//! well as many inboxes of one process: none is shut out until its busy
//! timeout runs out, so no caller sees "database is locked". (The longest
//! stalls between processes are measured by the benchmark "writers in N
//! processes".)

mod harness;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use zapinbox_core::{Inbox, NewEvent, TenantId};
use zapinbox_sqlite::SqliteBackend;

const CHILD_ENV: &str = "ZAPINBOX_WRITERS_CHILD_DB";
const START_ENV: &str = "ZAPINBOX_WRITERS_START_MS";
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_FOR: Duration = Duration::from_millis(1500);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// From `start_ms` (wall clock, shared by both processes), writes without
/// pause from 8 tasks for [`WRITE_FOR`]; returns how many ingests
/// succeeded and the errors of the others. Maintenance runs, with a small
/// WAL limit, so checkpoints happen while the other process waits.
async fn write_flat_out(path: &Path, who: &str, start_ms: u64) -> (usize, Vec<String>) {
    let backend = SqliteBackend::builder(path)
        .busy_timeout(BUSY_TIMEOUT)
        .maintenance_interval(Some(Duration::from_millis(50)))
        .wal_size_limit(256 * 1024)
        .open()
        .await
        .expect("open");
    let inbox = Inbox::new(backend.clone());
    let tenant = TenantId::new(who).expect("tenant");
    tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(now_ms()))).await;
    let until = Instant::now() + WRITE_FOR;
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (inbox, tenant) = (inbox.clone(), tenant.clone());
            tokio::spawn(async move {
                let (mut stored, mut errors) = (0, Vec::new());
                while Instant::now() < until {
                    let event = NewEvent::new(json!({ "task": task, "n": stored }));
                    match inbox.ingest(&tenant, event).await {
                        Ok(_) => stored += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (stored, errors)
            })
        })
        .collect();
    let (mut stored, mut errors) = (0, Vec::new());
    for task in tasks {
        let (n, errs) = task.await.expect("task");
        stored += n;
        errors.extend(errs);
    }
    backend.close().await.expect("close");
    (stored, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the other process's side: started by the test below with --ignored"]
async fn child_process_entry_point() {
    if let (Some(path), Some(start)) = (std::env::var_os(CHILD_ENV), std::env::var_os(START_ENV)) {
        let start = start.to_string_lossy().parse().expect("start time");
        let (stored, errors) = write_flat_out(Path::new(&path), "child", start).await;
        println!("RESULT {stored} {} {:?}", errors.len(), errors.first());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_writing_without_pause_never_see_locked() {
    let harness = harness::SqliteHarness::new();
    let path = harness.path();
    SqliteBackend::open(&path)
        .await
        .expect("create")
        .close()
        .await
        .expect("close");
    // Far enough ahead for the other process to be up and waiting.
    let start = now_ms() + 1_000;
    let child = harness::child_process()
        .env(CHILD_ENV, &path)
        .env(START_ENV, start.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the other process");
    let (stored, errors) = write_flat_out(&path, "parent", start).await;
    let stdout = harness::finished(child).await;
    let result = harness::results(&stdout)
        .first()
        .copied()
        .unwrap_or_default()
        .to_owned();
    let mut parts = result.split(' ');
    let child_stored: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let child_errors: usize = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    assert_eq!(errors, Vec::<String>::new(), "this process");
    assert_eq!(child_errors, 0, "the other process: {result}");
    assert!(
        stored > 0 && child_stored > 0,
        "both made progress: {stored} and {child_stored}"
    );
}

/// Many inboxes of one process on one new file (as separate services
/// linked into one host might open): they create and migrate it at once,
/// then all write without pause, and none waits out its busy timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_inboxes_of_one_process_create_and_write_one_file() {
    let harness = harness::SqliteHarness::new();
    let path = harness.path();
    let inboxes: Vec<_> = (0..32)
        .map(|n| {
            let path = path.clone();
            tokio::spawn(
                async move { write_flat_out(&path, &format!("inbox-{n}"), now_ms()).await },
            )
        })
        .collect();
    for inbox in inboxes {
        let (stored, errors) = inbox.await.expect("inbox");
        assert_eq!(errors, Vec::<String>::new());
        assert!(stored > 0, "every inbox made progress");
    }
}
