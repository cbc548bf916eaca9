//! The conformance suite: every rule of the inbox contract as a plain async
//! function that takes a [`Harness`], and [`conformance_tests!`] to expand
//! them into one named `#[tokio::test]` per rule in a backend's crate.
//!
//! ```ignore
//! // tests/conformance.rs of a backend crate
//! zapinbox_core::conformance_tests!(my_backend, my_backend_tests::harness());
//! ```
//!
//! Each rule works on fresh random tenants, so suites of server backends can
//! share one server and run in parallel; the few that act on the whole
//! store (purging, injected faults) need storage of their own. Rules reach
//! the backend as an `Arc<dyn Backend>`, mostly through the [`Inbox`]
//! facade.
//!
//! [`conformance_tests!`]: crate::conformance_tests

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::{
    Backend, Event, Fault, Inbox, ManualClock, MemoryBackend, NewEvent, PullQuery, QueueConfig,
    Result, RetryPolicy, TenantId, Timestamp,
};

pub mod model;
pub mod process;
pub mod rules;

/// Gives rules a backend on storage of their own.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// Opens the backend on this harness's storage with `config`. A second
    /// call opens the same storage again: that is a restart.
    async fn open(&self, config: QueueConfig) -> Result<Arc<dyn Backend>>;

    /// The storage faults this harness can inject (none by default).
    fn faults(&self) -> Vec<Fault> {
        Vec::new()
    }

    /// Makes the next call of `backend` (opened by this harness) that
    /// reaches its storage fail with `fault`, as the storage would: a
    /// busy database, a throttled request, a damaged file. `Unsupported`
    /// unless [`Harness::faults`] lists it.
    async fn inject(&self, backend: &Arc<dyn Backend>, fault: Fault) -> Result<()> {
        let _ = fault;
        Err(crate::Error::Unsupported {
            operation: "fault injection",
            backend: backend.name(),
        })
    }
}

/// The in-memory reference backend as a harness.
#[derive(Default)]
pub struct MemoryHarness {
    storage: MemoryBackend,
}

impl MemoryHarness {
    /// A harness on fresh in-memory storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// A harness on `storage`, reopened with each rule's settings but
    /// keeping what it declares (see [`MemoryBackend::declaring`]).
    pub fn on(storage: MemoryBackend) -> Self {
        MemoryHarness { storage }
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn open(&self, config: QueueConfig) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(self.storage.reopen(config)))
    }

    fn faults(&self) -> Vec<Fault> {
        Fault::ALL.to_vec()
    }

    async fn inject(&self, _backend: &Arc<dyn Backend>, fault: Fault) -> Result<()> {
        // Every handle this harness opened shares the storage.
        self.storage.fail_next(fault);
        Ok(())
    }
}

/// Expands every conformance rule into a `#[tokio::test]` of the same
/// name inside `mod $backend`, so a failure names both
/// (`sqlite::ack_twice_is_already_acked`). `$harness` is evaluated once per
/// test and must give a fresh [`Harness`]; it is written as in the calling
/// module.
///
/// A backend crate needs `zapinbox-core` with feature `testkit`, and
/// `tokio` with features `macros` and `rt-multi-thread`, as
/// dev-dependencies; see the guide, "Implementing a backend".
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident, $harness:expr) => {
        #[allow(unused_imports)]
        mod $backend {
            use super::*;
            $crate::__conformance_rules!(tests[$harness]);
        }
    };
}

/// The rules, in two groups: those that stay inside their own tenants, and
/// those that need storage of their own: they act on the whole store
/// (purging, injected storage faults), or load it so heavily (a dozen
/// payloads at the limit at once) that rules sharing it would miss their
/// timing. Expands into tests (`tests [$harness]`) or into the list of
/// tenant rules (`list []`, see [`tenant_rules`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_rules {
    ($mode:ident [$($args:tt)*]) => {
        $crate::__conformance_rules! { @expand $mode [$($args)*]
            tenant: [
            ingest_then_get_round_trips,
            ids_sort_in_ingest_order,
            duplicate_key_returns_the_original,
            key_reused_with_other_content_conflicts,
            concurrent_retries_store_one_event,
            a_conflicting_key_fails_only_its_own_ingest,
            keys_are_per_tenant,
            key_expires_after_its_window,
            key_outlives_a_deleted_event,
            pull_filters_alone_and_combined,
            pull_orders_ascending_and_descending,
            pagination_is_exact_while_events_change,
            descending_pagination_is_exact_while_events_change,
            late_commit_with_a_smaller_id_is_not_skipped,
            limit_is_bounded,
            tampered_or_foreign_cursor_is_invalid_input,
            stream_pending_yields_every_event_once,
            subscription_hands_over_from_backlog_to_live_exactly,
            third_subscription_is_refused_until_one_is_dropped,
            subscription_shows_only_its_tenant_and_filter,
            a_slow_subscriber_loses_nothing,
            daily_quota_refuses_the_next_message_until_the_next_day,
            outbound_quota_refuses_deliveries_once_used_up,
            racing_pulls_cross_the_outbound_quota_once,
            usage_records_add_up_to_the_operations,
            buffered_emitter_drops_when_full_and_delivers_what_it_accepted,
            ack_twice_is_already_acked,
            unknown_or_foreign_id_is_not_found,
            delete_then_everything_is_not_found,
            batch_is_all_or_nothing,
            unicode_round_trips,
            oversized_payload_is_rejected,
            bad_input_changes_nothing,
            deep_payloads_are_refused_and_the_tenant_keeps_flowing,
            requests_over_the_batch_limits_are_refused,
            finishing_work_is_never_rate_limited,
            events_after_the_clock_steps_back_are_claimable_at_once,
            claimable_at_says_when_a_claim_finds_work,
            idle_worker_spares_the_rate_limit_and_backs_off,
            rate_limit_is_per_tenant,
            state_survives_reopen,
            concurrent_claimers_never_share_an_event,
            expired_lease_returns_with_the_next_attempt,
            release_hides_the_event_until_its_delay_passes,
            extend_keeps_the_event_hidden_past_its_first_expiry,
            requeue_returns_the_event_without_counting_the_attempt,
            last_attempt_dead_letters_and_redrive_brings_back,
            expired_last_lease_dead_letters,
            expired_last_lease_is_dead_whatever_claims_run,
            browse_lists_leased_events_as_leased,
            ack_by_id_wins_over_a_lease,
            ack_leases_answers_each_lease,
            claim_respects_filter_limit_and_tenant,
            claims_take_the_earliest_available_first,
            workers_handle_every_event_once,
            worker_retries_then_dead_letters,
            worker_shutdown_finishes_or_releases,
            worker_renews_the_lease_while_the_handler_runs,
            worker_handle_shows_live_counters,
            dead_letters_are_purged_on_purpose,
            tenant_stats_count_each_state,
            two_handles_race_one_key_to_one_event,
            two_handles_never_lease_one_event_twice,
            two_handles_see_each_others_events_and_acks,
            a_subscriber_sees_events_ingested_through_another_handle,
            ]
            store: [
            acked_events_are_purged_after_retention,
            purge_goes_in_small_batches,
            storage_faults_are_classified_and_change_nothing,
            the_largest_payloads_and_keys_are_stored_side_by_side,
            ]
        }
    };
    (@expand tests [$harness:expr] tenant: [$($tenant:ident,)*] store: [$($store:ident,)*]) => {
        $crate::__conformance_rules! { @each [$harness] $($tenant,)* $($store,)* }
    };
    (@each [$harness:expr] $($rule:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() {
                $crate::testkit::rules::$rule(&$harness).await
            }
        )*
    };
    (@expand list [] tenant: [$($tenant:ident,)*] store: [$($store:ident,)*]) => {
        vec![$({
            fn boxed(harness: &dyn $crate::testkit::Harness) -> $crate::testkit::RuleFuture<'_> {
                Box::pin($crate::testkit::rules::$tenant(harness))
            }
            (stringify!($tenant), boxed as $crate::testkit::Rule)
        }),*]
    };
}

/// A rule's future.
pub type RuleFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// A conformance rule, as a function.
pub type Rule = for<'a> fn(&'a dyn Harness) -> RuleFuture<'a>;

/// Every rule that stays inside its own fresh tenants, by name: any number
/// of them can run at once against one shared store (see
/// [`run_tenant_rules`]). The others purge across tenants, inject storage
/// faults or load the store heavily, and need storage of their own.
pub fn tenant_rules() -> Vec<(&'static str, Rule)> {
    crate::__conformance_rules!(list [])
}

/// Runs every tenant rule against `harness`, whose backends must share one
/// store, `at_once` at a time (`usize::MAX`: all at once): proof that rules
/// stay inside their tenants whatever else the store holds. Panics naming
/// the rules that failed.
///
/// Each rule opens backends of its own; where one costs a dozen threads
/// and several broker connections (Kafka), all rules at once are more
/// than a small machine serves in time.
pub async fn run_tenant_rules(harness: &dyn Harness, at_once: usize) {
    use futures::{FutureExt, StreamExt};
    let runs = tenant_rules().into_iter().map(|(name, rule)| {
        std::panic::AssertUnwindSafe(rule(harness))
            .catch_unwind()
            .map(move |outcome| (name, outcome))
    });
    let outcomes: Vec<_> = futures::stream::iter(runs)
        .buffer_unordered(at_once.max(1))
        .collect()
        .await;
    let failed: Vec<&str> = outcomes
        .into_iter()
        .filter_map(|(name, outcome)| outcome.is_err().then_some(name))
        .collect();
    assert!(
        failed.is_empty(),
        "rules failed on a shared store: {failed:?}"
    );
}

/// Asserts that `result` is [`Error::Unsupported`](crate::Error::Unsupported)
/// naming `operation`: what a rule checks in place of its subject when the
/// backend declares it lacks it.
pub fn assert_unsupported<T: std::fmt::Debug>(result: Result<T>, operation: &str) {
    assert!(
        matches!(&result, Err(crate::Error::Unsupported { operation: op, .. }) if *op == operation),
        "{operation} on a backend without it: {result:?}"
    );
}

/// How long a rule waits for writes through another handle on the same
/// storage to be seen: the lag the backend declares
/// ([`SharedWrites`](crate::SharedWrites)), plus room for a loaded machine.
/// The rules check that such writes are seen, not how fast: on a 2-core
/// machine running two whole suites on one Kafka topic, a handle once
/// took over 5 s to apply another's records.
pub fn shared_patience(inbox: &Inbox) -> Duration {
    match inbox.capabilities().shared_writes {
        crate::SharedWrites::Within(d) => d + Duration::from_secs(10),
        _ => Duration::ZERO,
    }
}

/// Whether `check` comes true within `within`, trying every 5 ms (and at
/// least once).
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A tenant no other test uses.
pub fn fresh_tenant() -> TenantId {
    let n: u64 = rand::random();
    TenantId::new(format!("tenant-{n:016x}")).expect("generated tenant ids are valid")
}

/// The start of every rule's manual clock.
pub fn start_time() -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000)
}

/// Settings for rules about retries: backoff of 1 s, 2 s, 4 s… up to a
/// minute, no jitter (so times are exact), and `max_attempts` attempts.
pub fn exact_retries(max_attempts: u32) -> QueueConfig {
    let policy = RetryPolicy::exponential(Duration::from_secs(1), Duration::from_secs(60))
        .without_jitter()
        .with_max_attempts(max_attempts);
    QueueConfig::default().with_retry(policy)
}

/// A manual clock and an inbox on a backend opened with it.
pub async fn open_inbox(harness: &dyn Harness) -> (Inbox, ManualClock) {
    open_inbox_with(harness, QueueConfig::default()).await
}

/// A manual clock and an inbox on a backend opened with `config` and it.
pub async fn open_inbox_with(harness: &dyn Harness, config: QueueConfig) -> (Inbox, ManualClock) {
    let clock = ManualClock::new(start_time());
    let backend = harness
        .open(config.with_clock(clock.clock()))
        .await
        .expect("the harness opens a backend");
    (Inbox::new(backend), clock)
}

/// A small event whose payload carries `n`.
pub fn numbered(n: usize) -> NewEvent {
    NewEvent::new(json!({ "n": n }))
}

/// Ingests `numbered(n)` for each of `numbers` into `tenant`, in batches
/// as large as the inbox allows; the ids, in order.
pub async fn ingest_numbered(
    inbox: &Inbox,
    tenant: &TenantId,
    numbers: std::ops::Range<usize>,
) -> Vec<crate::EventId> {
    let numbers: Vec<usize> = numbers.collect();
    let mut ids = Vec::with_capacity(numbers.len());
    for chunk in numbers.chunks(inbox.limits().max_batch_events.max(1)) {
        let events = chunk.iter().copied().map(numbered).collect();
        let stored = inbox.ingest_batch(tenant, events).await.expect("ingest");
        ids.extend(stored.iter().map(|i| i.id));
    }
    ids
}

/// The `n` field of an event's payload.
pub fn number_of(event: &Event) -> Option<u64> {
    let payload = event.payload.as_value().ok()?;
    payload.get("n").and_then(Value::as_u64)
}

/// Every pending event of `tenant` matching `query`, following cursors.
pub async fn pull_all(inbox: &Inbox, tenant: &TenantId, query: PullQuery) -> Vec<Event> {
    let mut events = Vec::new();
    let mut query = query;
    for _ in 0..10_000 {
        let page = inbox
            .pull(tenant, query.clone())
            .await
            .expect("pull succeeds");
        events.extend(page.events);
        match page.next_cursor {
            Some(cursor) if page.has_more => query = query.after(cursor),
            _ => return events,
        }
    }
    panic!("pull_all: 10 000 pages and still a cursor: the cursor does not advance")
}
