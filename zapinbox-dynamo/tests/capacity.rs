//! Capacity units each inbox operation consumes, measured on DynamoDB
//! Local (`ReturnConsumedCapacity`), and checked against the tables the
//! crate docs (`docs/capacity.md`) and the README give.

mod support;

use std::time::Duration;

use serde_json::json;
use support::DynamoHarness;
use zapinbox_core::testkit::fresh_tenant;
use zapinbox_core::{ClaimQuery, Inbox, NewEvent, PullQuery, QueueConfig};
use zapinbox_dynamo::{DynamoBackend, Units};

/// Events per measurement: figures are averages over this many.
const N: usize = 10;

fn event(n: usize) -> NewEvent {
    // About 200 bytes of JSON, as a typical webhook-sized event.
    NewEvent::new(json!({ "n": n, "text": "x".repeat(180) })).with_topic("orders")
}

/// What `op` consumed per operation since the log was reset.
fn per_operation(backend: &DynamoBackend, op: &str) -> Units {
    let totals = backend.capacity().totals();
    totals.get(op).copied().unwrap_or_default().per_operation()
}

/// A row of the table: name, reads and writes per event.
fn row(name: &str, units: Units, events: usize) -> String {
    let per = |u: f64| u / events as f64;
    format!(
        "| {name} | {:.1} | {:.1} |",
        per(units.read),
        per(units.write)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_units_per_operation_match_the_docs() {
    let harness = DynamoHarness::new();
    let backend = harness.backend(QueueConfig::default()).await.expect("open");
    let inbox = Inbox::new(backend.clone());
    let tenant = fresh_tenant();
    // The first ingest of a tenant reads its sequence once; measure after.
    inbox.ingest(&tenant, event(0)).await.expect("ingest");
    let mut rows = Vec::new();

    backend.capacity().reset();
    for n in 0..N {
        inbox.ingest(&tenant, event(n)).await.expect("ingest");
    }
    rows.push(row(
        "ingest, one event",
        per_operation(&backend, "ingest"),
        1,
    ));

    backend.capacity().reset();
    for n in 0..N {
        let keyed = event(n).with_idempotency_key(format!("key-{n}"));
        inbox.ingest(&tenant, keyed).await.expect("ingest");
    }
    rows.push(row(
        "ingest with an idempotency key",
        per_operation(&backend, "ingest"),
        1,
    ));

    backend.capacity().reset();
    let batch = (0..N).map(event).collect();
    inbox.ingest_batch(&tenant, batch).await.expect("ingest");
    rows.push(row(
        "ingest_batch of 10, per event",
        per_operation(&backend, "ingest"),
        N,
    ));

    backend.capacity().reset();
    let page = inbox
        .pull(&tenant, PullQuery::new().limit(N as u32))
        .await
        .expect("pull");
    assert_eq!(page.events.len(), N);
    rows.push(row(
        "pull a page of 10, per event",
        per_operation(&backend, "pull"),
        N,
    ));

    backend.capacity().reset();
    let one = inbox.get(&tenant, page.events[0].id).await.expect("get");
    assert!(one.is_some());
    rows.push(row("get", per_operation(&backend, "get"), 1));

    backend.capacity().reset();
    let mut leases = Vec::new();
    for _ in 0..N {
        let leased = inbox
            .claim(&tenant, ClaimQuery::new().limit(1))
            .await
            .expect("claim");
        leases.extend(leased);
    }
    assert_eq!(leases.len(), N);
    rows.push(row("claim one event", per_operation(&backend, "claim"), 1));

    backend.capacity().reset();
    let leased = inbox
        .claim(&tenant, ClaimQuery::new().limit(N as u32))
        .await
        .expect("claim");
    assert_eq!(leased.len(), N);
    rows.push(row(
        "claim 10 at once, per event",
        per_operation(&backend, "claim"),
        N,
    ));

    backend.capacity().reset();
    for l in &leases {
        inbox
            .extend(&tenant, l.token, Duration::from_secs(60))
            .await
            .expect("extend");
    }
    rows.push(row("extend a lease", per_operation(&backend, "extend"), 1));

    backend.capacity().reset();
    for l in &leases {
        inbox.ack_lease(&tenant, l.token).await.expect("ack");
    }
    rows.push(row("ack_lease", per_operation(&backend, "ack_lease"), 1));

    backend.capacity().reset();
    for l in &leased {
        inbox.ack(&tenant, l.event.id).await.expect("ack");
    }
    rows.push(row("ack by id", per_operation(&backend, "ack"), 1));

    let measured = rows.join("\n");
    println!("{measured}");
    let documents = [
        (
            "zapinbox-dynamo/docs/capacity.md",
            include_str!("../docs/capacity.md"),
        ),
        ("README.md", include_str!("../../README.md")),
    ];
    for (name, text) in documents {
        for line in measured.lines() {
            assert!(
                text.contains(line),
                "{name} should have the measured row\n{line}\nmeasured:\n{measured}"
            );
        }
    }
}
