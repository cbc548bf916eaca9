//! `KafkaBackend`: writes are records in the tenant's partition, answered
//! once this instance has applied them; reads come from the applied state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use zapinbox_core::raw::{
    Acknowledge, Changes, Context, Delete, Idempotency, InboxPull, Ingest, Leases, Machine,
    Metering, Position, Retention, Stats, ValidEvent, check_delay, check_lease,
};
use zapinbox_core::{
    AckOutcome, Backend, Capabilities, ClaimQuery, Cursor, DeleteOutcome, Error, Event, EventId,
    EventStatus, Filter, Ingested, LeaseToken, Leased, Order, Page, PullQuery, Purged, QueueConfig,
    Redrive, ReleaseOutcome, Result, SharedWrites, TenantId, TenantStats, Timestamp, UsageRecord,
};

use crate::chunk::Chunks;
use crate::config::{KafkaConfig, Layout};
use crate::log::{Answer, At, Log, POSITION_BITS, Registered};
use crate::open::{client_config, new_consumer, resume};
use crate::reader::Reader;
use crate::record::{EventRecord, Op, Record, VERSION};
use crate::snapshot;
use crate::topics::{self, Topics};

const NAME: &str = "kafka";

/// Within how long other instances' records are applied here: declared as
/// a capability, and how long offboarding waits for them. Milliseconds
/// normally; an instance opened on a busy log (two whole conformance
/// suites at once on one topic, megabytes of chunked payloads among them)
/// took over a second to catch up on this 2-core machine.
const SHARED_WITHIN: Duration = Duration::from_secs(5);

/// The inbox on a Kafka topic: each tenant's operations are records in
/// its partition, and every instance applies them in order to the same
/// state. See the crate docs.
#[derive(Clone)]
pub struct KafkaBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: QueueConfig,
    kafka: KafkaConfig,
    producer: FutureProducer,
    log: Arc<Log>,
    /// The shared topic's partition count (0 with a topic per tenant).
    partitions: usize,
    /// Makes and deletes tenants' topics, with a topic per tenant.
    topics: Option<Arc<Topics>>,
    /// The snapshot topic's partition count (0: none).
    snapshot_partitions: usize,
    /// Where opening resumed each lane, in the lanes' order.
    resumed_from: Vec<i64>,
    /// Reads acked events' content back from the log (and chunks).
    reader: Arc<Reader>,
    instance: u64,
    next_request: AtomicU64,
    /// Stops the consumer thread when the last handle goes.
    stop: Arc<AtomicBool>,
    /// Set by `close`: new calls are refused while what is in flight ends.
    closing: AtomicBool,
    /// The slot each lane's next snapshot goes to, locked for a whole
    /// snapshot: two at once would write the same slot.
    slots: tokio::sync::Mutex<HashMap<At, u8>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("brokers", &self.inner.kafka.brokers)
            .field("topic", &self.inner.kafka.topic)
            .field("layout", &self.inner.kafka.layout)
            .finish()
    }
}

impl KafkaBackend {
    /// Opens the inbox on `kafka`'s topic, which must exist, and replays
    /// its log: the state is that of every record written before this
    /// call. Every instance on one topic must use the same rules (`config`
    /// apart from its clock): they decide what each record does.
    pub async fn open(kafka: KafkaConfig, config: QueueConfig) -> Result<Self> {
        let config = config.applied();
        let instance: u64 = rand::random();
        let producer: FutureProducer = client_config(
            &kafka,
            &[
                ("enable.idempotence", "true".into()),
                ("acks", "all".into()),
                ("linger.ms", kafka.linger.as_millis().to_string()),
                ("batch.num.messages", kafka.batch_records.to_string()),
                ("compression.type", kafka.compression.name().to_owned()),
                ("message.max.bytes", kafka.max_record_bytes.to_string()),
            ],
        )
        .create()
        .map_err(classify)?;
        // Records gone before they were applied stop this instance rather
        // than letting it skip ahead (see `Log::follow`).
        let reset = [("auto.offset.reset", "error")];
        let consumer = new_consumer(&kafka, format!("zapinbox-{instance:016x}"), &reset)?;
        let loader = new_consumer(&kafka, format!("zapinbox-{instance:016x}-snapshots"), &[])?;
        let reader = new_consumer(&kafka, format!("zapinbox-{instance:016x}-reader"), &reset)?;
        let reader = Arc::new(Reader::new(reader, kafka.apply_timeout));
        let topics = match &kafka.layout {
            Layout::Shared => None,
            Layout::TopicPerTenant(settings) => {
                let topics = Arc::new(Topics::new(&kafka, settings.clone(), producer.clone()));
                Arc::clone(&topics).create_registry().await?;
                Some(topics)
            }
        };
        let registry = topics
            .as_ref()
            .map(|t| (t.registry.clone(), kafka.topic.clone()));
        let settings = kafka.clone();
        let following = registry.as_ref().map(|(registry, _)| registry.clone());
        let (consumer, mut start) = tokio::task::spawn_blocking(move || {
            resume(&consumer, &loader, &settings, following.as_deref())
                .map(|start| (consumer, start))
        })
        .await
        .map_err(Error::permanent)??;
        // Read whenever a chunk topic is named (as every instance must, to
        // apply the same records alike); written only if it exists.
        let chunk_bytes = (kafka.max_record_bytes.saturating_sub(1024)).clamp(1024, 1 << 20);
        let chunks = kafka.chunk_topic().map(|topic| {
            let reader = Arc::clone(&reader);
            Chunks::new(topic, start.chunk_partitions, reader, chunk_bytes)
        });
        let ends = std::mem::take(&mut start.ends);
        let resumed_from = ends
            .iter()
            .map(|(at, _)| start.lanes.get(at).map_or(0, |lane| lane.next))
            .collect();
        let lanes = std::mem::take(&mut start.lanes);
        let log = Log::new(consumer, lanes, config.clone(), instance, chunks, registry);
        let log = Arc::new(log);
        let stop = Arc::new(AtomicBool::new(false));
        let follower = (Arc::clone(&log), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("zapinbox-kafka-log".into())
            .spawn(move || follower.0.follow(follower.1))
            .map_err(Error::permanent)?;
        let backend = KafkaBackend {
            inner: Arc::new(Inner {
                config,
                partitions: start.partitions,
                topics,
                snapshot_partitions: start.snapshot_partitions,
                resumed_from,
                reader,
                kafka,
                producer,
                log,
                instance,
                next_request: AtomicU64::new(0),
                stop,
                closing: AtomicBool::new(false),
                slots: tokio::sync::Mutex::new(start.slots),
            }),
        };
        backend
            .inner
            .log
            .caught_up(&ends, backend.inner.kafka.replay_timeout)
            .await?;
        Ok(backend)
    }

    /// Writes a snapshot of every lane's applied state (each partition
    /// of the shared topic, or each tenant's topic) to the snapshot topic,
    /// so that opening later replays only the records after it. Returns,
    /// per lane in [`applied_state`](Self::applied_state)'s order, the
    /// offset the snapshot resumes from. Fails if snapshots are off or
    /// their topic does not exist.
    ///
    /// Let one instance write snapshots: two writing at once may each
    /// overwrite the slot the other is writing, and then neither completes
    /// (opening then resumes from an older snapshot, or the log's start).
    /// Each lane's state is serialized under the applier's lock, which
    /// holds up that instance's writes meanwhile (see the crate docs for
    /// figures).
    pub async fn snapshot(&self) -> Result<Vec<i64>> {
        self.ensure_open()?;
        let inner = &self.inner;
        let mut slots = inner.slots.lock().await;
        let topic = self.snapshot_topic()?;
        let lanes = self.lanes();
        let mut offsets = Vec::with_capacity(lanes.len());
        for (n, at) in lanes.iter().enumerate() {
            let (state, next) = {
                let applied = inner.log.lock();
                let Some(lane) = applied.lanes.get(at) else {
                    continue; // left meanwhile
                };
                let state = serde_json::to_vec(&lane.machine);
                (state.map_err(Error::permanent)?, lane.next)
            };
            let slot = slots.get(at).copied().unwrap_or(0);
            // Chunks spread over the snapshot topic's partitions.
            let spread = |index: usize| (n + index * lanes.len()) % inner.snapshot_partitions;
            self.write_snapshot(&topic, at, next, slot, &state, spread)
                .await?;
            // The other slot next time, now that this one is complete.
            slots.insert(at.clone(), 1 - slot);
            offsets.push(next);
        }
        Ok(offsets)
    }

    /// The snapshot topic, if snapshots are on and it existed at open.
    fn snapshot_topic(&self) -> Result<String> {
        let topic = self
            .inner
            .kafka
            .snapshot_topic()
            .ok_or(Error::Unsupported {
                operation: "snapshot (snapshots are off)",
                backend: NAME,
            })?;
        if self.inner.snapshot_partitions == 0 {
            return Err(Error::permanent(format!(
                "the snapshot topic {topic} did not exist when this instance opened"
            )));
        }
        Ok(topic)
    }

    /// Writes `state`, lane `at`'s state before offset `next`, to `slot`
    /// of the snapshot `topic`, its chunks to the partitions `spread` says.
    async fn write_snapshot(
        &self,
        topic: &str,
        at: &At,
        next: i64,
        slot: u8,
        state: &[u8],
        spread: impl Fn(usize) -> usize,
    ) -> Result<()> {
        let inner = &self.inner;
        let records = snapshot::chunks(at, next, slot, state, inner.kafka.max_record_bytes);
        let sends = records.iter().enumerate().map(|(index, (key, value))| {
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(value)
                .partition(spread(index) as i32);
            inner.producer.send(record, inner.kafka.apply_timeout)
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(e, _)| classify(e))?;
        }
        Ok(())
    }

    /// Makes lane `at`'s newest snapshot an empty state at offset 0, so a
    /// topic of the same name made later is replayed from its start, not
    /// from the deleted one's state.
    async fn forget_snapshots(&self, at: &At) -> Result<()> {
        let Ok(topic) = self.snapshot_topic() else {
            return Ok(()); // no snapshots to forget
        };
        let mut slots = self.inner.slots.lock().await;
        let slot = slots.get(at).copied().unwrap_or(0);
        let empty = serde_json::to_vec(&Machine::new()).map_err(Error::permanent)?;
        let partitions = self.inner.snapshot_partitions;
        self.write_snapshot(&topic, at, 0, slot, &empty, |index| index % partitions)
            .await?;
        slots.insert(at.clone(), 1 - slot);
        Ok(())
    }

    /// Deletes `tenant`'s topic and with it every record of its log
    /// (offboarding): every instance forgets its state (told through the
    /// registry), a second later the topic is deleted, and then its newest
    /// snapshot says it is empty (a tenant of the same name later starts
    /// afresh). Its large payloads' chunks stay until the chunk topic's
    /// retention removes
    /// them. Only with a topic per tenant: `Unsupported` otherwise. Let
    /// writes for the tenant stop first: one racing the deletion makes
    /// the topic again. librdkafka's mock cluster cannot delete topics.
    pub async fn delete_tenant(&self, tenant: &TenantId) -> Result<()> {
        self.ensure_open()?;
        let Some(topics) = &self.inner.topics else {
            return Err(Error::Unsupported {
                operation: "delete_tenant (with the shared topic)",
                backend: NAME,
            });
        };
        let at = self.at(tenant)?;
        // Every instance stops following the topic before it goes: a
        // consumer still fetching a deleted topic asks the brokers for its
        // metadata, and librdkafka 2.12 can crash on what tansu answers.
        self.inner.log.leave(&at)?;
        topics.announce(&Registered::Left(at.topic.clone())).await?;
        tokio::time::sleep(SHARED_WITHIN).await;
        topics.delete(&at.topic).await?;
        self.forget_snapshots(&at).await
    }

    /// The partition of the topic that holds `tenant`'s log: with a topic
    /// per tenant, 0 of its own topic.
    pub fn partition(&self, tenant: &TenantId) -> i32 {
        match self.inner.kafka.layout {
            Layout::Shared => self.partition_of(tenant) as i32,
            Layout::TopicPerTenant(_) => 0,
        }
    }

    /// A cursor from which pulling or subscribing yields `tenant`'s events
    /// ingested by records at `offset` of its [partition](Self::partition)
    /// or later, oldest first: the source system "Event Hub"'s
    /// `start_offset`. Past the log's end, it yields the events of records
    /// from `offset` on as they arrive (those before it never). For a
    /// point in time, filter with `since` instead.
    pub fn cursor_from_offset(&self, tenant: &TenantId, offset: u64) -> Cursor {
        let start = offset.min(u64::MAX >> POSITION_BITS) << POSITION_BITS;
        // Exclusive: the record's events are at `start + 1` onward.
        Cursor::encode(tenant, NAME, Order::Asc, &Position::sequence(start))
    }

    /// Where opening resumed each lane, in
    /// [`applied_state`](Self::applied_state)'s order: the offset after its
    /// newest snapshot, or 0 (the log replayed from its start).
    pub fn resumed_from(&self) -> &[i64] {
        &self.inner.resumed_from
    }

    /// The state of every lane (each partition of the shared topic, or
    /// each tenant's topic, by name) as this instance has applied it, as
    /// JSON, with the offset of the next record to apply: two instances at
    /// the same offsets have equal states. For checks and debugging; it
    /// copies everything.
    pub fn applied_state(&self) -> Result<Vec<(i64, serde_json::Value)>> {
        let applied = self.inner.log.lock();
        let mut lanes: Vec<_> = applied.lanes.iter().collect();
        lanes.sort_by(|a, b| a.0.cmp(b.0));
        lanes
            .into_iter()
            .map(|(_, lane)| Ok((lane.next, serde_json::to_value(&lane.machine)?)))
            .collect::<serde_json::Result<_>>()
            .map_err(Error::permanent)
    }

    /// Whether this instance follows lane `at` (every partition of the
    /// shared topic; a tenant's topic once it exists).
    fn follows(&self, at: &At) -> bool {
        self.inner.topics.is_none() || self.inner.log.lock().lanes.contains_key(at)
    }

    /// The lanes this instance follows, in order.
    fn lanes(&self) -> Vec<At> {
        let mut lanes: Vec<At> = self.inner.log.lock().lanes.keys().cloned().collect();
        lanes.sort();
        lanes
    }

    /// Where `tenant`'s log is.
    fn at(&self, tenant: &TenantId) -> Result<At> {
        let kafka = &self.inner.kafka;
        Ok(match kafka.layout {
            Layout::Shared => At {
                topic: kafka.topic.clone(),
                partition: self.partition_of(tenant) as i32,
            },
            Layout::TopicPerTenant(_) => At {
                topic: topics::tenant_topic(&kafka.topic, tenant)?,
                partition: 0,
            },
        })
    }

    /// Follows lane `at`, making its topic first if need be (with a topic
    /// per tenant; every shared partition is followed from the start).
    async fn ensure_lane(&self, at: &At) -> Result<()> {
        let Some(topics) = &self.inner.topics else {
            return Ok(());
        };
        if self.inner.log.lock().lanes.contains_key(at) {
            return Ok(());
        }
        Arc::clone(topics).create(&at.topic).await?;
        topics
            .announce(&Registered::Joined(at.topic.clone()))
            .await?;
        self.inner.log.join(at, 0)
    }

    /// The partition of the shared topic holding `tenant`'s log.
    fn partition_of(&self, tenant: &TenantId) -> usize {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = tenant
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        (hash % self.inner.partitions.max(1) as u64) as usize
    }

    /// The chunk topic, if it existed when this instance opened.
    fn writable_chunks(&self) -> Option<&Chunks> {
        self.inner.log.chunks.as_ref().filter(|c| c.writable())
    }

    /// The largest payload one record holds beside its event's fields.
    fn inline_payload_bytes(&self) -> usize {
        (self.inner.kafka.max_record_bytes / 2).min(512 * 1024)
    }

    /// Writes the payloads that would make `events` too large for one
    /// record to the chunk topic, leaving their places in the record:
    /// every payload over what one record holds, then the largest others
    /// until the rest fit together.
    async fn chunk_large_payloads(&self, events: &mut [EventRecord]) -> Result<()> {
        let Some(chunks) = self.writable_chunks() else {
            return Ok(());
        };
        let mut largest_first: Vec<usize> = (0..events.len()).collect();
        largest_first.sort_by_key(|&i| std::cmp::Reverse(events[i].payload.len()));
        let mut inline: usize = events.iter().map(|e| e.payload.len()).sum();
        let room = self.inner.kafka.max_record_bytes / 3 * 2;
        let mut chunked = Vec::new();
        for i in largest_first {
            let len = events[i].payload.len();
            if len <= self.inline_payload_bytes() && inline <= room {
                break;
            }
            inline -= len;
            chunked.push(i);
        }
        let producer = &self.inner.producer;
        let timeout = self.inner.kafka.apply_timeout;
        let writes = chunked.iter().map(|&i| {
            let event = &events[i];
            chunks.write(producer, event.id, &event.payload, timeout)
        });
        let written = futures::future::try_join_all(writes).await?;
        for (i, at) in chunked.into_iter().zip(written) {
            events[i].chunked(at);
        }
        Ok(())
    }

    /// Fails once the backend is closed or stopped following the log.
    fn ensure_open(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closing.load(Ordering::Relaxed) || inner.stop.load(Ordering::Relaxed) {
            return Err(Error::permanent("the Kafka backend is closed"));
        }
        match self.inner.log.stopped() {
            Some(reason) => Err(Error::permanent(reason)),
            None => Ok(()),
        }
    }

    /// Reads `tenant`'s applied state now (empty for a tenant whose topic
    /// this instance has not seen).
    fn read<T>(&self, tenant: &TenantId, f: impl FnOnce(&Machine, Context<'_>) -> T) -> Result<T> {
        self.ensure_open()?;
        let at = self.at(tenant)?;
        let config = &self.inner.config;
        let cx = Context::new(config.clock.now(), config);
        let applied = self.inner.log.lock();
        Ok(match applied.lanes.get(&at) {
            Some(lane) => f(&lane.machine, cx),
            None => f(&Machine::new(), cx),
        })
    }

    /// Writes `op` for `tenant` and waits until this instance has applied
    /// it: its outcome.
    async fn submit(&self, tenant: &TenantId, op: Op) -> Result<Answer> {
        self.ensure_open()?;
        let at = self.at(tenant)?;
        self.ensure_lane(&at).await?;
        self.submit_to(&at, Some(tenant.clone()), op).await
    }

    /// Writes `op` to lane `at` and waits until this instance has applied
    /// it. Makes no topic: a tenant's operations go through `submit`.
    async fn submit_to(&self, lane: &At, tenant: Option<TenantId>, op: Op) -> Result<Answer> {
        self.ensure_open()?;
        let inner = &self.inner;
        let at = inner.config.clock.now();
        let req = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let key = tenant
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default();
        let record = Record {
            v: VERSION,
            at: at.as_millis(),
            from: inner.instance,
            req,
            seed: rand::random(),
            tenant,
            op,
        };
        let bytes = serde_json::to_vec(&record).map_err(Error::permanent)?;
        if bytes.len() > inner.kafka.max_record_bytes {
            return Err(Error::LimitExceeded {
                what: "record bytes (KafkaConfig::max_record_bytes)",
                actual: bytes.len() as u64,
                limit: inner.kafka.max_record_bytes as u64,
            });
        }
        let answer = inner.log.expect(req)?;
        let forget = Forget(&inner.log, req);
        let sent = FutureRecord::to(&lane.topic)
            .partition(lane.partition)
            .key(&key)
            .payload(&bytes)
            .timestamp(at.as_millis() as i64);
        inner
            .producer
            .send(sent, inner.kafka.apply_timeout)
            .await
            .map_err(|(e, _)| classify(e))?;
        let answer = tokio::time::timeout(inner.kafka.apply_timeout, answer)
            .await
            .map_err(|_| {
                Error::transient(format!(
                    "the record was written but not applied within {:?}",
                    inner.kafka.apply_timeout
                ))
            })?
            .map_err(|_| {
                let reason = inner.log.stopped().unwrap_or_default();
                Error::transient(format!(
                    "the log stopped before applying the record: {reason}"
                ))
            })?;
        drop(forget);
        Ok(answer)
    }
}

/// Forgets a request whose caller stopped waiting.
struct Forget<'a>(&'a Log, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

/// Retryable unless the request itself is wrong.
pub(crate) fn classify(e: KafkaError) -> Error {
    let permanent = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::InvalidConfig
        )
    ) || matches!(e, KafkaError::ClientCreation(_));
    if permanent {
        Error::permanent(e)
    } else {
        Error::transient(e)
    }
}

/// The outcome in an answer of kind `$kind` (one carrying a `Result`).
macro_rules! outcome {
    ($answer:expr, $kind:ident) => {
        match $answer {
            Answer::$kind(outcome) => outcome,
            other => Err(unexpected(other)),
        }
    };
}

/// An answer of another kind than the operation's: a record this crate
/// could not apply.
fn unexpected(answer: Answer) -> Error {
    match answer {
        Answer::Unreadable(reason) => Error::permanent(format!("record not applied: {reason}")),
        other => Error::permanent(format!("unexpected outcome {other:?}")),
    }
}

#[async_trait]
impl Ingest for KafkaBackend {
    async fn ingest_batch(
        &self,
        tenant: &TenantId,
        events: Vec<ValidEvent>,
    ) -> Result<Vec<Ingested>> {
        let clock = &self.inner.config.clock;
        let mut events: Vec<EventRecord> = events
            .into_iter()
            .map(|e| EventRecord::new(clock.next_id(), e))
            .collect();
        self.ensure_open()?;
        self.chunk_large_payloads(&mut events).await?;
        outcome!(self.submit(tenant, Op::Ingest { events }).await?, Ingested)
    }
}

#[async_trait]
impl InboxPull for KafkaBackend {
    async fn pull(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        let page = self.read(tenant, |m, cx| {
            m.check_delivery(cx, tenant)?;
            m.list(cx, tenant, &query, EventStatus::Pending, NAME)
        })??;
        if self.inner.config.quotas.is_off() || page.events.is_empty() {
            return Ok(page);
        }
        let messages = page.events.len() as u64;
        let bytes = page.events.iter().map(|e| e.payload.len() as u64).sum();
        match self
            .submit(tenant, Op::Delivered { messages, bytes })
            .await?
        {
            Answer::Done(counted) => counted.map(|()| page),
            other => Err(unexpected(other)),
        }
    }

    /// An acked event's content is read back from its ingest record.
    async fn get(&self, tenant: &TenantId, id: EventId) -> Result<Option<Event>> {
        let (event, dropped) = self.read(tenant, |m, cx| {
            (m.get(cx, tenant, id), m.dropped_position(tenant, id))
        })?;
        let (mut event, position) = match (event, dropped) {
            (Some(event), Some(position)) => (event, position),
            (event, _) => return Ok(event),
        };
        let backend = self.clone();
        let at = self.at(tenant)?;
        tokio::task::spawn_blocking(move || {
            let inner = &backend.inner;
            let chunks = inner.log.chunks.as_ref();
            inner.reader.restore(&at, position, &mut event, chunks)?;
            Ok(Some(event))
        })
        .await
        .map_err(Error::permanent)?
    }
}

#[async_trait]
impl Acknowledge for KafkaBackend {
    async fn ack(&self, tenant: &TenantId, id: EventId) -> Result<AckOutcome> {
        outcome!(self.submit(tenant, Op::Ack { id }).await?, Acked)
    }
}

#[async_trait]
impl Delete for KafkaBackend {
    async fn delete(&self, tenant: &TenantId, id: EventId) -> Result<DeleteOutcome> {
        outcome!(self.submit(tenant, Op::Delete { id }).await?, Deleted)
    }
}

#[async_trait]
impl Idempotency for KafkaBackend {
    async fn find_by_key(&self, tenant: &TenantId, key: &str) -> Result<Option<EventId>> {
        self.read(tenant, |m, cx| m.find_by_key(cx, tenant, key))
    }
}

#[async_trait]
impl Leases for KafkaBackend {
    async fn claim(&self, tenant: &TenantId, query: ClaimQuery) -> Result<Vec<Leased>> {
        query.check()?;
        outcome!(self.submit(tenant, Op::Claim { query }).await?, Leased)
    }

    async fn claimable_at(&self, tenant: &TenantId, filter: &Filter) -> Result<Option<Timestamp>> {
        self.read(tenant, |m, cx| m.claimable_at(cx, tenant, filter))
    }

    async fn extend(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        by: Duration,
    ) -> Result<Timestamp> {
        check_lease(by)?;
        let by_ms = by.as_millis() as u64;
        outcome!(
            self.submit(tenant, Op::Extend { token, by_ms }).await?,
            Expires
        )
    }

    async fn release(
        &self,
        tenant: &TenantId,
        token: LeaseToken,
        retry_after: Option<Duration>,
    ) -> Result<ReleaseOutcome> {
        if let Some(delay) = retry_after {
            check_delay(delay)?;
        }
        let retry_after_ms = retry_after.map(|d| d.as_millis() as u64);
        let op = Op::Release {
            token,
            retry_after_ms,
        };
        outcome!(self.submit(tenant, op).await?, Released)
    }

    async fn requeue(&self, tenant: &TenantId, token: LeaseToken) -> Result<()> {
        outcome!(self.submit(tenant, Op::Requeue { token }).await?, Requeued)
    }

    async fn ack_lease(&self, tenant: &TenantId, token: LeaseToken) -> Result<AckOutcome> {
        outcome!(self.submit(tenant, Op::AckLease { token }).await?, Acked)
    }

    /// One record for up to a thousand of them (about 70 bytes each).
    async fn ack_leases(
        &self,
        tenant: &TenantId,
        tokens: Vec<LeaseToken>,
    ) -> Result<Vec<Result<AckOutcome>>> {
        let mut answers = Vec::with_capacity(tokens.len());
        for group in tokens.chunks(1000) {
            let tokens = group.to_vec();
            match self.submit(tenant, Op::AckLeases { tokens }).await? {
                Answer::AckedEach(each) => answers.extend(each),
                other => return Err(unexpected(other)),
            }
        }
        Ok(answers)
    }

    async fn dead_letters(&self, tenant: &TenantId, query: PullQuery) -> Result<Page> {
        self.read(tenant, |m, cx| {
            m.list(cx, tenant, &query, EventStatus::DeadLettered, NAME)
        })?
    }

    async fn redrive(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        match self.submit(tenant, Op::Redrive { which }).await? {
            Answer::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}

#[async_trait]
impl Retention for KafkaBackend {
    /// Lane by lane, each purging in its own log order, until `limit` is
    /// used up.
    async fn purge_expired(&self, limit: usize) -> Result<Purged> {
        let limit = limit.max(1);
        let (mut events, mut keys, mut more) = (0u64, 0u64, false);
        for at in self.lanes() {
            if !self.follows(&at) {
                continue; // its tenant was deleted meanwhile
            }
            let left = limit.saturating_sub(events.max(keys) as usize);
            if left == 0 {
                more = true;
                break;
            }
            let op = Op::PurgeExpired { limit: left };
            match self.submit_to(&at, None, op).await? {
                Answer::Purged(purged) => {
                    events += purged.events;
                    keys += purged.keys;
                    more |= purged.more;
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(Purged::new(events, keys, more))
    }

    async fn purge_dead_letters(&self, tenant: &TenantId, which: Redrive) -> Result<u64> {
        match self.submit(tenant, Op::PurgeDeadLetters { which }).await? {
            Answer::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}

#[async_trait]
impl Stats for KafkaBackend {
    async fn tenant_stats(&self, tenant: &TenantId) -> Result<TenantStats> {
        self.read(tenant, |m, cx| m.tenant_stats(cx, tenant))
    }
}

#[async_trait]
impl Metering for KafkaBackend {
    /// Each tenant's records go to its log. With a topic per tenant,
    /// records of a tenant that has no topic here (never written to, or
    /// deleted) are dropped: its reads found nothing, and recording them
    /// would make the topic again.
    async fn add_usage(&self, records: Vec<UsageRecord>) -> Result<()> {
        let mut by_lane: BTreeMap<At, Vec<UsageRecord>> = BTreeMap::new();
        for record in records {
            let at = self.at(&record.key.tenant)?;
            if self.follows(&at) {
                by_lane.entry(at).or_default().push(record);
            }
        }
        for (at, records) in by_lane {
            match self.submit_to(&at, None, Op::Usage { records }).await? {
                Answer::Done(done) => done?,
                other => return Err(unexpected(other)),
            }
        }
        Ok(())
    }

    async fn usage(
        &self,
        tenant: &TenantId,
        days: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<UsageRecord>> {
        self.read(tenant, |m, _| m.usage(tenant, &days))
    }
}

#[async_trait]
impl Backend for KafkaBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// With a chunk topic, payloads and batches up to
    /// `max_payload_bytes`; without, they fit one record under the broker's
    /// message size (half of `max_record_bytes` for one payload, at most
    /// 512 KiB; two thirds for a batch, leaving room for each event's
    /// fields). Another instance's writes are seen once its consumer
    /// fetched them (milliseconds; declared as within 5 s).
    fn capabilities(&self) -> Capabilities {
        let kafka = &self.inner.kafka;
        let (payload, batch) = match self.writable_chunks() {
            Some(_) => (kafka.max_payload_bytes, kafka.max_payload_bytes),
            None => (self.inline_payload_bytes(), kafka.max_record_bytes / 3 * 2),
        };
        Capabilities::unlimited()
            .with_max_payload_bytes(payload)
            .with_max_batch(500, batch)
            .with_shared_writes(SharedWrites::Within(SHARED_WITHIN))
    }

    fn retention(&self) -> Option<&dyn Retention> {
        Some(self)
    }

    fn stats(&self) -> Option<&dyn Stats> {
        Some(self)
    }

    fn metering(&self) -> Option<&dyn Metering> {
        Some(self)
    }

    fn changes(&self, tenant: &TenantId) -> Option<Changes> {
        Some(self.inner.log.feed.watch(tenant))
    }

    /// Reads run from the instance's memory: the probe asks the brokers
    /// for the topic's metadata instead.
    async fn probe(&self) -> Result<()> {
        self.ensure_open()?;
        let producer = self.inner.producer.clone();
        // Every topic's: naming one would make it on a broker that
        // creates topics when asked about them.
        tokio::task::spawn_blocking(move || {
            crate::metadata::fetch(producer.client(), None).map(|_| ())
        })
        .await
        .map_err(Error::permanent)?
    }

    /// Waits for records in flight to reach the brokers, stops following
    /// the log, and wakes subscriptions (which then end: reads fail).
    async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        // New writes are refused; those in flight reach the brokers and are
        // applied (and answered) before the log stops.
        inner.closing.store(true, Ordering::Relaxed);
        let producer = inner.producer.clone();
        let timeout = inner.kafka.apply_timeout;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(Error::permanent)?
            .map_err(classify);
        let answered = inner.log.answered_all(timeout).await;
        inner.stop.store(true, Ordering::Relaxed);
        inner.log.feed.notify_all();
        flushed.and(answered)
    }
}
