//! The one error type of zapinbox.

use std::time::Duration;

use crate::{EventId, Timestamp};

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, as a caller needs to see it.
///
/// Each variant carries the facts a caller acts on: the limit that was
/// exceeded, the id of the original event, how long to wait. Use
/// [`Error::is_retryable`] to decide whether trying again can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request was malformed: a field too long or empty, a payload that is
    /// not a JSON object, is not valid JSON or nests too deeply, a cursor that
    /// was tampered with or belongs elsewhere, settings a backend refuses.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The payload's JSON text is larger than the limit
    /// ([`Limits::max_payload_bytes`](crate::Limits::max_payload_bytes)).
    #[error("payload is {size} bytes, over the limit of {limit} bytes (Limits::max_payload_bytes)")]
    PayloadTooLarge {
        /// Size of the payload's JSON text (compact, when it was given as
        /// a value), in bytes.
        size: usize,
        /// The configured limit, in bytes.
        limit: usize,
    },

    /// No event with this id exists in this tenant (it never did, it was
    /// deleted, or it belongs to another tenant).
    #[error("event {id} not found")]
    NotFound {
        /// The id that was asked for.
        id: EventId,
    },

    /// The idempotency key was already used, within its window, for an event
    /// with different content.
    #[error("idempotency key {key:?} was already used for event {original} with different content")]
    IdempotencyConflict {
        /// The key that was reused.
        key: String,
        /// The event first stored under that key.
        original: EventId,
    },

    /// The lease expired and the event was claimed again, acked, deleted or
    /// dead-lettered since: this holder must not act on it any more.
    #[error("lease on event {id} was lost")]
    LeaseLost {
        /// The event the lease was on.
        id: EventId,
    },

    /// Too many requests for this tenant; try again after `retry_after`.
    #[error("rate limited: retry after {retry_after:?}")]
    RateLimited {
        /// How long to wait before the next request can pass.
        retry_after: Duration,
    },

    /// A daily quota is used up until `reset_at`.
    #[error("{scope} quota of {limit} exceeded until {reset_at}")]
    QuotaExceeded {
        /// Which quota: for example `tenant messages in`.
        scope: String,
        /// The quota's limit.
        limit: u64,
        /// When the quota resets.
        reset_at: Timestamp,
    },

    /// The tenant already holds the maximum number of live subscriptions.
    #[error("too many concurrent subscriptions (limit {limit})")]
    TooManySubscriptions {
        /// The per-tenant limit.
        limit: usize,
    },

    /// A payload could not be decoded into the type asked for (see
    /// [`Payload::decode`](crate::Payload::decode)). Only that event is
    /// affected: reading it, listing it, claiming and deleting it work.
    #[error("payload cannot be decoded: {reason}")]
    Decode {
        /// What the decoder said.
        reason: String,
    },

    /// A request is over one of the inbox's [`Limits`](crate::Limits), such
    /// as the number of events or bytes in one batch.
    #[error("{what} is {actual}, over the limit of {limit}")]
    LimitExceeded {
        /// What was counted, naming the limit: for example `batch events
        /// (Limits::max_batch_events)`.
        what: &'static str,
        /// What the request had (for a total counted item by item, the
        /// total at the item that passed the limit).
        actual: u64,
        /// The limit.
        limit: u64,
    },

    /// The backend does not offer this operation (see
    /// [`Backend::stats`](crate::Backend::stats),
    /// [`Backend::retention`](crate::Backend::retention)). Not retryable.
    #[error("the {backend} backend does not support {operation}")]
    Unsupported {
        /// The operation asked for, such as `tenant_stats`.
        operation: &'static str,
        /// The backend's name.
        backend: &'static str,
    },

    /// The storage failed. `retryable` says whether the same request may
    /// succeed later (a busy database, a timeout) or not (a corrupt file).
    #[error("backend error ({}): {source}", if *.retryable { "retryable" } else { "permanent" })]
    Backend {
        /// Whether retrying the same request can succeed.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Whether the same request may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. } | Error::QuotaExceeded { .. } => true,
            Error::TooManySubscriptions { .. } => true,
            Error::Backend { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Builds an [`Error::InvalidInput`] from anything displayable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// Wraps a storage error that retrying cannot fix.
    pub fn permanent(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Backend {
            retryable: false,
            source: source.into(),
        }
    }

    /// Wraps a storage error that may pass if tried again.
    pub fn transient(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Backend {
            retryable: true,
            source: source.into(),
        }
    }
}
