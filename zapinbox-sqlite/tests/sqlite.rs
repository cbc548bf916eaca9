//! What is specific to SQLite: connection settings, schema versions,
//! several processes on one file.

mod harness;

use std::process::Stdio;

use serde_json::json;
use zapinbox_core::testkit::Harness;
use zapinbox_core::{Error, Inbox, NewEvent, PullQuery, QueueConfig, TenantId};
use zapinbox_sqlite::{Durability, JournalMode, Role, SCHEMA_VERSION, SqliteBackend, Synchronous};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_reads_back_wal_and_its_settings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (Durability::Full, Synchronous::Full),
        (Durability::Normal, Synchronous::Normal),
    ];
    for (durability, synchronous) in cases {
        let path = dir.path().join(format!("{durability:?}.db"));
        let backend = SqliteBackend::builder(&path)
            .durability(durability)
            .busy_timeout(std::time::Duration::from_millis(2500))
            .read_connections(3)
            .open()
            .await
            .expect("open");
        let settings = backend.connection_settings().await.expect("settings");
        assert_eq!(settings.len(), 4, "the writer and three readers");
        assert_eq!(settings[0].role, Role::Writer);
        assert!(settings[1..].iter().all(|s| s.role == Role::Reader));
        for s in &settings {
            assert_eq!(s.journal_mode, JournalMode::Wal, "{s:?}");
            assert_eq!(s.synchronous, synchronous, "{s:?}");
            assert_eq!(s.busy_timeout_ms, 2500, "{s:?}");
        }
        backend.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_use_wal_is_refused() {
    let r = SqliteBackend::open(":memory:").await;
    assert!(
        matches!(&r, Err(Error::Backend { retryable: false, source }) if source.to_string().contains("wal")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_version_is_recorded_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inbox.db");
    let backend = SqliteBackend::open(&path).await.expect("open");
    backend.close().await.expect("close");
    let conn = rusqlite::Connection::open(&path).expect("open raw");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, SCHEMA_VERSION);

    let reopened = SqliteBackend::open(&path)
        .await
        .expect("reopen at the same version");
    reopened.close().await.expect("close");

    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("pretend a newer build wrote it");
    let r = SqliteBackend::open(&path).await;
    assert!(
        matches!(&r, Err(Error::Backend { retryable: false, source }) if source.to_string().contains("newer")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_after_close_are_errors_not_panics() {
    let harness = harness::SqliteHarness::new();
    let backend = SqliteBackend::open(harness.path()).await.expect("open");
    let inbox = Inbox::new(backend.clone());
    let tenant = TenantId::new("t").expect("tenant");
    backend.close().await.expect("close");
    let r = inbox.ingest(&tenant, NewEvent::new(json!({}))).await;
    assert!(
        matches!(
            r,
            Err(Error::Backend {
                retryable: false,
                ..
            })
        ),
        "{r:?}"
    );
}

const CHILD_ENV: &str = "ZAPINBOX_SHARED_FILE_CHILD_DB";
const PER_PROCESS: usize = 300;

fn tenant() -> TenantId {
    TenantId::new("shared").expect("tenant")
}

/// Both processes ingest the same keys: one event per key in the end.
async fn ingest_shared_keys(path: &std::path::Path, who: &str) {
    let backend = SqliteBackend::open(path).await.expect("open");
    let inbox = Inbox::new(backend.clone());
    let mut tasks = Vec::new();
    for task in 0..4 {
        let inbox = inbox.clone();
        let who = who.to_owned();
        tasks.push(tokio::spawn(async move {
            for n in (task..PER_PROCESS).step_by(4) {
                let event = NewEvent::new(json!({ "n": n })).with_idempotency_key(format!("k{n}"));
                inbox.ingest(&tenant(), event).await.expect("shared key");
                let own = NewEvent::new(json!({ "n": n, "by": who }));
                inbox.ingest(&tenant(), own).await.expect("own event");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    backend.close().await.expect("close");
}

/// The other process's side; runs only when started by the test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the other process's side: started by the test below with --ignored"]
async fn child_process_entry_point() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        ingest_shared_keys(std::path::Path::new(&path), "child").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_file() {
    let harness = harness::SqliteHarness::new();
    let path = harness.path();
    // Create the file first so both processes find the schema in place.
    SqliteBackend::open(&path)
        .await
        .expect("create")
        .close()
        .await
        .expect("close");
    let child = harness::child_process()
        .env(CHILD_ENV, &path)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the other process");
    ingest_shared_keys(&path, "parent").await;
    harness::finished(child).await;

    let backend = SqliteBackend::open(&path).await.expect("reopen");
    let inbox = Inbox::new(backend.clone());
    let mut events = Vec::new();
    let mut query = PullQuery::new().limit(1000);
    loop {
        let page = inbox.pull(&tenant(), query.clone()).await.expect("pull");
        events.extend(page.events);
        match page.next_cursor {
            Some(c) if page.has_more => query = query.after(c),
            _ => break,
        }
    }
    let keyed = events
        .iter()
        .filter(|e| e.idempotency_key.is_some())
        .count();
    let by = |who: &str| {
        events
            .iter()
            .filter(|e| e.payload.as_value().is_ok_and(|p| p["by"] == who))
            .count()
    };
    assert_eq!(keyed, PER_PROCESS, "one event per shared key");
    assert_eq!((by("parent"), by("child")), (PER_PROCESS, PER_PROCESS));
    let conn = rusqlite::Connection::open(&path).expect("raw");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(integrity, "ok");
    backend.close().await.expect("close");
}

/// A batch whose idempotency key conflicts is refused before it writes
/// anything, so 32 such batches sharing group commits with 32 good ones
/// never make the writer roll back and replay the group (each replay ran
/// every other request of the group again under the write lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_batches_never_replay_the_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = SqliteBackend::builder(dir.path().join("inbox.db"))
        .maintenance_interval(None)
        .open()
        .await
        .expect("open");
    let inbox = Inbox::new(backend.clone());
    let tenant = TenantId::new("batches").expect("tenant");
    inbox
        .ingest(
            &tenant,
            NewEvent::new(json!({ "first": true })).with_idempotency_key("taken"),
        )
        .await
        .expect("ingest");
    let before = backend.stats().await.expect("stats");
    let batches: Vec<_> = (0..64)
        .map(|b| {
            let (inbox, tenant) = (inbox.clone(), tenant.clone());
            tokio::spawn(async move {
                let mut events: Vec<_> = (0..3)
                    .map(|n| NewEvent::new(json!({ "batch": b, "n": n })))
                    .collect();
                if b % 2 == 0 {
                    events.push(NewEvent::new(json!({ "other": b })).with_idempotency_key("taken"));
                }
                inbox.ingest_batch(&tenant, events).await
            })
        })
        .collect();
    for (b, batch) in batches.into_iter().enumerate() {
        let r = batch.await.expect("task");
        if b % 2 == 0 {
            assert!(matches!(r, Err(Error::IdempotencyConflict { .. })), "{r:?}");
        } else {
            assert_eq!(r.expect("a good batch").len(), 3);
        }
    }
    let after = backend.stats().await.expect("stats");
    assert_eq!(after.replays, before.replays, "no replay");
    let commits = after.commits - before.commits;
    assert!(commits < 64, "64 batches shared commits: {commits} commits");
    let stored = inbox
        .pull(&tenant, PullQuery::new().limit(1000))
        .await
        .expect("pull");
    assert_eq!(stored.events.len(), 1 + 32 * 3, "the good batches only");
    backend.close().await.expect("close");
}

/// Payloads stored before the nesting limit existed (200 levels deep), or
/// damaged outside zapinbox, fail only their own decoding: the page, the
/// claim and the get around them work, and they can be listed, claimed,
/// dead-lettered and deleted like any event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_stored_payloads_fail_only_their_own_decoding() {
    use zapinbox_core::{ClaimQuery, EventId, QueueConfig, ReleaseOutcome, RetryPolicy, Timestamp};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inbox.db");
    let config = QueueConfig::default().with_retry(RetryPolicy::default().with_max_attempts(1));
    let backend = SqliteBackend::builder(&path)
        .config(config)
        .open()
        .await
        .expect("open");
    let inbox = Inbox::new(backend.clone());
    let tenant = TenantId::new("damaged").expect("tenant");
    let ingest = async |n: u32| {
        inbox
            .ingest(&tenant, NewEvent::new(json!({ "n": n })))
            .await
            .expect("ingest")
            .id
    };
    let first = ingest(1).await;
    let raw = rusqlite::Connection::open(&path).expect("raw");
    let smuggle = |payload: rusqlite::types::Value, sql: &str| {
        let id = EventId::generate(Timestamp::from(std::time::SystemTime::now()));
        raw.execute(
            &format!(
                "INSERT INTO events (id, tenant, payload, created_at, visible_at)
                 VALUES (?1, 'damaged', {sql}, ?3, ?3)"
            ),
            rusqlite::params![id.to_bytes(), payload, id.created_at().as_millis() as i64],
        )
        .expect("a row written behind the inbox's back");
        id
    };
    let text = |s: String| rusqlite::types::Value::Text(s);
    let deep = smuggle(
        text(format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200))),
        "?2",
    );
    let broken = smuggle(text(r#"{"a": [1, 2"#.to_owned()), "?2");
    let not_utf8 = smuggle(
        rusqlite::types::Value::Blob(vec![b'{', 0x80, 0xff]),
        "CAST(?2 AS TEXT)",
    );
    let blob = smuggle(rusqlite::types::Value::Blob(vec![1, 2, 3]), "?2");
    let last = ingest(2).await;
    let damaged = [deep, broken, not_utf8, blob];

    let page = inbox
        .pull(&tenant, PullQuery::new())
        .await
        .expect("the page reads");
    let ids: Vec<EventId> = page.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![first, deep, broken, not_utf8, blob, last]);
    for event in &page.events {
        let decoded = event.payload.as_value();
        if damaged.contains(&event.id) {
            assert!(matches!(decoded, Err(Error::Decode { .. })), "{decoded:?}");
        } else {
            decoded.expect("the events around them decode");
        }
    }
    let got = inbox
        .get(&tenant, broken)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(got.payload.as_str(), r#"{"a": [1, 2"#, "returned as stored");

    let claimed = inbox
        .claim(&tenant, ClaimQuery::new().limit(10))
        .await
        .expect("the claim reads");
    assert_eq!(claimed.len(), 6);
    for leased in claimed {
        if damaged.contains(&leased.event.id) {
            let outcome = inbox
                .release(&tenant, leased.token, None)
                .await
                .expect("release");
            assert_eq!(outcome, ReleaseOutcome::DeadLettered);
        } else {
            inbox.ack_lease(&tenant, leased.token).await.expect("ack");
        }
    }
    let dead = inbox
        .dead_letters(&tenant, PullQuery::new())
        .await
        .expect("dead letters");
    assert_eq!(
        dead.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        damaged.to_vec()
    );
    for id in damaged {
        inbox.delete(&tenant, id).await.expect("delete");
        assert!(inbox.get(&tenant, id).await.expect("get").is_none());
    }
    backend.close().await.expect("close");
}

/// A page filtered on topic and type looks at most 4 096 entries of the
/// topic's index: with 6 000 events of the topic and 6 of the type, pages
/// come back short (even empty) with `has_more`, and following the cursors
/// finds the 6, once each, in order, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_with_several_filters_stop_early_and_miss_nothing() {
    let harness = harness::SqliteHarness::without_maintenance();
    let inbox = Inbox::new(harness.open(QueueConfig::default()).await.expect("open"));
    let tenant = TenantId::new("sparse").expect("tenant");
    let mut wanted = Vec::new();
    for batch in 0..6 {
        let events = (0..1000)
            .map(|i| {
                let event = NewEvent::new(json!({ "n": batch * 1000 + i })).with_topic("a");
                if i == 999 {
                    event.with_type("t")
                } else {
                    event
                }
            })
            .collect();
        let stored = inbox.ingest_batch(&tenant, events).await.expect("ingest");
        wanted.push(stored[999].id);
    }
    let query = PullQuery::new().topic("a").event_type("t");
    pages_stop_early_and_find(&inbox, &tenant, query, &wanted).await;
    inbox.close().await.expect("close");
}

/// Follows `query`'s pages of 100 both ways: they find `wanted` (in commit
/// order), once each, and at least one page comes back short with
/// `has_more` (it ran out of budget).
async fn pages_stop_early_and_find(
    inbox: &Inbox,
    tenant: &TenantId,
    query: PullQuery,
    wanted: &[zapinbox_core::EventId],
) {
    use zapinbox_core::Order;

    for order in [Order::Asc, Order::Desc] {
        let mut query = query.clone().order(order).limit(100);
        let (mut found, mut pages, mut short) = (Vec::new(), 0, 0);
        loop {
            let page = inbox.pull(tenant, query.clone()).await.expect("pull");
            pages += 1;
            short += usize::from(page.has_more && page.events.len() < 100);
            found.extend(page.events.iter().map(|e| e.id));
            match page.next_cursor {
                Some(cursor) if page.has_more => query = query.after(cursor),
                _ => break,
            }
            assert!(pages < 100, "the cursor advances");
        }
        let mut expected = wanted.to_vec();
        if order == Order::Desc {
            expected.reverse();
        }
        assert_eq!(found, expected, "{order:?}: each once, in order");
        assert!(
            short >= 1,
            "{order:?}: a page stopped early ({pages} pages)"
        );
    }
}

/// Pending rows whose last lease ran out are dead letters, skipped row by
/// row by a listing: past 4 096 of them, a page without any filter looks
/// at most that many entries too. With 5 994 such rows and 6 live events
/// among them, pages come back short with `has_more`, and following the
/// cursors finds the 6, once each, in order, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_past_many_spent_last_attempts_stop_early_and_miss_nothing() {
    use std::time::Duration;
    use zapinbox_core::{ClaimQuery, ManualClock, Timestamp};

    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let mut config = QueueConfig::default();
    config.clock = clock.clock();
    config.retry.max_attempts = 1;
    let harness = harness::SqliteHarness::without_maintenance();
    let inbox = Inbox::new(harness.open(config).await.expect("open"));
    let tenant = TenantId::new("spent").expect("tenant");
    let mut wanted = Vec::new();
    for batch in 0..6 {
        let mut events: Vec<_> = (0..999)
            .map(|i| NewEvent::new(json!({ "n": batch * 1000 + i })).with_topic("spent"))
            .collect();
        events.push(NewEvent::new(json!({ "kept": batch })).with_topic("kept"));
        let stored = inbox.ingest_batch(&tenant, events).await.expect("ingest");
        wanted.push(stored[999].id);
        let claim = ClaimQuery::new()
            .topic("spent")
            .limit(999)
            .lease(Duration::from_secs(1));
        let claimed = inbox.claim(&tenant, claim).await.expect("claim");
        assert_eq!(claimed.len(), 999);
    }
    clock.advance(Duration::from_secs(2));
    pages_stop_early_and_find(&inbox, &tenant, PullQuery::new(), &wanted).await;
    let dead = inbox
        .dead_letters(&tenant, PullQuery::new().limit(500))
        .await
        .expect("dead letters");
    assert_eq!(dead.events.len(), 500, "the spent rows are dead letters");
    inbox.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_hands_out_its_sqlite_backend() {
    let dir = tempfile::tempdir().expect("dir");
    let inbox = zapinbox_core::Inbox::new(
        SqliteBackend::open(dir.path().join("inbox.db"))
            .await
            .expect("open"),
    );
    let sqlite = inbox
        .backend_as::<SqliteBackend>()
        .expect("a SQLite backend");
    assert_eq!(
        sqlite.connection_settings().await.expect("settings").len(),
        5
    );
    assert!(inbox.backend_as::<zapinbox_core::MemoryBackend>().is_none());
    inbox.close().await.expect("close");
}
