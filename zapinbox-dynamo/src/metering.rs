//! Usage records, summed per key in one item each: `U#<day>#<hash of the
//! key>` under the tenant, counts added in place.

use std::collections::HashMap;
use std::pin::pin;

use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use zapinbox_core::{Error, Result, TenantId, UsageKey, UsageRecord, sum_usage};

use crate::backend::Inner;
use crate::item::{Item, get_s, hex, key, n, need_n, padded, s, tenant_pk};
use crate::table::{Change, Query, Range, Write};

const KEY: &str = "uk";

fn usage_sk(day: u64, key_json: &str) -> String {
    let hash = Sha256::digest(key_json.as_bytes());
    format!("U#{}#{}", padded(day), hex(&hash[..16]))
}

/// Adds `records` to the stored counts, in transactions of up to 100
/// records: all of a transaction counted, or none of it.
pub(crate) async fn add_usage(inner: &Inner, records: Vec<UsageRecord>) -> Result<()> {
    let writes = sum_usage(records)
        .into_iter()
        .map(|record| {
            let key_json = serde_json::to_string(&record.key).map_err(Error::permanent)?;
            Ok(Write::Update(Change {
                key: key(
                    tenant_pk(&record.key.tenant),
                    usage_sk(record.key.day, &key_json),
                ),
                expression: format!("SET {KEY} = :k ADD c :c, b :b"),
                condition: None,
                names: HashMap::new(),
                values: HashMap::from([
                    (":k".to_owned(), s(key_json)),
                    (":c".to_owned(), n(record.count)),
                    (":b".to_owned(), n(record.bytes)),
                ]),
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    for chunk in writes.chunks(100) {
        let added = inner.table.transact("add_usage", chunk.to_vec()).await?;
        if let Err(cancelled) = added {
            let codes: Vec<_> = cancelled
                .reasons
                .iter()
                .filter_map(|(c, _)| c.clone())
                .collect();
            let retryable = codes
                .iter()
                .all(|c| c == "None" || crate::error::retryable_code(c));
            let message = format!("DynamoDB cancelled the usage transaction: {codes:?}");
            return Err(if retryable {
                Error::transient(message)
            } else {
                Error::permanent(message)
            });
        }
    }
    Ok(())
}

pub(crate) async fn usage(
    inner: &Inner,
    tenant: &TenantId,
    days: std::ops::RangeInclusive<u64>,
) -> Result<Vec<UsageRecord>> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    let pk = tenant_pk(tenant);
    let from = format!("U#{}", padded(*days.start()));
    let to = format!("U#{}$", padded(*days.end()));
    let mut q = Query::new(None, &pk, Range::Between(from, to));
    q.limit = 1_000;
    let mut records = Vec::new();
    let mut pages = pin!(inner.table.pages("usage", q));
    while let Some(items) = pages.try_next().await? {
        for item in &items {
            records.push(read_record(item)?);
        }
    }
    Ok(sum_usage(records))
}

fn read_record(item: &Item) -> Result<UsageRecord> {
    let text = get_s(item, KEY)?.ok_or_else(|| Error::permanent("usage item without its key"))?;
    let k: UsageKey = serde_json::from_str(text).map_err(Error::permanent)?;
    let counts = (need_n(item, "c")?, need_n(item, "b")?);
    Ok(UsageRecord::new(
        k.tenant,
        k.day,
        (k.client_id, k.topic),
        k.action,
        k.billable,
        counts,
    ))
}
