//! The applied log: one [`Machine`] per partition holding tenants' logs
//! (a lane), fed in offset order by a consumer thread, and the callers of
//! this instance waiting for their own records' outcomes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use zapinbox_core::raw::{ChangeFeed, Context, Entropy, Machine};
use zapinbox_core::{
    AckOutcome, DeleteOutcome, Error, Ingested, Leased, Purged, QueueConfig, ReleaseOutcome,
    Result, TenantId, Timestamp, Traffic, Way,
};

use crate::backend::classify;
use crate::chunk::Chunks;
use crate::holes::Holes;
use crate::record::{Op, Origin, Record, VERSION};
use crate::topics;

/// What applying a record answered its writer.
#[derive(Debug)]
pub(crate) enum Answer {
    Ingested(Result<Vec<Ingested>>),
    Leased(Result<Vec<Leased>>),
    Expires(Result<Timestamp>),
    Released(Result<ReleaseOutcome>),
    Requeued(Result<()>),
    Acked(Result<AckOutcome>),
    AckedEach(Vec<Result<AckOutcome>>),
    Deleted(Result<DeleteOutcome>),
    Count(u64),
    Purged(Purged),
    Done(Result<()>),
    /// The record could not be read (not written by this crate's format).
    Unreadable(String),
}

/// Where a log is: a partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct At {
    pub topic: String,
    pub partition: i32,
}

/// One partition's applied state.
pub(crate) struct Lane {
    pub machine: Machine,
    /// The next offset to apply.
    pub next: i64,
}

impl Lane {
    /// A lane whose records before `next` are applied into `machine`.
    pub fn new(mut machine: Machine, next: i64) -> Self {
        // The log keeps acked events' content; memory keeps what is live.
        machine.drop_acked_content(true);
        Lane { machine, next }
    }
}

/// A record of the tenant registry, `<prefix>._tenants`: a tenant's
/// topic was made, or deleted. Every instance follows the registry to
/// follow every tenant's topic.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Registered {
    Joined(String),
    Left(String),
}

/// The state every instance rebuilds from the log.
pub(crate) struct Log {
    state: Mutex<Applied>,
    /// Reads every lane; lanes join and leave while it runs.
    consumer: BaseConsumer,
    /// Woken after every batch of applied records.
    progress: Notify,
    /// Wakes subscriptions when a tenant's events arrive.
    pub feed: ChangeFeed,
    /// The rules records are applied under.
    rules: QueueConfig,
    /// This instance, as records name their writer.
    instance: u64,
    /// Where large payloads' chunks are, if there is a chunk topic.
    pub chunks: Option<Chunks>,
    /// The tenant registry and the tenants' topics' prefix, with a topic
    /// per tenant.
    registry: Option<(String, String)>,
}

pub(crate) struct Applied {
    pub lanes: HashMap<At, Lane>,
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    /// Why this instance stopped following the log, once it has.
    stopped: Option<String>,
}

/// Positions of a record's events: its offset in the high bits, its
/// place in the record in the low 16 (a batch holds at most 65 535).
pub(crate) const POSITION_BITS: u32 = 16;

impl Log {
    /// A log of `lanes`, which `consumer` is assigned from where each is
    /// applied up to.
    pub fn new(
        consumer: BaseConsumer,
        lanes: HashMap<At, Lane>,
        rules: QueueConfig,
        instance: u64,
        chunks: Option<Chunks>,
        registry: Option<(String, String)>,
    ) -> Self {
        Log {
            state: Mutex::new(Applied {
                lanes,
                waiting: HashMap::new(),
                stopped: None,
            }),
            consumer,
            progress: Notify::new(),
            feed: ChangeFeed::new(),
            rules,
            instance,
            chunks,
            registry,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Applied> {
        // Applying a record never panics halfway on input (records that do
        // not decode are skipped whole), so a poisoned lock holds no torn
        // state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the writer of request `req` to hear its outcome; why
    /// not, if this instance stopped following the log.
    pub fn expect(&self, req: u64) -> Result<oneshot::Receiver<Answer>> {
        let mut applied = self.lock();
        if let Some(reason) = &applied.stopped {
            return Err(Error::permanent(reason.clone()));
        }
        let (tx, rx) = oneshot::channel();
        applied.waiting.insert(req, tx);
        Ok(rx)
    }

    /// Waits until no writer of this instance is waiting for its record,
    /// or `within` passes.
    pub async fn answered_all(&self, within: Duration) -> Result<()> {
        if self
            .wait_until(within, |a| Ok(a.waiting.is_empty()))
            .await?
        {
            return Ok(());
        }
        let waiting = self.lock().waiting.len();
        Err(Error::transient(format!(
            "{waiting} writes were still waiting for their records after {within:?}"
        )))
    }

    /// Waits until `done` holds of the applied state, looking again after
    /// every batch applied; false if `within` passed first.
    async fn wait_until(
        &self,
        within: Duration,
        mut done: impl FnMut(&Applied) -> Result<bool>,
    ) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before looking, so no batch slips in between.
            let progress = self.progress.notified();
            if done(&self.lock())? {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return Ok(false);
            }
        }
    }

    /// Why this instance stopped following the log, if it has.
    pub fn stopped(&self) -> Option<String> {
        self.lock().stopped.clone()
    }

    /// Forgets request `req` (its caller gave up or its send failed).
    pub fn forget(&self, req: u64) {
        self.lock().waiting.remove(&req);
    }

    /// Follows lane `at` from offset `next` on, unless it already does.
    pub fn join(&self, at: &At, next: i64) -> Result<()> {
        {
            let mut applied = self.lock();
            if applied.lanes.contains_key(at) {
                return Ok(());
            }
            let lane = Lane::new(Machine::new(), next);
            applied.lanes.insert(at.clone(), lane);
        }
        // Outside the lock: the applier and reads need it meanwhile.
        let mut assignment = TopicPartitionList::new();
        let assigned = assignment
            .add_partition_offset(&at.topic, at.partition, Offset::Offset(next))
            .and_then(|()| self.consumer.incremental_assign(&assignment));
        if let Err(e) = assigned {
            self.lock().lanes.remove(at);
            return Err(classify(e));
        }
        Ok(())
    }

    /// Stops following lane `at` and forgets its state.
    pub fn leave(&self, at: &At) -> Result<()> {
        if self.lock().lanes.remove(at).is_none() {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition(&at.topic, at.partition);
        self.consumer
            .incremental_unassign(&assignment)
            .map_err(classify)
    }

    /// Joins or leaves a tenant's lane as a record of the tenant registry
    /// says (with a topic per tenant).
    fn register(&self, prefix: &str, bytes: &[u8]) {
        let lane = |topic| At {
            topic,
            partition: 0,
        };
        let change = match serde_json::from_slice::<Registered>(bytes) {
            Ok(Registered::Joined(topic) | Registered::Left(topic))
                if !topics::is_tenant_topic(prefix, &topic) =>
            {
                tracing::warn!(topic, "the registry names a topic that is no tenant's");
                Ok(())
            }
            Ok(Registered::Joined(topic)) => self.join(&lane(topic), 0),
            Ok(Registered::Left(topic)) => self.leave(&lane(topic)),
            Err(e) => {
                tracing::warn!(error = %e, "skipping a registry record that does not decode");
                Ok(())
            }
        };
        if let Err(e) = change {
            tracing::warn!(error = %e, "following the tenant registry");
        }
    }

    /// Waits until every lane in `ends` is applied up to its end
    /// (exclusive), or `within` passes.
    pub async fn caught_up(&self, ends: &[(At, i64)], within: Duration) -> Result<()> {
        let caught_up = self.wait_until(within, |applied| match &applied.stopped {
            Some(reason) => Err(Error::permanent(reason.clone())),
            None => Ok(ends
                .iter()
                .all(|(at, end)| applied.lanes.get(at).is_none_or(|lane| lane.next >= *end))),
        });
        if caught_up.await? {
            return Ok(());
        }
        Err(Error::transient(format!(
            "the log was not replayed within {within:?}"
        )))
    }

    /// Puts the chunked payloads of an ingest record back together,
    /// asking the brokers again while they cannot answer (a record is
    /// applied whole or not yet); false if `stop` was set meanwhile.
    fn resolve(&self, record: &mut Record, stop: &AtomicBool) -> bool {
        let Op::Ingest { events } = &mut record.op else {
            return true;
        };
        for event in events {
            // Only errors worth retrying come back (a chunk topic that is
            // gone damages the payload instead).
            while let Err(e) = event.resolve(self.chunks.as_ref()) {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                tracing::warn!(error = %e, "reading a payload's chunks; trying again");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        true
    }

    /// Where the record at `offset` of lane `at` stands; a record whose
    /// lane left (its tenant deleted) is not applied, and a writer of this
    /// instance waiting for it hears so.
    fn place(&self, at: &At, offset: i64, bytes: &[u8]) -> Place {
        let mut applied = self.lock();
        if let Some(lane) = applied.lanes.get(at) {
            return match offset.cmp(&lane.next) {
                std::cmp::Ordering::Less => {
                    // Fetched twice, or come after its lane went on
                    // without it: a writer of this instance still waiting
                    // for it hears so.
                    let reason = format!("{at:?} went on past offset {offset} before it came");
                    self.not_applied(&mut applied, bytes, reason);
                    Place::Applied
                }
                std::cmp::Ordering::Equal => Place::Next,
                std::cmp::Ordering::Greater => Place::Ahead { missing: lane.next },
            };
        }
        let reason = format!("{} was deleted while this write was in flight", at.topic);
        self.not_applied(&mut applied, bytes, reason);
        Place::Applied
    }

    /// Makes lane `at` go on from `offset`, without the records before it
    /// that never came (see [`crate::holes`]).
    fn skip_to(&self, at: &At, offset: i64) {
        if let Some(lane) = self.lock().lanes.get_mut(at) {
            tracing::warn!(
                ?at,
                from = lane.next,
                to = offset,
                "going on without records that never came"
            );
            lane.next = lane.next.max(offset);
        }
    }

    /// Tells the writer of the record `bytes`, if it is a caller of this
    /// instance still waiting, that the record was not applied and why.
    fn not_applied(&self, applied: &mut Applied, bytes: &[u8], reason: String) {
        if let Ok(origin) = serde_json::from_slice::<Origin>(bytes)
            && origin.from == self.instance
            && let Some(waiter) = applied.waiting.remove(&origin.req)
        {
            let _ = waiter.send(Answer::Unreadable(reason));
        }
    }

    /// Applies the record at `offset` of lane `at` if it is the next; the
    /// offset still missing if it is ahead of its lane.
    fn apply(&self, at: &At, offset: i64, bytes: &[u8], stop: &AtomicBool) -> Option<i64> {
        match self.place(at, offset, bytes) {
            Place::Applied => return None,
            Place::Ahead { missing } => return Some(missing),
            Place::Next => {}
        }
        let mut record = serde_json::from_slice::<Record>(bytes)
            .map_err(|e| e.to_string())
            .and_then(|r| match r.v {
                VERSION => Ok(r),
                v => Err(format!("record format {v} is not {VERSION}")),
            });
        if let Ok(record) = &mut record
            && !self.resolve(record, stop)
        {
            return None;
        }
        let mut applied = self.lock();
        let Some(lane) = applied.lanes.get_mut(at) else {
            return None; // the lane left meanwhile
        };
        lane.next = offset + 1;
        let record = match record {
            Ok(record) => record,
            Err(reason) => {
                // Skipped by every instance alike; its writer hears why.
                tracing::warn!(?at, offset, %reason, "skipping a record that does not decode");
                self.not_applied(&mut applied, bytes, reason);
                return None;
            }
        };
        let (from, req) = (record.from, record.req);
        let ingested = matches!(record.op, Op::Ingest { .. });
        let tenant = record.tenant.clone();
        let answer = run(&mut lane.machine, &self.rules, record, offset);
        if from == self.instance
            && let Some(waiter) = applied.waiting.remove(&req)
        {
            let _ = waiter.send(answer);
        }
        drop(applied);
        if ingested && let Some(tenant) = tenant {
            self.feed.notify(&tenant);
        }
        None
    }

    /// Runs the consumer until `stop` is set: every record of every
    /// partition, in order. If records it had yet to apply are gone from
    /// the log, it stops: this instance can no longer reach the state the
    /// others have.
    pub fn follow(self: Arc<Self>, stop: Arc<AtomicBool>) {
        let reason = self.apply_until(&stop);
        let mut applied = self.lock();
        applied.stopped = Some(reason);
        // Writers still waiting hear that the log stopped.
        applied.waiting.clear();
        drop(applied);
        self.progress.notify_waiters();
        self.feed.notify_all();
    }

    /// Applies records until `stop` is set or the log loses records this
    /// instance needs; why it stopped.
    fn apply_until(&self, stop: &AtomicBool) -> String {
        let consumer = &self.consumer;
        let mut holes = Holes::default();
        while !stop.load(Ordering::Relaxed) {
            let mut any = false;
            // Takes what is buffered before waking waiters once.
            for _ in 0..1024 {
                let timeout = if any {
                    Duration::ZERO
                } else {
                    Duration::from_millis(50)
                };
                match consumer.poll(timeout) {
                    None => break,
                    Some(Ok(message))
                        if let Some((registry, prefix)) = &self.registry
                            && registry == message.topic() =>
                    {
                        self.register(prefix, message.payload().unwrap_or_default());
                    }
                    Some(Ok(message)) => {
                        any = true;
                        let at = At {
                            topic: message.topic().to_owned(),
                            partition: message.partition(),
                        };
                        let (offset, bytes) =
                            (message.offset(), message.payload().unwrap_or_default());
                        match self.apply(&at, offset, bytes, stop) {
                            None => holes.filled(&at),
                            Some(missing) => {
                                if !self.fetch_again(&mut holes, &at, missing, stop)
                                    && !stop.load(Ordering::Relaxed)
                                {
                                    self.skip_to(&at, offset);
                                    self.apply(&at, offset, bytes, stop);
                                }
                            }
                        }
                    }
                    Some(Err(e)) if crate::reader::gone(&e) => {
                        tracing::error!(error = %e, "records this instance needs are gone");
                        return format!(
                            "the log no longer holds records this instance had yet to apply ({e}): reopen it"
                        );
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "kafka consumer error");
                        break;
                    }
                }
            }
            if any {
                self.progress.notify_waiters();
            }
        }
        "the backend is closed".into()
    }

    /// Makes the consumer fetch lane `at` again from offset `missing`,
    /// which a later record overtook (see [`crate::holes`]): the records
    /// fetched after it come again. False once the lane has waited for it
    /// long enough, or left, or the log stops: the caller goes on.
    fn fetch_again(&self, holes: &mut Holes, at: &At, missing: i64, stop: &AtomicBool) -> bool {
        while holes.wait_for(at, missing, Instant::now())
            && !stop.load(Ordering::Relaxed)
            && self.lock().lanes.contains_key(at)
        {
            let sought = self.consumer.seek(
                &at.topic,
                at.partition,
                Offset::Offset(missing),
                Duration::from_secs(1),
            );
            match sought {
                Ok(()) => {
                    // A gap lasts while its batch is being stored: fetching
                    // again at once would mostly find it still there.
                    std::thread::sleep(Duration::from_millis(1));
                    return true;
                }
                // The record just fetched is dropped: only a seek brings
                // it back, so it is tried again.
                Err(e) => {
                    tracing::warn!(?at, missing, error = %e, "cannot fetch a lane again; retrying");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        false
    }
}

/// Where a record stands against its lane.
enum Place {
    /// Applied already (fetched twice), or its lane left.
    Applied,
    /// The next to apply.
    Next,
    /// Ahead: the record at offset `missing` has not come yet.
    Ahead { missing: i64 },
}

/// Applies one record to its partition's machine.
fn run(machine: &mut Machine, rules: &QueueConfig, record: Record, offset: i64) -> Answer {
    let cx = Context::new(record.time(), rules);
    let mut entropy = Entropy::new(record.seed);
    let Some(tenant) = record.tenant else {
        return match record.op {
            Op::PurgeExpired { limit } => Answer::Purged(machine.purge_expired(cx, limit)),
            Op::Usage { records } => {
                machine.add_usage(records);
                Answer::Done(Ok(()))
            }
            other => Answer::Unreadable(format!("{other:?} without a tenant")),
        };
    };
    let tenant: &TenantId = &tenant;
    match record.op {
        Op::Ingest { events } => {
            let Some(events) = events.into_iter().map(|e| e.into_parts()).collect() else {
                return Answer::Unreadable("an event's fingerprint is not hex".into());
            };
            let first = u64::try_from(offset).unwrap_or(0) << POSITION_BITS;
            machine.skip_positions_to(first + 1);
            Answer::Ingested(machine.ingest_batch(cx, tenant, events))
        }
        Op::Claim { query } => Answer::Leased(machine.claim(cx, tenant, &query, &mut entropy)),
        Op::Extend { token, by_ms } => {
            let by = Duration::from_millis(by_ms);
            Answer::Expires(machine.extend(cx, tenant, token, by, &mut entropy))
        }
        Op::Release {
            token,
            retry_after_ms,
        } => {
            let after = retry_after_ms.map(Duration::from_millis);
            Answer::Released(machine.release(cx, tenant, token, after, &mut entropy))
        }
        Op::Requeue { token } => Answer::Requeued(machine.requeue(cx, tenant, token)),
        Op::AckLease { token } => Answer::Acked(machine.ack_lease(cx, tenant, token)),
        Op::AckLeases { tokens } => Answer::AckedEach(
            tokens
                .into_iter()
                .map(|token| machine.ack_lease(cx, tenant, token))
                .collect(),
        ),
        Op::Ack { id } => Answer::Acked(machine.ack(cx, tenant, id)),
        Op::Delete { id } => Answer::Deleted(machine.delete(cx, tenant, id)),
        Op::Redrive { which } => Answer::Count(machine.redrive(cx, tenant, &which)),
        Op::PurgeDeadLetters { which } => {
            Answer::Count(machine.purge_dead_letters(cx, tenant, &which))
        }
        // Decided in log order: of two pulls racing for the last of the
        // day's quota, the first record is served whole and the second
        // refused, on every instance.
        Op::Delivered { messages, bytes } => {
            let traffic = Traffic::new(Way::Out, messages, bytes);
            let counted = machine.check_delivery(cx, tenant);
            Answer::Done(counted.and_then(|()| machine.count_delivery(cx, tenant, traffic)))
        }
        Op::PurgeExpired { limit } => Answer::Purged(machine.purge_expired(cx, limit)),
        Op::Usage { records } => {
            machine.add_usage(records);
            Answer::Done(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockBroker;
    use crate::open::new_consumer;

    #[test]
    fn a_record_ahead_of_its_lane_waits_for_the_one_before_it() {
        let broker = MockBroker::start().expect("mock cluster");
        let consumer = new_consumer(&broker.config("t"), "gap-test".into(), &[]).expect("consumer");
        let at = At {
            topic: "t".into(),
            partition: 0,
        };
        let lanes = HashMap::from([(at.clone(), Lane::new(Machine::new(), 0))]);
        let log = Log::new(consumer, lanes, QueueConfig::default(), 1, None, None);
        let (stop, next) = (AtomicBool::new(false), || log.lock().lanes[&at].next);
        // Records that do not decode still take their place in the lane.
        assert_eq!(log.apply(&at, 0, b"?", &stop), None);
        assert_eq!(
            log.apply(&at, 2, b"?", &stop),
            Some(1),
            "offset 1 is missing"
        );
        assert_eq!(next(), 1);
        assert_eq!(log.apply(&at, 1, b"?", &stop), None);
        assert_eq!(log.apply(&at, 1, b"?", &stop), None, "fetched twice");
        assert_eq!(log.apply(&at, 2, b"?", &stop), None);
        assert_eq!(next(), 3);
        log.skip_to(&at, 7);
        assert_eq!(log.apply(&at, 7, b"?", &stop), None);
        assert_eq!(next(), 8);
    }
}
