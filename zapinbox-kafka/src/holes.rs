//! Records that arrive ahead of a gap in their partition.
//!
//! A partition written without transactions has no gaps in its offsets,
//! yet a broker may let a consumer fetch a record before an earlier one is
//! readable: tansu gives a batch its offset before it stores the batch, and
//! a fetch in between returns the batches after it. An instance applying
//! the later record first decides differently from the others (two racing
//! ingests of one key each stored an event). So a record ahead of its lane
//! is not applied: the consumer goes back to the missing offset and fetches
//! again, until the gap fills or [`PATIENCE`] passes. A gap still there by
//! then is taken for one the log really has (a transaction marker of some
//! other writer) and skipped; should its record come after all, this
//! instance does not apply it (its writer here hears so), though an
//! instance replaying the log later would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::log::At;

/// Longest a lane waits for a missing offset before it goes on without it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// The lanes waiting for a missing offset, and since when.
#[derive(Default)]
pub(crate) struct Holes {
    waiting: HashMap<At, (i64, Instant)>,
}

impl Holes {
    /// A record of lane `at` came while offset `missing` has not: whether
    /// to wait for it still (fetching again from it), rather than go on
    /// without it.
    pub(crate) fn wait_for(&mut self, at: &At, missing: i64, now: Instant) -> bool {
        let (waited_for, since) = self.waiting.entry(at.clone()).or_insert((missing, now));
        if *waited_for != missing {
            (*waited_for, *since) = (missing, now);
        }
        if now.duration_since(*since) < PATIENCE {
            return true;
        }
        self.waiting.remove(at);
        false
    }

    /// Lane `at` applied the record it waited for, if it waited.
    pub(crate) fn filled(&mut self, at: &At) {
        if !self.waiting.is_empty() {
            self.waiting.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(topic: &str) -> At {
        At {
            topic: topic.to_owned(),
            partition: 0,
        }
    }

    #[test]
    fn a_lane_waits_for_its_missing_offset_until_patience_runs_out() {
        let (mut holes, start) = (Holes::default(), Instant::now());
        assert!(holes.wait_for(&lane("a"), 5, start));
        assert!(holes.wait_for(&lane("a"), 5, start + PATIENCE / 2));
        // Another lane's wait is its own.
        assert!(holes.wait_for(&lane("b"), 1, start + PATIENCE));
        assert!(!holes.wait_for(&lane("a"), 5, start + PATIENCE));
        // Going on without it ends the wait: a later gap waits in full.
        assert!(holes.wait_for(&lane("a"), 9, start + PATIENCE));
    }

    #[test]
    fn a_filled_gap_or_a_new_one_starts_the_wait_again() {
        let (mut holes, start) = (Holes::default(), Instant::now());
        assert!(holes.wait_for(&lane("a"), 5, start));
        holes.filled(&lane("a"));
        assert!(holes.wait_for(&lane("a"), 5, start + PATIENCE));
        assert!(holes.wait_for(&lane("a"), 7, start + 2 * PATIENCE));
        assert!(!holes.wait_for(&lane("a"), 7, start + 3 * PATIENCE));
    }
}
