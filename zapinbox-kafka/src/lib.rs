//! The Kafka backend of zapinbox: planned, not built yet.
//!
//! It will treat each tenant's partition as the database: every operation
//! is a record, and every instance applies the log in order with the same
//! rules. Until then this crate exports nothing; use the SQLite backend
//! (`zapinbox-sqlite`).
