//! One writer at a time, per database and process, polls for the write
//! lock.
//!
//! A waiting writer asks SQLite for the lock every fraction of a
//! millisecond (see `busy`), and each try rereads the database's first
//! page. Dozens of writers of one file in one process (one inbox opened
//! many times, as the shared-file tests do) polled so often together that
//! they took the processor from the writer holding the lock: commits
//! slowed to a trickle and some waiters saw their whole busy timeout pass.
//! Here the others sleep until the poller has begun its transaction or
//! given up (at most 5 ms at a time, see `busy`). Fairness between
//! processes is unchanged: every waiter still says that it waits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The right to poll for one database's write lock in this process.
#[derive(Default)]
pub(crate) struct Poller {
    taken: Mutex<bool>,
    given_back: Condvar,
}

impl Poller {
    /// The poller of the database whose side file is at `path`, shared by
    /// every writer of this process that names the same file.
    pub(crate) fn of(path: &Path) -> Arc<Poller> {
        static POLLERS: Mutex<Vec<(PathBuf, Weak<Poller>)>> = Mutex::new(Vec::new());
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut pollers = POLLERS.lock().unwrap_or_else(PoisonError::into_inner);
        pollers.retain(|(_, poller)| poller.strong_count() > 0);
        if let Some(poller) = pollers
            .iter()
            .find(|(path, _)| *path == key)
            .and_then(|(_, poller)| poller.upgrade())
        {
            return poller;
        }
        let poller = Arc::new(Poller::default());
        pollers.push((key, Arc::downgrade(&poller)));
        poller
    }

    /// Waits until no other writer polls, then polls: `false` if
    /// `patience` ran out first.
    pub(crate) fn take(&self, patience: Duration) -> bool {
        // A patience too long to add to the clock has no end.
        let deadline = Instant::now().checked_add(patience);
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        while *taken {
            taken = match deadline {
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return false;
                    };
                    self.given_back
                        .wait_timeout(taken, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .given_back
                    .wait(taken)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
        *taken = true;
        true
    }

    /// Stops polling (the transaction began, or the wait gave up) and
    /// wakes the next writer.
    pub(crate) fn give_back(&self) {
        *self.taken.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.given_back.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_of_one_file_share_a_poller_and_others_do_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = dir.path().join("a-writers");
        let b = dir.path().join("b-writers");
        std::fs::write(&a, b"").expect("side file");
        let relative_a = dir.path().join(".").join("a-writers");
        assert!(Arc::ptr_eq(&Poller::of(&a), &Poller::of(&relative_a)));
        assert!(!Arc::ptr_eq(&Poller::of(&a), &Poller::of(&b)));
    }

    #[test]
    fn a_second_writer_sleeps_until_the_first_gives_back() {
        let poller = Arc::new(Poller::default());
        assert!(poller.take(Duration::from_secs(5)));
        // Taken: a wait that ends now gives up at once.
        assert!(!poller.take(Duration::ZERO));
        let second = {
            let poller = Arc::clone(&poller);
            std::thread::spawn(move || poller.take(Duration::MAX))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !second.is_finished(),
            "the second polls only after the first"
        );
        poller.give_back();
        assert!(second.join().expect("second writer"));
    }
}
