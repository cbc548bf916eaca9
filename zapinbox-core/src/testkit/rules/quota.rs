use std::time::Duration;

use crate::testkit::{Harness, fresh_tenant, ingest_numbered, numbered, start_time};
use crate::{
    ClaimQuery, DailyLimits, Error, Inbox, ManualClock, PullQuery, QueueConfig, Quotas, TenantId,
    next_day,
};

/// An inbox with `quotas` on a backend opened with `clock`.
async fn with_quotas(harness: &dyn Harness, quotas: Quotas, clock: &ManualClock) -> Inbox {
    let config = QueueConfig::default()
        .with_quotas(quotas)
        .with_clock(clock.clock());
    Inbox::new(harness.open(config).await.expect("open"))
}

/// With the source system "Ephemeral"'s quotas, a tenant's 10 001st
/// message of a UTC day is refused, naming the limit and when the day
/// ends, and nothing is stored; another tenant is unaffected; a reopened
/// inbox remembers the count; the next day the tenant may ingest again.
pub async fn daily_quota_refuses_the_next_message_until_the_next_day(harness: &dyn Harness) {
    let clock = ManualClock::new(start_time());
    let inbox = with_quotas(harness, Quotas::ephemeral(), &clock).await;
    let (tenant, other) = (fresh_tenant(), fresh_tenant());
    ingest_numbered(&inbox, &tenant, 0..10_000).await;
    let one_more = || numbered(10_000).with_idempotency_key("one-more");
    let refused = inbox.ingest(&tenant, one_more()).await;
    let day_ends = next_day(clock.now());
    assert!(
        matches!(&refused, Err(Error::QuotaExceeded { scope, limit: 10_000, reset_at })
            if scope == "tenant messages in" && *reset_at == day_ends),
        "{refused:?}"
    );
    assert_eq!(
        inbox.find_by_key(&tenant, "one-more").await.expect("find"),
        None
    );
    inbox
        .ingest(&other, numbered(1))
        .await
        .expect("another tenant");

    let reopened = with_quotas(harness, Quotas::ephemeral(), &clock).await;
    let again = reopened.ingest(&tenant, one_more()).await;
    assert!(
        matches!(again, Err(Error::QuotaExceeded { .. })),
        "{again:?}"
    );

    clock.set(day_ends);
    let next = reopened
        .ingest(&tenant, one_more())
        .await
        .expect("a new day");
    assert!(!next.duplicate);
}

/// A fresh tenant with ten pending events, on an inbox whose tenants may
/// take three out a day.
async fn ten_events_three_out(harness: &dyn Harness, clock: &ManualClock) -> (Inbox, TenantId) {
    let quotas = Quotas::off().per_tenant(DailyLimits::none().messages_out(3));
    let inbox = with_quotas(harness, quotas, clock).await;
    let tenant = fresh_tenant();
    for n in 0..10 {
        inbox.ingest(&tenant, numbered(n)).await.expect("ingest");
    }
    (inbox, tenant)
}

/// An outbound quota refuses deliveries (pulls, claims) once the day's
/// count is used up; the call that crosses it is served whole.
pub async fn outbound_quota_refuses_deliveries_once_used_up(harness: &dyn Harness) {
    let clock = ManualClock::new(start_time());
    let (inbox, tenant) = ten_events_three_out(harness, &clock).await;
    let page = inbox
        .pull(&tenant, PullQuery::new().limit(2))
        .await
        .expect("2 of 3");
    let claimed = inbox
        .claim(&tenant, ClaimQuery::new().limit(2))
        .await
        .expect("crosses the quota: served whole");
    assert_eq!((page.events.len(), claimed.len()), (2, 2));
    let pull = inbox.pull(&tenant, PullQuery::new()).await.map(drop);
    assert!(
        matches!(&pull, Err(Error::QuotaExceeded { scope, limit: 3, .. }) if scope == "tenant messages out"),
        "{pull:?}"
    );
    let claim = inbox.claim(&tenant, ClaimQuery::new()).await.map(drop);
    assert!(
        matches!(claim, Err(Error::QuotaExceeded { .. })),
        "{claim:?}"
    );
    // Finishing work is never refused.
    inbox
        .ack_lease(&tenant, claimed[0].token)
        .await
        .expect("ack");
    clock.advance(Duration::from_secs(24 * 3600));
    inbox
        .pull(&tenant, PullQuery::new())
        .await
        .expect("the next day");
}

/// Two pulls racing for what is left of the day's outbound quota: one is
/// served whole, the other refused, whichever order they land in.
pub async fn racing_pulls_cross_the_outbound_quota_once(harness: &dyn Harness) {
    let clock = ManualClock::new(start_time());
    let (inbox, tenant) = ten_events_three_out(harness, &clock).await;
    let pull = || {
        let (inbox, tenant) = (inbox.clone(), tenant.clone());
        tokio::spawn(async move { inbox.pull(&tenant, PullQuery::new().limit(3)).await })
    };
    let (a, b) = (pull(), pull());
    let answers = [a.await.expect("task"), b.await.expect("task")];
    let served = answers.iter().filter(|a| a.is_ok()).count();
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Err(Error::QuotaExceeded { .. })))
        .count();
    assert_eq!((served, refused), (1, 1), "{answers:?}");
}
