//! One file per operation: plain functions on a connection, given `now`.
//! Writes run on the writer thread inside its group-commit transaction,
//! and refuse what they refuse before they write anything; reads run on
//! the pool.

pub(crate) mod ack;
pub(crate) mod delete;
pub(crate) mod get;
pub(crate) mod ingest;
pub(crate) mod keys;
pub(crate) mod lease;
pub(crate) mod pull;
pub(crate) mod purge;
pub(crate) mod quota;
pub(crate) mod stats;
pub(crate) mod usage;
