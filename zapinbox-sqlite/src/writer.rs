//! The writer thread: owns the one write connection and commits everything
//! queued together (group commit).
//!
//! The queued requests run one after another in a single transaction,
//! which takes in requests that arrive while it runs (up to 1024) and
//! commits once; every caller is answered after that commit. There
//! is no savepoint per request: a savepoint makes SQLite copy every page a
//! request first touches, which cost more than the inserts themselves.
//! Instead a request that fails without having written anything (every
//! validation, conflict or not-found error, by construction of the
//! operations) simply answers its error; one that fails after writing (a
//! storage error, a panic) makes the writer roll the batch back and run
//! the others again without it, at most [`MAX_REPLAYS`] times a batch
//! (plus once after a failed insert of waiting events, below).
//! Either way one request's error never changes another's outcome.
//!
//! Requests that only store new events (ingests) leave their events in
//! the deferred inserts (see `inserts`): they go in as multi-row INSERTs
//! once a chunk's worth waits, before the next request that is not an
//! append, and before COMMIT. A request that fails after leaving events
//! there failed after writing. If inserting them fails, the writer rolls
//! back and runs the batch again once more with each event inserted by
//! its own request, so that the failure is that request's alone.
//!
//! Some errors make SQLite roll back the whole transaction itself
//! (SQLITE_FULL, IOERR, NOMEM, BUSY, INTERRUPT may): the connection is then
//! back in autocommit, every earlier request's writes are gone, and a later
//! request would run, and be durable, on its own. After every failed
//! request the writer checks for this and fails the whole batch. If COMMIT
//! itself fails, every caller in the batch gets that error too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use zapinbox_core::{Clock, Error, Result};

use crate::busy;
use crate::counts::PendingCounts;
use crate::error::storage;
use crate::inserts::DeferredInserts;

/// Most requests committed in one transaction: bounds the time a batch
/// holds the write lock and the latency of its first caller.
const MAX_BATCH: usize = 1024;

/// Requests waiting for the writer before callers wait for room.
const QUEUE: usize = 8192;

/// Most times one batch is rolled back and run again without a request
/// that failed after writing. Such failures are storage errors, which
/// tend to repeat (a full disk): past this, the rest of the batch fails
/// with the last one rather than replay once per request.
const MAX_REPLAYS: usize = 2;

/// A write operation. It may run more than once (after a rollback of its
/// batch), so it reads its inputs and depends only on the database.
type Op<T> = Box<dyn Fn(&WriteConn, &Clock) -> Result<T> + Send>;

/// The write connection, with the pending events its open transaction
/// has counted but not yet written (see `counts`) and the new events it
/// has not yet inserted (see `inserts`).
pub(crate) struct WriteConn {
    conn: Connection,
    /// Written just before each COMMIT, forgotten at each BEGIN.
    pub(crate) pending: PendingCounts,
    /// Inserted before each request that is not an append and before each
    /// COMMIT, forgotten at each BEGIN.
    pub(crate) inserts: DeferredInserts,
}

impl std::ops::Deref for WriteConn {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// One queued request, type-erased so one channel carries them all.
trait Job: Send {
    /// Runs the operation and keeps its result; returns its error, if any,
    /// as the batch would report it.
    fn run(&mut self, conn: &WriteConn, clock: &Clock) -> Option<CommitFailure>;

    /// Whether it only appends events, which may wait in the deferred
    /// inserts: it neither reads nor changes earlier requests' events.
    fn appends(&self) -> bool;

    /// Answers the caller: its own result if its batch committed (or it was
    /// set aside with its own error), the commit's failure otherwise.
    fn answer(self: Box<Self>, commit: Result<(), &CommitFailure>);
}

struct Typed<T> {
    op: Op<T>,
    result: Option<Result<T>>,
    /// The outcome, and the operation back, to be dropped by the waiting
    /// task rather than by this thread (see `Typed::answer`).
    reply: oneshot::Sender<(Result<T>, Op<T>)>,
    /// The caller's span (its inbox call): the operation runs inside it,
    /// within the writer's group-commit span.
    span: tracing::Span,
    appends: bool,
}

impl<T: Send + 'static> Job for Typed<T> {
    fn run(&mut self, conn: &WriteConn, clock: &Clock) -> Option<CommitFailure> {
        // A panicking operation fails its own request, not the writer
        // thread and everyone after it.
        let op = &self.op;
        let _entered = self.span.enter();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(conn, clock)))
            .unwrap_or_else(|_| Err(Error::permanent("a write operation panicked")));
        let failure = result
            .as_ref()
            .err()
            .map(|e| CommitFailure::from_error("a request in the batch", e));
        self.result = Some(result);
        failure
    }

    fn appends(&self) -> bool {
        self.appends
    }

    fn answer(self: Box<Self>, commit: Result<(), &CommitFailure>) {
        let result = match (commit, self.result) {
            (Err(failure), _) => Err(failure.to_error()),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(Error::permanent("the write was never run")),
        };
        // The operation (with what it captured: events, strings) goes back
        // to be dropped by the waiting task, on the runtime's threads that
        // allocated it. Freed here, blocks of their allocator arenas took
        // those arenas' locks while they allocated in them: with 64
        // producers, waking each other on those locks took a sixth of this
        // thread's time in a profile. The caller may have given up
        // waiting (the operation then drops here); the outcome stands
        // anyway.
        let _ = self.reply.send((result, self.op));
    }
}

/// Why a whole batch failed, shared by every caller in it.
struct CommitFailure {
    retryable: bool,
    message: String,
}

impl CommitFailure {
    fn from_error(stage: &str, e: &Error) -> Self {
        CommitFailure {
            retryable: e.is_retryable(),
            message: format!("{stage} failed: {e}"),
        }
    }

    fn rolled_back_by_sqlite(self) -> Self {
        CommitFailure {
            message: format!("SQLite rolled back the whole batch after {}", self.message),
            ..self
        }
    }

    fn replayed_too_often(self, failures: usize) -> Self {
        CommitFailure {
            message: format!(
                "the batch failed after {failures} requests failed in it; the last: {}",
                self.message
            ),
            ..self
        }
    }

    fn to_error(&self) -> Error {
        Error::Backend {
            retryable: self.retryable,
            source: self.message.clone().into(),
        }
    }
}

enum Message {
    /// Runs in the next group commit.
    Job(Box<dyn Job>),
    /// Runs alone, outside any transaction (checkpoints, vacuum).
    Direct(Box<dyn Job>),
    Close,
}

/// A handle on the writer thread.
pub(crate) struct Writer {
    queue: mpsc::Sender<Message>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

/// What the writer thread has done, readable from any thread, and the
/// faults tests asked it to meet.
#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    replays: AtomicU64,
    faults: std::sync::Mutex<std::collections::VecDeque<zapinbox_core::Fault>>,
    /// Whether `faults` may hold one: read on every batch without a lock.
    faults_armed: std::sync::atomic::AtomicBool,
}

impl Counters {
    /// The error SQLite would give for the next injected fault, if any.
    fn next_fault(&self) -> Option<rusqlite::Error> {
        if !self.faults_armed.load(Ordering::Acquire) {
            return None;
        }
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let fault = faults.pop_front();
        self.faults_armed
            .store(!faults.is_empty(), Ordering::Release);
        drop(faults);
        let fault = fault?;
        let code = match fault {
            // SQLite's only "try later" is busy.
            zapinbox_core::Fault::Transient | zapinbox_core::Fault::Throttled => {
                rusqlite::ffi::SQLITE_BUSY
            }
            _ => rusqlite::ffi::SQLITE_CORRUPT,
        };
        Some(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            Some(format!("injected {fault:?} fault")),
        ))
    }
}

impl Writer {
    /// Starts the writer thread on `conn`; with `busy`, it waits for other
    /// processes' transactions in fair turns for at most that long (see
    /// `busy`).
    pub(crate) fn spawn(
        conn: Connection,
        clock: Clock,
        busy: Option<(Duration, busy::Waiters)>,
    ) -> Result<Arc<Writer>> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let shared = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("zapinbox-sqlite-writer".into())
            .spawn(move || {
                if let Some((timeout, waiters)) = busy
                    && let Err(e) = busy::install(&conn, timeout, waiters)
                {
                    tracing::warn!(error = %e, "fair busy handling not installed");
                    // SQLite's own waiting, then.
                    let _ = conn.busy_timeout(timeout);
                }
                let conn = WriteConn {
                    conn,
                    pending: PendingCounts::default(),
                    inserts: DeferredInserts::default(),
                };
                run(conn, clock, rx, &shared)
            })
            .map_err(|e| Error::permanent(format!("cannot start the writer thread: {e}")))?;
        Ok(Arc::new(Writer {
            queue,
            thread: std::sync::Mutex::new(Some(thread)),
            counters,
        }))
    }

    /// Runs `op` in the next group commit; answers after that commit.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        op: impl Fn(&WriteConn, &Clock) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(op, Message::Job, false).await
    }

    /// Runs `op`, which stores new events and reads or changes no others,
    /// in the next group commit: the events it leaves in the deferred
    /// inserts may wait there for those of the requests after it.
    pub(crate) async fn append<T: Send + 'static>(
        &self,
        op: impl Fn(&WriteConn, &Clock) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(op, Message::Job, true).await
    }

    /// Runs `op` alone between batches, outside any transaction: for what
    /// SQLite refuses inside one, such as a WAL checkpoint.
    pub(crate) async fn direct<T: Send + 'static>(
        &self,
        op: impl Fn(&WriteConn, &Clock) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(op, Message::Direct, false).await
    }

    async fn submit<T: Send + 'static>(
        &self,
        op: impl Fn(&WriteConn, &Clock) -> Result<T> + Send + 'static,
        kind: fn(Box<dyn Job>) -> Message,
        appends: bool,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed {
            op: Box::new(op),
            result: None,
            reply,
            span: tracing::Span::current(),
            appends,
        });
        self.queue.send(kind(job)).await.map_err(|_| closed())?;
        let (result, _op) = answer.await.map_err(|_| closed())?;
        result
    }

    /// Whether the writer stopped taking requests.
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Makes the next transaction fail as SQLite would on `fault`, before
    /// it writes anything.
    pub(crate) fn inject(&self, fault: zapinbox_core::Fault) {
        let mut faults = self
            .counters
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        faults.push_back(fault);
        self.counters.faults_armed.store(true, Ordering::Release);
    }

    /// Transactions committed so far.
    pub(crate) fn commits(&self) -> u64 {
        self.counters.commits.load(Ordering::Relaxed)
    }

    /// Batches rolled back and run again: without a request that failed
    /// after writing, or with each event inserted on its own after an
    /// insert of waiting events failed.
    pub(crate) fn replays(&self) -> u64 {
        self.counters.replays.load(Ordering::Relaxed)
    }

    /// Stops the thread once everything queued before this call is
    /// committed, and waits for it. Later requests fail with "closed".
    pub(crate) async fn close(&self) -> Result<()> {
        let _ = self.queue.send(Message::Close).await;
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| Error::permanent(format!("writer thread: {e}")))?
                .map_err(|_| Error::permanent("writer thread panicked"))?;
        }
        Ok(())
    }
}

pub(crate) fn closed() -> Error {
    Error::permanent("the SQLite inbox is closed")
}

fn run(mut conn: WriteConn, clock: Clock, mut rx: mpsc::Receiver<Message>, counters: &Counters) {
    let mut last_batch = 1;
    // One buffer for every batch: growing a new one to each batch's size
    // cost several reallocations a batch.
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        let next = if last_batch > 1 {
            spin_recv(&mut rx)
        } else {
            rx.blocking_recv()
        };
        let first = match next {
            Some(Message::Job(job)) => job,
            Some(Message::Direct(job)) => {
                run_direct(&conn, &clock, job);
                continue;
            }
            Some(Message::Close) | None => break,
        };
        let mut gather = Gather {
            rx: &mut rx,
            last_batch,
            deadline: None,
            closing: false,
            direct: Vec::new(),
        };
        jobs.push(first);
        last_batch = commit_batch(&mut conn, &clock, &mut jobs, &mut gather, counters);
        // Not while a failed ROLLBACK left the write lock held.
        if conn.is_autocommit() {
            let gave_way = busy::give_way();
            tracing::trace!(?gave_way, "after the batch");
        }
        for job in std::mem::take(&mut gather.direct) {
            run_direct(&conn, &clock, job);
        }
        if gather.closing {
            break;
        }
    }
    rx.close();
    // Dropping what is still queued answers those callers with "closed".
    while rx.try_recv().is_ok() {}
}

/// The next message, polled for at most [`GATHER_WINDOW`] before
/// sleeping: after a batch of several callers, they are about to come
/// back, and waking a sleeping writer thread added tens of microseconds
/// to every commit of 64 producers (from their answers to the first new
/// request: 106 µs sleeping, 80 µs polling, on average).
fn spin_recv(rx: &mut mpsc::Receiver<Message>) -> Option<Message> {
    let deadline = Instant::now() + GATHER_WINDOW;
    loop {
        match rx.try_recv() {
            Ok(m) => return Some(m),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if Instant::now() >= deadline => return rx.blocking_recv(),
            Err(TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
}

/// Longest wait for the callers of the previous batch to come back.
const GATHER_WINDOW: Duration = Duration::from_micros(250);

/// Brings queued requests into the open batch while it runs.
///
/// When fewer requests have come than the last batch held, the callers
/// just answered are most likely about to send their next ones: the batch
/// waits for them a moment (at most [`GATHER_WINDOW`]), running each as it
/// arrives, so they share this commit's fsync instead of needing another.
struct Gather<'a> {
    rx: &'a mut mpsc::Receiver<Message>,
    last_batch: usize,
    deadline: Option<Instant>,
    closing: bool,
    /// Direct jobs that came during the batch: they run after it.
    direct: Vec<Box<dyn Job>>,
}

/// Runs a direct job outside any transaction and answers it.
fn run_direct(conn: &WriteConn, clock: &Clock, mut job: Box<dyn Job>) {
    end_open_transaction(conn);
    job.run(conn, clock);
    // It may have waited for the write lock (vacuum, optimize).
    busy::done_waiting();
    job.answer(Ok(()));
}

impl Gather<'_> {
    /// Appends what is queued to `jobs`; false when the batch should commit.
    fn more(&mut self, jobs: &mut Vec<Box<dyn Job>>) -> bool {
        let before = jobs.len();
        while jobs.len() < MAX_BATCH && !self.closing {
            match self.rx.try_recv() {
                Ok(Message::Job(job)) => jobs.push(job),
                Ok(Message::Direct(job)) => self.direct.push(job),
                Ok(Message::Close) => self.closing = true,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) if jobs.len() > before => break,
                Err(TryRecvError::Empty) => {
                    if jobs.len() >= self.last_batch {
                        break;
                    }
                    let deadline = *self
                        .deadline
                        .get_or_insert_with(|| Instant::now() + GATHER_WINDOW);
                    if Instant::now() >= deadline {
                        break;
                    }
                    std::thread::yield_now();
                }
            }
        }
        jobs.len() > before
    }
}

/// Runs a batch in one transaction, taking in requests as they come,
/// counts the commit, then answers each, leaving `jobs` empty. Returns how
/// many requests the batch held.
fn commit_batch(
    conn: &mut WriteConn,
    clock: &Clock,
    jobs: &mut Vec<Box<dyn Job>>,
    gather: &mut Gather<'_>,
    counters: &Counters,
) -> usize {
    let _span = tracing::trace_span!("group_commit").entered();
    let mut set_aside = Vec::new();
    conn.inserts.set_on(true);
    let outcome = loop {
        if let Some(e) = counters.next_fault() {
            break Err(CommitFailure::from_error("BEGIN", &storage(e)));
        }
        match run_batch(conn, clock, jobs, gather) {
            Ok(()) => {
                break conn
                    .pending
                    .write(conn)
                    .map_err(|e| CommitFailure::from_error("counting pending events", &e))
                    .and_then(|()| {
                        exec(conn, "COMMIT").map_err(|e| CommitFailure::from_error("COMMIT", &e))
                    });
            }
            // Rolled back: that request answers its own error, the rest
            // run again, unless failures keep coming.
            Err(Stop::FailedAfterWriting(failed, failure)) => {
                set_aside.push(jobs.remove(failed));
                if set_aside.len() > MAX_REPLAYS {
                    break Err(failure.replayed_too_often(set_aside.len()));
                }
                counters.replays.fetch_add(1, Ordering::Relaxed);
            }
            // Rolled back: the batch runs again with each event inserted
            // by its own request, so that the one at fault fails alone.
            Err(Stop::FlushFailed(failure)) => {
                // Never twice: with waiting off, each insert is its
                // request's own and a failure there is that request's.
                if !conn.inserts.is_on() {
                    break Err(failure);
                }
                conn.inserts.set_on(false);
                counters.replays.fetch_add(1, Ordering::Relaxed);
            }
            Err(Stop::Failed(failure)) => break Err(failure),
        }
    };
    if outcome.is_err() {
        end_open_transaction(conn);
    }
    let committed = outcome.is_ok();
    if committed {
        // Counted before anyone is answered: a caller that sees its answer
        // sees the count too.
        counters.commits.fetch_add(1, Ordering::Relaxed);
    }
    let held = jobs.len() + set_aside.len();
    metrics::histogram!("zapinbox_group_commit_requests").record(held as f64);
    tracing::trace!(
        requests = held,
        set_aside = set_aside.len(),
        committed,
        "group commit"
    );
    for job in set_aside {
        job.answer(Ok(()));
    }
    for job in jobs.drain(..) {
        job.answer(outcome.as_ref().map(|_| ()));
    }
    held
}

/// Why a batch's transaction stopped before COMMIT.
enum Stop {
    /// The job at this index failed after writing; the transaction was
    /// rolled back.
    FailedAfterWriting(usize, CommitFailure),
    /// Inserting the deferred events failed; the transaction was rolled
    /// back.
    FlushFailed(CommitFailure),
    /// The whole batch failed: every caller gets this.
    Failed(CommitFailure),
}

/// Opens a transaction and runs `jobs` in it, with what `gather` brings in
/// meanwhile, leaving it open with every job's changes; or says why it
/// stopped.
fn run_batch(
    conn: &mut WriteConn,
    clock: &Clock,
    jobs: &mut Vec<Box<dyn Job>>,
    gather: &mut Gather<'_>,
) -> std::result::Result<(), Stop> {
    let failed = |stage: &str, e: Error| Stop::Failed(CommitFailure::from_error(stage, &e));
    end_open_transaction(conn);
    let begun = exec(conn, "BEGIN IMMEDIATE");
    busy::done_waiting();
    conn.pending.forget();
    conn.inserts.forget();
    begun.map_err(|e| failed("BEGIN", e))?;
    let mut next = 0;
    loop {
        while let Some(job) = jobs.get_mut(next) {
            if !job.appends() {
                flush(conn)?;
            }
            let before = conn.total_changes();
            let waiting = conn.inserts.waiting();
            let failure = job.run(conn, clock);
            if conn.is_autocommit() {
                // SQLite rolled the transaction back itself: what the batch
                // wrote so far is gone, and what comes next would run, and
                // last, on its own.
                let failure = failure.unwrap_or_else(|| CommitFailure {
                    retryable: false,
                    message: "a request ended the transaction".into(),
                });
                return Err(Stop::Failed(failure.rolled_back_by_sqlite()));
            }
            // Events it left waiting count as written: so do the pending
            // counts it kept in memory for them.
            let wrote = conn.total_changes() != before || conn.inserts.waiting() != waiting;
            if let Some(failure) = failure
                && wrote
            {
                exec(conn, "ROLLBACK").map_err(|e| failed("ROLLBACK", e))?;
                return Err(Stop::FailedAfterWriting(next, failure));
            }
            if conn.inserts.has_chunk() {
                flush(conn)?;
            }
            next += 1;
        }
        if !gather.more(jobs) {
            return flush(conn);
        }
    }
}

/// Inserts the events waiting in the open transaction; rolls it back if
/// that fails.
fn flush(conn: &WriteConn) -> std::result::Result<(), Stop> {
    let Err(e) = conn.inserts.flush(conn) else {
        return Ok(());
    };
    let failure = CommitFailure::from_error("inserting the batch's new events", &e);
    if conn.is_autocommit() {
        return Err(Stop::Failed(failure.rolled_back_by_sqlite()));
    }
    exec(conn, "ROLLBACK").map_err(|e| Stop::Failed(CommitFailure::from_error("ROLLBACK", &e)))?;
    Err(Stop::FlushFailed(failure))
}

/// Rolls back a transaction a failed batch or a failed ROLLBACK left open,
/// so that the next one starts clean.
fn end_open_transaction(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(|_| ())
        .map_err(storage)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as sync_mpsc;

    use super::*;
    use zapinbox_core::raw::EventParts;
    use zapinbox_core::{Limits, NewEvent, TenantId};

    /// A writer on an in-memory database with a deferred foreign key, so a
    /// request can succeed alone and still make COMMIT fail, and an events
    /// table that refuses any event whose payload mentions "poison".
    fn writer() -> Arc<Writer> {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
             CREATE TABLE log (n INTEGER NOT NULL UNIQUE);
             CREATE TABLE tenant_counts (tenant TEXT PRIMARY KEY, pending INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE events (seq INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, tenant TEXT,
                 source TEXT, event_type TEXT, topic TEXT, client_id TEXT, idempotency_key TEXT,
                 payload TEXT NOT NULL, created_at INTEGER, visible_at INTEGER);
             CREATE TRIGGER poisoned BEFORE INSERT ON events WHEN new.payload LIKE '%poison%' BEGIN
                 SELECT RAISE(ABORT, 'poisoned event');
             END;",
        )
        .expect("schema");
        Writer::spawn(conn, Clock::system(), None).expect("spawn")
    }

    fn insert(conn: &Connection, n: i64) -> Result<i64> {
        conn.execute("INSERT INTO log (n) VALUES (?1)", [n])
            .map_err(storage)?;
        Ok(n)
    }

    /// Every row `sql` selects, read by `row`.
    fn rows<T>(
        conn: &Connection,
        sql: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        let mut stmt = conn.prepare(sql).expect("prepare");
        stmt.query_map([], row)
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    fn logged(conn: &Connection) -> Vec<i64> {
        rows(conn, "SELECT n FROM log ORDER BY n", |r| r.get(0))
    }

    /// Occupies the writer until the returned sender is dropped, so that
    /// what is sent meanwhile waits in the queue and joins the open batch.
    async fn occupy(w: &Arc<Writer>) -> (sync_mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let started_tx = std::sync::Mutex::new(Some(started_tx));
        let (release, released) = sync_mpsc::channel::<()>();
        let released = std::sync::Mutex::new(released);
        let w2 = Arc::clone(w);
        let task = tokio::spawn(async move {
            w2.write(move |_, _| {
                if let Some(tx) = started_tx.lock().expect("lock").take() {
                    let _ = tx.send(());
                }
                let _ = released.lock().expect("lock").recv();
                Ok(())
            })
            .await
            // It shares the next requests' batch, and that batch's fate.
            .ok();
        });
        started.await.expect("the writer is occupied");
        (release, task)
    }

    /// Waits until `n` requests wait in the writer's queue.
    async fn queued(w: &Writer, n: usize) {
        while w.queue.max_capacity() - w.queue.capacity() < n {
            tokio::task::yield_now().await;
        }
        // The capacity drops when a send reserves its place, a moment
        // before the request is in the queue: one still on its way would
        // start a batch of its own (seen once: 3 replays in two batches).
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    fn send<T: Send + 'static>(
        w: &Arc<Writer>,
        op: impl Fn(&WriteConn, &Clock) -> Result<T> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<T>> {
        let w = Arc::clone(w);
        tokio::spawn(async move { w.write(op).await })
    }

    /// An append of one event with `payload` that fails, without writing
    /// anything else, when `fail` says so.
    fn appended(w: &Arc<Writer>, payload: &str, fail: bool) -> tokio::task::JoinHandle<Result<()>> {
        let event = NewEvent::from_json(payload)
            .validate(&Limits::default())
            .expect("valid event");
        let events: Arc<[EventParts]> = Arc::new([event.into_parts()]);
        let w = Arc::clone(w);
        let tenant = TenantId::new("t").expect("tenant");
        tokio::spawn(async move {
            w.append(move |conn, clock| {
                let stamp = (clock.next_id(), clock.now());
                conn.inserts.insert(conn, &tenant, &events, 0, stamp)?;
                if fail {
                    return Err(Error::invalid("refused after its event waited"));
                }
                Ok(())
            })
            .await
        })
    }

    fn payloads(conn: &Connection) -> Vec<String> {
        rows(conn, "SELECT payload FROM events ORDER BY seq", |r| {
            r.get(0)
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_events_go_in_together_in_order_and_a_bad_one_fails_alone() {
        let w = writer();
        let (release, occupied) = occupy(&w).await;
        let before = (w.commits(), w.replays());
        // More than a chunk, so that one is inserted while the batch runs.
        let mut sent = Vec::new();
        for n in 0..40 {
            let payload = if n == 25 {
                r#"{"poison":true}"#.to_owned()
            } else {
                format!(r#"{{"n":{n}}}"#)
            };
            sent.push((payload.clone(), appended(&w, &payload, false)));
            queued(&w, n + 1).await;
        }
        drop(release);
        occupied.await.expect("task");
        let mut stored = Vec::new();
        for (payload, task) in sent {
            let result = task.await.expect("task");
            if payload.contains("poison") {
                assert!(matches!(result, Err(Error::Backend { .. })), "{result:?}");
            } else {
                result.expect("a clean append");
                stored.push(payload);
            }
        }
        assert_eq!(w.commits() - before.0, 1, "one commit for the batch");
        assert_eq!(
            w.replays() - before.1,
            1,
            "run again once, each event on its own"
        );
        let rows = w.write(|conn, _| Ok(payloads(conn))).await.expect("read");
        assert_eq!(rows, stored, "every clean event, in the order sent");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_that_fails_leaves_no_event_and_later_requests_see_earlier_events() {
        let w = writer();
        let (release, occupied) = occupy(&w).await;
        let before = w.replays();
        let kept = appended(&w, r#"{"n":1}"#, false);
        queued(&w, 1).await;
        let refused = appended(&w, r#"{"n":2}"#, true);
        queued(&w, 2).await;
        // Not an append: it sees the event appended before it.
        let counted = send(&w, |conn, _| {
            conn.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
                .map_err(storage)
        });
        queued(&w, 3).await;
        let after = appended(&w, r#"{"n":3}"#, false);
        queued(&w, 4).await;
        drop(release);
        occupied.await.expect("task");
        kept.await.expect("task").expect("first append");
        let refused = refused.await.expect("task");
        assert!(
            matches!(refused, Err(Error::InvalidInput(_))),
            "{refused:?}"
        );
        assert_eq!(counted.await.expect("task").expect("count"), 1);
        after.await.expect("task").expect("last append");
        assert_eq!(
            w.replays(),
            before + 1,
            "an event left waiting is a write: its request is set aside, the rest run again"
        );
        let rows = w.write(|conn, _| Ok(payloads(conn))).await.expect("read");
        assert_eq!(
            rows,
            vec![r#"{"n":1}"#, r#"{"n":3}"#],
            "the refused request's event is gone"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_run_again_after_another_request_failed_are_stored_once() {
        let w = writer();
        let (release, occupied) = occupy(&w).await;
        let first = appended(&w, r#"{"n":1}"#, false);
        queued(&w, 1).await;
        // Inserts the waiting event before it runs, then fails after
        // writing: the batch rolls back and runs again without it.
        let failing = send(&w, |conn, _| {
            insert(conn, 7)?;
            Err::<(), _>(Error::permanent("failed after writing"))
        });
        queued(&w, 2).await;
        let second = appended(&w, r#"{"n":2}"#, false);
        queued(&w, 3).await;
        drop(release);
        occupied.await.expect("task");
        first.await.expect("task").expect("first append");
        assert!(failing.await.expect("task").is_err());
        second.await.expect("task").expect("second append");
        let (rows, log) = w
            .write(|conn, _| Ok((payloads(conn), logged(conn))))
            .await
            .expect("read");
        assert_eq!(rows, vec![r#"{"n":1}"#, r#"{"n":2}"#], "each event once");
        assert!(log.is_empty(), "the failed request's write was rolled back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_requests_share_one_commit_and_a_failure_undoes_only_its_own() {
        let w = writer();
        let (release, occupied) = occupy(&w).await;
        let before = w.commits();
        let a = send(&w, |conn, _| insert(conn, 1).and_then(|_| insert(conn, 2)));
        queued(&w, 1).await;
        let dup = send(&w, |conn, _| insert(conn, 3).and_then(|_| insert(conn, 1)));
        queued(&w, 2).await;
        let b = send(&w, |conn, _| insert(conn, 4));
        queued(&w, 3).await;
        drop(release);
        occupied.await.expect("task");
        assert_eq!(a.await.expect("task").expect("first request"), 2);
        let dup = dup.await.expect("task");
        assert!(matches!(dup, Err(Error::Backend { .. })), "{dup:?}");
        assert_eq!(b.await.expect("task").expect("third request"), 4);
        assert_eq!(
            w.commits() - before,
            1,
            "the queued requests joined the open batch"
        );
        let rows = w.write(|conn, _| Ok(logged(conn))).await.expect("read");
        assert_eq!(
            rows,
            vec![1, 2, 4],
            "the failed request's 3 was rolled back"
        );
    }

    /// Runs of an operation, counted.
    fn counted(
        runs: &Arc<AtomicU64>,
        n: i64,
    ) -> impl Fn(&WriteConn, &Clock) -> Result<i64> + Send + 'static {
        let runs = Arc::clone(runs);
        move |conn, _| {
            runs.fetch_add(1, Ordering::SeqCst);
            insert(conn, n)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_failure_after_writing_replays_the_others() {
        let w = writer();
        let runs = Arc::new(AtomicU64::new(0));
        // A failure before any write: nothing to undo, nobody runs twice.
        let (release, occupied) = occupy(&w).await;
        let first = send(&w, counted(&runs, 1));
        queued(&w, 1).await;
        let clean = send(&w, |_, _| -> Result<()> {
            Err(Error::invalid("refused before writing"))
        });
        queued(&w, 2).await;
        drop(release);
        occupied.await.expect("task");
        assert_eq!(first.await.expect("task").expect("ok"), 1);
        assert!(matches!(
            clean.await.expect("task"),
            Err(Error::InvalidInput(_))
        ));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // A failure after writing: the batch is rolled back and the others
        // run again, once.
        let (release, occupied) = occupy(&w).await;
        let second = send(&w, counted(&runs, 2));
        queued(&w, 1).await;
        let dirty = send(&w, |conn, _| insert(conn, 3).and_then(|_| insert(conn, 3)));
        queued(&w, 2).await;
        drop(release);
        occupied.await.expect("task");
        assert_eq!(second.await.expect("task").expect("ok"), 2);
        assert!(matches!(
            dirty.await.expect("task"),
            Err(Error::Backend { .. })
        ));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "run, rolled back, run again"
        );
        let rows = w.write(|conn, _| Ok(logged(conn))).await.expect("read");
        assert_eq!(rows, vec![1, 2], "nothing of the failed request stayed");
    }

    /// Counts `n` pending events of `tenant` and logs `n`.
    fn counting(
        tenant: &str,
        n: i64,
    ) -> impl Fn(&WriteConn, &Clock) -> Result<i64> + Send + 'static {
        let tenant = zapinbox_core::TenantId::new(tenant).expect("tenant");
        move |conn, _| {
            insert(conn, n)?;
            conn.pending.add(conn, &tenant, n)?;
            Ok(n)
        }
    }

    fn pending(conn: &Connection) -> Vec<(String, i64)> {
        let sql = "SELECT tenant, pending FROM tenant_counts ORDER BY tenant";
        rows(conn, sql, |r| Ok((r.get(0)?, r.get(1)?)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_of_a_batch_are_written_once_at_commit_and_not_again_on_replay() {
        let w = writer();
        let (release, occupied) = occupy(&w).await;
        let counted =
            [("a", 1), ("b", 2), ("a", 4)].map(|(tenant, n)| send(&w, counting(tenant, n)));
        queued(&w, 3).await;
        // Later in the same transaction, as a trigger would: the row of a
        // tenant first counted in it is already there.
        let moved = send(&w, |conn, _| {
            conn.execute(
                "UPDATE tenant_counts SET pending = pending - 1 WHERE tenant = 'b'",
                [],
            )
            .map_err(storage)
        });
        queued(&w, 4).await;
        // Fails after writing: the batch is rolled back and run again.
        let dirty = send(&w, |conn, _| insert(conn, 8).and_then(|_| insert(conn, 8)));
        queued(&w, 5).await;
        drop(release);
        occupied.await.expect("task");
        for request in counted {
            request.await.expect("task").expect("counted");
        }
        assert_eq!(moved.await.expect("task").expect("moved"), 1);
        assert!(dirty.await.expect("task").is_err());
        assert_eq!(w.replays(), 1);
        let counts = w.write(|conn, _| Ok(pending(conn))).await.expect("read");
        assert_eq!(counts, [("a".to_owned(), 5), ("b".to_owned(), 1)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_are_bounded_when_failures_keep_coming() {
        let w = writer();
        let (release, occupied) = occupy(&w).await;
        // Each of these writes, then fails: a storage error that repeats.
        let failing: Vec<_> = (0..6)
            .map(|n| {
                let job = send(&w, move |conn, _| {
                    insert(conn, 100 + n)?;
                    Err::<(), _>(Error::permanent("disk trouble"))
                });
                (n, job)
            })
            .collect();
        queued(&w, 6).await;
        let innocent = send(&w, |conn, _| insert(conn, 1));
        queued(&w, 7).await;
        drop(release);
        occupied.await.expect("task");
        for (_, job) in failing {
            let r = job.await.expect("task");
            assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
        }
        let r = innocent.await.expect("task");
        assert!(
            matches!(&r, Err(e) if e.to_string().contains("disk trouble")),
            "the batch failed with the last failure: {r:?}"
        );
        assert_eq!(w.replays(), MAX_REPLAYS as u64, "replays stop at the bound");
        let rows = w.write(|conn, _| Ok(logged(conn))).await.expect("read");
        assert!(
            rows.is_empty(),
            "nothing of the failed batch stayed: {rows:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_sqlite_rolled_back_fails_the_whole_batch() {
        let w = writer();
        let (release, occupied) = occupy(&w).await;
        let before = send(&w, |conn, _| insert(conn, 1));
        queued(&w, 1).await;
        // What SQLITE_FULL or IOERR do: the transaction is gone, the
        // connection back in autocommit.
        let fault = send(&w, |conn, _| {
            conn.execute_batch("ROLLBACK").map_err(storage)?;
            Err::<(), _>(Error::permanent("database or disk is full"))
        });
        queued(&w, 2).await;
        let after = send(&w, |conn, _| insert(conn, 2));
        queued(&w, 3).await;
        drop(release);
        occupied.await.expect("task");
        for r in [
            before.await.expect("task").map(drop),
            fault.await.expect("task"),
            after.await.expect("task").map(drop),
        ] {
            assert!(
                matches!(&r, Err(e) if e.to_string().contains("rolled back the whole batch")),
                "{r:?}"
            );
        }
        let rows = w.write(|conn, _| Ok(logged(conn))).await.expect("read");
        assert!(
            rows.is_empty(),
            "no request ran on its own after the rollback: {rows:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_reaches_every_caller_in_the_batch() {
        let w = writer();
        let (release, occupied) = occupy(&w).await;
        let ok = send(&w, |conn, _| insert(conn, 1));
        queued(&w, 1).await;
        let poisoned = send(&w, |conn, _| {
            conn.execute("INSERT INTO child (parent) VALUES (99)", [])
                .map_err(storage)
        });
        queued(&w, 2).await;
        drop(release);
        occupied.await.expect("task");
        let results = [
            ok.await.expect("task").map(|_| ()),
            poisoned.await.expect("task").map(|_| ()),
        ];
        for r in results {
            let message = match r {
                Err(Error::Backend { source, .. }) => source.to_string(),
                other => panic!("expected the COMMIT failure, got {other:?}"),
            };
            assert!(message.contains("COMMIT"), "{message}");
        }
        let rows = w
            .write(|conn, _| Ok(logged(conn)))
            .await
            .expect("the writer goes on");
        assert!(
            rows.is_empty(),
            "nothing of the failed batch stayed: {rows:?}"
        );
        assert_eq!(
            w.write(|conn, _| insert(conn, 5))
                .await
                .expect("next batch"),
            5
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_request_fails_alone() {
        let w = writer();
        let r = w
            .write(|_, _| -> Result<()> { panic!("bug in an operation") })
            .await;
        assert!(
            matches!(&r, Err(e) if e.to_string().contains("panicked")),
            "{r:?}"
        );
        assert_eq!(
            w.write(|conn, _| insert(conn, 1))
                .await
                .expect("the writer goes on"),
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_after_close_fail_cleanly() {
        let w = writer();
        assert_eq!(w.write(|conn, _| insert(conn, 1)).await.expect("write"), 1);
        w.close().await.expect("close");
        let r = w.write(|conn, _| insert(conn, 2)).await;
        assert!(
            matches!(&r, Err(e) if e.to_string().contains("closed")),
            "{r:?}"
        );
        w.close().await.expect("closing twice is fine");
    }
}
