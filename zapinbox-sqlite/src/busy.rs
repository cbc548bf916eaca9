//! Fair turns at the write lock between processes sharing one file.
//!
//! SQLite's own busy timeout backs off to 100 ms between tries, and a
//! process that commits every millisecond takes the lock again before a
//! waiter looks: the waiter was shut out for seconds at a time. Here a
//! waiting writer looks again every 0.1 to 0.6 ms, at random, and says that
//! it waits by holding a shared lock on a side file (`<db>-writers`) until
//! its transaction has begun; a writer that has just committed checks that
//! file and, while someone waits, holds back its next transaction (for at
//! most [`MOST_YIELD`]) so that the waiter gets its turn. Waiting until the
//! waiter has the lock, rather than for a fixed moment, keeps turns fair
//! when the machine is so loaded that a waiter is not scheduled in time.
//! A waiter that did not begin within [`MOST_YIELD`] (a stopped process)
//! gets only a short pause per commit until it does, so that it cannot
//! slow the others to one commit per [`MOST_YIELD`]. Within one process,
//! only one waiting writer of a database looks at a time (see
//! [`crate::poller`]).

use std::cell::RefCell;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use zapinbox_core::{Error, Result};

use crate::poller::Poller;

/// Longest a writer that has just committed holds back for a waiting one:
/// far below the stalls fairness is for, far above a scheduling delay.
const MOST_YIELD: Duration = Duration::from_millis(20);

/// How often a writer holding back looks whether the waiter has its turn.
const LOOK_EVERY: Duration = Duration::from_micros(100);

/// The pause per commit while a waiter let [`MOST_YIELD`] pass: longer than
/// a waiter's longest pause between tries.
const SHORT_YIELD: Duration = Duration::from_micros(700);

/// Longest a waiting writer sleeps for its process's poller of the same
/// database before it tries once itself (see [`crate::poller`]).
const NEXT_POLLER_WAIT: Duration = Duration::from_millis(5);

/// How often a connection waiting to create a database alone looks
/// whether another made it already.
const LOOK_FOR_WAL_EVERY: Duration = Duration::from_millis(20);

/// The side file through which writers of one database see each other
/// waiting.
pub(crate) struct Waiters {
    file: File,
    /// Which of this process's writers of the database polls now.
    poller: Arc<Poller>,
}

impl Waiters {
    /// Opens (creating) the side file of the database at `db`.
    pub(crate) fn open(db: &Path) -> Result<Waiters> {
        let mut path = db.as_os_str().to_owned();
        path.push("-writers");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::permanent(format!("cannot open {path:?}: {e}")))?;
        let poller = Poller::of(Path::new(&path));
        Ok(Waiters { file, poller })
    }

    /// Unless the database at `db` is in WAL mode, waits until `deadline`
    /// to be the only connection of any process opening it, and stays so
    /// until the answer is dropped. A file not yet in WAL mode is locked
    /// the rollback-journal way, where a reader holds off a commit and a
    /// commit every new reader: dozens of connections creating one file
    /// at once kept each other out for whole busy timeouts.
    pub(crate) fn open_alone(
        &self,
        db: &Path,
        deadline: Instant,
    ) -> Result<Option<OpeningAlone<'_>>> {
        let mut looked: Option<Instant> = None;
        loop {
            // Once another connection made it a WAL file, waiting writers
            // hold the side file too: nothing is left to wait for. Looking
            // reads the file, so waiters look only now and then.
            if looked.is_none_or(|at| at.elapsed() >= LOOK_FOR_WAL_EVERY) {
                looked = Some(Instant::now());
                let patience = deadline.saturating_duration_since(Instant::now());
                if crate::connection::is_wal_file(db, patience) {
                    return Ok(None);
                }
            }
            match self.file.try_lock() {
                Ok(()) => return Ok(Some(OpeningAlone(&self.file))),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    let pause = Duration::from_micros(rand::random_range(500..2_000));
                    std::thread::sleep(pause);
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::transient(
                        "another connection was still creating the database when the busy timeout passed",
                    ));
                }
                // A file system without locks: open as SQLite alone would.
                Err(TryLockError::Error(e)) => {
                    tracing::debug!(error = %e, "cannot lock the writers' side file");
                    return Ok(None);
                }
            }
        }
    }

    /// Whether another writer is waiting for the lock now.
    fn someone_waits(&self) -> bool {
        match self.file.try_lock() {
            Ok(()) => {
                let _ = self.file.unlock();
                false
            }
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(_)) => false,
        }
    }
}

/// Held while this connection opens a database alone (see
/// [`Waiters::open_alone`]).
pub(crate) struct OpeningAlone<'a>(&'a File);

impl Drop for OpeningAlone<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The busy state of the writer thread that owns a write connection.
struct Turn {
    timeout: Duration,
    waiters: Waiters,
    waiting_since: Option<Instant>,
    /// Whether this writer holds the shared lock that says it waits.
    signalled: bool,
    /// Whether this writer is its process's poller for the database.
    polling: bool,
    /// Whether a waiter let the last full hold-back pass without beginning.
    waiter_stuck: bool,
    /// The longest hold-back: [`MOST_YIELD`] (tests set another).
    most_yield: Duration,
}

impl Drop for Turn {
    fn drop(&mut self) {
        // However its wait ended: the next writer of this process polls.
        if self.polling {
            self.waiters.poller.give_back();
        }
    }
}

thread_local! {
    static TURN: RefCell<Option<Turn>> = const { RefCell::new(None) };
}

/// Makes `conn` wait for the write lock in fair turns, on this thread,
/// for at most `timeout`; `waiters` is its database's side file.
pub(crate) fn install(conn: &Connection, timeout: Duration, waiters: Waiters) -> Result<()> {
    set_turn(timeout, waiters);
    conn.busy_handler(Some(on_busy))
        .map_err(crate::error::storage)
}

fn set_turn(timeout: Duration, waiters: Waiters) {
    TURN.with(|turn| {
        *turn.borrow_mut() = Some(Turn {
            timeout,
            waiters,
            waiting_since: None,
            signalled: false,
            polling: false,
            waiter_stuck: false,
            most_yield: MOST_YIELD,
        });
    });
}

/// Fair turns for connections used on this (borrowed) thread until it is
/// dropped: for opening and migrating, before the writer thread owns the
/// connection. A connection waits in them once given `on_busy` (see
/// [`wait_as_this_thread`]).
pub(crate) struct TurnsForNow {
    /// Thread-local state: the guard stays on the thread that set it.
    _here: std::marker::PhantomData<*const ()>,
}

impl TurnsForNow {
    /// Gives this thread fair turns with `timeout` on `waiters`' database.
    pub(crate) fn begin(timeout: Duration, waiters: Waiters) -> TurnsForNow {
        set_turn(timeout, waiters);
        TurnsForNow {
            _here: std::marker::PhantomData,
        }
    }
}

impl Drop for TurnsForNow {
    fn drop(&mut self) {
        done_waiting();
        TURN.with(|turn| turn.borrow_mut().take());
    }
}

/// The timeout of the fair busy handler on this thread, if one is
/// installed (`PRAGMA busy_timeout` reads 0 once a handler replaces it).
pub(crate) fn timeout_here() -> Option<Duration> {
    TURN.with(|turn| turn.borrow().as_ref().map(|t| t.timeout))
}

/// SQLite's call when the lock is taken: `true` to try again.
fn on_busy(tries: i32) -> bool {
    TURN.with(|turn| {
        let mut turn = turn.borrow_mut();
        let Some(turn) = turn.as_mut() else {
            return false;
        };
        // SQLite counts from 0 at the start of each wait.
        if tries == 0 {
            turn.waiting_since = Some(Instant::now());
        }
        let since = *turn.waiting_since.get_or_insert_with(Instant::now);
        let left = turn.timeout.saturating_sub(since.elapsed());
        if left.is_zero() {
            return false;
        }
        if !turn.signalled {
            // Says "waiting" for as long as the shared lock is held; the
            // holder's momentary exclusive check may refuse it once.
            turn.signalled = turn.waiters.file.try_lock_shared().is_ok();
        }
        if turn.polling {
            let pause = Duration::from_micros(rand::random_range(100..600));
            std::thread::sleep(pause);
        } else {
            // Sleeps until it is its process's poller of the database, but
            // not for long: a writer may wait for a lock while it holds
            // another (a commit of a file not yet in WAL mode) that the
            // poller needs. Either way, it tries again now.
            turn.polling = turn.waiters.poller.take(left.min(NEXT_POLLER_WAIT));
        }
        true
    })
}

/// Begins an immediate transaction on `conn`, waiting in fair turns if this
/// thread has them, and then says this writer no longer waits.
pub(crate) fn begin_immediate(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate);
    done_waiting();
    tx.map_err(crate::error::storage)
}

/// Called once a transaction began (or failed to): no longer waiting.
pub(crate) fn done_waiting() {
    TURN.with(|turn| {
        if let Some(turn) = turn.borrow_mut().as_mut() {
            turn.waiting_since = None;
            if std::mem::take(&mut turn.signalled) {
                let _ = turn.waiters.file.unlock();
            }
            if std::mem::take(&mut turn.polling) {
                turn.waiters.poller.give_back();
            }
        }
    });
}

/// Makes `conn` wait for locks as this thread's connections do: in fair
/// turns if the thread has them, else SQLite's own way for `timeout`.
pub(crate) fn wait_as_this_thread(conn: &Connection, timeout: Duration) -> Result<()> {
    if timeout_here().is_some() {
        conn.busy_handler(Some(on_busy))
    } else {
        conn.busy_timeout(timeout)
    }
    .map_err(crate::error::storage)
}

/// What [`give_way`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GaveWay {
    /// Nobody waited (or this thread has no fair turns).
    NoOneWaited,
    /// Held back until the waiter's transaction began.
    WaiterBegan,
    /// Held back for [`MOST_YIELD`], and the waiter did not begin.
    WaiterStuck,
    /// Paused [`SHORT_YIELD`] for a waiter that was stuck before.
    ShortPause,
}

/// Called after a batch, outside any transaction: while another writer
/// waits for its turn, holds back (at most [`MOST_YIELD`]) until that
/// writer's transaction has begun.
pub(crate) fn give_way() -> GaveWay {
    TURN.with(|turn| {
        let mut turn = turn.borrow_mut();
        let Some(turn) = turn.as_mut() else {
            return GaveWay::NoOneWaited;
        };
        if !turn.waiters.someone_waits() {
            turn.waiter_stuck = false;
            return GaveWay::NoOneWaited;
        }
        if turn.waiter_stuck {
            std::thread::sleep(SHORT_YIELD);
            return GaveWay::ShortPause;
        }
        let since = Instant::now();
        while since.elapsed() < turn.most_yield {
            std::thread::sleep(LOOK_EVERY);
            if !turn.waiters.someone_waits() {
                return GaveWay::WaiterBegan;
            }
        }
        turn.waiter_stuck = true;
        GaveWay::WaiterStuck
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer of another "process" (a file description of its own) that
    /// says it waits, as `on_busy` does.
    fn waiter(db: &Path) -> Waiters {
        let waiter = Waiters::open(db).expect("side file");
        waiter.file.try_lock_shared().expect("say it waits");
        waiter
    }

    /// Fair turns on this thread for a connection; the side file's
    /// database (in the returned directory).
    fn fair_turns() -> (tempfile::TempDir, std::path::PathBuf, TurnsForNow) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("inbox.db");
        let turns = TurnsForNow::begin(
            Duration::from_secs(5),
            Waiters::open(&db).expect("side file"),
        );
        (dir, db, turns)
    }

    #[test]
    fn a_writer_holds_back_until_the_waiter_begins() {
        let (_dir, db, _turns) = fair_turns();
        // However late the waiter's thread runs on a loaded machine.
        TURN.with(|turn| {
            if let Some(turn) = turn.borrow_mut().as_mut() {
                turn.most_yield = Duration::from_secs(60);
            }
        });
        assert_eq!(give_way(), GaveWay::NoOneWaited);
        let waiting = waiter(&db);
        let begins = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2));
            // Its transaction began: it lets go.
            drop(waiting);
        });
        assert_eq!(give_way(), GaveWay::WaiterBegan);
        begins.join().expect("waiter");
    }

    #[test]
    fn a_stuck_waiter_gets_one_full_hold_back_then_short_pauses() {
        let (_dir, db, _turns) = fair_turns();
        let stuck = waiter(&db);
        assert_eq!(give_way(), GaveWay::WaiterStuck);
        assert_eq!(give_way(), GaveWay::ShortPause);
        assert_eq!(give_way(), GaveWay::ShortPause);
        drop(stuck);
        assert_eq!(give_way(), GaveWay::NoOneWaited);
        // A new wait is held back for in full again.
        let _stuck = waiter(&db);
        assert_eq!(give_way(), GaveWay::WaiterStuck);
    }
}
