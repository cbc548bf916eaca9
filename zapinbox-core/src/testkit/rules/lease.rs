use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::testkit::{
    Harness, exact_retries, fresh_tenant, ingest_numbered, numbered, open_inbox_with, pull_all,
};
use crate::{
    AckOutcome, ClaimOrder, ClaimQuery, Error, EventId, EventStatus, PullQuery, QueueConfig,
    Redrive, ReleaseOutcome,
};

fn config() -> QueueConfig {
    exact_retries(3)
}

const SECOND: Duration = Duration::from_secs(1);

/// Under 8 concurrent claimers over 5 000 events, no event is leased twice
/// (leases never expire here: the clock stands still), every event is
/// acked exactly once, and none is lost.
pub async fn concurrent_claimers_never_share_an_event(harness: &dyn Harness) {
    let (inbox, _) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    ingest_numbered(&inbox, &tenant, 0..5_000).await;
    let claims: Arc<Mutex<HashMap<EventId, u32>>> = Arc::default();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (inbox, tenant, claims) = (inbox.clone(), tenant.clone(), Arc::clone(&claims));
            tokio::spawn(async move {
                loop {
                    let query = ClaimQuery::new().limit(25).lease(Duration::from_secs(600));
                    let leased = inbox.claim(&tenant, query).await.expect("claim");
                    if leased.is_empty() {
                        return;
                    }
                    for l in leased {
                        assert_eq!(l.attempt, 1, "nothing expires, so no retries");
                        *claims.lock().expect("lock").entry(l.event.id).or_default() += 1;
                        let acked = inbox.ack_lease(&tenant, l.token).await.expect("ack");
                        assert_eq!(acked, AckOutcome::Acked);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    let claims = std::mem::take(&mut *claims.lock().expect("lock"));
    assert_eq!(claims.len(), 5000, "every event was claimed");
    let twice: Vec<_> = claims.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "events leased more than once: {twice:?}");
    assert!(
        pull_all(&inbox, &tenant, PullQuery::new().limit(1000))
            .await
            .is_empty()
    );
}

/// A lease that runs out (plus the backoff) makes the event claimable again
/// with the next attempt; the old holder's token no longer works.
pub async fn expired_lease_returns_with_the_next_attempt(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let id = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let lease = ClaimQuery::new().lease(10 * SECOND);
    let first = inbox.claim(&tenant, lease.clone()).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].event.id, first[0].attempt), (id, 1));
    assert_eq!(first[0].expires_at, clock.now().saturating_add(10 * SECOND));
    assert!(
        inbox
            .claim(&tenant, lease.clone())
            .await
            .expect("claim")
            .is_empty(),
        "leased"
    );
    clock.advance(10 * SECOND);
    assert!(
        inbox
            .claim(&tenant, lease.clone())
            .await
            .expect("claim")
            .is_empty(),
        "backoff"
    );
    clock.advance(SECOND);
    let second = inbox.claim(&tenant, lease.clone()).await.expect("claim");
    assert_eq!(second.len(), 1);
    assert_eq!(
        (
            second[0].event.id,
            second[0].attempt,
            second[0].event.attempts
        ),
        (id, 2, 2)
    );
    assert_ne!(second[0].token, first[0].token);

    let old = first[0].token;
    let r = inbox.ack_lease(&tenant, old).await;
    assert!(
        matches!(r, Err(Error::LeaseLost { id: lost }) if lost == id),
        "{r:?}"
    );
    let r = inbox.extend(&tenant, old, 10 * SECOND).await;
    assert!(matches!(r, Err(Error::LeaseLost { .. })), "{r:?}");
    let r = inbox.release(&tenant, old, None).await;
    assert!(matches!(r, Err(Error::LeaseLost { .. })), "{r:?}");
    let acked = inbox
        .ack_lease(&tenant, second[0].token)
        .await
        .expect("ack");
    assert_eq!(acked, AckOutcome::Acked);
}

/// Release with a delay hides the event exactly that long; release without
/// one waits the policy's backoff for that attempt.
pub async fn release_hides_the_event_until_its_delay_passes(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let id = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let claim = || inbox.claim(&tenant, ClaimQuery::new());
    let leased = claim().await.expect("claim").remove(0);
    let out = inbox
        .release(&tenant, leased.token, Some(30 * SECOND))
        .await
        .expect("release");
    assert_eq!(
        out,
        ReleaseOutcome::Retry {
            at: clock.now().saturating_add(30 * SECOND)
        }
    );
    clock.advance(Duration::from_millis(29_999));
    assert!(claim().await.expect("claim").is_empty(), "still hidden");
    clock.advance(Duration::from_millis(1));
    let leased = claim().await.expect("claim").remove(0);
    assert_eq!((leased.event.id, leased.attempt), (id, 2));

    // No delay given: the backoff after attempt 2 is 2 s.
    let out = inbox
        .release(&tenant, leased.token, None)
        .await
        .expect("release");
    assert_eq!(
        out,
        ReleaseOutcome::Retry {
            at: clock.now().saturating_add(2 * SECOND)
        }
    );
    clock.advance(SECOND);
    assert!(claim().await.expect("claim").is_empty(), "backing off");
    clock.advance(SECOND);
    assert_eq!(claim().await.expect("claim")[0].attempt, 3);
}

/// Requeue gives the event back at once without counting the attempt, even
/// on the last one; a release delay longer than a day is refused.
pub async fn requeue_returns_the_event_without_counting_the_attempt(harness: &dyn Harness) {
    let (inbox, _) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let id = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    for attempt in 1..=2 {
        let leased = inbox
            .claim(&tenant, ClaimQuery::new())
            .await
            .expect("claim")
            .remove(0);
        assert_eq!(leased.attempt, attempt);
        inbox
            .release(&tenant, leased.token, Some(Duration::ZERO))
            .await
            .expect("release");
    }
    let last = inbox
        .claim(&tenant, ClaimQuery::new())
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(last.attempt, 3, "the last attempt");
    let r = inbox
        .release(
            &tenant,
            last.token,
            Some(Duration::from_secs(2 * 24 * 3600)),
        )
        .await;
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    inbox.requeue(&tenant, last.token).await.expect("requeue");
    let event = inbox.get(&tenant, id).await.expect("get").expect("kept");
    assert_eq!(
        (event.status, event.attempts, event.leased_until),
        (EventStatus::Pending, 2, None)
    );
    let again = inbox
        .claim(&tenant, ClaimQuery::new())
        .await
        .expect("claim");
    assert_eq!(
        (again[0].event.id, again[0].attempt),
        (id, 3),
        "claimable at once, same attempt"
    );
    let r = inbox.requeue(&tenant, last.token).await;
    assert!(
        matches!(r, Err(Error::LeaseLost { .. })),
        "an old token cannot requeue: {r:?}"
    );
}

/// Extending a lease keeps the event hidden past the first expiry; the
/// holder can still ack.
pub async fn extend_keeps_the_event_hidden_past_its_first_expiry(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    inbox.ingest(&tenant, numbered(1)).await.expect("ingest");
    let query = ClaimQuery::new().lease(10 * SECOND);
    let leased = inbox
        .claim(&tenant, query.clone())
        .await
        .expect("claim")
        .remove(0);
    clock.advance(8 * SECOND);
    let until = inbox
        .extend(&tenant, leased.token, 10 * SECOND)
        .await
        .expect("extend");
    assert_eq!(until, clock.now().saturating_add(10 * SECOND));
    clock.advance(5 * SECOND);
    assert!(
        inbox
            .claim(&tenant, query.clone())
            .await
            .expect("claim")
            .is_empty()
    );
    let event = inbox
        .get(&tenant, leased.event.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(event.leased_until, Some(until));
    let r = inbox.extend(&tenant, leased.token, Duration::ZERO).await;
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    let acked = inbox.ack_lease(&tenant, leased.token).await.expect("ack");
    assert_eq!(acked, AckOutcome::Acked);
    let r = inbox.extend(&tenant, leased.token, 10 * SECOND).await;
    assert!(
        matches!(r, Err(Error::LeaseLost { .. })),
        "no lease after ack: {r:?}"
    );
}

/// Releasing the last allowed attempt dead-letters the event: never
/// claimed, not in pull, listed by dead_letters; redrive brings it back
/// with attempts reset.
pub async fn last_attempt_dead_letters_and_redrive_brings_back(harness: &dyn Harness) {
    let (inbox, _) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let id = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let other = inbox.ingest(&tenant, numbered(2)).await.expect("ingest").id;
    inbox.ack(&tenant, other).await.expect("ack the other");
    for attempt in 1..=3 {
        let leased = inbox
            .claim(&tenant, ClaimQuery::new())
            .await
            .expect("claim")
            .remove(0);
        assert_eq!(leased.attempt, attempt);
        let out = inbox
            .release(&tenant, leased.token, Some(Duration::ZERO))
            .await
            .expect("release");
        let expected_dead = attempt == 3;
        assert_eq!(
            out == ReleaseOutcome::DeadLettered,
            expected_dead,
            "attempt {attempt}: {out:?}"
        );
    }
    assert!(
        inbox
            .claim(&tenant, ClaimQuery::new())
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        pull_all(&inbox, &tenant, PullQuery::new()).await.is_empty(),
        "not pending"
    );
    let dead = inbox.get(&tenant, id).await.expect("get").expect("kept");
    assert_eq!((dead.status, dead.attempts), (EventStatus::DeadLettered, 3));
    let listed = inbox
        .dead_letters(&tenant, PullQuery::new())
        .await
        .expect("list");
    assert_eq!(
        listed.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![id]
    );

    let unknown = EventId::generate(crate::Timestamp::from_millis(1));
    let n = inbox
        .redrive(&tenant, Redrive::Ids(vec![id, other, unknown]))
        .await
        .expect("redrive");
    assert_eq!(n, 1, "only the dead letter is redriven");
    let back = inbox.get(&tenant, id).await.expect("get").expect("kept");
    assert_eq!((back.status, back.attempts), (EventStatus::Pending, 0));
    let leased = inbox
        .claim(&tenant, ClaimQuery::new())
        .await
        .expect("claim");
    assert_eq!((leased[0].event.id, leased[0].attempt), (id, 1));
    assert_eq!(
        inbox.redrive(&tenant, Redrive::All).await.expect("redrive"),
        0
    );
}

/// An event whose last lease runs out (a worker died on its last try) is
/// dead-lettered, not claimed a fourth time.
pub async fn expired_last_lease_dead_letters(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let id = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let query = ClaimQuery::new().lease(10 * SECOND);
    for attempt in 1..=3u32 {
        let leased = inbox.claim(&tenant, query.clone()).await.expect("claim");
        assert_eq!(leased.len(), 1, "attempt {attempt}");
        // Let the lease and the backoff after it run out.
        clock.advance(10 * SECOND + SECOND * (1 << (attempt - 1)));
    }
    assert!(
        inbox
            .claim(&tenant, query.clone())
            .await
            .expect("claim")
            .is_empty()
    );
    let listed = inbox
        .dead_letters(&tenant, PullQuery::new())
        .await
        .expect("list");
    assert_eq!(
        listed.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![id]
    );
    assert_eq!(
        inbox.redrive(&tenant, Redrive::All).await.expect("redrive"),
        1
    );
    assert!(
        inbox
            .dead_letters(&tenant, PullQuery::new())
            .await
            .expect("list")
            .events
            .is_empty()
    );
}

/// Regression (found by the model test): once an event's last lease has run
/// out it is a dead letter at once, for every reader, even if no claim
/// that could select it has run since. SQLite used to dead-letter it only
/// when a claim whose filter matched it came by, so the stale holder could
/// still ack it there while the reference said `LeaseLost`.
pub async fn expired_last_lease_is_dead_whatever_claims_run(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let id = inbox
        .ingest(&tenant, numbered(1).with_topic("a"))
        .await
        .expect("ingest")
        .id;
    let query = ClaimQuery::new().lease(10 * SECOND);
    let mut last = None;
    for attempt in 1..=3u32 {
        let leased = inbox
            .claim(&tenant, query.clone())
            .await
            .expect("claim")
            .remove(0);
        assert_eq!(leased.attempt, attempt);
        last = Some(leased);
        clock.advance(10 * SECOND + SECOND * (1 << (attempt - 1)));
    }
    let last = last.expect("claimed");
    let other_topic = ClaimQuery::new().topic("b");
    assert!(
        inbox
            .claim(&tenant, other_topic)
            .await
            .expect("claim")
            .is_empty()
    );
    let event = inbox.get(&tenant, id).await.expect("get").expect("kept");
    assert_eq!(
        (event.status, event.leased_until),
        (EventStatus::DeadLettered, None)
    );
    assert!(pull_all(&inbox, &tenant, PullQuery::new()).await.is_empty());
    let r = inbox.ack_lease(&tenant, last.token).await;
    assert!(matches!(r, Err(Error::LeaseLost { .. })), "{r:?}");
    let r = inbox.extend(&tenant, last.token, SECOND).await;
    assert!(matches!(r, Err(Error::LeaseLost { .. })), "{r:?}");
    assert_eq!(
        inbox.ack(&tenant, id).await.expect("ack by id still wins"),
        AckOutcome::Acked
    );
}

/// Pull is a browse: it lists leased events too, and says they are leased.
pub async fn browse_lists_leased_events_as_leased(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let a = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let b = inbox.ingest(&tenant, numbered(2)).await.expect("ingest").id;
    let leased = inbox
        .claim(&tenant, ClaimQuery::new().limit(1))
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(leased.event.id, a);
    let listed = pull_all(&inbox, &tenant, PullQuery::new()).await;
    assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(listed[0].leased_until, Some(leased.expires_at));
    assert!(listed[0].is_leased_at(clock.now()));
    assert_eq!(listed[0].attempts, 1);
    assert_eq!(listed[1].leased_until, None);
    inbox.ack_lease(&tenant, leased.token).await.expect("ack");
    let got = inbox.get(&tenant, a).await.expect("get").expect("kept");
    assert_eq!(got.leased_until, None, "an acked event is not leased");
}

/// Ack by id always wins: the holder's token then acks as `AlreadyAcked`
/// and can no longer extend or release.
pub async fn ack_by_id_wins_over_a_lease(harness: &dyn Harness) {
    let (inbox, _) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let id = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let leased = inbox
        .claim(&tenant, ClaimQuery::new())
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(
        inbox.ack(&tenant, id).await.expect("ack"),
        AckOutcome::Acked
    );
    let again = inbox
        .ack_lease(&tenant, leased.token)
        .await
        .expect("ack with the lease");
    assert_eq!(again, AckOutcome::AlreadyAcked);
    let r = inbox.release(&tenant, leased.token, None).await;
    assert!(matches!(r, Err(Error::LeaseLost { .. })), "{r:?}");
    let r = inbox.extend(&tenant, leased.token, SECOND).await;
    assert!(matches!(r, Err(Error::LeaseLost { .. })), "{r:?}");
}

/// Claims take the event that became available first: a retried event
/// waits behind events that were available before its backoff ended.
pub async fn claims_take_the_earliest_available_first(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let first = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    let leased = inbox
        .claim(&tenant, ClaimQuery::new().limit(1))
        .await
        .expect("claim")
        .remove(0);
    inbox
        .release(&tenant, leased.token, Some(5 * SECOND))
        .await
        .expect("release");
    clock.advance(SECOND);
    let second = inbox.ingest(&tenant, numbered(2)).await.expect("ingest").id;
    clock.advance(10 * SECOND);
    let third = inbox.ingest(&tenant, numbered(3)).await.expect("ingest").id;
    let order: Vec<_> = inbox
        .claim(&tenant, ClaimQuery::new().limit(3))
        .await
        .expect("claim")
        .into_iter()
        .map(|l| l.event.id)
        .collect();
    match inbox.capabilities().claim_order {
        ClaimOrder::EarliestFirst => assert_eq!(
            order,
            vec![second, first, third],
            "by the time each became available"
        ),
        // No order promised: each of them, once.
        _ => assert_eq!(sorted(order), sorted(vec![first, second, third])),
    }
}

fn sorted(mut ids: Vec<EventId>) -> Vec<EventId> {
    ids.sort();
    ids
}

/// Claims take the oldest matching events of their own tenant only; limits
/// and lease lengths are checked; a token is no use in another tenant or
/// after its event is deleted.
pub async fn claim_respects_filter_limit_and_tenant(harness: &dyn Harness) {
    let (inbox, _) = open_inbox_with(harness, config()).await;
    let (tenant, other) = (fresh_tenant(), fresh_tenant());
    let mut orders = Vec::new();
    for n in 0..6 {
        let topic = if n % 2 == 0 { "orders" } else { "refunds" };
        let id = inbox
            .ingest(&tenant, numbered(n).with_topic(topic))
            .await
            .expect("ingest")
            .id;
        if topic == "orders" {
            orders.push(id);
        }
        inbox
            .ingest(&other, numbered(n).with_topic("orders"))
            .await
            .expect("ingest");
    }
    let leased = inbox
        .claim(&tenant, ClaimQuery::new().topic("orders").limit(2))
        .await
        .expect("claim");
    let ids: Vec<_> = leased.iter().map(|l| l.event.id).collect();
    match inbox.capabilities().claim_order {
        ClaimOrder::EarliestFirst => assert_eq!(ids, orders[..2].to_vec()),
        _ => {
            assert_eq!(ids.len(), 2);
            assert!(ids.iter().all(|id| orders.contains(id)), "{ids:?}");
            assert_ne!(ids[0], ids[1]);
        }
    }
    assert!(leased.iter().all(|l| l.event.tenant == tenant));

    for bad in [
        ClaimQuery::new().limit(0),
        ClaimQuery::new().limit(1001),
        ClaimQuery::new().lease(Duration::ZERO),
        ClaimQuery::new().lease(Duration::from_secs(2 * 24 * 3600)),
    ] {
        let r = inbox.claim(&tenant, bad.clone()).await;
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{bad:?}: {r:?}");
    }

    let token = leased[0].token;
    let r = inbox.ack_lease(&other, token).await;
    assert!(
        matches!(r, Err(Error::LeaseLost { .. })),
        "foreign tenant: {r:?}"
    );
    inbox.delete(&tenant, token.event()).await.expect("delete");
    let r = inbox.ack_lease(&tenant, token).await;
    assert!(matches!(r, Err(Error::LeaseLost { .. })), "deleted: {r:?}");
    let parsed: crate::LeaseToken = leased[1].token.to_string().parse().expect("round trip");
    assert_eq!(parsed, leased[1].token);
    assert!("nonsense".parse::<crate::LeaseToken>().is_err());
}

/// An event is claimable from the moment it is ingested by the clock that
/// ingested it, not from its id's timestamp: after the clock steps back, a
/// new event's id still sorts after the earlier ones (so its timestamp is
/// later than now), yet a claim takes it at once. `claimable_at` agrees.
pub async fn events_after_the_clock_steps_back_are_claimable_at_once(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let start = clock.now();
    let before = inbox.ingest(&tenant, numbered(1)).await.expect("ingest").id;
    clock.set(start.saturating_sub(Duration::from_secs(60)));
    let after = inbox.ingest(&tenant, numbered(2)).await.expect("ingest");
    assert!(after.id > before, "ids keep increasing");
    assert!(after.created_at >= start, "the id keeps the later time");
    let filter = crate::Filter::default();
    let next = inbox.claimable_at(&tenant, &filter).await.expect("peek");
    assert!(
        next.is_some_and(|at| at <= clock.now()),
        "claimable now: {next:?} at {}",
        clock.now()
    );
    // Leases longer than the step, so nothing runs out when it is undone.
    let claim = ClaimQuery::new().limit(10).lease(SECOND * 600);
    let claimed = inbox.claim(&tenant, claim.clone()).await.expect("claim");
    assert!(
        claimed.iter().any(|l| l.event.id == after.id),
        "the event ingested after the step back is claimable at once: {claimed:?}"
    );
    clock.set(start);
    let rest = inbox.claim(&tenant, claim).await.expect("claim");
    let mut all: Vec<EventId> = claimed.iter().chain(&rest).map(|l| l.event.id).collect();
    all.sort();
    assert_eq!(all, vec![before, after.id], "each claimed once");
}

/// `claimable_at` tells an idle poller when to claim: `None` with nothing
/// pending, now for a new event, the end of the backoff for a released
/// one, and it follows the filter.
pub async fn claimable_at_says_when_a_claim_finds_work(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let all = crate::Filter::default();
    let next = |filter: crate::Filter| {
        let (inbox, tenant) = (inbox.clone(), tenant.clone());
        async move { inbox.claimable_at(&tenant, &filter).await.expect("peek") }
    };
    assert_eq!(next(all.clone()).await, None, "nothing pending");
    inbox
        .ingest(&tenant, numbered(1).with_topic("a"))
        .await
        .expect("ingest");
    assert_eq!(next(all.clone()).await, Some(clock.now()));
    let other = crate::Filter {
        topic: Some("b".into()),
        ..crate::Filter::default()
    };
    assert_eq!(next(other).await, None, "follows the filter");
    let leased = inbox
        .claim(&tenant, ClaimQuery::new())
        .await
        .expect("claim")
        .pop()
        .expect("one");
    let retry = inbox
        .release(&tenant, leased.token, Some(SECOND * 5))
        .await
        .expect("release");
    let ReleaseOutcome::Retry { at } = retry else {
        panic!("expected a retry, got {retry:?}")
    };
    assert_eq!(next(all.clone()).await, Some(at), "after the backoff");
    assert!(
        inbox
            .claim(&tenant, ClaimQuery::new())
            .await
            .expect("claim")
            .is_empty()
    );
    clock.advance(SECOND * 5);
    assert_eq!(
        inbox
            .claim(&tenant, ClaimQuery::new())
            .await
            .expect("claim")
            .len(),
        1
    );
}

/// `ack_leases` acks many claimed events in one call and answers each as
/// `ack_lease` would: acked, already acked, or `LeaseLost` for a lease that
/// is no longer held; one lost lease does not stop the others. More
/// tokens than `Limits::max_ids` are refused whole.
pub async fn ack_leases_answers_each_lease(harness: &dyn Harness) {
    let (inbox, clock) = open_inbox_with(harness, config()).await;
    let tenant = fresh_tenant();
    let events = (0..4).map(numbered).collect();
    inbox.ingest_batch(&tenant, events).await.expect("ingest");
    let leased = inbox
        .claim(&tenant, ClaimQuery::new().limit(4).lease(SECOND))
        .await
        .expect("claim");
    assert_eq!(leased.len(), 4);
    inbox
        .ack_lease(&tenant, leased[0].token)
        .await
        .expect("acked alone first");
    inbox
        .delete(&tenant, leased[1].event.id)
        .await
        .expect("delete");
    let tokens: Vec<_> = leased.iter().map(|l| l.token).collect();
    let answers = inbox.ack_leases(&tenant, tokens).await.expect("ack_leases");
    assert_eq!(answers.len(), 4);
    assert!(
        matches!(answers[0], Ok(AckOutcome::AlreadyAcked)),
        "{:?}",
        answers[0]
    );
    assert!(
        matches!(answers[1], Err(Error::LeaseLost { .. })),
        "deleted: {:?}",
        answers[1]
    );
    for answer in &answers[2..] {
        assert!(matches!(answer, Ok(AckOutcome::Acked)), "{answer:?}");
    }
    assert!(pull_all(&inbox, &tenant, PullQuery::new()).await.is_empty());
    // Leases that ran out and were claimed again are lost to this holder.
    inbox.ingest(&tenant, numbered(9)).await.expect("ingest");
    let first = inbox
        .claim(&tenant, ClaimQuery::new().lease(SECOND))
        .await
        .expect("claim")
        .remove(0);
    clock.advance(SECOND * 5);
    inbox
        .claim(&tenant, ClaimQuery::new())
        .await
        .expect("claimed again")
        .remove(0);
    let answers = inbox
        .ack_leases(&tenant, vec![first.token])
        .await
        .expect("ack_leases");
    assert!(
        matches!(answers[0], Err(Error::LeaseLost { .. })),
        "{answers:?}"
    );
    let r = inbox.ack_leases(&tenant, vec![first.token; 1001]).await;
    assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
}
