//! Metrics through the `metrics` facade: the host installs a recorder
//! (Prometheus, StatsD, …); without one they cost next to nothing.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `zapinbox_ingest_seconds` | histogram | `backend` | time of one `ingest` or `ingest_batch` call that reached the backend |
//! | `zapinbox_events_total` | counter | `tenant`, `outcome` (`stored`, `duplicate`, `failed`) | events of ingest calls that reached the backend |
//! | `zapinbox_rejections_total` | counter | `reason` (`invalid`, `too_large`, `limit`, `rate_limited`, `quota`, `subscriptions`, `unsupported`) | calls refused before or by the backend for the caller's reason |
//! | `zapinbox_lease_lost_total` | counter | `operation` | `ack_lease`, `extend`, `release` or `requeue` found the lease gone (it expired and may be claimed again) |
//! | `zapinbox_subscription_lag_seconds` | histogram | | from an event's creation to its delivery on a subscription |
//! | `zapinbox_group_commit_requests` | histogram | | requests in one SQLite group commit |
//!
//! `tenant` labels grow with the number of tenants: a host with very many
//! should drop or aggregate that label in its recorder. A lease that
//! simply runs out is seen when its holder next uses it
//! (`zapinbox_lease_lost_total`); the claim that takes the event again
//! counts as a delivery.
//!
//! Tracing: every inbox call is a span (`op`, `tenant`). On SQLite a
//! call's reads run in a `sqlite_read` span on the read thread, its writes
//! in the caller's span inside the writer's `group_commit` span, and
//! maintenance in `sqlite_maintenance`.

use std::time::Duration;

use metrics::{counter, histogram};

use crate::{Error, Ingested, Result, TenantId};

/// One ingest call's time and what became of its events.
pub(crate) fn ingested(
    backend: &'static str,
    tenant: &TenantId,
    took: Duration,
    outcome: std::result::Result<&[Ingested], &Error>,
    events: usize,
) {
    histogram!("zapinbox_ingest_seconds", "backend" => backend).record(took.as_secs_f64());
    let tenant = tenant.as_str().to_owned();
    match outcome {
        Ok(ingested) => {
            let duplicates = ingested.iter().filter(|i| i.duplicate).count() as u64;
            let stored = ingested.len() as u64 - duplicates;
            counter!("zapinbox_events_total", "tenant" => tenant.clone(), "outcome" => "stored")
                .increment(stored);
            counter!("zapinbox_events_total", "tenant" => tenant, "outcome" => "duplicate")
                .increment(duplicates);
        }
        Err(e) => {
            counter!("zapinbox_events_total", "tenant" => tenant, "outcome" => "failed")
                .increment(events as u64);
            refused(e);
        }
    }
}

/// Counts a refusal for the caller's reason (storage failures are not).
pub(crate) fn refused(error: &Error) {
    let reason = match error {
        Error::InvalidInput(_) | Error::IdempotencyConflict { .. } | Error::Decode { .. } => {
            "invalid"
        }
        Error::PayloadTooLarge { .. } => "too_large",
        Error::LimitExceeded { .. } => "limit",
        Error::RateLimited { .. } => "rate_limited",
        Error::QuotaExceeded { .. } => "quota",
        Error::TooManySubscriptions { .. } => "subscriptions",
        Error::Unsupported { .. } => "unsupported",
        Error::Backend { .. } | Error::NotFound { .. } | Error::LeaseLost { .. } => return,
    };
    counter!("zapinbox_rejections_total", "reason" => reason).increment(1);
}

/// Counts a lease found gone by `operation`.
pub(crate) fn lease_outcome<T>(operation: &'static str, outcome: &Result<T>) {
    if let Err(Error::LeaseLost { .. }) = outcome {
        counter!("zapinbox_lease_lost_total", "operation" => operation).increment(1);
    }
}

/// Records how long after its creation an event reached a subscription.
pub(crate) fn subscription_lag(lag: Duration) {
    histogram!("zapinbox_subscription_lag_seconds").record(lag.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use serde_json::json;

    use crate::{Inbox, MemoryBackend, NewEvent, RateLimit, TenantId};

    /// Counter values and histogram sample counts by name and labels.
    fn observed(recorder: &DebuggingRecorder) -> Vec<(String, Vec<String>, u64)> {
        let mut out: Vec<_> = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels = key.labels().map(|l| format!("{}={}", l.key(), l.value()));
                let n = match value {
                    DebugValue::Counter(n) => n,
                    DebugValue::Histogram(samples) => samples.len() as u64,
                    DebugValue::Gauge(_) => 0,
                };
                (key.name().to_owned(), labels.collect(), n)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn ingests_and_refusals_are_counted_by_name_and_label() {
        let recorder = DebuggingRecorder::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let inbox = Inbox::builder(MemoryBackend::new())
                    .rate_limit(RateLimit::per_minute(3))
                    .build();
                let t = TenantId::new("t").expect("tenant");
                let keyed = NewEvent::new(json!({ "n": 1 })).with_idempotency_key("k");
                inbox.ingest(&t, keyed.clone()).await.expect("stored");
                inbox.ingest(&t, keyed).await.expect("duplicate");
                let invalid = inbox.ingest(&t, NewEvent::from_json("[]")).await;
                assert!(invalid.is_err());
                inbox
                    .ingest(&t, NewEvent::new(json!({})))
                    .await
                    .expect("third");
                let limited = inbox.ingest(&t, NewEvent::new(json!({}))).await;
                assert!(limited.is_err());
            })
        });
        let seen = observed(&recorder);
        let find = |name: &str, label: &str| {
            seen.iter()
                .find(|(n, labels, _)| n == name && labels.iter().any(|l| l == label))
                .map(|(_, _, v)| *v)
        };
        assert_eq!(
            find("zapinbox_events_total", "outcome=stored"),
            Some(2),
            "{seen:?}"
        );
        assert_eq!(find("zapinbox_events_total", "outcome=duplicate"), Some(1));
        assert_eq!(find("zapinbox_rejections_total", "reason=invalid"), Some(1));
        assert_eq!(
            find("zapinbox_rejections_total", "reason=rate_limited"),
            Some(1)
        );
        assert_eq!(find("zapinbox_ingest_seconds", "backend=memory"), Some(3));
    }
}
