//! Real storage faults in the middle of a group commit: the file fills up
//! (`PRAGMA max_page_count` on the writer's connection) while 64 producers
//! ingest at once. These tests live in the crate because only the writer's
//! own connection can be given the limit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::json;
use zapinbox_core::{Error, EventId, Inbox, NewEvent, PullQuery, Result, TenantId};

use crate::SqliteBackend;

const PRODUCERS: usize = 64;
const EACH: usize = 12;

/// Sets the writer's page limit: `extra` pages over what the file has.
async fn limit_pages(backend: &SqliteBackend, extra: Option<i64>) -> i64 {
    backend
        .writer()
        .direct(move |conn, _| {
            let pages: i64 = conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .map_err(crate::error::storage)?;
            let limit = extra.map_or(i64::from(u32::MAX) - 1, |extra| pages + extra);
            conn.query_row(&format!("PRAGMA max_page_count = {limit}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(crate::error::storage)
        })
        .await
        .expect("set max_page_count")
}

/// What one producer was told about one event.
struct Outcome {
    marker: String,
    key: Option<String>,
    result: Result<EventId>,
}

async fn produce(inbox: Inbox, tenant: TenantId, producer: usize) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(EACH);
    for n in 0..EACH {
        let marker = format!("{producer}-{n}");
        // Half the producers use idempotency keys: a key row must never be
        // kept without its event, nor an event without its key.
        let key = producer.is_multiple_of(2).then(|| format!("key-{marker}"));
        let mut event = NewEvent::new(json!({ "marker": marker, "pad": "x".repeat(1500) }));
        if let Some(key) = &key {
            event = event.with_idempotency_key(key.clone());
        }
        let result = inbox.ingest(&tenant, event).await.map(|i| i.id);
        outcomes.push(Outcome {
            marker,
            key,
            result,
        });
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_mid_group_commit_answers_each_caller_truthfully() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = SqliteBackend::builder(dir.path().join("full.db"))
        .maintenance_interval(None)
        .open()
        .await
        .expect("open");
    let inbox = Inbox::new(backend.clone());
    let tenant = TenantId::new("full").expect("tenant");
    inbox
        .ingest(&tenant, NewEvent::new(json!({ "marker": "first" })))
        .await
        .expect("room for one");
    // Room for about a hundred of the 768 events to come.
    limit_pages(&backend, Some(60)).await;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| tokio::spawn(produce(inbox.clone(), tenant.clone(), p)))
        .collect();
    let mut outcomes = Vec::new();
    for producer in producers {
        outcomes.extend(producer.await.expect("producer task"));
    }
    limit_pages(&backend, None).await;

    let refused = outcomes.iter().filter(|o| o.result.is_err()).count();
    assert!(
        refused > 0 && refused < outcomes.len(),
        "the file filled up part way: {refused} of {} refused",
        outcomes.len()
    );
    // Whether SQLite rolls back the statement or the whole transaction on
    // SQLITE_FULL depends on the statement; both paths answer truthfully.
    assert!(
        outcomes.iter().any(|o| matches!(&o.result,
            Err(e) if e.to_string().contains("full"))),
        "the refusals come from the full file"
    );
    let stored: HashMap<String, EventId> = {
        let mut stored = HashMap::new();
        let mut query = PullQuery::new().limit(1000);
        loop {
            let page = inbox.pull(&tenant, query.clone()).await.expect("pull");
            for event in page.events {
                let payload = event.payload.as_value().expect("whole payloads");
                let marker = payload["marker"].as_str().expect("marker").to_owned();
                assert!(stored.insert(marker, event.id).is_none(), "no event twice");
            }
            match page.next_cursor {
                Some(cursor) if page.has_more => query = query.after(cursor),
                _ => break,
            }
        }
        stored
    };
    for o in &outcomes {
        let key_points_to = match &o.key {
            Some(key) => inbox.find_by_key(&tenant, key).await.expect("find"),
            None => None,
        };
        match &o.result {
            Ok(id) => {
                assert_eq!(stored.get(&o.marker), Some(id), "{}: answered Ok", o.marker);
                if o.key.is_some() {
                    assert_eq!(key_points_to, Some(*id), "{}: its key is kept", o.marker);
                }
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::Backend { .. }),
                    "{}: a storage error: {e:?}",
                    o.marker
                );
                assert_eq!(stored.get(&o.marker), None, "{}: answered Err", o.marker);
                assert_eq!(
                    key_points_to, None,
                    "{}: no key without its event",
                    o.marker
                );
            }
        }
    }
    let answered: HashSet<&str> = outcomes.iter().map(|o| o.marker.as_str()).collect();
    let unanswered: Vec<_> = stored
        .keys()
        .filter(|m| *m != "first" && !answered.contains(m.as_str()))
        .collect();
    assert!(unanswered.is_empty(), "{unanswered:?}");

    let integrity = backend
        .writer()
        .direct(|conn, _| {
            conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
                .map_err(crate::error::storage)
        })
        .await
        .expect("integrity check");
    assert_eq!(integrity, "ok");
    // With room again, the refused events go in on retry, once each.
    let retry = Arc::new(inbox.clone());
    for o in outcomes.iter().filter(|o| o.result.is_err()) {
        let mut event = NewEvent::new(json!({ "marker": o.marker, "pad": "x".repeat(1500) }));
        if let Some(key) = &o.key {
            event = event.with_idempotency_key(key.clone());
        }
        let again = retry.ingest(&tenant, event).await.expect("room again");
        assert!(!again.duplicate, "{}: it was never stored", o.marker);
    }
    backend.close().await.expect("close");
}
