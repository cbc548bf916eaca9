use std::time::Duration;

use crate::testkit::{Harness, fresh_tenant, numbered, open_inbox};
use crate::{Error, Inbox, PullQuery, RateLimit};

/// Each tenant has its own bucket; a refused call says when to retry and
/// changes nothing; time refills the bucket.
pub async fn rate_limit_is_per_tenant(harness: &dyn Harness) {
    let (open, clock) = open_inbox(harness).await;
    let (busy, quiet, vip) = (fresh_tenant(), fresh_tenant(), fresh_tenant());
    let inbox = Inbox::builder(open.backend().clone())
        .rate_limit(RateLimit::per_second(5))
        .tenant_rate_limit(vip.clone(), RateLimit::per_second(50))
        .build();
    for n in 0..5 {
        inbox
            .ingest(&busy, numbered(n))
            .await
            .expect("within the limit");
    }
    let r = inbox.ingest(&busy, numbered(5)).await;
    let retry_after = match r {
        Err(Error::RateLimited { retry_after }) => retry_after,
        other => panic!("expected RateLimited, got {other:?}"),
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200),
        "{retry_after:?}"
    );
    let r = inbox.pull(&busy, PullQuery::new()).await;
    assert!(
        matches!(r, Err(Error::RateLimited { .. })),
        "every call counts: {r:?}"
    );
    assert!(Error::RateLimited { retry_after }.is_retryable());

    inbox
        .ingest(&quiet, numbered(0))
        .await
        .expect("another tenant is not limited");
    for n in 0..50 {
        inbox
            .ingest(&vip, numbered(n))
            .await
            .expect("the override applies");
    }

    clock.advance(retry_after);
    let page = inbox.pull(&busy, PullQuery::new()).await.expect("refilled");
    assert_eq!(page.events.len(), 5, "the refused ingest stored nothing");
}
