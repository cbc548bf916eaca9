//! The DynamoDB backend of zapinbox.
#![warn(missing_docs)]

mod backend;
mod capacity;
mod error;
mod ingest;
mod item;
mod lease;
mod limits;
mod metering;
mod quota;
mod read;
mod table;

pub use backend::{DynamoBackend, DynamoBuilder};
pub use capacity::{CapacityLog, Units};
