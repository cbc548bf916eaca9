//! Changes to an event's delivery: claims, leases, acks, dead letters,
//! redrive, deletes. Each reads the event, applies the core's delivery
//! rule ([`Delivery`]) and writes the result back on condition that the
//! event's version is still the one read: two instances racing on one
//! event both read, one write wins, the other reads again.

use std::collections::HashMap;
use std::time::Duration;

use std::pin::pin;

use futures::future::join_all;
use futures::{StreamExt, TryStreamExt};
use zapinbox_core::raw::{ClaimStep, Delivery};
use zapinbox_core::{
    AckOutcome, ClaimQuery, DeleteOutcome, Error, Event, EventId, EventStatus, LeaseToken, Leased,
    PullQuery, Redrive, ReleaseOutcome, Result, TenantId, Timestamp, Traffic, Way,
};

use crate::backend::Inner;
use crate::error::backoff;
use crate::item::{
    DEAD, DeliveryState, Item, LAST_LEASE, READY, StoredEvent, VERSION, event_sk, key, n,
    ready_until, tenant_pk,
};
use crate::quota::Today;
use crate::read;
use crate::table::{Change, Query, Range, Written};

/// Most times one change is tried again after another writer changed the
/// event first.
const MAX_TRIES: u32 = 50;

/// The write that replaces `stored`'s delivery with `next`, if nobody
/// changed the event since it was read.
fn delivery_write(
    tenant: &TenantId,
    stored: &StoredEvent,
    next: Delivery,
    inner: &Inner,
) -> Change {
    let state = DeliveryState::of(next, stored.seq, &inner.config);
    let mut names = HashMap::new();
    let mut values: Item = HashMap::new();
    let mut sets = Vec::new();
    for (i, (name, value)) in state.set.into_iter().enumerate() {
        names.insert(format!("#s{i}"), name.to_owned());
        values.insert(format!(":s{i}"), value);
        sets.push(format!("#s{i} = :s{i}"));
    }
    names.insert("#v".into(), VERSION.to_owned());
    values.insert(":v".into(), n(stored.version));
    // Only ever compared for equality: wrapping keeps it working.
    values.insert(":v1".into(), n(stored.version.wrapping_add(1)));
    sets.push("#v = :v1".into());
    let mut expression = format!("SET {}", sets.join(", "));
    if !state.remove.is_empty() {
        let mut removed = Vec::new();
        for (i, name) in state.remove.into_iter().enumerate() {
            names.insert(format!("#r{i}"), name.to_owned());
            removed.push(format!("#r{i}"));
        }
        expression.push_str(&format!(" REMOVE {}", removed.join(", ")));
    }
    Change {
        key: key(tenant_pk(tenant), event_sk(stored.event.id)),
        expression,
        condition: Some("#v = :v".into()),
        names,
        values,
    }
}

/// Reads event `id`, runs `change` on its delivery as of now, and writes
/// the result back if it differs (a settled dead letter is written down
/// too). `NotFound` if there is no such event.
async fn modify<T>(
    inner: &Inner,
    op: &'static str,
    tenant: &TenantId,
    id: EventId,
    mut change: impl FnMut(&mut Delivery, Timestamp) -> Result<T>,
) -> Result<T> {
    let config = &inner.config;
    for attempt in 0..MAX_TRIES {
        let item = inner
            .table
            .get(op, key(tenant_pk(tenant), event_sk(id)))
            .await?;
        let Some(item) = item else {
            return Err(Error::NotFound { id });
        };
        let stored = StoredEvent::from_item(tenant, &item)?;
        let now = config.clock.now();
        let mut next = stored
            .delivery_now(now, config)
            .ok_or(Error::NotFound { id })?;
        let out = change(&mut next, now)?;
        if next == stored.delivery {
            return Ok(out);
        }
        let write = delivery_write(tenant, &stored, next, inner);
        match inner.table.update(op, write, false).await? {
            Written::Done(_) => return Ok(out),
            Written::ConditionFailed => backoff(attempt.min(3)).await,
        }
    }
    Err(Error::transient(format!(
        "event {id}: {MAX_TRIES} changes in a row lost to other writers"
    )))
}

/// A lease operation: the event gone means the lease is lost.
async fn with_lease<T>(
    inner: &Inner,
    op: &'static str,
    tenant: &TenantId,
    token: LeaseToken,
    change: impl FnMut(&mut Delivery, Timestamp) -> Result<T>,
) -> Result<T> {
    let id = token.event();
    match modify(inner, op, tenant, id, change).await {
        Err(Error::NotFound { .. }) => Err(Error::LeaseLost { id }),
        other => other,
    }
}

pub(crate) async fn ack(inner: &Inner, tenant: &TenantId, id: EventId) -> Result<AckOutcome> {
    modify(inner, "ack", tenant, id, |d, now| Ok(d.ack(now))).await
}

pub(crate) async fn ack_lease(
    inner: &Inner,
    tenant: &TenantId,
    token: LeaseToken,
) -> Result<AckOutcome> {
    let (id, nonce) = (token.event(), token.nonce());
    with_lease(inner, "ack_lease", tenant, token, |d, now| {
        d.ack_lease(id, nonce, now)
    })
    .await
}

/// Acks many leases at once, each answered.
pub(crate) async fn ack_leases(
    inner: &Inner,
    tenant: &TenantId,
    tokens: Vec<LeaseToken>,
) -> Vec<Result<AckOutcome>> {
    let acks = tokens.into_iter().map(|t| ack_lease(inner, tenant, t));
    futures::stream::iter(acks)
        .buffered(16)
        .collect::<Vec<_>>()
        .await
}

pub(crate) async fn extend(
    inner: &Inner,
    tenant: &TenantId,
    token: LeaseToken,
    by: Duration,
) -> Result<Timestamp> {
    zapinbox_core::raw::check_lease(by)?;
    let (id, nonce) = (token.event(), token.nonce());
    let policy = &inner.config.retry;
    with_lease(inner, "extend", tenant, token, |d, now| {
        d.extend(id, nonce, now, by, policy, rand::random())
    })
    .await
}

pub(crate) async fn release(
    inner: &Inner,
    tenant: &TenantId,
    token: LeaseToken,
    retry_after: Option<Duration>,
) -> Result<ReleaseOutcome> {
    let (id, nonce) = (token.event(), token.nonce());
    let policy = &inner.config.retry;
    with_lease(inner, "release", tenant, token, |d, now| {
        d.release(id, nonce, now, retry_after, policy, rand::random())
    })
    .await
}

pub(crate) async fn requeue(inner: &Inner, tenant: &TenantId, token: LeaseToken) -> Result<()> {
    let (id, nonce) = (token.event(), token.nonce());
    with_lease(inner, "requeue", tenant, token, |d, now| {
        d.requeue(id, nonce, now)
    })
    .await
}

/// Deletes an event in any state; its key stays for its window.
pub(crate) async fn delete(inner: &Inner, tenant: &TenantId, id: EventId) -> Result<DeleteOutcome> {
    let key = key(tenant_pk(tenant), event_sk(id));
    let old = inner
        .table
        .delete("delete", key, "attribute_exists(sk)", Item::new())
        .await?;
    let old = old.ok_or(Error::NotFound { id })?;
    let stored = StoredEvent::from_item(tenant, &old)?;
    let now = inner.config.clock.now();
    // Past its retention it was already gone, as reads said.
    let previous = stored
        .delivery_now(now, &inner.config)
        .ok_or(Error::NotFound { id })?;
    Ok(DeleteOutcome::new(previous.status))
}

/// Claims up to `query.limit` events, the earliest available first:
/// candidates come from the ready index in that order, and each is taken
/// by a conditional write (several at once); one another claim took first
/// is skipped.
pub(crate) async fn claim(
    inner: &Inner,
    tenant: &TenantId,
    query: ClaimQuery,
) -> Result<Vec<Leased>> {
    const OP: &str = "claim";
    query.check()?;
    let now = inner.config.clock.now();
    let today = outbound(inner, OP, tenant, now).await?;
    let turn = inner.claim_turns.take(tenant).await;
    let mut claimed: Vec<Leased> = Vec::new();
    if let Err(e) = claim_into(inner, tenant, &query, now, &mut claimed).await {
        if claimed.is_empty() {
            return Err(e);
        }
        // Some are leased already: hand them out rather than strand them
        // until their leases run out.
        tracing::warn!(%tenant, error = %e, claimed = claimed.len(), "claim stopped early");
    }
    drop(turn);
    if let Some(today) = today
        && !claimed.is_empty()
    {
        let traffic = delivered(claimed.iter().map(|l| &l.event));
        if let Err(refused) = count_delivery(inner, OP, tenant, today, traffic).await {
            // Another delivery crossed the quota first: give these back as
            // if never claimed (one that cannot be is claimable again when
            // its lease ends, with the attempt counted).
            for leased in &claimed {
                if let Err(e) = requeue(inner, tenant, leased.token).await {
                    tracing::warn!(%tenant, error = %e, "a refused claim's event stays leased");
                }
            }
            return Err(refused);
        }
    }
    Ok(claimed)
}

/// Claims into `claimed` until it holds `query.limit` events or none is
/// left to claim.
async fn claim_into(
    inner: &Inner,
    tenant: &TenantId,
    query: &ClaimQuery,
    now: Timestamp,
    claimed: &mut Vec<Leased>,
) -> Result<()> {
    const OP: &str = "claim";
    let config = &inner.config;
    let limit = query.limit as usize;
    let pk = tenant_pk(tenant);
    let mut next = None;
    while claimed.len() < limit {
        let mut q = Query::new(Some(READY), &pk, Range::Below(ready_until(now)));
        q.limit = ((limit - claimed.len()) * 2).max(25) as i32;
        q.start = next.take();
        let page = inner.table.query(OP, q).await?;
        let mut candidates = Vec::new();
        for item in &page.items {
            let stored = StoredEvent::from_item(tenant, item)?;
            match stored.delivery.claim_step(now, &config.retry) {
                ClaimStep::Skip => {}
                ClaimStep::DeadLetter => {
                    let mut dead = stored.delivery;
                    dead.dead_letter();
                    let write = delivery_write(tenant, &stored, dead, inner);
                    inner.table.update(OP, write, false).await?;
                }
                ClaimStep::Claim if query.filter.matches(&stored.event) => candidates.push(stored),
                ClaimStep::Claim => {}
            }
        }
        let mut candidates = candidates.as_slice();
        while !candidates.is_empty() && claimed.len() < limit {
            // As many at once as are still wanted: some may be lost to
            // other claims, never more taken than asked for.
            let (now_taking, rest) =
                candidates.split_at((limit - claimed.len()).min(candidates.len()));
            candidates = rest;
            let takes = now_taking
                .iter()
                .map(|c| take(inner, tenant, c, query, now));
            let mut failed = None;
            for taken in join_all(takes).await {
                match taken {
                    Ok(leased) => claimed.extend(leased),
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        match page.next {
            Some(key) => next = Some(key),
            None => return Ok(()),
        }
    }
    Ok(())
}

/// Takes one candidate: `None` if another claim changed it first.
async fn take(
    inner: &Inner,
    tenant: &TenantId,
    candidate: &StoredEvent,
    query: &ClaimQuery,
    now: Timestamp,
) -> Result<Option<Leased>> {
    let policy = &inner.config.retry;
    let mut d = candidate.delivery;
    let nonce: u64 = rand::random();
    let (attempt, expires) = d.claim(now, query.lease, nonce, policy, rand::random());
    let write = delivery_write(tenant, candidate, d, inner);
    match inner.table.update("claim", write, true).await? {
        Written::ConditionFailed => Ok(None),
        Written::Done(item) => {
            let item = item.ok_or_else(|| Error::permanent("claim wrote but read nothing back"))?;
            let stored = StoredEvent::from_item(tenant, &item)?;
            let token = LeaseToken::new(stored.event.id, nonce);
            Ok(Some(Leased::new(stored.view(d), token, attempt, expires)))
        }
    }
}

/// Today's outbound figures, if a quota limits deliveries; refuses a
/// delivery once they are used up.
async fn outbound(
    inner: &Inner,
    op: &'static str,
    tenant: &TenantId,
    now: Timestamp,
) -> Result<Option<Today>> {
    let quotas = &inner.config.quotas;
    let today = Today::read(&inner.table, op, quotas, tenant, Way::Out, now).await?;
    if let Some(today) = &today {
        today.check_delivery(quotas)?;
    }
    Ok(today)
}

/// What delivering `events` takes out.
fn delivered<'a>(events: impl Iterator<Item = &'a Event>) -> Traffic {
    let (messages, bytes) = events.fold((0, 0), |(m, b), e| (m + 1, b + e.payload.len() as u64));
    Traffic::new(Way::Out, messages, bytes)
}

/// Counts a served delivery against the day's outbound quota; if another
/// delivery counted first, checks again on the new figures and counts,
/// or refuses when they are used up.
async fn count_delivery(
    inner: &Inner,
    op: &'static str,
    tenant: &TenantId,
    mut today: Today,
    traffic: Traffic,
) -> Result<()> {
    for attempt in 0..MAX_TRIES {
        if today.count_delivery(&inner.table, op, traffic).await? {
            return Ok(());
        }
        backoff(attempt.min(3)).await;
        let now = inner.config.clock.now();
        let read = outbound(inner, op, tenant, now).await?;
        today = read.ok_or_else(|| Error::permanent("quota settings changed while counting"))?;
    }
    Err(Error::transient(format!(
        "tenant {tenant}: {MAX_TRIES} quota counts in a row lost to other writers"
    )))
}

/// A page of pending events, counted against the outbound quota.
pub(crate) async fn pull(
    inner: &Inner,
    tenant: &TenantId,
    query: PullQuery,
) -> Result<zapinbox_core::Page> {
    const OP: &str = "pull";
    let now = inner.config.clock.now();
    let today = outbound(inner, OP, tenant, now).await?;
    let page = read::list(inner, OP, tenant, &query, EventStatus::Pending).await?;
    if let Some(today) = today
        && !page.events.is_empty()
    {
        let traffic = delivered(page.events.iter());
        count_delivery(inner, OP, tenant, today, traffic).await?;
    }
    Ok(page)
}

/// Writes down the dead letters time has made: events whose last lease
/// ran out (the last-lease index holds them by when it ends).
async fn sweep(inner: &Inner, op: &'static str, tenant: &TenantId) -> Result<()> {
    let pk = tenant_pk(tenant);
    let now = inner.config.clock.now();
    let q = Query::new(Some(LAST_LEASE), &pk, Range::Below(ready_until(now)));
    let mut pages = pin!(inner.table.pages(op, q));
    while let Some(items) = pages.try_next().await? {
        for item in &items {
            let stored = StoredEvent::from_item(tenant, item)?;
            modify(inner, op, tenant, stored.event.id, |_, _| Ok(())).await?;
        }
    }
    Ok(())
}

/// Every dead letter's id, after writing down the new ones.
async fn dead_ids(inner: &Inner, op: &'static str, tenant: &TenantId) -> Result<Vec<EventId>> {
    sweep(inner, op, tenant).await?;
    let pk = tenant_pk(tenant);
    let mut q = Query::new(Some(DEAD), &pk, Range::All);
    q.limit = 1_000;
    let mut ids = Vec::new();
    let mut pages = pin!(inner.table.pages(op, q));
    while let Some(items) = pages.try_next().await? {
        for item in &items {
            ids.push(StoredEvent::from_item(tenant, item)?.event.id);
        }
    }
    Ok(ids)
}

pub(crate) async fn dead_letters(
    inner: &Inner,
    tenant: &TenantId,
    query: PullQuery,
) -> Result<zapinbox_core::Page> {
    sweep(inner, "dead_letters", tenant).await?;
    read::list(
        inner,
        "dead_letters",
        tenant,
        &query,
        EventStatus::DeadLettered,
    )
    .await
}

pub(crate) async fn redrive(inner: &Inner, tenant: &TenantId, which: Redrive) -> Result<u64> {
    const OP: &str = "redrive";
    let ids = match which {
        Redrive::All => dead_ids(inner, OP, tenant).await?,
        Redrive::Ids(ids) => ids,
    };
    let mut count = 0;
    for id in ids {
        match modify(inner, OP, tenant, id, |d, now| Ok(d.redrive(now))).await {
            Ok(redriven) => count += u64::from(redriven),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(count)
}

/// Deletes dead letters (all, or those among `which`); how many.
pub(crate) async fn purge_dead_letters(
    inner: &Inner,
    tenant: &TenantId,
    which: Redrive,
) -> Result<u64> {
    const OP: &str = "purge_dead_letters";
    let ids = match which {
        Redrive::All => dead_ids(inner, OP, tenant).await?,
        Redrive::Ids(ids) => {
            sweep(inner, OP, tenant).await?;
            ids
        }
    };
    let dead = HashMap::from([(
        ":dead".to_owned(),
        n(u64::from(EventStatus::DeadLettered.code())),
    )]);
    let mut count = 0;
    for id in ids {
        let key = key(tenant_pk(tenant), event_sk(id));
        let gone = inner
            .table
            .delete(OP, key, "st = :dead", dead.clone())
            .await?;
        count += u64::from(gone.is_some());
    }
    Ok(count)
}
