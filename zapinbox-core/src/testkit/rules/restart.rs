use std::time::Duration;

use crate::testkit::{Harness, fresh_tenant, numbered, open_inbox, pull_all};
use crate::{EventStatus, Inbox, PullQuery, QueueConfig};

/// Reopening the storage finds every event, status and key as it was, and
/// a cursor taken before the restart still continues correctly.
pub async fn state_survives_reopen(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let mut ids = Vec::new();
    for n in 0..6 {
        let event = numbered(n).with_idempotency_key(format!("k{n}"));
        ids.push(inbox.ingest(&tenant, event).await.expect("ingest").id);
    }
    inbox.ack(&tenant, ids[0]).await.expect("ack");
    inbox.delete(&tenant, ids[1]).await.expect("delete");
    let page = inbox
        .pull(&tenant, PullQuery::new().limit(2))
        .await
        .expect("pull");
    let cursor = page.next_cursor.expect("more");
    drop(inbox);

    clock.advance(Duration::from_secs(1));
    let reopened = harness
        .open(QueueConfig::default().with_clock(clock.clock()))
        .await
        .expect("reopen");
    let inbox = Inbox::new(reopened);
    let acked = inbox
        .get(&tenant, ids[0])
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(acked.status, EventStatus::Acked);
    assert_eq!(inbox.get(&tenant, ids[1]).await.expect("get"), None);
    let pending: Vec<_> = pull_all(&inbox, &tenant, PullQuery::new())
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(pending, ids[2..].to_vec());
    let rest = inbox
        .pull(&tenant, PullQuery::new().limit(2).after(cursor))
        .await
        .expect("pull");
    assert_eq!(
        rest.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[4..].to_vec()
    );
    let retry = inbox
        .ingest(&tenant, numbered(3).with_idempotency_key("k3"))
        .await
        .expect("retry");
    assert_eq!((retry.id, retry.duplicate), (ids[3], true));
}
