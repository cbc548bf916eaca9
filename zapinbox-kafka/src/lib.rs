//! The Kafka backend of zapinbox: the log is the database.
//!
//! Every operation on a tenant (ingest, ack, delete, claim, extend,
//! release, dead-letter, redrive, purge, quota and usage counts) is a
//! record in that tenant's log: its partition of one shared topic, or a
//! topic of its own (see [Layouts](#layouts)). Every instance consumes
//! every tenant's log and applies the records in log order to the same
//! deterministic state machine ([`zapinbox_core::raw::Machine`]), so every
//! instance reaches the same state: conflicts (two ingests with one key,
//! two claims of one event, an ack racing a lease expiry) are decided by
//! log order, and time-based rules read the time in the record, never the
//! applier's clock. A write answers once this instance has applied its own
//! record (read-your-writes); reads come from the applied state.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> zapinbox_core::Result<()> {
//! use serde_json::json;
//! use zapinbox_core::{Inbox, NewEvent, PullQuery, QueueConfig, TenantId};
//! use zapinbox_kafka::{KafkaBackend, MockBroker};
//!
//! // A broker inside this process; with real brokers, start from
//! // `KafkaConfig::new("host:9092").topic("inbox")`.
//! let broker = MockBroker::start()?;
//! broker.create_topic("inbox", 4)?;
//! let kafka = broker.config("inbox");
//! let inbox = Inbox::new(KafkaBackend::open(kafka, QueueConfig::default()).await?);
//!
//! let tenant = TenantId::new("acme")?;
//! let stored = inbox.ingest(&tenant, NewEvent::new(json!({ "order": 42 }))).await?;
//! let page = inbox.pull(&tenant, PullQuery::new()).await?;
//! assert_eq!(page.events[0].id, stored.id);
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **Durable on return.** The producer is idempotent with `acks=all`; a
//!   write returns after its delivery report and after this instance
//!   applied it.
//! - **One order per tenant.** A tenant's records go to one partition
//!   (with the shared topic, FNV-1a of the tenant id modulo the partition
//!   count: do not change the partition count of a topic in use; with a
//!   topic per tenant, partition 0 of its topic). Every instance decides the
//!   same way: two instances racing one idempotency key store one event,
//!   and two claims never lease one event twice. Each record carries its
//!   writer's time, the ids it chose, and a seed for lease nonces and
//!   retry jitter, so a replay next month decides as today.
//! - **Other instances' writes** are seen once this instance's consumer
//!   fetched them: milliseconds, declared as within 5 s
//!   (`SharedWrites::Within`: an instance just opened on a busy log can
//!   take over a second to catch up). Subscriptions follow the applied log.
//! - **Cursors** carry the position of the event's ingest record: its
//!   offset in the high bits, its place in a batch in the low 16.
//!
//! # Layouts
//!
//! [`Layout::Shared`] (the default) keeps every tenant in one topic made
//! beforehand: a fixed number of partitions, each holding the logs of the
//! tenants hashed to it, and one fetch per partition however many tenants
//! there are. [`Layout::TopicPerTenant`] (as the source systems
//! "Ephemeral" and "Event Hub" did) gives each tenant `<topic>.<tenant>`,
//! made on its first write with the admin API and the partitions,
//! replication and retention of [`TenantTopics`]; an instance hears of
//! topics made and deleted through the registry topic `<topic>._tenants`
//! and follows every one of them. [`KafkaBackend::delete_tenant`] deletes
//! a tenant with its data (offboarding).
//!
//! Choose the shared topic for many small tenants (thousands of topics
//! cost every broker and every instance a fetch each), and a topic per
//! tenant for fewer, larger tenants that need their own retention, ACLs,
//! quotas at the broker, or deletion with their data; a big tenant in
//! the shared layout also slows the replay of the tenants that share its
//! partition. Either way a tenant's records have one order, so one
//! tenant's writes are bounded by one partition's throughput.
//!
//! # Rules every instance shares
//!
//! The records say what happened; the rules (`QueueConfig`: retry policy,
//! idempotency window, retention, quotas) decide what it does, and they
//! are this instance's. Open every instance on one topic (or prefix) with
//! the same rules and layout. Daily quotas for all tenants together
//! (`Quotas::total`) are counted per partition, a partition's log being
//! the only order its records have: with a topic per tenant, that is per
//! tenant, and the total does not bound all tenants together.
//!
//! # Bounded replay and memory
//!
//! Opening replays the log to where it ends. [`KafkaBackend::snapshot`]
//! writes each lane's state (a partition of the shared topic, or a
//! tenant's topic) to `<topic>.snapshots` (`<topic>._snapshots` with a
//! topic per tenant; create it
//! compacted; chunks alternate between two key slots so that, with one
//! instance writing snapshots, compaction always keeps a complete one);
//! opening then resumes each partition after
//! its newest complete snapshot. Opening refuses a log whose early records
//! are gone with no snapshot covering them. An acked event's content
//! leaves memory at its ack: [`get`](zapinbox_core::Inbox::get) reads it
//! back from its ingest record, so keep the log's retention longer than
//! the inbox's (7 days by default); past it, the acked event comes back
//! with a damaged payload saying so.
//!
//! Measured on a 2-core VM, librdkafka's in-process mock cluster, 200-byte
//! payloads (`cargo bench --bench compare`, workload `kafka`):
//!
//! | | |
//! |---|---|
//! | ingest, one producer awaiting each (fetch wait 1 ms) | p50 1.4–1.6 ms, p99 2.7–3.0 ms (a raw idempotent send: p50 1.2 ms) |
//! | opening, replaying 1 000 000 ingested events | 3.4–4.1 s |
//! | writing a snapshot of 1 000 000 pending events | 0.7–1.2 s |
//! | opening from that snapshot | 2.1–4.2 s |
//! | memory per pending event (RSS growth of a replaying instance) | 820–880 bytes |
//!
//! The mock cluster answers a fetch only when its wait is over, and a
//! write waits for its own record to come back: with the default
//! [`MockBroker::config`] (5 ms) a write takes about 6 ms there. A real
//! broker answers a fetch as soon as records arrive.
//!
//! # Limits and large payloads
//!
//! One record holds a whole write, under the broker's message size
//! ([`KafkaConfig::max_record_bytes`], default 1 000 000 bytes): up to 500
//! events. Payloads too large for it go to the chunk topic,
//! `<topic>.chunks` (`<topic>._chunks` with a topic per tenant;
//! [`KafkaConfig::chunks`]), in slices of just under a
//! record, spread over its partitions and written before the ingest
//! record that names them (partition, offset, length, SHA-256): the
//! write is still all-or-nothing, and every instance applying the record
//! puts the payload back together. A chunk that is gone (retention, a
//! recreated or deleted chunk topic) or does not match gives that event a
//! damaged payload,
//! [`Error::Decode`](zapinbox_core::Error::Decode) when decoded, the event
//! still listed and deletable; no other event is touched. With the chunk
//! topic, payloads and batches go up to
//! [`KafkaConfig::max_payload_bytes`] (64 MiB by default; raise the
//! inbox's [`Limits`](zapinbox_core::Limits) too, 512 KiB by default).
//! Without it, a payload must fit one record (half of it, at most
//! 512 KiB; 488 KiB by default) and a batch two thirds of it. The inbox
//! refuses more with its usual errors; a record still over the size (long
//! fields) is refused with `LimitExceeded` and nothing is written.
//!
//! A pending large payload is held in memory by every instance, as all
//! pending events are; an acked one is read back from its chunks. Reading
//! chunks holds up the applying of the log (every lane) for as long as it
//! takes: one fetch per chunk, about fifty for 50 MB; while the brokers
//! cannot be reached it waits and asks again. Orphan chunks
//! (a write that failed halfway, a duplicate key) stay until the chunk
//! topic's retention removes them.
//!
//! The shared topic must exist (create it with as many partitions as you
//! want tenants spread over), and so must the side topics to be used;
//! tenants' topics and the registry are made by the backend. Two
//! instances at the same offsets have equal states, unless a chunk one of
//! them read was gone by the time the other read it.
//!
//! Records are JSON (the payloads already are): the log reads with any
//! Kafka tool.
//!
//! The conformance suite passes in both layouts on librdkafka's mock
//! cluster and on tansu 0.6.0, a standalone Kafka-compatible broker (the
//! workspace's test script runs both). With a topic per tenant, the mock
//! cluster makes topics when asked for them
//! ([`TenantTopics::created_by_broker`]) and cannot delete them. On tansu,
//! an instance that followed a deleted tenant's topic must not write for
//! that tenant again: librdkafka 2.12 remembers the old topic's id, and
//! tansu answers a fetch by an unknown id with a leader hint and no topic
//! id, on which librdkafka crashes. Restart instances after offboarding
//! before a tenant comes back (a real Kafka broker answers with the id).
#![warn(missing_docs)]

mod backend;
mod chunk;
mod config;
mod holes;
mod log;
mod metadata;
mod mock;
mod open;
mod reader;
mod record;
mod snapshot;
mod topics;

pub use backend::KafkaBackend;
pub use config::{Compression, KafkaConfig, Layout, SideTopic, TenantTopics, TopicCreation};
pub use mock::MockBroker;
