//! Process-crash safety: a child process ingests from many tasks and is
//! killed with SIGKILL at a random moment; every event whose ingest had
//! returned Ok must be there on reopen, and the file must pass
//! `PRAGMA integrity_check`. This proves no loss on a process crash at both
//! durability levels; it is not a power-loss test.

mod harness;

use std::time::Duration;

use serde_json::json;
use zapinbox_core::testkit::process::{report_lines, run_until_killed};
use zapinbox_core::{EventId, Inbox, NewEvent, PullQuery, TenantId};
use zapinbox_sqlite::{Durability, SqliteBackend};

const CHILD_ENV: &str = "ZAPINBOX_CRASH_CHILD_DB";
const DURABILITY_ENV: &str = "ZAPINBOX_CRASH_CHILD_DURABILITY";
const CYCLE_ENV: &str = "ZAPINBOX_CRASH_CHILD_CYCLE";
const TASKS: usize = 16;

fn tenant() -> TenantId {
    TenantId::new("crash").expect("valid")
}

/// The child's side: runs only when the parent starts this binary with the
/// database path in the environment, ingests until it is killed, and prints
/// each id after its ingest returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the other process's side: started by the test below with --ignored"]
async fn child_process_entry_point() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let durability = match std::env::var(DURABILITY_ENV).as_deref() {
        Ok("normal") => Durability::Normal,
        _ => Durability::Full,
    };
    let backend = SqliteBackend::builder(path)
        .durability(durability)
        .open()
        .await
        .expect("open");
    let inbox = Inbox::new(backend);
    let cycle = std::env::var(CYCLE_ENV).unwrap_or_default();
    let report = report_lines();
    let _ = report.send("READY".into());
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (inbox, report, cycle) = (inbox.clone(), report.clone(), cycle.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let event =
                    NewEvent::new(json!({ "task": task, "n": n, "pad": "x".repeat(n % 300) }))
                        .with_idempotency_key(format!("{cycle}-{task}-{n}"));
                let ingested = inbox.ingest(&tenant(), event).await.expect("ingest");
                let _ = report.send(format!("ACKED {}", ingested.id));
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

fn run_and_kill(
    path: &std::path::Path,
    cycle: u64,
    durability: &str,
    after: Duration,
) -> Vec<EventId> {
    let command = {
        let mut command = harness::child_process();
        command
            .env(CHILD_ENV, path)
            .env(DURABILITY_ENV, durability)
            .env(CYCLE_ENV, cycle.to_string());
        command
    };
    run_until_killed(command, after)
        .iter()
        .filter_map(|line| {
            line.strip_prefix("ACKED ")
                .map(|id| id.parse().expect("an id"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.db");
    let mut acknowledged: Vec<EventId> = Vec::new();
    for cycle in 0..6u64 {
        let durability = if cycle % 2 == 0 { "full" } else { "normal" };
        let after = Duration::from_millis(150 + rand::random::<u64>() % 600);
        let ids = run_and_kill(&path, cycle, durability, after);
        assert!(
            !ids.is_empty(),
            "cycle {cycle}: the child ingested something"
        );
        acknowledged.extend(ids);

        let integrity: String = rusqlite::Connection::open(&path)
            .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
            .expect("integrity check runs");
        assert_eq!(integrity, "ok", "cycle {cycle}");

        let backend = SqliteBackend::open(&path).await.expect("reopen");
        let inbox = Inbox::new(backend.clone());
        let mut stored = std::collections::HashSet::new();
        let mut query = PullQuery::new().limit(1000);
        loop {
            let page = inbox
                .pull(&tenant(), query.clone())
                .await
                .expect("every row reads back");
            for event in &page.events {
                let payload = event.payload.as_value().expect("whole payloads only");
                assert!(
                    payload["task"].is_u64() && payload["n"].is_u64(),
                    "whole rows only"
                );
                assert!(stored.insert(event.id), "no event twice");
            }
            match page.next_cursor {
                Some(cursor) if page.has_more => query = query.after(cursor),
                _ => break,
            }
        }
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|id| !stored.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle} ({durability}): lost {} acknowledged events: {lost:?}",
            lost.len()
        );
        backend.close().await.expect("close");
        eprintln!(
            "cycle {cycle} ({durability}, killed after {after:?}): {} acknowledged so far, {} stored",
            acknowledged.len(),
            stored.len()
        );
    }
}
