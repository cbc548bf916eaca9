//! Policies: what an [`Inbox`](crate::Inbox) checks before a call reaches
//! its backend. Each policy is one type in one module; the inbox runs them
//! in order at one place, so a new policy touches no inbox method.

use crate::{Result, TenantId};

/// A policy the inbox applies to every call before it reaches the backend.
///
/// The inbox checks what it can of the input first (payload sizes and
/// depth, fields, counts: see [`Limits`](crate::Limits); a query's limit
/// and cursor are checked by the backend), then runs its policies in
/// order: the rate limit (if set), then those added with
/// [`InboxBuilder::policy`](crate::InboxBuilder::policy) in the order added.
/// The first refusal wins and the call never reaches the backend; a policy
/// that let it through before the refusal has still counted it (the rate
/// limit spent its token).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> zapinbox_core::Result<()> {
/// use serde_json::json;
/// use zapinbox_core::{Call, Error, Inbox, MemoryBackend, NewEvent, Operation, Policy, TenantId};
///
/// /// Read-only tenants may read, not write.
/// struct ReadOnly(TenantId);
///
/// impl Policy for ReadOnly {
///     fn admit(&self, call: &Call<'_>) -> zapinbox_core::Result<()> {
///         match call.tenant {
///             Some(t) if *t == self.0 && call.operation.writes() => Err(Error::invalid(
///                 format!("tenant {t} is read-only: {} refused", call.operation.name()),
///             )),
///             _ => Ok(()),
///         }
///     }
/// }
///
/// let archive = TenantId::new("archive")?;
/// let inbox = Inbox::builder(MemoryBackend::new()).policy(ReadOnly(archive.clone())).build();
/// let refused = inbox.ingest(&archive, NewEvent::new(json!({}))).await;
/// assert!(matches!(refused, Err(Error::InvalidInput(_))));
/// # Ok(()) }
/// ```
pub trait Policy: Send + Sync + 'static {
    /// Lets `call` through, or refuses it with the error its caller gets.
    fn admit(&self, call: &Call<'_>) -> Result<()>;
}

/// A call about to reach the backend, as a policy sees it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Call<'a> {
    /// What is asked.
    pub operation: Operation,
    /// Whose events; `None` for calls across tenants (`purge_expired`).
    pub tenant: Option<&'a TenantId>,
    /// Events the call brings in (ingests) or names (ids, tokens).
    pub items: usize,
    /// Payload bytes the call brings in (ingests).
    pub bytes: usize,
}

impl<'a> Call<'a> {
    /// A call of `operation` on `tenant`'s events.
    pub fn new(operation: Operation, tenant: &'a TenantId) -> Self {
        Call {
            operation,
            tenant: Some(tenant),
            items: 0,
            bytes: 0,
        }
    }

    /// A call across tenants.
    pub fn across_tenants(operation: Operation) -> Self {
        Call {
            operation,
            tenant: None,
            items: 0,
            bytes: 0,
        }
    }

    /// With `items` events, ids or tokens and `bytes` of payload.
    pub fn carrying(mut self, items: usize, bytes: usize) -> Self {
        self.items = items;
        self.bytes = bytes;
        self
    }
}

/// Every operation of an inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`Inbox::ingest`](crate::Inbox::ingest).
    Ingest,
    /// [`Inbox::ingest_batch`](crate::Inbox::ingest_batch).
    IngestBatch,
    /// [`Inbox::pull`](crate::Inbox::pull), also each page of a stream.
    Pull,
    /// [`Inbox::get`](crate::Inbox::get).
    Get,
    /// [`Inbox::ack`](crate::Inbox::ack).
    Ack,
    /// [`Inbox::delete`](crate::Inbox::delete).
    Delete,
    /// [`Inbox::find_by_key`](crate::Inbox::find_by_key).
    FindByKey,
    /// [`Inbox::claim`](crate::Inbox::claim).
    Claim,
    /// [`Inbox::claimable_at`](crate::Inbox::claimable_at).
    ClaimableAt,
    /// [`Inbox::extend`](crate::Inbox::extend).
    Extend,
    /// [`Inbox::release`](crate::Inbox::release).
    Release,
    /// [`Inbox::requeue`](crate::Inbox::requeue).
    Requeue,
    /// [`Inbox::ack_lease`](crate::Inbox::ack_lease).
    AckLease,
    /// [`Inbox::ack_leases`](crate::Inbox::ack_leases).
    AckLeases,
    /// [`Inbox::dead_letters`](crate::Inbox::dead_letters).
    DeadLetters,
    /// [`Inbox::redrive`](crate::Inbox::redrive).
    Redrive,
    /// [`Inbox::purge_expired`](crate::Inbox::purge_expired).
    PurgeExpired,
    /// [`Inbox::purge_dead_letters`](crate::Inbox::purge_dead_letters).
    PurgeDeadLetters,
    /// [`Inbox::tenant_stats`](crate::Inbox::tenant_stats).
    TenantStats,
    /// [`Inbox::subscribe`](crate::Inbox::subscribe), once per stream.
    Subscribe,
}

impl Operation {
    /// The inbox method's name.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Ingest => "ingest",
            Operation::IngestBatch => "ingest_batch",
            Operation::Pull => "pull",
            Operation::Get => "get",
            Operation::Ack => "ack",
            Operation::Delete => "delete",
            Operation::FindByKey => "find_by_key",
            Operation::Claim => "claim",
            Operation::ClaimableAt => "claimable_at",
            Operation::Extend => "extend",
            Operation::Release => "release",
            Operation::Requeue => "requeue",
            Operation::AckLease => "ack_lease",
            Operation::AckLeases => "ack_leases",
            Operation::DeadLetters => "dead_letters",
            Operation::Redrive => "redrive",
            Operation::PurgeExpired => "purge_expired",
            Operation::PurgeDeadLetters => "purge_dead_letters",
            Operation::TenantStats => "tenant_stats",
            Operation::Subscribe => "subscribe",
        }
    }

    /// Whether the call finishes work its caller already holds (acks,
    /// deletes, lease calls) or is the cheap poll of an idle worker
    /// (`claimable_at`): such calls are never rate limited, so a busy
    /// tenant's events do not go round again.
    pub fn finishes_work(self) -> bool {
        matches!(
            self,
            Operation::Ack
                | Operation::Delete
                | Operation::Extend
                | Operation::Release
                | Operation::Requeue
                | Operation::AckLease
                | Operation::AckLeases
                | Operation::ClaimableAt
                | Operation::PurgeExpired
        )
    }

    /// Whether the call can change stored events.
    pub fn writes(self) -> bool {
        !matches!(
            self,
            Operation::Pull
                | Operation::Get
                | Operation::FindByKey
                | Operation::ClaimableAt
                | Operation::DeadLetters
                | Operation::TenantStats
                | Operation::Subscribe
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;
    use crate::{Error, Inbox, MemoryBackend, NewEvent, PullQuery, RateLimit};

    /// Writes down the calls it sees; refuses those of `refuse`.
    struct Log {
        name: &'static str,
        seen: Arc<Mutex<Vec<String>>>,
        refuse: Option<Operation>,
    }

    impl Policy for Log {
        fn admit(&self, call: &Call<'_>) -> Result<()> {
            let mut seen = self.seen.lock().expect("log");
            seen.push(format!("{}:{}", self.name, call.operation.name()));
            match self.refuse {
                Some(op) if op == call.operation => Err(Error::invalid(self.name)),
                _ => Ok(()),
            }
        }
    }

    #[tokio::test]
    async fn policies_run_in_order_after_the_rate_limit_and_a_refusal_stops_the_call() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = |name, refuse| Log {
            name,
            seen: Arc::clone(&seen),
            refuse,
        };
        let inbox = Inbox::builder(MemoryBackend::new())
            .rate_limit(RateLimit::per_minute(2))
            .policy(log("first", Some(Operation::Ingest)))
            .policy(log("second", None))
            .build();
        let tenant = TenantId::new("t").expect("tenant");
        let refused = inbox.ingest(&tenant, NewEvent::new(json!({}))).await;
        assert!(matches!(&refused, Err(Error::InvalidInput(m)) if m == "first"));
        assert!(
            inbox
                .pull(&tenant, PullQuery::new())
                .await
                .expect("pull")
                .events
                .is_empty()
        );
        // The rate limit (two a minute) refuses the third call before any policy.
        let limited = inbox.pull(&tenant, PullQuery::new()).await;
        assert!(
            matches!(limited, Err(Error::RateLimited { .. })),
            "{limited:?}"
        );
        let seen = seen.lock().expect("log").clone();
        assert_eq!(seen, ["first:ingest", "first:pull", "second:pull"]);
    }
}
