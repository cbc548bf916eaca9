//! Model-based testing: random operation sequences, restarts included, run
//! against a backend and the in-memory reference side by side, comparing
//! every answer.
//!
//! Ids differ between the two (each backend makes its own), so answers are
//! compared with each id replaced by its position in that backend's list of
//! ingested ids.

use std::fmt::Debug;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use super::{Harness, MemoryHarness, start_time};
use crate::{
    ClaimQuery, Error, Event, EventId, Inbox, LeaseToken, ManualClock, NewEvent, Order, PullQuery,
    QueueConfig, Redrive, Result, RetryPolicy, TenantId, Timestamp,
};

/// One step of a random sequence. Tenants, topics and keys are small
/// numbers so that steps collide often.
#[derive(Clone, Debug)]
pub enum Op {
    /// Ingest one event.
    Ingest(Item),
    /// Ingest several events atomically.
    IngestBatch(u8, Vec<Item>),
    /// Ack the `event`-th id ingested so far (in any tenant) as `tenant`.
    Ack(u8, usize),
    /// Delete the `event`-th id ingested so far as `tenant`.
    Delete(u8, usize),
    /// Get the `event`-th id ingested so far as `tenant`.
    Get(u8, usize),
    /// Pull every page, with an optional topic filter, order and page size.
    Pull(u8, Option<u8>, Order, u32),
    /// Look up an idempotency key.
    FindKey(u8, u8),
    /// Move both clocks forward by this many hours.
    Advance(u8),
    /// Move both clocks forward by this many seconds.
    AdvanceSeconds(u8),
    /// Claim up to `limit` events (optionally of one topic) for this many
    /// seconds.
    Claim(u8, Option<u8>, u32, u8),
    /// Extend the `n`-th lease token handed out so far by this many seconds.
    Extend(u8, usize, u8),
    /// Release the `n`-th token, after this many seconds or by the backoff.
    Release(u8, usize, Option<u8>),
    /// Ack with the `n`-th token.
    AckLease(u8, usize),
    /// Requeue with the `n`-th token.
    Requeue(u8, usize),
    /// List every page of dead letters.
    DeadLetters(u8),
    /// Redrive the `event`-th id, or every dead letter.
    Redrive(u8, Option<usize>),
    /// Count the tenant's events in each state.
    Stats(u8),
    /// Purge what is past retention, at most this many of each.
    Purge(u8),
    /// Close both backends and open their storage again.
    Restart,
}

/// An event to ingest: tenant, topic, idempotency key, body.
#[derive(Clone, Debug)]
pub struct Item {
    tenant: u8,
    topic: u8,
    key: Option<u8>,
    body: u8,
}

fn item() -> impl Strategy<Value = Item> {
    (0..3u8, 0..3u8, prop::option::of(0..4u8), 0..3u8).prop_map(|(tenant, topic, key, body)| Item {
        tenant,
        topic,
        key,
        body,
    })
}

/// Random operations, weighted towards the ones that change state.
pub fn op() -> impl Strategy<Value = Op> {
    let order = prop_oneof![Just(Order::Asc), Just(Order::Desc)];
    prop_oneof![
        6 => item().prop_map(Op::Ingest),
        2 => (0..3u8, prop::collection::vec(item(), 0..4)).prop_map(|(t, items)| Op::IngestBatch(t, items)),
        3 => (0..3u8, 0..64usize).prop_map(|(t, e)| Op::Ack(t, e)),
        2 => (0..3u8, 0..64usize).prop_map(|(t, e)| Op::Delete(t, e)),
        2 => (0..3u8, 0..64usize).prop_map(|(t, e)| Op::Get(t, e)),
        3 => (0..3u8, prop::option::of(0..3u8), order, 1..5u32).prop_map(|(t, topic, o, l)| Op::Pull(t, topic, o, l)),
        1 => (0..3u8, 0..4u8).prop_map(|(t, k)| Op::FindKey(t, k)),
        1 => (0..30u8).prop_map(Op::Advance),
        3 => (0..40u8).prop_map(Op::AdvanceSeconds),
        5 => (0..3u8, prop::option::of(0..3u8), 1..4u32, 1..10u8)
            .prop_map(|(t, topic, l, s)| Op::Claim(t, topic, l, s)),
        1 => (0..3u8, 0..32usize, 1..20u8).prop_map(|(t, k, s)| Op::Extend(t, k, s)),
        2 => (0..3u8, 0..32usize, prop::option::of(0..30u8))
            .prop_map(|(t, k, s)| Op::Release(t, k, s)),
        2 => (0..3u8, 0..32usize).prop_map(|(t, k)| Op::AckLease(t, k)),
        1 => (0..3u8, 0..32usize).prop_map(|(t, k)| Op::Requeue(t, k)),
        1 => (0..3u8).prop_map(Op::DeadLetters),
        1 => (0..3u8, prop::option::of(0..64usize)).prop_map(|(t, e)| Op::Redrive(t, e)),
        2 => (0..3u8).prop_map(Op::Stats),
        1 => (1..4u8).prop_map(Op::Purge),
        1 => Just(Op::Restart),
    ]
}

/// A sequence of up to `max` random operations.
pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..max)
}

/// One side of the comparison: a backend, its clock and the ids it made.
struct Side<'a> {
    harness: &'a dyn Harness,
    clock: ManualClock,
    inbox: Inbox,
    ids: Vec<EventId>,
    tokens: Vec<LeaseToken>,
}

impl<'a> Side<'a> {
    async fn open(harness: &'a dyn Harness) -> Side<'a> {
        let clock = ManualClock::new(start_time());
        let inbox = Self::inbox(harness, &clock).await;
        Side {
            harness,
            clock,
            inbox,
            ids: Vec::new(),
            tokens: Vec::new(),
        }
    }

    async fn inbox(harness: &dyn Harness, clock: &ManualClock) -> Inbox {
        // No jitter: both sides must compute the same backoffs.
        let retry = RetryPolicy::exponential(Duration::from_secs(1), Duration::from_secs(30))
            .without_jitter()
            .with_max_attempts(2);
        let config = QueueConfig::default()
            .with_clock(clock.clock())
            .with_retry(retry);
        Inbox::new(harness.open(config).await.expect("open"))
    }

    fn pick_token(&self, n: usize) -> LeaseToken {
        match self.tokens.len() {
            0 => LeaseToken::new(self.pick(n), 0),
            len => self.tokens[n % len],
        }
    }

    fn token(&self, token: LeaseToken) -> Option<usize> {
        self.tokens.iter().position(|t| *t == token)
    }

    fn index(&self, id: EventId) -> Option<usize> {
        self.ids.iter().position(|i| *i == id)
    }

    fn pick(&self, n: usize) -> EventId {
        match self.ids.len() {
            0 => EventId::generate(Timestamp::from_millis(1)),
            len => self.ids[n % len],
        }
    }

    /// Runs `op` and describes the answer in id-free terms.
    async fn apply(&mut self, op: &Op) -> String {
        match op {
            Op::Ingest(item) => {
                let r = self.inbox.ingest(&tenant(item.tenant), event(item)).await;
                self.ingested(r.map(|i| vec![i]))
            }
            Op::IngestBatch(t, items) => {
                let r = self
                    .inbox
                    .ingest_batch(&tenant(*t), items.iter().map(event).collect())
                    .await;
                self.ingested(r)
            }
            Op::Ack(t, e) => {
                let r = self.inbox.ack(&tenant(*t), self.pick(*e)).await;
                self.describe(r)
            }
            Op::Delete(t, e) => {
                let r = self.inbox.delete(&tenant(*t), self.pick(*e)).await;
                self.describe(r)
            }
            Op::Get(t, e) => {
                let r = self.inbox.get(&tenant(*t), self.pick(*e)).await;
                let r = r.map(|found| found.map(|e| self.event(&e)));
                self.describe(r)
            }
            Op::Pull(t, topic, order, limit) => {
                self.pull(&tenant(*t), *topic, *order, *limit).await
            }
            Op::FindKey(t, k) => {
                let r = self
                    .inbox
                    .find_by_key(&tenant(*t), &format!("key-{k}"))
                    .await;
                let r = r.map(|found| found.map(|id| self.index(id)));
                self.describe(r)
            }
            Op::Advance(hours) => {
                self.clock
                    .advance(Duration::from_secs(u64::from(*hours) * 3600));
                String::new()
            }
            Op::AdvanceSeconds(seconds) => {
                self.clock.advance(Duration::from_secs(u64::from(*seconds)));
                String::new()
            }
            Op::Claim(t, topic, limit, seconds) => {
                let mut query = ClaimQuery::new()
                    .limit(*limit)
                    .lease(Duration::from_secs(u64::from(*seconds)));
                if let Some(topic) = topic {
                    query = query.topic(format!("topic-{topic}"));
                }
                let r = self.inbox.claim(&tenant(*t), query).await;
                if let Ok(leased) = &r {
                    self.tokens.extend(leased.iter().map(|l| l.token));
                }
                let r = r.map(|leased| {
                    leased
                        .iter()
                        .map(|l| {
                            (
                                self.event(&l.event),
                                self.token(l.token),
                                l.attempt,
                                l.expires_at,
                            )
                        })
                        .collect::<Vec<_>>()
                });
                self.describe(r)
            }
            Op::Extend(t, k, seconds) => {
                let by = Duration::from_secs(u64::from(*seconds));
                let r = self
                    .inbox
                    .extend(&tenant(*t), self.pick_token(*k), by)
                    .await;
                self.describe(r)
            }
            Op::Release(t, k, seconds) => {
                let after = seconds.map(|s| Duration::from_secs(u64::from(s)));
                let r = self
                    .inbox
                    .release(&tenant(*t), self.pick_token(*k), after)
                    .await;
                self.describe(r)
            }
            Op::AckLease(t, k) => {
                let r = self.inbox.ack_lease(&tenant(*t), self.pick_token(*k)).await;
                self.describe(r)
            }
            Op::Requeue(t, k) => {
                let r = self.inbox.requeue(&tenant(*t), self.pick_token(*k)).await;
                self.describe(r)
            }
            Op::DeadLetters(t) => {
                let r = self
                    .inbox
                    .dead_letters(&tenant(*t), PullQuery::new().limit(1000))
                    .await;
                let r = r.map(|page| {
                    page.events
                        .iter()
                        .map(|e| self.event(e))
                        .collect::<Vec<_>>()
                });
                self.describe(r)
            }
            Op::Redrive(t, e) => {
                let which = match e {
                    Some(e) => Redrive::Ids(vec![self.pick(*e)]),
                    None => Redrive::All,
                };
                let r = self.inbox.redrive(&tenant(*t), which).await;
                self.describe(r)
            }
            Op::Stats(t) => {
                let r = self.inbox.tenant_stats(&tenant(*t)).await;
                self.describe(r)
            }
            Op::Purge(limit) => {
                let r = self.inbox.purge_expired(usize::from(*limit)).await;
                self.describe(r)
            }
            Op::Restart => {
                self.inbox.close().await.expect("close");
                self.inbox = Self::inbox(self.harness, &self.clock).await;
                String::new()
            }
        }
    }

    fn ingested(&mut self, r: Result<Vec<crate::Ingested>>) -> String {
        if let Ok(list) = &r {
            for i in list.iter().filter(|i| !i.duplicate) {
                self.ids.push(i.id);
            }
        }
        let r = r.map(|list| {
            list.iter()
                .map(|i| (self.index(i.id), i.duplicate, i.created_at))
                .collect::<Vec<_>>()
        });
        self.describe(r)
    }

    async fn pull(&self, tenant: &TenantId, topic: Option<u8>, order: Order, limit: u32) -> String {
        let mut query = PullQuery::new().order(order).limit(limit);
        if let Some(topic) = topic {
            query = query.topic(format!("topic-{topic}"));
        }
        let mut pages = Vec::new();
        loop {
            if pages.len() > self.ids.len() + 1 {
                return format!(
                    "{pages:?} then more pages than events: the cursor does not advance"
                );
            }
            match self.inbox.pull(tenant, query.clone()).await {
                Ok(page) => {
                    pages.push(
                        page.events
                            .iter()
                            .map(|e| self.event(e))
                            .collect::<Vec<_>>(),
                    );
                    match page.next_cursor {
                        Some(cursor) if page.has_more => query = query.after(cursor),
                        _ => return format!("{pages:?}"),
                    }
                }
                Err(e) => return format!("{pages:?} then {}", self.error(&e)),
            }
        }
    }

    fn event(&self, e: &Event) -> String {
        format!(
            "#{:?} {} {:?} {:?} {:?} {:?} {} {:?} {} {:?}",
            self.index(e.id),
            e.tenant,
            e.topic,
            e.idempotency_key,
            e.payload,
            e.status,
            e.attempts,
            e.created_at,
            e.id.created_at() == e.created_at,
            e.leased_until,
        )
    }

    fn describe<T: Debug>(&self, r: Result<T>) -> String {
        match r {
            Ok(v) => format!("Ok({v:?})"),
            Err(e) => self.error(&e),
        }
    }

    fn error(&self, e: &Error) -> String {
        match e {
            Error::NotFound { id } => format!("NotFound(#{:?})", self.index(*id)),
            Error::IdempotencyConflict { key, original } => {
                format!("Conflict({key}, #{:?})", self.index(*original))
            }
            Error::InvalidInput(_) => "InvalidInput".into(),
            Error::LeaseLost { id } => format!("LeaseLost(#{:?})", self.index(*id)),
            other => format!("unexpected error: {other}"),
        }
    }
}

fn tenant(n: u8) -> TenantId {
    TenantId::new(format!("tenant-{n}")).expect("valid tenant")
}

fn event(item: &Item) -> NewEvent {
    let bodies = [
        json!({ "b": 0 }),
        json!({ "b": "ü😀\u{0}" }),
        json!({ "b": [1, { "c": null }] }),
    ];
    let mut e = NewEvent::new(bodies[usize::from(item.body) % bodies.len()].clone())
        .with_topic(format!("topic-{}", item.topic));
    if let Some(key) = item.key {
        e = e.with_idempotency_key(format!("key-{key}"));
    }
    let _ = item.tenant;
    e
}

/// Runs `ops` against `harness` and the in-memory model, asserting that
/// every answer is the same.
pub async fn compare_with_model(harness: &dyn Harness, ops: &[Op]) {
    let model_harness = MemoryHarness::new();
    let mut model = Side::open(&model_harness).await;
    let mut real = Side::open(harness).await;
    for (step, op) in ops.iter().enumerate() {
        let expected = model.apply(op).await;
        let got = real.apply(op).await;
        assert_eq!(got, expected, "step {step}: {op:?}\nops: {ops:?}");
    }
}
