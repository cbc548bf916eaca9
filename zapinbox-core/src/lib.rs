//! The vocabulary of zapinbox: types, traits, errors, the [`Inbox`] facade
//! and its policies, the in-memory reference backend, and (feature
//! `testkit`) the conformance suite every backend passes.
//!
//! Most users depend on the `zapinbox` facade crate instead, which
//! re-exports this crate and the backends.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> zapinbox_core::Result<()> {
//! use serde_json::json;
//! use zapinbox_core::{Inbox, MemoryBackend, NewEvent, PullQuery, TenantId};
//!
//! let inbox = Inbox::new(MemoryBackend::new());
//! let tenant = TenantId::new("acme")?;
//!
//! // Retrying with the same idempotency key stores nothing twice.
//! let event = NewEvent::new(json!({ "order": 42 })).with_idempotency_key("order-42");
//! let first = inbox.ingest(&tenant, event.clone()).await?;
//! let retry = inbox.ingest(&tenant, event).await?;
//! assert_eq!((retry.id, retry.duplicate), (first.id, true));
//!
//! let page = inbox.pull(&tenant, PullQuery::new()).await?;
//! assert_eq!(page.events.len(), 1);
//! inbox.ack(&tenant, first.id).await?;
//! assert!(inbox.pull(&tenant, PullQuery::new()).await?.events.is_empty());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod backend;
mod capabilities;
mod changes;
mod cursor;
mod delivery;
mod emitter;
mod error;
mod event;
mod fault;
mod id;
mod inbox;
mod lease;
mod machine;
mod memory;
mod metering;
mod payload;
mod policy;
mod query;
mod quota;
mod rate_limit;
pub mod serde_millis;
mod subscription;
pub mod telemetry;
mod tenant;
mod time;
mod usage;
mod worker;

#[cfg(feature = "testkit")]
pub mod testkit;

#[doc = include_str!("../docs/implementing-a-backend.md")]
pub mod guide {}

pub use backend::{AckOutcome, Backend, DeleteOutcome, Purged, QueueConfig, TenantStats};
pub use capabilities::{Capabilities, ClaimOrder, Purging, SharedWrites};
pub use cursor::Cursor;
pub use emitter::{BufferedEmitter, Dropped, Emit, EmitterConfig};
pub use error::{Error, Result};
pub use event::{Event, EventStatus, Ingested, Limits, NewEvent};
pub use fault::Fault;
pub use id::EventId;
pub use inbox::{Inbox, InboxBuilder, IntoBackend};
pub use lease::{
    ClaimQuery, LeaseToken, Leased, MAX_CLAIM, MAX_LEASE, Redrive, ReleaseOutcome, RetryPolicy,
};
pub use memory::MemoryBackend;
pub use payload::{MAX_PAYLOAD_DEPTH, Payload};
pub use policy::{Call, Operation, Policy};
pub use query::{Filter, MAX_PAGE, Order, Page, PullQuery};
pub use quota::{DailyLimits, DailyUsage, Quotas, Traffic, Way, next_day, utc_day};
pub use rate_limit::RateLimit;
pub use subscription::{DEFAULT_SUBSCRIPTIONS_PER_TENANT, Subscribed};
pub use tenant::{MAX_TENANT_LEN, TenantId};
pub use time::{Clock, ManualClock, Timestamp};
pub use usage::{Action, UsageKey, UsageRecord, sum_usage};
pub use worker::{HandlerError, Worker, WorkerHandle, WorkerReport};

// Used throughout the crate by their short paths.
pub(crate) use backend::Retention;
pub(crate) use delivery::{ClaimStep, Delivery};
pub(crate) use event::{Fingerprint, ValidEvent};
pub(crate) use lease::{check_delay, check_lease};

/// For backend authors: the traits a backend implements and the types
/// they pass. Users of an inbox need none of this; the guide
/// ["Implementing a backend"](crate::guide) walks through it.
pub mod raw {
    pub use crate::backend::{
        Acknowledge, Delete, Idempotency, InboxPull, Ingest, Leases, Metering, Retention, Stats,
    };
    pub use crate::changes::{ChangeFeed, Changes};
    pub use crate::cursor::{CursorParts, MAX_POSITION_BYTES, Position};
    pub use crate::delivery::{ClaimStep, Delivery};
    pub use crate::event::{EventParts, Fingerprint, ValidEvent};
    pub use crate::lease::{check_delay, check_lease};
    pub use crate::machine::{Context, Entropy, Machine, Seq};
    pub use crate::query::ResolvedQuery;
}
