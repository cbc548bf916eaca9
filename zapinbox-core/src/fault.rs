//! Storage faults that tests inject, to check how a backend classifies
//! what its storage says.

use serde::{Deserialize, Serialize};

/// A failure of the storage under a backend, as a test injects it (see
/// [`MemoryBackend::fail_next`](crate::MemoryBackend::fail_next) and the
/// testkit's `Harness::inject`). Each must reach the caller as
/// [`Error::Backend`](crate::Error::Backend), retryable or not as
/// [`Fault::retryable`] says, with nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// Busy, locked or timed out: the same call can succeed later.
    Transient,
    /// Throttled (over a provisioned rate): the same call can succeed later.
    Throttled,
    /// Refused for good (damaged, denied): retrying cannot help.
    Permanent,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 3] = [Fault::Transient, Fault::Throttled, Fault::Permanent];

    /// Whether a call that met this fault may be retried.
    pub fn retryable(self) -> bool {
        !matches!(self, Fault::Permanent)
    }
}
