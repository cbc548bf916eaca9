use std::time::Duration;

use serde_json::json;

use crate::testkit::{Harness, assert_unsupported, fresh_tenant, open_inbox, pull_all};
use crate::{
    Action, BufferedEmitter, ClaimQuery, Emit, EmitterConfig, Inbox, NewEvent, PullQuery,
    UsageRecord, sum_usage, utc_day,
};

/// An event of `client` on `topic` whose payload is `bytes` long.
fn sized(client: &str, topic: &str, bytes: usize) -> NewEvent {
    // {"p":"xxx"} is 8 bytes around the string.
    NewEvent::new(json!({ "p": "x".repeat(bytes - 8) }))
        .with_client_id(client)
        .with_topic(topic)
}

/// With metering on, the usage records of a tenant add up exactly to what
/// was done: events ingested and delivered by client and topic with their
/// bytes, acks and deletes, a client's mistake billed and counted once.
pub async fn usage_records_add_up_to_the_operations(harness: &dyn Harness) {
    let (plain, clock) = open_inbox(harness).await;
    let inbox = Inbox::builder(plain.backend().clone())
        .metering(true)
        .build();
    let tenant = fresh_tenant();
    let day = utc_day(clock.now());
    if inbox.backend().metering().is_none() {
        assert_unsupported(inbox.usage(&tenant, day..=day).await, "usage");
        return;
    }
    for _ in 0..3 {
        inbox
            .ingest(&tenant, sized("c1", "a", 20))
            .await
            .expect("ingest");
    }
    let batch = vec![sized("c2", "b", 30), sized("c2", "b", 30)];
    inbox.ingest_batch(&tenant, batch).await.expect("batch");
    assert_eq!(pull_all(&inbox, &tenant, PullQuery::new()).await.len(), 5);
    let leased = inbox
        .claim(&tenant, ClaimQuery::new().limit(2))
        .await
        .expect("claim");
    for l in &leased {
        inbox.ack_lease(&tenant, l.token).await.expect("ack");
    }
    let pending = pull_all(&plain, &tenant, PullQuery::new()).await;
    inbox.delete(&tenant, pending[0].id).await.expect("delete");
    let unknown = inbox.ack(&tenant, inbox.clock().next_id()).await;
    assert!(unknown.is_err(), "not found: the client's mistake");

    let record = |who: (Option<&str>, Option<&str>), action, billable, counts| {
        let who = (who.0.map(str::to_owned), who.1.map(str::to_owned));
        UsageRecord::new(tenant.clone(), day, who, action, billable, counts)
    };
    let (c1a, c2b) = ((Some("c1"), Some("a")), (Some("c2"), Some("b")));
    let claimed = leased.iter().map(|l| {
        let who = (l.event.client_id.as_deref(), l.event.topic.as_deref());
        record(
            who,
            Action::Deliver,
            true,
            (1, l.event.payload.len() as u64),
        )
    });
    let expected = sum_usage(
        [
            record(c1a, Action::Ingest, true, (3, 60)),
            record(c2b, Action::Ingest, true, (2, 60)),
            record(c1a, Action::Deliver, true, (3, 60)),
            record(c2b, Action::Deliver, true, (2, 60)),
            record((None, None), Action::Ack, true, (2, 0)),
            record((None, None), Action::Ack, true, (1, 0)),
            record((None, None), Action::Delete, true, (1, 0)),
        ]
        .into_iter()
        .chain(claimed),
    );
    let usage = inbox.usage(&tenant, day..=day).await.expect("usage");
    assert_eq!(usage, expected);
    let other_day = inbox
        .usage(&tenant, day + 1..=day + 9)
        .await
        .expect("usage");
    assert!(other_day.is_empty());
}

/// A buffered emitter never waits: with its buffer full it drops and
/// counts what does not fit, and `close` writes everything it accepted.
pub async fn buffered_emitter_drops_when_full_and_delivers_what_it_accepted(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let metered = inbox.backend().metering().is_some();
    let day = utc_day(clock.now());
    let (emitting, owner) = (inbox.clone(), tenant.clone());
    // On a runtime of its own with one thread, the emitter's task cannot
    // take anything out of the buffer until this code awaits: exactly the
    // buffer's capacity is accepted.
    let (accepted, dropped) = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let config = EmitterConfig {
                capacity: 10,
                batch: 100,
                linger: Duration::from_secs(10),
            };
            let emitter = BufferedEmitter::new(emitting, config);
            let mut accepted = 0u64;
            for n in 0..3_000 {
                let event = NewEvent::new(json!({ "n": n }));
                accepted += u64::from(emitter.emit(Emit::Event(owner.clone(), event)));
            }
            if metered {
                emitter.flush().await;
                let who = (Some("host".to_owned()), None);
                let record = UsageRecord::new(owner, day, who, Action::Ingest, true, (7, 70));
                assert!(emitter.emit(Emit::Usage(record)), "room after a flush");
            }
            (accepted, emitter.close().await)
        })
    })
    .await
    .expect("the emitter's runtime");
    assert_eq!((accepted, dropped.full), (10, 2_990), "{dropped:?}");
    assert_eq!((dropped.closed, dropped.failed), (0, 0));
    let stored = pull_all(&inbox, &tenant, PullQuery::new()).await;
    assert_eq!(
        stored.len() as u64,
        accepted,
        "everything accepted is written"
    );
    if metered {
        let usage = inbox.usage(&tenant, day..=day).await.expect("usage");
        assert_eq!(usage.iter().map(|r| r.count).sum::<u64>(), 7);
    }
}
