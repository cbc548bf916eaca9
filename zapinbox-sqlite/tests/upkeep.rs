//! Staying fast and bounded for months: maintenance, WAL, space, backup,
//! and a short soak under constant traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use zapinbox_core::{
    ClaimQuery, EventId, Inbox, ManualClock, NewEvent, PullQuery, QueueConfig, TenantId, Timestamp,
};
use zapinbox_sqlite::{SharedRules, SqliteBackend};

const PATIENCE: Duration = Duration::from_secs(20);

fn tenant() -> TenantId {
    TenantId::new("upkeep").expect("tenant")
}

fn payload(n: usize) -> NewEvent {
    NewEvent::new(json!({ "n": n, "pad": "x".repeat(180) }))
}

/// Polls `check` until it holds, at most [`PATIENCE`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < until, "{what} within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pragma(path: &std::path::Path, name: &str) -> i64 {
    rusqlite::Connection::open(path)
        .and_then(|c| c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)))
        .expect("pragma")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_purges_expired_events_and_gives_the_space_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inbox.db");
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
    let config = QueueConfig::default()
        .with_clock(clock.clock())
        .with_retention(Duration::from_secs(3600));
    let backend = SqliteBackend::builder(&path)
        .config(config)
        .maintenance_interval(Some(Duration::from_millis(20)))
        .purge_batch(200)
        .open()
        .await
        .expect("open");
    assert_eq!(
        pragma(&path, "auto_vacuum"),
        2,
        "a new file vacuums incrementally"
    );
    let inbox = Inbox::new(backend.clone());
    for start in (0..4000).step_by(500) {
        let events = (start..start + 500).map(payload).collect();
        for i in inbox.ingest_batch(&tenant(), events).await.expect("ingest") {
            inbox.ack(&tenant(), i.id).await.expect("ack");
        }
    }
    let kept = inbox
        .ingest(&tenant(), payload(9999))
        .await
        .expect("ingest")
        .id;
    let before = backend.stats().await.expect("stats");
    assert!(before.commits > 0 && before.used_bytes > 0, "{before:?}");
    assert_eq!(before.last_purge, None, "nothing is past retention yet");

    clock.advance(Duration::from_secs(3600));
    eventually(
        "the maintenance task purges every acked event",
        async || inbox.tenant_stats(&tenant()).await.expect("stats").acked == 0,
    )
    .await;
    eventually("the freed pages go back to the file system", async || {
        let now = backend.stats().await.expect("stats");
        now.free_bytes < before.used_bytes / 4 && now.used_bytes < before.used_bytes / 2
    })
    .await;
    let after = backend.stats().await.expect("stats");
    let purge = after.last_purge.expect("recorded");
    assert!(purge.events > 0, "{purge:?}");
    assert!(
        inbox.get(&tenant(), kept).await.expect("get").is_some(),
        "pending stays"
    );
    let checkpoint = backend.checkpoint().await.expect("checkpoint");
    assert!(!checkpoint.busy, "{checkpoint:?}");
    let shrunk = backend.stats().await.expect("stats");
    eprintln!("before {before:?}\nafter  {after:?}\nafter a checkpoint {shrunk:?}");
    assert!(
        shrunk.file_bytes < before.file_bytes / 4,
        "the file shrank: {} vs {}",
        shrunk.file_bytes,
        before.file_bytes
    );
    assert_eq!(shrunk.wal_bytes, 0, "and the WAL was truncated");
    backend.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_past_its_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inbox.db");
    let limit = 256 * 1024;
    let backend = SqliteBackend::builder(&path)
        .maintenance_interval(Some(Duration::from_millis(20)))
        .wal_size_limit(limit)
        .open()
        .await
        .expect("open");
    let settings = rusqlite::Connection::open(&path).expect("raw");
    drop(settings);
    let inbox = Inbox::new(backend.clone());
    for batch in 0..3 {
        let events = (batch * 1000..(batch + 1) * 1000).map(payload).collect();
        inbox.ingest_batch(&tenant(), events).await.expect("ingest");
    }
    eventually(
        "maintenance checkpoints and truncates the WAL",
        async || {
            let stats = backend.stats().await.expect("stats");
            stats.last_checkpoint.is_some() && stats.wal_bytes <= limit
        },
    )
    .await;
    let record = backend
        .stats()
        .await
        .expect("stats")
        .last_checkpoint
        .expect("recorded");
    assert!(
        !record.busy && record.wal_frames > 0 && record.checkpointed_frames == record.wal_frames,
        "{record:?}"
    );
    backend.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_traffic_opens_and_holds_what_came_before() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = SqliteBackend::open(dir.path().join("live.db"))
        .await
        .expect("open");
    let inbox = Inbox::new(backend.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<std::sync::Mutex<Vec<(Instant, EventId)>>> = Arc::default();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (inbox, stop, acked) = (inbox.clone(), Arc::clone(&stop), Arc::clone(&acked));
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = inbox
                        .ingest(&tenant(), payload(p * 1_000_000 + n))
                        .await
                        .expect("ingest")
                        .id;
                    acked.lock().expect("lock").push((Instant::now(), id));
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let copy = dir.path().join("copy.db");
    backend.backup_to(&copy).await.expect("backup");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.expect("producer");
    }
    let before: Vec<EventId> = acked
        .lock()
        .expect("lock")
        .iter()
        .filter(|(at, _)| *at < started)
        .map(|(_, id)| *id)
        .collect();
    assert!(
        before.len() > 10,
        "traffic ran before the backup: {}",
        before.len()
    );

    let integrity: String = rusqlite::Connection::open(&copy)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
        .expect("check");
    assert_eq!(integrity, "ok");
    let restored = SqliteBackend::open(&copy)
        .await
        .expect("the copy opens as an inbox");
    let restored_inbox = Inbox::new(restored.clone());
    for id in &before {
        let found = restored_inbox.get(&tenant(), *id).await.expect("get");
        assert!(
            found.is_some(),
            "{id} was ingested before the backup started"
        );
    }
    eprintln!(
        "backup held all {} events acknowledged before it started",
        before.len()
    );
    restored.close().await.expect("close");
    backend.close().await.expect("close");
}

/// A short soak: producers, workers and a reader run all the time while
/// maintenance purges what the workers ack. Sizes must level off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_constant_traffic_the_file_and_wal_level_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("soak.db");
    let wal_limit = 1024 * 1024;
    let config = QueueConfig::default().with_retention(Duration::from_secs(1));
    let backend = SqliteBackend::builder(&path)
        .config(config)
        .maintenance_interval(Some(Duration::from_millis(50)))
        .wal_size_limit(wal_limit)
        .open()
        .await
        .expect("open");
    let inbox = Inbox::new(backend.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let ingested = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in 0..2 {
        let (inbox, stop, ingested) = (inbox.clone(), Arc::clone(&stop), Arc::clone(&ingested));
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                inbox
                    .ingest(&tenant(), payload(p * 1_000_000 + n))
                    .await
                    .expect("ingest");
                ingested.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    // Workers pause around the backup (below): nothing listed just before it
    // may be acked, and then purged, before its snapshot.
    let paused = Arc::new(AtomicBool::new(false));
    let working = Arc::new(AtomicU64::new(0));
    for _ in 0..2 {
        let (inbox, stop) = (inbox.clone(), Arc::clone(&stop));
        let (paused, working) = (Arc::clone(&paused), Arc::clone(&working));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                working.fetch_add(1, Ordering::SeqCst);
                if !paused.load(Ordering::SeqCst) {
                    let query = ClaimQuery::new().limit(50);
                    let leased = inbox.claim(&tenant(), query).await.expect("claim");
                    for l in leased {
                        inbox.ack_lease(&tenant(), l.token).await.expect("ack");
                    }
                }
                working.fetch_sub(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        }));
    }
    {
        let (inbox, stop) = (inbox.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut query = PullQuery::new().limit(100);
                loop {
                    let page = inbox.pull(&tenant(), query.clone()).await.expect("pull");
                    match page.next_cursor {
                        Some(c) if page.has_more => query = query.after(c),
                        _ => break,
                    }
                }
            }
        }));
    }
    let mut samples = Vec::new();
    let mut last = 0;
    let mut backup = None;
    for second in 0..8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if second == 3 {
            paused.store(true, Ordering::SeqCst);
            while working.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let before = inbox
                .pull(&tenant(), PullQuery::new().limit(1000))
                .await
                .expect("pull");
            let copy = dir.path().join("soak-backup.db");
            backend
                .backup_to(&copy)
                .await
                .expect("backup during the soak");
            paused.store(false, Ordering::SeqCst);
            backup = Some((copy, before.events));
        }
        let stats = backend.stats().await.expect("stats");
        let live = inbox.tenant_stats(&tenant()).await.expect("stats");
        let live = live.pending + live.acked;
        let now = ingested.load(Ordering::Relaxed);
        samples.push((stats.used_bytes, stats.wal_bytes, live));
        eprintln!(
            "t={}s used {} KiB for {live} live events, wal {} KiB, {} ingests/s, last purge {:?}",
            second + 1,
            stats.used_bytes / 1024,
            stats.wal_bytes / 1024,
            now - last,
            stats.last_purge.map(|p| p.events)
        );
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("task");
    }
    // The file holds what is live (pending, or acked within retention), not
    // the history: at most ~2 KiB a live event, whatever the rate was.
    for (used, _, live) in &samples {
        assert!(
            *used <= live * 2048 + 512 * 1024,
            "{used} bytes for {live} live events"
        );
    }
    let wal_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    assert!(
        wal_max <= 8 * wal_limit,
        "the WAL stays near its limit: {wal_max}"
    );
    eprintln!(
        "end: {:?}",
        inbox.tenant_stats(&tenant()).await.expect("stats")
    );
    backend.close().await.expect("close");

    // Every event pending just before the backup is in the copy.
    let (copy, before) = backup.expect("a backup was taken");
    let integrity: String = rusqlite::Connection::open(&copy)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
        .expect("check");
    assert_eq!(integrity, "ok");
    let restored = SqliteBackend::builder(&copy)
        .maintenance_interval(None)
        .shared_rules(SharedRules::Adopt)
        .open()
        .await
        .expect("the backup opens as an inbox");
    let restored_inbox = Inbox::new(restored.clone());
    for event in &before {
        let copied = restored_inbox.get(&tenant(), event.id).await.expect("get");
        let copied = copied.unwrap_or_else(|| panic!("{} is missing from the backup", event.id));
        assert_eq!(copied.payload, event.payload);
    }
    eprintln!(
        "backup during the soak holds all {} events pending before it",
        before.len()
    );
    restored.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_never_waits_for_a_reader_holding_a_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inbox.db");
    let backend = SqliteBackend::builder(&path)
        .busy_timeout(Duration::from_secs(60))
        .maintenance_interval(None)
        .open()
        .await
        .expect("open");
    let inbox = Inbox::new(backend.clone());
    inbox.ingest(&tenant(), payload(1)).await.expect("ingest");
    // A reader (like a backup) holds a snapshot while more is written.
    let reader = rusqlite::Connection::open(&path).expect("reader");
    reader.execute_batch("BEGIN").expect("begin");
    let _: i64 = reader
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("read");
    inbox.ingest(&tenant(), payload(2)).await.expect("ingest");
    let record = tokio::time::timeout(Duration::from_secs(10), backend.checkpoint())
        .await
        .expect("the checkpoint does not wait out the 60 s busy timeout")
        .expect("checkpoint");
    assert!(
        record.busy,
        "the reader kept the WAL from being truncated: {record:?}"
    );
    inbox
        .ingest(&tenant(), payload(3))
        .await
        .expect("writes go on");
    reader.execute_batch("COMMIT").expect("end the read");
    let record = backend.checkpoint().await.expect("checkpoint");
    assert!(!record.busy, "{record:?}");
    inbox
        .close()
        .await
        .expect("closing through the facade stops maintenance too");
}
