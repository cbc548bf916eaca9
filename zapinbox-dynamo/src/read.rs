//! Reads: pages of pending events and dead letters, one event, a key,
//! counts. Every read is strongly consistent: pages come from local
//! secondary indexes, which allow it (global ones do not), so an event is
//! listed as soon as its ingest returned (DESIGN §9, first trap).

use std::pin::pin;

use futures::TryStreamExt;
use zapinbox_core::raw::Position;
use zapinbox_core::{
    Event, EventId, EventStatus, Filter, Order, Page, PullQuery, Result, TenantId, TenantStats,
    Timestamp,
};

use crate::backend::{Inner, NAME};
use crate::item::{
    DEAD, DELIVERY_ATTRIBUTES, KEY_EVENT, KEY_EXPIRES, PENDING, READY, SK, StoredEvent, event_sk,
    get_n, get_s, key, key_sk, padded, tenant_pk,
};
use crate::table::{Query, Range};

/// Most events one page looks at before it answers with what it found
/// and a cursor from there (a rare filter would otherwise read the whole
/// inbox in one call).
const SCAN_LIMIT: usize = 2_000;

/// One page of the tenant's events in `status` (pending or dead-lettered),
/// in commit order.
pub(crate) async fn list(
    inner: &Inner,
    op: &'static str,
    tenant: &TenantId,
    query: &PullQuery,
    status: EventStatus,
) -> Result<Page> {
    let resolved = query.resolve(tenant, NAME)?;
    let start = resolved
        .start
        .as_ref()
        .map(Position::as_sequence)
        .transpose()?;
    let ascending = query.order == Order::Asc;
    let range = match start {
        Some(seq) if ascending => Range::Above(padded(seq)),
        Some(seq) => Range::Below(padded(seq)),
        None => Range::All,
    };
    let index = if status == EventStatus::Pending {
        PENDING
    } else {
        DEAD
    };
    let pk = tenant_pk(tenant);
    // Pending events are listed up to the last position whose transaction
    // has fully committed: a query can see part of a transaction in
    // progress, and a cursor past its later events would skip its earlier
    // ones for good.
    let committed = match status {
        EventStatus::Pending => inner.committed_sequence(op, tenant).await?,
        _ => u64::MAX,
    };
    let (now, policy) = (inner.config.clock.now(), &inner.config.retry);
    let take = resolved.limit + 1;
    let mut rows = Vec::new();
    let mut scanned = 0;
    let mut scanned_to = None;
    let mut next = None;
    'pages: loop {
        let mut q = Query::new(Some(index), &pk, range.clone());
        q.ascending = ascending;
        q.limit = (take - rows.len()).max(25) as i32;
        q.whole = true;
        q.start = next;
        let page = inner.table.query(op, q).await?;
        for item in &page.items {
            let stored = StoredEvent::from_item(tenant, item)?;
            if stored.seq > committed {
                if ascending {
                    // Everything after it is newer still.
                    break 'pages;
                }
                continue;
            }
            scanned += 1;
            let d = stored.delivery.settle(now, policy);
            if d.status == status && query.filter.matches(&stored.event) {
                rows.push((Position::sequence(stored.seq), stored.view(d)));
                if rows.len() == take {
                    break 'pages;
                }
            }
            if scanned >= SCAN_LIMIT {
                scanned_to = Some(Position::sequence(stored.seq));
                break 'pages;
            }
        }
        match page.next {
            Some(key) => next = Some(key),
            None => break,
        }
    }
    Ok(Page::from_scan(
        rows,
        resolved,
        scanned_to,
        tenant,
        NAME,
        query.order,
    ))
}

/// One event as it is now, unless deleted or past its retention.
pub(crate) async fn get(inner: &Inner, tenant: &TenantId, id: EventId) -> Result<Option<Event>> {
    let item = inner
        .table
        .get("get", key(tenant_pk(tenant), event_sk(id)))
        .await?;
    let Some(item) = item else {
        return Ok(None);
    };
    let stored = StoredEvent::from_item(tenant, &item)?;
    let now = inner.config.clock.now();
    Ok(stored
        .delivery_now(now, &inner.config)
        .map(|d| stored.view(d)))
}

/// The event an idempotency key stored, within its window.
pub(crate) async fn find_by_key(
    inner: &Inner,
    tenant: &TenantId,
    key_name: &str,
) -> Result<Option<EventId>> {
    let item = inner
        .table
        .get("find_by_key", key(tenant_pk(tenant), key_sk(key_name)))
        .await?;
    let Some(item) = item else {
        return Ok(None);
    };
    let now = inner.config.clock.now();
    let open = get_n(&item, KEY_EXPIRES)?.is_some_and(|exp| exp > now.as_millis());
    if !open {
        return Ok(None);
    }
    Ok(get_s(&item, KEY_EVENT)?.and_then(|id| id.parse().ok()))
}

/// When the earliest pending event matching `filter` may be claimed: the
/// ready index holds pending events by that time, so the first match is
/// the answer.
pub(crate) async fn claimable_at(
    inner: &Inner,
    tenant: &TenantId,
    filter: &Filter,
) -> Result<Option<Timestamp>> {
    let pk = tenant_pk(tenant);
    let (now, policy) = (inner.config.clock.now(), &inner.config.retry);
    let q = Query::new(Some(READY), &pk, Range::All);
    let mut pages = pin!(inner.table.pages("claimable_at", q));
    while let Some(items) = pages.try_next().await? {
        for item in &items {
            let stored = StoredEvent::from_item(tenant, item)?;
            let d = stored.delivery.settle(now, policy);
            if d.status == EventStatus::Pending && filter.matches(&stored.event) {
                return Ok(Some(d.visible_at));
            }
        }
    }
    Ok(None)
}

/// Counts of every state: reads every event of the tenant (without
/// payloads), so it costs what the tenant stores.
pub(crate) async fn tenant_stats(inner: &Inner, tenant: &TenantId) -> Result<TenantStats> {
    let pk = tenant_pk(tenant);
    let now = inner.config.clock.now();
    let attributes = [&[SK][..], &DELIVERY_ATTRIBUTES].concat();
    let mut q = Query::new(None, &pk, Range::Prefix("E#"));
    q.limit = 1_000;
    q.attributes = &attributes;
    let mut stats = TenantStats::default();
    let mut oldest: Option<Timestamp> = None;
    let mut pages = pin!(inner.table.pages("tenant_stats", q));
    while let Some(items) = pages.try_next().await? {
        for item in &items {
            let stored = StoredEvent::from_item(tenant, item)?;
            let Some(d) = stored.delivery_now(now, &inner.config) else {
                continue;
            };
            match d.status {
                EventStatus::Pending => {
                    stats.pending += 1;
                    stats.leased += u64::from(d.is_leased_at(now));
                    let created = stored.event.created_at;
                    oldest = Some(oldest.map_or(created, |o| o.min(created)));
                }
                EventStatus::DeadLettered => stats.dead_lettered += 1,
                EventStatus::Acked => stats.acked += 1,
            }
        }
    }
    stats.oldest_pending_age = oldest.map(|o| now.saturating_duration_since(o));
    Ok(stats)
}
