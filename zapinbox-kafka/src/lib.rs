//! The Kafka backend of zapinbox: the log is the database.
//!
//! Every operation on a tenant (ingest, ack, delete, claim, extend,
//! release, dead-letter, redrive, purge, quota and usage counts) is a
//! record in that tenant's partition of one topic. Every instance consumes
//! every partition and applies the records in log order to the same
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
//! Records are JSON (the payloads already are): the log reads with any
//! Kafka tool. The producer is idempotent with `acks=all`, so a write that
//! returned is durable on the brokers.
#![warn(missing_docs)]

mod backend;
mod config;
mod log;
mod mock;
mod reader;
mod record;
mod snapshot;

pub use backend::KafkaBackend;
pub use config::{KafkaConfig, SnapshotTopic};
pub use mock::MockBroker;
