//! DynamoDB Local: the backend for every workload (at a tenth of the
//! scale: a local Java server answers in milliseconds, not microseconds),
//! and beside raw SDK calls on the same server in the same run: `PutItem`
//! for ingests, `TransactWriteItems` for batches, `Query` for pages.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put,
    ScalarAttributeType, TransactWriteItem,
};
use futures::future::join_all;
use zapinbox::{Inbox, PullQuery, QueueConfig};
use zapinbox_dynamo::DynamoBackend;

use crate::backends::{BenchBackend, Opened, fresh_topic};
use crate::report::Row;
use crate::workloads::{
    Latencies, PRODUCERS, WARM_UP, batches_in_flight, ingest_latency, ingest_over_tenants,
    numbered_tenant, payload_json,
};
use crate::{Scale, median};

/// The environment variable naming DynamoDB Local (the test script sets it).
pub const ENDPOINT_ENV: &str = "ZAPINBOX_DYNAMO_ENDPOINT";

const NAME: &str = "dynamo (DynamoDB Local)";

/// Where the raw batches number their items, after every single put's.
const BATCHED: usize = 1 << 40;

/// DynamoDB Local's endpoint, when one runs.
pub fn endpoint() -> Option<String> {
    std::env::var(ENDPOINT_ENV).ok()
}

/// A client for DynamoDB Local.
async fn client(endpoint: &str) -> aws_types::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDLOCAL",
            "secretlocal",
            None,
            None,
            "bench",
        ))
        .load()
        .await
}

/// A backend on a fresh table.
async fn fresh_backend(endpoint: &str) -> DynamoBackend {
    let sdk = client(endpoint).await;
    let backend = DynamoBackend::builder(&sdk)
        .table(fresh_topic("bench"))
        .config(QueueConfig::default())
        .build();
    backend.ensure_table().await.expect("make the table");
    backend
}

/// The DynamoDB backend for the shared workloads.
pub struct Dynamo {
    pub endpoint: String,
}

#[async_trait]
impl BenchBackend for Dynamo {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn open(&self, _dir: &Path) -> Opened {
        Opened {
            backend: Arc::new(fresh_backend(&self.endpoint).await),
            commits: None,
        }
    }

    fn has_raw_baseline(&self) -> bool {
        false
    }

    /// A transaction holds at most 48 events: its batches are measured
    /// beside raw transactions of 48 instead ([`against_raw`]).
    fn skips(&self, workload: &str) -> bool {
        workload == "ingest_batch of 100"
    }

    fn scale(&self, scale: Scale) -> Scale {
        scale.tenth()
    }
}

/// A plain table with `pk` and `sk`, as raw calls use it.
async fn raw_table(client: &Client) -> String {
    let name = fresh_topic("raw");
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key")
    };
    let string = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute")
    };
    client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(string("pk"))
        .attribute_definitions(string("sk"))
        .send()
        .await
        .expect("create the raw table");
    name
}

/// An item as a raw writer would store an event: key, payload, time.
fn raw_item(tenant: usize, n: usize) -> std::collections::HashMap<String, AttributeValue> {
    std::collections::HashMap::from([
        ("pk".to_owned(), AttributeValue::S(format!("T#{tenant}"))),
        ("sk".to_owned(), AttributeValue::S(format!("E#{n:020}"))),
        ("pay".to_owned(), AttributeValue::S(payload_json(n))),
        ("at".to_owned(), AttributeValue::N(n.to_string())),
    ])
}

async fn raw_put(client: &Client, table: &str, tenant: usize, n: usize) {
    client
        .put_item()
        .table_name(table)
        .set_item(Some(raw_item(tenant, n)))
        .send()
        .await
        .expect("put");
}

/// `n` PutItems one after another; their latencies.
async fn raw_single(client: &Client, table: &str, n: usize) -> Latencies {
    for i in 0..WARM_UP {
        raw_put(client, table, 0, n + i).await;
    }
    let mut latencies = Latencies::default();
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        raw_put(client, table, 0, i).await;
        latencies.push(t.elapsed());
    }
    latencies.finish(started.elapsed())
}

/// `n` PutItems from [`PRODUCERS`] tasks over 8 tenants; items a second.
async fn raw_concurrent(client: &Client, table: &str, n: usize) -> f64 {
    let started = Instant::now();
    let tasks = (0..PRODUCERS).map(|p| {
        let (client, table) = (client.clone(), table.to_owned());
        tokio::spawn(async move {
            for i in (p..n).step_by(PRODUCERS) {
                raw_put(&client, &table, p % 8, i).await;
            }
        })
    });
    for task in join_all(tasks).await {
        task.expect("a producer task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `n` items in TransactWriteItems of `batch` puts, four in flight over
/// four tenants; items a second.
async fn raw_transactions(client: &Client, table: &str, n: usize, batch: usize) -> f64 {
    let started = Instant::now();
    let tasks = (0..4).map(|t| {
        let (client, table) = (client.clone(), table.to_owned());
        tokio::spawn(async move {
            for start in (t * batch..n).step_by(4 * batch) {
                let puts = (start..(start + batch).min(n)).map(|i| {
                    let put = Put::builder()
                        .table_name(&table)
                        // Numbers of their own: no key the single puts took.
                        .set_item(Some(raw_item(t, BATCHED + i)))
                        .condition_expression("attribute_not_exists(sk)")
                        .build()
                        .expect("put");
                    TransactWriteItem::builder().put(put).build()
                });
                client
                    .transact_write_items()
                    .set_transact_items(Some(puts.collect()))
                    .send()
                    .await
                    .expect("transaction");
            }
        })
    });
    for task in join_all(tasks).await {
        task.expect("a transaction task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Every item of tenant 0 in consistent Query pages of 100; items a
/// second.
async fn raw_pages(client: &Client, table: &str) -> f64 {
    let started = Instant::now();
    let mut read = 0;
    let mut next = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S("T#0".into()))
            .consistent_read(true)
            .limit(100)
            .set_exclusive_start_key(next)
            .send()
            .await
            .expect("query");
        read += page.items().len();
        match page.last_evaluated_key {
            Some(key) => next = Some(key),
            None => break,
        }
    }
    read as f64 / started.elapsed().as_secs_f64()
}

/// Every pending event of tenant 0 in pull pages of 100; events a second.
async fn ours_pages(inbox: &Inbox) -> f64 {
    let started = Instant::now();
    let mut read = 0;
    let mut query = PullQuery::new().limit(100);
    loop {
        let page = inbox
            .pull(&numbered_tenant(0), query.clone())
            .await
            .expect("pull");
        read += page.events.len();
        match page.next_cursor {
            Some(cursor) if page.has_more => query = query.after(cursor),
            _ => break,
        }
    }
    read as f64 / started.elapsed().as_secs_f64()
}

/// The backend beside raw calls on the same DynamoDB Local, in one run.
pub async fn against_raw(endpoint: &str, scale: Scale) -> Vec<Row> {
    let scale = scale.tenth();
    let n = scale.throughput_events;
    eprintln!("{NAME}: beside raw PutItem, TransactWriteItems and Query");
    let client = Client::new(&client(endpoint).await);
    let table = raw_table(&client).await;
    let inbox = Inbox::new(fresh_backend(endpoint).await);
    let batch = inbox.limits().max_batch_events;
    let mut rows = Vec::new();
    let row = |workload: &str, figure: &str, value: f64| Row::new(NAME, workload, figure, value);

    let raw = raw_single(&client, &table, scale.latency_ops).await;
    let ours = ingest_latency(&inbox, scale.latency_ops).await;
    let single = "ingest, 1 producer, each awaited";
    let single_raw = "raw PutItem, each awaited";
    rows.push(row(single, "events/s", ours.per_second).against(single_raw, raw.per_second, true));
    rows.push(row(single, "p50 ms", ours.p50_ms()).against(single_raw, raw.p50_ms(), false));

    let mut raw_rates = Vec::new();
    let mut our_rates = Vec::new();
    for _ in 0..scale.runs {
        raw_rates.push(raw_concurrent(&client, &table, n).await);
        our_rates.push(ingest_over_tenants(&inbox, n).await);
    }
    rows.push(
        row(
            "ingest, 64 producers over 8 tenants",
            "events/s",
            median(our_rates),
        )
        .against("raw PutItem, 64 producers", median(raw_rates), true),
    );

    let raw_batched = raw_transactions(&client, &table, n, batch).await;
    let ours_batched = batches_in_flight(&inbox, n, batch).await;
    rows.push(
        row(
            &format!("ingest_batch of {batch}, 4 in flight"),
            "events/s",
            ours_batched,
        )
        .against(
            &format!("raw TransactWriteItems of {batch} puts"),
            raw_batched,
            true,
        ),
    );

    let raw_read = raw_pages(&client, &table).await;
    let ours_read = ours_pages(&inbox).await;
    rows.push(
        row("pull pages of 100, consistent", "events/s", ours_read).against(
            "raw consistent Query pages of 100",
            raw_read,
            true,
        ),
    );
    rows
}
