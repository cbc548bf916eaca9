//! The DynamoDB backend of zapinbox: planned, not built yet.
//!
//! It will keep one table with partition key `T#<tenant>`, pending events
//! in the base table read with `ConsistentRead`, idempotency items written
//! in the same `TransactWriteItems` as their event, and leases by
//! conditional `UpdateItem`. Until then this crate exports nothing; use the
//! SQLite backend (`zapinbox-sqlite`).
