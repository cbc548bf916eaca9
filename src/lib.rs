//! **zapinbox** is an embedded, multi-tenant event inbox for Rust services:
//! ingest JSON events, pull the undelivered ones, acknowledge or delete them,
//! and retry safely with idempotency keys, on storage you choose. SQLite is
//! the embedded default: one file, no server, durable on return.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> zapinbox::Result<()> {
//! use serde_json::json;
//! use zapinbox::sqlite::SqliteBackend;
//! use zapinbox::{Inbox, NewEvent, PullQuery, TenantId};
//!
//! # let dir = std::env::temp_dir().join(format!("zapinbox-facade-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).map_err(zapinbox::Error::permanent)?;
//! let backend = SqliteBackend::open(dir.join("inbox.db")).await?;
//! let inbox = Inbox::new(backend.clone());
//! let acme = TenantId::new("acme")?;
//!
//! // A retry with the same idempotency key stores nothing twice.
//! let order = NewEvent::new(json!({ "order": 42 }))
//!     .with_topic("orders")
//!     .with_idempotency_key("order-42");
//! let first = inbox.ingest(&acme, order.clone()).await?;
//! assert!(inbox.ingest(&acme, order).await?.duplicate);
//!
//! // Pull what is pending, then acknowledge it.
//! let page = inbox.pull(&acme, PullQuery::new().topic("orders")).await?;
//! assert_eq!(page.events[0].id, first.id);
//! inbox.ack(&acme, first.id).await?;
//! backend.close().await?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```
//!
//! The crate re-exports [`zapinbox_core`] (types, traits, errors, the
//! [`Inbox`] facade, the in-memory [`MemoryBackend`]) and, behind features,
//! one module per backend: `sqlite` (default), `dynamo`, `kafka`.
#![warn(missing_docs)]

pub use zapinbox_core::*;

/// The SQLite backend (feature `sqlite`, on by default).
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use zapinbox_sqlite::*;
}

/// The DynamoDB backend (feature `dynamo`).
#[cfg(feature = "dynamo")]
pub mod dynamo {
    pub use zapinbox_dynamo::*;
}

/// The Kafka backend (feature `kafka`).
#[cfg(feature = "kafka")]
pub mod kafka {
    pub use zapinbox_kafka::*;
}
