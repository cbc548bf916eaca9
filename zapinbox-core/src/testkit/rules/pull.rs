use std::collections::HashSet;
use std::time::Duration;

use crate::testkit::{
    Harness, eventually, fresh_tenant, number_of, numbered, open_inbox, pull_all, shared_patience,
    start_time,
};
use crate::{
    Cursor, Error, EventId, Filter, Inbox, ManualClock, Order, PullQuery, QueueConfig, TenantId,
};

/// Each filter alone and all combined select exactly the matching events.
pub async fn pull_filters_alone_and_combined(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let mut all = Vec::new();
    for n in 0..24 {
        if n == 12 {
            clock.advance(Duration::from_secs(60));
        }
        let event = numbered(n)
            .with_topic(["orders", "refunds"][n % 2])
            .with_type(["created", "updated", "closed"][n % 3])
            .with_source(["shop", "pos", "api", "cli"][n % 4]);
        let id = inbox.ingest(&tenant, event).await.expect("ingest").id;
        all.push((n, id));
    }
    let since = clock.now();
    let expect = |pred: &dyn Fn(usize) -> bool| -> Vec<EventId> {
        all.iter()
            .filter(|(n, _)| pred(*n))
            .map(|(_, id)| *id)
            .collect()
    };
    let cases: Vec<(PullQuery, Vec<EventId>)> = vec![
        (PullQuery::new().topic("orders"), expect(&|n| n % 2 == 0)),
        (
            PullQuery::new().event_type("closed"),
            expect(&|n| n % 3 == 2),
        ),
        (PullQuery::new().source("pos"), expect(&|n| n % 4 == 1)),
        (PullQuery::new().since(since), expect(&|n| n >= 12)),
        (
            PullQuery::new()
                .topic("orders")
                .event_type("created")
                .source("shop")
                .since(since),
            expect(&|n| n >= 12 && n % 2 == 0 && n % 3 == 0 && n % 4 == 0),
        ),
        (PullQuery::new().topic("orders").source("pos"), Vec::new()),
        (PullQuery::new().topic("ORDERS"), Vec::new()),
        (
            PullQuery::new().filter(Filter::default()),
            expect(&|_| true),
        ),
    ];
    for (query, expected) in cases {
        let got: Vec<_> = pull_all(&inbox, &tenant, query.clone().limit(5))
            .await
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(got, expected, "{query:?}");
    }
}

/// Ascending is oldest first (the default); descending is its reverse.
pub async fn pull_orders_ascending_and_descending(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    for n in 0..9 {
        inbox.ingest(&tenant, numbered(n)).await.expect("ingest");
    }
    let numbers =
        |events: Vec<crate::Event>| -> Vec<u64> { events.iter().filter_map(number_of).collect() };
    let asc = numbers(pull_all(&inbox, &tenant, PullQuery::new().limit(4)).await);
    let desc = numbers(
        pull_all(
            &inbox,
            &tenant,
            PullQuery::new().order(Order::Desc).limit(4),
        )
        .await,
    );
    assert_eq!(asc, (0..9).collect::<Vec<_>>());
    assert_eq!(desc, (0..9).rev().collect::<Vec<_>>());
    let first = inbox
        .pull(&tenant, PullQuery::new().limit(3))
        .await
        .expect("pull");
    assert_eq!(numbers(first.events), vec![0, 1, 2]);
}

/// Walks the inbox oldest first in pages while events are ingested, acked
/// and deleted between pages: no event is skipped or repeated.
pub async fn pagination_is_exact_while_events_change(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let mut alive: Vec<EventId> = Vec::new();
    for n in 0..30 {
        alive.push(inbox.ingest(&tenant, numbered(n)).await.expect("ingest").id);
    }
    let mut seen: Vec<EventId> = Vec::new();
    let mut removed: HashSet<EventId> = HashSet::new();
    let mut query = PullQuery::new().limit(7);
    let mut pages = 0;
    let mut next = 1000;
    loop {
        let page = inbox.pull(&tenant, query.clone()).await.expect("pull");
        pages += 1;
        seen.extend(page.events.iter().map(|e| e.id));
        // Change the part of the inbox not yet read.
        let unseen: Vec<EventId> = alive
            .iter()
            .filter(|id| !seen.contains(id) && !removed.contains(id))
            .copied()
            .collect();
        if let [first, .., last] = unseen[..] {
            inbox.ack(&tenant, first).await.expect("ack");
            inbox.delete(&tenant, last).await.expect("delete");
            removed.extend([first, last]);
        }
        // And the part already read, the cursor's own event included.
        if let (Some(cursor_event), Some(early)) = (page.events.last(), seen.first()) {
            inbox
                .delete(&tenant, cursor_event.id)
                .await
                .expect("delete");
            let _ = inbox.ack(&tenant, *early).await;
        }
        if pages <= 4 {
            for _ in 0..2 {
                alive.push(
                    inbox
                        .ingest(&tenant, numbered(next))
                        .await
                        .expect("ingest")
                        .id,
                );
                next += 1;
            }
        }
        if let Some(cursor) = page.next_cursor {
            query = query.after(cursor);
        }
        if !page.has_more {
            break;
        }
    }
    assert!(pages >= 3, "walked {pages} pages");
    let expected: Vec<EventId> = alive
        .into_iter()
        .filter(|id| !removed.contains(id))
        .collect();
    assert_eq!(seen, expected, "every surviving event once, in order");

    // The last cursor keeps its place: what arrives later comes next.
    let mut later = Vec::new();
    for n in 0..3 {
        later.push(
            inbox
                .ingest(&tenant, numbered(2000 + n))
                .await
                .expect("ingest")
                .id,
        );
    }
    let tail = inbox.pull(&tenant, query.clone()).await.expect("pull");
    assert_eq!(tail.events.iter().map(|e| e.id).collect::<Vec<_>>(), later);
    assert!(!tail.has_more);
    let after_tail = query.after(tail.next_cursor.expect("a cursor after the tail"));
    let empty = inbox.pull(&tenant, after_tail.clone()).await.expect("pull");
    assert!(empty.events.is_empty() && !empty.has_more);
    assert_eq!(
        empty.next_cursor, after_tail.cursor,
        "an empty page keeps the cursor"
    );
}

/// Commit order, not id order: an event whose id sorts before the cursor
/// (a writer whose clock is behind) but that commits after the reader
/// passed still comes next, oldest-first.
pub async fn late_commit_with_a_smaller_id_is_not_skipped(harness: &dyn Harness) {
    let ahead = ManualClock::new(start_time().saturating_add(Duration::from_secs(3600)));
    let behind = ManualClock::new(start_time());
    let open = |clock: &ManualClock| harness.open(QueueConfig::default().with_clock(clock.clock()));
    let fast = Inbox::new(open(&ahead).await.expect("open"));
    let slow = Inbox::new(open(&behind).await.expect("open the same storage again"));
    let tenant = fresh_tenant();
    for n in 0..3 {
        fast.ingest(&tenant, numbered(n)).await.expect("ingest");
    }
    let page = fast.pull(&tenant, PullQuery::new()).await.expect("pull");
    assert_eq!(page.events.len(), 3);
    let newest = page.events[2].id;
    let mut late = Vec::new();
    for n in 10..12 {
        late.push(slow.ingest(&tenant, numbered(n)).await.expect("ingest").id);
    }
    assert!(
        late.iter().all(|id| *id < newest),
        "the late ids sort before the cursor"
    );
    let seen = eventually(shared_patience(&fast), || async {
        fast.get(&tenant, late[1]).await.expect("get").is_some()
    });
    assert!(seen.await, "the other handle's writes are seen in time");
    let next = PullQuery::new().after(page.next_cursor.expect("cursor"));
    let rest = fast.pull(&tenant, next).await.expect("pull");
    assert_eq!(rest.events.iter().map(|e| e.id).collect::<Vec<_>>(), late);
}

/// Walks the inbox newest first while it changes: every event present at
/// the start and not removed before it was reached appears once; events
/// ingested during the walk are newer than its start and do not appear.
pub async fn descending_pagination_is_exact_while_events_change(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let mut initial: Vec<EventId> = Vec::new();
    for n in 0..30 {
        initial.push(inbox.ingest(&tenant, numbered(n)).await.expect("ingest").id);
    }
    let mut seen: Vec<EventId> = Vec::new();
    let mut removed: HashSet<EventId> = HashSet::new();
    let mut query = PullQuery::new().order(Order::Desc).limit(7);
    let mut pages = 0;
    loop {
        let page = inbox.pull(&tenant, query.clone()).await.expect("pull");
        pages += 1;
        seen.extend(page.events.iter().map(|e| e.id));
        let unseen: Vec<EventId> = initial
            .iter()
            .filter(|id| !seen.contains(id) && !removed.contains(id))
            .copied()
            .collect();
        if let [first, .., last] = unseen[..] {
            inbox.ack(&tenant, last).await.expect("ack");
            inbox.delete(&tenant, first).await.expect("delete");
            removed.extend([first, last]);
        }
        inbox
            .ingest(&tenant, numbered(1000 + pages))
            .await
            .expect("ingest");
        match page.next_cursor {
            Some(cursor) if page.has_more => query = query.after(cursor),
            _ => break,
        }
    }
    assert!(pages >= 3, "walked {pages} pages");
    let expected: Vec<EventId> = initial
        .into_iter()
        .rev()
        .filter(|id| !removed.contains(id))
        .collect();
    assert_eq!(seen, expected);
}

/// `limit` must be 1 to 1000; a page never holds more.
pub async fn limit_is_bounded(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    for n in 0..3 {
        inbox.ingest(&tenant, numbered(n)).await.expect("ingest");
    }
    for bad in [0, 1001, u32::MAX] {
        let r = inbox.pull(&tenant, PullQuery::new().limit(bad)).await;
        assert!(
            matches!(r, Err(Error::InvalidInput(_))),
            "limit {bad}: {r:?}"
        );
    }
    let one = inbox
        .pull(&tenant, PullQuery::new().limit(1))
        .await
        .expect("pull");
    assert_eq!(one.events.len(), 1);
    assert!(one.next_cursor.is_some());
    assert!(one.has_more);
    let max = inbox
        .pull(&tenant, PullQuery::new().limit(1000))
        .await
        .expect("pull");
    assert_eq!((max.events.len(), max.has_more), (3, false));
    let exact = inbox
        .pull(&tenant, PullQuery::new().limit(3))
        .await
        .expect("pull");
    assert_eq!((exact.events.len(), exact.has_more), (3, false));
    let none = inbox
        .pull(&fresh_tenant(), PullQuery::new())
        .await
        .expect("pull");
    assert_eq!(
        (none.events.len(), none.has_more, none.next_cursor),
        (0, false, None)
    );
}

/// A cursor that was altered, made up, or made for another tenant or order
/// is `InvalidInput`.
pub async fn tampered_or_foreign_cursor_is_invalid_input(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let (tenant, other) = (fresh_tenant(), fresh_tenant());
    for n in 0..4 {
        inbox.ingest(&tenant, numbered(n)).await.expect("ingest");
        inbox.ingest(&other, numbered(n)).await.expect("ingest");
    }
    let cursor_of = |inbox: Inbox, tenant: TenantId, order: Order| async move {
        let page = inbox
            .pull(&tenant, PullQuery::new().order(order).limit(2))
            .await
            .expect("pull");
        page.next_cursor.expect("more pages")
    };
    let good = cursor_of(inbox.clone(), tenant.clone(), Order::Asc).await;
    let text = good.as_str().to_owned();
    let mut bad: Vec<String> = Vec::new();
    for i in 0..text.len() {
        let mut bytes = text.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        bad.push(String::from_utf8(bytes).expect("ascii"));
    }
    bad.push(text[..text.len() - 1].to_owned());
    bad.push(format!("{text}A"));
    bad.extend(["", "garbage", "!!!", "0", &"A".repeat(5000), "\u{0}", "ü"].map(String::from));
    bad.push(
        cursor_of(inbox.clone(), other.clone(), Order::Asc)
            .await
            .as_str()
            .to_owned(),
    );
    for cursor in bad {
        let r = inbox
            .pull(
                &tenant,
                PullQuery::new().after(Cursor::from_string(cursor.clone())),
            )
            .await;
        assert!(
            matches!(r, Err(Error::InvalidInput(_))),
            "cursor {cursor:?}: {r:?}"
        );
    }
    let desc = cursor_of(inbox.clone(), tenant.clone(), Order::Desc).await;
    let r = inbox.pull(&tenant, PullQuery::new().after(desc)).await;
    assert!(
        matches!(r, Err(Error::InvalidInput(_))),
        "desc cursor, asc query: {r:?}"
    );
    let ok = inbox
        .pull(&tenant, PullQuery::new().after(good))
        .await
        .expect("good cursor");
    assert_eq!(
        ok.events.iter().filter_map(number_of).collect::<Vec<_>>(),
        vec![2, 3]
    );
}

/// `stream_pending` yields every pending event matching its query once, in
/// order, across pages, while events are acked behind it.
pub async fn stream_pending_yields_every_event_once(harness: &dyn Harness) {
    use futures::StreamExt;
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let mut ids = Vec::new();
    for n in 0..23 {
        let event = numbered(n).with_topic(if n % 3 == 0 { "other" } else { "t" });
        ids.push(inbox.ingest(&tenant, event).await.expect("ingest").id);
    }
    let query = PullQuery::new().topic("t").limit(4);
    let mut stream = std::pin::pin!(inbox.stream_pending(&tenant, query));
    let mut seen = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.expect("a page");
        // Acking what was read does not make the stream skip or repeat.
        inbox.ack(&tenant, event.id).await.expect("ack");
        seen.push(number_of(&event).expect("numbered"));
    }
    let wanted: Vec<u64> = (0..23).filter(|n| n % 3 != 0).collect();
    assert_eq!(seen, wanted);
}
