//! Throttling and conflicts, which DynamoDB Local never produces, injected
//! as DynamoDB's own answers: what the SDK retries, what the backend
//! retries, and what reaches the caller (the conformance rule
//! `storage_faults_are_classified_and_change_nothing` covers the last).

mod support;

use std::time::Duration;

use support::{Canned, DynamoHarness};
use zapinbox_core::testkit::{fresh_tenant, numbered};
use zapinbox_core::{Error, Fault, Inbox, PullQuery, QueueConfig};

async fn inbox(harness: &DynamoHarness) -> Inbox {
    Inbox::new(harness.backend(QueueConfig::default()).await.expect("open"))
}

/// A throttled or failed request is retried by the SDK with backoff: the
/// call succeeds, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_request_is_retried_and_the_call_succeeds() {
    let harness = DynamoHarness::new();
    let inbox = inbox(&harness).await;
    let tenant = fresh_tenant();
    for fault in [Fault::Throttled, Fault::Transient] {
        harness
            .faults
            .answer_next(Canned::of(fault), support::ATTEMPTS - 1);
        let stored = inbox.ingest(&tenant, numbered(1)).await;
        assert!(stored.is_ok(), "{fault:?} retried: {stored:?}");
    }
    let page = inbox.pull(&tenant, PullQuery::new()).await.expect("pull");
    assert_eq!(page.events.len(), 2, "each stored once");
}

/// DynamoDB cancels a transaction that meets another one on the same item
/// (`TransactionConflict`); the backend tries it again, and it is stored
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_conflict_is_tried_again() {
    let harness = DynamoHarness::new();
    let inbox = inbox(&harness).await;
    let tenant = fresh_tenant();
    // The tenant's sequence is read once; the next ingest is one transaction.
    inbox.ingest(&tenant, numbered(0)).await.expect("ingest");
    let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict, None, None]","CancellationReasons":[{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"},{"Code":"None"},{"Code":"None"}]}"#;
    let conflict = Canned {
        status: 400,
        body: body.to_owned(),
        hang: false,
    };
    harness.faults.answer_next(conflict, 2);
    let keyed = numbered(1).with_idempotency_key("once");
    let stored = inbox
        .ingest(&tenant, keyed.clone())
        .await
        .expect("tried again");
    assert!(!stored.duplicate);
    let again = inbox.ingest(&tenant, keyed).await.expect("ingest");
    assert_eq!((again.id, again.duplicate), (stored.id, true));
    let page = inbox.pull(&tenant, PullQuery::new()).await.expect("pull");
    assert_eq!(page.events.len(), 2);
}

/// A plain conditional write meeting a transaction in progress on its
/// item (`TransactionConflictException`, which the SDK does not retry) is
/// tried again by the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_meeting_a_transaction_is_tried_again() {
    let harness = DynamoHarness::new();
    let inbox = inbox(&harness).await;
    let tenant = fresh_tenant();
    let id = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    // The ack reads the event, then writes: the write meets the conflict.
    harness
        .faults
        .answer_after(1, Canned::error(400, "TransactionConflictException"), 2);
    let acked = inbox.ack(&tenant, id).await.expect("tried again");
    assert_eq!(acked, zapinbox_core::AckOutcome::Acked);
    assert!(
        inbox
            .pull(&tenant, PullQuery::new())
            .await
            .expect("pull")
            .events
            .is_empty()
    );
}

/// A server that stops answering: each attempt times out, the SDK tries
/// again, and what reaches the caller is retryable; the next call goes
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_is_retried_then_retryable() {
    // The table made, and the server warm, with the usual patience.
    drop(inbox(&DynamoHarness::new()).await);
    let mut harness = DynamoHarness::new();
    harness.attempt_timeout = Duration::from_secs(2);
    let inbox = inbox(&harness).await;
    let tenant = fresh_tenant();
    harness
        .faults
        .answer_next(Canned::hang(), support::ATTEMPTS - 1);
    let stored = inbox.ingest(&tenant, numbered(1)).await;
    assert!(stored.is_ok(), "the last attempt answered: {stored:?}");
    harness
        .faults
        .answer_next(Canned::hang(), support::ATTEMPTS);
    let r = inbox.pull(&tenant, PullQuery::new()).await;
    assert!(
        matches!(
            &r,
            Err(Error::Backend {
                retryable: true,
                ..
            })
        ),
        "every attempt timed out: {r:?}"
    );
    let page = inbox.pull(&tenant, PullQuery::new()).await.expect("pull");
    assert_eq!(page.events.len(), 1);
}

/// What the SDK gave up on reaches the caller classified: throttling and
/// server errors retryable, a refusal not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_the_sdk_gives_up_on_are_classified() {
    let harness = DynamoHarness::new();
    let inbox = inbox(&harness).await;
    let tenant = fresh_tenant();
    let answers = [
        (Canned::error(400, "ThrottlingException"), true),
        (Canned::error(400, "RequestLimitExceeded"), true),
        (Canned::error(503, "ServiceUnavailable"), true),
        (Canned::error(400, "ValidationException"), false),
        (Canned::error(400, "ResourceNotFoundException"), false),
    ];
    for (answer, retryable) in answers {
        harness
            .faults
            .answer_next(answer.clone(), support::ATTEMPTS);
        let r = inbox
            .get(
                &tenant,
                zapinbox_core::EventId::generate(zapinbox_core::Timestamp::EPOCH),
            )
            .await;
        assert!(
            matches!(&r, Err(Error::Backend { retryable: r, .. }) if *r == retryable),
            "{answer:?}: {r:?}"
        );
        // Drain what a non-retried error left queued.
        harness.faults.clear();
    }
}
