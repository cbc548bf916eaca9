use crate::testkit::{Harness, fresh_tenant, numbered, open_inbox};
use crate::{ClaimQuery, Error, Fault, PullQuery};

/// A storage fault (busy, throttled, damaged) reaches the caller as
/// `Error::Backend`, retryable exactly when the fault is, and changes
/// nothing: the same call then succeeds, once.
pub async fn storage_faults_are_classified_and_change_nothing(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let faults = harness.faults();
    if faults.is_empty() {
        let r = harness.inject(inbox.backend(), Fault::Transient).await;
        assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
        return;
    }
    let classified = |fault: Fault, r: &crate::Result<()>| matches!(r, Err(Error::Backend { retryable, .. }) if *retryable == fault.retryable());
    for fault in faults {
        let key = format!("{fault:?}");
        let event = numbered(1).with_idempotency_key(key.clone());
        harness
            .inject(inbox.backend(), fault)
            .await
            .expect("inject");
        let r = inbox.ingest(&tenant, event.clone()).await.map(drop);
        assert!(classified(fault, &r), "ingest met {fault:?}: {r:?}");
        assert_eq!(inbox.find_by_key(&tenant, &key).await.expect("find"), None);
        let stored = inbox
            .ingest(&tenant, event)
            .await
            .expect("then it succeeds");
        assert!(!stored.duplicate, "{fault:?}: stored once, now");

        harness
            .inject(inbox.backend(), fault)
            .await
            .expect("inject");
        let r = inbox.claim(&tenant, ClaimQuery::new()).await.map(drop);
        assert!(classified(fault, &r), "claim met {fault:?}: {r:?}");
        let leased = inbox
            .claim(&tenant, ClaimQuery::new())
            .await
            .expect("claim");
        assert_eq!(leased.len(), 1, "{fault:?}: still claimable, once");
        assert_eq!(leased[0].attempt, 1, "the failed claim did not count");
        inbox
            .ack_lease(&tenant, leased[0].token)
            .await
            .expect("ack");
    }
    let left = inbox.pull(&tenant, PullQuery::new()).await.expect("pull");
    assert!(left.events.is_empty());
}
