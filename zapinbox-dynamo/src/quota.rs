//! Daily quotas: what each tenant (and everyone) took in and out on a UTC
//! day, counted in items beside the events and checked by the write that
//! counts: a count is conditional on the figures the check read, so two
//! writers never both pass a limit on stale figures.

use std::collections::HashMap;

use zapinbox_core::{DailyUsage, Quotas, Result, TenantId, Timestamp, Traffic, Way, utc_day};

use crate::item::{Item, TOTAL_PK, get_n, key, n, padded, tenant_pk};
use crate::table::{Change, Table, Write, Written};

/// One day's usage item of a tenant (or of everyone): its key and what it
/// held when read.
#[derive(Clone, Debug)]
struct Counter {
    key: Item,
    used: DailyUsage,
    /// The figures read for the way being counted, to condition on.
    seen: Option<(u64, u64)>,
}

/// What a tenant and everyone used on today's UTC day, as read.
#[derive(Clone, Debug)]
pub(crate) struct Today {
    way: Way,
    now: Timestamp,
    tenant: Counter,
    /// Only read and counted when a total quota limits this way.
    total: Option<Counter>,
}

/// The attributes counting messages and bytes going `way`.
fn names(way: Way) -> (&'static str, &'static str) {
    match way {
        Way::In => ("mi", "bi"),
        Way::Out => ("mo", "bo"),
    }
}

impl Today {
    /// Reads today's figures if a quota limits `way` (`None` otherwise:
    /// nothing to check or count).
    pub(crate) async fn read(
        table: &Table,
        op: &'static str,
        quotas: &Quotas,
        tenant: &TenantId,
        way: Way,
        now: Timestamp,
    ) -> Result<Option<Today>> {
        if !quotas.limits(way) {
            return Ok(None);
        }
        let day = utc_day(now);
        let sk = format!("Q#{}", padded(day));
        let tenant = Counter::read(table, op, key(tenant_pk(tenant), sk.clone()), way).await?;
        let total = if quotas.total.limits(way) {
            Some(Counter::read(table, op, key(TOTAL_PK.to_owned(), sk), way).await?)
        } else {
            None
        };
        Ok(Some(Today {
            way,
            now,
            tenant,
            total,
        }))
    }

    /// Whether `traffic` fits (see [`Quotas::check`]).
    pub(crate) fn check(&self, quotas: &Quotas, traffic: Traffic) -> Result<()> {
        let total = self.total.as_ref().map(|c| c.used).unwrap_or_default();
        quotas.check(&self.tenant.used, &total, traffic, self.now)
    }

    /// Whether another delivery may start (see [`Quotas::check_delivery`]).
    pub(crate) fn check_delivery(&self, quotas: &Quotas) -> Result<()> {
        let total = self.total.as_ref().map(|c| c.used).unwrap_or_default();
        quotas.check_delivery(&self.tenant.used, &total, self.now)
    }

    /// The writes that count `traffic`, each conditional on the figures
    /// read: for the same transaction as what they count.
    pub(crate) fn counts(&self, traffic: Traffic) -> Vec<Write> {
        let counters = std::iter::once(&self.tenant).chain(&self.total);
        let counts = counters.map(|c| Write::Update(c.count(self.way, traffic)));
        counts.collect()
    }

    /// Counts a delivery that was served: `Ok(false)` when another writer
    /// counted first (read again and check again).
    pub(crate) async fn count_delivery(
        &self,
        table: &Table,
        op: &'static str,
        traffic: Traffic,
    ) -> Result<bool> {
        if self.total.is_none() {
            let written = table.update(op, self.tenant.count(self.way, traffic), false);
            return Ok(matches!(written.await?, Written::Done(_)));
        }
        Ok(table.transact(op, self.counts(traffic)).await?.is_ok())
    }
}

impl Counter {
    async fn read(table: &Table, op: &'static str, key: Item, way: Way) -> Result<Counter> {
        let item = table.get(op, key.clone()).await?.unwrap_or_default();
        let figure = |name| get_n(&item, name).map(Option::unwrap_or_default);
        let used = DailyUsage::new(figure("mi")?, figure("bi")?, figure("mo")?, figure("bo")?);
        let (messages, bytes) = names(way);
        let seen = match (get_n(&item, messages)?, get_n(&item, bytes)?) {
            (Some(m), Some(b)) => Some((m, b)),
            _ => None,
        };
        Ok(Counter { key, used, seen })
    }

    fn count(&self, way: Way, traffic: Traffic) -> Change {
        let (messages, bytes) = names(way);
        let mut values: Item = HashMap::from([
            (":dm".to_owned(), n(traffic.messages)),
            (":db".to_owned(), n(traffic.bytes)),
        ]);
        let condition = match self.seen {
            Some((m, b)) => {
                values.insert(":m".into(), n(m));
                values.insert(":b".into(), n(b));
                format!("{messages} = :m AND {bytes} = :b")
            }
            None => format!("attribute_not_exists({messages})"),
        };
        Change {
            key: self.key.clone(),
            expression: format!("ADD {messages} :dm, {bytes} :db"),
            condition: Some(condition),
            names: HashMap::new(),
            values,
        }
    }
}
