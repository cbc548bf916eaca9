//! The DynamoDB backend of zapinbox: one table, each tenant under its own
//! partition key, every read strongly consistent.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> zapinbox_core::Result<()> {
//! use serde_json::json;
//! use zapinbox_core::{Inbox, NewEvent, PullQuery, TenantId};
//! use zapinbox_dynamo::DynamoBackend;
//!
//! // The host's usual AWS settings: credentials chain, region, retries.
//! let sdk = aws_config::load_from_env().await;
//! let backend = DynamoBackend::builder(&sdk).table("zapinbox").build();
//! backend.ensure_table().await?; // development: makes the table if missing
//! let inbox = Inbox::new(backend);
//!
//! let acme = TenantId::new("acme")?;
//! let stored = inbox.ingest(&acme, NewEvent::new(json!({ "order": 42 }))).await?;
//! let page = inbox.pull(&acme, PullQuery::new()).await?;
//! assert_eq!(page.events[0].id, stored.id); // seen at once: consistent reads
//! # Ok(()) }
//! ```
//!
//! Against DynamoDB Local, give the SDK an endpoint
//! (`aws_config::defaults(..).endpoint_url("http://127.0.0.1:8000")`), any
//! region, and static credentials whose key is letters and digits.
//!
//! # The table
//!
//! Partition key `pk`, sort key `sk`, both strings; on-demand billing;
//! time to live on the attribute `ttl`. Everything of tenant `t` lives
//! under `pk = T#t`: its events (`E#<id>`), idempotency keys (`K#<SHA-256
//! of the key>`, so any key fits a sort key),
//! its commit sequence (`#seq`), its daily quota counts (`Q#<day>`) and
//! metered usage (`U#<day>#…`). Four sparse local secondary indexes,
//! `pq_index`, `rq_index`, `dq_index` and `dz_index`, hold an event only
//! while it is pending (by commit order), pending (by when it may be
//! claimed), dead-lettered, and on its last attempt's lease (by when that
//! ends). They copy the delivery attributes, never the payload: an item
//! and its index entries must fit in 400 KB together.
//! [`DynamoBackend::ensure_table`] makes all of it; in production make it
//! with your infrastructure tooling to the same shape (string attributes
//! `pk`, `sk`, `pq`, `rq`, `dq`, `dz`; each index keyed `pk` plus its
//! attribute, projecting `seq src typ top cli at st att vis ln lx ackd
//! ver`).
//!
//! # The three traps, decided
//!
//! - **Read-your-writes.** Global secondary indexes are eventually
//!   consistent, so a pull right after an ingest could miss it on AWS
//!   while passing on DynamoDB Local. There are none: pages come from
//!   local secondary indexes and single events from the table, all read
//!   with `ConsistentRead`. An event is listed, claimable and countable as
//!   soon as its ingest returned, from any instance.
//! - **Commit order.** Every ingest transaction of a tenant moves the
//!   tenant's sequence item from the value it read to that plus its new
//!   events, and each event takes its position from it: two transactions
//!   of one tenant cannot both commit on the same value, so positions are
//!   given in commit order. A query may still see part of a transaction
//!   that is committing (it is read-committed, item by item), so a page of
//!   pending events first reads the sequence with `TransactGetItems`,
//!   which is serialisable with transactions, and lists positions up to
//!   it only: nothing committed late can land behind a subscriber's or
//!   pager's cursor. The price is that a tenant's ingests are serialised:
//!   one transaction at a time. This process queues its own calls and
//!   commits every call waiting for the tenant in one transaction (group
//!   commit, within its 100 actions and 4 MB), each answered after it;
//!   instances racing each other retry on the condition, with backoff. A
//!   settle window instead would put a time bound on correctness (a write
//!   slower than the window is skipped) and serialise nothing more
//!   cheaply.
//! - **Hot partitions.** A tenant is one partition key, and one key takes
//!   about 1 000 write units a second on AWS. An ingest of one ~1 KB
//!   event costs 8 write units ([costs](#costs)), so one tenant tops out
//!   near 125 single-event ingests a second, or about 160 events a second
//!   in batches of 48; tables with local secondary indexes also cap each
//!   tenant at 10 GB. Shard a very large tenant into several tenant ids
//!   (`acme-0` … `acme-7`, chosen by a hash of something stable such as
//!   the order id): each shard has its own sequence, key and 10 GB, and
//!   order holds within a shard.
//!
//! # Limits
//!
//! Declared as [capabilities](zapinbox_core::Capabilities), so the inbox
//! refuses what would not fit with a typed error before any call:
//! payloads up to 384 KiB (the 400 KB item, less room for the event's
//! other attributes), batches of up to 48 events and 3.5 MB (a
//! transaction holds 100 actions and 4 MB: the sequence, two quota
//! counters, and each event with its key). A batch is never split: it is
//! one transaction, all or nothing (calls committed together share one
//! only when they fit).
//!
//! # Failures
//!
//! The SDK retries throttling (`ProvisionedThroughputExceededException`,
//! `ThrottlingException`, `RequestLimitExceeded`), server errors and
//! timeouts with backoff, by the host's retry settings; what it gives up
//! on reaches the caller as `Error::Backend`, retryable for those,
//! permanent for the rest (`ValidationException`, `AccessDeniedException`,
//! a missing table). The backend itself retries, with jittered backoff,
//! what only it can: a transaction cancelled for `TransactionConflict`, a
//! plain write that met a transaction in progress
//! (`TransactionConflictException`), and a conditional write that lost a
//! race (another instance moved the sequence or changed the event first).
//! Every change is conditional on what was read: a failed ingest, ack,
//! lease change or delete changes nothing. When the storage refuses a
//! group of ingests for good, each is tried alone, so only the one it
//! refuses hears of it. A claim that fails part way hands out the events
//! it already leased rather than strand them.
//!
//! # Costs
//!
//! Every call asks for `ReturnConsumedCapacity`. The units are recorded
//! as the histograms `zapinbox_dynamo_read_units` and
//! `zapinbox_dynamo_write_units` (label `operation`: `ingest`, `pull`,
//! `claim`, `ack_lease`, …) and summed in [`DynamoBackend::capacity`].
//!
#![doc = include_str!("../docs/capacity.md")]
//!
//! # Everything else
//!
//! - **Leases** are conditional updates on the event's version: two
//!   instances claiming at once never lease one event twice. Claims take
//!   the earliest available first, several conditional writes at a time;
//!   this process runs one claim of a tenant at a time (concurrent claims
//!   would race for the same earliest events and mostly lose). An event's
//!   last-attempt lease is indexed by the `max_attempts` of the instance
//!   that claimed it: give every instance the same retry policy.
//! - **Retention** is DynamoDB's time to live: an acked event and an
//!   expired idempotency key carry `ttl`, and AWS deletes them within days
//!   of it; reads, acks and deletes treat them as gone from the moment
//!   they expire (`Purging::Automatic`: `purge_expired` has nothing to
//!   do). DynamoDB
//!   Local never deletes them; the tests drive the clock.
//! - **Subscriptions** wake at once for ingests through this handle, and
//!   find other instances' ingests by reading each watched tenant's
//!   sequence item every 100 ms ([`DynamoBuilder::watch_every`]): one
//!   read unit per watched tenant per look.
//! - **Quotas** count in the same transaction as the ingest they count,
//!   conditional on the figures checked; a quota on the total over all
//!   tenants makes every tenant's ingest update one item, which
//!   serialises them all: use it only for small installations. A claim
//!   that finds, when it counts, that another delivery used up the
//!   outbound quota first gives its events back and is refused.
//! - **Stats** read every event of the tenant (the payloads stay on the
//!   server, but read units are billed on whole items): fine for a
//!   dashboard, costly for a tenant with millions.
#![warn(missing_docs)]

mod backend;
mod capacity;
mod error;
mod ingest;
mod item;
mod lease;
mod limits;
mod metering;
mod queue;
mod quota;
mod read;
mod table;

pub use backend::{DynamoBackend, DynamoBuilder};
pub use capacity::{CapacityLog, Units};
