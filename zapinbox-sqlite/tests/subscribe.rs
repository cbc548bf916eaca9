//! Subscriptions see what other processes commit to the same file.

mod harness;

use std::collections::HashMap;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::json;
use zapinbox_core::{EventId, Filter, Inbox, NewEvent, PullQuery, Result, Subscribed, TenantId};
use zapinbox_sqlite::SqliteBackend;

const CHILD_DB: &str = "ZAPINBOX_SUBSCRIBE_CHILD_DB";
const CHILD_NAME: &str = "ZAPINBOX_SUBSCRIBE_CHILD_NAME";
const PER_PROCESS: usize = 300;
const PATIENCE: Duration = Duration::from_secs(60);

fn tenant() -> TenantId {
    TenantId::new("watched").expect("tenant")
}

/// A subscription to the watched tenant, from the beginning.
async fn watch(inbox: &Inbox) -> Pin<Box<dyn Stream<Item = Result<Subscribed>> + Send>> {
    let live = inbox.subscribe(&tenant(), Filter::default(), None).await;
    Box::pin(live.expect("subscribe"))
}

/// The other processes' side; runs only when started by the test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the other process's side: started by the test below with --ignored"]
async fn child_process_entry_point() {
    let (Some(path), Some(name)) = (std::env::var_os(CHILD_DB), std::env::var_os(CHILD_NAME))
    else {
        return;
    };
    let name = name.to_string_lossy().into_owned();
    let backend = SqliteBackend::open(std::path::Path::new(&path))
        .await
        .expect("open");
    let inbox = Inbox::new(backend.clone());
    for n in 0..PER_PROCESS {
        let event = NewEvent::new(json!({ "by": name, "n": n }));
        inbox.ingest(&tenant(), event).await.expect("ingest");
    }
    backend.close().await.expect("close");
}

/// Two other processes ingest into the file at once; here a subscription
/// and a reader paging with cursors each see every event exactly once, in
/// the same commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_other_processes_commits_exactly_once() {
    let harness = harness::SqliteHarness::new();
    let path = harness.path();
    let backend = SqliteBackend::open(&path).await.expect("create");
    let inbox = Inbox::new(backend.clone());
    let mut live = watch(&inbox).await;
    let children: Vec<_> = ["first", "second"]
        .iter()
        .map(|name| {
            harness::child_process()
                .env(CHILD_DB, &path)
                .env(CHILD_NAME, name)
                .stdout(Stdio::null())
                .spawn()
                .expect("start a writer process")
        })
        .collect();

    let reader = {
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut query = PullQuery::new().limit(50);
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while seen.len() < 2 * PER_PROCESS {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} read",
                    seen.len()
                );
                let page = inbox.pull(&tenant(), query.clone()).await.expect("pull");
                seen.extend(page.events.iter().map(|e| e.id));
                if let Some(cursor) = page.next_cursor {
                    query = query.after(cursor);
                }
                if !page.has_more {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            seen
        })
    };

    let mut subscribed: Vec<EventId> = Vec::new();
    let mut by: HashMap<String, usize> = HashMap::new();
    while subscribed.len() < 2 * PER_PROCESS {
        let item = tokio::time::timeout(PATIENCE, live.next())
            .await
            .unwrap_or_else(|_| panic!("{} events came, then nothing", subscribed.len()))
            .expect("the stream goes on")
            .expect("an event");
        let payload = item.event.payload.as_value().expect("json");
        *by.entry(payload["by"].to_string()).or_default() += 1;
        subscribed.push(item.event.id);
    }
    for child in children {
        harness::finished(child).await;
    }
    let paged = reader.await.expect("reader");
    let committed: Vec<EventId> = inbox
        .pull(&tenant(), PullQuery::new().limit(1000))
        .await
        .expect("pull")
        .events
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(committed.len(), 2 * PER_PROCESS);
    assert_eq!(
        subscribed, committed,
        "the subscription: each once, in commit order"
    );
    assert_eq!(
        paged, committed,
        "the paging reader: each once, in commit order"
    );
    assert_eq!(by.len(), 2, "both processes' events: {by:?}");
    let quiet = tokio::time::timeout(Duration::from_millis(100), live.next()).await;
    assert!(quiet.is_err(), "nothing more: {quiet:?}");
    backend.close().await.expect("close");
}

/// Closing the backend ends its subscriptions: the waiting stream looks
/// again, yields the error and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_backend_ends_its_subscriptions() {
    let harness = harness::SqliteHarness::new();
    let backend = SqliteBackend::open(harness.path()).await.expect("open");
    let inbox = Inbox::new(backend.clone());
    let mut live = watch(&inbox).await;
    let waiting = tokio::spawn(async move {
        let first = live.next().await;
        let after = live.next().await;
        (first, after)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    backend.close().await.expect("close");
    let (first, after) = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the stream ends")
        .expect("task");
    assert!(matches!(first, Some(Err(_))), "{first:?}");
    assert!(after.is_none());
}
