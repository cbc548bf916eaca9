//! The read and write capacity units each inbox operation consumes, as
//! DynamoDB reports them (`ReturnConsumedCapacity`): exported as metrics
//! and kept as running totals a host (or a test) can read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::ConsumedCapacity;
use metrics::histogram;

/// Capacity units consumed, summed over calls.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Units {
    /// Read capacity units.
    pub read: f64,
    /// Write capacity units.
    pub write: f64,
    /// Inbox operations counted.
    pub operations: u64,
}

impl Units {
    /// Units per operation (zero when none was counted).
    pub fn per_operation(&self) -> Units {
        let n = self.operations.max(1) as f64;
        Units {
            read: self.read / n,
            write: self.write / n,
            operations: 1,
        }
    }
}

/// Running totals of capacity units by inbox operation (`ingest`, `pull`,
/// `claim`, `ack`, …), shared by every clone of a backend.
#[derive(Clone, Debug, Default)]
pub struct CapacityLog {
    totals: Arc<Mutex<BTreeMap<&'static str, Units>>>,
}

impl CapacityLog {
    /// The totals so far, by operation.
    pub fn totals(&self) -> BTreeMap<&'static str, Units> {
        self.lock().clone()
    }

    /// Forgets the totals so far.
    pub fn reset(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Units>> {
        self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds what one read call (get, query) made for `operation` consumed.
    pub(crate) fn read<'a>(
        &self,
        operation: &'static str,
        consumed: impl IntoIterator<Item = &'a ConsumedCapacity>,
    ) {
        self.add(operation, sum(consumed), 0.0);
    }

    /// Adds what one write call made for `operation` consumed.
    pub(crate) fn write<'a>(
        &self,
        operation: &'static str,
        consumed: impl IntoIterator<Item = &'a ConsumedCapacity>,
    ) {
        self.add(operation, 0.0, sum(consumed));
    }

    fn add(&self, operation: &'static str, read: f64, write: f64) {
        if read > 0.0 {
            histogram!("zapinbox_dynamo_read_units", "operation" => operation).record(read);
        }
        if write > 0.0 {
            histogram!("zapinbox_dynamo_write_units", "operation" => operation).record(write);
        }
        let mut totals = self.lock();
        let units = totals.entry(operation).or_default();
        units.read += read;
        units.write += write;
    }

    /// Counts one finished inbox operation.
    pub(crate) fn count(&self, operation: &'static str) {
        self.lock().entry(operation).or_default().operations += 1;
    }
}

/// The units of one call (a transaction reports one entry per table).
fn sum<'a>(consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) -> f64 {
    consumed
        .into_iter()
        .filter_map(ConsumedCapacity::capacity_units)
        .sum()
}
