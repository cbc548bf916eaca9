use std::time::Duration;

use crate::testkit::{Harness, fresh_tenant, numbered, open_inbox};
use crate::{ClaimQuery, Error, Filter, Inbox, PullQuery, RateLimit, Redrive};

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
        "reads count too: {r:?}"
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

/// With the tenant's budget spent, calls that bring in or hand out work are
/// refused, and calls that finish work the caller holds are not: ack,
/// delete, extend, release, requeue and ack_lease always pass, as does the
/// idle poll `claimable_at`.
pub async fn finishing_work_is_never_rate_limited(harness: &dyn Harness) {
    let (open, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let inbox = Inbox::builder(open.backend().clone())
        .rate_limit(RateLimit::per_minute(2))
        .build();
    let stored = inbox
        .ingest_batch(&tenant, (0..4).map(numbered).collect())
        .await
        .expect("within the limit");
    let mut leased = inbox
        .claim(&tenant, ClaimQuery::new().limit(3))
        .await
        .expect("within the limit");
    let limited = |what: &str, r: crate::Result<()>| {
        assert!(
            matches!(r, Err(Error::RateLimited { .. })),
            "{what} is limited: {r:?}"
        );
    };
    limited("ingest", inbox.ingest(&tenant, numbered(9)).await.map(drop));
    limited(
        "pull",
        inbox.pull(&tenant, PullQuery::new()).await.map(drop),
    );
    limited(
        "claim",
        inbox.claim(&tenant, ClaimQuery::new()).await.map(drop),
    );
    limited("get", inbox.get(&tenant, stored[3].id).await.map(drop));
    limited(
        "redrive",
        inbox.redrive(&tenant, Redrive::All).await.map(drop),
    );
    limited(
        "find_by_key",
        inbox.find_by_key(&tenant, "k").await.map(drop),
    );
    limited(
        "dead_letters",
        inbox
            .dead_letters(&tenant, PullQuery::new())
            .await
            .map(drop),
    );
    limited(
        "purge_dead_letters",
        inbox
            .purge_dead_letters(&tenant, Redrive::All)
            .await
            .map(drop),
    );
    limited("tenant_stats", inbox.tenant_stats(&tenant).await.map(drop));

    let (c, b, a) = (
        leased.pop().expect("three"),
        leased.pop().expect("three"),
        leased.pop().expect("three"),
    );
    inbox
        .extend(&tenant, a.token, Duration::from_secs(60))
        .await
        .expect("extend passes");
    inbox
        .requeue(&tenant, a.token)
        .await
        .expect("requeue passes");
    inbox.ack(&tenant, a.event.id).await.expect("ack passes");
    inbox
        .release(&tenant, b.token, None)
        .await
        .expect("release passes");
    inbox
        .ack_lease(&tenant, c.token)
        .await
        .expect("ack_lease passes");
    inbox
        .delete(&tenant, stored[3].id)
        .await
        .expect("delete passes");
    let next = inbox
        .claimable_at(&tenant, &Filter::default())
        .await
        .expect("claimable_at passes");
    assert!(next.is_some(), "the released event is still pending");
}
