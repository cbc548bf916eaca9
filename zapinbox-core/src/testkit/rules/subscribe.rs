use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::testkit::{Harness, fresh_tenant, ingest_numbered, numbered, open_inbox, pull_all};
use crate::{Error, EventId, Filter, Inbox, PullQuery, Result, Subscribed, TenantId};

/// Longest wait for a subscription item that must come.
const PATIENCE: Duration = Duration::from_secs(30);

/// The next `n` items of `stream`, each within [`PATIENCE`].
async fn take<S>(stream: &mut S, n: usize) -> Vec<Subscribed>
where
    S: Stream<Item = Result<Subscribed>> + Unpin,
{
    let mut items = Vec::with_capacity(n);
    while items.len() < n {
        let item = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .unwrap_or_else(|_| panic!("item {} of {n} did not come", items.len()))
            .expect("the stream goes on")
            .expect("an item");
        items.push(item);
    }
    items
}

fn ids(items: &[Subscribed]) -> Vec<EventId> {
    items.iter().map(|i| i.event.id).collect()
}

/// Subscribing from a cursor while four producers ingest 2 000 events
/// yields exactly the events after the cursor, in commit order, with no
/// gap or duplicate where the backlog hands over to live events; resuming
/// from any item's cursor yields exactly the rest.
pub async fn subscription_hands_over_from_backlog_to_live_exactly(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    for n in 0..50 {
        inbox.ingest(&tenant, numbered(n)).await.expect("ingest");
    }
    let first = inbox
        .pull(&tenant, PullQuery::new().limit(20))
        .await
        .expect("pull");
    let from = first.next_cursor.expect("a cursor");
    let mut live = Box::pin(
        inbox
            .subscribe(&tenant, Filter::default(), Some(from))
            .await
            .expect("subscribe"),
    );
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (inbox, tenant) = (inbox.clone(), tenant.clone());
            tokio::spawn(async move {
                for n in 0..500 {
                    let event = numbered(1000 + p * 500 + n);
                    inbox.ingest(&tenant, event).await.expect("ingest");
                }
            })
        })
        .collect();
    let seen = take(&mut live, 30 + 2000).await;
    for producer in producers {
        producer.await.expect("producer");
    }
    let all = pull_all(&inbox, &tenant, PullQuery::new().limit(1000)).await;
    let expected: Vec<EventId> = all.iter().skip(20).map(|e| e.id).collect();
    assert_eq!(
        ids(&seen),
        expected,
        "the events after the cursor, in commit order"
    );
    drop(live);

    for at in [0, 29, 30, 1000, seen.len() - 2] {
        let mut resumed = Box::pin(
            inbox
                .subscribe(&tenant, Filter::default(), Some(seen[at].cursor.clone()))
                .await
                .expect("resume"),
        );
        let rest = take(&mut resumed, seen.len() - at - 1).await;
        assert_eq!(
            ids(&rest),
            expected[at + 1..].to_vec(),
            "resumed after item {at}"
        );
    }
}

/// A tenant holds at most two subscriptions at once: the third is
/// `TooManySubscriptions`, another tenant is not affected, and dropping
/// one frees its place at once.
pub async fn third_subscription_is_refused_until_one_is_dropped(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let (tenant, other) = (fresh_tenant(), fresh_tenant());
    let subscribe = |inbox: &Inbox, tenant: &TenantId| {
        let (inbox, tenant) = (inbox.clone(), tenant.clone());
        async move { inbox.subscribe(&tenant, Filter::default(), None).await }
    };
    let first = subscribe(&inbox, &tenant).await.expect("first");
    let second = subscribe(&inbox, &tenant).await.expect("second");
    let third = subscribe(&inbox, &tenant).await.map(drop);
    assert!(
        matches!(third, Err(Error::TooManySubscriptions { limit: 2 })),
        "{third:?}"
    );
    drop(second);
    let garbage = Some(crate::Cursor::from_string("garbage"));
    let bad = inbox
        .subscribe(&tenant, Filter::default(), garbage)
        .await
        .map(drop);
    assert!(matches!(bad, Err(Error::InvalidInput(_))), "{bad:?}");
    let second = subscribe(&inbox, &tenant)
        .await
        .expect("the bad one took no place");
    let elsewhere = subscribe(&inbox, &other).await.expect("another tenant's");
    drop(first);
    let again = subscribe(&inbox, &tenant).await.expect("a place was freed");
    drop((second, elsewhere, again));
}

/// A subscription shows its own tenant's events passing its filter, and
/// nothing else.
pub async fn subscription_shows_only_its_tenant_and_filter(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let (tenant, other) = (fresh_tenant(), fresh_tenant());
    let topic = Filter {
        topic: Some("t".into()),
        ..Filter::default()
    };
    let mut live = Box::pin(
        inbox
            .subscribe(&tenant, topic, None)
            .await
            .expect("subscribe"),
    );
    let mut wanted = Vec::new();
    for n in 0..6 {
        inbox
            .ingest(&other, numbered(n).with_topic("t"))
            .await
            .expect("other tenant");
        inbox
            .ingest(&tenant, numbered(n).with_topic("u"))
            .await
            .expect("other topic");
        let id = inbox
            .ingest(&tenant, numbered(n).with_topic("t"))
            .await
            .expect("wanted")
            .id;
        wanted.push(id);
    }
    let seen = take(&mut live, wanted.len()).await;
    assert_eq!(ids(&seen), wanted);
    assert!(seen.iter().all(|s| s.event.tenant == tenant));
}

/// A subscriber that reads nothing while 1 500 events arrive loses none:
/// it reads ahead at most a page, and catches up from its cursor.
pub async fn a_slow_subscriber_loses_nothing(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let mut live = Box::pin(
        inbox
            .subscribe(&tenant, Filter::default(), None)
            .await
            .expect("subscribe"),
    );
    let first = inbox.ingest(&tenant, numbered(0)).await.expect("ingest").id;
    assert_eq!(ids(&take(&mut live, 1).await), vec![first]);
    let wanted = ingest_numbered(&inbox, &tenant, 1..1500).await;
    assert_eq!(ids(&take(&mut live, wanted.len()).await), wanted);
}
