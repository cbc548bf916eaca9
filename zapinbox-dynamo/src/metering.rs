//! Usage records, summed per key in one item each: `U#<day>#<hash of the
//! key>` under the tenant, counts added in place.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use zapinbox_core::{Error, Result, TenantId, UsageKey, UsageRecord, sum_usage};

use crate::backend::Inner;
use crate::item::{Item, get_s, key, n, need_n, padded, s, tenant_pk};
use crate::table::{Query, Range, Write};

const KEY: &str = "uk";

fn usage_sk(day: u64, key_json: &str) -> String {
    let hash = Sha256::digest(key_json.as_bytes());
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("U#{}#{hex}", padded(day))
}

pub(crate) async fn add_usage(inner: &Inner, records: Vec<UsageRecord>) -> Result<()> {
    let adds = sum_usage(records).into_iter().map(|record| async move {
        let key_json = serde_json::to_string(&record.key).map_err(Error::permanent)?;
        let write = Write::Update {
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
        };
        inner
            .table
            .update("add_usage", write, false)
            .await
            .map(drop)
    });
    for added in futures::future::join_all(adds).await {
        added?;
    }
    Ok(())
}

pub(crate) async fn usage(
    inner: &Inner,
    tenant: &TenantId,
    days: std::ops::RangeInclusive<u64>,
) -> Result<Vec<UsageRecord>> {
    let pk = tenant_pk(tenant);
    let from = format!("U#{}", padded(*days.start()));
    let to = format!("U#{}$", padded(*days.end()));
    let mut records = Vec::new();
    let mut next = None;
    loop {
        let mut q = Query::new(None, &pk, Range::Between(from.clone(), to.clone()));
        q.start = next;
        q.limit = 1_000;
        let page = inner.table.query("usage", q).await?;
        for item in &page.items {
            records.push(read_record(item)?);
        }
        match page.next {
            Some(key) => next = Some(key),
            None => break,
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
