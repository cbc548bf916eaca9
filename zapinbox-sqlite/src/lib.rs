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
//! - **One writer thread** owns the write connection. It runs every queued
//!   request in one plain transaction (no savepoint per request: measured,
//!   those cost more than the inserts), commits once, then answers each
//!   caller: many concurrent callers share one fsync. The ingests of a
//!   batch insert their events together, up to 16 rows a statement. A
//!   request refuses what it refuses (a conflict, a lost lease, a missing
//!   event) before it writes anything, so its error changes nobody else's
//!   outcome. One that fails after writing (a storage error) makes the
//!   writer roll back and run the others again without it, at most twice
//!   a batch (once more, an insert per event, if inserting several
//!   together failed); if SQLite rolled the transaction back itself (a
//!   full disk, an I/O error), or COMMIT fails, every caller in the batch
//!   gets that error, and nothing of the batch is kept.
//! - **Reads** run on a small pool of read-only connections, at most all
//!   but one of them for one tenant. A read whose work is bounded by what
//!   it returns (a pull page, `get`, `find_by_key`, the
//!   outbound quota check, [`SqliteBackend::stats`]) runs on the caller's
//!   thread: a page of 100 events reads in about 60 µs, and sending it to
//!   a blocking thread and back took about 40 µs more. Meanwhile the
//!   thread does nothing else (on a current-thread runtime no task runs;
//!   on a multi-thread one, the tasks queued on that worker wait unless
//!   another worker takes them), and a timeout around the call cannot end
//!   it early. A read that may walk many rows (a dead-letter page, a
//!   claim's search for candidates, `claimable_at`, `tenant_stats`,
//!   `usage`) runs on tokio's blocking threads. A read waits for another
//!   process's lock as a write does, up to the busy timeout: in WAL mode,
//!   while a process recovers the file after a crash or its last
//!   connection closes and cleans up the WAL.
//! - **Commit order**: each event's row number, assigned inside the write
//!   transaction, is its position; cursors are built on it, never on clocks
//!   or ids, so an event committed after a reader passed a position still
//!   appears after it.
//! - **Payloads** are stored as the JSON text they were checked as and read
//!   back without parsing: one payload that cannot be decoded never fails a
//!   page, a claim or a get.
//! - **Schema** versioned with `PRAGMA user_version`; a newer file is refused.
//! - **Several processes** on one file: writers are serialised by SQLite and
//!   wait up to the busy timeout (a timeout is a retryable error), opening
//!   included, taking fair turns: a waiting writer looks again every
//!   0.1–0.6 ms (one per process and file at a time; the others every
//!   5 ms) and says it waits through a lock on a side file
//!   (`<db>-writers`) until its transaction begins; a writer that has just
//!   committed holds back until then (20 ms at most). A new file is
//!   created by one connection at a time. They share one set
//!   of rules, stored in the file by the first
//!   open: retention, the idempotency window and `max_attempts` (see
//!   [`SharedRules`]).
//!
//! # Durability
//!
//! [`Durability::Full`] (the default) fsyncs every commit: an ingested event
//! survives a process crash or power loss. [`Durability::Normal`] survives a
//! process crash; a power loss may drop the last commits.
#![warn(missing_docs)]

mod backend;
mod backup;
mod busy;
mod changes;
mod connection;
mod counts;
mod error;
#[cfg(test)]
mod faults;
mod inserts;
mod maintenance;
mod ops;
mod poller;
mod pool;
mod row;
mod rules;
mod schema;
mod writer;

pub use backend::{DatabaseStats, SqliteBackend, SqliteBuilder};
pub use connection::{ConnectionSettings, Durability, JournalMode, Role, Synchronous};
pub use maintenance::{CheckpointRecord, PurgeRecord};
pub use rules::SharedRules;
pub use schema::SCHEMA_VERSION;
