//! The SQLite backend of zapinbox: one file, zero set-up, durable on return.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> zapinbox_core::Result<()> {
//! use serde_json::json;
//! use zapinbox_core::{Inbox, NewEvent, PullQuery, TenantId};
//! use zapinbox_sqlite::SqliteBackend;
//!
//! # let dir = std::env::temp_dir().join(format!("zapinbox-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).map_err(zapinbox_core::Error::permanent)?;
//! let backend = SqliteBackend::open(dir.join("inbox.db")).await?;
//! let inbox = Inbox::new(backend.clone());
//! let tenant = TenantId::new("acme")?;
//! let stored = inbox.ingest(&tenant, NewEvent::new(json!({ "hello": "world" }))).await?;
//! let page = inbox.pull(&tenant, PullQuery::new()).await?;
//! assert_eq!(page.events[0].id, stored.id);
//! backend.close().await?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! - **WAL**, checked on open: `journal_mode` is read back and must be `wal`.
//!   `synchronous` and `busy_timeout` are set on every connection and read
//!   back ([`SqliteBackend::connection_settings`]).
//! - **One writer thread** owns the write connection. It drains every queued
//!   request into one transaction, each request in its own savepoint, commits
//!   once, then answers each caller: many concurrent callers share one fsync.
//!   One request's error rolls back only its savepoint; if COMMIT fails every
//!   caller in the batch gets that error.
//! - **Commit order**: each event's row number, assigned inside the write
//!   transaction, is its position; cursors are built on it, never on clocks
//!   or ids, so an event committed after a reader passed a position still
//!   appears after it.
//! - **Schema** versioned with `PRAGMA user_version`; a newer file is refused.
//! - **Several processes** on one file: writers are serialised by SQLite and
//!   wait up to the busy timeout; a timeout is a retryable error.
//!
//! # Durability
//!
//! [`Durability::Full`] (the default) fsyncs every commit: an ingested event
//! survives a process crash or power loss. [`Durability::Normal`] survives a
//! process crash; a power loss may drop the last commits.
#![warn(missing_docs)]

mod backend;
mod backup;
mod connection;
mod error;
#[cfg(test)]
mod faults;
mod maintenance;
mod ops;
mod pool;
mod row;
mod rules;
mod schema;
mod writer;

pub use backend::{DatabaseStats, SqliteBackend, SqliteBuilder};
pub use connection::{ConnectionSettings, Durability, Role};
pub use maintenance::{CheckpointRecord, PurgeRecord};
pub use rules::SharedRules;
pub use schema::SCHEMA_VERSION;
