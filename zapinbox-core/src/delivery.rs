//! The delivery state machine every backend applies: claim, extend,
//! release, ack, dead-letter, redrive. Pure functions of the stored state,
//! `now` and the retry policy, so every backend (and a replay of a log)
//! decides the same way.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    AckOutcome, Error, EventId, EventStatus, ReleaseOutcome, Result, RetryPolicy, Timestamp,
};

/// The part of a stored event that delivery changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Pending, acked or dead-lettered.
    pub status: EventStatus,
    /// Claims so far.
    pub attempts: u32,
    /// When the event may next be claimed.
    pub visible_at: Timestamp,
    /// The current lease: its nonce and expiry.
    pub lease: Option<(u64, Timestamp)>,
    /// When it was acked.
    pub acked_at: Option<Timestamp>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            status: EventStatus::Pending,
            attempts: 0,
            visible_at: Timestamp::EPOCH,
            lease: None,
            acked_at: None,
        }
    }
}

/// What a claim scan does with one candidate event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimStep {
    /// Not claimable now (leased, waiting out a backoff, or not pending).
    Skip,
    /// Its last allowed attempt ran out: dead-letter it instead.
    DeadLetter,
    /// Claim it.
    Claim,
}

impl Delivery {
    /// A new pending event, claimable from `at`: when it was ingested, by
    /// the clock of the backend that stored it (not its id's timestamp,
    /// which runs ahead after the clock steps back).
    pub fn available_from(at: Timestamp) -> Self {
        Delivery {
            visible_at: at,
            ..Delivery::default()
        }
    }
    /// What a claim at `now` does with this event.
    pub fn claim_step(&self, now: Timestamp, policy: &RetryPolicy) -> ClaimStep {
        if self.status != EventStatus::Pending || self.visible_at > now {
            ClaimStep::Skip
        } else if self.attempts >= policy.max_attempts {
            ClaimStep::DeadLetter
        } else {
            ClaimStep::Claim
        }
    }

    /// The state as of `now`: an event whose last allowed lease has run out
    /// is dead-lettered from that moment, whether or not anything has
    /// written that down yet. Every read and every change starts here, so
    /// the answer never depends on which claim happened to look at the
    /// event (backends write it down lazily, in claims and sweeps).
    pub fn settle(self, now: Timestamp, policy: &RetryPolicy) -> Delivery {
        if self.claim_step(now, policy) == ClaimStep::DeadLetter {
            let mut dead = self;
            dead.dead_letter();
            dead
        } else {
            self
        }
    }

    /// Claims the event: a new attempt under lease `nonce` until
    /// `now + lease`. If the lease runs out, the event waits the policy's
    /// backoff after that before it can be claimed again; after the last
    /// allowed attempt it is dead-lettered as soon as the lease runs out.
    /// Returns the attempt number and the lease expiry.
    pub fn claim(
        &mut self,
        now: Timestamp,
        lease: Duration,
        nonce: u64,
        policy: &RetryPolicy,
        random: f64,
    ) -> (u32, Timestamp) {
        self.attempts = self.attempts.saturating_add(1);
        let expires = now.saturating_add(lease);
        self.lease = Some((nonce, expires));
        self.visible_at = self.after_lease(expires, policy, random);
        (self.attempts, expires)
    }

    /// Checks that the lease `nonce` is still this event's current lease.
    pub fn check_lease(&self, id: EventId, nonce: u64) -> Result<()> {
        match self.lease {
            Some((current, _)) if current == nonce && self.status == EventStatus::Pending => Ok(()),
            _ => Err(Error::LeaseLost { id }),
        }
    }

    /// Extends the lease to `now + by`; returns the new expiry.
    pub fn extend(
        &mut self,
        id: EventId,
        nonce: u64,
        now: Timestamp,
        by: Duration,
        policy: &RetryPolicy,
        random: f64,
    ) -> Result<Timestamp> {
        self.check_lease(id, nonce)?;
        let expires = now.saturating_add(by);
        self.lease = Some((nonce, expires));
        self.visible_at = self.after_lease(expires, policy, random);
        Ok(expires)
    }

    /// When the event may be claimed again if a lease ending at `expires`
    /// runs out: after the backoff, or at once on the last attempt (it is
    /// then dead-lettered, not retried).
    fn after_lease(&self, expires: Timestamp, policy: &RetryPolicy, random: f64) -> Timestamp {
        if self.attempts >= policy.max_attempts {
            expires
        } else {
            expires.saturating_add(policy.backoff(self.attempts, random))
        }
    }

    /// Ends the lease without an ack: the event is claimable again after
    /// `retry_after` (or the policy's backoff), or dead-lettered if that
    /// was its last attempt.
    pub fn release(
        &mut self,
        id: EventId,
        nonce: u64,
        now: Timestamp,
        retry_after: Option<Duration>,
        policy: &RetryPolicy,
        random: f64,
    ) -> Result<ReleaseOutcome> {
        if let Some(delay) = retry_after {
            crate::check_delay(delay)?;
        }
        self.check_lease(id, nonce)?;
        self.lease = None;
        if self.attempts >= policy.max_attempts {
            self.status = EventStatus::DeadLettered;
            return Ok(ReleaseOutcome::DeadLettered);
        }
        let wait = retry_after.unwrap_or_else(|| policy.backoff(self.attempts, random));
        self.visible_at = now.saturating_add(wait);
        Ok(ReleaseOutcome::Retry {
            at: self.visible_at,
        })
    }

    /// Gives the event back at once without counting the attempt: the
    /// work was not tried (a worker shutting down), so it must not bring
    /// the event closer to the dead letters.
    pub fn requeue(&mut self, id: EventId, nonce: u64, now: Timestamp) -> Result<()> {
        self.check_lease(id, nonce)?;
        self.lease = None;
        self.attempts = self.attempts.saturating_sub(1);
        self.visible_at = now;
        Ok(())
    }

    /// Acks with the lease `nonce`: fine if it is still the current lease
    /// (or the event was acked already), `LeaseLost` otherwise.
    pub fn ack_lease(&mut self, id: EventId, nonce: u64, now: Timestamp) -> Result<AckOutcome> {
        if self.status == EventStatus::Acked {
            return Ok(AckOutcome::AlreadyAcked);
        }
        self.check_lease(id, nonce)?;
        Ok(self.ack(now))
    }

    /// Acks by id: always wins over a lease.
    pub fn ack(&mut self, now: Timestamp) -> AckOutcome {
        if self.status == EventStatus::Acked {
            return AckOutcome::AlreadyAcked;
        }
        self.status = EventStatus::Acked;
        self.lease = None;
        self.acked_at = Some(now);
        AckOutcome::Acked
    }

    /// Sets the event aside after its last attempt.
    pub fn dead_letter(&mut self) {
        self.status = EventStatus::DeadLettered;
        self.lease = None;
    }

    /// Returns a dead letter to the inbox with its attempts reset; false
    /// (and no change) if it is not a dead letter.
    pub fn redrive(&mut self, now: Timestamp) -> bool {
        if self.status != EventStatus::DeadLettered {
            return false;
        }
        *self = Delivery {
            visible_at: now,
            ..Delivery::default()
        };
        true
    }

    /// Whether an acked event has outlived `retention` at `now` and may be
    /// purged. Pending and dead-lettered events never expire.
    pub fn is_expired(&self, now: Timestamp, retention: Duration) -> bool {
        self.status == EventStatus::Acked
            && self
                .acked_at
                .is_some_and(|at| at.saturating_add(retention) <= now)
    }

    /// Whether a worker's lease on the event is running at `now`.
    pub fn is_leased_at(&self, now: Timestamp) -> bool {
        self.status == EventStatus::Pending && self.lease.is_some_and(|(_, expires)| expires > now)
    }

    /// The lease expiry to show on a browsed event: set while a lease is
    /// held by someone (even if it already ran out and nobody claimed since).
    pub fn leased_until(&self) -> Option<Timestamp> {
        match self.status {
            EventStatus::Pending => self.lease.map(|(_, expires)| expires),
            _ => None,
        }
    }
}
