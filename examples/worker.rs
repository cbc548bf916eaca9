//! Workers: claims, retries with backoff, a dead letter, and redrive.
//!
//!     cargo run --example worker
//!
//! A producer ingests 24 order events while three workers handle them, two
//! at a time each. Some orders fail once or twice before they succeed (the
//! worker releases them and they come back after a backoff); one order
//! always fails and ends up dead-lettered after its last attempt. Then the
//! dead letter is redriven and handled. Runs on a fresh SQLite file in the
//! temp dir; `ZAPINBOX_BACKEND=memory` runs it in memory instead, and
//! `ZAPINBOX_BACKEND=kafka` (with `--features kafka`) on Kafka, and
//! `ZAPINBOX_BACKEND=dynamo` (with `--features dynamo`) on DynamoDB (see
//! `examples/support/mod.rs`).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use zapinbox::{
    HandlerError, Inbox, Leased, NewEvent, PullQuery, QueueConfig, Redrive, RetryPolicy, TenantId,
    Worker,
};

const ORDERS: u64 = 24;
const POISON: u64 = 13;

/// The payload of an order event, decoded on demand.
#[derive(Deserialize)]
struct Order {
    order: u64,
}

#[tokio::main]
async fn main() -> zapinbox::Result<()> {
    // Short backoffs so the demo finishes in seconds: 100 ms, 200 ms, ...
    let retry = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
        .with_max_attempts(3);
    let storage = support::open("worker", QueueConfig::default().with_retry(retry)).await?;
    println!("Running on {}", storage.description);
    let inbox = Inbox::new(storage.backend.clone());
    let tenant = TenantId::new("shop")?;

    // Every order that fails its first tries: how many failures it has left.
    let flaky: Arc<Mutex<HashMap<u64, u32>>> =
        Arc::new(Mutex::new(HashMap::from([(3, 1), (8, 2), (17, 1)])));
    let (stop, stopped) = watch::channel(false);

    let mut workers = Vec::new();
    for name in ["worker-a", "worker-b", "worker-c"] {
        let worker = Worker::new(inbox.clone(), tenant.clone())
            .concurrency(2)
            .lease(Duration::from_secs(10))
            .poll_interval(Duration::from_millis(20));
        let handler = handler(name, Arc::clone(&flaky));
        let stopped = until(stopped.clone());
        workers.push((name, tokio::spawn(worker.run(handler, stopped))));
    }

    println!("producer: ingesting {ORDERS} orders while the workers run\n");
    for n in 1..=ORDERS {
        let order = NewEvent::new(json!({ "order": n, "amount": n * 10 }))
            .with_type("order.placed")
            .with_idempotency_key(format!("order-{n}"));
        inbox.ingest(&tenant, order).await?;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }

    // Wait until every order is either handled or dead-lettered.
    loop {
        let pending = inbox.pull(&tenant, PullQuery::new().limit(1)).await?;
        if pending.events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    println!();
    for (name, run) in workers {
        let report = run.await.map_err(zapinbox::Error::permanent)??;
        println!(
            "{name}: claimed {:>2}, acked {:>2}, retried {}, dead-lettered {}",
            report.claimed, report.acked, report.retried, report.dead_lettered
        );
    }

    let dead = inbox.dead_letters(&tenant, PullQuery::new()).await?;
    println!("\ndead letters: {}", dead.events.len());
    for event in &dead.events {
        println!(
            "  {} {} after {} attempts",
            event.id, event.payload, event.attempts
        );
    }

    // The bug behind order 13 is fixed: send it round again.
    let redriven = inbox.redrive(&tenant, Redrive::All).await?;
    println!("\nredrove {redriven} dead letter(s); handling them with the fixed handler");
    let (stop, stopped) = watch::channel(false);
    let fixed = Worker::new(inbox.clone(), tenant.clone()).poll_interval(Duration::from_millis(20));
    let run = tokio::spawn(fixed.run(
        |leased: Leased| async move {
            let Order { order } = leased.event.payload()?;
            println!("  worker-fixed: order {order} handled");
            Ok::<(), HandlerError>(())
        },
        until(stopped),
    ));
    while !inbox
        .pull(&tenant, PullQuery::new().limit(1))
        .await?
        .events
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send_replace(true);
    let report = run.await.map_err(zapinbox::Error::permanent)??;
    println!("worker-fixed: acked {}", report.acked);
    let left = inbox.dead_letters(&tenant, PullQuery::new()).await?;
    println!(
        "\nall {ORDERS} orders handled; {} dead letter(s) left",
        left.events.len()
    );
    inbox.close().await
}

/// Handles an order: order 13 always fails, the flaky ones fail a few
/// times first, the rest succeed.
fn handler(
    name: &'static str,
    flaky: Arc<Mutex<HashMap<u64, u32>>>,
) -> impl Fn(Leased) -> std::pin::Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>
+ Send
+ Sync
+ 'static {
    move |leased: Leased| {
        let flaky = Arc::clone(&flaky);
        Box::pin(async move {
            let Order { order } = leased.event.payload()?;
            tokio::time::sleep(Duration::from_millis(30)).await;
            if order == POISON {
                println!(
                    "{name}: order {order:>2} attempt {} FAILED (bad address)",
                    leased.attempt
                );
                return Err("bad address".into());
            }
            let fail = {
                let mut left = flaky.lock().map_err(|_| "lock poisoned")?;
                match left.get_mut(&order) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        true
                    }
                    _ => false,
                }
            };
            if fail {
                println!(
                    "{name}: order {order:>2} attempt {} failed, will retry",
                    leased.attempt
                );
                return Err("payment service timed out".into());
            }
            println!("{name}: order {order:>2} attempt {} ok", leased.attempt);
            Ok(())
        })
    }
}

async fn until(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
