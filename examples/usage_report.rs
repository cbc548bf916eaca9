//! Usage metering and a billing report.
//!
//!     cargo run --example usage_report
//!
//! Three tenants and several client apps produce and consume through one
//! metered inbox on a fresh SQLite file; then, per tenant and client, the
//! messages and bytes they moved and what they cost at the source system
//! "Event Hub"'s prices: 0.005 per message and 0.00001 per byte (billable
//! usage only: the inbox's own failures are not billed).

use std::collections::BTreeMap;

use serde_json::json;
use zapinbox::sqlite::SqliteBackend;
use zapinbox::{ClaimQuery, Inbox, NewEvent, PullQuery, Result, TenantId, UsageRecord, utc_day};

const PER_MESSAGE: f64 = 0.005;
const PER_BYTE: f64 = 0.000_01;

#[tokio::main]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("zapinbox-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(zapinbox::Error::permanent)?;
    let backend = SqliteBackend::open(dir.join("inbox.db")).await?;
    let inbox = Inbox::builder(backend).metering(true).build();

    // Who produces what, and how much.
    let traffic = [
        ("acme", "web-shop", "orders", 40, 180),
        ("acme", "warehouse", "shipments", 25, 90),
        ("globex", "billing", "invoices", 60, 400),
        ("globex", "crm", "contacts", 12, 1_200),
        ("initech", "tps-reports", "reports", 8, 5_000),
    ];
    for (tenant, client, topic, count, size) in traffic {
        let tenant = TenantId::new(tenant)?;
        let events = (0..count)
            .map(|n| {
                NewEvent::new(json!({ "n": n, "body": "x".repeat(size) }))
                    .with_client_id(client)
                    .with_topic(topic)
            })
            .collect();
        inbox.ingest_batch(&tenant, events).await?;
    }
    // Consumers: acme pulls everything, globex claims and acks its invoices.
    let acme = TenantId::new("acme")?;
    let mut query = PullQuery::new().limit(50);
    loop {
        let page = inbox.pull(&acme, query.clone()).await?;
        match page.next_cursor {
            Some(cursor) if page.has_more => query = query.after(cursor),
            _ => break,
        }
    }
    let globex = TenantId::new("globex")?;
    let claim = ClaimQuery::new().limit(100).topic("invoices");
    for leased in inbox.claim(&globex, claim).await? {
        inbox.ack_lease(&globex, leased.token).await?;
    }

    let today = utc_day(inbox.clock().now());
    println!("Usage today (day {today}), billable, at 0.005 per message and 0.00001 per byte:\n");
    println!(
        "{:<8}  {:<12}  {:<8}  {:>8}  {:>10}  {:>9}",
        "tenant", "client", "action", "messages", "bytes", "cost"
    );
    let mut total = 0.0;
    for tenant in ["acme", "globex", "initech"] {
        let records = inbox.usage(&TenantId::new(tenant)?, today..=today).await?;
        for (key, (messages, bytes)) in by_client(&records) {
            let cost = messages as f64 * PER_MESSAGE + bytes as f64 * PER_BYTE;
            total += cost;
            let (client, action) = key;
            println!(
                "{tenant:<8}  {client:<12}  {action:<8}  {messages:>8}  {bytes:>10}  {cost:>9.4}"
            );
        }
    }
    println!("{:>64}", format!("total {total:.4}"));
    inbox.close().await?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// Billable messages and bytes per client and action.
fn by_client(records: &[UsageRecord]) -> BTreeMap<(String, &'static str), (u64, u64)> {
    let mut sums = BTreeMap::new();
    for r in records.iter().filter(|r| r.key.billable) {
        let client = r.key.client_id.clone().unwrap_or_else(|| "(by id)".into());
        let sum: &mut (u64, u64) = sums.entry((client, r.key.action.name())).or_default();
        sum.0 += r.count;
        sum.1 += r.bytes;
    }
    sums
}
