//! The 30-second tour of zapinbox on its embedded default, SQLite.
//!
//!     cargo run --example quickstart
//!     ZAPINBOX_BACKEND=kafka cargo run --features kafka --example quickstart
//!     ZAPINBOX_BACKEND=dynamo ZAPINBOX_DYNAMO_ENDPOINT=http://127.0.0.1:8000 \
//!         cargo run --features dynamo --example quickstart
//!
//! Opens (or creates) an inbox, stores events for two tenants, shows a
//! safe retry, pulls with a filter, acknowledges and deletes. On SQLite,
//! set `ZAPINBOX_DB` to choose the file; by default it lives in the temp
//! dir and starts empty on every run. `ZAPINBOX_BACKEND` chooses the
//! storage (see `examples/support/mod.rs`): on Kafka without
//! `ZAPINBOX_KAFKA_BROKERS`, a broker starts inside the process; on
//! DynamoDB, the example makes a table of its own.

mod support;

use serde_json::json;
use zapinbox::{Error, Inbox, NewEvent, PullQuery, QueueConfig, TenantId};

#[tokio::main]
async fn main() -> zapinbox::Result<()> {
    let storage = support::open("quickstart", QueueConfig::default()).await?;
    let inbox = Inbox::new(storage.backend.clone());
    println!("Opened an inbox on {}\n", storage.description);

    // Every call names a tenant; tenants never see each other's events.
    let acme = TenantId::new("acme")?;
    let globex = TenantId::new("globex")?;

    println!("1. Ingest: events are durable once ingest returns.");
    let invoice_paid = NewEvent::new(json!({ "invoice": "INV-1", "amount": 120 }))
        .with_source("billing")
        .with_type("invoice.paid")
        .with_topic("payments")
        .with_idempotency_key("invoice-INV-1-paid");
    let paid = inbox.ingest(&acme, invoice_paid.clone()).await?;
    println!("   acme    <- invoice.paid    id {}", paid.id);
    let shipped = inbox
        .ingest(
            &acme,
            NewEvent::new(json!({ "order": 7 }))
                .with_source("warehouse")
                .with_type("order.shipped")
                .with_topic("orders"),
        )
        .await?;
    println!("   acme    <- order.shipped   id {}", shipped.id);
    let other = inbox
        .ingest(
            &globex,
            NewEvent::new(json!({ "invoice": "G-9" })).with_topic("payments"),
        )
        .await?;
    println!("   globex  <- (payments)      id {}", other.id);

    println!("\n2. Retry safely: the same idempotency key and content return the original.");
    // The same request again, as a client would send it after a timeout.
    let retry = inbox.ingest(&acme, invoice_paid).await?;
    println!(
        "   retry answered id {} with duplicate = {} (nothing new stored)",
        retry.id, retry.duplicate
    );
    let reused = inbox
        .ingest(
            &acme,
            NewEvent::new(json!({ "invoice": "INV-1", "amount": 999 }))
                .with_idempotency_key("invoice-INV-1-paid"),
        )
        .await;
    if let Err(Error::IdempotencyConflict { key, original }) = reused {
        println!(
            "   the same key with other content is refused: key {key:?} belongs to {original}"
        );
    }

    println!("\n3. Pull: pending events, oldest first, filtered by topic.");
    let page = inbox
        .pull(&acme, PullQuery::new().topic("payments"))
        .await?;
    for event in &page.events {
        println!(
            "   acme payments: {} {} {}",
            event.id,
            event.event_type.as_deref().unwrap_or("-"),
            event.payload
        );
    }
    let globex_page = inbox.pull(&globex, PullQuery::new()).await?;
    println!(
        "   globex sees {} event(s), none of acme's",
        globex_page.events.len()
    );

    println!("\n4. Ack: a delivered event leaves the inbox; acking twice is harmless.");
    println!("   ack   -> {:?}", inbox.ack(&acme, paid.id).await?);
    println!("   again -> {:?}", inbox.ack(&acme, paid.id).await?);

    println!("\n5. Delete: removes an event in any state.");
    let deleted = inbox.delete(&acme, shipped.id).await?;
    println!("   deleted {} (it was {:?})", shipped.id, deleted.previous);
    match inbox.ack(&acme, shipped.id).await {
        Err(Error::NotFound { id }) => println!("   acking it now says: event {id} not found"),
        other => println!("   unexpected: {other:?}"),
    }
    match inbox.ack(&globex, paid.id).await {
        Err(Error::NotFound { .. }) => {
            println!("   globex cannot touch acme's event either: not found")
        }
        other => println!("   unexpected: {other:?}"),
    }

    let left = inbox.pull(&acme, PullQuery::new()).await?;
    println!(
        "\nacme has {} pending event(s) left. Done.",
        left.events.len()
    );
    storage.backend.close().await
}
